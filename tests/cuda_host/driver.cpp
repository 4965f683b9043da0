// Runs kernels/adabm.cu's kernels on the emulated GPU of emu.hpp, driven by commands on
// stdin (little-endian):
//
// - 'U' id (u32), length (u64), bytes: buffer `id` now holds these bytes ("device memory";
//   16-byte aligned, followed by 256 bytes of a pattern that must survive every launch).
// - 'L' a launch: the kernel's name (u32 length, bytes); grid x, y, z, threads per block and
//   dynamic shared memory bytes (u32 each); its parameters as one blob (u32 length, bytes:
//   the argument struct of the struct-taking kernels, as the engine's `#[repr(C)]` twin lays
//   it out; for the others the `*Params` struct below); the blob's pointer fields (u32
//   count, then each one's byte offset and buffer id, u32 each). Writes "ok" when done.
// - 'D' id (u32): writes the buffer's bytes.
// - 'S': writes the `ldmatrix` phases since the last 'S', the extra wavefronts their bank
//   conflicts cost, and the L2 prefetches (u64 each).
struct ComplexityParams {
    const float* rgb;
    u64* csum;
    int h, w;
};

struct PlanBitsParams {
    const u64* csum;
    const LayerInfo* layers;
    Quant* plan;
    float* stats;
    u8* bits;
    int frames, h, w, L;
    const FrameParams* params;
};

struct WidenParams {
    const u8* src;
    float* dst;
    u64 n;
};

struct InputCodesParams {
    const float* rgb;
    u8* codes;
    const Quant* plan;
    int h, w, hp, wp, L;
    float k, m0, m1, m2;
    int pad;
};

struct Entry {
    const char* name;
    size_t size;  // of the parameter blob
    void (*run)(const u8*);
};

template <class T>
static T blob_as(const u8* b) {
    T v;
    memcpy(&v, b, sizeof v);
    return v;
}

#define STRUCT_KERNEL(NAME, T) {#NAME, sizeof(T), [](const u8* b) { NAME(blob_as<T>(b)); }}
#define CONV_KERNELS(C)                                                                            \
    STRUCT_KERNEL(conv_mma_c##C##_e1_s0, MmaArgs), STRUCT_KERNEL(conv_mma_c##C##_e1_s1, MmaArgs), \
        STRUCT_KERNEL(conv_mma_c##C##_e2_s0, MmaArgs),                                            \
        STRUCT_KERNEL(conv_mma_c##C##_e2_s1, MmaArgs),                                            \
        STRUCT_KERNEL(conv_mma_c##C##_e3_s0, MmaArgs),                                            \
        STRUCT_KERNEL(conv_mma_c##C##_e3_s1, MmaArgs),                                            \
        STRUCT_KERNEL(conv_mma_c##C##_e4_s0, MmaArgs),                                            \
        STRUCT_KERNEL(conv_mma_c##C##_e2_s0_h, MmaArgs),                                          \
        STRUCT_KERNEL(conv_mma_c##C##_e2_s1_h, MmaArgs),                                          \
        STRUCT_KERNEL(conv_hmma_c##C##_e1, MmaArgs), STRUCT_KERNEL(conv_hmma_c##C##_e2, MmaArgs), \
        STRUCT_KERNEL(conv_hmma_c##C##_e3, MmaArgs), STRUCT_KERNEL(conv_hmma_c##C##_e4, MmaArgs), \
        STRUCT_KERNEL(conv_head_c##C, DirectArgs), STRUCT_KERNEL(conv_tail_c##C, DirectArgs),     \
        STRUCT_KERNEL(conv_fhead_c##C, FloatArgs), STRUCT_KERNEL(conv_ftail_c##C, FloatArgs)

static const Entry KERNELS[] = {
    CONV_KERNELS(32),
    CONV_KERNELS(64),
    {"complexity", sizeof(ComplexityParams),
     [](const u8* b) {
         auto p = blob_as<ComplexityParams>(b);
         complexity(p.rgb, p.csum, p.h, p.w);
     }},
    {"rgb_widen", sizeof(WidenParams),
     [](const u8* b) {
         auto p = blob_as<WidenParams>(b);
         rgb_widen(p.src, p.dst, p.n);
     }},
    {"plan_bits", sizeof(PlanBitsParams),
     [](const u8* b) {
         auto p = blob_as<PlanBitsParams>(b);
         plan_bits(p.csum, p.layers, p.plan, p.stats, p.bits, p.frames, p.h, p.w, p.L, p.params);
     }},
    {"input_codes", sizeof(InputCodesParams),
     [](const u8* b) {
         auto p = blob_as<InputCodesParams>(b);
         input_codes(p.rgb, p.codes, p.plan, p.h, p.w, p.hp, p.wp, p.L, p.k, p.m0, p.m1, p.m2);
     }},
};

template <class T>
static T get() {
    T v;
    if (fread(&v, sizeof v, 1, stdin) != 1) {
        fprintf(stderr, "driver: truncated command\n");
        exit(2);
    }
    return v;
}

static void get_bytes(void* p, size_t n) {
    if (n && fread(p, 1, n, stdin) != n) {
        fprintf(stderr, "driver: truncated command\n");
        exit(2);
    }
}

struct Buffer {
    std::vector<uint4> words;
    size_t len = 0;
    u8* bytes() { return (u8*)words.data(); }
};

int main() {
    std::vector<Buffer> bufs;
    char cmd;
    while (fread(&cmd, 1, 1, stdin) == 1) {
        if (cmd == 'U') {
            u32 id = get<u32>();
            if (id >= bufs.size()) bufs.resize(id + 1);
            Buffer& b = bufs[id];
            b.len = (size_t)get<u64>();
            b.words.assign(b.len / 16 + 17, uint4{0, 0, 0, 0});
            memset(b.bytes(), 0x5A, b.words.size() * 16);
            get_bytes(b.bytes(), b.len);
            continue;
        }
        if (cmd == 'D') {
            u32 id = get<u32>();
            if (id >= bufs.size()) return 5;
            fwrite(bufs[id].bytes(), 1, bufs[id].len, stdout);
            fflush(stdout);
            continue;
        }
        if (cmd == 'S') {
            u64 v[3] = {emu::ldsm_stats.phases, emu::ldsm_stats.extra_wavefronts, emu::prefetches};
            emu::ldsm_stats = emu::LdsmStats{};
            emu::prefetches = 0;
            fwrite(v, 8, 3, stdout);
            fflush(stdout);
            continue;
        }
        if (cmd != 'L') {
            fprintf(stderr, "driver: unknown command %d\n", cmd);
            return 2;
        }
        std::vector<char> name(get<u32>() + 1, 0);
        get_bytes(name.data(), name.size() - 1);
        const Entry* e = nullptr;
        for (const Entry& k : KERNELS)
            if (!strcmp(k.name, name.data())) e = &k;
        if (!e) {
            fprintf(stderr, "driver: no kernel %s\n", name.data());
            return 3;
        }
        u32 gx = get<u32>(), gy = get<u32>(), gz = get<u32>(), threads = get<u32>(), smem = get<u32>();
        std::vector<u8> blob(get<u32>());
        get_bytes(blob.data(), blob.size());
        if (blob.size() != e->size) {
            fprintf(stderr, "driver: %s takes %zu bytes of parameters, the launch has %zu\n", e->name,
                    e->size, blob.size());
            return 4;
        }
        u32 nptr = get<u32>();
        for (u32 i = 0; i < nptr; i++) {
            u32 off = get<u32>(), id = get<u32>();
            if (id >= bufs.size() || (size_t)off + 8 > blob.size()) return 5;
            u64 addr = (u64)(uintptr_t)bufs[id].bytes();
            memcpy(blob.data() + off, &addr, 8);
        }
        emu::global_ranges.clear();
        for (auto& b : bufs) emu::global_ranges.push_back({b.bytes(), b.len});
        emu::launch(Dim3{gx, gy, gz}, threads, smem, [&] { e->run(blob.data()); });
        for (size_t i = 0; i < bufs.size(); i++)
            for (size_t j = bufs[i].len; j < bufs[i].words.size() * 16; j++)
                if (bufs[i].bytes()[j] != 0x5A) {
                    fprintf(stderr, "emulated GPU: %s wrote past the end of buffer %zu\n", e->name, i);
                    return 6;
                }
        fwrite("ok", 1, 2, stdout);
        fflush(stdout);
    }
    return 0;
}
