//! Reference-engine benchmark: time per frame of an EDSR-baseline-size model (random weights),
//! floating point and AdaBM fake-quant, plus the 64->64, 64->256, 64->3 and 32->3 convs alone
//! through each f32 conv path (Winograd, direct on 256-bit and on 512-bit vectors, im2col GEMM).
//!
//!   cargo bench --bench reference -- [--scale 2] [--width 320] [--height 180] [--frames 5]
//!     [--convs-only]

use std::time::Instant;

use gemm::Parallelism;
use gstadabm::engine::conv::{self, ConvPath, ConvWeights, FeatureMap};
use gstadabm::engine::random::{Rng, quantize_on_synthetic, random_model, test_image};
use gstadabm::engine::{EdsrConfig, Engine, Execution, Options, QuantMode};

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

    // The conv alone, as GMAC/s (MACs of the plain convolution), through each f32 path this
    // host can run, alternately, 10 rounds each (noisy hosts).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // The direct kernels twice: on 256-bit vectors, and on 512-bit ones where the CPU has
    // AVX-512 F (the default there; the same bits).
    let paths = [
        ("Winograd", ConvPath::Winograd, true),
        ("Winograd2", ConvPath::Winograd2, true),
        ("Direct AVX2", ConvPath::Direct, false),
        ("Direct", ConvPath::Direct, true),
        ("Gemm", ConvPath::Gemm, true),
    ];
    // The built-ins' RGB tail is 32 -> 3; the heads 3 -> 64 (EDSR-baseline) and 3 -> 32.
    for (cin, cout) in [(64, 64), (64, 256), (64, 3), (32, 3), (3, 64), (3, 32)] {
        let mut rng = Rng::new(7);
        let mut x = FeatureMap::zeros(h, w, cin);
        for v in x.data.iter_mut() {
            *v = rng.symmetric(1.0);
        }
        x.data[..(w + 3) * cin].fill(0.0);
        let n = x.data.len();
        x.data[n - (w + 3) * cin..].fill(0.0);
        x.clear_border_columns();
        let wts: Vec<f32> = (0..cin * cout * 9).map(|_| rng.symmetric(0.05)).collect();
        let cw = ConvWeights::from_oihw(cin, cout, &wts, &vec![0.0; cout]);
        let gmac = (w * h * cin * cout * 9) as f64 / 1e9;
        let mut out = vec![0.0f32; conv::rows_len(w, 0, h) * cout];
        let mut times = [const { Vec::new() }; 5];
        pool.install(|| {
            for _ in 0..10 {
                for (i, &(_, p, wide)) in paths.iter().enumerate() {
                    if p.can_run(cin, cout) {
                        conv::direct::set_avx512(wide);
                        let t = Instant::now();
                        conv::conv3x3_rows_by(
                            p,
                            &x,
                            &cw,
                            0,
                            h,
                            &mut out,
                            Parallelism::Rayon(threads),
                        );
                        std::hint::black_box(&out);
                        times[i].push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        });
        conv::direct::set_avx512(true);
        let cells: Vec<String> = paths
            .iter()
            .zip(times)
            .filter(|(_, t)| !t.is_empty())
            .map(|((name, ..), t)| {
                let ms = median(t);
                format!("{name} {ms:.2} ms ({:.1} GMAC/s)", gmac / ms * 1e3)
            })
            .collect();
        println!("conv3x3 {cin}->{cout} {w}x{h}: {}", cells.join(", "));
    }

    if std::env::args().any(|a| a == "--convs-only") {
        return;
    }
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
        // The method page's f32 fake-quant reference (Engine::new would run quantized
        // models on the integer engine).
        let engine = Engine::with_execution(model, threads, Execution::FakeQuant).unwrap();
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

    // The fp32 network with each conv path (Winograd where it suits, else direct; direct;
    // im2col GEMM), frame by frame alternately.
    let engine = Engine::new(&fp, threads).unwrap();
    let modes = [
        ("Winograd", false, false),
        ("direct", true, false),
        ("GEMM", true, true),
    ];
    let mut t = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..frames {
        for (i, &(_, wino_off, direct_off)) in modes.iter().enumerate() {
            conv::winograd::set_off(wino_off);
            conv::direct::set_off(direct_off);
            let t0 = Instant::now();
            std::hint::black_box(engine.upscale(&img, &Options::default()).unwrap());
            t[i].push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    conv::winograd::set_off(false);
    conv::direct::set_off(false);
    let ms = t.map(median);
    println!(
        "EDSR-baseline x{scale} {w}x{h} fp32 ms/frame: {}; Winograd vs direct {:.2}x, vs GEMM {:.2}x",
        modes
            .iter()
            .zip(ms)
            .map(|((name, ..), m)| format!("{name} {m:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        ms[1] / ms[0],
        ms[2] / ms[0]
    );
}
