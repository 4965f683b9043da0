//! adabm-train: trains a floating-point EDSR from folders of HR images.
//!
//! L1 loss, Adam, cosine or step learning-rate schedule, random LR crops with flips and
//! transposition (the 8 symmetries of the square), LR made with MATLAB-compatible bicubic.
//! Validates on a benchmark set, checkpoints periodically and resumes with `--resume`.
//! Deterministic for a seed (at any thread count).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use adabm_tools::Args;
use adabm_tools::data::{self, Pair};
use adabm_tools::eval;
use adabm_tools::nn::{self, Adam, Edsr, Stack};
use anyhow::{Context, Result, bail};
use gstadabm::engine::conv::FeatureMap;
use gstadabm::engine::model::{f32_bytes, f32_from_bytes};
use gstadabm::engine::random::Rng;
use gstadabm::engine::{EdsrConfig, Model};
use serde_json::json;

const USAGE: &str = "\
adabm-train --out DIR [options]

  --data DIRS          comma-separated folders of HR PNGs (default ../shared/data/train)
  --scale S            2, 3 or 4 (default 2)
  --n-resblocks N      residual blocks (default 16)
  --n-feats F          features (default 64)
  --res-scale R        residual scaling (default 1)
  --patch P            LR crop size (default 48)
  --batch B            crops per iteration (default 16)
  --iters N            iterations (default 20000)
  --lr LR              peak learning rate (default 2e-4)
  --schedule S         cosine (to lr/100) or step (halve every --step) (default cosine)
  --step N             step schedule period (default iters/4)
  --seed N             seed of initialisation and sampling (default 1)
  --init FILE          warm start: copy every layer of FILE whose name and shape match
  --val DIR            benchmark set for validation (default ../shared/data/test/Set5)
  --val-every N        iterations between validations (default 1000; 0: never)
  --checkpoint-every N iterations between checkpoints (default 500)
  --threads N          worker threads (default: all cores)
  --resume             continue from DIR/ckpt.safetensors

Writes DIR/model.safetensors (latest), DIR/best.safetensors (best validation PSNR),
DIR/ckpt.safetensors (parameters, Adam state, sampler state) and DIR/log.jsonl.";

#[derive(Clone, Debug)]
struct Settings {
    data: Vec<PathBuf>,
    config: EdsrConfig,
    patch: usize,
    batch: usize,
    iters: u64,
    lr: f32,
    schedule: String,
    step: u64,
    seed: u64,
    init: Option<PathBuf>,
    val: PathBuf,
    val_every: u64,
    ckpt_every: u64,
}

fn settings(a: &Args) -> Result<Settings> {
    let scale: u32 = a.num("scale", 2)?;
    if !(2..=4).contains(&scale) {
        bail!("--scale must be 2, 3 or 4, found {scale}");
    }
    let mut config = EdsrConfig::baseline(scale);
    config.n_resblocks = a.num("n-resblocks", 16)?;
    config.n_feats = a.num("n-feats", 64)?;
    config.res_scale = a.num("res-scale", 1.0)?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("network settings: {e}"))?;
    let iters: u64 = a.num("iters", 20000)?;
    let patch: usize = a.num("patch", 48)?;
    let batch: usize = a.num("batch", 16)?;
    if patch < 4 || batch == 0 || iters == 0 {
        bail!("--patch must be at least 4, --batch and --iters at least 1");
    }
    let lr: f32 = a.num("lr", 2e-4)?;
    if !(lr > 0.0 && lr < 1.0) {
        bail!("--lr must be in (0, 1), found {lr}");
    }
    let schedule = a.get("schedule").unwrap_or("cosine").to_string();
    if schedule != "cosine" && schedule != "step" {
        bail!("--schedule must be cosine or step, found {schedule}");
    }
    let shared = PathBuf::from("../shared/data");
    Ok(Settings {
        data: a
            .get("data")
            .map(|d| d.split(',').map(PathBuf::from).collect())
            .unwrap_or_else(|| vec![shared.join("train")]),
        config,
        patch,
        batch,
        iters,
        lr,
        schedule,
        step: a.num("step", (iters / 4).max(1))?.max(1),
        seed: a.num("seed", 1)?,
        init: a.get("init").map(PathBuf::from),
        val: a
            .get("val")
            .map(PathBuf::from)
            .unwrap_or_else(|| shared.join("test/Set5")),
        val_every: a.num("val-every", 1000)?,
        ckpt_every: a.num("checkpoint-every", 500)?.max(1),
    })
}

fn learning_rate(s: &Settings, it: u64) -> f32 {
    match s.schedule.as_str() {
        "step" => s.lr * 0.5f32.powi((it / s.step) as i32),
        _ => {
            let lo = s.lr / 100.0;
            let t = it as f64 / s.iters as f64;
            lo + 0.5 * (s.lr - lo) * (1.0 + (std::f64::consts::PI * t).cos()) as f32
        }
    }
}

/// Index of the source pixel for output `(y, x)` of an `n x n` crop under symmetry `aug`.
#[inline]
fn dihedral(aug: usize, y: usize, x: usize, n: usize) -> (usize, usize) {
    let (mut a, mut b) = (y, x);
    if aug & 1 != 0 {
        b = n - 1 - b;
    }
    if aug & 2 != 0 {
        a = n - 1 - a;
    }
    if aug & 4 != 0 {
        std::mem::swap(&mut a, &mut b);
    }
    (a, b)
}

/// Fills crop `i` of a stack from an RGB image at `(x0, y0)`, in model units.
#[allow(clippy::too_many_arguments)]
fn fill(
    map: &mut FeatureMap,
    st: &Stack,
    i: usize,
    rgb: &[u8],
    width: usize,
    (x0, y0): (usize, usize),
    aug: usize,
    cfg: &EdsrConfig,
) {
    let k = cfg.rgb_range / 255.0;
    let mean = cfg.rgb_mean.map(|m| m * cfg.rgb_range);
    let n = st.h;
    for y in 0..n {
        let row = map.idx(st.row(i, y), 0);
        for x in 0..n {
            let (sy, sx) = dihedral(aug, y, x, n);
            let src = ((y0 + sy) * width + x0 + sx) * 3;
            for c in 0..3 {
                map.data[row + x * 3 + c] = rgb[src + c] as f32 * k - mean[c];
            }
        }
    }
}

fn sample_batch(pairs: &[Pair], rng: &mut Rng, s: &Settings) -> (FeatureMap, FeatureMap, Stack) {
    let st = Stack {
        n: s.batch,
        h: s.patch,
        w: s.patch,
    };
    let sc = s.config.scale as usize;
    let hs = st.scaled(sc);
    let mut x = st.zeros(3);
    let mut t = hs.zeros(3);
    for i in 0..s.batch {
        let p = &pairs[rng.below(pairs.len())];
        let lx = rng.below(p.w - s.patch + 1);
        let ly = rng.below(p.h - s.patch + 1);
        let aug = rng.below(8);
        fill(&mut x, &st, i, &p.lr, p.w, (lx, ly), aug, &s.config);
        fill(
            &mut t,
            &hs,
            i,
            &p.hr,
            p.w * sc,
            (lx * sc, ly * sc),
            aug,
            &s.config,
        );
    }
    (x, t, st)
}

struct State {
    iter: u64,
    rng: Rng,
    best: f64,
    elapsed: f64,
}

fn save_checkpoint(dir: &Path, net: &Edsr, adam: &Adam, st: &State) -> Result<()> {
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    for (k, p) in net.params.iter().enumerate() {
        data.push((format!("param.{k}.w"), f32_bytes(&p.w)));
        data.push((format!("param.{k}.b"), f32_bytes(&p.bias)));
        data.push((format!("adam.{k}.m"), f32_bytes(&adam.m[k])));
        data.push((format!("adam.{k}.v"), f32_bytes(&adam.v[k])));
    }
    let views = data
        .iter()
        .map(|(n, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![b.len() / 4], b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut md = std::collections::HashMap::new();
    md.insert("config".into(), serde_json::to_string(&net.config)?);
    md.insert(
        "state".into(),
        json!({"iter": st.iter, "adam_step": adam.step, "rng": st.rng.state().to_string(),
               "best": st.best, "elapsed": st.elapsed})
        .to_string(),
    );
    let bytes = safetensors::serialize(views, Some(md))?;
    let tmp = dir.join("ckpt.safetensors.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join("ckpt.safetensors"))?;
    Ok(())
}

fn load_checkpoint(dir: &Path, net: &mut Edsr, adam: &mut Adam) -> Result<State> {
    let path = dir.join("ckpt.safetensors");
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let md = meta.metadata().clone().unwrap_or_default();
    let config: EdsrConfig = serde_json::from_str(md.get("config").context("no config")?)?;
    if config != net.config {
        bail!(
            "{} was trained with {config:?}, not the requested {:?}",
            path.display(),
            net.config
        );
    }
    let state: serde_json::Value = serde_json::from_str(md.get("state").context("no state")?)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let get = |n: String, len: usize| -> Result<Vec<f32>> {
        let v = f32_from_bytes(
            st.tensor(&n)
                .with_context(|| format!("checkpoint lacks {n}"))?
                .data(),
        );
        if v.len() != len {
            bail!(
                "checkpoint tensor {n} has {} values, expected {len}",
                v.len()
            );
        }
        Ok(v)
    };
    for k in 0..net.params.len() {
        let (nw, nb) = (net.params[k].w.len(), net.params[k].bias.len());
        net.params[k].w = get(format!("param.{k}.w"), nw)?;
        net.params[k].bias = get(format!("param.{k}.b"), nb)?;
        adam.m[k] = get(format!("adam.{k}.m"), nw + nb)?;
        adam.v[k] = get(format!("adam.{k}.v"), nw + nb)?;
    }
    adam.step = state["adam_step"].as_u64().context("adam_step")?;
    Ok(State {
        iter: state["iter"].as_u64().context("iter")?,
        rng: Rng::from_state(
            state["rng"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .context("rng")?,
        ),
        best: state["best"].as_f64().unwrap_or(0.0),
        elapsed: state["elapsed"].as_f64().unwrap_or(0.0),
    })
}

fn warm_start(net: &mut Edsr, path: &Path) -> Result<usize> {
    let m = Model::load(path).with_context(|| format!("--init {}", path.display()))?;
    let src = Edsr::from_model(&m);
    let mut copied = 0;
    for (k, s) in net.specs.iter().enumerate() {
        if let Some(j) = src.specs.iter().position(|t| t.name == s.name)
            && src.specs[j].cin == s.cin
            && src.specs[j].cout == s.cout
        {
            net.params[k] = src.params[j].clone();
            copied += 1;
        }
    }
    Ok(copied)
}

fn hms(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

fn main() -> Result<()> {
    adabm_tools::keep_freed_memory();
    let a = Args::parse(&["resume", "help"])?;
    if a.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    a.reject_unknown(&[
        "out",
        "data",
        "scale",
        "n-resblocks",
        "n-feats",
        "res-scale",
        "patch",
        "batch",
        "iters",
        "lr",
        "schedule",
        "step",
        "seed",
        "init",
        "val",
        "val-every",
        "checkpoint-every",
        "threads",
        "resume",
        "help",
    ])?;
    a.reject_positional()?;
    let out = PathBuf::from(
        a.get("out")
            .with_context(|| format!("--out DIR is required\n\n{USAGE}"))?,
    );
    let s = settings(&a)?;
    let threads: usize = a.num("threads", 0)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    std::fs::create_dir_all(&out)?;
    let sc = s.config.scale as usize;

    let t_load = Instant::now();
    let pairs: Vec<Pair> = data::load_training(&s.data, sc)?
        .into_iter()
        .filter(|p| p.w >= s.patch && p.h >= s.patch)
        .collect();
    if pairs.is_empty() {
        bail!(
            "no training image is at least {} LR pixels on each side",
            s.patch
        );
    }
    let val = if s.val_every > 0 && s.val.is_dir() {
        Some(data::load_benchmark(&s.val, sc)?)
    } else {
        if s.val_every > 0 {
            eprintln!(
                "validation set {} not found: training without validation",
                s.val.display()
            );
        }
        None
    };
    eprintln!(
        "{} training images (LR x{sc} made in {:.1} s), validation: {}",
        pairs.len(),
        t_load.elapsed().as_secs_f64(),
        val.as_ref().map_or("none".into(), |v| format!(
            "{} images of {}",
            v.len(),
            s.val.display()
        ))
    );

    let mut net = Edsr::init(s.config.clone(), s.seed);
    let mut adam = Adam::new(&net);
    let mut st = State {
        iter: 0,
        rng: Rng::new(s.seed.wrapping_add(0x5eed)),
        best: 0.0,
        elapsed: 0.0,
    };
    if a.flag("resume") {
        st = load_checkpoint(&out, &mut net, &mut adam)?;
        eprintln!(
            "resumed at iteration {} ({} trained)",
            st.iter,
            hms(st.elapsed)
        );
    } else if let Some(init) = &s.init {
        let n = warm_start(&mut net, init)?;
        eprintln!(
            "warm start: {n} of {} layers from {}",
            net.specs.len(),
            init.display()
        );
    }
    eprintln!(
        "EDSR x{sc}: {} blocks, {} features, {} parameters; {} iterations of {}x{}x{}",
        s.config.n_resblocks,
        s.config.n_feats,
        net.n_params(),
        s.iters,
        s.batch,
        s.patch,
        s.patch
    );
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("log.jsonl"))?;
    let tty = std::io::stderr().is_terminal();
    let (mut loss_avg, mut psnr_avg, mut n_avg) = (0.0f64, 0.0f64, 0u32);
    let session = Instant::now();
    let start_iter = st.iter;
    let start_elapsed = st.elapsed;
    while st.iter < s.iters {
        let lr = learning_rate(&s, st.iter);
        let (x, target, stack) = sample_batch(&pairs, &mut st.rng, &s);
        let (y, tape) = net.forward(x, &stack);
        let hs = stack.scaled(sc);
        let count = hs.values(3);
        let (loss, grad) = nn::l1_loss(&y, &target, count);
        let mse: f64 = y
            .data
            .iter()
            .zip(&target.data)
            .map(|(a, b)| {
                let d = (a.clamp(-128.0, 255.0) - b) as f64 * (255.0 / s.config.rgb_range) as f64;
                d * d
            })
            .sum::<f64>()
            / count as f64;
        let grads = net.backward(tape, grad, &stack);
        adam.update(&mut net, &grads, lr);
        st.iter += 1;
        loss_avg += loss;
        psnr_avg += 10.0 * (255.0f64 * 255.0 / mse.max(1e-10)).log10();
        n_avg += 1;
        st.elapsed = start_elapsed + session.elapsed().as_secs_f64();
        let rate = (st.iter - start_iter) as f64 / session.elapsed().as_secs_f64();
        let eta = (s.iters - st.iter) as f64 / rate;
        let mut val_psnr = None;
        if s.val_every > 0
            && (st.iter.is_multiple_of(s.val_every) || st.iter == s.iters)
            && let Some(v) = &val
        {
            let model = net.to_model()?;
            let scores = eval::evaluate(&model, v, &eval::float_options(), 0)?;
            let mean = eval::mean(&scores);
            val_psnr = Some(mean.psnr);
            if mean.psnr > st.best {
                st.best = mean.psnr;
                model.save(out.join("best.safetensors"))?;
            }
        }
        let report = st.iter.is_multiple_of(50) || val_psnr.is_some() || st.iter == s.iters;
        if tty || report {
            let w = 24;
            let done = (st.iter as usize * w / s.iters as usize).min(w);
            let line = format!(
                "[{}{}] {}/{} loss {:.3} psnr {:.2} lr {:.2e} val {} (best {:.3}) {:.2} it/s ETA {}",
                "#".repeat(done),
                "-".repeat(w - done),
                st.iter,
                s.iters,
                loss_avg / n_avg as f64,
                psnr_avg / n_avg as f64,
                lr,
                val_psnr.map_or("-".into(), |v| format!("{v:.3}")),
                st.best,
                rate,
                hms(eta)
            );
            if tty {
                eprint!("\r{line}\x1b[K");
                if report {
                    eprintln!();
                }
            } else {
                eprintln!("{line}");
            }
        }
        if report {
            writeln!(
                log,
                "{}",
                json!({"iter": st.iter, "loss": loss_avg / n_avg as f64,
                       "train_psnr": psnr_avg / n_avg as f64, "lr": lr,
                       "val_psnr": val_psnr, "elapsed_s": st.elapsed})
            )?;
            (loss_avg, psnr_avg, n_avg) = (0.0, 0.0, 0);
        }
        if st.iter.is_multiple_of(s.ckpt_every) || st.iter == s.iters {
            net.to_model()?.save(out.join("model.safetensors"))?;
            save_checkpoint(&out, &net, &adam, &st)?;
        }
    }
    eprintln!(
        "done: {} iterations in {}, best validation PSNR {:.3} dB",
        st.iter,
        hms(st.elapsed),
        st.best
    );
    Ok(())
}
