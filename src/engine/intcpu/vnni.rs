//! VNNI conv sums: `vpdpbusd` multiplies the 4 u8 codes of a channel group with the 4 i8
//! weights of each output channel and adds the 4 products to an i32 lane, exactly (no i16
//! stage, no saturation: the "s" form is not used). So one kernel serves every layer: any
//! codes (1–8 bits) against centred or offset-form weights (the offset form is corrected by
//! [`super::finish_offset`] as for AVX2), and the Winograd F(2,3) sums need no widening
//! schedule (exact whenever the transformed codes `0..=2Q` fit u8 and the transformed weights
//! fit i8).
//!
//! Both kernels are written once over [`Dot`], the one instruction that differs:
//! - [`AvxVnni`]: the VEX form (`AVX-VNNI`: Alder Lake and later, Sapphire Rapids, Zen 5);
//! - [`Avx512Vnni`]: the EVEX form (`AVX512_VNNI` + `AVX512VL`: Cascade Lake, Ice Lake,
//!   Sapphire Rapids, Zen 4): the direct kernel on 512-bit registers ([`direct512`]: 16 output
//!   channels per vector, 4 pixels per weight load), the Winograd kernel on 256-bit ones;
//! - [`Emulated`]: the same sums from AVX2 instructions (two `vpmaddwd` on the even and odd
//!   bytes spread to i16), so that the kernels' layout, tails and offsets are tested on hosts
//!   without VNNI ([`super::CpuLevel::EmulatedVnni`] with the AVX-VNNI kernels' structure,
//!   [`super::CpuLevel::EmulatedVnni512`] with AVX-512's; never detected, tests only).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::ops::Range;

use super::avx2::{broadcast_groups, chunks_and_blocks, combine_wino};
use super::wino::{Wino2Input, Wino2Weights, WinoInput, WinoWeights};
use super::{Codes, PackedConv};

/// `vpdpbusd`: per i32 lane, `acc + Σ_j a_j · b_j` over its 4 bytes, `a` unsigned, `b` signed.
pub(super) trait Dot {
    /// Pixels per weight load in the direct kernel (bounded by the vector registers).
    const PIXELS: usize;

    /// # Safety
    /// The CPU must support the instruction (called only from the matching entry points).
    unsafe fn dp(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
}

pub(super) struct AvxVnni;
pub(super) struct Avx512Vnni;
pub(super) struct Emulated;

impl Dot for AvxVnni {
    const PIXELS: usize = 2;
    #[inline(always)]
    unsafe fn dp(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: called from `#[target_feature(enable = "avxvnni")]` entry points only.
        unsafe { _mm256_dpbusd_avx_epi32(acc, a, b) }
    }
}

impl Dot for Avx512Vnni {
    const PIXELS: usize = 4;
    #[inline(always)]
    unsafe fn dp(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: called from `avx512vnni,avx512vl` entry points only.
        unsafe { _mm256_dpbusd_epi32(acc, a, b) }
    }
}

impl Dot for Emulated {
    const PIXELS: usize = 2;
    #[inline(always)]
    unsafe fn dp(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 register operations; the entry points enable AVX2.
        unsafe {
            // Even bytes zero- (codes) or sign-extended (weights) to i16, then the odd bytes:
            // each vpmaddwd adds two products of ≤ 255·128 into a lane, exact in i32.
            let a0 = _mm256_and_si256(a, _mm256_set1_epi16(0xff));
            let a1 = _mm256_srli_epi16::<8>(a);
            let b0 = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(b));
            let b1 = _mm256_srai_epi16::<8>(b);
            let s = _mm256_add_epi32(_mm256_madd_epi16(a0, b0), _mm256_madd_epi16(a1, b1));
            _mm256_add_epi32(acc, s)
        }
    }
}

/// The direct conv sums of pixels `cols` of output row `y` ([`super::row_sums`] before the
/// offset-form correction): blocks of 32, 16 or 8 output channels against `D::PIXELS` pixels
/// (4 for convs of one block, such as the tail).
///
/// # Safety
/// The instruction of `D` (and AVX2) available; shapes as checked by [`super::row_sums`].
#[inline(always)]
unsafe fn direct<D: Dot>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe {
        match &pc.narrow {
            Some(nw) => narrow256::<D>(x, pc, nw, y, cols, out),
            None => direct_from::<D>(x, pc, y, cols, 0, out),
        }
    }
}

/// Sums of narrow convs ([`super::NarrowWeights`]: at most 4 output lanes, the tail) on
/// 256-bit vectors with the lanes over input channels, as [`narrow512_avx512vnni`]: per pixel,
/// tap and 32 channels, one load of the codes (masked by dwords past the channel stride) and
/// one `D::dp` per output lane, then one horizontal sum per lane — against the direct
/// kernel's one `D::dp` per 4 channels for a block of 8 output lanes, 3 of them used.
///
/// # Safety
/// As [`direct`]; `nw` made from `pc`.
#[inline(always)]
unsafe fn narrow256<D: Dot>(
    x: &Codes,
    pc: &PackedConv,
    nw: &super::NarrowWeights,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    let mut xx = cols.start;
    while xx < cols.end {
        // SAFETY: forwarded contract; pixels xx..xx + P are inside the row.
        unsafe {
            if cols.end - xx >= 2 {
                narrow256_pixels::<D, 2>(x, pc, nw, y, xx, out);
                xx += 2;
            } else {
                narrow256_pixels::<D, 1>(x, pc, nw, y, xx, out);
                xx += 1;
            }
        }
    }
}

/// [`narrow256`] for the `P` pixels from `(y, xx)`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn narrow256_pixels<D: Dot, const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    nw: &super::NarrowWeights,
    y: usize,
    xx: usize,
    out: &mut [i32],
) {
    let (wp, cs, cs64) = (x.w + 2, x.cstride, nw.cs64);
    // SAFETY: the code loads stay inside each pixel's `cs` codes (whole 32-byte loads, or
    // masked by dwords: `cs` is a multiple of 4) of pixels inside the padded map, the weight
    // loads inside nw.w (`[9][4][cs64]`, cs64 a multiple of 32), the stores inside out (pixels
    // below x.w, 8 lanes each: cout8 is 8).
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); 4]; P];
        for t in 0..9 {
            let codes = x.data.as_ptr().add(((y + t / 3) * wp + xx + t % 3) * cs);
            let wt = nw.w.as_ptr().add(t * 4 * cs64);
            let mut c0 = 0;
            while c0 < cs {
                let whole = cs - c0 >= 32;
                let left = ((cs - c0) / 4).min(8) as i32;
                let m = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(left),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                let mut w = [_mm256_setzero_si256(); 4];
                for (o, wo) in w.iter_mut().enumerate() {
                    *wo = _mm256_loadu_si256(wt.add(o * cs64 + c0).cast());
                }
                for i in 0..P {
                    let q = codes.add(i * cs + c0);
                    let a = if whole {
                        _mm256_loadu_si256(q.cast())
                    } else {
                        _mm256_maskload_epi32(q.cast(), m)
                    };
                    for o in 0..4 {
                        acc[i][o] = D::dp(acc[i][o], a, w[o]);
                    }
                }
                c0 += 32;
            }
        }
        for (i, lanes) in acc.into_iter().enumerate() {
            super::avx2::store_lane_sums(lanes, out.as_mut_ptr().add((xx + i) * pc.cout8));
        }
    }
}

/// [`direct`] for the blocks of 8 output channels from `first` on.
#[inline(always)]
unsafe fn direct_from<D: Dot>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    first: usize,
    out: &mut [i32],
) {
    let nb = pc.cout8 / 8;
    let mut b0 = first;
    while b0 < nb {
        let n = match nb - b0 {
            4.. => 4,
            2..=3 => 2,
            _ => 1,
        };
        let most = if n == 1 { 4 } else { D::PIXELS };
        let mut xx = cols.start;
        while xx < cols.end {
            let p = (cols.end - xx).min(most);
            // SAFETY: blocks b0..b0 + n exist; pixels xx..xx + p are inside the row. (The
            // guards only drop arms that `p ≤ most` never reaches, so that they are not
            // compiled for instruction sets with 16 registers.)
            unsafe {
                match (n, p) {
                    (4, 4) if D::PIXELS >= 4 => pixels::<D, 4, 4>(x, pc, y, xx, b0, out),
                    (4, 3) if D::PIXELS >= 3 => pixels::<D, 4, 3>(x, pc, y, xx, b0, out),
                    (4, 2) => pixels::<D, 4, 2>(x, pc, y, xx, b0, out),
                    (4, _) => pixels::<D, 4, 1>(x, pc, y, xx, b0, out),
                    (2, 4) if D::PIXELS >= 4 => pixels::<D, 2, 4>(x, pc, y, xx, b0, out),
                    (2, 3) if D::PIXELS >= 3 => pixels::<D, 2, 3>(x, pc, y, xx, b0, out),
                    (2, 2) => pixels::<D, 2, 2>(x, pc, y, xx, b0, out),
                    (2, _) => pixels::<D, 2, 1>(x, pc, y, xx, b0, out),
                    (_, 4) => pixels::<D, 1, 4>(x, pc, y, xx, b0, out),
                    (_, 3) => pixels::<D, 1, 3>(x, pc, y, xx, b0, out),
                    (_, 2) => pixels::<D, 1, 2>(x, pc, y, xx, b0, out),
                    _ => pixels::<D, 1, 1>(x, pc, y, xx, b0, out),
                }
            }
            xx += p;
        }
        b0 += n;
    }
}

/// One channel group: the 4 codes at `codes + i·stride` of each of `P` pixels (or tiles)
/// against the `N` blocks of 8 output channels' weights at `wg` (32 bytes each), into `acc`.
///
/// # Safety
/// As [`Dot::dp`]; `P` 4-byte reads from `codes` and `N` 32-byte reads from `wg` in bounds.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn dot_group<D: Dot, const N: usize, const P: usize>(
    codes: *const u8,
    stride: usize,
    wg: *const u8,
    acc: &mut [[__m256i; N]; P],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let q = broadcast_groups::<P>(codes, stride);
        for b in 0..N {
            let wv = _mm256_loadu_si256(wg.add(b * 32) as *const __m256i);
            for i in 0..P {
                acc[i][b] = D::dp(acc[i][b], q[i], wv);
            }
        }
    }
}

/// `S` of output channels `8·b0 .. 8·(b0 + N)` for the `P` pixels from `(y, xx)`.
#[inline(always)]
unsafe fn pixels<D: Dot, const N: usize, const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    xx: usize,
    b0: usize,
    out: &mut [i32],
) {
    let wp = x.w + 2;
    let groups = pc.cstride / 4;
    let gbytes = pc.cout8 * 4;
    let w = pc.w8.as_ptr() as *const u8;
    // SAFETY: reads inside the padded 3x3 windows of the P pixels and the weights
    // (9 · groups · gbytes bytes); writes inside out (pixels below x.w).
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); N]; P];
        for t in 0..9 {
            let p = ((y + t / 3) * wp + xx + t % 3) * x.cstride;
            let codes = x.data.as_ptr().add(p);
            let wt = w.add(t * groups * gbytes + b0 * 32);
            for g in 0..groups {
                dot_group::<D, N, P>(codes.add(4 * g), x.cstride, wt.add(g * gbytes), &mut acc);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let d = out.as_mut_ptr().add((xx + i) * pc.cout8 + b0 * 8);
            for (b, v) in acc.iter().enumerate() {
                _mm256_storeu_si256(d.add(b * 8) as *mut __m256i, *v);
            }
        }
    }
}

/// Winograd F(2,3) sums of one output row from its transformed rows `v`
/// ([`super::row_sums_wino_i32`]), element sums in i32 throughout.
///
/// # Safety
/// The instruction of `D` (and AVX2); shapes as checked by [`super::row_sums_wino_i32`].
#[inline(always)]
unsafe fn wino<D: Dot>(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    cols: Range<usize>,
    out: &mut [i32],
) {
    for (c0, c1, b0, n) in chunks_and_blocks(&cols, pc.cout8 / 8) {
        let mut t = c0;
        while t < c1 {
            let p = (c1 - t).min(2);
            // SAFETY: blocks b0..b0 + n exist; tiles t..t + p are inside the row.
            unsafe {
                match (n, p) {
                    (4, 2) => tiles::<D, 4, 2>(v, pc, ww, t, b0, out),
                    (4, _) => tiles::<D, 4, 1>(v, pc, ww, t, b0, out),
                    (2, 2) => tiles::<D, 2, 2>(v, pc, ww, t, b0, out),
                    (2, _) => tiles::<D, 2, 1>(v, pc, ww, t, b0, out),
                    (_, 2) => tiles::<D, 1, 2>(v, pc, ww, t, b0, out),
                    _ => tiles::<D, 1, 1>(v, pc, ww, t, b0, out),
                }
            }
            t += p;
        }
    }
}

/// The element sums of tiles `t .. t + P`, blocks `b0 .. b0 + N`, then their output transform.
#[inline(always)]
unsafe fn tiles<D: Dot, const N: usize, const P: usize>(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    t: usize,
    b0: usize,
    out: &mut [i32],
) {
    let cs = v.cstride;
    let groups = cs / 4;
    let gbytes = pc.cout8 * 4;
    let w = ww.u8.as_ptr() as *const u8;
    // SAFETY: reads inside the transformed rows (tiles t..t + P) and the weights; writes
    // inside out (pixels below v.w).
    unsafe {
        let mut a = [[[_mm256_setzero_si256(); N]; P]; 4];
        for (e, ae) in a.iter_mut().enumerate() {
            for ky in 0..3 {
                let row = v.rows[ky].as_ptr().add(t * 4 * cs + e * cs);
                let wt = w.add((ky * 4 + e) * groups * gbytes + b0 * 32);
                for g in 0..groups {
                    dot_group::<D, N, P>(row.add(4 * g), 4 * cs, wt.add(g * gbytes), ae);
                }
            }
        }
        combine_wino(v, pc, ww, t, b0, &a, out);
    }
}

/// A vector of i32 lanes for the 512-bit kernels: 16 lanes, native AVX-512 VNNI ([`Zmm`]) or
/// two 256-bit halves with the emulated instruction ([`ZmmEmulated`], tests only); or 8 lanes
/// with the instruction of a [`Dot`] ([`Ymm`]: a last block of 8 output channels).
pub(super) trait Wide {
    type R: Copy;
    /// i32 lanes (output channels) per vector.
    const LANES: usize;
    /// # Safety (all)
    /// The CPU must support the vector's instructions; pointers valid for `4 · LANES` bytes.
    unsafe fn zero() -> Self::R;
    unsafe fn bcast(c: i32) -> Self::R;
    unsafe fn load(p: *const u8) -> Self::R;
    unsafe fn store(p: *mut i32, v: Self::R);
    unsafe fn dp(acc: Self::R, a: Self::R, b: Self::R) -> Self::R;
    /// Per i32 lane: `x + y`, `x − y`, `q · x`, `x >> n` (arithmetic; `n` a constant where
    /// inlined, so an immediate shift).
    unsafe fn add(x: Self::R, y: Self::R) -> Self::R;
    unsafe fn sub(x: Self::R, y: Self::R) -> Self::R;
    unsafe fn mul(q: i32, x: Self::R) -> Self::R;
    unsafe fn sra(x: Self::R, n: i32) -> Self::R;

    /// The F(2,3) output transform of one vector of element sums `a0..a3` against the
    /// offset terms `k0`, `k1` (see [`tiles512`]): `(a0 + a1 + a2 − k0) >> 1` and
    /// `(a1 − a2 − a3 + k1) >> 1`.
    #[inline(always)]
    unsafe fn wino_out(a: [Self::R; 4], k0: Self::R, k1: Self::R) -> [Self::R; 2] {
        // SAFETY: the trait's contract.
        unsafe {
            let s0 = Self::sub(Self::add(Self::add(a[0], a[1]), a[2]), k0);
            let s1 = Self::add(Self::sub(Self::sub(a[1], a[2]), a[3]), k1);
            [Self::sra(s0, 1), Self::sra(s1, 1)]
        }
    }
    /// `q · (x + y)` per i32 lane (the offset terms).
    #[inline(always)]
    unsafe fn offset(q: i32, x: Self::R, y: Self::R) -> Self::R {
        // SAFETY: the trait's contract.
        unsafe { Self::mul(q, Self::add(x, y)) }
    }
    /// `(x − q·k) >> 2` (the F(2x2, 3x3) output).
    #[inline(always)]
    unsafe fn sub_scaled_quarter(x: Self::R, q: i32, k: Self::R) -> Self::R {
        // SAFETY: the trait's contract.
        unsafe { Self::sra(Self::sub(x, Self::mul(q, k)), 2) }
    }
}

pub(super) struct Zmm;
pub(super) struct ZmmEmulated;
pub(super) struct Ymm<D>(std::marker::PhantomData<D>);

// SAFETY (the bodies of both impls): called from entry points compiled with the features
// the intrinsics need (AVX-512 F/VNNI for Zmm, AVX2 for ZmmEmulated); pointers per the trait.
impl Wide for Zmm {
    type R = __m512i;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn bcast(c: i32) -> __m512i {
        unsafe { _mm512_set1_epi32(c) }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: __m512i) {
        unsafe { _mm512_storeu_si512(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn dp(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        unsafe { _mm512_dpbusd_epi32(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn add(x: __m512i, y: __m512i) -> __m512i {
        unsafe { _mm512_add_epi32(x, y) }
    }
    #[inline(always)]
    unsafe fn sub(x: __m512i, y: __m512i) -> __m512i {
        unsafe { _mm512_sub_epi32(x, y) }
    }
    #[inline(always)]
    unsafe fn mul(q: i32, x: __m512i) -> __m512i {
        unsafe { _mm512_mullo_epi32(_mm512_set1_epi32(q), x) }
    }
    #[inline(always)]
    unsafe fn sra(x: __m512i, n: i32) -> __m512i {
        unsafe { _mm512_sra_epi32(x, _mm_cvtsi32_si128(n)) }
    }
}

impl Wide for ZmmEmulated {
    type R = [__m256i; 2];
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> [__m256i; 2] {
        unsafe { [_mm256_setzero_si256(); 2] }
    }
    #[inline(always)]
    unsafe fn bcast(c: i32) -> [__m256i; 2] {
        unsafe { [_mm256_set1_epi32(c); 2] }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> [__m256i; 2] {
        unsafe {
            [
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(32).cast()),
            ]
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: [__m256i; 2]) {
        unsafe {
            _mm256_storeu_si256(p.cast(), v[0]);
            _mm256_storeu_si256(p.add(8).cast(), v[1]);
        }
    }
    #[inline(always)]
    unsafe fn dp(acc: [__m256i; 2], a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
        unsafe {
            [
                Emulated::dp(acc[0], a[0], b[0]),
                Emulated::dp(acc[1], a[1], b[1]),
            ]
        }
    }
    #[inline(always)]
    unsafe fn add(x: [__m256i; 2], y: [__m256i; 2]) -> [__m256i; 2] {
        unsafe { [_mm256_add_epi32(x[0], y[0]), _mm256_add_epi32(x[1], y[1])] }
    }
    #[inline(always)]
    unsafe fn sub(x: [__m256i; 2], y: [__m256i; 2]) -> [__m256i; 2] {
        unsafe { [_mm256_sub_epi32(x[0], y[0]), _mm256_sub_epi32(x[1], y[1])] }
    }
    #[inline(always)]
    unsafe fn mul(q: i32, x: [__m256i; 2]) -> [__m256i; 2] {
        unsafe {
            let q = _mm256_set1_epi32(q);
            [_mm256_mullo_epi32(q, x[0]), _mm256_mullo_epi32(q, x[1])]
        }
    }
    #[inline(always)]
    unsafe fn sra(x: [__m256i; 2], n: i32) -> [__m256i; 2] {
        unsafe {
            let n = _mm_cvtsi32_si128(n);
            [_mm256_sra_epi32(x[0], n), _mm256_sra_epi32(x[1], n)]
        }
    }
}

// SAFETY (the bodies): called from entry points compiled with the features of `D` (and
// AVX2); pointers per the trait. Loads and stores are plain unaligned reads and writes.
impl<D: Dot> Wide for Ymm<D> {
    type R = __m256i;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn bcast(c: i32) -> __m256i {
        unsafe { _mm256_set1_epi32(c) }
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        unsafe { (p as *const __m256i).read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, v: __m256i) {
        unsafe { (p as *mut __m256i).write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn dp(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        unsafe { D::dp(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn add(x: __m256i, y: __m256i) -> __m256i {
        unsafe { _mm256_add_epi32(x, y) }
    }
    #[inline(always)]
    unsafe fn sub(x: __m256i, y: __m256i) -> __m256i {
        unsafe { _mm256_sub_epi32(x, y) }
    }
    #[inline(always)]
    unsafe fn mul(q: i32, x: __m256i) -> __m256i {
        unsafe { _mm256_mullo_epi32(_mm256_set1_epi32(q), x) }
    }
    #[inline(always)]
    unsafe fn sra(x: __m256i, n: i32) -> __m256i {
        unsafe { _mm256_sra_epi32(x, _mm_cvtsi32_si128(n)) }
    }
}

/// `$f::<$w, N, P>($args)` for the run-time `($n, $p)`: `N` ∈ {4, 2, 1} vectors of output
/// channels, `P` ∈ 1..=4 pixels or tiles (and 5–6 with 4 vectors where `$max` allows: the
/// guards drop those arms from kernels that never reach them).
macro_rules! by_blocks_and_pixels {
    ($f:ident::<$w:ty>, $n:expr, $p:expr, $max:expr, ($($a:expr),*)) => {
        match ($n, $p) {
            (4, 6) if $max >= 6 => $f::<$w, 4, 6>($($a),*),
            (4, 5) if $max >= 5 => $f::<$w, 4, 5>($($a),*),
            (4, 4) => $f::<$w, 4, 4>($($a),*),
            (4, 3) => $f::<$w, 4, 3>($($a),*),
            (4, 2) => $f::<$w, 4, 2>($($a),*),
            (4, _) => $f::<$w, 4, 1>($($a),*),
            (2, 4) => $f::<$w, 2, 4>($($a),*),
            (2, 3) => $f::<$w, 2, 3>($($a),*),
            (2, 2) => $f::<$w, 2, 2>($($a),*),
            (2, _) => $f::<$w, 2, 1>($($a),*),
            (_, 4) => $f::<$w, 1, 4>($($a),*),
            (_, 3) => $f::<$w, 1, 3>($($a),*),
            (_, 2) => $f::<$w, 1, 2>($($a),*),
            _ => $f::<$w, 1, 1>($($a),*),
        }
    };
}

/// One channel group with [`Wide`] vectors: the 4 codes at `codes + i·stride` of each of `P`
/// pixels (or tiles) against the `N` vectors of output channels' weights at `wg`, into `acc`
/// (the wide twin of [`dot_group`]).
///
/// # Safety
/// As [`Wide`]; `P` 4-byte reads from `codes` and `N · 4 · LANES` bytes from `wg` in bounds.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn dot_group_wide<W: Wide, const N: usize, const P: usize>(
    codes: *const u8,
    stride: usize,
    wg: *const u8,
    acc: &mut [[W::R; N]; P],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut q = [W::zero(); P];
        for (i, qi) in q.iter_mut().enumerate() {
            let c = (codes.add(i * stride) as *const u32).read_unaligned();
            *qi = W::bcast(c as i32);
        }
        for b in 0..N {
            let wv = W::load(wg.add(b * 4 * W::LANES));
            for i in 0..P {
                acc[i][b] = W::dp(acc[i][b], q[i], wv);
            }
        }
    }
}

/// The direct conv sums with 512-bit vectors: pairs of 8-channel blocks as one vector of 16
/// output channels (the weights of 16 consecutive channels are 64 contiguous bytes of a
/// group), up to 4 vectors × 4 pixels of accumulators (AVX-512 has 32 registers); an odd last
/// block of 8 goes to the 256-bit kernel `D`.
///
/// # Safety
/// The instructions of `W` and `D`; shapes as checked by [`super::row_sums`].
#[inline(always)]
unsafe fn direct512<W: Wide, D: Dot>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    let nb = pc.cout8 / 8;
    let mut b0 = 0;
    while nb - b0 >= 2 {
        let n = match (nb - b0) / 2 {
            4.. => 4,
            2..=3 => 2,
            _ => 1,
        };
        let mut xx = cols.start;
        while xx < cols.end {
            let p = (cols.end - xx).min(4);
            // SAFETY: blocks b0..b0 + 2n exist; pixels xx..xx + p are inside the row.
            unsafe { by_blocks_and_pixels!(pixels512::<W>, n, p, 4, (x, pc, y, xx, b0, out)) }
            xx += p;
        }
        b0 += 2 * n;
    }
    if b0 < nb {
        // SAFETY: forwarded contract; block b0 is the last one.
        unsafe { direct_from::<D>(x, pc, y, cols, b0, out) }
    }
}

/// `S` of output channels `8·b0 .. 8·b0 + N·LANES` for the `P` pixels from `(y, xx)`.
#[inline(always)]
unsafe fn pixels512<W: Wide, const N: usize, const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    xx: usize,
    b0: usize,
    out: &mut [i32],
) {
    let wp = x.w + 2;
    let groups = pc.cstride / 4;
    let gbytes = pc.cout8 * 4;
    let w = pc.w8.as_ptr() as *const u8;
    // SAFETY: reads inside the padded 3x3 windows of the P pixels and the weights; writes
    // inside out (pixels below x.w, channels below cout8).
    unsafe {
        let mut acc = [[W::zero(); N]; P];
        for t in 0..9 {
            let p = ((y + t / 3) * wp + xx + t % 3) * x.cstride;
            let codes = x.data.as_ptr().add(p);
            let wt = w.add(t * groups * gbytes + b0 * 32);
            for g in 0..groups {
                dot_group_wide::<W, N, P>(
                    codes.add(4 * g),
                    x.cstride,
                    wt.add(g * gbytes),
                    &mut acc,
                );
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let d = out.as_mut_ptr().add((xx + i) * pc.cout8 + b0 * 8);
            for (b, v) in acc.iter().enumerate() {
                W::store(d.add(b * W::LANES), *v);
            }
        }
    }
}

/// The 512-bit direct kernel (see [`direct512`]).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI; shapes as checked by [`super::row_sums`].
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn direct512_avx512vnni(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { direct512::<Zmm, Avx512Vnni>(x, pc, y, cols, out) }
}

/// Sums of narrow convs ([`super::NarrowWeights`]: at most 4 output lanes, such as the
/// 3-channel tail and its lane of ones) with the lanes over input channels instead of output
/// channels: per pixel and tap, one 64-byte load of the pixel's codes against each output
/// lane's 64 weights, then one horizontal sum per lane. (The direct kernel puts 8 output
/// channels in a 256-bit vector, 3 of them used, and needs 16 `vpdpbusd` per pixel and tap at
/// 64 channels; this one 4 at 512 bits.) Lanes 4..8 of each pixel's sums are written 0.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI; shapes as checked by [`super::row_sums`], `nw` made from `pc`.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn narrow512_avx512vnni(
    x: &Codes,
    pc: &PackedConv,
    nw: &super::NarrowWeights,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    let mut xx = cols.start;
    while xx < cols.end {
        // SAFETY: forwarded contract; pixels xx..xx + P are inside the row.
        unsafe {
            if cols.end - xx >= 4 {
                narrow_pixels::<4>(x, pc, nw, y, xx, out);
                xx += 4;
            } else {
                narrow_pixels::<1>(x, pc, nw, y, xx, out);
                xx += 1;
            }
        }
    }
}

/// [`narrow512_avx512vnni`] for the `P` pixels from `(y, xx)`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn narrow_pixels<const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    nw: &super::NarrowWeights,
    y: usize,
    xx: usize,
    out: &mut [i32],
) {
    let (wp, cs, cs64) = (x.w + 2, x.cstride, nw.cs64);
    // SAFETY: the code loads are masked to the `cs` codes of each pixel inside the padded map,
    // the weight loads inside nw.w (`[9][4][cs64]`), the stores inside out (pixels below x.w,
    // 8 lanes each: cout8 is 8).
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); 4]; P];
        for t in 0..9 {
            let codes = x.data.as_ptr().add(((y + t / 3) * wp + xx + t % 3) * cs);
            let wt = nw.w.as_ptr().add(t * 4 * cs64);
            let mut c0 = 0;
            while c0 < cs {
                let m: __mmask64 = if cs - c0 >= 64 {
                    !0
                } else {
                    (1u64 << (cs - c0)) - 1
                };
                let mut w = [_mm512_setzero_si512(); 4];
                for (o, wo) in w.iter_mut().enumerate() {
                    *wo = _mm512_loadu_si512(wt.add(o * cs64 + c0).cast());
                }
                for i in 0..P {
                    let a = _mm512_maskz_loadu_epi8(m, codes.add(i * cs + c0).cast());
                    for o in 0..4 {
                        acc[i][o] = _mm512_dpbusd_epi32(acc[i][o], a, w[o]);
                    }
                }
                c0 += 64;
            }
        }
        for (i, [a, b, c, d]) in acc.into_iter().enumerate() {
            // Per 128-bit lane: the 4 accumulators' partial sums side by side, then the 4
            // lanes added: [Σa, Σb, Σc, Σd].
            let ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
            let cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
            let s = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
            let s = _mm512_add_epi32(s, _mm512_shuffle_i32x4::<0b0100_1110>(s, s));
            let s = _mm512_add_epi32(s, _mm512_shuffle_i32x4::<0b1011_0001>(s, s));
            let lanes = _mm256_maskz_mov_epi32(0x0f, _mm512_castsi512_si256(s));
            let d = out.as_mut_ptr().add((xx + i) * pc.cout8);
            _mm256_storeu_si256(d.cast(), lanes);
        }
    }
}

/// Winograd F(2,3) sums of one output row ([`super::row_sums_wino_i32`]) with 512-bit
/// vectors: 16 output channels per vector (as [`direct512`]), up to 4 vectors × 4 tiles (8
/// pixels) of accumulators per element; an odd last block of 8 channels goes to the 256-bit
/// kernel `D`. The tiles are walked in chunks of [`WINO_CHUNK`] so that a chunk's transformed
/// inputs stay in L1 while the weights pass.
///
/// # Safety
/// The instructions of `W` and `D`; shapes as checked by [`super::row_sums_wino_i32`].
#[inline(always)]
unsafe fn wino512<W: Wide, D: Dot>(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    cols: Range<usize>,
    out: &mut [i32],
) {
    let nb = pc.cout8 / 8;
    let (t0, t1) = (cols.start / 2, cols.end.div_ceil(2));
    let mut c0 = t0;
    while c0 < t1 {
        let c1 = (c0 + WINO_CHUNK).min(t1);
        let mut b0 = 0;
        while nb - b0 >= 2 {
            let n = match (nb - b0) / 2 {
                4.. => 4,
                2..=3 => 2,
                _ => 1,
            };
            let mut t = c0;
            while t < c1 {
                let p = (c1 - t).min(if n == 4 { TILES512 } else { 4 });
                // SAFETY: blocks b0..b0 + 2n exist; tiles t..t + p are inside the row.
                unsafe {
                    by_blocks_and_pixels!(tiles512::<W>, n, p, TILES512, (v, pc, ww, t, b0, out))
                }
                t += p;
            }
            b0 += 2 * n;
        }
        if b0 < nb {
            let mut t = c0;
            while t < c1 {
                let p = (c1 - t).min(2);
                // SAFETY: block b0 is the last one; tiles t..t + p are inside the row.
                unsafe {
                    if p == 2 {
                        tiles::<D, 1, 2>(v, pc, ww, t, b0, out)
                    } else {
                        tiles::<D, 1, 1>(v, pc, ww, t, b0, out)
                    }
                }
                t += p;
            }
        }
        c0 = c1;
    }
}

/// Tiles per chunk of a row in [`wino512`].
const WINO_CHUNK: usize = 16;

/// Tiles per call of [`tiles512`] with 4 vectors of channels: 4 · 6 accumulators, 6
/// broadcast codes and a weight vector fill the 32 registers.
const TILES512: usize = 6;

/// [`tiles`] with 512-bit vectors: the element sums of tiles `t .. t + P` for output channels
/// `8·b0 .. 8·b0 + N·LANES`, then their output transform.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn tiles512<W: Wide, const N: usize, const P: usize>(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    t: usize,
    b0: usize,
    out: &mut [i32],
) {
    let cs = v.cstride;
    let groups = cs / 4;
    let gbytes = pc.cout8 * 4;
    let w = ww.u8.as_ptr() as *const u8;
    // SAFETY: reads inside the transformed rows (tiles t..t + P, 4 · cs bytes each) and the
    // weights; writes inside out (pixels below v.w, channels below cout8).
    unsafe {
        // Written element by element below (zero-filling it first cost a 6 KB memset per call).
        let mut a = [std::mem::MaybeUninit::<[[W::R; N]; P]>::uninit(); 4];
        for (e, ae) in a.iter_mut().enumerate() {
            // One element's sums in registers (P·N of the 32), stored once at the end.
            let mut acc = [[W::zero(); N]; P];
            for ky in 0..3 {
                let row = v.rows[ky].as_ptr().add(t * 4 * cs + e * cs);
                let wt = w.add((ky * 4 + e) * groups * gbytes + b0 * 32);
                for g in 0..groups {
                    dot_group_wide::<W, N, P>(row.add(4 * g), 4 * cs, wt.add(g * gbytes), &mut acc);
                }
            }
            ae.write(acc);
        }
        // Every element was written; `MaybeUninit<T>` has the layout of `T`. (A cast rather than
        // `map(assume_init)`: a closure here would not get the entry point's target features.)
        let a = &*(a.as_ptr() as *const [[[W::R; N]; P]; 4]);
        let csum = ww.csum.as_ptr();
        for b in 0..N {
            // (Plain loads, not a closure: see `combine_wino`.)
            let at = csum.add(b0 * 8 + b * W::LANES);
            let c0 = W::load(at.cast());
            let c2 = W::load(at.add(2 * pc.cout8).cast());
            let c3 = W::load(at.add(3 * pc.cout8).cast());
            let q = v.max_code as i32;
            let (k0, k1) = (W::offset(q, c0, c2), W::offset(q, c2, c3));
            for i in 0..P {
                let x = 2 * (t + i);
                let [s0, s1] =
                    W::wino_out([a[0][i][b], a[1][i][b], a[2][i][b], a[3][i][b]], k0, k1);
                let d = out.as_mut_ptr().add(x * pc.cout8 + b0 * 8 + b * W::LANES);
                W::store(d, s0);
                if x + 1 < v.w {
                    W::store(d.add(pc.cout8), s1);
                }
            }
        }
    }
}

/// See [`wino512`] (AVX-512 VNNI).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI; shapes as checked by
/// [`super::row_sums_wino_i32`].
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn wino512_avx512vnni(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    cols: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { wino512::<Zmm, Avx512Vnni>(v, pc, ww, cols, out) }
}

/// [`wino512`]'s structure with the emulated instruction (tests).
///
/// # Safety
/// AVX2; shapes as checked by [`super::row_sums_wino_i32`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn wino512_emulated(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    cols: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { wino512::<ZmmEmulated, Emulated>(v, pc, ww, cols, out) }
}

/// Winograd F(2x2, 3x3) sums of an output row pair ([`super::row_sums_wino2_i32`]) with
/// 512-bit vectors and i32 element sums (no widening schedule: exact whenever the
/// transformed codes `0..=4Q` fit u8 and the transformed weights i8), 16 output channels per
/// vector, up to 4 vectors × 4 tiles (2x2 pixels each); an odd last block of 8 channels goes
/// to the same kernel on 256-bit vectors with the instruction of `D` ([`Ymm`]).
///
/// # Safety
/// The instructions of `W` and `D`; shapes as checked by [`super::row_sums_wino2_i32`].
#[inline(always)]
unsafe fn wino2_512<W: Wide, D: Dot>(
    v: &Wino2Input,
    pc: &PackedConv,
    ww: &Wino2Weights,
    cols: Range<usize>,
    out: &mut [i32],
) {
    let nb = pc.cout8 / 8;
    let (t0, t1) = (cols.start / 2, cols.end.div_ceil(2));
    let mut b0 = 0;
    while nb - b0 >= 2 {
        let n = match (nb - b0) / 2 {
            4.. => 4,
            2..=3 => 2,
            _ => 1,
        };
        let mut t = t0;
        // Two groups of 4 tiles at a time where the row has them ([`tiles2_groups`]).
        while n == 4 && t1 - t >= 8 {
            // SAFETY: blocks b0..b0 + 8 exist; tiles t..t + 8 are inside v and the rows.
            unsafe { tiles2_groups::<W, 4, 4, 2>(v, pc, ww, t, b0, out) }
            t += 8;
        }
        while t < t1 {
            let p = (t1 - t).min(4);
            // SAFETY: blocks b0..b0 + 2n exist; tiles t..t + p are inside v and the rows.
            unsafe { by_blocks_and_pixels!(tiles2_512::<W>, n, p, 4, (v, pc, ww, t, b0, out)) }
            t += p;
        }
        b0 += 2 * n;
    }
    if b0 < nb {
        let mut t = t0;
        while t < t1 {
            let p = (t1 - t).min(4);
            // SAFETY: block b0 is the last one; tiles t..t + p are inside v and the rows.
            unsafe { by_blocks_and_pixels!(tiles2_512::<Ymm<D>>, 1, p, 4, (v, pc, ww, t, b0, out)) }
            t += p;
        }
    }
}

/// The 16 element sums of tiles `t .. t + P` for output channels `8·b0 .. 8·b0 + N·LANES`,
/// then their output transform `Aᵀ · A · A` and `(· − Q·K) / 4` ([`tiles2_groups`] with
/// one group).
///
/// # Safety
/// As [`tiles2_groups`].
#[inline(always)]
unsafe fn tiles2_512<W: Wide, const N: usize, const P: usize>(
    v: &Wino2Input,
    pc: &PackedConv,
    ww: &Wino2Weights,
    t: usize,
    b0: usize,
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { tiles2_groups::<W, N, P, 1>(v, pc, ww, t, b0, out) }
}

/// The element sums of `G` groups of `P` tiles (`t .. t + G·P`) for output channels
/// `8·b0 .. 8·b0 + N·LANES`, element by element across the groups (each element's weights
/// read once for all of them), then each group's output transform. Two groups of 4 tiles:
/// each element's weights (4 KB at N = 4 and 64 input channels) read from L2 once for 8
/// tiles instead of once for 4 — on a CPU that issues two `vpdpbusd` a cycle (Intel Xeon,
/// Sapphire / Emerald Rapids) the 4-tile kernel waits on its weights: EDSR-baseline x2 w4a4
/// measured 1.03x faster end to end with pairs, the 64->64 conv 1.1x (BENCHMARKS.md, session
/// 30). The sums and their order are the same for every `G`.
///
/// # Safety
/// Reads inside v.data (tiles t..t + G·P, 16 · cs bytes each) and the weights; writes inside
/// out (two rows of v.w pixels, pixels below v.w, channels below cout8).
#[inline(always)]
unsafe fn tiles2_groups<W: Wide, const N: usize, const P: usize, const G: usize>(
    v: &Wino2Input,
    pc: &PackedConv,
    ww: &Wino2Weights,
    t: usize,
    b0: usize,
    out: &mut [i32],
) {
    // SAFETY: the caller's contract.
    unsafe {
        // Each element's sums in registers (P·N of the 32), stored once: a read-modify-write of
        // the four outputs' sums per element instead cost more stores than Zen 4's one 512-bit
        // store per two cycles allows beside the products. Written element by element below.
        let mut a = [[std::mem::MaybeUninit::<[[W::R; N]; P]>::uninit(); 16]; G];
        for e in 0..16 {
            for (gi, ag) in a.iter_mut().enumerate() {
                ag[e].write(element_sums::<W, N, P>(v, pc, ww, t + gi * P, b0, e));
            }
        }
        for (gi, ag) in a.iter().enumerate() {
            // Every element of every group was written; `MaybeUninit<T>` has the layout of `T`
            // (see `tiles512`).
            let ag = &*(ag.as_ptr() as *const [[[W::R; N]; P]; 16]);
            wino2_out::<W, N, P>(ag, v, pc, ww, t + gi * P, b0, out);
        }
    }
}

/// The sums of element `e` of tiles `t .. t + P` for output channels `8·b0 .. 8·b0 + N·LANES`
/// (kept in registers by the callers' inlining).
///
/// # Safety
/// As [`tiles2_groups`].
#[inline(always)]
unsafe fn element_sums<W: Wide, const N: usize, const P: usize>(
    v: &Wino2Input,
    pc: &PackedConv,
    ww: &Wino2Weights,
    t: usize,
    b0: usize,
    e: usize,
) -> [[W::R; N]; P] {
    let cs = v.cstride;
    let groups = cs / 4;
    let gbytes = pc.cout8 * 4;
    // SAFETY: the caller's contract: tiles t..t + P of v.data and the weights of blocks b0.. .
    unsafe {
        let row = v.data.as_ptr().add(((t - v.t0) * 16 + e) * cs);
        let wt = (ww.u8.as_ptr() as *const u8).add(e * groups * gbytes + b0 * 32);
        let mut acc = [[W::zero(); N]; P];
        for g in 0..groups {
            dot_group_wide::<W, N, P>(row.add(4 * g), 16 * cs, wt.add(g * gbytes), &mut acc);
        }
        acc
    }
}

/// The output transform of [`tiles2_512`]: `Aᵀ · A · A` and `(· − Q·K) / 4` of tiles
/// `t .. t + P`, from their 16 element sums `a`.
///
/// # Safety
/// As [`tiles2_groups`].
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn wino2_out<W: Wide, const N: usize, const P: usize>(
    a: &[[[W::R; N]; P]; 16],
    v: &Wino2Input,
    pc: &PackedConv,
    ww: &Wino2Weights,
    t: usize,
    b0: usize,
    out: &mut [i32],
) {
    unsafe {
        let q = v.max_code as i32;
        let plane = v.w * pc.cout8;
        // (No closures here: they would not get the entry point's target features.)
        for b in 0..N {
            let mut k = [W::zero(); 4];
            for (pos, kp) in k.iter_mut().enumerate() {
                let at = ww
                    .kcorr
                    .as_ptr()
                    .add(pos * pc.cout8 + b0 * 8 + b * W::LANES);
                *kp = W::load(at.cast());
            }
            for i in 0..P {
                // `Aᵀ` (rows 1 1 1 0 and 0 1 −1 −1) along x per row of elements, then along
                // y: 24 adds for the 4 outputs.
                let mut r = [[W::zero(); 4]; 2];
                for ey in 0..4 {
                    let e = &a[4 * ey..4 * ey + 4];
                    let (e0, e1, e2, e3) = (e[0][i][b], e[1][i][b], e[2][i][b], e[3][i][b]);
                    r[0][ey] = W::add(W::add(e0, e1), e2);
                    r[1][ey] = W::sub(W::sub(e1, e2), e3);
                }
                for (j, rj) in r.iter().enumerate() {
                    let x = 2 * (t + i) + j;
                    if x < v.w {
                        let s0 = W::add(W::add(rj[0], rj[1]), rj[2]);
                        let s1 = W::sub(W::sub(rj[1], rj[2]), rj[3]);
                        let d = out.as_mut_ptr().add(x * pc.cout8 + b0 * 8 + b * W::LANES);
                        W::store(d, W::sub_scaled_quarter(s0, q, k[j]));
                        W::store(d.add(plane), W::sub_scaled_quarter(s1, q, k[2 + j]));
                    }
                }
            }
        }
    }
}

/// See [`wino2_512`] (AVX-512 VNNI).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI; shapes as checked by
/// [`super::row_sums_wino2_i32`].
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn wino2_512_avx512vnni(
    v: &Wino2Input,
    pc: &PackedConv,
    ww: &Wino2Weights,
    cols: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { wino2_512::<Zmm, Avx512Vnni>(v, pc, ww, cols, out) }
}

/// [`wino2_512`]'s structure with the emulated instruction (tests).
///
/// # Safety
/// AVX2; shapes as checked by [`super::row_sums_wino2_i32`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn wino2_512_emulated(
    v: &Wino2Input,
    pc: &PackedConv,
    ww: &Wino2Weights,
    cols: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { wino2_512::<ZmmEmulated, Emulated>(v, pc, ww, cols, out) }
}

/// The 512-bit direct kernel's structure with the emulated instruction (tests).
///
/// # Safety
/// AVX2; shapes as checked by [`super::row_sums`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn direct512_emulated(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { direct512::<ZmmEmulated, Emulated>(x, pc, y, cols, out) }
}

/// The entry points of one [`Dot`]: direct and Winograd sums (or Winograd only), compiled
/// with its features.
macro_rules! entries {
    ($dot:ty, $features:literal, $direct:ident, $wino:ident) => {
        entries!($dot, $features, $wino);

        /// See [`direct`] (this instruction set).
        ///
        /// # Safety
        /// The CPU must support the features this is compiled for; shapes as checked by
        /// [`super::row_sums`].
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $direct(
            x: &Codes,
            pc: &PackedConv,
            y: usize,
            cols: Range<usize>,
            out: &mut [i32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { direct::<$dot>(x, pc, y, cols, out) }
        }
    };
    ($dot:ty, $features:literal, $wino:ident) => {
        /// See [`wino`] (this instruction set).
        ///
        /// # Safety
        /// The CPU must support the features this is compiled for; shapes as checked by
        /// [`super::row_sums_wino_i32`].
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $wino(
            v: &WinoInput,
            pc: &PackedConv,
            ww: &WinoWeights,
            cols: Range<usize>,
            out: &mut [i32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { wino::<$dot>(v, pc, ww, cols, out) }
        }
    };
}

entries!(AvxVnni, "avx2,avxvnni", direct_avxvnni, wino_avxvnni);
// (AVX-512's kernels are `direct512_avx512vnni` and `wino512_avx512vnni`.)
entries!(Emulated, "avx2", direct_emulated, wino_emulated);

/// One emulated `vpdpbusd` on arrays (for the instruction-level test).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(test)]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dp_emulated(acc: [i32; 8], a: [u8; 32], b: [i8; 32]) -> [i32; 8] {
    // SAFETY: AVX2 per the contract; unaligned loads and stores of whole arrays.
    unsafe {
        let r = Emulated::dp(
            _mm256_loadu_si256(acc.as_ptr().cast()),
            _mm256_loadu_si256(a.as_ptr().cast()),
            _mm256_loadu_si256(b.as_ptr().cast()),
        );
        let mut out = [0i32; 8];
        _mm256_storeu_si256(out.as_mut_ptr().cast(), r);
        out
    }
}
