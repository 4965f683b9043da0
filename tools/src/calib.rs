//! AdaBM calibration (method page, "Calibration"): forward passes of the floating-point network
//! over random LR crops measure, per quantized layer, the input range (batch min/max, EMA
//! across batches), the weight clip (MSE search) and the sensitivity (std of the input); over
//! the crops, the image-complexity thresholds (batch percentiles, EMA).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use gemm::Parallelism;
use gstadabm::engine::complexity;
use gstadabm::engine::conv::FeatureMap;
use gstadabm::engine::metrics::percentile;
use gstadabm::engine::model::{LayerKind, layer_kind};
use gstadabm::engine::quant;
use gstadabm::engine::random::Rng;
use gstadabm::engine::{
    ComplexityMetric, Engine, Image, LayerQuant, Model, Network, Options, QuantConfig, QuantMode,
};
use rayon::prelude::*;

use crate::data::Pair;

/// Calibration settings; the defaults are the reference's.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: QuantMode,
    pub w_bits: u8,
    pub a_bits: u8,
    /// Number of random crops.
    pub crops: usize,
    /// LR crop size.
    pub patch: usize,
    pub batch: usize,
    /// EMA factor of ranges and thresholds across batches.
    pub ema_beta: f32,
    /// Image thresholds at this percentile and 100 minus it.
    pub img_percentile: f32,
    /// b_L thresholds at this percentile and 100 minus it.
    pub layer_percentile: f32,
    /// No b_L (every m_k = 0): the fixed-bit baseline.
    pub fixed: bool,
    pub seed: u64,
    /// Image complexity metric for b_I (stored in the model).
    pub metric: ComplexityMetric,
    /// How the layer sensitivities behind b_L are measured.
    pub sensitivity: Sensitivity,
}

/// How the sensitivity s_k of each adaptive layer (ranked for b_L) is measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sensitivity {
    /// The reference's proxy: the standard deviation of the layer's input in the
    /// floating-point network.
    Std,
    /// Measured: how much the output error grows when this layer alone runs one bit below the
    /// base. On the first `crops` calibration crops, with b_I = 0: the mean squared difference
    /// to the floating-point network's output with layer k at `b_base − 1` and every other
    /// adaptive layer at `b_base`, minus the same with all at `b_base`.
    Error { crops: usize },
}

impl Settings {
    /// The reference's defaults at `scale`: 100 crops of 384/scale LR pixels, batch 16.
    pub fn reference(scale: u32) -> Self {
        Self {
            mode: QuantMode::Fq,
            w_bits: 4,
            a_bits: 4,
            crops: 100,
            patch: 384 / scale as usize,
            batch: 16,
            ema_beta: 0.9,
            img_percentile: 10.0,
            layer_percentile: 30.0,
            fixed: false,
            sensitivity: Sensitivity::Std,
            seed: 1,
            metric: ComplexityMetric::Gradient,
        }
    }
}

/// Random LR crops with random flips, as the reference samples its calibration patches.
pub fn sample_crops(pairs: &[Pair], n: usize, patch: usize, seed: u64) -> Result<Vec<Image>> {
    let usable: Vec<&Pair> = pairs
        .iter()
        .filter(|p| p.w >= patch && p.h >= patch)
        .collect();
    if usable.is_empty() {
        bail!("no image is at least {patch}x{patch} LR pixels (use a smaller --patch)");
    }
    let mut rng = Rng::new(seed);
    Ok((0..n)
        .map(|_| {
            let p = usable[rng.below(usable.len())];
            let x0 = rng.below(p.w - patch + 1);
            let y0 = rng.below(p.h - patch + 1);
            let (hf, vf) = (rng.below(2) == 1, rng.below(2) == 1);
            let mut img = Image::new(patch, patch);
            for y in 0..patch {
                for x in 0..patch {
                    let sy = if vf { patch - 1 - y } else { y };
                    let sx = if hf { patch - 1 - x } else { x };
                    let s = ((y0 + sy) * p.w + x0 + sx) * 3;
                    let d = (y * patch + x) * 3;
                    for c in 0..3 {
                        img.data[d + c] = p.lr[s + c] as f32;
                    }
                }
            }
            img
        })
        .collect())
}

/// Weight clip with the lowest quantization MSE among `max(w)·(1 − 0.01 i)`, i = 0…49 (the
/// reference starts from the signed maximum).
pub fn weight_clip(w: &[f32], bits: u8) -> f32 {
    let start = w
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
        .max(1e-8);
    let n = quant::levels(bits);
    let mut best = (f64::INFINITY, start);
    for i in 0..50 {
        let u = start * (1.0 - 0.01 * i as f32);
        let mse: f64 = w
            .iter()
            .map(|&v| {
                let d = (v - quant::weight_fake_quant(v, u, n)) as f64;
                d * d
            })
            .sum();
        if mse < best.0 {
            best = (mse, u);
        }
    }
    best.1
}

/// Minimum, maximum, sum and sum of squares of a row of values.
struct RowStats {
    min: f32,
    max: f32,
    sum: f64,
    sq: f64,
}

impl RowStats {
    fn of(v: &[f32]) -> Self {
        const L: usize = 8;
        let (mut mn, mut mx) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L]);
        let (mut s, mut q) = ([0f64; L], [0f64; L]);
        let mut chunks = v.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                let x = c[i];
                mn[i] = mn[i].min(x);
                mx[i] = mx[i].max(x);
                s[i] += x as f64;
                q[i] += x as f64 * x as f64;
            }
        }
        for (i, &x) in chunks.remainder().iter().enumerate() {
            mn[i] = mn[i].min(x);
            mx[i] = mx[i].max(x);
            s[i] += x as f64;
            q[i] += x as f64 * x as f64;
        }
        Self {
            min: mn.iter().copied().fold(f32::INFINITY, f32::min),
            max: mx.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            sum: s.iter().sum(),
            sq: q.iter().sum(),
        }
    }
}

/// What calibration measured, besides the model.
#[derive(Clone, Debug)]
pub struct Report {
    /// Sensitivity s_k of every layer (NaN for float layers).
    pub sensitivity: Vec<f32>,
    pub complexities: Vec<f32>,
}

/// Calibrates `fp` on `crops`.
pub fn calibrate(fp: &Model, crops: &[Image], s: &Settings) -> Result<(Model, Report)> {
    if fp.quant.is_some() {
        bail!("calibration needs a floating-point model; this one is already quantized");
    }
    if crops.is_empty() || s.batch == 0 {
        bail!("no calibration crops");
    }
    let net = Network::new(fp);
    let n = net.layers.len();
    let kinds: Vec<LayerKind> = fp
        .convs
        .iter()
        .map(|c| layer_kind(Some(s.mode), c.spec.role))
        .collect();
    let (mut lo, mut hi) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut std_sum = vec![0.0f64; n];
    let mut batches = 0usize;
    let (mut img_lo, mut img_hi) = (0.0f32, 0.0f32);
    let mut complexities = Vec::new();
    for (b, chunk) in crops.chunks(s.batch).enumerate() {
        let (mut blo, mut bhi) = (vec![f32::INFINITY; n], vec![f32::NEG_INFINITY; n]);
        let mut bstd = vec![0.0f64; n];
        let mut cs = Vec::new();
        for img in chunk {
            cs.push(complexity::measure(
                s.metric, &img.data, img.width, img.height,
            ));
            let x = net.input_map(img, 0, 0, img.width, img.height);
            let mut obs = |k: usize, m: &FeatureMap| {
                if kinds[k] == LayerKind::Float {
                    return;
                }
                // Per row in parallel (8 independent lanes, so the loop vectorises), then
                // summed in row order: the same result at any thread count.
                let rows: Vec<RowStats> = (0..m.h)
                    .into_par_iter()
                    .map(|y| RowStats::of(m.row(y)))
                    .collect();
                let (mut sum, mut sq) = (0.0f64, 0.0f64);
                for r in &rows {
                    blo[k] = blo[k].min(r.min);
                    bhi[k] = bhi[k].max(r.max);
                    sum += r.sum;
                    sq += r.sq;
                }
                let cnt = m.h * m.w * m.c;
                // torch.std: unbiased, over C, H, W of one sample.
                let mean = sum / cnt as f64;
                let var = (sq - cnt as f64 * mean * mean).max(0.0) / (cnt.max(2) - 1) as f64;
                bstd[k] += var.sqrt() / chunk.len() as f64;
            };
            net.forward(&x, &net.plan(0, 0), Parallelism::Rayon(0), Some(&mut obs));
        }
        let (pl, pu) = (
            percentile(&cs, s.img_percentile),
            percentile(&cs, 100.0 - s.img_percentile),
        );
        let beta = s.ema_beta;
        if b == 0 {
            (lo, hi) = (blo, bhi);
            (img_lo, img_hi) = (pl, pu);
        } else {
            for k in 0..n {
                lo[k] = beta * lo[k] + (1.0 - beta) * blo[k];
                hi[k] = beta * hi[k] + (1.0 - beta) * bhi[k];
            }
            img_lo = beta * img_lo + (1.0 - beta) * pl;
            img_hi = beta * img_hi + (1.0 - beta) * pu;
        }
        for k in 0..n {
            std_sum[k] += bstd[k];
        }
        batches += 1;
        complexities.extend(cs);
    }
    // The model with every b_L = 0 (the fixed-bit model); b_L is set below.
    let mut layers = BTreeMap::new();
    for (k, c) in fp.convs.iter().enumerate() {
        let bits = match kinds[k] {
            LayerKind::Float => continue,
            LayerKind::Fixed8 => 8,
            LayerKind::Adaptive => s.w_bits,
        };
        // A constant input (l = u) cannot be quantized on [l, u]: widen it by one unit.
        let (l, u) = if hi[k] > lo[k] {
            (lo[k], hi[k])
        } else {
            (lo[k], lo[k] + 1.0)
        };
        layers.insert(
            c.spec.name.clone(),
            LayerQuant {
                l,
                u,
                u_w: weight_clip(&c.weight, bits),
                m: 0.0,
            },
        );
    }
    let (image_lower, image_upper) = if img_hi > img_lo {
        (img_lo, img_hi)
    } else {
        (img_lo, img_lo + 1e-3)
    };
    let q = QuantConfig {
        mode: s.mode,
        w_bits: s.w_bits,
        a_bits: s.a_bits,
        complexity: s.metric,
        image_lower,
        image_upper,
        layers,
    };
    let invalid = |e| anyhow::anyhow!("calibrated model is invalid: {e}");
    let mut model = Model::new(fp.config.clone(), Some(q), fp.convs.clone()).map_err(invalid)?;
    let adaptive: Vec<usize> = (0..n)
        .filter(|&k| kinds[k] == LayerKind::Adaptive)
        .collect();
    let mut sensitivity = vec![f32::NAN; n];
    match s.sensitivity {
        Sensitivity::Std => {
            for k in (0..n).filter(|&k| kinds[k] != LayerKind::Float) {
                sensitivity[k] = (std_sum[k] / batches as f64) as f32;
            }
        }
        Sensitivity::Error { crops: m } if !s.fixed => {
            let sample = &crops[..m.clamp(1, crops.len())];
            for (&k, e) in adaptive
                .iter()
                .zip(error_sensitivity(fp, &model, &adaptive, sample)?)
            {
                sensitivity[k] = e;
            }
        }
        Sensitivity::Error { .. } => {}
    }
    if !s.fixed {
        let measured: Vec<f32> = adaptive.iter().map(|&k| sensitivity[k]).collect();
        let (l_l2b, u_l2b) = (
            percentile(&measured, s.layer_percentile),
            percentile(&measured, 100.0 - s.layer_percentile),
        );
        let mut q = model.quant.clone().expect("quantized");
        for &k in &adaptive {
            let sk = sensitivity[k];
            let lq = q.layers.get_mut(&fp.convs[k].spec.name).expect("layer");
            lq.m = if sk < l_l2b {
                -1.0
            } else if sk > u_l2b {
                1.0
            } else {
                0.0
            };
        }
        model = Model::new(fp.config.clone(), Some(q), fp.convs.clone()).map_err(invalid)?;
    }
    Ok((
        model,
        Report {
            sensitivity,
            complexities,
        },
    ))
}

/// [`Sensitivity::Error`] of the adaptive layers `adaptive` of `fixed` (a calibrated model with
/// every b_L = 0) on `crops`: per layer, the output MSE against `fp` with that layer one bit
/// below the base, minus the MSE with none lowered (b_I = 0; the integer engine).
fn error_sensitivity(
    fp: &Model,
    fixed: &Model,
    adaptive: &[usize],
    crops: &[Image],
) -> Result<Vec<f32>> {
    let opts = Options {
        adaptive: false,
        ..Options::default()
    };
    let reference = Engine::new(fp, 0)?;
    let want: Vec<Image> = crops
        .iter()
        .map(|c| reference.upscale(c, &opts).map(|(o, _)| o))
        .collect::<std::result::Result<_, _>>()?;
    let mse = |model: &Model| -> Result<f64> {
        let engine = Engine::new(model, 0)?;
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for (c, w) in crops.iter().zip(&want) {
            let (got, _) = engine.upscale(c, &opts)?;
            sum += got
                .data
                .iter()
                .zip(&w.data)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
            count += got.data.len();
        }
        Ok(sum / count.max(1) as f64)
    };
    let base = mse(fixed)?;
    let q = fixed.quant.as_ref().expect("quantized");
    adaptive
        .iter()
        .map(|&k| {
            let mut q = q.clone();
            q.layers
                .get_mut(&fixed.convs[k].spec.name)
                .expect("adaptive layer")
                .m = -1.0;
            let lowered = Model::new(fixed.config.clone(), Some(q), fixed.convs.clone())
                .map_err(|e| anyhow::anyhow!("model with layer {k} lowered: {e}"))?;
            Ok((mse(&lowered)? - base) as f32)
        })
        .collect()
}
