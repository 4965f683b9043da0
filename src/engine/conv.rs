//! 3x3 convolution on zero-padded NHWC feature maps, as nine shifted GEMMs.
//!
//! A [`FeatureMap`] of `h x w x c` is stored with a one-pixel zero border, `(h+2) x (w+2) x c`.
//! Seen as a matrix of `(h+2)(w+2)` rows and `c` columns, the input of tap `(dy, dx)` for every
//! output position is the same matrix shifted by `dy*(w+2) + dx` rows: the nine shifted rows are
//! gathered per block of output rows into a small im2col buffer and multiplied in one GEMM.
//! The outputs that land on the border columns are garbage and are zeroed afterwards.

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
    let run = |(b, out): (usize, &mut [f32])| {
        let pb = p0 + b * block;
        let mb = out.len() / cout;
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
