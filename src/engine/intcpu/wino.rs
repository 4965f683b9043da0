//! Exact integer Winograd F(2,3) along x for 3x3 convs with small weight codes: two output
//! pixels of a row from 4 products per kernel row instead of 6 (1.5x fewer multiplies), the
//! same i32 sums `S` as the direct kernels to the bit.
//!
//! For one kernel row `g0 g1 g2` (centred weight codes) and 4 input codes `d0..d3`:
//!
//! ```text
//!   V0 = d0 − d2 + Q   V1 = d1 + d2   V2 = d2 − d1 + Q   V3 = d1 − d3 + Q     (u8: 0..=2Q)
//!   U0 = 2·g0          U1 = g0+g1+g2  U2 = g0−g1+g2      U3 = 2·g2            (i8)
//!   A_e = Σ over kernel rows and input channels of V_e·U_e                    (i32)
//!   2·S(x)     = A0 + A1 + A2 − Q·(C0 + C2)
//!   2·S(x + 1) = A1 − A2 − A3 + Q·(C2 + C3)       C_e = Σ U_e (per output channel)
//! ```
//!
//! `Q = 2^b − 1` is the largest code: the offsets make every `V` unsigned for `vpmaddubsw`
//! and are taken out again through `C`. Exact whenever `2Q ≤ 255`, every `|U| ≤ 127`, and no
//! `vpmaddubsw` pair sum can saturate (`2Q · max(U⁺_a + U⁺_b, U⁻_a + U⁻_b) ≤ 32767`). The pair
//! sums are accumulated in i16 and widened to i32 where [`WinoWeights::schedule`] says: before
//! a lane's sum could leave i16 (bounded per lane and sign: with codes ≥ 0 a lane's sum lies in
//! `[−vmax·ΣU⁻, vmax·ΣU⁺]`).
//!
//! The transformed inputs are built per padded row ([`build_row`]): for every pair of output
//! columns ("tile"), the 4 values of every channel; an output row reads three of them.
//!
//! Layers whose codes and weights are too wide for `vpmaddubsw` (8-bit codes × 8-bit weights:
//! the upsampler, the tail) use the i16 form ([`WinoWeights16`], [`build_row16`]): the same
//! transform without offsets, `vpmaddwd` on i16 `V` and `U`, i32 sums that cannot overflow
//! (`|V| ≤ 510`, `|U| ≤ 3·128`, at most 3·2048 products).
//!
//! [`Wino2Weights`] / [`build_tiles2`]: F(2x2, 3x3), the same transform along y too (16
//! products per 2x2 pixels). Exact, but slower than F(2,3) on AVX2 at 32–64 channels (its 16
//! elements each end with a widening and feed a 16-to-4 output transform), so opt-in
//! (`ADABM_WINOGRAD=tiles`, [`super::Winograd::Tiles`]).

use std::ops::Range;

use super::{Codes, PackedConv};

/// Transformed weights of one conv.
#[derive(Clone, Debug)]
pub struct WinoWeights {
    /// `[kernel row 3][element 4][cstride/4][cout8][4]` i8.
    pub u8: Vec<i8>,
    /// `C_e` per output channel: `[element 4][cout8]`.
    pub csum: Vec<i32>,
    /// The widening flags for codes of up to `b` bits, `b` = 1..=8 (`flush[b − 1]`; None
    /// where the transform is not exact).
    flush: Vec<Option<Vec<u8>>>,
    /// Unique per set of weights: ties a [`Schedule`] to them.
    id: u64,
}

/// Where the kernel widens its i16 sums, for one conv's weights and one largest code.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub max_code: u32,
    /// `flush[e · 3·groups + j]` is 1 after group `j` of element `e` (and after the last).
    pub flush: Vec<u8>,
    id: u64,
}

impl Schedule {
    /// Whether this schedule was made for `ww`.
    pub fn is_for(&self, ww: &impl Transformed) -> bool {
        self.id == ww.id()
    }
}

/// Transformed weights, each set with its own id.
pub trait Transformed {
    fn id(&self) -> u64;
}

impl Transformed for WinoWeights {
    fn id(&self) -> u64 {
        self.id
    }
}

impl Transformed for Wino2Weights {
    fn id(&self) -> u64 {
        self.id
    }
}

/// The widening flags of a kernel that accumulates, for each of its elements, the
/// `vpmaddubsw` pair sums of `groups` (each `cout8 · 4` i8 weights in the kernel's order) on
/// transformed codes in `0..=vmax`: a flag after the group past which a lane's i16 sum could
/// leave i16, and after each element's last group (`groups` yields the elements one after the
/// other, `per_elem` groups each). None when a single pair sum could saturate.
///
/// The bound is per lane and per sign: with codes `≥ 0` a lane's sum lies in
/// `[−vmax·Σ U⁻, vmax·Σ U⁺]` (`U⁺`, `U⁻`: the positive and negative parts of its weights),
/// much tighter than `vmax·Σ |U|` maximised over the lanes group by group. The i16 adds wrap,
/// so only the sums at the widenings need to fit.
fn flushes<'a>(
    groups: impl Iterator<Item = &'a [i8]>,
    per_elem: usize,
    vmax: i64,
) -> Option<Vec<u8>> {
    let limit = i16::MAX as i64;
    let mut flags: Vec<u8> = Vec::new();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let mut pairs: Vec<(i64, i64)> = Vec::new();
    for (j, gw) in groups.enumerate() {
        if j % per_elem == 0 {
            pos.clear();
            neg.clear();
        }
        pairs.clear();
        pairs.extend(gw.chunks_exact(2).map(|p| {
            let (a, b) = (p[0] as i64, p[1] as i64);
            (a.max(0) + b.max(0), (-a).max(0) + (-b).max(0))
        }));
        if pairs.iter().any(|&(p, n)| vmax * p.max(n) > limit) {
            return None;
        }
        pos.resize(pairs.len(), 0);
        neg.resize(pairs.len(), 0);
        let over = pos
            .iter()
            .zip(&neg)
            .zip(&pairs)
            .any(|((&sp, &sn), &(p, n))| vmax * (sp + p).max(sn + n) > limit);
        if over && j % per_elem != 0 {
            *flags.last_mut().expect("an earlier group") = 1;
            pos.fill(0);
            neg.fill(0);
        }
        for ((sp, sn), &(p, n)) in pos.iter_mut().zip(neg.iter_mut()).zip(&pairs) {
            *sp += p;
            *sn += n;
        }
        flags.push(u8::from((j + 1) % per_elem == 0));
    }
    Some(flags)
}

/// The flush flags for codes of 1..=8 bits (`vmax = mult · (2^b − 1)`; None past 255 or where
/// a pair sum could saturate).
fn flushes_per_bits<'a, I: Iterator<Item = &'a [i8]>>(
    groups: impl Fn() -> I,
    per_elem: usize,
    mult: i64,
) -> Vec<Option<Vec<u8>>> {
    (1..=8)
        .map(|b| {
            let vmax = mult * ((1i64 << b) - 1);
            (vmax <= 255)
                .then(|| flushes(groups(), per_elem, vmax))
                .flatten()
        })
        .collect()
}

/// The schedule for codes up to `max_code` from flags per bit-width (see
/// [`flushes_per_bits`]): those of the smallest width holding `max_code` (a wider width's
/// flags are safe for smaller codes; the offsets use `max_code` itself).
fn schedule_for(flush: &[Option<Vec<u8>>], max_code: u32, id: u64) -> Option<Schedule> {
    let bits = (32 - max_code.leading_zeros()).max(1) as usize;
    let f = flush.get(bits - 1)?.as_ref()?;
    Some(Schedule {
        max_code,
        flush: f.clone(),
        id,
    })
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl WinoWeights {
    /// None when the conv's weights do not fit the transform (8-bit weights in offset form, or a
    /// transformed weight beyond i8).
    pub fn new(pc: &PackedConv) -> Option<Self> {
        if pc.offset {
            return None;
        }
        let (cs, c8) = (pc.cstride, pc.cout8);
        let w = |t: usize, i: usize, o: usize| pc.w8[((t * cs / 4 + i / 4) * c8 + o) * 4 + i % 4];
        let mut u8 = vec![0i8; 3 * 4 * cs * c8];
        let mut csum = vec![0i32; 4 * c8];
        for ky in 0..3 {
            for i in 0..cs {
                for o in 0..c8 {
                    let (g0, g1, g2) = (
                        w(ky * 3, i, o) as i32,
                        w(ky * 3 + 1, i, o) as i32,
                        w(ky * 3 + 2, i, o) as i32,
                    );
                    let u = [2 * g0, g0 + g1 + g2, g0 - g1 + g2, 2 * g2];
                    for (e, &v) in u.iter().enumerate() {
                        if v.abs() > 127 {
                            return None;
                        }
                        u8[(((ky * 4 + e) * cs / 4 + i / 4) * c8 + o) * 4 + i % 4] = v as i8;
                        csum[e * c8 + o] += v;
                    }
                }
            }
        }
        let groups = cs / 4;
        let gb = c8 * 4;
        // The kernel's order: per element, kernel rows, then channel groups.
        let u: &[i8] = &u8;
        let order = || {
            (0..4).flat_map(move |e| {
                (0..3 * groups).map(move |j| {
                    let at = ((j / groups * 4 + e) * groups + j % groups) * gb;
                    &u[at..at + gb]
                })
            })
        };
        let flush = flushes_per_bits(order, 3 * groups, 2);
        Some(Self {
            u8,
            csum,
            flush,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Where the kernel widens its i16 sums for codes up to `max_code` (before the bound of a
    /// lane could leave i16). None when the transform is not exact for such codes.
    pub fn schedule(&self, max_code: u32) -> Option<Schedule> {
        schedule_for(&self.flush, max_code, self.id)
    }
}

/// The transformed inputs an output row `y` reads: padded rows `y`, `y + 1`, `y + 2`, each
/// `[tile][element 4][cstride]` u8 ([`build_row`]).
#[derive(Clone, Copy, Debug)]
pub struct WinoInput<'a> {
    pub rows: [&'a [u8]; 3],
    /// Output pixels per row.
    pub w: usize,
    pub cstride: usize,
    /// The largest code `Q` the offsets were built with.
    pub max_code: u32,
}

/// Length of one transformed row of a map `w` pixels wide with `cstride` codes per pixel.
pub fn row_len(w: usize, cstride: usize) -> usize {
    w.div_ceil(2) * 4 * cstride
}

/// The transformed inputs of padded row `r` of `x` (codes up to `max_code`) into `out`
/// (`tiles · 4 · cstride` bytes). Columns past the padded map count as code 0.
pub fn build_row(x: &Codes, r: usize, max_code: u32, out: &mut [u8]) {
    let q = max_code as u8;
    // Wrapping u8 arithmetic: every result lies in 0..=2Q ≤ 255, so it is exact.
    for_tiles(x, r, out, |d0, d1, d2, d3| {
        [
            d0.wrapping_sub(d2).wrapping_add(q),
            d1.wrapping_add(d2),
            d2.wrapping_sub(d1).wrapping_add(q),
            d1.wrapping_sub(d3).wrapping_add(q),
        ]
    });
}

/// The 4 transformed values of every channel and tile of padded row `r` of `x` into `out`
/// (`[tile][element 4][cstride]`), from the codes `d0..d3` of the tile's 4 input columns
/// (columns past the padded map count as code 0).
#[inline(always)]
fn for_tiles<T: Copy>(x: &Codes, r: usize, out: &mut [T], f: impl Fn(u8, u8, u8, u8) -> [T; 4]) {
    let (cs, wp) = (x.cstride, x.w + 2);
    assert!(
        r < x.h + 2 && out.len() == row_len(x.w, cs),
        "transformed row"
    );
    let zeros = [0u8; 1024];
    assert!(cs <= zeros.len(), "channel stride");
    let row = &x.data[r * wp * cs..(r + 1) * wp * cs];
    let col = |c: usize| -> &[u8] {
        if c < wp {
            &row[c * cs..(c + 1) * cs]
        } else {
            &zeros[..cs]
        }
    };
    for (t, o) in out.chunks_exact_mut(4 * cs).enumerate() {
        let (d0, d1, d2, d3) = (col(2 * t), col(2 * t + 1), col(2 * t + 2), col(2 * t + 3));
        let (v0, rest) = o.split_at_mut(cs);
        let (v1, rest) = rest.split_at_mut(cs);
        let (v2, v3) = rest.split_at_mut(cs);
        for c in 0..cs {
            [v0[c], v1[c], v2[c], v3[c]] = f(d0[c], d1[c], d2[c], d3[c]);
        }
    }
}

/// Transformed weights for the i16 kernel: `[kernel row 3][element 4][cstride/2][cout8][2]`
/// i16, from the weight values the direct `vpmaddwd` kernel uses (`PackedConv::w16`).
#[derive(Clone, Debug)]
pub struct WinoWeights16 {
    pub u16: Vec<i16>,
}

impl WinoWeights16 {
    /// Largest input channel count for which the i32 sums cannot overflow.
    pub const MAX_CIN: usize = 2048;

    pub fn new(pc: &PackedConv) -> Option<Self> {
        if pc.cstride > Self::MAX_CIN {
            return None;
        }
        let (cs, c8) = (pc.cstride, pc.cout8);
        let w = |t: usize, i: usize, o: usize| pc.w16[((t * cs / 2 + i / 2) * c8 + o) * 2 + i % 2];
        let mut u16 = vec![0i16; 3 * 4 * cs * c8];
        for ky in 0..3 {
            for i in 0..cs {
                for o in 0..c8 {
                    let (g0, g1, g2) = (w(ky * 3, i, o), w(ky * 3 + 1, i, o), w(ky * 3 + 2, i, o));
                    let u = [2 * g0, g0 + g1 + g2, g0 - g1 + g2, 2 * g2];
                    for (e, &v) in u.iter().enumerate() {
                        u16[(((ky * 4 + e) * cs / 2 + i / 2) * c8 + o) * 2 + i % 2] = v;
                    }
                }
            }
        }
        Some(Self { u16 })
    }
}

/// [`WinoInput`] for the i16 kernel ([`build_row16`]).
#[derive(Clone, Copy, Debug)]
pub struct WinoInput16<'a> {
    pub rows: [&'a [i16]; 3],
    pub w: usize,
    pub cstride: usize,
}

/// [`build_row`] without offsets, in i16: `V0 = d0 − d2`, `V1 = d1 + d2`, `V2 = d2 − d1`,
/// `V3 = d1 − d3`.
pub fn build_row16(x: &Codes, r: usize, out: &mut [i16]) {
    for_tiles(x, r, out, |d0, d1, d2, d3| {
        let (a, b, c, d) = (d0 as i16, d1 as i16, d2 as i16, d3 as i16);
        [a - c, b + c, c - b, b - d]
    });
}

// ---------------------------------------------------------------------------------------------
// F(2x2, 3x3): the same transform along y as well.

/// `Aᵀ` of F(2,3): output `i` of a tile = `Σ_e AT[i][e] · A_e`.
pub const AT: [[i32; 4]; 2] = [[1, 1, 1, 0], [0, 1, -1, -1]];

/// Element `(1, 1)` (`V = (d1 + d2) ⊗ (d1 + d2)`, in `0..=4Q`) needs no offset; every other
/// element (in `−2Q..=2Q`) gets `2Q`.
const CENTRE: usize = 5;

/// Transformed weights of one conv for F(2x2, 3x3) ([`build_tiles2`], [`Wino2Input`]): 16
/// products per 2x2 output pixels instead of 36 (2.25x fewer multiplies, 1.5x fewer than
/// [`WinoWeights`]).
///
/// For a 4x4 window of codes `d` (padded rows `y .. y + 4`, columns `2t .. 2t + 4`) and the
/// 3x3 kernel `g` (centred weight codes):
///
/// ```text
///   V = Bᵀ d B + offsets     (u8: 0..=4Q; the offset is 2Q except for element (1,1))
///   U = G' g G'ᵀ, G' = [2 0 0; 1 1 1; 1 −1 1; 0 0 2]                     (i8)
///   A_e = Σ over input channels of V_e·U_e                               (i32)
///   4·S(y + i, 2t + j) = Σ_e Aᵀ[i][e_y]·Aᵀ[j][e_x]·A_e − Q·K_ij
/// ```
///
/// with `K_ij = Σ_e Aᵀ[i][e_y]·Aᵀ[j][e_x]·(offset_e / Q)·C_e` and `C_e = Σ U_e` per output
/// channel. Exact whenever `4Q ≤ 255`, every `|U| ≤ 127` and no `vpmaddubsw` pair sum can
/// saturate (`4Q · (|U_a| + |U_b|) ≤ 32767`); the i16 sums are widened on a [`Schedule`].
#[derive(Clone, Debug)]
pub struct Wino2Weights {
    /// `[element 16][cstride/4][cout8][4]` i8, element `e = 4·e_y + e_x`.
    pub u8: Vec<i8>,
    /// `K_ij` per output channel: `[position 2i + j][cout8]`.
    pub kcorr: Vec<i32>,
    /// The widening flags for codes of up to `b` bits (`flush[b − 1]`, see [`WinoWeights`]).
    flush: Vec<Option<Vec<u8>>>,
    id: u64,
}

impl Wino2Weights {
    /// None when the conv's weights do not fit the transform (8-bit weights in offset form, or
    /// a transformed weight beyond i8).
    pub fn new(pc: &PackedConv) -> Option<Self> {
        if pc.offset {
            return None;
        }
        const G: [[i32; 3]; 4] = [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]];
        let (cs, c8) = (pc.cstride, pc.cout8);
        let groups = cs / 4;
        let w = |t: usize, i: usize, o: usize| pc.w8[((t * groups + i / 4) * c8 + o) * 4 + i % 4];
        let mut u8 = vec![0i8; 16 * cs * c8];
        let mut csum = vec![0i32; 16 * c8];
        for i in 0..cs {
            for o in 0..c8 {
                let g: [[i32; 3]; 3] =
                    std::array::from_fn(|ky| std::array::from_fn(|kx| w(ky * 3 + kx, i, o) as i32));
                for e in 0..16 {
                    let (a, b) = (e / 4, e % 4);
                    let mut u = 0;
                    for (ky, gy) in g.iter().enumerate() {
                        for (kx, &v) in gy.iter().enumerate() {
                            u += G[a][ky] * v * G[b][kx];
                        }
                    }
                    if u.abs() > 127 {
                        return None;
                    }
                    u8[((e * groups + i / 4) * c8 + o) * 4 + i % 4] = u as i8;
                    csum[e * c8 + o] += u;
                }
            }
        }
        let mut kcorr = vec![0i32; 4 * c8];
        for (p, k) in kcorr.chunks_exact_mut(c8).enumerate() {
            for e in (0..16).filter(|&e| e != CENTRE) {
                let m = AT[p / 2][e / 4] * AT[p % 2][e % 4];
                for (ko, c) in k.iter_mut().zip(&csum[e * c8..(e + 1) * c8]) {
                    *ko += m * 2 * c;
                }
            }
        }
        let flush = flushes_per_bits(|| u8.chunks_exact(c8 * 4), groups, 4);
        Some(Self {
            u8,
            kcorr,
            flush,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Where the kernel widens its i16 sums for codes up to `max_code`; None when the
    /// transform is not exact for such codes (`4Q > 255`, or a pair sum could saturate).
    pub fn schedule(&self, max_code: u32) -> Option<Schedule> {
        schedule_for(&self.flush, max_code, self.id)
    }
}

/// The transformed inputs of tiles `t0 .. t0 + tiles` of the output row pair `y, y + 1`
/// ([`build_tiles2`]).
#[derive(Clone, Copy, Debug)]
pub struct Wino2Input<'a> {
    /// `[tile][element 16][cstride]` u8.
    pub data: &'a [u8],
    pub t0: usize,
    pub tiles: usize,
    /// Output pixels per row.
    pub w: usize,
    pub cstride: usize,
    /// The largest code `Q` the offsets were built with.
    pub max_code: u32,
}

/// Bytes of the transformed inputs of `tiles` tiles with `cstride` codes per pixel.
pub fn tiles2_len(tiles: usize, cstride: usize) -> usize {
    tiles * 16 * cstride
}

/// The transformed inputs of tiles `tiles` (pairs of output columns) of output rows `y` and
/// `y + 1` of `x` (codes up to `max_code`) into `out` (`[tile][element 16][cstride]`). Rows
/// and columns past the padded map count as code 0.
pub fn build_tiles2(x: &Codes, y: usize, tiles: Range<usize>, max_code: u32, out: &mut [u8]) {
    let (cs, wp) = (x.cstride, x.w + 2);
    assert!(
        y < x.h && tiles.end <= x.w.div_ceil(2) && out.len() == tiles2_len(tiles.len(), cs),
        "transformed tiles"
    );
    const MAX_CS: usize = 1024;
    assert!(cs <= MAX_CS, "channel stride");
    let zeros = [0u8; MAX_CS];
    let px = |r: usize, c: usize| -> &[u8] {
        if r < x.h + 2 && c < wp {
            &x.data[(r * wp + c) * cs..][..cs]
        } else {
            &zeros[..cs]
        }
    };
    // The y transform of the 4 columns a tile reads, in slots `column % 4`: consecutive tiles
    // share two columns. `[slot][element 4][cstride]` (a per-thread buffer: no 16 KB memset
    // per call).
    thread_local! {
        static TY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TY.with(|cell| {
        let mut ty = cell.borrow_mut();
        ty.resize(16 * cs, 0);
        let ty = &mut ty[..];
        let col_y = |c: usize, ty: &mut [u8]| {
            let [d0, d1, d2, d3] = [0, 1, 2, 3].map(|r| px(y + r, c));
            let t = &mut ty[(c % 4) * 4 * cs..][..4 * cs];
            let (t0, rest) = t.split_at_mut(cs);
            let (t1, rest) = rest.split_at_mut(cs);
            let (t2, t3) = rest.split_at_mut(cs);
            zip2(t0, d0, d2, |a, b| a.wrapping_sub(b));
            zip2(t1, d1, d2, |a, b| a.wrapping_add(b));
            zip2(t2, d2, d1, |a, b| a.wrapping_sub(b));
            zip2(t3, d1, d3, |a, b| a.wrapping_sub(b));
        };
        let q2 = (2 * max_code) as u8;
        // Wrapping u8 arithmetic: every final value lies in 0..=4Q ≤ 255, so it is exact.
        for (k, (t, o)) in tiles.zip(out.chunks_exact_mut(16 * cs)).enumerate() {
            for c in if k == 0 {
                2 * t..2 * t + 4
            } else {
                2 * t + 2..2 * t + 4
            } {
                col_y(c, ty);
            }
            let at = |j: usize, a: usize| &ty[(((2 * t + j) % 4) * 4 + a) * cs..][..cs];
            for (a, oa) in o.chunks_exact_mut(4 * cs).enumerate() {
                let (v0, rest) = oa.split_at_mut(cs);
                let (v1, rest) = rest.split_at_mut(cs);
                let (v2, v3) = rest.split_at_mut(cs);
                let off = if a == 1 { 0 } else { q2 };
                zip2(v0, at(0, a), at(2, a), |p, q| {
                    p.wrapping_sub(q).wrapping_add(q2)
                });
                zip2(v1, at(1, a), at(2, a), |p, q| {
                    p.wrapping_add(q).wrapping_add(off)
                });
                zip2(v2, at(2, a), at(1, a), |p, q| {
                    p.wrapping_sub(q).wrapping_add(q2)
                });
                zip2(v3, at(1, a), at(3, a), |p, q| {
                    p.wrapping_sub(q).wrapping_add(q2)
                });
            }
        }
    })
}

/// `out[i] = f(a[i], b[i])` (equal lengths; a loop the compiler vectorises).
#[inline(always)]
fn zip2(out: &mut [u8], a: &[u8], b: &[u8], f: impl Fn(u8, u8) -> u8) {
    for ((o, &p), &q) in out.iter_mut().zip(a).zip(b) {
        *o = f(p, q);
    }
}
