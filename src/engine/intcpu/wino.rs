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
//! `vpmaddubsw` pair sum can saturate (`2Q · (|U_a| + |U_b|) ≤ 32767`). The pair sums are
//! accumulated in i16 and widened to i32 where [`WinoWeights::schedule`] says: before the
//! running bound `2Q · Σ (|U_a| + |U_b|)` of any lane could pass 32767.
//!
//! The transformed inputs are built per padded row ([`build_row`]): for every pair of output
//! columns ("tile"), the 4 values of every channel; an output row reads three of them.
//!
//! Layers whose codes and weights are too wide for `vpmaddubsw` (8-bit codes × 8-bit weights:
//! the upsampler, the tail) use the i16 form ([`WinoWeights16`], [`build_row16`]): the same
//! transform without offsets, `vpmaddwd` on i16 `V` and `U`, i32 sums that cannot overflow
//! (`|V| ≤ 510`, `|U| ≤ 3·128`, at most 3·2048 products).

use super::{Codes, PackedConv};

/// Transformed weights of one conv.
#[derive(Clone, Debug)]
pub struct WinoWeights {
    /// `[kernel row 3][element 4][cstride/4][cout8][4]` i8.
    pub u8: Vec<i8>,
    /// `C_e` per output channel: `[element 4][cout8]`.
    pub csum: Vec<i32>,
    /// Largest `|U_a| + |U_b|` over the pairs `vpmaddubsw` sums.
    pub pair_max: i32,
    /// The same largest pair per element and channel group: `[element 4][kernel row 3 ·
    /// cstride/4]`, in the order the kernel accumulates them.
    pub group_max: Vec<i32>,
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
    pub fn is_for(&self, ww: &WinoWeights) -> bool {
        self.id == ww.id
    }
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
        let mut pair_max = 0;
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
        let mut group_max = vec![0i32; 4 * 3 * groups];
        for ky in 0..3 {
            for e in 0..4 {
                for g in 0..groups {
                    let at = ((ky * 4 + e) * groups + g) * c8 * 4;
                    let m = u8[at..at + c8 * 4]
                        .chunks_exact(2)
                        .map(|p| p[0].unsigned_abs() as i32 + p[1].unsigned_abs() as i32)
                        .max()
                        .unwrap_or(0);
                    group_max[e * 3 * groups + ky * groups + g] = m;
                    pair_max = pair_max.max(m);
                }
            }
        }
        Some(Self {
            u8,
            csum,
            pair_max,
            group_max,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Where the kernel widens its i16 sums for codes up to `max_code` (before the bound of a
    /// lane could pass 32767). None when the transform is not exact for such codes.
    pub fn schedule(&self, max_code: u32) -> Option<Schedule> {
        self.run(max_code)?;
        let limit = i16::MAX as i64;
        let v = 2 * max_code as i64;
        let n = self.group_max.len() / 4;
        let mut flush = vec![0u8; self.group_max.len()];
        for e in 0..4 {
            let gm = &self.group_max[e * n..(e + 1) * n];
            let f = &mut flush[e * n..(e + 1) * n];
            let mut bound = 0;
            for j in 0..n {
                let next = v * gm[j] as i64;
                if j > 0 && bound + next > limit {
                    f[j - 1] = 1;
                    bound = 0;
                }
                bound += next;
            }
            f[n - 1] = 1;
        }
        Some(Schedule {
            max_code,
            flush,
            id: self.id,
        })
    }

    /// How many channel groups of `vpmaddubsw` pair sums fit in i16 for codes up to `max_code`;
    /// None when the transform is not exact for such codes.
    pub fn run(&self, max_code: u32) -> Option<usize> {
        if 2 * max_code > 255 {
            return None;
        }
        let pair = 2 * max_code as i64 * self.pair_max.max(1) as i64;
        let run = i16::MAX as i64 / pair;
        (run >= 1).then_some(run as usize)
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
