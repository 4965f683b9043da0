//! Conv epilogues of one output pixel, fused: the values `v = bias + h_w·(Δa·S + l·K)`
//! ([`IntConv::values`](crate::engine::intnet::IntConv::values), same operations in the same
//! order, no FMA; `l·K` comes precomputed per border class, [`l_times_k`]), then what the layer does with them (ReLU, residual update, global skip) and
//! the next layer's codes `rint((clamp(x, l, u) − l)·N/(u − l))`.
//!
//! [`scalar`] is the reference; [`avx2`] does 8 channels per step with the same IEEE
//! operations for the values (products and sums rounded one at a time) and the codes'
//! `(x − l)·N/(u − l)` capped at the same product for `u` instead of clamping `x` first
//! (`vcvtps2dq` rounding to nearest even like `round_ties_even`; values below `l` and NaN
//! give negative lanes, which the saturating packs make 0 as the reference's clamp and cast
//! do), so both give the same bits.

use super::{Aligned, CpuLevel};
use crate::engine::intconv::ActQuant;

/// What the epilogue does with the values `v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `out = v`.
    Values,
    /// `d = code(v)`.
    Codes,
    /// Head: `head = res = v`, `d = code(v)`.
    Head,
    /// Block conv1: `d = code(max(v, 0))`.
    Relu,
    /// Block conv2: `res += res_scale·v`, `d = code(res)`.
    Res,
    /// Last body conv: `d = code(v + head)`.
    Skip,
}

/// The per-layer constants of an epilogue.
#[derive(Clone, Copy, Debug)]
pub struct Consts<'a> {
    pub bias: &'a [f32],
    /// `h_w`.
    pub hw: f32,
    /// `Δa` of the layer's input.
    pub da: f32,
    pub res_scale: f32,
    /// The next layer's input quantizer (ops that write codes).
    pub next: ActQuant,
}

/// Buffers of one pixel; each op reads and writes only what it needs (`out` for `Values`,
/// `d` for the code ops, `res`/`head` for `Head`, `Res` and `Skip`).
pub struct Pixel<'a> {
    pub out: &'a mut [f32],
    pub res: &'a mut [f32],
    pub head: &'a mut [f32],
    pub d: &'a mut [u8],
}

/// A run of `count` consecutive pixels of a row, from column `x0` of a `w`-pixel row.
#[derive(Clone, Copy, Debug)]
pub struct Span<'a> {
    pub x0: usize,
    pub count: usize,
    pub w: usize,
    /// Sums `S` of pixel `i` at `s[i·sstride..][..n]`.
    pub s: &'a [i32],
    pub sstride: usize,
    /// `l·K` of the row's positions by their column's border bits: `l` of the layer's input
    /// times `K` of [`IntConv::ktab_row`], as [`l_times_k`] makes them.
    ///
    /// [`IntConv::ktab_row`]: crate::engine::intnet::IntConv::ktab_row
    pub lk: [&'a [f32]; 4],
    /// Empty, or the window code sums `Σ q` of the pixels (one each) of a conv with 8-bit
    /// weights in the offset form whose sums `s` are still `Σ q·(k − 128)`: then pixel `i`'s
    /// sums are `2·s + sq[i]` ([`super::window_code_sums`]; the kernels' separate pass over
    /// the sums for it cost 4–8% of a w8a6 frame).
    pub sq: &'a [i32],
}

/// `l·K` for every entry of a conv's `K` table, the product `IntConv::values` forms (`l` times
/// `K` converted to f32, rounded once), so that the epilogues add it as it is.
pub fn l_times_k(l: f32, ktab: &[i32], out: &mut Aligned<f32>) {
    out.resize(ktab.len());
    for (o, &k) in out.iter_mut().zip(ktab) {
        *o = l * k as f32;
    }
}

/// The epilogue `op` of the `n`-channel pixels of `span`; each buffer of `px` that `op` uses
/// holds them one after the other (`n` values per pixel). Bit-identical to [`pixel`] on each
/// pixel; the AVX-512 level keeps the constants in registers across the run.
pub fn run(level: CpuLevel, op: Op, c: &Consts, n: usize, span: &Span, mut px: Pixel) {
    let len = span.count * n;
    let empty_or = |b: usize| b == 0 || b >= len;
    assert!(
        px.holds(op, len)
            && empty_or(px.out.len())
            && empty_or(px.res.len())
            && empty_or(px.head.len())
            && empty_or(px.d.len()),
        "epilogue buffers"
    );
    assert!(span.count == 0 || span.s.len() >= (span.count - 1) * span.sstride + n);
    assert!(span.x0 + span.count <= span.w && span.lk.iter().all(|k| k.len() >= n));
    assert!(
        span.sq.is_empty() || span.sq.len() >= span.count,
        "window sums"
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx512Vnni is selected only on CPUs with AVX-512 F/BW/VL/VNNI; buffers
        // checked above.
        CpuLevel::Avx512Vnni | CpuLevel::Amx => unsafe { avx512_run(op, c, n, span, px) },
        // SAFETY: buffers checked above.
        #[cfg(target_arch = "aarch64")]
        l if l.is_neon() => unsafe { neon_run(op, c, n, span, px) },
        _ => {
            for i in 0..span.count {
                let x = span.x0 + i;
                let k = span.lk[crate::engine::intnet::border_bits(x, span.w)];
                pixel(
                    level,
                    op,
                    c,
                    &span.s[i * span.sstride..][..n],
                    &k[..n],
                    span.sq.get(i).copied(),
                    px.at(i, n),
                );
            }
        }
    }
}

impl Pixel<'_> {
    /// Whether the buffers `op` uses hold `len` values each.
    fn holds(&self, op: Op, len: usize) -> bool {
        let has = |b: usize| b >= len;
        match op {
            Op::Values => has(self.out.len()),
            Op::Codes | Op::Relu => has(self.d.len()),
            Op::Head => has(self.res.len()) && has(self.head.len()) && has(self.d.len()),
            Op::Res => has(self.res.len()) && has(self.d.len()),
            Op::Skip => has(self.head.len()) && has(self.d.len()),
        }
    }

    /// Pixel `i` of a run of `n`-channel pixels (the empty buffers stay empty). Inlined: a
    /// call per pixel was 4% of a w4a4 frame's instructions on ARM.
    #[inline(always)]
    fn at(&mut self, i: usize, n: usize) -> Pixel<'_> {
        #[inline(always)]
        fn part<T>(b: &mut [T], i: usize, n: usize) -> &mut [T] {
            if b.is_empty() {
                b
            } else {
                &mut b[i * n..(i + 1) * n]
            }
        }
        Pixel {
            out: part(self.out, i, n),
            res: part(self.res, i, n),
            head: part(self.head, i, n),
            d: part(self.d, i, n),
        }
    }
}

/// The epilogue `op` of one pixel: `s` and `k` hold the `n` channels' sums and border terms;
/// with `sq`, the sums are `2·s + sq` ([`Span::sq`]).
#[inline]
pub fn pixel(
    level: CpuLevel,
    op: Op,
    c: &Consts,
    s: &[i32],
    lk: &[f32],
    sq: Option<i32>,
    px: Pixel,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 and the levels above it are selected only on CPUs with AVX2.
        // (One copy with the fold and one without: a test per vector is not free.)
        l if l >= CpuLevel::Avx2 => unsafe {
            match sq {
                Some(sq) => avx2::<true>(op, c, s, lk, sq, px),
                None => avx2::<false>(op, c, s, lk, 0, px),
            }
        },
        // SAFETY: NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        l if l.is_neon() => unsafe { neon(op, c, s, lk, sq, px) },
        _ => scalar(op, c, s, lk, sq, px, 0),
    }
}

/// The reference, from channel `from` on.
#[inline(always)]
fn scalar(op: Op, c: &Consts, s: &[i32], lk: &[f32], sq: Option<i32>, px: Pixel, from: usize) {
    let n = s.len();
    let q = c.next;
    // (Wrapping, as the vector levels' integer adds.)
    let sum = |o: usize| match sq {
        Some(sq) => s[o].wrapping_mul(2).wrapping_add(sq),
        None => s[o],
    };
    let value = |o: usize| c.bias[o] + c.hw * (c.da * sum(o) as f32 + lk[o]);
    match op {
        Op::Values => (from..n).for_each(|o| px.out[o] = value(o)),
        Op::Codes => (from..n).for_each(|o| px.d[o] = q.code(value(o))),
        Op::Head => (from..n).for_each(|o| {
            let v = value(o);
            px.head[o] = v;
            px.res[o] = v;
            px.d[o] = q.code(v);
        }),
        Op::Relu => (from..n).for_each(|o| px.d[o] = q.code(value(o).max(0.0))),
        Op::Res => (from..n).for_each(|o| {
            px.res[o] += c.res_scale * value(o);
            px.d[o] = q.code(px.res[o]);
        }),
        Op::Skip => (from..n).for_each(|o| px.d[o] = q.code(value(o) + px.head[o])),
    }
}

/// [`pixel`] at AVX2: 8 channels a step, then [`scalar`]; with `FOLD` the sums are
/// `2·s + sq`.
///
/// # Safety
/// The CPU must support AVX2; `s`, `k` and the buffers `op` uses hold at least `s.len()`
/// values, `c.bias` too.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<const FOLD: bool>(op: Op, c: &Consts, s: &[i32], lk: &[f32], sq: i32, px: Pixel) {
    use std::arch::x86_64::*;
    let n = s.len();
    assert!(lk.len() >= n && c.bias.len() >= n, "epilogue inputs");
    assert!(px.holds(op, n), "epilogue buffers");
    let full = n / 8 * 8;
    // SAFETY: every access is at channel o..o + 8 ≤ full ≤ n, inside the buffers checked
    // above; AVX2 is enabled.
    unsafe {
        let (hw, da) = (_mm256_set1_ps(c.hw), _mm256_set1_ps(c.da));
        let rs = _mm256_set1_ps(c.res_scale);
        let (nl, ns, top) = (
            _mm256_set1_ps(c.next.l),
            _mm256_set1_ps(c.next.inv_step()),
            _mm256_set1_ps((c.next.u - c.next.l) * c.next.inv_step()),
        );
        let zero = _mm256_setzero_ps();
        let sqv = _mm256_set1_epi32(sq);
        // Codes of 8 values as 8 bytes, without the clamp's `max` as [`code_lanes`] (values
        // below `l` and NaN give negative lanes, which `vpackusdw` makes 0).
        let code = |x: __m256| -> u64 {
            let p = _mm256_mul_ps(_mm256_sub_ps(x, nl), ns);
            let i = _mm256_cvtps_epi32(_mm256_min_ps(top, p));
            let w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
            _mm_cvtsi128_si64(_mm_packus_epi16(w, w)) as u64
        };
        for o in (0..full).step_by(8) {
            let si = _mm256_loadu_si256(s.as_ptr().add(o).cast());
            let si = if FOLD {
                _mm256_add_epi32(_mm256_add_epi32(si, si), sqv)
            } else {
                si
            };
            let si = _mm256_cvtepi32_ps(si);
            let lk = _mm256_loadu_ps(lk.as_ptr().add(o));
            let b = _mm256_loadu_ps(c.bias.as_ptr().add(o));
            let v = _mm256_add_ps(
                b,
                _mm256_mul_ps(hw, _mm256_add_ps(_mm256_mul_ps(da, si), lk)),
            );
            let d = px.d.as_mut_ptr().add(o) as *mut u64;
            match op {
                Op::Values => _mm256_storeu_ps(px.out.as_mut_ptr().add(o), v),
                Op::Codes => d.write_unaligned(code(v)),
                Op::Head => {
                    _mm256_storeu_ps(px.head.as_mut_ptr().add(o), v);
                    _mm256_storeu_ps(px.res.as_mut_ptr().add(o), v);
                    d.write_unaligned(code(v));
                }
                Op::Relu => d.write_unaligned(code(_mm256_max_ps(v, zero))),
                Op::Res => {
                    let r = px.res.as_mut_ptr().add(o);
                    let nr = _mm256_add_ps(_mm256_loadu_ps(r), _mm256_mul_ps(rs, v));
                    _mm256_storeu_ps(r, nr);
                    d.write_unaligned(code(nr));
                }
                Op::Skip => {
                    let hd = _mm256_loadu_ps(px.head.as_ptr().add(o));
                    d.write_unaligned(code(_mm256_add_ps(v, hd)));
                }
            }
        }
    }
    scalar(op, c, s, lk, FOLD.then_some(sq), px, full);
}

/// [`avx2`] on 64-bit ARM: 8 channels per step (two 4-lane vectors, then one, then the
/// scalar tail), the same IEEE operations in the same order (separate multiplies and adds, no
/// fused `fmla`), codes by `fcvtns` (nearest even, NaN to 0) and saturating narrows, ReLU by
/// `fmaxnm` (NaN to 0, as `f32::max`). Inlined into [`neon_run`] once per op; NEON is part
/// of aarch64, so it needs no feature check.
///
/// # Safety
/// None beyond the checks it makes: `s`, `k` and the buffers `op` uses must hold at least
/// `s.len()` values, `c.bias` too (asserted).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn neon(op: Op, c: &Consts, s: &[i32], lk: &[f32], sq: Option<i32>, px: Pixel) {
    use std::arch::aarch64::*;
    let n = s.len();
    assert!(lk.len() >= n && c.bias.len() >= n, "epilogue inputs");
    assert!(px.holds(op, n), "epilogue buffers");
    // SAFETY: every access is at channels o..o + 8 (or o + 4) ≤ n of a buffer `op` uses,
    // checked above; NEON is part of aarch64.
    unsafe {
        let (hw, da) = (vdupq_n_f32(c.hw), vdupq_n_f32(c.da));
        let rs = vdupq_n_f32(c.res_scale);
        let (nl, ns, top) = (
            vdupq_n_f32(c.next.l),
            vdupq_n_f32(c.next.inv_step()),
            vdupq_n_f32((c.next.u - c.next.l) * c.next.inv_step()),
        );
        let zero = vdupq_n_f32(0.0);
        let sqv = sq.map(|q| vdupq_n_s32(q));
        // Codes of 4 values as saturated u16, without the clamp's `max` as [`code_lanes`]:
        // values below `l` give negative lanes, which `vqmovun` makes 0; a NaN stays NaN
        // (`fmin` returns NaN), which `fcvtns` makes 0.
        let code = |x: float32x4_t| -> uint16x4_t {
            let p = vmulq_f32(vsubq_f32(x, nl), ns);
            vqmovun_s32(vcvtnq_s32_f32(vminq_f32(top, p)))
        };
        let (out, res, head) = (
            px.out.as_mut_ptr(),
            px.res.as_mut_ptr(),
            px.head.as_mut_ptr(),
        );
        let d = px.d.as_mut_ptr();
        // The value of channels o..o + 4 and what `op` does with it: the map it writes (`out`
        // for Values, `res` / `head` for Head and Res) written here, the codes' input returned.
        let step = |o: usize| -> float32x4_t {
            let si = vld1q_s32(s.as_ptr().add(o));
            let si = match sqv {
                Some(q) => vaddq_s32(vaddq_s32(si, si), q),
                None => si,
            };
            let si = vcvtq_f32_s32(si);
            let lk = vld1q_f32(lk.as_ptr().add(o));
            let b = vld1q_f32(c.bias.as_ptr().add(o));
            let v = vaddq_f32(b, vmulq_f32(hw, vaddq_f32(vmulq_f32(da, si), lk)));
            match op {
                Op::Values => {
                    vst1q_f32(out.add(o), v);
                    v
                }
                Op::Codes => v,
                Op::Head => {
                    vst1q_f32(head.add(o), v);
                    vst1q_f32(res.add(o), v);
                    v
                }
                Op::Relu => vmaxnmq_f32(v, zero),
                Op::Res => {
                    let r = res.add(o);
                    let nr = vaddq_f32(vld1q_f32(r), vmulq_f32(rs, v));
                    vst1q_f32(r, nr);
                    nr
                }
                Op::Skip => vaddq_f32(v, vld1q_f32(head.add(o))),
            }
        };
        let mut o = 0;
        while o + 8 <= n {
            let (a, b) = (step(o), step(o + 4));
            if op != Op::Values {
                let q = vqmovn_u16(vcombine_u16(code(a), code(b)));
                vst1_u8(d.add(o), q);
            }
            o += 8;
        }
        if o + 4 <= n {
            let a = step(o);
            if op != Op::Values {
                let q = vqmovn_u16(vcombine_u16(code(a), code(a)));
                d.add(o)
                    .cast::<u32>()
                    .write_unaligned(vget_lane_u32::<0>(vreinterpret_u32_u8(q)));
            }
            o += 4;
        }
        scalar(op, c, s, lk, sq, px, o);
    }
}

/// `$f::<FOLD>(op, args…)` with the op and `FOLD` (whether the pixel sums fold the offset
/// correction) constants: one inlined copy of a level's epilogue loop per op and fold (a
/// dispatch per vector cost a few % of the epilogue; a test per vector for the fold more
/// than the fold).
#[allow(unused_macros)]
macro_rules! per_op {
    ($f:ident, $op:expr, $fold:expr, $($arg:expr),*) => {
        match ($op, $fold) {
            (Op::Values, false) => $f::<false>(Op::Values, $($arg),*),
            (Op::Codes, false) => $f::<false>(Op::Codes, $($arg),*),
            (Op::Head, false) => $f::<false>(Op::Head, $($arg),*),
            (Op::Relu, false) => $f::<false>(Op::Relu, $($arg),*),
            (Op::Res, false) => $f::<false>(Op::Res, $($arg),*),
            (Op::Skip, false) => $f::<false>(Op::Skip, $($arg),*),
            (Op::Values, true) => $f::<true>(Op::Values, $($arg),*),
            (Op::Codes, true) => $f::<true>(Op::Codes, $($arg),*),
            (Op::Head, true) => $f::<true>(Op::Head, $($arg),*),
            (Op::Relu, true) => $f::<true>(Op::Relu, $($arg),*),
            (Op::Res, true) => $f::<true>(Op::Res, $($arg),*),
            (Op::Skip, true) => $f::<true>(Op::Skip, $($arg),*),
        }
    };
}

/// [`run`] at the ARM levels: [`neon`] pixel by pixel, one copy of the loop per op (the op a
/// constant in each: the loop of `run`'s other levels, with `neon` inlined; a closure for
/// the pixel, shared with that loop, was not inlined and cost 50% more epilogue
/// instructions).
///
/// # Safety
/// The buffers as checked by [`run`].
#[cfg(target_arch = "aarch64")]
unsafe fn neon_run(op: Op, c: &Consts, n: usize, span: &Span, mut px: Pixel) {
    #[inline(always)]
    unsafe fn each<const FOLD: bool>(op: Op, c: &Consts, n: usize, span: &Span, px: &mut Pixel) {
        for i in 0..span.count {
            let k = span.lk[crate::engine::intnet::border_bits(span.x0 + i, span.w)];
            let s = &span.s[i * span.sstride..][..n];
            let sq = if FOLD { Some(span.sq[i]) } else { None };
            // SAFETY: `neon` checks its slices.
            unsafe { neon(op, c, s, &k[..n], sq, px.at(i, n)) }
        }
    }
    // SAFETY: forwarded contract; each arm inlines the loop with its op (and whether it folds
    // the offset correction: a test per vector cost more than the fold) a constant.
    unsafe { per_op!(each, op, !span.sq.is_empty(), c, n, span, &mut px) }
}

/// Whether the AVX-512 epilogue packs a pixel's 32 remaining channels in one step
/// ([`codes32`]) instead of two 16-channel steps.
static CODES32: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets for the whole process (for comparisons) whether the AVX-512 epilogue packs 32
/// channels' codes in one step (the default) or in two 16-channel steps; elsewhere nothing.
pub fn set_codes32(on: bool) {
    CODES32.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// [`avx2`] for a run of pixels, 16 channels per step on 512-bit vectors, the last step of a
/// pixel masked (no scalar tail), the constants loaded once per run. The same IEEE operations
/// in the same order for the values; codes without the clamp's `max` ([`code_lanes`]: values
/// below `l` and NaN give negative lanes) by `vcvtps2dq` (nearest even), negative lanes to 0
/// and the rest saturated to 255, as the pair `vpackssdw`, `vpackuswb` does. One copy of the
/// loop per op (no dispatch per vector: the jump took a few % of the epilogue on an Intel
/// Xeon).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL; the buffers as checked by [`run`] (`c.bias` of at
/// least `n` values).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn avx512_run(op: Op, c: &Consts, n: usize, span: &Span, px: Pixel) {
    // SAFETY: forwarded contract; each arm inlines the loop with its op (and whether it folds
    // the offset correction) a constant.
    unsafe { per_op!(avx512_loop, op, !span.sq.is_empty(), c, n, span, px) }
}

/// The loop of [`avx512_run`]: whole blocks of 64 channels first, their 64 codes packed
/// (`vpackssdw` + `vpackuswb` + one `vpermd`: 4 instructions where 16-channel steps take 12),
/// then a block of 32 packed the same way ([`codes32`], unless [`set_codes32`] turned it
/// off), then steps of 16 channels, a last partial one masked.
///
/// # Safety
/// As [`avx512_run`]; inlined into it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn avx512_loop<const FOLD: bool>(op: Op, c: &Consts, n: usize, span: &Span, px: Pixel) {
    use std::arch::x86_64::*;
    assert!(c.bias.len() >= n, "epilogue bias");
    // SAFETY: pixel i's accesses are at channels o..o + 16 ≤ n (o..o + 64 ≤ n in the blocks),
    // or, for a last partial vector, under the mask `m`, whose lanes are below n: inside
    // s[i·sstride..][..n], lk[..n], bias[..n] and the buffers' [i·n..][..n] (checked by
    // `run`); AVX-512 F/BW/VL are enabled by the caller.
    unsafe {
        let codes32_on = CODES32.load(std::sync::atomic::Ordering::Relaxed);
        let k = Steps {
            hw: _mm512_set1_ps(c.hw),
            da: _mm512_set1_ps(c.da),
            rs: _mm512_set1_ps(c.res_scale),
            nl: _mm512_set1_ps(c.next.l),
            ns: _mm512_set1_ps(c.next.inv_step()),
            top: _mm512_set1_ps((c.next.u - c.next.l) * c.next.inv_step()),
            bias: c.bias.as_ptr(),
        };
        for i in 0..span.count {
            let x = span.x0 + i;
            let p = PixelPtrs {
                s: span.s.as_ptr().add(i * span.sstride),
                lk: span.lk[crate::engine::intnet::border_bits(x, span.w)].as_ptr(),
                sq: if FOLD {
                    Some(_mm512_set1_epi32(span.sq[i]))
                } else {
                    None
                },
                res: px.res.as_mut_ptr().wrapping_add(i * n),
                head: px.head.as_mut_ptr().wrapping_add(i * n),
            };
            let (out, d) = (
                px.out.as_mut_ptr().wrapping_add(i * n),
                px.d.as_mut_ptr().wrapping_add(i * n),
            );
            let mut o = 0;
            if op != Op::Values {
                while n - o >= 64 {
                    let f = [
                        step(op, &k, &p, o, None),
                        step(op, &k, &p, o + 16, None),
                        step(op, &k, &p, o + 32, None),
                        step(op, &k, &p, o + 48, None),
                    ];
                    _mm512_storeu_si512(d.add(o).cast(), codes64(&k, f));
                    o += 64;
                }
                // 32 channels (the built-in models' width): packed as the 64, half as many
                // instructions as two 16-channel steps.
                if codes32_on && n - o >= 32 {
                    let f = [step(op, &k, &p, o, None), step(op, &k, &p, o + 16, None)];
                    _mm256_storeu_si256(d.add(o).cast(), codes32(&k, f));
                    o += 32;
                }
            }
            while o < n {
                // Whole vectors with plain loads and stores, a last partial one masked (masked
                // stores are slow on Zen 4: the byte store of the codes alone took 12% of the
                // epilogue).
                let m = (n - o < 16).then(|| ((1u32 << (n - o)) - 1) as __mmask16);
                let v = step(op, &k, &p, o, m);
                match op {
                    Op::Values => store_ps(out.add(o), m, v),
                    _ => store_codes(d.add(o), m, codes16(&k, v)),
                }
                o += 16;
            }
        }
    }
}

/// The constants of [`avx512_loop`] as vectors.
#[cfg(target_arch = "x86_64")]
struct Steps {
    hw: std::arch::x86_64::__m512,
    da: std::arch::x86_64::__m512,
    rs: std::arch::x86_64::__m512,
    nl: std::arch::x86_64::__m512,
    ns: std::arch::x86_64::__m512,
    /// `(u − l)·N/(u − l)` as the codes compute it: the scaled value of `u`.
    top: std::arch::x86_64::__m512,
    bias: *const f32,
}

/// One pixel's inputs (its sums, its column's `l·K`) and f32 maps in [`avx512_loop`].
#[cfg(target_arch = "x86_64")]
struct PixelPtrs {
    s: *const i32,
    lk: *const f32,
    /// `Σ q` in every lane when the sums are `2·s + Σ q` ([`Span::sq`]).
    sq: Option<std::arch::x86_64::__m512i>,
    res: *mut f32,
    head: *mut f32,
}

/// Channels `o .. o + 16` (or the lanes of `m`) of a pixel: `v = bias + hw·(da·S + lK)`, the
/// op's f32 stores (`Head`: head and res; `Res`: res), and the value whose codes the op writes
/// (`Values`: `v` itself, for the output map).
///
/// # Safety
/// AVX-512 F; as [`avx512_loop`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn step(
    op: Op,
    k: &Steps,
    p: &PixelPtrs,
    o: usize,
    m: Option<std::arch::x86_64::__mmask16>,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let si = load_i32(p.s.add(o), m);
        let si = match p.sq {
            Some(q) => _mm512_add_epi32(_mm512_add_epi32(si, si), q),
            None => si,
        };
        let si = _mm512_cvtepi32_ps(si);
        let lk = load_ps(p.lk.add(o), m);
        let b = load_ps(k.bias.add(o), m);
        let v = _mm512_add_ps(
            b,
            _mm512_mul_ps(k.hw, _mm512_add_ps(_mm512_mul_ps(k.da, si), lk)),
        );
        match op {
            Op::Values | Op::Codes => v,
            Op::Head => {
                store_ps(p.head.add(o), m, v);
                store_ps(p.res.add(o), m, v);
                v
            }
            Op::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
            Op::Res => {
                let r = p.res.add(o);
                let nr = _mm512_add_ps(load_ps(r, m), _mm512_mul_ps(k.rs, v));
                store_ps(r, m, nr);
                nr
            }
            Op::Skip => _mm512_add_ps(v, load_ps(p.head.add(o), m)),
        }
    }
}

/// The next layer's codes of 16 values as i32 lanes, the reference's `rint((clamp(x, l, u) −
/// l)·N/(u − l))` where it is in `0 ..= 255` and negative where the reference gives 0, for the
/// callers' saturation to bytes to make 0: `(x − l)·N/(u − l)` capped at `top`, the same
/// product for `u`, then rounded to nearest even (`vcvtps2dq`). Three operations and the
/// conversion where clamping first takes four: below `l` the product is negative (or −0)
/// where the reference's is 0; above `u` it is at least `top` (rounding is monotonic), so the
/// cap gives the reference's product for `u` itself; a NaN stays NaN (`vminps` returns its
/// second operand when either is NaN), converted to the "integer indefinite" `i32::MIN`, where
/// the reference's NaN gives 0.
///
/// # Safety
/// AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn code_lanes(k: &Steps, x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic.
    unsafe {
        let p = _mm512_mul_ps(_mm512_sub_ps(x, k.nl), k.ns);
        _mm512_cvtps_epi32(_mm512_min_ps(k.top, p))
    }
}

/// Codes of 16 values as 16 bytes (negative lanes to 0, the rest saturated to 255).
///
/// # Safety
/// AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn codes16(k: &Steps, x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic.
    unsafe {
        let i = code_lanes(k, x);
        _mm512_cvtusepi32_epi8(_mm512_max_epi32(i, _mm512_setzero_si512()))
    }
}

/// Codes of 64 values (four vectors of 16 consecutive channels) as 64 bytes in channel
/// order, saturated as [`codes16`]: `vpackssdw` (i32 to i16, signed saturation) and
/// `vpackuswb` (i16 to u8: negative to 0, above 255 to 255) work within 128-bit lanes, so
/// lane `q` holds channels `4q .. 4q + 4` of each vector; one `vpermd` puts them in order.
///
/// # Safety
/// AVX-512 F/BW.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn codes64(k: &Steps, f: [std::arch::x86_64::__m512; 4]) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic.
    unsafe {
        // (No closure: it would not get the caller's target features.)
        let (a, b) = (code_lanes(k, f[0]), code_lanes(k, f[1]));
        let (c, d) = (code_lanes(k, f[2]), code_lanes(k, f[3]));
        let bytes = _mm512_packus_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
        // Dword 4q + j of `bytes` is channels 4q .. 4q + 4 of vector j; channel order wants
        // dword m from 4·(m mod 4) + m / 4.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        _mm512_permutexvar_epi32(order, bytes)
    }
}

/// Codes of 32 values (two vectors of 16 consecutive channels) as 32 bytes in channel order,
/// saturated as [`codes16`]: as [`codes64`], lane `q` of the packed bytes holds channels
/// `4q .. 4q + 4` of each vector (the other half of each lane a copy); one `vpermd` puts the
/// first 8 dwords in order.
///
/// # Safety
/// AVX-512 F/BW.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn codes32(k: &Steps, f: [std::arch::x86_64::__m512; 2]) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic.
    unsafe {
        let words = _mm512_packs_epi32(code_lanes(k, f[0]), code_lanes(k, f[1]));
        let bytes = _mm512_packus_epi16(words, words);
        // Dword 4q of `bytes` is channels 4q .. 4q + 4 of vector 0, dword 4q + 1 those of
        // vector 1.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, bytes))
    }
}

/// 16 i32 from `p`, or the lanes of `m` (others 0).
///
/// # Safety
/// AVX-512 F; the 16 (or the masked) values readable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_i32(
    p: *const i32,
    m: Option<std::arch::x86_64::__mmask16>,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        match m {
            None => _mm512_loadu_si512(p.cast()),
            Some(m) => _mm512_maskz_loadu_epi32(m, p.cast()),
        }
    }
}

/// [`load_i32`] for f32.
///
/// # Safety
/// As [`load_i32`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_ps(
    p: *const f32,
    m: Option<std::arch::x86_64::__mmask16>,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        match m {
            None => _mm512_loadu_ps(p),
            Some(m) => _mm512_maskz_loadu_ps(m, p),
        }
    }
}

/// Stores 16 f32 at `p`, or the lanes of `m`.
///
/// # Safety
/// AVX-512 F; the 16 (or the masked) values writable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_ps(
    p: *mut f32,
    m: Option<std::arch::x86_64::__mmask16>,
    v: std::arch::x86_64::__m512,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        match m {
            None => _mm512_storeu_ps(p, v),
            Some(m) => _mm512_mask_storeu_ps(p, m, v),
        }
    }
}

/// Stores 16 codes at `p`, or the bytes of `m`.
///
/// # Safety
/// AVX-512 BW/VL; the 16 (or the masked) bytes writable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_codes(
    p: *mut u8,
    m: Option<std::arch::x86_64::__mmask16>,
    v: std::arch::x86_64::__m128i,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        match m {
            None => _mm_storeu_si128(p.cast(), v),
            Some(m) => _mm_mask_storeu_epi8(p.cast(), m, v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::random::Rng;

    /// A run of pixels gives, pixel by pixel, the scalar reference of each (its own sums and
    /// the `K` of its column's border class), at every level, for channel counts with tails;
    /// and with window code sums ([`Span::sq`]) the reference of the sums `2·s + sq`.
    #[test]
    fn runs_match_the_pixels() {
        let mut rng = Rng::new(9);
        for n in [3usize, 16, 32, 64, 67, 96] {
            for op in [Op::Values, Op::Codes, Op::Head, Op::Relu, Op::Res, Op::Skip] {
                for (x0, count, w) in [(0usize, 5usize, 5usize), (3, 4, 9), (0, 1, 1), (6, 3, 9)] {
                    for fold in [false, true] {
                        let sstride = n + 5;
                        let s: Vec<i32> = (0..count * sstride)
                            .map(|_| rng.below(6000) as i32 - 3000)
                            .collect();
                        let sq: Vec<i32> = if fold {
                            (0..count).map(|_| rng.below(3000) as i32).collect()
                        } else {
                            Vec::new()
                        };
                        // The sums the reference gets.
                        let s_ref: Vec<i32> = s
                            .iter()
                            .enumerate()
                            .map(|(j, &v)| if fold { 2 * v + sq[j / sstride] } else { v })
                            .collect();
                        let ktab: Vec<i32> =
                            (0..4 * n).map(|_| rng.below(300) as i32 - 150).collect();
                        let bias: Vec<f32> = (0..n).map(|_| rng.symmetric(2.0)).collect();
                        let (hw, da) = (rng.uniform() * 0.1, rng.uniform());
                        let mut lktab = Aligned::new();
                        l_times_k(rng.symmetric(3.0), &ktab, &mut lktab);
                        let c = Consts {
                            bias: &bias,
                            hw,
                            da,
                            res_scale: 0.1,
                            next: ActQuant::new(-rng.uniform() * 40.0, rng.uniform() * 40.0, 4),
                        };
                        let res0: Vec<f32> = (0..count * n).map(|_| rng.symmetric(50.0)).collect();
                        let head0: Vec<f32> = (0..count * n).map(|_| rng.symmetric(50.0)).collect();
                        let k: [&[f32]; 4] = std::array::from_fn(|b| &lktab[b * n..(b + 1) * n]);
                        let span = Span {
                            x0,
                            count,
                            w,
                            s: &s,
                            sstride,
                            lk: k,
                            sq: &sq,
                        };
                        let bits =
                            |v: &[f32]| -> Vec<u32> { v.iter().map(|x| x.to_bits()).collect() };
                        // The reference: scalar, pixel by pixel.
                        let (mut out, mut res, mut head, mut d) = (
                            vec![0f32; count * n],
                            res0.clone(),
                            head0.clone(),
                            vec![0u8; count * n],
                        );
                        for i in 0..count {
                            let kk = k[crate::engine::intnet::border_bits(x0 + i, w)];
                            let r = i * n..(i + 1) * n;
                            let px = Pixel {
                                out: &mut out[r.clone()],
                                res: &mut res[r.clone()],
                                head: &mut head[r.clone()],
                                d: &mut d[r],
                            };
                            pixel(
                                CpuLevel::Scalar,
                                op,
                                &c,
                                &s_ref[i * sstride..][..n],
                                kk,
                                None,
                                px,
                            );
                        }
                        let want = (bits(&out), bits(&res), bits(&head), d);
                        for level in CpuLevel::testable() {
                            let (mut out, mut res, mut head, mut d) = (
                                vec![0f32; count * n],
                                res0.clone(),
                                head0.clone(),
                                vec![0u8; count * n],
                            );
                            let px = Pixel {
                                out: &mut out,
                                res: &mut res,
                                head: &mut head,
                                d: &mut d,
                            };
                            run(level, op, &c, n, &span, px);
                            let got = (bits(&out), bits(&res), bits(&head), d);
                            assert_eq!(
                                got, want,
                                "{level:?} {op:?} n={n} x0={x0} count={count} w={w} fold {fold}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every op at every level, per pixel and as a run of one, gives the scalar reference's
    /// bits, for channel counts with tails, values on rounding ties, beyond the clamp bounds,
    /// and NaN/inf from huge sums and an infinite step.
    #[test]
    fn every_level_matches_the_reference() {
        let mut rng = Rng::new(5);
        for n in [1usize, 3, 8, 13, 32, 48, 64, 67, 96, 99] {
            for op in [Op::Values, Op::Codes, Op::Head, Op::Relu, Op::Res, Op::Skip] {
                for case in 0..40 {
                    let s: Vec<i32> = (0..n)
                        .map(|_| match rng.below(10) {
                            0 => i32::MAX,
                            1 => i32::MIN,
                            2 => 0,
                            _ => rng.below(4000) as i32 - 2000,
                        })
                        .collect();
                    let k: Vec<i32> = (0..n).map(|_| rng.below(200) as i32 - 100).collect();
                    let bias: Vec<f32> = (0..n).map(|_| rng.symmetric(2.0)).collect();
                    let bits = 1 + (case % 8) as u8;
                    let l = rng.symmetric(3.0);
                    let mut lk = Aligned::new();
                    l_times_k(l, &k, &mut lk);
                    let c = Consts {
                        bias: &bias,
                        // A step of 1/4 with the codes' step of 1 puts many values on ties.
                        hw: if case % 2 == 0 {
                            0.25
                        } else {
                            rng.uniform() * 0.1
                        },
                        // An infinite step makes the zero sums' values NaN (and the others
                        // infinite), through every op.
                        da: if case % 7 == 6 {
                            f32::INFINITY
                        } else if case % 3 == 0 {
                            1.0
                        } else {
                            rng.uniform()
                        },
                        res_scale: if case % 5 == 0 { f32::MAX } else { 0.1 },
                        next: ActQuant::new(-rng.uniform() * 40.0, rng.uniform() * 40.0, bits),
                    };
                    let res0: Vec<f32> = (0..n).map(|_| rng.symmetric(50.0)).collect();
                    let head: Vec<f32> = (0..n).map(|_| rng.symmetric(50.0)).collect();
                    // With a window code sum (`Span::sq`), the reference of `2·s + sq`.
                    let sq = rng.below(5000) as i32;
                    let s_fold: Vec<i32> = s
                        .iter()
                        .map(|&v| v.wrapping_mul(2).wrapping_add(sq))
                        .collect();
                    // `op` at `level` on the sums `s` (with the window sum `sq`), per pixel
                    // or as a run of one.
                    let go = |level: CpuLevel, by_run: bool, s: &[i32], sq: Option<i32>| {
                        let mut out = vec![0f32; n];
                        let mut res = res0.clone();
                        let mut hd = head.clone();
                        let mut d = vec![0u8; n];
                        let px = Pixel {
                            out: &mut out,
                            res: &mut res,
                            head: &mut hd,
                            d: &mut d,
                        };
                        if by_run {
                            let span = Span {
                                x0: 0,
                                count: 1,
                                w: 1,
                                s,
                                sstride: n,
                                lk: [&lk[..]; 4],
                                sq: sq.as_slice(),
                            };
                            run(level, op, &c, n, &span, px);
                        } else {
                            pixel(level, op, &c, s, &lk, sq, px);
                        }
                        let bits =
                            |v: &[f32]| -> Vec<u32> { v.iter().map(|x| x.to_bits()).collect() };
                        (bits(&out), bits(&res), bits(&hd), d)
                    };
                    let want = go(CpuLevel::Scalar, false, &s, None);
                    if op == Op::Values {
                        // The reference is the layer's values (`IntConv::values`'s formula).
                        let v: Vec<u32> = (0..n)
                            .map(|o| {
                                (bias[o] + c.hw * (c.da * s[o] as f32 + l * k[o] as f32)).to_bits()
                            })
                            .collect();
                        assert_eq!(want.0, v, "n={n} case {case}");
                    }
                    let want_fold = go(CpuLevel::Scalar, false, &s_fold, None);
                    for level in CpuLevel::testable() {
                        for by_run in [false, true] {
                            assert_eq!(
                                go(level, by_run, &s, None),
                                want,
                                "{level:?} {op:?} n={n} case {case} run {by_run}"
                            );
                            assert_eq!(
                                go(level, by_run, &s, Some(sq)),
                                want_fold,
                                "{level:?} {op:?} n={n} case {case} run {by_run}, folded"
                            );
                        }
                    }
                }
            }
        }
    }
}
