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
//! products per 2x2 pixels), with i32 sums (`vpdpbusd`): the default at AVX-512 VNNI
//! ([`super::Winograd::Tiles`]). (An AVX2 form with i16 sums widened on a schedule was
//! slower than F(2,3) end to end there; since session 21 AVX2 runs F(4x4, 3x3) on i16
//! instead, [`super::wino4`], whose kernel is 1.4–2.2x faster than either on EDSR-baseline's
//! body conv.)

use std::ops::Range;

use super::{Codes, CpuLevel, PackedConv};

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

/// `$f::<L>(args, c0)` for consecutive blocks of channels `c0 .. c0 + L` covering `0..$cs`
/// (a multiple of 4): blocks of 64, then 32, 16 and 4. The transforms work on fixed-size
/// blocks so that each step is a few whole vectors (a loop over a whole 64-byte channel
/// stride is vectorised for long slices only and ran its 8-byte remainder loop).
macro_rules! channel_blocks {
    ($cs:expr, $f:ident($($a:expr),*)) => {{
        let cs: usize = $cs;
        let mut c0 = 0;
        while cs - c0 >= 64 {
            $f::<64>($($a,)* c0);
            c0 += 64;
        }
        if cs - c0 >= 32 {
            $f::<32>($($a,)* c0);
            c0 += 32;
        }
        if cs - c0 >= 16 {
            $f::<16>($($a,)* c0);
            c0 += 16;
        }
        while c0 < cs {
            $f::<4>($($a,)* c0);
            c0 += 4;
        }
    }};
}

/// The transformed inputs of padded row `r` of `x` (codes up to `max_code`) into `out`
/// (`tiles · 4 · cstride` bytes, `[tile][element 4][cstride]`). Columns past the padded map
/// count as code 0. Compiled for the widest vectors of `level` (the values do not depend on
/// it).
pub fn build_row(level: CpuLevel, x: &Codes, r: usize, max_code: u32, out: &mut [u8]) {
    check_row(x, r, out.len());
    row8_at(level, x, r, max_code as u8, out);
}

/// [`build_row`]'s body: `V0 = d0 − d2 + Q`, `V1 = d1 + d2`, `V2 = d2 − d1 + Q`,
/// `V3 = d1 − d3 + Q` from the codes `d0..d3` of a tile's 4 input columns.
#[inline(always)]
fn row8(x: &Codes, r: usize, q: u8, out: &mut [u8]) {
    channel_blocks!(x.cstride, row8_block(x, r, q, out));
}

/// [`row8`] for channels `c0 .. c0 + L`.
#[inline(always)]
fn row8_block<const L: usize>(x: &Codes, r: usize, q: u8, out: &mut [u8], c0: usize) {
    let cs = x.cstride;
    let (mut d0, mut d1) = (load::<L>(x, r, 0, c0), load::<L>(x, r, 1, c0));
    for t in 0..out.len() / (4 * cs) {
        let (d2, d3) = (
            load::<L>(x, r, 2 * t + 2, c0),
            load::<L>(x, r, 2 * t + 3, c0),
        );
        let o = &mut out[t * 4 * cs + c0..];
        // Wrapping u8 arithmetic: every result lies in 0..=2Q ≤ 255, so it is exact.
        put(o, 0, sub_add(d0, d2, q));
        put(o, cs, add_add(d1, d2, 0));
        put(o, 2 * cs, sub_add(d2, d1, q));
        put(o, 3 * cs, sub_add(d1, d3, q));
        (d0, d1) = (d2, d3);
    }
}

/// Asserts that `out_len` is the length of a transformed row `r` of `x`.
fn check_row(x: &Codes, r: usize, out_len: usize) {
    assert!(
        r < x.h + 2 && out_len == row_len(x.w, x.cstride) && x.cstride.is_multiple_of(4),
        "transformed row"
    );
}

/// Codes `c0 .. c0 + L` of padded pixel `(r, c)` of `x`; zeros past the padded map.
#[inline(always)]
fn load<const L: usize>(x: &Codes, r: usize, c: usize, c0: usize) -> [u8; L] {
    let wp = x.w + 2;
    if r < x.h + 2 && c < wp {
        let at = (r * wp + c) * x.cstride + c0;
        assert!(at + L <= x.data.len(), "codes in the map");
        // SAFETY: the L bytes from `at` are inside x.data (just checked); [u8; L] has
        // alignment 1. (One check instead of a slice's three: this is the transforms' inner
        // loop.)
        unsafe { (x.data.as_ptr().add(at) as *const [u8; L]).read() }
    } else {
        [0; L]
    }
}

/// Stores `v` at `out[at ..]`.
#[inline(always)]
fn put<T: Copy, const L: usize>(out: &mut [T], at: usize, v: [T; L]) {
    assert!(at + L <= out.len(), "inside the transformed data");
    // SAFETY: the L elements from `at` are inside out (just checked); `[T; L]` has the
    // alignment of T.
    unsafe { (out.as_mut_ptr().add(at) as *mut [T; L]).write(v) }
}

/// `a − b + k` per element (wrapping u8).
#[inline(always)]
fn sub_add<const L: usize>(a: [u8; L], b: [u8; L], k: u8) -> [u8; L] {
    let mut o = [0; L];
    for i in 0..L {
        o[i] = a[i].wrapping_sub(b[i]).wrapping_add(k);
    }
    o
}

/// `a + b + k` per element (wrapping u8).
#[inline(always)]
fn add_add<const L: usize>(a: [u8; L], b: [u8; L], k: u8) -> [u8; L] {
    let mut o = [0; L];
    for i in 0..L {
        o[i] = a[i].wrapping_add(b[i]).wrapping_add(k);
    }
    o
}

/// `a − b` per element in i16.
#[inline(always)]
fn sub16<const L: usize>(a: [u8; L], b: [u8; L]) -> [i16; L] {
    let mut o = [0; L];
    for i in 0..L {
        o[i] = a[i] as i16 - b[i] as i16;
    }
    o
}

/// `a + b` per element in i16.
#[inline(always)]
fn add16<const L: usize>(a: [u8; L], b: [u8; L]) -> [i16; L] {
    let mut o = [0; L];
    for i in 0..L {
        o[i] = a[i] as i16 + b[i] as i16;
    }
    o
}

/// `fn $name(level, args)`: `$body(args)` (an `#[inline(always)]` function whose loops the
/// compiler vectorises) compiled with the vector instructions of `level` — AVX-512 BW at the
/// AVX-512 VNNI level, AVX2 at the other levels from AVX2 up, plain code at the scalar level
/// (the transforms' loops ran on 128-bit SSE2 otherwise, a quarter of Zen 4's width).
macro_rules! multiversion {
    ($name:ident($($a:ident: $t:ty),*) => $body:ident) => {
        fn $name(level: CpuLevel, $($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,avx512f,avx512bw")]
                unsafe fn w512($($a: $t),*) {
                    $body($($a),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn w256($($a: $t),*) {
                    $body($($a),*)
                }
                if level >= CpuLevel::Avx512Vnni {
                    // SAFETY: that level is only chosen where AVX-512 F/BW/VL/VNNI are
                    // (`CpuLevel::supported`).
                    return unsafe { w512($($a),*) };
                } else if level >= CpuLevel::Avx2 {
                    // SAFETY: every level from AVX2 up needs AVX2.
                    return unsafe { w256($($a),*) };
                }
            }
            // Other architectures have the scalar level only (their vector unit is the
            // baseline's: NEON on aarch64).
            let _ = level;
            $body($($a),*)
        }
    };
}

multiversion!(row8_at(x: &Codes, r: usize, q: u8, out: &mut [u8]) => row8);
multiversion!(row16_at(x: &Codes, r: usize, out: &mut [i16]) => row16);
multiversion!(tiles2_at(x: &Codes, y: usize, tiles: Range<usize>, q2: u8, out: &mut [u8]) => tiles2);

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
pub fn build_row16(level: CpuLevel, x: &Codes, r: usize, out: &mut [i16]) {
    check_row(x, r, out.len());
    row16_at(level, x, r, out);
}

/// [`build_row16`]'s body.
#[inline(always)]
fn row16(x: &Codes, r: usize, out: &mut [i16]) {
    channel_blocks!(x.cstride, row16_block(x, r, out));
}

/// [`row16`] for channels `c0 .. c0 + L`.
#[inline(always)]
fn row16_block<const L: usize>(x: &Codes, r: usize, out: &mut [i16], c0: usize) {
    let cs = x.cstride;
    let (mut d0, mut d1) = (load::<L>(x, r, 0, c0), load::<L>(x, r, 1, c0));
    for t in 0..out.len() / (4 * cs) {
        let (d2, d3) = (
            load::<L>(x, r, 2 * t + 2, c0),
            load::<L>(x, r, 2 * t + 3, c0),
        );
        let o = &mut out[t * 4 * cs + c0..];
        put(o, 0, sub16(d0, d2));
        put(o, cs, add16(d1, d2));
        put(o, 2 * cs, sub16(d2, d1));
        put(o, 3 * cs, sub16(d1, d3));
        (d0, d1) = (d2, d3);
    }
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
/// channel. Exact with i32 sums whenever `4Q ≤ 255` and every `|U| ≤ 127`.
#[derive(Clone, Debug)]
pub struct Wino2Weights {
    /// `[element 16][cstride/4][cout8][4]` i8, element `e = 4·e_y + e_x`.
    pub u8: Vec<i8>,
    /// `K_ij` per output channel: `[position 2i + j][cout8]`.
    pub kcorr: Vec<i32>,
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
        Some(Self { u8, kcorr })
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
/// and columns past the padded map count as code 0. Compiled for the widest vectors of
/// `level` (the values do not depend on it).
pub fn build_tiles2(
    level: CpuLevel,
    x: &Codes,
    y: usize,
    tiles: Range<usize>,
    max_code: u32,
    out: &mut [u8],
) {
    let cs = x.cstride;
    assert!(
        y < x.h
            && tiles.end <= x.w.div_ceil(2)
            && out.len() == tiles2_len(tiles.len(), cs)
            && cs.is_multiple_of(4),
        "transformed tiles"
    );
    tiles2_at(level, x, y, tiles, (2 * max_code) as u8, out);
}

/// [`build_tiles2`]'s body.
#[inline(always)]
fn tiles2(x: &Codes, y: usize, tiles: Range<usize>, q2: u8, out: &mut [u8]) {
    channel_blocks!(x.cstride, tiles2_block(x, y, tiles.clone(), q2, out));
}

/// [`tiles2`] for channels `c0 .. c0 + L`: per tile the y transform of its two new columns
/// (the first two are the previous tile's last), then the x transform of the four.
#[inline(always)]
fn tiles2_block<const L: usize>(
    x: &Codes,
    y: usize,
    tiles: Range<usize>,
    q2: u8,
    out: &mut [u8],
    c0: usize,
) {
    let cs = x.cstride;
    let (mut a, mut b) = (
        column_y::<L>(x, y, 2 * tiles.start, c0),
        column_y::<L>(x, y, 2 * tiles.start + 1, c0),
    );
    // Wrapping u8 arithmetic: every final value lies in 0..=4Q ≤ 255, so it is exact.
    for (k, t) in tiles.enumerate() {
        let (c, d) = (
            column_y::<L>(x, y, 2 * t + 2, c0),
            column_y::<L>(x, y, 2 * t + 3, c0),
        );
        let o = &mut out[k * 16 * cs + c0..];
        assert!(o.len() >= 15 * cs + L, "inside the transformed data");
        // Written out for each row e (constant indices: a loop over e kept the four columns
        // in stack arrays instead of registers).
        macro_rules! row {
            ($e:literal, $off:expr) => {
                put(o, 4 * $e * cs, sub_add(a[$e], c[$e], q2));
                put(o, (4 * $e + 1) * cs, add_add(b[$e], c[$e], $off));
                put(o, (4 * $e + 2) * cs, sub_add(c[$e], b[$e], q2));
                put(o, (4 * $e + 3) * cs, sub_add(b[$e], d[$e], q2));
            };
        }
        row!(0, q2);
        row!(1, 0);
        row!(2, q2);
        row!(3, q2);
        (a, b) = (c, d);
    }
}

/// The y transform (`Bᵀ d`, no offsets, wrapping u8) of codes `c0 .. c0 + L` of column `c`
/// over padded rows `y .. y + 4`.
#[inline(always)]
fn column_y<const L: usize>(x: &Codes, y: usize, c: usize, c0: usize) -> [[u8; L]; 4] {
    let [d0, d1, d2, d3] = [
        load::<L>(x, y, c, c0),
        load::<L>(x, y + 1, c, c0),
        load::<L>(x, y + 2, c, c0),
        load::<L>(x, y + 3, c, c0),
    ];
    [
        sub_add(d0, d2, 0),
        add_add(d1, d2, 0),
        sub_add(d2, d1, 0),
        sub_add(d1, d3, 0),
    ]
}
