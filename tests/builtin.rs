//! The built-in models: they load, they are the size the docs say, and they upscale better
//! than bicubic interpolation on images they were not trained on.

use gstadabm::engine::builtin::{self, MODELS};
use gstadabm::engine::metrics::psnr_y;
use gstadabm::engine::random::Rng;
use gstadabm::engine::resize::imresize_bicubic;
use gstadabm::engine::{Engine, Image, Options};

#[test]
fn every_builtin_model_loads_and_is_small() {
    for b in MODELS {
        let m = b.load().unwrap_or_else(|e| panic!("{}: {e}", b.name));
        assert_eq!(m.config.scale, b.scale, "{}", b.name);
        assert!(
            b.bytes.len() < 4 << 20,
            "{} is {} bytes",
            b.name,
            b.bytes.len()
        );
    }
    assert_eq!(
        builtin::find(0, "fp32").unwrap().scale,
        builtin::DEFAULT_SCALE
    );
    for scale in [2, 3, 4] {
        for precision in ["fp32", "w8a6", "w4a4"] {
            assert_eq!(builtin::find(scale, precision).unwrap().scale, scale);
        }
    }
    let err = builtin::find(5, "fp32").unwrap_err().to_string();
    assert!(
        err.contains("no built-in x5") && err.contains("x3 w4a4"),
        "{err}"
    );
}

/// A synthetic HR scene of sharp-edged shapes — discs, rings and bars at random angles over a
/// smooth background, anti-aliased by 4x4 supersampling — the kind of structure SR restores.
fn shapes(w: usize, h: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let shapes: Vec<[f32; 8]> = (0..60)
        .map(|_| {
            [
                rng.uniform() * w as f32,
                rng.uniform() * h as f32,
                3.0 + rng.uniform() * 0.12 * w as f32,
                rng.uniform() * std::f32::consts::PI,
                rng.uniform(),
                40.0 + 180.0 * rng.uniform(),
                40.0 + 180.0 * rng.uniform(),
                40.0 + 180.0 * rng.uniform(),
            ]
        })
        .collect();
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0f32; 3];
            for sy in 0..4 {
                for sx in 0..4 {
                    let (px, py) = (
                        x as f32 + (sx as f32 + 0.5) / 4.0,
                        y as f32 + (sy as f32 + 0.5) / 4.0,
                    );
                    let mut c = [
                        90.0 + 60.0 * px / w as f32,
                        110.0 + 40.0 * py / h as f32,
                        130.0 - 30.0 * px / w as f32,
                    ];
                    for s in &shapes {
                        let (dx, dy) = (px - s[0], py - s[1]);
                        let inside = if s[4] < 0.4 {
                            dx * dx + dy * dy < s[2] * s[2]
                        } else if s[4] < 0.7 {
                            let r = (dx * dx + dy * dy).sqrt();
                            r < s[2] && r > 0.6 * s[2]
                        } else {
                            let (c0, s0) = (s[3].cos(), s[3].sin());
                            (dx * c0 + dy * s0).abs() < s[2]
                                && (dy * c0 - dx * s0).abs() < 0.15 * s[2] + 1.5
                        };
                        if inside {
                            c = [s[5], s[6], s[7]];
                        }
                    }
                    for k in 0..3 {
                        acc[k] += c[k] / 16.0;
                    }
                }
            }
            for k in 0..3 {
                out[(y * w + x) * 3 + k] = acc[k].round() as u8;
            }
        }
    }
    out
}

/// On that synthetic scene (nothing like it is in the training set), the LR made by MATLAB
/// bicubic and upscaled by the fp32 and w8a6 built-ins must beat bicubic upscaling by at least
/// 1 dB in Y PSNR (a random or untrained model falls far below bicubic); w8a6 stays within
/// 0.5 dB of fp32, and the calibration-only w4a4 within 3.5 dB.
#[test]
fn builtin_models_beat_bicubic() {
    let mut fp32 = std::collections::HashMap::new();
    let mut rows = Vec::new();
    for b in MODELS {
        let s = b.scale as usize;
        let (w, h) = (64 * s, 48 * s);
        let hr = shapes(w, h, 17);
        let (lr, lw, lh) = imresize_bicubic(&hr, w, h, 3, 1.0 / s as f64);
        let (bic, _, _) = imresize_bicubic(&lr, lw, lh, 3, s as f64);
        let engine = Engine::new(&b.load().unwrap(), 0).unwrap();
        let (sr, _) = engine
            .upscale(&Image::from_rgb8(lw, lh, &lr), &Options::default())
            .unwrap();
        let p_model = psnr_y(&sr.to_rgb8(), &hr, w, h, s);
        let p_bic = psnr_y(&bic, &hr, w, h, s);
        eprintln!("{}: model {p_model:.2} dB, bicubic {p_bic:.2} dB", b.name);
        if b.precision == "fp32" {
            fp32.insert(b.scale, p_model);
        }
        rows.push((b, p_model, p_bic));
    }
    for (b, p_model, p_bic) in rows {
        let p_fp = fp32[&b.scale];
        match b.precision {
            "fp32" | "w8a6" => assert!(
                p_model > p_bic + 1.0 && p_model > p_fp - 0.5,
                "{}: {p_model:.2} dB (fp32 {p_fp:.2}, bicubic {p_bic:.2})",
                b.name
            ),
            _ => assert!(
                p_model > p_fp - 3.5,
                "{}: {p_model:.2} dB (fp32 {p_fp:.2})",
                b.name
            ),
        }
    }
}
