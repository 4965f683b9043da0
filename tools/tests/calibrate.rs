//! Calibration against an independent recomputation of the method page's statistics.

use adabm_tools::calib::{self, Settings};
use gemm::Parallelism;
use gstadabm::engine::complexity::{self, gradient_density};
use gstadabm::engine::conv::FeatureMap;
use gstadabm::engine::metrics::percentile;
use gstadabm::engine::model::{EdsrConfig, LayerKind, layer_kind};
use gstadabm::engine::quant;
use gstadabm::engine::random::{random_model, test_image};
use gstadabm::engine::{ComplexityMetric, Image, Network, QuantMode};

fn crops() -> Vec<Image> {
    (0..6)
        .map(|i| test_image(20 + i, 18, 40 + i as u64))
        .collect()
}

#[test]
fn ranges_thresholds_and_layer_bits_follow_the_method() {
    let cfg = EdsrConfig {
        n_resblocks: 4,
        n_feats: 8,
        ..EdsrConfig::baseline(2)
    };
    let fp = random_model(cfg, 9).unwrap();
    let crops = crops();
    for mode in [QuantMode::Fq, QuantMode::NonFq] {
        let s = Settings {
            mode,
            batch: 4,
            ..Settings::reference(2)
        };
        let (q, report) = calib::calibrate(&fp, &crops, &s).unwrap();
        let qc = q.quant.as_ref().unwrap();
        // Recompute: per batch min / max of every layer input, EMA 0.9 over the two batches.
        let net = Network::new(&fp);
        let n = net.layers.len();
        let mut ranges: Vec<Vec<(f32, f32)>> = Vec::new();
        for chunk in crops.chunks(4) {
            let mut r = vec![(f32::INFINITY, f32::NEG_INFINITY); n];
            for img in chunk {
                let x = net.input_map(img, 0, 0, img.width, img.height);
                let mut obs = |k: usize, m: &FeatureMap| {
                    for y in 0..m.h {
                        for &v in m.row(y) {
                            r[k].0 = r[k].0.min(v);
                            r[k].1 = r[k].1.max(v);
                        }
                    }
                };
                net.forward(&x, &net.plan(0, 0), Parallelism::None, Some(&mut obs));
            }
            ranges.push(r);
        }
        for (k, c) in fp.convs.iter().enumerate() {
            let kind = layer_kind(Some(mode), c.spec.role);
            let Some(lq) = qc.layers.get(&c.spec.name) else {
                assert_eq!(kind, LayerKind::Float, "{}", c.spec.name);
                continue;
            };
            let l = 0.9 * ranges[0][k].0 + 0.1 * ranges[1][k].0;
            let u = 0.9 * ranges[0][k].1 + 0.1 * ranges[1][k].1;
            assert!(
                (lq.l - l).abs() < 1e-3 * (1.0 + l.abs()),
                "{} l {} vs {l}",
                c.spec.name,
                lq.l
            );
            assert!(
                (lq.u - u).abs() < 1e-3 * (1.0 + u.abs()),
                "{} u {} vs {u}",
                c.spec.name,
                lq.u
            );
            // The clip is one of the 50 candidates and no worse than the unclipped maximum.
            let bits = if kind == LayerKind::Fixed8 { 8 } else { 4 };
            let mse = |u_w: f32| -> f64 {
                let lv = quant::levels(bits);
                c.weight
                    .iter()
                    .map(|&w| ((w - quant::weight_fake_quant(w, u_w, lv)) as f64).powi(2))
                    .sum()
            };
            let wmax = c.weight.iter().copied().fold(f32::MIN, f32::max);
            assert!(lq.u_w <= wmax && lq.u_w >= 0.5 * wmax);
            assert!(mse(lq.u_w) <= mse(wmax));
        }
        // b_L: -1 below the 30th percentile of sensitivities, +1 above the 70th.
        let sens: Vec<f32> = report
            .sensitivity
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let adaptive: Vec<(String, f32)> = fp
            .convs
            .iter()
            .enumerate()
            .filter(|(_, c)| layer_kind(Some(mode), c.spec.role) == LayerKind::Adaptive)
            .map(|(k, c)| (c.spec.name.clone(), report.sensitivity[k]))
            .collect();
        let a: Vec<f32> = adaptive.iter().map(|x| x.1).collect();
        let (p30, p70) = (percentile(&a, 30.0), percentile(&a, 70.0));
        for (name, sk) in &adaptive {
            let want = if *sk < p30 {
                -1.0
            } else if *sk > p70 {
                1.0
            } else {
                0.0
            };
            assert_eq!(qc.layers[name].m, want, "{name}");
        }
        assert!(sens.iter().all(|&v| v > 0.0));
        // Image thresholds: EMA of the batch 10th / 90th percentiles of the complexities.
        let c: Vec<f32> = crops
            .iter()
            .map(|i| gradient_density(&i.data, i.width, i.height))
            .collect();
        let lo = 0.9 * percentile(&c[..4], 10.0) + 0.1 * percentile(&c[4..], 10.0);
        let hi = 0.9 * percentile(&c[..4], 90.0) + 0.1 * percentile(&c[4..], 90.0);
        assert!((qc.image_lower - lo).abs() < 1e-3 && (qc.image_upper - hi).abs() < 1e-3);
    }
    // --fixed: no layer adaptation.
    let s = Settings {
        fixed: true,
        batch: 4,
        ..Settings::reference(2)
    };
    let (q, _) = calib::calibrate(&fp, &crops, &s).unwrap();
    assert!(q.quant.unwrap().layers.values().all(|l| l.m == 0.0));
    // A quantized model cannot be calibrated again.
    let (q, _) = calib::calibrate(
        &fp,
        &crops,
        &Settings {
            batch: 4,
            ..Settings::reference(2)
        },
    )
    .unwrap();
    assert!(calib::calibrate(&q, &crops, &Settings::reference(2)).is_err());
    // The frequency metric: thresholds from its values, stored in the model, used by the
    // engine for b_I.
    let s = Settings {
        batch: 4,
        metric: ComplexityMetric::Frequency,
        ..Settings::reference(2)
    };
    let (q, report) = calib::calibrate(&fp, &crops, &s).unwrap();
    let qc = q.quant.clone().unwrap();
    assert_eq!(qc.complexity, ComplexityMetric::Frequency);
    let c: Vec<f32> = crops
        .iter()
        .map(|m| complexity::frequency_density(&m.data, m.width, m.height))
        .collect();
    assert_eq!(report.complexities, c);
    let lo = 0.9 * percentile(&c[..4], 10.0) + 0.1 * percentile(&c[4..], 10.0);
    assert!(
        (qc.image_lower - lo).abs() < 1e-3,
        "{} vs {lo}",
        qc.image_lower
    );
    let engine = gstadabm::engine::Engine::new(&q, 1).unwrap();
    let (_, stats) = engine
        .upscale(&crops[0], &gstadabm::engine::Options::default())
        .unwrap();
    assert_eq!(stats.complexity, c[0]);
}

/// `--sensitivity error`: s_k is the growth of the output MSE (against the floating-point
/// network, b_I = 0) when layer k alone is one bit lower, recomputed here from models built
/// by hand; b_L follows its percentiles; ranges and clips are those of the std calibration.
#[test]
fn error_sensitivity_is_the_measured_error_of_one_lowered_layer() {
    use adabm_tools::calib::Sensitivity;
    use gstadabm::engine::{Engine, Model, Options};
    let cfg = EdsrConfig {
        n_resblocks: 3,
        n_feats: 8,
        ..EdsrConfig::baseline(2)
    };
    let fp = random_model(cfg, 21).unwrap();
    let crops = crops();
    let base = Settings {
        batch: 4,
        ..Settings::reference(2)
    };
    let s = Settings {
        sensitivity: Sensitivity::Error { crops: 3 },
        ..base.clone()
    };
    let (q, report) = calib::calibrate(&fp, &crops, &s).unwrap();
    let (fixed, _) = calib::calibrate(
        &fp,
        &crops,
        &Settings {
            fixed: true,
            ..base.clone()
        },
    )
    .unwrap();
    let (qs, _) = calib::calibrate(&fp, &crops, &base).unwrap();
    let (qc, fc, sc) = (
        q.quant.as_ref().unwrap(),
        fixed.quant.as_ref().unwrap(),
        qs.quant.as_ref().unwrap(),
    );
    for (name, lq) in &qc.layers {
        let (f, st) = (&fc.layers[name], &sc.layers[name]);
        assert_eq!((lq.l, lq.u, lq.u_w), (f.l, f.u, f.u_w), "{name}");
        assert_eq!((lq.l, lq.u, lq.u_w), (st.l, st.u, st.u_w), "{name}");
    }
    let opts = Options {
        adaptive: false,
        ..Options::default()
    };
    let outputs = |m: &Model| -> Vec<Vec<f32>> {
        let e = Engine::new(m, 1).unwrap();
        crops[..3]
            .iter()
            .map(|c| e.upscale(c, &opts).unwrap().0.data)
            .collect()
    };
    let want = outputs(&fp);
    let mse = |m: &Model| -> f64 {
        let got = outputs(m);
        let (mut sum, mut n) = (0.0f64, 0usize);
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.iter().zip(w) {
                sum += ((a - b) as f64).powi(2);
                n += 1;
            }
        }
        sum / n as f64
    };
    let e0 = mse(&fixed);
    let mut adaptive = Vec::new();
    for (k, c) in fp.convs.iter().enumerate() {
        if layer_kind(Some(QuantMode::Fq), c.spec.role) != LayerKind::Adaptive {
            assert!(report.sensitivity[k].is_nan(), "{}", c.spec.name);
            continue;
        }
        let mut lowered = fc.clone();
        lowered.layers.get_mut(&c.spec.name).unwrap().m = -1.0;
        let m = Model::new(fp.config.clone(), Some(lowered), fp.convs.clone()).unwrap();
        let sk = (mse(&m) - e0) as f32;
        let got = report.sensitivity[k];
        assert!(
            (got - sk).abs() <= 1e-4 * sk.abs().max(1e-3),
            "{}: {got} vs {sk}",
            c.spec.name
        );
        adaptive.push((c.spec.name.clone(), sk));
    }
    assert_eq!(adaptive.len(), 7, "3 blocks x 2 + the last body conv");
    // (On random weights a lowered layer can even lower the error by chance: no sign check.)
    let ranks: Vec<f32> = adaptive.iter().map(|x| qc.layers[&x.0].m).collect();
    assert!(
        ranks.contains(&-1.0) && ranks.contains(&1.0),
        "both ends assigned: {adaptive:?}"
    );
    let a: Vec<f32> = adaptive.iter().map(|x| x.1).collect();
    let (p30, p70) = (percentile(&a, 30.0), percentile(&a, 70.0));
    for (name, sk) in &adaptive {
        let want = if *sk < p30 {
            -1.0
        } else if *sk > p70 {
            1.0
        } else {
            0.0
        };
        assert_eq!(qc.layers[name].m, want, "{name}");
    }
}
