//! Winograd F(4x4, 3x3) on i16 transformed values, for the convs whose codes or weights are
//! too wide for the u8·i8 transforms ([`super::wino`]): the 8-bit upsamplers of fq models and
//! the body of w8a6 models. 36 products per 4x4 output pixels instead of 144, at half the
//! products per instruction of the direct kernel (`vpdpwssd`: two i16·i16 pairs per i32 lane,
//! against `vpdpbusd`'s four u8·i8): half the multiply instructions.
//!
//! Exact by arithmetic modulo 2^32. Lavin's F(4,3) with `G` scaled to integers (rows × 4, 6,
//! 6, 24, 24, 1: `G`), the scales moved into the output transform (`A'ᵀ = Aᵀ·diag(6, 4, 4,
//! 1, 1, 24)`, `at`), gives `576·S = A'ᵀ (U ⊙ V) A'` as an identity of integers, where
//! `V = Bᵀ d B` of codes `d ≤ 255` stays within ±25,500 and `U = G g Gᵀ` of weights `|g| ≤
//! 128` within ±6,272 (both i16). The element sums and the output transform wrap in i32, so
//! the kernel knows `576·S mod 2^32`; since 576 = 64·9, that gives `9·S mod 2^26`, and with
//! the inverse of 9 modulo 2^32, `S mod 2^26` — `S` itself whenever `|S| < 2^25`, which
//! [`Wino4Weights::new`] requires of the conv (`255 · max|g| · 9 · cstride < 2^25`: any
//! 8-bit conv of up to 64 input channels).
//!
//! AVX-512 VNNI only (the other levels keep their kernels for these convs); used by the fused
//! path of fq models and by the non-fq integer engine. The sums are those of
//! [`super::row_sums`] before its offset correction, bit for bit.

use std::ops::Range;

use super::{Codes, PackedConv};

/// Elements of a 6x6 tile.
const ELEMENTS: usize = 36;

/// Lavin's F(4,3) `G` with its rows scaled to integers (by 4, 6, 6, 24, 24, 1).
const G: [[i32; 3]; 6] = [
    [1, 0, 0],
    [-1, -1, -1],
    [-1, 1, -1],
    [1, 2, 4],
    [1, -2, 4],
    [0, 0, 1],
];

/// The transformed weights `U = G g Gᵀ` of a conv, i16, in blocks of 32 output lanes (the
/// last one 16 when `cout8` is an odd multiple of 16), each `[36][cstride/2][lanes][2]` (input
/// channel pairs interleaved, as `vpdpwssd` takes them): what the kernel reads for one block
/// is one contiguous stream.
#[derive(Clone, Debug)]
pub struct Wino4Weights {
    pub w: Vec<i16>,
}

impl Wino4Weights {
    /// None when the conv does not fit the kernel: channel stride not a multiple of 32 or
    /// above 1024, output lanes not a multiple of 16, or sums that could reach 2^25 in
    /// magnitude (so that the modular recovery would not be exact).
    pub fn new(pc: &PackedConv) -> Option<Self> {
        let (cs, cout8) = (pc.cstride, pc.cout8);
        if !cs.is_multiple_of(32) || cs > 1024 || !cout8.is_multiple_of(16) {
            return None;
        }
        if 255 * pc.wabs as i64 * 9 * cs as i64 >= 1 << 25 {
            return None;
        }
        let half = cs / 2;
        let mut w = vec![0i16; ELEMENTS * cs * cout8];
        for i in 0..cs {
            for o in 0..cout8 {
                let g = |t: usize| pc.w16[((t * half + i / 2) * cout8 + o) * 2 + i % 2] as i32;
                for a in 0..6 {
                    for b in 0..6 {
                        let mut u = 0;
                        for (r, gar) in G[a].iter().enumerate() {
                            for (c, gbc) in G[b].iter().enumerate() {
                                u += gar * g(r * 3 + c) * gbc;
                            }
                        }
                        // |u| ≤ 7 · 7 · 128.
                        w[weight_at(cs, cout8, a * 6 + b, i, o)] = u as i16;
                    }
                }
            }
        }
        Some(Self { w })
    }
}

/// Output lanes per weight block.
const BLOCK: usize = 32;

/// Where the weight of element `e`, input channel `i`, output lane `o` is in
/// [`Wino4Weights::w`].
fn weight_at(cs: usize, cout8: usize, e: usize, i: usize, o: usize) -> usize {
    let (b, lane) = (o / BLOCK, o % BLOCK);
    let lanes = BLOCK.min(cout8 - b * BLOCK);
    b * BLOCK * ELEMENTS * cs + ((e * (cs / 2) + i / 2) * lanes + lane) * 2 + i % 2
}

/// i16 values of the transformed tiles of `tiles` tiles.
pub fn tiles_len(tiles: usize, cstride: usize) -> usize {
    tiles * ELEMENTS * cstride
}

/// `S` (before the offset correction) of output rows `y0 .. y0 + 4` (those below `x.h`) at the
/// pixels `cols`: `out[r · x.w · cout8 + x · cout8 + o]`; `tiles` is scratch of at least
/// [`tiles_len`] of the tiles that cover `cols`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI; `x` and `out` as checked by
/// [`super::row_sums_wino4`]; `ww` made from `pc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn row_sums_avx512(
    x: &Codes,
    pc: &PackedConv,
    ww: &Wino4Weights,
    y0: usize,
    cols: Range<usize>,
    tiles: &mut [i16],
    out: &mut [i32],
) {
    let (t0, t1) = (cols.start / 4, cols.end.div_ceil(4));
    assert!(tiles.len() >= tiles_len(t1 - t0, pc.cstride));
    // SAFETY: the caller's contract; the transforms read inside the map (positions outside
    // it are zero) and write tiles[..tiles_len(t1 - t0)].
    unsafe {
        for t in t0..t1 {
            input(x, y0, t, &mut tiles[(t - t0) * ELEMENTS * pc.cstride..]);
        }
        let nb = pc.cout8 / 16;
        let mut b0 = 0;
        while b0 < nb {
            let mut t = t0;
            while t < t1 {
                if nb - b0 >= 2 && t1 - t >= 4 {
                    block::<2, 4>(x, pc, ww, tiles, t0, t, b0, y0, &cols, out);
                    t += 4;
                } else if nb - b0 >= 2 {
                    block::<2, 1>(x, pc, ww, tiles, t0, t, b0, y0, &cols, out);
                    t += 1;
                } else if t1 - t >= 4 {
                    block::<1, 4>(x, pc, ww, tiles, t0, t, b0, y0, &cols, out);
                    t += 4;
                } else {
                    block::<1, 1>(x, pc, ww, tiles, t0, t, b0, y0, &cols, out);
                    t += 1;
                }
            }
            b0 += if nb - b0 >= 2 { 2 } else { 1 };
        }
    }
}

/// `Bᵀ d` of six vectors (rows of Lavin's F(4,3) `Bᵀ`: 4 0 −5 0 1 0 / 0 −4 −4 1 1 0 /
/// 0 4 −4 −1 1 0 / 0 −2 −1 2 1 0 / 0 2 −1 −2 1 0 / 0 4 0 −5 0 1), on i16 lanes.
///
/// # Safety
/// AVX-512 BW.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn bt(d: [std::arch::x86_64::__m512i; 6]) -> [std::arch::x86_64::__m512i; 6] {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic; the caller's contract. (No closures: they would not get
    // the caller's target features.)
    unsafe {
        let p = _mm512_sub_epi16(d[4], _mm512_slli_epi16::<2>(d[2]));
        let q = _mm512_sub_epi16(d[3], _mm512_slli_epi16::<2>(d[1]));
        let s = _mm512_sub_epi16(d[4], d[2]);
        let u = _mm512_slli_epi16::<1>(_mm512_sub_epi16(d[3], d[1]));
        [
            _mm512_add_epi16(
                _mm512_sub_epi16(_mm512_slli_epi16::<2>(d[0]), times5(d[2])),
                d[4],
            ),
            _mm512_add_epi16(p, q),
            _mm512_sub_epi16(p, q),
            _mm512_add_epi16(s, u),
            _mm512_sub_epi16(s, u),
            _mm512_add_epi16(
                _mm512_sub_epi16(_mm512_slli_epi16::<2>(d[1]), times5(d[3])),
                d[5],
            ),
        ]
    }
}

/// `5·v` on i16 lanes.
///
/// # Safety
/// AVX-512 BW.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn times5(v: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic; the caller's contract.
    unsafe { _mm512_add_epi16(_mm512_slli_epi16::<2>(v), v) }
}

/// Codes `g .. g + 32` of the padded map's pixel (`yy`, `xx`) as i16, zero outside the map.
///
/// # Safety
/// AVX-512 BW; `g + 32 ≤ x.cstride`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn codes16(x: &Codes, yy: usize, xx: usize, g: usize) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let wp = x.w + 2;
    // SAFETY: an in-map pixel's 32 codes from channel g; the caller's contract.
    unsafe {
        if yy < x.h + 2 && xx < wp {
            let p = x.data.as_ptr().add((yy * wp + xx) * x.cstride + g);
            _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.cast()))
        } else {
            _mm512_setzero_si512()
        }
    }
}

/// The transformed tile `t` of output rows `y0 .. y0 + 4`: `V = Bᵀ d B` of the padded map's
/// rows `y0 .. y0 + 6` and columns `4t .. 4t + 6` (zero outside the map), `[36][cstride]` i16
/// into `out`.
///
/// # Safety
/// AVX-512 F/BW; `out` holds `36 · cstride` values; `x.cstride` a multiple of 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn input(x: &Codes, y0: usize, t: usize, out: &mut [i16]) {
    use std::arch::x86_64::*;
    let cs = x.cstride;
    debug_assert!(out.len() >= ELEMENTS * cs && cs.is_multiple_of(32));
    // SAFETY: loads at in-map positions, `cs` bytes each; stores inside out[..36 · cs].
    unsafe {
        for g in (0..cs).step_by(32) {
            // Columns first: Bᵀ along y for each of the 6 columns.
            let mut cols = [[_mm512_setzero_si512(); 6]; 6];
            for (c, col) in cols.iter_mut().enumerate() {
                let xx = 4 * t + c;
                *col = bt([
                    codes16(x, y0, xx, g),
                    codes16(x, y0 + 1, xx, g),
                    codes16(x, y0 + 2, xx, g),
                    codes16(x, y0 + 3, xx, g),
                    codes16(x, y0 + 4, xx, g),
                    codes16(x, y0 + 5, xx, g),
                ]);
            }
            // Then Bᵀ along x for each of the 6 transformed rows.
            for k in 0..6 {
                let v = bt([
                    cols[0][k], cols[1][k], cols[2][k], cols[3][k], cols[4][k], cols[5][k],
                ]);
                for (l, vl) in v.iter().enumerate() {
                    _mm512_storeu_si512(out.as_mut_ptr().add((k * 6 + l) * cs + g).cast(), *vl);
                }
            }
        }
    }
}

/// `A'ᵀ m` of six vectors (`A'ᵀ = Aᵀ·diag(6, 4, 4, 1, 1, 24)`: rows 6 4 4 1 1 0 /
/// 0 4 −4 2 −2 0 / 0 4 4 4 4 0 / 0 4 −4 8 −8 24), i32 lanes, wrapping.
///
/// # Safety
/// AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn at(m: [std::arch::x86_64::__m512i; 6]) -> [std::arch::x86_64::__m512i; 4] {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic; the caller's contract.
    unsafe {
        let s12 = _mm512_add_epi32(m[1], m[2]);
        let d12 = _mm512_sub_epi32(m[1], m[2]);
        let s34 = _mm512_add_epi32(m[3], m[4]);
        let d34 = _mm512_sub_epi32(m[3], m[4]);
        let x6 = _mm512_add_epi32(_mm512_slli_epi32::<1>(m[0]), _mm512_slli_epi32::<2>(m[0]));
        let x24 = _mm512_add_epi32(_mm512_slli_epi32::<3>(m[5]), _mm512_slli_epi32::<4>(m[5]));
        let d4 = _mm512_slli_epi32::<2>(d12);
        [
            _mm512_add_epi32(_mm512_add_epi32(x6, _mm512_slli_epi32::<2>(s12)), s34),
            _mm512_add_epi32(d4, _mm512_slli_epi32::<1>(d34)),
            _mm512_slli_epi32::<2>(_mm512_add_epi32(s12, s34)),
            _mm512_add_epi32(_mm512_add_epi32(d4, _mm512_slli_epi32::<3>(d34)), x24),
        ]
    }
}

/// `S` from `576·S mod 2^32` (exact for `|S| < 2^25`): `9·S mod 2^26` by an arithmetic shift
/// of 6, times the inverse of 9 modulo 2^32, low 26 bits sign-extended.
///
/// # Safety
/// AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn recover(v: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic; the caller's contract.
    unsafe {
        let inv9 = _mm512_set1_epi32(0x38e3_8e39);
        let z = _mm512_mullo_epi32(_mm512_srai_epi32::<6>(v), inv9);
        _mm512_srai_epi32::<6>(_mm512_slli_epi32::<6>(z))
    }
}

/// Output channels `16·b0 .. 16·(b0 + N)` of tiles `t .. t + P`: the 36 element sums, then
/// the output transform and the recovery of `S`, stored for the rows below `x.h` and the
/// pixels in `cols`.
///
/// # Safety
/// As [`row_sums_avx512`]; tiles `t .. t + P` transformed in `tiles` (from tile `t0`), blocks
/// `b0 .. b0 + N` below `cout8 / 16`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn block<const N: usize, const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    ww: &Wino4Weights,
    tiles: &[i16],
    t0: usize,
    t: usize,
    b0: usize,
    y0: usize,
    cols: &Range<usize>,
    out: &mut [i32],
) {
    use std::arch::x86_64::*;
    let (cs, cout8) = (pc.cstride, pc.cout8);
    let half = cs / 2;
    // SAFETY: reads inside tiles (P tiles of 36 · cs values from tile t − t0) and the weights
    // ([36][cs/2][cout8] pairs, lanes below cout8); writes inside out (rows below x.h, pixels
    // in cols, channels below cout8).
    unsafe {
        let mut a = [std::mem::MaybeUninit::<[[__m512i; N]; P]>::uninit(); ELEMENTS];
        for (e, ae) in a.iter_mut().enumerate() {
            let v = tiles.as_ptr().add(((t - t0) * ELEMENTS + e) * cs) as *const i32;
            // The block of lanes 16·b0 .. (b0 is even: blocks of 32 lanes, N = 2, or the last
            // 16, N = 1): element e's [cs/2][lanes] pairs.
            let lanes = BLOCK.min(cout8 - b0 * 16);
            debug_assert!(b0.is_multiple_of(2) && N * 16 <= lanes);
            let w = ww.w.as_ptr().add(weight_at(cs, cout8, e, 0, b0 * 16)) as *const i32;
            let mut acc = [[_mm512_setzero_si512(); N]; P];
            for g in 0..half {
                let wg = w.add(g * lanes);
                let mut wv = [_mm512_setzero_si512(); N];
                for n in 0..N {
                    wv[n] = _mm512_loadu_si512(wg.add(n * 16).cast());
                }
                for p in 0..P {
                    let q = _mm512_set1_epi32(v.add(p * ELEMENTS * half + g).read_unaligned());
                    for n in 0..N {
                        acc[p][n] = _mm512_dpwssd_epi32(acc[p][n], q, wv[n]);
                    }
                }
            }
            ae.write(acc);
        }
        // Every element was written; `MaybeUninit<T>` has the layout of `T`.
        let a = &*(a.as_ptr() as *const [[[__m512i; N]; P]; ELEMENTS]);
        let plane = x.w * cout8;
        let rows = (x.h - y0).min(4);
        for p in 0..P {
            for n in 0..N {
                let m = |k: usize, l: usize| a[k * 6 + l][p][n];
                // A'ᵀ along y for each column l, then along x.
                let c: [[__m512i; 4]; 6] = [
                    at([m(0, 0), m(1, 0), m(2, 0), m(3, 0), m(4, 0), m(5, 0)]),
                    at([m(0, 1), m(1, 1), m(2, 1), m(3, 1), m(4, 1), m(5, 1)]),
                    at([m(0, 2), m(1, 2), m(2, 2), m(3, 2), m(4, 2), m(5, 2)]),
                    at([m(0, 3), m(1, 3), m(2, 3), m(3, 3), m(4, 3), m(5, 3)]),
                    at([m(0, 4), m(1, 4), m(2, 4), m(3, 4), m(4, 4), m(5, 4)]),
                    at([m(0, 5), m(1, 5), m(2, 5), m(3, 5), m(4, 5), m(5, 5)]),
                ];
                for i in 0..rows {
                    let r = at([c[0][i], c[1][i], c[2][i], c[3][i], c[4][i], c[5][i]]);
                    for (j, rj) in r.iter().enumerate() {
                        let xx = 4 * (t + p) + j;
                        if xx >= cols.start && xx < cols.end {
                            let d = out.as_mut_ptr().add(i * plane + xx * cout8 + (b0 + n) * 16);
                            _mm512_storeu_si512(d.cast(), recover(*rj));
                        }
                    }
                }
            }
        }
    }
}
