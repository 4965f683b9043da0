//! Fine-tuning: the quantizer gradients against finite differences of the frozen-residual
//! surrogate, bit-aware clipping, and the schedule (loss falls, deterministic).

use adabm_tools::calib::{self, Settings as CalSettings};
use adabm_tools::finetune::{self, Group, LossWeights, QNet, Settings, Surrogate};
use adabm_tools::nn::Stack;
use gstadabm::engine::conv::FeatureMap;
use gstadabm::engine::model::{EdsrConfig, LayerKind};
use gstadabm::engine::quant;
use gstadabm::engine::random::{Rng, random_model, test_image};
use gstadabm::engine::{Image, Model, QuantMode};

fn tiny(scale: u32, mode: QuantMode, a_bits: u8) -> (Model, Vec<Image>) {
    let cfg = EdsrConfig {
        n_resblocks: 2,
        n_feats: 4,
        ..EdsrConfig::baseline(scale)
    };
    let fp = random_model(cfg, 5).unwrap();
    let crops: Vec<Image> = (0..4).map(|i| test_image(7, 6, 30 + i)).collect();
    let s = CalSettings {
        mode,
        a_bits,
        batch: 2,
        ..CalSettings::reference(scale)
    };
    let (q, _) = calib::calibrate(&fp, &crops, &s).unwrap();
    (q, crops)
}

/// A tiny network with layer factors away from the rounding boundaries (so that every b_L
/// case appears and tanh' is not tiny) and image thresholds that put the two crops on both
/// sides of the band, close enough for a usable soft gradient.
fn prepared(scale: u32, mode: QuantMode) -> (QNet, Vec<Image>) {
    let (q, crops) = tiny(scale, mode, 2);
    let mut net = QNet::from_model(&q).unwrap();
    // Calibration puts the bounds exactly on the extreme values of these crops, where the
    // loss has a kink (one-sided derivatives differ); move them off it.
    for k in 0..net.specs.len() {
        if net.slot[k].is_some() {
            let (li, ui, wi) = (
                net.index(k, 0).unwrap(),
                net.index(k, 1).unwrap(),
                net.index(k, 2).unwrap(),
            );
            let r = net.theta[ui] - net.theta[li];
            net.theta[li] += 0.031 * r;
            net.theta[ui] -= 0.029 * r;
            net.theta[wi] *= 0.973;
        }
    }
    let ms = [0.3f32, 0.8, -0.9, -0.2, 0.7];
    for (i, k) in net.adaptive().collect::<Vec<_>>().into_iter().enumerate() {
        let mi = net.index(k, 3).unwrap();
        net.theta[mi] = ms[i % ms.len()];
    }
    let b = net.batch(&[&crops[0], &crops[1]]);
    let (c0, c1) = (b.c[0].min(b.c[1]), b.c[0].max(b.c[1]));
    let gap = (c1 - c0).max(1.0);
    let (il, iu) = net.img_indices();
    net.theta[il] = c0 - 0.4 * gap;
    net.theta[iu] = c0 + 0.6 * gap;
    (net, crops)
}

fn loss_at(
    net: &mut QNet,
    b: &finetune::Batch,
    teacher: &finetune::Pass,
    sur: &mut Surrogate,
    lw: &LossWeights,
) -> f64 {
    let pass = net.forward(b, true, None, Some(sur));
    net.loss_and_grad(&pass, teacher, b, lw, false).0.total()
}

fn check_gradients(scale: u32, mode: QuantMode) {
    let (mut net, crops) = prepared(scale, mode);
    let b = net.batch(&[&crops[0], &crops[1]]);
    let teacher = net.forward(&b, false, None, None);
    let lw = LossWeights {
        pix: 1.0,
        skt: 10.0,
        bit: 50.0,
        with_bit: true,
    };
    let pass = net.forward(&b, true, None, None);
    assert_ne!(
        pass.b_i[0], pass.b_i[1],
        "the crops should get different image bits"
    );
    let (losses, g) = net.loss_and_grad(&pass, &teacher, &b, &lw, true);
    assert!(
        losses.bit > 0.0,
        "avg bits {} should exceed the base so that L_bit acts",
        losses.avg_bits
    );
    // The surrogate at its recording point is the hard forward pass, to the bit.
    let mut sur = Surrogate::record();
    let rec = net.forward(&b, true, None, Some(&mut sur));
    assert_eq!(rec.out.data, pass.out.data);
    sur.freeze();
    let frozen = net.forward(&b, true, None, Some(&mut sur));
    assert_eq!(frozen.out.data, pass.out.data);

    let mut checked = Vec::new();
    // (name, index in theta, step of the central difference: small against the parameter's
    // own scale, so that few values cross a clamp bound between the two evaluations).
    let mut idx: Vec<(String, usize, f32)> = Vec::new();
    for k in 0..net.specs.len() {
        if net.slot[k].is_none() {
            continue;
        }
        let name = &net.specs[k].name;
        let (li, ui, wi) = (
            net.index(k, 0).unwrap(),
            net.index(k, 1).unwrap(),
            net.index(k, 2).unwrap(),
        );
        let r = net.theta[ui] - net.theta[li];
        // Never step over a kink: a bound must not cross any of the values it clamps.
        let x = pass.input(k).unwrap();
        let gap = |bound: f32| {
            (0..x.h)
                .flat_map(|y| x.row(y).iter().map(move |&v| (v - bound).abs()))
                .fold(f32::INFINITY, f32::min)
        };
        let uw = net.theta[wi];
        let wgap = net.weights[k]
            .w
            .iter()
            .map(|w| (w.abs() - uw).abs())
            .fold(f32::INFINITY, f32::min);
        idx.push((
            format!("{name}.l"),
            li,
            (2e-4 * r).min(0.5 * gap(net.theta[li])),
        ));
        idx.push((
            format!("{name}.u"),
            ui,
            (2e-4 * r).min(0.5 * gap(net.theta[ui])),
        ));
        idx.push((format!("{name}.u_w"), wi, (1e-2 * uw).min(0.5 * wgap)));
        if net.kinds[k] == LayerKind::Adaptive {
            idx.push((format!("{name}.m"), net.index(k, 3).unwrap(), 1e-3));
        }
    }
    let (il, iu) = net.img_indices();
    let r = net.theta[iu] - net.theta[il];
    idx.push(("l_i2b".into(), il, 1e-3 * r));
    idx.push(("u_i2b".into(), iu, 1e-3 * r));
    let mut bad = Vec::new();
    let mut nonzero = 0;
    for (name, i, e) in &idx {
        let v0 = net.theta[*i];
        let ana = g[*i];
        if ana.abs() > 1e-6 {
            nonzero += 1;
        }
        // Central differences at the step, half and a quarter of it. The loss is computed in
        // f32, so for small gradients the estimates scatter (the rounding of every value moves
        // with the parameter), and a step can cross a kink downstream (a ReLU, another layer's
        // clamp). The analytic gradient must agree with one estimate or lie within their
        // spread; a wrong one (sign, factor, missing term) does neither once the estimates
        // agree with each other, as they do for every gradient above the noise.
        let mut nums = Vec::new();
        for e in [*e, 0.5 * *e, 0.25 * *e] {
            net.theta[*i] = v0 + e;
            let fp = loss_at(&mut net, &b, &teacher, &mut sur, &lw);
            net.theta[*i] = v0 - e;
            let fm = loss_at(&mut net, &b, &teacher, &mut sur, &lw);
            net.theta[*i] = v0;
            nums.push((fp - fm) / (2.0 * e as f64));
        }
        let tol = |num: f64| 0.03 * num.abs().max(ana.abs()) + 2e-4;
        let (lo, hi) = nums
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &n| {
                (a.min(n), b.max(n))
            });
        let agrees = nums.iter().any(|&n| (n - ana).abs() <= tol(n))
            || (lo - tol(lo) <= ana && ana <= hi + tol(hi));
        if !agrees {
            bad.push(format!(
                "{name}: numerical {:.6} / {:.6} / {:.6} (steps e, e/2, e/4), analytic {ana:.6}",
                nums[0], nums[1], nums[2]
            ));
        }
        checked.push(name.clone());
    }
    assert!(
        bad.is_empty(),
        "x{scale} {mode:?}: {} of {} gradients differ:\n{}",
        bad.len(),
        checked.len(),
        bad.join("\n")
    );
    assert!(
        nonzero * 10 >= idx.len() * 8,
        "too many zero gradients ({nonzero} of {})",
        idx.len()
    );
}

#[test]
fn quantizer_gradients_match_finite_differences_fq_x2() {
    check_gradients(2, QuantMode::Fq);
}

#[test]
fn quantizer_gradients_match_finite_differences_fq_x4() {
    check_gradients(4, QuantMode::Fq);
}

#[test]
fn quantizer_gradients_match_finite_differences_non_fq_x3() {
    check_gradients(3, QuantMode::NonFq);
}

#[test]
fn bit_aware_clipping_tightens_low_bit_layers() {
    let (q, _) = tiny(2, QuantMode::Fq, 4);
    let mut net = QNet::from_model(&q).unwrap();
    let k = net.adaptive().next().unwrap();
    // A bell-shaped input with a few outliers: the MSE-optimal range shrinks with the bits.
    let s = Stack { n: 2, h: 10, w: 12 };
    let mut x = s.zeros(net.specs[k].cin);
    let mut rng = Rng::new(3);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for i in 0..s.n {
        for y in 0..s.h {
            for v in x.row_mut(s.row(i, y)) {
                let g: f32 = (0..6).map(|_| rng.symmetric(1.0)).sum();
                *v = 3.0 + g;
                lo = lo.min(*v);
                hi = hi.max(*v);
            }
        }
    }
    let st = Settings::default();
    let (li, ui, mi) = (
        net.index(k, 0).unwrap(),
        net.index(k, 1).unwrap(),
        net.index(k, 3).unwrap(),
    );
    let mse = |x: &FeatureMap, l: f32, u: f32, bits: u8| -> f64 {
        let n = quant::levels(bits);
        (0..x.h)
            .filter(|y| y % (s.h + 1) != s.h)
            .flat_map(|y| x.row(y).to_vec())
            .map(|v| ((v - quant::act_fake_quant(v, l, u, n)) as f64).powi(2))
            .sum()
    };
    let mut shrink = Vec::new();
    for m in [-1.0f32, 1.0] {
        net.theta[li] = lo;
        net.theta[ui] = hi;
        net.theta[mi] = m;
        net.clip_layer(k, &x, &s, &st);
        let (l, u) = (net.theta[li], net.theta[ui]);
        // The result is 0.5·calibrated + 0.5·the best candidate [lo, hi]·(1 − 0.01 i).
        let bits = quant::adaptive_bits(4, 0, m as i32);
        let cand: Vec<f64> = (0..100)
            .map(|i| {
                let g = 1.0 - 0.01 * i as f32;
                mse(&x, lo * g, hi * g, bits)
            })
            .collect();
        let best = (0..100).fold(0, |b, i| if cand[i] < cand[b] { i } else { b });
        let f = 1.0 - 0.01 * best as f32;
        assert!(
            (l - (0.5 * lo + 0.5 * lo * f)).abs() < 1e-5,
            "l {l} vs candidate {best}"
        );
        assert!(
            (u - (0.5 * hi + 0.5 * hi * f)).abs() < 1e-5,
            "u {u} vs candidate {best}"
        );
        shrink.push(f);
    }
    assert!(
        shrink[0] < shrink[1],
        "3-bit range {} should be tighter than the 5-bit one {}",
        shrink[0],
        shrink[1]
    );
}

#[test]
fn fine_tuning_lowers_the_distillation_loss_and_is_deterministic() {
    let (q, _) = tiny(2, QuantMode::Fq, 2);
    let crops: Vec<Image> = (0..6).map(|i| test_image(8, 8, 60 + i)).collect();
    let eval = |net: &mut QNet| -> f64 {
        let lw = LossWeights {
            pix: 1.0,
            skt: 10.0,
            bit: 0.0,
            with_bit: false,
        };
        crops
            .chunks(2)
            .map(|c| {
                let b = net.batch(&[&c[0], &c[1]]);
                let t = net.forward(&b, false, None, None);
                let p = net.forward(&b, true, None, None);
                net.loss_and_grad(&p, &t, &b, &lw, false).0.total()
            })
            .sum()
    };
    let st = Settings {
        epochs: 6,
        iters: 8,
        ..Settings::default()
    };
    let mut net = QNet::from_model(&q).unwrap();
    let before = eval(&mut net);
    let mut seen = Vec::new();
    let logs =
        finetune::finetune(&mut net, &crops, &st, |p| seen.push((p.epoch, p.group))).unwrap();
    assert_eq!(logs.len(), 6);
    assert_eq!(seen.len(), 48);
    let groups: Vec<Group> = logs.iter().map(|l| l.group).collect();
    assert_eq!(
        groups,
        [
            Group::WeightClip,
            Group::Range,
            Group::Bits,
            Group::WeightClip,
            Group::Range,
            Group::Bits
        ]
    );
    let after = eval(&mut net);
    assert!(
        after < 0.9 * before,
        "distillation loss {before:.4} → {after:.4}"
    );
    let mut again = QNet::from_model(&q).unwrap();
    finetune::finetune(&mut again, &crops, &st, |_| {}).unwrap();
    assert_eq!(net.theta, again.theta, "same seed, same result");
    // The teacher's outputs cached once (the default) or recomputed for every batch: the same
    // parameters to the bit.
    let mut recomputed = QNet::from_model(&q).unwrap();
    let no_cache = Settings {
        teacher_cache_mb: 0,
        ..st.clone()
    };
    finetune::finetune(&mut recomputed, &crops, &no_cache, |_| {}).unwrap();
    assert_eq!(
        net.theta, recomputed.theta,
        "teacher cache changes the result"
    );
    // The model round-trips and the engine runs it.
    let m = net.to_model(&q).unwrap();
    let back = QNet::from_model(&Model::from_bytes(&m.to_bytes().unwrap()).unwrap()).unwrap();
    assert_eq!(back.theta, net.theta);
}

#[test]
fn a_floating_point_model_is_refused() {
    let cfg = EdsrConfig {
        n_resblocks: 1,
        n_feats: 4,
        ..EdsrConfig::baseline(2)
    };
    let fp = random_model(cfg, 1).unwrap();
    let e = QNet::from_model(&fp).unwrap_err().to_string();
    assert!(e.contains("adabm-calibrate"), "{e}");
}

#[test]
fn structure_distance_gradient_matches_finite_differences() {
    let mut rng = Rng::new(8);
    let mut f = FeatureMap::zeros(5, 6, 3);
    let mut t = FeatureMap::zeros(5, 6, 3);
    for y in 0..5 {
        for (a, b) in f.row_mut(y).iter_mut().zip(t.row_mut(y).iter_mut()) {
            *b = rng.symmetric(2.0);
            *a = 0.6 * *b + rng.symmetric(1.0) + 0.3;
        }
    }
    let (len, g) = finetune::skt_distance(&f, &t, 1.0);
    assert!(len > 0.3, "{len}");
    for i in (0..f.data.len()).filter(|&i| g.data[i] != 0.0).step_by(7) {
        let v = f.data[i];
        let e = 1e-3;
        f.data[i] = v + e;
        let p = finetune::skt_distance(&f, &t, 1.0).0;
        f.data[i] = v - e;
        let m = finetune::skt_distance(&f, &t, 1.0).0;
        f.data[i] = v;
        let num = (p - m) / (2.0 * e as f64);
        assert!(
            (num - g.data[i] as f64).abs() < 1e-3 * num.abs().max(1e-2),
            "{i}: {num} vs {}",
            g.data[i]
        );
    }
}
