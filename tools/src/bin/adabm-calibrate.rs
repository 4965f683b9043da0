//! adabm-calibrate: floating-point model + images → AdaBM quantized model (calibration only).

use std::path::PathBuf;
use std::time::Instant;

use adabm_tools::Args;
use adabm_tools::calib::{self, Sensitivity, Settings};
use adabm_tools::data;
use anyhow::{Context, Result, bail};
use gstadabm::engine::{ComplexityMetric, Model, QuantMode};
use serde_json::json;

const USAGE: &str = "\
adabm-calibrate --model FP.safetensors --out Q.safetensors [options]

  --data DIRS          comma-separated image folders (default ../shared/data/train)
  --lr                 the images are LR already (default: HR, degraded with our bicubic)
  --mode fq|non-fq     which layers are quantized (default fq)
  --w-bits B           weight bits of adaptive layers (default 4)
  --a-bits B           base activation bits (default 4)
  --crops N            random crops (default 100)
  --patch P            LR crop size (default 384/scale: 96 at x4, as the reference)
  --batch B            crops per batch (default 16)
  --ema-beta B         EMA of ranges and thresholds across batches (default 0.9)
  --img-percentile P   image thresholds at P / 100-P (default 10)
  --layer-percentile P b_L thresholds at P / 100-P (default 30)
  --fixed              no layer adaptation (every b_L = 0): the fixed-bit baseline
  --metric gradient|frequency|attention
                       image complexity metric for b_I, stored in the model (default gradient)
  --sensitivity std|error[:N]
                       how layers are ranked for b_L: std = the reference's std of the layer
                       input (default); error = measured, the growth of the output error when
                       the layer alone runs one bit lower, on the first N crops (default 16)
  --seed N             crop sampling seed (default 1)
  --report FILE        JSON with per-layer ranges, clips, sensitivities and the complexities";

fn main() -> Result<()> {
    let a = Args::parse(&["lr", "fixed", "help"])?;
    if a.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    a.reject_unknown(&[
        "model",
        "out",
        "data",
        "lr",
        "mode",
        "w-bits",
        "a-bits",
        "crops",
        "patch",
        "batch",
        "ema-beta",
        "img-percentile",
        "layer-percentile",
        "fixed",
        "seed",
        "metric",
        "sensitivity",
        "report",
        "help",
    ])?;
    a.reject_positional()?;
    let t0 = Instant::now();
    let mpath = a.get("model").context("--model FILE is required")?;
    let out = a.get("out").context("--out FILE is required")?;
    let fp = Model::load(mpath).with_context(|| format!("--model {mpath}"))?;
    let scale = fp.config.scale;
    let r = Settings::reference(scale);
    let s = Settings {
        mode: match a.get("mode").unwrap_or("fq") {
            "fq" => QuantMode::Fq,
            "non-fq" => QuantMode::NonFq,
            o => bail!("--mode must be fq or non-fq, found {o}"),
        },
        w_bits: a.num("w-bits", r.w_bits)?,
        a_bits: a.num("a-bits", r.a_bits)?,
        crops: a.num("crops", r.crops)?,
        patch: a.num("patch", r.patch)?,
        batch: a.num("batch", r.batch)?,
        ema_beta: a.num("ema-beta", r.ema_beta)?,
        img_percentile: a.num("img-percentile", r.img_percentile)?,
        layer_percentile: a.num("layer-percentile", r.layer_percentile)?,
        fixed: a.flag("fixed"),
        seed: a.num("seed", r.seed)?,
        metric: match a.get("metric").unwrap_or("gradient") {
            "gradient" => ComplexityMetric::Gradient,
            "frequency" => ComplexityMetric::Frequency,
            "attention" => ComplexityMetric::Attention,
            o => bail!("--metric must be gradient, frequency or attention, found {o}"),
        },
        sensitivity: match a.get("sensitivity").unwrap_or("std").split_once(':') {
            _ if a.get("sensitivity").is_none_or(|v| v == "std") => Sensitivity::Std,
            None if a.get("sensitivity") == Some("error") => Sensitivity::Error { crops: 16 },
            Some(("error", n)) => match n.parse::<usize>() {
                Ok(crops) if crops > 0 => Sensitivity::Error { crops },
                _ => bail!("--sensitivity error:N needs a positive number of crops, found {n}"),
            },
            _ => bail!(
                "--sensitivity must be std, error or error:N, found {}",
                a.get("sensitivity").unwrap_or_default()
            ),
        },
    };
    for (name, b) in [("--w-bits", s.w_bits), ("--a-bits", s.a_bits)] {
        if !(1..=8).contains(&b) {
            bail!("{name} must be in 1..=8, found {b}");
        }
    }
    if s.crops == 0 || s.batch == 0 || s.patch < 8 {
        bail!("--crops and --batch must be positive and --patch at least 8");
    }
    if !(0.0..1.0).contains(&s.ema_beta)
        || !(0.0..50.0).contains(&s.img_percentile)
        || !(0.0..50.0).contains(&s.layer_percentile)
    {
        bail!("--ema-beta must be in [0, 1) and the percentiles in [0, 50)");
    }
    let dirs: Vec<PathBuf> = a
        .get("data")
        .map(|d| d.split(',').map(PathBuf::from).collect())
        .unwrap_or_else(|| vec![PathBuf::from("../shared/data/train")]);
    let sc = scale as usize;
    let pairs = data::load_calibration(&dirs, sc, a.flag("lr"))?;
    let t_data = t0.elapsed().as_secs_f64();
    let crops = calib::sample_crops(&pairs, s.crops, s.patch, s.seed)?;
    let t1 = Instant::now();
    let (model, report) = calib::calibrate(&fp, &crops, &s)?;
    let t_cal = t1.elapsed().as_secs_f64();
    model.save(out)?;
    let q = model.quant.as_ref().expect("quantized");
    let lowered = q.layers.values().filter(|l| l.m < -0.5).count();
    let raised = q.layers.values().filter(|l| l.m > 0.5).count();
    println!(
        "{mpath} → {out}: AdaBM {:?} w{}a{}, {} crops of {}x{} in {:.1} s (images {:.1} s); \
         image thresholds {:.2} / {:.2}; b_L −1 on {lowered} layers, +1 on {raised}",
        s.mode,
        s.w_bits,
        s.a_bits,
        s.crops,
        s.patch,
        s.patch,
        t_cal,
        t_data,
        q.image_lower,
        q.image_upper
    );
    if let Some(path) = a.get("report") {
        let layers: Vec<_> = model
            .convs
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let lq = q.layers.get(&c.spec.name);
                json!({
                    "name": c.spec.name,
                    "l": lq.map(|l| l.l), "u": lq.map(|l| l.u), "u_w": lq.map(|l| l.u_w),
                    "m": lq.map(|l| l.m),
                    "sensitivity": report.sensitivity[k].is_finite().then_some(report.sensitivity[k]),
                })
            })
            .collect();
        let doc = json!({
            "model": mpath, "mode": format!("{:?}", s.mode), "w_bits": s.w_bits,
            "a_bits": s.a_bits, "crops": s.crops, "patch": s.patch, "batch": s.batch,
            "seconds": t_cal, "image_lower": q.image_lower, "image_upper": q.image_upper,
            "complexities": report.complexities, "layers": layers,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}
