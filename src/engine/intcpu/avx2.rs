//! AVX2 conv sums. A few output pixels at a time against up to 32 output channels held in
//! accumulators; the 4 codes of a channel group are broadcast and multiplied with the 8 output
//! channels' weights of the group (`vpmaddubsw` where no pair sum can saturate, else
//! `vpmaddwd` on codes spread to i16). Convs of at most 4 output lanes (the tail) put the
//! input channels in the vector lanes instead ([`row_sums_narrow16`]).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::ops::Range;

use super::wino::{WinoInput, WinoInput16, WinoWeights, WinoWeights16};
use super::{Codes, PackedConv};

/// `vpmaddubsw` (u8 codes × i8 weights, pairs summed into i16) then `vpmaddwd` by ones.
///
/// # Safety
/// The CPU must support AVX2; `x`, `pc`, `y` and `out` as checked by [`super::row_sums`], and
/// `2 · max code · pc.wabs ≤ 32767` so that no pair sum saturates.
///
/// When the pair sums of several groups fit in i16 together (`run ≥ 2`: small codes and
/// weights), they are accumulated in i16 and widened once per run.
#[target_feature(enable = "avx2")]
pub unsafe fn row_sums_maddubs(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    max_code: u32,
    cols: Range<usize>,
    out: &mut [i32],
) {
    let pair = 2 * max_code.max(1) as usize * pc.wabs.max(1) as usize;
    let run = (i16::MAX as usize / pair).min(9 * pc.cstride / 4);
    if run < 2 {
        // SAFETY: forwarded contract.
        return unsafe { row_sums_wide(x, pc, y, cols, out) };
    }
    let nb = pc.cout8 / 8;
    let mut b0 = 0;
    while b0 < nb {
        let n = if nb - b0 >= 2 { 2 } else { 1 };
        let mut xx = cols.start;
        while xx < cols.end {
            let two = xx + 1 < cols.end;
            // SAFETY: blocks b0..b0+n exist; the pixels are inside the row; run·pair ≤ i16::MAX
            // keeps the i16 sums exact.
            unsafe {
                match (n, two) {
                    (2, true) => pixels_i16::<2, 2>(x, pc, y, xx, b0, run, out),
                    (2, false) => pixels_i16::<2, 1>(x, pc, y, xx, b0, run, out),
                    (_, true) => pixels_i16::<1, 2>(x, pc, y, xx, b0, run, out),
                    (_, false) => pixels_i16::<1, 1>(x, pc, y, xx, b0, run, out),
                }
            }
            xx += if two { 2 } else { 1 };
        }
        b0 += n;
    }
}

/// One channel group of `vpmaddubsw` pair sums added into the i16 sums `part`: the 4 codes at
/// `codes + i·stride` of each of `P` pixels (or tiles) against the 4 weights per output
/// channel of the `N` blocks of 8 output channels at `wg` (32 bytes each).
///
/// # Safety
/// AVX2; `P` 4-byte reads from `codes` and `N` 32-byte reads from `wg` in bounds.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn maddubs_group<const N: usize, const P: usize>(
    codes: *const u8,
    stride: usize,
    wg: *const u8,
    part: &mut [[__m256i; N]; P],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let q = broadcast_groups::<P>(codes, stride);
        for b in 0..N {
            let wv = _mm256_loadu_si256(wg.add(b * 32) as *const __m256i);
            for i in 0..P {
                part[i][b] = _mm256_add_epi16(part[i][b], _mm256_maddubs_epi16(q[i], wv));
            }
        }
    }
}

/// The 4 codes at `codes + i·stride` of each of `P` pixels (or tiles), each broadcast to
/// all 8 lanes of a register (one channel group against 8 output channels' weights).
///
/// # Safety
/// AVX2; `P` 4-byte reads from `codes` in bounds.
#[inline(always)]
pub(super) unsafe fn broadcast_groups<const P: usize>(
    codes: *const u8,
    stride: usize,
) -> [__m256i; P] {
    // SAFETY: the caller's contract.
    unsafe {
        std::array::from_fn(|i| {
            let c = (codes.add(i * stride) as *const u32).read_unaligned();
            _mm256_set1_epi32(c as i32)
        })
    }
}

/// Widens the i16 sums `part` into the i32 sums `acc` (adjacent lanes added) and clears them.
///
/// # Safety
/// AVX2.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn widen<const N: usize, const P: usize>(
    part: &mut [[__m256i; N]; P],
    acc: &mut [[__m256i; N]; P],
) {
    // SAFETY: register-only intrinsics; the caller runs on AVX2.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        for i in 0..P {
            for b in 0..N {
                acc[i][b] = _mm256_add_epi32(acc[i][b], _mm256_madd_epi16(part[i][b], ones));
                part[i][b] = _mm256_setzero_si256();
            }
        }
    }
}

/// [`pixels`] with `vpmaddubsw` pair sums accumulated in i16 for
/// `run` groups, then widened with `vpmaddwd` into the i32 sums.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // several register arrays indexed in lockstep
unsafe fn pixels_i16<const N: usize, const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    xx: usize,
    b0: usize,
    run: usize,
    out: &mut [i32],
) {
    let wp = x.w + 2;
    let groups = pc.cstride / 4;
    let gbytes = pc.cout8 * 4;
    let w = pc.w8.as_ptr() as *const u8;
    // SAFETY: reads inside the padded windows and the weights; writes inside out (see pixel).
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); N]; P];
        let mut part = [[_mm256_setzero_si256(); N]; P];
        let mut pending = 0;
        for t in 0..9 {
            let p = ((y + t / 3) * wp + xx + t % 3) * x.cstride;
            let codes = x.data.as_ptr().add(p);
            let wt = w.add(t * groups * gbytes + b0 * 32);
            for g in 0..groups {
                maddubs_group(codes.add(4 * g), x.cstride, wt.add(g * gbytes), &mut part);
                pending += 1;
                if pending == run {
                    widen(&mut part, &mut acc);
                    pending = 0;
                }
            }
        }
        for i in 0..P {
            let d = out.as_mut_ptr().add((xx + i) * pc.cout8 + b0 * 8);
            for b in 0..N {
                let total = _mm256_add_epi32(acc[i][b], _mm256_madd_epi16(part[i][b], ones));
                _mm256_storeu_si256(d.add(b * 8) as *mut __m256i, total);
            }
        }
    }
}

/// Codes and weights widened to i16, `vpmaddwd`: exact for any code and weight. The 4 codes of
/// a channel group are loaded once and spread into two i16 pairs with `vpshufb`.
///
/// # Safety
/// The CPU must support AVX2; `x`, `pc`, `y` and `out` as checked by [`super::row_sums`].
#[target_feature(enable = "avx2")]
pub unsafe fn row_sums_madd16(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    let nb = pc.cout8 / 8;
    let mut b0 = 0;
    while b0 < nb {
        let n = match nb - b0 {
            4.. => 4,
            2..=3 => 2,
            _ => 1,
        };
        let mut xx = cols.start;
        while xx < cols.end {
            let p = (cols.end - xx).min(if n == 1 { 4 } else { 2 });
            // SAFETY: blocks b0..b0+n exist; pixels xx..xx + p are inside the row.
            unsafe {
                match (n, p) {
                    (4, 2) => pixels16::<4, 2>(x, pc, y, xx, b0, out),
                    (4, _) => pixels16::<4, 1>(x, pc, y, xx, b0, out),
                    (2, 2) => pixels16::<2, 2>(x, pc, y, xx, b0, out),
                    (2, _) => pixels16::<2, 1>(x, pc, y, xx, b0, out),
                    (_, 4) => pixels16::<1, 4>(x, pc, y, xx, b0, out),
                    (_, 3) => pixels16::<1, 3>(x, pc, y, xx, b0, out),
                    (_, 2) => pixels16::<1, 2>(x, pc, y, xx, b0, out),
                    _ => pixels16::<1, 1>(x, pc, y, xx, b0, out),
                }
            }
            xx += p;
        }
        b0 += n;
    }
}

/// Sums of narrow convs ([`super::NarrowWeights`]: at most 4 output lanes, such as the
/// 3-channel tail and its lane of ones) with the vector lanes over input channels, as the
/// AVX-512 `narrow512` kernel: per pixel, tap and 16 channels, the codes widened to i16 once
/// and `vpmaddwd` against each output lane's 16 weights (exact for any codes and weights:
/// a pair sum is at most `2 · 255 · 128`), then one horizontal sum per lane. The other AVX2
/// kernels put 8 output channels in a vector, 3 of them used, and multiply a channel pair per
/// instruction. Lanes 4..8 of each pixel's sums are written 0.
///
/// # Safety
/// The CPU must support AVX2; `x`, `pc`, `y` and `out` as checked by [`super::row_sums`], `nw`
/// made from `pc`.
#[target_feature(enable = "avx2")]
pub unsafe fn row_sums_narrow16(
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
                narrow16_pixels::<2>(x, pc, nw, y, xx, out);
                xx += 2;
            } else {
                narrow16_pixels::<1>(x, pc, nw, y, xx, out);
                xx += 1;
            }
        }
    }
}

/// [`row_sums_narrow16`] for the `P` pixels from `(y, xx)`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn narrow16_pixels<const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    nw: &super::NarrowWeights,
    y: usize,
    xx: usize,
    out: &mut [i32],
) {
    let (wp, cs, cs16) = (x.w + 2, x.cstride, nw.cs16);
    // SAFETY: the code loads are masked to the `cs` codes of each pixel inside the padded map
    // (`cs` is a multiple of 4: whole dwords), the weight loads inside nw.w16
    // (`[9][4][cs16]`), the stores inside out (pixels below x.w, 8 lanes each: cout8 is 8).
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); 4]; P];
        for t in 0..9 {
            let codes = x.data.as_ptr().add(((y + t / 3) * wp + xx + t % 3) * cs);
            let wt = nw.w16.as_ptr().add(t * 4 * cs16);
            let mut c0 = 0;
            while c0 < cs {
                // The 16 codes from c0, those below cs (a partial step: masked by dwords).
                let whole = cs - c0 >= 16;
                let left = ((cs - c0) / 4).min(4) as i32;
                let m = _mm_cmpgt_epi32(_mm_set1_epi32(left), _mm_setr_epi32(0, 1, 2, 3));
                let mut w = [_mm256_setzero_si256(); 4];
                for (o, wo) in w.iter_mut().enumerate() {
                    *wo = _mm256_loadu_si256(wt.add(o * cs16 + c0).cast());
                }
                for i in 0..P {
                    let p = codes.add(i * cs + c0);
                    let c = if whole {
                        _mm_loadu_si128(p.cast())
                    } else {
                        _mm_maskload_epi32(p.cast(), m)
                    };
                    let a = _mm256_cvtepu8_epi16(c);
                    for o in 0..4 {
                        acc[i][o] = _mm256_add_epi32(acc[i][o], _mm256_madd_epi16(a, w[o]));
                    }
                }
                c0 += 16;
            }
        }
        for (i, lanes) in acc.into_iter().enumerate() {
            store_lane_sums(lanes, out.as_mut_ptr().add((xx + i) * pc.cout8));
        }
    }
}

/// The horizontal sums of 4 accumulators of i32 lanes into the 8 lanes at `d`: `[Σa, Σb, Σc,
/// Σd, 0, 0, 0, 0]` (the narrow kernels' output lanes).
///
/// # Safety
/// AVX2; `d` valid for 8 i32.
#[inline(always)]
pub(super) unsafe fn store_lane_sums([a, b, c, d]: [__m256i; 4], dst: *mut i32) {
    // SAFETY: register operations and one 32-byte store at dst, per the contract.
    unsafe {
        // Per 128-bit half: the 4 accumulators' partial sums side by side, then the two halves
        // added.
        let ab = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
        let cd = _mm256_add_epi32(_mm256_unpacklo_epi32(c, d), _mm256_unpackhi_epi32(c, d));
        let s = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        _mm256_storeu_si256(dst.cast(), _mm256_set_m128i(_mm_setzero_si128(), s));
    }
}

/// `S` of output channels `8·b0 .. 8·(b0 + N)` for the `P` pixels from `(y, xx)` with
/// `vpmaddwd` on i16 codes and weights.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn pixels16<const N: usize, const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    xx: usize,
    b0: usize,
    out: &mut [i32],
) {
    let wp = x.w + 2;
    let groups = pc.cstride / 4;
    // Bytes of one channel pair's weights for all output channels (8 per block × 2 i16).
    let pbytes = pc.cout8 * 4;
    let w = pc.w16.as_ptr() as *const u8;
    // SAFETY: all reads stay inside x.data (the padded 3x3 windows of the P pixels) and the
    // weights (9 · cstride/2 · pbytes bytes); out has x.w · cout8 values.
    unsafe {
        let z = -128i8; // vpshufb: a set high bit gives 0
        let lo = _mm256_setr_epi8(
            0, z, 1, z, 0, z, 1, z, 0, z, 1, z, 0, z, 1, z, 0, z, 1, z, 0, z, 1, z, 0, z, 1, z, 0,
            z, 1, z,
        );
        let hi = _mm256_setr_epi8(
            2, z, 3, z, 2, z, 3, z, 2, z, 3, z, 2, z, 3, z, 2, z, 3, z, 2, z, 3, z, 2, z, 3, z, 2,
            z, 3, z,
        );
        let mut acc = [[_mm256_setzero_si256(); N]; P];
        for t in 0..9 {
            let p = ((y + t / 3) * wp + xx + t % 3) * x.cstride;
            let codes = x.data.as_ptr().add(p);
            let wt = w.add(t * 2 * groups * pbytes + b0 * 32);
            for g in 0..groups {
                let mut q0 = [_mm256_setzero_si256(); P];
                let mut q1 = [_mm256_setzero_si256(); P];
                for i in 0..P {
                    let v = (codes.add(i * x.cstride + 4 * g) as *const u32).read_unaligned();
                    let b = _mm256_set1_epi32(v as i32);
                    q0[i] = _mm256_shuffle_epi8(b, lo);
                    q1[i] = _mm256_shuffle_epi8(b, hi);
                }
                let wg = wt.add(2 * g * pbytes);
                for b in 0..N {
                    let w0 = _mm256_loadu_si256(wg.add(b * 32) as *const __m256i);
                    let w1 = _mm256_loadu_si256(wg.add(pbytes + b * 32) as *const __m256i);
                    for i in 0..P {
                        acc[i][b] = _mm256_add_epi32(acc[i][b], _mm256_madd_epi16(q0[i], w0));
                        acc[i][b] = _mm256_add_epi32(acc[i][b], _mm256_madd_epi16(q1[i], w1));
                    }
                }
            }
        }
        for i in 0..P {
            let d = out.as_mut_ptr().add((xx + i) * pc.cout8 + b0 * 8);
            for b in 0..N {
                _mm256_storeu_si256(d.add(b * 8) as *mut __m256i, acc[i][b]);
            }
        }
    }
}

/// `vpmaddubsw` pair sums widened at once (no i16 runs): drives [`pixels`] over the row and the
/// output channels in chunks of 32, 16 and 8.
#[target_feature(enable = "avx2")]
unsafe fn row_sums_wide(x: &Codes, pc: &PackedConv, y: usize, cols: Range<usize>, out: &mut [i32]) {
    let w = pc.w8.as_ptr() as *const u8;
    let nb = pc.cout8 / 8;
    let mut b0 = 0;
    while b0 < nb {
        let n = match nb - b0 {
            4.. => 4,
            2..=3 => 2,
            _ => 1,
        };
        let mut xx = cols.start;
        // Two pixels per pass share every weight load.
        while xx + 1 < cols.end {
            // SAFETY: blocks b0..b0+n exist; pixels xx and xx + 1 are inside the row.
            unsafe {
                match n {
                    4 => pixels::<4, 2>(x, pc, y, xx, b0, w, out),
                    2 => pixels::<2, 2>(x, pc, y, xx, b0, w, out),
                    _ => pixels::<1, 2>(x, pc, y, xx, b0, w, out),
                }
            }
            xx += 2;
        }
        if xx < cols.end {
            // SAFETY: as above, one pixel.
            unsafe {
                match n {
                    4 => pixels::<4, 1>(x, pc, y, xx, b0, w, out),
                    2 => pixels::<2, 1>(x, pc, y, xx, b0, w, out),
                    _ => pixels::<1, 1>(x, pc, y, xx, b0, w, out),
                }
            }
        }
        b0 += n;
    }
}

/// `S` of output channels `8·b0 .. 8·(b0 + N)` for the `P` pixels from `(y, xx)`; each weight
/// load serves all `P` pixels.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn pixels<const N: usize, const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    xx: usize,
    b0: usize,
    w: *const u8,
    out: &mut [i32],
) {
    let wp = x.w + 2;
    let groups = pc.cstride / 4;
    // Bytes of one group's weights for all output channels (8 per block × 4 bytes).
    let gbytes = pc.cout8 * 4;
    // SAFETY: all reads stay inside x.data (the padded 3x3 windows of the P pixels) and the
    // weight arrays (9 · groups · gbytes bytes); out has x.w · cout8 values.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); N]; P];
        for t in 0..9 {
            let p = ((y + t / 3) * wp + xx + t % 3) * x.cstride;
            let codes = x.data.as_ptr().add(p);
            let wt = w.add(t * groups * gbytes + b0 * 32);
            for g in 0..groups {
                let q = broadcast_groups::<P>(codes.add(4 * g), x.cstride);
                let wg = wt.add(g * gbytes);
                for b in 0..N {
                    let wv = _mm256_loadu_si256(wg.add(b * 32) as *const __m256i);
                    for i in 0..P {
                        let pairs = _mm256_maddubs_epi16(q[i], wv);
                        acc[i][b] = _mm256_add_epi32(acc[i][b], _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
        }
        for i in 0..P {
            let d = out.as_mut_ptr().add((xx + i) * pc.cout8 + b0 * 8);
            for b in 0..N {
                _mm256_storeu_si256(d.add(b * 8) as *mut __m256i, acc[i][b]);
            }
        }
    }
}

/// Tiles (pairs of output pixels) per chunk of a row in the Winograd drivers.
const TILE_CHUNK: usize = 16;

/// Winograd F(2,3) sums of output row `y` (see [`super::wino`]): the same `S` as
/// [`row_sums_maddubs`].
///
/// # Safety
/// The CPU must support AVX2; `v` built from a map of `pc.cstride` codes up to `v.max_code`,
/// `ww` from `pc`, `flush` from `ww.schedule(v.max_code)`, `out.len() ≥ v.w · pc.cout8` (all
/// checked by [`super::row_sums_wino`]).
#[target_feature(enable = "avx2")]
pub unsafe fn row_sums_wino(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    flush: &[u8],
    cols: Range<usize>,
    out: &mut [i32],
) {
    for (c0, c1, b0, n) in chunks_and_blocks(&cols, pc.cout8 / 8) {
        let mut t = c0;
        while t < c1 {
            let p = (c1 - t).min(2);
            // SAFETY: blocks b0..b0+n exist; tiles t..t+p are inside the row.
            unsafe {
                match (n, p) {
                    (4, 2) => tiles_wino::<4, 2>(v, pc, ww, t, b0, flush, out),
                    (4, _) => tiles_wino::<4, 1>(v, pc, ww, t, b0, flush, out),
                    (2, 2) => tiles_wino::<2, 2>(v, pc, ww, t, b0, flush, out),
                    (2, _) => tiles_wino::<2, 1>(v, pc, ww, t, b0, flush, out),
                    (_, 2) => tiles_wino::<1, 2>(v, pc, ww, t, b0, flush, out),
                    _ => tiles_wino::<1, 1>(v, pc, ww, t, b0, flush, out),
                }
            }
            t += p;
        }
    }
}

/// The Winograd drivers' walk over the tiles of `cols`: chunks of [`TILE_CHUNK`] tiles, and
/// in each chunk every group of `n` (4, 2 or 1) blocks of 8 output channels from `b0`, so that a
/// chunk's transformed inputs stay in cache while all the weights pass. Yields
/// `(c0, c1, b0, n)`.
///
/// An iterator rather than a closure-taking function: a closure's body is compiled as a
/// function of its own, and one written in a generic `#[inline(always)]` function (the VNNI
/// kernels) does not get the entry point's `#[target_feature]`s, so every intrinsic in it
/// became a call (the VNNI Winograd kernel ran 35x slower than the direct one).
#[inline(always)]
pub(super) fn chunks_and_blocks(
    cols: &Range<usize>,
    nb: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let (t0, t1) = (cols.start / 2, cols.end.div_ceil(2));
    (t0..t1).step_by(TILE_CHUNK).flat_map(move |c0| {
        let c1 = (c0 + TILE_CHUNK).min(t1);
        let mut b0 = 0;
        std::iter::from_fn(move || {
            (b0 < nb).then(|| {
                let n = match nb - b0 {
                    4.. => 4,
                    2..=3 => 2,
                    _ => 1,
                };
                b0 += n;
                (c0, c1, b0 - n, n)
            })
        })
    })
}

/// `S` of output channels `8·b0 .. 8·(b0 + N)` for the `2·P` pixels of tiles `t .. t + P`:
/// each element's sums accumulated like [`pixels_i16`] (in i16, widened after the groups
/// `flush` marks), then combined into the two outputs of every tile.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tiles_wino<const N: usize, const P: usize>(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    t: usize,
    b0: usize,
    flush: &[u8],
    out: &mut [i32],
) {
    let cs = v.cstride;
    let groups = cs / 4;
    let gbytes = pc.cout8 * 4;
    let w = ww.u8.as_ptr() as *const u8;
    // SAFETY: reads inside the transformed rows y..y+3 (tiles t..t+P) and the weights; writes
    // inside out (pixels below v.w).
    unsafe {
        let mut a = [[[_mm256_setzero_si256(); N]; P]; 4];
        for e in 0..4 {
            let mut part = [[_mm256_setzero_si256(); N]; P];
            let fl = flush.as_ptr().add(e * 3 * groups);
            for ky in 0..3 {
                let row = v.rows[ky].as_ptr().add(t * 4 * cs + e * cs);
                let wt = w.add((ky * 4 + e) * groups * gbytes + b0 * 32);
                for g in 0..groups {
                    maddubs_group(row.add(4 * g), 4 * cs, wt.add(g * gbytes), &mut part);
                    if *fl.add(ky * groups + g) != 0 {
                        widen(&mut part, &mut a[e]);
                    }
                }
            }
        }
        combine_wino(v, pc, ww, t, b0, &a, out);
    }
}

/// The F(2,3) output transform of tiles `t .. t + P`, blocks `b0 .. b0 + N`: from the element
/// sums `a[e][i][b]` (i32), `2·S` of both pixels of every tile, halved and stored (the second
/// pixel only when inside the row).
///
/// # Safety
/// AVX2; blocks and tiles inside `pc` and `v.w`, `out.len() ≥ v.w · pc.cout8`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn combine_wino<const N: usize, const P: usize>(
    v: &WinoInput,
    pc: &PackedConv,
    ww: &WinoWeights,
    t: usize,
    b0: usize,
    a: &[[[__m256i; N]; P]; 4],
    out: &mut [i32],
) {
    // SAFETY: the caller's contract (csum has 4 · cout8 values).
    unsafe {
        let q = _mm256_set1_epi32(v.max_code as i32);
        for b in 0..N {
            // (Plain unaligned reads, no closure: a closure here would be compiled without the
            // caller's target features, and `_mm256_loadu_si256` was left out of line at
            // opt-level 1.)
            let at = ww.csum.as_ptr().add((b0 + b) * 8) as *const __m256i;
            let c0 = at.read_unaligned();
            let c2 = at.byte_add(2 * 4 * pc.cout8).read_unaligned();
            let c3 = at.byte_add(3 * 4 * pc.cout8).read_unaligned();
            let k0 = _mm256_mullo_epi32(q, _mm256_add_epi32(c0, c2));
            let k1 = _mm256_mullo_epi32(q, _mm256_add_epi32(c2, c3));
            for i in 0..P {
                let x = 2 * (t + i);
                let [a0, a1, a2, a3] = [a[0][i][b], a[1][i][b], a[2][i][b], a[3][i][b]];
                let s0 = _mm256_sub_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), a2), k0);
                let s1 = _mm256_add_epi32(_mm256_sub_epi32(_mm256_sub_epi32(a1, a2), a3), k1);
                let d = out.as_mut_ptr().add(x * pc.cout8 + (b0 + b) * 8);
                _mm256_storeu_si256(d as *mut __m256i, _mm256_srai_epi32(s0, 1));
                if x + 1 < v.w {
                    _mm256_storeu_si256(d.add(pc.cout8) as *mut __m256i, _mm256_srai_epi32(s1, 1));
                }
            }
        }
    }
}

/// Winograd F(2,3) sums of output row `y` with `vpmaddwd` on i16 transformed codes and weights
/// (see [`super::wino`]): the same values as [`row_sums_madd16`] (before the offset-form
/// correction).
///
/// # Safety
/// The CPU must support AVX2; `v` built from a map of `pc.cstride` codes, `ww` from `pc`,
/// `out.len() ≥ v.w · pc.cout8` (checked by [`super::row_sums_wino16`]).
#[target_feature(enable = "avx2")]
pub unsafe fn row_sums_wino16(
    v: &WinoInput16,
    pc: &PackedConv,
    ww: &WinoWeights16,
    cols: Range<usize>,
    out: &mut [i32],
) {
    for (c0, c1, b0, n) in chunks_and_blocks(&cols, pc.cout8 / 8) {
        // SAFETY: blocks b0..b0+n exist; tiles c0..c1 are inside the row.
        unsafe {
            match n {
                4 => chunk_wino16::<4>(v, pc, ww, c0, c1, b0, out),
                2 => chunk_wino16::<2>(v, pc, ww, c0, c1, b0, out),
                _ => chunk_wino16::<1>(v, pc, ww, c0, c1, b0, out),
            }
        }
    }
}

/// `S` of output channels `8·b0 .. 8·(b0 + N)` for the pixels of tiles `c0 .. c1` (at most
/// [`TILE_CHUNK`]): for each element and kernel row (one slice of weights, kept in L1) every
/// pair of tiles adds its products to its sums, kept in a small buffer between the slices;
/// then the sums are combined into the two outputs of every tile.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn chunk_wino16<const N: usize>(
    v: &WinoInput16,
    pc: &PackedConv,
    ww: &WinoWeights16,
    c0: usize,
    c1: usize,
    b0: usize,
    out: &mut [i32],
) {
    let cs = v.cstride;
    let pairs = cs / 2;
    // Bytes of one channel pair's weights for all output channels (8 per block × 2 i16).
    let pbytes = pc.cout8 * 4;
    let w = ww.u16.as_ptr() as *const u8;
    // SAFETY: reads inside the transformed rows (tiles c0..c1) and the weights; writes inside
    // out (pixels below v.w).
    unsafe {
        let mut sums = [[[_mm256_setzero_si256(); N]; 4]; TILE_CHUNK];
        for e in 0..4 {
            for ky in 0..3 {
                let wt = w.add((ky * 4 + e) * pairs * pbytes + b0 * 32);
                let row = v.rows[ky].as_ptr().add(e * cs);
                let mut t = c0;
                while t < c1 {
                    let two = t + 1 < c1;
                    let (k0, k1) = (t - c0, (t + 1 - c0).min(TILE_CHUNK - 1));
                    let mut acc0 = sums[k0][e];
                    let mut acc1 = sums[k1][e];
                    let r0 = row.add(t * 4 * cs);
                    let r1 = if two { r0.add(4 * cs) } else { r0 };
                    for g in 0..pairs {
                        let q0 = _mm256_set1_epi32((r0.add(2 * g) as *const i32).read_unaligned());
                        let q1 = _mm256_set1_epi32((r1.add(2 * g) as *const i32).read_unaligned());
                        let wg = wt.add(g * pbytes);
                        for b in 0..N {
                            let wv = _mm256_loadu_si256(wg.add(b * 32) as *const __m256i);
                            acc0[b] = _mm256_add_epi32(acc0[b], _mm256_madd_epi16(q0, wv));
                            acc1[b] = _mm256_add_epi32(acc1[b], _mm256_madd_epi16(q1, wv));
                        }
                    }
                    sums[k0][e] = acc0;
                    if two {
                        sums[k1][e] = acc1;
                    }
                    t += 2;
                }
            }
        }
        for t in c0..c1 {
            let a = &sums[t - c0];
            let x = 2 * t;
            for b in 0..N {
                let s0 = _mm256_add_epi32(_mm256_add_epi32(a[0][b], a[1][b]), a[2][b]);
                let s1 = _mm256_sub_epi32(_mm256_sub_epi32(a[1][b], a[2][b]), a[3][b]);
                let d = out.as_mut_ptr().add(x * pc.cout8 + (b0 + b) * 8);
                _mm256_storeu_si256(d as *mut __m256i, _mm256_srai_epi32(s0, 1));
                if x + 1 < v.w {
                    _mm256_storeu_si256(d.add(pc.cout8) as *mut __m256i, _mm256_srai_epi32(s1, 1));
                }
            }
        }
    }
}
