//! Shared helpers of the adabm tools: argument parsing and PNG input/output.

pub mod calib;
pub mod convert;
pub mod data;
pub mod eval;
pub mod finetune;
pub mod nn;
pub mod plot;
pub mod qgrad;
pub mod torch;

use std::path::Path;

use anyhow::{Context, Result, bail};
use gstadabm::engine::Image;

/// For the training tools, which allocate and free maps of tens of MB on every iteration:
/// glibc returns allocations above its mmap threshold (adaptive, at most 32 MiB) to the
/// kernel when they are freed, so every iteration pays the page faults of fresh memory again
/// (about 5% of a fine-tuning iteration). This keeps freed memory in the heap for reuse
/// (glibc only; elsewhere nothing changes). Call it first thing in `main`.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_MAX: i32 = -4;
        // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// Minimal `--key value` / `--flag` argument parser with helpful errors.
pub struct Args {
    pairs: Vec<(String, Option<String>)>,
    pub positional: Vec<String>,
}

impl Args {
    pub fn parse(flags: &[&str]) -> Result<Self> {
        Self::from_iter(std::env::args().skip(1), flags)
    }

    /// `flags` take no value; `--help` and `-h` are always the flag `help`.
    pub fn from_iter(it: impl IntoIterator<Item = String>, flags: &[&str]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut positional = Vec::new();
        let mut it = it.into_iter();
        while let Some(a) = it.next() {
            let a = if a == "-h" { "--help".to_string() } else { a };
            if let Some(k) = a.strip_prefix("--") {
                if flags.contains(&k) || k == "help" {
                    pairs.push((k.to_string(), None));
                } else {
                    let v = it.next().with_context(|| format!("--{k} needs a value"))?;
                    pairs.push((k.to_string(), Some(v)));
                }
            } else {
                positional.push(a);
            }
        }
        Ok(Self { pairs, positional })
    }

    pub fn flag(&self, k: &str) -> bool {
        self.pairs.iter().any(|(n, v)| n == k && v.is_none())
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{k} {v}: {e}")),
        }
    }

    /// Fails on a positional argument (for commands that take none: a misspelt option's
    /// value, or an option without its `--`, would otherwise be ignored).
    pub fn reject_positional(&self) -> Result<()> {
        if let Some(a) = self.positional.first() {
            bail!("unexpected argument '{a}' (options start with --; --help lists them)");
        }
        Ok(())
    }

    /// Fails on any key not in `known` (flags and options alike; `help` is always known).
    pub fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        for (k, _) in &self.pairs {
            if !known.contains(&k.as_str()) && k != "help" {
                bail!("unknown option --{k} (known: {})", known.join(", --"));
            }
        }
        Ok(())
    }
}

/// Reads a PNG, BMP or JPEG file as an RGB image (PNG with our decoder, the others with the
/// `image` crate).
pub fn read_image(path: &Path) -> Result<Image> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "png" {
        return read_png(path);
    }
    let img = image::open(path)
        .with_context(|| format!("decode {}", path.display()))?
        .to_rgb8();
    Ok(Image::from_rgb8(
        img.width() as usize,
        img.height() as usize,
        img.as_raw(),
    ))
}

/// The bytes of a file given on a command line; what is not a regular file (a device such as
/// `/dev/zero` would be read until memory runs out, a FIFO blocks) is refused with the reason.
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>> {
    gstadabm::engine::model::regular_file(path)
        .and_then(|()| std::fs::read(path))
        .with_context(|| format!("read {}", path.display()))
}

/// A PNG's samples and frame info: palette, low-bit grey and transparency expanded; 16-bit
/// samples (big-endian) kept, or cut to 8 bits with `strip_16`.
pub fn decode_png(path: &Path, strip_16: bool) -> Result<(png::OutputInfo, Vec<u8>)> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(if strip_16 {
        png::Transformations::EXPAND | png::Transformations::STRIP_16
    } else {
        png::Transformations::EXPAND
    });
    let mut reader = dec
        .read_info()
        .with_context(|| format!("decode {}", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("decode {}", path.display()))?;
    buf.truncate(info.buffer_size());
    Ok((info, buf))
}

/// Reads an 8-bit PNG (gray, gray+alpha, RGB or RGBA) as an RGB image.
pub fn read_png(path: &Path) -> Result<Image> {
    let (info, buf) = decode_png(path, true)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let px = &buf[..];
    let rgb: Vec<u8> = match info.color_type {
        png::ColorType::Grayscale => px.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => px
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        png::ColorType::Rgb => px.to_vec(),
        png::ColorType::Rgba => px
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Indexed => bail!("{}: indexed PNG was not expanded", path.display()),
    };
    Ok(Image::from_rgb8(w, h, &rgb))
}

/// Writes an RGB image as an 8-bit PNG (rounded, clamped).
pub fn write_png(path: &Path, img: &Image) -> Result<()> {
    write_png_rgb8(path, img.width, img.height, &img.to_rgb8())
}

/// An 8-bit RGB PNG of `width x height` interleaved RGB bytes.
pub fn write_png_rgb8(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    w.write_image_data(rgb)?;
    Ok(())
}
