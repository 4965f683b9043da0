//! CUDA engine benchmark: EDSR-baseline-size networks (random weights, AdaBM-quantized fq and
//! non-fq, and the float network on f16 tensor cores) and the built-in models, frames per second with the frames resident on the GPU (compute only) and
//! end to end (pinned upload, compute, download), effective TOPS and the share of the
//! device's dense int8 tensor peak (for the float rows: of the int8 peak, which is twice the
//! dense f16 peak). Optionally exports each network's weights for
//! bench/torch_fp16.py (PyTorch fp16 on the same device, same weights).
//!
//! Then several streams (threads) sharing one engine, as element instances do: total fps and
//! frames per launch for 1, 2 and 4 streams. Then I420 frames as the element handles them,
//! converted to and from RGB on the CPU (as before session 22) or on the GPU, alternating.
//!
//!   cargo bench --bench cuda -- [--iters 20] [--export DIR] [--peak-tops 1979]
//!       [--only TEXT] [--skip TEXT]     (rows whose label contains / does not contain TEXT;
//!                                        the rows with floating-point layers say "[f16]")

use std::time::Instant;

mod common;

use common::{arg, export, median};
use gstadabm::cuda::{self, CudaEngine, Pixels, SharedCuda};
use gstadabm::engine::random::{quantize_on_synthetic, random_model, test_image};
use gstadabm::engine::yuv::{self, ChromaSiting, YuvFormat, YuvLayout, YuvMatrix, YuvMut, YuvRef};
use gstadabm::engine::{EdsrConfig, Model, Options, QuantMode, builtin};

fn main() {
    let iters: usize = arg("--iters").and_then(|v| v.parse().ok()).unwrap_or(20);
    let peak: f64 = arg("--peak-tops")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1979.0);
    let export_dir = arg("--export");
    let (name, cc) = match cuda::probe(0) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("no CUDA device: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "device: {name} (sm_{}{}), int8 dense peak assumed {peak} TOPS",
        cc.0, cc.1
    );
    println!(
        "| network | input → output | batch | compute fps | ms/frame | TOPS (2·MAC) | % of peak | end-to-end fps | FAB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");

    let mut cases: Vec<(String, Model, usize, usize, usize)> = Vec::new();
    for (scale, w, h, batches) in [
        (2u32, 1920usize, 1080usize, vec![1usize]),
        (4, 480, 270, vec![1, 8]),
    ] {
        let fp = random_model(EdsrConfig::baseline(scale), 1).unwrap();
        for (wb, ab) in [(4u8, 4u8), (8, 6)] {
            let m = quantize_on_synthetic(&fp, QuantMode::Fq, wb, ab, 2).unwrap();
            let label = format!("EDSR-baseline x{scale} w{wb}a{ab}");
            if let Some(d) = export_dir.as_ref().filter(|_| wb == 4) {
                export(d, &format!("edsr-baseline-x{scale}"), &m);
            }
            for &b in &batches {
                cases.push((label.clone(), m.clone(), w, h, b));
            }
        }
        // Floating-point layers on the f16 tensor cores: the float network (what PyTorch fp16
        // runs, same weights) and non-fq w4a4 (float head, last body conv, upsampler, tail).
        let nonfq = quantize_on_synthetic(&fp, QuantMode::NonFq, 4, 4, 2).unwrap();
        cases.push((
            format!("EDSR-baseline x{scale} float [f16]"),
            fp.clone(),
            w,
            h,
            1,
        ));
        cases.push((
            format!("EDSR-baseline x{scale} non-fq w4a4 [f16]"),
            nonfq,
            w,
            h,
            1,
        ));
    }
    for b in builtin::MODELS.iter().filter(|m| m.name.contains("-w")) {
        let m = b.load().unwrap();
        // To 4K: 1080p at x2, 720p at x3, 960x540 at x4.
        let (w, h) = match m.config.scale {
            2 => (1920, 1080),
            3 => (1280, 720),
            _ => (960, 540),
        };
        cases.push((format!("built-in {}", b.name), m, w, h, 1));
    }

    let only = arg("--only");
    let skip = arg("--skip");
    let wanted = |label: &str| {
        only.as_ref().is_none_or(|o| label.contains(o.as_str()))
            && skip.as_ref().is_none_or(|s| !label.contains(s.as_str()))
    };
    for (label, model, w, h, batch) in cases {
        if !wanted(&label) {
            continue;
        }
        let mut eng = CudaEngine::new(&model, 0).unwrap_or_else(|e| panic!("{label}: {e}"));
        let s = eng.scale();
        let frames: Vec<Vec<u8>> = (0..batch)
            .map(|i| {
                test_image(w, h, i as u64)
                    .data
                    .iter()
                    .map(|&v| v as u8)
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let opts = Options::default();
        // End to end first (also compiles and warms up).
        let mut e2e = Vec::new();
        let mut fab = 0.0;
        for i in 0..iters.div_ceil(2) + 2 {
            let t = Instant::now();
            let out = eng.upscale_batch(&refs, w, h, &opts).unwrap();
            if i >= 2 {
                e2e.push(t.elapsed().as_secs_f64());
            }
            fab = out[0].1.fab;
        }
        eng.upload(&refs, w, h).unwrap();
        for _ in 0..3 {
            eng.run_resident(&opts).unwrap();
        }
        let mut times = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            eng.run_resident(&opts).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        let t = median(times) / batch as f64;
        let te = median(e2e) / batch as f64;
        let macs = model.macs_per_lr_pixel() * (w * h) as f64;
        let tops = 2.0 * macs / t / 1e12;
        println!(
            "| {label} | {w}x{h} → {}x{} | {batch} | {:.1} | {:.2} | {:.0} | {:.1}% | {:.1} | {fab:.2} |",
            w * s,
            h * s,
            1.0 / t,
            t * 1e3,
            tops,
            100.0 * tops / peak,
            1.0 / te
        );
    }

    // Several streams sharing one engine, as element instances running the same model do:
    // each thread upscales its own frames (end to end: upload, compute, download) through
    // SharedCuda, reusing its host buffers from frame to frame as the element does (since
    // session 15; before, every frame allocated its input copy and HR output); total fps and
    // the mean frames per launch.
    println!();
    println!(
        "| shared engine | input → output | lanes | streams | total fps | fps per stream | frames per launch |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let fp = random_model(EdsrConfig::baseline(2), 1).unwrap();
    let shared_cases = [
        (
            "built-in edsr-r8f32-x2-w4a4".to_string(),
            builtin::find(2, "w4a4").unwrap().load().unwrap(),
            640usize,
            360usize,
        ),
        (
            "EDSR-baseline x2 w4a4".to_string(),
            quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, 2).unwrap(),
            960,
            540,
        ),
    ];
    // Lanes: batches in flight at once (SharedCuda::get_with_lanes; ADABM_CUDA_LANES).
    for ((label, model, w, h), lanes) in shared_cases
        .iter()
        .flat_map(|c| [1usize, 2].map(|l| (c, l)))
    {
        let (label, model, w, h) = (label.as_str(), model, *w, *h);
        if !wanted(label) {
            continue;
        }
        let shared =
            SharedCuda::get_with_lanes(model, 0, lanes).unwrap_or_else(|e| panic!("{label}: {e}"));
        let s = shared.scale();
        let frame: Vec<u8> = test_image(w, h, 3).data.iter().map(|&v| v as u8).collect();
        for _ in 0..3 {
            shared
                .upscale(frame.clone(), w, h, &Options::default())
                .unwrap();
        }
        for streams in [1usize, 2, 4] {
            let before = shared.batch_sizes().len();
            let t = Instant::now();
            std::thread::scope(|sc| {
                for _ in 0..streams {
                    sc.spawn(|| {
                        // As the element does: the input copied into, and the output written
                        // to, the buffers of the stream's previous frame.
                        let (mut rgb, mut out) = (Vec::new(), Vec::new());
                        for _ in 0..iters {
                            rgb.clear();
                            rgb.extend_from_slice(&frame);
                            let done = shared
                                .upscale_reusing(rgb, out, w, h, &Options::default())
                                .unwrap();
                            (rgb, out) = (done.rgb, done.hr);
                        }
                    });
                }
            });
            let secs = t.elapsed().as_secs_f64();
            let sizes = shared.batch_sizes();
            let launches = sizes.len().saturating_sub(before).max(1);
            let fps = (streams * iters) as f64 / secs;
            println!(
                "| {label} | {w}x{h} → {}x{} | {lanes} | {streams} | {fps:.1} | {:.1} | {:.2} |",
                w * s,
                h * s,
                fps / streams as f64,
                (streams * iters) as f64 / launches as f64
            );
        }
    }

    yuv_frames(iters, &wanted);
}

/// One frame of [`yuv_frames`]: (input buffer, output buffer, the HR frame's tight planes).
type FrameFn<'a> = dyn FnMut(&mut Vec<u8>, &mut Vec<u8>, &mut [u8]) + 'a;

/// I420 1080p → 4K through a shared engine as the element runs it: the frame's planes unpacked
/// to the network's f32 RGB on the CPU, sent as `Pixels::RgbF32`, its unrounded output packed
/// back on the CPU (the element's fallback when the device fails its start-up check of the
/// conversion; until session 32 through RGB bytes), against the planes sent as they are and
/// converted on the GPU (`SharedCuda::upscale_as`); the two alternate, 3 rounds, median ms per
/// frame of each.
fn yuv_frames(iters: usize, wanted: &dyn Fn(&str) -> bool) {
    println!();
    println!(
        "| YUV frames (I420, BT.709) | input → output | round | CPU conversion ms/frame | GPU conversion ms/frame | ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let fp = random_model(EdsrConfig::baseline(2), 1).unwrap();
    let cases = [
        (
            "built-in edsr-r8f32-x2-w4a4",
            builtin::find(2, "w4a4").unwrap().load().unwrap(),
        ),
        (
            "EDSR-baseline x2 w4a4",
            quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, 2).unwrap(),
        ),
    ];
    let (w, h) = (1920usize, 1080usize);
    let f = YuvFormat {
        layout: YuvLayout::I420,
        matrix: YuvMatrix::new(YuvMatrix::BT709, false),
        siting: ChromaSiting {
            h_cosited: true,
            v_cosited: false,
        },
    };
    for (label, model) in cases {
        if !wanted(label) {
            continue;
        }
        let shared = SharedCuda::get(&model, 0).unwrap_or_else(|e| panic!("{label}: {e}"));
        if let Err(e) = shared.yuv_on_device() {
            println!("| {label} | YUV on the GPU failed its start-up check: {e} | | | | |");
            continue;
        }
        let s = shared.scale();
        let (hw, hh) = (w * s, h * s);
        // The decoder's frame and the encoder's, as tight planes.
        let lr = f.pack_tight(&test_image(w, h, 3).data, w, h).unwrap();
        let mut hr = vec![0u8; f.tight_len(hw, hh)];
        let opts = Options::default();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut img = gstadabm::engine::Image::default();
        let mut cpu_frame = |a: &mut Vec<u8>, b: &mut Vec<u8>, hr: &mut [u8]| {
            let src = YuvRef::from_tight(&lr, f, w, h).unwrap();
            yuv::unpack_into(&src, &mut img).unwrap();
            cuda::f32_frame_bytes(&img.data, a);
            let fmt = (Pixels::RgbF32, Pixels::RgbF32);
            let done = shared
                .upscale_as(std::mem::take(a), fmt, std::mem::take(b), w, h, &opts)
                .unwrap();
            cuda::f32_frame_values(&done.hr, &mut img.data);
            (img.width, img.height) = (hw, hh);
            let mut dst = YuvMut::from_tight(hr, f, hw, hh).unwrap();
            yuv::pack(&img, &mut dst).unwrap();
            (*a, *b) = (done.rgb, done.hr);
        };
        let mut gpu_frame = |a: &mut Vec<u8>, b: &mut Vec<u8>, hr: &mut [u8]| {
            let src = YuvRef::from_tight(&lr, f, w, h).unwrap();
            src.copy_tight(a).unwrap();
            let fmt = (Pixels::Yuv(f), Pixels::Yuv(f));
            let done = shared
                .upscale_as(std::mem::take(a), fmt, std::mem::take(b), w, h, &opts)
                .unwrap();
            YuvMut::from_tight(hr, f, hw, hh)
                .unwrap()
                .store_tight(&done.hr)
                .unwrap();
            (*a, *b) = (done.rgb, done.hr);
        };
        // Both paths give the same bytes.
        let mut hr2 = hr.clone();
        cpu_frame(&mut a, &mut b, &mut hr);
        gpu_frame(&mut a, &mut b, &mut hr2);
        assert!(
            hr == hr2,
            "{label}: the GPU conversion differs from the CPU's"
        );
        for round in 1..=3 {
            let mut time = |run: &mut FrameFn| {
                let mut t = Vec::new();
                for _ in 0..iters.div_ceil(2).max(3) {
                    let t0 = Instant::now();
                    run(&mut a, &mut b, &mut hr);
                    t.push(t0.elapsed().as_secs_f64());
                }
                median(t) * 1e3
            };
            let tc = time(&mut cpu_frame);
            let tg = time(&mut gpu_frame);
            println!(
                "| {label} | {w}x{h} → {hw}x{hh} | {round} | {tc:.2} | {tg:.2} | {:.2}x |",
                tc / tg
            );
        }
    }
}
