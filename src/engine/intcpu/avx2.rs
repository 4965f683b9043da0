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
#[target_feature(enable = "avx2")]
pub unsafe fn row_sums_maddubs(x: &Codes, pc: &PackedConv, y: usize, out: &mut [i32]) {
    // SAFETY: forwarded contract.
    unsafe { row_sums_with::<true>(x, pc, y, out, pc.w8.as_ptr().cast()) }
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

/// Drives [`pixel`] over the row and the output channels in chunks of 64, 32, 16 and 8.
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
            8.. => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        };
        for xx in 0..x.w {
            // SAFETY: blocks b0..b0+n exist (n ≤ nb − b0); pixel reads the 3x3 window of the
            // padded map around (y, xx), inside it for y < h, xx < w.
            unsafe {
                match n {
                    8 => pixel::<8, MADDUBS>(x, pc, y, xx, b0, w, out),
                    4 => pixel::<4, MADDUBS>(x, pc, y, xx, b0, w, out),
                    2 => pixel::<2, MADDUBS>(x, pc, y, xx, b0, w, out),
                    _ => pixel::<1, MADDUBS>(x, pc, y, xx, b0, w, out),
                }
            }
        }
        b0 += n;
    }
}

/// `S` of output channels `8·b0 .. 8·(b0 + N)` at `(y, xx)`.
#[inline(always)]
unsafe fn pixel<const N: usize, const MADDUBS: bool>(
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
    // SAFETY: all reads stay inside x.data (padded window) and the weight arrays
    // (9 · groups · gbytes bytes); out has x.w · cout8 values.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); N];
        for t in 0..9 {
            let p = ((y + t / 3) * wp + xx + t % 3) * x.cstride;
            let codes = x.data.as_ptr().add(p);
            let wt = w.add(t * groups * gbytes + b0 * 32);
            for g in 0..groups {
                let q = if group == 4 {
                    (codes.add(4 * g) as *const u32).read_unaligned()
                } else {
                    let a = *codes.add(2 * g) as u32;
                    let b = *codes.add(2 * g + 1) as u32;
                    a | (b << 16)
                };
                if q == 0 {
                    continue;
                }
                let qv = _mm256_set1_epi32(q as i32);
                let wg = wt.add(g * gbytes);
                for (b, a) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_si256(wg.add(b * 32) as *const __m256i);
                    *a = step::<MADDUBS>(*a, qv, wv);
                }
            }
        }
        let dst = out.as_mut_ptr().add(xx * pc.cout8 + b0 * 8);
        for (b, a) in acc.iter().enumerate() {
            _mm256_storeu_si256(dst.add(b * 8) as *mut __m256i, *a);
        }
    }
}
