// A CUDA execution model for the host CPU, enough to run kernels/adabm.cu without a GPU
// (tests/cuda_host.rs includes this, then the kernel file, then driver.cpp).
//
// Each thread of a block is a fiber with its own threadIdx; a block's fibers run
// on one OS thread and switch only at synchronisation points, so the kernel code runs
// unchanged, in C++ with IEEE single precision (`-ffp-contract=off` keeps NVRTC's
// `--fmad=false` order). The PTX the kernels write as inline assembly is emulated here
// from the PTX ISA's definitions:
//
// - `__syncthreads` / `__syncwarp`: every live thread of the block / every lane of the warp
//   arrives before any goes on. A warp barrier that some lane never reaches (a lane that
//   exited, or waits at `__syncthreads` instead) is reported as an error: on a GPU it is
//   undefined behaviour.
// - Warp collectives (`__shfl_xor_sync`, `ldmatrix`, `mma.sync`) exchange the 32 lanes'
//   operands through a per-warp table between two warp barriers, and compute each lane's
//   result with the fragment layouts of the PTX ISA ("Matrix fragments for mma.m16n8k32",
//   "... mma.m16n8k16 with floating point types", "ldmatrix").
// - `cp.async`: the 16-byte copies a thread queues happen at its `cp.async.wait_group 0`,
//   not before, so a kernel that read its halo before waiting would read stale bytes here;
//   with ADABM_EMU_CP_ASYNC=eager they happen when issued, so one that overwrote a buffer
//   other warps still read would make them read the new bytes.
// - Shared memory addresses (`cvta.to.shared`) are offsets into the block's dynamic shared
//   memory.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <vector>

using std::max;
using std::min;

#define ADABM_HOST 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define __restrict__ __restrict

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct Dim3 {
    unsigned x, y, z;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
    unsigned x, y;
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};

// Switching between fibers. On x86-64 a hand-written switch of the callee-saved registers
// (glibc's swapcontext makes a system call per switch to save the signal mask, and the convs
// switch millions of times); elsewhere, or with ADABM_EMU_UCONTEXT defined, ucontext.
#if defined(__x86_64__) && !defined(ADABM_EMU_UCONTEXT)
#define ADABM_EMU_ASM_SWITCH 1
extern "C" void emu_switch(void** save_sp, void* to_sp);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
#endif

namespace emu {

[[noreturn]] inline void fail(const char* what) {
    fprintf(stderr, "emulated GPU: %s\n", what);
    exit(70);
}

enum State { RUNNING, AT_WARP, AT_BLOCK, DONE };

struct Copy {
    u8* dst;
    const u8* src;
};

struct Fiber {
#if defined(ADABM_EMU_ASM_SWITCH)
    void* sp;
#else
    ucontext_t ctx;
#endif
    std::vector<char> stack;
    Dim3 tid;
    State state;
    std::vector<Copy> pending;  // cp.async copies queued and not yet waited for
};

// One block at a time: its fibers, shared memory and the warps' exchange tables.
struct Block {
    Dim3 grid, dim, idx;
    std::vector<Fiber> fibers;
    int cur = 0;
#if defined(ADABM_EMU_ASM_SWITCH)
    void* main_sp;
#else
    ucontext_t main;
#endif
    std::vector<u8> smem;  // dynamic shared memory
    u32 xch[32][32][12];   // [warp][lane][word]: collective operands
    std::function<void()> kernel;
};

inline Block* B = nullptr;

inline Fiber& me() { return B->fibers[B->cur]; }
inline int lane() { return (int)(me().tid.x & 31); }
inline int warp() { return (int)(me().tid.x >> 5); }

// From the running fiber back to the scheduler.
inline void yield() {
    Fiber& f = me();
#if defined(ADABM_EMU_ASM_SWITCH)
    emu_switch(&f.sp, B->main_sp);
#else
    swapcontext(&f.ctx, &B->main);
#endif
}

inline void wait(State s) {
    me().state = s;
    yield();
}

inline void entry() {
    B->kernel();
    me().state = DONE;
    yield();
    fail("a finished thread was resumed");
}

// Makes fiber `f` start at `entry` on its own stack.
inline void start(Fiber& f) {
#if defined(ADABM_EMU_ASM_SWITCH)
    // emu_switch's frame: MXCSR and x87 control word, r15 .. rbp, then `ret` to entry with
    // the stack as a call leaves it (rsp ≡ 8 mod 16).
    uintptr_t top = ((uintptr_t)(f.stack.data() + f.stack.size()) & ~(uintptr_t)15) - 64;
    u64* frame = (u64*)(top - 8);
    frame[0] = 0x1F80ull | (0x037Full << 32);
    for (int i = 1; i <= 6; i++) frame[i] = 0;
    frame[7] = (u64)(uintptr_t)&entry;
    f.sp = frame;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, entry, 0);
#endif
}

// From the scheduler into fiber `t`.
inline void resume(int t) {
    B->cur = t;
#if defined(ADABM_EMU_ASM_SWITCH)
    emu_switch(&B->main_sp, B->fibers[t].sp);
#else
    swapcontext(&B->main, &B->fibers[t].ctx);
#endif
}

// ADABM_EMU_SKEW=seed (not 0): a warp whose lanes all arrived at a warp-synchronous point
// goes on only with probability 1/4 per scheduling round (a pseudo-random draw from the
// seed), so warps drift apart between block barriers as they do on a GPU and a missing
// barrier shows. Unset or 0: every warp goes on at once (warps in lockstep).
inline bool skew_hold() {
    static u64 state = [] {
        const char* v = getenv("ADABM_EMU_SKEW");
        return v ? strtoull(v, nullptr, 10) : 0ull;
    }();
    if (!state) return false;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (state & 3) != 0;
}

// Runs `kernel` on a grid of `grid` blocks of `threads` threads (1-D blocks) with `smem`
// bytes of dynamic shared memory, block after block.
inline void launch(Dim3 grid, unsigned threads, size_t smem, std::function<void()> kernel) {
    if (threads == 0 || threads > 1024 || threads % 32) fail("block size not a multiple of 32");
    // One block's state, its fibers' stacks kept from launch to launch.
    static Block blk;
    if (B == &blk) fail("a launch from inside a kernel");
    blk.grid = grid;
    blk.dim = Dim3{threads, 1, 1};
    blk.kernel = kernel;
    blk.fibers.resize(threads);
    for (auto& f : blk.fibers) f.stack.resize(256 * 1024);
    B = &blk;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blk.idx = Dim3{bx, by, bz};
                // Fresh shared memory with a pattern: a kernel must not read what it did not write.
                blk.smem.assign(smem + 16, 0xA5);
                for (unsigned t = 0; t < threads; t++) {
                    Fiber& f = blk.fibers[t];
                    f.tid = Dim3{t, 0, 0};
                    f.state = RUNNING;
                    f.pending.clear();
                    start(f);
                }
                const int warps = (int)threads / 32;
                for (;;) {
                    for (unsigned t = 0; t < threads; t++)
                        if (blk.fibers[t].state == RUNNING) resume((int)t);
                    // Every fiber is waiting or done: release what can go on.
                    bool released = false, held = false;
                    int live = 0, at_block = 0;
                    for (int w = 0; w < warps; w++) {
                        int at_warp = 0;
                        for (int l = 0; l < 32; l++) {
                            State s = blk.fibers[w * 32 + l].state;
                            at_warp += s == AT_WARP;
                            live += s != DONE;
                            at_block += s == AT_BLOCK;
                        }
                        if (at_warp == 32 && skew_hold()) {
                            held = true;
                        } else if (at_warp == 32) {
                            for (int l = 0; l < 32; l++) blk.fibers[w * 32 + l].state = RUNNING;
                            released = true;
                        } else if (at_warp) {
                            fail("a warp-synchronous operation that not every lane of the warp reaches");
                        }
                    }
                    if (released || held) continue;
                    if (live == 0) break;
                    if (at_block == live) {
                        for (auto& f : blk.fibers)
                            if (f.state == AT_BLOCK) f.state = RUNNING;
                        continue;
                    }
                    fail("deadlock");
                }
                for (auto& f : blk.fibers)
                    if (!f.pending.empty()) fail("cp.async copies never waited for");
            }
    B = nullptr;
}

inline u8* smem_base() { return B->smem.data(); }

// The launch's buffers (set by the driver), and the L2 prefetches issued.
inline std::vector<std::pair<const u8*, size_t>> global_ranges;
inline u64 prefetches = 0;

// Shared-memory bank conflicts of `ldmatrix`: each of its 4 phases reads 8 rows of 16 bytes,
// which take one wavefront when they fall in 8 distinct groups of 4 banks ((address / 16) mod
// 8) and one more per row that shares its group with an earlier one.
struct LdsmStats {
    u64 phases = 0;          // 8-row reads
    u64 extra_wavefronts = 0;
};
inline LdsmStats ldsm_stats;

inline void count_ldsm_conflicts(const u32 (*x)[12]) {
    for (int j = 0; j < 4; j++) {
        int per_group[8] = {0};
        for (int i = 0; i < 8; i++) per_group[(x[8 * j + i][0] / 16) % 8]++;
        int worst = 0;
        for (int g : per_group) worst = g > worst ? g : worst;
        ldsm_stats.phases++;
        ldsm_stats.extra_wavefronts += (u64)(worst - 1);
    }
}

}  // namespace emu

#define threadIdx (emu::me().tid)
#define blockIdx (emu::B->idx)
#define gridDim (emu::B->grid)
#define blockDim (emu::B->dim)
#define DYNAMIC_SMEM(name) u8* name = emu::smem_base()

inline void __syncthreads() { emu::wait(emu::AT_BLOCK); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait(emu::AT_WARP); }

template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int o) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "32- and 64-bit shuffles");
    if (mask != 0xffffffffu) emu::fail("partial shuffle mask");
    u32 (*x)[12] = emu::B->xch[emu::warp()];
    const int l = emu::lane();
    memcpy(&x[l][0], &v, sizeof v);
    emu::wait(emu::AT_WARP);
    T r;
    memcpy(&r, &x[l ^ (o & 31)][0], sizeof r);
    emu::wait(emu::AT_WARP);
    return r;
}

// Single-threaded blocks: plain read-modify-write.
template <class T>
inline T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}

// dp4a.u32.u32: c + the sum of the four byte products.
inline u32 dp4a_u(u32 a, u32 b, u32 c) {
    for (int i = 0; i < 4; i++) c += ((a >> (8 * i)) & 0xff) * ((b >> (8 * i)) & 0xff);
    return c;
}

// cvt.rn.f16.f32 and back (_Float16 conversions round to nearest even).
inline u16 f2h(float v) {
    _Float16 h = (_Float16)v;
    u16 b;
    memcpy(&b, &h, 2);
    return b;
}
inline u32 pack_h2(float lo, float hi) { return (u32)f2h(lo) | ((u32)f2h(hi) << 16); }
inline float h2f(u16 b) {
    _Float16 h;
    memcpy(&h, &b, 2);
    return (float)h;
}

inline u32 smem_u32(const void* p) {
    const u8* b = emu::smem_base();
    const u8* q = (const u8*)p;
    if (q < b || q >= b + emu::B->smem.size()) emu::fail("shared address outside the block's shared memory");
    return (u32)(q - b);
}

// ADABM_EMU_CP_ASYNC=eager: copies land when issued instead (a kernel that overwrote shared
// memory other warps still read would then read the new bytes).
inline bool cp_async_eager() {
    static const bool eager = [] {
        const char* v = getenv("ADABM_EMU_CP_ASYNC");
        return v && !strcmp(v, "eager");
    }();
    return eager;
}

inline void cp_async16(void* smem, const void* gmem) {
    smem_u32(smem);
    if (((uintptr_t)smem | (uintptr_t)gmem) & 15) emu::fail("cp.async of 16 bytes not 16-byte aligned");
    if (cp_async_eager())
        memcpy(smem, gmem, 16);
    else
        emu::me().pending.push_back(emu::Copy{(u8*)smem, (const u8*)gmem});
}
inline void cp_async_commit() {}

inline void cp_async_wait_all() {
    for (auto& c : emu::me().pending) memcpy(c.dst, c.src, 16);
    emu::me().pending.clear();
}

// prefetch.global.L2: no effect on results; counted, and required to name a line of one of
// the launch's buffers (a prefetch of the wrong address would be silently useless on a GPU).
inline void prefetch_l2(const void* p) {
    const u8* a = (const u8*)p;
    bool inside = false;
    for (auto& r : emu::global_ranges) inside |= a >= r.first && a < r.first + r.second;
    if (!inside) emu::fail("prefetch of an address outside every buffer");
    emu::prefetches++;
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8j..8j+7 address the 16-byte rows of
// matrix j; lane i receives in r[j] bytes 4·(i%4)..+3 of row i/4 of matrix j.
inline void ldsm_x4(u32* r, u32 addr) {
    u32 (*x)[12] = emu::B->xch[emu::warp()];
    const int l = emu::lane();
    if (addr & 15) emu::fail("ldmatrix row address not 16-byte aligned");
    if ((size_t)addr + 16 > emu::B->smem.size()) emu::fail("ldmatrix row outside shared memory");
    x[l][0] = addr;
    emu::wait(emu::AT_WARP);
    for (int j = 0; j < 4; j++) memcpy(&r[j], emu::smem_base() + x[8 * j + l / 4][0] + 4 * (l % 4), 4);
    if (l == 0) emu::count_ldsm_conflicts(x);
    emu::wait(emu::AT_WARP);
}

namespace emu {

// Publishes a lane's mma operands (a0..a3, b0, b1, c0..c3 as raw words).
inline void mma_share(const u32* a, u32 b0, u32 b1, const void* c) {
    u32* s = B->xch[warp()][lane()];
    for (int i = 0; i < 4; i++) s[i] = a[i];
    s[4] = b0;
    s[5] = b1;
    memcpy(s + 6, c, 16);
    wait(AT_WARP);
}

// Where the fragments of `mma.sync` keep their elements, for 8-bit (m16n8k32) and f16
// (m16n8k16) elements alike — the same bytes of each row: byte `kb` (0..31) of row `row`
// (0..15) of A is in register `(kb / 16)·2 + row / 8` of lane `4·(row % 8) + (kb % 16) / 4`
// (a0: rows g, a1: rows g+8, a2 / a3 the same rows' bytes 16..31); byte `kb` of column `n` of
// B in register b`kb / 16` of lane `4n + (kb % 16) / 4`; in both at byte `kb % 4` of the word.
inline const u8* a_byte(const u32 (*x)[12], int row, int kb) {
    return (const u8*)&x[(row & 7) * 4 + (kb & 15) / 4][(kb >> 4) * 2 + (row >> 3)] + (kb & 3);
}
inline const u8* b_byte(const u32 (*x)[12], int n, int kb) {
    return (const u8*)&x[n * 4 + (kb & 15) / 4][4 + (kb >> 4)] + (kb & 3);
}

// m16n8k32 with 8-bit A (row) and B (col): D = A·B + C in s32 (wrapping). Lane l holds
// D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1] (g = l/4, t = l%4).
template <bool BSIGNED>
inline void mma_i8(int* d, const u32* a, u32 b0, u32 b1) {
    mma_share(a, b0, b1, d);
    u32 (*x)[12] = B->xch[warp()];
    const int l = lane(), g = l >> 2, t = l & 3;
    int out[4];
    for (int i = 0; i < 4; i++) {
        int row = g + (i >> 1) * 8, col = 2 * t + (i & 1);
        long long s = 0;
        for (int k = 0; k < 32; k++) {
            int bv = BSIGNED ? (int)*(const signed char*)b_byte(x, col, k) : (int)*b_byte(x, col, k);
            s += (long long)*a_byte(x, row, k) * bv;
        }
        int c;
        memcpy(&c, &x[l][6 + i], 4);
        out[i] = (int)(u32)((u64)(long long)c + (u64)s);
    }
    wait(AT_WARP);
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

}  // namespace emu

inline void mma_u8u8(int* d, const u32* a, u32 b0, u32 b1) { emu::mma_i8<false>(d, a, b0, b1); }
inline void mma_u8s8(int* d, const u32* a, u32 b0, u32 b1) { emu::mma_i8<true>(d, a, b0, b1); }

// m16n8k16 f16 × f16 + f32, the fragments' bytes where the 8-bit form keeps them (element k
// at bytes 2k, 2k+1). The tensor core's order of summation is not specified: here the
// products are added in k order in f32 to C.
inline void mma_f16(float* d, const u32* a, u32 b0, u32 b1) {
    emu::mma_share(a, b0, b1, d);
    u32 (*x)[12] = emu::B->xch[emu::warp()];
    const int l = emu::lane(), g = l >> 2, t = l & 3;
    // Every f16 value as f32, converted once (the conversion is in software and the
    // products would convert each operand 4096 times per mma).
    static const std::vector<float> f32_of = [] {
        std::vector<float> t(65536);
        for (u32 b = 0; b < 65536; b++) t[b] = h2f((u16)b);
        return t;
    }();
    auto half_at = [](const u8* p) { return f32_of[p[0] | (p[1] << 8)]; };
    auto A = [&](int row, int k) { return half_at(emu::a_byte(x, row, 2 * k)); };
    auto Bv = [&](int k, int n) { return half_at(emu::b_byte(x, n, 2 * k)); };
    float out[4];
    for (int i = 0; i < 4; i++) {
        int row = g + (i >> 1) * 8, col = 2 * t + (i & 1);
        float s;
        memcpy(&s, &x[l][6 + i], 4);
        for (int k = 0; k < 16; k++) s += A(row, k) * Bv(k, col);
        out[i] = s;
    }
    emu::wait(emu::AT_WARP);
    for (int i = 0; i < 4; i++) d[i] = out[i];
}
