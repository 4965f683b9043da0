//! Compares image-complexity metrics for b_I: per image of the test sets, each metric's value
//! and the quantization error it should predict (PSNR of the floating-point model minus PSNR
//! of the quantized model at b_I = 0), their Spearman rank correlation, and each metric's cost
//! on a 1080p frame; then the PSNR of the quantized model at equal FAB: for each metric, the
//! thresholds are that metric's 1/3 and 2/3 percentiles over the set, so a third of the images
//! gets each of b_I = −1, 0, +1 whatever the metric (the same FAB as b_I = 0 everywhere, the
//! non-adaptive row), and only which images get more bits differs.
//!
//! Last, what one image bit is worth: every image at b_I = −1, 0 and +1 (the model with its base
//! bits lowered or raised by one, no adaptation: b = b_base + b_I + b_L, so that is exactly the
//! image's PSNR at that b_I), the Spearman correlation of each metric with the gain of +1 and
//! the loss of −1, each metric's equal-thirds assignment in the reference's direction (complex →
//! more bits) and reversed, and the best assignment any metric could make at the FAB of b_I = 0
//! (as many images at −1 as at +1, chosen knowing every image's PSNR): the bound on what image
//! adaptation can gain over fixed bits at equal FAB with these quantizer ranges.
//!
//! `--json FILE` writes, per image, the three metrics and the PSNR at b_I = −1, 0, +1 and of the
//! floating-point model, so that other assignments can be computed from it.
//!
//!   adabm-metrics --fp FP.safetensors --quant Q.safetensors --data DIR [--sets Set14,B100]
//!                 [--json FILE]

use std::path::Path;
use std::time::Instant;

use adabm_tools::Args;
use adabm_tools::data;
use adabm_tools::eval::{self, float_options};
use anyhow::{Context, Result, bail};
use gstadabm::engine::metrics::percentile;
use gstadabm::engine::quant::image_bit;
use gstadabm::engine::random::test_image;
use gstadabm::engine::{ComplexityMetric, Model, Options, complexity};
use serde_json::json;

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
    a.reject_unknown(&["fp", "quant", "data", "sets", "json", "help"])?;
    a.reject_positional()?;
    if a.flag("help") {
        println!(
            "adabm-metrics --fp FP.safetensors --quant Q.safetensors --data DIR [--sets Set14,B100] \
             [--json FILE]"
        );
        return Ok(());
    }
    let fp_path = a.get("fp").context("--fp FILE is required")?;
    let fp = Model::load(fp_path).with_context(|| format!("--fp {fp_path}"))?;
    let q_path = a.get("quant").context("--quant FILE is required")?;
    let q = Model::load(q_path).with_context(|| format!("--quant {q_path}"))?;
    if q.quant.is_none() || fp.config.scale != q.config.scale {
        bail!("--quant must be a quantized model of the --fp model's scale");
    }
    // b_I = ±1 is exactly the base lowered / raised by one (the engine clamps the sum
    // b_base + b_I + b_L to 1..=8), where base ∓ 1 is itself a base it accepts (1..=8).
    let base = q.quant.as_ref().map_or(0, |c| c.a_bits);
    if !(2..=7).contains(&base) {
        bail!(
            "--quant: the bit-worth table needs base activation bits in 2..=7, the model has {base}"
        );
    }
    let root = Path::new(a.get("data").context("--data DIR is required")?);
    let s = fp.config.scale as usize;
    // b_I = 0 for every image: the error the metric should predict, not the one it changes.
    let fixed = Options {
        adaptive: false,
        ..Options::default()
    };
    let mut equal = Vec::new();
    let mut worth = Vec::new();
    let mut per_set = Vec::new();
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
        // Every image at b_I = −1, 0, +1: the base lowered, kept, raised (see the top).
        let at_base = |b: u8| {
            let o = Options {
                base_bits: Some(b),
                ..fixed
            };
            eval::evaluate(&q, &pairs, &o, 0)
        };
        let by_bit = [at_base(base - 1)?, qs, at_base(base + 1)?];
        let psnr = |b: usize| by_bit[b].iter().map(|x| x.psnr).collect::<Vec<f64>>();
        let bit = BitWorth::new(&psnr(0), &psnr(1), &psnr(2));
        let mut by_metric = Vec::new();
        let mut values_of = Vec::new();
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
            by_metric.push((name, bit.ranked(&values)));
            values_of.push((name, values.clone()));
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
            // An image's b_I applies to the whole image, so its score under these thresholds
            // is its score at that b_I, evaluated above.
            let (lower, upper) = (at(100.0 / 3.0), at(200.0 / 3.0));
            let sc: Vec<eval::Score> = v32
                .iter()
                .enumerate()
                .map(|(i, &c)| by_bit[(image_bit(c, lower, upper) + 1) as usize][i].clone())
                .collect();
            equal.push((
                set.to_string(),
                name,
                mean(&sc, |x| x.psnr),
                mean(&sc, |x| x.fab),
            ));
        }
        worth.push((set.to_string(), bit, by_metric));
        let images: Vec<_> = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let metrics: serde_json::Map<String, serde_json::Value> = values_of
                    .iter()
                    .map(|(name, v)| (name.to_string(), json!(v[i])))
                    .collect();
                json!({
                    "name": p.name,
                    "metrics": metrics,
                    "psnr_fp": f[i].psnr,
                    "psnr": [by_bit[0][i].psnr, by_bit[1][i].psnr, by_bit[2][i].psnr],
                    "fab": [by_bit[0][i].fab, by_bit[1][i].fab, by_bit[2][i].fab],
                })
            })
            .collect();
        per_set.push(json!({ "set": set, "images": images }));
    }
    if let Some(path) = a.get("json") {
        let doc = json!({ "fp": fp_path, "quant": q_path, "base_bits": base, "sets": per_set });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("--json {path}"))?;
    }
    println!();
    println!("| set | b_I from | mean PSNR | FAB |");
    println!("|---|---|---:|---:|");
    for (set, name, psnr, fab) in &equal {
        println!("| {set} | {name} | {psnr:.3} | {fab:.3} |");
    }
    println!();
    println!(
        "| set | mean loss of b_I = −1 | mean gain of b_I = +1 | best at equal FAB (k each) |"
    );
    println!("|---|---:|---:|---:|");
    for (set, bit, _) in &worth {
        let (best, k) = bit.best_equal_fab();
        println!(
            "| {set} | {:.3} dB | {:.3} dB | {best:+.3} dB ({k}) |",
            mean_of(&bit.loss),
            mean_of(&bit.gain)
        );
    }
    println!();
    println!(
        "| set | metric | Spearman(metric, gain of +1) | Spearman(metric, loss of −1) | thirds, complex → +1 | thirds, complex → −1 |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (set, _, by_metric) in &worth {
        for (name, r) in by_metric {
            println!(
                "| {set} | {name} | {:.3} | {:.3} | {:+.3} dB | {:+.3} dB |",
                r.gain_corr, r.loss_corr, r.forward, r.reversed
            );
        }
    }
    let img = test_image(1920, 1080, 1);
    for (name, m) in METRICS {
        let t = Instant::now();
        std::hint::black_box(complexity::measure(m, &img.data, 1920, 1080));
        println!(
            "{name}: {:.1} ms per 1080p frame ({} threads)",
            t.elapsed().as_secs_f64() * 1e3,
            rayon::current_num_threads()
        );
    }
    Ok(())
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Per image, what one image bit is worth: the PSNR lost at b_I = −1 and gained at b_I = +1,
/// both against b_I = 0 (dB).
struct BitWorth {
    loss: Vec<f64>,
    gain: Vec<f64>,
}

/// One metric against the worth of a bit.
struct Ranked {
    gain_corr: f64,
    loss_corr: f64,
    /// Mean PSNR change against b_I = 0 when the least complex third gets −1 and the most
    /// complex third +1 (the reference's direction) ...
    forward: f64,
    /// ... and the other way round.
    reversed: f64,
}

impl BitWorth {
    fn new(minus: &[f64], zero: &[f64], plus: &[f64]) -> Self {
        Self {
            loss: zero.iter().zip(minus).map(|(z, m)| z - m).collect(),
            gain: plus.iter().zip(zero).map(|(p, z)| p - z).collect(),
        }
    }

    /// Mean PSNR change of an assignment (b_I per image) against b_I = 0 everywhere.
    fn change(&self, bits: impl Iterator<Item = (usize, i8)>) -> f64 {
        let total: f64 = bits
            .map(|(i, b)| match b {
                1 => self.gain[i],
                -1 => -self.loss[i],
                _ => 0.0,
            })
            .sum();
        total / self.loss.len() as f64
    }

    fn ranked(&self, metric: &[f64]) -> Ranked {
        let n = metric.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| metric[a].total_cmp(&metric[b]));
        let third = n / 3;
        let thirds = |low: i8| {
            order.iter().enumerate().map(move |(r, &i)| {
                if r < third {
                    (i, low)
                } else if r >= n - third {
                    (i, -low)
                } else {
                    (i, 0)
                }
            })
        };
        Ranked {
            gain_corr: spearman(metric, &self.gain),
            loss_corr: spearman(metric, &self.loss),
            forward: self.change(thirds(-1)),
            reversed: self.change(thirds(1)),
        }
    }

    /// The best mean PSNR change over all assignments with as many images at −1 as at +1 (the
    /// FAB of b_I = 0), and that count: a dynamic programme over the images, the state being
    /// (+1 count) − (−1 count).
    fn best_equal_fab(&self) -> (f64, usize) {
        let n = self.loss.len();
        let width = 2 * n + 1;
        // best[d] = (sum of changes, count of +1) with difference d − n.
        let mut best = vec![None::<(f64, usize)>; width];
        best[n] = Some((0.0, 0));
        for i in 0..n {
            let mut next = vec![None::<(f64, usize)>; width];
            for (d, cur) in best.iter().enumerate() {
                let Some((v, k)) = *cur else { continue };
                for (step, dv, dk) in [(0i64, 0.0, 0), (1, self.gain[i], 1), (-1, -self.loss[i], 0)]
                {
                    let nd = d as i64 + step;
                    if nd < 0 || nd >= width as i64 {
                        continue;
                    }
                    let slot = &mut next[nd as usize];
                    if slot.is_none_or(|(sv, _)| v + dv > sv) {
                        *slot = Some((v + dv, k + dk));
                    }
                }
            }
            best = next;
        }
        let (v, k) = best[n].unwrap_or((0.0, 0));
        (v / n as f64, k)
    }
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

    #[test]
    fn best_assignment_at_equal_fab_pairs_cheap_losses_with_big_gains() {
        // Image 0 loses little and gains little, image 1 gains a lot, image 2 loses a lot.
        let w = BitWorth::new(&[9.9, 5.0, 1.0], &[10.0, 10.0, 10.0], &[10.1, 13.0, 10.2]);
        // Best: image 0 at −1 (−0.1), image 1 at +1 (+3.0): 2.9 over 3 images, one pair.
        let (v, k) = w.best_equal_fab();
        assert!((v - 2.9 / 3.0).abs() < 1e-12, "{v}");
        assert_eq!(k, 1);
        // When every loss exceeds every gain, fixed bits are best.
        let w = BitWorth::new(&[8.0, 8.0], &[10.0, 10.0], &[11.0, 11.0]);
        assert_eq!(w.best_equal_fab(), (0.0, 0));
        // Thirds: metric ranks image 2 < 0 < 1; reference direction gives 2 → −1, 1 → +1.
        let w = BitWorth::new(&[9.9, 5.0, 1.0], &[10.0, 10.0, 10.0], &[10.1, 13.0, 10.2]);
        let r = w.ranked(&[2.0, 3.0, 1.0]);
        assert!((r.forward - (3.0 - 9.0) / 3.0).abs() < 1e-12);
        assert!((r.reversed - (0.2 - 5.0) / 3.0).abs() < 1e-12);
    }
}
