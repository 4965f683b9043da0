//! CUDA backend tests.
//!
//! - Kernel compilation needs only NVRTC (CI installs it from pip wheels): every kernel
//!   compiles for sm_80, sm_89 and sm_90 without register spills.
//! - Parity needs a GPU: the CUDA engine's output equals the CPU integer reference
//!   (`engine::intnet`) bit for bit — the f32 values before rounding and the bytes after —
//!   with the same complexity, b_I and layer bits, frame by frame in mixed batches.
//!   Floating-point layers (non-fq and float models) run in f16 on the GPU and f32 on the
//!   CPU: there the outputs must agree closely (PSNR between the two ≥ 45 dB, ≥ 99% of the
//!   bytes within ±1), the stats exactly.
//!
//! Without NVRTC or a GPU the tests say so on stderr and pass, unless `ADABM_REQUIRE_NVRTC=1`
//! / `ADABM_REQUIRE_GPU=1` (CI sets the first, scripts/gpu-check.sh the second).

use gstadabm::cuda::{self, CudaEngine, CudaError, Pixels, SharedCuda};
use gstadabm::engine::intnet::IntNetwork;
use gstadabm::engine::model::{f32_bytes, f32_from_bytes};
use gstadabm::engine::random::{quantize_on_synthetic, random_model, test_image};
use gstadabm::engine::yuv::{self, ChromaSiting, YuvFormat, YuvLayout, YuvMatrix, YuvParams};

use gstadabm::engine::{EdsrConfig, Engine, Image, Model, Options, QuantMode, builtin, complexity};

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// NVRTC from the pip wheel (`pip install nvidia-cuda-nvrtc==13.0.*`, what CI installs) when
/// it is not on the library path.
fn nvrtc() -> bool {
    if cuda::nvrtc_present() {
        return true;
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13', 'lib', 'libnvrtc.so.13'))"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
            cuda::load_nvrtc(std::path::Path::new(&p)) && cuda::nvrtc_present()
        }
        Ok(o) => {
            eprintln!(
                "no NVRTC wheel: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("no python3 to find the NVRTC wheel: {e}");
            false
        }
    }
}

#[test]
fn kernels_compile_for_every_arch_without_spills() {
    if !nvrtc() {
        assert!(
            !required("ADABM_REQUIRE_NVRTC"),
            "ADABM_REQUIRE_NVRTC=1 but libnvrtc.so.13 is not on the library path"
        );
        eprintln!("SKIP kernels_compile_for_every_arch_without_spills: libnvrtc.so.13 not found");
        return;
    }
    // The default fragment loads (ldmatrix in the integer convs) for every arch, the 32-bit
    // loads everywhere (ADABM_CUDA_LDMATRIX=0) and ldmatrix everywhere (=all) too; the L2
    // prefetch of the epilogue operands (ADABM_CUDA_PREFETCH=1) with the default loads.
    for (arch, ldsm, prefetch) in [
        ("sm_80", 1, false),
        ("sm_89", 1, false),
        ("sm_90", 1, false),
        ("sm_80", 0, false),
        ("sm_89", 0, false),
        ("sm_90", 0, false),
        ("sm_80", 2, false),
        ("sm_90", 2, false),
        ("sm_80", 1, true),
        ("sm_90", 1, true),
    ] {
        let v = cuda::Variant { ldsm, prefetch };
        let c = cuda::compile_variant(arch, true, v).unwrap_or_else(|e| panic!("{e}"));
        let arch = format!(
            "{arch} (ADABM_LDSM={ldsm}, ADABM_PREFETCH={})",
            prefetch as u8
        );
        assert!(
            c.cubin.len() > 1000,
            "{arch}: cubin of {} bytes",
            c.cubin.len()
        );
        let usage = cuda::parse_ptxas_log(&c.log);
        for name in cuda::kernel_names() {
            let k = usage.iter().find(|u| u.name == name).unwrap_or_else(|| {
                panic!("{arch}: kernel {name} not in the ptxas report:\n{}", c.log)
            });
            assert!(
                k.spill_stores == 0 && k.spill_loads == 0,
                "{arch}: {name} spills ({} bytes stores, {} loads, {} registers)",
                k.spill_stores,
                k.spill_loads,
                k.registers
            );
            assert!(
                k.registers > 0 && k.registers <= 255,
                "{arch}: {name}: {k:?}"
            );
        }
        eprintln!(
            "{arch}: {} kernels, max {} registers",
            usage.len(),
            usage.iter().map(|u| u.registers).max().unwrap_or(0)
        );
    }
}

#[test]
fn ptxas_report_is_parsed() {
    let log = "ptxas info    : Compiling entry function 'conv_x' for 'sm_90'\n\
               ptxas info    : Function properties for conv_x\n\
               \x20   16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
               ptxas info    : Used 128 registers, used 1 barriers\n";
    let u = cuda::parse_ptxas_log(log);
    assert_eq!(u.len(), 1);
    assert_eq!(
        (
            u[0].name.as_str(),
            u[0].registers,
            u[0].spill_stores,
            u[0].spill_loads
        ),
        ("conv_x", 128, 8, 4)
    );
}

/// A CUDA device, or None after saying why on stderr.
fn gpu(test: &str) -> Option<usize> {
    match cuda::probe(0) {
        Ok((name, cc)) => {
            eprintln!("{test}: {name} (sm_{}{})", cc.0, cc.1);
            Some(0)
        }
        Err(e) => {
            assert!(
                !required("ADABM_REQUIRE_GPU"),
                "ADABM_REQUIRE_GPU=1 but {e}"
            );
            eprintln!("SKIP {test}: {e}");
            None
        }
    }
}

fn rgb8(img: &Image) -> Vec<u8> {
    img.data.iter().map(|&v| v as u8).collect()
}

/// A test image with the integer values a video frame has (what the GPU gets as bytes).
fn frame(w: usize, h: usize, seed: u64) -> Image {
    let mut img = test_image(w, h, seed);
    img.data.iter_mut().for_each(|v| *v = v.round());
    img
}

/// Checks one batch against the CPU integer reference, frame by frame.
fn check_batch(model: &Model, eng: &mut CudaEngine, imgs: &[Image], opts: &Options, what: &str) {
    check_frames(model, eng, imgs, std::slice::from_ref(opts), what);
}

/// [`check_batch`] with options per frame (one set, or one per frame) in the same launch.
fn check_frames(model: &Model, eng: &mut CudaEngine, imgs: &[Image], opts: &[Options], what: &str) {
    let (w, h) = (imgs[0].width, imgs[0].height);
    let bytes: Vec<Vec<u8>> = imgs.iter().map(rgb8).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    assert!(
        imgs.iter().all(|m| m.data.iter().all(|v| v.fract() == 0.0)),
        "frames are bytes"
    );
    let (out, f32s) = eng
        .upscale_frames_f32(&refs, w, h, opts)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let cpu = Engine::new(model, 0).unwrap();
    let int = IntNetwork::new(model).unwrap();
    for (i, img) in imgs.iter().enumerate() {
        let opts = &opts[if opts.len() == 1 { 0 } else { i }];
        let c = complexity::measure(cpu.metric(opts), &img.data, w, h);
        let (plan, b_i) = cpu.bit_plan(c, opts).unwrap();
        let want = int.upscale(img, &plan);
        let (rgb, stats) = &out[i];
        assert_eq!(
            stats.complexity.to_bits(),
            c.to_bits(),
            "{what} frame {i}: complexity {} vs {c}",
            stats.complexity
        );
        assert_eq!(stats.image_bits, b_i, "{what} frame {i}: b_I");
        let bits: Vec<u8> = cpu
            .network()
            .adaptive_layers()
            .map(|k| plan.bits[k])
            .collect();
        assert_eq!(stats.layer_bits, bits, "{what} frame {i}: layer bits");
        let got = &f32s[i];
        assert_eq!(got.len(), want.data.len(), "{what} frame {i}: output size");
        let diff = got
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        if diff > 0 {
            let (j, (a, b)) = got
                .iter()
                .zip(&want.data)
                .enumerate()
                .find(|(_, (a, b))| a.to_bits() != b.to_bits())
                .unwrap();
            panic!(
                "{what} frame {i}: {diff} of {} f32 outputs differ; first at {j}: {a} vs {b}",
                got.len()
            );
        }
        let want8: Vec<u8> = want
            .data
            .iter()
            .map(|&v| gstadabm::engine::frame::to_u8(v))
            .collect();
        assert!(rgb == &want8, "{what} frame {i}: bytes differ");
    }
    eprintln!("{what}: {} frame(s) {w}x{h} identical", imgs.len());
}

fn random_fq(feats: usize, blocks: usize, scale: u32, w_bits: u8, a_bits: u8, seed: u64) -> Model {
    let cfg = EdsrConfig {
        scale,
        n_resblocks: blocks,
        n_feats: feats,
        ..EdsrConfig::baseline(scale)
    };
    let fp = random_model(cfg, seed).unwrap();
    quantize_on_synthetic(&fp, QuantMode::Fq, w_bits, a_bits, seed + 1).unwrap()
}

/// Every kernel path (32/64 features, signed/unsigned weights, x2/x3/x4 shuffles) on odd
/// sizes: 1x1, sizes that end inside a tile, several tiles.
#[test]
fn parity_random_models_odd_sizes() {
    let Some(dev) = gpu("parity_random_models_odd_sizes") else {
        return;
    };
    for (feats, blocks, scale, wb, ab) in [
        (64, 4, 2, 8, 6),
        (64, 4, 2, 4, 4),
        (32, 3, 4, 4, 4),
        (32, 2, 3, 8, 8),
        (64, 2, 4, 6, 3),
    ] {
        let model = random_fq(feats, blocks, scale, wb, ab, feats as u64 + scale as u64);
        let mut eng = CudaEngine::new(&model, dev).unwrap();
        for (w, h) in [(1, 1), (17, 5), (33, 18), (5, 40)] {
            let img = frame(w, h, (w * h) as u64);
            check_batch(
                &model,
                &mut eng,
                &[img],
                &Options::default(),
                &format!("F{feats} x{scale} w{wb}a{ab} {w}x{h}"),
            );
        }
    }
}

/// One batch whose frames get different image bits (flat, normal, busy), so each frame in the
/// same launch runs its own bit-widths; plus the live knobs (base bits, thresholds, adaptive).
#[test]
fn parity_mixed_bits_in_one_batch() {
    let Some(dev) = gpu("parity_mixed_bits_in_one_batch") else {
        return;
    };
    let model = random_fq(64, 4, 2, 4, 4, 77);
    let q = model.quant.clone().unwrap();
    let mut eng = CudaEngine::new(&model, dev).unwrap();
    let (w, h) = (37, 21);
    let mut flat = Image::new(w, h);
    flat.data.iter_mut().for_each(|v| *v = 90.0);
    // 2x2 checks: every Sobel window sees an edge.
    let mut busy = Image::new(w, h);
    for (i, v) in busy.data.iter_mut().enumerate() {
        let (x, y) = ((i / 3) % w, i / (3 * w));
        *v = if (x / 2 + y / 2) % 2 == 0 { 250.0 } else { 5.0 };
    }
    let imgs = [flat, frame(w, h, 6), busy];
    let cs: Vec<f32> = imgs
        .iter()
        .map(|m| complexity::gradient_density(&m.data, w, h))
        .collect();
    // Thresholds between the three complexities: b_I = -1, 0, +1 in one batch.
    let opts = Options {
        image_lower: Some((cs[0] + cs[1]) / 2.0),
        image_upper: Some((cs[1] + cs[2]) / 2.0),
        ..Options::default()
    };
    assert!(cs[0] < cs[1] && cs[1] < cs[2], "{cs:?}");
    check_batch(&model, &mut eng, &imgs, &opts, "mixed b_I");
    check_batch(
        &model,
        &mut eng,
        &imgs,
        &Options {
            base_bits: Some(6),
            ..opts
        },
        "base bits 6",
    );
    check_batch(
        &model,
        &mut eng,
        &imgs,
        &Options {
            adaptive: false,
            ..opts
        },
        "adaptive off",
    );
    check_batch(
        &model,
        &mut eng,
        &imgs,
        &Options {
            image_lower: Some(q.image_lower),
            image_upper: Some(q.image_upper),
            ..opts
        },
        "model thresholds",
    );
}

/// Frames of several streams in one launch, each with its own options (base bits, thresholds,
/// adaptive off), as a shared engine runs them; and a batch smaller than the one before
/// (buffers reused).
#[test]
fn parity_per_frame_options_in_one_launch() {
    let Some(dev) = gpu("parity_per_frame_options_in_one_launch") else {
        return;
    };
    let model = random_fq(64, 3, 2, 4, 4, 21);
    let mut eng = CudaEngine::new(&model, dev).unwrap();
    let (w, h) = (35, 19);
    let imgs: Vec<Image> = (0..4).map(|i| frame(w, h, 40 + i)).collect();
    let c1 = complexity::gradient_density(&imgs[1].data, w, h);
    let opts = [
        Options::default(),
        Options {
            base_bits: Some(6),
            image_lower: Some(c1 - 1.0),
            image_upper: Some(c1 - 0.5),
            ..Options::default()
        },
        Options {
            adaptive: false,
            base_bits: Some(3),
            ..Options::default()
        },
        Options {
            image_lower: Some(c1 + 50.0),
            image_upper: Some(c1 + 60.0),
            ..Options::default()
        },
    ];
    check_frames(&model, &mut eng, &imgs, &opts, "four streams' options");
    check_frames(
        &model,
        &mut eng,
        &imgs[..2],
        &opts[2..],
        "then a batch of two",
    );
    let bad = Options {
        base_bits: Some(9),
        ..Options::default()
    };
    let refs: Vec<&[u8]> = Vec::new();
    assert!(eng.check_options(&bad).is_err());
    assert!(eng.upscale_frames(&refs, w, h, &[]).is_err());
}

/// Several threads (streams) on one shared engine: each gets its own frames back, computed
/// with its own options; the same model on the same device gives the same engine.
#[test]
fn shared_engine_serves_several_streams() {
    let Some(dev) = gpu("shared_engine_serves_several_streams") else {
        return;
    };
    // One lane (the default), and two (two batches in flight on their own device streams).
    for lanes in [1, 2] {
        shared_engine_check(dev, lanes);
    }
}

fn shared_engine_check(dev: usize, lanes: usize) {
    let model = random_fq(32, 2, 2, 4, 4, 8);
    let shared = SharedCuda::get_with_lanes(&model, dev, lanes).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &shared,
        &SharedCuda::get_with_lanes(&model, dev, lanes).unwrap()
    ));
    let other = random_fq(32, 2, 2, 8, 6, 8);
    assert!(!std::sync::Arc::ptr_eq(
        &shared,
        &SharedCuda::get_with_lanes(&other, dev, lanes).unwrap()
    ));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let shared = shared.clone();
            let model = model.clone();
            std::thread::spawn(move || {
                let (w, h) = if t % 2 == 0 { (24, 17) } else { (19, 9) };
                let opts = Options {
                    base_bits: Some(3 + t as u8),
                    adaptive: t != 3,
                    ..Options::default()
                };
                let cpu = Engine::new(&model, 1).unwrap();
                let int = IntNetwork::new(&model).unwrap();
                for i in 0..6 {
                    let img = frame(w, h, 10 * t + i);
                    let (rgb, st) = shared
                        .upscale(rgb8(&img), w, h, &opts)
                        .unwrap_or_else(|e| panic!("stream {t} frame {i}: {e}"));
                    let c = complexity::gradient_density(&img.data, w, h);
                    let (plan, b_i) = cpu.bit_plan(c, &opts).unwrap();
                    let want: Vec<u8> = int
                        .upscale(&img, &plan)
                        .data
                        .iter()
                        .map(|&v| gstadabm::engine::frame::to_u8(v))
                        .collect();
                    assert_eq!(st.image_bits, b_i, "stream {t} frame {i}: b_I");
                    assert!(rgb == want, "stream {t} frame {i}: bytes differ");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(shared.lanes(), lanes);
    let sizes = shared.batch_sizes();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        24,
        "every frame ran once: {sizes:?}"
    );
    eprintln!("shared engine, {lanes} lane(s): launches of {sizes:?} frames");
}

/// The built-in quantized models (trained weights, rgb_range 255) end to end.
#[test]
fn parity_builtin_models() {
    let Some(dev) = gpu("parity_builtin_models") else {
        return;
    };
    for b in builtin::MODELS.iter().filter(|m| m.name.contains("-w")) {
        let model = b.load().unwrap();
        let mut eng = CudaEngine::new(&model, dev).unwrap();
        let imgs = [frame(48, 30, 1), frame(48, 30, 2)];
        check_batch(&model, &mut eng, &imgs, &Options::default(), b.name);
    }
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    gstadabm::engine::random::Rng::new(seed).bytes(n)
}

/// The CPU engine's conversions of a tight YUV frame to the network's f32 RGB and of that
/// (unrounded) to one.
fn host_unpack(data: &[u8], f: YuvFormat, w: usize, h: usize) -> Vec<f32> {
    f.unpack_tight(data, w, h).unwrap()
}

fn host_pack(rgb: &[f32], f: YuvFormat, w: usize, h: usize) -> Vec<u8> {
    f.pack_tight(rgb, w, h).unwrap()
}

/// RGB values as the network gives them (`Rng::network_rgb`).
fn noise_f32(n: usize, seed: u64) -> Vec<f32> {
    gstadabm::engine::random::Rng::new(seed).network_rgb(n)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `yuv_unpack` and `yuv_pack` give the host's values and bytes for every device layout, range, matrix
/// and siting, on random samples and pixels, at odd sizes and at 1080p; the start-up check
/// passes; v210's own bytes (which go as I422_10LE planes) are refused with a reason.
#[test]
fn yuv_kernels_match_the_host_conversion() {
    let Some(dev) = gpu("yuv_kernels_match_the_host_conversion") else {
        return;
    };
    let model = random_fq(32, 1, 2, 4, 4, 5);
    let mut eng = CudaEngine::new(&model, dev).unwrap();
    cuda::yuv_self_check(&mut eng).unwrap();
    let mut n = 0;
    for (i, f) in yuv::device::device_formats().into_iter().enumerate() {
        for (j, &(w, h)) in [(1, 1), (2, 1), (1, 3), (7, 5), (33, 17), (130, 66)]
            .iter()
            .enumerate()
        {
            let seed = (i * 10 + j) as u64;
            let data = noise(f.tight_len(w, h), seed);
            let got = eng.yuv_to_rgb(&data, f, w, h).unwrap();
            assert!(
                bits(&got) == bits(&host_unpack(&data, f, w, h)),
                "yuv_unpack {f:?} {w}x{h}"
            );
            let rgb = noise_f32(w * h * 3, seed + 5000);
            let got = eng.rgb_to_yuv(&rgb, f, w, h).unwrap();
            assert!(got == host_pack(&rgb, f, w, h), "yuv_pack {f:?} {w}x{h}");
            n += 1;
        }
    }
    for layout in [
        YuvLayout::I420,
        YuvLayout::Nv12,
        YuvLayout::P010,
        YuvLayout::Uyvy,
        YuvLayout::Ayuv,
    ] {
        let f = YuvFormat {
            layout,
            matrix: YuvMatrix::new(YuvMatrix::BT709, false),
            siting: ChromaSiting {
                h_cosited: true,
                v_cosited: false,
            },
        };
        let (w, h) = (1920, 1080);
        let data = noise(f.tight_len(w, h), 77);
        let got = eng.yuv_to_rgb(&data, f, w, h).unwrap();
        assert!(bits(&got) == bits(&host_unpack(&data, f, w, h)));
        let rgb = noise_f32(w * h * 3, 78);
        assert!(eng.rgb_to_yuv(&rgb, f, w, h).unwrap() == host_pack(&rgb, f, w, h));
    }
    eprintln!(
        "yuv kernels: {n} format/size cases and 1080p I420, NV12, P010, UYVY, AYUV equal the host's"
    );
    let f = yuv::device::device_formats()[0];
    let short = noise(f.tight_len(8, 8) - 1, 1);
    assert!(matches!(
        eng.yuv_to_rgb(&short, f, 8, 8),
        Err(CudaError::Input(_))
    ));
    // v210 goes as I422_10LE planes (`YuvFormat::device`); its own bytes are refused.
    let v210 = YuvFormat {
        layout: YuvLayout::V210,
        ..f
    };
    let e = eng
        .yuv_to_rgb(&noise(v210.tight_len(8, 8), 2), v210, 8, 8)
        .unwrap_err();
    assert!(e.to_string().contains("I422_10LE"), "{e}");
}

/// The YUV kernels' own source (kernels/adabm.cu, its YUV section and `to_u8`), compiled for
/// the host CPU by the system C++ compiler with CUDA's keywords defined away, run thread by
/// thread: bit for bit the CPU engine's conversions (frame to f32 RGB, unrounded f32 RGB to
/// frame) for every device format at odd sizes. x86-64
/// floats are IEEE single precision like the GPU's, and `-ffp-contract=off` keeps the
/// `--fmad=false` order, so this checks the kernels' arithmetic without a GPU (what remains
/// for one is the launch). Skips, saying so, without a C++ compiler.
#[test]
fn yuv_kernel_source_on_the_host_matches_the_host_conversion() {
    let src = include_str!("../kernels/adabm.cu");
    let section = |from: &str, to: &str| -> &str {
        let a = src
            .find(from)
            .unwrap_or_else(|| panic!("{from:?} not in adabm.cu"));
        let b = a + src[a..]
            .find(to)
            .unwrap_or_else(|| panic!("{to:?} not in adabm.cu"));
        &src[a..b]
    };
    let typedefs = section("typedef unsigned char u8;", "\n\n");
    let to_u8 = section("// Rust's `v.round_ties_even()", "\n}\n");
    let yuv = section("// YUV <-> the network's RGB", "// -----------------");
    let program = format!(
        r#"#include <math.h>
#include <stdio.h>
#include <string.h>
#include <algorithm>
#include <vector>
#define __device__
#define __forceinline__ inline
#define __global__
using std::max;
using std::min;
struct Dim3 {{ unsigned x, y, z; }};
static Dim3 blockIdx, threadIdx, blockDim;
{typedefs}
{to_u8}
}}
{yuv}
// Records from stdin: mode (0 unpack, 1 pack), YuvParams, input length, input bytes (pack:
// f32 RGB); the output of each to stdout (unpack: f32 RGB).
int main() {{
    unsigned mode;
    YuvParams p;
    unsigned long long n;
    while (fread(&mode, 4, 1, stdin) == 1) {{
        if (fread(&p, sizeof p, 1, stdin) != 1 || fread(&n, 8, 1, stdin) != 1) return 2;
        std::vector<u8> in(n + 4);
        if (n && fread(in.data(), 1, n, stdin) != n) return 3;
        size_t px = (size_t)p.w * p.h;
        size_t out_n = mode == 0 ? px * 3 * 4 : (size_t)n;
        if (mode == 1) {{
            out_n = 0;
            for (int k = 0; k < 3; k++) {{
                size_t rows = k == 0 ? p.h : p.ch;
                size_t end = p.off[k] + (size_t)p.stride[k] * rows;
                if (p.stride[k] && end > out_n) out_n = end;
            }}
        }}
        std::vector<u8> out(out_n + 4, 0xA5);
        std::vector<float> rgb(mode == 1 ? n / 4 + 1 : 0);
        if (mode == 1) memcpy(rgb.data(), in.data(), n);
        blockDim.x = 256;
        for (blockIdx.x = 0; (size_t)blockIdx.x * 256 < px; blockIdx.x++)
            for (threadIdx.x = 0; threadIdx.x < 256; threadIdx.x++) {{
                if (mode == 0) yuv_unpack(in.data(), (float*)out.data(), p);
                else yuv_pack(rgb.data(), out.data(), p);
            }}
        out.resize(out_n);
        fwrite(out.data(), 1, out.size(), stdout);
    }}
    return 0;
}}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let (cpp, exe) = (dir.path().join("yuv.cpp"), dir.path().join("yuv"));
    std::fs::write(&cpp, program).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let built = std::process::Command::new(&cxx)
        .args(["-O1", "-ffp-contract=off", "-o"])
        .arg(&exe)
        .arg(&cpp)
        .output();
    let built = match built {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "SKIP yuv_kernel_source_on_the_host_matches_the_host_conversion: no C++ compiler ({cxx}: {e})"
            );
            return;
        }
    };
    assert!(
        built.status.success(),
        "the YUV section of kernels/adabm.cu does not compile for the host:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // Every case as one record; the expected outputs in the same order.
    let (mut input, mut want) = (Vec::new(), Vec::new());
    let mut record = |mode: u32, p: &YuvParams, data: &[u8], expected: Vec<u8>| {
        input.extend_from_slice(&mode.to_le_bytes());
        // SAFETY: `YuvParams` is `#[repr(C)]` plain data without padding (its size is
        // asserted), laid out as the C++ struct on the same target.
        let bytes = unsafe {
            std::slice::from_raw_parts((p as *const YuvParams).cast::<u8>(), size_of::<YuvParams>())
        };
        input.extend_from_slice(bytes);
        input.extend_from_slice(&(data.len() as u64).to_le_bytes());
        input.extend_from_slice(data);
        want.push(expected);
    };
    let mut cases = 0;
    for (i, f) in yuv::device::device_formats().into_iter().enumerate() {
        for (j, &(w, h)) in [(1, 1), (2, 1), (1, 3), (7, 5), (33, 17), (128, 96)]
            .iter()
            .enumerate()
        {
            let p = YuvParams::new(f, w, h).unwrap();
            let seed = (i * 10 + j) as u64;
            let data = noise(f.tight_len(w, h), seed);
            record(0, &p, &data, f32_bytes(&host_unpack(&data, f, w, h)));
            let rgb = noise_f32(w * h * 3, seed + 5000);
            record(1, &p, &f32_bytes(&rgb), host_pack(&rgb, f, w, h));
            cases += 1;
        }
    }
    let mut child = std::process::Command::new(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&input).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        out.status.success(),
        "host build of the kernels: {:?}",
        out.status
    );
    let mut at = 0;
    for (k, w) in want.iter().enumerate() {
        let got = &out.stdout[at..at + w.len()];
        let what = if k % 2 == 0 { "yuv_unpack" } else { "yuv_pack" };
        assert!(
            got == &w[..],
            "{what} differs from the host in format/size case {}",
            k / 2
        );
        at += w.len();
    }
    assert_eq!(at, out.stdout.len(), "output length");
    eprintln!(
        "YUV kernels built for the host: {cases} format/size cases, unpack and pack, equal the host's conversions"
    );
}

/// YUV frames through the whole engine, mixed with RGB and f32 frames and other YUV layouts
/// in one launch, give the CPU engine's bytes: the frame converted to f32 RGB as the CPU does
/// (10-bit P010 keeps its 10 bits: no 8-bit RGB in between), the CPU integer reference's
/// output packed as the CPU packs it; through a shared engine too.
#[test]
fn yuv_frames_through_the_engine_match_the_host_path() {
    let Some(dev) = gpu("yuv_frames_through_the_engine_match_the_host_path") else {
        return;
    };
    let model = random_fq(64, 2, 2, 4, 4, 9);
    let mut eng = CudaEngine::new(&model, dev).unwrap();
    let (w, h, s) = (37, 21, 2);
    let all = yuv::device::device_formats();
    let pick = |l: YuvLayout, k: usize| *all.iter().filter(|f| f.layout == l).nth(k).unwrap();
    let fmts = [
        (
            Pixels::Yuv(pick(YuvLayout::I420, 0)),
            Pixels::Yuv(pick(YuvLayout::I420, 0)),
        ),
        (Pixels::Rgb, Pixels::Rgb),
        (
            Pixels::Yuv(pick(YuvLayout::Nv12, 1)),
            Pixels::Yuv(pick(YuvLayout::Nv12, 2)),
        ),
        (Pixels::Yuv(pick(YuvLayout::P010, 3)), Pixels::Rgb),
        (Pixels::RgbF32, Pixels::Yuv(pick(YuvLayout::P010, 0))),
        (Pixels::Rgb, Pixels::RgbF32),
    ];
    let inputs: Vec<Vec<u8>> = fmts
        .iter()
        .enumerate()
        .map(|(i, (fi, _))| {
            // Smooth content, so that the network sees an image rather than noise.
            let img = test_image(w, h, 60 + i as u64);
            match fi {
                Pixels::Rgb => rgb8(&frame(w, h, 60 + i as u64)),
                Pixels::Yuv(f) => host_pack(&img.data, *f, w, h),
                Pixels::RgbF32 => f32_bytes(&img.data),
            }
        })
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(|v| &v[..]).collect();
    let opts = [Options::default()];
    let mut outs = vec![Vec::new(); fmts.len()];
    let stats = eng
        .upscale_formats_into(&refs, &fmts, w, h, &opts, &mut outs)
        .unwrap();
    // The CPU's path: the frame's f32 values, the integer reference, packed.
    let values: Vec<Vec<f32>> = fmts
        .iter()
        .zip(&inputs)
        .map(|((fi, _), d)| match fi {
            Pixels::Rgb => d.iter().map(|&v| v as f32).collect(),
            Pixels::Yuv(f) => host_unpack(d, *f, w, h),
            Pixels::RgbF32 => f32_from_bytes(d),
        })
        .collect();
    assert!(
        values[3].iter().any(|v| v.fract() != 0.0),
        "P010 is not 8-bit RGB"
    );
    let cpu = Engine::new(&model, 0).unwrap();
    let int = IntNetwork::new(&model).unwrap();
    let mut hr = Vec::new();
    for (i, ((_, fo), v)) in fmts.iter().zip(&values).enumerate() {
        let img = Image {
            width: w,
            height: h,
            data: v.clone(),
        };
        let c = complexity::measure(cpu.metric(&opts[0]), &img.data, w, h);
        let (plan, b_i) = cpu.bit_plan(c, &opts[0]).unwrap();
        let want = int.upscale(&img, &plan).data;
        let want_bytes = match fo {
            Pixels::Rgb => want
                .iter()
                .map(|&v| gstadabm::engine::frame::to_u8(v))
                .collect(),
            Pixels::Yuv(f) => host_pack(&want, *f, w * s, h * s),
            Pixels::RgbF32 => f32_bytes(&want),
        };
        assert!(outs[i] == want_bytes, "frame {i} ({:?})", fmts[i]);
        assert_eq!(
            stats[i].complexity.to_bits(),
            c.to_bits(),
            "frame {i} complexity"
        );
        assert_eq!(stats[i].image_bits, b_i, "frame {i} b_I");
        hr.push(want);
    }
    // RGB in and YUV out only (no YUV input in the batch; one format pair for all frames).
    let f = pick(YuvLayout::Nv21, 0);
    let mut outs2 = vec![Vec::new(); 2];
    eng.upscale_formats_into(
        &[&inputs[1][..], &inputs[1][..]],
        &[(Pixels::Rgb, Pixels::Yuv(f))],
        w,
        h,
        &opts,
        &mut outs2,
    )
    .unwrap();
    let want_nv21 = host_pack(&hr[1], f, w * s, h * s);
    assert!(
        outs2[0] == want_nv21 && outs2[1] == want_nv21,
        "RGB in, NV21 out"
    );
    // One shared engine, a YUV frame in and out.
    let shared = SharedCuda::get(&model, dev).unwrap();
    shared.yuv_on_device().unwrap();
    let done = shared
        .upscale_as(inputs[0].clone(), fmts[0], Vec::new(), w, h, &opts[0])
        .unwrap();
    assert!(done.hr == outs[0], "shared engine, I420");
    // Wrong sizes are refused before anything runs.
    let bad = [&inputs[0][1..]];
    assert!(
        eng.upscale_formats_into(&bad, &fmts[..1], w, h, &opts, &mut outs[..1])
            .is_err()
    );
}

/// Checks one batch of a model with floating-point layers against the CPU engine: stats
/// exactly, outputs within the f16 tolerance. Returns the worst PSNR between the two.
fn check_close(
    model: &Model,
    eng: &mut CudaEngine,
    imgs: &[Image],
    opts: &Options,
    what: &str,
) -> f64 {
    let (w, h) = (imgs[0].width, imgs[0].height);
    let bytes: Vec<Vec<u8>> = imgs.iter().map(rgb8).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let (out, f32s) = eng
        .upscale_batch_f32(&refs, w, h, opts)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let cpu = Engine::new(model, 0).unwrap();
    let mut worst = f64::INFINITY;
    for (i, img) in imgs.iter().enumerate() {
        let (want, st) = cpu.upscale(img, opts).unwrap();
        let (rgb, stats) = &out[i];
        assert_eq!(
            stats.complexity.to_bits(),
            st.complexity.to_bits(),
            "{what} frame {i}: complexity"
        );
        assert_eq!(stats.image_bits, st.image_bits, "{what} frame {i}: b_I");
        assert_eq!(
            stats.layer_bits, st.layer_bits,
            "{what} frame {i}: layer bits"
        );
        assert_eq!(
            f32s[i].len(),
            want.data.len(),
            "{what} frame {i}: output size"
        );
        let want8: Vec<u8> = want
            .data
            .iter()
            .map(|&v| gstadabm::engine::frame::to_u8(v))
            .collect();
        let n = want8.len() as f64;
        let mse = rgb
            .iter()
            .zip(&want8)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            / n;
        let psnr = if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0f64 * 255.0 / mse).log10()
        };
        let near = rgb
            .iter()
            .zip(&want8)
            .filter(|(a, b)| a.abs_diff(**b) <= 1)
            .count() as f64
            / n;
        let max_f = f32s[i]
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            psnr >= 45.0 && near >= 0.99,
            "{what} frame {i}: GPU vs CPU PSNR {psnr:.2} dB, {:.3}% of bytes within ±1, \
             max |Δ| {max_f} before rounding",
            100.0 * near
        );
        worst = worst.min(psnr);
    }
    eprintln!(
        "{what}: {} frame(s) {w}x{h}, worst GPU-vs-CPU PSNR {worst:.2} dB",
        imgs.len()
    );
    worst
}

/// Floating-point layers on the GPU (f16 tensor cores, f32 head and tail): non-fq models
/// (float head, upsampler and tail around the integer body, mixed b_I in one batch) and float
/// models (random and built-in) on odd sizes, against the CPU.
#[test]
fn parity_float_layers() {
    let Some(dev) = gpu("parity_float_layers") else {
        return;
    };
    for (feats, blocks, scale) in [(64, 3, 2), (32, 2, 4), (32, 2, 3), (64, 2, 4)] {
        let cfg = EdsrConfig {
            scale,
            n_resblocks: blocks,
            n_feats: feats,
            ..EdsrConfig::baseline(scale)
        };
        let fp = random_model(cfg, feats as u64 + scale as u64).unwrap();
        let nonfq = quantize_on_synthetic(&fp, QuantMode::NonFq, 4, 4, 5).unwrap();
        for (model, kind) in [(&fp, "float"), (&nonfq, "non-fq w4a4")] {
            let mut eng = CudaEngine::new(model, dev).unwrap_or_else(|e| panic!("{kind}: {e}"));
            for (w, h) in [(1, 1), (17, 5), (33, 18)] {
                let imgs = [frame(w, h, (w * h) as u64), frame(w, h, 9)];
                check_close(
                    model,
                    &mut eng,
                    &imgs,
                    &Options::default(),
                    &format!("{kind} F{feats} x{scale} {w}x{h}"),
                );
            }
        }
    }
    // Mixed image bits in one batch of a non-fq model.
    let fp = random_model(EdsrConfig::baseline(2), 3).unwrap();
    let model = quantize_on_synthetic(&fp, QuantMode::NonFq, 4, 4, 4).unwrap();
    let mut eng = CudaEngine::new(&model, dev).unwrap();
    let (w, h) = (29, 19);
    let imgs = [frame(w, h, 1), frame(w, h, 2), frame(w, h, 3)];
    let cs: Vec<f32> = imgs
        .iter()
        .map(|m| complexity::gradient_density(&m.data, w, h))
        .collect();
    let mut sorted = cs.clone();
    sorted.sort_by(f32::total_cmp);
    let opts = Options {
        image_lower: Some((sorted[0] + sorted[1]) / 2.0),
        image_upper: Some((sorted[1] + sorted[2]) / 2.0),
        ..Options::default()
    };
    check_close(&model, &mut eng, &imgs, &opts, "non-fq mixed b_I");
    for b in builtin::MODELS.iter().filter(|m| m.name.contains("fp32")) {
        let model = b.load().unwrap();
        let mut eng = CudaEngine::new(&model, dev).unwrap();
        let imgs = [frame(48, 30, 1), frame(48, 30, 2)];
        check_close(&model, &mut eng, &imgs, &Options::default(), b.name);
    }
}

/// What the CUDA engine cannot run is refused before any device is touched, with the reason;
/// quantized (fq, non-fq) and float models are not refused for what they are.
#[test]
fn unsupported_models_are_refused_with_a_reason() {
    let fp = builtin::find(2, "fp32").unwrap().load().unwrap();
    if let Err(CudaError::Unsupported(e)) = CudaEngine::new(&fp, 0) {
        panic!("float model refused: {e}");
    }
    let cfg = EdsrConfig {
        n_resblocks: 1,
        n_feats: 16,
        ..EdsrConfig::baseline(2)
    };
    let m = quantize_on_synthetic(&random_model(cfg, 1).unwrap(), QuantMode::Fq, 4, 4, 2).unwrap();
    let err = CudaEngine::new(&m, 0)
        .err()
        .expect("16 features refused")
        .to_string();
    assert!(err.contains("16 features"), "{err}");
    let m = quantize_on_synthetic(
        &random_model(
            EdsrConfig {
                n_resblocks: 1,
                n_feats: 32,
                ..EdsrConfig::baseline(2)
            },
            1,
        )
        .unwrap(),
        QuantMode::NonFq,
        4,
        4,
        2,
    )
    .unwrap();
    if let Err(CudaError::Unsupported(e)) = CudaEngine::new(&m, 0) {
        panic!("non-fq model refused: {e}");
    }
}

/// Models calibrated with the frequency or attention metric, and per-frame metric overrides
/// mixed in one launch: the host measures those frames' complexity (the GPU the gradient
/// density), and everything equals the CPU integer reference; resident frames (the
/// benchmark's) refuse a metric the GPU does not measure.
#[test]
fn parity_complexity_metrics_measured_on_the_host() {
    use gstadabm::engine::ComplexityMetric as M;
    let Some(dev) = gpu("parity_complexity_metrics_measured_on_the_host") else {
        return;
    };
    let mut model = random_fq(32, 2, 2, 4, 4, 31);
    let imgs: Vec<Image> = (0..3).map(|i| frame(40, 24, 80 + i)).collect();
    let (w, h) = (40, 24);
    let q = model.quant.as_mut().unwrap();
    q.complexity = M::Frequency;
    // Thresholds around the middle image's frequency metric, so that b_I differs by frame.
    let c1 = complexity::measure(M::Frequency, &imgs[1].data, w, h);
    (q.image_lower, q.image_upper) = (c1 - 1e-3, c1 + 1e-3);
    let mut eng = CudaEngine::new(&model, dev).unwrap();
    check_batch(
        &model,
        &mut eng,
        &imgs,
        &Options::default(),
        "frequency model",
    );
    let ca = complexity::measure(M::Attention, &imgs[0].data, w, h);
    let opts = [
        Options::default(),
        Options {
            metric: Some(M::Gradient),
            ..Options::default()
        },
        Options {
            metric: Some(M::Attention),
            image_lower: Some(ca + 1.0),
            image_upper: Some(ca + 2.0),
            ..Options::default()
        },
    ];
    check_frames(
        &model,
        &mut eng,
        &imgs,
        &opts,
        "metrics mixed in one launch",
    );
    let refs: Vec<Vec<u8>> = imgs.iter().map(rgb8).collect();
    let refs: Vec<&[u8]> = refs.iter().map(|v| &v[..]).collect();
    eng.upload(&refs, w, h).unwrap();
    assert!(matches!(
        eng.run_resident(&Options::default()),
        Err(CudaError::Unsupported(_))
    ));
    eng.run_resident(&opts[1]).unwrap();
}
