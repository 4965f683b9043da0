//! Packed RGBA frames of 16 bits per channel — GStreamer's ARGB64 (what `pngdec` gives for
//! 16-bit PNGs), RGBA64, BGRA64 and ABGR64, each little- or big-endian — in and out of the
//! engine. A sample `v` is the value `v / 257` of the network's 0–255 scale (65535 ↔ 255, so
//! 8-bit content lifted to 16 bits by `v · 257` reads exactly as its 8-bit frame), and an
//! output value `x` is written as `x · 257`, rounded once to 16 bits: no 8-bit step on either
//! side. Alpha is upscaled apart, bilinearly, at 16 bits.

use super::error::{Error, Result};
use super::frame::{
    FrameMut, FrameRef, ROWS_PER_TASK, Rect, Window, check_geometry, rect_rows, to_u8,
};
use super::quant::{clamp, round_even_small};
use rayon::prelude::*;

/// Order and byte order of a 64-bit RGBA pixel (four 16-bit samples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rgba64Layout {
    RgbaLe,
    RgbaBe,
    ArgbLe,
    ArgbBe,
    BgraLe,
    BgraBe,
    AbgrLe,
    AbgrBe,
}

impl Rgba64Layout {
    pub const ALL: [Self; 8] = [
        Self::RgbaLe,
        Self::RgbaBe,
        Self::ArgbLe,
        Self::ArgbBe,
        Self::BgraLe,
        Self::BgraBe,
        Self::AbgrLe,
        Self::AbgrBe,
    ];

    /// GStreamer's ARGB64: ARGB in the host's byte order.
    pub const ARGB64_NATIVE: Self = if cfg!(target_endian = "big") {
        Self::ArgbBe
    } else {
        Self::ArgbLe
    };

    pub const BYTES_PER_PIXEL: usize = 8;

    /// Sample positions (0–3) of R, G, B and A in a pixel.
    pub fn order(self) -> [usize; 4] {
        match self {
            Self::RgbaLe | Self::RgbaBe => [0, 1, 2, 3],
            Self::ArgbLe | Self::ArgbBe => [1, 2, 3, 0],
            Self::BgraLe | Self::BgraBe => [2, 1, 0, 3],
            Self::AbgrLe | Self::AbgrBe => [3, 2, 1, 0],
        }
    }

    pub fn big_endian(self) -> bool {
        matches!(
            self,
            Self::RgbaBe | Self::ArgbBe | Self::BgraBe | Self::AbgrBe
        )
    }
}

/// A sample of the network's 0–255 scale.
#[inline(always)]
pub fn to_unit(v: u16) -> f32 {
    v as f32 * (1.0 / 257.0)
}

/// A value of the network's 0–255 scale as a 16-bit sample (`v · 257`, rounded half to even,
/// clamped).
#[inline(always)]
pub fn from_unit(v: f32) -> u16 {
    round_even_small(clamp(v * 257.0, 0.0, 65535.0)) as u16
}

#[inline(always)]
fn load<const BE: bool>(b: &[u8], i: usize) -> u16 {
    let w = [b[2 * i], b[2 * i + 1]];
    if BE {
        u16::from_be_bytes(w)
    } else {
        u16::from_le_bytes(w)
    }
}

#[inline(always)]
fn store<const BE: bool>(b: &mut [u8], i: usize, v: u16) {
    let w = if BE { v.to_be_bytes() } else { v.to_le_bytes() };
    b[2 * i..2 * i + 2].copy_from_slice(&w);
}

/// Unpacks a frame into interleaved RGB of `conv(sample)` (resized to the frame) and its
/// alpha plane, rows in parallel on the current thread pool.
fn unpack_with<T: Copy + Default + Send>(
    f: &FrameRef<Rgba64Layout>,
    conv: impl Fn(u16) -> T + Sync,
    out: &mut Vec<T>,
    alpha: &mut Vec<u16>,
) -> Result<()> {
    check_geometry(
        "input",
        f.data.len(),
        f.stride,
        f.width,
        f.height,
        Rgba64Layout::BYTES_PER_PIXEL,
    )?;
    let w = f.width;
    out.resize(w * f.height * 3, T::default());
    alpha.resize(w * f.height, 0);
    let (order, be) = (f.layout.order(), f.layout.big_endian());
    out.par_chunks_mut(w * 3)
        .zip(alpha.par_chunks_mut(w))
        .zip(f.data.par_chunks(f.stride))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((dst, da), row)| {
            let row = &row[..w * Rgba64Layout::BYTES_PER_PIXEL];
            if be {
                unpack_row::<true, T>(row, order, dst, da, &conv);
            } else {
                unpack_row::<false, T>(row, order, dst, da, &conv);
            }
        });
    Ok(())
}

/// One row of [`unpack_with`]: pixels of samples in byte order `BE`, R, G, B, A at `order`.
#[inline(always)]
fn unpack_row<const BE: bool, T>(
    row: &[u8],
    [r, g, b, a]: [usize; 4],
    dst: &mut [T],
    alpha: &mut [u16],
    conv: &impl Fn(u16) -> T,
) {
    let px = row.chunks_exact(8).zip(dst.chunks_exact_mut(3)).zip(alpha);
    for ((p, o), oa) in px {
        (o[0], o[1], o[2]) = (
            conv(load::<BE>(p, r)),
            conv(load::<BE>(p, g)),
            conv(load::<BE>(p, b)),
        );
        *oa = load::<BE>(p, a);
    }
}

/// Unpacks a frame into an RGB image (0–255, [`to_unit`]) and its alpha plane, reusing their
/// memory.
pub fn unpack_into(
    f: &FrameRef<Rgba64Layout>,
    img: &mut super::frame::Image,
    alpha: &mut Vec<u16>,
) -> Result<()> {
    unpack_with(f, to_unit, &mut img.data, alpha)?;
    (img.width, img.height) = (f.width, f.height);
    Ok(())
}

/// Unpacks a frame into interleaved RGB bytes (each sample's [`to_unit`] rounded: the CUDA
/// path's input) and its alpha plane.
pub fn unpack_rgb8_into(
    f: &FrameRef<Rgba64Layout>,
    out: &mut Vec<u8>,
    alpha: &mut Vec<u16>,
) -> Result<()> {
    unpack_with(f, |v| to_u8(to_unit(v)), out, alpha)
}

/// Rectangle `r` of the frame from `src` (rows in parallel), each value `conv`erted to a
/// sample, alpha from the frame-sized plane `alpha`.
fn pack_with<T: Sync>(
    src: Window<T>,
    r: Rect,
    alpha: &[u16],
    f: &mut FrameMut<Rgba64Layout>,
    conv: impl Fn(&T) -> u16 + Sync,
) -> Result<()> {
    let (order, be) = (f.layout.order(), f.layout.big_endian());
    let bpp = Rgba64Layout::BYTES_PER_PIXEL;
    rect_rows(f, bpp, src, r, Some(alpha), |row, line, a| {
        let a = a.unwrap_or_default();
        if be {
            pack_row::<true, T>(row, order, line, a, &conv);
        } else {
            pack_row::<false, T>(row, order, line, a, &conv);
        }
    })
}

/// One row of [`pack_with`]: pixels of samples in byte order `BE`, R, G, B, A at `order`.
#[inline(always)]
fn pack_row<const BE: bool, T>(
    row: &mut [u8],
    [r, g, b, a]: [usize; 4],
    line: &[T],
    alpha: &[u16],
    conv: &impl Fn(&T) -> u16,
) {
    let px = row.chunks_exact_mut(8).zip(line.chunks_exact(3)).zip(alpha);
    for ((p, s), &va) in px {
        store::<BE>(p, r, conv(&s[0]));
        store::<BE>(p, g, conv(&s[1]));
        store::<BE>(p, b, conv(&s[2]));
        store::<BE>(p, a, va);
    }
}

/// Writes rectangle `r` of the frame from a window holding it (values in 0–255, each written
/// [`from_unit`]) and alpha from the frame-sized plane `alpha`: the engine writes its tiles'
/// cores this way.
pub fn pack_rect(
    src: Window<f32>,
    r: Rect,
    alpha: &[u16],
    f: &mut FrameMut<Rgba64Layout>,
) -> Result<()> {
    pack_with(src, r, alpha, f, |&v| from_unit(v))
}

/// Writes the frame from interleaved RGB bytes of its size (each byte `v` as `v · 257`, the
/// CUDA path's output) and the alpha plane.
pub fn pack_rgb8(rgb: &[u8], alpha: &[u16], f: &mut FrameMut<Rgba64Layout>) -> Result<()> {
    let (w, h) = (f.width, f.height);
    if rgb.len() != w * h * 3 {
        return Err(Error::Input(format!(
            "output frame is {w}x{h}, image has {} bytes",
            rgb.len()
        )));
    }
    pack_with(
        Window::whole(rgb, w, h),
        Rect::whole(w, h),
        alpha,
        f,
        |&v| v as u16 * 257,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::frame::Image;

    fn frame_bytes(w: usize, h: usize, stride: usize, seed: u64) -> Vec<u8> {
        crate::engine::random::Rng::new(seed).bytes(stride * h - (stride - 8 * w))
    }

    /// Every 16-bit sample reads as `v / 257` and is written back exactly; every channel sits
    /// where its layout says, in its byte order; stride padding is left alone.
    #[test]
    fn samples_round_trip_exactly_in_every_layout() {
        let (w, h) = (7, 37);
        let stride = 8 * w + 6;
        for (k, layout) in Rgba64Layout::ALL.into_iter().enumerate() {
            let data = frame_bytes(w, h, stride, k as u64);
            let f = FrameRef {
                data: &data,
                stride,
                width: w,
                height: h,
                layout,
            };
            let (mut img, mut alpha) = (Image::default(), Vec::new());
            unpack_into(&f, &mut img, &mut alpha).unwrap();
            let [r, g, b, a] = layout.order();
            for y in 0..h {
                for x in 0..w {
                    let p = &data[y * stride + 8 * x..][..8];
                    let s = |i: usize| {
                        let v = [p[2 * i], p[2 * i + 1]];
                        if layout.big_endian() {
                            u16::from_be_bytes(v)
                        } else {
                            u16::from_le_bytes(v)
                        }
                    };
                    let i = (y * w + x) * 3;
                    let want = [s(r), s(g), s(b)].map(|v| v as f32 / 257.0);
                    for (got, want) in img.data[i..i + 3].iter().zip(want) {
                        assert!((got - want).abs() < 1e-4, "{layout:?}");
                    }
                    assert_eq!(alpha[y * w + x], s(a), "{layout:?} alpha");
                }
            }
            let mut out = vec![0xEEu8; data.len()];
            let mut fm = FrameMut {
                data: &mut out,
                stride,
                width: w,
                height: h,
                layout,
            };
            let whole = Window::whole(&img.data[..], w, h);
            pack_rect(whole, Rect::whole(w, h), &alpha, &mut fm).unwrap();
            for y in 0..h {
                let row = y * stride..y * stride + 8 * w;
                assert_eq!(out[row.clone()], data[row], "{layout:?} row {y}");
                if y + 1 < h {
                    assert!(
                        out[y * stride + 8 * w..(y + 1) * stride]
                            .iter()
                            .all(|&v| v == 0xEE)
                    );
                }
            }
        }
    }

    /// 8-bit content lifted to 16 bits (`v · 257`) reads as the 8-bit values, and the 8-bit
    /// path (the CUDA engine's) writes `v · 257`; output values between the 8-bit levels keep
    /// their 16-bit precision.
    #[test]
    fn eight_bit_levels_map_exactly() {
        for v in 0..=255u16 {
            assert_eq!(to_unit(v * 257), v as f32);
            assert_eq!(from_unit(v as f32), v * 257);
        }
        // 100.5 · 257 = 25828.5: half to even.
        assert_eq!(from_unit(100.5), 25828);
        assert_eq!(from_unit(100.25), 25764);
        assert_eq!(from_unit(-3.0), 0);
        assert_eq!(from_unit(300.0), 65535);
        assert_eq!(from_unit(f32::NAN), 0);
        for v in 0..=65535u16 {
            assert_eq!(from_unit(to_unit(v)), v);
        }
        let (w, h) = (3, 2);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 40) as u8).collect();
        let alpha: Vec<u16> = (0..w * h).map(|i| i as u16 * 9000).collect();
        for layout in Rgba64Layout::ALL {
            let mut out = vec![0u8; 8 * w * h];
            let mut fm = FrameMut {
                data: &mut out,
                stride: 8 * w,
                width: w,
                height: h,
                layout,
            };
            pack_rgb8(&rgb, &alpha, &mut fm).unwrap();
            let f = FrameRef {
                data: &out,
                stride: 8 * w,
                width: w,
                height: h,
                layout,
            };
            let (mut back, mut back_alpha) = (Vec::new(), Vec::new());
            unpack_rgb8_into(&f, &mut back, &mut back_alpha).unwrap();
            assert_eq!(back, rgb, "{layout:?}");
            assert_eq!(back_alpha, alpha, "{layout:?}");
        }
    }

    /// Short buffers, short alpha planes and windows that miss the rectangle are errors.
    #[test]
    fn bad_geometry_is_an_error() {
        let data = vec![0u8; 60];
        let f = FrameRef {
            data: &data,
            stride: 32,
            width: 4,
            height: 2,
            layout: Rgba64Layout::ARGB64_NATIVE,
        };
        let e = unpack_into(&f, &mut Image::default(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("expected at least 64"), "{e}");
        let mut out = vec![0u8; 64];
        let mut fm = FrameMut {
            data: &mut out,
            stride: 32,
            width: 4,
            height: 2,
            layout: Rgba64Layout::RgbaBe,
        };
        let img = [0.0f32; 24];
        let whole = Window::whole(&img[..], 4, 2);
        let e = pack_rect(whole, Rect::whole(4, 2), &[0; 7], &mut fm).unwrap_err();
        assert!(e.to_string().contains("alpha plane has 7"), "{e}");
        let part = Window::whole(&img[..12], 4, 1);
        assert!(pack_rect(part, Rect::whole(4, 2), &[0; 8], &mut fm).is_err());
        assert!(pack_rgb8(&[0; 23], &[0; 8], &mut fm).is_err());
    }
}
