// adabm CUDA kernels: the integer EDSR of src/engine/intnet.rs on NVIDIA GPUs.
//
// Compiled at run time by NVRTC (no headers needed) with --fmad=false: every floating-point
// expression below is written in the operation order of the Rust reference, so that with
// IEEE rounding and no fused multiply-add the GPU reproduces the CPU integer engine bit for
// bit. Layouts, launch geometry and rounding rules: kernels/README.md.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define TILE 16        // output tile of the tensor-core conv: TILE x TILE pixels
#define HALO (TILE + 2)
#define MMA_THREADS 256

#ifndef ADABM_HOST
// The kernel's dynamic shared memory (the host build gives each emulated block its own).
#define DYNAMIC_SMEM(name) extern __shared__ __align__(16) u8 name[]
#endif

// Input quantizer of one layer for one frame (see intnet.rs): code(x) and Δa.
// s = N / (u - l).
struct Quant {
    float l, u, s, da;
};

// What the host knows of a layer: bounds, kind (0 float, 1 adaptive, 2 fixed 8-bit), b_L.
struct LayerInfo {
    float l, u;
    int kind, b_l;
};

// code(x; l, u, N) = round_half_even((clamp(x, l, u) - l) * (N / (u - l)))
__device__ __forceinline__ u32 act_code(float x, Quant q) {
    float c = x < q.l ? q.l : (x > q.u ? q.u : x);
    return (u32)rintf((c - q.l) * q.s);
}

// Rust's `v.round_ties_even().clamp(0.0, 255.0) as u8`.
__device__ __forceinline__ u8 to_u8(float v) {
    float r = rintf(v);
    r = r > 0.0f ? r : 0.0f;  // also maps NaN to 0
    return (u8)(r < 255.0f ? r : 255.0f);
}

#ifndef ADABM_HOST  // the host build (tests/cuda_host/emu.hpp) brings its own
__device__ __forceinline__ u32 dp4a_u(u32 a, u32 b, u32 c) {
    u32 d;
    asm("dp4a.u32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// f16 storage of the floating-point layers' feature maps (round to nearest even), no headers.
// pack_h2: two f32 -> f16x2 with `lo` at the lower address.
__device__ __forceinline__ u32 pack_h2(float lo, float hi) {
    u32 d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

__device__ __forceinline__ u16 f2h(float v) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}
#endif

// Border class of intnet.rs: bit 0 when the -1 tap is outside, bit 1 when the +1 tap is.
__device__ __forceinline__ int border_bits(int v, int len) {
    return (v == 0 ? 1 : 0) | (v + 1 == len ? 2 : 0);
}

// ---------------------------------------------------------------------------------------
// Image complexity (gradient density, complexity.rs): one thread per pixel; the per-pixel
// terms are summed in 2^-24 fixed point (exact in any order) into csum[f] with atomics.

__device__ __forceinline__ float luma(const float* img, int w, int h, int y, int x) {
    y = y < 0 ? 0 : (y >= h ? h - 1 : y);
    x = x < 0 ? 0 : (x >= w ? w - 1 : x);
    const float* p = img + ((size_t)y * w + x) * 3;
    return (0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]) / 255.0f;
}

extern "C" __global__ void complexity(const float* rgb, u64* csum, int h, int w) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int f = blockIdx.y;
    u64 v = 0;
    if (i < h * w) {
        const float* img = rgb + (size_t)f * h * w * 3;
        int r = i / w, c = i - (i / w) * w;
        float gx = (luma(img, w, h, r - 1, c + 1) - luma(img, w, h, r - 1, c - 1)) +
                   2.0f * (luma(img, w, h, r, c + 1) - luma(img, w, h, r, c - 1)) +
                   (luma(img, w, h, r + 1, c + 1) - luma(img, w, h, r + 1, c - 1));
        float gy = (luma(img, w, h, r + 1, c - 1) - luma(img, w, h, r - 1, c - 1)) +
                   2.0f * (luma(img, w, h, r + 1, c) - luma(img, w, h, r - 1, c)) +
                   (luma(img, w, h, r + 1, c + 1) - luma(img, w, h, r - 1, c + 1));
        float t = fabsf(gx) / 8.0f + fabsf(gy) / 8.0f;
        v = (u64)rintf(t * 16777216.0f);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0 && v) atomicAdd(csum + f, v);
}

// RGB bytes (frames of the 8-bit RGB formats) -> the f32 values every later kernel reads:
// the CPU engine's input is the bytes as f32 too. n values, one thread per 4.
extern "C" __global__ void rgb_widen(const u8* src, float* dst, u64 n) {
    u64 i = ((u64)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i + 4 <= n && ((u64)src & 3) == 0 && ((u64)dst & 15) == 0) {
        u32 v = *(const u32*)(src + i);
        float4 o;
        o.x = (float)(v & 0xff);
        o.y = (float)((v >> 8) & 0xff);
        o.z = (float)((v >> 16) & 0xff);
        o.w = (float)(v >> 24);
        *(float4*)(dst + i) = o;
        return;
    }
    for (u64 j = i; j < n && j < i + 4; j++) dst[j] = (float)src[j];
}

// What each frame of a batch asks for (frames of several streams share a launch, each with
// its own element properties): base bits, image thresholds, adaptive on/off, and for metrics
// other than the gradient density the complexity the host measured.
struct FrameParams {
    float lower, upper;
    int base, adaptive;
    float c_host;  // the complexity measured on the host (has_c = 1: frequency or attention)
    int has_c;
};

// One thread per frame: complexity, b_I, the bits of every layer and their quantizers.
// stats[f] = (c, b_I); bits[f * L + k].
extern "C" __global__ void plan_bits(const u64* csum, const LayerInfo* layers, Quant* plan,
                                     float* stats, u8* bits, int frames, int h, int w, int L,
                                     const FrameParams* params) {
    int f = blockIdx.x * blockDim.x + threadIdx.x;
    if (f >= frames) return;
    const FrameParams p = params[f];
    const int base = p.base;
    float c = p.has_c ? p.c_host
                      : (float)(1000.0 * (double)csum[f] / 16777216.0 /
                                (2.0 * (double)((long long)w * h)));
    int b_i = 0;
    if (p.adaptive) b_i = c < p.lower ? -1 : (c > p.upper ? 1 : 0);
    stats[2 * f] = c;
    stats[2 * f + 1] = (float)b_i;
    for (int k = 0; k < L; k++) {
        LayerInfo li = layers[k];
        int b = 0;
        if (li.kind == 1) {
            b = base + b_i + li.b_l;
            b = b < 1 ? 1 : (b > 8 ? 8 : b);
        } else if (li.kind == 2) {
            b = 8;
        }
        float n = (float)((1 << b) - 1);
        Quant q;
        q.l = li.l;
        q.u = li.u;
        q.s = n / (li.u - li.l);
        q.da = (li.u - li.l) / n;
        plan[f * L + k] = q;
        bits[f * L + k] = (u8)b;
    }
}

// RGB values (0-255 scale, f32) -> head input codes (4 channels per pixel, the 4th 0),
// zero-padded map. x = s * (rgb_range/255) - rgb_range * mean_c, quantized with the head's
// quantizer.
extern "C" __global__ void input_codes(const float* rgb, u8* codes, const Quant* plan, int h, int w,
                                       int hp, int wp, int L, float k, float m0, float m1,
                                       float m2) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int f = blockIdx.y;
    if (i >= h * w) return;
    int y = i / w, x = i - (i / w) * w;
    Quant q = plan[f * L];
    const float* s = rgb + ((size_t)f * h * w + i) * 3;
    u32 c0 = act_code(s[0] * k - m0, q);
    u32 c1 = act_code(s[1] * k - m1, q);
    u32 c2 = act_code(s[2] * k - m2, q);
    ((u32*)codes)[((size_t)f * hp + y + 1) * wp + x + 1] = c0 | (c1 << 8) | (c2 << 16);
}

// ---------------------------------------------------------------------------------------
// YUV <-> the network's RGB (f32, 0-255 scale) of planar, semi-planar and packed (4:2:2,
// 4:4:4) frames (src/engine/yuv/device.rs, whose unpack_pixel / pack_pixel are these kernels
// in Rust, tested against the host's row-wise conversions): the frame's planes packed tightly
// one after the other, one thread per pixel; where a sample is in its plane's row is given by
// steps and offsets (YuvParams).

struct YuvParams {
    u64 off[3];     // byte offset of each plane in the frame
    int stride[3];  // row bytes of each plane
    int w, h, cw, ch, sx, sy;
    int bytes, shift;  // bytes per sample (1, 2); where the sample starts in a 2-byte word
    int chroma;        // 0 grey (luma only), 1 with chroma
    int ystep, yoff;   // luma of pixel x: byte x * ystep + yoff of plane 0's row
    int cstep;         // chroma sample c's U (k = 0) and V (k = 1): byte c * cstep + coff[k]
    int coff[2], cplane[2];  // of plane cplane[k]'s row
    int aoff;          // packed 4:4:4 with alpha: the alpha sample of a pixel (written opaque), or -1
    int ypad;          // packed 4:2:2 of odd width: the last group's second luma repeats the last
    int h_cosited, v_cosited;
    float yo, centre, maxc, ky, rv, gu, gv, bu;
    float l[3], u[3], v[3];
};

__device__ __forceinline__ float yuv_get(const u8* f, const YuvParams& p, int plane, int row,
                                         int byte) {
    const u8* q = f + p.off[plane] + (size_t)row * p.stride[plane] + byte;
    if (p.bytes == 1) return (float)q[0];
    u32 v = (u32)q[0] | ((u32)q[1] << 8);
    return (float)(int)(v >> p.shift);
}

// A sample from value v: rounded half to even, clamped to the depth's codes.
__device__ __forceinline__ void yuv_put(u8* f, const YuvParams& p, int plane, int row, int byte,
                                        float v) {
    u8* q = f + p.off[plane] + (size_t)row * p.stride[plane] + byte;
    if (p.bytes == 1) {
        q[0] = to_u8(v);
        return;
    }
    float c = v < 0.0f ? 0.0f : (v > p.maxc ? p.maxc : v);
    u32 word = ((u32)(int)rintf(c) << p.shift) & 0xffffu;
    q[0] = (u8)(word & 0xff);
    q[1] = (u8)(word >> 8);
}

// Plane and byte in the row of chroma sample c's U (k = 0) or V (k = 1).
__device__ __forceinline__ void yuv_chroma_at(const YuvParams& p, int c, int k, int* plane,
                                              int* byte) {
    *plane = p.cplane[k];
    *byte = c * p.cstep + p.coff[k];
}

// yuv.rs up_taps: the two (index, weight) taps of the bilinear upsampling of chroma to luma
// position i (of n chroma samples, subsampled by sub), edges clamped.
__device__ __forceinline__ void up_taps(int i, int n, int cosited, int sub, int* k0, float* a0,
                                        int* k1, float* a1) {
    if (sub == 1) {
        *k0 = i; *a0 = 1.0f; *k1 = i; *a1 = 0.0f;
        return;
    }
    int k = i / 2, last = n - 1;
    if (cosited) {
        if (i % 2 == 0) {
            *k0 = k; *a0 = 1.0f; *k1 = k; *a1 = 0.0f;
        } else {
            *k0 = k; *a0 = 0.5f; *k1 = min(k + 1, last); *a1 = 0.5f;
        }
    } else if (i % 2 == 0) {
        *k0 = k; *a0 = 0.75f; *k1 = max(k - 1, 0); *a1 = 0.25f;
    } else {
        *k0 = k; *a0 = 0.75f; *k1 = min(k + 1, last); *a1 = 0.25f;
    }
}

// yuv.rs down_taps: the three taps of chroma sample k from luma positions (of n): centred
// [1 1]/2, co-sited [1 2 1]/4, edges clamped.
__device__ __forceinline__ void down_taps(int k, int n, int cosited, int sub, int* idx,
                                          float* wt) {
    if (sub == 1) {
        idx[0] = idx[1] = idx[2] = k;
        wt[0] = 1.0f; wt[1] = 0.0f; wt[2] = 0.0f;
        return;
    }
    int last = n - 1, c = min(2 * k, last);
    if (cosited) {
        idx[0] = min(max(2 * k - 1, 0), last); idx[1] = c; idx[2] = min(2 * k + 1, last);
        wt[0] = 0.25f; wt[1] = 0.5f; wt[2] = 0.25f;
    } else {
        idx[0] = c; idx[1] = min(2 * k + 1, last); idx[2] = c;
        wt[0] = 0.5f; wt[1] = 0.5f; wt[2] = 0.0f;
    }
}

// U and V of the pixel row y at chroma column c (interpolated along y; from 0, in tap order,
// zero weights skipped).
__device__ __forceinline__ void yuv_column(const u8* f, const YuvParams& p, int y, int c,
                                           float* tu, float* tv) {
    int r[2];
    float a[2];
    up_taps(y, p.ch, p.v_cosited, p.sy, &r[0], &a[0], &r[1], &a[1]);
    int pu, bu, pv, bv;
    yuv_chroma_at(p, c, 0, &pu, &bu);
    yuv_chroma_at(p, c, 1, &pv, &bv);
    float su = 0.0f, sv = 0.0f;
    for (int t = 0; t < 2; t++) {
        if (a[t] == 0.0f) continue;
        su = su + a[t] * yuv_get(f, p, pu, r[t], bu);
        sv = sv + a[t] * yuv_get(f, p, pv, r[t], bv);
    }
    *tu = su;
    *tv = sv;
}

// A frame's tight planes -> its RGB values (w x h x 3 f32, 0-255, clamped, not rounded: the
// CPU engine's input).
extern "C" __global__ void yuv_unpack(const u8* src, float* rgb, YuvParams p) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.w * p.h) return;
    int y = (int)(i / p.w), x = (int)(i - (size_t)y * p.w);
    float luma = yuv_get(src, p, 0, y, x * p.ystep + p.yoff);
    float u = p.centre, v = p.centre;
    if (p.chroma) {
        if (p.sx == 1) {
            yuv_column(src, p, y, x, &u, &v);
        } else {
            int c0, c1;
            float b0, b1, u0, v0, u1, v1;
            up_taps(x, p.cw, p.h_cosited, 2, &c0, &b0, &c1, &b1);
            yuv_column(src, p, y, c0, &u0, &v0);
            yuv_column(src, p, y, c1, &u1, &v1);
            u = b0 * u0 + b1 * u1;
            v = b0 * v0 + b1 * v1;
        }
    }
    float e = p.ky * (luma - p.yo);
    u = u - p.centre;
    v = v - p.centre;
    float c[3] = {e + p.rv * v, e + p.gu * u + p.gv * v, e + p.bu * u};
    float* o = rgb + i * 3;
    for (int k = 0; k < 3; k++) o[k] = c[k] < 0.0f ? 0.0f : (c[k] > 255.0f ? 255.0f : c[k]);
}

// RGB values (the network's unrounded f32 output, 0-255 scale) -> the frame: each pixel's
// luma, and the chroma sample whose first luma pixel it is (the RGB filtered along y at each
// luma column of the sample's taps, then along x).
extern "C" __global__ void yuv_pack(const float* rgb, u8* dst, YuvParams p) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.w * p.h) return;
    int y = (int)(i / p.w), x = (int)(i - (size_t)y * p.w);
    const float* s = rgb + i * 3;
    float r = s[0], g = s[1], b = s[2];
    float luma = p.yo + p.l[0] * r + p.l[1] * g + p.l[2] * b;
    yuv_put(dst, p, 0, y, x * p.ystep + p.yoff, luma);
    // Packed 4:2:2 of odd width: the last group's second luma is the last pixel's.
    if (p.ypad && x == p.w - 1) yuv_put(dst, p, 0, y, (x + 1) * p.ystep + p.yoff, luma);
    // Alpha opaque: the depth's largest code (255 in a byte).
    if (p.aoff >= 0) yuv_put(dst, p, 0, y, x * p.ystep + p.aoff, p.maxc);
    if (!p.chroma || x % p.sx != 0 || y % p.sy != 0) return;
    int cx = x / p.sx, cy = y / p.sy;
    int xs[3], ys[3];
    float wx[3], wy[3];
    down_taps(cx, p.w, p.h_cosited, p.sx, xs, wx);
    down_taps(cy, p.h, p.v_cosited, p.sy, ys, wy);
    float c3[3] = {0.0f, 0.0f, 0.0f};
    for (int tx = 0; tx < 3; tx++) {
        if (wx[tx] == 0.0f) continue;
        for (int c = 0; c < 3; c++) {
            float acc = 0.0f;
            for (int ty = 0; ty < 3; ty++) {
                if (wy[ty] == 0.0f) continue;
                acc = acc + wy[ty] * rgb[((size_t)ys[ty] * p.w + xs[tx]) * 3 + c];
            }
            c3[c] = c3[c] + wx[tx] * acc;
        }
    }
    float du = p.u[0] * c3[0] + p.u[1] * c3[1] + p.u[2] * c3[2];
    float dv = p.v[0] * c3[0] + p.v[1] * c3[1] + p.v[2] * c3[2];
    int pl, byte;
    yuv_chroma_at(p, cx, 0, &pl, &byte);
    yuv_put(dst, p, pl, cy, byte, p.centre + du);
    yuv_chroma_at(p, cx, 1, &pl, &byte);
    yuv_put(dst, p, pl, cy, byte, p.centre + dv);
}

// ---------------------------------------------------------------------------------------
// Direct integer convs for the thin layers, unsigned codes with dp4a, S = 2·Σqk − M·Σq.
// Head (4 input channels): one thread per (pixel, 4 output channels), float4 / u32 stores.
// Tail (3 outputs): four threads per pixel, each a quarter of the input channels (one 16- or
// 8-byte load per tap), summed across the four lanes.

struct DirectArgs {
    const u8* in;      // codes, [F][hp_in][wp_in][cin padded to 4]
    const u32* wts;    // unsigned weight codes k, [COUT][9][CINW] packed 4 per word
    const float* bias; // [COUT]
    const int* ktab;   // [16][COUT]
    const Quant* plan; // [F][L]
    float* head;       // HEAD: [F][h][w][COUT] f32 (global skip)
    float* res;        // HEAD: [F][h][w][COUT] f32 (residual stream)
    u8* out;           // HEAD: codes for the next layer, [F][hp_out][wp_out][COUT]
    u8* rgb;           // TAIL: [F][h][w][3] bytes
    float* rgbf;       // TAIL: [F][h][w][3] f32 before rounding, or null
    int h, w, hp_in, wp_in, hp_out, wp_out;
    int m, layer, next, L;
    float hw, mean0, mean1, mean2, inv;
    int pad;  // no implicit padding: the struct is 144 bytes on the host and the GPU alike
};

// A head output of 4 channels (float4 index i): the global skip and the residual stream.
__device__ __forceinline__ void store_head(float* head, float* res, size_t i, const float* v) {
    float4 v4;
    v4.x = v[0];
    v4.y = v[1];
    v4.z = v[2];
    v4.w = v[3];
    ((float4*)head)[i] = v4;
    ((float4*)res)[i] = v4;
}

template <int COUT>
__device__ __forceinline__ void conv_head(const DirectArgs& a) {
    __shared__ u32 sw[COUT * 9];
    for (int i = threadIdx.x; i < COUT * 9; i += blockDim.x) sw[i] = a.wts[i];
    __syncthreads();
    const int groups = COUT / 4;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int f = blockIdx.y;
    int p = i / groups, o4 = i - (i / groups) * groups;
    if (p >= a.h * a.w) return;
    int y = p / a.w, x = p - (p / a.w) * a.w;
    u32 acc[4] = {0, 0, 0, 0}, sq = 0;
#pragma unroll
    for (int t = 0; t < 9; t++) {
        u32 q = *(const u32*)(a.in + (((size_t)f * a.hp_in + y + t / 3) * a.wp_in + x + t % 3) * 4);
        sq = dp4a_u(q, 0x01010101u, sq);
#pragma unroll
        for (int j = 0; j < 4; j++) acc[j] = dp4a_u(q, sw[(o4 * 4 + j) * 9 + t], acc[j]);
    }
    Quant qi = a.plan[f * a.L + a.layer], qn = a.plan[f * a.L + a.next];
    int cls = border_bits(y, a.h) * 4 + border_bits(x, a.w);
    float v[4];
    u32 word = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int o = o4 * 4 + j;
        int s = 2 * (int)acc[j] - a.m * (int)sq;
        v[j] = a.bias[o] + a.hw * (qi.da * (float)s + qi.l * (float)a.ktab[cls * COUT + o]);
        word |= act_code(v[j], qn) << (8 * j);
    }
    size_t px = (size_t)f * a.h * a.w + p;
    store_head(a.head, a.res, px * groups + o4, v);
    ((u32*)(a.out + (((size_t)f * a.hp_out + y + 1) * a.wp_out + x + 1) * COUT))[o4] = word;
}

template <int CIN>
__device__ __forceinline__ void conv_tail(const DirectArgs& a) {
    const int CINW = CIN / 4, PART = CINW / 4;  // words per pixel and per lane
    __shared__ u32 sw[3 * 9 * CINW];
    for (int i = threadIdx.x; i < 3 * 9 * CINW; i += blockDim.x) sw[i] = a.wts[i];
    __syncthreads();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int f = blockIdx.y;
    int p = i >> 2, part = i & 3;
    bool valid = p < a.h * a.w;
    int y = valid ? p / a.w : 0, x = valid ? p - (p / a.w) * a.w : 0;
    u32 acc[3] = {0, 0, 0}, sq = 0;
    if (valid) {
#pragma unroll
        for (int t = 0; t < 9; t++) {
            const u32* src = (const u32*)(a.in + (((size_t)f * a.hp_in + y + t / 3) * a.wp_in + x + t % 3) * CIN) +
                             part * PART;
            u32 q[PART];
            if (PART == 4) {
                uint4 v = *(const uint4*)src;
                q[0] = v.x;
                q[1 % PART] = v.y;
                q[2 % PART] = v.z;
                q[3 % PART] = v.w;
            } else {
                uint2 v = *(const uint2*)src;
                q[0] = v.x;
                q[1 % PART] = v.y;
            }
#pragma unroll
            for (int j = 0; j < PART; j++) {
                sq = dp4a_u(q[j], 0x01010101u, sq);
#pragma unroll
                for (int o = 0; o < 3; o++)
                    acc[o] = dp4a_u(q[j], sw[(o * 9 + t) * CINW + part * PART + j], acc[o]);
            }
        }
    }
#pragma unroll
    for (int d = 1; d < 4; d <<= 1) {
        sq += __shfl_xor_sync(0xffffffffu, sq, d);
#pragma unroll
        for (int o = 0; o < 3; o++) acc[o] += __shfl_xor_sync(0xffffffffu, acc[o], d);
    }
    if (!valid || part != 0) return;
    Quant qi = a.plan[f * a.L + a.layer];
    int cls = border_bits(y, a.h) * 4 + border_bits(x, a.w);
    size_t px = (size_t)f * a.h * a.w + p;
    float mean[3] = {a.mean0, a.mean1, a.mean2};
#pragma unroll
    for (int o = 0; o < 3; o++) {
        int s = 2 * (int)acc[o] - a.m * (int)sq;
        float v = a.bias[o] + a.hw * (qi.da * (float)s + qi.l * (float)a.ktab[cls * 3 + o]);
        float r = (v + mean[o]) * a.inv;
        a.rgb[px * 3 + o] = to_u8(r);
        if (a.rgbf) a.rgbf[px * 3 + o] = r;
    }
}

// A direct kernel NAME_c{C} of 128-thread blocks running the template NAME<C>.
#define DIRECT_KERNEL(NAME, ARGS, C)                                                       \
    extern "C" __global__ void __launch_bounds__(128) NAME##_c##C(ARGS a) { NAME<C>(a); }
DIRECT_KERNEL(conv_head, DirectArgs, 32)
DIRECT_KERNEL(conv_head, DirectArgs, 64)
DIRECT_KERNEL(conv_tail, DirectArgs, 32)
DIRECT_KERNEL(conv_tail, DirectArgs, 64)

// ---------------------------------------------------------------------------------------
// Floating-point head and tail (non-fq models and float models): f32 weights and arithmetic.
// Head: from the RGB bytes (x = s·k − mean_c, zero padding), one thread per (pixel, 4 output
// channels); writes head and res (f32) and either the next layer's codes (codes = 1, a
// quantized body) or the f16 feature map of a floating-point body.
// Tail: from an f16 map, four threads per pixel as in conv_tail; bytes and (optionally) f32.

struct FloatArgs {
    const float* rgb;  // HEAD: frames [F][h][w][3], 0-255 scale
    const u8* in;      // TAIL: f16 map [F][hp_in][wp_in][CIN]
    const float* wts;  // HEAD: [9][3][COUT]; TAIL: [3][9][CIN]
    const float* bias; // [COUT]
    const Quant* plan; // [F][L]
    float* head;       // HEAD: [F][h][w][COUT]
    float* res;        // HEAD: [F][h][w][COUT]
    u8* out;           // HEAD: codes or f16 map [F][hp_out][wp_out][COUT]
    u8* rgbo;          // TAIL: [F][h][w][3] bytes
    float* rgbf;       // TAIL: [F][h][w][3] f32 before rounding, or null
    int h, w, hp_in, wp_in, hp_out, wp_out, next, L, codes;
    float k, mean0, mean1, mean2, inv;
};

template <int COUT>
__device__ __forceinline__ void conv_fhead(const FloatArgs& a) {
    __shared__ float sw[27 * COUT];
    for (int i = threadIdx.x; i < 27 * COUT; i += blockDim.x) sw[i] = a.wts[i];
    __syncthreads();
    const int groups = COUT / 4;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int f = blockIdx.y;
    int p = i / groups, o4 = i - (i / groups) * groups;
    if (p >= a.h * a.w) return;
    int y = p / a.w, x = p - (p / a.w) * a.w;
    const float* img = a.rgb + (size_t)f * a.h * a.w * 3;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int t = 0; t < 9; t++) {
        int yy = y + t / 3 - 1, xx = x + t % 3 - 1;
        if (yy < 0 || yy >= a.h || xx < 0 || xx >= a.w) continue;
        const float* s = img + ((size_t)yy * a.w + xx) * 3;
        float xs[3] = {s[0] * a.k - a.mean0, s[1] * a.k - a.mean1, s[2] * a.k - a.mean2};
#pragma unroll
        for (int c = 0; c < 3; c++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[j] = acc[j] + xs[c] * sw[(t * 3 + c) * COUT + o4 * 4 + j];
    }
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; j++) v[j] = a.bias[o4 * 4 + j] + acc[j];
    size_t px = (size_t)f * a.h * a.w + p;
    store_head(a.head, a.res, px * groups + o4, v);
    size_t opx = ((size_t)f * a.hp_out + y + 1) * a.wp_out + x + 1;
    if (a.codes) {
        Quant qn = a.plan[f * a.L + a.next];
        u32 word = 0;
#pragma unroll
        for (int j = 0; j < 4; j++) word |= act_code(v[j], qn) << (8 * j);
        ((u32*)(a.out + opx * COUT))[o4] = word;
    } else {
        uint2 hv;
        hv.x = pack_h2(v[0], v[1]);
        hv.y = pack_h2(v[2], v[3]);
        ((uint2*)(a.out + opx * COUT * 2))[o4] = hv;
    }
}

template <int CIN>
__device__ __forceinline__ void conv_ftail(const FloatArgs& a) {
    const int PART = CIN / 4;  // channels per lane: 8 or 16, one or two 16-byte loads per tap
    __shared__ float sw[3 * 9 * CIN];
    for (int i = threadIdx.x; i < 3 * 9 * CIN; i += blockDim.x) sw[i] = a.wts[i];
    __syncthreads();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int f = blockIdx.y;
    int p = i >> 2, part = i & 3;
    bool valid = p < a.h * a.w;
    int y = valid ? p / a.w : 0, x = valid ? p - (p / a.w) * a.w : 0;
    float acc[3] = {0.0f, 0.0f, 0.0f};
    if (valid) {
#pragma unroll
        for (int t = 0; t < 9; t++) {
            const uint4* src = (const uint4*)(a.in + ((((size_t)f * a.hp_in + y + t / 3) * a.wp_in + x + t % 3) *
                                                          CIN + part * PART) * 2);
#pragma unroll
            for (int q = 0; q < PART / 8; q++) {
                uint4 v = src[q];
                u32 words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    float xv = h2f((u16)(words[e / 2] >> (16 * (e & 1))));
                    const int ci = part * PART + q * 8 + e;
#pragma unroll
                    for (int o = 0; o < 3; o++) acc[o] = acc[o] + xv * sw[(o * 9 + t) * CIN + ci];
                }
            }
        }
    }
#pragma unroll
    for (int d = 1; d < 4; d <<= 1)
#pragma unroll
        for (int o = 0; o < 3; o++) acc[o] += __shfl_xor_sync(0xffffffffu, acc[o], d);
    if (!valid || part != 0) return;
    size_t px = (size_t)f * a.h * a.w + p;
    float mean[3] = {a.mean0, a.mean1, a.mean2};
#pragma unroll
    for (int o = 0; o < 3; o++) {
        float r = (a.bias[o] + acc[o] + mean[o]) * a.inv;
        a.rgbo[px * 3 + o] = to_u8(r);
        if (a.rgbf) a.rgbf[px * 3 + o] = r;
    }
}

DIRECT_KERNEL(conv_fhead, FloatArgs, 32)
DIRECT_KERNEL(conv_fhead, FloatArgs, 64)
DIRECT_KERNEL(conv_ftail, FloatArgs, 32)
DIRECT_KERNEL(conv_ftail, FloatArgs, 64)

// ---------------------------------------------------------------------------------------
// Tensor-core implicit-GEMM conv3x3 (mma.sync m16n8k32, u8 activations, u8 or s8 weights).
//
// A block of 256 threads (8 warps) owns a 16x16 output tile of one frame and a slice of
// NS = min(64, cout) output channels; it keeps the slice's weights in shared memory and loops
// over tiles (persistent). Warp w computes tile rows 2w and 2w+1 (two m16 fragments, one
// image row of 16 pixels each) against every n8 fragment of the slice. K runs over the 9 taps
// x CIN channels of the 18x18 code halo in shared memory.
//
// SIGNED (weight bits <= 7): weights are centred codes k~ = 2k - M in s8 and S = Σ q·k~.
// Unsigned (8-bit weights): codes k in u8, and S = 2·Σqk − M·Σq where each thread sums the
// activation bytes of its A fragments with dp4a and the 4 threads of a row group add up.

enum { EPI_RELU = 1, EPI_RES = 2, EPI_SKIP = 3, EPI_SHUF = 4 };

struct MmaArgs {
    const u8* in;      // codes [F][hp][wp][CIN], hp = 16·tiles_y + 2, wp = 16·tiles_x + 2
    const u8* wts;     // [slices][9][NR][CIN + 16] bytes (smem image, padding included)
    const float* bias; // [cout]
    const int* ktab;   // [16][cout]
    const Quant* plan; // [F][L]
    float* res;        // EPI_RES: residual stream [F][h][w][cout]
    const float* head; // EPI_SKIP: head output [F][h][w][cout]
    u8* out;           // codes for the next layer [F][hp_out][wp_out][cout or cout/r²]
    int h, w, hp, wp, tiles_x, tiles_y, frames;
    int hp_out, wp_out, cout, m, layer, next, L, r;
    float hw, res_scale;
    int pad;  // no implicit padding: the struct is 144 bytes on the host and the GPU alike
};

#ifndef ADABM_HOST  // the host build (tests/cuda_host/emu.hpp) brings its own
__device__ __forceinline__ void mma_u8u8(int* d, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// f16 x f16 -> f32 (floating-point layers). With f16 elements a 32-byte k-chunk holds 16
// values, and the m16n8k16 fragments occupy the same bytes of each row as the m16n8k32 u8
// ones: the loads below serve both.
__device__ __forceinline__ void mma_f16(float* d, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_u8s8(int* d, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

// CIN: bytes per halo pixel and weight row (channels × element size); ESZ: bytes per output
// element (1: codes, 2: f16).
template <int CIN, int NS, int ESZ>
struct MmaShape {
    static const int NR = NS;            // weight rows in smem
    static const int NT = NR / 8;        // n8 fragments per warp
    static const int WROW = CIN + 16;    // bytes per weight row (bank padding)
    static const int NC = CIN / 16;      // 16-byte chunks per halo pixel
    static const int WBYTES = 9 * NR * WROW;
    static const int EBYTES = 17 * NS * 4;  // epilogue constants: K table and bias
    static const int HBYTES = HALO * HALO * CIN;
    static const int SBYTES = 8 * 32 * NS * ESZ;  // EPI_SHUF staging, 32·NS elements per warp
    static const int SMEM = WBYTES + EBYTES + 2 * HBYTES + SBYTES;  // two halo buffers
};

// Swizzled 16-byte chunk of halo pixel hp: 8 consecutive pixels read in one fragment load
// hit 8 distinct groups of 4 banks.
template <int CIN>
__device__ __forceinline__ int swz(int hp, int chunk) {
    return chunk ^ ((hp / (128 / CIN)) & (CIN / 16 - 1));
}

#ifndef ADABM_HOST  // the host build (tests/cuda_host/emu.hpp) brings its own
// Shared-state-space address of a pointer into shared memory.
__device__ __forceinline__ u32 smem_u32(const void* p) {
    u32 s;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }"
                 : "=r"(s)
                 : "l"(p));
    return s;
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_u32(smem)), "l"(gmem));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }

// Waits for every copy this thread queued.
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;"); }

// Asks for the 128-byte line at `p` (inside a buffer) to be brought into L2: no register
// written, no effect on results.
__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
#endif

// ADABM_LDSM (NVRTC option -DADABM_LDSM=N, from ADABM_CUDA_LDMATRIX): which tensor-core convs
// load their A and B fragments with ldmatrix.x4 (4 registers per instruction) instead of one
// 32-bit shared load per register. Same registers, same results. 0: none; 1 (the engine's
// default): the integer convs, measured 1.08-1.09x faster on an H200 and bit-exact; 2: the
// f16 convs of floating-point layers too (checked on the emulated GPU of tests/cuda_host.rs,
// not yet run on a GPU).
#ifndef ADABM_LDSM
#define ADABM_LDSM 0
#endif

// ADABM_PREFETCH (NVRTC option -DADABM_PREFETCH=1, from ADABM_CUDA_PREFETCH=1): the convs that
// read the residual stream or the head output in their epilogue (EPI_RES, EPI_SKIP) ask for
// their tile's lines in L2 when the tile starts, so that those reads, which wait on DRAM
// after the tile's products, find them there. Same results; not yet measured on a GPU, so off
// by default.
#ifndef ADABM_PREFETCH
#define ADABM_PREFETCH 0
#endif

// ldmatrix.x4 of four 8x8 b16 matrices: lanes 8j..8j+7 give the 16-byte rows of matrix j, and
// register j of lane i receives bytes 4·(i%4)..4·(i%4)+3 of row i/4 of matrix j, which is
// the m16n8k32 fragment layout of 8-bit A (rows g, g+8 × k halves) and B (n rows × k halves).
#ifndef ADABM_HOST  // the host build (tests/cuda_host/emu.hpp) brings its own
__device__ __forceinline__ void ldsm_x4(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
#endif

// Queues the asynchronous copy of one tile's 18x18 code halo into `halo`.
template <int CIN>
__device__ __forceinline__ void load_halo(const MmaArgs& a, int tile, u8* halo) {
    const int NC = CIN / 16;
    const int f = tile / (a.tiles_y * a.tiles_x);
    const int rem = tile - f * a.tiles_y * a.tiles_x;
    const int ty = rem / a.tiles_x, tx = rem - (rem / a.tiles_x) * a.tiles_x;
    for (int i = threadIdx.x; i < HALO * HALO * NC; i += MMA_THREADS) {
        int hp = i / NC, c = i - hp * NC;
        int hy = hp / HALO, hx = hp - hy * HALO;
        const uint4* src =
            (const uint4*)(a.in + (((size_t)f * a.hp + ty * TILE + hy) * a.wp + tx * TILE + hx) * CIN) + c;
        cp_async16(halo + (hp * NC + swz<CIN>(hp, c)) * 16, src);
    }
    cp_async_commit();
}

template <bool F> struct AccOf { typedef int T; };
template <> struct AccOf<true> { typedef float T; };
template <bool H> struct OutOf { typedef u8 T; };
template <> struct OutOf<true> { typedef u16 T; };

// C: input channels. WK: 0 = u8 codes × u8 weights, 1 = u8 codes × s8 weights, 2 = f16 map ×
// f16 weights (a floating-point layer: v = bias + Σ, no quantizer). HOUT: the output is an f16
// map (the input of a floating-point layer) instead of the next layer's codes.
template <int C, int NS, int MODE, int WK, bool HOUT>
__device__ __forceinline__ void conv_mma(const MmaArgs& a) {
    constexpr bool SIGNED = WK == 1, F16 = WK == 2;
    constexpr bool LDSM = ADABM_LDSM >= (F16 ? 2 : 1);
    constexpr int CIN = F16 ? 2 * C : C;  // bytes per halo pixel
    constexpr int ESZ = HOUT ? 2 : 1;
    typedef MmaShape<CIN, NS, ESZ> S;
    DYNAMIC_SMEM(smem);
    u8* sw = smem;
    int* ktab = (int*)(smem + S::WBYTES);  // [16][NS] of this slice
    float* bias = (float*)(ktab + 16 * NS);
    u8* halos = smem + S::WBYTES + S::EBYTES;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, l4 = lane & 3;
    const int slice = blockIdx.y;
    const int ntiles = a.frames * a.tiles_y * a.tiles_x;
    if ((int)blockIdx.x < ntiles) load_halo<CIN>(a, blockIdx.x, halos);

    {  // the slice's weights and epilogue constants, once
        const uint4* src = (const uint4*)(a.wts + (size_t)slice * S::WBYTES);
        uint4* dst = (uint4*)sw;
        for (int i = tid; i < S::WBYTES / 16; i += MMA_THREADS) dst[i] = src[i];
        if constexpr (!F16)
            for (int i = tid; i < 16 * NS; i += MMA_THREADS)
                ktab[i] = a.ktab[(i / NS) * a.cout + slice * NS + i % NS];
        for (int i = tid; i < NS; i += MMA_THREADS) bias[i] = a.bias[slice * NS + i];
    }

    int buf = 0;
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const int f = tile / (a.tiles_y * a.tiles_x);
        const int rem = tile - f * a.tiles_y * a.tiles_x;
        const int ty = rem / a.tiles_x, tx = rem - (rem / a.tiles_x) * a.tiles_x;
        cp_async_wait_all();
        __syncthreads();  // this tile's halo is in; every warp is done with the other buffer
        if (tile + (int)gridDim.x < ntiles)
            load_halo<CIN>(a, tile + gridDim.x, halos + (buf ^ 1) * S::HBYTES);
        const u8* halo = halos + buf * S::HBYTES;
        buf ^= 1;
        // (Not in the non-fq last block's conv2 with its f16 output, `_h`, which runs once a
        // frame and would spill on sm_90 with the extra addresses.)
        if constexpr (ADABM_PREFETCH && (MODE == EPI_RES || MODE == EPI_SKIP) && !(HOUT && !F16)) {
            // This warp's two rows of 16 pixels × the slice's NS floats: NS / 32 lines a pixel.
            constexpr int LPP = NS / 32;
            const float* src = MODE == EPI_RES ? a.res : a.head;
            for (int i = lane; i < 32 * LPP; i += 32) {
                const int p = i / LPP, y = ty * TILE + warp * 2 + p / TILE, x = tx * TILE + p % TILE;
                if (y < a.h && x < a.w)
                    prefetch_l2(src + (((size_t)f * a.h + y) * a.w + x) * a.cout + slice * NS + (i % LPP) * 32);
            }
        }

        typename AccOf<F16>::T acc[2][S::NT][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < S::NT; nt++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[mt][nt][j] = 0;

        u32 sqp[2][2] = {{0, 0}, {0, 0}};  // unsigned: partial Σq of rows g and g+8
        const u32* h32 = (const u32*)halo;
        const u32 halo_s = smem_u32(halo), sw_s = smem_u32(sw);
        (void)h32;
        (void)halo_s;
        (void)sw_s;
#pragma unroll 1
        for (int t = 0; t < 9; t++) {
            const int dy = t / 3, dx = t - (t / 3) * 3;
#pragma unroll
            for (int kk = 0; kk < CIN / 32; kk++) {
                u32 A[2][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    if constexpr (LDSM) {
                        // Matrix j = lane/8: pixels g (+8 for odd j) of the row, chunk 2kk + j/2.
                        const int j = lane >> 3;
                        const int hp = (warp * 2 + mt + dy) * HALO + (lane & 7) + dx + (j & 1) * 8;
                        ldsm_x4(A[mt], halo_s + (hp * S::NC + swz<CIN>(hp, 2 * kk + (j >> 1))) * 16);
                    } else {
                        int hp0 = (warp * 2 + mt + dy) * HALO + g + dx, hp1 = hp0 + 8;
                        A[mt][0] = h32[(hp0 * S::NC + swz<CIN>(hp0, 2 * kk)) * 4 + l4];
                        A[mt][1] = h32[(hp1 * S::NC + swz<CIN>(hp1, 2 * kk)) * 4 + l4];
                        A[mt][2] = h32[(hp0 * S::NC + swz<CIN>(hp0, 2 * kk + 1)) * 4 + l4];
                        A[mt][3] = h32[(hp1 * S::NC + swz<CIN>(hp1, 2 * kk + 1)) * 4 + l4];
                    }
                    if constexpr (WK == 0) {
                        sqp[mt][0] = dp4a_u(A[mt][0], 0x01010101u, sqp[mt][0]);
                        sqp[mt][0] = dp4a_u(A[mt][2], 0x01010101u, sqp[mt][0]);
                        sqp[mt][1] = dp4a_u(A[mt][1], 0x01010101u, sqp[mt][1]);
                        sqp[mt][1] = dp4a_u(A[mt][3], 0x01010101u, sqp[mt][1]);
                    }
                }
                if constexpr (LDSM) {
                    static_assert(S::NT % 2 == 0, "ldmatrix.x4 loads n8 fragments in pairs");
                    // Two n8 fragments per ldmatrix.x4: matrix j = lane/8 is fragment nt + j/2,
                    // k half j%2 (registers b0, b1 of nt, then of nt + 1).
#pragma unroll
                    for (int nt = 0; nt < S::NT; nt += 2) {
                        const int j = lane >> 3;
                        const int row = t * S::NR + (nt + (j >> 1)) * 8 + (lane & 7);
                        u32 B[4];
                        ldsm_x4(B, sw_s + row * S::WROW + kk * 32 + (j & 1) * 16);
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            if constexpr (F16) {
                                mma_f16(acc[0][nt + h], A[0], B[2 * h], B[2 * h + 1]);
                                mma_f16(acc[1][nt + h], A[1], B[2 * h], B[2 * h + 1]);
                            } else if constexpr (SIGNED) {
                                mma_u8s8(acc[0][nt + h], A[0], B[2 * h], B[2 * h + 1]);
                                mma_u8s8(acc[1][nt + h], A[1], B[2 * h], B[2 * h + 1]);
                            } else {
                                mma_u8u8(acc[0][nt + h], A[0], B[2 * h], B[2 * h + 1]);
                                mma_u8u8(acc[1][nt + h], A[1], B[2 * h], B[2 * h + 1]);
                            }
                        }
                    }
                } else {
#pragma unroll
                    for (int nt = 0; nt < S::NT; nt++) {
                        const u8* wrow = sw + (t * S::NR + nt * 8 + g) * S::WROW + kk * 32 + l4 * 4;
                        u32 b0 = *(const u32*)wrow, b1 = *(const u32*)(wrow + 16);
                        if constexpr (F16) {
                            mma_f16(acc[0][nt], A[0], b0, b1);
                            mma_f16(acc[1][nt], A[1], b0, b1);
                        } else if constexpr (SIGNED) {
                            mma_u8s8(acc[0][nt], A[0], b0, b1);
                            mma_u8s8(acc[1][nt], A[1], b0, b1);
                        } else {
                            mma_u8u8(acc[0][nt], A[0], b0, b1);
                            mma_u8u8(acc[1][nt], A[1], b0, b1);
                        }
                    }
                }
            }
        }

        // Epilogue.
        const Quant qi = a.plan[f * a.L + a.layer];
        const Quant qn = a.plan[f * a.L + a.next];
        // EPI_SHUF with r² dividing the slice: stage the warp's HR codes in shared memory and
        // store whole pixels (16 or 8 bytes) instead of scattered bytes.
        const bool staged = MODE == EPI_SHUF && NS % (a.r * a.r) == 0;
        u8* stage = halos + 2 * S::HBYTES + warp * 32 * NS * ESZ;
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            const int y = ty * TILE + warp * 2 + mt;
            int sq[2] = {0, 0};
            if constexpr (WK == 0) {  // the 4 threads of a row group hold a quarter of the channels each
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    u32 v = sqp[mt][hh];
                    v += __shfl_xor_sync(0xffffffffu, v, 1);
                    v += __shfl_xor_sync(0xffffffffu, v, 2);
                    sq[hh] = (int)v;
                }
            }
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int x = tx * TILE + g + half * 8;
                if (y >= a.h || x >= a.w) continue;
                const int* kt = ktab + (border_bits(y, a.h) * 4 + border_bits(x, a.w)) * NS;
                const size_t px = ((size_t)f * a.h + y) * a.w + x;
                // Residual / skip operands of this pixel, loaded before any store: the byte
                // stores below may alias them as far as the compiler knows, which would
                // otherwise serialise every load behind the previous store.
                // In groups of 4 fragments, to bound the registers they hold.
#pragma unroll
                for (int nb = 0; nb < NS / 8; nb += 4) {
                float2 pre[4];
                if (MODE == EPI_RES || MODE == EPI_SKIP) {
                    const float* base =
                        (MODE == EPI_RES ? a.res : a.head) + px * a.cout + slice * NS + nb * 8 + l4 * 2;
#pragma unroll
                    for (int q = 0; q < 4; q++) pre[q] = *(const float2*)(base + q * 8);
                }
#pragma unroll
                for (int nt = nb; nt < nb + 4; nt++) {
                    const int nl = nt * 8 + l4 * 2;  // channel within the slice
                    const int n0 = slice * NS + nl;
                    float v[2];
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        if constexpr (F16) {
                            v[j] = bias[nl + j] + acc[mt][nt][half * 2 + j];
                        } else {
                            int s = acc[mt][nt][half * 2 + j];
                            if constexpr (WK == 0) s = 2 * s - a.m * sq[half];
                            v[j] = bias[nl + j] + a.hw * (qi.da * (float)s + qi.l * (float)kt[nl + j]);
                        }
                    }
                    if (MODE == EPI_SHUF) {  // channel n -> (c, i, j) of PixelShuffle(r)
                        const int rr = a.r * a.r;
#pragma unroll
                        for (int j = 0; j < 2; j++) {
                            const int n = n0 + j;
                            const int ch = n / rr, i = (n - ch * rr) / a.r, jj = n - ch * rr - i * a.r;
                            // f16 output (float upsampler) or the next layer's code
                            typedef typename OutOf<HOUT>::T OT;
                            OT e;
                            if constexpr (HOUT)
                                e = f2h(v[j]);
                            else
                                e = (u8)act_code(v[j], qn);
                            if (staged) {  // this warp's HR rows, [row][x][slice channel]
                                const int hr = (mt * a.r + i) * (TILE * a.r) + (g + half * 8) * a.r + jj;
                                ((OT*)stage)[hr * (NS / rr) + (nl + j) / rr] = e;
                            } else {
                                const int Y = y * a.r + i, X = x * a.r + jj;
                                ((OT*)a.out)[(((size_t)f * a.hp_out + Y + 1) * a.wp_out + X + 1) * (a.cout / rr) +
                                             ch] = e;
                            }
                        }
                    } else {
                        float o0, o1;  // the layer's output, what the next layer quantizes
                        if (MODE == EPI_RELU) {
                            o0 = v[0] > 0.0f ? v[0] : 0.0f;
                            o1 = v[1] > 0.0f ? v[1] : 0.0f;
                        } else if (MODE == EPI_RES) {
                            float2 r = pre[nt - nb];
                            r.x = r.x + a.res_scale * v[0];
                            r.y = r.y + a.res_scale * v[1];
                            *(float2*)(a.res + px * a.cout + n0) = r;
                            o0 = r.x;
                            o1 = r.y;
                        } else {  // EPI_SKIP
                            o0 = v[0] + pre[nt - nb].x;
                            o1 = v[1] + pre[nt - nb].y;
                        }
                        const size_t o = (((size_t)f * a.hp_out + y + 1) * a.wp_out + x + 1) * a.cout + n0;
                        if constexpr (HOUT) {
                            ((u32*)a.out)[o / 2] = pack_h2(o0, o1);
                        } else {
                            *(u16*)(a.out + o) = (u16)(act_code(o0, qn) | (act_code(o1, qn) << 8));
                        }
                    }
                }
                }
            }
        }
        if (MODE == EPI_SHUF && staged) {
            __syncwarp();
            const int rr = a.r * a.r, cps = NS / rr, wpx = TILE * a.r;
            for (int idx = lane; idx < 2 * a.r * wpx; idx += 32) {
                const int hr_row = idx / wpx, hr_x = idx - (idx / wpx) * wpx;
                if (ty * TILE + warp * 2 + hr_row / a.r >= a.h || tx * TILE + hr_x / a.r >= a.w) continue;
                const int Y = (ty * TILE + warp * 2) * a.r + hr_row, X = tx * TILE * a.r + hr_x;
                const int nbytes = cps * ESZ;
                u8* dst = a.out + ((((size_t)f * a.hp_out + Y + 1) * a.wp_out + X + 1) * (a.cout / rr) +
                                   slice * cps) * ESZ;
                const u8* src = stage + idx * nbytes;
                if (nbytes == 32) {
                    ((uint4*)dst)[0] = ((const uint4*)src)[0];
                    ((uint4*)dst)[1] = ((const uint4*)src)[1];
                } else if (nbytes == 16) {
                    *(uint4*)dst = *(const uint4*)src;
                } else if (nbytes == 8) {
                    *(uint2*)dst = *(const uint2*)src;
                } else {
                    for (int c = 0; c < nbytes; c++) dst[c] = src[c];
                }
            }
            __syncwarp();
        }
    }
}

// Two blocks of 256 threads per SM (128 registers). On sm_8x ptxas spills the upsampler
// (EPI_SHUF) kernel and the f16-output residual kernel at 128 registers, so there they get the
// whole register file.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define MMA_MIN_BLOCKS(MODE) ((MODE) == EPI_SHUF ? 1 : 2)
#else
#define MMA_MIN_BLOCKS(MODE) 2
#endif
#define MMA_KERNEL(CIN, MODE, SIGNED)                                                        \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, MMA_MIN_BLOCKS(MODE))          \
        conv_mma_c##CIN##_e##MODE##_s##SIGNED(MmaArgs a) {                                   \
        conv_mma<CIN, (CIN < 64 ? CIN : 64), MODE, SIGNED, false>(a);                        \
    }
// The last block's conv2 of a non-fq model: the residual update, then the f16 input of the
// floating-point last body conv instead of codes.
#define MMA_KERNEL_H(CIN, SIGNED)                                                            \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, MMA_MIN_BLOCKS(EPI_SHUF))      \
        conv_mma_c##CIN##_e2_s##SIGNED##_h(MmaArgs a) {                                      \
        conv_mma<CIN, (CIN < 64 ? CIN : 64), EPI_RES, SIGNED, true>(a);                      \
    }
// Floating-point layers on f16 tensor cores, f32 accumulation, f16 outputs: slices of 32
// output channels (the f16 weights and halo take twice the bytes), one block per SM.
#define HMMA_KERNEL(CIN, MODE)                                                               \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS, 1)                             \
        conv_hmma_c##CIN##_e##MODE(MmaArgs a) {                                              \
        conv_mma<CIN, 32, MODE, 2, true>(a);                                                 \
    }
// Upsampler convs (EPI_SHUF) are fixed 8-bit layers: no signed variant.
#define MMA_KERNELS(CIN)     \
    MMA_KERNEL(CIN, 1, 0)    \
    MMA_KERNEL(CIN, 1, 1)    \
    MMA_KERNEL(CIN, 2, 0)    \
    MMA_KERNEL(CIN, 2, 1)    \
    MMA_KERNEL(CIN, 3, 0)    \
    MMA_KERNEL(CIN, 3, 1)    \
    MMA_KERNEL(CIN, 4, 0)
MMA_KERNELS(32)
MMA_KERNELS(64)
#define FLOAT_KERNELS(CIN) \
    MMA_KERNEL_H(CIN, 0)   \
    MMA_KERNEL_H(CIN, 1)   \
    HMMA_KERNEL(CIN, 1)    \
    HMMA_KERNEL(CIN, 2)    \
    HMMA_KERNEL(CIN, 3)    \
    HMMA_KERNEL(CIN, 4)
FLOAT_KERNELS(32)
FLOAT_KERNELS(64)
