//! YUV frames converted one pixel at a time, as the CUDA kernels `yuv_unpack` and `yuv_pack`
//! (kernels/adabm.cu) do: the frame's planes packed tightly one after the other
//! ([`YuvFormat::tight_len`]), described to a kernel by [`YuvParams`].
//!
//! [`unpack_pixel`] and [`pack_pixel`] are those kernels written in Rust, with the same
//! operations in the same order; the tests check them against the row-wise conversions of the
//! parent module between a frame and the network's f32 RGB ([`unpack_with`](super::unpack_with),
//! [`pack_with`](super::pack_with), what the CPU engine runs on), which the GPU must reproduce
//! bit for bit (the CUDA parity tests compare the kernels with
//! those too). Every layout but v210 and GRAY16_BE ([`YuvLayout::device_convertible`]; the
//! host repacks those two, [`YuvFormat::device`]) and the planar ones with an alpha plane
//! (A420 and its kin, whose colour planes go as I420, …): planar, semi-planar, grey, packed 4:2:2
//! (YUY2, UYVY, YVYU) and packed 4:4:4 (AYUV, VUYA; their alpha is the host's,
//! [`unpack_alpha_into`](super::unpack_alpha_into) and [`pack_alpha`](super::pack_alpha)).

use super::{ChromaSiting, Coeffs, YuvLayout, YuvMatrix, YuvMut, YuvRef, down_taps, up_taps};
use crate::engine::error::{Error, Result};
use crate::engine::frame::to_u8;
use crate::engine::quant::{clamp, round_even_small};

/// A YUV frame's format without its size: layout, colour matrix and range, chroma siting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YuvFormat {
    pub layout: YuvLayout,
    pub matrix: YuvMatrix,
    pub siting: ChromaSiting,
}

impl YuvFormat {
    /// The format a frame of this one has on the device: itself, but v210's samples go as
    /// I422_10LE planes (the host's own v210 conversion goes through those too, so the
    /// pixels are the same), GRAY16_BE's as GRAY16_LE (its words byte-swapped) and A420's
    /// and its kin's colour planes alone (their alpha plane stays on the host), with
    /// [`YuvRef::copy_tight`] and [`YuvMut::store_tight`].
    pub fn device(self) -> YuvFormat {
        let layout = match self.layout {
            YuvLayout::Gray16Be => YuvLayout::Gray16,
            l => l.staged().unwrap_or(l.colour()),
        };
        YuvFormat { layout, ..self }
    }

    /// Bytes of a `w x h` frame with its planes packed tightly (rows of exactly the plane's
    /// row bytes, planes one after the other).
    pub fn tight_len(&self, w: usize, h: usize) -> usize {
        self.layout
            .plane_sizes(w, h)
            .iter()
            .map(|(row, rows)| row * rows)
            .sum()
    }

    /// The network's RGB values (f32, 0–255) of a `w x h` frame of this format given as tight
    /// planes: the host's [`unpack_with`](super::unpack_with), what the CPU engine upscales.
    pub fn unpack_tight(&self, data: &[u8], w: usize, h: usize) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        super::unpack_with(&YuvRef::from_tight(data, *self, w, h)?, |v| v, &mut out)?;
        Ok(out)
    }

    /// A `w x h` frame of this format as tight planes from RGB values (f32, 0–255 scale,
    /// unrounded): the host's [`pack_with`](super::pack_with), what the CPU engine writes.
    pub fn pack_tight(&self, rgb: &[f32], w: usize, h: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.tight_len(w, h)];
        super::pack_with(
            rgb,
            w,
            h,
            &mut YuvMut::from_tight(&mut out, *self, w, h)?,
            |&v| v,
        )?;
        Ok(out)
    }
}

impl YuvLayout {
    /// The layouts the CUDA engine converts on the device: all but v210 (6 pixels in 16 bytes
    /// of 10-bit words) and GRAY16_BE, which the host repacks to and from I422_10LE planes
    /// and GRAY16_LE ([`YuvRef::copy_tight`]; [`YuvFormat::device`]), and the planar layouts
    /// with an alpha plane, whose colour planes go as their layout without it (A420 as I420).
    pub fn device_convertible(self) -> bool {
        self != Self::Gray16Be && self.staged().is_none() && !self.alpha_plane()
    }
}

impl<'a> YuvRef<'a> {
    /// The format of this frame.
    pub fn format(&self) -> YuvFormat {
        YuvFormat {
            layout: self.layout,
            matrix: self.matrix,
            siting: self.siting,
        }
    }

    /// This frame's planes packed tightly into `out` (resized), in its device format
    /// ([`YuvFormat::device`]: v210 as I422_10LE planes, GRAY16_BE as GRAY16_LE, A420 and
    /// its kin without their alpha plane):
    /// [`YuvFormat::tight_len`] of that.
    pub fn copy_tight(&self, out: &mut Vec<u8>) -> Result<()> {
        self.check()?;
        let (w, h) = (self.width, self.height);
        if self.layout.staged().is_some() {
            super::to_planar(self, out);
            return Ok(());
        }
        out.clear();
        out.reserve(self.format().device().tight_len(w, h));
        // The colour planes (A420's alpha plane stays on the host).
        let sizes = self.layout.colour().plane_sizes(w, h);
        for (p, (row, rows)) in sizes.into_iter().enumerate() {
            for r in 0..rows {
                out.extend_from_slice(&self.planes[p][r * self.strides[p]..][..row]);
            }
        }
        if self.layout.big_endian() {
            swap_words(out);
        }
        Ok(())
    }

    /// A frame over the tightly packed planes `data` of a `w x h` frame of format `f`.
    pub fn from_tight(data: &'a [u8], f: YuvFormat, w: usize, h: usize) -> Result<Self> {
        let sizes = f.layout.plane_sizes(w, h);
        check_tight(data.len(), f, w, h)?;
        let mut rest = data;
        let planes = sizes.map(|(row, rows)| {
            let (p, r) = rest.split_at(row * rows);
            rest = r;
            p
        });
        Ok(YuvRef {
            planes,
            strides: sizes.map(|(row, _)| row),
            width: w,
            height: h,
            layout: f.layout,
            matrix: f.matrix,
            siting: f.siting,
        })
    }
}

impl<'a> YuvMut<'a> {
    /// A frame over the tightly packed planes `data` of a `w x h` frame of format `f`.
    pub fn from_tight(data: &'a mut [u8], f: YuvFormat, w: usize, h: usize) -> Result<Self> {
        let sizes = f.layout.plane_sizes(w, h);
        check_tight(data.len(), f, w, h)?;
        let (a, rest) = data.split_at_mut(sizes[0].0 * sizes[0].1);
        let (b, rest) = rest.split_at_mut(sizes[1].0 * sizes[1].1);
        let (c, d) = rest.split_at_mut(sizes[2].0 * sizes[2].1);
        Ok(YuvMut {
            planes: [a, b, c, d],
            strides: sizes.map(|(row, _)| row),
            width: w,
            height: h,
            layout: f.layout,
            matrix: f.matrix,
            siting: f.siting,
        })
    }

    /// The format of this frame.
    pub fn format(&self) -> YuvFormat {
        YuvFormat {
            layout: self.layout,
            matrix: self.matrix,
            siting: self.siting,
        }
    }

    /// Writes this frame's planes from their tightly packed bytes `data` in its device format
    /// ([`YuvFormat::device`]: a v210 frame from I422_10LE planes, repacked; GRAY16_BE from
    /// GRAY16_LE, byte-swapped);
    /// padding past each row's bytes is left as it was.
    pub fn store_tight(&mut self, data: &[u8]) -> Result<()> {
        self.check()?;
        let (w, h) = (self.width, self.height);
        let device = self.format().device();
        check_tight(data.len(), device, w, h)?;
        if self.layout.staged().is_some() {
            let [y, u, v, _] = YuvRef::from_tight(data, device, w, h)?.planes;
            super::from_planar([y, u, v], self);
            return Ok(());
        }
        let mut at = 0;
        let swap = self.layout.big_endian();
        // The colour planes (A420's alpha plane stays on the host).
        let sizes = self.layout.colour().plane_sizes(w, h);
        for (p, (row, rows)) in sizes.into_iter().enumerate() {
            let stride = self.strides[p];
            for r in 0..rows {
                let dst = &mut self.planes[p][r * stride..][..row];
                dst.copy_from_slice(&data[at..at + row]);
                if swap {
                    swap_words(dst);
                }
                at += row;
            }
        }
        Ok(())
    }
}

/// Swaps the bytes of each 16-bit word of `b` (big- to little-endian and back).
fn swap_words(b: &mut [u8]) {
    for w in b.chunks_exact_mut(2) {
        w.swap(0, 1);
    }
}

fn check_tight(len: usize, f: YuvFormat, w: usize, h: usize) -> Result<()> {
    let want = f.tight_len(w, h);
    if len != want || w == 0 || h == 0 {
        return Err(Error::Input(format!(
            "{:?} frame {w}x{h} with tightly packed planes: {len} bytes, expected {want}",
            f.layout
        )));
    }
    Ok(())
}

/// What `yuv_unpack` and `yuv_pack` know of a frame (`struct YuvParams` in kernels/adabm.cu,
/// field for field): its tight planes, geometry, sample storage and the conversion's
/// coefficients, computed once on the host ([`Coeffs`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct YuvParams {
    /// Byte offset of each plane in the tight buffer (unused planes: the end).
    pub off: [u64; 3],
    /// Row bytes of each plane (0 when unused).
    pub stride: [i32; 3],
    pub w: i32,
    pub h: i32,
    /// Chroma plane size in samples.
    pub cw: i32,
    pub ch: i32,
    /// Chroma subsampling (1 or 2).
    pub sx: i32,
    pub sy: i32,
    /// Bytes per sample (1 or 2) and where the sample's bits start in a 2-byte word.
    pub bytes: i32,
    pub shift: i32,
    /// 0: grey (luma only), 1: with chroma.
    pub chroma: i32,
    /// The luma of pixel x: byte `x * ystep + yoff` of plane 0's row.
    pub ystep: i32,
    pub yoff: i32,
    /// Chroma sample c's U (k = 0) and V (k = 1): byte `c * cstep + coff[k]` of plane
    /// `cplane[k]`'s row.
    pub cstep: i32,
    pub coff: [i32; 2],
    pub cplane: [i32; 2],
    /// Packed 4:4:4 with alpha: the alpha sample's first byte in a pixel (packing writes the
    /// depth's largest code, as the host's colour packing does before
    /// [`pack_alpha`](super::pack_alpha)); -1 without.
    pub aoff: i32,
    /// Packed 4:2:2 of odd width: the last group's second luma repeats the last pixel's.
    pub ypad: i32,
    pub h_cosited: i32,
    pub v_cosited: i32,
    pub yo: f32,
    pub centre: f32,
    pub max: f32,
    pub ky: f32,
    pub rv: f32,
    pub gu: f32,
    pub gv: f32,
    pub bu: f32,
    pub l: [f32; 3],
    pub u: [f32; 3],
    pub v: [f32; 3],
}

// The kernels' struct: 3 u64, 23 i32 and 17 f32, no padding.
const _: () = assert!(std::mem::size_of::<YuvParams>() == 184);

impl YuvParams {
    /// The parameters of a `w x h` frame of format `f`; None for a layout the device does not
    /// convert ([`YuvLayout::device_convertible`]) or a frame too large for the kernels' 32-bit
    /// row arithmetic.
    pub fn new(f: YuvFormat, w: usize, h: usize) -> Option<Self> {
        let l = f.layout;
        if !l.device_convertible() || w == 0 || h == 0 || w.max(h) > i32::MAX as usize / 8 {
            return None;
        }
        let sizes = l.plane_sizes(w, h);
        let mut off = [0u64; 3];
        let mut at = 0u64;
        for p in 0..3 {
            off[p] = at;
            at += (sizes[p].0 * sizes[p].1) as u64;
        }
        let (cw, ch) = l.chroma_size(w, h);
        let (sx, sy) = l.subsampling();
        let m: Coeffs = f.matrix.coeffs(l.depth());
        let b = l.word();
        // Where samples sit in their rows: (luma step, luma offset, chroma step, U and V
        // offsets, U and V planes, alpha offset).
        let (ystep, yoff, cstep, coff, cplane, aoff) = if let Some(at) = l.packed() {
            (2 * b, at[0] * b, 4 * b, [at[2] * b, at[3] * b], [0, 0], -1)
        } else if let Some(at) = l.packed444() {
            let a = (at[3] * b) as i32;
            (4 * b, at[0] * b, 4 * b, [at[1] * b, at[2] * b], [0, 0], a)
        } else if l.interleaved() {
            let coff = if l.vu() { [b, 0] } else { [0, b] };
            (b, 0, 2 * b, coff, [1, 1], -1)
        } else {
            let (pu, pv) = l.uv_planes();
            (b, 0, b, [0, 0], [pu as i32, pv as i32], -1)
        };
        Some(Self {
            off,
            stride: [0, 1, 2].map(|p| sizes[p].0 as i32),
            w: w as i32,
            h: h as i32,
            cw: cw as i32,
            ch: ch as i32,
            sx: sx as i32,
            sy: sy as i32,
            bytes: b as i32,
            shift: l.shift() as i32,
            chroma: !l.grey() as i32,
            ystep: ystep as i32,
            yoff: yoff as i32,
            cstep: cstep as i32,
            coff: coff.map(|o| o as i32),
            cplane,
            aoff,
            ypad: (l.packed().is_some() && w % 2 == 1) as i32,
            h_cosited: f.siting.h_cosited as i32,
            v_cosited: f.siting.v_cosited as i32,
            yo: m.yo,
            centre: m.centre,
            max: m.max,
            ky: m.y,
            rv: m.rv,
            gu: m.gu,
            gv: m.gv,
            bu: m.bu,
            l: m.l,
            u: m.u,
            v: m.v,
        })
    }

    /// Sample at byte `byte` of row `row` of plane `plane`, as `yuv_get`.
    fn get(&self, src: &[u8], plane: usize, row: usize, byte: usize) -> f32 {
        let at = self.off[plane] as usize + row * self.stride[plane] as usize + byte;
        if self.bytes == 1 {
            src[at] as f32
        } else {
            let v = u16::from_le_bytes([src[at], src[at + 1]]) as u32;
            (v >> self.shift) as i32 as f32
        }
    }

    /// Stores `v` as a sample at byte `byte` of row `row` of plane `plane`, as `yuv_put`:
    /// rounded half to even, clamped to the depth's codes.
    fn put(&self, dst: &mut [u8], plane: usize, row: usize, byte: usize, v: f32) {
        let at = self.off[plane] as usize + row * self.stride[plane] as usize + byte;
        if self.bytes == 1 {
            dst[at] = to_u8(v);
        } else {
            let code = round_even_small(clamp(v, 0.0, self.max)) as i32;
            let word = ((code as u32) << self.shift) as u16;
            dst[at..at + 2].copy_from_slice(&word.to_le_bytes());
        }
    }

    /// Plane and byte (within the row) of chroma sample `c`'s U and V.
    fn chroma_at(&self, c: usize) -> [(usize, usize); 2] {
        [0, 1].map(|k| {
            let byte = c * self.cstep as usize + self.coff[k] as usize;
            (self.cplane[k] as usize, byte)
        })
    }

    /// Byte of pixel `x`'s luma in its row.
    fn luma_at(&self, x: usize) -> usize {
        x * self.ystep as usize + self.yoff as usize
    }
}

/// RGB values (f32, clamped to 0–255) of pixel (x, y) of the tight frame `src`: `yuv_unpack`'s
/// thread for that pixel. Chroma is interpolated along y at the (one or two) chroma columns
/// the pixel reads, then along x, each sum from 0 in tap order skipping zero weights along y —
/// the row-wise [`unpack_with`](super::unpack_with)'s operations.
pub fn unpack_pixel(p: &YuvParams, src: &[u8], x: usize, y: usize) -> [f32; 3] {
    let luma = p.get(src, 0, y, p.luma_at(x));
    let (u, v) = if p.chroma == 0 {
        (p.centre, p.centre)
    } else {
        // This row's U and V at chroma column c (interpolated along y).
        let column = |c: usize| -> (f32, f32) {
            let [(pu, bu), (pv, bv)] = p.chroma_at(c);
            let (mut tu, mut tv) = (0.0f32, 0.0f32);
            for (r, a) in up_taps(y, p.ch as usize, p.v_cosited != 0, p.sy as usize) {
                if a == 0.0 {
                    continue;
                }
                tu += a * p.get(src, pu, r, bu);
                tv += a * p.get(src, pv, r, bv);
            }
            (tu, tv)
        };
        if p.sx == 1 {
            column(x)
        } else {
            let [(c0, b0), (c1, b1)] = up_taps(x, p.cw as usize, p.h_cosited != 0, 2);
            let ((u0, v0), (u1, v1)) = (column(c0), column(c1));
            (b0 * u0 + b1 * u1, b0 * v0 + b1 * v1)
        }
    };
    // `Coeffs::rgb`.
    let (e, u, v) = (p.ky * (luma - p.yo), u - p.centre, v - p.centre);
    [e + p.rv * v, e + p.gu * u + p.gv * v, e + p.bu * u].map(|c| clamp(c, 0.0, 255.0))
}

/// Writes pixel (x, y) of the tight frame `dst` from the RGB values `rgb` (`p.w x p.h x 3`
/// f32, 0–255 scale, unrounded: the network's output): `yuv_pack`'s thread for that pixel. Its
/// luma, and when it is the first luma pixel of a chroma sample, that sample: the RGB filtered
/// along y at each luma column of the sample's taps, then along x, each sum from 0 in tap
/// order skipping zero weights — the row-wise [`pack_with`](super::pack_with)'s operations (at
/// 4:4:4 both filters have the single weight 1, so the sample is the pixel's own RGB, as there).
pub fn pack_pixel(p: &YuvParams, rgb: &[f32], dst: &mut [u8], x: usize, y: usize) {
    let (w, h) = (p.w as usize, p.h as usize);
    let px = |xx: usize, yy: usize, c: usize| rgb[(yy * w + xx) * 3 + c];
    let rgb_at = [px(x, y, 0), px(x, y, 1), px(x, y, 2)];
    // `Coeffs::luma`.
    let luma = p.yo + p.l[0] * rgb_at[0] + p.l[1] * rgb_at[1] + p.l[2] * rgb_at[2];
    p.put(dst, 0, y, p.luma_at(x), luma);
    if p.ypad != 0 && x == w - 1 {
        p.put(dst, 0, y, p.luma_at(x + 1), luma);
    }
    if p.aoff >= 0 {
        // Opaque: the depth's largest code.
        p.put(dst, 0, y, x * p.ystep as usize + p.aoff as usize, p.max);
    }
    let (sx, sy) = (p.sx as usize, p.sy as usize);
    if p.chroma == 0 || !x.is_multiple_of(sx) || !y.is_multiple_of(sy) {
        return;
    }
    let (cx, cy) = (x / sx, y / sy);
    let mut c3 = [0.0f32; 3];
    for (xx, wx) in down_taps(cx, w, p.h_cosited != 0, sx) {
        if wx == 0.0 {
            continue;
        }
        for (c, out) in c3.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (yy, wy) in down_taps(cy, h, p.v_cosited != 0, sy) {
                if wy != 0.0 {
                    acc += wy * px(xx, yy, c);
                }
            }
            *out += wx * acc;
        }
    }
    // `Coeffs::chroma`.
    let d = |k: [f32; 3]| k[0] * c3[0] + k[1] * c3[1] + k[2] * c3[2];
    let (u, v) = (p.centre + d(p.u), p.centre + d(p.v));
    let [(pu, bu), (pv, bv)] = p.chroma_at(cx);
    p.put(dst, pu, cy, bu, u);
    p.put(dst, pv, cy, bv, v);
}

/// Every layout the device converts, each in four variants (BT.601 / BT.709 / BT.2020 in
/// turn, limited and full range, all four chroma sitings): what the tests of the device
/// conversion and its start-up check cover.
pub fn device_formats() -> Vec<YuvFormat> {
    let mut out = Vec::new();
    for (i, layout) in YuvLayout::ALL.into_iter().enumerate() {
        if !layout.device_convertible() {
            continue;
        }
        for k in 0..4 {
            out.push(YuvFormat {
                layout,
                matrix: YuvMatrix::new(
                    [YuvMatrix::BT601, YuvMatrix::BT709, YuvMatrix::BT2020][(i + k) % 3],
                    k % 2 == 1,
                ),
                siting: ChromaSiting {
                    h_cosited: k & 1 == 0,
                    v_cosited: k & 2 != 0,
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{pack_with, unpack_with};
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        crate::engine::random::Rng::new(seed).bytes(n)
    }

    fn noise_rgb(n: usize, seed: u64) -> Vec<f32> {
        crate::engine::random::Rng::new(seed).network_rgb(n)
    }

    /// [`unpack_with`] into f32: the CPU engine's input.
    fn unpack_f32(f: &YuvRef) -> Vec<f32> {
        let mut out = Vec::new();
        unpack_with(f, |v| v, &mut out).unwrap();
        out
    }

    /// [`pack_with`] from f32: the CPU engine's output.
    fn pack_f32(rgb: &[f32], f: &mut YuvMut) {
        let (w, h) = (f.width, f.height);
        pack_with(rgb, w, h, f, |&v| v).unwrap();
    }

    /// A `w x h` frame of format `f` with padded rows (the parent's tests' frame), noise in
    /// its planes.
    fn noisy_frame(f: YuvFormat, w: usize, h: usize, seed: u64) -> (Vec<Vec<u8>>, [usize; 4]) {
        let (mut planes, strides) = super::super::tests::frame(f.layout, w, h);
        for (p, plane) in planes.iter_mut().enumerate() {
            *plane = noise(plane.len(), seed + p as u64);
        }
        (planes, strides)
    }

    fn frame_ref(
        planes: &[Vec<u8>],
        strides: [usize; 4],
        f: YuvFormat,
        w: usize,
        h: usize,
    ) -> YuvRef<'_> {
        YuvRef {
            planes: super::super::planes_ref(planes),
            strides,
            width: w,
            height: h,
            layout: f.layout,
            matrix: f.matrix,
            siting: f.siting,
        }
    }

    const SIZES: [(usize, usize); 7] =
        [(1, 1), (2, 1), (1, 3), (7, 5), (16, 9), (33, 17), (128, 96)];

    #[test]
    fn every_layout_but_v210_y410_gray16_be_and_alpha_planes_is_converted_on_the_device() {
        let on: Vec<YuvLayout> = YuvLayout::ALL
            .into_iter()
            .filter(|l| l.device_convertible())
            .collect();
        assert_eq!(on.len(), YuvLayout::ALL.len() - 7, "{on:?}");
        for layout in [
            YuvLayout::V210,
            YuvLayout::Y410,
            YuvLayout::Gray16Be,
            YuvLayout::A420,
            YuvLayout::A420p10,
            YuvLayout::A422p10,
            YuvLayout::A444p10,
        ] {
            assert!(!layout.device_convertible());
            let f = YuvFormat {
                layout,
                matrix: YuvMatrix::new(YuvMatrix::BT709, false),
                siting: ChromaSiting::default(),
            };
            assert_eq!(YuvParams::new(f, 8, 8), None);
            // What the host repacks them to is converted there.
            assert!(f.device().layout.device_convertible());
        }
    }

    /// The per-pixel unpack (the kernel's) gives the values of the row-wise one, for every
    /// device layout, size, range, matrix and siting — on random samples, so that every
    /// chroma tap and clamp is exercised (16-bit words with bits above the depth too: both
    /// read a word the same way, and clamp what it gives).
    #[test]
    fn unpack_pixel_is_the_row_wise_unpack() {
        for (i, f) in device_formats().into_iter().enumerate() {
            for (j, &(w, h)) in SIZES.iter().enumerate() {
                let p = YuvParams::new(f, w, h).expect("device layout");
                // The planes where `YuvFormat`'s tight layout puts them.
                let sizes = f.layout.plane_sizes(w, h);
                let ends = [0, 1, 2].map(|k| p.off[k] as usize + sizes[k].0 * sizes[k].1);
                assert_eq!((p.off[0], ends[2]), (0, f.tight_len(w, h)), "{f:?} {w}x{h}");
                assert_eq!([p.off[1], p.off[2]].map(|o| o as usize), [ends[0], ends[1]]);
                let data = noise(f.tight_len(w, h), (i * 31 + j) as u64);
                let frame = YuvRef::from_tight(&data, f, w, h).unwrap();
                let want = unpack_f32(&frame);
                for y in 0..h {
                    for x in 0..w {
                        let got = unpack_pixel(&p, &data, x, y).map(f32::to_bits);
                        let want: Vec<u32> = want[(y * w + x) * 3..][..3]
                            .iter()
                            .map(|v| v.to_bits())
                            .collect();
                        assert_eq!(got[..], want[..], "{f:?} {w}x{h} pixel ({x}, {y})");
                    }
                }
            }
        }
    }

    /// The per-pixel pack (the kernel's) writes the bytes of the row-wise one.
    #[test]
    fn pack_pixel_is_the_row_wise_pack() {
        for (i, f) in device_formats().into_iter().enumerate() {
            for (j, &(w, h)) in SIZES.iter().enumerate() {
                let p = YuvParams::new(f, w, h).expect("device layout");
                let rgb = noise_rgb(w * h * 3, (i * 37 + j + 1000) as u64);
                let n = f.tight_len(w, h);
                let mut want = vec![0u8; n];
                pack_f32(&rgb, &mut YuvMut::from_tight(&mut want, f, w, h).unwrap());
                // Every byte written: a sentinel fill that survives shows.
                let mut got = vec![0xA5u8; n];
                for y in 0..h {
                    for x in 0..w {
                        pack_pixel(&p, &rgb, &mut got, x, y);
                    }
                }
                assert_eq!(got, want, "{f:?} {w}x{h}");
            }
        }
    }

    fn one_plane(data: &mut [u8], stride: usize, w: usize, h: usize, f: YuvFormat) -> YuvMut<'_> {
        YuvMut {
            planes: [data, &mut [], &mut [], &mut []],
            strides: [stride, 0, 0, 0],
            width: w,
            height: h,
            layout: f.layout,
            matrix: f.matrix,
            siting: f.siting,
        }
    }

    /// A v210 frame goes to the device as I422_10LE planes, a Y410 one as Y444_10LE and a
    /// GRAY16_BE one as GRAY16_LE, and each comes back from them: the pixels and the frame's
    /// bytes are the host's own conversions' of that layout.
    #[test]
    fn v210_y410_and_gray16_be_go_to_the_device_as_little_endian_planes() {
        let cases = [
            (YuvLayout::V210, YuvLayout::I422p10),
            (YuvLayout::Y410, YuvLayout::Y444p10),
            (YuvLayout::Gray16Be, YuvLayout::Gray16),
        ];
        for (k, ((layout, on_device), &(w, h))) in cases
            .into_iter()
            .flat_map(|c| {
                [(1, 1), (5, 2), (6, 3), (13, 5), (50, 4)]
                    .iter()
                    .map(move |s| (c, s))
            })
            .enumerate()
        {
            let f = YuvFormat {
                layout,
                matrix: YuvMatrix::new(YuvMatrix::BT709, k % 2 == 1),
                siting: ChromaSiting::default(),
            };
            let dev = f.device();
            assert_eq!(dev.layout, on_device);
            let row = f.layout.plane_sizes(w, h)[0].0;
            let stride = row + 16;
            let rgb = noise_rgb(w * h * 3, k as u64 + 300);
            // The host's frame of `rgb`, padding marked.
            let mut frame = vec![0x5Au8; stride * h];
            pack_f32(&rgb, &mut one_plane(&mut frame, stride, w, h, f));
            let src = YuvRef {
                planes: [&frame, &[], &[], &[]],
                strides: [stride, 0, 0, 0],
                width: w,
                height: h,
                layout: f.layout,
                matrix: f.matrix,
                siting: f.siting,
            };
            let mut tight = Vec::new();
            src.copy_tight(&mut tight).unwrap();
            assert_eq!(tight.len(), dev.tight_len(w, h), "{layout:?} {w}x{h}");
            let want = unpack_f32(&src);
            assert_eq!(
                dev.unpack_tight(&tight, w, h).unwrap(),
                want,
                "{layout:?} {w}x{h} unpack"
            );
            // Back: the device's planes of `rgb`, stored into a frame of the layout.
            let planes = dev.pack_tight(&rgb, w, h).unwrap();
            let mut got = vec![0x5Au8; stride * h];
            one_plane(&mut got, stride, w, h, f)
                .store_tight(&planes)
                .unwrap();
            assert!(got == frame, "{layout:?} {w}x{h} pack");
            assert!(
                one_plane(&mut got, stride, w, h, f)
                    .store_tight(&planes[1..])
                    .is_err()
            );
        }
    }

    /// A420 and its kin go to the device as their colour planes (I420, …): the alpha plane is
    /// neither copied nor written (the host upscales it), and the colour is the same.
    #[test]
    fn alpha_planes_stay_on_the_host() {
        for (layout, colour) in [
            (YuvLayout::A420, YuvLayout::I420),
            (YuvLayout::A420p10, YuvLayout::I420p10),
            (YuvLayout::A422p10, YuvLayout::I422p10),
            (YuvLayout::A444p10, YuvLayout::Y444p10),
        ] {
            let f = YuvFormat {
                layout,
                matrix: YuvMatrix::new(YuvMatrix::BT709, false),
                siting: ChromaSiting::default(),
            };
            assert_eq!(f.device().layout, colour);
            let (w, h) = (7, 5);
            let (planes, strides) = noisy_frame(f, w, h, 40);
            let src = frame_ref(&planes, strides, f, w, h);
            let mut tight = Vec::new();
            src.copy_tight(&mut tight).unwrap();
            assert_eq!(tight.len(), f.device().tight_len(w, h), "{layout:?}");
            let colour_only = YuvRef {
                layout: colour,
                ..src
            };
            let mut want = Vec::new();
            colour_only.copy_tight(&mut want).unwrap();
            assert_eq!(tight, want, "{layout:?}");
            let mut out = planes.clone();
            for p in &mut out[..3] {
                p.fill(0);
            }
            let mut dst = YuvMut {
                planes: super::super::planes_mut(&mut out),
                strides,
                width: w,
                height: h,
                layout,
                matrix: f.matrix,
                siting: f.siting,
            };
            dst.store_tight(&tight).unwrap();
            assert_eq!(out[3], planes[3], "{layout:?}: alpha written");
            let back = YuvRef {
                planes: super::super::planes_ref(&out),
                ..src
            };
            let mut again = Vec::new();
            back.copy_tight(&mut again).unwrap();
            assert_eq!(again, tight, "{layout:?}");
        }
    }

    /// Padded planes to tight bytes and back are the identity on the samples, and padding is
    /// left alone; wrong lengths are errors.
    #[test]
    fn tight_planes_round_trip() {
        let f = YuvFormat {
            layout: YuvLayout::P010,
            matrix: YuvMatrix::new(YuvMatrix::BT2020, false),
            siting: ChromaSiting::default(),
        };
        let (w, h) = (7, 5);
        let sizes = f.layout.plane_sizes(w, h);
        let (planes, strides) = noisy_frame(f, w, h, 7);
        let src = frame_ref(&planes, strides, f, w, h);
        let mut tight = Vec::new();
        src.copy_tight(&mut tight).unwrap();
        assert_eq!(tight.len(), f.tight_len(w, h));
        assert_eq!(tight.len(), w * h * 2 + 4 * 3 * 2 * 2);
        let mut out: Vec<Vec<u8>> = (0..2)
            .map(|p| vec![0x5Au8; strides[p] * sizes[p].1])
            .collect();
        {
            let mut dst = YuvMut {
                planes: super::super::planes_mut(&mut out),
                strides,
                width: w,
                height: h,
                layout: f.layout,
                matrix: f.matrix,
                siting: f.siting,
            };
            dst.store_tight(&tight).unwrap();
            assert!(dst.store_tight(&tight[1..]).is_err());
        }
        for p in 0..2 {
            for r in 0..sizes[p].1 {
                let row = &out[p][r * strides[p]..][..strides[p]];
                assert_eq!(row[..sizes[p].0], planes[p][r * strides[p]..][..sizes[p].0]);
                assert!(row[sizes[p].0..].iter().all(|&b| b == 0x5A), "padding kept");
            }
        }
        assert!(YuvRef::from_tight(&tight[..tight.len() - 1], f, w, h).is_err());
        assert!(YuvMut::from_tight(&mut tight.clone()[1..], f, w, h).is_err());
        let back = YuvRef::from_tight(&tight, f, w, h).unwrap();
        assert_eq!(unpack_f32(&src), unpack_f32(&back));
    }
}
