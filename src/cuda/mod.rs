//! The CUDA backend: the integer EDSR of [`crate::engine::intnet`] on NVIDIA GPUs, with our own
//! kernels (`kernels/adabm.cu`) compiled at run time by NVRTC.
//!
//! Nothing here needs CUDA at build time: cudarc loads `libcuda` and `libnvrtc` when first
//! used. cudarc panics when a library is missing, so [`probe`] checks for them first and every
//! entry point goes through it.

mod engine;
mod shared;

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Arc, LazyLock, Mutex};

pub use crate::cuda_common::{
    CudaError, Done, FrameStats, Pixels, Result, f32_frame_bytes, f32_frame_values,
};
pub use engine::{Batch, CudaEngine};
#[doc(hidden)]
pub use engine::{
    ConvImage, DirectArgs, FloatArgs, FrameParams, Geom, LayerInfo, Layout, MmaArgs, Quant,
    conv_image, device_network, float_conv_image,
};
pub use shared::{MAX_BATCH, SharedCuda, yuv_self_check};

/// The kernel source, compiled by NVRTC at run time.
pub const KERNEL_SOURCE: &str = include_str!("../../kernels/adabm.cu");

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(format!("{e:?}"))
    }
}

/// Checks that the CUDA driver library, NVRTC and device `device` are there, without letting
/// cudarc panic. Returns the device's name and compute capability.
pub fn probe(device: usize) -> Result<(String, (i32, i32))> {
    // SAFETY: only tries to dlopen the libraries.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    if !nvrtc_present() {
        return Err(CudaError::Unavailable(
            "libnvrtc.so.13 (CUDA 13 NVRTC) was not found: install the CUDA 13 toolkit, or \
             `pip install nvidia-cuda-nvrtc==13.0.*` and set ADABM_NVRTC_LIB to its \
             nvidia/cu13/lib/libnvrtc.so.13"
                .into(),
        ));
    }
    let n = cudarc::driver::CudaContext::device_count()
        .map_err(|e| CudaError::Unavailable(format!("no CUDA device: {e:?}")))?;
    if device >= n.max(0) as usize {
        return Err(CudaError::Unavailable(format!(
            "device-id {device} requested, {n} CUDA device(s) present"
        )));
    }
    let ctx = cudarc::driver::CudaContext::new(device)?;
    Ok((ctx.name()?, ctx.compute_capability()?))
}

/// NVRTC options besides the architecture. `--fmad=false`: the float epilogue must round like
/// the CPU (no contraction into FMA). The register cap keeps ptxas from spilling the tensor-core
/// kernels (it otherwise picks 128 registers for some and spills).
const OPTIONS: [&str; 3] = ["--fmad=false", "--std=c++17", "--maxrregcount=192"];

/// Which tensor-core convs load their fragments with `ldmatrix` (kernels/README.md; the
/// kernels' `ADABM_LDSM`): 1, the default, the integer convs (measured 1.08–1.09x faster on an
/// H200 with bit-identical output); `ADABM_CUDA_LDMATRIX=0`: none (32-bit shared loads);
/// `ADABM_CUDA_LDMATRIX=all`: the f16 convs of floating-point layers too (2; checked on the
/// emulated GPU of tests/cuda_host.rs but not yet run on a GPU, so not the default).
pub fn ldmatrix_level() -> u8 {
    match std::env::var("ADABM_CUDA_LDMATRIX").as_deref() {
        Ok("0") => 0,
        Ok("all" | "2") => 2,
        _ => 1,
    }
}

/// Whether the convs that read the residual stream or the head output in their epilogue ask
/// for those lines in L2 when their tile starts (the kernels' `ADABM_PREFETCH`):
/// `ADABM_CUDA_PREFETCH=1`. Same results (checked on the emulated GPU of tests/cuda_host.rs);
/// not yet measured on a GPU, so off by default.
pub fn prefetch_enabled() -> bool {
    std::env::var("ADABM_CUDA_PREFETCH").is_ok_and(|v| v == "1")
}

/// A build of the kernels: which convs use `ldmatrix` ([`ldmatrix_level`]) and whether the
/// epilogue operands are prefetched ([`prefetch_enabled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub ldsm: u8,
    pub prefetch: bool,
}

impl Variant {
    /// The variant the environment asks for (the defaults without it).
    pub fn from_env() -> Self {
        Variant {
            ldsm: ldmatrix_level(),
            prefetch: prefetch_enabled(),
        }
    }
}

/// [`OPTIONS`], plus the kernels' `ADABM_LDSM` and `ADABM_PREFETCH` defines.
fn options(v: Variant) -> Vec<String> {
    let mut o: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
    o.push(format!("-DADABM_LDSM={}", v.ldsm));
    o.push(format!("-DADABM_PREFETCH={}", v.prefetch as u8));
    o
}

/// Whether NVRTC (libnvrtc.so.13) can be loaded: from the library path, or else from
/// `$ADABM_NVRTC_LIB` or the usual CUDA 13 install directories (loaded once by full path, after
/// which cudarc's own lookup by name finds it).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    let present = || unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if present() {
        return true;
    }
    static TRIED: std::sync::Once = std::sync::Once::new();
    TRIED.call_once(|| {
        let mut candidates: Vec<std::path::PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("ADABM_NVRTC_LIB") {
            candidates.push(p.into());
        }
        for dir in [
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/targets/x86_64-linux/lib",
            "/usr/local/cuda-13.0/lib64",
        ] {
            candidates.push(std::path::Path::new(dir).join("libnvrtc.so.13"));
        }
        let _ = candidates.iter().any(|p| load_nvrtc(p));
    });
    present()
}

/// Loads NVRTC from the file `path`, with the `libnvrtc-builtins` it loads by name at compile
/// time from the same directory. Both stay loaded for the life of the process.
pub fn load_nvrtc(path: &std::path::Path) -> bool {
    if let Some(dir) = path.parent()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("libnvrtc-builtins.so.") {
                load_library(&e.path());
            }
        }
    }
    load_library(path)
}

/// Loads a shared library by path and keeps it loaded for the life of the process.
pub fn load_library(path: &std::path::Path) -> bool {
    if !path.is_file() {
        return false;
    }
    // SAFETY: loading NVRTC runs no initialisers that depend on us; it stays loaded.
    match unsafe { libloading::Library::new(path) } {
        Ok(lib) => {
            std::mem::forget(lib);
            true
        }
        Err(_) => false,
    }
}

/// A compiled kernel image and the NVRTC/ptxas log (registers, spills).
#[derive(Clone, Debug)]
pub struct Compiled {
    pub cubin: Arc<Vec<u8>>,
    pub log: String,
}

/// Compiles the kernels for `sm_XY` (`arch` = "sm_90"). `verbose` asks ptxas for its
/// per-kernel register and spill report in the log. Needs only libnvrtc, no GPU.
pub fn compile(arch: &str, verbose: bool) -> Result<Compiled> {
    compile_variant(arch, verbose, Variant::from_env())
}

/// [`compile`] of variant `v`.
pub fn compile_variant(arch: &str, verbose: bool, v: Variant) -> Result<Compiled> {
    if !nvrtc_present() {
        return Err(CudaError::Unavailable(
            "libnvrtc.so.13 was not found (see README, CUDA)".into(),
        ));
    }
    use cudarc::nvrtc::{result, sys};
    let src = std::ffi::CString::new(KERNEL_SOURCE).expect("kernel source has no NUL");
    let name = c"adabm.cu";
    let prog = result::create_program(&src, Some(name)).map_err(|e| CudaError::Compile {
        arch: arch.into(),
        log: format!("{e:?}"),
    })?;
    let mut opts = vec![format!("--gpu-architecture={arch}")];
    opts.extend(options(v));
    if verbose {
        opts.push("--ptxas-options=-v".to_string());
    }
    // SAFETY: prog is a live program; the options are valid C strings.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let log = unsafe { result::get_program_log(prog) }
        .map(|v| {
            // SAFETY: NVRTC returns a NUL-terminated string.
            unsafe { CStr::from_ptr(v.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let out = match compiled {
        Err(e) => Err(CudaError::Compile {
            arch: arch.into(),
            log: format!("{e:?}\n{log}"),
        }),
        Ok(()) => {
            let mut size = 0usize;
            // SAFETY: size query then a buffer of that size.
            let mut cubin = unsafe {
                sys::nvrtcGetCUBINSize(prog, &mut size);
                vec![0u8; size]
            };
            let rc = unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) };
            if rc != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                Err(CudaError::Compile {
                    arch: arch.into(),
                    log: format!("no cubin ({rc:?}): {log}"),
                })
            } else {
                cubin.truncate(size);
                Ok(Compiled {
                    cubin: Arc::new(cubin),
                    log,
                })
            }
        }
    };
    // SAFETY: destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// [`compile`] once per architecture: in memory for the process, and on disk
/// (`$XDG_CACHE_HOME/adabm` or `~/.cache/adabm`, keyed by a hash of the source and options) so
/// that a new process skips NVRTC's ~15 s.
pub fn compiled_for(arch: &str) -> Result<Compiled> {
    static CACHE: LazyLock<Mutex<HashMap<String, Compiled>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache.get(arch) {
        return Ok(c.clone());
    }
    let file = cache_dir().map(|d| d.join(format!("kernels-{:016x}-{arch}.cubin", source_hash())));
    if let Some(cubin) = file.as_ref().and_then(|f| std::fs::read(f).ok()) {
        let c = Compiled {
            cubin: Arc::new(cubin),
            log: String::new(),
        };
        cache.insert(arch.to_string(), c.clone());
        return Ok(c);
    }
    let c = compile(arch, false)?;
    if let Some(f) = &file {
        // Best effort: write to a temporary name and rename, so readers never see half a file.
        let tmp = f.with_extension(format!("tmp{}", std::process::id()));
        if f.parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            && std::fs::write(&tmp, c.cubin.as_slice()).is_ok()
        {
            let _ = std::fs::rename(&tmp, f);
        }
    }
    cache.insert(arch.to_string(), c.clone());
    Ok(c)
}

fn cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("adabm"))
}

/// FNV-1a of the kernel source and the compile options (stable across builds).
fn source_hash() -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let opts = options(Variant::from_env()).join(" ");
    for b in KERNEL_SOURCE.bytes().chain(opts.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Per-kernel resource usage parsed from a verbose ptxas log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelUsage {
    pub name: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// Parses `ptxas info : Compiling entry function 'x'` / `... bytes spill stores, ... bytes
/// spill loads` / `Used N registers` lines.
pub fn parse_ptxas_log(log: &str) -> Vec<KernelUsage> {
    let mut out: Vec<KernelUsage> = Vec::new();
    let num_before = |s: &str, key: &str| -> Option<u32> {
        let i = s.find(key)?;
        s[..i].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelUsage {
                name,
                registers: 0,
                spill_stores: 0,
                spill_loads: 0,
            });
        } else if let Some(k) = out.last_mut() {
            if let Some(v) = num_before(line, "bytes spill stores") {
                k.spill_stores = v;
            }
            if let Some(v) = num_before(line, "bytes spill loads") {
                k.spill_loads = v;
            }
            if let Some(v) = num_before(line, "registers") {
                k.registers = v;
            }
        }
    }
    out
}

/// Names of the kernels the engine launches (every one must be in the compiled image).
pub fn kernel_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "complexity",
        "plan_bits",
        "input_codes",
        "yuv_unpack",
        "yuv_pack",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for c in [32, 64] {
        v.push(format!("conv_head_c{c}"));
        v.push(format!("conv_tail_c{c}"));
        for e in 1..=4 {
            for s in 0..if e == 4 { 1 } else { 2 } {
                v.push(format!("conv_mma_c{c}_e{e}_s{s}"));
            }
            v.push(format!("conv_hmma_c{c}_e{e}"));
        }
        v.push(format!("conv_fhead_c{c}"));
        v.push(format!("conv_ftail_c{c}"));
        for s in 0..2 {
            v.push(format!("conv_mma_c{c}_e2_s{s}_h"));
        }
    }
    v
}
