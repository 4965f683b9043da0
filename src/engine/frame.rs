//! Packed 8-bit frames in and out of the engine: RGB, BGR, the padded 32-bit layouts and the
//! alpha layouts. The engine works on interleaved RGB f32 (0–255); alpha is upscaled apart by
//! bilinear interpolation.

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

/// A borrowed packed frame.
#[derive(Clone, Copy, Debug)]
pub struct FrameRef<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
    pub layout: PixelLayout,
}

/// A mutable packed frame.
#[derive(Debug)]
pub struct FrameMut<'a> {
    pub data: &'a mut [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
    pub layout: PixelLayout,
}

fn check_geometry(
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
#[derive(Clone, Debug, PartialEq)]
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

#[inline]
pub fn to_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// Unpacks a frame into an RGB image and, for alpha layouts, the alpha plane.
pub fn unpack(f: &FrameRef) -> Result<(Image, Option<Vec<u8>>)> {
    let (data, alpha) = unpack_with(f, |v| v as f32)?;
    Ok((
        Image {
            width: f.width,
            height: f.height,
            data,
        },
        alpha,
    ))
}

/// Unpacks a frame into interleaved RGB bytes and, for alpha layouts, the alpha plane.
pub fn unpack_rgb8(f: &FrameRef) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    unpack_with(f, |v| v)
}

fn unpack_with<T: Copy + Default>(
    f: &FrameRef,
    conv: impl Fn(u8) -> T,
) -> Result<(Vec<T>, Option<Vec<u8>>)> {
    let bpp = f.layout.bytes_per_pixel();
    check_geometry("input", f.data.len(), f.stride, f.width, f.height, bpp)?;
    let [r, g, b] = f.layout.rgb_offsets();
    let mut out = vec![T::default(); f.width * f.height * 3];
    let mut alpha = f
        .layout
        .has_alpha()
        .then(|| Vec::with_capacity(f.width * f.height));
    let a_off = f.layout.fourth_offset().unwrap_or(0);
    for y in 0..f.height {
        let row = &f.data[y * f.stride..y * f.stride + f.width * bpp];
        let dst = &mut out[y * f.width * 3..(y + 1) * f.width * 3];
        for (px, o) in row.chunks_exact(bpp).zip(dst.chunks_exact_mut(3)) {
            o[0] = conv(px[r]);
            o[1] = conv(px[g]);
            o[2] = conv(px[b]);
        }
        if let Some(a) = alpha.as_mut() {
            a.extend(row.chunks_exact(bpp).map(|px| px[a_off]));
        }
    }
    Ok((out, alpha))
}

/// Packs an RGB image (and alpha, for alpha layouts) into a frame. Padding bytes become 255.
pub fn pack(img: &Image, alpha: Option<&[u8]>, f: &mut FrameMut) -> Result<()> {
    pack_with(&img.data, img.width, img.height, alpha, f, |&v| to_u8(v))
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
    pack_with(rgb, w, h, alpha, f, |&v| v)
}

fn pack_with<T>(
    src: &[T],
    width: usize,
    height: usize,
    alpha: Option<&[u8]>,
    f: &mut FrameMut,
    conv: impl Fn(&T) -> u8,
) -> Result<()> {
    let bpp = f.layout.bytes_per_pixel();
    check_geometry("output", f.data.len(), f.stride, f.width, f.height, bpp)?;
    if (width, height) != (f.width, f.height) {
        return Err(Error::Input(format!(
            "output frame is {}x{}, image is {width}x{height}",
            f.width, f.height
        )));
    }
    let [r, g, b] = f.layout.rgb_offsets();
    let fourth = f.layout.fourth_offset();
    for y in 0..f.height {
        let row = &mut f.data[y * f.stride..y * f.stride + f.width * bpp];
        let line = &src[y * f.width * 3..(y + 1) * f.width * 3];
        for (x, (px, s)) in row
            .chunks_exact_mut(bpp)
            .zip(line.chunks_exact(3))
            .enumerate()
        {
            px[r] = conv(&s[0]);
            px[g] = conv(&s[1]);
            px[b] = conv(&s[2]);
            if let Some(o) = fourth {
                px[o] = alpha.map_or(255, |a| a[y * f.width + x]);
            }
        }
    }
    Ok(())
}

/// Bilinear upscaling of a plane by an integer factor (pixel centres aligned, edges clamped).
pub fn upscale_plane_bilinear(src: &[u8], w: usize, h: usize, s: usize) -> Vec<u8> {
    assert_eq!(src.len(), w * h);
    let (ow, oh) = (w * s, h * s);
    let coord = |o: usize, n: usize| {
        let c = ((o as f32 + 0.5) / s as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i = c.floor() as usize;
        (i, (i + 1).min(n - 1), c - i as f32)
    };
    let mut out = Vec::with_capacity(ow * oh);
    for oy in 0..oh {
        let (y0, y1, fy) = coord(oy, h);
        for ox in 0..ow {
            let (x0, x1, fx) = coord(ox, w);
            let top = src[y0 * w + x0] as f32 * (1.0 - fx) + src[y0 * w + x1] as f32 * fx;
            let bot = src[y1 * w + x0] as f32 * (1.0 - fx) + src[y1 * w + x1] as f32 * fx;
            out.push(to_u8(top * (1.0 - fy) + bot * fy));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let up = upscale_plane_bilinear(&[7; 6], 3, 2, 2);
        assert!(up.iter().all(|&v| v == 7));
        let up = upscale_plane_bilinear(&[0, 255], 2, 1, 2);
        assert_eq!(up, vec![0, 64, 191, 255, 0, 64, 191, 255]);
    }
}
