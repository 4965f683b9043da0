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
//! Written once over the vector width ([`Wide`]) and the pair product ([`PairDot`]): AVX-512
//! VNNI (`vpdpwssd` on 512-bit registers), AVX-VNNI (`vpdpwssd` on 256-bit ones) and AVX2
//! (`vpmaddwd` + `vpaddd`, the same sums modulo 2^32 — where, with 2.25 instead of 6
//! multiplies per output of F(2,3), it also runs the 4-bit convs the u8 transforms cover at
//! the VNNI levels); used by the fused path of fq models and by the non-fq integer engine.
//! The sums are those of [`super::row_sums`] before its offset correction, bit for bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
#[cfg(target_arch = "x86_64")]
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::Codes;
use super::PackedConv;

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

/// The vector operations the F(4x4, 3x3) kernel is written over, once for 512-bit registers
/// ([`Zmm`]) and once for 256-bit ones ([`Ymm`]); the pair products come from a [`PairDot`]:
/// `vpdpwssd` (AVX-512 VNNI, AVX-VNNI) or AVX2's `vpmaddwd` + `vpaddd` (the same i32 sums
/// modulo 2^32 — the pair sums cannot wrap: `2 · 25,500 · 6,272 < 2^31`). Implementations are
/// called only from the `#[target_feature]` entry points of their level.
#[cfg(target_arch = "x86_64")]
trait Wide: Copy {
    /// i32 lanes per vector (two i16 per lane).
    const LANES: usize;
    unsafe fn zero() -> Self;
    /// `2 · LANES` codes as i16.
    unsafe fn codes16(p: *const u8) -> Self;
    unsafe fn store(p: *mut u8, v: Self);
    unsafe fn load(p: *const u8) -> Self;
    unsafe fn set1(v: i32) -> Self;
    unsafe fn add16(a: Self, b: Self) -> Self;
    unsafe fn sub16(a: Self, b: Self) -> Self;
    /// `v << k` on i16 lanes, k ≤ 2.
    unsafe fn shl16(v: Self, k: u32) -> Self;
    unsafe fn add32(a: Self, b: Self) -> Self;
    unsafe fn sub32(a: Self, b: Self) -> Self;
    /// `v << k` on i32 lanes, k ≤ 6.
    unsafe fn shl32(v: Self, k: u32) -> Self;
    /// `v >> 6` on i32 lanes, arithmetic.
    unsafe fn sra6(v: Self) -> Self;
    /// The low 32 bits of `a · b` on i32 lanes.
    unsafe fn mullo32(a: Self, b: Self) -> Self;
    /// [`block`] of the output lanes `lane0 .. lane0 + lanes` (one weight block) and as many
    /// tiles from `t` as the register blocking takes (at most `left`); returns how many.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block_at<D: PairDot<Self>>(
        x: &Codes,
        pc: &PackedConv,
        ww: &Wino4Weights,
        tiles: &[i16],
        tl: Tiles,
        lane0: usize,
        y0: usize,
        cols: &Range<usize>,
        out: &mut [i32],
    ) -> usize;
}

/// Which tiles a [`block`] call takes: `t .. t + P` of the transformed tiles from `t0`, `left`
/// of them before the end of the row's chunk.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Tiles {
    t0: usize,
    t: usize,
    left: usize,
}

/// 512-bit registers (AVX-512 F/BW/VNNI).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Zmm(std::arch::x86_64::__m512i);

/// 256-bit registers (AVX2).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Ymm(std::arch::x86_64::__m256i);

/// The shift intrinsics take their count as a constant: `$f::<k>` for the counts used.
#[cfg(target_arch = "x86_64")]
macro_rules! shift {
    ($f:ident, $v:expr, $k:expr) => {
        match $k {
            1 => $f::<1>($v),
            2 => $f::<2>($v),
            3 => $f::<3>($v),
            4 => $f::<4>($v),
            6 => $f::<6>($v),
            _ => unreachable!("shift count"),
        }
    };
}

/// The element-wise methods of [`Wide`]: the same for both widths but for the intrinsics.
#[cfg(target_arch = "x86_64")]
macro_rules! lane_ops {
    (
        $zero:ident, $set1:ident, $load:ident, $store:ident, $add16:ident, $sub16:ident,
        $sll16:ident, $add32:ident, $sub32:ident, $sll32:ident, $sra32:ident, $mullo32:ident
    ) => {
        // SAFETY (every method): the instructions of the implementing width, enabled by the
        // entry points that call them; loads and stores of one vector at the caller's
        // pointers.
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { Self($zero()) }
        }
        #[inline(always)]
        unsafe fn set1(v: i32) -> Self {
            unsafe { Self($set1(v)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const u8) -> Self {
            unsafe { Self($load(p.cast())) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut u8, v: Self) {
            unsafe { $store(p.cast(), v.0) }
        }
        #[inline(always)]
        unsafe fn add16(a: Self, b: Self) -> Self {
            unsafe { Self($add16(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn sub16(a: Self, b: Self) -> Self {
            unsafe { Self($sub16(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn shl16(v: Self, k: u32) -> Self {
            unsafe { Self(shift!($sll16, v.0, k)) }
        }
        #[inline(always)]
        unsafe fn add32(a: Self, b: Self) -> Self {
            unsafe { Self($add32(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn sub32(a: Self, b: Self) -> Self {
            unsafe { Self($sub32(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn shl32(v: Self, k: u32) -> Self {
            unsafe { Self(shift!($sll32, v.0, k)) }
        }
        #[inline(always)]
        unsafe fn sra6(v: Self) -> Self {
            unsafe { Self($sra32::<6>(v.0)) }
        }
        #[inline(always)]
        unsafe fn mullo32(a: Self, b: Self) -> Self {
            unsafe { Self($mullo32(a.0, b.0)) }
        }
    };
}

#[cfg(target_arch = "x86_64")]
impl Wide for Zmm {
    const LANES: usize = 16;
    lane_ops!(
        _mm512_setzero_si512,
        _mm512_set1_epi32,
        _mm512_loadu_si512,
        _mm512_storeu_si512,
        _mm512_add_epi16,
        _mm512_sub_epi16,
        _mm512_slli_epi16,
        _mm512_add_epi32,
        _mm512_sub_epi32,
        _mm512_slli_epi32,
        _mm512_srai_epi32,
        _mm512_mullo_epi32
    );
    #[inline(always)]
    unsafe fn codes16(p: *const u8) -> Self {
        // SAFETY: AVX-512 BW; 32 bytes at the caller's pointer.
        unsafe { Self(_mm512_cvtepu8_epi16(_mm256_loadu_si256(p.cast()))) }
    }
    #[inline(always)]
    unsafe fn block_at<D: PairDot<Self>>(
        x: &Codes,
        pc: &PackedConv,
        ww: &Wino4Weights,
        tiles: &[i16],
        tl: Tiles,
        lane0: usize,
        y0: usize,
        cols: &Range<usize>,
        out: &mut [i32],
    ) -> usize {
        // Blocks of 32 lanes in two registers (the last block of 16: one), 4 tiles per weight
        // load.
        // SAFETY: forwarded contract.
        unsafe {
            match (BLOCK.min(pc.cout8 - lane0) / 16, tl.left >= 4) {
                (2, true) => block::<Self, D, 2, 4>(x, pc, ww, tiles, tl, lane0, y0, cols, out),
                (2, false) => block::<Self, D, 2, 1>(x, pc, ww, tiles, tl, lane0, y0, cols, out),
                (_, true) => block::<Self, D, 1, 4>(x, pc, ww, tiles, tl, lane0, y0, cols, out),
                (_, false) => block::<Self, D, 1, 1>(x, pc, ww, tiles, tl, lane0, y0, cols, out),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Wide for Ymm {
    const LANES: usize = 8;
    lane_ops!(
        _mm256_setzero_si256,
        _mm256_set1_epi32,
        _mm256_loadu_si256,
        _mm256_storeu_si256,
        _mm256_add_epi16,
        _mm256_sub_epi16,
        _mm256_slli_epi16,
        _mm256_add_epi32,
        _mm256_sub_epi32,
        _mm256_slli_epi32,
        _mm256_srai_epi32,
        _mm256_mullo_epi32
    );
    #[inline(always)]
    unsafe fn codes16(p: *const u8) -> Self {
        // SAFETY: AVX2; 16 bytes at the caller's pointer.
        unsafe { Self(_mm256_cvtepu8_epi16(_mm_loadu_si128(p.cast()))) }
    }
    #[inline(always)]
    unsafe fn block_at<D: PairDot<Self>>(
        x: &Codes,
        pc: &PackedConv,
        ww: &Wino4Weights,
        tiles: &[i16],
        tl: Tiles,
        lane0: usize,
        y0: usize,
        cols: &Range<usize>,
        out: &mut [i32],
    ) -> usize {
        // Blocks of 32 lanes in four registers (the last block of 16: two), 2 tiles per weight
        // load (16 registers).
        // SAFETY: forwarded contract.
        unsafe {
            match (BLOCK.min(pc.cout8 - lane0) / 8, tl.left >= 2) {
                (4, true) => block::<Self, D, 4, 2>(x, pc, ww, tiles, tl, lane0, y0, cols, out),
                (4, false) => block::<Self, D, 4, 1>(x, pc, ww, tiles, tl, lane0, y0, cols, out),
                (_, true) => block::<Self, D, 2, 2>(x, pc, ww, tiles, tl, lane0, y0, cols, out),
                (_, false) => block::<Self, D, 2, 1>(x, pc, ww, tiles, tl, lane0, y0, cols, out),
            }
        }
    }
}

/// `S` from `576·S mod 2^32` (exact for `|S| < 2^25`): `9·S mod 2^26` by an arithmetic shift
/// of 6, times the inverse of 9 modulo 2^32, low 26 bits sign-extended.
///
/// # Safety
/// `W`'s instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn recover<W: Wide>(v: W) -> W {
    // SAFETY: register arithmetic; the caller's contract.
    unsafe {
        let z = W::mullo32(W::sra6(v), W::set1(INV9));
        W::sra6(W::shl32(z, 6))
    }
}

/// `acc + a₀·b₀ + a₁·b₁` per i32 lane of i16 pairs, wrapping: the instruction that differs
/// between the levels of one width.
#[cfg(target_arch = "x86_64")]
trait PairDot<W> {
    /// # Safety
    /// The instruction's features (called only from the entry points that enable them).
    unsafe fn dot(acc: W, a: W, b: W) -> W;
}

/// `vpdpwssd`: the EVEX form on 512-bit registers (AVX-512 VNNI), the VEX form on 256-bit
/// ones (AVX-VNNI).
#[cfg(target_arch = "x86_64")]
struct Vpdpwssd;

/// AVX2's `vpmaddwd` + `vpaddd`: the same sums as `vpdpwssd` (the pair sum cannot wrap).
#[cfg(target_arch = "x86_64")]
struct Madd;

#[cfg(target_arch = "x86_64")]
impl PairDot<Zmm> for Vpdpwssd {
    #[inline(always)]
    unsafe fn dot(acc: Zmm, a: Zmm, b: Zmm) -> Zmm {
        // SAFETY: AVX-512 VNNI per the contract.
        unsafe { Zmm(_mm512_dpwssd_epi32(acc.0, a.0, b.0)) }
    }
}

#[cfg(target_arch = "x86_64")]
impl PairDot<Ymm> for Vpdpwssd {
    #[inline(always)]
    unsafe fn dot(acc: Ymm, a: Ymm, b: Ymm) -> Ymm {
        // SAFETY: AVX-VNNI per the contract.
        unsafe { Ymm(_mm256_dpwssd_avx_epi32(acc.0, a.0, b.0)) }
    }
}

#[cfg(target_arch = "x86_64")]
impl PairDot<Ymm> for Madd {
    #[inline(always)]
    unsafe fn dot(acc: Ymm, a: Ymm, b: Ymm) -> Ymm {
        // SAFETY: AVX2 per the contract.
        unsafe { Ymm(_mm256_add_epi32(acc.0, _mm256_madd_epi16(a.0, b.0))) }
    }
}

/// The inverse of 9 modulo 2^32.
#[cfg(target_arch = "x86_64")]
const INV9: i32 = 0x38e3_8e39;

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
    // SAFETY: forwarded contract.
    unsafe { sums::<Zmm, Vpdpwssd>(x, pc, ww, y0, cols, tiles, out) }
}

/// [`row_sums_avx512`] on AVX2: the same sums on 256-bit registers (`vpmaddwd` + `vpaddd`).
///
/// # Safety
/// The CPU must support AVX2; otherwise as [`row_sums_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn row_sums_avx2(
    x: &Codes,
    pc: &PackedConv,
    ww: &Wino4Weights,
    y0: usize,
    cols: Range<usize>,
    tiles: &mut [i16],
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { sums::<Ymm, Madd>(x, pc, ww, y0, cols, tiles, out) }
}

/// [`row_sums_avx512`] at AVX-VNNI: 256-bit registers with the VEX `vpdpwssd`.
///
/// # Safety
/// The CPU must support AVX2 and AVX-VNNI; otherwise as [`row_sums_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
pub(super) unsafe fn row_sums_avxvnni(
    x: &Codes,
    pc: &PackedConv,
    ww: &Wino4Weights,
    y0: usize,
    cols: Range<usize>,
    tiles: &mut [i16],
    out: &mut [i32],
) {
    // SAFETY: forwarded contract.
    unsafe { sums::<Ymm, Vpdpwssd>(x, pc, ww, y0, cols, tiles, out) }
}

/// The kernel on `W`'s registers: the tiles' input transforms, then every weight block
/// against the tiles.
///
/// # Safety
/// As the entry points; inlined into them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sums<W: Wide, D: PairDot<W>>(
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
            input::<W>(x, y0, t, &mut tiles[(t - t0) * ELEMENTS * pc.cstride..]);
        }
        for lane0 in (0..pc.cout8).step_by(BLOCK) {
            let mut t = t0;
            while t < t1 {
                let tl = Tiles {
                    t0,
                    t,
                    left: t1 - t,
                };
                t += W::block_at::<D>(x, pc, ww, tiles, tl, lane0, y0, &cols, out);
            }
        }
    }
}

/// `Bᵀ d` of six vectors (rows of Lavin's F(4,3) `Bᵀ`: 4 0 −5 0 1 0 / 0 −4 −4 1 1 0 /
/// 0 4 −4 −1 1 0 / 0 −2 −1 2 1 0 / 0 2 −1 −2 1 0 / 0 4 0 −5 0 1), on i16 lanes.
///
/// # Safety
/// `W`'s instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn bt<W: Wide>(d: [W; 6]) -> [W; 6] {
    // SAFETY: register arithmetic; the caller's contract. (No closures: they would not get
    // the caller's target features.)
    unsafe {
        let p = W::sub16(d[4], W::shl16(d[2], 2));
        let q = W::sub16(d[3], W::shl16(d[1], 2));
        let s = W::sub16(d[4], d[2]);
        let u = W::shl16(W::sub16(d[3], d[1]), 1);
        [
            W::add16(W::sub16(W::shl16(d[0], 2), times5(d[2])), d[4]),
            W::add16(p, q),
            W::sub16(p, q),
            W::add16(s, u),
            W::sub16(s, u),
            W::add16(W::sub16(W::shl16(d[1], 2), times5(d[3])), d[5]),
        ]
    }
}

/// `5·v` on i16 lanes.
///
/// # Safety
/// `W`'s instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn times5<W: Wide>(v: W) -> W {
    // SAFETY: register arithmetic; the caller's contract.
    unsafe { W::add16(W::shl16(v, 2), v) }
}

/// Codes `g .. g + 2·W::LANES` of the padded map's pixel (`yy`, `xx`) as i16, zero outside the
/// map.
///
/// # Safety
/// `W`'s instructions; `g + 2·W::LANES ≤ x.cstride`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn codes16<W: Wide>(x: &Codes, yy: usize, xx: usize, g: usize) -> W {
    let wp = x.w + 2;
    // SAFETY: an in-map pixel's codes from channel g; the caller's contract.
    unsafe {
        if yy < x.h + 2 && xx < wp {
            W::codes16(x.data.as_ptr().add((yy * wp + xx) * x.cstride + g))
        } else {
            W::zero()
        }
    }
}

/// The transformed tile `t` of output rows `y0 .. y0 + 4`: `V = Bᵀ d B` of the padded map's
/// rows `y0 .. y0 + 6` and columns `4t .. 4t + 6` (zero outside the map), `[36][cstride]` i16
/// into `out`.
///
/// # Safety
/// `W`'s instructions; `out` holds `36 · cstride` values; `x.cstride` a multiple of 32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register arrays indexed in lockstep
unsafe fn input<W: Wide>(x: &Codes, y0: usize, t: usize, out: &mut [i16]) {
    let cs = x.cstride;
    debug_assert!(out.len() >= ELEMENTS * cs && cs.is_multiple_of(32));
    // SAFETY: loads at in-map positions, `2·W::LANES` bytes each; stores inside
    // out[..36 · cs].
    unsafe {
        for g in (0..cs).step_by(2 * W::LANES) {
            // Columns first: Bᵀ along y for each of the 6 columns.
            let mut cols = [[W::zero(); 6]; 6];
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
                    W::store(out.as_mut_ptr().add((k * 6 + l) * cs + g).cast(), *vl);
                }
            }
        }
    }
}

/// `A'ᵀ m` of six vectors (`A'ᵀ = Aᵀ·diag(6, 4, 4, 1, 1, 24)`: rows 6 4 4 1 1 0 /
/// 0 4 −4 2 −2 0 / 0 4 4 4 4 0 / 0 4 −4 8 −8 24), i32 lanes, wrapping.
///
/// # Safety
/// `W`'s instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn at<W: Wide>(m: [W; 6]) -> [W; 4] {
    // SAFETY: register arithmetic; the caller's contract.
    unsafe {
        let s12 = W::add32(m[1], m[2]);
        let d12 = W::sub32(m[1], m[2]);
        let s34 = W::add32(m[3], m[4]);
        let d34 = W::sub32(m[3], m[4]);
        let x6 = W::add32(W::shl32(m[0], 1), W::shl32(m[0], 2));
        let x24 = W::add32(W::shl32(m[5], 3), W::shl32(m[5], 4));
        let d4 = W::shl32(d12, 2);
        [
            W::add32(W::add32(x6, W::shl32(s12, 2)), s34),
            W::add32(d4, W::shl32(d34, 1)),
            W::shl32(W::add32(s12, s34), 2),
            W::add32(W::add32(d4, W::shl32(d34, 3)), x24),
        ]
    }
}

/// Output lanes `lane0 .. lane0 + N·W::LANES` (inside one weight block) of tiles
/// `tl.t .. tl.t + P`: the 36 element sums, then the output transform and the recovery of
/// `S`, stored for the rows below `x.h` and the pixels in `cols`. Returns `P`.
///
/// # Safety
/// As the entry points; tiles `tl.t .. tl.t + P` transformed in `tiles` (from tile `tl.t0`),
/// `lane0` a multiple of [`BLOCK`], `N·W::LANES` at most the block's lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn block<W: Wide, D: PairDot<W>, const N: usize, const P: usize>(
    x: &Codes,
    pc: &PackedConv,
    ww: &Wino4Weights,
    tiles: &[i16],
    tl: Tiles,
    lane0: usize,
    y0: usize,
    cols: &Range<usize>,
    out: &mut [i32],
) -> usize {
    let (cs, cout8) = (pc.cstride, pc.cout8);
    let half = cs / 2;
    let Tiles { t0, t, .. } = tl;
    // SAFETY: reads inside tiles (P tiles of 36 · cs values from tile t − t0) and the weights
    // ([36][cs/2][lanes] pairs of the block), writes inside out (rows below x.h, pixels in
    // cols, lanes below cout8).
    unsafe {
        let lanes = BLOCK.min(cout8 - lane0);
        debug_assert!(lane0.is_multiple_of(BLOCK) && N * W::LANES <= lanes);
        let mut a = [std::mem::MaybeUninit::<[[W; N]; P]>::uninit(); ELEMENTS];
        for (e, ae) in a.iter_mut().enumerate() {
            let v = tiles.as_ptr().add(((t - t0) * ELEMENTS + e) * cs) as *const i32;
            // Element e's [cs/2][lanes] pairs of the block.
            let w = ww.w.as_ptr().add(weight_at(cs, cout8, e, 0, lane0)) as *const i32;
            let mut acc = [[W::zero(); N]; P];
            for g in 0..half {
                let wg = w.add(g * lanes);
                let mut wv = [W::zero(); N];
                for n in 0..N {
                    wv[n] = W::load(wg.add(n * W::LANES).cast());
                }
                for p in 0..P {
                    let q = W::set1(v.add(p * ELEMENTS * half + g).read_unaligned());
                    for n in 0..N {
                        acc[p][n] = D::dot(acc[p][n], q, wv[n]);
                    }
                }
            }
            ae.write(acc);
        }
        // Every element was written; `MaybeUninit<T>` has the layout of `T`.
        let a = &*(a.as_ptr() as *const [[[W; N]; P]; ELEMENTS]);
        let plane = x.w * cout8;
        let rows = (x.h - y0).min(4);
        for p in 0..P {
            for n in 0..N {
                let m = |k: usize, l: usize| a[k * 6 + l][p][n];
                // A'ᵀ along y for each column l, then along x.
                let c: [[W; 4]; 6] = [
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
                            let d = out
                                .as_mut_ptr()
                                .add(i * plane + xx * cout8 + lane0 + n * W::LANES);
                            W::store(d.cast(), recover(*rj));
                        }
                    }
                }
            }
        }
    }
    P
}
