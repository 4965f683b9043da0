//! Reference-engine behaviour: exactness on a hand-built model, agreement with a naive
//! direct implementation of the method page, tiling, and the fake-quant properties.

mod common;

use common::*;
use gstadabm::engine::model::{LayerKind, Role, layer_kind};
use gstadabm::engine::quant;
use gstadabm::engine::random::test_image;
use gstadabm::engine::{Engine, Execution, Image, Model, Options, QuantMode};

fn run(model: &Model, img: &Image, opts: &Options) -> (Image, gstadabm::engine::Stats) {
    Engine::new(model, 2).unwrap().upscale(img, opts).unwrap()
}

#[test]
fn hand_built_model_replicates_pixels_at_every_scale() {
    for scale in [2u32, 3, 4] {
        let model = replication_model(scale, 6, 3, [0.4488, 0.4371, 0.4040]);
        let img = test_image(9, 7, 11);
        let (out, stats) = run(&model, &img, &Options::default());
        let s = scale as usize;
        assert_eq!((out.width, out.height), (9 * s, 7 * s));
        assert!(stats.layer_bits.is_empty() && stats.fab == 0.0);
        for y in 0..7 * s {
            for x in 0..9 * s {
                for c in 0..3 {
                    let want = img.data[((y / s) * 9 + x / s) * 3 + c];
                    let got = out.data[(y * 9 * s + x) * 3 + c];
                    assert!(
                        (got - want).abs() < 1e-3,
                        "x{scale} ({x},{y},{c}): {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn quantized_residual_blocks_with_zero_res_scale_still_replicate() {
    // non-fq: only residual-block convs are quantized; with res_scale 0 their (quantized,
    // nonzero because zero is not on the weight grid) output is discarded exactly.
    let mut fp = replication_model(2, 6, 2, [0.0; 3]);
    fp.config.res_scale = 0.0;
    let q =
        gstadabm::engine::random::quantize_on_synthetic(&fp, QuantMode::NonFq, 4, 4, 1).unwrap();
    let img = test_image(5, 4, 2);
    let (out, stats) = run(&q, &img, &Options::default());
    assert_eq!(stats.layer_bits.len(), 4);
    for (i, v) in out.data.iter().enumerate() {
        let (p, c) = (i / 3, i % 3);
        let (y, x) = (p / 10, p % 10);
        assert!((v - img.data[((y / 2) * 5 + x / 2) * 3 + c]).abs() < 1e-3);
    }
}

/// Direct, loop-by-loop implementation of the method page on CHW buffers.
fn naive_forward(model: &Model, img: &Image, bits: &[u8]) -> Vec<f32> {
    let cfg = &model.config;
    let (w, h) = (img.width, img.height);
    let mode = model.quant.as_ref().map(|q| q.mode);
    let conv = |k: usize, x: &[f32], cin: usize, hh: usize, ww: usize| -> Vec<f32> {
        let c = &model.convs[k];
        let kind = layer_kind(mode, c.spec.role);
        let lq = model
            .quant
            .as_ref()
            .and_then(|q| q.layers.get(&c.spec.name));
        let (xq, wq): (Vec<f32>, Vec<f32>) = match (kind, lq) {
            (LayerKind::Float, _) | (_, None) => (x.to_vec(), c.weight.clone()),
            (_, Some(q)) => {
                let wb = if kind == LayerKind::Fixed8 {
                    8
                } else {
                    model.quant.as_ref().unwrap().w_bits
                };
                let n = quant::levels(bits[k]);
                let nw = quant::levels(wb);
                (
                    x.iter()
                        .map(|&v| quant::act_fake_quant(v, q.l, q.u, n))
                        .collect(),
                    c.weight
                        .iter()
                        .map(|&v| quant::weight_fake_quant(v, q.u_w, nw))
                        .collect(),
                )
            }
        };
        let cout = c.spec.cout;
        let mut out = vec![0.0f32; cout * hh * ww];
        for o in 0..cout {
            for y in 0..hh {
                for xx in 0..ww {
                    let mut acc = c.bias[o] as f64;
                    for i in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (sy, sx) =
                                    (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                                if sy < 0 || sx < 0 || sy >= hh as isize || sx >= ww as isize {
                                    continue; // zero padding after quantization
                                }
                                let v = xq[(i * hh + sy as usize) * ww + sx as usize];
                                acc += (v * wq[((o * cin + i) * 3 + ky) * 3 + kx]) as f64;
                            }
                        }
                    }
                    out[(o * hh + y) * ww + xx] = acc as f32;
                }
            }
        }
        out
    };
    let f = cfg.n_feats;
    let mut x = vec![0.0f32; 3 * h * w];
    for c in 0..3 {
        for p in 0..h * w {
            x[c * h * w + p] = img.data[p * 3 + c] - cfg.rgb_mean[c] * cfg.rgb_range;
        }
    }
    let head = conv(0, &x, 3, h, w);
    let mut res = head.clone();
    let mut k = 1;
    for _ in 0..cfg.n_resblocks {
        let t: Vec<f32> = conv(k, &res, f, h, w)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let t = conv(k + 1, &t, f, h, w);
        res.iter_mut()
            .zip(t)
            .for_each(|(r, v)| *r += cfg.res_scale * v);
        k += 2;
    }
    let mut x: Vec<f32> = conv(k, &res, f, h, w)
        .iter()
        .zip(&head)
        .map(|(a, b)| a + b)
        .collect();
    k += 1;
    let (mut hh, mut ww) = (h, w);
    while let Role::Up { r, .. } = model.convs[k].spec.role {
        let y = conv(k, &x, f, hh, ww);
        let mut z = vec![0.0f32; f * hh * r * ww * r];
        for c in 0..f {
            for i in 0..r {
                for j in 0..r {
                    for yy in 0..hh {
                        for xx in 0..ww {
                            z[(c * hh * r + yy * r + i) * ww * r + xx * r + j] =
                                y[((c * r * r + i * r + j) * hh + yy) * ww + xx];
                        }
                    }
                }
            }
        }
        x = z;
        hh *= r;
        ww *= r;
        k += 1;
    }
    let out = conv(k, &x, f, hh, ww);
    let mut rgb = vec![0.0f32; hh * ww * 3];
    for c in 0..3 {
        for p in 0..hh * ww {
            rgb[p * 3 + c] = out[c * hh * ww + p] + cfg.rgb_mean[c] * cfg.rgb_range;
        }
    }
    rgb
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn engine_matches_naive_implementation_of_the_method() {
    let img = test_image(7, 5, 4);
    for scale in [2u32, 3, 4] {
        for model in [
            small_fp(scale, 3),
            small_quant(scale, QuantMode::Fq, 3),
            small_quant(scale, QuantMode::NonFq, 3),
        ] {
            let engine = Engine::new(&model, 2).unwrap();
            let (out, stats) = engine.upscale(&img, &Options::default()).unwrap();
            let (plan, b_i) = engine
                .bit_plan(stats.complexity, &Options::default())
                .unwrap();
            assert_eq!(b_i, stats.image_bits);
            let want = naive_forward(&model, &img, &plan.bits);
            let d = max_abs_diff(&out.data, &want);
            assert!(
                d < 2e-3,
                "x{scale} {:?}: max |engine - naive| = {d}",
                model.quant.as_ref().map(|q| q.mode)
            );
        }
    }
}

#[test]
fn tiled_and_untiled_agree() {
    // Bound: floating point within 1e-3 (summation order only); fake-quant: identical 8-bit
    // output on at least 99.9% of values and never more than one level apart.
    let img = test_image(75, 53, 9);
    for model in [
        small_fp(2, 5),
        small_quant(2, QuantMode::Fq, 5),
        small_quant(4, QuantMode::NonFq, 5),
    ] {
        let whole = run(&model, &img, &Options::default());
        let tiled = run(
            &model,
            &img,
            &Options {
                tile_size: 16,
                ..Options::default()
            },
        );
        assert_eq!(whole.1.tiles, 1);
        assert!(tiled.1.tiles >= 12, "{} tiles", tiled.1.tiles);
        assert_eq!(whole.1.layer_bits, tiled.1.layer_bits);
        let (a, b) = (whole.0.to_rgb8(), tiled.0.to_rgb8());
        if model.quant.is_none() {
            assert!(max_abs_diff(&whole.0.data, &tiled.0.data) < 1e-3);
        }
        let off = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        let worst = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        assert!(
            off * 1000 <= a.len() && worst <= 1,
            "{off} of {} differ, worst {worst}",
            a.len()
        );
    }
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn quantization_error_falls_as_bits_rise() {
    let fp = small_fp(2, 8);
    let q = gstadabm::engine::random::quantize_on_synthetic(&fp, QuantMode::Fq, 8, 4, 8).unwrap();
    let img = test_image(24, 20, 1);
    let (reference, _) = run(&fp, &img, &Options::default());
    let errs: Vec<f64> = (2u8..=8)
        .map(|b| {
            let opts = Options {
                adaptive: false,
                base_bits: Some(b),
                ..Options::default()
            };
            mse(&run(&q, &img, &opts).0.data, &reference.data)
        })
        .collect();
    for pair in errs.windows(2) {
        assert!(pair[1] < pair[0], "error must fall with bits: {errs:?}");
    }
    assert!(
        errs[6] * 50.0 < errs[0],
        "8 bits should be far better than 2: {errs:?}"
    );
}

#[test]
fn image_bits_follow_the_thresholds() {
    let q = small_quant(2, QuantMode::Fq, 2);
    let img = test_image(16, 12, 3);
    let c = run(&q, &img, &Options::default()).1.complexity;
    let base = |o: Options| run(&q, &img, &o).1;
    let low = base(Options {
        image_lower: Some(c + 1.0),
        image_upper: Some(c + 2.0),
        ..Options::default()
    });
    let mid = base(Options {
        image_lower: Some(c - 1.0),
        image_upper: Some(c + 1.0),
        ..Options::default()
    });
    let high = base(Options {
        image_lower: Some(c - 2.0),
        image_upper: Some(c - 1.0),
        ..Options::default()
    });
    let off = base(Options {
        adaptive: false,
        image_lower: Some(c + 1.0),
        image_upper: Some(c + 2.0),
        ..Options::default()
    });
    assert_eq!(
        (
            low.image_bits,
            mid.image_bits,
            high.image_bits,
            off.image_bits
        ),
        (-1, 0, 1, 0)
    );
    for k in 0..mid.layer_bits.len() {
        assert_eq!(low.layer_bits[k] + 1, mid.layer_bits[k]);
        assert_eq!(high.layer_bits[k], mid.layer_bits[k] + 1);
    }
    assert!((high.fab - mid.fab - 1.0).abs() < 1e-6 && (mid.fab - low.fab - 1.0).abs() < 1e-6);
}

#[test]
fn layer_bits_are_as_stored() {
    let mut q = small_quant(2, QuantMode::Fq, 4);
    let factors = [-1.0f32, 0.0, 1.0, 0.6, -0.4];
    let quant = q.quant.as_mut().unwrap();
    let adaptive: Vec<String> = q
        .convs
        .iter()
        .filter(|c| layer_kind(Some(QuantMode::Fq), c.spec.role) == LayerKind::Adaptive)
        .map(|c| c.spec.name.clone())
        .collect();
    assert_eq!(adaptive.len(), 5);
    for (name, m) in adaptive.iter().zip(factors) {
        quant.layers.get_mut(name).unwrap().m = m;
    }
    let img = test_image(10, 8, 1);
    let opts = Options {
        adaptive: false,
        base_bits: Some(5),
        ..Options::default()
    };
    let (_, st) = run(&q, &img, &opts);
    assert_eq!(st.layer_bits, vec![4, 5, 6, 6, 5]);
    assert!((st.fab - 26.0 / 5.0).abs() < 1e-6);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let engine = Engine::new(&small_fp(2, 1), 1).unwrap();
    let empty = Image {
        width: 0,
        height: 3,
        data: vec![],
    };
    assert!(engine.upscale(&empty, &Options::default()).is_err());
    let short = Image {
        width: 4,
        height: 4,
        data: vec![0.0; 10],
    };
    assert!(engine.upscale(&short, &Options::default()).is_err());
    let img = test_image(4, 4, 1);
    let err = engine
        .upscale(
            &img,
            &Options {
                tile_size: 3,
                ..Options::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("tile size"), "{err}");
    let one = test_image(1, 1, 1);
    let (out, _) = engine.upscale(&one, &Options::default()).unwrap();
    assert_eq!((out.width, out.height), (2, 2));
}

/// The f32 engine's fused ReLU and residual updates (a block's convs on the Winograd path
/// store `max(v, 0)` and `res + k·v` themselves) give the bits of the passes they replace:
/// floating-point and fake-quant models, res_scale 1 and 0.1, 16 and 32 features, several
/// sizes (1x1, odd, a partial Winograd tile).
#[test]
fn fused_block_passes_give_the_same_bits() {
    use gstadabm::engine::conv::{ConvWeights, post_fuses};
    use gstadabm::engine::edsr::set_fuse;
    use gstadabm::engine::random::{quantize_on_synthetic, random_model};
    let fuses = post_fuses(&ConvWeights::from_oihw(
        16,
        16,
        &[0.0; 16 * 16 * 9],
        &[0.0; 16],
    ));
    if !fuses {
        eprintln!(
            "SKIP fused_block_passes_give_the_same_bits: no Winograd path here (no AVX2+FMA, no NEON)"
        );
        return;
    }
    for (scale, feats, res_scale, seed) in [(2, 32, 1.0, 1), (3, 16, 0.1, 2), (4, 32, 0.1, 3)] {
        let mut cfg = small_config(scale, feats, 3);
        cfg.res_scale = res_scale;
        let fp = random_model(cfg, seed).unwrap();
        let fq = quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, seed).unwrap();
        // The quantized model on the fake-quant f32 engine (its default is the integer one).
        for model in [fp, fq] {
            let engine = match model.quant {
                None => Engine::new(&model, 2),
                Some(_) => Engine::with_execution(&model, 2, Execution::FakeQuant),
            }
            .unwrap();
            for (w, h) in [(1, 1), (23, 17), (40, 9)] {
                let img = test_image(w, h, seed);
                set_fuse(false);
                let passes = engine.upscale(&img, &Options::default()).unwrap().0;
                set_fuse(true);
                let fused = engine.upscale(&img, &Options::default()).unwrap().0;
                let same = passes
                    .data
                    .iter()
                    .zip(&fused.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same && passes.data.len() == fused.data.len(),
                    "x{scale} {feats} features res_scale {res_scale} quant {} {w}x{h}",
                    model.quant.is_some()
                );
            }
        }
    }
}
