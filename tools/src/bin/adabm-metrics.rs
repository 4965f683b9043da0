//! Compares image-complexity metrics for b_I: per image of the test sets, each metric's value
//! and the quantization error it should predict (PSNR of the floating-point model minus PSNR
//! of the quantized model at b_I = 0), their Spearman rank correlation, and each metric's cost
//! on a 1080p frame; then the PSNR of the quantized model at equal FAB: for each metric, the
//! thresholds are that metric's 1/3 and 2/3 percentiles over the set, so a third of the images
//! gets each of b_I = −1, 0, +1 whatever the metric (the same FAB as b_I = 0 everywhere, the
//! non-adaptive row), and only which images get more bits differs.
//!
//!   adabm-metrics --fp FP.safetensors --quant Q.safetensors --data DIR [--sets Set14,B100]

use std::path::Path;
use std::time::Instant;

use adabm_tools::Args;
use adabm_tools::data;
use adabm_tools::eval::{self, float_options};
use anyhow::{Context, Result, bail};
use gstadabm::engine::metrics::percentile;
use gstadabm::engine::random::test_image;
use gstadabm::engine::{ComplexityMetric, Model, Options, complexity};

const METRICS: [(&str, ComplexityMetric); 3] = [
    ("gradient", ComplexityMetric::Gradient),
    ("frequency", ComplexityMetric::Frequency),
    ("attention", ComplexityMetric::Attention),
];

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation: Pearson's correlation of the ranks.
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn main() -> Result<()> {
    let a = Args::parse(&["help"])?;
    a.reject_unknown(&["fp", "quant", "data", "sets", "help"])?;
    if a.flag("help") {
        println!(
            "adabm-metrics --fp FP.safetensors --quant Q.safetensors --data DIR [--sets Set14,B100]"
        );
        return Ok(());
    }
    let fp = Model::load(a.get("fp").context("--fp FILE is required")?)?;
    let q = Model::load(a.get("quant").context("--quant FILE is required")?)?;
    if q.quant.is_none() || fp.config.scale != q.config.scale {
        bail!("--quant must be a quantized model of the --fp model's scale");
    }
    let root = Path::new(a.get("data").context("--data DIR is required")?);
    let s = fp.config.scale as usize;
    // b_I = 0 for every image: the error the metric should predict, not the one it changes.
    let fixed = Options {
        adaptive: false,
        ..Options::default()
    };
    let mut equal = Vec::new();
    println!("| set | images | metric | Spearman(metric, PSNR drop) |");
    println!("|---|---:|---|---:|");
    for set in a.get("sets").unwrap_or("Set14,B100").split(',') {
        let pairs = data::load_benchmark(&root.join(set), s)?;
        let f = eval::evaluate(&fp, &pairs, &float_options(), 0)?;
        let qs = eval::evaluate(&q, &pairs, &fixed, 0)?;
        let drop: Vec<f64> = f.iter().zip(&qs).map(|(a, b)| a.psnr - b.psnr).collect();
        let mean = |v: &[eval::Score], g: fn(&eval::Score) -> f64| {
            v.iter().map(g).sum::<f64>() / v.len() as f64
        };
        equal.push((
            set.to_string(),
            "none (b_I = 0)",
            mean(&qs, |x| x.psnr),
            mean(&qs, |x| x.fab),
        ));
        for (name, m) in METRICS {
            let values: Vec<f64> = pairs
                .iter()
                .map(|p| {
                    let rgb: Vec<f32> = p.lr.iter().map(|&v| v as f32).collect();
                    complexity::measure(m, &rgb, p.w, p.h) as f64
                })
                .collect();
            println!(
                "| {set} | {} | {name} | {:.3} |",
                pairs.len(),
                spearman(&values, &drop)
            );
            let v32: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            // Midpoints between neighbouring values, so no image sits on a threshold.
            let at = |p: f32| {
                let t = percentile(&v32, p);
                let below = v32
                    .iter()
                    .copied()
                    .filter(|&v| v <= t)
                    .fold(f32::MIN, f32::max);
                let above = v32
                    .iter()
                    .copied()
                    .filter(|&v| v > t)
                    .fold(f32::MAX, f32::min);
                if above == f32::MAX {
                    t
                } else {
                    0.5 * (below + above)
                }
            };
            let opts = Options {
                metric: Some(m),
                image_lower: Some(at(100.0 / 3.0)),
                image_upper: Some(at(200.0 / 3.0)),
                ..Options::default()
            };
            let sc = eval::evaluate(&q, &pairs, &opts, 0)?;
            equal.push((
                set.to_string(),
                name,
                mean(&sc, |x| x.psnr),
                mean(&sc, |x| x.fab),
            ));
        }
    }
    println!();
    println!("| set | b_I from | mean PSNR | FAB |");
    println!("|---|---|---:|---:|");
    for (set, name, psnr, fab) in &equal {
        println!("| {set} | {name} | {psnr:.3} | {fab:.3} |");
    }
    let img = test_image(1920, 1080, 1);
    for (name, m) in METRICS {
        let t = Instant::now();
        std::hint::black_box(complexity::measure(m, &img.data, 1920, 1080));
        println!(
            "{name}: {:.1} ms per 1080p frame (one thread)",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_and_reversed_orders() {
        let a = [1.0, 5.0, 2.0, 9.0];
        assert!((spearman(&a, &[10.0, 50.0, 20.0, 90.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 2.0, 3.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
    }
}
