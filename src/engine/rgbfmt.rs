//! RGB frames other than 8-bit packed ones ([`super::frame`]) in and out of the engine:
//!
//! - 64-bit RGBA, 16 bits per channel — GStreamer's ARGB64 (what `pngdec` gives for 16-bit
//!   PNGs), RGBA64, BGRA64 and ABGR64, each little- or big-endian;
//! - 10-bit RGB packed in 32-bit words — BGR10A2_LE and RGB10A2_LE (2-bit alpha in the top
//!   bits), r210 (big-endian, no alpha);
//! - planar RGB — GBR and GBRA (what FFmpeg's decoders give for RGB codecs: FFV1, VP9 and
//!   H.264 4:4:4 RGB), RGBP and BGRP at 8 bits, GBR and GBRA at 10 and 12 bits in 16-bit
//!   words of either byte order.
//!
//! A sample `v` of `d` bits is the value `v · 255 / (2^d − 1)` of the network's 0–255 scale (at
//! 16 bits `v / 257`, at 8 bits `v` itself, so content lifted from 8 bits by bit replication
//! reads as its 8-bit frame), and an output value `x` is written as `x · (2^d − 1) / 255`,
//! rounded once, half to even: no 8-bit step on either side. Alpha is upscaled apart,
//! bilinearly, at its own depth.

use super::error::{Error, Result};
use super::frame::{FrameMut, ROWS_PER_TASK, Rect, Window, check_geometry, rect_rows, to_u8};
use super::quant::{clamp, round_even_small};
use rayon::prelude::*;

/// `$body` with `$S` the [`Store`] of format `$fm`'s words and `$STEP` its pixel step, both
/// known to the compiler (one copy of `$body` per pair; `$other` for a pair no format has,
/// which [`RgbFormat::check`] refuses first).
macro_rules! with_store {
    ($fm:expr, $S:ident, $STEP:ident => $body:expr, $other:expr) => {
        match ($fm.word, $fm.step) {
            (Word::U8, 1) => {
                type $S = B8;
                const $STEP: usize = 1;
                $body
            }
            (Word::U16 { be: false }, 2) => {
                type $S = W16<false>;
                const $STEP: usize = 2;
                $body
            }
            (Word::U16 { be: true }, 2) => {
                type $S = W16<true>;
                const $STEP: usize = 2;
                $body
            }
            (Word::U16 { be: false }, 8) => {
                type $S = W16<false>;
                const $STEP: usize = 8;
                $body
            }
            (Word::U16 { be: true }, 8) => {
                type $S = W16<true>;
                const $STEP: usize = 8;
                $body
            }
            (Word::U32 { be: false }, 4) => {
                type $S = W32<false>;
                const $STEP: usize = 4;
                $body
            }
            (Word::U32 { be: true }, 4) => {
                type $S = W32<true>;
                const $STEP: usize = 4;
                $body
            }
            _ => $other,
        }
    };
}

/// How a format stores its samples: bytes, or 16- or 32-bit words of a byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    U8,
    U16 { be: bool },
    U32 { be: bool },
}

impl Word {
    pub fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 { .. } => 2,
            Self::U32 { .. } => 4,
        }
    }
}

/// Where each channel of an RGB format sits: its plane, the word of the pixel holding it and
/// its bits in that word. Channels are R, G, B, alpha, in that order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RgbFormat {
    /// GStreamer's name of the format.
    pub name: &'static str,
    pub word: Word,
    /// Planes (1 packed, 3 or 4 planar).
    pub planes: usize,
    /// Plane of R, G, B and alpha.
    pub plane: [usize; 4],
    /// Bytes of a pixel in each of its planes.
    pub step: usize,
    /// Index of the word (of `word`) holding R, G, B and alpha within a pixel of its plane.
    pub index: [usize; 4],
    /// Lowest bit of R, G, B and alpha in their word.
    pub shift: [u32; 4],
    /// Bits of R, G and B.
    pub depth: u32,
    /// Bits of alpha (0: no alpha channel).
    pub alpha_depth: u32,
}

impl RgbFormat {
    /// 64-bit RGBA: R, G, B and A as the 16-bit samples `order` (0–3) of a pixel.
    pub const fn rgba64(name: &'static str, order: [usize; 4], be: bool) -> Self {
        Self {
            name,
            word: Word::U16 { be },
            planes: 1,
            plane: [0; 4],
            step: 8,
            index: order,
            shift: [0; 4],
            depth: 16,
            alpha_depth: 16,
        }
    }

    pub const RGBA64_LE: Self = Self::rgba64("RGBA64_LE", [0, 1, 2, 3], false);
    pub const RGBA64_BE: Self = Self::rgba64("RGBA64_BE", [0, 1, 2, 3], true);
    pub const ARGB64_LE: Self = Self::rgba64("ARGB64_LE", [1, 2, 3, 0], false);
    pub const ARGB64_BE: Self = Self::rgba64("ARGB64_BE", [1, 2, 3, 0], true);
    pub const BGRA64_LE: Self = Self::rgba64("BGRA64_LE", [2, 1, 0, 3], false);
    pub const BGRA64_BE: Self = Self::rgba64("BGRA64_BE", [2, 1, 0, 3], true);
    pub const ABGR64_LE: Self = Self::rgba64("ABGR64_LE", [3, 2, 1, 0], false);
    pub const ABGR64_BE: Self = Self::rgba64("ABGR64_BE", [3, 2, 1, 0], true);
    /// GStreamer's ARGB64: ARGB in the host's byte order.
    pub const ARGB64: Self = Self::rgba64("ARGB64", [1, 2, 3, 0], cfg!(target_endian = "big"));

    /// 10-bit R, G and B at bits `shift` of a 32-bit word, with 2-bit alpha in bits 30–31 or
    /// none (those bits written 0).
    pub const fn packed10(name: &'static str, shift: [u32; 3], alpha: bool, be: bool) -> Self {
        Self {
            name,
            word: Word::U32 { be },
            planes: 1,
            plane: [0; 4],
            step: 4,
            index: [0; 4],
            shift: [shift[0], shift[1], shift[2], 30],
            depth: 10,
            alpha_depth: if alpha { 2 } else { 0 },
        }
    }

    /// BGR10A2_LE: B in bits 0–9, G 10–19, R 20–29, alpha 30–31 of a little-endian word.
    pub const BGR10A2_LE: Self = Self::packed10("BGR10A2_LE", [20, 10, 0], true, false);
    /// RGB10A2_LE: R in bits 0–9, G 10–19, B 20–29, alpha 30–31 of a little-endian word.
    pub const RGB10A2_LE: Self = Self::packed10("RGB10A2_LE", [0, 10, 20], true, false);
    /// r210: R in bits 20–29, G 10–19, B 0–9 of a big-endian word, bits 30–31 unused.
    pub const R210: Self = Self::packed10("r210", [20, 10, 0], false, true);

    /// Planar RGB of `depth` bits (bytes at 8, 16-bit words of byte order `be` above): R, G
    /// and B in planes `plane`, alpha (with `alpha`) in plane 3.
    pub const fn planar(
        name: &'static str,
        plane: [usize; 3],
        alpha: bool,
        depth: u32,
        be: bool,
    ) -> Self {
        let word = if depth == 8 {
            Word::U8
        } else {
            Word::U16 { be }
        };
        Self {
            name,
            word,
            planes: if alpha { 4 } else { 3 },
            plane: [plane[0], plane[1], plane[2], 3],
            step: if depth == 8 { 1 } else { 2 },
            index: [0; 4],
            shift: [0; 4],
            depth,
            alpha_depth: if alpha { depth } else { 0 },
        }
    }

    /// GStreamer's GBR order: G in plane 0, B in 1, R in 2 (alpha in 3).
    const GBR_PLANES: [usize; 3] = [2, 0, 1];
    pub const GBR: Self = Self::planar("GBR", Self::GBR_PLANES, false, 8, false);
    pub const GBRA: Self = Self::planar("GBRA", Self::GBR_PLANES, true, 8, false);
    pub const GBR_10LE: Self = Self::planar("GBR_10LE", Self::GBR_PLANES, false, 10, false);
    pub const GBR_10BE: Self = Self::planar("GBR_10BE", Self::GBR_PLANES, false, 10, true);
    pub const GBRA_10LE: Self = Self::planar("GBRA_10LE", Self::GBR_PLANES, true, 10, false);
    pub const GBRA_10BE: Self = Self::planar("GBRA_10BE", Self::GBR_PLANES, true, 10, true);
    pub const GBR_12LE: Self = Self::planar("GBR_12LE", Self::GBR_PLANES, false, 12, false);
    pub const GBR_12BE: Self = Self::planar("GBR_12BE", Self::GBR_PLANES, false, 12, true);
    pub const GBRA_12LE: Self = Self::planar("GBRA_12LE", Self::GBR_PLANES, true, 12, false);
    pub const GBRA_12BE: Self = Self::planar("GBRA_12BE", Self::GBR_PLANES, true, 12, true);
    /// R, G, B planes in that order.
    pub const RGBP: Self = Self::planar("RGBP", [0, 1, 2], false, 8, false);
    /// B, G, R planes in that order.
    pub const BGRP: Self = Self::planar("BGRP", [2, 1, 0], false, 8, false);

    /// Every format this module reads and writes.
    pub const ALL: [Self; 23] = [
        Self::RGBA64_LE,
        Self::RGBA64_BE,
        Self::ARGB64_LE,
        Self::ARGB64_BE,
        Self::BGRA64_LE,
        Self::BGRA64_BE,
        Self::ABGR64_LE,
        Self::ABGR64_BE,
        Self::BGR10A2_LE,
        Self::RGB10A2_LE,
        Self::R210,
        Self::GBR,
        Self::GBRA,
        Self::GBR_10LE,
        Self::GBR_10BE,
        Self::GBRA_10LE,
        Self::GBRA_10BE,
        Self::GBR_12LE,
        Self::GBR_12BE,
        Self::GBRA_12LE,
        Self::GBRA_12BE,
        Self::RGBP,
        Self::BGRP,
    ];

    /// Whether the format carries alpha (upscaled apart, bilinearly).
    pub fn has_alpha(self) -> bool {
        self.alpha_depth > 0
    }

    /// The largest sample of R, G and B.
    pub fn max(self) -> u32 {
        (1u32 << self.depth) - 1
    }

    /// A sample of R, G or B as a value of the network's 0–255 scale.
    #[inline(always)]
    pub fn to_unit(self, v: u32) -> f32 {
        sample_f32(v) * self.unit_scale()
    }

    /// A value of the network's 0–255 scale as a sample of R, G or B (rounded half to even,
    /// clamped).
    #[inline(always)]
    pub fn from_unit(self, x: f32) -> u32 {
        let max = self.max() as f32;
        round_even_small(clamp(x * self.sample_scale(), 0.0, max)) as i32 as u32
    }

    /// `255 / max`: at 16 bits exactly `1 / 257` rounded to f32, at 8 bits 1.
    fn unit_scale(self) -> f32 {
        255.0 / self.max() as f32
    }

    /// `max / 255`: at 16 bits 257, at 8 bits 1 (both exact).
    fn sample_scale(self) -> f32 {
        self.max() as f32 / 255.0
    }

    /// Checks that the format is one this module can read and write: a word and pixel step of
    /// the formats above, each channel inside its pixel and word, depths of 1 to 16 bits.
    pub fn check(self) -> Result<()> {
        let bad = |why: &str| {
            Err(Error::Input(format!(
                "unsupported RGB format {self:?}: {why}"
            )))
        };
        if with_store!(self, _S, _STEP => false, true) {
            return bad("no such word size and pixel step");
        }
        if !(1..=4).contains(&self.planes) {
            return bad("1 to 4 planes");
        }
        if !(1..=16).contains(&self.depth) || self.alpha_depth > 16 {
            return bad("1 to 16 bits a sample");
        }
        let bits = 8 * self.word.bytes() as u32;
        let n = if self.has_alpha() { 4 } else { 3 };
        for c in 0..n {
            let depth = if c == 3 { self.alpha_depth } else { self.depth };
            if self.plane[c] >= self.planes
                || (self.index[c] + 1) * self.word.bytes() > self.step
                || self.shift[c] + depth > bits
            {
                return bad("a channel outside its plane, pixel or word");
            }
        }
        // A planar format holds one channel a plane, one word a pixel.
        if self.planes > 1 {
            let mut count = [0; 4];
            for c in 0..n {
                count[self.plane[c]] += 1;
            }
            if self.step != self.word.bytes() || count[..self.planes].iter().any(|&k| k != 1) {
                return bad("planar: one channel a plane, one word a pixel");
            }
        }
        // Channels share a word only in 32-bit words, of one plane, whose bits they split;
        // bytes and 16-bit words hold one channel each.
        if bits == 32 {
            let (mut seen, mut overlap) = (0u32, false);
            for c in 0..n {
                let depth = if c == 3 { self.alpha_depth } else { self.depth };
                let m = (((1u64 << depth) - 1) << self.shift[c]) as u32;
                overlap |= seen & m != 0;
                seen |= m;
            }
            if self.planes != 1 || overlap {
                return bad("32-bit words: one plane, channels on separate bits");
            }
        } else {
            for a in 0..n {
                for b in 0..a {
                    if (self.plane[a], self.index[a]) == (self.plane[b], self.index[b]) {
                        return bad("two channels in one word");
                    }
                }
                if self.shift[a] != 0 {
                    return bad("a shifted sample in a byte or 16-bit word");
                }
            }
        }
        Ok(())
    }

    /// The channels (0–3) in plane `p`: their word index and shift.
    fn in_plane(self, p: usize) -> [Option<(usize, u32)>; 4] {
        let has = [true, true, true, self.has_alpha()];
        [0, 1, 2, 3]
            .map(|c| (has[c] && self.plane[c] == p).then_some((self.index[c], self.shift[c])))
    }
}

/// A sample (at most 16 bits) as f32, through `i32`: one instruction on baseline x86-64,
/// where `u32 as f32` is several.
#[inline(always)]
fn sample_f32(v: u32) -> f32 {
    v as i32 as f32
}

impl std::fmt::Debug for RgbFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A borrowed RGB frame of an [`RgbFormat`]: its planes (packed formats: the first) with their
/// strides in bytes.
#[derive(Clone, Copy, Debug)]
pub struct RgbRef<'a> {
    pub planes: [&'a [u8]; 4],
    pub strides: [usize; 4],
    pub width: usize,
    pub height: usize,
    pub format: RgbFormat,
}

/// A mutable RGB frame of an [`RgbFormat`].
#[derive(Debug)]
pub struct RgbMut<'a> {
    pub planes: [&'a mut [u8]; 4],
    pub strides: [usize; 4],
    pub width: usize,
    pub height: usize,
    pub format: RgbFormat,
}

/// A sample store: byte, or word of a size and byte order.
trait Store {
    const BYTES: usize;
    fn load(p: &[u8], i: usize) -> u32;
    fn store(p: &mut [u8], i: usize, v: u32);
}

struct B8;
struct W16<const BE: bool>;
struct W32<const BE: bool>;

impl Store for B8 {
    const BYTES: usize = 1;
    #[inline(always)]
    fn load(p: &[u8], i: usize) -> u32 {
        p[i] as u32
    }
    #[inline(always)]
    fn store(p: &mut [u8], i: usize, v: u32) {
        p[i] = v as u8;
    }
}

impl<const BE: bool> Store for W16<BE> {
    const BYTES: usize = 2;
    #[inline(always)]
    fn load(p: &[u8], i: usize) -> u32 {
        let w = [p[2 * i], p[2 * i + 1]];
        (if BE {
            u16::from_be_bytes(w)
        } else {
            u16::from_le_bytes(w)
        }) as u32
    }
    #[inline(always)]
    fn store(p: &mut [u8], i: usize, v: u32) {
        let v = v as u16;
        let w = if BE { v.to_be_bytes() } else { v.to_le_bytes() };
        p[2 * i..2 * i + 2].copy_from_slice(&w);
    }
}

impl<const BE: bool> Store for W32<BE> {
    const BYTES: usize = 4;
    #[inline(always)]
    fn load(p: &[u8], i: usize) -> u32 {
        let w = [p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]];
        if BE {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    }
    #[inline(always)]
    fn store(p: &mut [u8], i: usize, v: u32) {
        let w = if BE { v.to_be_bytes() } else { v.to_le_bytes() };
        p[4 * i..4 * i + 4].copy_from_slice(&w);
    }
}

impl RgbRef<'_> {
    fn check(&self) -> Result<()> {
        self.format.check()?;
        for p in 0..self.format.planes {
            check_geometry(
                "input",
                self.planes[p].len(),
                self.strides[p],
                self.width,
                self.height,
                self.format.step,
            )?;
        }
        Ok(())
    }
}

/// Unpacks a frame into interleaved RGB of `conv(sample)` (resized to the frame) and, for a
/// format with alpha, its alpha plane (samples as they are), rows in parallel on the current
/// thread pool.
fn unpack_with<T: Copy + Default + Send>(
    f: &RgbRef,
    conv: impl Fn(u32) -> T + Sync,
    out: &mut Vec<T>,
    alpha: &mut Vec<u16>,
) -> Result<()> {
    f.check()?;
    let w = f.width;
    out.resize(w * f.height * 3, T::default());
    alpha.resize(
        if f.format.has_alpha() {
            w * f.height
        } else {
            0
        },
        0,
    );
    let rows = out.par_chunks_mut(w * 3).enumerate();
    if f.format.has_alpha() {
        rows.zip(alpha.par_chunks_mut(w))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|((y, dst), da)| unpack_row_any(f, y, dst, Some(da), &conv));
    } else {
        rows.with_min_len(ROWS_PER_TASK)
            .for_each(|(y, dst)| unpack_row_any(f, y, dst, None, &conv));
    }
    Ok(())
}

fn unpack_row_any<T>(
    f: &RgbRef,
    y: usize,
    dst: &mut [T],
    alpha: Option<&mut [u16]>,
    conv: &impl Fn(u32) -> T,
) {
    let fm = f.format;
    let rows = [0, 1, 2, 3].map(|p| {
        if p < fm.planes {
            &f.planes[p][y * f.strides[p]..][..f.width * fm.step]
        } else {
            &[][..]
        }
    });
    // `check` has refused any other word and step.
    with_store!(fm, S, STEP => unpack_row::<S, STEP, _>(fm, rows, dst, alpha, conv), ())
}

/// One row of [`unpack_with`]: `rows` are the row's bytes in each plane, of `STEP`-byte
/// pixels of `S` words. Packed formats read every channel from each pixel in one pass;
/// planar ones (one channel a plane, in word 0: [`RgbFormat::check`]) a plane at a time.
#[inline(always)]
fn unpack_row<S: Store, const STEP: usize, T>(
    fm: RgbFormat,
    rows: [&[u8]; 4],
    dst: &mut [T],
    alpha: Option<&mut [u16]>,
    conv: &impl Fn(u32) -> T,
) {
    let mask = |bits: u32| (1u32 << bits) - 1;
    let (m, ma) = (mask(fm.depth), mask(fm.alpha_depth));
    if fm.planes == 1 {
        let ([ri, gi, bi, ai], [rs, gs, bs, ashift]) = (fm.index, fm.shift);
        let px = rows[0].chunks_exact(STEP).zip(dst.chunks_exact_mut(3));
        // A macro, not a closure: a closure here is not inlined into the loops.
        macro_rules! rgb {
            ($p:expr, $o:expr) => {
                $o[0] = conv(S::load($p, ri) >> rs & m);
                $o[1] = conv(S::load($p, gi) >> gs & m);
                $o[2] = conv(S::load($p, bi) >> bs & m);
            };
        }
        match alpha {
            Some(alpha) => {
                for ((p, o), oa) in px.zip(alpha) {
                    rgb!(p, o);
                    *oa = (S::load(p, ai) >> ashift & ma) as u16;
                }
            }
            None => {
                for (p, o) in px {
                    rgb!(p, o);
                }
            }
        }
        return;
    }
    for c in 0..3 {
        let px = rows[fm.plane[c]]
            .chunks_exact(STEP)
            .zip(dst.chunks_exact_mut(3));
        for (p, o) in px {
            o[c] = conv(S::load(p, 0) & m);
        }
    }
    if let Some(alpha) = alpha {
        for (p, oa) in rows[fm.plane[3]].chunks_exact(STEP).zip(alpha) {
            *oa = (S::load(p, 0) & ma) as u16;
        }
    }
}

/// Unpacks a frame into an RGB image (0–255, [`RgbFormat::to_unit`]) and, with alpha, its
/// alpha plane, reusing their memory.
pub fn unpack_into(f: &RgbRef, img: &mut super::frame::Image, alpha: &mut Vec<u16>) -> Result<()> {
    let k = f.format.unit_scale();
    // `RgbFormat::to_unit`, its scale computed once.
    unpack_with(f, |v| sample_f32(v) * k, &mut img.data, alpha)?;
    (img.width, img.height) = (f.width, f.height);
    Ok(())
}

/// Unpacks a frame into interleaved RGB bytes (each sample's value rounded; the CUDA path's
/// input until it took f32 values) and, with alpha, its alpha plane.
pub fn unpack_rgb8_into(f: &RgbRef, out: &mut Vec<u8>, alpha: &mut Vec<u16>) -> Result<()> {
    let k = f.format.unit_scale();
    unpack_with(f, |v| to_u8(sample_f32(v) * k), out, alpha)
}

/// Rectangle `r` of the frame from `src`, each value `conv`erted to a sample, alpha (for a
/// format with alpha) from the frame-sized plane `alpha`: plane by plane, rows in parallel.
fn pack_with<T: Sync>(
    src: Window<T>,
    r: Rect,
    alpha: &[u16],
    f: &mut RgbMut,
    conv: impl Fn(&T) -> u32 + Sync,
) -> Result<()> {
    let fm = f.format;
    fm.check()?;
    let alpha = fm.has_alpha().then_some(alpha);
    for p in 0..fm.planes {
        let chans = fm.in_plane(p);
        let mut plane = FrameMut {
            data: &mut *f.planes[p],
            stride: f.strides[p],
            width: f.width,
            height: f.height,
            layout: fm,
        };
        rect_rows(&mut plane, fm.step, src, r, alpha, |row, line, a| {
            let conv = &conv;
            with_store!(fm, S, STEP => pack_row::<S, STEP, _>(chans, row, line, a, conv), ())
        })?;
    }
    Ok(())
}

/// One row of [`pack_with`] in one plane of `STEP`-byte pixels of `S` words: the channels
/// `chans` (their word index and shift; `None`: in another plane) — for 32-bit words
/// (packed 10-bit RGB: one word a pixel) composed into the word and stored whole, its unused
/// bits 0; for packed 16-bit words (64-bit RGBA) each stored in its word; for a plane of a
/// planar format its one channel, in word 0 ([`RgbFormat::check`]).
#[inline(always)]
fn pack_row<S: Store, const STEP: usize, T>(
    chans: [Option<(usize, u32)>; 4],
    row: &mut [u8],
    line: &[T],
    alpha: Option<&[u16]>,
    conv: &impl Fn(&T) -> u32,
) {
    let px = row.chunks_exact_mut(STEP).zip(line.chunks_exact(3));
    match (chans, alpha) {
        _ if S::BYTES == 4 => {
            let shift = chans.map(|c| c.map_or(0, |(_, s)| s));
            for (x, (p, s)) in px.enumerate() {
                let rgb =
                    conv(&s[0]) << shift[0] | conv(&s[1]) << shift[1] | conv(&s[2]) << shift[2];
                let a = alpha.map_or(0, |a| (a[x] as u32) << shift[3]);
                S::store(p, 0, rgb | a);
            }
        }
        ([Some((r, _)), Some((g, _)), Some((b, _)), Some((ai, _))], Some(alpha)) => {
            for ((p, s), &a) in px.zip(alpha) {
                S::store(p, r, conv(&s[0]));
                S::store(p, g, conv(&s[1]));
                S::store(p, b, conv(&s[2]));
                S::store(p, ai, a as u32);
            }
        }
        ([Some((r, _)), Some((g, _)), Some((b, _)), _], _) => {
            for (p, s) in px {
                S::store(p, r, conv(&s[0]));
                S::store(p, g, conv(&s[1]));
                S::store(p, b, conv(&s[2]));
            }
        }
        ([.., Some(_)], Some(alpha)) => {
            for (p, &a) in row.chunks_exact_mut(STEP).zip(alpha) {
                S::store(p, 0, a as u32);
            }
        }
        _ => {
            if let Some(c) = chans[..3].iter().position(Option::is_some) {
                for (p, s) in px {
                    S::store(p, 0, conv(&s[c]));
                }
            }
        }
    }
}

/// Writes rectangle `r` of the frame from a window holding it (values in 0–255, each written
/// [`RgbFormat::from_unit`]) and, for a format with alpha, alpha from the frame-sized plane
/// `alpha`: the engine writes its tiles' cores this way.
pub fn pack_rect(src: Window<f32>, r: Rect, alpha: &[u16], f: &mut RgbMut) -> Result<()> {
    let (k, max) = (f.format.sample_scale(), f.format.max() as f32);
    // `RgbFormat::from_unit`, its scale computed once.
    pack_with(src, r, alpha, f, |&v| {
        round_even_small(clamp(v * k, 0.0, max)) as i32 as u32
    })
}

/// Writes the frame from interleaved RGB bytes of its size (each byte's value as a sample;
/// the CUDA path's output until it gave f32 values) and, with alpha, the alpha plane.
pub fn pack_rgb8(rgb: &[u8], alpha: &[u16], f: &mut RgbMut) -> Result<()> {
    let (w, h) = (f.width, f.height);
    if rgb.len() != w * h * 3 {
        return Err(Error::Input(format!(
            "output frame is {w}x{h}, image has {} bytes",
            rgb.len()
        )));
    }
    let fm = f.format;
    let samples: [u32; 256] = std::array::from_fn(|v| fm.from_unit(v as f32));
    pack_with(
        Window::whole(rgb, w, h),
        Rect::whole(w, h),
        alpha,
        f,
        |&v| samples[v as usize],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::frame::Image;
    use crate::engine::random::Rng;

    /// A frame of random valid samples (unused bits 0) of `fm`, each plane `pad` bytes wider
    /// than its rows, the padding 0xEE.
    fn random_frame(
        fm: RgbFormat,
        w: usize,
        h: usize,
        pad: usize,
        seed: u64,
    ) -> (Vec<Vec<u8>>, usize) {
        let stride = w * fm.step + pad;
        let mut rng = Rng::new(seed);
        let mut planes = vec![vec![0xEEu8; stride * h]; fm.planes];
        for p in 0..fm.planes {
            let chans = fm.in_plane(p);
            for y in 0..h {
                for x in 0..w {
                    let mut words = [0u32; 4];
                    for (c, ch) in chans.iter().enumerate() {
                        if let Some((i, shift)) = ch {
                            let bits = if c == 3 { fm.alpha_depth } else { fm.depth };
                            let v = rng.bytes(4);
                            let v = u32::from_le_bytes(v.try_into().unwrap()) & ((1 << bits) - 1);
                            words[*i] |= v << shift;
                        }
                    }
                    let px = &mut planes[p][y * stride + x * fm.step..][..fm.step];
                    for (i, &v) in words[..fm.step / fm.word.bytes()].iter().enumerate() {
                        with_store!(fm, S, _STEP => S::store(px, i, v), ());
                    }
                }
            }
        }
        (planes, stride)
    }

    fn rgb_ref(
        planes: &[Vec<u8>],
        stride: usize,
        w: usize,
        h: usize,
        format: RgbFormat,
    ) -> RgbRef<'_> {
        let planes = [0, 1, 2, 3].map(|p| planes.get(p).map_or(&[][..], |v| &v[..]));
        RgbRef {
            planes,
            strides: [stride; 4],
            width: w,
            height: h,
            format,
        }
    }

    fn rgb_mut(
        planes: &mut [Vec<u8>],
        stride: usize,
        w: usize,
        h: usize,
        format: RgbFormat,
    ) -> RgbMut<'_> {
        let mut it = planes.iter_mut().map(|p| &mut p[..]);
        RgbMut {
            planes: [(); 4].map(|_| it.next().unwrap_or_default()),
            strides: [stride; 4],
            width: w,
            height: h,
            format,
        }
    }

    /// Every sample of every format reads as its value on the 0–255 scale and is written back
    /// exactly; stride padding is left alone.
    #[test]
    fn samples_round_trip_exactly_in_every_format() {
        let (w, h) = (7, 37);
        for (k, fm) in RgbFormat::ALL.into_iter().enumerate() {
            let (data, stride) = random_frame(fm, w, h, 6, k as u64);
            let f = rgb_ref(&data, stride, w, h, fm);
            let (mut img, mut alpha) = (Image::default(), Vec::new());
            unpack_into(&f, &mut img, &mut alpha).unwrap();
            assert_eq!(alpha.len(), if fm.has_alpha() { w * h } else { 0 });
            assert!(
                img.data.iter().all(|&v| (0.0..=255.0).contains(&v)),
                "{fm:?}"
            );
            let mut out = vec![vec![0xEEu8; data[0].len()]; fm.planes];
            let mut fo = rgb_mut(&mut out, stride, w, h, fm);
            let whole = Window::whole(&img.data[..], w, h);
            pack_rect(whole, Rect::whole(w, h), &alpha, &mut fo).unwrap();
            assert_eq!(out, data, "{fm:?}");
        }
    }

    /// Samples sit where GStreamer puts them: pixels written by GStreamer 1.22's
    /// `videoconvert` from ARGB 8-bit red, green and half-transparent blue (0x80 alpha),
    /// and 8-bit content in the planar and 64-bit layouts.
    #[test]
    fn samples_sit_where_gstreamer_puts_them() {
        let cases: [(RgbFormat, [[u8; 4]; 3]); 3] = [
            (
                RgbFormat::BGR10A2_LE,
                [
                    [0x00, 0x00, 0xf0, 0xff],
                    [0x00, 0xfc, 0x0f, 0xc0],
                    [0xff, 0x03, 0x00, 0x80],
                ],
            ),
            (
                RgbFormat::RGB10A2_LE,
                [
                    [0xff, 0x03, 0x00, 0xc0],
                    [0x00, 0xfc, 0x0f, 0xc0],
                    [0x00, 0x00, 0xf0, 0xbf],
                ],
            ),
            (
                RgbFormat::R210,
                [
                    [0x3f, 0xf0, 0x00, 0x00],
                    [0x00, 0x0f, 0xfc, 0x00],
                    [0x00, 0x00, 0x03, 0xff],
                ],
            ),
        ];
        for (fm, px) in cases {
            let data = vec![px.concat()];
            let f = rgb_ref(&data, 12, 3, 1, fm);
            let (mut img, mut alpha) = (Image::default(), Vec::new());
            unpack_into(&f, &mut img, &mut alpha).unwrap();
            let want = [255.0, 0.0, 0.0, 0.0, 255.0, 0.0, 0.0, 0.0, 255.0];
            assert_eq!(img.data, want, "{fm:?}");
            if fm.has_alpha() {
                assert_eq!(alpha, [3, 3, 2], "{fm:?}");
            }
        }
        // GBRA: G, B, R, A planes; RGBP and BGRP: their names' order; ARGB64_BE: A R G B
        // big-endian words.
        let (r, g, b, a) = (10u8, 20u8, 30u8, 40u8);
        let cases: [(RgbFormat, Vec<Vec<u8>>); 4] = [
            (RgbFormat::GBRA, vec![vec![g], vec![b], vec![r], vec![a]]),
            (RgbFormat::RGBP, vec![vec![r], vec![g], vec![b]]),
            (RgbFormat::BGRP, vec![vec![b], vec![g], vec![r]]),
            (
                RgbFormat::ARGB64_BE,
                vec![
                    [a, r, g, b]
                        .iter()
                        .flat_map(|&v| (v as u16 * 257).to_be_bytes())
                        .collect(),
                ],
            ),
        ];
        for (fm, planes) in cases {
            let f = rgb_ref(&planes, fm.step, 1, 1, fm);
            let (mut img, mut alpha) = (Image::default(), Vec::new());
            unpack_into(&f, &mut img, &mut alpha).unwrap();
            assert_eq!(img.data, [r, g, b].map(f32::from), "{fm:?}");
            if fm.has_alpha() {
                let a = if fm.depth == 16 {
                    a as u16 * 257
                } else {
                    a as u16
                };
                assert_eq!(alpha, [a], "{fm:?}");
            }
        }
    }

    /// The scales: 8-bit levels map exactly at every depth that holds them by bit
    /// replication's 8-bit ends, 16-bit samples are `v / 257`, and every sample survives
    /// `from_unit(to_unit(v))`.
    #[test]
    fn scales_are_exact_where_they_must_be() {
        let f16 = RgbFormat::RGBA64_LE;
        for v in 0..=255u32 {
            assert_eq!(f16.to_unit(v * 257), v as f32);
            assert_eq!(f16.from_unit(v as f32), v * 257);
            assert_eq!(RgbFormat::GBR.to_unit(v), v as f32);
            assert_eq!(RgbFormat::GBR.from_unit(v as f32), v);
        }
        // 100.5 · 257 = 25828.5: half to even.
        assert_eq!(f16.from_unit(100.5), 25828);
        assert_eq!(f16.from_unit(-3.0), 0);
        assert_eq!(f16.from_unit(300.0), 65535);
        assert_eq!(f16.from_unit(f32::NAN), 0);
        for fm in [
            RgbFormat::GBR_10LE,
            RgbFormat::GBR_12BE,
            RgbFormat::R210,
            f16,
        ] {
            for v in 0..=fm.max() {
                assert_eq!(fm.from_unit(fm.to_unit(v)), v, "{fm:?}");
            }
            assert_eq!(fm.to_unit(fm.max()), 255.0);
            assert_eq!(fm.from_unit(255.0), fm.max());
        }
        assert_eq!(RgbFormat::GBR_10LE.from_unit(128.0), 514); // 513.5 → even
    }

    /// The CUDA path's 8-bit round trip: bytes written as samples read back as the same bytes
    /// in every format; alpha passes as it is.
    #[test]
    fn eight_bit_path_round_trips() {
        let (w, h) = (3, 2);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 40 + 3) as u8).collect();
        for fm in RgbFormat::ALL {
            let alpha: Vec<u16> = (0..w * h)
                .map(|i| (i as u16 * 9000) & ((1 << fm.alpha_depth.max(1)) - 1) as u16)
                .collect();
            let mut out = vec![vec![0u8; w * fm.step * h]; fm.planes];
            let mut fo = rgb_mut(&mut out, w * fm.step, w, h, fm);
            pack_rgb8(&rgb, &alpha, &mut fo).unwrap();
            let f = rgb_ref(&out, w * fm.step, w, h, fm);
            let (mut back, mut back_alpha) = (Vec::new(), Vec::new());
            unpack_rgb8_into(&f, &mut back, &mut back_alpha).unwrap();
            assert_eq!(back, rgb, "{fm:?}");
            if fm.has_alpha() {
                assert_eq!(back_alpha, alpha, "{fm:?}");
            }
        }
    }

    /// Every format above passes [`RgbFormat::check`]; descriptions the row code cannot
    /// serve are refused with the reason, before any row is touched.
    #[test]
    fn odd_descriptions_are_refused() {
        for fm in RgbFormat::ALL {
            fm.check().unwrap();
        }
        let bad = [
            (
                RgbFormat {
                    step: 3,
                    ..RgbFormat::GBR
                },
                "word size and pixel step",
            ),
            (
                RgbFormat {
                    planes: 5,
                    ..RgbFormat::GBR
                },
                "1 to 4 planes",
            ),
            (
                RgbFormat {
                    depth: 17,
                    ..RgbFormat::GBR_12LE
                },
                "1 to 16 bits",
            ),
            (
                RgbFormat {
                    plane: [0, 1, 3, 3],
                    ..RgbFormat::GBR
                },
                "outside",
            ),
            (
                RgbFormat {
                    index: [0, 1, 2, 4],
                    ..RgbFormat::ARGB64
                },
                "outside",
            ),
            (
                RgbFormat {
                    shift: [0, 10, 25, 30],
                    ..RgbFormat::R210
                },
                "outside",
            ),
            (
                RgbFormat {
                    shift: [0, 10, 5, 30],
                    ..RgbFormat::BGR10A2_LE
                },
                "separate bits",
            ),
            (
                RgbFormat {
                    planes: 2,
                    ..RgbFormat::R210
                },
                "planar: one channel a plane",
            ),
            (
                RgbFormat {
                    planes: 3,
                    plane: [0, 1, 2, 3],
                    ..RgbFormat::R210
                },
                "32-bit words: one plane",
            ),
            (
                RgbFormat {
                    plane: [2, 0, 0, 3],
                    ..RgbFormat::GBR
                },
                "planar: one channel a plane",
            ),
            (
                RgbFormat {
                    index: [0, 0, 2, 3],
                    ..RgbFormat::RGBA64_LE
                },
                "two channels",
            ),
            (
                RgbFormat {
                    shift: [2, 0, 0, 0],
                    ..RgbFormat::GBR_10LE
                },
                "shifted",
            ),
        ];
        for (fm, why) in bad {
            let e = fm.check().unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            let data = vec![vec![0u8; 64]; 4];
            let f = rgb_ref(&data, 16, 2, 2, fm);
            assert!(unpack_into(&f, &mut Image::default(), &mut Vec::new()).is_err());
            let mut out = vec![vec![0u8; 64]; 4];
            let mut fo = rgb_mut(&mut out, 16, 2, 2, fm);
            assert!(pack_rgb8(&[0; 12], &[0; 4], &mut fo).is_err());
        }
    }

    /// Short planes, short alpha planes and windows that miss the rectangle are errors.
    #[test]
    fn bad_geometry_is_an_error() {
        let data = vec![vec![0u8; 60]];
        let f = rgb_ref(&data, 32, 4, 2, RgbFormat::ARGB64);
        let e = unpack_into(&f, &mut Image::default(), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("expected at least 64"), "{e}");
        // A planar frame with a short third plane.
        let planes = vec![vec![0u8; 8], vec![0u8; 8], vec![0u8; 7]];
        let f = rgb_ref(&planes, 4, 4, 2, RgbFormat::GBR);
        assert!(unpack_into(&f, &mut Image::default(), &mut Vec::new()).is_err());
        let mut out = vec![vec![0u8; 64]];
        let mut fo = rgb_mut(&mut out, 32, 4, 2, RgbFormat::RGBA64_BE);
        let img = [0.0f32; 24];
        let whole = Window::whole(&img[..], 4, 2);
        let e = pack_rect(whole, Rect::whole(4, 2), &[0; 7], &mut fo).unwrap_err();
        assert!(e.to_string().contains("alpha plane has 7"), "{e}");
        let part = Window::whole(&img[..12], 4, 1);
        assert!(pack_rect(part, Rect::whole(4, 2), &[0; 8], &mut fo).is_err());
        assert!(pack_rgb8(&[0; 23], &[0; 8], &mut fo).is_err());
        // No alpha needed without an alpha channel.
        let mut out = vec![vec![0u8; 8]; 3];
        let mut fo = rgb_mut(&mut out, 4, 4, 2, RgbFormat::BGRP);
        pack_rect(whole, Rect::whole(4, 2), &[], &mut fo).unwrap();
    }
}
