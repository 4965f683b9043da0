//! Finite-difference checks of every training op's gradient, and agreement of the training
//! forward pass with the engine.

use adabm_tools::nn::{self, Edsr, Stack};
use gemm::Parallelism;
use gstadabm::engine::conv::{ConvWeights, FeatureMap};
use gstadabm::engine::model::EdsrConfig;
use gstadabm::engine::random::Rng;
use gstadabm::engine::{BitPlan, Network};

fn random_stack(s: &Stack, c: usize, rng: &mut Rng, a: f32) -> FeatureMap {
    let mut m = s.zeros(c);
    for i in 0..s.n {
        for y in 0..s.h {
            for v in m.row_mut(s.row(i, y)) {
                *v = rng.symmetric(a);
            }
        }
    }
    m
}

fn dot(a: &FeatureMap, b: &FeatureMap) -> f64 {
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum()
}

fn close(num: f64, ana: f64, what: &str) {
    let tol = 2e-2 * ana.abs().max(num.abs()) + 2e-3;
    assert!(
        (num - ana).abs() <= tol,
        "{what}: numerical {num} vs analytic {ana}"
    );
}

fn config(scale: u32) -> EdsrConfig {
    EdsrConfig {
        scale,
        n_resblocks: 2,
        n_feats: 4,
        res_scale: 0.5,
        rgb_range: 255.0,
        rgb_mean: [0.4488, 0.4371, 0.4040],
    }
}

#[test]
fn conv_gradients_match_finite_differences() {
    let mut rng = Rng::new(3);
    let s = Stack { n: 3, h: 4, w: 5 };
    let (cin, cout) = (3, 4);
    let w: Vec<f32> = (0..9 * cin * cout).map(|_| rng.symmetric(0.5)).collect();
    let b: Vec<f32> = (0..cout).map(|_| rng.symmetric(0.5)).collect();
    let mut cw = ConvWeights::from_oihw(cin, cout, &w, &b);
    let mut x = random_stack(&s, cin, &mut rng, 1.0);
    let g = random_stack(&s, cout, &mut rng, 1.0);
    let loss = |x: &FeatureMap, cw: &ConvWeights| dot(&nn::conv_forward(x, cw, &s), &g);
    let dx = nn::conv_backward_input(&g, &cw, &s);
    let pg = nn::conv_backward_params(&x, &g);
    let e = 1e-2f32;
    for j in (0..cw.w.len()).step_by(7) {
        let v = cw.w[j];
        cw.w[j] = v + e;
        let lp = loss(&x, &cw);
        cw.w[j] = v - e;
        let lm = loss(&x, &cw);
        cw.w[j] = v;
        close(
            (lp - lm) / (2.0 * e as f64),
            pg.w[j] as f64,
            &format!("dW[{j}]"),
        );
    }
    for j in 0..cout {
        let v = cw.bias[j];
        cw.bias[j] = v + e;
        let lp = loss(&x, &cw);
        cw.bias[j] = v - e;
        let lm = loss(&x, &cw);
        cw.bias[j] = v;
        close(
            (lp - lm) / (2.0 * e as f64),
            pg.b[j] as f64,
            &format!("db[{j}]"),
        );
    }
    for i in 0..s.n {
        for y in [0, s.h - 1] {
            for xx in [0, 2, s.w - 1] {
                let j = x.idx(s.row(i, y), xx) + 1;
                let v = x.data[j];
                x.data[j] = v + e;
                let lp = loss(&x, &cw);
                x.data[j] = v - e;
                let lm = loss(&x, &cw);
                x.data[j] = v;
                close(
                    (lp - lm) / (2.0 * e as f64),
                    dx.data[j] as f64,
                    &format!("dX[{j}]"),
                );
            }
        }
    }
    // Borders and separators of dX stay zero.
    for y in 0..dx.h {
        if (y + 1) % (s.h + 1) == 0 {
            assert!(dx.row(y).iter().all(|&v| v == 0.0), "separator row {y}");
        }
    }
}

#[test]
fn param_gradients_do_not_depend_on_thread_count() {
    let mut rng = Rng::new(5);
    let s = Stack { n: 4, h: 17, w: 23 };
    let x = random_stack(&s, 8, &mut rng, 1.0);
    let g = random_stack(&s, 6, &mut rng, 1.0);
    let run = |t| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| nn::conv_backward_params(&x, &g))
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn relu_shuffle_and_l1_gradients() {
    let mut rng = Rng::new(7);
    let s = Stack { n: 2, h: 3, w: 4 };
    for r in [2, 3] {
        let x = random_stack(&s, 2 * r * r, &mut rng, 1.0);
        let y = nn::pixel_shuffle(&x, &s, r);
        let g = random_stack(&s.scaled(r), 2, &mut rng, 1.0);
        // A permutation: <shuffle(x), g> = <x, unshuffle(g)>, and shuffle is a bijection.
        let back = nn::pixel_unshuffle(&g, &s, r);
        assert!((dot(&y, &g) - dot(&x, &back)).abs() < 1e-4);
        assert_eq!(nn::pixel_unshuffle(&y, &s, r), x);
    }
    let x = random_stack(&s, 3, &mut rng, 1.0);
    let mut y = x.clone();
    nn::relu(&mut y);
    let mut g = random_stack(&s, 3, &mut rng, 1.0);
    let g0 = g.clone();
    nn::relu_backward(&mut g, &y);
    for (j, &v) in x.data.iter().enumerate() {
        let want = if v > 0.0 { g0.data[j] } else { 0.0 };
        assert_eq!(g.data[j], want);
    }
    let t = random_stack(&s, 3, &mut rng, 1.0);
    let count = s.values(3);
    let (l, dl) = nn::l1_loss(&x, &t, count);
    let mut xp = x.clone();
    let e = 1e-3f32;
    for j in (0..x.data.len()).step_by(5) {
        if (x.data[j] - t.data[j]).abs() < 10.0 * e {
            continue;
        }
        xp.data[j] = x.data[j] + e;
        let (lp, _) = nn::l1_loss(&xp, &t, count);
        xp.data[j] = x.data[j];
        close((lp - l) / e as f64, dl.data[j] as f64, &format!("dL1[{j}]"));
    }
}

/// Whole-network gradient of a smooth loss <out, G>, for sampled parameters of every layer.
#[allow(clippy::needless_range_loop)] // k indexes parameters and gradients alike
#[test]
fn edsr_gradients_match_finite_differences() {
    for scale in [2u32, 3, 4] {
        let mut net = Edsr::init(config(scale), 11);
        let mut rng = Rng::new(scale as u64);
        let s = Stack { n: 2, h: 5, w: 6 };
        let x = random_stack(&s, 3, &mut rng, 1.0);
        let g = random_stack(&s.scaled(scale as usize), 3, &mut rng, 1.0);
        let (_, tape) = net.forward(x.clone(), &s);
        let grads = net.backward(tape, g.clone(), &s);
        // Small steps: a larger one crosses ReLU kinks of the 4-feature network.
        let e = 5e-4f32;
        for k in 0..net.params.len() {
            for j in [0, net.params[k].w.len() / 2, net.params[k].w.len() - 1] {
                let v = net.params[k].w[j];
                net.params[k].w[j] = v + e;
                let lp = dot(&net.forward(x.clone(), &s).0, &g);
                net.params[k].w[j] = v - e;
                let lm = dot(&net.forward(x.clone(), &s).0, &g);
                net.params[k].w[j] = v;
                close(
                    (lp - lm) / (2.0 * e as f64),
                    grads[k].w[j] as f64,
                    &format!("x{scale} layer {k} w[{j}]"),
                );
            }
            let v = net.params[k].bias[0];
            net.params[k].bias[0] = v + e;
            let lp = dot(&net.forward(x.clone(), &s).0, &g);
            net.params[k].bias[0] = v - e;
            let lm = dot(&net.forward(x.clone(), &s).0, &g);
            net.params[k].bias[0] = v;
            close(
                (lp - lm) / (2.0 * e as f64),
                grads[k].b[0] as f64,
                &format!("x{scale} layer {k} b[0]"),
            );
        }
    }
}

/// The training forward pass of a stack equals the engine's forward pass of each crop alone.
#[test]
fn stacked_forward_matches_engine_per_crop() {
    for scale in [2u32, 3, 4] {
        let net = Edsr::init(config(scale), 2);
        let engine_net = Network::new(&net.to_model().unwrap());
        let mut rng = Rng::new(9);
        let s = Stack { n: 3, h: 6, w: 7 };
        let x = random_stack(&s, 3, &mut rng, 50.0);
        let (y, _) = net.forward(x.clone(), &s);
        let hs = s.scaled(scale as usize);
        let plan = BitPlan {
            bits: vec![0; net.params.len()],
        };
        for i in 0..s.n {
            let mut xi = FeatureMap::zeros(s.h, s.w, 3);
            for r in 0..s.h {
                xi.row_mut(r).copy_from_slice(x.row(s.row(i, r)));
            }
            let yi = engine_net.forward(&xi, &plan, Parallelism::None, None);
            for r in 0..hs.h {
                for (a, b) in y.row(hs.row(i, r)).iter().zip(yi.row(r)) {
                    assert!(
                        (a - b).abs() < 1e-3,
                        "x{scale} crop {i} row {r}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
