//! 3x3 convolution on zero-padded NHWC feature maps, as nine shifted GEMMs.
//!
//! A [`FeatureMap`] of `h x w x c` is stored with a one-pixel zero border, `(h+2) x (w+2) x c`.
//! Seen as a matrix of `(h+2)(w+2)` rows and `c` columns, the input of tap `(dy, dx)` for every
//! output position is the same matrix shifted by `dy*(w+2) + dx` rows: the nine shifted rows are
//! gathered per block of output rows into a small im2col buffer and multiplied in one GEMM.
//! The outputs that land on the border columns are garbage and are zeroed afterwards.
//!
//! On x86-64 with AVX2 and FMA (AVX-512 F where present) and on NEON, convolutions with a
//! multiple of 16 output channels skip the im2col copy and the GEMM ([`ConvPath`]): with at
//! least 16 input channels (a multiple of 8) they run as Winograd F(4x4, 3x3) ([`winograd`]:
//! 2.25 instead of 9 products per output; 2.0x the direct kernel on the 64->64 conv on Zen 4
//! and 2.6x on 64->256), otherwise [`direct`] keeps a few output positions x 16 channels in
//! registers and walks the 9 taps x `cin` inputs with broadcast-FMAs; the RGB tail (3 output
//! channels) has a direct kernel of its own (about 5x the GEMM). `cargo bench --bench
//! reference`, BENCHMARKS.md. `ADABM_F32_CONV=direct` or `=gemm` picks a slower path.
//! Each output is computed in one fixed order whatever the row blocks and threads, so results
//! are deterministic.

use gemm::Parallelism;
use rayon::prelude::*;

/// im2col values per row block of [`conv3x3_rows`] (512 KiB of f32).
const BLOCK_VALUES: usize = 128 * 1024;

/// A zero-padded NHWC feature map.
#[derive(Clone, Debug, Default, PartialEq)]
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

    /// Makes this an `h x w x c` map in its own memory (allocating only to grow it). When the
    /// shape is already that one nothing is written: the zero border is kept (nothing writes
    /// it) and the interior holds the previous values, for a writer that overwrites every one
    /// of them; otherwise the map is zeroed.
    pub fn reshape(&mut self, h: usize, w: usize, c: usize) {
        let n = (h + 2) * (w + 2) * c;
        if (self.h, self.w, self.c) != (h, w, c) || self.data.len() != n {
            (self.h, self.w, self.c) = (h, w, c);
            self.data.clear();
            self.data.resize(n, 0.0);
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
    conv3x3_rows_by(
        ConvPath::for_shape(cw.cin, cw.cout),
        src,
        cw,
        y0,
        y1,
        out,
        par,
    );
}

/// How an f32 convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// im2col copy and a GEMM (any shape, any CPU).
    Gemm,
    /// [`direct`] (AVX2 + FMA, AVX-512 F or NEON, shapes of [`direct::suits`]).
    Direct,
    /// [`winograd`] F(4x4, 3x3) (AVX2 + FMA or NEON, shapes of [`winograd::suits`]).
    Winograd,
    /// [`winograd`] F(2x2, 3x3) (as [`ConvPath::Winograd`]; for comparison).
    Winograd2,
}

impl ConvPath {
    /// The path [`conv3x3_rows`] takes for this shape on this machine and settings.
    pub fn for_shape(cin: usize, cout: usize) -> Self {
        if winograd::enabled() && winograd::suits(cin, cout) {
            Self::Winograd
        } else {
            Self::local_for_shape(cin, cout)
        }
    }

    /// The path [`conv3x3_local`] takes: direct or GEMM, never Winograd.
    pub fn local_for_shape(cin: usize, cout: usize) -> Self {
        if direct::enabled() && direct::suits(cin, cout) {
            Self::Direct
        } else {
            Self::Gemm
        }
    }

    /// Whether this path can compute a `cin -> cout` conv here (whatever the settings).
    pub fn can_run(self, cin: usize, cout: usize) -> bool {
        match self {
            Self::Gemm => true,
            Self::Direct => direct::available() && direct::suits(cin, cout),
            Self::Winograd | Self::Winograd2 => winograd::available() && winograd::suits(cin, cout),
        }
    }
}

static PORTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets for the whole process (for tests and comparisons) whether the direct and Winograd
/// convs run their portable one-lane forms (plain `f32`, `mul_add` for the fused steps)
/// instead of their vector kernels: the same bits, slower. Every vector kernel computes per
/// lane what its portable form computes, so the f32 convs give the same bits on every CPU.
pub fn set_portable(on: bool) {
    PORTABLE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_portable`] is on.
fn portable() -> bool {
    PORTABLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `ADABM_F32_CONV` (read once) allows `path`: `gemm` allows only the GEMM,
/// `direct` the GEMM and the direct kernels, anything else (or nothing) every path.
fn env_allows(path: ConvPath) -> bool {
    static LIMIT: std::sync::OnceLock<ConvPath> = std::sync::OnceLock::new();
    let limit = *LIMIT.get_or_init(|| match std::env::var("ADABM_F32_CONV").as_deref() {
        Ok("gemm") => ConvPath::Gemm,
        Ok("direct") => ConvPath::Direct,
        _ => ConvPath::Winograd,
    });
    match limit {
        ConvPath::Gemm => path == ConvPath::Gemm,
        ConvPath::Direct => matches!(path, ConvPath::Gemm | ConvPath::Direct),
        _ => true,
    }
}

/// [`conv3x3_rows`] through a given path (panics when the path cannot run this shape here:
/// [`ConvPath::can_run`]).
pub fn conv3x3_rows_by(
    path: ConvPath,
    src: &FeatureMap,
    cw: &ConvWeights,
    y0: usize,
    y1: usize,
    out: &mut [f32],
    par: Parallelism,
) {
    rows_with(path, src, cw, None, y0, y1, out, par, Post::None);
}

/// The f32 kernels' packed weights of one conv, made on first use for each path and kept, so
/// that a prepared network does not re-pack (and re-allocate) every conv's weights on every
/// frame. Only for weights that do not change afterwards (a [`Network`]'s layers).
///
/// [`Network`]: super::edsr::Network
#[derive(Clone, Debug, Default)]
pub struct PackedWeights {
    direct: std::sync::OnceLock<Packed>,
    wino4: std::sync::OnceLock<Packed>,
    wino2: std::sync::OnceLock<Packed>,
}

/// Packed weights and the `(cin, cout)` they were packed for.
#[derive(Clone, Debug)]
struct Packed {
    shape: (usize, usize),
    data: Vec<f32>,
}

impl PackedWeights {
    /// `cw` packed for `path` (nothing for the GEMM, which reads `cw.w`).
    fn pack(path: ConvPath, cw: &ConvWeights) -> Vec<f32> {
        match path {
            ConvPath::Gemm => Vec::new(),
            ConvPath::Direct if cw.cout == 3 => direct::pack_rgb(&cw.w, cw.cin),
            ConvPath::Direct => direct::pack(&cw.w, cw.cin, cw.cout),
            ConvPath::Winograd => winograd::pack::<4>(&cw.w, cw.cin, cw.cout),
            ConvPath::Winograd2 => winograd::pack::<2>(&cw.w, cw.cin, cw.cout),
        }
    }

    /// `cw` packed for `path`, from the cache (made now when missing). Panics when the cache
    /// holds the weights of a conv of another shape (the kernels would read out of bounds).
    fn get(&self, path: ConvPath, cw: &ConvWeights) -> &[f32] {
        let slot = match path {
            ConvPath::Gemm => return &[],
            ConvPath::Direct => &self.direct,
            ConvPath::Winograd => &self.wino4,
            ConvPath::Winograd2 => &self.wino2,
        };
        let p = slot.get_or_init(|| Packed {
            shape: (cw.cin, cw.cout),
            data: Self::pack(path, cw),
        });
        assert_eq!(
            p.shape,
            (cw.cin, cw.cout),
            "packed weights of another conv's shape"
        );
        &p.data
    }
}

/// [`conv3x3_rows_by`] with the packed weights from `cache` (for `cw`) when given, each output
/// through `post` (anything but [`Post::None`] on the Winograd paths only).
#[allow(clippy::too_many_arguments)]
fn rows_with(
    path: ConvPath,
    src: &FeatureMap,
    cw: &ConvWeights,
    cache: Option<&PackedWeights>,
    y0: usize,
    y1: usize,
    out: &mut [f32],
    par: Parallelism,
    post: Post,
) {
    assert_eq!(src.c, cw.cin, "conv input channels");
    assert!(y0 < y1 && y1 <= src.h, "conv rows {y0}..{y1} of {}", src.h);
    assert!(
        post == Post::None || matches!(path, ConvPath::Winograd | ConvPath::Winograd2),
        "{post:?} on the {path:?} path"
    );
    let wp = src.wp();
    let m = rows_len(src.w, y0, y1);
    let (cin, cout) = (cw.cin, cw.cout);
    assert_eq!(out.len(), m * cout, "conv output length");
    assert_eq!(cw.w.len(), 9 * cin * cout, "conv weights");
    assert_eq!(cw.bias.len(), cout, "conv bias");
    assert!(
        path.can_run(cin, cout),
        "{path:?} cannot run a {cin}->{cout} conv here"
    );
    let p0 = (y0 + 1) * wp + 1;
    let parallel = !matches!(par, Parallelism::None);
    let owned;
    let packed = match cache {
        Some(c) => c.get(path, cw),
        None => {
            owned = PackedWeights::pack(path, cw);
            &owned[..]
        }
    };
    // SAFETY (all three): the path's kernels can run here and the shape suits (can_run),
    // `packed` is packed for this path, the rows, weights and `out` were checked above.
    match path {
        ConvPath::Winograd => {
            unsafe {
                winograd::conv_rows::<4>(src, packed, &cw.bias, cout, y0, y1, out, parallel, post)
            };
            return;
        }
        ConvPath::Winograd2 => {
            unsafe {
                winograd::conv_rows::<2>(src, packed, &cw.bias, cout, y0, y1, out, parallel, post)
            };
            return;
        }
        _ => {}
    }
    // Blocks of output rows: each block gathers its 3x3 neighbourhoods into a small im2col
    // buffer (it stays in L2) and runs one GEMM with K = 9 * cin. Blocks run in parallel.
    let block = (BLOCK_VALUES / (9 * cin)).clamp(8, 512);
    let k = 9 * cin;
    // The direct kernel's weights (`packed`): per block of 16 output channels, 9*cin rows of
    // 16 values (for 3 output channels, per channel its 9*cin values).
    let use_direct = path == ConvPath::Direct;
    let run = |(b, out): (usize, &mut [f32])| {
        let pb = p0 + b * block;
        let mb = out.len() / cout;
        if use_direct {
            let (x, b) = (&src.data[..], &cw.bias[..]);
            match (portable(), cout == 3) {
                (true, true) => direct::conv_rows_rgb_portable(x, wp, cin, packed, b, pb, out),
                (true, false) => direct::conv_rows_portable(x, wp, cin, packed, b, cout, pb, out),
                // SAFETY (both): the direct kernels can run here (can_run); positions read lie
                // in y0*wp ..= (y1+2)*wp - 1 (as for the im2col copy below), inside
                // `src.data`; `packed` is packed for this path and shape.
                (false, true) => unsafe { direct::conv_rows_rgb(x, wp, cin, packed, b, pb, out) },
                (false, false) => unsafe {
                    direct::conv_rows(x, wp, cin, packed, b, cout, pb, out)
                },
            }
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

/// A process-wide switch between a family of f32 kernels' AVX-512 F forms (on by default,
/// used where the CPU has AVX-512 F) and their AVX2 forms, for comparisons: the same bits.
struct Avx512Switch(std::sync::atomic::AtomicBool);

impl Avx512Switch {
    const fn new() -> Self {
        Self(std::sync::atomic::AtomicBool::new(true))
    }

    fn set(&self, on: bool) {
        self.0.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the AVX-512 forms run now: the CPU has AVX-512 F and the switch is on.
    #[cfg(target_arch = "x86_64")]
    fn uses(&self) -> bool {
        static HAS: std::sync::LazyLock<bool> =
            std::sync::LazyLock::new(|| std::is_x86_feature_detected!("avx512f"));
        *HAS && self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The f32 vector widths the direct and Winograd kernels are written over: 1 (portable), 4
/// (NEON), 8 (AVX2) and 16 (AVX-512 F) lanes, each the same IEEE operation per lane.
mod lanes {
    /// 1, 4 (NEON), 8 (AVX2) or 16 (AVX-512 F) f32 lanes: the vector operations the direct
    /// and Winograd kernels use, each the same IEEE operation per lane at every width. The
    /// methods are inlined into the kernels, whose entry points enable the width's features
    /// (`winograd::input_transform` for 8, its `_512` form for 16, `direct::rows_avx2` …).
    pub(super) trait Lanes {
        type V: Copy;
        const N: usize;
        /// # Safety (all methods)
        /// The width's target features; pointers valid for `N` values.
        unsafe fn splat(x: f32) -> Self::V;
        unsafe fn load(p: *const f32) -> Self::V;
        unsafe fn store(p: *mut f32, v: Self::V);
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
        /// `a` where `a > b`, else `b` (`b` where either is NaN): `v.max(0.0)` as `max(v, 0)`.
        unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
        /// `a·b + c`, one rounding.
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        /// `−(a·b) + c`, one rounding.
        unsafe fn nfma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    }

    /// 8 lanes of `__m256`.
    #[cfg(target_arch = "x86_64")]
    pub(super) struct L8;

    /// 16 lanes of `__m512`.
    #[cfg(target_arch = "x86_64")]
    pub(super) struct L16;

    /// `impl Lanes` for one width: the type, its vector and lane count, and its intrinsics in the
    /// order of the trait's methods.
    macro_rules! lanes {
        ($t:ident, $v:ident, $n:literal, $($f:ident: $i:ident($($a:ident),*)),*) => {
            #[cfg(target_arch = "x86_64")]
            impl Lanes for $t {
                type V = std::arch::x86_64::$v;
                const N: usize = $n;
                $(
                    #[inline(always)]
                    #[allow(clippy::unused_unit)]
                    unsafe fn $f($($a: lanes!(@ty $a)),*) -> lanes!(@ret $f) {
                        // SAFETY: the caller's features and pointers.
                        unsafe { std::arch::x86_64::$i($($a),*) }
                    }
                )*
            }
        };
        (@ty x) => { f32 };
        (@ty p) => { *const f32 };
        (@ty q) => { *mut f32 };
        (@ty $a:ident) => { Self::V };
        (@ret store) => { () };
        (@ret $f:ident) => { Self::V };
    }

    lanes!(L8, __m256, 8,
        splat: _mm256_set1_ps(x), load: _mm256_loadu_ps(p), store: _mm256_storeu_ps(q, v),
        add: _mm256_add_ps(a, b), sub: _mm256_sub_ps(a, b), mul: _mm256_mul_ps(a, b),
        max: _mm256_max_ps(a, b), fma: _mm256_fmadd_ps(a, b, c),
        nfma: _mm256_fnmadd_ps(a, b, c));
    lanes!(L16, __m512, 16,
        splat: _mm512_set1_ps(x), load: _mm512_loadu_ps(p), store: _mm512_storeu_ps(q, v),
        add: _mm512_add_ps(a, b), sub: _mm512_sub_ps(a, b), mul: _mm512_mul_ps(a, b),
        max: _mm512_max_ps(a, b), fma: _mm512_fmadd_ps(a, b, c),
        nfma: _mm512_fnmadd_ps(a, b, c));

    /// One lane of plain `f32`: the portable kernels ([`Kernels::Portable`]), the definition
    /// each vector width computes lane by lane.
    pub(super) struct L1;

    impl Lanes for L1 {
        type V = f32;
        const N: usize = 1;
        #[inline(always)]
        unsafe fn splat(x: f32) -> f32 {
            x
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> f32 {
            // SAFETY: the caller's pointer.
            unsafe { *p }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: f32) {
            // SAFETY: the caller's pointer.
            unsafe { *p = v }
        }
        #[inline(always)]
        unsafe fn add(a: f32, b: f32) -> f32 {
            a + b
        }
        #[inline(always)]
        unsafe fn sub(a: f32, b: f32) -> f32 {
            a - b
        }
        #[inline(always)]
        unsafe fn mul(a: f32, b: f32) -> f32 {
            a * b
        }
        #[inline(always)]
        unsafe fn max(a: f32, b: f32) -> f32 {
            if a > b { a } else { b }
        }
        #[inline(always)]
        unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
            a.mul_add(b, c)
        }
        #[inline(always)]
        unsafe fn nfma(a: f32, b: f32, c: f32) -> f32 {
            (-a).mul_add(b, c)
        }
    }

    /// 4 lanes of `float32x4_t` (NEON, part of every 64-bit ARM core).
    #[cfg(target_arch = "aarch64")]
    pub(super) struct L4;

    #[cfg(target_arch = "aarch64")]
    impl Lanes for L4 {
        type V = std::arch::aarch64::float32x4_t;
        const N: usize = 4;
        // SAFETY (every method): NEON is always there on aarch64; the caller's pointers.
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self::V {
            unsafe { std::arch::aarch64::vdupq_n_f32(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::V {
            unsafe { std::arch::aarch64::vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self::V) {
            unsafe { std::arch::aarch64::vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
            unsafe { std::arch::aarch64::vaddq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
            unsafe { std::arch::aarch64::vsubq_f32(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
            unsafe { std::arch::aarch64::vmulq_f32(a, b) }
        }
        /// `fmax` treats NaN and ±0 otherwise than x86's `maxps`: compare and select instead.
        #[inline(always)]
        unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
            use std::arch::aarch64::{vbslq_f32, vcgtq_f32};
            unsafe { vbslq_f32(vcgtq_f32(a, b), a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            unsafe { std::arch::aarch64::vfmaq_f32(c, a, b) }
        }
        /// `c − a·b` with one rounding: the same value as `−(a·b) + c`.
        #[inline(always)]
        unsafe fn nfma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            unsafe { std::arch::aarch64::vfmsq_f32(c, a, b) }
        }
    }
}

/// Direct 3x3 convolution with AVX2 + FMA, AVX-512 F or NEON (see the module documentation).
pub mod direct {
    use std::sync::atomic::{AtomicBool, Ordering};

    #[cfg(target_arch = "aarch64")]
    use super::lanes::L4;
    use super::lanes::Lanes;
    #[cfg(target_arch = "x86_64")]
    use super::lanes::{L8, L16};

    static OFF: AtomicBool = AtomicBool::new(false);

    /// Turns the direct kernel off (true) or back on, process-wide: for benchmarks that time
    /// it against the im2col GEMM in one run.
    pub fn set_off(off: bool) {
        OFF.store(off, Ordering::Relaxed);
    }

    /// Whether convolutions use [`conv_rows`]: available, and not turned off by [`set_off`]
    /// or by `ADABM_F32_CONV=gemm` in the environment.
    pub fn enabled() -> bool {
        available() && super::env_allows(super::ConvPath::Direct) && !OFF.load(Ordering::Relaxed)
    }

    /// Whether [`conv_rows`] can run here: AVX2 and FMA on x86-64 (checked once by std), NEON
    /// on 64-bit ARM (always there).
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(target_arch = "aarch64")]
        {
            true
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
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
    /// multiple of 16. Blocks of positions x 16 or 32 output channels, each output from its
    /// bias by FMA over the taps and then the input channels in order — the same operations per
    /// lane at every width, so the same bits: 6 positions x 16 channels in two 256-bit vectors
    /// on AVX2 + FMA; where the CPU has AVX-512 F ([`set_avx512`]) 10 positions x 32 channels
    /// in two 512-bit vectors (8 x 16 for an odd last block); 6 x 16 in four 128-bit vectors on
    /// NEON.
    ///
    /// # Safety
    /// [`available`]; every input position `pb + r + dy*wp + dx - wp - 1` (r < out.len()/cout,
    /// dy, dx < 3) must lie in `src` (`cin` values each), and `w` must hold `9*cin*cout`
    /// values, `bias` `cout`.
    #[allow(clippy::too_many_arguments)]
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
        let a = (src, wp, cin, w, bias, cout, pb);
        // SAFETY (every arm): the caller's promises; each width only where its features are.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if uses_avx512() {
                rows_avx512(a, out)
            } else {
                rows_avx2(a, out)
            }
        }
        #[cfg(target_arch = "aarch64")]
        unsafe {
            rows::<4, 6, L4>(a, out, 0..a.5)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = (a, out);
            unreachable!("direct::available() is false here")
        }
    }

    /// [`conv_rows`]' arguments but the output.
    type Args<'a> = (&'a [f32], usize, usize, &'a [f32], &'a [f32], usize, usize);

    /// [`conv_rows`] on AVX2 + FMA.
    ///
    /// # Safety
    /// As [`conv_rows`], on a CPU with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(a: Args, out: &mut [f32]) {
        // SAFETY: the caller's promises; AVX2 and FMA enabled here.
        unsafe { rows::<2, 6, L8>(a, out, 0..a.5) }
    }

    /// [`conv_rows`] on AVX-512 F.
    ///
    /// # Safety
    /// As [`conv_rows`], on a CPU with AVX-512 F, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn rows_avx512(a: Args, out: &mut [f32]) {
        // Pairs of 16-channel blocks (20 accumulators: 2 weight loads and 10 broadcasts per
        // 20 FMAs; 12 positions spilled), a last odd block alone.
        let (cout, pairs) = (a.5, a.5 / 32 * 32);
        // SAFETY: the caller's promises; AVX-512 F enabled here.
        unsafe {
            rows::<2, 10, L16>(a, out, 0..pairs);
            rows::<1, 8, L16>(a, out, pairs..cout);
        }
    }

    /// [`conv_rows`] for the output channels `chans` at one width: `K` vectors of `L` hold
    /// `K · L::N` (16 or 32) channels, blocks of up to `MOST` (≤ 10) positions. Output-channel
    /// blocks outside, position blocks inside: a block's weights (9·cin x 16 or 32) stay in
    /// L1/L2 while the positions stream.
    ///
    /// # Safety
    /// As [`conv_rows`], with `L`'s target features; `K · L::N` is 16 or 32 and divides
    /// `chans.len()`, `chans.start` a multiple of 16.
    #[inline(always)]
    unsafe fn rows<const K: usize, const MOST: usize, L: Lanes>(
        (src, wp, cin, w, bias, cout, pb): Args,
        out: &mut [f32],
        chans: std::ops::Range<usize>,
    ) {
        debug_assert!(matches!(K * L::N, 16 | 32) && MOST <= 10);
        for ob in chans.step_by(K * L::N) {
            for (r, n) in position_blocks(out.len() / cout, MOST) {
                let q = pb + r - wp - 1;
                debug_assert!((q + n + 1 + 2 * wp + 1) * cin <= src.len());
                // SAFETY: as the caller promised; n ≤ MOST positions from r.
                unsafe {
                    let x = src.as_ptr().add(q * cin);
                    let w = w.as_ptr().add(ob * 9 * cin);
                    let (b, o) = (bias.as_ptr().add(ob), out.as_mut_ptr().add(r * cout + ob));
                    match n {
                        10 if MOST >= 10 => block::<10, K, L>(x, wp, cin, w, b, cout, o),
                        9 if MOST >= 9 => block::<9, K, L>(x, wp, cin, w, b, cout, o),
                        8 if MOST >= 8 => block::<8, K, L>(x, wp, cin, w, b, cout, o),
                        7 if MOST >= 7 => block::<7, K, L>(x, wp, cin, w, b, cout, o),
                        6 => block::<6, K, L>(x, wp, cin, w, b, cout, o),
                        5 => block::<5, K, L>(x, wp, cin, w, b, cout, o),
                        4 => block::<4, K, L>(x, wp, cin, w, b, cout, o),
                        3 => block::<3, K, L>(x, wp, cin, w, b, cout, o),
                        2 => block::<2, K, L>(x, wp, cin, w, b, cout, o),
                        _ => block::<1, K, L>(x, wp, cin, w, b, cout, o),
                    }
                }
            }
        }
    }

    /// `acc[px] += Σ_ci x[px·cin + ci] · w[ci][0..K·L::N]` for `N` rows of `cin` inputs
    /// (stride `cin`) and `cin` x `K·L::N` weights in blocks of `cin` x 16 (the second block,
    /// if any, `wstride` values after the first), the channels as `K` vectors of `L`: the
    /// broadcast-FMA loop of [`conv_rows`]' taps and of the AVX2 Winograd products
    /// ([`super::winograd`]). Summed in `ci` order.
    ///
    /// # Safety
    /// `L`'s target features; `x` readable for `N·cin` values, `w` for `16·cin` from each
    /// block.
    #[inline(always)]
    pub(super) unsafe fn accumulate<const N: usize, const K: usize, L: Lanes>(
        acc: &mut [[L::V; K]; N],
        x: *const f32,
        cin: usize,
        w: *const f32,
        wstride: usize,
    ) {
        // SAFETY (whole body): the caller's bounds; unaligned loads only.
        unsafe {
            for ci in 0..cin {
                let wv: [L::V; K] = std::array::from_fn(|i| {
                    let c = i * L::N;
                    L::load(w.add(c / 16 * wstride + ci * 16 + c % 16))
                });
                for (px, a) in acc.iter_mut().enumerate() {
                    let v = L::splat(*x.add(px * cin + ci));
                    for (a, &wv) in a.iter_mut().zip(&wv) {
                        *a = L::fma(v, wv, *a);
                    }
                }
            }
        }
    }

    /// `N` consecutive positions x the `K·L::N` output channels of `w` (one or two blocks of
    /// `9·cin` rows of 16) from their bias `bias[0..K·L::N]`.
    ///
    /// # Safety
    /// `L`'s target features; the caller's bounds.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn block<const N: usize, const K: usize, L: Lanes>(
        x: *const f32,
        wp: usize,
        cin: usize,
        w: *const f32,
        bias: *const f32,
        cout: usize,
        out: *mut f32,
    ) {
        // SAFETY (whole body): the caller's bounds; unaligned loads and stores only.
        unsafe {
            let b: [L::V; K] = std::array::from_fn(|i| L::load(bias.add(i * L::N)));
            let mut acc = [b; N];
            for tap in 0..9 {
                let xt = x.add((tap / 3 * wp + tap % 3) * cin);
                accumulate::<N, K, L>(&mut acc, xt, cin, w.add(tap * cin * 16), 9 * cin * 16);
            }
            for (px, a) in acc.iter().enumerate() {
                for (i, &v) in a.iter().enumerate() {
                    L::store(out.add(px * cout + i * L::N), v);
                }
            }
        }
    }

    /// Shapes the direct kernels take: a multiple of 16 output channels ([`conv_rows`]), or
    /// the 3 of an RGB tail from a multiple of 8 inputs ([`conv_rows_rgb`]).
    pub fn suits(cin: usize, cout: usize) -> bool {
        cout.is_multiple_of(16) || (cout == 3 && cin.is_multiple_of(8))
    }

    /// `w` (`9*cin x 3`, row-major) as [`conv_rows_rgb`] reads it: per output channel, its
    /// `9*cin` weights in tap-major order.
    pub fn pack_rgb(w: &[f32], cin: usize) -> Vec<f32> {
        (0..3)
            .flat_map(|o| (0..9 * cin).map(move |row| w[row * 3 + o]))
            .collect()
    }

    /// [`conv_rows`] for 3 output channels (the network's RGB tail), weights from
    /// [`pack_rgb`]: each output is 8 partial sums (input channel `c` into sum `c % 8`) by FMA
    /// over the taps and the channels, added (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then the
    /// two, and the bias last — at every width ([`conv_rows_rgb_portable`] one lane at a
    /// time): on AVX2 a 256-bit vector of sums per channel, 4 positions a block; on AVX-512 F
    /// ([`set_avx512`]) channels 0 and 1 in one 512-bit vector and channel 2 in a 256-bit one,
    /// 8 positions a block; on NEON two 128-bit vectors per channel, 3 positions a block.
    ///
    /// # Safety
    /// As [`conv_rows`], with `cin` a multiple of 8, `w` from [`pack_rgb`] and `bias.len() ==
    /// 3`.
    pub unsafe fn conv_rows_rgb(
        src: &[f32],
        wp: usize,
        cin: usize,
        w: &[f32],
        bias: &[f32],
        pb: usize,
        out: &mut [f32],
    ) {
        debug_assert!(cin.is_multiple_of(8) && w.len() == 27 * cin && bias.len() == 3);
        let a = (src, wp, cin, w, bias, 3, pb);
        // SAFETY (every arm): the caller's promises; each width only where its features are.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if uses_avx512() {
                rgb_avx512(a, out)
            } else {
                rgb_avx2(a, out)
            }
        }
        #[cfg(target_arch = "aarch64")]
        unsafe {
            rgb::<2, 3, L4>(a, out)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = (a, out);
            unreachable!("direct::available() is false here")
        }
    }

    /// [`conv_rows_rgb`] on AVX2 + FMA.
    ///
    /// # Safety
    /// As [`conv_rows_rgb`], on a CPU with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rgb_avx2(a: Args, out: &mut [f32]) {
        // SAFETY: the caller's promises; AVX2 and FMA enabled here.
        unsafe { rgb::<1, 4, L8>(a, out) }
    }

    /// [`conv_rows_rgb`] with `K` vectors of `L` per channel's 8 sums, blocks of up to `MOST`
    /// (≤ 4) positions.
    ///
    /// # Safety
    /// As [`conv_rows_rgb`], with `L`'s target features; `K · L::N` = 8.
    #[inline(always)]
    unsafe fn rgb<const K: usize, const MOST: usize, L: Sum8>(
        (src, wp, cin, w, bias, _, pb): Args,
        out: &mut [f32],
    ) {
        debug_assert!(K * L::N == 8 && MOST <= 4);
        for (r, n) in position_blocks(out.len() / 3, MOST) {
            let q = pb + r - wp - 1;
            debug_assert!((q + n + 1 + 2 * wp + 1) * cin <= src.len());
            // SAFETY: as the caller promised; n ≤ MOST positions from r.
            unsafe {
                let x = src.as_ptr().add(q * cin);
                let o = out.as_mut_ptr().add(r * 3);
                match n {
                    4 if MOST >= 4 => block_rgb::<4, K, L>(x, wp, cin, w, bias, o),
                    3 => block_rgb::<3, K, L>(x, wp, cin, w, bias, o),
                    2 => block_rgb::<2, K, L>(x, wp, cin, w, bias, o),
                    _ => block_rgb::<1, K, L>(x, wp, cin, w, bias, o),
                }
            }
        }
    }

    /// `N` consecutive positions x 3 output channels: 3N sets of 8 sums in `K` vectors.
    ///
    /// # Safety
    /// `L`'s target features; the caller's bounds.
    #[inline(always)]
    unsafe fn block_rgb<const N: usize, const K: usize, L: Sum8>(
        x: *const f32,
        wp: usize,
        cin: usize,
        w: &[f32],
        bias: &[f32],
        out: *mut f32,
    ) {
        // SAFETY (whole body): the caller's bounds; unaligned loads only.
        unsafe {
            let z = L::splat(0.0);
            let mut acc = [[[z; K]; 3]; N];
            let k = 9 * cin;
            for tap in 0..9 {
                let xt = x.add((tap / 3 * wp + tap % 3) * cin);
                let wt = w.as_ptr().add(tap * cin);
                for c in (0..cin).step_by(8) {
                    let wv: [[L::V; K]; 3] = std::array::from_fn(|ch| {
                        std::array::from_fn(|h| L::load(wt.add(ch * k + c + h * L::N)))
                    });
                    for (px, a) in acc.iter_mut().enumerate() {
                        let xp = xt.add(px * cin + c);
                        let xv: [L::V; K] = std::array::from_fn(|h| L::load(xp.add(h * L::N)));
                        for (ach, wch) in a.iter_mut().zip(&wv) {
                            for h in 0..K {
                                ach[h] = L::fma(xv[h], wch[h], ach[h]);
                            }
                        }
                    }
                }
            }
            for (px, a) in acc.iter().enumerate() {
                for (ch, v) in a.iter().enumerate() {
                    *out.add(px * 3 + ch) = L::sum8(v) + bias[ch];
                }
            }
        }
    }

    /// Widths whose vectors hold an RGB output's 8 partial sums whole (8 / N vectors).
    trait Sum8: Lanes {
        /// The 8 sums of `v` added (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then the two.
        ///
        /// # Safety
        /// The width's target features; `v` holds 8 / N vectors.
        unsafe fn sum8(v: &[Self::V]) -> f32;
    }

    #[cfg(target_arch = "x86_64")]
    impl Sum8 for L8 {
        #[inline(always)]
        unsafe fn sum8(v: &[Self::V]) -> f32 {
            use std::arch::x86_64::*;
            // SAFETY: AVX2 (the caller's features).
            unsafe {
                let t = _mm_add_ps(_mm256_castps256_ps128(v[0]), _mm256_extractf128_ps(v[0], 1));
                sum4(t)
            }
        }
    }

    /// `(t0 + t2) + (t1 + t3)` of a 128-bit vector.
    ///
    /// # Safety
    /// SSE (always there on x86-64).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn sum4(t: std::arch::x86_64::__m128) -> f32 {
        use std::arch::x86_64::*;
        // SAFETY: SSE is part of x86-64.
        unsafe {
            let s = _mm_add_ps(t, _mm_movehl_ps(t, t));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }
    }

    #[cfg(target_arch = "aarch64")]
    impl Sum8 for L4 {
        #[inline(always)]
        unsafe fn sum8(v: &[Self::V]) -> f32 {
            use std::arch::aarch64::*;
            // SAFETY: NEON is always there on aarch64.
            unsafe {
                let t = vaddq_f32(v[0], v[1]);
                let s = vadd_f32(vget_low_f32(t), vget_high_f32(t));
                vget_lane_f32::<0>(s) + vget_lane_f32::<1>(s)
            }
        }
    }

    /// [`conv_rows_rgb`] on AVX-512 F: blocks of up to 8 positions, channels 0 and 1 in the
    /// halves of a 512-bit vector (the position's 8 input channels loaded into both), channel
    /// 2 in a 256-bit one — per lane the AVX2 kernel's operations, 2 FMA instructions per
    /// position and 8 channels instead of 3.
    ///
    /// # Safety
    /// As [`conv_rows_rgb`], on a CPU with AVX-512 F, AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn rgb_avx512((src, wp, cin, w, bias, _, pb): Args, out: &mut [f32]) {
        for (r, n) in position_blocks(out.len() / 3, 8) {
            let q = pb + r - wp - 1;
            debug_assert!((q + n + 1 + 2 * wp + 1) * cin <= src.len());
            // SAFETY: as the caller promised; n ≤ 8 positions from r.
            unsafe {
                let x = src.as_ptr().add(q * cin);
                let o = out.as_mut_ptr().add(r * 3);
                match n {
                    8 => block_rgb512::<8>(x, wp, cin, w, bias, o),
                    7 => block_rgb512::<7>(x, wp, cin, w, bias, o),
                    6 => block_rgb512::<6>(x, wp, cin, w, bias, o),
                    5 => block_rgb512::<5>(x, wp, cin, w, bias, o),
                    4 => block_rgb512::<4>(x, wp, cin, w, bias, o),
                    3 => block_rgb512::<3>(x, wp, cin, w, bias, o),
                    2 => block_rgb512::<2>(x, wp, cin, w, bias, o),
                    _ => block_rgb512::<1>(x, wp, cin, w, bias, o),
                }
            }
        }
    }

    /// `N` consecutive positions x 3 output channels on AVX-512 F (see [`rgb_avx512`]).
    ///
    /// # Safety
    /// AVX-512 F, AVX2 and FMA; the caller's bounds.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn block_rgb512<const N: usize>(
        x: *const f32,
        wp: usize,
        cin: usize,
        w: &[f32],
        bias: &[f32],
        out: *mut f32,
    ) {
        use std::arch::x86_64::*;
        // SAFETY (whole body): the caller's bounds; unaligned loads only.
        unsafe {
            let mut a01 = [_mm512_setzero_ps(); N];
            let mut a2 = [_mm256_setzero_ps(); N];
            let k = 9 * cin;
            for tap in 0..9 {
                let xt = x.add((tap / 3 * wp + tap % 3) * cin);
                let wt = w.as_ptr().add(tap * cin);
                for c in (0..cin).step_by(8) {
                    // [w0 | w1] (AVX-512 F has the 256-bit insert and broadcast as f64x4).
                    let w01 = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                        _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(wt.add(c)))),
                        _mm256_castps_pd(_mm256_loadu_ps(wt.add(k + c))),
                    ));
                    let w2 = _mm256_loadu_ps(wt.add(2 * k + c));
                    for px in 0..N {
                        // One load that fills both halves (`vbroadcastf64x4` from memory, no
                        // shuffle); channel 2 takes the low half.
                        let xp = xt.add(px * cin + c) as *const f64;
                        let xx = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(xp)));
                        a01[px] = _mm512_fmadd_ps(xx, w01, a01[px]);
                        a2[px] = _mm256_fmadd_ps(_mm512_castps512_ps256(xx), w2, a2[px]);
                    }
                }
            }
            for px in 0..N {
                // (0+4, 1+5, 2+6, 3+7) of channels 0 and 1 at once: their 128-bit quarters
                // [0..4 | 4..8] of each half added.
                let a = a01[px];
                let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, a);
                let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, a);
                let t = _mm512_add_ps(lo, hi);
                let c2 = a2[px];
                let t2 = _mm_add_ps(_mm256_castps256_ps128(c2), _mm256_extractf128_ps(c2, 1));
                let o = out.add(px * 3);
                *o = sum4(_mm512_castps512_ps128(t)) + bias[0];
                *o.add(1) = sum4(_mm512_extractf32x4_ps::<1>(t)) + bias[1];
                *o.add(2) = sum4(t2) + bias[2];
            }
        }
    }

    static AVX512: super::Avx512Switch = super::Avx512Switch::new();

    /// Sets for the whole process (for comparisons) whether the direct kernels use AVX-512 F
    /// where the CPU has it (the default) or AVX2 everywhere: the same bits either way.
    pub fn set_avx512(on: bool) {
        AVX512.set(on);
    }

    /// Whether the direct kernels take their AVX-512 forms on this CPU now.
    #[cfg(target_arch = "x86_64")]
    pub fn uses_avx512() -> bool {
        AVX512.uses()
    }

    /// Blocks of up to `most` of `m` consecutive positions: (first, count).
    fn position_blocks(m: usize, most: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..m).step_by(most).map(move |r| (r, most.min(m - r)))
    }

    /// [`conv_rows`] one output at a time: from its bias, over the taps and then the input
    /// channels in order by `mul_add` — the operations each lane of the vector kernels does.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_rows_portable(
        src: &[f32],
        wp: usize,
        cin: usize,
        w: &[f32],
        bias: &[f32],
        cout: usize,
        pb: usize,
        out: &mut [f32],
    ) {
        for (r, o) in out.chunks_exact_mut(cout).enumerate() {
            let q = pb + r - wp - 1;
            for (co, o) in o.iter_mut().enumerate() {
                let wb = &w[co / 16 * 16 * 9 * cin + co % 16..];
                *o = (0..9).fold(bias[co], |a, tap| {
                    let xt = &src[(q + tap / 3 * wp + tap % 3) * cin..][..cin];
                    let wt = wb[tap * cin * 16..].iter().step_by(16);
                    xt.iter().zip(wt).fold(a, |a, (&x, &w)| x.mul_add(w, a))
                });
            }
        }
    }

    /// [`conv_rows_rgb`] one output at a time: 8 partial sums over the taps and the input
    /// channels (channel `c` into sum `c % 8`) by `mul_add`, added as the vector kernels do —
    /// (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then the two — and the bias last.
    pub(super) fn conv_rows_rgb_portable(
        src: &[f32],
        wp: usize,
        cin: usize,
        w: &[f32],
        bias: &[f32],
        pb: usize,
        out: &mut [f32],
    ) {
        let k = 9 * cin;
        for (r, o) in out.chunks_exact_mut(3).enumerate() {
            let q = pb + r - wp - 1;
            for (ch, o) in o.iter_mut().enumerate() {
                let mut s = [0.0f32; 8];
                for tap in 0..9 {
                    let xt = &src[(q + tap / 3 * wp + tap % 3) * cin..][..cin];
                    let wt = &w[ch * k + tap * cin..][..cin];
                    for (i, (&x, &w)) in xt.iter().zip(wt).enumerate() {
                        s[i % 8] = x.mul_add(w, s[i % 8]);
                    }
                }
                let s: [f32; 4] = std::array::from_fn(|i| s[i] + s[i + 4]);
                *o = ((s[0] + s[2]) + (s[1] + s[3])) + bias[ch];
            }
        }
    }
}

/// What a conv does with each output value before storing it (the Winograd path does it in
/// its output transform: no pass over the map afterwards; see [`conv3x3_into_post`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Post {
    /// Stores it.
    None,
    /// Stores `v.max(0.0)` (ReLU).
    Relu,
    /// Adds `k · v` to the value already there (`d + k·v`: a residual update).
    Accumulate(f32),
}

/// Winograd convolution F(m x m, 3x3) on AVX2 + FMA, AVX-512 F or NEON: each m x m block of
/// outputs comes from its (m+2) x (m+2) input patch `d` as `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`
/// (Lavin & Gray, 2016), so the channel products take (m+2)² multiply-adds per m² outputs
/// instead of 9 each: (m+2)² small GEMMs (tiles x `cin` by `cin` x `cout`, one per transformed
/// position) between an input and an output transform. The convolutions use F(4x4, 3x3) (2.25
/// products per output; F(2x2, 3x3), 4 per output, is kept for comparison). Tiles sit at
/// multiples of m of the whole map whatever rows a call asks for, so a row's values do not
/// depend on how the rows are split between calls or threads. f32 rounding differs from the
/// direct sum (the transforms' constants 1/4, 1/6, 1/12, 1/24 are not exact in binary): about
/// 1e-6 of the output's scale. Every vector width computes the same operations per lane as
/// the portable one-lane kernels, so the outputs are the same bits on every CPU.
pub mod winograd {
    use super::FeatureMap;
    #[cfg(target_arch = "aarch64")]
    use super::lanes::L4;
    use super::lanes::{L1, Lanes};
    #[cfg(target_arch = "x86_64")]
    use super::lanes::{L8, L16};
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    static OFF: AtomicBool = AtomicBool::new(false);

    /// Turns the Winograd path off (true) or back on, process-wide: for benchmarks that time
    /// it against the direct kernel in one run.
    pub fn set_off(off: bool) {
        OFF.store(off, Ordering::Relaxed);
    }

    /// Whether convolutions of a suitable shape ([`suits`]) use [`conv_rows`]: it can run here
    /// ([`available`]), and neither [`set_off`] nor `ADABM_F32_CONV=direct` or `=gemm` turned
    /// it off.
    pub fn enabled() -> bool {
        available() && super::env_allows(super::ConvPath::Winograd) && !OFF.load(Ordering::Relaxed)
    }

    /// Whether [`conv_rows`] has vector kernels here: on the CPUs of the direct kernels (AVX2
    /// and FMA on x86-64, AVX-512 F used where present; NEON on 64-bit ARM).
    pub fn available() -> bool {
        super::direct::available()
    }

    /// The vector width the transforms and products run at: every one computes the same
    /// IEEE operations per lane in the same order ([`Portable`](Kernels::Portable) one lane
    /// at a time), so a conv gives the same bits on every CPU and at every width.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kernels {
        /// Plain `f32` arithmetic, `mul_add` for the fused operations: the definition the
        /// vector kernels are checked against ([`super::set_portable`]).
        Portable,
        #[cfg(target_arch = "x86_64")]
        Avx2,
        #[cfg(target_arch = "x86_64")]
        Avx512,
        #[cfg(target_arch = "aarch64")]
        Neon,
    }

    /// The kernels [`conv_rows`] runs now (the caller has checked [`available`]).
    fn kernels() -> Kernels {
        if super::portable() {
            return Kernels::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if uses_avx512() {
                Kernels::Avx512
            } else {
                Kernels::Avx2
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Kernels::Neon
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Kernels::Portable
        }
    }

    /// Shapes this path takes: whole 8-channel input vectors, 16-channel output blocks, and
    /// enough input channels for the GEMMs to outweigh the transforms.
    pub fn suits(cin: usize, cout: usize) -> bool {
        cin >= 16 && cin.is_multiple_of(8) && cout.is_multiple_of(16)
    }

    /// `G g` of one 3-vector for F(m, 3): m + 2 values (the first m + 2 of the array).
    fn g_col<const MM: usize>(g: [f32; 3]) -> [f32; 6] {
        let [a, b, c] = g;
        match MM {
            2 => [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c, 0.0, 0.0],
            _ => [
                a / 4.0,
                -(a + b + c) / 6.0,
                -(a - b + c) / 6.0,
                a / 24.0 + b / 12.0 + c / 6.0,
                a / 24.0 - b / 12.0 + c / 6.0,
                c,
            ],
        }
    }

    /// `G g Gᵀ` of every (input, output) channel pair of `w` (`[tap][cin][cout]`) for
    /// F(`MM`x`MM`, 3x3), laid out as [`conv_rows`] reads it: `[u][cout/16][cin][16]` for the
    /// (`MM`+2)² transformed positions `u`.
    pub fn pack<const MM: usize>(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
        let a = MM + 2;
        let nb = cout / 16;
        let mut p = vec![0.0f32; a * a * cin * cout];
        for ci in 0..cin {
            for co in 0..cout {
                let g = |t: usize| w[(t * cin + ci) * cout + co];
                // G g per kernel column (rows transformed), then (G g) Gᵀ per row.
                let cols: [[f32; 6]; 3] =
                    std::array::from_fn(|c| g_col::<MM>([g(c), g(3 + c), g(6 + c)]));
                for i in 0..a {
                    let row = g_col::<MM>([cols[0][i], cols[1][i], cols[2][i]]);
                    for (j, &v) in row[..a].iter().enumerate() {
                        p[(((i * a + j) * nb + co / 16) * cin + ci) * 16 + co % 16] = v;
                    }
                }
            }
        }
        p
    }

    /// Shares the output pointer between the threads; each work item writes its own tiles.
    #[derive(Clone, Copy)]
    struct OutPtr(*mut f32);
    // SAFETY: the work items write disjoint positions (distinct tile rows or column ranges).
    unsafe impl Send for OutPtr {}
    unsafe impl Sync for OutPtr {}

    /// Where the outputs go.
    #[derive(Clone, Copy)]
    enum Dest {
        /// The positions of [`super::conv3x3_rows`]'s layout (`cout` values each) from
        /// position `p0` of the padded grid, each value through the [`Post`].
        Rows(OutPtr, super::Post),
        /// PixelShuffle(r) of outputs in [`super::subpixel_major`] order, straight into an
        /// HR map of `c` channels and padded width `hwp`: output channel `(i·r + j)·c + ch`
        /// of pixel (y, x) is channel `ch` of HR pixel (r·y + i, r·x + j). `r·c` is a multiple
        /// of 8, so each 8-channel block lands in one HR row.
        Shuffle {
            hr: OutPtr,
            r: usize,
            c: usize,
            hwp: usize,
        },
    }

    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The outputs of interior rows `y0..y1` of `src` into `out`, laid out as
    /// [`super::conv3x3_rows`] does (positions on the border columns are left untouched), bias
    /// included, each through `post` (for [`super::Post::Accumulate`] `out` holds the values to
    /// add to), from weights packed by [`pack`]`::<MM>`. Rows of tiles (and column ranges of
    /// long rows) run in parallel when `parallel`.
    ///
    /// # Safety
    /// [`available`]; [`suits`]`(src.c, cout)`; `MM` is 2 or 4; `u` from
    /// [`pack`]`::<MM>` for `src.c` x `cout`; `bias.len() == cout`; `y0 < y1 <= src.h`;
    /// `out.len()` as for [`super::conv3x3_rows`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn conv_rows<const MM: usize>(
        src: &FeatureMap,
        u: &[f32],
        bias: &[f32],
        cout: usize,
        y0: usize,
        y1: usize,
        out: &mut [f32],
        parallel: bool,
        post: super::Post,
    ) {
        debug_assert_eq!(out.len(), super::rows_len(src.w, y0, y1) * cout);
        let dest = Dest::Rows(OutPtr(out.as_mut_ptr()), post);
        // SAFETY: the caller's promises.
        unsafe { conv_to::<MM>(src, u, bias, cout, y0, y1, dest, parallel) }
    }

    /// Every row of the conv of `src`, its outputs in [`super::subpixel_major`] order for
    /// PixelShuffle(`r`), written straight into the interior of `dst` (an `r·h x r·w` map of
    /// `cout / r²` channels; its border untouched), bias included.
    ///
    /// # Safety
    /// As [`conv_rows`] for rows `0..src.h`, and `dst` of that shape with `(cout / r²)·r` a
    /// multiple of 8.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn conv_rows_shuffled<const MM: usize>(
        src: &FeatureMap,
        u: &[f32],
        bias: &[f32],
        cout: usize,
        r: usize,
        dst: &mut FeatureMap,
        parallel: bool,
    ) {
        let c = cout / (r * r);
        debug_assert!(c * r * r == cout && (r * c).is_multiple_of(8));
        debug_assert!(dst.h == r * src.h && dst.w == r * src.w && dst.c == c);
        let hwp = dst.wp();
        let dest = Dest::Shuffle {
            hr: OutPtr(dst.data.as_mut_ptr()),
            r,
            c,
            hwp,
        };
        // SAFETY: the caller's promises.
        unsafe { conv_to::<MM>(src, u, bias, cout, 0, src.h, dest, parallel) }
    }

    /// [`conv_rows`] into `dest`.
    ///
    /// # Safety
    /// As [`conv_rows`], `dest` as its entry point says.
    #[allow(clippy::too_many_arguments)]
    unsafe fn conv_to<const MM: usize>(
        src: &FeatureMap,
        u: &[f32],
        bias: &[f32],
        cout: usize,
        y0: usize,
        y1: usize,
        dest: Dest,
        parallel: bool,
    ) {
        let (cin, w) = (src.c, src.w);
        let a2 = (MM + 2) * (MM + 2);
        debug_assert!(MM == 2 || MM == 4);
        debug_assert!(suits(cin, cout) && u.len() == a2 * cin * cout && bias.len() == cout);
        debug_assert!(y0 < y1 && y1 <= src.h);
        let tiles = w.div_ceil(MM);
        // Tiles per work item: the transformed inputs and products of one item
        // ((m+2)² x tc x (cin + cout) values) stay in L2; a multiple of the GEMM kernel's 6
        // rows, the same size for every chunk of a row.
        let most = ((98_304 / (a2 * (cin + cout))) / 6 * 6).max(6);
        let chunks = tiles.div_ceil(most);
        let tc = tiles.div_ceil(chunks).div_ceil(6) * 6;
        let chunks = tiles.div_ceil(tc);
        let (ty0, ty1) = (y0 / MM, (y1 - 1) / MM + 1);
        let kernels = kernels();
        let item = |i: usize| {
            let (ty, t0) = (ty0 + i / chunks, (i % chunks) * tc);
            let n = tc.min(tiles - t0);
            SCRATCH.with_borrow_mut(|s| {
                // The zero input of positions beyond the map, then the transformed inputs and
                // the products.
                // Grown only (the convs of a network need different sizes: shrinking and
                // growing again would re-zero the difference on every call).
                let need = cin + a2 * tc * (cin + cout);
                if s.len() < need {
                    s.resize(need, 0.0);
                }
                let (zeros, s) = s[..need].split_at_mut(cin);
                zeros.fill(0.0);
                let (v, m) = s.split_at_mut(a2 * tc * cin);
                // SAFETY: the caller's promises; item (ty, t0..t0 + n) writes only the
                // outputs of its own tiles, inside rows y0..y1.
                unsafe {
                    match kernels {
                        #[cfg(target_arch = "x86_64")]
                        Kernels::Avx512 => {
                            input_transform_512::<MM>(src, ty, t0, n, tc, v, zeros);
                            products512(v, u, a2, cin, cout, n, tc, m);
                            output_transform_512::<MM>(
                                m, bias, src, cout, ty, t0, n, tc, y0, y1, dest,
                            );
                        }
                        #[cfg(target_arch = "x86_64")]
                        Kernels::Avx2 => {
                            input_transform::<MM>(src, ty, t0, n, tc, v, zeros);
                            products(v, u, a2, cin, cout, n, tc, m);
                            output_transform::<MM>(m, bias, src, cout, ty, t0, n, tc, y0, y1, dest);
                        }
                        #[cfg(target_arch = "aarch64")]
                        Kernels::Neon => {
                            let all = (0..cin, 0..cout);
                            input_tiles::<MM, L4>(src, ty, t0, n, tc, v, zeros, all.0);
                            neon::products(v, u, a2, cin, cout, n, tc, m);
                            output_tiles::<MM, L4>(
                                m, bias, src, cout, ty, t0, n, tc, y0, y1, dest, all.1,
                            );
                        }
                        Kernels::Portable => {
                            let all = (0..cin, 0..cout);
                            input_tiles::<MM, L1>(src, ty, t0, n, tc, v, zeros, all.0);
                            products_portable(v, u, a2, cin, cout, n, tc, m);
                            output_tiles::<MM, L1>(
                                m, bias, src, cout, ty, t0, n, tc, y0, y1, dest, all.1,
                            );
                        }
                    }
                }
            });
        };
        let count = (ty1 - ty0) * chunks;
        if parallel {
            (0..count).into_par_iter().for_each(item);
        } else {
            (0..count).for_each(item);
        }
    }

    /// `Bᵀ d` of one column of m + 2 input vectors (the first m + 2 of each array).
    ///
    /// # Safety
    /// `L`'s target features.
    #[inline(always)]
    unsafe fn b_col<const MM: usize, L: Lanes>(d: [L::V; 6]) -> [L::V; 6] {
        // SAFETY: register arithmetic under the caller's features.
        unsafe {
            let (add, sub) = (L::add, L::sub);
            match MM {
                2 => [
                    sub(d[0], d[2]),
                    add(d[1], d[2]),
                    sub(d[2], d[1]),
                    sub(d[1], d[3]),
                    d[4],
                    d[5],
                ],
                _ => {
                    let (c2, c4, c5) = (L::splat(2.0), L::splat(4.0), L::splat(5.0));
                    let (fma, nfma) = (L::fma, L::nfma);
                    let (d42, d43) = (sub(d[4], d[2]), sub(d[4], d[3]));
                    [
                        fma(c4, d[0], nfma(c5, d[2], d[4])),
                        nfma(c4, add(d[1], d[2]), add(d[3], d[4])),
                        fma(c4, sub(d[1], d[2]), d43),
                        fma(c2, sub(d[3], d[1]), d42),
                        fma(c2, sub(d[1], d[3]), d42),
                        fma(c4, d[1], nfma(c5, d[3], d[5])),
                    ]
                }
            }
        }
    }

    /// `Aᵀ m` of one column of m + 2 product vectors: m values (the first m of the array).
    ///
    /// # Safety
    /// `L`'s target features.
    #[inline(always)]
    unsafe fn a_col<const MM: usize, L: Lanes>(m: [L::V; 6]) -> [L::V; 4] {
        // SAFETY: register arithmetic under the caller's features.
        unsafe {
            let (add, sub) = (L::add, L::sub);
            let (s12, d12) = (add(m[1], m[2]), sub(m[1], m[2]));
            match MM {
                2 => [add(m[0], s12), sub(d12, m[3]), m[4], m[5]],
                _ => {
                    let (s34, d34) = (add(m[3], m[4]), sub(m[3], m[4]));
                    let fma = L::fma;
                    [
                        add(add(m[0], s12), s34),
                        fma(L::splat(2.0), d34, d12),
                        fma(L::splat(4.0), s34, s12),
                        add(fma(L::splat(8.0), d34, d12), m[5]),
                    ]
                }
            }
        }
    }

    /// `Bᵀ d B` of tiles `t0..t0 + n` of tile row `ty` into `v` (`[u][tc][cin]`). Input rows and
    /// columns beyond the padded map (heights and widths that are not multiples of m) read as
    /// zero.
    #[allow(clippy::too_many_arguments)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn input_transform<const MM: usize>(
        src: &FeatureMap,
        ty: usize,
        t0: usize,
        n: usize,
        tc: usize,
        v: &mut [f32],
        zeros: &[f32],
    ) {
        // SAFETY: the caller's promises; AVX2 and FMA enabled here.
        unsafe { input_tiles::<MM, L8>(src, ty, t0, n, tc, v, zeros, 0..src.c) }
    }

    /// [`input_transform`] on 512-bit vectors, 16 channels at a time (a last 8 on 256-bit).
    #[allow(clippy::too_many_arguments)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn input_transform_512<const MM: usize>(
        src: &FeatureMap,
        ty: usize,
        t0: usize,
        n: usize,
        tc: usize,
        v: &mut [f32],
        zeros: &[f32],
    ) {
        let c16 = src.c / 16 * 16;
        // SAFETY: the caller's promises; AVX-512 F, AVX2 and FMA enabled here.
        unsafe {
            input_tiles::<MM, L16>(src, ty, t0, n, tc, v, zeros, 0..c16);
            if c16 < src.c {
                input_tiles::<MM, L8>(src, ty, t0, n, tc, v, zeros, c16..src.c);
            }
        }
    }

    /// The body of [`input_transform`] for the channels `chans` (a multiple of `L::N` long),
    /// `L::N` at a time.
    ///
    /// # Safety
    /// As [`input_transform`], with `L`'s target features.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn input_tiles<const MM: usize, L: Lanes>(
        src: &FeatureMap,
        ty: usize,
        t0: usize,
        n: usize,
        tc: usize,
        v: &mut [f32],
        zeros: &[f32],
        chans: std::ops::Range<usize>,
    ) {
        let a = MM + 2;
        let (cin, wp) = (src.c, src.wp());
        let rows_p = src.h + 2;
        let base = src.data.as_ptr();
        debug_assert!(chans.end <= cin && chans.len().is_multiple_of(L::N));
        // SAFETY (whole body): rows MM·ty + i < h + 2 and columns MM·tx + j < w + 2 are inside
        // the padded map; everything else reads `zeros` (cin values); v holds a² x tc x cin
        // values; channels c..c + L::N ≤ cin.
        unsafe {
            let zero = L::splat(0.0);
            // Every entry read below (i, j < a) is written first for each channel block: zeroed
            // once per call, not per tile (a memset call per tile took 5% of an f32 frame).
            let mut t = [[zero; 6]; 6];
            for tl in 0..n {
                let tx = t0 + tl;
                let mut at = [[zeros.as_ptr(); 6]; 6];
                for (i, row) in at.iter_mut().enumerate().take(a) {
                    let r = MM * ty + i;
                    for (j, p) in row.iter_mut().enumerate().take(a) {
                        let c = MM * tx + j;
                        if r < rows_p && c < wp {
                            *p = base.add((r * wp + c) * cin);
                        }
                    }
                }
                for c in chans.clone().step_by(L::N) {
                    // Bᵀ d per column j, then (Bᵀ d) B per row i. (Loops, not `from_fn`: its
                    // closures are compiled without the entry point's target features.)
                    for j in 0..a {
                        let mut d = [zero; 6];
                        for (i, di) in d.iter_mut().enumerate().take(a) {
                            *di = L::load(at[i][j].add(c));
                        }
                        for (ti, v) in t.iter_mut().zip(b_col::<MM, L>(d)) {
                            ti[j] = v;
                        }
                    }
                    for (i, r) in t.iter().enumerate().take(a) {
                        let vals = b_col::<MM, L>(*r);
                        for (j, x) in vals.into_iter().enumerate().take(a) {
                            let q = i * a + j;
                            L::store(v.as_mut_ptr().add((q * tc + tl) * cin + c), x);
                        }
                    }
                }
            }
        }
    }

    /// Whether the transforms and products run on 512-bit vectors where the CPU has AVX-512
    /// F ([`input_transform_512`], [`products512`], [`output_transform_512`]: the same
    /// operations per lane, so the same bits) or always on 256-bit ones.
    static AVX512: super::Avx512Switch = super::Avx512Switch::new();

    /// Sets for the whole process (for comparisons) whether the Winograd transforms and
    /// products use AVX-512 F where the CPU has it (the default) or AVX2 everywhere: the
    /// outputs are the same bits either way.
    pub fn set_avx512(on: bool) {
        AVX512.set(on);
    }

    /// Whether the Winograd convs take their AVX-512 forms on this CPU now.
    #[cfg(target_arch = "x86_64")]
    pub fn uses_avx512() -> bool {
        AVX512.uses()
    }

    /// [`products`] on 512-bit vectors: blocks of up to 12 tiles x 32 output channels (24
    /// accumulators; 12 x 16 where `cout / 16` is odd), each output summed from zero in `ci`
    /// order by FMA — per lane the same operations as [`products`], so the same bits.
    #[allow(clippy::too_many_arguments)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn products512(
        v: &[f32],
        u: &[f32],
        a2: usize,
        cin: usize,
        cout: usize,
        n: usize,
        tc: usize,
        m: &mut [f32],
    ) {
        let nb = cout / 16;
        debug_assert!(v.len() >= a2 * tc * cin && m.len() >= a2 * tc * cout && n <= tc);
        debug_assert!(u.len() >= a2 * nb * cin * 16);
        // SAFETY: v is a2 x tc x cin, m a2 x tc x cout, u a2 x nb x cin x 16 values; the
        // kernels read rows tl..tl + k < n of v and the weight blocks ob, ob + 1 < nb of
        // position q, and write the same rows of m at channels ob·16 .. ob·16 + 16·B ≤ cout.
        unsafe {
            for q in 0..a2 {
                let mut ob = 0;
                while ob < nb {
                    let pair = nb - ob >= 2;
                    let wt = u.as_ptr().add((q * nb + ob) * cin * 16);
                    let mut tl = 0;
                    while tl < n {
                        let k = (n - tl).min(12);
                        let x = v.as_ptr().add((q * tc + tl) * cin);
                        let o = m.as_mut_ptr().add((q * tc + tl) * cout + ob * 16);
                        if pair {
                            gemm512_rows::<2>(k, x, cin, wt, o, cout);
                        } else {
                            gemm512_rows::<1>(k, x, cin, wt, o, cout);
                        }
                        tl += k;
                    }
                    ob += if pair { 2 } else { 1 };
                }
            }
        }
    }

    /// [`gemm512`] for `k` ≤ 12 rows.
    ///
    /// # Safety
    /// As [`gemm512`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn gemm512_rows<const B: usize>(
        k: usize,
        x: *const f32,
        cin: usize,
        w: *const f32,
        out: *mut f32,
        cout: usize,
    ) {
        // SAFETY: forwarded.
        unsafe {
            match k {
                12 => gemm512::<12, B>(x, cin, w, out, cout),
                11 => gemm512::<11, B>(x, cin, w, out, cout),
                10 => gemm512::<10, B>(x, cin, w, out, cout),
                9 => gemm512::<9, B>(x, cin, w, out, cout),
                8 => gemm512::<8, B>(x, cin, w, out, cout),
                7 => gemm512::<7, B>(x, cin, w, out, cout),
                6 => gemm512::<6, B>(x, cin, w, out, cout),
                5 => gemm512::<5, B>(x, cin, w, out, cout),
                4 => gemm512::<4, B>(x, cin, w, out, cout),
                3 => gemm512::<3, B>(x, cin, w, out, cout),
                2 => gemm512::<2, B>(x, cin, w, out, cout),
                _ => gemm512::<1, B>(x, cin, w, out, cout),
            }
        }
    }

    /// `N` rows (stride `cin`) times `B` consecutive blocks of `cin` x 16 weights into `N` x
    /// 16·B outputs (stride `cout`), each sum from zero in `ci` order.
    ///
    /// # Safety
    /// AVX-512 F; `x` readable for `N` rows of `cin`, `w` for `B·16·cin` values, `out` writable
    /// for `N` rows of 16·B values at stride `cout`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn gemm512<const N: usize, const B: usize>(
        x: *const f32,
        cin: usize,
        w: *const f32,
        out: *mut f32,
        cout: usize,
    ) {
        use std::arch::x86_64::*;
        // SAFETY (whole body): the caller's bounds; unaligned loads and stores only.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); B]; N];
            for ci in 0..cin {
                let mut wv = [_mm512_setzero_ps(); B];
                for (b, wb) in wv.iter_mut().enumerate() {
                    *wb = _mm512_loadu_ps(w.add((b * cin + ci) * 16));
                }
                for (px, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*x.add(px * cin + ci));
                    for (ab, wb) in a.iter_mut().zip(wv) {
                        *ab = _mm512_fmadd_ps(xv, wb, *ab);
                    }
                }
            }
            for (px, a) in acc.iter().enumerate() {
                for (b, ab) in a.iter().enumerate() {
                    _mm512_storeu_ps(out.add(px * cout + b * 16), *ab);
                }
            }
        }
    }

    /// [`products`] one output at a time: each sum from zero over `ci` in order by `mul_add`
    /// (one rounding per step, as the vector kernels' FMAs).
    #[allow(clippy::too_many_arguments)]
    fn products_portable(
        v: &[f32],
        u: &[f32],
        a2: usize,
        cin: usize,
        cout: usize,
        n: usize,
        tc: usize,
        m: &mut [f32],
    ) {
        let nb = cout / 16;
        for q in 0..a2 {
            for tl in 0..n {
                let x = &v[(q * tc + tl) * cin..][..cin];
                let o = &mut m[(q * tc + tl) * cout..][..cout];
                for (co, o) in o.iter_mut().enumerate() {
                    let w = &u[(q * nb + co / 16) * cin * 16 + co % 16..];
                    *o = x
                        .iter()
                        .zip(w.iter().step_by(16))
                        .fold(0.0f32, |s, (&x, &w)| x.mul_add(w, s));
                }
            }
        }
    }

    /// The products on 64-bit ARM.
    #[cfg(target_arch = "aarch64")]
    mod neon {
        use std::arch::aarch64::*;

        /// `m[u] = v[u] · U[u]` for the `a2` positions: `n` tiles x `cin` by `cin` x `cout`, in
        /// blocks of up to 5 tiles x 16 output channels (20 accumulators of 4 lanes), each sum
        /// from zero in `ci` order by FMA, as the x86-64 kernels.
        ///
        /// # Safety
        /// `v` holds `a2 x tc x cin` values, `u` `a2 x cout/16 x cin x 16`, `m` `a2 x tc x
        /// cout`; `n ≤ tc`; `cin` a multiple of 4, `cout` of 16.
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn products(
            v: &[f32],
            u: &[f32],
            a2: usize,
            cin: usize,
            cout: usize,
            n: usize,
            tc: usize,
            m: &mut [f32],
        ) {
            debug_assert!(v.len() >= a2 * tc * cin && m.len() >= a2 * tc * cout && n <= tc);
            debug_assert!(u.len() >= a2 * cout * cin && cin.is_multiple_of(4));
            // SAFETY: v is a2 x tc x cin, m a2 x tc x cout, u a2 x cout/16 x cin x 16 values;
            // the kernels read rows tl..tl + k < n of v and write the same rows of m.
            unsafe {
                for b in super::blocks(a2, cin, cout, n, tc, 5) {
                    let (x, w) = (v.as_ptr().add(b.x), u.as_ptr().add(b.w));
                    let o = m.as_mut_ptr().add(b.o);
                    match b.k {
                        5 => block::<5>(x, cin, w, o, cout),
                        4 => block::<4>(x, cin, w, o, cout),
                        3 => block::<3>(x, cin, w, o, cout),
                        2 => block::<2>(x, cin, w, o, cout),
                        _ => block::<1>(x, cin, w, o, cout),
                    }
                }
            }
        }

        /// `N` rows (stride `cin`) times `cin` x 16 weights into `N` x 16 outputs (stride
        /// `cout`): four input channels of each row loaded at once, each multiplied in by
        /// lane (`fmla` by element), the same FMA as with the value broadcast.
        ///
        /// # Safety
        /// `x` readable for `N` rows of `cin` (a multiple of 4), `w` for `16·cin` values,
        /// `out` writable for `N` rows of 16 values at stride `cout`.
        #[inline(always)]
        unsafe fn block<const N: usize>(
            x: *const f32,
            cin: usize,
            w: *const f32,
            out: *mut f32,
            cout: usize,
        ) {
            // SAFETY (whole body): the caller's bounds.
            unsafe {
                let mut acc = [[vdupq_n_f32(0.0); 4]; N];
                for c4 in (0..cin).step_by(4) {
                    let mut xv = [vdupq_n_f32(0.0); N];
                    for (px, xr) in xv.iter_mut().enumerate() {
                        *xr = vld1q_f32(x.add(px * cin + c4));
                    }
                    let wp = w.add(c4 * 16);
                    lane::<0, N>(&mut acc, &xv, vld1q_f32_x4(wp));
                    lane::<1, N>(&mut acc, &xv, vld1q_f32_x4(wp.add(16)));
                    lane::<2, N>(&mut acc, &xv, vld1q_f32_x4(wp.add(32)));
                    lane::<3, N>(&mut acc, &xv, vld1q_f32_x4(wp.add(48)));
                }
                for (px, a) in acc.iter().enumerate() {
                    for (b, ab) in a.iter().enumerate() {
                        vst1q_f32(out.add(px * cout + b * 4), *ab);
                    }
                }
            }
        }

        /// Input channel `L` of the rows' 4 in `xv` times its 16 weights `w`.
        #[inline(always)]
        fn lane<const L: i32, const N: usize>(
            acc: &mut [[float32x4_t; 4]; N],
            xv: &[float32x4_t; N],
            w: float32x4x4_t,
        ) {
            let w = [w.0, w.1, w.2, w.3];
            for (a, &x) in acc.iter_mut().zip(xv) {
                for (ab, wb) in a.iter_mut().zip(w) {
                    // SAFETY: register arithmetic; NEON is always there.
                    *ab = unsafe { vfmaq_laneq_f32::<L>(*ab, wb, x) };
                }
            }
        }
    }

    /// `m[u] = v[u] · U[u]` for the `a2` positions: `n` tiles x `cin` by `cin` x `cout`, in
    /// blocks of up to 6 tiles x 16 output channels.
    #[allow(clippy::too_many_arguments)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn products(
        v: &[f32],
        u: &[f32],
        a2: usize,
        cin: usize,
        cout: usize,
        n: usize,
        tc: usize,
        m: &mut [f32],
    ) {
        // SAFETY: v is a2 x tc x cin, m a2 x tc x cout, u a2 x nb x cin x 16 values; the
        // kernels read rows tl..tl + k < n of v and write the same rows of m ([`blocks`]).
        unsafe {
            for b in blocks(a2, cin, cout, n, tc, 6) {
                let (x, w, o) = (
                    v.as_ptr().add(b.x),
                    u.as_ptr().add(b.w),
                    m.as_mut_ptr().add(b.o),
                );
                match b.k {
                    6 => gemm_block::<6>(x, cin, w, o, cout),
                    5 => gemm_block::<5>(x, cin, w, o, cout),
                    4 => gemm_block::<4>(x, cin, w, o, cout),
                    3 => gemm_block::<3>(x, cin, w, o, cout),
                    2 => gemm_block::<2>(x, cin, w, o, cout),
                    _ => gemm_block::<1>(x, cin, w, o, cout),
                }
            }
        }
    }

    /// One block of the products: `k` tiles from row `x` of `v` (an offset), times the 16
    /// output channels' weights from offset `w` of `u`, into offset `o` of `m`.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    struct Block {
        x: usize,
        w: usize,
        o: usize,
        k: usize,
    }

    /// The blocks of up to `most` tiles x 16 output channels that make the products of `n`
    /// tiles (of `tc`) at the `a2` positions, `v`, `u` and `m` laid out as in [`conv_rows`]:
    /// position by position, each 16-channel block over the tiles.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn blocks(
        a2: usize,
        cin: usize,
        cout: usize,
        n: usize,
        tc: usize,
        most: usize,
    ) -> impl Iterator<Item = Block> {
        let nb = cout / 16;
        (0..a2 * nb).flat_map(move |qb| {
            let (q, ob) = (qb / nb, qb % nb);
            (0..n).step_by(most).map(move |tl| Block {
                x: (q * tc + tl) * cin,
                w: qb * cin * 16,
                o: (q * tc + tl) * cout + ob * 16,
                k: most.min(n - tl),
            })
        })
    }

    /// `N` rows (stride `cin`) times `cin` x 16 weights into `N` x 16 outputs (stride `cout`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn gemm_block<const N: usize>(
        x: *const f32,
        cin: usize,
        w: *const f32,
        out: *mut f32,
        cout: usize,
    ) {
        use std::arch::x86_64::*;
        // SAFETY (whole body): the caller's bounds; unaligned loads and stores only.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; N];
            super::direct::accumulate::<N, 2, L8>(&mut acc, x, cin, w, 0);
            for (px, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(px * cout), a[0]);
                _mm256_storeu_ps(out.add(px * cout + 8), a[1]);
            }
        }
    }

    /// `Aᵀ m A + bias` of tiles `t0..t0 + n` of tile row `ty`: the outputs that lie in rows
    /// `y0..y1` and columns `< w` go to their positions of `out` (see [`conv_rows`]).
    #[allow(clippy::too_many_arguments)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn output_transform<const MM: usize>(
        m: &[f32],
        bias: &[f32],
        src: &FeatureMap,
        cout: usize,
        ty: usize,
        t0: usize,
        n: usize,
        tc: usize,
        y0: usize,
        y1: usize,
        dest: Dest,
    ) {
        // SAFETY: the caller's promises; AVX2 and FMA enabled here.
        unsafe { output_tiles::<MM, L8>(m, bias, src, cout, ty, t0, n, tc, y0, y1, dest, 0..cout) }
    }

    /// [`output_transform`] on 512-bit vectors, 16 channels at a time (a last 8 on 256-bit;
    /// all on 256-bit when a PixelShuffle's sub-pixel rows, `r·c` channels each, are not whole
    /// 16-channel blocks).
    #[allow(clippy::too_many_arguments)]
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn output_transform_512<const MM: usize>(
        m: &[f32],
        bias: &[f32],
        src: &FeatureMap,
        cout: usize,
        ty: usize,
        t0: usize,
        n: usize,
        tc: usize,
        y0: usize,
        y1: usize,
        dest: Dest,
    ) {
        let c16 = match dest {
            Dest::Shuffle { r, c, .. } if !(r * c).is_multiple_of(16) => 0,
            _ => cout / 16 * 16,
        };
        // SAFETY: the caller's promises; AVX-512 F, AVX2 and FMA enabled here.
        unsafe {
            output_tiles::<MM, L16>(m, bias, src, cout, ty, t0, n, tc, y0, y1, dest, 0..c16);
            if c16 < cout {
                output_tiles::<MM, L8>(m, bias, src, cout, ty, t0, n, tc, y0, y1, dest, c16..cout);
            }
        }
    }

    /// The body of [`output_transform`] for the channels `chans` (a multiple of `L::N` long),
    /// `L::N` at a time; for `Dest::Shuffle` each block of `L::N` inside one sub-pixel row.
    ///
    /// # Safety
    /// As [`output_transform`], with `L`'s target features.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn output_tiles<const MM: usize, L: Lanes>(
        m: &[f32],
        bias: &[f32],
        src: &FeatureMap,
        cout: usize,
        ty: usize,
        t0: usize,
        n: usize,
        tc: usize,
        y0: usize,
        y1: usize,
        dest: Dest,
        chans: std::ops::Range<usize>,
    ) {
        let a = MM + 2;
        let (w, wp) = (src.w, src.wp());
        let p0 = (y0 + 1) * wp + 1;
        debug_assert!(chans.end <= cout && chans.len().is_multiple_of(L::N));
        // Output (y, x) at `pixel(y, x)`, its block of channels from `c` at `+ block(c)`.
        let pixel = |y: usize, x: usize| -> *mut f32 {
            match dest {
                // SAFETY (both): in bounds for the positions written (the body's promise).
                Dest::Rows(out, _) => unsafe { out.0.add(((y + 1) * wp + x + 1 - p0) * cout) },
                Dest::Shuffle { hr, r, c, hwp } => unsafe {
                    hr.0.add(((r * y + 1) * hwp + r * x + 1) * c)
                },
            }
        };
        let block = |ch: usize| -> usize {
            match dest {
                Dest::Rows(..) => ch,
                // Sub-pixel row i = ch / (r·c) is i HR rows further down.
                Dest::Shuffle { r, c, hwp, .. } => ch + ch / (r * c) * (hwp - r) * c,
            }
        };
        let post = match dest {
            Dest::Rows(_, post) => post,
            Dest::Shuffle { .. } => super::Post::None,
        };
        // SAFETY (whole body): m holds a² x tc x cout values; the outputs written are interior
        // positions of rows y0..y1 (columns < w): inside `out` (rows_len positions from p0)
        // for `Dest::Rows`, inside the r·h x r·w interior of the HR map for `Dest::Shuffle`
        // (each block of L::N channels in one sub-pixel row: r·c is a multiple of 8, and of 16
        // where L::N is 16, as the callers choose).
        unsafe {
            let zero = L::splat(0.0);
            let k = L::splat(match post {
                super::Post::Accumulate(k) => k,
                _ => 1.0,
            });
            // As in the input transform: zeroed once per call, every entry read written first.
            let mut t = [[zero; 6]; 4];
            for tl in 0..n {
                let tx = t0 + tl;
                let mut dst = [[std::ptr::null_mut::<f32>(); 4]; 4];
                for (r, row) in dst.iter_mut().enumerate().take(MM) {
                    let y = MM * ty + r;
                    for (b, p) in row.iter_mut().enumerate().take(MM) {
                        let x = MM * tx + b;
                        if y >= y0 && y < y1 && x < w {
                            *p = pixel(y, x);
                        }
                    }
                }
                for c in chans.clone().step_by(L::N) {
                    // Aᵀ m per column j, then (Aᵀ m) A per output row.
                    for j in 0..a {
                        let mut col = [zero; 6];
                        for (i, ci) in col.iter_mut().enumerate().take(a) {
                            *ci = L::load(m.as_ptr().add(((i * a + j) * tc + tl) * cout + c));
                        }
                        for (ti, v) in t.iter_mut().zip(a_col::<MM, L>(col)) {
                            ti[j] = v;
                        }
                    }
                    let b = L::load(bias.as_ptr().add(c));
                    let off = block(c);
                    for (r, row) in t.iter().enumerate().take(MM) {
                        let ys = a_col::<MM, L>(*row);
                        for (bc, yv) in ys.into_iter().enumerate().take(MM) {
                            let p = dst[r][bc];
                            if !p.is_null() {
                                let (q, v) = (p.add(off), L::add(yv, b));
                                // The ops of the passes they replace: `v.max(0.0)`, `d + k·v`.
                                let v = match post {
                                    super::Post::None => v,
                                    super::Post::Relu => L::max(v, zero),
                                    super::Post::Accumulate(_) => L::add(L::load(q), L::mul(k, v)),
                                };
                                L::store(q, v);
                            }
                        }
                    }
                }
            }
        }
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

/// [`conv3x3`] without the Winograd path: each output is summed from its own 3x3
/// neighbourhood only, in a fixed order, so a tile of a map (with a halo) gets exactly the
/// whole map's values wherever its inputs are the whole map's. A Winograd output also reads
/// the rest of its tile's input patch, whose contributions cancel in exact arithmetic but not
/// in f32: near a tile's halo that changes the last bits. The integer engine's floating-point
/// layers use this, so its output stays the same bits tiled or not.
pub fn conv3x3_local(src: &FeatureMap, cw: &ConvWeights, par: Parallelism) -> FeatureMap {
    let mut dst = FeatureMap::zeros(src.h, src.w, cw.cout);
    let path = ConvPath::local_for_shape(cw.cin, cw.cout);
    whole_map(path, src, cw, None, &mut dst, par, Post::None);
    dst
}

/// [`conv3x3_local`] into `dst` (made `src.h x src.w x cw.cout` in its own memory), with the
/// packed weights kept in `cache` (for `cw`).
pub fn conv3x3_local_into(
    src: &FeatureMap,
    cw: &ConvWeights,
    cache: &PackedWeights,
    dst: &mut FeatureMap,
    par: Parallelism,
) {
    dst.reshape(src.h, src.w, cw.cout);
    let path = ConvPath::local_for_shape(cw.cin, cw.cout);
    whole_map(path, src, cw, Some(cache), dst, par, Post::None);
}

/// Like [`conv3x3`], writing into an existing map of the right shape.
pub fn conv3x3_into(src: &FeatureMap, cw: &ConvWeights, dst: &mut FeatureMap, par: Parallelism) {
    assert_eq!((dst.h, dst.w, dst.c), (src.h, src.w, cw.cout));
    let path = ConvPath::for_shape(cw.cin, cw.cout);
    whole_map(path, src, cw, None, dst, par, Post::None);
}

/// [`conv3x3_into`] with the packed weights kept in `cache` (for `cw`).
pub fn conv3x3_into_cached(
    src: &FeatureMap,
    cw: &ConvWeights,
    cache: &PackedWeights,
    dst: &mut FeatureMap,
    par: Parallelism,
) {
    assert_eq!((dst.h, dst.w, dst.c), (src.h, src.w, cw.cout));
    let path = ConvPath::for_shape(cw.cin, cw.cout);
    whole_map(path, src, cw, Some(cache), dst, par, Post::None);
}

/// Whether [`conv3x3_into_post`] takes a conv of `cw`'s shape (on the Winograd path).
pub fn post_fuses(cw: &ConvWeights) -> bool {
    ConvPath::for_shape(cw.cin, cw.cout) == ConvPath::Winograd
        && ConvPath::Winograd.can_run(cw.cin, cw.cout)
}

/// [`conv3x3_into_cached`] with each output through `post`, done as the Winograd path stores
/// it: the same values as the conv followed by its pass ([`FeatureMap::map_interior`] with
/// `v.max(0.0)`, or `d += k·v`), without the pass. For [`Post::Accumulate`] `dst` already has
/// the output's shape and holds the values to add to. Returns false, writing nothing, where
/// the conv does not run on the Winograd path ([`post_fuses`]).
pub fn conv3x3_into_post(
    src: &FeatureMap,
    cw: &ConvWeights,
    cache: &PackedWeights,
    dst: &mut FeatureMap,
    par: Parallelism,
    post: Post,
) -> bool {
    if !post_fuses(cw) {
        return false;
    }
    assert_eq!(src.c, cw.cin, "conv input channels");
    assert_eq!(cw.bias.len(), cw.cout, "conv bias");
    match post {
        Post::Accumulate(_) => {
            assert_eq!(
                (dst.h, dst.w, dst.c),
                (src.h, src.w, cw.cout),
                "accumulated map"
            );
        }
        _ => dst.reshape(src.h, src.w, cw.cout),
    }
    whole_map(ConvPath::Winograd, src, cw, Some(cache), dst, par, post);
    true
}

/// [`conv3x3_rows`] with the packed weights kept in `cache` (for `cw`).
pub fn conv3x3_rows_cached(
    src: &FeatureMap,
    cw: &ConvWeights,
    cache: &PackedWeights,
    y0: usize,
    y1: usize,
    out: &mut [f32],
    par: Parallelism,
) {
    let path = ConvPath::for_shape(cw.cin, cw.cout);
    rows_with(path, src, cw, Some(cache), y0, y1, out, par, Post::None);
}

/// The conv of `src` by `cw` — an upsampler's weights in [`subpixel_major`] order, packed in
/// `cache` — with PixelShuffle(`r`) written straight into `dst` (made `r·h x r·w x cout/r²` in
/// its own memory): no conv output map in between. Only on the Winograd path, for `r·c` a
/// multiple of 8 (`c = cout/r²`); returns false, writing nothing, elsewhere.
pub fn conv3x3_shuffled_into(
    src: &FeatureMap,
    cw: &ConvWeights,
    cache: &PackedWeights,
    r: usize,
    dst: &mut FeatureMap,
    par: Parallelism,
) -> bool {
    assert_eq!(src.c, cw.cin, "conv input channels");
    let c = cw.cout / (r * r);
    let path = ConvPath::for_shape(cw.cin, cw.cout);
    if path != ConvPath::Winograd
        || !path.can_run(cw.cin, cw.cout)
        || c * r * r != cw.cout
        || !(r * c).is_multiple_of(8)
        || src.h == 0
        || src.w == 0
    {
        return false;
    }
    assert_eq!(cw.bias.len(), cw.cout, "conv bias");
    dst.reshape(r * src.h, r * src.w, c);
    let packed = cache.get(path, cw);
    let parallel = !matches!(par, Parallelism::None);
    // SAFETY: the Winograd kernels can run here and the shape suits (can_run), `packed` is
    // packed for this path and shape, `dst` has the shape and `r·c` is a multiple of 8 (checked above).
    unsafe { winograd::conv_rows_shuffled::<4>(src, packed, &cw.bias, cw.cout, r, dst, parallel) };
    true
}

/// Every interior row of `src` through `path` into `dst` (of the output's shape; its border
/// columns re-zeroed, its border rows untouched), each output through `post`.
fn whole_map(
    path: ConvPath,
    src: &FeatureMap,
    cw: &ConvWeights,
    cache: Option<&PackedWeights>,
    dst: &mut FeatureMap,
    par: Parallelism,
    post: Post,
) {
    if src.h == 0 || src.w == 0 {
        return;
    }
    let p0 = src.wp() + 1;
    let m = rows_len(src.w, 0, src.h);
    let out = &mut dst.data[p0 * cw.cout..(p0 + m) * cw.cout];
    rows_with(path, src, cw, cache, 0, src.h, out, par, post);
    dst.clear_border_columns();
}

impl ConvWeights {
    /// The same conv with its output channels reordered: output `o` of the result is output
    /// `from[o]` of `self` (each output is computed exactly as before).
    pub fn with_outputs(&self, from: &[usize]) -> Self {
        assert_eq!(from.len(), self.cout, "one source per output channel");
        Self {
            cin: self.cin,
            cout: self.cout,
            w: permute_outputs(&self.w, from),
            bias: permute_outputs(&self.bias, from),
        }
    }
}

/// A table of rows of one value per output channel (`from.len()` of them; weights, bias, ...),
/// its columns reordered: column `o` of each row is column `from[o]` of `v`. Panics unless
/// `from` is a permutation of the output channels.
pub(crate) fn permute_outputs<T: Copy>(v: &[T], from: &[usize]) -> Vec<T> {
    let n = from.len();
    let mut seen = vec![false; n];
    for &f in from {
        assert!(
            f < n && !std::mem::replace(&mut seen[f], true),
            "a permutation"
        );
    }
    assert!(
        v.len().is_multiple_of(n),
        "rows of one value per output channel"
    );
    v.chunks_exact(n)
        .flat_map(|r| from.iter().map(|&f| r[f]))
        .collect()
}

/// The output order of an upsampler conv (`r²·c` outputs) that makes PixelShuffle(r) a copy:
/// sub-pixel-major, `(i·r + j)·c + ch` instead of PyTorch's `ch·r² + i·r + j`; `from[o]` is
/// the PyTorch output that goes to position `o` (for [`ConvWeights::with_outputs`]).
pub fn subpixel_major(cout: usize, r: usize) -> Vec<usize> {
    let c = cout / (r * r);
    (0..cout).map(|o| (o % c) * r * r + o / c).collect()
}

/// [`pixel_shuffle_rows`] of conv outputs in [`subpixel_major`] order: HR row `r·y + i` of LR
/// pixel `x` is the `r·c` values from `(i·r)·c`, one copy.
pub fn pixel_shuffle_rows_subpixel(
    conv_out: &[f32],
    w: usize,
    y0: usize,
    y1: usize,
    r: usize,
    dst: &mut FeatureMap,
) {
    shuffle_rows(conv_out, w, y0, y1, r, dst, |i, src, d| {
        d.copy_from_slice(&src[i * d.len()..][..d.len()])
    });
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
    shuffle_rows(conv_out, w, y0, y1, r, dst, |i, src, d| {
        for (j, d) in d.chunks_exact_mut(c).enumerate() {
            for (ch, d) in d.iter_mut().enumerate() {
                *d = src[ch * r * r + i * r + j];
            }
        }
    });
}

/// The HR rows of PixelShuffle(`r`) for interior LR rows `y0..y1`, in parallel: for sub-pixel
/// row `i` of each LR pixel, `put(i, its r²·c conv outputs, the r·c values of HR pixels
/// (r·y + i, r·x .. r·x + r))`.
fn shuffle_rows(
    conv_out: &[f32],
    w: usize,
    y0: usize,
    y1: usize,
    r: usize,
    dst: &mut FeatureMap,
    put: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    let c = dst.c;
    let cin = c * r * r;
    let wp = w + 2;
    let p0 = (y0 + 1) * wp + 1;
    assert!(
        dst.w == r * w && dst.h >= r * y1,
        "PixelShuffle output shape"
    );
    assert!(
        conv_out.len() >= rows_len(w, y0, y1) * cin,
        "PixelShuffle input"
    );
    let hr_row = dst.wp() * c;
    dst.data
        .par_chunks_mut(hr_row)
        .skip(1 + r * y0)
        .take(r * (y1 - y0))
        .enumerate()
        .for_each(|(k, row)| {
            let (y, i) = (y0 + k / r, k % r);
            let run = r * c;
            let first = (y + 1) * wp + 1 - p0;
            let src = &conv_out[first * cin..][..w * cin];
            for (d, s) in row[c..][..w * run]
                .chunks_exact_mut(run)
                .zip(src.chunks_exact(cin))
            {
                put(i, s, d);
            }
        });
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

    /// A cache of packed weights refuses a conv of another shape (its kernels would read the
    /// packed weights out of bounds) instead of running it.
    #[test]
    #[should_panic(expected = "packed weights of another conv's shape")]
    fn packed_weights_refuse_another_shape() {
        let cw = |cout: usize| {
            ConvWeights::from_oihw(16, cout, &vec![0.1; cout * 16 * 9], &vec![0.0; cout])
        };
        let cache = PackedWeights::default();
        assert_eq!(cache.get(ConvPath::Direct, &cw(16)).len(), 9 * 16 * 16);
        cache.get(ConvPath::Direct, &cw(32));
    }

    /// PixelShuffle of a conv with its outputs in sub-pixel-major order (a copy per HR row of
    /// a pixel) is PyTorch's PixelShuffle of the conv in its own order, to the bit, at r = 2
    /// and 3, on 1x1 and odd sizes, rows in several calls, on every f32 path that runs here.
    #[test]
    fn subpixel_major_shuffle_equals_pixel_shuffle() {
        let mut rng = Rng::new(5);
        let mut ran_direct = 0;
        for (h, w, cin, c, r) in [
            (1, 1, 16, 16, 2),
            (5, 7, 32, 32, 2),
            (4, 9, 16, 16, 3),
            (3, 5, 8, 3, 2),
        ] {
            let cout = c * r * r;
            let mut x = FeatureMap::zeros(h, w, cin);
            for y in 0..h {
                let row = x.row_mut(y);
                row.iter_mut().for_each(|v| *v = rng.symmetric(1.0));
            }
            let oihw: Vec<f32> = (0..cout * cin * 9).map(|_| rng.symmetric(0.2)).collect();
            let bias: Vec<f32> = (0..cout).map(|_| rng.symmetric(0.5)).collect();
            let cw = ConvWeights::from_oihw(cin, cout, &oihw, &bias);
            let sub = cw.with_outputs(&subpixel_major(cout, r));
            for path in [ConvPath::Gemm, ConvPath::Direct, ConvPath::Winograd] {
                if !path.can_run(cin, cout) {
                    continue;
                }
                let mut want = FeatureMap::zeros(h * r, w * r, c);
                let mut got = FeatureMap::zeros(h * r, w * r, c);
                // Rows 0..1, then the rest: PixelShuffle of rows in separate calls.
                for (y0, y1) in [(0, 1), (1, h)].into_iter().filter(|(a, b)| a < b) {
                    let mut a = vec![0.0; rows_len(w, y0, y1) * cout];
                    let mut b = a.clone();
                    conv3x3_rows_by(path, &x, &cw, y0, y1, &mut a, Parallelism::None);
                    conv3x3_rows_by(path, &x, &sub, y0, y1, &mut b, Parallelism::None);
                    pixel_shuffle_rows(&a, w, y0, y1, r, &mut want);
                    pixel_shuffle_rows_subpixel(&b, w, y0, y1, r, &mut got);
                }
                let same = |a: &FeatureMap, b: &FeatureMap| {
                    a.data
                        .iter()
                        .zip(&b.data)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                };
                assert!(same(&want, &got), "{h}x{w} {cin}->{c}x{r}² {path:?}");
                // Straight into the HR map (the Winograd path, r·c a multiple of 8), into a
                // map of another shape first: same values, border zero.
                if path == ConvPath::for_shape(cin, cout) {
                    let mut direct = FeatureMap::zeros(2, 3, 5);
                    direct.data.fill(7.0);
                    let cache = PackedWeights::default();
                    let par = Parallelism::Rayon(0);
                    if conv3x3_shuffled_into(&x, &sub, &cache, r, &mut direct, par) {
                        ran_direct += 1;
                        assert_eq!((direct.h, direct.w, direct.c), (want.h, want.w, want.c));
                        assert!(
                            same(&want, &direct),
                            "{h}x{w} {cin}->{c}x{r}² straight into the HR map"
                        );
                    }
                }
            }
        }
        if winograd::enabled() {
            assert!(
                ran_direct >= 2,
                "the direct HR write ran {ran_direct} times"
            );
        }
    }

    /// Each f32 path that can run here (im2col GEMM; direct and Winograd kernels on AVX2,
    /// AVX-512 or NEON) gives the convolution on 1x1, odd and even sizes, several row blocks,
    /// position and tile tails; the same bits with and without threads, for rows computed in
    /// separate calls, on 256- and 512-bit vectors, and (direct and Winograd) as their
    /// portable one-lane kernels.
    #[test]
    fn conv3x3_matches_a_plain_convolution() {
        let mut rng = Rng::new(3);
        let mut ran = [0usize; 4];
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut ran_512 = 0;
        let mut ran_portable = 0;
        for (h, w, cin, cout) in [
            (1, 1, 3, 16),
            (1, 1, 64, 64),
            (2, 2, 16, 16),
            (5, 7, 3, 64),
            (9, 13, 64, 64),
            (4, 300, 64, 64), // several row blocks / tile chunks
            (6, 5, 32, 256),
            (7, 9, 256, 64),
            (5, 5, 24, 32),
            (7, 11, 64, 3),
            (1, 1, 32, 3),
            (6, 300, 32, 3), // several row blocks
            (4, 5, 12, 3),   // 3 outputs from a non-multiple of 8: GEMM only
            (3, 9, 16, 24),
            (5, 61, 32, 48), // three 16-channel blocks: a pair and a single at AVX-512
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
            for (pi, path) in [
                ConvPath::Gemm,
                ConvPath::Direct,
                ConvPath::Winograd,
                ConvPath::Winograd2,
            ]
            .into_iter()
            .enumerate()
            {
                if !path.can_run(cin, cout) {
                    continue;
                }
                ran[pi] += 1;
                let run = |par: Parallelism, splits: &[usize]| {
                    let mut dst = FeatureMap::zeros(h, w, cout);
                    let p0 = x.wp() + 1;
                    let mut y0 = 0;
                    for &y1 in splits.iter().chain([&h]) {
                        if y1 <= y0 || y1 > h {
                            continue;
                        }
                        let a = (p0 + y0 * x.wp()) * cout;
                        let len = rows_len(w, y0, y1) * cout;
                        conv3x3_rows_by(path, &x, &cw, y0, y1, &mut dst.data[a..a + len], par);
                        y0 = y1;
                    }
                    dst.clear_border_columns();
                    dst
                };
                let got = run(Parallelism::None, &[]);
                let tag = format!("{path:?} {h}x{w} {cin}->{cout}");
                assert!(
                    got.data == run(Parallelism::Rayon(2), &[]).data,
                    "{tag}: threads change the result"
                );
                // (The GEMM crate's blocking, and so its rounding, follows the block sizes.)
                assert!(
                    path == ConvPath::Gemm || got.data == run(Parallelism::None, &[1, 2, 5]).data,
                    "{tag}: rows computed apart differ"
                );
                // The Winograd products and the direct kernels on 512-bit vectors sum as the
                // 256-bit ones.
                #[cfg(target_arch = "x86_64")]
                if matches!(path, ConvPath::Winograd | ConvPath::Winograd2)
                    && winograd::uses_avx512()
                {
                    winograd::set_avx512(false);
                    let narrow = run(Parallelism::None, &[]);
                    winograd::set_avx512(true);
                    assert!(got.data == narrow.data, "{tag}: AVX-512 products differ");
                    ran_512 += 1;
                }
                #[cfg(target_arch = "x86_64")]
                if path == ConvPath::Direct && direct::uses_avx512() {
                    direct::set_avx512(false);
                    let narrow = run(Parallelism::None, &[]);
                    direct::set_avx512(true);
                    assert!(
                        got.data == narrow.data,
                        "{tag}: AVX-512 direct kernel differs"
                    );
                    ran_512 += 1;
                }
                // Every vector kernel computes its portable one-lane form bit for bit (so every
                // CPU gives the same bits).
                if path != ConvPath::Gemm {
                    set_portable(true);
                    let portable = run(Parallelism::None, &[2]);
                    set_portable(false);
                    assert!(got.data == portable.data, "{tag}: not the portable bits");
                    ran_portable += 1;
                }
                for y in 0..h {
                    for xx in 0..w {
                        let d = got.idx(y, xx);
                        for o in 0..cout {
                            let (g, e) = (got.data[d + o] as f64, want[(y * w + xx) * cout + o]);
                            assert!(
                                (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                "{tag} at ({y},{xx}) ch {o}: {g} vs {e}"
                            );
                        }
                    }
                }
                assert!(
                    got.data[..got.idx(0, 0)].iter().all(|&v| v == 0.0),
                    "{tag}: border written"
                );
            }
        }
        assert_eq!(ran[0], 15);
        assert_eq!(ran[1] > 0, direct::available(), "direct kernel coverage");
        let wino = winograd::available();
        assert_eq!(ran[2] > 0 && ran[3] > 0, wino, "Winograd coverage");
        assert_eq!(ran_portable, ran[1] + ran[2] + ran[3]);
        if !direct::available() {
            eprintln!("no AVX2+FMA here: the direct kernels were not checked");
        }
        if !wino {
            eprintln!("no Winograd kernels here: only the im2col GEMM path was checked");
        }
        if ran_512 == 0 {
            eprintln!(
                "no AVX-512 F here: the 512-bit Winograd and direct kernels were not checked"
            );
        }
    }
}
