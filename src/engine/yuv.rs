//! Planar 8-bit YUV 4:2:0 frames (I420, NV12) in and out of the engine, converted straight to
//! and from its RGB f32 (0–255) images: the colour matrix and range of the caps
//! (BT.601 / BT.709 / BT.2020 / SMPTE 240M / FCC, limited or full range), chroma upsampled
//! and downsampled bilinearly at the caps' chroma siting (co-sited or centred, per axis).
//!
//! Against a `videoconvert` on each side of an RGB upscaler this saves two frame passes and
//! the rounding of the network's input and output to 8-bit RGB: the network reads the exact
//! RGB of the YUV samples and its output is rounded once, to Y, U and V.

use super::error::{Error, Result};
use super::frame::{Image, to_u8};
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    /// A worker's row of chroma (two planes' worth, unpacking) or of filtered RGB (packing),
    /// kept between rows and frames.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The 4:2:0 layouts: three planes (Y, U, V) or two (Y, interleaved UV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YuvLayout {
    I420,
    Nv12,
}

impl YuvLayout {
    pub fn planes(self) -> usize {
        match self {
            Self::I420 => 3,
            Self::Nv12 => 2,
        }
    }
}

/// Y'CbCr coefficients and range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YuvMatrix {
    pub kr: f32,
    pub kb: f32,
    /// Full range (0–255 for Y, Cb, Cr) rather than limited (16–235, 16–240).
    pub full_range: bool,
}

impl YuvMatrix {
    pub const BT601: (f32, f32) = (0.299, 0.114);
    pub const BT709: (f32, f32) = (0.2126, 0.0722);
    pub const BT2020: (f32, f32) = (0.2627, 0.0593);
    pub const SMPTE240M: (f32, f32) = (0.212, 0.087);
    pub const FCC: (f32, f32) = (0.30, 0.11);

    pub fn new((kr, kb): (f32, f32), full_range: bool) -> Self {
        Self { kr, kb, full_range }
    }

    /// (offset, scale) of Y and the scale of Cb/Cr around 128.
    fn ranges(self) -> (f32, f32, f32) {
        if self.full_range {
            (0.0, 255.0, 255.0)
        } else {
            (16.0, 219.0, 224.0)
        }
    }

    /// The conversions as linear forms, computed once per frame (no divisions per pixel).
    fn coeffs(self) -> Coeffs {
        let (yo, ys, cs) = self.ranges();
        let (kr, kb) = (self.kr, self.kb);
        let kg = 1.0 - kr - kb;
        // RGB (0–255) from Y, U − 128, V − 128.
        let y = 255.0 / ys;
        let rv = 255.0 * 2.0 * (1.0 - kr) / cs;
        let bu = 255.0 * 2.0 * (1.0 - kb) / cs;
        let gu = -bu * kb / kg;
        let gv = -rv * kr / kg;
        // Y, U, V from RGB (0–255).
        let l = [kr, kg, kb].map(|k| k * ys / 255.0);
        let u = [-kr, -kg, 1.0 - kb].map(|k| k * cs / (255.0 * 2.0 * (1.0 - kb)));
        let v = [1.0 - kr, -kg, -kb].map(|k| k * cs / (255.0 * 2.0 * (1.0 - kr)));
        Coeffs {
            yo,
            y,
            rv,
            gu,
            gv,
            bu,
            l,
            u,
            v,
        }
    }
}

/// [`YuvMatrix`] as linear forms.
#[derive(Clone, Copy, Debug)]
struct Coeffs {
    yo: f32,
    y: f32,
    rv: f32,
    gu: f32,
    gv: f32,
    bu: f32,
    l: [f32; 3],
    u: [f32; 3],
    v: [f32; 3],
}

impl Coeffs {
    /// YUV samples (0–255) to RGB in 0–255 (clamped).
    #[inline(always)]
    fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let (e, u, v) = (self.y * (y - self.yo), u - 128.0, v - 128.0);
        [
            e + self.rv * v,
            e + self.gu * u + self.gv * v,
            e + self.bu * u,
        ]
        .map(|c| c.clamp(0.0, 255.0))
    }

    /// Y (0–255, unrounded) of RGB in 0–255.
    #[inline(always)]
    fn luma(&self, rgb: [f32; 3]) -> f32 {
        self.yo + self.l[0] * rgb[0] + self.l[1] * rgb[1] + self.l[2] * rgb[2]
    }

    /// (U, V) (0–255, unrounded) of RGB in 0–255.
    #[inline(always)]
    fn chroma(&self, rgb: [f32; 3]) -> (f32, f32) {
        let d = |k: [f32; 3]| k[0] * rgb[0] + k[1] * rgb[1] + k[2] * rgb[2];
        (128.0 + d(self.u), 128.0 + d(self.v))
    }
}

/// Where the chroma samples sit relative to the luma samples, per axis: on the even luma
/// sample (co-sited, MPEG-2 horizontally) or midway between two (centred, JPEG).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChromaSiting {
    pub h_cosited: bool,
    pub v_cosited: bool,
}

/// A borrowed 4:2:0 frame: planes with their strides (NV12: Y and UV).
#[derive(Clone, Copy, Debug)]
pub struct YuvRef<'a> {
    pub planes: [&'a [u8]; 3],
    pub strides: [usize; 3],
    pub width: usize,
    pub height: usize,
    pub layout: YuvLayout,
    pub matrix: YuvMatrix,
    pub siting: ChromaSiting,
}

/// A mutable 4:2:0 frame.
#[derive(Debug)]
pub struct YuvMut<'a> {
    pub planes: [&'a mut [u8]; 3],
    pub strides: [usize; 3],
    pub width: usize,
    pub height: usize,
    pub layout: YuvLayout,
    pub matrix: YuvMatrix,
    pub siting: ChromaSiting,
}

/// Chroma plane size of a `w x h` frame.
pub fn chroma_size(w: usize, h: usize) -> (usize, usize) {
    (w.div_ceil(2), h.div_ceil(2))
}

/// Checks that each plane holds its rows (the row bytes and rows of each plane of the layout).
fn check_planes(
    what: &str,
    layout: YuvLayout,
    lens: [usize; 3],
    strides: [usize; 3],
    w: usize,
    h: usize,
) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Input(format!(
            "{what} frame is {w}x{h}: expected at least 1x1"
        )));
    }
    let (cw, ch) = chroma_size(w, h);
    let need: &[(usize, usize)] = match layout {
        YuvLayout::I420 => &[(w, h), (cw, ch), (cw, ch)],
        YuvLayout::Nv12 => &[(w, h), (2 * cw, ch)],
    };
    for (p, &(row, rows)) in need.iter().enumerate() {
        if strides[p] < row || lens[p] < (rows - 1) * strides[p] + row {
            return Err(Error::Input(format!(
                "{what} {layout:?} frame {w}x{h}: plane {p} has {} bytes with stride {}, \
                 expected {rows} rows of at least {row} bytes",
                lens[p], strides[p]
            )));
        }
    }
    Ok(())
}

/// Taps of the bilinear upsampling of chroma to luma position `i` (of `n` chroma samples):
/// (index, weight) pairs, edges clamped.
#[inline(always)]
fn up_taps(i: usize, n: usize, cosited: bool) -> [(usize, f32); 2] {
    let k = i / 2;
    let last = n - 1;
    if cosited {
        if i.is_multiple_of(2) {
            [(k, 1.0), (k, 0.0)]
        } else {
            [(k, 0.5), ((k + 1).min(last), 0.5)]
        }
    } else if i.is_multiple_of(2) {
        [(k, 0.75), (k.saturating_sub(1), 0.25)]
    } else {
        [(k, 0.75), ((k + 1).min(last), 0.25)]
    }
}

/// Taps of the chroma sample `k` from luma positions (of `n`): centred `[1 1] / 2`,
/// co-sited `[1 2 1] / 4`, positions past the edge clamped.
#[inline(always)]
fn down_taps(k: usize, n: usize, cosited: bool) -> [(usize, f32); 3] {
    let last = n - 1;
    let c = (2 * k).min(last);
    if cosited {
        [
            ((2 * k).saturating_sub(1).min(last), 0.25),
            (c, 0.5),
            ((2 * k + 1).min(last), 0.25),
        ]
    } else {
        [(c, 0.5), ((2 * k + 1).min(last), 0.5), (c, 0.0)]
    }
}

/// Unpacks a 4:2:0 frame into interleaved RGB of `conv(value in 0–255)` (rows in parallel on
/// the current thread pool). Every value of `out`, resized to the frame, is written.
pub fn unpack_with<T: Copy + Default + Send>(
    f: &YuvRef,
    conv: impl Fn(f32) -> T + Sync,
    out: &mut Vec<T>,
) -> Result<()> {
    let (w, h) = (f.width, f.height);
    check_planes(
        "input",
        f.layout,
        f.planes.map(|p| p.len()),
        f.strides,
        w,
        h,
    )?;
    let (cw, ch) = chroma_size(w, h);
    out.resize(w * h * 3, T::default());
    let m = f.matrix.coeffs();
    let s = f.siting;
    out.par_chunks_mut(w * 3)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(y, dst)| {
            let luma = &f.planes[0][y * f.strides[0]..][..w];
            ROW.with_borrow_mut(|t| {
                // This row's chroma at the chroma columns (interpolated along y), then along x.
                t.clear();
                t.resize(2 * cw, 0.0);
                let (tu, tv) = t.split_at_mut(cw);
                for (r, a) in up_taps(y, ch, s.v_cosited) {
                    if a == 0.0 {
                        continue;
                    }
                    let at = r * f.strides[1];
                    match f.layout {
                        YuvLayout::I420 => {
                            let u = &f.planes[1][at..][..cw];
                            let v = &f.planes[2][r * f.strides[2]..][..cw];
                            for (o, &c) in tu.iter_mut().zip(u) {
                                *o += a * c as f32;
                            }
                            for (o, &c) in tv.iter_mut().zip(v) {
                                *o += a * c as f32;
                            }
                        }
                        YuvLayout::Nv12 => {
                            let uv = &f.planes[1][at..][..2 * cw];
                            for ((ou, ov), c) in
                                tu.iter_mut().zip(tv.iter_mut()).zip(uv.chunks_exact(2))
                            {
                                *ou += a * c[0] as f32;
                                *ov += a * c[1] as f32;
                            }
                        }
                    }
                }
                for (x, (o, &yv)) in dst.chunks_exact_mut(3).zip(luma).enumerate() {
                    let [(c0, b0), (c1, b1)] = up_taps(x, cw, s.h_cosited);
                    let u = b0 * tu[c0] + b1 * tu[c1];
                    let v = b0 * tv[c0] + b1 * tv[c1];
                    let rgb = m.rgb(yv as f32, u, v);
                    o[0] = conv(rgb[0]);
                    o[1] = conv(rgb[1]);
                    o[2] = conv(rgb[2]);
                }
            });
        });
    Ok(())
}

/// [`unpack_with`] into an RGB f32 image.
pub fn unpack_into(f: &YuvRef, img: &mut Image) -> Result<()> {
    unpack_with(f, |v| v, &mut img.data)?;
    (img.width, img.height) = (f.width, f.height);
    Ok(())
}

/// [`unpack_with`] into interleaved RGB bytes (rounded; the CUDA path's input).
pub fn unpack_rgb8_into(f: &YuvRef, out: &mut Vec<u8>) -> Result<()> {
    unpack_with(f, to_u8, out)
}

/// Packs interleaved RGB (`conv` of each value gives 0–255) of `f`'s size into a 4:2:0 frame:
/// Y per pixel, U and V from the RGB filtered at the chroma siting, each rounded once.
pub fn pack_with<T: Sync>(
    src: &[T],
    width: usize,
    height: usize,
    f: &mut YuvMut,
    conv: impl Fn(&T) -> f32 + Sync,
) -> Result<()> {
    let (w, h) = (f.width, f.height);
    check_planes(
        "output",
        f.layout,
        [f.planes[0].len(), f.planes[1].len(), f.planes[2].len()],
        f.strides,
        w,
        h,
    )?;
    if (width, height) != (w, h) || src.len() < w * h * 3 {
        return Err(Error::Input(format!(
            "output frame is {w}x{h}, image is {width}x{height} with {} values",
            src.len()
        )));
    }
    let (cw, ch) = chroma_size(w, h);
    let (m, s) = (f.matrix.coeffs(), f.siting);
    let line = |y: usize| &src[y * w * 3..(y + 1) * w * 3];
    // Luma: rows in parallel.
    f.planes[0]
        .par_chunks_mut(f.strides[0])
        .take(h)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(y, row)| {
            for (o, p) in row[..w].iter_mut().zip(line(y).chunks_exact(3)) {
                *o = to_u8(m.luma([conv(&p[0]), conv(&p[1]), conv(&p[2])]));
            }
        });
    // Chroma: the chroma row's RGB filtered along y, then along x at each chroma sample.
    let chroma_row = |cy: usize, put: &mut dyn FnMut(usize, u8, u8)| {
        ROW.with_borrow_mut(|acc| {
            acc.clear();
            acc.resize(3 * w, 0.0);
            for (yy, wy) in down_taps(cy, h, s.v_cosited) {
                if wy != 0.0 {
                    for (a, v) in acc.iter_mut().zip(line(yy)) {
                        *a += wy * conv(v);
                    }
                }
            }
            for cx in 0..cw {
                let mut rgb = [0.0f32; 3];
                for (xx, wx) in down_taps(cx, w, s.h_cosited) {
                    if wx != 0.0 {
                        for c in 0..3 {
                            rgb[c] += wx * acc[3 * xx + c];
                        }
                    }
                }
                let (u, v) = m.chroma(rgb);
                put(cx, to_u8(u), to_u8(v));
            }
        })
    };
    match f.layout {
        YuvLayout::I420 => {
            let [_, pu, pv] = &mut f.planes;
            pu.par_chunks_mut(f.strides[1])
                .zip(pv.par_chunks_mut(f.strides[2]))
                .take(ch)
                .enumerate()
                .with_min_len(super::frame::ROWS_PER_TASK / 2)
                .for_each(|(cy, (ru, rv))| {
                    chroma_row(cy, &mut |cx, u, v| (ru[cx], rv[cx]) = (u, v));
                });
        }
        YuvLayout::Nv12 => {
            f.planes[1]
                .par_chunks_mut(f.strides[1])
                .take(ch)
                .enumerate()
                .with_min_len(super::frame::ROWS_PER_TASK / 2)
                .for_each(|(cy, row)| {
                    chroma_row(cy, &mut |cx, u, v| (row[2 * cx], row[2 * cx + 1]) = (u, v));
                });
        }
    }
    Ok(())
}

/// [`pack_with`] from an RGB f32 image.
pub fn pack(img: &Image, f: &mut YuvMut) -> Result<()> {
    pack_with(&img.data, img.width, img.height, f, |&v| v)
}

/// [`pack_with`] from interleaved RGB bytes (the CUDA path's output).
pub fn pack_rgb8(rgb: &[u8], f: &mut YuvMut) -> Result<()> {
    let (w, h) = (f.width, f.height);
    pack_with(rgb, w, h, f, |&v| v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(layout: YuvLayout, w: usize, h: usize) -> (Vec<Vec<u8>>, [usize; 3]) {
        let (cw, ch) = chroma_size(w, h);
        // Padded strides, so that a stride mix-up shows.
        let strides = match layout {
            YuvLayout::I420 => [w + 3, cw + 1, cw + 2],
            YuvLayout::Nv12 => [w + 5, 2 * cw + 2, 0],
        };
        let planes = (0..layout.planes())
            .map(|p| vec![0u8; strides[p] * if p == 0 { h } else { ch }])
            .collect();
        (planes, strides)
    }

    fn smooth(w: usize, h: usize) -> Image {
        let mut img = Image::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) * 3;
                // Slopes of a few levels per pixel, whatever the size.
                img.data[i] = 40.0 + 3.0 * x as f32;
                img.data[i + 1] = 60.0 + 2.0 * y as f32;
                img.data[i + 2] = 200.0 - 1.5 * (x + y) as f32;
            }
        }
        img
    }

    /// `img` packed into a 4:2:0 frame of `layout` and unpacked again.
    fn round_trip(layout: YuvLayout, img: &Image, m: YuvMatrix, s: ChromaSiting) -> Image {
        let (w, h) = (img.width, img.height);
        let (mut planes, strides) = frame(layout, w, h);
        {
            let mut it = planes.iter_mut();
            let p0 = it.next().unwrap();
            let p1 = it.next().unwrap();
            let mut empty = [];
            let p2 = it.next().map_or(&mut empty[..], |v| &mut v[..]);
            let mut f = YuvMut {
                planes: [p0, p1, p2],
                strides,
                width: w,
                height: h,
                layout,
                matrix: m,
                siting: s,
            };
            pack(img, &mut f).unwrap();
        }
        let f = YuvRef {
            planes: [
                &planes[0],
                &planes[1],
                planes.get(2).map_or(&[][..], |v| &v[..]),
            ],
            strides,
            width: w,
            height: h,
            layout,
            matrix: m,
            siting: s,
        };
        let mut back = Image::default();
        unpack_into(&f, &mut back).unwrap();
        back
    }

    /// Known colours: white, black and the primaries in BT.601 and BT.709, limited range,
    /// as the standards give them (8-bit).
    #[test]
    fn primaries_have_their_standard_codes() {
        let cases = [
            (YuvMatrix::BT601, [255.0, 0.0, 0.0], (81, 90, 240)),
            (YuvMatrix::BT601, [0.0, 255.0, 0.0], (145, 54, 34)),
            (YuvMatrix::BT601, [0.0, 0.0, 255.0], (41, 240, 110)),
            (YuvMatrix::BT709, [255.0, 0.0, 0.0], (63, 102, 240)),
            (YuvMatrix::BT709, [0.0, 255.0, 0.0], (173, 42, 26)),
            (YuvMatrix::BT709, [0.0, 0.0, 255.0], (32, 240, 118)),
            (YuvMatrix::BT709, [255.0, 255.0, 255.0], (235, 128, 128)),
            (YuvMatrix::BT709, [0.0, 0.0, 0.0], (16, 128, 128)),
        ];
        for (k, rgb, (y, u, v)) in cases {
            let m = YuvMatrix::new(k, false).coeffs();
            let (cu, cv) = m.chroma(rgb);
            assert_eq!(
                (to_u8(m.luma(rgb)), to_u8(cu), to_u8(cv)),
                (y, u, v),
                "{k:?} {rgb:?}"
            );
            let back = m.rgb(y as f32, u as f32, v as f32);
            for c in 0..3 {
                assert!((back[c] - rgb[c]).abs() < 2.0, "{k:?} {rgb:?} -> {back:?}");
            }
        }
        // Full range: Y spans 0–255.
        let m = YuvMatrix::new(YuvMatrix::BT601, true).coeffs();
        assert_eq!(to_u8(m.luma([255.0; 3])), 255);
        assert!(m.rgb(255.0, 128.0, 128.0).iter().all(|&c| c > 254.99));
    }

    /// RGB → 4:2:0 → RGB of a smooth image comes back within the 8-bit rounding and the
    /// chroma filtering, for both layouts, odd sizes, every siting and matrix.
    #[test]
    fn round_trip_of_a_smooth_image() {
        for layout in [YuvLayout::I420, YuvLayout::Nv12] {
            for (w, h) in [(1, 1), (2, 2), (7, 5), (32, 18)] {
                for (k, full) in [(YuvMatrix::BT601, false), (YuvMatrix::BT709, true)] {
                    for (hc, vc) in [(false, false), (true, false), (true, true)] {
                        let s = ChromaSiting {
                            h_cosited: hc,
                            v_cosited: vc,
                        };
                        let m = YuvMatrix::new(k, full);
                        let img = smooth(w, h);
                        let back = round_trip(layout, &img, m, s);
                        let worst = img
                            .data
                            .iter()
                            .zip(&back.data)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0f32, f32::max);
                        assert!(worst < 6.0, "{layout:?} {w}x{h} {k:?} {s:?}: worst {worst}");
                    }
                }
            }
        }
    }

    /// A flat colour survives exactly (up to rounding), whatever the filters.
    #[test]
    fn flat_colour_is_kept() {
        let (w, h) = (9, 7);
        let mut img = Image::new(w, h);
        for px in img.data.chunks_exact_mut(3) {
            px.copy_from_slice(&[200.0, 30.0, 90.0]);
        }
        for layout in [YuvLayout::I420, YuvLayout::Nv12] {
            let m = YuvMatrix::new(YuvMatrix::BT709, false);
            let s = ChromaSiting {
                h_cosited: true,
                v_cosited: false,
            };
            let back = round_trip(layout, &img, m, s);
            for px in back.data.chunks_exact(3) {
                for (a, b) in px.iter().zip([200.0, 30.0, 90.0]) {
                    assert!((a - b).abs() <= 1.5, "{layout:?}: {px:?}");
                }
            }
        }
    }

    #[test]
    fn short_planes_are_errors() {
        let m = YuvMatrix::new(YuvMatrix::BT601, false);
        let y = vec![0u8; 16];
        let c = vec![0u8; 3];
        let f = YuvRef {
            planes: [&y, &c, &c],
            strides: [4, 2, 2],
            width: 4,
            height: 4,
            layout: YuvLayout::I420,
            matrix: m,
            siting: ChromaSiting::default(),
        };
        let mut img = Image::default();
        let e = unpack_into(&f, &mut img).unwrap_err().to_string();
        assert!(e.contains("plane 1"), "{e}");
    }
}
