//! Image sets: training pairs (HR and its bicubic LR) and benchmark sets in the EDSR layout
//! (`HR/`, `LR_bicubic/X{s}/{stem}x{s}.png`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gstadabm::engine::resize::imresize_bicubic;
use rayon::prelude::*;

use crate::{read_image, read_png};

/// An HR image (mod-cropped to the scale) and its LR image, both 8-bit RGB.
#[derive(Clone, Debug)]
pub struct Pair {
    pub name: String,
    pub scale: usize,
    /// LR size; HR is `scale` times larger.
    pub w: usize,
    pub h: usize,
    pub hr: Vec<u8>,
    pub lr: Vec<u8>,
}

/// PNG files under `dir`, recursively, sorted by path.
pub fn list_pngs(dir: &Path) -> Result<Vec<PathBuf>> {
    list_images(dir, &["png"])
}

/// Image files (PNG, BMP, JPEG) under `dir`, recursively, sorted by path.
pub fn list_training_images(dir: &Path) -> Result<Vec<PathBuf>> {
    list_images(dir, &["png", "bmp", "jpg", "jpeg"])
}

fn list_images(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))?;
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| {
                exts.iter()
                    .any(|e| x.eq_ignore_ascii_case(std::ffi::OsStr::new(e)))
            }) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Crops an interleaved RGB image to `w x h` (top-left).
pub fn crop_rgb(rgb: &[u8], width: usize, w: usize, h: usize) -> Vec<u8> {
    (0..h)
        .flat_map(|y| rgb[y * width * 3..(y * width + w) * 3].iter().copied())
        .collect()
}

/// MATLAB-style bicubic LR of an HR image, mod-cropped to the scale first.
pub fn make_pair(name: String, hr: &[u8], width: usize, height: usize, s: usize) -> Result<Pair> {
    let (w, h) = (width / s, height / s);
    if w == 0 || h == 0 {
        bail!("{name}: {width}x{height} is smaller than the scale {s}");
    }
    let hr = crop_rgb(hr, width, w * s, h * s);
    let (lr, lw, lh) = imresize_bicubic(&hr, w * s, h * s, 3, 1.0 / s as f64);
    debug_assert_eq!((lw, lh), (w, h));
    Ok(Pair {
        name,
        scale: s,
        w,
        h,
        hr,
        lr,
    })
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Loads every PNG, BMP and JPEG under `dirs` as a training pair at scale `s` (LR made by
/// bicubic).
pub fn load_training(dirs: &[PathBuf], s: usize) -> Result<Vec<Pair>> {
    let mut files = Vec::new();
    for d in dirs {
        let f = list_training_images(d)?;
        if f.is_empty() {
            bail!("no PNG, BMP or JPEG images under {}", d.display());
        }
        files.extend(f);
    }
    files
        .par_iter()
        .map(|p| {
            let img = read_image(p)?;
            make_pair(
                p.display().to_string(),
                &img.to_rgb8(),
                img.width,
                img.height,
                s,
            )
        })
        .collect()
}

/// The calibration / fine-tuning images of the tools' `--data DIRS [--lr]`: LR images as they
/// are (`lr`), or HR images degraded to LR at scale `s` by [`load_training`].
pub fn load_calibration(dirs: &[PathBuf], s: usize, lr: bool) -> Result<Vec<Pair>> {
    if !lr {
        return load_training(dirs, s);
    }
    let mut v = Vec::new();
    for d in dirs {
        for p in list_training_images(d)? {
            let img = read_image(&p)?;
            v.push(Pair {
                name: p.display().to_string(),
                scale: s,
                w: img.width,
                h: img.height,
                hr: Vec::new(),
                lr: img.to_rgb8(),
            });
        }
    }
    Ok(v)
}

/// A benchmark set: `root/HR/*.png` (or BMP, JPEG: a folder of training images serves as a
/// validation set), with `root/LR_bicubic/X{s}/{stem}x{s}.png` when present (otherwise the LR
/// is made from the mod-cropped HR with our bicubic).
pub fn load_benchmark(root: &Path, s: usize) -> Result<Vec<Pair>> {
    let hr_dir = root.join("HR");
    let dir = if hr_dir.is_dir() {
        hr_dir
    } else {
        root.to_path_buf()
    };
    let files = list_training_images(&dir)?;
    if files.is_empty() {
        bail!("no images (PNG, BMP, JPEG) in {}", dir.display());
    }
    files
        .par_iter()
        .map(|p| {
            let name = stem(p);
            let img = read_image(p)?;
            let lr_path = root.join(format!("LR_bicubic/X{s}/{name}x{s}.png"));
            if lr_path.is_file() {
                let lr = read_png(&lr_path)?;
                let (w, h) = (lr.width, lr.height);
                if img.width < w * s || img.height < h * s {
                    bail!(
                        "{}: {}x{} LR does not fit the {}x{} HR at x{s}",
                        lr_path.display(),
                        w,
                        h,
                        img.width,
                        img.height
                    );
                }
                Ok(Pair {
                    name,
                    scale: s,
                    w,
                    h,
                    hr: crop_rgb(&img.to_rgb8(), img.width, w * s, h * s),
                    lr: lr.to_rgb8(),
                })
            } else {
                make_pair(name, &img.to_rgb8(), img.width, img.height, s)
            }
        })
        .collect()
}
