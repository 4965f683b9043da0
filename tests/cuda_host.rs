//! The kernels of kernels/adabm.cu run without a GPU: compiled for the host CPU by the system
//! C++ compiler on an emulated GPU (tests/cuda_host/emu.hpp: one fiber per thread,
//! `mma.sync`, `ldmatrix`, `cp.async` and the shuffles emulated from the PTX ISA's
//! definitions), fed the weight images the engine uploads ([`cuda::conv_image`]), and
//! compared with the CPU engines: each tensor-core conv alone (bit for bit against
//! `engine::intnet` for the integer convs — every epilogue, signed and unsigned weights, 32
//! and 64 channels, the 32-bit and `ldmatrix` fragment loads, two frames with their own bits,
//! persistent blocks that loop over several tiles, partial tiles; within f16 rounding for
//! the f16 convs), and whole networks kernel by kernel (fq bit for bit, float and non-fq
//! within f16 rounding). What remains for a GPU is the hardware itself
//! (scripts/gpu-check.sh): that the emulation's reading of the PTX ISA is the GPU's,
//! occupancy, and speed.
//!
//! Skips, saying so, without a C++ compiler.
#![cfg(feature = "cuda")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::mem::offset_of;

use gstadabm::cuda::{
    self, ConvImage, DirectArgs, FloatArgs, FrameParams, LayerInfo, Layout, MmaArgs, Variant,
};
use gstadabm::engine::conv::{ConvWeights, FeatureMap};
use gstadabm::engine::frame::to_u8;
use gstadabm::engine::intconv::{ActQuant, CodeMap};
use gstadabm::engine::intnet::{IntConv, IntLayer, IntNetwork};
use gstadabm::engine::model::{LayerKind, Role, f32_bytes};
use gstadabm::engine::random::{Rng, quantize_on_synthetic, random_model, test_image};
use gstadabm::engine::{
    ComplexityMetric, EdsrConfig, Engine, Model, Options, QuantMode, builtin, complexity,
};

/// Builds the emulated-GPU driver of kernel variant `v`; None (after saying so) without a C++
/// compiler.
fn driver(dir: &Path, v: Variant) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tag = format!("{}{}", v.ldsm, v.prefetch as u8);
    let src = dir.join(format!("emu{tag}.cpp"));
    let exe = dir.join(format!("emu{tag}"));
    let inc = |p: &str| format!("#include \"{}\"\n", root.join(p).display());
    let program = inc("tests/cuda_host/emu.hpp")
        + &inc("kernels/adabm.cu")
        + &inc("tests/cuda_host/driver.cpp");
    std::fs::write(&src, program).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    // ADABM_EMU_CXXFLAGS: extra flags (e.g. -DADABM_EMU_UCONTEXT, the fiber switch of other
    // architectures).
    let extra = std::env::var("ADABM_EMU_CXXFLAGS").unwrap_or_default();
    let built = match Command::new(&cxx)
        .args(["-std=c++17", "-O1", "-ffp-contract=off"])
        .args(extra.split_whitespace())
        .arg(format!("-DADABM_LDSM={}", v.ldsm))
        .arg(format!("-DADABM_PREFETCH={}", v.prefetch as u8))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP cuda_host: no C++ compiler ({cxx}: {e})");
            return None;
        }
    };
    assert!(
        built.status.success(),
        "kernels/adabm.cu does not build for the emulated GPU:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    Some(exe)
}

/// A session with the emulated GPU (tests/cuda_host/driver.cpp): buffers that stay in its
/// memory between launches, as device memory does.
struct Gpu {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
    lens: Vec<usize>,
}

impl Gpu {
    /// `eager`: `cp.async` copies land when issued and warps drift apart (instead of copies
    /// landing at the wait and warps in lockstep).
    fn start(exe: &Path, eager: bool) -> Self {
        let mut child = Command::new(exe)
            .env(
                "ADABM_EMU_CP_ASYNC",
                if eager { "eager" } else { "deferred" },
            )
            .env("ADABM_EMU_SKEW", if eager { "7" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        Gpu {
            child,
            stdin,
            stdout,
            lens: Vec::new(),
        }
    }

    /// The driver stopped: its exit status and message.
    fn failed(&mut self) -> ! {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!("emulated GPU: {:?}\n{err}", self.child.wait());
    }

    fn send(&mut self, bytes: &[u8]) {
        if self
            .stdin
            .write_all(bytes)
            .and_then(|_| self.stdin.flush())
            .is_err()
        {
            self.failed();
        }
    }

    fn receive(&mut self, n: usize) -> Vec<u8> {
        use std::io::Read;
        let mut v = vec![0u8; n];
        if self.stdout.read_exact(&mut v).is_err() {
            self.failed();
        }
        v
    }

    /// Buffer `id` now holds `bytes`.
    fn upload(&mut self, id: u32, bytes: &[u8]) {
        let mut m = vec![b'U'];
        m.extend_from_slice(&id.to_le_bytes());
        m.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        m.extend_from_slice(bytes);
        self.send(&m);
        if self.lens.len() <= id as usize {
            self.lens.resize(id as usize + 1, 0);
        }
        self.lens[id as usize] = bytes.len();
    }

    fn download(&mut self, id: u32) -> Vec<u8> {
        let mut m = vec![b'D'];
        m.extend_from_slice(&id.to_le_bytes());
        self.send(&m);
        self.receive(self.lens[id as usize])
    }

    /// Since the last call: `ldmatrix` phases (8-row reads), the extra shared-memory
    /// wavefronts their bank conflicts cost, and L2 prefetches (each inside a buffer).
    fn stats(&mut self) -> [u64; 3] {
        self.send(b"S");
        let v = self.receive(24);
        std::array::from_fn(|i| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().unwrap()))
    }

    /// Launches `kernel` with the parameter blob `params`, whose pointer fields at byte
    /// offsets `ptrs[i].0` point to buffers `ptrs[i].1`.
    fn launch(
        &mut self,
        kernel: &str,
        grid: [u32; 3],
        threads: u32,
        smem: u32,
        params: &[u8],
        ptrs: &[(usize, u32)],
    ) {
        let mut m = vec![b'L'];
        m.extend_from_slice(&(kernel.len() as u32).to_le_bytes());
        m.extend_from_slice(kernel.as_bytes());
        for v in [
            grid[0],
            grid[1],
            grid[2],
            threads,
            smem,
            params.len() as u32,
        ] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(params);
        m.extend_from_slice(&(ptrs.len() as u32).to_le_bytes());
        for &(off, id) in ptrs {
            m.extend_from_slice(&(off as u32).to_le_bytes());
            m.extend_from_slice(&id.to_le_bytes());
        }
        self.send(&m);
        if self.receive(2) != b"ok" {
            self.failed();
        }
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of a `#[repr(C)]` parameter struct without implicit padding (the argument
/// structs of kernels/adabm.cu have explicit padding fields where they need one; the driver
/// checks each blob's size against its own struct).
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is plain data without padding bytes, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A launch of one tensor-core kernel on buffers 0..8: `MmaArgs`'s in, wts, bias, ktab, plan,
/// res, head and out.
struct MmaLaunch {
    kernel: String,
    grid: [u32; 3],
    smem: u32,
    args: MmaArgs,
    bufs: [Vec<u8>; 8],
}

impl MmaLaunch {
    /// Case `c`'s launch of `kernel` (layer 0 of 2, two frames, res_scale 1.25) with the conv's
    /// device form `img`, an output map of `out` pixels and `out_len` bytes, and the `maps`
    /// input codes or f16 map, plan, residual stream and head output.
    fn new(
        kernel: String,
        c: &Case,
        img: &ConvImage,
        out: (usize, usize),
        maps: [Vec<u8>; 4],
        out_len: usize,
    ) -> Self {
        let [input, plan, res, head] = maps;
        MmaLaunch {
            kernel,
            grid: [c.grid_x, (c.cout / img.ns) as u32, 1],
            smem: img.smem,
            args: mma_args((c.h, c.w), out, 2, img, 0, 2, c.r, 1.25),
            bufs: [
                input,
                img.wts.clone(),
                f32_bytes(&img.bias),
                i32_bytes(&img.ktab),
                plan,
                res,
                head,
                vec![0u8; out_len],
            ],
        }
    }
}

/// Runs a tensor-core launch alone on a driver of variant `v`: its `out` and `res` buffers
/// afterwards. Checks that it loaded its fragments with `ldmatrix` exactly when the variant
/// says so, without bank conflicts, and that it prefetched its epilogue operands (inside
/// their buffer) exactly when the variant and its epilogue say so (`what` names the launch in
/// messages).
fn run_mma(gpu: &mut Gpu, l: &MmaLaunch, v: Variant, what: &str) -> (Vec<u8>, Vec<u8>) {
    for (i, b) in l.bufs.iter().enumerate() {
        gpu.upload(i as u32, b);
    }
    let ptrs = [
        (offset_of!(MmaArgs, input), 0),
        (offset_of!(MmaArgs, wts), 1),
        (offset_of!(MmaArgs, bias), 2),
        (offset_of!(MmaArgs, ktab), 3),
        (offset_of!(MmaArgs, plan), 4),
        (offset_of!(MmaArgs, res), 5),
        (offset_of!(MmaArgs, head), 6),
        (offset_of!(MmaArgs, out), 7),
    ];
    gpu.launch(&l.kernel, l.grid, 256, l.smem, &bytes_of(&l.args), &ptrs);
    let [phases, extra, prefetches] = gpu.stats();
    let f16 = l.kernel.starts_with("conv_hmma");
    let ldmatrix = v.ldsm >= if f16 { 2 } else { 1 };
    assert_eq!(phases > 0, ldmatrix, "{what}: ldmatrix used as configured");
    assert_eq!(
        extra, 0,
        "{what}: ldmatrix bank conflicts over {phases} phases"
    );
    // Epilogues 2 (residual) and 3 (global skip) read f32 operands (the integer `_h` kernel,
    // once a frame, does not prefetch them).
    let reads = (l.kernel.contains("_e2") || l.kernel.contains("_e3")) && !l.kernel.ends_with("_h");
    assert_eq!(
        prefetches > 0,
        v.prefetch && reads,
        "{what}: {prefetches} L2 prefetches"
    );
    (gpu.download(7), gpu.download(5))
}

/// Padded geometry of a code map as the engine allocates it ([`cuda::Geom`]): `(hp, wp,
/// tiles_y, tiles_x)`.
fn geom(h: usize, w: usize) -> (usize, usize, usize, usize) {
    let g = cuda::Geom::new(h, w);
    (g.hp, g.wp, g.tiles_y, g.tiles_x)
}

/// `MmaArgs` of conv `layer` (of `l_count`) on `frames` frames of `gi = (h, w)` pixels whose
/// output map is `go` (`gi · r` for an upsampler), with the conv's device form `img`.
#[allow(clippy::too_many_arguments)]
fn mma_args(
    gi: (usize, usize),
    go: (usize, usize),
    frames: usize,
    img: &ConvImage,
    layer: usize,
    l_count: usize,
    r: usize,
    res_scale: f32,
) -> MmaArgs {
    let (hp, wp, ty, tx) = geom(gi.0, gi.1);
    let (hp_out, wp_out, _, _) = geom(go.0, go.1);
    MmaArgs {
        h: gi.0 as i32,
        w: gi.1 as i32,
        hp: hp as i32,
        wp: wp as i32,
        tiles_x: tx as i32,
        tiles_y: ty as i32,
        frames: frames as i32,
        hp_out: hp_out as i32,
        wp_out: wp_out as i32,
        cout: img.cout as i32,
        m: img.m,
        layer: layer as i32,
        next: layer as i32 + 1,
        l_count: l_count as i32,
        r: r as i32,
        hw: img.hw,
        res_scale,
        ..Default::default()
    }
}

/// The role of a tensor-core conv with epilogue `mode` (upsampler: factor `r`).
fn role_of(mode: usize, r: usize) -> Role {
    match mode {
        1 => Role::BlockConv1(0),
        2 => Role::BlockConv2(0),
        3 => Role::BodyLast,
        _ => Role::Up { stage: 0, r },
    }
}

/// The emulated-GPU drivers of these kernel variants, built in parallel; None (after saying
/// so) without a C++ compiler.
fn drivers(dir: &Path, variants: &[Variant]) -> Option<Vec<PathBuf>> {
    std::thread::scope(|s| {
        let jobs: Vec<_> = variants
            .iter()
            .map(|&v| s.spawn(move || driver(dir, v)))
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    })
}

/// Kernel variant: `ADABM_LDSM`, `ADABM_PREFETCH`.
fn variant(ldsm: u8, prefetch: bool) -> Variant {
    Variant { ldsm, prefetch }
}

/// `Quant {l, u, s, da}` of the kernels for an activation quantizer.
fn quant_bytes(q: &ActQuant) -> Vec<u8> {
    f32_bytes(&[q.l, q.u, q.inv_step(), q.step()])
}

#[derive(Clone, Copy)]
struct Case {
    cin: usize,
    cout: usize,
    w_bits: u8,
    mode: usize,
    r: usize,
    h: usize,
    w: usize,
    grid_x: u32,
    /// Mode 2 with an f16 map out (`conv_mma_*_e2_s*_h`, a non-fq model's last block).
    half_out: bool,
}

fn f16_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// One integer tensor-core conv on two frames with their own input and output bits: the
/// launch, and the expected `out` and `res` buffers.
fn integer_case(c: &Case, seed: u64) -> (MmaLaunch, Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let (cin, cout, frames) = (c.cin, c.cout, 2usize);
    let oihw: Vec<f32> = (0..cout * cin * 9).map(|_| rng.symmetric(0.1)).collect();
    let bias: Vec<f32> = (0..cout).map(|_| rng.symmetric(0.3)).collect();
    let conv = IntConv::new(cin, cout, &oihw, &bias, 0.08, c.w_bits);
    let role = role_of(c.mode, c.r);
    let img: ConvImage = cuda::conv_image(&conv, role).unwrap();
    assert_eq!(
        img.signed,
        c.w_bits <= 7,
        "signed centred weights up to 7 bits"
    );
    // Frame f: input bits, output (next layer) bits and bounds.
    let qin = [ActQuant::new(-0.6, 1.9, 4), ActQuant::new(-0.45, 2.3, 7)];
    let qout = [ActQuant::new(-1.1, 1.4, 6), ActQuant::new(-0.8, 2.0, 3)];
    let (h, w) = (c.h, c.w);
    let (hp, wp, _, _) = geom(h, w);
    let (ho, wo, co) = if c.mode == 4 {
        (h * c.r, w * c.r, cout / (c.r * c.r))
    } else {
        (h, w, cout)
    };
    let (hp_out, wp_out, _, _) = geom(ho, wo);
    let mut input = vec![0u8; frames * hp * wp * cin];
    let mut res = vec![0f32; frames * h * w * cout];
    let mut head = vec![0f32; frames * h * w * cout];
    let esz = if c.half_out { 2 } else { 1 };
    let mut want_out = vec![0u8; frames * hp_out * wp_out * co * esz];
    let mut want_res = res.clone();
    for v in res.iter_mut().chain(head.iter_mut()) {
        *v = rng.symmetric(1.5) + 0.3;
    }
    want_res.copy_from_slice(&res);
    for f in 0..frames {
        let n = qin[f].n as usize;
        let mut map = CodeMap {
            h,
            w,
            c: cin,
            codes: vec![0; (h + 2) * (w + 2) * cin],
        };
        for y in 0..h {
            for x in 0..w {
                for i in 0..cin {
                    let q = rng.below(n + 1) as u8;
                    map.codes[((y + 1) * (w + 2) + x + 1) * cin + i] = q;
                    input[((f * hp + y + 1) * wp + x + 1) * cin + i] = q;
                }
            }
        }
        let v: FeatureMap = conv.forward(&map, qin[f]);
        let qn = qout[f];
        for y in 0..h {
            for x in 0..w {
                let px = (f * h + y) * w + x;
                for o in 0..cout {
                    let vo = v.data[v.idx(y, x) + o];
                    let (code, at) = match c.mode {
                        1 => (qn.code(if vo > 0.0 { vo } else { 0.0 }), None),
                        2 if c.half_out => {
                            let r = res[px * cout + o] + 1.25 * vo;
                            want_res[px * cout + o] = r;
                            let at = (((f * hp_out + y + 1) * wp_out + x + 1) * co + o) * 2;
                            want_out[at..at + 2].copy_from_slice(&f16_bits(r));
                            continue;
                        }
                        2 => {
                            let r = res[px * cout + o] + 1.25 * vo;
                            want_res[px * cout + o] = r;
                            (qn.code(r), None)
                        }
                        3 => (qn.code(vo + head[px * cout + o]), None),
                        _ => {
                            let rr = c.r * c.r;
                            let (ch, i, j) = (o / rr, (o % rr) / c.r, o % c.r);
                            let (yy, xx) = (y * c.r + i, x * c.r + j);
                            let at = ((f * hp_out + yy + 1) * wp_out + xx + 1) * co + ch;
                            (qn.code(vo), Some(at))
                        }
                    };
                    let at = at.unwrap_or(((f * hp_out + y + 1) * wp_out + x + 1) * co + o);
                    want_out[at] = code;
                }
            }
        }
    }
    // The plan: [frame][layer 0 (this conv's input), layer 1 (its output's)].
    let mut plan = Vec::new();
    for f in 0..frames {
        plan.extend(quant_bytes(&qin[f]));
        plan.extend(quant_bytes(&qout[f]));
    }
    let kernel = format!(
        "conv_mma_c{cin}_e{}_s{}{}",
        c.mode,
        if img.signed { 1 } else { 0 },
        if c.half_out { "_h" } else { "" }
    );
    let maps = [input, plan, f32_bytes(&res), f32_bytes(&head)];
    let launch = MmaLaunch::new(kernel, c, &img, (ho, wo), maps, want_out.len());
    (launch, want_out, f32_bytes(&want_res))
}

/// Every integer tensor-core kernel (ReLU, residual, global skip and pixel-shuffle epilogues,
/// and the residual one with an f16 map out; 4-bit signed and 8-bit unsigned weights; 32 and
/// 64 channels) with 32-bit and `ldmatrix` fragment loads, and with the L2 prefetch, equals the
/// CPU integer reference on every byte of its output map (padding included) and every f32 of
/// the residual stream.
#[test]
fn integer_mma_kernels_match_the_reference_on_the_emulated_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for cin in [32usize, 64] {
        let body = Case {
            cin,
            cout: cin,
            w_bits: 4,
            mode: 1,
            r: 0,
            h: 19,
            w: 21,
            grid_x: 3,
            half_out: false,
        };
        for w_bits in [4u8, 8] {
            for mode in 1..=3 {
                cases.push(Case {
                    w_bits,
                    mode,
                    ..body
                });
            }
            let (h, w) = (18, 7);
            let (grid_x, half_out) = (2, true);
            cases.push(Case {
                w_bits,
                mode: 2,
                h,
                w,
                grid_x,
                half_out,
                ..body
            });
        }
        // Upsamplers are 8-bit: x2 (4 channels per HR pixel, staged stores) and x3 (9: not
        // dividing the slice, byte stores).
        for (r, h, w) in [(2usize, 17, 18), (3, 9, 17)] {
            let (cout, w_bits, mode, grid_x) = (cin * r * r, 8, 4, 2);
            cases.push(Case {
                cout,
                w_bits,
                mode,
                r,
                h,
                w,
                grid_x,
                ..body
            });
        }
    }
    // Both fragment loads with the copies at the wait; ldmatrix and the L2 prefetch with the
    // copies landing when issued and warps drifting apart (which shows a missing barrier).
    let runs = [
        (variant(0, false), false),
        (variant(1, false), false),
        (variant(1, true), true),
    ];
    let Some(built) = drivers(dir.path(), &runs.map(|r| r.0)) else {
        return;
    };
    let mut checked = 0;
    for ((v, eager), exe) in runs.iter().zip(&built) {
        let mut gpu = Gpu::start(exe, *eager);
        for (i, c) in cases.iter().enumerate() {
            let (l, want_out, want_res) = integer_case(c, 100 + i as u64);
            let what = format!("{} ({v:?}, eager copies: {eager})", l.kernel);
            let (out, res) = run_mma(&mut gpu, &l, *v, &what);
            let bad = out.iter().zip(&want_out).filter(|(a, b)| a != b).count();
            assert!(
                bad == 0,
                "{what}: {bad} of {} output bytes differ",
                out.len()
            );
            assert!(res == want_res, "{what}: the residual stream differs");
            checked += 1;
        }
    }
    eprintln!("emulated GPU: {checked} integer tensor-core conv launches equal the CPU reference");
}

/// One f16 tensor-core conv (a floating-point layer) on two frames: the launch, and the
/// expected output map (f64 from the f16 inputs and weights) and residual stream.
fn float_case(c: &Case, seed: u64) -> (MmaLaunch, Vec<f64>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let (cin, cout, frames) = (c.cin, c.cout, 2usize);
    let oihw: Vec<f32> = (0..cout * cin * 9).map(|_| rng.symmetric(0.1)).collect();
    let bias: Vec<f32> = (0..cout).map(|_| rng.symmetric(0.3)).collect();
    let cw = ConvWeights::from_oihw(cin, cout, &oihw, &bias);
    let role = role_of(c.mode, c.r);
    let img = cuda::float_conv_image(&cw, role).unwrap();
    let round16 = |v: f32| half::f16::from_f32(v).to_f64();
    let (h, w) = (c.h, c.w);
    let (hp, wp, _, _) = geom(h, w);
    let rr = c.r * c.r;
    let (ho, wo, co) = if c.mode == 4 {
        (h * c.r, w * c.r, cout / rr)
    } else {
        (h, w, cout)
    };
    let (hp_out, wp_out, _, _) = geom(ho, wo);
    let mut input = vec![0u8; frames * hp * wp * cin * 2];
    let mut x = vec![0f64; frames * h * w * cin];
    for f in 0..frames {
        for y in 0..h {
            for xx in 0..w {
                for i in 0..cin {
                    let v = rng.symmetric(1.2);
                    x[((f * h + y) * w + xx) * cin + i] = round16(v);
                    let at = (((f * hp + y + 1) * wp + xx + 1) * cin + i) * 2;
                    input[at..at + 2].copy_from_slice(&f16_bits(v));
                }
            }
        }
    }
    let res: Vec<f32> = (0..frames * h * w * cout)
        .map(|_| rng.symmetric(1.5))
        .collect();
    let head: Vec<f32> = (0..frames * h * w * cout)
        .map(|_| rng.symmetric(1.5))
        .collect();
    let mut want_res = res.clone();
    let mut want = vec![0f64; frames * hp_out * wp_out * co];
    for f in 0..frames {
        for y in 0..h {
            for xx in 0..w {
                let px = (f * h + y) * w + xx;
                for o in 0..cout {
                    let mut v = bias[o] as f64;
                    for t in 0..9 {
                        let (sy, sx) = ((y + t / 3) as isize - 1, (xx + t % 3) as isize - 1);
                        if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                            continue;
                        }
                        let src = ((f * h + sy as usize) * w + sx as usize) * cin;
                        for i in 0..cin {
                            v += x[src + i] * round16(cw.w[(t * cin + i) * cout + o]);
                        }
                    }
                    let (val, at) = match c.mode {
                        1 => (v.max(0.0), None),
                        2 => {
                            let r = res[px * cout + o] as f64 + 1.25 * v;
                            want_res[px * cout + o] = r as f32;
                            (r, None)
                        }
                        3 => (v + head[px * cout + o] as f64, None),
                        _ => {
                            let (ch, i, j) = (o / rr, (o % rr) / c.r, o % c.r);
                            let (yy, xo) = (y * c.r + i, xx * c.r + j);
                            (v, Some(((f * hp_out + yy + 1) * wp_out + xo + 1) * co + ch))
                        }
                    };
                    let at = at.unwrap_or(((f * hp_out + y + 1) * wp_out + xx + 1) * co + o);
                    want[at] = val;
                }
            }
        }
    }
    let plan = vec![0u8; frames * 2 * 16];
    let kernel = format!("conv_hmma_c{cin}_e{}", c.mode);
    let maps = [input, plan, f32_bytes(&res), f32_bytes(&head)];
    let launch = MmaLaunch::new(kernel, c, &img, (ho, wo), maps, want.len() * 2);
    (launch, want, want_res)
}

/// The f16 tensor-core kernels of floating-point layers (every epilogue, 32 and 64 channels),
/// with 32-bit fragment loads (the engine's default for them) and with `ldmatrix` and the L2
/// prefetch (`ADABM_CUDA_LDMATRIX=all`, `ADABM_CUDA_PREFETCH=1`, neither run on a GPU yet):
/// every output value within an f16
/// rounding of the exact result from the same f16 inputs and weights, the residual stream
/// within f32 rounding, and nothing written outside the image. (The tensor core's order of
/// summation is its own: f32 accumulation here, so closeness, not bit equality.)
#[test]
fn f16_mma_kernels_match_f64_on_the_emulated_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for cin in [32usize, 64] {
        let body = Case {
            cin,
            cout: cin,
            w_bits: 0,
            mode: 1,
            r: 0,
            h: 17,
            w: 9,
            grid_x: 2,
            half_out: true,
        };
        for mode in 1..=3 {
            cases.push(Case { mode, ..body });
        }
        for (r, h, w) in [(2usize, 9, 17), (3, 5, 7)] {
            cases.push(Case {
                cout: cin * r * r,
                mode: 4,
                r,
                h,
                w,
                ..body
            });
        }
    }
    let variants = [variant(0, false), variant(2, true)];
    let Some(built) = drivers(dir.path(), &variants) else {
        return;
    };
    let mut checked = 0;
    for (v, exe) in variants.iter().zip(&built) {
        let mut gpu = Gpu::start(exe, false);
        for (i, c) in cases.iter().enumerate() {
            let (l, want, want_res) = float_case(c, 300 + i as u64);
            let what = format!("{} ({v:?})", l.kernel);
            let (out, res) = run_mma(&mut gpu, &l, *v, &what);
            for (k, (b, &w)) in out.chunks_exact(2).zip(&want).enumerate() {
                let g = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64();
                assert!(
                    (g - w).abs() <= w.abs() / 1024.0 + 1e-4,
                    "{what}: value {k} is {g}, expected {w}"
                );
            }
            for (k, (b, &w)) in res.chunks_exact(4).zip(&want_res).enumerate() {
                let g = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{what}: residual {k} is {g}, expected {w}"
                );
            }
            checked += 1;
        }
    }
    eprintln!("emulated GPU: {checked} f16 tensor-core conv launches agree with f64");
}

/// Parameters of `complexity`, `plan_bits` and `input_codes` (tests/cuda_host/driver.cpp).
#[repr(C)]
#[derive(Clone, Copy)]
struct ComplexityParams {
    rgb: u64,
    csum: u64,
    h: i32,
    w: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PlanBitsParams {
    csum: u64,
    layers: u64,
    plan: u64,
    stats: u64,
    bits: u64,
    frames: i32,
    h: i32,
    w: i32,
    l_count: i32,
    params: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct WidenParams {
    src: u64,
    dst: u64,
    n: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct InputCodesParams {
    rgb: u64,
    codes: u64,
    plan: u64,
    h: i32,
    w: i32,
    hp: i32,
    wp: i32,
    l_count: i32,
    k: f32,
    mean: [f32; 3],
    pad: i32,
}

/// A model's whole forward pass on the emulated GPU, kernel by kernel in
/// `CudaEngine::enqueue`'s order and buffers (complexity, plan_bits; fq: input_codes and
/// conv_head, otherwise the f32 head conv_fhead; the body's tensor-core convs — integer, f16,
/// or integer with the last block's conv2 writing f16 for a non-fq model; the upsampler
/// stages; conv_tail or the f32 conv_ftail), for RGB frames (0–255 values; `bytes`: given
/// as bytes and widened by rgb_widen, as the engine does for the RGB formats, else as the f32
/// values the YUV conversion gives) each with its own options: each frame's HR bytes, f32
/// outputs, complexity and b_I.
#[allow(clippy::type_complexity)]
fn network(
    gpu: &mut Gpu,
    model: &Model,
    frames: &[Vec<f32>],
    bytes: bool,
    w: usize,
    h: usize,
    opts: &[Options],
) -> Vec<(Vec<u8>, Vec<f32>, f32, i32)> {
    let (net, layers, layout) = cuda::device_network(model).unwrap();
    let cfg = &net.config;
    let q = model.quant.as_ref();
    let nf = frames.len();
    let c = cfg.n_feats;
    let l_count = layers.len();
    let image = |k: usize| match &layers[k] {
        IntLayer::Int(c) => cuda::conv_image(c, net.layers[k].spec.role).unwrap(),
        IntLayer::Float(w) => cuda::float_conv_image(w, net.layers[k].spec.role).unwrap(),
    };
    // Buffers: 0 RGB in (f32), 1 csum, 2 layer infos, 3 plan, 4 stats, 5 bits, 6 frame params,
    // 7 input codes, 8 head, 9 res, 10 / 11 code maps A / B, 12 RGB out, 13 f32 out,
    // 14.. the upsampler stages' HR code maps, 30 / 31 f16 maps A / B, 40.. the stages' HR
    // f16 maps, 99 RGB bytes in, 100 + 3k.. conv k's weights, bias, K table.
    let (hp, wp, _, _) = geom(h, w);
    let values = frames.concat();
    if bytes {
        let b: Vec<u8> = values.iter().map(|&v| v as u8).collect();
        assert!(
            b.iter().zip(&values).all(|(&b, &v)| b as f32 == v),
            "frames of bytes"
        );
        gpu.upload(99, &b);
        gpu.upload(0, &vec![0u8; values.len() * 4]);
        let p = WidenParams {
            src: 0,
            dst: 0,
            n: values.len() as u64,
        };
        gpu.launch(
            "rgb_widen",
            [values.len().div_ceil(4 * 256) as u32, 1, 1],
            256,
            0,
            &bytes_of(&p),
            &[
                (offset_of!(WidenParams, src), 99),
                (offset_of!(WidenParams, dst), 0),
            ],
        );
    } else {
        gpu.upload(0, &f32_bytes(&values));
    }
    gpu.upload(1, &vec![0u8; nf * 8]);
    let mut infos = Vec::new();
    for (k, layer) in net.layers.iter().enumerate() {
        let info = match (&layers[k], layer.quant) {
            (IntLayer::Int(_), Some(ql)) => LayerInfo {
                l: ql.l,
                u: ql.u,
                kind: match layer.kind {
                    LayerKind::Float => 0,
                    LayerKind::Adaptive => 1,
                    LayerKind::Fixed8 => 2,
                },
                b_l: layer.b_l,
            },
            _ => LayerInfo {
                l: 0.0,
                u: 1.0,
                kind: 0,
                b_l: 0,
            },
        };
        infos.extend(bytes_of(&info));
        let img = image(k);
        gpu.upload(100 + 3 * k as u32, &img.wts);
        gpu.upload(101 + 3 * k as u32, &f32_bytes(&img.bias));
        gpu.upload(102 + 3 * k as u32, &i32_bytes(&img.ktab));
    }
    gpu.upload(2, &infos);
    gpu.upload(3, &vec![0u8; nf * l_count * 16]);
    gpu.upload(4, &vec![0u8; nf * 8]);
    gpu.upload(5, &vec![0u8; nf * l_count]);
    let cpu = Engine::new(model, 1).unwrap();
    let mut params = Vec::new();
    for (o, values) in opts.iter().zip(frames) {
        // A metric other than the gradient density is measured on the host (as
        // `CudaEngine::host_complexities` does) and handed to plan_bits.
        let metric = cpu.metric(o);
        let c_host = (metric != ComplexityMetric::Gradient)
            .then(|| complexity::measure(metric, values, w, h));
        let p = FrameParams {
            lower: o.image_lower.unwrap_or(q.map_or(0.0, |q| q.image_lower)),
            upper: o.image_upper.unwrap_or(q.map_or(0.0, |q| q.image_upper)),
            base: o.base_bits.or(q.map(|q| q.a_bits)).unwrap_or(0) as i32,
            adaptive: (o.adaptive && q.is_some()) as i32,
            c_host: c_host.unwrap_or(0.0),
            has_c: c_host.is_some() as i32,
        };
        params.extend(bytes_of(&p));
    }
    gpu.upload(6, &params);
    gpu.upload(7, &vec![0u8; nf * hp * wp * 4]);
    gpu.upload(8, &vec![0u8; nf * h * w * c * 4]);
    gpu.upload(9, &vec![0u8; nf * h * w * c * 4]);
    gpu.upload(10, &vec![0u8; nf * hp * wp * c]);
    gpu.upload(11, &vec![0u8; nf * hp * wp * c]);
    gpu.upload(30, &vec![0u8; nf * hp * wp * c * 2]);
    gpu.upload(31, &vec![0u8; nf * hp * wp * c * 2]);
    let s = cfg.scale as usize;
    gpu.upload(12, &vec![0u8; nf * h * s * w * s * 3]);
    gpu.upload(13, &vec![0u8; nf * h * s * w * s * 3 * 4]);
    let frames_i = nf as u32;
    let (hi, wi) = (h as i32, w as i32);
    let p = ComplexityParams {
        rgb: 0,
        csum: 0,
        h: hi,
        w: wi,
    };
    let at = |o: usize, id: u32| (o, id);
    gpu.launch(
        "complexity",
        [(h * w).div_ceil(256) as u32, frames_i, 1],
        256,
        0,
        &bytes_of(&p),
        &[
            at(offset_of!(ComplexityParams, rgb), 0),
            at(offset_of!(ComplexityParams, csum), 1),
        ],
    );
    let p = PlanBitsParams {
        csum: 0,
        layers: 0,
        plan: 0,
        stats: 0,
        bits: 0,
        frames: nf as i32,
        h: hi,
        w: wi,
        l_count: l_count as i32,
        params: 0,
    };
    gpu.launch(
        "plan_bits",
        [frames_i.div_ceil(32), 1, 1],
        32,
        0,
        &bytes_of(&p),
        &[
            at(offset_of!(PlanBitsParams, csum), 1),
            at(offset_of!(PlanBitsParams, layers), 2),
            at(offset_of!(PlanBitsParams, plan), 3),
            at(offset_of!(PlanBitsParams, stats), 4),
            at(offset_of!(PlanBitsParams, bits), 5),
            at(offset_of!(PlanBitsParams, params), 6),
        ],
    );
    let mean = cfg.rgb_mean.map(|m| m * cfg.rgb_range);
    let k_in = cfg.rgb_range / 255.0;
    let direct_ptrs = |k: usize, input: u32| {
        let wk = 100 + 3 * k as u32;
        vec![
            at(offset_of!(DirectArgs, input), input),
            at(offset_of!(DirectArgs, wts), wk),
            at(offset_of!(DirectArgs, bias), wk + 1),
            at(offset_of!(DirectArgs, ktab), wk + 2),
            at(offset_of!(DirectArgs, plan), 3),
            at(offset_of!(DirectArgs, head), 8),
            at(offset_of!(DirectArgs, res), 9),
            at(offset_of!(DirectArgs, out), 10),
            at(offset_of!(DirectArgs, rgb), 12),
            at(offset_of!(DirectArgs, rgbf), 13),
        ]
    };
    let float_ptrs = |k: usize, input: u32, out: u32| {
        let wk = 100 + 3 * k as u32;
        vec![
            at(offset_of!(FloatArgs, rgb), 0),
            at(offset_of!(FloatArgs, input), input),
            at(offset_of!(FloatArgs, wts), wk),
            at(offset_of!(FloatArgs, bias), wk + 1),
            at(offset_of!(FloatArgs, plan), 3),
            at(offset_of!(FloatArgs, head), 8),
            at(offset_of!(FloatArgs, res), 9),
            at(offset_of!(FloatArgs, out), out),
            at(offset_of!(FloatArgs, rgbo), 12),
            at(offset_of!(FloatArgs, rgbf), 13),
        ]
    };
    let head = image(0);
    let threads = h * w * head.cout / 4;
    let head_grid = [threads.div_ceil(128) as u32, frames_i, 1];
    if layout == Layout::Fq {
        let p = InputCodesParams {
            rgb: 0,
            codes: 0,
            plan: 0,
            h: hi,
            w: wi,
            hp: hp as i32,
            wp: wp as i32,
            l_count: l_count as i32,
            k: k_in,
            mean,
            pad: 0,
        };
        gpu.launch(
            "input_codes",
            [(h * w).div_ceil(256) as u32, frames_i, 1],
            256,
            0,
            &bytes_of(&p),
            &[
                at(offset_of!(InputCodesParams, rgb), 0),
                at(offset_of!(InputCodesParams, codes), 7),
                at(offset_of!(InputCodesParams, plan), 3),
            ],
        );
        let args = DirectArgs {
            h: hi,
            w: wi,
            hp_in: hp as i32,
            wp_in: wp as i32,
            hp_out: hp as i32,
            wp_out: wp as i32,
            m: head.m,
            layer: 0,
            next: 1,
            l_count: l_count as i32,
            hw: head.hw,
            ..Default::default()
        };
        let name = format!("conv_head_c{c}");
        gpu.launch(
            &name,
            head_grid,
            128,
            0,
            &bytes_of(&args),
            &direct_ptrs(0, 7),
        );
    } else {
        // f32 head from the RGB bytes: the first block's codes (non-fq) or its f16 input.
        let codes = layout == Layout::NonFq;
        let args = FloatArgs {
            h: hi,
            w: wi,
            hp_out: hp as i32,
            wp_out: wp as i32,
            next: 1,
            l_count: l_count as i32,
            codes: codes as i32,
            k: k_in,
            mean,
            ..Default::default()
        };
        let out = if codes { 10 } else { 30 };
        let name = format!("conv_fhead_c{c}");
        gpu.launch(
            &name,
            head_grid,
            128,
            0,
            &bytes_of(&args),
            &float_ptrs(0, 0, out),
        );
    }
    // Tensor-core conv k with kernel `name` from buffer `src` (geometry `gi`) to `dst` (`go`).
    let conv = |gpu: &mut Gpu,
                name: &str,
                k: usize,
                src: u32,
                dst: u32,
                gi: (usize, usize),
                go: (usize, usize),
                r: usize| {
        let img = image(k);
        let args = mma_args(gi, go, nf, &img, k, l_count, r, cfg.res_scale);
        let wk = 100 + 3 * k as u32;
        let ptrs = [
            at(offset_of!(MmaArgs, input), src),
            at(offset_of!(MmaArgs, wts), wk),
            at(offset_of!(MmaArgs, bias), wk + 1),
            at(offset_of!(MmaArgs, ktab), wk + 2),
            at(offset_of!(MmaArgs, plan), 3),
            at(offset_of!(MmaArgs, res), 9),
            at(offset_of!(MmaArgs, head), 8),
            at(offset_of!(MmaArgs, out), dst),
        ];
        // Fewer blocks than tiles: each loops over several (persistent blocks).
        let blocks = (nf * args.tiles_x as usize * args.tiles_y as usize).div_ceil(2) as u32;
        let grid = [blocks, (img.cout / img.ns) as u32, 1];
        gpu.launch(name, grid, 256, img.smem, &bytes_of(&args), &ptrs);
    };
    let int = |k: usize, mode: usize| format!("conv_mma_c{c}_e{mode}_s{}", image(k).signed as u8);
    let half = |mode: usize| format!("conv_hmma_c{c}_e{mode}");
    let lr = (h, w);
    let mut k = 1;
    for i in 0..cfg.n_resblocks {
        if layout == Layout::Float {
            conv(gpu, &half(1), k, 30, 31, lr, lr, 1);
            conv(gpu, &half(2), k + 1, 31, 30, lr, lr, 1);
        } else {
            conv(gpu, &int(k, 1), k, 10, 11, lr, lr, 1);
            if layout == Layout::NonFq && i + 1 == cfg.n_resblocks {
                let name = format!("{}_h", int(k + 1, 2));
                conv(gpu, &name, k + 1, 11, 30, lr, lr, 1);
            } else {
                conv(gpu, &int(k + 1, 2), k + 1, 11, 10, lr, lr, 1);
            }
        }
        k += 2;
    }
    let float_up = layout != Layout::Fq;
    if float_up {
        conv(gpu, &half(3), k, 30, 31, lr, lr, 1);
    } else {
        conv(gpu, &int(k, 3), k, 10, 11, lr, lr, 1);
    }
    k += 1;
    let (mut src, mut g, mut stage) = (if float_up { 31u32 } else { 11 }, lr, 0u32);
    while let Role::Up { r, .. } = net.layers[k].spec.role {
        let go = (g.0 * r, g.1 * r);
        let (hpo, wpo, _, _) = geom(go.0, go.1);
        let dst = if float_up { 40 + stage } else { 14 + stage };
        let esz = if float_up { 2 } else { 1 };
        gpu.upload(dst, &vec![0u8; nf * hpo * wpo * c * esz]);
        let name = if float_up { half(4) } else { int(k, 4) };
        conv(gpu, &name, k, src, dst, g, go, r);
        (src, g, stage) = (dst, go, stage + 1);
        k += 1;
    }
    let tail = image(k);
    let (hpt, wpt, _, _) = geom(g.0, g.1);
    let grid = [(g.0 * g.1 * 4).div_ceil(128) as u32, frames_i, 1];
    if float_up {
        let args = FloatArgs {
            h: g.0 as i32,
            w: g.1 as i32,
            hp_in: hpt as i32,
            wp_in: wpt as i32,
            l_count: l_count as i32,
            mean,
            inv: 255.0 / cfg.rgb_range,
            ..Default::default()
        };
        let name = format!("conv_ftail_c{c}");
        gpu.launch(
            &name,
            grid,
            128,
            0,
            &bytes_of(&args),
            &float_ptrs(k, src, 10),
        );
    } else {
        let args = DirectArgs {
            h: g.0 as i32,
            w: g.1 as i32,
            hp_in: hpt as i32,
            wp_in: wpt as i32,
            m: tail.m,
            layer: k as i32,
            next: k as i32,
            l_count: l_count as i32,
            hw: tail.hw,
            mean,
            inv: 255.0 / cfg.rgb_range,
            ..Default::default()
        };
        let name = format!("conv_tail_c{c}");
        gpu.launch(&name, grid, 128, 0, &bytes_of(&args), &direct_ptrs(k, src));
    }
    let (rgb, f32s, stats) = (gpu.download(12), gpu.download(13), gpu.download(4));
    let n = g.0 * g.1 * 3;
    (0..nf)
        .map(|i| {
            let f = f32s[i * n * 4..(i + 1) * n * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let st = |j: usize| f32::from_le_bytes(stats[j * 4..j * 4 + 4].try_into().unwrap());
            (
                rgb[i * n..(i + 1) * n].to_vec(),
                f,
                st(2 * i),
                st(2 * i + 1) as i32,
            )
        })
        .collect()
}

/// Whole fq networks on the emulated GPU — random models at x2 / x3 / x4 with 32 and 64
/// features, 4- and 8-bit weights, at 1x1, 16x16, 33x2 and 21x18, and the built-in x2 w4a4,
/// x3 w8a6 and x4 w4a4 — give the CPU integer
/// engine's output bit for bit (f32 before rounding and bytes), its complexity and its b_I,
/// for three frames of one launch with their own options (thresholds that give them b_I = +1
/// and −1, another base bit-width, the frequency metric measured on the host and handed to
/// `plan_bits`).
#[test]
fn fq_networks_match_the_cpu_on_the_emulated_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = driver(dir.path(), variant(1, true)) else {
        return;
    };
    let mut models: Vec<(String, Model)> = Vec::new();
    for (scale, feats, blocks, wb, ab) in [
        (2u32, 32usize, 2usize, 4u8, 4u8),
        (3, 64, 1, 8, 6),
        (4, 32, 1, 4, 4),
    ] {
        let cfg = EdsrConfig {
            scale,
            n_resblocks: blocks,
            n_feats: feats,
            ..EdsrConfig::baseline(scale)
        };
        let fp = random_model(cfg, 40 + scale as u64).unwrap();
        let m = quantize_on_synthetic(&fp, QuantMode::Fq, wb, ab, 3).unwrap();
        models.push((format!("x{scale} F{feats} w{wb}a{ab}"), m));
    }
    let mut cases: Vec<(String, &Model, usize, usize)> =
        models.iter().map(|(n, m)| (n.clone(), m, 21, 18)).collect();
    // Sizes at the tiles' edges: one pixel, one whole tile, a row of three partial tiles.
    for (w, h) in [(1, 1), (16, 16), (33, 2)] {
        cases.push((format!("{} at {w}x{h}", models[0].0), &models[0].1, w, h));
    }
    let builtins: Vec<(String, Model)> = ["x2-w4a4", "x3-w8a6", "x4-w4a4"]
        .iter()
        .map(|n| {
            let b = builtin::MODELS.iter().find(|m| m.name.contains(n)).unwrap();
            (b.name.to_string(), b.load().unwrap())
        })
        .collect();
    for (i, (n, m)) in builtins.iter().enumerate() {
        let (w, h) = if i == 0 { (21, 18) } else { (11, 9) };
        cases.push((n.clone(), m, w, h));
    }
    let mut gpu = Gpu::start(&exe, false);
    for (ci, (name, model, w, h)) in cases.into_iter().enumerate() {
        let (name, model) = (&name, model);
        // Every other case frames of bytes (the RGB formats, widened on the GPU), the others
        // f32 values with fractions (what a YUV frame's conversion gives).
        let bytes = ci % 2 == 0;
        let imgs = [5u64, 6, 7].map(|seed| {
            let mut m = test_image(w, h, seed);
            if bytes {
                m.data.iter_mut().for_each(|v| *v = to_u8(*v) as f32);
            }
            m
        });
        if !bytes {
            assert!(imgs[0].data.iter().any(|v| v.fract() != 0.0));
        }
        let cpu = Engine::new(model, 1).unwrap();
        let int = IntNetwork::new(model).unwrap();
        // Frame 0 with thresholds below its complexity (b_I = +1), frame 1 the model's own
        // with one base bit more, frame 2 the frequency metric (measured on the host) with
        // thresholds above its value (b_I = −1).
        let c0 = complexity::gradient_density(&imgs[0].data, w, h);
        let c2 = complexity::measure(ComplexityMetric::Frequency, &imgs[2].data, w, h);
        let base = model.quant.as_ref().unwrap().a_bits;
        let opts = [
            Options {
                image_lower: Some(c0 * 0.5),
                image_upper: Some(c0 * 0.9),
                ..Options::default()
            },
            Options {
                base_bits: Some(base + 1),
                ..Options::default()
            },
            Options {
                metric: Some(ComplexityMetric::Frequency),
                image_lower: Some(c2 * 1.1),
                image_upper: Some(c2 * 1.5),
                ..Options::default()
            },
        ];
        let frames: Vec<Vec<f32>> = imgs.iter().map(|m| m.data.clone()).collect();
        let got = network(&mut gpu, model, &frames, bytes, w, h, &opts);
        for (i, (img, (rgb, f32s, c, b_i))) in imgs.iter().zip(&got).enumerate() {
            let cc = complexity::measure(cpu.metric(&opts[i]), &img.data, w, h);
            let (plan, want_b_i) = cpu.bit_plan(cc, &opts[i]).unwrap();
            assert_eq!(c.to_bits(), cc.to_bits(), "{name} frame {i}: complexity");
            assert_eq!(*b_i, want_b_i, "{name} frame {i}: b_I");
            let want = int.upscale(img, &plan);
            let bad = f32s
                .iter()
                .zip(&want.data)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert!(
                bad == 0,
                "{name} frame {i}: {bad} of {} f32 outputs differ",
                f32s.len()
            );
            let want8: Vec<u8> = want.data.iter().map(|&v| to_u8(v)).collect();
            assert!(rgb == &want8, "{name} frame {i}: output bytes differ");
        }
        if w * h >= 64 {
            assert_eq!(got[0].3, 1, "{name}: frame 0 is above its upper threshold");
            assert_eq!(got[2].3, -1, "{name}: frame 2 is below its lower threshold");
        }
        let what = if bytes { "byte" } else { "f32" };
        eprintln!("emulated GPU: {name}: 3 {what} frames equal the CPU integer engine");
    }
}

/// PSNR (dB) between two outputs on the 0–255 scale.
fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-20)).log10()
}

/// Float and non-fq networks on the emulated GPU (f32 head and tail, f16 tensor-core convs,
/// and for non-fq the integer blocks with the last one writing f16) agree with the CPU engine:
/// PSNR between the two outputs ≥ 60 dB, ≥ 99.9% of the bytes within ±1, complexity and b_I
/// equal. (`tests/cuda.rs`'s `parity_float_layers` asks 45 dB and 99% of a GPU, whose tensor
/// cores sum in their own order; the emulation sums in f32 in k order and measures 73–93 dB,
/// and a head that lost its bias falls below 60.) Random models at x2 and x3 with 32 and 64
/// features (biases large enough to show) and the built-in x2 fp32, the element's default.
#[test]
fn float_and_non_fq_networks_agree_with_the_cpu_on_the_emulated_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = driver(dir.path(), variant(1, true)) else {
        return;
    };
    let mut models: Vec<(String, Model)> = Vec::new();
    for (scale, feats, blocks) in [(2u32, 32usize, 2usize), (3, 64, 1)] {
        let cfg = EdsrConfig {
            scale,
            n_resblocks: blocks,
            n_feats: feats,
            ..EdsrConfig::baseline(scale)
        };
        let mut fp = random_model(cfg, 50 + scale as u64).unwrap();
        // Biases large enough to show: a kernel that dropped one would be off by levels.
        let mut rng = Rng::new(scale as u64);
        for conv in &mut fp.convs {
            let a = if conv.spec.role == Role::Tail {
                8.0
            } else {
                0.5
            };
            conv.bias.iter_mut().for_each(|b| *b = rng.symmetric(a));
        }
        let nq = quantize_on_synthetic(&fp, QuantMode::NonFq, 4, 4, 3).unwrap();
        models.push((format!("x{scale} F{feats} float"), fp));
        models.push((format!("x{scale} F{feats} non-fq w4a4"), nq));
    }
    let b = builtin::MODELS
        .iter()
        .find(|m| m.name == "edsr-r8f32-x2")
        .unwrap();
    models.push((b.name.to_string(), b.load().unwrap()));
    let mut gpu = Gpu::start(&exe, false);
    for (mi, (name, model)) in models.iter().enumerate() {
        // Two tiles of 16 each way for the small models; one for the built-in's 17 convs.
        let (w, h) = if name.starts_with("edsr") {
            (13, 9)
        } else {
            (19, 17)
        };
        // Frames of bytes and of f32 values with fractions, in turn.
        let bytes = mi % 2 == 0;
        let imgs = [8u64, 9].map(|seed| {
            let mut m = test_image(w, h, seed);
            if bytes {
                m.data.iter_mut().for_each(|v| *v = to_u8(*v) as f32);
            }
            m
        });
        let cpu = Engine::new(model, 1).unwrap();
        let opts = [Options::default(), Options::default()];
        let frames: Vec<Vec<f32>> = imgs.iter().map(|m| m.data.clone()).collect();
        let got = network(&mut gpu, model, &frames, bytes, w, h, &opts);
        for (i, (img, (rgb, f32s, c, b_i))) in imgs.iter().zip(&got).enumerate() {
            let (want, stats) = cpu.upscale(img, &opts[i]).unwrap();
            if model.quant.is_some() {
                assert_eq!(
                    c.to_bits(),
                    stats.complexity.to_bits(),
                    "{name}: complexity"
                );
                assert_eq!(*b_i, stats.image_bits, "{name}: b_I");
            }
            let db = psnr(f32s, &want.data);
            let close = rgb
                .iter()
                .zip(&want.data)
                .filter(|(g, w)| (**g as i32 - to_u8(**w) as i32).abs() <= 1)
                .count() as f64
                / rgb.len() as f64;
            assert!(
                db >= 60.0,
                "{name} frame {i}: {db:.1} dB from the CPU's output"
            );
            assert!(
                close >= 0.999,
                "{name} frame {i}: {:.2}% of bytes within ±1",
                close * 100.0
            );
            eprintln!(
                "emulated GPU: {name} frame {i}: {db:.1} dB from the CPU, {:.2}% of bytes within ±1",
                close * 100.0
            );
        }
    }
}
