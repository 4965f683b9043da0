//! 3x3 convolution on zero-padded NHWC feature maps, as nine shifted GEMMs.
//!
//! A [`FeatureMap`] of `h x w x c` is stored with a one-pixel zero border, `(h+2) x (w+2) x c`.
//! Seen as a matrix of `(h+2)(w+2)` rows and `c` columns, the input of tap `(dy, dx)` for every
//! output position is the same matrix shifted by `dy*(w+2) + dx` rows: the nine shifted rows are
//! gathered per block of output rows into a small im2col buffer and multiplied in one GEMM.
//! The outputs that land on the border columns are garbage and are zeroed afterwards.
//!
//! On x86-64 with AVX2 and FMA, convolutions with a multiple of 16 output channels skip the
//! im2col copy and the GEMM: [`direct`] keeps 6 output positions x 16 channels in registers
//! and walks the 9 taps x `cin` inputs with broadcast-FMAs (1.12–1.25x the GEMM's speed on
//! the 64->64 conv here; `cargo bench --bench reference`, BENCHMARKS.md). Each output is
//! summed in one fixed order whatever the row blocks and threads, so results are deterministic.

use gemm::Parallelism;
use rayon::prelude::*;

/// im2col values per row block of [`conv3x3_rows`] (512 KiB of f32).
const BLOCK_VALUES: usize = 128 * 1024;

/// A zero-padded NHWC feature map.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// `(h+2) * (w+2) * c` values; the one-pixel border is always zero.
    pub data: Vec<f32>,
}

impl FeatureMap {
    pub fn zeros(h: usize, w: usize, c: usize) -> Self {
        Self {
            h,
            w,
            c,
            data: vec![0.0; (h + 2) * (w + 2) * c],
        }
    }

    /// Padded width.
    #[inline]
    pub fn wp(&self) -> usize {
        self.w + 2
    }

    /// Index of channel 0 of interior pixel `(y, x)`.
    #[inline]
    pub fn idx(&self, y: usize, x: usize) -> usize {
        ((y + 1) * self.wp() + x + 1) * self.c
    }

    /// The `w * c` interior values of row `y`.
    #[inline]
    pub fn row(&self, y: usize) -> &[f32] {
        let i = self.idx(y, 0);
        &self.data[i..i + self.w * self.c]
    }

    #[inline]
    pub fn row_mut(&mut self, y: usize) -> &mut [f32] {
        let i = self.idx(y, 0);
        let n = self.w * self.c;
        &mut self.data[i..i + n]
    }

    /// Applies `f` to every interior value (the border stays zero).
    pub fn map_interior(&mut self, f: impl Fn(f32) -> f32 + Sync) {
        use rayon::prelude::*;
        let (wp, c, w) = (self.wp(), self.c, self.w);
        self.data
            .par_chunks_mut(wp * c)
            .skip(1)
            .take(self.h)
            .for_each(|row| row[c..(w + 1) * c].iter_mut().for_each(|v| *v = f(*v)));
    }

    /// Re-zeroes the left and right border columns of interior rows.
    pub fn clear_border_columns(&mut self) {
        let (wp, c) = (self.wp(), self.c);
        for y in 1..=self.h {
            self.data[y * wp * c..(y * wp + 1) * c].fill(0.0);
            self.data[((y + 1) * wp - 1) * c..(y + 1) * wp * c].fill(0.0);
        }
    }
}

/// Conv weights prepared for [`conv3x3_rows`]: `w[tap][cin][cout]`, tap = `(dy+1)*3 + (dx+1)`.
#[derive(Clone, Debug)]
pub struct ConvWeights {
    pub cin: usize,
    pub cout: usize,
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvWeights {
    /// From PyTorch layout `[cout][cin][3][3]`.
    pub fn from_oihw(cin: usize, cout: usize, oihw: &[f32], bias: &[f32]) -> Self {
        assert_eq!(oihw.len(), cout * cin * 9);
        assert_eq!(bias.len(), cout);
        let mut w = vec![0.0; 9 * cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                for t in 0..9 {
                    w[(t * cin + i) * cout + o] = oihw[(o * cin + i) * 9 + t];
                }
            }
        }
        Self {
            cin,
            cout,
            w,
            bias: bias.to_vec(),
        }
    }

    /// Back to PyTorch layout `[cout][cin][3][3]` (the inverse of [`ConvWeights::from_oihw`]).
    pub fn to_oihw(&self) -> Vec<f32> {
        let (cin, cout) = (self.cin, self.cout);
        let mut v = vec![0.0; cout * cin * 9];
        for o in 0..cout {
            for i in 0..cin {
                for t in 0..9 {
                    v[(o * cin + i) * 9 + t] = self.w[(t * cin + i) * cout + o];
                }
            }
        }
        v
    }
}

/// Number of padded-grid positions computed for interior rows `y0..y1` (see [`conv3x3_rows`]).
pub fn rows_len(w: usize, y0: usize, y1: usize) -> usize {
    (y1 - y0) * (w + 2) - 2
}

/// Computes the convolution outputs for interior rows `y0..y1` of `src` into `out`.
///
/// `out` holds [`rows_len`] positions of `cout` values each: position `p` of the padded grid
/// (starting at `(y0+1)*(w+2) + 1`) lands at `out[(p - p0) * cout..]`. Positions on the border
/// columns hold garbage. Bias is included.
pub fn conv3x3_rows(
    src: &FeatureMap,
    cw: &ConvWeights,
    y0: usize,
    y1: usize,
    out: &mut [f32],
    par: Parallelism,
) {
    assert_eq!(src.c, cw.cin, "conv input channels");
    assert!(y0 < y1 && y1 <= src.h, "conv rows {y0}..{y1} of {}", src.h);
    let wp = src.wp();
    let m = rows_len(src.w, y0, y1);
    let (cin, cout) = (cw.cin, cw.cout);
    assert_eq!(out.len(), m * cout, "conv output length");
    let p0 = (y0 + 1) * wp + 1;
    // Blocks of output rows: each block gathers its 3x3 neighbourhoods into a small im2col
    // buffer (it stays in L2) and runs one GEMM with K = 9 * cin. Blocks run in parallel.
    let block = (BLOCK_VALUES / (9 * cin)).clamp(8, 512);
    let k = 9 * cin;
    let use_direct = direct::enabled() && cout.is_multiple_of(16);
    // The direct kernel's weights: per block of 16 output channels, 9*cin rows of 16 values.
    let packed = if use_direct {
        direct::pack(&cw.w, cin, cout)
    } else {
        Vec::new()
    };
    let run = |(b, out): (usize, &mut [f32])| {
        let pb = p0 + b * block;
        let mb = out.len() / cout;
        if use_direct {
            // SAFETY: AVX2 and FMA are present; positions read lie in y0*wp ..= (y1+2)*wp - 1
            // (as for the im2col copy below), inside `src.data`; `cw.w` is 9*cin x cout.
            unsafe { direct::conv_rows(&src.data, wp, cin, &packed, &cw.bias, cout, pb, out) };
            return;
        }
        SCRATCH.with_borrow_mut(|cols| {
            cols.resize(mb * k, 0.0);
            for (r, dst) in cols.chunks_exact_mut(k).enumerate() {
                // The three taps of a kernel row are three consecutive pixels: one copy each.
                for dy in 0..3 {
                    // In bounds: positions read lie in y0*wp ..= (y1+2)*wp - 1.
                    let q = pb + r + dy * wp - wp - 1;
                    dst[3 * dy * cin..3 * (dy + 1) * cin]
                        .copy_from_slice(&src.data[q * cin..(q + 3) * cin]);
                }
            }
            for row in out.chunks_exact_mut(cout) {
                row.copy_from_slice(&cw.bias);
            }
            // SAFETY: `out` is mb x cout row-major, `cols` is mb x k row-major and `cw.w` is
            // k x cout row-major (asserted lengths); no two of them alias.
            unsafe {
                gemm::gemm(
                    mb,
                    cout,
                    k,
                    out.as_mut_ptr(),
                    1,
                    cout as isize,
                    true,
                    cols.as_ptr(),
                    1,
                    k as isize,
                    cw.w.as_ptr(),
                    1,
                    cout as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        });
    };
    match par {
        Parallelism::None => out.chunks_mut(block * cout).enumerate().for_each(run),
        _ => out.par_chunks_mut(block * cout).enumerate().for_each(run),
    }
}

/// Direct 3x3 convolution with AVX2 + FMA (see the module documentation).
pub mod direct {
    use std::sync::atomic::{AtomicBool, Ordering};

    static OFF: AtomicBool = AtomicBool::new(false);

    /// Turns the direct kernel off (true) or back on, process-wide: for benchmarks that time
    /// it against the im2col GEMM in one run.
    pub fn set_off(off: bool) {
        OFF.store(off, Ordering::Relaxed);
    }

    /// Whether convolutions use [`conv_rows`]: available, and not turned off by [`set_off`]
    /// or by `ADABM_F32_CONV=gemm` in the environment.
    pub fn enabled() -> bool {
        static ENV_OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let env_off =
            *ENV_OFF.get_or_init(|| std::env::var("ADABM_F32_CONV").is_ok_and(|v| v == "gemm"));
        available() && !env_off && !OFF.load(Ordering::Relaxed)
    }

    /// Whether [`conv_rows`] can run here (checked once by std).
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `w` (`9*cin x cout`, row-major) as [`conv_rows`] reads it: for each block of 16 output
    /// channels, its `9*cin` rows of 16 values one after the other.
    pub fn pack(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
        let k = 9 * cin;
        let mut p = Vec::with_capacity(k * cout);
        for ob in (0..cout).step_by(16) {
            for row in 0..k {
                p.extend_from_slice(&w[row * cout + ob..row * cout + ob + 16]);
            }
        }
        p
    }

    /// Outputs of padded-grid positions `pb..pb + out.len()/cout` (as [`super::conv3x3_rows`]
    /// lays them out), bias included, from weights laid out by [`pack`]. `cout` must be a
    /// multiple of 16.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; every input position `pb + r + dy*wp + dx - wp - 1`
    /// (r < out.len()/cout, dy, dx < 3) must lie in `src` (`cin` values each), and `w` must hold
    /// `9*cin*cout` values, `bias` `cout`.
    #[allow(clippy::too_many_arguments)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv_rows(
        src: &[f32],
        wp: usize,
        cin: usize,
        w: &[f32],
        bias: &[f32],
        cout: usize,
        pb: usize,
        out: &mut [f32],
    ) {
        debug_assert!(cout.is_multiple_of(16) && w.len() == 9 * cin * cout && bias.len() == cout);
        let mb = out.len() / cout;
        // Output-channel blocks outside, position blocks inside: the block's weights
        // (9·cin x 16) stay in L1/L2 while the positions stream.
        for ob in (0..cout).step_by(16) {
            let mut r = 0;
            while r < mb {
                let n = (mb - r).min(6);
                let q = pb + r - wp - 1;
                debug_assert!((q + n + 1 + 2 * wp + 1) * cin <= src.len());
                let x = unsafe { src.as_ptr().add(q * cin) };
                let o = unsafe { out.as_mut_ptr().add(r * cout) };
                // SAFETY: as the caller promised; n ≤ 6 positions from r.
                unsafe {
                    match n {
                        6 => block::<6>(x, wp, cin, w, bias, cout, ob, o),
                        5 => block::<5>(x, wp, cin, w, bias, cout, ob, o),
                        4 => block::<4>(x, wp, cin, w, bias, cout, ob, o),
                        3 => block::<3>(x, wp, cin, w, bias, cout, ob, o),
                        2 => block::<2>(x, wp, cin, w, bias, cout, ob, o),
                        _ => block::<1>(x, wp, cin, w, bias, cout, ob, o),
                    }
                }
                r += n;
            }
        }
    }

    /// `N` consecutive positions x 16 output channels from `ob`: 2N accumulators.
    #[allow(clippy::too_many_arguments)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const N: usize>(
        x: *const f32,
        wp: usize,
        cin: usize,
        w: &[f32],
        bias: &[f32],
        cout: usize,
        ob: usize,
        out: *mut f32,
    ) {
        use std::arch::x86_64::*;
        // SAFETY (whole body): the caller's bounds; unaligned loads and stores only.
        unsafe {
            let b0 = _mm256_loadu_ps(bias.as_ptr().add(ob));
            let b1 = _mm256_loadu_ps(bias.as_ptr().add(ob + 8));
            let mut acc = [[b0, b1]; N];
            for tap in 0..9 {
                let xt = x.add((tap / 3 * wp + tap % 3) * cin);
                let wt = w.as_ptr().add(ob * 9 * cin + tap * cin * 16);
                for ci in 0..cin {
                    let w0 = _mm256_loadu_ps(wt.add(ci * 16));
                    let w1 = _mm256_loadu_ps(wt.add(ci * 16 + 8));
                    for (px, a) in acc.iter_mut().enumerate() {
                        let v = _mm256_broadcast_ss(&*xt.add(px * cin + ci));
                        a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(v, w1, a[1]);
                    }
                }
            }
            for (px, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(px * cout + ob), a[0]);
                _mm256_storeu_ps(out.add(px * cout + ob + 8), a[1]);
            }
        }
    }

    /// Never called: [`available`] is false off x86-64.
    #[allow(clippy::too_many_arguments)]
    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn conv_rows(
        _src: &[f32],
        _wp: usize,
        _cin: usize,
        _w: &[f32],
        _bias: &[f32],
        _cout: usize,
        _pb: usize,
        _out: &mut [f32],
    ) {
        unreachable!("direct::available() is false here")
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Full 3x3 convolution (zero padding, stride 1) of `src` into a new map of `cout` channels.
pub fn conv3x3(src: &FeatureMap, cw: &ConvWeights, par: Parallelism) -> FeatureMap {
    let mut dst = FeatureMap::zeros(src.h, src.w, cw.cout);
    conv3x3_into(src, cw, &mut dst, par);
    dst
}

/// Like [`conv3x3`], writing into an existing map of the right shape.
pub fn conv3x3_into(src: &FeatureMap, cw: &ConvWeights, dst: &mut FeatureMap, par: Parallelism) {
    assert_eq!((dst.h, dst.w, dst.c), (src.h, src.w, cw.cout));
    if src.h == 0 || src.w == 0 {
        return;
    }
    let p0 = src.wp() + 1;
    let m = rows_len(src.w, 0, src.h);
    let out = &mut dst.data[p0 * cw.cout..(p0 + m) * cw.cout];
    conv3x3_rows(src, cw, 0, src.h, out, par);
    dst.clear_border_columns();
}

/// PyTorch `PixelShuffle(r)` of conv outputs for interior rows `y0..y1` (as produced by
/// [`conv3x3_rows`] on a map of width `w`) into `dst`, a map of `r*h x r*w x c`.
/// Input channel `c*r*r + i*r + j` goes to output pixel `(r*y + i, r*x + j)`, channel `c`.
pub fn pixel_shuffle_rows(
    conv_out: &[f32],
    w: usize,
    y0: usize,
    y1: usize,
    r: usize,
    dst: &mut FeatureMap,
) {
    let c = dst.c;
    let cin = c * r * r;
    let wp = w + 2;
    let p0 = (y0 + 1) * wp + 1;
    for y in y0..y1 {
        for x in 0..w {
            let p = (y + 1) * wp + x + 1 - p0;
            let src = &conv_out[p * cin..(p + 1) * cin];
            for i in 0..r {
                for j in 0..r {
                    let d = dst.idx(r * y + i, r * x + j);
                    for ch in 0..c {
                        dst.data[d + ch] = src[ch * r * r + i * r + j];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::random::Rng;

    /// Plain 3x3 convolution in f64, zero padding.
    fn naive(x: &FeatureMap, cw: &ConvWeights) -> Vec<f64> {
        let (h, w, cin, cout) = (x.h, x.w, cw.cin, cw.cout);
        let mut out = vec![0.0f64; h * w * cout];
        for y in 0..h {
            for xx in 0..w {
                for o in 0..cout {
                    let mut s = cw.bias[o] as f64;
                    for t in 0..9 {
                        let (yy, xs) = (
                            y as isize + t as isize / 3 - 1,
                            xx as isize + t as isize % 3 - 1,
                        );
                        if yy < 0 || xs < 0 || yy >= h as isize || xs >= w as isize {
                            continue;
                        }
                        let d = x.idx(yy as usize, xs as usize);
                        for i in 0..cin {
                            s += x.data[d + i] as f64 * cw.w[(t * cin + i) * cout + o] as f64;
                        }
                    }
                    out[(y * w + xx) * cout + o] = s;
                }
            }
        }
        out
    }

    /// The direct AVX2 kernel (cout a multiple of 16) and the im2col GEMM (other cout) give
    /// the convolution on odd sizes, several row blocks and position tails, the same bits with
    /// and without threads.
    #[test]
    fn conv3x3_matches_a_plain_convolution() {
        let mut rng = Rng::new(3);
        for (h, w, cin, cout) in [
            (1, 1, 3, 16),
            (5, 7, 3, 64),
            (9, 13, 64, 64),
            (4, 300, 64, 64), // several row blocks
            (6, 5, 32, 256),
            (7, 11, 64, 3),
            (3, 9, 16, 24),
        ] {
            let mut x = FeatureMap::zeros(h, w, cin);
            for y in 0..h {
                for xx in 0..w {
                    let d = x.idx(y, xx);
                    for i in 0..cin {
                        x.data[d + i] = rng.symmetric(1.0);
                    }
                }
            }
            let oihw: Vec<f32> = (0..cout * cin * 9).map(|_| rng.symmetric(0.2)).collect();
            let bias: Vec<f32> = (0..cout).map(|_| rng.symmetric(0.5)).collect();
            let cw = ConvWeights::from_oihw(cin, cout, &oihw, &bias);
            let want = naive(&x, &cw);
            let got = conv3x3(&x, &cw, Parallelism::None);
            let par = conv3x3(&x, &cw, Parallelism::Rayon(2));
            assert!(
                got.data == par.data,
                "{h}x{w} {cin}->{cout}: threads change the result"
            );
            for y in 0..h {
                for xx in 0..w {
                    let d = got.idx(y, xx);
                    for o in 0..cout {
                        let (g, e) = (got.data[d + o] as f64, want[(y * w + xx) * cout + o]);
                        assert!(
                            (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                            "{h}x{w} {cin}->{cout} at ({y},{xx}) ch {o}: {g} vs {e}"
                        );
                    }
                }
            }
            assert!(
                got.data[..got.idx(0, 0)].iter().all(|&v| v == 0.0),
                "border written"
            );
        }
    }
}
