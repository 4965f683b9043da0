//! Integer CPU engine benchmark: EDSR-baseline size (random weights, AdaBM fq quantized) at x2
//! 320x180 and x4 480x270, and the built-in models, against the f32 reference (floating point
//! and fake-quant) measured in the same run. Also resident memory over many frames.
//!
//!   cargo bench --bench cpu -- [--frames 3] [--rss-frames 1000 [--rss-only 1]] [--export DIR]
//!                              [--only TEXT]   # rows whose network/engine contains TEXT
//!                              [--fastest]     # each row's fastest frame, not the median
//!   cargo bench --bench cpu -- --kernels 1   # the conv-sum kernels alone, one thread
//!                              [--misalign N]  # their code maps N bytes past a cache line
//!   cargo bench --bench cpu -- --winograd-ab 5   # integer w4a4: direct, F(2,3), F(2x2,3x3)
//!                                                # at every level (--best-level: the best)
//!   cargo bench --bench cpu -- --sizes 3         # integer x2 w4a4: time per pixel from a
//!                                                # 320x180 frame down to 320x8 (cache-resident)
//!   cargo bench --bench cpu -- --bands-ab 9      # the fused body in row bands through
//!                                                # groups of convs vs layer by layer
//!                                                # (--bands off,8x4,4x2: band x group;
//!                                                # default; /cN: N-pixel column chunks;
//!                                                # /s0: AMX tile stores not overlapped;
//!                                                # /p0: AMX prefetches not spread;
//!                                                # /n0: narrow convs not on AMX;
//!                                                # /e0: 32-channel codes in 2 steps)
//!   cargo bench --bench cpu -- --f32-ab 7        # f32 models: convs on AVX2
//!                                                # vs AVX-512 F (--f32-switch direct:
//!                                                # the direct kernels alone; fuse: block
//!                                                # passes vs fused into the convs)
//!   cargo bench --bench cpu -- --levels-ab 5     # AVX2 vs the VNNI levels the host has
//!                                                # (--with-emulated: and the emulated ones)
//!   cargo bench --bench cpu -- --frame-io 10     # 4K frame unpack + pack: 1 thread vs all
//!   cargo bench --bench cpu -- --rgb-io 10       # only its 64-bit / 10-bit / planar RGB part
//!   cargo bench --bench cpu -- --metrics 10      # b_I's complexity metrics, 1080p: 1 thread vs all
//!   ADABM_CPU_LEVEL=scalar cargo bench --bench cpu      # the scalar kernels
//!
//! `--export DIR` writes the EDSR-baseline networks' weights for bench/peers/peers.py.

use std::time::Instant;

mod common;

use common::{arg, export, median};
use gstadabm::engine::conv::{direct, winograd};
use gstadabm::engine::edsr::set_fuse;
use gstadabm::engine::intcpu::{
    CpuLevel, set_bands, set_codes32, set_col_chunk, set_kernel_prefetch, set_narrow_amx,
    set_store_overlap,
};
use gstadabm::engine::random::{quantize_on_synthetic, random_model, test_image};
use gstadabm::engine::{EdsrConfig, Engine, Execution, Image, Options, QuantMode, builtin};

/// Median ms per frame (`--fastest`: the fastest); frames into one reused output image, as the
/// element's path does.
fn time(engine: &Engine, img: &Image, frames: usize) -> f64 {
    let mut out = Image::default();
    engine
        .upscale_into(img, &Options::default(), &mut out)
        .unwrap();
    // `--fastest`: the fastest frame instead of the median (as bench/peers/peers.py's flag).
    let stat = if std::env::args().any(|a| a == "--fastest") {
        |t: Vec<f64>| t.into_iter().fold(f64::INFINITY, f64::min)
    } else {
        median
    };
    stat(
        (0..frames)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(
                    engine
                        .upscale_into(img, &Options::default(), &mut out)
                        .unwrap(),
                );
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// Resident set size in MiB (Linux).
fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

fn main() {
    let frames: usize = arg("--frames")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let rss_frames: usize = arg("--rss-frames")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "integer kernels: {:?}, {threads} threads",
        CpuLevel::detect()
    );
    if let Some(n) = arg("--winograd-ab").and_then(|v| v.parse().ok()) {
        winograd_ab(n, threads);
        return;
    }
    if let Some(n) = arg("--bands-ab").and_then(|v| v.parse().ok()) {
        bands_ab(n, threads);
        return;
    }
    if let Some(n) = arg("--f32-ab").and_then(|v| v.parse().ok()) {
        f32_ab(n, threads);
        return;
    }
    if let Some(n) = arg("--levels-ab").and_then(|v| v.parse().ok()) {
        levels_ab(n, threads);
        return;
    }
    if let Some(n) = arg("--frame-io").and_then(|v| v.parse().ok()) {
        frame_io(n);
        return;
    }
    if let Some(n) = arg("--rgb-io").and_then(|v| v.parse().ok()) {
        rgb_io(n);
        return;
    }
    if let Some(n) = arg("--metrics").and_then(|v| v.parse().ok()) {
        metrics(n);
        return;
    }
    if let Some(n) = arg("--sizes").and_then(|v| v.parse().ok()) {
        sizes(n, threads);
        return;
    }
    if arg("--kernels").is_some() {
        kernels(frames);
        return;
    }
    if arg("--rss-only").is_none() {
        tables(frames, threads);
    }
    if rss_frames > 0 {
        rss(rss_frames, threads);
    }
}

/// Speed of the engines on EDSR-baseline and the built-in models.
fn tables(frames: usize, threads: usize) {
    println!("| network | input | engine | ms/frame | fps | GMAC/s | vs f32 |");
    println!("|---|---|---|---:|---:|---:|---:|");
    let only = arg("--only").unwrap_or_default();
    let wanted = |row: &str| row.contains(&only);
    for (scale, w, h) in [(2u32, 320usize, 180usize), (4, 480, 270)] {
        let net = format!("EDSR-baseline x{scale}");
        let fp = random_model(EdsrConfig::baseline(scale), 1).unwrap();
        if let Some(d) = arg("--export") {
            export(&d, &format!("edsr-baseline-x{scale}"), &fp);
        }
        let img = test_image(w, h, 3);
        let gmac = fp.macs_per_lr_pixel() * (w * h) as f64 / 1e9;
        // The f32 reference is the baseline of the ratios; `--only` may leave it out.
        let reference = "f32 reference, fp32";
        let rows_wanted = [
            reference,
            "f32 reference, fake-quant w4a4",
            "integer w4a4",
            "integer w8a6",
        ]
        .iter()
        .any(|r| wanted(&format!("{net} {r}")));
        if !rows_wanted {
            continue;
        }
        let base = wanted(&format!("{net} {reference}"))
            .then(|| time(&Engine::new(&fp, threads).unwrap(), &img, frames));
        let row = |name: &str, ms: f64| {
            let ratio = base.map_or(String::new(), |b| format!("{:.2}x", b / ms));
            println!(
                "| {net} | {w}x{h} | {name} | {ms:.0} | {:.2} | {:.0} | {ratio} |",
                1e3 / ms,
                gmac / ms * 1e3,
            );
        };
        if let Some(b) = base {
            row(reference, b);
        }
        for (wb, ab) in [(4u8, 4u8), (8, 6)] {
            let q = quantize_on_synthetic(&fp, QuantMode::Fq, wb, ab, 1).unwrap();
            let fq_name = "f32 reference, fake-quant w4a4";
            if wb == 4 && wanted(&format!("{net} {fq_name}")) {
                let fq = Engine::with_execution(&q, threads, Execution::FakeQuant).unwrap();
                row(fq_name, time(&fq, &img, frames));
            }
            let name = format!("integer w{wb}a{ab}");
            if wanted(&format!("{net} {name}")) {
                let int = Engine::new(&q, threads).unwrap();
                row(&name, time(&int, &img, frames));
            }
        }
    }
    for b in builtin::MODELS.iter() {
        // A space after the name: `--only "built-in edsr-r8f32-x2 "` picks the fp32 model alone.
        if !wanted(&format!("built-in {} ", b.name)) {
            continue;
        }
        let m = b.load().unwrap();
        // x2 and x3 from 320x180 (to 640x360 and 960x540), x4 from 480x270 (to 1080p).
        let (w, h) = if m.config.scale < 4 {
            (320, 180)
        } else {
            (480, 270)
        };
        let img = test_image(w, h, 3);
        let ms = time(&Engine::new(&m, threads).unwrap(), &img, frames);
        println!(
            "| built-in {} | {w}x{h} | {} | {ms:.0} | {:.2} | {:.0} | |",
            b.name,
            if m.quant.is_some() { "integer" } else { "f32" },
            1e3 / ms,
            m.macs_per_lr_pixel() * (w * h) as f64 / 1e6 / ms
        );
    }
}

/// The conv-sum kernels alone (`intcpu::row_sums` over every row of a 320x180 map, one
/// thread, best of `frames` ≥ 5 passes) for the shapes and bit-widths of EDSR-baseline: body 64→64 with 4-bit weights and
/// 3–6-bit codes, upsampler 64→256 and tail 64→3 with 8-bit weights and codes.
fn kernels(frames: usize) {
    use gstadabm::engine::intcpu::{
        Aligned, Codes, PackedConv, has_wino2_i32, has_wino4, row_sums, row_sums_wino,
        row_sums_wino_i32, row_sums_wino2_i32, row_sums_wino4, row_sums_wino16, wino,
    };
    use gstadabm::engine::intnet::IntConv;
    use gstadabm::engine::random::Rng;
    let (h, w) = (180usize, 320usize);
    // The sums on cache lines, as the engines keep them (a `Vec` from `malloc` starts 16
    // bytes past a line, and every AMX tile store of a row split two lines).
    let sums_buf = |len: usize| {
        let mut b = Aligned::<i32>::new();
        b.resize(len);
        b
    };
    let misalign: usize = arg("--misalign").map_or(0, |v| v.parse().expect("--misalign N"));
    use rayon::prelude::*;
    println!("| kernel | weights | codes | ms | GMAC/s | GMAC/s, all threads |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (cin, cout, w_bits, bits) in [
        (64usize, 64usize, 4u8, 3u32),
        (64, 64, 4, 4),
        (64, 64, 4, 5),
        (64, 64, 4, 6),
        (64, 64, 8, 6),
        (64, 256, 8, 8),
        (64, 3, 8, 8),
    ] {
        let mut rng = Rng::new(7);
        let wt: Vec<f32> = (0..cout * cin * 9).map(|_| rng.symmetric(0.5)).collect();
        let b = vec![0.0; cout];
        let ic = IntConv::new(cin, cout, &wt, &b, 0.4, w_bits);
        let pc = PackedConv::new(&ic);
        // On a cache line as the engines' maps are (`Aligned`), or `--misalign` bytes past.
        let len = (h + 2) * (w + 2) * pc.cstride;
        let mut buf = Aligned::<u8>::new();
        buf.resize(len + misalign);
        buf.iter_mut().for_each(|q| *q = rng.below(1 << bits) as u8);
        let data = &buf[misalign..];
        // 8-bit weights: with the pixels' code sums for the offset correction, as the engines
        // make them once per conv.
        let mut psums = Vec::new();
        let map = Codes {
            data,
            h,
            w,
            cstride: pc.cstride,
            sums: None,
            defer_offset: false,
        }
        .with_sums_for(&pc, &mut psums);
        let max_code = (1u32 << bits) - 1;
        let level = CpuLevel::detect();
        let mut out = sums_buf(w * pc.cout8);
        let pass = || {
            for y in 0..h {
                row_sums(level, &map, &pc, y, max_code, 0..w, &mut out);
            }
            std::hint::black_box(&out);
        };
        let ms = fastest(frames, pass);
        // Rows over every thread, as the engine runs them.
        let par = || {
            (0..h).into_par_iter().for_each_init(
                || sums_buf(w * pc.cout8),
                |out, y| {
                    row_sums(level, &map, &pc, y, max_code, 0..w, out);
                    std::hint::black_box(&out);
                },
            )
        };
        let ms_par = fastest(frames, par);
        let gmac = (h * w * cin * cout * 9) as f64 / 1e9;
        println!(
            "| conv {cin}->{cout} | {w_bits} | {bits} | {ms:.2} | {:.1} | {:.1} |",
            gmac / ms * 1e3,
            gmac / ms_par * 1e3
        );
        // Winograd F(2,3) where it is exact, the input transform included (MACs counted as
        // the direct conv's).
        // (At VNNI levels the engine's i32 form: no schedule, codes up to 7 bits.)
        let f23 = if level.is_vnni() {
            (pc.wino.is_some() && max_code <= 127).then_some(None)
        } else {
            pc.wino_schedule(max_code)
                .filter(|_| level != CpuLevel::Scalar)
                .map(Some)
        };
        if let Some(sched) = f23 {
            let tl = wino::row_len(w, pc.cstride);
            let mut vt = vec![0u8; (h + 2) * tl];
            let mut wpass = |par: bool| {
                let build =
                    |(r, row): (usize, &mut [u8])| wino::build_row(level, &map, r, max_code, row);
                if par {
                    vt.par_chunks_mut(tl).enumerate().for_each(build);
                } else {
                    vt.chunks_mut(tl).enumerate().for_each(build);
                }
                let rows: Vec<&[u8]> = vt.chunks_exact(tl).collect();
                let row = |out: &mut Aligned<i32>, y: usize| {
                    let vi = wino::WinoInput {
                        rows: [rows[y], rows[y + 1], rows[y + 2]],
                        w,
                        cstride: pc.cstride,
                        max_code,
                    };
                    match &sched {
                        Some(sched) => row_sums_wino(level, &vi, &pc, sched, 0..w, out),
                        None => row_sums_wino_i32(level, &vi, &pc, 0..w, out),
                    }
                    std::hint::black_box(&out);
                };
                if par {
                    (0..h)
                        .into_par_iter()
                        .for_each_init(|| sums_buf(w * pc.cout8), row);
                } else {
                    let mut out = sums_buf(w * pc.cout8);
                    (0..h).for_each(|y| row(&mut out, y));
                }
            };
            let ms1 = fastest(frames, || wpass(false));
            let msp = fastest(frames, || wpass(true));
            println!(
                "| conv {cin}->{cout}, Winograd F(2,3) | {w_bits} | {bits} | {ms1:.2} | {:.1} | {:.1} |",
                gmac / ms1 * 1e3,
                gmac / msp * 1e3
            );
        }
        // F(2x2, 3x3) at AVX-512 VNNI where it is exact (codes up to 6 bits): rows in pairs,
        // tiles built per chunk of 16 (as the engine does), the input transform included.
        let i32_tiles = has_wino2_i32(level) && pc.wino2().is_some() && max_code <= 63;
        if i32_tiles {
            let tiles = w.div_ceil(2);
            let pair = |(out, data): &mut (Vec<i32>, Vec<u8>), y: usize| {
                for t0 in (0..tiles).step_by(16) {
                    let t1 = (t0 + 16).min(tiles);
                    let data = &mut data[..wino::tiles2_len(t1 - t0, pc.cstride)];
                    wino::build_tiles2(level, &map, y, t0..t1, max_code, data);
                    let vi = wino::Wino2Input {
                        data,
                        t0,
                        tiles: t1 - t0,
                        w,
                        cstride: pc.cstride,
                        max_code,
                    };
                    let cols = 2 * t0..(2 * t1).min(w);
                    row_sums_wino2_i32(level, &vi, &pc, cols, out);
                }
                std::hint::black_box(&out);
            };
            let init = || {
                (
                    vec![0i32; 2 * w * pc.cout8],
                    vec![0u8; wino::tiles2_len(16, pc.cstride)],
                )
            };
            let ms1 = fastest(frames, || {
                let mut st = init();
                (0..h).step_by(2).for_each(|y| pair(&mut st, y));
            });
            let msp = fastest(frames, || {
                (0..h).into_par_iter().step_by(2).for_each_init(init, pair);
            });
            println!(
                "| conv {cin}->{cout}, Winograd F(2x2,3x3) | {w_bits} | {bits} | {ms1:.2} | {:.1} | {:.1} |",
                gmac / ms1 * 1e3,
                gmac / msp * 1e3
            );
        }
        // F(4x4, 3x3) on i16 (the engine runs it at AVX-512 VNNI where no u8 transform is
        // exact, at AVX2 wherever it fits, at AVX-VNNI for 8-bit codes or weights; shown for
        // every conv it fits but the AVX-512 F(2x2) ones): rows in fours, chunks of 32 pixels
        // (as the engine runs it), both transforms included.
        if has_wino4(level) && !i32_tiles && pc.wino4().is_some() {
            let four = |(out, tiles): &mut (Vec<i32>, Vec<i16>), y: usize| {
                for x0 in (0..w).step_by(32) {
                    row_sums_wino4(level, &map, &pc, y, x0..(x0 + 32).min(w), tiles, out);
                }
                std::hint::black_box(&out);
            };
            let init = || (vec![0i32; 4 * w * pc.cout8], Vec::new());
            let ms1 = fastest(frames, || {
                let mut st = init();
                (0..h).step_by(4).for_each(|y| four(&mut st, y));
            });
            let msp = fastest(frames, || {
                (0..h).into_par_iter().step_by(4).for_each_init(init, four);
            });
            println!(
                "| conv {cin}->{cout}, Winograd F(4x4,3x3) i16 | {w_bits} | {bits} | {ms1:.2} | {:.1} | {:.1} |",
                gmac / ms1 * 1e3,
                gmac / msp * 1e3
            );
        }
        if pc.wino_schedule(max_code).is_none()
            && level != CpuLevel::Scalar
            && pc.wino16.is_some()
            && !pc.pairs_fit_i16(max_code)
        {
            // The i16 form for the layers too wide for vpmaddubsw.
            let tl = wino::row_len(w, pc.cstride);
            let mut vt = vec![0i16; (h + 2) * tl];
            let mut wpass = |par: bool| {
                let build = |(r, row): (usize, &mut [i16])| wino::build_row16(level, &map, r, row);
                if par {
                    vt.par_chunks_mut(tl).enumerate().for_each(build);
                } else {
                    vt.chunks_mut(tl).enumerate().for_each(build);
                }
                let rows: Vec<&[i16]> = vt.chunks_exact(tl).collect();
                let row = |out: &mut Aligned<i32>, y: usize| {
                    let vi = wino::WinoInput16 {
                        rows: [rows[y], rows[y + 1], rows[y + 2]],
                        w,
                        cstride: pc.cstride,
                    };
                    row_sums_wino16(level, &vi, &map, &pc, y, 0..w, out);
                    std::hint::black_box(&out);
                };
                if par {
                    (0..h)
                        .into_par_iter()
                        .for_each_init(|| sums_buf(w * pc.cout8), row);
                } else {
                    let mut out = sums_buf(w * pc.cout8);
                    (0..h).for_each(|y| row(&mut out, y));
                }
            };
            let ms1 = fastest(frames, || wpass(false));
            let msp = fastest(frames, || wpass(true));
            println!(
                "| conv {cin}->{cout}, Winograd F(2,3) i16 | {w_bits} | {bits} | {ms1:.2} | {:.1} | {:.1} |",
                gmac / ms1 * 1e3,
                gmac / msp * 1e3
            );
        }
    }
}

/// Milliseconds of the fastest of `frames` (at least 5) runs of `pass` after one warm-up: the
/// run least disturbed by other work on the machine.
fn fastest(frames: usize, mut pass: impl FnMut()) -> f64 {
    pass();
    (0..frames.max(5))
        .map(|_| {
            let t = Instant::now();
            pass();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// Each image-complexity metric on a 1920x1080 frame: one thread vs the pool (fastest of
/// `frames`; the values are the same, checked).
fn metrics(frames: usize) {
    use gstadabm::engine::ComplexityMetric as M;
    use gstadabm::engine::complexity::measure;
    let img = test_image(1920, 1080, 1);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let n = rayon::current_num_threads();
    println!("| metric, 1920x1080 | 1 thread | {n} threads | ratio |");
    println!("|---|---:|---:|---:|");
    for m in [M::Gradient, M::Frequency, M::Attention] {
        let (mut a, mut b) = (0.0, 0.0);
        let t1 = fastest(frames, || {
            a = one.install(|| measure(m, &img.data, 1920, 1080))
        });
        let tn = fastest(frames, || b = measure(m, &img.data, 1920, 1080));
        assert_eq!(a.to_bits(), b.to_bits(), "{m:?}: {a} vs {b}");
        println!("| {m:?} | {t1:.1} ms | {tn:.1} ms | {:.2}x |", t1 / tn);
    }
}

/// The f32 engine's Winograd transforms and products on 256-bit and on 512-bit vectors
/// ([`winograd::set_avx512`] and [`direct::set_avx512`]; with `--f32-switch direct` the direct
/// kernels alone; with `--f32-switch fuse` its block passes, [`set_fuse`]) frame
/// by frame in turn, `rounds` rounds, on the built-in fp32
/// models (the element's default) and EDSR-baseline fp32: each one's fastest and median frame,
/// the median over rounds of the ratio, and whether the outputs are the same bytes.
fn f32_ab(rounds: usize, threads: usize) {
    let only = arg("--only").unwrap_or_default();
    // `--f32-switch fuse`: a block's ReLU and residual update as passes vs fused into its convs
    // ([`set_fuse`]) instead; `--f32-switch direct`: the direct kernels (the head and the RGB
    // tail) on AVX2 vs AVX-512 F ([`direct::set_avx512`]), the Winograd convs on AVX-512 F
    // throughout.
    let switch = arg("--f32-switch");
    let fuse = switch.as_deref() == Some("fuse");
    let direct_only = switch.as_deref() == Some("direct");
    let rows = [
        (2u32, 320usize, 180usize, true),
        (4, 480, 270, true),
        (2, 320, 180, false),
    ];
    for (scale, w, h, built_in) in rows {
        let (name, m) = if built_in {
            let b = builtin::find(scale, "fp32").unwrap();
            (format!("built-in {}", b.name), b.load().unwrap())
        } else {
            let m = random_model(EdsrConfig::baseline(scale), 1).unwrap();
            (format!("EDSR-baseline x{scale} fp32"), m)
        };
        if !name.contains(&only) {
            continue;
        }
        let img = test_image(w, h, 3);
        let engine = Engine::new(&m, threads).unwrap();
        let (mut t256, mut t512, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut outs = [None, None];
        for round in 0..rounds + 1 {
            let mut row = [0.0; 2];
            for (i, on) in [false, true].into_iter().enumerate() {
                if fuse {
                    set_fuse(on);
                } else if direct_only {
                    direct::set_avx512(on);
                } else {
                    winograd::set_avx512(on);
                    direct::set_avx512(on);
                }
                let t = Instant::now();
                let out = engine.upscale(&img, &Options::default()).unwrap();
                row[i] = t.elapsed().as_secs_f64() * 1e3;
                outs[i] = Some(out.0.data);
            }
            // The first round warms the buffers up.
            if round > 0 {
                t256.push(row[0]);
                t512.push(row[1]);
                ratios.push(row[0] / row[1]);
            }
        }
        winograd::set_avx512(true);
        direct::set_avx512(true);
        set_fuse(true);
        let fastest = |t: &[f64]| t.iter().cloned().fold(f64::INFINITY, f64::min);
        let (off, on) = if fuse {
            ("passes", "fused")
        } else {
            ("AVX2", "AVX-512")
        };
        println!(
            "{name} {w}x{h}, {threads} threads, {rounds} rounds: {off} {:.1} ms fastest, \
             {:.1} median; {on} {:.1} / {:.1} ms; ratio {:.2}x (median of rounds); \
             outputs identical: {}",
            fastest(&t256),
            median(t256.clone()),
            fastest(&t512),
            median(t512.clone()),
            median(ratios),
            outs[0] == outs[1]
        );
    }
}

/// The rows of the A/B benchmarks whose network's name contains `--only`: the name, the model
/// ([`ab_model`]) and its input (x2 at 320x180, x4 at 480x270), made as they are reached.
fn ab_rows() -> impl Iterator<Item = (String, gstadabm::engine::Model, Image)> {
    let only = arg("--only").unwrap_or_default();
    [
        (2u32, 320usize, 180usize, "w4a4"),
        (2, 320, 180, "w8a6"),
        (4, 480, 270, "w4a4"),
        (2, 320, 180, "built-in"),
        (4, 480, 270, "built-in"),
    ]
    .into_iter()
    .filter_map(move |(scale, w, h, kind)| {
        let (name, q) = ab_model(scale, kind);
        name.contains(&only).then(|| (name, q, test_image(w, h, 3)))
    })
}

/// The networks of the A/B benchmarks: EDSR-baseline (random weights) quantized to `kind`
/// ("w4a4", "w8a6"), or the built-in w4a4 model of that scale (`kind` "built-in").
fn ab_model(scale: u32, kind: &str) -> (String, gstadabm::engine::Model) {
    if kind == "built-in" {
        let b = builtin::find(scale, "w4a4").unwrap();
        (format!("built-in {}", b.name), b.load().unwrap())
    } else {
        // "w4a4" / "w8a6": fq; "non-fq w4a4" / "non-fq w8a6": the non-fq integer engine
        // (float head, upsampler and tail; no fused path).
        let fp = random_model(EdsrConfig::baseline(scale), 1).unwrap();
        let (wb, ab) = if kind.ends_with("w4a4") {
            (4, 4)
        } else {
            (8, 6)
        };
        let mode = if kind.starts_with("non-fq") {
            QuantMode::NonFq
        } else {
            QuantMode::Fq
        };
        let q = quantize_on_synthetic(&fp, mode, wb, ab, 1).unwrap();
        (format!("EDSR-baseline x{scale} integer {kind}"), q)
    }
}

/// The SIMD levels from AVX2 up among `levels`.
fn from_avx2(levels: Vec<CpuLevel>) -> Vec<CpuLevel> {
    levels
        .into_iter()
        .filter(|l| *l >= CpuLevel::Avx2)
        .collect()
}

/// Integer w4a4 (EDSR-baseline x2 320x180 and x4 480x270, the built-ins) with the direct
/// kernels, Winograd F(2,3) and F(2x2, 3x3) at every level from AVX2 up, frames alternating
/// in one process (the fastest frame of each: the least disturbed), and the outputs compared.
fn winograd_ab(frames: usize, threads: usize) {
    use gstadabm::engine::intcpu::{Winograd, set_winograd};
    let modes = [
        (Some(Winograd::Off), "direct"),
        (Some(Winograd::Rows), "Winograd F(2,3)"),
        // At AVX-512 VNNI `Tiles` also runs the 8-bit convs as F(4x4,3x3) on i16.
        (Some(Winograd::Tiles), "Winograd tiles"),
        // The default: tiles, the 8-bit convs direct where a probe found that faster.
        (None, "default"),
    ];
    let only = arg("--only").unwrap_or_default();
    // Every level from AVX2 up that this host has (the best one alone with `--best-level`).
    let mut levels = from_avx2(CpuLevel::available());
    if std::env::args().any(|a| a == "--best-level") {
        levels.drain(..levels.len().saturating_sub(1));
    }
    for (scale, w, h, kind) in [
        (2u32, 320usize, 180usize, "w4a4"),
        (4, 480, 270, "w4a4"),
        (2, 320, 180, "built-in"),
        (4, 480, 270, "built-in"),
        (2, 320, 180, "w8a6"),
        (2, 320, 180, "non-fq w4a4"),
        (2, 320, 180, "non-fq w8a6"),
    ] {
        let (name, q) = ab_model(scale, kind);
        if !name.contains(&only) {
            continue;
        }
        let img = test_image(w, h, 3);
        let gmac = q.macs_per_lr_pixel() * (w * h) as f64 / 1e9;
        for &level in &levels {
            let engine = Engine::with_execution(&q, threads, Execution::IntegerAt(level)).unwrap();
            let mut best = [f64::INFINITY; 4];
            let mut outs = [None, None, None, None];
            for _ in 0..frames.max(1) + 1 {
                for (i, &(mode, _)) in modes.iter().enumerate() {
                    set_winograd(mode);
                    let t = Instant::now();
                    let out = engine.upscale(&img, &Options::default()).unwrap();
                    best[i] = best[i].min(t.elapsed().as_secs_f64() * 1e3);
                    outs[i] = Some(out);
                }
            }
            set_winograd(None);
            let data = |i: usize| outs[i].as_ref().map(|o| &o.0.data);
            let same = (1..4).all(|i| data(0) == data(i));
            for (i, (_, mode)) in modes.iter().enumerate() {
                println!(
                    "{name} {w}x{h}, {level:?} {mode}: {:.0} ms ({:.0} GMAC/s, {:.2}x direct)",
                    best[i],
                    gmac / best[i] * 1e3,
                    best[0] / best[i]
                );
            }
            println!(
                "{name}, {level:?}: tiles / F(2,3) {:.2}x faster; default / tiles {:.2}x; outputs identical: {same}",
                best[1] / best[2],
                best[2] / best[3],
            );
        }
    }
}

/// The fused integer engine at each SIMD level from AVX2 up that this host has (AVX-VNNI,
/// AVX-512 VNNI), frames alternating between levels in one process, fastest of `frames` per
/// level, outputs compared byte for byte: EDSR-baseline w4a4 and w8a6, the built-in w4a4.
fn levels_ab(frames: usize, threads: usize) {
    // `--with-emulated`: the emulated VNNI levels too (their kernels' structure on AVX2; slow
    // by design, but a kernel an order of magnitude off its direct form shows here).
    let levels = from_avx2(if std::env::args().any(|a| a == "--with-emulated") {
        CpuLevel::testable()
    } else {
        CpuLevel::available()
    });
    println!("levels: {levels:?}");
    for (name, q, img) in ab_rows() {
        let (w, h) = (img.width, img.height);
        let engines: Vec<Engine> = levels
            .iter()
            .map(|&l| Engine::with_execution(&q, threads, Execution::IntegerAt(l)).unwrap())
            .collect();
        let gmac = q.macs_per_lr_pixel() * (w * h) as f64 / 1e9;
        let mut best = vec![f64::INFINITY; levels.len()];
        let mut outs = vec![None; levels.len()];
        for _ in 0..frames.max(1) + 1 {
            for (i, engine) in engines.iter().enumerate() {
                let t = Instant::now();
                let out = engine.upscale(&img, &Options::default()).unwrap();
                best[i] = best[i].min(t.elapsed().as_secs_f64() * 1e3);
                outs[i] = Some(out.0.data);
            }
        }
        let same = outs.windows(2).all(|p| p[0] == p[1]);
        for (i, level) in levels.iter().enumerate() {
            println!(
                "{name} {w}x{h}, {level:?}: {:.0} ms ({:.0} GMAC/s, {:.2}x AVX2)",
                best[i],
                gmac / best[i] * 1e3,
                best[0] / best[i]
            );
        }
        println!("{name}: outputs identical at every level: {same}");
    }
}

/// The fused engine's body schedules ([`set_bands`]) frame by frame in turn, `rounds`
/// rounds: each one's fastest and median frame, and the median over rounds of its ratio to
/// the layer-by-layer order (`off`, a band as tall as the frame) of the same round.
fn bands_ab(rounds: usize, threads: usize) {
    let list = arg("--bands").unwrap_or_else(|| "off,8x4,4x4,8x8,16x4,8x2".into());
    // Each config: a schedule ("off", "default", or band x group), optionally "/cN" (pixels
    // per chunk), "/s0" (the AMX kernel storing each block's sums before the next starts),
    // "/p0" (the AMX kernel prefetching the epilogue's reads all before it starts), "/n0"
    // (narrow convs on the AVX-512 VNNI kernel at the AMX level) and "/e0" (the AVX-512
    // epilogue's 32-channel codes in two 16-channel steps), in that order.
    struct Config {
        name: String,
        bands: Option<(usize, usize)>,
        chunk: Option<usize>,
        overlap: bool,
        spread: bool,
        narrow: bool,
        codes32: bool,
    }
    impl Config {
        fn set(&self) {
            set_narrow_amx(self.narrow);
            set_bands(self.bands);
            set_col_chunk(self.chunk);
            set_store_overlap(self.overlap);
            set_kernel_prefetch(self.spread);
            set_codes32(self.codes32);
        }
    }
    let configs: Vec<Config> = list
        .split(',')
        .map(|c| {
            let off = |s: &str, suffix: &str| match s.strip_suffix(suffix) {
                Some(rest) => (rest.to_string(), false),
                None => (s.to_string(), true),
            };
            let (c0, codes32) = off(c, "/e0");
            let (c0, narrow) = off(&c0, "/n0");
            let (c0, spread) = off(&c0, "/p0");
            let (c0, overlap) = off(&c0, "/s0");
            let (sched, chunk) = match c0.split_once("/c") {
                Some((s, n)) => (s, Some(n.parse().expect("chunk"))),
                None => (c0.as_str(), None),
            };
            let bands = match sched.split_once('x') {
                Some((b, g)) => Some((b.parse().expect("band"), g.parse().expect("group"))),
                None if sched == "off" => Some((usize::MAX / 8, 1)),
                None if sched == "default" => None,
                None => panic!("--bands: {c}"),
            };
            Config {
                name: c.to_string(),
                bands,
                chunk,
                overlap,
                spread,
                narrow,
                codes32,
            }
        })
        .collect();
    for (name, q, img) in ab_rows() {
        let (w, h) = (img.width, img.height);
        let engine = Engine::new(&q, threads).unwrap();
        let mut times = vec![Vec::new(); configs.len()];
        let mut ratios = vec![Vec::new(); configs.len()];
        let mut outs = vec![None; configs.len()];
        for round in 0..rounds + 1 {
            let mut row = Vec::new();
            for (i, config) in configs.iter().enumerate() {
                config.set();
                let t = Instant::now();
                let out = engine.upscale(&img, &Options::default()).unwrap();
                row.push(t.elapsed().as_secs_f64() * 1e3);
                outs[i] = Some(out.0.data);
            }
            // The first round warms the buffers up.
            if round > 0 {
                for i in 0..configs.len() {
                    times[i].push(row[i]);
                    ratios[i].push(row[0] / row[i]);
                }
            }
        }
        set_bands(None);
        set_col_chunk(None);
        set_store_overlap(true);
        set_kernel_prefetch(true);
        set_narrow_amx(true);
        set_codes32(true);
        let same = outs.windows(2).all(|p| p[0] == p[1]);
        println!("{name} {w}x{h}, {threads} threads, {rounds} rounds");
        println!(
            "| schedule | fastest | median | vs {} (median of rounds) |",
            configs[0].name
        );
        println!("|---|---:|---:|---:|");
        for (i, Config { name: c, .. }) in configs.iter().enumerate() {
            let fastest = times[i].iter().cloned().fold(f64::INFINITY, f64::min);
            println!(
                "| {c} | {fastest:.1} ms | {:.1} ms | {:.2}x |",
                median(times[i].clone()),
                median(ratios[i].clone())
            );
        }
        println!("{name}: outputs identical under every schedule: {same}");
    }
}

/// Resident memory over `rss_frames` frames of the built-in x2 model of `--rss-precision`
/// (w4a4 by default; fp32 is the element's default), one model per process.
fn rss(rss_frames: usize, threads: usize) {
    let precision = arg("--rss-precision").unwrap_or_else(|| "w4a4".into());
    {
        let m = builtin::find(2, &precision)
            .and_then(|b| b.load())
            .unwrap_or_else(|e| panic!("built-in x2 {precision}: {e}"));
        let engine = Engine::new(&m, threads).unwrap();
        let img = test_image(160, 90, 1);
        let mut first = 0.0;
        let mut out = Image::default();
        let t = Instant::now();
        for i in 0..rss_frames {
            std::hint::black_box(
                engine
                    .upscale_into(&img, &Options::default(), &mut out)
                    .unwrap(),
            );
            if i == 9 {
                first = rss_mib();
            }
        }
        println!(
            "resident memory, built-in x2 {precision} 160x90: {first:.1} MiB after 10 frames, {:.1} MiB after {rss_frames} ({:.1} s)",
            rss_mib(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// Unpacking a 3840x2160 frame to RGB bytes and packing it back (what the element does around
/// the CUDA engine for every frame, and around the CPU engine at the output size): the
/// session-9 code (per pixel with offsets read at run time, one thread; copied below as the
/// baseline), the current code on one thread, and on the whole pool, alternating, fastest of
/// `frames`.
fn frame_io(frames: usize) {
    use gstadabm::engine::frame::{pack_rgb8, unpack_rgb8};
    use gstadabm::engine::{FrameMut, FrameRef, PixelLayout};
    let (w, h) = (3840usize, 2160usize);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!(
        "| layout | session-9 code | now, 1 thread | now, {} threads | ratio to session 9 |",
        rayon::current_num_threads()
    );
    println!("|---|---:|---:|---:|---:|");
    for layout in [PixelLayout::Rgb, PixelLayout::Bgrx, PixelLayout::Rgba] {
        let bpp = layout.bytes_per_pixel();
        let stride = w * bpp;
        let data: Vec<u8> = (0..stride * h).map(|i| (i * 31 % 251) as u8).collect();
        let mut out = vec![0u8; stride * h];
        let mut old_out = vec![0u8; stride * h];
        let mut run = || {
            let f = FrameRef {
                data: &data,
                stride,
                width: w,
                height: h,
                layout,
            };
            let (rgb, alpha) = unpack_rgb8(&f).unwrap();
            let mut fm = FrameMut {
                data: &mut out,
                stride,
                width: w,
                height: h,
                layout,
            };
            pack_rgb8(&rgb, alpha.as_deref(), &mut fm).unwrap();
        };
        let mut old = || session9_round_trip(&data, &mut old_out, stride, w, h, layout);
        let mut best = [f64::INFINITY; 3];
        for _ in 0..frames.max(1) + 1 {
            let t = Instant::now();
            old();
            best[0] = best[0].min(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            one.install(&mut run);
            best[1] = best[1].min(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            run();
            best[2] = best[2].min(t.elapsed().as_secs_f64() * 1e3);
        }
        assert!(out == old_out, "{layout:?}: the two implementations differ");
        println!(
            "| {layout:?} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}x / {:.2}x |",
            best[0],
            best[1],
            best[2],
            best[0] / best[1],
            best[0] / best[2]
        );
    }
    alpha_io(frames, &one);
    yuv_io(frames);
    rgb_io(frames);
    cuda_host_path(frames);
}

/// The network's 3840x2160 output of the host-work tables (a pattern of 0–255 values).
fn output_4k() -> Image {
    let (ow, oh) = (3840, 2160);
    Image {
        width: ow,
        height: oh,
        data: (0..ow * oh * 3).map(|i| (i * 13 % 256) as f32).collect(),
    }
}

/// A 1920x1080 BGRx frame to the engine's f32 RGB and the 3840x2160 image `hr` back (fastest
/// of `frames`), and the CUDA path's (via RGB bytes, device work excluded): the baseline of
/// the host-work tables.
fn bgrx_io(frames: usize, hr: &Image) -> (f64, f64) {
    use gstadabm::engine::frame::{pack, pack_rgb8, unpack_into, unpack_rgb8_into};
    use gstadabm::engine::{FrameMut, FrameRef, PixelLayout};
    let (ow, oh) = (hr.width, hr.height);
    let (w, h) = (ow / 2, oh / 2);
    let bgrx_in: Vec<u8> = (0..w * h * 4).map(|i| (i * 31 % 251) as u8).collect();
    let mut bgrx_out = vec![0u8; ow * oh * 4];
    let f = FrameRef {
        data: &bgrx_in,
        stride: w * 4,
        width: w,
        height: h,
        layout: PixelLayout::Bgrx,
    };
    let mut o = FrameMut {
        data: &mut bgrx_out,
        stride: ow * 4,
        width: ow,
        height: oh,
        layout: PixelLayout::Bgrx,
    };
    let (mut lr, mut alpha, mut rgb) = (Image::default(), Vec::new(), Vec::new());
    let best = fastest(frames, || {
        unpack_into(&f, &mut lr, &mut alpha).unwrap();
        pack(hr, None, &mut o).unwrap();
    });
    let hr8: Vec<u8> = hr.data.iter().map(|&v| v as u8).collect();
    let best8 = fastest(frames, || {
        unpack_rgb8_into(&f, &mut rgb, &mut alpha).unwrap();
        pack_rgb8(&hr8, None, &mut o).unwrap();
    });
    (best, best8)
}

/// The element's CPU host work per x2 1080p frame with the network left out for the RGB
/// formats beyond 8-bit packed (`rgbfmt`: 64-bit RGBA, 10-bit packed, planar GBR): the
/// 1920x1080 input to the engine's f32 RGB (and alpha, upscaled) and the 3840x2160 output
/// back, and the CUDA path's (via RGB bytes), beside BGRx in the same run.
fn rgb_io(frames: usize) {
    use gstadabm::engine::frame::upscale_plane_bilinear_into;
    use gstadabm::engine::rgbfmt::{self, RgbFormat, RgbMut, RgbRef};
    let (w, h) = (1920usize, 1080usize);
    let (ow, oh) = (2 * w, 2 * h);
    let hr = output_4k();
    let hr8: Vec<u8> = hr.data.iter().map(|&v| v as u8).collect();
    let (mut lr, mut cols, mut rgb) = (Image::default(), Vec::new(), Vec::new());
    let (mut alpha, mut alpha_hr) = (Vec::<u16>::new(), Vec::new());
    println!();
    println!(
        "| format | 1080p in + 4K out, {} threads | ratio to BGRx | via 8-bit RGB (the CUDA path's until session 32) |",
        rayon::current_num_threads()
    );
    println!("|---|---:|---:|---:|");
    let (bgrx, bgrx8) = bgrx_io(frames, &hr);
    println!("| BGRx | {bgrx:.1} ms | 1.00 | {bgrx8:.1} ms |");
    for format in [
        RgbFormat::ARGB64,
        RgbFormat::RGBA64_BE,
        RgbFormat::BGR10A2_LE,
        RgbFormat::R210,
        RgbFormat::GBR,
        RgbFormat::GBRA,
        RgbFormat::GBR_10LE,
        RgbFormat::GBRA_12BE,
    ] {
        let (row, out_row) = (w * format.step, ow * format.step);
        let input: Vec<u8> = (0..row * h * format.planes)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut output = vec![0u8; out_row * oh * format.planes];
        let src = RgbRef {
            planes: [0, 1, 2, 3].map(|p| input.get(p * row * h..).unwrap_or_default()),
            strides: [row; 4],
            width: w,
            height: h,
            format,
        };
        let mut pass = |via8: bool| {
            if via8 {
                rgbfmt::unpack_rgb8_into(&src, &mut rgb, &mut alpha).unwrap();
            } else {
                rgbfmt::unpack_into(&src, &mut lr, &mut alpha).unwrap();
            }
            if format.has_alpha() {
                upscale_plane_bilinear_into(&alpha, w, h, 2, &mut alpha_hr, &mut cols);
            }
            let mut planes = output.chunks_mut(out_row * oh);
            let mut dst = RgbMut {
                planes: [(); 4].map(|_| planes.next().unwrap_or_default()),
                strides: [out_row; 4],
                width: ow,
                height: oh,
                format,
            };
            if via8 {
                rgbfmt::pack_rgb8(&hr8, &alpha_hr, &mut dst).unwrap();
            } else {
                let whole = gstadabm::engine::frame::Window::whole(&hr.data[..], ow, oh);
                let r = gstadabm::engine::frame::Rect::whole(ow, oh);
                rgbfmt::pack_rect(whole, r, &alpha_hr, &mut dst).unwrap();
            }
        };
        let best = fastest(frames, || pass(false));
        let best8 = fastest(frames, || pass(true));
        println!(
            "| {format:?} | {best:.1} ms | {:.2} | {best8:.1} ms |",
            best / bgrx
        );
    }
}

/// The element's CPU host work per x2 1080p frame with the network left out: the 1920x1080
/// input to the engine's f32 RGB and the 3840x2160 f32 output back, for BGRx
/// (`frame::unpack_into` / `frame::pack`) and for every YUV format (`yuv::unpack_into` /
/// `yuv::pack`, colour conversion and chroma filtering included).
fn yuv_io(frames: usize) {
    use gstadabm::engine::yuv::{self, ChromaSiting, YuvLayout, YuvMatrix, YuvMut, YuvRef};
    let (w, h) = (1920usize, 1080usize);
    let (ow, oh) = (2 * w, 2 * h);
    let hr = output_4k();
    let mut lr = Image::default();
    println!();
    println!(
        "| format | 1080p in + 4K out, {} threads | the CUDA path's via 8-bit RGB | the CUDA path's, conversion on the GPU | alpha: out, x2 bilinear, in |",
        rayon::current_num_threads()
    );
    println!("|---|---:|---:|---:|---:|");
    let (best, best8) = bgrx_io(frames, &hr);
    let hr8: Vec<u8> = hr.data.iter().map(|&v| v as u8).collect();
    let mut rgb = Vec::new();
    println!("| BGRx | {best:.1} ms | {best8:.1} ms | (RGB) | |");
    let (mut a, mut a_hr, mut cols) = (Vec::new(), Vec::new(), Vec::new());
    let m = YuvMatrix::new(YuvMatrix::BT709, false);
    let s = ChromaSiting {
        h_cosited: true,
        v_cosited: false,
    };
    for layout in YuvLayout::ALL {
        let planes = |w: usize, h: usize| -> (Vec<Vec<u8>>, [usize; 4]) {
            let sizes = layout.plane_sizes(w, h);
            let p = (0..layout.planes())
                .map(|p| {
                    let (row, rows) = sizes[p];
                    // 10-bit words take the low byte's pattern and the high byte 0–2 (< 1024).
                    (0..row * rows)
                        .map(|i| match (layout.word(), i % 2) {
                            (2, 1) => (i / 2 % 3) as u8,
                            _ => (i * 29 % 223) as u8 + 16,
                        })
                        .collect()
                })
                .collect();
            (p, sizes.map(|(row, _)| row))
        };
        let (inp, is) = planes(w, h);
        let (mut out, os) = planes(ow, oh);
        let f = YuvRef {
            planes: yuv::planes_ref(&inp),
            strides: is,
            width: w,
            height: h,
            layout,
            matrix: m,
            siting: s,
        };
        let mut o = YuvMut {
            planes: yuv::planes_mut(&mut out),
            strides: os,
            width: ow,
            height: oh,
            layout,
            matrix: m,
            siting: s,
        };
        let best = fastest(frames, || {
            yuv::unpack_into(&f, &mut lr).unwrap();
            yuv::pack(&hr, &mut o).unwrap();
        });
        let best8 = fastest(frames, || {
            yuv::unpack_rgb8_into(&f, &mut rgb).unwrap();
            yuv::pack_rgb8(&hr8, &mut o).unwrap();
        });
        // Since session 22 the CUDA path sends YUV frames as they are (the GPU converts them;
        // since session 23 packed ones too, v210 as I422_10LE planes): the host copies the
        // planes out of and into the frames' strides (alpha, for AYUV and VUYA, is the
        // alpha-plane row below).
        let hr_tight = vec![0u8; o.format().device().tight_len(ow, oh)];
        let tight = fastest(frames, || {
            f.copy_tight(&mut rgb).unwrap();
            o.store_tight(&hr_tight).unwrap();
        });
        // Alpha (AYUV … AYUV64, A420 and its kin), on the host on both paths: the engine's
        // `unpack_alpha_into`, its 16-bit bilinear upscale and `pack_alpha`.
        let alpha = if layout.has_alpha() {
            let t = fastest(frames, || {
                yuv::unpack_alpha_into(&f, &mut a).unwrap();
                gstadabm::engine::frame::upscale_plane_bilinear_into(
                    &a, w, h, 2, &mut a_hr, &mut cols,
                );
                yuv::pack_alpha(&a_hr, &mut o).unwrap();
            });
            format!("{t:.1} ms")
        } else {
            String::new()
        };
        println!("| {layout:?} | {best:.1} ms | {best8:.1} ms | {tight:.1} ms | {alpha} |");
    }
}

/// The alpha plane's bilinear x2 upscale (alpha layouts), 1920x1080 → 3840x2160: one thread
/// vs the pool.
fn alpha_io(frames: usize, one: &rayon::ThreadPool) {
    use gstadabm::engine::frame::upscale_plane_bilinear;
    let (w, h) = (1920usize, 1080usize);
    let a: Vec<u8> = (0..w * h).map(|i| (i * 7 % 256) as u8).collect();
    let (mut t1, mut tn) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..frames.max(1) + 1 {
        let t = Instant::now();
        let x = one.install(|| upscale_plane_bilinear(&a, w, h, 2));
        t1 = t1.min(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let y = upscale_plane_bilinear(&a, w, h, 2);
        tn = tn.min(t.elapsed().as_secs_f64() * 1e3);
        assert!(x == y);
    }
    println!(
        "alpha plane bilinear x2, 1920x1080 → 3840x2160: {t1:.1} ms on 1 thread, {tn:.1} ms on {} ({:.2}x)",
        rayon::current_num_threads(),
        t1 / tn
    );
}

/// `engine::frame`'s unpack + pack of session 9, for the comparison above.
fn session9_round_trip(
    data: &[u8],
    out: &mut [u8],
    stride: usize,
    w: usize,
    h: usize,
    layout: gstadabm::engine::PixelLayout,
) {
    let bpp = layout.bytes_per_pixel();
    let [r, g, b] = layout.rgb_offsets();
    let fourth = layout.fourth_offset();
    let mut rgb = vec![0u8; w * h * 3];
    let mut alpha = layout.has_alpha().then(|| Vec::with_capacity(w * h));
    for y in 0..h {
        let row = &data[y * stride..y * stride + w * bpp];
        let dst = &mut rgb[y * w * 3..(y + 1) * w * 3];
        for (px, o) in row.chunks_exact(bpp).zip(dst.chunks_exact_mut(3)) {
            o[0] = px[r];
            o[1] = px[g];
            o[2] = px[b];
        }
        if let Some(a) = alpha.as_mut() {
            a.extend(row.chunks_exact(bpp).map(|px| px[fourth.unwrap_or(0)]));
        }
    }
    for y in 0..h {
        let row = &mut out[y * stride..y * stride + w * bpp];
        let line = &rgb[y * w * 3..(y + 1) * w * 3];
        for (x, (px, s)) in row
            .chunks_exact_mut(bpp)
            .zip(line.chunks_exact(3))
            .enumerate()
        {
            px[r] = s[0];
            px[g] = s[1];
            px[b] = s[2];
            if let Some(o) = fourth {
                px[o] = alpha.as_ref().map_or(255, |a| a[y * w + x]);
            }
        }
    }
}

/// The host side of the element's CUDA path for x2 1920x1080 → 3840x2160 BGRx, the device's
/// work left out: unpack the frame to RGB bytes, copy the downloaded HR frame out of the pinned
/// staging buffer, pack it into the output frame. Before session 15 the RGB input and the HR
/// frame were fresh buffers every frame (page-faulted in each time); now the element hands the
/// same ones back every frame. Both alternate in one run.
fn cuda_host_path(frames: usize) {
    use gstadabm::engine::frame::{pack_rgb8, unpack_rgb8, unpack_rgb8_into};
    use gstadabm::engine::{FrameMut, FrameRef, PixelLayout};
    use rayon::prelude::*;
    let (w, h, s) = (1920usize, 1080usize, 2usize);
    let layout = PixelLayout::Bgrx;
    let data: Vec<u8> = (0..w * h * 4).map(|i| (i * 31 % 251) as u8).collect();
    // Stands for the pinned buffer the device's output is downloaded into.
    let staged: Vec<u8> = (0..w * s * h * s * 3)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    let mut frame_out = vec![0u8; w * s * h * s * 4];
    let copy = |d: &mut [u8], src: &[u8]| {
        d.par_chunks_mut(1 << 20)
            .zip(src.par_chunks(1 << 20))
            .for_each(|(d, s)| d.copy_from_slice(s));
    };
    let src = FrameRef {
        data: &data,
        stride: w * 4,
        width: w,
        height: h,
        layout,
    };
    let (mut rgb, mut alpha, mut hr) = (Vec::new(), Vec::new(), Vec::new());
    let mut best = [f64::INFINITY; 2];
    for _ in 0..frames.max(1) + 1 {
        let mut dst = FrameMut {
            data: &mut frame_out,
            stride: w * s * 4,
            width: w * s,
            height: h * s,
            layout,
        };
        let t = Instant::now();
        let (fresh_rgb, _) = unpack_rgb8(&src).unwrap();
        let mut fresh_hr = vec![0u8; staged.len()];
        copy(&mut fresh_hr, &staged);
        pack_rgb8(&fresh_hr, None, &mut dst).unwrap();
        std::hint::black_box(&fresh_rgb);
        drop((fresh_rgb, fresh_hr));
        best[0] = best[0].min(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        unpack_rgb8_into(&src, &mut rgb, &mut alpha).unwrap();
        if hr.len() != staged.len() {
            hr.resize(staged.len(), 0);
        }
        copy(&mut hr, &staged);
        pack_rgb8(&hr, None, &mut dst).unwrap();
        std::hint::black_box(&rgb);
        best[1] = best[1].min(t.elapsed().as_secs_f64() * 1e3);
    }
    println!();
    println!(
        "| element CUDA host path, x2 1920x1080 BGRx (device work excluded) | fresh buffers per frame | reused | ratio |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| unpack + HR copy out of staging + pack | {:.1} ms | {:.1} ms | {:.2}x |",
        best[0],
        best[1],
        best[0] / best[1]
    );
}

/// EDSR-baseline x2 integer w4a4 at frame sizes from 320x180 (every feature map far larger than
/// L2: the f32 residual stream alone 14.7 MB) down to 320x8 (all of a layer's maps in L2): if
/// memory traffic between layers cost time, the small frames would run faster per pixel.
/// Best of `rounds` (at least 5, [`fastest`]) runs of about 20 frames' worth of pixels each.
fn sizes(rounds: usize, threads: usize) {
    let fp = random_model(EdsrConfig::baseline(2), 1).unwrap();
    let q = quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, 1).unwrap();
    let engine = Engine::new(&q, threads).unwrap();
    println!("| input | ms/frame | ns per LR pixel | as ms per 320x180 |");
    println!("|---|---:|---:|---:|");
    for (w, h) in [
        (320usize, 180usize),
        (320, 48),
        (320, 16),
        (320, 8),
        (64, 180),
        (32, 32),
    ] {
        let img = test_image(w, h, 3);
        let mut out = Image::default();
        let n = (20 * 320 * 180 / (w * h)).max(1);
        // ms per pass of n frames, then per frame in seconds.
        let best = fastest(rounds, || {
            for _ in 0..n {
                engine
                    .upscale_into(&img, &Options::default(), &mut out)
                    .unwrap();
            }
        }) / 1e3
            / n as f64;
        let px = (w * h) as f64;
        println!(
            "| {w}x{h} | {:.2} | {:.0} | {:.1} |",
            best * 1e3,
            best * 1e9 / px,
            best * 1e3 * 57600.0 / px
        );
    }
}
