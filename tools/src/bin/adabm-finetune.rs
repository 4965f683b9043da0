//! adabm-finetune: calibrated AdaBM model + images → fine-tuned quantizer parameters.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use adabm_tools::data;
use adabm_tools::finetune::{self, QNet, Settings};
use adabm_tools::{Args, calib, plot};
use anyhow::{Context, Result, bail};
use gstadabm::engine::Model;
use serde_json::json;

const USAGE: &str = "\
adabm-finetune --model Q.safetensors --out FT.safetensors [options]

Learns the quantizer parameters of a calibrated model (adabm-calibrate) with the model's own
floating-point weights as the teacher; the weights stay frozen. Defaults are the reference's.

  --data DIRS          comma-separated image folders (default ../shared/data/train)
  --lr                 the images are LR already (default: HR, degraded with our bicubic)
  --crops N            random crops (default 100)
  --patch P            LR crop size (default 384/scale: 96 at x4)
  --crop-seed N        crop sampling seed (default 1: adabm-calibrate's crops)
  --epochs N           (default 10; the trained group rotates u_w → l,u → bits)
  --iters N            iterations per epoch (default 50)
  --batch N            (default 2)
  --lr-w X             learning rate of the weight clips u_w (default 0.01)
  --lr-a X             learning rate of the activation bounds l, u (default 0.01)
  --lr-m X             learning rate of the layer bit factors m_k (default 0.01)
  --lr-i2b X           learning rate of the image thresholds (default 0.1)
  --lr-decay X         each group's rate × X after each of its epochs (default 0.9)
  --beta1 X --beta2 X --eps X   Adam (default 0.9, 0.999, 1e-8)
  --w-pix X            weight of L_pix = L1(SR_q, SR_fp) (default 1)
  --w-skt X            weight of L_skt (default 10)
  --w-bit X            weight of L_bit = max(avg_bit − b_base, 0), bit epochs only (default 50)
  --no-bac             skip bit-aware clipping at the first batch
  --bac-steps N        candidate ranges [l, u]·(1 − step·i), i < N (default 100)
  --bac-step X         (default 0.01)
  --bac-keep X         final range = X·calibrated + (1 − X)·best (default 0.5)
  --seed N             batch order seed (default 1)
  --teacher-cache-mb N keep the teacher's outputs of every crop (computed once) when they fit
                       in N MiB, instead of running the teacher on every batch; 0 = never
                       (default 4096; same results either way)
  --log FILE           JSON log (default: OUT with .finetune.json)
  --plot FILE          PNG of the losses and average bits per epoch (default: OUT with .finetune.png)";

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{}{suffix}", stem.unwrap_or_default()))
}

fn main() -> Result<()> {
    adabm_tools::keep_freed_memory();
    let a = Args::parse(&["lr", "no-bac", "help"])?;
    if a.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    a.reject_unknown(&[
        "model",
        "out",
        "data",
        "lr",
        "crops",
        "patch",
        "crop-seed",
        "epochs",
        "iters",
        "batch",
        "lr-w",
        "lr-a",
        "lr-m",
        "lr-i2b",
        "lr-decay",
        "beta1",
        "beta2",
        "eps",
        "w-pix",
        "w-skt",
        "w-bit",
        "no-bac",
        "bac-steps",
        "bac-step",
        "bac-keep",
        "seed",
        "teacher-cache-mb",
        "log",
        "plot",
        "help",
    ])?;
    a.reject_positional()?;
    let t0 = Instant::now();
    let mpath = a.get("model").context("--model FILE is required")?;
    let out = PathBuf::from(a.get("out").context("--out FILE is required")?);
    let model = Model::load(mpath).with_context(|| format!("--model {mpath}"))?;
    let mut net = QNet::from_model(&model)?;
    let d = Settings::default();
    let st = Settings {
        epochs: a.num("epochs", d.epochs)?,
        iters: a.num("iters", d.iters)?,
        batch: a.num("batch", d.batch)?,
        lr_w: a.num("lr-w", d.lr_w)?,
        lr_a: a.num("lr-a", d.lr_a)?,
        lr_m: a.num("lr-m", d.lr_m)?,
        lr_i2b: a.num("lr-i2b", d.lr_i2b)?,
        lr_decay: a.num("lr-decay", d.lr_decay)?,
        beta1: a.num("beta1", d.beta1)?,
        beta2: a.num("beta2", d.beta2)?,
        eps: a.num("eps", d.eps)?,
        w_pix: a.num("w-pix", d.w_pix)?,
        w_skt: a.num("w-skt", d.w_skt)?,
        w_bit: a.num("w-bit", d.w_bit)?,
        bac: !a.flag("no-bac"),
        bac_steps: a.num("bac-steps", d.bac_steps)?,
        bac_step: a.num("bac-step", d.bac_step)?,
        bac_keep: a.num("bac-keep", d.bac_keep)?,
        seed: a.num("seed", d.seed)?,
        teacher_cache_mb: a.num("teacher-cache-mb", d.teacher_cache_mb)?,
    };
    if st.epochs == 0 || st.iters == 0 || st.batch == 0 {
        bail!("--epochs, --iters and --batch must be positive");
    }
    let rates = [st.lr_w, st.lr_a, st.lr_m, st.lr_i2b, st.eps];
    if rates.iter().any(|r| !(r.is_finite() && *r >= 0.0))
        || !(0.0..=1.0).contains(&st.lr_decay)
        || !(0.0..1.0).contains(&st.beta1)
        || !(0.0..1.0).contains(&st.beta2)
    {
        bail!(
            "learning rates and eps must be finite and ≥ 0, --lr-decay in [0, 1], betas in [0, 1)"
        );
    }
    if [st.w_pix, st.w_skt, st.w_bit]
        .iter()
        .any(|w| !(w.is_finite() && *w >= 0.0))
    {
        bail!("loss weights must be finite and ≥ 0");
    }
    if st.bac_steps == 0
        || !(st.bac_step > 0.0 && st.bac_step * (st.bac_steps as f32 - 1.0) < 1.0)
        || !(0.0..=1.0).contains(&st.bac_keep)
    {
        bail!("--bac-steps must be positive with --bac-step·(steps − 1) < 1, --bac-keep in [0, 1]");
    }
    let scale = model.config.scale as usize;
    let crops_n: usize = a.num("crops", 100)?;
    let patch: usize = a.num("patch", 384 / scale)?;
    if crops_n == 0 || patch < 8 {
        bail!("--crops must be positive and --patch at least 8");
    }
    let dirs: Vec<PathBuf> = a
        .get("data")
        .map(|d| d.split(',').map(PathBuf::from).collect())
        .unwrap_or_else(|| vec![PathBuf::from("../shared/data/train")]);
    let pairs = data::load_calibration(&dirs, scale, a.flag("lr"))?;
    let crops = calib::sample_crops(&pairs, crops_n, patch, a.num("crop-seed", 1)?)?;
    let t_data = t0.elapsed().as_secs_f64();
    let q0 = net.quant.clone();
    let tty = std::io::stderr().is_terminal();
    let total = st.epochs * st.iters;
    let t1 = Instant::now();
    let mut done = 0usize;
    // Seconds per iteration from the end of the first one on: the teacher cache and the
    // bit-aware clipping before it are one-off costs.
    let mut first = 0.0f64;
    let logs = finetune::finetune(&mut net, &crops, &st, |p| {
        done += 1;
        let el = t1.elapsed().as_secs_f64();
        if done == 1 {
            first = el;
        }
        let per = if done > 1 {
            (el - first) / (done - 1) as f64
        } else {
            el
        };
        let eta = per * (total - done) as f64;
        let bar: String = (0..20)
            .map(|i| if i * st.iters < 20 * p.iter { '#' } else { '.' })
            .collect();
        let line = format!(
            "epoch {:>2}/{} {:<4} [{bar}] {:>3}/{}  epoch means: pix {:.4}  skt {:.4}  bit {:.4}  bits {:.3}  {:.2} s/it  ETA {:.0} s",
            p.epoch,
            st.epochs,
            p.group.name(),
            p.iter,
            st.iters,
            p.mean.pix,
            p.mean.skt,
            p.mean.bit,
            p.mean.avg_bits,
            per,
            eta
        );
        let mut e = std::io::stderr();
        if tty {
            let _ = write!(e, "\r{line}\x1b[K");
            if p.iter == st.iters {
                let _ = writeln!(e);
            }
        } else if p.iter == st.iters {
            let _ = writeln!(e, "{line}");
        }
    })?;
    let t_ft = t1.elapsed().as_secs_f64();
    let tuned = net.to_model(&model)?;
    tuned.save(&out)?;
    let q = tuned.quant.as_ref().expect("quantized");
    let layers: Vec<_> = model
        .convs
        .iter()
        .filter_map(|c| {
            let (a, b) = (q0.layers.get(&c.spec.name)?, q.layers.get(&c.spec.name)?);
            Some(json!({
                "name": c.spec.name,
                "before": {"l": a.l, "u": a.u, "u_w": a.u_w, "m": a.m},
                "after": {"l": b.l, "u": b.u, "u_w": b.u_w, "m": b.m},
            }))
        })
        .collect();
    let epochs: Vec<_> = logs
        .iter()
        .map(|l| {
            json!({
                "epoch": l.epoch, "group": l.group.name(), "lr": l.lr, "seconds": l.seconds,
                "pix": l.losses.pix, "skt": l.losses.skt, "bit": l.losses.bit,
                "avg_bits": l.losses.avg_bits,
            })
        })
        .collect();
    let doc = json!({
        "model": mpath, "out": out.display().to_string(), "crops": crops_n, "patch": patch,
        "settings": format!("{st:?}"), "seconds": t_ft, "data_seconds": t_data,
        "image_lower": [q0.image_lower, q.image_lower],
        "image_upper": [q0.image_upper, q.image_upper],
        "epochs": epochs, "layers": layers,
    });
    let log = a
        .get("log")
        .map(PathBuf::from)
        .unwrap_or_else(|| with_suffix(&out, ".finetune.json"));
    std::fs::write(&log, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", log.display()))?;
    let png = a
        .get("plot")
        .map(PathBuf::from)
        .unwrap_or_else(|| with_suffix(&out, ".finetune.png"));
    let series = |f: fn(&finetune::EpochLog) -> f64| logs.iter().map(f).collect::<Vec<f64>>();
    plot::epoch_panels(
        &png,
        &[
            ("L_PIX", series(|l| l.losses.pix)),
            ("L_SKT", series(|l| l.losses.skt)),
            ("L_BIT (BIT EPOCHS)", series(|l| l.losses.bit)),
            ("AVG BITS", series(|l| l.losses.avg_bits)),
        ],
    )?;
    let lowered = q.layers.values().filter(|l| l.m < -0.5).count();
    let raised = q.layers.values().filter(|l| l.m > 0.5).count();
    println!(
        "{mpath} → {}: {} epochs × {} iterations (batch {}) on {crops_n} crops of {patch}x{patch} \
         in {t_ft:.1} s (images {t_data:.1} s); image thresholds {:.2} / {:.2} → {:.2} / {:.2}; \
         b_L −1 on {lowered} layers, +1 on {raised}; log {}, plot {}",
        out.display(),
        st.epochs,
        st.iters,
        st.batch,
        q0.image_lower,
        q0.image_upper,
        q.image_lower,
        q.image_upper,
        log.display(),
        png.display()
    );
    Ok(())
}
