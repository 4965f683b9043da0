//! YUV frames in and out of the engine — 4:2:0 (I420, YV12, NV12, NV21, I420_10LE, P010_10LE,
//! I420_12LE, P012_LE, P016_LE), 4:2:2 (Y42B, NV16, NV61, I422_10LE, I422_12LE, v210, packed
//! YUY2 / UYVY / YVYU, Y210, Y212_LE) and 4:4:4 (Y444, NV24, Y444_10LE, Y444_12LE, Y444_16LE,
//! packed AYUV / VUYA / Y412_LE / AYUV64 / Y410 with alpha), planar with an alpha plane (A420,
//! A420_10LE, A422_10LE, A444_10LE), 8, 10, 12 and 16 bits, and grey (GRAY8,
//! GRAY16_LE, GRAY16_BE: luma only) — converted straight to and from its RGB f32 (0–255)
//! images: the
//! colour matrix and range of the caps (BT.601 / BT.709 / BT.2020 / SMPTE 240M / FCC, limited
//! or full range, at the format's depth), subsampled chroma upsampled and downsampled
//! bilinearly at the caps' chroma siting (co-sited or centred, per axis).
//!
//! Against a `videoconvert` on each side of an RGB upscaler this saves two frame passes and
//! the rounding of the network's input and output to 8-bit RGB: the network reads the exact
//! RGB of the YUV samples (10- and 12-bit samples included) and its output is rounded once, to
//! Y, U and V at the format's depth.

use super::error::{Error, Result};
use super::frame::{Image, Rect, Window};
use super::quant::{clamp, round_even_small};
use rayon::prelude::*;
use std::cell::RefCell;

pub mod device;
pub use device::{YuvFormat, YuvParams};

thread_local! {
    /// A worker's row of chroma (two planes' worth, unpacking) or of filtered RGB (packing),
    /// kept between rows and frames.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A v210 or Y410 frame as I422_10LE or Y444_10LE planes (the caller's thread), kept
    /// between frames.
    static STAGED_PLANES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The YUV layouts: three planes (Y, U, V), four (and alpha), two (Y, interleaved UV), or one
/// of packed pixels; 8-bit samples in bytes, deeper ones in little-endian 16-bit words (in the low bits;
/// P010, P012, Y210, Y212_LE and Y412_LE in the high bits; GRAY16_BE big-endian, v210 and Y410
/// their own packings in 32-bit words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YuvLayout {
    /// 4:2:0 planar, 8 bits.
    I420,
    /// YV12: I420 with the V plane before the U plane.
    Yv12,
    /// 4:2:0 Y and interleaved UV, 8 bits.
    Nv12,
    /// 4:2:0 Y and interleaved VU, 8 bits.
    Nv21,
    /// 4:2:2 Y and interleaved UV, 8 bits.
    Nv16,
    /// 4:2:2 Y and interleaved VU, 8 bits.
    Nv61,
    /// 4:4:4 Y and interleaved UV, 8 bits.
    Nv24,
    /// 4:2:2 planar, 8 bits.
    Y42b,
    /// 4:4:4 planar, 8 bits.
    Y444,
    /// I420_10LE: 4:2:0 planar, 10 bits.
    I420p10,
    /// I422_10LE: 4:2:2 planar, 10 bits.
    I422p10,
    /// Y444_10LE: 4:4:4 planar, 10 bits.
    Y444p10,
    /// P010_10LE: 4:2:0 Y and interleaved UV, 10 bits in the high bits of each word.
    P010,
    /// I420_12LE: 4:2:0 planar, 12 bits.
    I420p12,
    /// I422_12LE: 4:2:2 planar, 12 bits.
    I422p12,
    /// Y444_12LE: 4:4:4 planar, 12 bits.
    Y444p12,
    /// P012_LE: 4:2:0 Y and interleaved UV, 12 bits in the high bits of each word.
    P012,
    /// P016_LE: 4:2:0 Y and interleaved UV, 16 bits (NVDEC's 12-bit output).
    P016,
    /// Y444_16LE: 4:4:4 planar, 16 bits (NVDEC's 10- and 12-bit 4:4:4 output).
    Y444p16,
    /// v210: packed 4:2:2, 10 bits, 6 pixels in 16 bytes — four little-endian 32-bit words of
    /// three samples (bits 0–9, 10–19, 20–29): Cb0 Y0 Cr0, Y1 Cb1 Y2, Cr1 Y3 Cb2, Y4 Cr2 Y5
    /// (SDI capture cards).
    V210,
    /// YUY2: packed 4:2:2, Y0 U Y1 V, 8 bits (webcams).
    Yuy2,
    /// UYVY: packed 4:2:2, U Y0 V Y1, 8 bits.
    Uyvy,
    /// YVYU: packed 4:2:2, Y0 V Y1 U, 8 bits.
    Yvyu,
    /// Y210: packed 4:2:2, Y0 U Y1 V in little-endian 16-bit words, 10 bits in the high bits
    /// (VA-API's and D3D11's 10-bit 4:2:2 decoder output).
    Y210,
    /// Y212_LE: Y210's layout with 12 bits in the high bits of each word.
    Y212,
    /// AYUV: packed 4:4:4 with alpha, A Y U V, 8 bits.
    Ayuv,
    /// VUYA: packed 4:4:4 with alpha, V U Y A, 8 bits (hardware decoders' and encoders'
    /// 4:4:4).
    Vuya,
    /// Y412_LE: packed 4:4:4 with alpha, U Y V A in little-endian 16-bit words, 12 bits in the
    /// high bits (VA-API's and D3D11's 12-bit 4:4:4 decoder output).
    Y412,
    /// AYUV64: packed 4:4:4 with alpha, A Y U V in little-endian 16-bit words, 16 bits.
    Ayuv64,
    /// Y410: packed 4:4:4, 10 bits, one little-endian 32-bit word a pixel: U in bits 0–9, Y in
    /// 10–19, V in 20–29, a 2-bit alpha in 30–31 (VA-API's and D3D11's 10-bit 4:4:4 decoder
    /// output).
    Y410,
    /// A420: I420 and a fourth plane of alpha at the luma's size, 8 bits (VP8 / VP9 with
    /// alpha decoded by `vp8alphadecodebin` / `vp9alphadecodebin`).
    A420,
    /// A420_10LE: I420_10LE and a 10-bit alpha plane.
    A420p10,
    /// A422_10LE: I422_10LE and a 10-bit alpha plane.
    A422p10,
    /// A444_10LE: Y444_10LE and a 10-bit alpha plane.
    A444p10,
    /// GRAY8: Y only (grey: U = V = the centre), 8 bits.
    Gray8,
    /// GRAY16_LE: Y only, 16 bits.
    Gray16,
    /// GRAY16_BE: Y only, 16 bits, big-endian words (16-bit grey PNGs: `pngdec`, `pngenc`).
    Gray16Be,
}

impl YuvLayout {
    pub const ALL: [Self; 37] = [
        Self::I420,
        Self::Yv12,
        Self::Nv12,
        Self::Nv21,
        Self::Nv16,
        Self::Nv61,
        Self::Nv24,
        Self::Y42b,
        Self::Y444,
        Self::I420p10,
        Self::I422p10,
        Self::Y444p10,
        Self::P010,
        Self::I420p12,
        Self::I422p12,
        Self::Y444p12,
        Self::P012,
        Self::P016,
        Self::Y444p16,
        Self::V210,
        Self::Yuy2,
        Self::Uyvy,
        Self::Yvyu,
        Self::Y210,
        Self::Y212,
        Self::Ayuv,
        Self::Vuya,
        Self::Y412,
        Self::Ayuv64,
        Self::Y410,
        Self::A420,
        Self::A420p10,
        Self::A422p10,
        Self::A444p10,
        Self::Gray8,
        Self::Gray16,
        Self::Gray16Be,
    ];

    pub fn planes(self) -> usize {
        if self.grey()
            || self.packed().is_some()
            || self.packed444().is_some()
            || self.staged().is_some()
        {
            1
        } else if self.interleaved() {
            2
        } else if self.alpha_plane() {
            4
        } else {
            3
        }
    }

    /// Packed 4:2:2 (one plane of groups of four samples, two pixels each): where Y0, Y1, U
    /// and V are in a group, in samples ([`Self::word`] bytes each).
    pub fn packed(self) -> Option<[usize; 4]> {
        match self {
            Self::Yuy2 | Self::Y210 | Self::Y212 => Some([0, 2, 1, 3]),
            Self::Uyvy => Some([1, 3, 0, 2]),
            Self::Yvyu => Some([0, 2, 3, 1]),
            _ => None,
        }
    }

    /// Packed 4:4:4 with alpha (one plane of pixels of four samples): where Y, U, V and alpha
    /// are in a pixel, in samples ([`Self::word`] bytes each).
    pub fn packed444(self) -> Option<[usize; 4]> {
        match self {
            Self::Ayuv | Self::Ayuv64 => Some([1, 2, 3, 0]),
            Self::Vuya => Some([2, 1, 0, 3]),
            Self::Y412 => Some([1, 0, 2, 3]),
            _ => None,
        }
    }

    /// Carries an alpha channel (AYUV, VUYA, Y412_LE, AYUV64, and the planar A420, A420_10LE,
    /// A422_10LE, A444_10LE): the engine upscales it apart, bilinearly, at its depth.
    pub fn has_alpha(self) -> bool {
        self.packed444().is_some() || self.alpha_plane() || self == Self::Y410
    }

    /// Bits of an alpha sample: Y410's 2, the layout's depth for the others with alpha.
    pub fn alpha_depth(self) -> u32 {
        if self == Self::Y410 { 2 } else { self.depth() }
    }

    /// The planar layout a frame of this one is converted through, its samples repacked to
    /// and from planes of 16-bit words first: v210 as I422_10LE, Y410 as Y444_10LE (their
    /// samples are bit fields of 32-bit words); None for the others, converted as they are.
    pub fn staged(self) -> Option<Self> {
        match self {
            Self::V210 => Some(Self::I422p10),
            Self::Y410 => Some(Self::Y444p10),
            _ => None,
        }
    }

    /// Planar with alpha in a fourth plane at the luma's size (A420, A420_10LE, A422_10LE,
    /// A444_10LE): Y, U and V as [`Self::colour`]'s.
    pub fn alpha_plane(self) -> bool {
        matches!(
            self,
            Self::A420 | Self::A420p10 | Self::A422p10 | Self::A444p10
        )
    }

    /// The layout of the colour planes: the planar layout without the alpha plane (A420:
    /// I420, …); the layout itself for the others.
    pub fn colour(self) -> Self {
        match self {
            Self::A420 => Self::I420,
            Self::A420p10 => Self::I420p10,
            Self::A422p10 => Self::I422p10,
            Self::A444p10 => Self::Y444p10,
            l => l,
        }
    }

    /// Luma only (GRAY8, GRAY16_LE, GRAY16_BE).
    pub fn grey(self) -> bool {
        matches!(self, Self::Gray8 | Self::Gray16 | Self::Gray16Be)
    }

    /// 16-bit words stored big-endian (GRAY16_BE); all others are little-endian.
    pub fn big_endian(self) -> bool {
        self == Self::Gray16Be
    }

    /// U and V interleaved in one plane (NV12, NV21, NV16, NV61, NV24, P010, P012, P016).
    pub fn interleaved(self) -> bool {
        matches!(
            self,
            Self::Nv12
                | Self::Nv21
                | Self::Nv16
                | Self::Nv61
                | Self::Nv24
                | Self::P010
                | Self::P012
                | Self::P016
        )
    }

    /// The chroma plane(s) hold V first: interleaved VU (NV21, NV61), or the V plane before
    /// the U plane (YV12).
    fn vu(self) -> bool {
        matches!(self, Self::Nv21 | Self::Nv61 | Self::Yv12)
    }

    /// The planes of U and V: (1, 2), or (2, 1) for YV12 (semi-planar layouts: both in 1).
    pub fn uv_planes(self) -> (usize, usize) {
        if self.interleaved() {
            (1, 1)
        } else if self.vu() {
            (2, 1)
        } else {
            (1, 2)
        }
    }

    /// Chroma subsampling factors (x, y): 2 or 1 (grey: 1, no chroma planes).
    pub fn subsampling(self) -> (usize, usize) {
        match self {
            Self::I420
            | Self::Yv12
            | Self::Nv12
            | Self::Nv21
            | Self::I420p10
            | Self::P010
            | Self::I420p12
            | Self::P012
            | Self::P016
            | Self::A420
            | Self::A420p10 => (2, 2),
            Self::Y42b
            | Self::Nv16
            | Self::Nv61
            | Self::I422p10
            | Self::I422p12
            | Self::V210
            | Self::Yuy2
            | Self::Uyvy
            | Self::Yvyu
            | Self::Y210
            | Self::Y212
            | Self::A422p10 => (2, 1),
            Self::Y444
            | Self::Nv24
            | Self::Y444p10
            | Self::Y444p12
            | Self::Y444p16
            | Self::Ayuv
            | Self::Vuya
            | Self::Y412
            | Self::Ayuv64
            | Self::Y410
            | Self::A444p10
            | Self::Gray8
            | Self::Gray16
            | Self::Gray16Be => (1, 1),
        }
    }

    /// Bits per sample.
    pub fn depth(self) -> u32 {
        match self {
            Self::I420
            | Self::Yv12
            | Self::Nv12
            | Self::Nv21
            | Self::Nv16
            | Self::Nv61
            | Self::Nv24
            | Self::Y42b
            | Self::Y444
            | Self::Yuy2
            | Self::Uyvy
            | Self::Yvyu
            | Self::Ayuv
            | Self::Vuya
            | Self::A420
            | Self::Gray8 => 8,
            Self::Gray16 | Self::Gray16Be | Self::P016 | Self::Y444p16 | Self::Ayuv64 => 16,
            Self::I420p10
            | Self::I422p10
            | Self::Y444p10
            | Self::P010
            | Self::V210
            | Self::Y210
            | Self::Y410
            | Self::A420p10
            | Self::A422p10
            | Self::A444p10 => 10,
            Self::I420p12
            | Self::I422p12
            | Self::Y444p12
            | Self::P012
            | Self::Y212
            | Self::Y412 => 12,
        }
    }

    /// Bytes per sample.
    pub fn word(self) -> usize {
        if self.depth() == 8 { 1 } else { 2 }
    }

    /// Where a sample's bits start in its word.
    pub fn shift(self) -> u32 {
        match self {
            Self::P010 | Self::Y210 => 6,
            Self::P012 | Self::Y212 | Self::Y412 => 4,
            _ => 0,
        }
    }

    /// Chroma plane size (samples per row, rows) of a `w x h` frame.
    pub fn chroma_size(self, w: usize, h: usize) -> (usize, usize) {
        let (sx, sy) = self.subsampling();
        (w.div_ceil(sx), h.div_ceil(sy))
    }

    /// Bytes in a row and rows of each plane of a `w x h` frame (unused planes 0; the fourth
    /// is the alpha plane of A420 and its kin).
    pub fn plane_sizes(self, w: usize, h: usize) -> [(usize, usize); 4] {
        let (cw, ch) = self.chroma_size(w, h);
        let b = self.word();
        let none = (0, 0);
        if self == Self::V210 {
            [(w.div_ceil(6) * 16, h), none, none, none]
        } else if self.packed().is_some() {
            [(4 * cw * b, h), none, none, none]
        } else if self.packed444().is_some() {
            [(4 * w * b, h), none, none, none]
        } else if self == Self::Y410 {
            [(4 * w, h), none, none, none]
        } else if self.grey() {
            [(w * b, h), none, none, none]
        } else if self.interleaved() {
            [(w * b, h), (2 * cw * b, ch), none, none]
        } else {
            let alpha = if self.alpha_plane() { (w * b, h) } else { none };
            [(w * b, h), (cw * b, ch), (cw * b, ch), alpha]
        }
    }
}

/// Y'CbCr coefficients and range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YuvMatrix {
    pub kr: f32,
    pub kb: f32,
    /// Full range (0–2^depth − 1 for Y, Cb, Cr) rather than limited (16–235 and 16–240 at 8
    /// bits, 64–940 and 64–960 at 10).
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

    /// (offset, scale) of Y and the scale of Cb/Cr at `depth` bits (GStreamer's
    /// `gst_video_color_range_offsets`).
    fn ranges(self, depth: u32) -> (f32, f32, f32) {
        let max = ((1u32 << depth) - 1) as f32;
        let d = (1u32 << (depth - 8)) as f32;
        if self.full_range {
            (0.0, max, max)
        } else {
            (16.0 * d, 219.0 * d, 224.0 * d)
        }
    }

    /// The conversions at `depth` bits as linear forms, computed once per frame (no divisions
    /// per pixel).
    fn coeffs(self, depth: u32) -> Coeffs {
        let (yo, ys, cs) = self.ranges(depth);
        let (kr, kb) = (self.kr, self.kb);
        let kg = 1.0 - kr - kb;
        // RGB (0–255) from Y, U − centre, V − centre.
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
            centre: (1u32 << (depth - 1)) as f32,
            max: ((1u32 << depth) - 1) as f32,
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

/// [`YuvMatrix`] at a depth as linear forms.
#[derive(Clone, Copy, Debug)]
struct Coeffs {
    yo: f32,
    /// The chroma value of grey (128 at 8 bits).
    centre: f32,
    /// The largest code.
    max: f32,
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
    /// YUV samples (codes) to RGB in 0–255 (clamped).
    #[inline(always)]
    fn rgb(&self, y: f32, u: f32, v: f32) -> [f32; 3] {
        let (e, u, v) = (self.y * (y - self.yo), u - self.centre, v - self.centre);
        [
            e + self.rv * v,
            e + self.gu * u + self.gv * v,
            e + self.bu * u,
        ]
        .map(|c| c.clamp(0.0, 255.0))
    }

    /// Y (a code, unrounded) of RGB in 0–255.
    #[inline(always)]
    fn luma(&self, rgb: [f32; 3]) -> f32 {
        self.yo + self.l[0] * rgb[0] + self.l[1] * rgb[1] + self.l[2] * rgb[2]
    }

    /// (U, V) (codes, unrounded) of RGB in 0–255.
    #[inline(always)]
    fn chroma(&self, rgb: [f32; 3]) -> (f32, f32) {
        let d = |k: [f32; 3]| k[0] * rgb[0] + k[1] * rgb[1] + k[2] * rgb[2];
        (self.centre + d(self.u), self.centre + d(self.v))
    }

    /// A code: rounded half to even and clamped to 0–max (at 8 bits `frame::to_u8`).
    #[inline(always)]
    fn code(&self, v: f32) -> i32 {
        round_even_small(clamp(v, 0.0, self.max)) as i32
    }
}

/// A sample's storage: a byte, a little-endian 16-bit word with the sample `SHIFT` bits up,
/// or a big-endian 16-bit word (`c`: its `BYTES` bytes). Codes pass as `i32`, whose conversions to and from `f32` are
/// single instructions on baseline x86-64 (those of `u32` are not).
trait Word {
    const BYTES: usize;
    fn load(c: &[u8]) -> i32;
    fn store(c: &mut [u8], code: i32);
    /// Stores `v` rounded and clamped to a code of `m`'s depth ([`Coeffs::code`]).
    #[inline(always)]
    fn put(c: &mut [u8], m: &Coeffs, v: f32) {
        Self::store(c, m.code(v));
    }
}

struct W8;
struct W16<const SHIFT: u32>;
struct W16Be;

impl Word for W8 {
    const BYTES: usize = 1;
    #[inline(always)]
    fn load(c: &[u8]) -> i32 {
        c[0] as i32
    }
    #[inline(always)]
    fn store(c: &mut [u8], code: i32) {
        c[0] = code as u8;
    }
    /// `frame::to_u8` (the same value as [`Coeffs::code`] at 8 bits), whose `f32 as u8`
    /// compiles to a tighter loop than going through `i32`.
    #[inline(always)]
    fn put(c: &mut [u8], _: &Coeffs, v: f32) {
        c[0] = super::frame::to_u8(v);
    }
}

impl<const SHIFT: u32> Word for W16<SHIFT> {
    const BYTES: usize = 2;
    #[inline(always)]
    fn load(c: &[u8]) -> i32 {
        (u16::from_le_bytes([c[0], c[1]]) >> SHIFT) as i32
    }
    #[inline(always)]
    fn store(c: &mut [u8], code: i32) {
        c[..2].copy_from_slice(&((code as u16) << SHIFT).to_le_bytes());
    }
}

impl Word for W16Be {
    const BYTES: usize = 2;
    #[inline(always)]
    fn load(c: &[u8]) -> i32 {
        u16::from_be_bytes([c[0], c[1]]) as i32
    }
    #[inline(always)]
    fn store(c: &mut [u8], code: i32) {
        c[..2].copy_from_slice(&(code as u16).to_be_bytes());
    }
}

/// Where the chroma samples sit relative to the luma samples, per subsampled axis: on the
/// even luma sample (co-sited, MPEG-2 horizontally) or midway between two (centred, JPEG).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChromaSiting {
    pub h_cosited: bool,
    pub v_cosited: bool,
}

/// A borrowed YUV frame: planes with their strides in bytes (NV12 / P010: Y and UV; A420:
/// Y, U, V and alpha).
#[derive(Clone, Copy, Debug)]
pub struct YuvRef<'a> {
    pub planes: [&'a [u8]; 4],
    pub strides: [usize; 4],
    pub width: usize,
    pub height: usize,
    pub layout: YuvLayout,
    pub matrix: YuvMatrix,
    pub siting: ChromaSiting,
}

/// A mutable YUV frame.
#[derive(Debug)]
pub struct YuvMut<'a> {
    pub planes: [&'a mut [u8]; 4],
    pub strides: [usize; 4],
    pub width: usize,
    pub height: usize,
    pub layout: YuvLayout,
    pub matrix: YuvMatrix,
    pub siting: ChromaSiting,
}

/// Owned planes (one to four, in order) as the plane slices of a [`YuvRef`] (missing: empty).
pub fn planes_ref(planes: &[Vec<u8>]) -> [&[u8]; 4] {
    [0, 1, 2, 3].map(|p| planes.get(p).map_or(&[][..], |v| &v[..]))
}

/// Owned planes as the plane slices of a [`YuvMut`] (missing: empty).
pub fn planes_mut(planes: &mut [Vec<u8>]) -> [&mut [u8]; 4] {
    let mut it = planes.iter_mut().map(|p| &mut p[..]);
    [(); 4].map(|_| it.next().unwrap_or_default())
}

impl YuvRef<'_> {
    /// Checks that each plane holds its rows ([`check_planes`]).
    fn check(&self) -> Result<()> {
        let lens = self.planes.map(|p| p.len());
        check_planes(
            "input",
            self.layout,
            lens,
            self.strides,
            self.width,
            self.height,
        )
    }
}

impl<'a> YuvMut<'a> {
    /// The luma plane, then the U and V planes (YV12's V plane is plane 1).
    fn uv_planes_mut(&mut self) -> [&mut &'a mut [u8]; 3] {
        let [py, p1, p2, _] = &mut self.planes;
        if self.layout.uv_planes() == (2, 1) {
            [py, p2, p1]
        } else {
            [py, p1, p2]
        }
    }

    /// Checks that each plane holds its rows ([`check_planes`]).
    fn check(&self) -> Result<()> {
        let lens = [0, 1, 2, 3].map(|p| self.planes[p].len());
        check_planes(
            "output",
            self.layout,
            lens,
            self.strides,
            self.width,
            self.height,
        )
    }
}

/// Checks that each plane holds its rows (the row bytes and rows of each plane of the layout).
fn check_planes(
    what: &str,
    layout: YuvLayout,
    lens: [usize; 4],
    strides: [usize; 4],
    w: usize,
    h: usize,
) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Input(format!(
            "{what} frame is {w}x{h}: expected at least 1x1"
        )));
    }
    for (p, (row, rows)) in layout.plane_sizes(w, h).into_iter().enumerate() {
        if rows == 0 {
            continue;
        }
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

/// Taps of the bilinear upsampling of chroma to luma position `i` (of `n` chroma samples,
/// subsampled by `sub`): (index, weight) pairs, edges clamped.
#[inline(always)]
fn up_taps(i: usize, n: usize, cosited: bool, sub: usize) -> [(usize, f32); 2] {
    if sub == 1 {
        return [(i, 1.0), (i, 0.0)];
    }
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

/// Taps of the chroma sample `k` from luma positions (of `n`, subsampled by `sub`): centred
/// `[1 1] / 2`, co-sited `[1 2 1] / 4`, positions past the edge clamped.
#[inline(always)]
fn down_taps(k: usize, n: usize, cosited: bool, sub: usize) -> [(usize, f32); 3] {
    if sub == 1 {
        return [(k, 1.0), (k, 0.0), (k, 0.0)];
    }
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

/// Unpacks a YUV frame into interleaved RGB of `conv(value in 0–255)` (rows in parallel on
/// the current thread pool). Every value of `out`, resized to the frame, is written.
pub fn unpack_with<T: Copy + Default + Send>(
    f: &YuvRef,
    conv: impl Fn(f32) -> T + Sync,
    out: &mut Vec<T>,
) -> Result<()> {
    f.check()?;
    out.resize(f.width * f.height * 3, T::default());
    if f.layout.staged().is_some() {
        let mut tmp = take_staged_planes();
        unpack_rows::<W16<0>, T>(&to_planar(f, &mut tmp), conv, out);
        STAGED_PLANES.with(|cell| *cell.borrow_mut() = tmp);
        return Ok(());
    }
    if let Some(at) = f.layout.packed() {
        match (f.layout.word(), f.layout.shift()) {
            (1, _) => unpack_packed::<W8, T>(f, at, conv, out),
            (_, 4) => unpack_packed::<W16<4>, T>(f, at, conv, out),
            (_, 6) => unpack_packed::<W16<6>, T>(f, at, conv, out),
            _ => unpack_packed::<W16<0>, T>(f, at, conv, out),
        }
        return Ok(());
    }
    if let Some(at) = f.layout.packed444() {
        unpack_packed444(f, at, conv, out);
        return Ok(());
    }
    if f.layout.big_endian() {
        unpack_rows::<W16Be, T>(f, conv, out);
        return Ok(());
    }
    match (f.layout.word(), f.layout.shift()) {
        (1, _) => unpack_rows::<W8, T>(f, conv, out),
        (_, 0) => unpack_rows::<W16<0>, T>(f, conv, out),
        (_, 4) => unpack_rows::<W16<4>, T>(f, conv, out),
        _ => unpack_rows::<W16<6>, T>(f, conv, out),
    }
    Ok(())
}

fn unpack_rows<W: Word, T: Copy + Send>(f: &YuvRef, conv: impl Fn(f32) -> T + Sync, out: &mut [T]) {
    let (w, h) = (f.width, f.height);
    let (cw, ch) = f.layout.chroma_size(w, h);
    let (sx, sy) = f.layout.subsampling();
    let interleaved = f.layout.interleaved();
    let m = f.matrix.coeffs(f.layout.depth());
    let s = f.siting;
    let b = W::BYTES;
    // Where U and V start in an interleaved pair.
    let (iu, iv) = if f.layout.vu() { (b, 0) } else { (0, b) };
    let (pu, pv) = f.layout.uv_planes();
    let get = |c: &[u8]| W::load(c) as f32;
    let emit = |o: &mut [T], rgb: [f32; 3]| {
        o[0] = conv(rgb[0]);
        o[1] = conv(rgb[1]);
        o[2] = conv(rgb[2]);
    };
    if f.layout.grey() {
        let grey = m.centre;
        out.par_chunks_mut(w * 3)
            .enumerate()
            .with_min_len(super::frame::ROWS_PER_TASK)
            .for_each(|(y, dst)| {
                let luma = &f.planes[0][y * f.strides[0]..][..w * b];
                for (o, c) in dst.chunks_exact_mut(3).zip(luma.chunks_exact(b)) {
                    emit(o, m.rgb(get(c), grey, grey));
                }
            });
        return;
    }
    out.par_chunks_mut(w * 3)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(y, dst)| {
            let luma = &f.planes[0][y * f.strides[0]..][..w * b];
            ROW.with_borrow_mut(|t| {
                // This row's chroma at the chroma columns (interpolated along y), then along x.
                t.clear();
                t.resize(2 * cw, 0.0);
                let (tu, tv) = t.split_at_mut(cw);
                for (r, a) in up_taps(y, ch, s.v_cosited, sy) {
                    if a == 0.0 {
                        continue;
                    }
                    if interleaved {
                        let uv = &f.planes[1][r * f.strides[1]..][..2 * cw * b];
                        for ((ou, ov), c) in
                            tu.iter_mut().zip(tv.iter_mut()).zip(uv.chunks_exact(2 * b))
                        {
                            *ou += a * get(&c[iu..]);
                            *ov += a * get(&c[iv..]);
                        }
                    } else {
                        let u = &f.planes[pu][r * f.strides[pu]..][..cw * b];
                        let v = &f.planes[pv][r * f.strides[pv]..][..cw * b];
                        for (o, c) in tu.iter_mut().zip(u.chunks_exact(b)) {
                            *o += a * get(c);
                        }
                        for (o, c) in tv.iter_mut().zip(v.chunks_exact(b)) {
                            *o += a * get(c);
                        }
                    }
                }
                let px = dst.chunks_exact_mut(3).zip(luma.chunks_exact(b));
                if sx == 1 {
                    for ((o, c), (&u, &v)) in px.zip(tu.iter().zip(tv.iter())) {
                        emit(o, m.rgb(get(c), u, v));
                    }
                } else {
                    for (x, (o, c)) in px.enumerate() {
                        let [(c0, b0), (c1, b1)] = up_taps(x, cw, s.h_cosited, 2);
                        let u = b0 * tu[c0] + b1 * tu[c1];
                        let v = b0 * tv[c0] + b1 * tv[c1];
                        emit(o, m.rgb(get(c), u, v));
                    }
                }
            });
        });
}

/// [`unpack_with`] into an RGB f32 image.
pub fn unpack_into(f: &YuvRef, img: &mut Image) -> Result<()> {
    unpack_with(f, |v| v, &mut img.data)?;
    (img.width, img.height) = (f.width, f.height);
    Ok(())
}

/// [`unpack_with`] into interleaved RGB bytes (rounded; the CUDA path's input until it took
/// f32 values).
pub fn unpack_rgb8_into(f: &YuvRef, out: &mut Vec<u8>) -> Result<()> {
    unpack_with(f, super::frame::to_u8, out)
}

/// Packs interleaved RGB (`conv` of each value gives 0–255) of `f`'s size into a YUV frame:
/// Y per pixel, U and V from the RGB filtered at the chroma siting, each rounded once.
pub fn pack_with<T: Sync>(
    src: &[T],
    width: usize,
    height: usize,
    f: &mut YuvMut,
    conv: impl Fn(&T) -> f32 + Sync,
) -> Result<()> {
    let (w, h) = (f.width, f.height);
    f.check()?;
    if (width, height) != (w, h) || src.len() < w * h * 3 {
        return Err(Error::Input(format!(
            "output frame is {w}x{h}, image is {width}x{height} with {} values",
            src.len()
        )));
    }
    // The whole frame as one rectangle; v210 and Y410 staged in this thread's planes buffer.
    let mut tmp = take_staged_planes();
    let mut out = YuvPacker::new(f, &mut tmp)?;
    out.put_with(Window::whole(src, w, h), Rect::whole(w, h), &conv)?;
    out.finish();
    STAGED_PLANES.with(|cell| *cell.borrow_mut() = tmp);
    Ok(())
}

/// Rectangle `r` of frame `f` (any layout but v210 and Y410) from `src`, which holds `r`'s ring
/// ([`Rect::ring`]): the pixels in `r`, and the chroma samples sited in it.
fn pack_part<T: Sync>(src: Window<T>, r: Rect, f: &mut YuvMut, conv: &(impl Fn(&T) -> f32 + Sync)) {
    if let Some(at) = f.layout.packed() {
        match (f.layout.word(), f.layout.shift()) {
            (1, _) => pack_packed::<W8, T>(src, r, f, at, conv),
            (_, 4) => pack_packed::<W16<4>, T>(src, r, f, at, conv),
            (_, 6) => pack_packed::<W16<6>, T>(src, r, f, at, conv),
            _ => pack_packed::<W16<0>, T>(src, r, f, at, conv),
        }
        return;
    }
    if let Some(at) = f.layout.packed444() {
        pack_packed444(src, r, f, at, conv);
        return;
    }
    if f.layout.big_endian() {
        pack_rows::<W16Be, T>(src, r, f, conv);
        return;
    }
    match (f.layout.word(), f.layout.shift()) {
        (1, _) => pack_rows::<W8, T>(src, r, f, conv),
        (_, 0) => pack_rows::<W16<0>, T>(src, r, f, conv),
        (_, 4) => pack_rows::<W16<4>, T>(src, r, f, conv),
        _ => pack_rows::<W16<6>, T>(src, r, f, conv),
    }
}

/// A frame written rectangle by rectangle (the engine's tiles, straight from each tile's
/// output: no frame-sized RGB image in between): [`YuvPacker::put`] each part of the frame,
/// then [`YuvPacker::finish`]. A v210 or Y410 frame is staged as I422_10LE or Y444_10LE
/// planes (2 bytes a sample, [`YuvLayout::staged`]) in the caller's `staging` buffer (kept
/// between frames) and repacked by `finish`.
pub struct YuvPacker<'f, 'a, 's> {
    f: &'f mut YuvMut<'a>,
    /// The staged planes of a v210 or Y410 frame.
    staged: Option<&'s mut Vec<u8>>,
}

impl<'f, 'a, 's> YuvPacker<'f, 'a, 's> {
    pub fn new(f: &'f mut YuvMut<'a>, staging: &'s mut Vec<u8>) -> Result<Self> {
        f.check()?;
        let staged = f.layout.staged().map(|l| {
            staged_planes(staging, l, f.width, f.height);
            staging
        });
        Ok(Self { f, staged })
    }

    /// Writes rectangle `r` of the frame from `src` (RGB in 0–255), which must hold `r` grown
    /// by one pixel on every side within the frame (chroma is filtered across that ring):
    /// every pixel of `r`, and every chroma sample whose first luma pixel is in `r`. Putting
    /// rectangles that cover the frame once writes it all, as [`pack`] would.
    pub fn put(&mut self, src: Window<f32>, r: Rect) -> Result<()> {
        self.put_with(src, r, &|&v: &f32| v)
    }

    /// [`YuvPacker::put`] from values of any type, `conv` of each giving 0–255.
    fn put_with<T: Sync>(
        &mut self,
        src: Window<T>,
        r: Rect,
        conv: &(impl Fn(&T) -> f32 + Sync),
    ) -> Result<()> {
        let (w, h) = (self.f.width, self.f.height);
        src.check(r, r.ring(w, h), w, h)?;
        if r.is_empty() {
            return Ok(());
        }
        match &mut self.staged {
            Some(tmp) => pack_part(src, r, &mut staged_frame(tmp, self.f), conv),
            None => pack_part(src, r, self.f, conv),
        }
        Ok(())
    }

    /// Completes the frame (repacks a v210 or Y410 frame from its staged planes).
    pub fn finish(self) {
        if let Some(tmp) = self.staged {
            let (w, h) = (self.f.width, self.f.height);
            let staged = self.f.layout.staged().expect("a staged layout");
            let ([y, u, v, _], _) = split_staged_planes(tmp, staged, w, h);
            from_planar([y, u, v].map(|p| &*p), self.f);
        }
    }
}

/// The planar frame of `tmp` (sized by [`staged_planes`]) that the v210 or Y410 frame `f` is
/// staged in.
fn staged_frame<'t>(tmp: &'t mut [u8], f: &YuvMut) -> YuvMut<'t> {
    let layout = f.layout.staged().expect("a staged layout");
    let (planes, strides) = split_staged_planes(tmp, layout, f.width, f.height);
    YuvMut {
        planes,
        strides,
        width: f.width,
        height: f.height,
        layout,
        matrix: f.matrix,
        siting: f.siting,
    }
}

/// This thread's staged planes buffer, taken out of [`STAGED_PLANES`] (and put back by the
/// caller when done) rather than borrowed: the conversion runs rows in parallel, and a rayon
/// worker waiting in it can pick up another frame's conversion on this same thread, which then
/// finds an empty buffer instead of a borrowed one.
fn take_staged_planes() -> Vec<u8> {
    STAGED_PLANES.with(|cell| std::mem::take(&mut *cell.borrow_mut()))
}

/// The 6 luma and 3 + 3 chroma samples (Cb, Cr of its pixel pairs) of a v210 group: words
/// Cb0 Y0 Cr0, Y1 Cb1 Y2, Cr1 Y3 Cb2, Y4 Cr2 Y5.
#[inline(always)]
fn v210_group(g: &[u8]) -> ([u16; 6], [u16; 3], [u16; 3]) {
    let s = |k: usize| ten_bit_fields(&g[4 * k..]);
    let ([cb0, y0, cr0], [y1, cb1, y2], [cr1, y3, cb2], [y4, cr2, y5]) = (s(0), s(1), s(2), s(3));
    ([y0, y1, y2, y3, y4, y5], [cb0, cb1, cb2], [cr0, cr1, cr2])
}

/// [`v210_group`]'s inverse.
#[inline(always)]
fn v210_put(g: &mut [u8], y: [u16; 6], cb: [u16; 3], cr: [u16; 3]) {
    let words = [
        [cb[0], y[0], cr[0]],
        [y[1], cb[1], y[2]],
        [cr[1], y[3], cb[2]],
        [y[4], cr[2], y[5]],
    ];
    for (k, fields) in words.into_iter().enumerate() {
        g[4 * k..4 * k + 4].copy_from_slice(&ten_bit_word(fields, 0));
    }
}

/// The three 10-bit samples of a little-endian 32-bit word, from bits 0–9, 10–19 and 20–29
/// (v210's words; Y410's U, Y, V).
#[inline(always)]
fn ten_bit_fields(word: &[u8]) -> [u16; 3] {
    let w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    [w & 0x3ff, (w >> 10) & 0x3ff, (w >> 20) & 0x3ff].map(|v| v as u16)
}

/// [`ten_bit_fields`]' inverse, with `top` in bits 30–31 (Y410's alpha; 0 in v210).
#[inline(always)]
fn ten_bit_word(fields: [u16; 3], top: u32) -> [u8; 4] {
    let [a, b, c] = fields.map(|v| (v & 0x3ff) as u32);
    (a | b << 10 | c << 20 | top << 30).to_le_bytes()
}

/// The planes of the `staged` layout (I422_10LE for v210, Y444_10LE for Y410) a `w x h`
/// frame goes through, in `tmp` (resized; Y, then Cb, then Cr, unpadded rows), and their
/// strides.
fn staged_planes(
    tmp: &mut Vec<u8>,
    staged: YuvLayout,
    w: usize,
    h: usize,
) -> ([&mut [u8]; 4], [usize; 4]) {
    tmp.clear();
    tmp.resize(staged.plane_sizes(w, h).iter().map(|(r, n)| r * n).sum(), 0);
    split_staged_planes(tmp, staged, w, h)
}

/// [`staged_planes`] of a `tmp` already sized.
fn split_staged_planes(
    tmp: &mut [u8],
    staged: YuvLayout,
    w: usize,
    h: usize,
) -> ([&mut [u8]; 4], [usize; 4]) {
    let [(ry, ny), (rc, nc), (rv, _), _] = staged.plane_sizes(w, h);
    let (y, uv) = tmp.split_at_mut(ry * ny);
    let (u, v) = uv.split_at_mut(rc * nc);
    ([y, u, v, &mut []], [ry, rc, rv, 0])
}

/// A v210 or Y410 frame as the planes of its staged layout in `tmp` ([`staged_planes`]),
/// rows in parallel.
fn to_planar<'a>(f: &YuvRef, tmp: &'a mut Vec<u8>) -> YuvRef<'a> {
    let (w, h) = (f.width, f.height);
    let layout = f.layout.staged().expect("a staged layout");
    let ([y, u, v, _], strides) = staged_planes(tmp, layout, w, h);
    let rows = y
        .par_chunks_mut(strides[0])
        .zip(u.par_chunks_mut(strides[1]))
        .zip(v.par_chunks_mut(strides[2]))
        .enumerate();
    if f.layout == YuvLayout::Y410 {
        rows.for_each(|(r, ((y, u), v))| {
            let row = &f.planes[0][r * f.strides[0]..][..4 * w];
            for (i, px) in row.chunks_exact(4).enumerate() {
                let [cb, l, cr] = ten_bit_fields(px);
                y[2 * i..2 * i + 2].copy_from_slice(&l.to_le_bytes());
                u[2 * i..2 * i + 2].copy_from_slice(&cb.to_le_bytes());
                v[2 * i..2 * i + 2].copy_from_slice(&cr.to_le_bytes());
            }
        });
    } else {
        let cw = w.div_ceil(2);
        rows.for_each(|(r, ((y, u), v))| {
            let row = &f.planes[0][r * f.strides[0]..][..w.div_ceil(6) * 16];
            for (g, group) in row.chunks_exact(16).enumerate() {
                let (ys, cbs, crs) = v210_group(group);
                for (i, s) in ys.into_iter().enumerate().take(w - 6 * g) {
                    y[2 * (6 * g + i)..][..2].copy_from_slice(&s.to_le_bytes());
                }
                for i in 0..3.min(cw - 3 * g) {
                    let at = 2 * (3 * g + i);
                    u[at..at + 2].copy_from_slice(&cbs[i].to_le_bytes());
                    v[at..at + 2].copy_from_slice(&crs[i].to_le_bytes());
                }
            }
        });
    }
    YuvRef {
        planes: [y, u, v, &mut []].map(|p| -> &'a [u8] { p }),
        strides,
        width: w,
        height: h,
        layout,
        matrix: f.matrix,
        siting: f.siting,
    }
}

/// The planes of a staged layout (Y, Cb, Cr, unpadded rows: [`staged_planes`]) into the v210
/// or Y410 frame `f`.
fn from_planar(p: [&[u8]; 3], f: &mut YuvMut) {
    if f.layout == YuvLayout::Y410 {
        planar_to_y410(p, f);
    } else {
        planar_to_v210(p, f);
    }
}

/// Y444_10LE planes `p` (Y, Cb, Cr, unpadded rows) into the Y410 frame `f`, rows in parallel;
/// alpha opaque (3) until [`pack_alpha`] writes it.
fn planar_to_y410(p: [&[u8]; 3], f: &mut YuvMut) {
    let (w, h) = (f.width, f.height);
    let stride = f.strides[0];
    f.planes[0][..(h - 1) * stride + 4 * w]
        .par_chunks_mut(stride)
        .enumerate()
        .for_each(|(r, row)| {
            let rows = p.map(|plane| &plane[2 * w * r..][..2 * w]);
            for (i, px) in row[..4 * w].chunks_exact_mut(4).enumerate() {
                let s = |k: usize| u16::from_le_bytes([rows[k][2 * i], rows[k][2 * i + 1]]);
                px.copy_from_slice(&ten_bit_word([s(1), s(0), s(2)], 3));
            }
        });
}

/// I422_10LE planes `p` (Y, Cb, Cr, unpadded rows: [`staged_planes`]) into the v210 frame `f`,
/// rows in parallel; the samples past the row's end in its last group repeat the row's last
/// ones.
fn planar_to_v210(p: [&[u8]; 3], f: &mut YuvMut) {
    let (w, h) = (f.width, f.height);
    let cw = w.div_ceil(2);
    let row_bytes = w.div_ceil(6) * 16;
    let stride = f.strides[0];
    f.planes[0][..(h - 1) * stride + row_bytes]
        .par_chunks_mut(stride)
        .enumerate()
        .for_each(|(r, row)| {
            let sample = |plane: &[u8], n: usize, i: usize| {
                let at = 2 * (r * n + i.min(n - 1));
                u16::from_le_bytes([plane[at], plane[at + 1]])
            };
            for (g, group) in row[..row_bytes].chunks_exact_mut(16).enumerate() {
                let y = std::array::from_fn(|i| sample(p[0], w, 6 * g + i));
                let cb = std::array::from_fn(|i| sample(p[1], cw, 3 * g + i));
                let cr = std::array::from_fn(|i| sample(p[2], cw, 3 * g + i));
                v210_put(group, y, cb, cr);
            }
        });
}

/// Rectangle `r` of a planar or semi-planar frame ([`pack_part`]).
fn pack_rows<W: Word, T: Sync>(
    src: Window<T>,
    r: Rect,
    f: &mut YuvMut,
    conv: &(impl Fn(&T) -> f32 + Sync),
) {
    let (w, h) = (f.width, f.height);
    let (cw, ch) = f.layout.chroma_size(w, h);
    let (sx, sy) = f.layout.subsampling();
    let (m, s) = (f.matrix.coeffs(f.layout.depth()), f.siting);
    let b = W::BYTES;
    let (pu_index, pv_index) = f.layout.uv_planes();
    let put = |c: &mut [u8], v: f32| W::put(c, &m, v);
    let line = |y: usize| src.line(y, r.x0, r.x1);
    let (rows, xs) = (r.y1 - r.y0, r.x0 * b..r.x1 * b);
    if (sx, sy) == (1, 1) && !f.layout.grey() {
        // 4:4:4: nothing to filter, Y, U and V of each pixel in one pass.
        let (st, interleaved) = (f.strides, f.layout.interleaved());
        let [py, pu, pv] = f.uv_planes_mut();
        if interleaved {
            // NV24.
            py.par_chunks_mut(st[0])
                .take(h)
                .zip(pu.par_chunks_mut(st[1]))
                .skip(r.y0)
                .take(rows)
                .enumerate()
                .with_min_len(super::frame::ROWS_PER_TASK)
                .for_each(|(i, (ry, ruv))| {
                    let out = ry[xs.clone()]
                        .chunks_exact_mut(b)
                        .zip(ruv[2 * r.x0 * b..2 * r.x1 * b].chunks_exact_mut(2 * b));
                    for ((oy, ouv), p) in out.zip(line(r.y0 + i).chunks_exact(3)) {
                        let rgb = [conv(&p[0]), conv(&p[1]), conv(&p[2])];
                        let (u, v) = m.chroma(rgb);
                        let (ou, ov) = ouv.split_at_mut(b);
                        put(oy, m.luma(rgb));
                        put(ou, u);
                        put(ov, v);
                    }
                });
            return;
        }
        py.par_chunks_mut(st[0])
            .take(h)
            .zip(pu.par_chunks_mut(st[pu_index]))
            .zip(pv.par_chunks_mut(st[pv_index]))
            .skip(r.y0)
            .take(rows)
            .enumerate()
            .with_min_len(super::frame::ROWS_PER_TASK)
            .for_each(|(i, ((ry, ru), rv))| {
                let out = ry[xs.clone()]
                    .chunks_exact_mut(b)
                    .zip(ru[xs.clone()].chunks_exact_mut(b));
                for (((oy, ou), ov), p) in out
                    .zip(rv[xs.clone()].chunks_exact_mut(b))
                    .zip(line(r.y0 + i).chunks_exact(3))
                {
                    let rgb = [conv(&p[0]), conv(&p[1]), conv(&p[2])];
                    let (u, v) = m.chroma(rgb);
                    put(oy, m.luma(rgb));
                    put(ou, u);
                    put(ov, v);
                }
            });
        return;
    }
    // Luma: rows in parallel.
    f.planes[0]
        .par_chunks_mut(f.strides[0])
        .take(h)
        .skip(r.y0)
        .take(rows)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(i, row)| {
            for (o, p) in row[xs.clone()]
                .chunks_exact_mut(b)
                .zip(line(r.y0 + i).chunks_exact(3))
            {
                put(o, m.luma([conv(&p[0]), conv(&p[1]), conv(&p[2])]));
            }
        });
    if f.layout.grey() {
        return;
    }
    // Chroma: the samples sited in `r` (the first luma pixel of each in `r`), each chroma
    // row's RGB filtered along y, then along x at each chroma sample.
    let (cx0, cx1) = (r.x0.div_ceil(sx), r.x1.div_ceil(sx).min(cw));
    let (cy0, cy1) = (r.y0.div_ceil(sy), r.y1.div_ceil(sy).min(ch));
    if cx0 >= cx1 || cy0 >= cy1 {
        return;
    }
    let chroma = Chroma {
        src,
        conv,
        w,
        h,
        cols: (cx0, cx1),
        sub: (sx, sy),
        m,
        s,
    };
    let min_len = (super::frame::ROWS_PER_TASK / sy).max(1);
    if f.layout.interleaved() {
        f.planes[1]
            .par_chunks_mut(f.strides[1])
            .take(ch)
            .skip(cy0)
            .take(cy1 - cy0)
            .enumerate()
            .with_min_len(min_len)
            .for_each(|(i, row)| {
                let vu = f.layout.vu();
                let pairs = row[2 * cx0 * b..2 * cx1 * b]
                    .chunks_exact_mut(2 * b)
                    .map(|c| {
                        let (first, second) = c.split_at_mut(b);
                        if vu { (second, first) } else { (first, second) }
                    });
                chroma.row(cy0 + i, pairs, put);
            });
    } else {
        let (su, sv) = (f.strides[pu_index], f.strides[pv_index]);
        let [_, pu, pv] = f.uv_planes_mut();
        pu.par_chunks_mut(su)
            .zip(pv.par_chunks_mut(sv))
            .take(ch)
            .skip(cy0)
            .take(cy1 - cy0)
            .enumerate()
            .with_min_len(min_len)
            .for_each(|(i, (ru, rv))| {
                let uv = ru[cx0 * b..cx1 * b].chunks_exact_mut(b);
                chroma.row(
                    cy0 + i,
                    uv.zip(rv[cx0 * b..cx1 * b].chunks_exact_mut(b)),
                    put,
                );
            });
    }
}

/// What packing a frame's chroma rows needs: the RGB source, the frame's geometry and the
/// chroma columns `cols` to write.
struct Chroma<'a, T, C> {
    src: Window<'a, T>,
    conv: &'a C,
    w: usize,
    h: usize,
    cols: (usize, usize),
    sub: (usize, usize),
    m: Coeffs,
    s: ChromaSiting,
}

impl<T, C: Fn(&T) -> f32> Chroma<'_, T, C> {
    /// Chroma row `cy` into `out` (one (U, V) pair of sample slots per chroma column of
    /// `cols`): the RGB filtered along y into the worker's row buffer, then along x at each
    /// sample.
    #[inline(always)]
    fn row<'o>(
        &self,
        cy: usize,
        out: impl Iterator<Item = (&'o mut [u8], &'o mut [u8])>,
        put: impl Fn(&mut [u8], f32),
    ) {
        let (w, (sx, sy), (cx0, cx1)) = (self.w, self.sub, self.cols);
        // The luma columns the samples' taps read.
        let xa = (sx * cx0).saturating_sub(sx - 1);
        let xb = (sx * cx1).min(w);
        ROW.with_borrow_mut(|acc| {
            acc.clear();
            acc.resize(3 * (xb - xa), 0.0);
            for (yy, wy) in down_taps(cy, self.h, self.s.v_cosited, sy) {
                if wy != 0.0 {
                    let line = self.src.line(yy, xa, xb);
                    for (a, v) in acc.iter_mut().zip(line) {
                        *a += wy * (self.conv)(v);
                    }
                }
            }
            for (cx, (ou, ov)) in (cx0..cx1).zip(out) {
                let mut rgb = [0.0f32; 3];
                for (xx, wx) in down_taps(cx, w, self.s.h_cosited, sx) {
                    if wx != 0.0 {
                        for c in 0..3 {
                            rgb[c] += wx * acc[3 * (xx - xa) + c];
                        }
                    }
                }
                let (u, v) = self.m.chroma(rgb);
                put(ou, u);
                put(ov, v);
            }
        })
    }
}

/// Packed 4:2:2 rows (`at`: [`YuvLayout::packed`]; samples stored as `W`) into RGB: each
/// row's chroma upsampled along x as in the planar formats.
fn unpack_packed<W: Word, T: Copy + Send>(
    f: &YuvRef,
    at: [usize; 4],
    conv: impl Fn(f32) -> T + Sync,
    out: &mut [T],
) {
    let (w, cw, b) = (f.width, f.width.div_ceil(2), W::BYTES);
    let m = f.matrix.coeffs(f.layout.depth());
    let cosited = f.siting.h_cosited;
    out.par_chunks_mut(w * 3)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(y, dst)| {
            let row = &f.planes[0][y * f.strides[0]..][..4 * cw * b];
            let c = |k: usize, o: usize| W::load(&row[(4 * k + o) * b..]) as f32;
            for (x, o) in dst.chunks_exact_mut(3).enumerate() {
                let [(c0, b0), (c1, b1)] = up_taps(x, cw, cosited, 2);
                let u = b0 * c(c0, at[2]) + b1 * c(c1, at[2]);
                let v = b0 * c(c0, at[3]) + b1 * c(c1, at[3]);
                let rgb = m.rgb(c(x / 2, at[x % 2]), u, v);
                o[0] = conv(rgb[0]);
                o[1] = conv(rgb[1]);
                o[2] = conv(rgb[2]);
            }
        });
}

/// Packed 4:4:4 pixels (`at`: [`YuvLayout::packed444`]) into RGB; alpha is left to
/// [`unpack_alpha_into`]. The sample offsets as constants, one loop per layout (offsets read
/// at run time made the conversion about 2x slower).
fn unpack_packed444<T: Copy + Send>(
    f: &YuvRef,
    at: [usize; 4],
    conv: impl Fn(f32) -> T + Sync,
    out: &mut [T],
) {
    match (at, f.layout.word(), f.layout.shift()) {
        ([1, 2, 3, _], 1, _) => unpack_444_rows::<W8, T, 1, 2, 3>(f, conv, out),
        ([2, 1, 0, _], 1, _) => unpack_444_rows::<W8, T, 2, 1, 0>(f, conv, out),
        ([1, 2, 3, _], 2, 0) => unpack_444_rows::<W16<0>, T, 1, 2, 3>(f, conv, out),
        ([1, 0, 2, _], 2, 4) => unpack_444_rows::<W16<4>, T, 1, 0, 2>(f, conv, out),
        _ => unreachable!("packed 4:4:4 offsets {at:?} of {:?}", f.layout),
    }
}

fn unpack_444_rows<W: Word, T: Copy + Send, const Y: usize, const U: usize, const V: usize>(
    f: &YuvRef,
    conv: impl Fn(f32) -> T + Sync,
    out: &mut [T],
) {
    let (w, b) = (f.width, W::BYTES);
    let m = f.matrix.coeffs(f.layout.depth());
    out.par_chunks_mut(w * 3)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(y, dst)| {
            let row = &f.planes[0][y * f.strides[0]..][..4 * w * b];
            for (o, px) in dst.chunks_exact_mut(3).zip(row.chunks_exact(4 * b)) {
                let y = W::load(&px[Y * b..]) as f32;
                let u = W::load(&px[U * b..]) as f32;
                let rgb = m.rgb(y, u, W::load(&px[V * b..]) as f32);
                o[0] = conv(rgb[0]);
                o[1] = conv(rgb[1]);
                o[2] = conv(rgb[2]);
            }
        });
}

/// RGB into packed 4:4:4 pixels, rectangle `r` of the frame; alpha opaque (the depth's largest
/// code) until [`pack_alpha`] writes it. Offsets as constants, as [`unpack_packed444`].
fn pack_packed444<T: Sync>(
    src: Window<T>,
    r: Rect,
    f: &mut YuvMut,
    at: [usize; 4],
    conv: &(impl Fn(&T) -> f32 + Sync),
) {
    match (at, f.layout.word(), f.layout.shift()) {
        ([1, 2, 3, 0], 1, _) => pack_444_rows::<W8, T, 1, 2, 3, 0>(src, r, f, conv),
        ([2, 1, 0, 3], 1, _) => pack_444_rows::<W8, T, 2, 1, 0, 3>(src, r, f, conv),
        ([1, 2, 3, 0], 2, 0) => pack_444_rows::<W16<0>, T, 1, 2, 3, 0>(src, r, f, conv),
        ([1, 0, 2, 3], 2, 4) => pack_444_rows::<W16<4>, T, 1, 0, 2, 3>(src, r, f, conv),
        _ => unreachable!("packed 4:4:4 offsets {at:?} of {:?}", f.layout),
    }
}

fn pack_444_rows<
    W: Word,
    T: Sync,
    const Y: usize,
    const U: usize,
    const V: usize,
    const A: usize,
>(
    src: Window<T>,
    r: Rect,
    f: &mut YuvMut,
    conv: &(impl Fn(&T) -> f32 + Sync),
) {
    let b = W::BYTES;
    let m = f.matrix.coeffs(f.layout.depth());
    let opaque = m.code(m.max);
    f.planes[0]
        .par_chunks_mut(f.strides[0])
        .take(f.height)
        .skip(r.y0)
        .take(r.y1 - r.y0)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(i, row)| {
            let line = src.line(r.y0 + i, r.x0, r.x1);
            for (px, p) in row[4 * r.x0 * b..4 * r.x1 * b]
                .chunks_exact_mut(4 * b)
                .zip(line.chunks_exact(3))
            {
                let rgb = [conv(&p[0]), conv(&p[1]), conv(&p[2])];
                let (u, v) = m.chroma(rgb);
                W::put(&mut px[Y * b..], &m, m.luma(rgb));
                W::put(&mut px[U * b..], &m, u);
                W::put(&mut px[V * b..], &m, v);
                W::store(&mut px[A * b..], opaque);
            }
        });
}

/// Where a frame's alpha samples are and how they are stored.
#[derive(Clone, Copy)]
struct AlphaSamples {
    /// The plane, the first sample's first byte in a row, bytes from one sample to the next.
    plane: usize,
    first: usize,
    step: usize,
    /// A byte or a little-endian 16-bit word, the sample's bits from `shift` up.
    bytes: usize,
    shift: u32,
    /// The largest code.
    max: u16,
}

impl AlphaSamples {
    fn of(layout: YuvLayout) -> Option<Self> {
        let (bytes, shift) = (layout.word(), layout.shift());
        let (plane, first, step, bytes, shift) = if let Some(at) = layout.packed444() {
            (0, at[3] * bytes, 4 * bytes, bytes, shift)
        } else if layout.alpha_plane() {
            (3, 0, bytes, bytes, shift)
        } else if layout == YuvLayout::Y410 {
            // The top two bits of the word: of its fourth byte.
            (0, 3, 4, 1, 6)
        } else {
            return None;
        };
        let max = ((1u32 << layout.alpha_depth()) - 1) as u16;
        Some(Self {
            plane,
            first,
            step,
            bytes,
            shift,
            max,
        })
    }

    /// The bytes of a `w`-pixel row that hold its samples, from the first one's first byte.
    fn span(&self, w: usize) -> usize {
        (w - 1) * self.step + self.bytes
    }
}

/// The alpha plane of a frame with alpha ([`YuvLayout::has_alpha`]) into `alpha` (resized to
/// `width * height`, rows in parallel): codes of the layout's alpha depth (0–255 for AYUV,
/// VUYA and A420, 0–1023 for A420_10LE and its kin, 0–4095 for Y412_LE, 0–65535 for AYUV64,
/// 0–3 for Y410), and true; false, `alpha` untouched, for the others.
pub fn unpack_alpha_into(f: &YuvRef, alpha: &mut Vec<u16>) -> Result<bool> {
    let Some(a) = AlphaSamples::of(f.layout) else {
        return Ok(false);
    };
    f.check()?;
    let w = f.width;
    alpha.resize(w * f.height, 0);
    alpha
        .par_chunks_mut(w)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(y, dst)| {
            let row = &f.planes[a.plane][y * f.strides[a.plane] + a.first..][..a.span(w)];
            match a.bytes {
                1 => {
                    for (o, &c) in dst.iter_mut().zip(row.iter().step_by(a.step)) {
                        *o = c as u16 >> a.shift;
                    }
                }
                _ => {
                    for (o, i) in dst.iter_mut().zip((0..row.len()).step_by(a.step)) {
                        *o = u16::from_le_bytes([row[i], row[i + 1]]) >> a.shift;
                    }
                }
            }
        });
    Ok(true)
}

/// Writes a `width * height` alpha plane of the layout's codes into a frame with alpha (after
/// its colour: packing writes a packed format's alpha opaque, and leaves an alpha plane
/// alone); nothing for the layouts without.
pub fn pack_alpha(alpha: &[u16], f: &mut YuvMut) -> Result<()> {
    let Some(a) = AlphaSamples::of(f.layout) else {
        return Ok(());
    };
    let (w, h) = (f.width, f.height);
    f.check()?;
    if alpha.len() < w * h {
        return Err(Error::Input(format!(
            "alpha plane has {} values for a {w}x{h} frame",
            alpha.len()
        )));
    }
    // A byte's bits other than the sample's (Y410's V) are kept.
    let keep = !((a.max << a.shift) as u8);
    f.planes[a.plane]
        .par_chunks_mut(f.strides[a.plane])
        .take(h)
        .zip(alpha.par_chunks(w))
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(row, v)| {
            let row = &mut row[a.first..][..a.span(w)];
            match a.bytes {
                1 => {
                    for (c, &v) in row.iter_mut().step_by(a.step).zip(v) {
                        *c = (*c & keep) | (v.min(a.max) << a.shift) as u8;
                    }
                }
                _ => {
                    for (i, &v) in (0..row.len()).step_by(a.step).zip(v) {
                        let word = v.min(a.max) << a.shift;
                        row[i..i + 2].copy_from_slice(&word.to_le_bytes());
                    }
                }
            }
        });
    Ok(())
}

/// RGB into packed 4:2:2 rows: Y per pixel, U and V filtered along x at the chroma siting.
/// Rectangle `r` of the frame: the groups (two pixels, one chroma sample) whose first pixel is
/// in `r`.
fn pack_packed<W: Word, T: Sync>(
    src: Window<T>,
    r: Rect,
    f: &mut YuvMut,
    at: [usize; 4],
    conv: &(impl Fn(&T) -> f32 + Sync),
) {
    let (w, h, cw, b) = (f.width, f.height, f.width.div_ceil(2), W::BYTES);
    let m = f.matrix.coeffs(f.layout.depth());
    let cosited = f.siting.h_cosited;
    let (k0, k1) = (r.x0.div_ceil(2), r.x1.div_ceil(2).min(cw));
    if k0 >= k1 {
        return;
    }
    // The pixels the groups' luma and chroma taps read.
    let (xa, xb) = ((2 * k0).saturating_sub(1), (2 * k1).min(w));
    f.planes[0]
        .par_chunks_mut(f.strides[0])
        .take(h)
        .skip(r.y0)
        .take(r.y1 - r.y0)
        .enumerate()
        .with_min_len(super::frame::ROWS_PER_TASK)
        .for_each(|(i, row)| {
            let line = src.line(r.y0 + i, xa, xb);
            let rgb = |x: usize| [0, 1, 2].map(|c| conv(&line[3 * (x - xa) + c]));
            let groups = row[4 * k0 * b..4 * k1 * b].chunks_exact_mut(4 * b);
            for (k, g) in (k0..k1).zip(groups) {
                for i in 0..2 {
                    // An odd width's last group repeats its pixel.
                    let x = (2 * k + i).min(w - 1);
                    W::put(&mut g[at[i] * b..], &m, m.luma(rgb(x)));
                }
                let mut c = [0.0f32; 3];
                for (xx, wx) in down_taps(k, w, cosited, 2) {
                    if wx != 0.0 {
                        let p = rgb(xx);
                        for j in 0..3 {
                            c[j] += wx * p[j];
                        }
                    }
                }
                let (u, v) = m.chroma(c);
                W::put(&mut g[at[2] * b..], &m, u);
                W::put(&mut g[at[3] * b..], &m, v);
            }
        });
}

/// [`pack_with`] from an RGB f32 image.
pub fn pack(img: &Image, f: &mut YuvMut) -> Result<()> {
    pack_with(&img.data, img.width, img.height, f, |&v| v)
}

/// [`pack_with`] from interleaved RGB bytes (the CUDA path's output until it gave f32 values).
pub fn pack_rgb8(rgb: &[u8], f: &mut YuvMut) -> Result<()> {
    let (w, h) = (f.width, f.height);
    pack_with(rgb, w, h, f, |&v| v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::frame::to_u8;

    /// Zeroed planes of a `w x h` frame of `layout`, with their strides.
    pub(super) fn frame(layout: YuvLayout, w: usize, h: usize) -> (Vec<Vec<u8>>, [usize; 4]) {
        let sizes = layout.plane_sizes(w, h);
        // Padded strides (odd ones too), so that a stride mix-up shows.
        let strides = [0, 1, 2, 3].map(|p| sizes[p].0 + if sizes[p].1 > 0 { 3 + 2 * p } else { 0 });
        let planes = (0..layout.planes())
            .map(|p| vec![0u8; strides[p] * sizes[p].1])
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

    /// `img` packed into a frame of `layout` (the planes returned too) and unpacked again.
    fn round_trip_planes(
        layout: YuvLayout,
        img: &Image,
        m: YuvMatrix,
        s: ChromaSiting,
    ) -> (Image, Vec<Vec<u8>>, [usize; 4]) {
        let (w, h) = (img.width, img.height);
        let (mut planes, strides) = frame(layout, w, h);
        {
            let mut f = YuvMut {
                planes: planes_mut(&mut planes),
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
            planes: planes_ref(&planes),
            strides,
            width: w,
            height: h,
            layout,
            matrix: m,
            siting: s,
        };
        let mut back = Image::default();
        unpack_into(&f, &mut back).unwrap();
        (back, planes, strides)
    }

    fn round_trip(layout: YuvLayout, img: &Image, m: YuvMatrix, s: ChromaSiting) -> Image {
        round_trip_planes(layout, img, m, s).0
    }

    fn worst(a: &Image, b: &Image) -> f32 {
        a.data
            .iter()
            .zip(&b.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    }

    /// The engine writes frames tile by tile: every layout, each siting, written rectangle by
    /// rectangle (cuts at odd and even columns and rows, as x3 tiles give) from windows that
    /// hold only each rectangle and its one-pixel ring, is byte for byte the frame `pack`
    /// writes whole.
    #[test]
    fn packing_in_rectangles_equals_packing_the_frame() {
        use crate::engine::frame::tests::{grid, tight_copy, window_of};
        for (w, h) in [(13, 9), (1, 1), (2, 3), (41, 22)] {
            let img = crate::engine::random::test_image(w, h, w as u64);
            for layout in YuvLayout::ALL {
                for (hc, vc) in [(false, false), (true, false), (true, true)] {
                    let s = ChromaSiting {
                        h_cosited: hc,
                        v_cosited: vc,
                    };
                    let m = YuvMatrix::new(YuvMatrix::BT709, false);
                    let frame = |f: &mut dyn FnMut(&mut YuvMut)| {
                        let (mut planes, strides) = frame(layout, w, h);
                        for p in &mut planes {
                            p.fill(7);
                        }
                        f(&mut YuvMut {
                            planes: planes_mut(&mut planes),
                            strides,
                            width: w,
                            height: h,
                            layout,
                            matrix: m,
                            siting: s,
                        });
                        planes
                    };
                    let whole = frame(&mut |f| pack(&img, f).unwrap());
                    let mut staging = Vec::new();
                    for cuts in [
                        (&[3, 4, 9, 24][..], &[1, 2, 5, 15][..]),
                        (&[6, 12][..], &[3, 6][..]),
                        (&[][..], &[][..]),
                    ] {
                        let parts = frame(&mut |f| {
                            let mut out = YuvPacker::new(f, &mut staging).unwrap();
                            for r in grid(w, h, cuts.0, cuts.1) {
                                let (data, g) = tight_copy(&img, r, true);
                                out.put(window_of(&data, g), r).unwrap();
                            }
                            out.finish();
                        });
                        assert!(parts == whole, "{layout:?} {w}x{h} {s:?} {cuts:?}");
                    }
                    // A window without the ring is an error, not a panic.
                    if w > 4 && h > 4 {
                        let r = Rect {
                            x0: 2,
                            y0: 2,
                            x1: 4,
                            y1: 4,
                        };
                        let (data, g) = tight_copy(&img, r, false);
                        frame(&mut |f| {
                            let mut out = YuvPacker::new(f, &mut staging).unwrap();
                            let e = out.put(window_of(&data, g), r).unwrap_err();
                            assert!(e.to_string().contains("cannot write"), "{e}");
                        });
                    }
                }
            }
        }
    }

    /// Known colours: white, black and the primaries in BT.601 and BT.709, limited range,
    /// as the standards give them (8, 10 and 12 bits).
    #[test]
    fn primaries_have_their_standard_codes() {
        let cases = [
            (8, YuvMatrix::BT601, [255.0, 0.0, 0.0], (81, 90, 240)),
            (8, YuvMatrix::BT601, [0.0, 255.0, 0.0], (145, 54, 34)),
            (8, YuvMatrix::BT601, [0.0, 0.0, 255.0], (41, 240, 110)),
            (8, YuvMatrix::BT709, [255.0, 0.0, 0.0], (63, 102, 240)),
            (8, YuvMatrix::BT709, [0.0, 255.0, 0.0], (173, 42, 26)),
            (8, YuvMatrix::BT709, [0.0, 0.0, 255.0], (32, 240, 118)),
            (8, YuvMatrix::BT709, [255.0, 255.0, 255.0], (235, 128, 128)),
            (8, YuvMatrix::BT709, [0.0, 0.0, 0.0], (16, 128, 128)),
            // BT.709 at 10 bits (ITU-R BT.709-6 table 4.6 levels, colour bars' primaries).
            (10, YuvMatrix::BT709, [255.0, 0.0, 0.0], (250, 409, 960)),
            (10, YuvMatrix::BT709, [0.0, 255.0, 0.0], (691, 167, 105)),
            (10, YuvMatrix::BT709, [0.0, 0.0, 255.0], (127, 960, 471)),
            (10, YuvMatrix::BT709, [255.0, 255.0, 255.0], (940, 512, 512)),
            (10, YuvMatrix::BT709, [0.0, 0.0, 0.0], (64, 512, 512)),
            // 12 bits (ITU-R BT.2020-2 table 5: Y 256–3760, C 256–3840 around 2048).
            (
                12,
                YuvMatrix::BT2020,
                [255.0, 255.0, 255.0],
                (3760, 2048, 2048),
            ),
            (12, YuvMatrix::BT2020, [0.0, 0.0, 0.0], (256, 2048, 2048)),
        ];
        for (depth, k, rgb, (y, u, v)) in cases {
            let m = YuvMatrix::new(k, false).coeffs(depth);
            let (cu, cv) = m.chroma(rgb);
            assert_eq!(
                (m.code(m.luma(rgb)), m.code(cu), m.code(cv)),
                (y, u, v),
                "{depth} bits {k:?} {rgb:?}"
            );
            if depth == 8 {
                assert_eq!(to_u8(m.luma(rgb)) as i32, y);
            }
            let back = m.rgb(y as f32, u as f32, v as f32);
            let tol = if depth == 8 { 2.0 } else { 0.5 };
            for c in 0..3 {
                assert!((back[c] - rgb[c]).abs() < tol, "{k:?} {rgb:?} -> {back:?}");
            }
        }
        // Full range: Y spans 0–2^depth − 1.
        for (depth, max) in [(8, 255), (10, 1023), (12, 4095)] {
            let m = YuvMatrix::new(YuvMatrix::BT601, true).coeffs(depth);
            assert_eq!(m.code(m.luma([255.0; 3])), max);
            assert_eq!(m.code(m.luma([0.0; 3])), 0);
            let grey = m.centre;
            assert!(m.rgb(max as f32, grey, grey).iter().all(|&c| c > 254.99));
        }
    }

    /// The samples land where each format keeps them: P010, P012, Y210 and Y212_LE in the high
    /// bits of little-endian words, Y410's in the bit fields of 32-bit words, the 10- and 12-bit planar formats in the low bits, chroma
    /// planes of the subsampled size.
    #[test]
    fn samples_are_stored_as_the_formats_say() {
        let (w, h) = (5, 3);
        let mut img = Image::new(w, h);
        img.data.fill(255.0);
        let m = YuvMatrix::new(YuvMatrix::BT709, false);
        for layout in YuvLayout::ALL {
            let (_, planes, strides) = round_trip_planes(layout, &img, m, ChromaSiting::default());
            let (white, grey) = match layout.depth() {
                8 => (235u32, 128u32),
                10 => (940, 512),
                12 => (3760, 2048),
                _ => (235 * 256, 128 * 256),
            };
            let word = |p: usize, row: usize, i: usize| {
                let b = &planes[p][row * strides[p]..];
                match (layout.word(), layout.big_endian()) {
                    (1, _) => b[i] as u32,
                    (_, false) => u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32,
                    (_, true) => u16::from_be_bytes([b[2 * i], b[2 * i + 1]]) as u32,
                }
            };
            if layout == YuvLayout::V210 {
                // One group of 6 for 5 pixels: the last word is Y4 Cr2 Y5, Y5 (past the row)
                // repeating Y4; the third ends with Cb2; the top two bits of each word 0.
                let g = &planes[0][(h - 1) * strides[0]..][..16];
                let word = |k: usize| u32::from_le_bytes(g[4 * k..4 * k + 4].try_into().unwrap());
                let sample = |k: usize, i: u32| (word(k) >> (10 * i)) & 0x3ff;
                assert_eq!(
                    [sample(3, 0), sample(3, 1), sample(3, 2), sample(2, 2)],
                    [white, grey, white, grey]
                );
                assert!((0..4).all(|k| word(k) >> 30 == 0));
                continue;
            }
            if layout == YuvLayout::Y410 {
                // The last pixel's word: U, Y, V from bit 0, 10, 20, alpha opaque (3) in the
                // top two bits until `pack_alpha`.
                let px = &planes[0][(h - 1) * strides[0] + 4 * (w - 1)..][..4];
                let word = u32::from_le_bytes(px.try_into().unwrap());
                let got = [0, 10, 20, 30].map(|at| (word >> at) & 0x3ff);
                assert_eq!(got, [grey, white, grey, 3]);
                continue;
            }
            let s = layout.shift();
            if let Some(at) = layout.packed() {
                // The last group (of the odd width's padding pixel too): Y Y U V where `at` says
                // (Y210 and Y212_LE in the high bits of their words).
                let want = [white, white, grey, grey].map(|v| v << s);
                assert_eq!(at.map(|i| word(0, h - 1, 8 + i)), want, "{layout:?}");
                continue;
            }
            if let Some(at) = layout.packed444() {
                // The last pixel: Y U V A where `at` says, alpha opaque (the largest code)
                // until `pack_alpha`.
                let max = (1u32 << layout.depth()) - 1;
                let want = [white, grey, grey, max].map(|v| v << s);
                let got = at.map(|i| word(0, h - 1, 4 * (w - 1) + i));
                assert_eq!(got, want, "{layout:?}");
                continue;
            }
            assert_eq!(word(0, h - 1, w - 1), white << s, "{layout:?} Y");
            if layout.alpha_plane() {
                // The alpha plane is `pack_alpha`'s: colour packing leaves it as it was.
                assert!(planes[3].iter().all(|&b| b == 0), "{layout:?} alpha");
            }
            let (cw, ch) = layout.chroma_size(w, h);
            let per_row = if layout.interleaved() { 2 * cw } else { cw };
            for p in 1..layout.colour().planes() {
                assert_eq!(
                    word(p, ch - 1, per_row - 1),
                    grey << s,
                    "{layout:?} plane {p}"
                );
            }
        }
        assert_eq!(YuvLayout::Y42b.chroma_size(5, 3), (3, 3));
        assert_eq!(YuvLayout::Y444p10.chroma_size(5, 3), (5, 3));
        let none = (0, 0);
        for (layout, (w, h), want) in [
            (YuvLayout::P010, (5, 3), [(10, 3), (12, 2), none, none]),
            (YuvLayout::P012, (5, 3), [(10, 3), (12, 2), none, none]),
            (YuvLayout::Gray16, (5, 3), [(10, 3), none, none, none]),
            (YuvLayout::Uyvy, (5, 3), [(12, 3), none, none, none]),
            (YuvLayout::Y210, (5, 3), [(24, 3), none, none, none]),
            (YuvLayout::P016, (5, 3), [(10, 3), (12, 2), none, none]),
            (
                YuvLayout::Y444p16,
                (5, 3),
                [(10, 3), (10, 3), (10, 3), none],
            ),
            (YuvLayout::V210, (7, 3), [(32, 3), none, none, none]),
            (YuvLayout::Vuya, (5, 3), [(20, 3), none, none, none]),
            (YuvLayout::Y412, (5, 3), [(40, 3), none, none, none]),
            (YuvLayout::A420, (5, 3), [(5, 3), (3, 2), (3, 2), (5, 3)]),
            (
                YuvLayout::A422p10,
                (5, 3),
                [(10, 3), (6, 3), (6, 3), (10, 3)],
            ),
        ] {
            assert_eq!(layout.plane_sizes(w, h), want, "{layout:?} {w}x{h}");
        }
        // Alpha: out of a frame and back into one at its depth, where its sample is (AYUV's
        // first byte, Y412_LE's fourth word in its high 12 bits, AYUV64's first word, A420's
        // fourth plane): (layout, plane, first byte of the last pixel's sample).
        for (layout, plane, last) in [
            (YuvLayout::Ayuv, 0, 4 * (w - 1)),
            (YuvLayout::Vuya, 0, 4 * (w - 1) + 3),
            (YuvLayout::Y412, 0, 8 * (w - 1) + 6),
            (YuvLayout::Ayuv64, 0, 8 * (w - 1)),
            (YuvLayout::Y410, 0, 4 * (w - 1) + 3),
            (YuvLayout::A420, 3, w - 1),
            (YuvLayout::A420p10, 3, 2 * (w - 1)),
            (YuvLayout::A422p10, 3, 2 * (w - 1)),
            (YuvLayout::A444p10, 3, 2 * (w - 1)),
        ] {
            let (mut planes, strides) = frame(layout, w, h);
            // Y410's alpha shares its byte with V's top bits, which stay.
            planes[0].fill(0x15);
            let max = (1u32 << layout.alpha_depth()) - 1;
            let a: Vec<u16> = (0..w * h)
                .map(|i| (i as u32 * 977 % (max + 1)) as u16)
                .collect();
            let mut f = YuvMut {
                planes: planes_mut(&mut planes),
                strides,
                width: w,
                height: h,
                layout,
                matrix: m,
                siting: ChromaSiting::default(),
            };
            pack_alpha(&a, &mut f).unwrap();
            let at = (h - 1) * strides[plane] + last;
            let stored = match (layout.word(), layout) {
                (_, YuvLayout::Y410) => {
                    assert_eq!(planes[0][at] & 0x3f, 0x15, "Y410: V's bits kept");
                    (planes[0][at] >> 6) as u32
                }
                (1, _) => planes[plane][at] as u32,
                _ => {
                    let word = u16::from_le_bytes([planes[plane][at], planes[plane][at + 1]]);
                    word as u32 >> layout.shift()
                }
            };
            assert_eq!(stored, a[w * h - 1] as u32, "{layout:?}");
            let f = YuvRef {
                planes: planes_ref(&planes),
                strides,
                width: w,
                height: h,
                layout,
                matrix: m,
                siting: ChromaSiting::default(),
            };
            let mut back = Vec::new();
            assert!(unpack_alpha_into(&f, &mut back).unwrap());
            assert_eq!(back, a, "{layout:?}");
            assert!(
                !unpack_alpha_into(
                    &YuvRef {
                        layout: YuvLayout::Y444,
                        ..f
                    },
                    &mut back
                )
                .unwrap()
            );
        }
    }

    /// v210 holds exactly the samples of I422_10LE: packed from the same image, its words
    /// (decoded here the way SMPTE / Apple describe them) give I422_10LE's planes, and both
    /// unpack to the same image — whole groups and partial last ones.
    #[test]
    fn v210_holds_the_samples_of_i422_10le() {
        let (m, s) = (
            YuvMatrix::new(YuvMatrix::BT709, false),
            ChromaSiting::default(),
        );
        for (w, h) in [(1, 1), (5, 3), (6, 2), (13, 4), (48, 2), (50, 3)] {
            let img = smooth(w, h);
            let (back_v, v210, vs) = round_trip_planes(YuvLayout::V210, &img, m, s);
            let (back_p, planar, ps) = round_trip_planes(YuvLayout::I422p10, &img, m, s);
            assert_eq!(back_v.data, back_p.data, "{w}x{h}");
            let cw = w.div_ceil(2);
            let at = |p: usize, r: usize, i: usize| {
                let b = &planar[p][r * ps[p] + 2 * i..];
                u16::from_le_bytes([b[0], b[1]]) as u32
            };
            for r in 0..h {
                let row = &v210[0][r * vs[0]..];
                for g in 0..w.div_ceil(6) {
                    let word = |k: usize| {
                        u32::from_le_bytes(row[16 * g + 4 * k..][..4].try_into().unwrap())
                    };
                    let s3 = |k: usize| [0, 10, 20].map(|b| (word(k) >> b) & 0x3ff);
                    let [cb0, y0, cr0] = s3(0);
                    let [y1, cb1, y2] = s3(1);
                    let [cr1, y3, cb2] = s3(2);
                    let [y4, cr2, y5] = s3(3);
                    for (i, y) in [y0, y1, y2, y3, y4, y5].into_iter().enumerate() {
                        let x = 6 * g + i;
                        assert_eq!(y, at(0, r, x.min(w - 1)), "{w}x{h} Y row {r} x {x}");
                    }
                    for (i, (cb, cr)) in
                        [(cb0, cr0), (cb1, cr1), (cb2, cr2)].into_iter().enumerate()
                    {
                        let x = (3 * g + i).min(cw - 1);
                        assert_eq!((cb, cr), (at(1, r, x), at(2, r, x)), "{w}x{h} C row {r}");
                    }
                }
            }
        }
    }

    /// Y410's words (U, Y, V from bits 0, 10, 20) hold Y444_10LE's samples, and both unpack
    /// to the same image.
    #[test]
    fn y410_holds_the_samples_of_y444_10le() {
        let (m, s) = (
            YuvMatrix::new(YuvMatrix::BT2020, false),
            ChromaSiting::default(),
        );
        for (w, h) in [(1, 1), (5, 3), (13, 4)] {
            let img = smooth(w, h);
            let (back_y, y410, ys) = round_trip_planes(YuvLayout::Y410, &img, m, s);
            let (back_p, planar, ps) = round_trip_planes(YuvLayout::Y444p10, &img, m, s);
            assert_eq!(back_y.data, back_p.data, "{w}x{h}");
            for r in 0..h {
                for x in 0..w {
                    let at = |p: usize| {
                        let b = &planar[p][r * ps[p] + 2 * x..];
                        u16::from_le_bytes([b[0], b[1]]) as u32
                    };
                    let px = &y410[0][r * ys[0] + 4 * x..][..4];
                    let word = u32::from_le_bytes(px.try_into().unwrap());
                    let got = [0, 10, 20].map(|b| (word >> b) & 0x3ff);
                    assert_eq!(got, [at(1), at(0), at(2)], "{w}x{h} row {r} x {x}");
                }
            }
        }
    }

    /// RGB → YUV → RGB of a smooth image comes back within the rounding and the chroma
    /// filtering, for every layout, odd sizes, every siting and matrix.
    #[test]
    fn round_trip_of_a_smooth_image() {
        for layout in YuvLayout::ALL.into_iter().filter(|l| !l.grey()) {
            for (w, h) in [(1, 1), (2, 2), (7, 5), (32, 18)] {
                for (k, full) in [(YuvMatrix::BT601, false), (YuvMatrix::BT709, true)] {
                    for (hc, vc) in [(false, false), (true, false), (true, true)] {
                        let s = ChromaSiting {
                            h_cosited: hc,
                            v_cosited: vc,
                        };
                        let m = YuvMatrix::new(k, full);
                        let img = smooth(w, h);
                        let worst = worst(&img, &round_trip(layout, &img, m, s));
                        // 4:4:4 has no chroma filter: only the rounding remains.
                        let tol = match (layout.subsampling(), layout.depth()) {
                            ((1, 1), 8) => 2.0,
                            ((1, 1), _) => 0.5,
                            _ => 6.0,
                        };
                        assert!(worst < tol, "{layout:?} {w}x{h} {k:?} {s:?}: worst {worst}");
                    }
                }
            }
        }
    }

    /// NV21 and NV61 are NV12 / NV16 with V before U in each pair; NV16 and NV24 are I422 /
    /// Y444 with the chroma planes interleaved; YV12 is I420 with its chroma planes swapped;
    /// YUY2, UYVY and YVYU are Y42B packed in pixel pairs, Y210 and Y212_LE I422_10LE and
    /// I422_12LE; AYUV / VUYA, Y412_LE and AYUV64 are Y444, Y444_12LE and Y444_16LE per pixel.
    #[test]
    fn semi_planar_formats_interleave_the_planar_ones() {
        let img = smooth(9, 7);
        let m = YuvMatrix::new(YuvMatrix::BT709, false);
        let s = ChromaSiting {
            h_cosited: true,
            v_cosited: false,
        };
        let visible = |layout: YuvLayout| {
            let (back, planes, strides) = round_trip_planes(layout, &img, m, s);
            let sizes = layout.plane_sizes(9, 7);
            let rows: Vec<Vec<u8>> = (0..layout.planes())
                .map(|p| {
                    let (row, n) = sizes[p];
                    (0..n)
                        .flat_map(|y| planes[p][y * strides[p]..][..row].to_vec())
                        .collect()
                })
                .collect();
            (back, rows)
        };
        for (semi, planar, swap) in [
            (YuvLayout::Nv12, YuvLayout::I420, false),
            (YuvLayout::Nv21, YuvLayout::I420, true),
            (YuvLayout::Nv16, YuvLayout::Y42b, false),
            (YuvLayout::Nv61, YuvLayout::Y42b, true),
            (YuvLayout::Nv24, YuvLayout::Y444, false),
        ] {
            let (back_s, sp) = visible(semi);
            let (back_p, pp) = visible(planar);
            assert_eq!(sp[0], pp[0], "{semi:?} Y");
            let (first, second) = if swap {
                (&pp[2], &pp[1])
            } else {
                (&pp[1], &pp[2])
            };
            let pairs: Vec<u8> = first
                .iter()
                .zip(second.iter())
                .flat_map(|(&a, &b)| [a, b])
                .collect();
            assert_eq!(sp[1], pairs, "{semi:?} chroma");
            assert_eq!(back_s.data, back_p.data, "{semi:?} unpacked");
        }
        // YV12: I420 with the chroma planes the other way round.
        let (back_yv, yv) = visible(YuvLayout::Yv12);
        let (back_i, i420) = visible(YuvLayout::I420);
        assert_eq!([&yv[0], &yv[1], &yv[2]], [&i420[0], &i420[2], &i420[1]]);
        assert_eq!(back_yv.data, back_i.data, "YV12 unpacked");
        // Packed 4:2:2: the planar format's samples in groups of two pixels (an odd width's
        // last group repeats its last Y); Y210 and Y212_LE are I422_10LE / I422_12LE's words
        // with the sample in the high bits.
        let words = |b: &[u8], size: usize, shift: u32| -> Vec<u32> {
            match size {
                1 => b.iter().map(|&v| v as u32).collect(),
                _ => b
                    .chunks_exact(2)
                    .map(|c| (u16::from_le_bytes([c[0], c[1]]) >> shift) as u32)
                    .collect(),
            }
        };
        // A layout's image back and its planes' samples (shifted down to their values).
        let sampled = |layout: YuvLayout| {
            let (back, planes) = visible(layout);
            let samples: Vec<Vec<u32>> = planes
                .iter()
                .map(|p| words(p, layout.word(), layout.shift()))
                .collect();
            (back, samples)
        };
        for (packed, planar) in [
            (YuvLayout::Yuy2, YuvLayout::Y42b),
            (YuvLayout::Uyvy, YuvLayout::Y42b),
            (YuvLayout::Yvyu, YuvLayout::Y42b),
            (YuvLayout::Y210, YuvLayout::I422p10),
            (YuvLayout::Y212, YuvLayout::I422p12),
        ] {
            let (back_p, pp) = sampled(planar);
            let at = packed.packed().unwrap();
            let (back, rows) = sampled(packed);
            let row = &rows[0];
            let (w, cw) = (9, 5);
            for y in 0..7 {
                for k in 0..cw {
                    let g = &row[y * 4 * cw + 4 * k..][..4];
                    let want = [
                        pp[0][y * w + 2 * k],
                        pp[0][y * w + (2 * k + 1).min(w - 1)],
                        pp[1][y * cw + k],
                        pp[2][y * cw + k],
                    ];
                    assert_eq!(at.map(|i| g[i]), want, "{packed:?} row {y} group {k}");
                }
            }
            assert_eq!(back.data, back_p.data, "{packed:?} unpacked");
        }
        // Packed 4:4:4: the planar format's samples pixel by pixel.
        for (packed, planar) in [
            (YuvLayout::Ayuv, YuvLayout::Y444),
            (YuvLayout::Vuya, YuvLayout::Y444),
            (YuvLayout::Y412, YuvLayout::Y444p12),
            (YuvLayout::Ayuv64, YuvLayout::Y444p16),
        ] {
            let (back_p, pp) = sampled(planar);
            let at = packed.packed444().unwrap();
            let (back, rows) = sampled(packed);
            let row = &rows[0];
            for i in 0..9 * 7 {
                let px = &row[4 * i..][..4];
                let want = [pp[0][i], pp[1][i], pp[2][i]];
                assert_eq!(
                    [px[at[0]], px[at[1]], px[at[2]]],
                    want,
                    "{packed:?} pixel {i}"
                );
            }
            assert_eq!(back.data, back_p.data, "{packed:?} unpacked");
        }
        // The bits below Y210's and Y212_LE's samples are zero.
        for packed in [YuvLayout::Y210, YuvLayout::Y212] {
            let (_, rows) = visible(packed);
            let low = (1u32 << packed.shift()) - 1;
            assert!(
                words(&rows[0], 2, 0).iter().all(|&v| v & low == 0),
                "{packed:?}"
            );
        }
    }

    /// Grey formats: a grey image comes back as it was (full range: exactly at 8 bits, within
    /// 1/256 level at 16), a coloured one as its luma in every channel.
    #[test]
    fn grey_formats_keep_grey_and_take_the_luma_of_colour() {
        let (w, h) = (7, 5);
        let mut img = Image::new(w, h);
        for (i, px) in img.data.chunks_exact_mut(3).enumerate() {
            px.fill((i * 37 % 256) as f32);
        }
        let m = YuvMatrix::new(YuvMatrix::BT601, true);
        let s = ChromaSiting::default();
        assert_eq!(round_trip(YuvLayout::Gray8, &img, m, s).data, img.data);
        assert!(worst(&img, &round_trip(YuvLayout::Gray16, &img, m, s)) < 1.0 / 256.0);
        let colour = smooth(w, h);
        let back = round_trip(YuvLayout::Gray8, &colour, m, s);
        for (a, b) in colour.data.chunks_exact(3).zip(back.data.chunks_exact(3)) {
            let y = 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2];
            assert!(b.iter().all(|&v| (v - y).abs() <= 0.5), "{a:?} -> {b:?}");
        }
    }

    /// GRAY16_BE is GRAY16_LE with each word's bytes swapped, both ways: the frame `pack`
    /// writes and the image `unpack` reads.
    #[test]
    fn gray16_be_is_gray16_le_byte_swapped() {
        let (w, h) = (9, 4);
        let img = crate::engine::random::test_image(w, h, 5);
        let m = YuvMatrix::new(YuvMatrix::BT709, true);
        let s = ChromaSiting::default();
        let (back_le, le, strides) = round_trip_planes(YuvLayout::Gray16, &img, m, s);
        let (back_be, be, strides_be) = round_trip_planes(YuvLayout::Gray16Be, &img, m, s);
        assert_eq!(strides, strides_be);
        assert_eq!(back_le.data, back_be.data);
        for y in 0..h {
            let row = |p: &[u8]| p[y * strides[0]..][..2 * w].to_vec();
            let mut swapped = row(&le[0]);
            swapped.chunks_exact_mut(2).for_each(|c| c.swap(0, 1));
            assert_eq!(swapped, row(&be[0]), "row {y}");
            // Not a palindrome by luck: the words are not all symmetric.
            assert_ne!(row(&le[0]), row(&be[0]), "row {y}");
        }
        // Read as the other endianness, the same bytes are a different image.
        let as_le = YuvRef {
            planes: planes_ref(&be),
            strides,
            width: w,
            height: h,
            layout: YuvLayout::Gray16,
            matrix: m,
            siting: s,
        };
        let mut wrong = Image::default();
        unpack_into(&as_le, &mut wrong).unwrap();
        assert!(worst(&back_be, &wrong) > 10.0);
    }

    /// Ten bits keep what eight round away: an image of fractional levels comes back from
    /// 10-bit 4:4:4 within a quarter level, from 8-bit 4:4:4 only within about one; twelve
    /// bits (planar and P012's high bits) come closer still.
    #[test]
    fn ten_bits_keep_what_eight_bits_round_away() {
        let (w, h) = (16, 9);
        let mut img = Image::new(w, h);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = 20.0 + (i as f32 * 0.37) % 200.0;
        }
        let m = YuvMatrix::new(YuvMatrix::BT709, false);
        let s = ChromaSiting::default();
        let ten = worst(&img, &round_trip(YuvLayout::Y444p10, &img, m, s));
        let eight = worst(&img, &round_trip(YuvLayout::Y444, &img, m, s));
        assert!(ten < 0.3, "10-bit worst {ten}");
        assert!(eight > 0.6, "8-bit worst {eight}");
        let twelve = worst(&img, &round_trip(YuvLayout::Y444p12, &img, m, s));
        assert!(twelve < ten / 2.0, "12-bit worst {twelve}, 10-bit {ten}");
        let p012 = worst(&img, &round_trip(YuvLayout::P012, &img, m, s));
        let p010 = worst(&img, &round_trip(YuvLayout::P010, &img, m, s));
        assert!(p012 < p010, "P012 worst {p012}, P010 {p010}");
    }

    /// A flat colour survives exactly (up to rounding), whatever the filters.
    #[test]
    fn flat_colour_is_kept() {
        let (w, h) = (9, 7);
        let mut img = Image::new(w, h);
        for px in img.data.chunks_exact_mut(3) {
            px.copy_from_slice(&[200.0, 30.0, 90.0]);
        }
        for layout in YuvLayout::ALL.into_iter().filter(|l| !l.grey()) {
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
            planes: [&y, &c, &c, &[]],
            strides: [4, 2, 2, 0],
            width: 4,
            height: 4,
            layout: YuvLayout::I420,
            matrix: m,
            siting: ChromaSiting::default(),
        };
        let mut img = Image::default();
        let e = unpack_into(&f, &mut img).unwrap_err().to_string();
        assert!(e.contains("plane 1"), "{e}");
        // 10-bit planes need two bytes a sample: the 8-bit sizes are short.
        let y = vec![0u8; 16];
        let c = vec![0u8; 4];
        let f = YuvRef {
            planes: [&y, &c, &c, &[]],
            layout: YuvLayout::I420p10,
            ..f
        };
        let e = unpack_into(&f, &mut img).unwrap_err().to_string();
        assert!(e.contains("plane 0"), "{e}");
        // A420 needs its alpha plane (luma-sized), for colour and alpha alike.
        let f = YuvRef {
            planes: [&y, &c, &c, &y[..15]],
            strides: [4, 2, 2, 4],
            layout: YuvLayout::A420,
            ..f
        };
        let e = unpack_into(&f, &mut img).unwrap_err().to_string();
        assert!(e.contains("plane 3"), "{e}");
        let e = unpack_alpha_into(&f, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("plane 3"), "{e}");
        assert!(
            unpack_alpha_into(
                &YuvRef {
                    planes: [&y, &c, &c, &y],
                    ..f
                },
                &mut Vec::new()
            )
            .unwrap()
        );
    }
}
