//! AVX2 conv sums. One output pixel at a time against up to 64 output channels held in 8
//! accumulators; the 4 (or 2) codes of a channel group are broadcast and multiplied with the
//! 8 output channels' weights of the group.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

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
    out: &mut [i32],
) {
    let pair = 2 * max_code.max(1) as usize * pc.wabs.max(1) as usize;
    let run = (i16::MAX as usize / pair).min(9 * pc.cstride / 4);
    if run < 2 {
        // SAFETY: forwarded contract.
        return unsafe { row_sums_with::<true>(x, pc, y, out, pc.w8.as_ptr().cast()) };
    }
    let nb = pc.cout8 / 8;
    let mut b0 = 0;
    while b0 < nb {
        let n = if nb - b0 >= 2 { 2 } else { 1 };
        let mut xx = 0;
        while xx < x.w {
            let two = xx + 1 < x.w;
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
                let mut q = [_mm256_setzero_si256(); P];
                for (i, qi) in q.iter_mut().enumerate() {
                    let v = (codes.add(i * x.cstride + 4 * g) as *const u32).read_unaligned();
                    *qi = _mm256_set1_epi32(v as i32);
                }
                let wg = wt.add(g * gbytes);
                for b in 0..N {
                    let wv = _mm256_loadu_si256(wg.add(b * 32) as *const __m256i);
                    for i in 0..P {
                        part[i][b] = _mm256_add_epi16(part[i][b], _mm256_maddubs_epi16(q[i], wv));
                    }
                }
                pending += 1;
                if pending == run {
                    for i in 0..P {
                        for b in 0..N {
                            acc[i][b] =
                                _mm256_add_epi32(acc[i][b], _mm256_madd_epi16(part[i][b], ones));
                            part[i][b] = _mm256_setzero_si256();
                        }
                    }
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

/// Codes and weights widened to i16, `vpmaddwd`: exact for any code and weight.
///
/// # Safety
/// The CPU must support AVX2; `x`, `pc`, `y` and `out` as checked by [`super::row_sums`].
#[target_feature(enable = "avx2")]
pub unsafe fn row_sums_madd16(x: &Codes, pc: &PackedConv, y: usize, out: &mut [i32]) {
    // SAFETY: forwarded contract.
    unsafe { row_sums_with::<false>(x, pc, y, out, pc.w16.as_ptr().cast()) }
}

/// One multiply-accumulate step, `acc += q ⊙ w` for a broadcast group of codes:
/// `MADDUBS`: 4 u8 codes × 4 i8 weights; else 2 i16 codes × 2 i16 weights.
#[inline(always)]
unsafe fn step<const MADDUBS: bool>(acc: __m256i, q: __m256i, w: __m256i) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe {
        if MADDUBS {
            let pairs = _mm256_maddubs_epi16(q, w);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(q, w))
        }
    }
}

/// Drives [`pixels`] over the row and the output channels in chunks of 32, 16
/// and 8.
#[target_feature(enable = "avx2")]
unsafe fn row_sums_with<const MADDUBS: bool>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    out: &mut [i32],
    w: *const u8,
) {
    let nb = pc.cout8 / 8;
    let mut b0 = 0;
    while b0 < nb {
        let n = match nb - b0 {
            4.. => 4,
            2..=3 => 2,
            _ => 1,
        };
        let mut xx = 0;
        // Two pixels per pass share every weight load.
        while xx + 1 < x.w {
            // SAFETY: blocks b0..b0+n exist; pixels xx and xx + 1 are inside the row.
            unsafe {
                match n {
                    4 => pixels::<4, 2, MADDUBS>(x, pc, y, xx, b0, w, out),
                    2 => pixels::<2, 2, MADDUBS>(x, pc, y, xx, b0, w, out),
                    _ => pixels::<1, 2, MADDUBS>(x, pc, y, xx, b0, w, out),
                }
            }
            xx += 2;
        }
        if xx < x.w {
            // SAFETY: as above, one pixel.
            unsafe {
                match n {
                    4 => pixels::<4, 1, MADDUBS>(x, pc, y, xx, b0, w, out),
                    2 => pixels::<2, 1, MADDUBS>(x, pc, y, xx, b0, w, out),
                    _ => pixels::<1, 1, MADDUBS>(x, pc, y, xx, b0, w, out),
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
unsafe fn pixels<const N: usize, const P: usize, const MADDUBS: bool>(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    xx: usize,
    b0: usize,
    w: *const u8,
    out: &mut [i32],
) {
    let group = if MADDUBS { 4 } else { 2 };
    let wp = x.w + 2;
    let groups = pc.cstride / group;
    // Bytes of one group's weights for all output channels (8 per block × 4 bytes / 2 i16).
    let gbytes = pc.cout8 * 4;
    let read = |codes: *const u8, g: usize| -> u32 {
        // SAFETY: inside the padded window (see below).
        unsafe {
            if MADDUBS {
                (codes.add(4 * g) as *const u32).read_unaligned()
            } else {
                *codes.add(2 * g) as u32 | ((*codes.add(2 * g + 1) as u32) << 16)
            }
        }
    };
    // SAFETY: all reads stay inside x.data (the padded 3x3 windows of the P pixels) and the
    // weight arrays (9 · groups · gbytes bytes); out has x.w · cout8 values.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); N]; P];
        for t in 0..9 {
            let p = ((y + t / 3) * wp + xx + t % 3) * x.cstride;
            let codes = x.data.as_ptr().add(p);
            let wt = w.add(t * groups * gbytes + b0 * 32);
            for g in 0..groups {
                let mut q = [_mm256_setzero_si256(); P];
                for i in 0..P {
                    q[i] = _mm256_set1_epi32(read(codes.add(i * x.cstride), g) as i32);
                }
                let wg = wt.add(g * gbytes);
                for b in 0..N {
                    let wv = _mm256_loadu_si256(wg.add(b * 32) as *const __m256i);
                    for i in 0..P {
                        acc[i][b] = step::<MADDUBS>(acc[i][b], q[i], wv);
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
