//! Evaluation as the method page measures it: PSNR and SSIM on Y with shave = scale, on
//! 8-bit-rounded outputs; FAB per image (mean over patches in patch mode).

use anyhow::Result;
use gstadabm::engine::metrics::{psnr_y, ssim_y};
use gstadabm::engine::resize::imresize_bicubic;
use gstadabm::engine::{Engine, Image, Model, Options};
use serde_json::json;

use crate::data::Pair;

/// Scores of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub name: String,
    pub psnr: f64,
    pub ssim: f64,
    /// Feature average bit-width (0 for floating point and bicubic).
    pub fab: f64,
    /// BitOPs of the whole image (Σ over layers of MACs · b_w · b_a; 0 for bicubic).
    pub bitops: f64,
}

impl Score {
    pub fn to_json(&self) -> serde_json::Value {
        json!({"name": self.name, "psnr": self.psnr, "ssim": self.ssim, "fab": self.fab,
               "bitops": self.bitops})
    }
}

/// Mean of the scores (name "mean").
pub fn mean(scores: &[Score]) -> Score {
    let n = scores.len().max(1) as f64;
    Score {
        name: "mean".into(),
        psnr: scores.iter().map(|s| s.psnr).sum::<f64>() / n,
        ssim: scores.iter().map(|s| s.ssim).sum::<f64>() / n,
        fab: scores.iter().map(|s| s.fab).sum::<f64>() / n,
        bitops: scores.iter().map(|s| s.bitops).sum::<f64>() / n,
    }
}

/// Scores an 8-bit output against the pair's HR image.
pub fn score(p: &Pair, sr: &[u8], fab: f64, bitops: f64) -> Score {
    let (w, h) = (p.w * p.scale, p.h * p.scale);
    Score {
        name: p.name.clone(),
        psnr: psnr_y(sr, &p.hr, w, h, p.scale),
        ssim: ssim_y(sr, &p.hr, w, h, p.scale),
        fab,
        bitops,
    }
}

/// Upscales `p.lr` with `engine`: whole image (`patch` = 0) or independent `patch x patch` LR
/// patches with step `patch` (each with its own b_I, zero padding at its borders, the last
/// row and column of patches smaller), as the reference's patch inference. Returns the 8-bit
/// output, the FAB (mean over patches) and the BitOPs of the image.
pub fn upscale(
    engine: &Engine,
    model: &Model,
    p: &Pair,
    opts: &Options,
    patch: usize,
) -> Result<(Vec<u8>, f64, f64)> {
    let lr = Image::from_rgb8(p.w, p.h, &p.lr);
    if patch == 0 || (p.w <= patch && p.h <= patch) {
        let (sr, stats) = engine.upscale(&lr, opts)?;
        let bitops = model.bitops_per_lr_pixel(&stats.layer_bits) * (p.w * p.h) as f64;
        return Ok((sr.to_rgb8(), stats.fab as f64, bitops));
    }
    let s = p.scale;
    let (ow, oh) = (p.w * s, p.h * s);
    let mut out = vec![0u8; ow * oh * 3];
    let (mut fab, mut n, mut bitops) = (0.0f64, 0usize, 0.0f64);
    for y0 in (0..p.h).step_by(patch) {
        for x0 in (0..p.w).step_by(patch) {
            let (pw, ph) = (patch.min(p.w - x0), patch.min(p.h - y0));
            let mut img = Image::new(pw, ph);
            for y in 0..ph {
                let src = &lr.data[((y0 + y) * p.w + x0) * 3..][..pw * 3];
                img.data[y * pw * 3..(y + 1) * pw * 3].copy_from_slice(src);
            }
            let (sr, stats) = engine.upscale(&img, opts)?;
            let rgb = sr.to_rgb8();
            for y in 0..ph * s {
                let dst = ((y0 * s + y) * ow + x0 * s) * 3;
                out[dst..dst + pw * s * 3].copy_from_slice(&rgb[y * pw * s * 3..][..pw * s * 3]);
            }
            fab += stats.fab as f64;
            bitops += model.bitops_per_lr_pixel(&stats.layer_bits) * (pw * ph) as f64;
            n += 1;
        }
    }
    Ok((out, fab / n as f64, bitops))
}

/// Scores `model` on every pair.
pub fn evaluate(model: &Model, pairs: &[Pair], opts: &Options, patch: usize) -> Result<Vec<Score>> {
    let engine = Engine::new(model, 0)?;
    pairs
        .iter()
        .map(|p| {
            let (sr, fab, bitops) = upscale(&engine, model, p, opts, patch)?;
            Ok(score(p, &sr, fab, bitops))
        })
        .collect()
}

/// Scores MATLAB-style bicubic upscaling of the LR images.
pub fn evaluate_bicubic(pairs: &[Pair]) -> Vec<Score> {
    pairs
        .iter()
        .map(|p| {
            let (sr, _, _) = imresize_bicubic(&p.lr, p.w, p.h, 3, p.scale as f64);
            score(p, &sr, 0.0, 0.0)
        })
        .collect()
}

/// Floating-point evaluation options (no adaptation).
pub fn float_options() -> Options {
    Options {
        adaptive: false,
        ..Options::default()
    }
}
