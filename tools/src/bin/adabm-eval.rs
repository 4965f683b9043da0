//! adabm-eval: PSNR / SSIM (Y, shave = scale, 8-bit outputs), FAB, BitOPs and speed of a model, or
//! PSNR / SSIM of bicubic upscaling, on benchmark sets in the EDSR layout.

use std::path::PathBuf;
use std::time::Instant;

use adabm_tools::Args;
use adabm_tools::data;
use adabm_tools::eval::{self, Score};
use anyhow::{Context, Result, bail};
use gstadabm::engine::{Engine, Model, Options};
use serde_json::json;

const USAGE: &str = "\
adabm-eval [--model FILE] [--bicubic] [options]

  --model FILE      model file to evaluate (floating point or quantized)
  --bicubic         also score MATLAB-style bicubic upscaling (alone when --model is absent)
  --scale S         scale of the bicubic baseline / check of the model's scale (default: model's, else 2)
  --sets DIRS       comma-separated benchmark folders (HR/ and optional LR_bicubic/X{s}/; LR is
                    made from HR when absent), or folders of HR images (PNG, BMP, JPEG; a
                    validation set) (default ../shared/data/test/{Set5,Set14,B100})
  --patch N         evaluate on independent N x N LR patches, step N, each with its own b_I (the
                    reference's patch mode uses 96); 0 = whole images (default 0)
  --no-adaptive     b_I = 0 for every image (quantized models)
  --base-bits N     override the model's base activation bits
  --per-image       print every image, not only the means
  --json FILE       write per-image and mean PSNR, SSIM and FAB
  --threads N       worker threads (default: all cores)

Prints per set the mean PSNR / SSIM (Y, shave = scale), FAB, GBitOPs per image and the speed:
ms of upscaling per LR megapixel (wall time over the set after one warm-up image; 8-bit
output included, scoring not).";

fn main() -> Result<()> {
    let a = Args::parse(&["bicubic", "no-adaptive", "per-image", "help"])?;
    if a.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    a.reject_unknown(&[
        "model",
        "bicubic",
        "scale",
        "sets",
        "patch",
        "no-adaptive",
        "base-bits",
        "per-image",
        "json",
        "threads",
        "help",
    ])?;
    a.reject_positional()?;
    let model = match a.get("model") {
        Some(p) => Some(Model::load(p).with_context(|| format!("--model {p}"))?),
        None => None,
    };
    let bicubic = a.flag("bicubic") || model.is_none();
    let scale: usize = match (&model, a.get("scale")) {
        (Some(m), None) => m.config.scale as usize,
        (Some(m), Some(s)) if s.parse::<u32>().ok() != Some(m.config.scale) => {
            bail!("--scale {s} but the model is x{}", m.config.scale)
        }
        _ => a.num("scale", 2)?,
    };
    if !(2..=4).contains(&scale) {
        bail!("--scale must be 2, 3 or 4");
    }
    let patch: usize = a.num("patch", 0)?;
    let base_bits = match a.get("base-bits") {
        None => None,
        Some(_) => Some(a.num::<u8>("base-bits", 0)?),
    };
    let opts = Options {
        adaptive: !a.flag("no-adaptive"),
        base_bits,
        ..Options::default()
    };
    let threads: usize = a.num("threads", 0)?;
    let sets: Vec<PathBuf> = match a.get("sets") {
        Some(s) => s.split(',').map(PathBuf::from).collect(),
        None => ["Set5", "Set14", "B100"]
            .iter()
            .map(|n| PathBuf::from("../shared/data/test").join(n))
            .collect(),
    };
    let engine = model
        .as_ref()
        .map(|m| Engine::new(m, threads))
        .transpose()?;
    let mut out_sets = Vec::new();
    println!(
        "{:<10} {:>6} {:>9} {:>7} {:>5} {:>9} {:>8} {:>9} {:>7}",
        "set", "images", "PSNR", "SSIM", "FAB", "GBitOPs", "ms/MPix", "bicubic", "SSIM"
    );
    for dir in &sets {
        if !dir.is_dir() {
            bail!("benchmark folder {} not found", dir.display());
        }
        let set = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pairs = data::load_benchmark(dir, scale)?;
        // Speed: wall time of the upscaling (8-bit output included, scoring not) per LR
        // megapixel over the set, after the first image once as a warm-up.
        let (mut ms, mut lr_pixels) = (0.0f64, 0usize);
        let ours: Option<Vec<Score>> = match (&engine, &model) {
            (Some(e), Some(m)) => {
                if let Some(p) = pairs.first() {
                    eval::upscale(e, m, p, &opts, patch)?;
                }
                Some(
                    pairs
                        .iter()
                        .map(|p| {
                            let t = Instant::now();
                            let (sr, fab, bitops) = eval::upscale(e, m, p, &opts, patch)?;
                            ms += t.elapsed().as_secs_f64() * 1e3;
                            lr_pixels += p.w * p.h;
                            Ok(eval::score(p, &sr, fab, bitops))
                        })
                        .collect::<Result<_>>()?,
                )
            }
            _ => None,
        };
        let ms_per_mpix = ours.as_ref().map(|_| ms / lr_pixels.max(1) as f64 * 1e6);
        let bic = bicubic.then(|| eval::evaluate_bicubic(&pairs));
        if a.flag("per-image") {
            for (i, p) in pairs.iter().enumerate() {
                let o = ours.as_ref().map(|v| &v[i]);
                let b = bic.as_ref().map(|v| &v[i]);
                println!(
                    "  {:<16} {:>9} {:>7} {:>5} {:>9} {:>7}",
                    p.name,
                    o.map_or("-".into(), |s| format!("{:.3}", s.psnr)),
                    o.map_or("-".into(), |s| format!("{:.4}", s.ssim)),
                    o.map_or("-".into(), |s| format!("{:.2}", s.fab)),
                    b.map_or("-".into(), |s| format!("{:.3}", s.psnr)),
                    b.map_or("-".into(), |s| format!("{:.4}", s.ssim)),
                );
            }
        }
        let om = ours.as_deref().map(eval::mean);
        let bm = bic.as_deref().map(eval::mean);
        println!(
            "{:<10} {:>6} {:>9} {:>7} {:>5} {:>9} {:>8} {:>9} {:>7}",
            set,
            pairs.len(),
            om.as_ref().map_or("-".into(), |s| format!("{:.3}", s.psnr)),
            om.as_ref().map_or("-".into(), |s| format!("{:.4}", s.ssim)),
            om.as_ref().map_or("-".into(), |s| format!("{:.2}", s.fab)),
            om.as_ref()
                .map_or("-".into(), |s| format!("{:.1}", s.bitops / 1e9)),
            ms_per_mpix.map_or("-".into(), |v| format!("{v:.0}")),
            bm.as_ref().map_or("-".into(), |s| format!("{:.3}", s.psnr)),
            bm.as_ref().map_or("-".into(), |s| format!("{:.4}", s.ssim)),
        );
        out_sets.push(json!({
            "set": set,
            "path": dir.display().to_string(),
            "model": ours.as_ref().map(|v| json!({
                "images": v.iter().map(Score::to_json).collect::<Vec<_>>(),
                "mean": om.as_ref().map(Score::to_json),
                "ms_per_lr_mpix": ms_per_mpix,
            })),
            "bicubic": bic.as_ref().map(|v| json!({
                "images": v.iter().map(Score::to_json).collect::<Vec<_>>(),
                "mean": bm.as_ref().map(Score::to_json),
            })),
        }));
    }
    if let Some(path) = a.get("json") {
        let doc = json!({
            "model": a.get("model"),
            "scale": scale,
            "patch": patch,
            "adaptive": opts.adaptive,
            "base_bits": opts.base_bits,
            "n_params": model.as_ref().map(|m| m.n_params()),
            "macs_per_lr_pixel": model.as_ref().map(|m| m.macs_per_lr_pixel()),
            "sets": out_sets,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("write {path}"))?;
    }
    Ok(())
}
