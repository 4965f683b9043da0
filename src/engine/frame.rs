//! Packed 8-bit frames in and out of the engine: RGB, BGR, the padded 32-bit layouts and the
//! alpha layouts (deeper and planar RGB: [`super::rgbfmt`]). The engine works on interleaved
//! RGB f32 (0–255); alpha is upscaled apart by bilinear interpolation.

use super::error::{Error, Result};

/// Byte layout of a packed 8-bit pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelLayout {
    Rgb,
    Bgr,
    Rgbx,
    Bgrx,
    Xrgb,
    Xbgr,
    Rgba,
    Bgra,
    Argb,
    Abgr,
}

impl PixelLayout {
    pub const ALL: [PixelLayout; 10] = [
        Self::Rgb,
        Self::Bgr,
        Self::Rgbx,
        Self::Bgrx,
        Self::Xrgb,
        Self::Xbgr,
        Self::Rgba,
        Self::Bgra,
        Self::Argb,
        Self::Abgr,
    ];

    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Rgb | Self::Bgr => 3,
            _ => 4,
        }
    }

    /// Byte offsets of R, G and B.
    pub fn rgb_offsets(self) -> [usize; 3] {
        match self {
            Self::Rgb | Self::Rgbx | Self::Rgba => [0, 1, 2],
            Self::Bgr | Self::Bgrx | Self::Bgra => [2, 1, 0],
            Self::Xrgb | Self::Argb => [1, 2, 3],
            Self::Xbgr | Self::Abgr => [3, 2, 1],
        }
    }

    /// Byte offset of the fourth byte (alpha or padding), if any.
    pub fn fourth_offset(self) -> Option<usize> {
        match self {
            Self::Rgb | Self::Bgr => None,
            Self::Rgbx | Self::Bgrx | Self::Rgba | Self::Bgra => Some(3),
            Self::Xrgb | Self::Xbgr | Self::Argb | Self::Abgr => Some(0),
        }
    }

    pub fn has_alpha(self) -> bool {
        matches!(self, Self::Rgba | Self::Bgra | Self::Argb | Self::Abgr)
    }
}

/// A borrowed packed frame of 8-bit samples ([`PixelLayout`]); [`super::rgbfmt`] writes each
/// plane of its frames as a `FrameMut` of its [`RgbFormat`](super::rgbfmt::RgbFormat).
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a, L = PixelLayout> {
    pub data: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
    pub layout: L,
}

/// A mutable packed frame.
#[derive(Debug)]
pub struct FrameMut<'a, L = PixelLayout> {
    pub data: &'a mut [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
    pub layout: L,
}

pub(crate) fn check_geometry(
    what: &str,
    len: usize,
    stride: usize,
    w: usize,
    h: usize,
    bpp: usize,
) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Input(format!(
            "{what} frame is {w}x{h}: expected at least 1x1"
        )));
    }
    if stride < w * bpp {
        return Err(Error::Input(format!(
            "{what} frame stride {stride} is smaller than width {w} x {bpp} bytes"
        )));
    }
    let need = (h - 1) * stride + w * bpp;
    if len < need {
        return Err(Error::Input(format!(
            "{what} frame has {len} bytes, expected at least {need} for {w}x{h} with stride {stride}"
        )));
    }
    Ok(())
}

/// An interleaved RGB image of f32 values in 0–255.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; width * height * 3],
        }
    }

    /// From interleaved RGB u8.
    pub fn from_rgb8(width: usize, height: usize, rgb: &[u8]) -> Self {
        assert_eq!(rgb.len(), width * height * 3);
        Self {
            width,
            height,
            data: rgb.iter().map(|&v| v as f32).collect(),
        }
    }

    /// To interleaved RGB u8, rounded (half to even) and clamped.
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| to_u8(v)).collect()
    }
}

/// Rows `y0..y1` and columns `x0..x1` of a frame, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Rect {
    /// A whole `w x h` frame.
    pub fn whole(w: usize, h: usize) -> Self {
        Self {
            x0: 0,
            y0: 0,
            x1: w,
            y1: h,
        }
    }

    /// This rectangle grown by one pixel on every side, clipped to a `w x h` frame: what
    /// writing it reads (chroma is filtered over a pixel's neighbours).
    pub fn ring(self, w: usize, h: usize) -> Self {
        Self {
            x0: self.x0.saturating_sub(1),
            y0: self.y0.saturating_sub(1),
            x1: (self.x1 + 1).min(w),
            y1: (self.y1 + 1).min(h),
        }
    }

    pub fn is_empty(self) -> bool {
        self.x0 >= self.x1 || self.y0 >= self.y1
    }
}

/// Part of a frame's interleaved RGB values (0–255): pixel `(x, y)` of the frame, for `x` in
/// `x0..x0 + width` and `y` in `y0..y0 + height`, is at `data[(y - y0) * stride + 3 * (x - x0)..]`
/// (R, G, B). A whole image is [`Window::whole`]; the engine writes frames from the windows of
/// its tiles' outputs.
#[derive(Debug)]
pub struct Window<'a, T> {
    pub data: &'a [T],
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
    pub stride: usize,
}

// A view: copied whatever `T` is (derive would ask for `T: Copy`).
impl<T> Clone for Window<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Window<'_, T> {}

impl<'a, T> Window<'a, T> {
    /// All of a `width x height` image of interleaved RGB values.
    pub fn whole(data: &'a [T], width: usize, height: usize) -> Self {
        Self {
            data,
            x0: 0,
            y0: 0,
            width,
            height,
            stride: 3 * width,
        }
    }

    /// The window's pixels as a rectangle of the frame.
    pub fn rect(&self) -> Rect {
        Rect {
            x0: self.x0,
            y0: self.y0,
            x1: self.x0 + self.width,
            y1: self.y0 + self.height,
        }
    }

    /// Whether the window holds every pixel of `r`, and its data is long enough for them.
    pub fn holds(&self, r: Rect) -> bool {
        let me = self.rect();
        r.is_empty()
            || (me.x0 <= r.x0
                && me.y0 <= r.y0
                && r.x1 <= me.x1
                && r.y1 <= me.y1
                && self.stride >= 3 * self.width
                && self.data.len() >= (self.height - 1) * self.stride + 3 * self.width)
    }

    /// Pixels `xa..xb` of frame row `y` (which the window holds): `3 * (xb - xa)` values.
    #[inline]
    pub fn line(&self, y: usize, xa: usize, xb: usize) -> &'a [T] {
        let i = (y - self.y0) * self.stride;
        &self.data[i + 3 * (xa - self.x0)..i + 3 * (xb - self.x0)]
    }

    /// Checks that the window holds `need` (the pixels writing `r` of a `w x h` frame reads).
    pub(crate) fn check(&self, r: Rect, need: Rect, w: usize, h: usize) -> Result<()> {
        if r.x1 > w || r.y1 > h || !self.holds(need) {
            return Err(Error::Input(format!(
                "cannot write {r:?} of a {w}x{h} frame from a window of {:?} ({} values, stride {}): it reads {need:?}",
                self.rect(),
                self.data.len(),
                self.stride
            )));
        }
        Ok(())
    }
}

/// Copies rectangle `r` of `src` into the same pixels of `out` (an image of the frame's size),
/// rows in parallel on the current thread pool.
pub fn copy_rect(src: Window<f32>, r: Rect, out: &mut Image) -> Result<()> {
    use rayon::prelude::*;
    src.check(r, r, out.width, out.height)?;
    let row = out.width * 3;
    out.data
        .par_chunks_mut(row)
        .skip(r.y0)
        .take(r.y1 - r.y0)
        .enumerate()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(i, dst)| {
            dst[3 * r.x0..3 * r.x1].copy_from_slice(src.line(r.y0 + i, r.x0, r.x1));
        });
    Ok(())
}

#[inline]
pub fn to_u8(v: f32) -> u8 {
    // Clamped first, then rounded half to even without the `rintf` call `round_ties_even` is
    // on baseline x86-64 (no SSE4.1; that call was 16% of a 4K YUV pack): the same result as
    // `v.round_ties_even().clamp(0, 255)` for every f32 (NaN gives 0 both ways).
    use super::quant::{clamp, round_even_small};
    round_even_small(clamp(v, 0.0, 255.0)) as u8
}

/// Rows per task of the frame copies over the thread pool (fewer, larger tasks: a row of a 4K
/// frame is only microseconds of work).
pub(crate) const ROWS_PER_TASK: usize = 16;

/// Unpacks a frame into an RGB image and, for alpha layouts, the alpha plane.
pub fn unpack(f: &FrameRef) -> Result<(Image, Option<Vec<u8>>)> {
    let (mut img, mut alpha) = (Image::default(), Vec::new());
    let has_alpha = unpack_into(f, &mut img, &mut alpha)?;
    Ok((img, has_alpha.then_some(alpha)))
}

/// [`unpack`] into `img` and, for alpha layouts, `alpha` (then true), reusing their memory
/// (the element's path: no allocation per frame).
pub fn unpack_into(f: &FrameRef, img: &mut Image, alpha: &mut Vec<u8>) -> Result<bool> {
    let has_alpha = unpack_with(f, |v| v as f32, &mut img.data, alpha)?;
    (img.width, img.height) = (f.width, f.height);
    Ok(has_alpha)
}

/// Unpacks a frame into interleaved RGB bytes and, for alpha layouts, the alpha plane.
pub fn unpack_rgb8(f: &FrameRef) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let (mut out, mut alpha) = (Vec::new(), Vec::new());
    let has_alpha = unpack_rgb8_into(f, &mut out, &mut alpha)?;
    Ok((out, has_alpha.then_some(alpha)))
}

/// [`unpack_rgb8`] into `out` and, for alpha layouts, `alpha` (then true), reusing their
/// memory (the element's CUDA path: no allocation per frame).
pub fn unpack_rgb8_into(f: &FrameRef, out: &mut Vec<u8>, alpha: &mut Vec<u8>) -> Result<bool> {
    if f.layout == PixelLayout::Rgb {
        // Already interleaved RGB: whole rows.
        use rayon::prelude::*;
        check_geometry("input", f.data.len(), f.stride, f.width, f.height, 3)?;
        let n = f.width * 3;
        // Every byte is overwritten below.
        out.resize(n * f.height, 0);
        out.par_chunks_mut(n)
            .zip(f.data.par_chunks(f.stride))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(d, row)| d.copy_from_slice(&row[..n]));
        return Ok(false);
    }
    unpack_with(f, |v| v, out, alpha)
}

/// Rows in parallel (a 4K frame is 25 MB of memory-bound shuffling, 10+ ms on one core).
/// Every value of `out` (resized to the frame) is written; for alpha layouts `alpha` is
/// resized to the plane and written too, and the result is true.
fn unpack_with<T: Copy + Default + Send>(
    f: &FrameRef,
    conv: impl Fn(u8) -> T + Sync,
    out: &mut Vec<T>,
    alpha: &mut Vec<u8>,
) -> Result<bool> {
    use rayon::prelude::*;
    let bpp = f.layout.bytes_per_pixel();
    check_geometry("input", f.data.len(), f.stride, f.width, f.height, bpp)?;
    let w = f.width;
    out.resize(w * f.height * 3, T::default());
    let rows = || f.data.par_chunks(f.stride).map(|row| &row[..w * bpp]);
    // Offsets as constants, one loop per layout (runtime offsets measured up to 1.5x slower).
    use PixelLayout as L;
    out.par_chunks_mut(w * 3)
        .zip(rows())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(dst, row)| match f.layout {
            L::Rgb => unpack_row::<T, 3, 0, 1, 2>(row, dst, &conv),
            L::Bgr => unpack_row::<T, 3, 2, 1, 0>(row, dst, &conv),
            L::Rgbx | L::Rgba => unpack_row::<T, 4, 0, 1, 2>(row, dst, &conv),
            L::Bgrx | L::Bgra => unpack_row::<T, 4, 2, 1, 0>(row, dst, &conv),
            L::Xrgb | L::Argb => unpack_row::<T, 4, 1, 2, 3>(row, dst, &conv),
            L::Xbgr | L::Abgr => unpack_row::<T, 4, 3, 2, 1>(row, dst, &conv),
        });
    if !f.layout.has_alpha() {
        return Ok(false);
    }
    let a_off = f.layout.fourth_offset().unwrap_or(0);
    alpha.resize(w * f.height, 0);
    alpha
        .par_chunks_mut(w)
        .zip(rows())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(dst, row)| {
            for (o, px) in dst.iter_mut().zip(row.chunks_exact(bpp)) {
                *o = px[a_off];
            }
        });
    Ok(true)
}

/// One row of [`unpack_with`]: pixels of `BPP` bytes with R, G, B at those offsets.
#[inline(always)]
fn unpack_row<T, const BPP: usize, const R: usize, const G: usize, const B: usize>(
    row: &[u8],
    dst: &mut [T],
    conv: &impl Fn(u8) -> T,
) {
    for (px, o) in row.chunks_exact(BPP).zip(dst.chunks_exact_mut(3)) {
        o[0] = conv(px[R]);
        o[1] = conv(px[G]);
        o[2] = conv(px[B]);
    }
}

/// One row of [`pack_with`]: pixels of `BPP` bytes with R, G, B at those offsets and, when
/// `F < BPP`, the fourth byte at `F` from `alpha` (else 255).
#[inline(always)]
fn pack_row<T, const BPP: usize, const R: usize, const G: usize, const B: usize, const F: usize>(
    row: &mut [u8],
    line: &[T],
    alpha: Option<&[u8]>,
    conv: &impl Fn(&T) -> u8,
) {
    let pixels = row.chunks_exact_mut(BPP).zip(line.chunks_exact(3));
    match alpha {
        Some(a) if F < BPP => {
            for ((px, s), &v) in pixels.zip(a) {
                (px[R], px[G], px[B], px[F]) = (conv(&s[0]), conv(&s[1]), conv(&s[2]), v);
            }
        }
        _ => {
            for (px, s) in pixels {
                (px[R], px[G], px[B]) = (conv(&s[0]), conv(&s[1]), conv(&s[2]));
                if F < BPP {
                    px[F] = 255;
                }
            }
        }
    }
}

/// Packs an RGB image (and alpha, for alpha layouts) into a frame. Padding bytes become 255.
pub fn pack(img: &Image, alpha: Option<&[u8]>, f: &mut FrameMut) -> Result<()> {
    if (img.width, img.height) != (f.width, f.height) || img.data.len() < img.width * img.height * 3
    {
        return Err(Error::Input(format!(
            "output frame is {}x{}, image is {}x{} with {} values",
            f.width,
            f.height,
            img.width,
            img.height,
            img.data.len()
        )));
    }
    let src = Window::whole(&img.data[..], img.width, img.height);
    pack_rect(src, Rect::whole(img.width, img.height), alpha, f)
}

/// [`pack`] of rectangle `r` of the frame only, from a window holding it (values in 0–255;
/// `alpha`, for alpha layouts, is the whole frame's plane). The engine writes its tiles' cores
/// this way, with no frame-sized RGB image in between.
pub fn pack_rect(src: Window<f32>, r: Rect, alpha: Option<&[u8]>, f: &mut FrameMut) -> Result<()> {
    pack_with(src, r, alpha, f, |&v| to_u8(v))
}

/// [`pack`] from interleaved RGB bytes of `f`'s size.
pub fn pack_rgb8(rgb: &[u8], alpha: Option<&[u8]>, f: &mut FrameMut) -> Result<()> {
    if rgb.len() != f.width * f.height * 3 {
        return Err(Error::Input(format!(
            "output frame is {}x{}, image has {} bytes",
            f.width,
            f.height,
            rgb.len()
        )));
    }
    let (w, h) = (f.width, f.height);
    if f.layout == PixelLayout::Rgb {
        // Already interleaved RGB: whole rows.
        use rayon::prelude::*;
        check_geometry("output", f.data.len(), f.stride, w, h, 3)?;
        f.data
            .par_chunks_mut(f.stride)
            .take(h)
            .zip(rgb.par_chunks(w * 3))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, s)| row[..w * 3].copy_from_slice(s));
        return Ok(());
    }
    pack_with(
        Window::whole(rgb, w, h),
        Rect::whole(w, h),
        alpha,
        f,
        |&v| v,
    )
}

/// Rectangle `r` of the frame from `src`, rows in parallel, as [`unpack_with`].
fn pack_with<T: Sync>(
    src: Window<T>,
    r: Rect,
    alpha: Option<&[u8]>,
    f: &mut FrameMut,
    conv: impl Fn(&T) -> u8 + Sync,
) -> Result<()> {
    let bpp = f.layout.bytes_per_pixel();
    let layout = f.layout;
    use PixelLayout as L;
    rect_rows(f, bpp, src, r, alpha, |row, line, a| match layout {
        L::Rgb => pack_row::<T, 3, 0, 1, 2, 3>(row, line, a, &conv),
        L::Bgr => pack_row::<T, 3, 2, 1, 0, 3>(row, line, a, &conv),
        L::Rgbx | L::Rgba => pack_row::<T, 4, 0, 1, 2, 3>(row, line, a, &conv),
        L::Bgrx | L::Bgra => pack_row::<T, 4, 2, 1, 0, 3>(row, line, a, &conv),
        L::Xrgb | L::Argb => pack_row::<T, 4, 1, 2, 3, 0>(row, line, a, &conv),
        L::Xbgr | L::Abgr => pack_row::<T, 4, 3, 2, 1, 0>(row, line, a, &conv),
    })
}

/// The rows of rectangle `r` of a packed frame of `bpp`-byte pixels, in parallel on the
/// current thread pool: `each` gets a row's bytes of pixels `r.x0..r.x1`, their values in
/// `src` and, with a frame-sized `alpha` plane, their alpha. Checks the frame's geometry, that
/// `src` holds `r` and that `alpha` covers the frame.
pub(crate) fn rect_rows<L, T: Sync, S: Sync>(
    f: &mut FrameMut<L>,
    bpp: usize,
    src: Window<T>,
    r: Rect,
    alpha: Option<&[S]>,
    each: impl Fn(&mut [u8], &[T], Option<&[S]>) + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    let (w, h) = (f.width, f.height);
    check_geometry("output", f.data.len(), f.stride, w, h, bpp)?;
    src.check(r, r, w, h)?;
    if let Some(a) = alpha
        && a.len() < w * h
    {
        return Err(Error::Input(format!(
            "alpha plane has {} values for a {w}x{h} frame",
            a.len()
        )));
    }
    if r.is_empty() {
        return Ok(());
    }
    f.data
        .par_chunks_mut(f.stride)
        .take(h)
        .skip(r.y0)
        .take(r.y1 - r.y0)
        .enumerate()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(i, row)| {
            let y = r.y0 + i;
            let row = &mut row[r.x0 * bpp..r.x1 * bpp];
            let a = alpha.map(|a| &a[y * w + r.x0..y * w + r.x1]);
            each(row, src.line(y, r.x0, r.x1), a);
        });
    Ok(())
}

/// A sample of an alpha plane: a byte, or a 16-bit word (the 64-bit RGBA layouts).
pub trait PlaneSample: Copy + Default + Send + Sync {
    fn to_f32(self) -> f32;
    /// `v` rounded half to even and clamped to the sample's range.
    fn from_f32(v: f32) -> Self;
}

impl PlaneSample for u8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        to_u8(v)
    }
}

impl PlaneSample for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        use super::quant::{clamp, round_even_small};
        round_even_small(clamp(v, 0.0, 65535.0)) as u16
    }
}

/// Bilinear upscaling of a plane by an integer factor (pixel centres aligned, edges clamped).
pub fn upscale_plane_bilinear<S: PlaneSample>(src: &[S], w: usize, h: usize, s: usize) -> Vec<S> {
    let mut out = Vec::new();
    upscale_plane_bilinear_into(src, w, h, s, &mut out, &mut Vec::new());
    out
}

/// [`upscale_plane_bilinear`] into `out`, with `cols` for the column coefficients, reusing
/// their memory.
pub fn upscale_plane_bilinear_into<S: PlaneSample>(
    src: &[S],
    w: usize,
    h: usize,
    s: usize,
    out: &mut Vec<S>,
    cols: &mut Vec<(usize, usize, f32)>,
) {
    assert_eq!(src.len(), w * h);
    let (ow, oh) = (w * s, h * s);
    let coord = |o: usize, n: usize| {
        let c = ((o as f32 + 0.5) / s as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i = c.floor() as usize;
        (i, (i + 1).min(n - 1), c - i as f32)
    };
    // Output rows in bands over the thread pool (a 4K alpha plane is 8 M interpolations).
    // Each band interpolates the source rows it reads along x once (into the worker's buffer),
    // then blends pairs of those rows for each output row: the same operations in the same
    // order as interpolating each output pixel from its four source pixels — `a · (1 − fx) +
    // b · fx` on each row, then `top · (1 − fy) + bottom · fy` — so the same values, with the
    // x work done once per source row instead of once per output row and the y blend a
    // streaming loop.
    use rayon::prelude::*;
    cols.clear();
    cols.extend((0..ow).map(|ox| coord(ox, w)));
    let cols = &cols[..];
    // Every value is written.
    out.resize(ow * oh, S::default());
    out.par_chunks_mut(ow * BAND_ROWS)
        .enumerate()
        .for_each(|(b, band)| {
            let oy0 = b * BAND_ROWS;
            let rows = band.len() / ow;
            let first = coord(oy0, h).0;
            let last = coord(oy0 + rows - 1, h).1;
            H_ROWS.with_borrow_mut(|hr| {
                hr.resize((last - first + 1) * ow, 0.0);
                for (y, dst) in (first..=last).zip(hr.chunks_exact_mut(ow)) {
                    let r = &src[y * w..][..w];
                    for (o, &(x0, x1, fx)) in dst.iter_mut().zip(cols) {
                        *o = r[x0].to_f32() * (1.0 - fx) + r[x1].to_f32() * fx;
                    }
                }
                for (i, row) in band.chunks_exact_mut(ow).enumerate() {
                    let (y0, y1, fy) = coord(oy0 + i, h);
                    let top = &hr[(y0 - first) * ow..][..ow];
                    let bottom = &hr[(y1 - first) * ow..][..ow];
                    let (wt, wb) = (1.0 - fy, fy);
                    for ((o, &t), &b) in row.iter_mut().zip(top).zip(bottom) {
                        *o = S::from_f32(t * wt + b * wb);
                    }
                }
            });
        });
}

/// A frame's alpha plane and its bilinear upscale, kept between frames (the CPU engine's and
/// the element's CUDA path's reusable buffers): 8-bit for the byte RGBA formats, 16-bit codes
/// of the format's depth for the others.
#[derive(Default)]
pub struct AlphaBufs {
    /// The input's alpha plane (byte formats) and its upscale.
    pub lr: Vec<u8>,
    pub hr: Vec<u8>,
    /// The same for alpha codes of up to 16 bits.
    pub lr16: Vec<u16>,
    pub hr16: Vec<u16>,
    cols: Vec<(usize, usize, f32)>,
}

impl AlphaBufs {
    /// `lr` (a `w x h` plane) upscaled bilinearly by `s` into `hr`.
    pub fn upscale(&mut self, w: usize, h: usize, s: usize) {
        upscale_plane_bilinear_into(&self.lr, w, h, s, &mut self.hr, &mut self.cols);
    }

    /// `lr16` upscaled the same way into `hr16`.
    pub fn upscale16(&mut self, w: usize, h: usize, s: usize) {
        upscale_plane_bilinear_into(&self.lr16, w, h, s, &mut self.hr16, &mut self.cols);
    }
}

/// Output rows per task of [`upscale_plane_bilinear_into`].
const BAND_ROWS: usize = 16;

thread_local! {
    /// A worker's source rows interpolated along x ([`upscale_plane_bilinear_into`]).
    static H_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Buffers reused from frames of other sizes and layouts give what fresh ones give (the
    /// element's CUDA path unpacks every frame into the same buffers).
    /// `to_u8` equals rounding half to even, then clamping — on every quarter step across
    /// and around the range, the specials, and a million random bit patterns.
    /// Rectangle `r` (grown by `ring` pixels within the frame) of `img` copied into a buffer
    /// of its own, with a stride of one pixel more than it needs: a window holding exactly
    /// that, so that reading past it fails.
    pub(crate) fn tight_copy(img: &Image, r: Rect, ring: bool) -> (Vec<f32>, Rect) {
        let g = if ring {
            r.ring(img.width, img.height)
        } else {
            r
        };
        let stride = 3 * (g.x1 - g.x0 + 1);
        let mut data = vec![f32::NAN; stride * (g.y1 - g.y0)];
        for y in g.y0..g.y1 {
            let src = &img.data[3 * (y * img.width + g.x0)..3 * (y * img.width + g.x1)];
            data[(y - g.y0) * stride..][..src.len()].copy_from_slice(src);
        }
        (data, g)
    }

    pub(crate) fn window_of(data: &[f32], g: Rect) -> Window<'_, f32> {
        Window {
            data,
            x0: g.x0,
            y0: g.y0,
            width: g.x1 - g.x0,
            height: g.y1 - g.y0,
            stride: 3 * (g.x1 - g.x0 + 1),
        }
    }

    /// The rectangles of the grid cut at columns `xs` and rows `ys` of a `w x h` frame.
    pub(crate) fn grid(w: usize, h: usize, xs: &[usize], ys: &[usize]) -> Vec<Rect> {
        let cuts = |n: usize, c: &[usize]| {
            let mut v: Vec<usize> = [0]
                .into_iter()
                .chain(c.iter().copied().filter(|&c| c < n))
                .collect();
            v.push(n);
            v.dedup();
            v
        };
        let (xs, ys) = (cuts(w, xs), cuts(h, ys));
        let mut out = Vec::new();
        for y in ys.windows(2) {
            for x in xs.windows(2) {
                out.push(Rect {
                    x0: x[0],
                    y0: y[0],
                    x1: x[1],
                    y1: y[1],
                });
            }
        }
        out
    }

    /// The engine writes frames tile by tile: every layout, written rectangle by rectangle
    /// from windows that hold only each rectangle, is the frame `pack` writes whole.
    #[test]
    fn packing_in_rectangles_equals_packing_the_frame() {
        let (w, h) = (13, 7);
        let img = crate::engine::random::test_image(w, h, 5);
        let alpha: Vec<u8> = (0..w * h).map(|i| (i * 29 % 256) as u8).collect();
        for layout in PixelLayout::ALL {
            let bpp = layout.bytes_per_pixel();
            let stride = w * bpp + 5;
            let a = layout.has_alpha().then_some(&alpha[..]);
            let frame = |f: &mut dyn FnMut(&mut FrameMut)| {
                let mut out = vec![7u8; stride * h];
                f(&mut FrameMut {
                    data: &mut out,
                    stride,
                    width: w,
                    height: h,
                    layout,
                });
                out
            };
            let whole = frame(&mut |f| pack(&img, a, f).unwrap());
            for cuts in [(&[3, 4, 11][..], &[1, 6][..]), (&[6], &[3]), (&[], &[])] {
                let parts = frame(&mut |f| {
                    for r in grid(w, h, cuts.0, cuts.1) {
                        let (data, g) = tight_copy(&img, r, false);
                        pack_rect(window_of(&data, g), r, a, f).unwrap();
                    }
                });
                assert!(parts == whole, "{layout:?} {cuts:?}");
            }
            // A window that does not hold the rectangle is an error, not a panic.
            let r = Rect {
                x0: 2,
                y0: 1,
                x1: 9,
                y1: 5,
            };
            let (data, g) = tight_copy(&img, Rect { x1: 8, ..r }, false);
            frame(&mut |f| {
                let e = pack_rect(window_of(&data, g), r, a, f).unwrap_err();
                assert!(e.to_string().contains("cannot write"), "{e}");
            });
        }
    }

    #[test]
    fn to_u8_rounds_half_to_even() {
        let reference = |v: f32| v.round_ties_even().clamp(0.0, 255.0) as u8;
        let mut values: Vec<f32> = (-4000..=5000).map(|k| k as f32 / 4.0).collect();
        values.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -0.0,
            0.49999997,
            254.49998,
            255.49998,
            1e10,
            -1e10,
        ]);
        let mut x = 0x2545_f491_u32;
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            values.push(f32::from_bits(x));
        }
        for v in values {
            assert_eq!(to_u8(v), reference(v), "{v} ({:#x})", v.to_bits());
        }
    }

    #[test]
    fn unpack_rgb8_into_reused_buffers_equals_fresh() {
        let (mut rgb, mut alpha) = (vec![9u8; 1000], vec![9u8; 1000]);
        for (layout, w, h) in [
            (PixelLayout::Rgba, 7, 5),
            (PixelLayout::Rgb, 3, 2),
            (PixelLayout::Bgrx, 11, 9),
            (PixelLayout::Argb, 4, 4),
        ] {
            let stride = w * layout.bytes_per_pixel() + 3;
            let data: Vec<u8> = (0..stride * h).map(|i| (i * 41 % 253) as u8).collect();
            let f = FrameRef {
                data: &data,
                stride,
                width: w,
                height: h,
                layout,
            };
            let (want, want_alpha) = unpack_rgb8(&f).unwrap();
            let has_alpha = unpack_rgb8_into(&f, &mut rgb, &mut alpha).unwrap();
            assert_eq!(rgb, want, "{layout:?}");
            assert_eq!(has_alpha, layout.has_alpha(), "{layout:?}");
            if let Some(a) = want_alpha {
                assert_eq!(alpha, a, "{layout:?}");
            }
        }
    }

    #[test]
    fn unpack_pack_roundtrip_every_layout() {
        let (w, h) = (5, 3);
        for layout in PixelLayout::ALL {
            let bpp = layout.bytes_per_pixel();
            let stride = w * bpp + 7;
            let data: Vec<u8> = (0..stride * h).map(|i| (i * 37 % 251) as u8).collect();
            let f = FrameRef {
                data: &data,
                stride,
                width: w,
                height: h,
                layout,
            };
            let (img, alpha) = unpack(&f).unwrap();
            assert_eq!(alpha.is_some(), layout.has_alpha());
            let mut out = vec![0u8; stride * h];
            let mut fm = FrameMut {
                data: &mut out,
                stride,
                width: w,
                height: h,
                layout,
            };
            pack(&img, alpha.as_deref(), &mut fm).unwrap();
            for y in 0..h {
                for x in 0..w {
                    let p = y * stride + x * bpp;
                    for o in layout.rgb_offsets() {
                        assert_eq!(out[p + o], data[p + o], "{layout:?}");
                    }
                    if layout.has_alpha() {
                        let o = layout.fourth_offset().unwrap();
                        assert_eq!(out[p + o], data[p + o], "{layout:?} alpha");
                    }
                }
            }
        }
    }

    /// Channels land where each layout names them, in frames whose buffer ends right after
    /// the last row's pixels (no stride padding after it), tall enough to be split over
    /// threads; the padding byte of the x layouts becomes 255 and alpha is carried.
    #[test]
    fn rgb8_channels_follow_the_layout() {
        let (w, h) = (7, 64);
        let pixel = |x: usize, y: usize| -> [u8; 4] {
            let v = (y * w + x) as u8;
            [
                v,
                v.wrapping_add(60),
                v.wrapping_add(120),
                v.wrapping_add(180),
            ]
        };
        for layout in PixelLayout::ALL {
            let bpp = layout.bytes_per_pixel();
            let stride = w * bpp + 5;
            let mut data = vec![0u8; (h - 1) * stride + w * bpp];
            let [r, g, b] = layout.rgb_offsets();
            for y in 0..h {
                for x in 0..w {
                    let p = y * stride + x * bpp;
                    let [pr, pg, pb, pa] = pixel(x, y);
                    (data[p + r], data[p + g], data[p + b]) = (pr, pg, pb);
                    if let Some(o) = layout.fourth_offset() {
                        data[p + o] = pa;
                    }
                }
            }
            let f = FrameRef {
                data: &data,
                stride,
                width: w,
                height: h,
                layout,
            };
            let (rgb, alpha) = unpack_rgb8(&f).unwrap();
            for y in 0..h {
                for x in 0..w {
                    let [pr, pg, pb, pa] = pixel(x, y);
                    let i = (y * w + x) * 3;
                    assert_eq!(rgb[i..i + 3], [pr, pg, pb], "{layout:?} at ({x}, {y})");
                    if let Some(a) = &alpha {
                        assert_eq!(a[y * w + x], pa, "{layout:?} alpha at ({x}, {y})");
                    }
                }
            }
            let mut out = vec![0u8; data.len()];
            let mut fm = FrameMut {
                data: &mut out,
                stride,
                width: w,
                height: h,
                layout,
            };
            pack_rgb8(&rgb, alpha.as_deref(), &mut fm).unwrap();
            for y in 0..h {
                for x in 0..w {
                    let p = y * stride + x * bpp;
                    let [pr, pg, pb, pa] = pixel(x, y);
                    assert_eq!(
                        [out[p + r], out[p + g], out[p + b]],
                        [pr, pg, pb],
                        "{layout:?}"
                    );
                    if let Some(o) = layout.fourth_offset() {
                        let want = if layout.has_alpha() { pa } else { 255 };
                        assert_eq!(out[p + o], want, "{layout:?} fourth byte");
                    }
                }
                // Stride padding is left alone.
                if y + 1 < h {
                    assert!(
                        out[y * stride + w * bpp..(y + 1) * stride]
                            .iter()
                            .all(|&v| v == 0)
                    );
                }
            }
        }
    }

    #[test]
    fn short_buffer_is_an_error() {
        let data = vec![0u8; 10];
        let f = FrameRef {
            data: &data,
            stride: 12,
            width: 4,
            height: 2,
            layout: PixelLayout::Rgb,
        };
        assert!(
            unpack(&f)
                .unwrap_err()
                .to_string()
                .contains("expected at least 24")
        );
    }

    #[test]
    fn bilinear_keeps_constants_and_edges() {
        let up = upscale_plane_bilinear(&[7u8; 6], 3, 2, 2);
        assert!(up.iter().all(|&v| v == 7));
        let up = upscale_plane_bilinear(&[0u8, 255], 2, 1, 2);
        assert_eq!(up, vec![0, 64, 191, 255, 0, 64, 191, 255]);
        // 16-bit planes (the 64-bit RGBA layouts' alpha) at their own precision.
        let up = upscale_plane_bilinear(&[0u16, 65535], 2, 1, 2);
        assert_eq!(up, vec![0, 16384, 49151, 65535, 0, 16384, 49151, 65535]);
    }

    /// Each output pixel interpolated from its four source pixels, as written plainly.
    fn bilinear_per_pixel<S: PlaneSample>(src: &[S], w: usize, h: usize, s: usize) -> Vec<S> {
        let coord = |o: usize, n: usize| {
            let c = ((o as f32 + 0.5) / s as f32 - 0.5).clamp(0.0, (n - 1) as f32);
            let i = c.floor() as usize;
            (i, (i + 1).min(n - 1), c - i as f32)
        };
        let v = |y: usize, x: usize| src[y * w + x].to_f32();
        let mut out = Vec::with_capacity(w * s * h * s);
        for oy in 0..h * s {
            let (y0, y1, fy) = coord(oy, h);
            for ox in 0..w * s {
                let (x0, x1, fx) = coord(ox, w);
                let top = v(y0, x0) * (1.0 - fx) + v(y0, x1) * fx;
                let bot = v(y1, x0) * (1.0 - fx) + v(y1, x1) * fx;
                out.push(S::from_f32(top * (1.0 - fy) + bot * fy));
            }
        }
        out
    }

    /// The band-wise upscale (source rows interpolated along x once per band, then blended) is
    /// value for value the per-pixel interpolation, at every scale, for sizes that cut bands
    /// anywhere, bytes and 16-bit words — and buffers reused from a larger plane change
    /// nothing.
    #[test]
    fn bilinear_by_rows_is_bilinear_by_pixels() {
        let mut rng = crate::engine::random::Rng::new(11);
        let (mut out8, mut out16, mut cols) = (Vec::new(), Vec::new(), Vec::new());
        for (w, h) in [(1, 1), (3, 2), (1, 9), (17, 1), (37, 23), (64, 40), (5, 61)] {
            let a8 = rng.bytes(w * h);
            let a16: Vec<u16> = rng
                .bytes(2 * w * h)
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            for s in 2..=4 {
                upscale_plane_bilinear_into(&a8, w, h, s, &mut out8, &mut cols);
                assert!(out8 == bilinear_per_pixel(&a8, w, h, s), "{w}x{h} x{s} u8");
                upscale_plane_bilinear_into(&a16, w, h, s, &mut out16, &mut cols);
                assert!(
                    out16 == bilinear_per_pixel(&a16, w, h, s),
                    "{w}x{h} x{s} u16"
                );
            }
        }
    }
}
