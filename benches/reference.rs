//! Reference-engine benchmark: time per frame of an EDSR-baseline-size model (random weights),
//! floating point and AdaBM fake-quant, plus the 64->64 conv alone.
//!
//!   cargo bench --bench reference -- [--scale 2] [--width 320] [--height 180] [--frames 5]

use std::time::Instant;

use gemm::Parallelism;
use gstadabm::engine::conv::{self, ConvWeights, FeatureMap, conv3x3};
use gstadabm::engine::random::{Rng, quantize_on_synthetic, random_model, test_image};
use gstadabm::engine::{EdsrConfig, Engine, Options, QuantMode};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let scale = arg("--scale", 2) as u32;
    let (w, h) = (arg("--width", 320), arg("--height", 180));
    let frames = arg("--frames", 5).max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The 64->64 conv alone, as GMAC/s.
    let mut rng = Rng::new(7);
    let mut x = FeatureMap::zeros(h, w, 64);
    x.map_interior(|_| 0.0);
    for v in x.data.iter_mut() {
        *v = rng.symmetric(1.0);
    }
    x.clear_border_columns();
    let wts: Vec<f32> = (0..64 * 64 * 9).map(|_| rng.symmetric(0.05)).collect();
    let cw = ConvWeights::from_oihw(64, 64, &wts, &[0.0; 64]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // The direct AVX2 kernel and the im2col GEMM alternately, 10 rounds each (noisy hosts).
    let gmac = (w * h * 64 * 64 * 9) as f64 / 1e9;
    let mut times = [Vec::new(), Vec::new()];
    pool.install(|| {
        for _ in 0..10 {
            for (i, off) in [false, true].into_iter().enumerate() {
                conv::direct::set_off(off);
                let t = Instant::now();
                std::hint::black_box(conv3x3(&x, &cw, Parallelism::Rayon(threads)));
                times[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    });
    conv::direct::set_off(false);
    let [direct_ms, gemm_ms] = times.map(median);
    println!(
        "conv3x3 64->64 {w}x{h}: direct {direct_ms:.2} ms ({:.1} GMAC/s){}, im2col GEMM {gemm_ms:.2} ms ({:.1} GMAC/s): {:.2}x",
        gmac / direct_ms * 1e3,
        if conv::direct::available() {
            ""
        } else {
            " [not available: GEMM]"
        },
        gmac / gemm_ms * 1e3,
        gemm_ms / direct_ms
    );

    let fp = random_model(EdsrConfig::baseline(scale), 1).unwrap();
    let macs = fp.macs_per_lr_pixel() * (w * h) as f64 / 1e9;
    let img = test_image(w, h, 3);
    let mut rows = Vec::new();
    let fq = quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, 1).unwrap();
    let nonfq = quantize_on_synthetic(&fp, QuantMode::NonFq, 4, 4, 1).unwrap();
    for (name, model) in [
        ("fp32", &fp),
        ("fake-quant fq w4a4", &fq),
        ("fake-quant non-fq w4a4", &nonfq),
    ] {
        let engine = Engine::new(model, threads).unwrap();
        let _ = engine.upscale(&img, &Options::default()).unwrap();
        let times: Vec<f64> = (0..frames)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(engine.upscale(&img, &Options::default()).unwrap());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let ms = median(times);
        rows.push((name, ms));
        println!(
            "EDSR-baseline x{scale} {w}x{h} {name}: {ms:.0} ms/frame, {:.2} fps, {:.1} GMAC/s ({} threads)",
            1e3 / ms,
            macs / ms * 1e3,
            threads
        );
    }
    println!("fake-quant / fp32 time ratio: {:.2}", rows[1].1 / rows[0].1);

    // The fp32 network with the direct conv kernel and with the im2col GEMM, frame by frame
    // alternately.
    let engine = Engine::new(&fp, threads).unwrap();
    let mut t = [Vec::new(), Vec::new()];
    for _ in 0..frames {
        for (i, off) in [false, true].into_iter().enumerate() {
            conv::direct::set_off(off);
            let t0 = Instant::now();
            std::hint::black_box(engine.upscale(&img, &Options::default()).unwrap());
            t[i].push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    conv::direct::set_off(false);
    let [d, g] = t.map(median);
    println!(
        "EDSR-baseline x{scale} {w}x{h} fp32: direct convs {d:.0} ms/frame, im2col GEMM {g:.0} ms/frame: {:.2}x",
        g / d
    );
}
