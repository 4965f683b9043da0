//! The integer CPU engine: AdaBM layers executed on activation codes with integer arithmetic,
//! exactly the semantics of [`super::intnet`] (same i32 sums, same float epilogue), with SIMD
//! kernels chosen once per process from the CPU's features.
//!
//! Kernel family `conv` (3x3 convolution sums `S` of a range of pixels of one output row):
//! `scalar` is the readable reference, `avx2` the x86-64 AVX2 version (`vpmaddubsw` +
//! `vpmaddwd` where no 16-bit pair sum can saturate, `vpmaddwd` on codes spread to i16 where
//! it could), and the AVX2 Winograd F(2,3) kernels of [`wino`] (the same sums from 4
//! products per 2 pixels and kernel row instead of 6), used wherever they are exact; Winograd
//! F(4x4, 3x3) on i16 ([`wino4`]: AVX2, AVX-VNNI and AVX-512 VNNI) where the channels fit it. `vnni`
//! holds the AVX-VNNI and AVX-512 VNNI kernels (`vpdpbusd`: 4 u8·i8 products into an i32
//! lane, exact for any codes and weights; direct and Winograd F(2,3) with i32 sums), written
//! once over the instruction, plus an AVX2 emulation of it that the tests run on hosts
//! without VNNI ([`CpuLevel::EmulatedVnni`]). `amx` holds the direct kernel on Intel AMX tiles
//! (`tdpbusd`, [`CpuLevel::Amx`]: 16,384 u8·i8 products an instruction, faster than any
//! Winograd form, so that level runs every conv direct). On 64-bit ARM, `neon` holds the direct kernels on
//! `sdot` ([`CpuLevel::NeonDot`], the dot-product extension) and on `usmmla`
//! ([`CpuLevel::NeonI8mm`], the 8-bit matrix multiply); no Winograd kernels there.
//! Epilogues (values, ReLU / residual / skip, the next layer's codes) are the `epilogue`
//! family, scalar, AVX2, AVX-512 and NEON, bit-identical.

#[cfg(target_arch = "x86_64")]
mod amx;
mod avx2;
mod engine;
mod epilogue;
#[cfg(target_arch = "aarch64")]
mod neon;
mod net;
mod scalar;
mod vnni;
pub mod wino;
pub mod wino4;

pub use engine::{CodeBuffer, conv_forward, conv_forward_into};
pub use epilogue::set_codes32;
pub use net::{FusedNet, set_bands, set_col_chunk};

/// Whether narrow convs (the tail's 3 channels) run on the AMX kernel at the AMX level: 8
/// lanes of a 16-lane tile (3 of them used) still outrun the AVX-512 VNNI `narrow512` kernel —
/// built-in x4 w4a4 frames 1.10x, x2 1.05x on one core (BENCHMARKS.md, session 40).
static NARROW_AMX: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets for the whole process (for comparisons) whether narrow convs run on the AMX kernel
/// (the default) or on the AVX-512 VNNI `narrow512` one at the AMX level; elsewhere nothing.
pub fn set_narrow_amx(on: bool) {
    NARROW_AMX.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Sets for the whole process (for comparisons) whether the AMX kernel spreads the prefetches
/// of what its caller reads next between its products (the default) or issues them all before
/// it starts; elsewhere nothing.
pub fn set_kernel_prefetch(on: bool) {
    #[cfg(target_arch = "x86_64")]
    amx::set_kernel_prefetch(on);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

/// Sets for the whole process (for comparisons) whether the AMX kernel stores a block's sums
/// while the next block multiplies (the default) or before it starts; elsewhere nothing.
pub fn set_store_overlap(on: bool) {
    #[cfg(target_arch = "x86_64")]
    amx::set_store_overlap(on);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

use std::ops::Range;

use super::intnet::IntConv;

/// SIMD level of the integer kernels, detected once; `ADABM_CPU_LEVEL` (`scalar`, `avx2`,
/// `avxvnni`, `avx512vnni`, `amx`; on ARM `neon`, `i8mm`) lowers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
// The hidden variant is a real level (the tests run it), not a non-exhaustive marker.
#[allow(clippy::manual_non_exhaustive)]
pub enum CpuLevel {
    Scalar,
    /// 64-bit ARM with the dot-product extension (ARMv8.2 `dotprod`: `sdot`, 4 i8·i8 products
    /// into an i32 lane): the direct kernel of `neon.rs` (no Winograd kernels).
    NeonDot,
    /// 64-bit ARM with the 8-bit matrix multiply (ARMv8.6 `i8mm`, with `dotprod`: `usmmla`,
    /// a 2x8 by 8x2 u8·i8 product into 4 i32 lanes, twice the products of an `sdot`): the
    /// direct kernel of `neon.rs` on [`PackedConv::wmm`].
    NeonI8mm,
    Avx2,
    /// The VNNI kernels with `vpdpbusd` emulated by AVX2 instructions: never detected, for
    /// testing those kernels (layout, tails, offsets, engine dispatch) on hosts without VNNI.
    #[doc(hidden)]
    EmulatedVnni,
    /// The same for the AVX-512 VNNI kernels (512-bit direct kernel as two 256-bit halves).
    #[doc(hidden)]
    EmulatedVnni512,
    /// AVX-VNNI (VEX `vpdpbusd` on 256-bit registers).
    AvxVnni,
    /// AVX-512 VNNI with AVX512VL (EVEX `vpdpbusd`: the direct kernel on 512-bit registers,
    /// Winograd on 256-bit ones).
    Avx512Vnni,
    /// Intel AMX (AMX-TILE and AMX-INT8, granted by the OS) on top of [`Self::Avx512Vnni`]:
    /// the direct conv kernel on `tdpbusd` tiles ([`amx`]), narrow convs too; everything else
    /// (epilogues, any Winograd kernel asked for) as at AVX-512 VNNI.
    Amx,
}

impl CpuLevel {
    /// The best level this CPU supports, lowered by `ADABM_CPU_LEVEL` (never raised: a level
    /// the host lacks gives the best one below it).
    pub fn detect() -> Self {
        let cap = match std::env::var("ADABM_CPU_LEVEL").ok().as_deref() {
            Some("scalar") => Self::Scalar,
            Some("neon") => Self::NeonDot,
            Some("i8mm") => Self::NeonI8mm,
            Some("avx2") => Self::Avx2,
            Some("avxvnni" | "avx-vnni") => Self::AvxVnni,
            Some("avx512vnni" | "avx512" | "avx-512") => Self::Avx512Vnni,
            _ => Self::Amx,
        };
        Self::available()
            .into_iter()
            .filter(|l| *l <= cap)
            .max()
            .unwrap_or(Self::Scalar)
    }

    /// Every level this host can run, lowest first (for tests and benchmarks).
    pub fn available() -> Vec<Self> {
        [
            Self::Scalar,
            Self::NeonDot,
            Self::NeonI8mm,
            Self::Avx2,
            Self::AvxVnni,
            Self::Avx512Vnni,
            Self::Amx,
        ]
        .into_iter()
        .filter(|l| l.supported())
        .collect()
    }

    /// [`Self::available`] plus the emulated VNNI levels where AVX2 is (what the kernel tests
    /// run).
    #[doc(hidden)]
    pub fn testable() -> Vec<Self> {
        let mut v = Self::available();
        if v.contains(&Self::Avx2) {
            v.extend([Self::EmulatedVnni, Self::EmulatedVnni512]);
            v.sort();
        }
        v
    }

    /// Whether this host can run the level's kernels: the CPU has its features and, for the
    /// VNNI and `sdot` levels, their kernels passed [`Self::self_check`] here.
    pub fn supported(self) -> bool {
        self.has_features() && (!self.is_checked() || self.self_check())
    }

    /// The levels [`Self::self_check`] guards: those whose kernels rest on instructions
    /// beyond AVX2 (`vpdpbusd`, `sdot`, `usmmla`).
    fn is_checked(self) -> bool {
        self.is_vnni() || self.is_neon()
    }

    /// The 64-bit ARM levels (the NEON epilogue, no Winograd kernels).
    pub fn is_neon(self) -> bool {
        matches!(self, Self::NeonDot | Self::NeonI8mm)
    }

    /// Whether the CPU reports the level's instruction-set features.
    pub fn has_features(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2");
            match self {
                Self::Scalar => true,
                Self::NeonDot | Self::NeonI8mm => false,
                Self::Avx2 | Self::EmulatedVnni | Self::EmulatedVnni512 => avx2,
                Self::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Self::Avx512Vnni => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512vnni")
                }
                Self::Amx => Self::Avx512Vnni.has_features() && amx::available(),
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            match self {
                Self::Scalar => true,
                Self::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
                Self::NeonI8mm => {
                    std::arch::is_aarch64_feature_detected!("dotprod")
                        && std::arch::is_aarch64_feature_detected!("i8mm")
                }
                _ => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            self == Self::Scalar
        }
    }

    /// Once per process and level (the CPU must have its features): the level's conv kernels
    /// against the scalar reference on a small random conv — direct with 4-bit (centred) and
    /// 8-bit (offset) weights, 8- and 7-bit codes, channel and pixel tails, and at the VNNI
    /// levels Winograd F(2,3) with i32 sums. A level that fails is not used ([`Self::supported`] is false; the element
    /// logs it), so a miscompiled or misbehaving instruction costs speed, never pixels.
    pub fn self_check(self) -> bool {
        use std::sync::OnceLock;
        static CHECKS: [OnceLock<bool>; 9] = [const { OnceLock::new() }; 9];
        *CHECKS[self as usize].get_or_init(|| self.has_features() && self_check(self))
    }

    /// Levels whose features this CPU has but whose kernels failed [`Self::self_check`].
    pub fn failed_self_checks() -> Vec<Self> {
        [
            Self::NeonDot,
            Self::NeonI8mm,
            Self::AvxVnni,
            Self::Avx512Vnni,
            Self::Amx,
        ]
        .into_iter()
        .filter(|l| l.has_features() && !l.self_check())
        .collect()
    }

    /// Levels whose conv kernels are `vpdpbusd` (`vnni`): i32 sums for any codes and
    /// weights, Winograd F(2,3) without widening schedules.
    pub fn is_vnni(self) -> bool {
        self >= Self::EmulatedVnni
    }
}

/// See [`CpuLevel::self_check`].
fn self_check(level: CpuLevel) -> bool {
    use crate::engine::random::Rng;
    let mut rng = Rng::new(0x5e1f);
    let (h, w, cin) = (2, 7, 44);
    let mut ok = true;
    // 40 output channels of 4- and 8-bit weights, and a narrow conv (3 channels and the ones
    // lane of 8-bit weights: the tail's kernel; 44 channels leave it a partial step, and the
    // `usmmla` kernel two 16-channel steps, an 8-channel and a 4-channel group).
    for (cout, bits) in [(40, 4u8), (40, 8), (3, 8)] {
        let oihw: Vec<f32> = (0..cout * cin * 9).map(|_| rng.symmetric(0.5)).collect();
        let bias = vec![0.0; cout];
        let pc = PackedConv::new(&IntConv::new(cin, cout, &oihw, &bias, 0.4, bits));
        let cs = pc.cstride;
        let mut data = vec![0u8; (h + 2) * (w + 2) * cs];
        for y in 1..=h {
            for x in 1..=w {
                for c in 0..cin {
                    data[(y * (w + 2) + x) * cs + c] = rng.below(256) as u8;
                }
            }
        }
        let map = Codes {
            data: &data,
            h,
            w,
            cstride: cs,
            sums: None,
            defer_offset: false,
        };
        ok &= cout > 4 || pc.narrow.is_some();
        // 8-bit codes, and 7-bit ones (which the `sdot` kernel reads without the 128 shift).
        let q7: Vec<u8> = data.iter().map(|&v| v >> 1).collect();
        for (codes, max_code) in [(&data, 255), (&q7, 127)] {
            let map = Codes { data: codes, ..map };
            for y in 0..h {
                let mut want = vec![0i32; w * pc.cout8];
                let mut got = vec![1i32; w * pc.cout8];
                row_sums(CpuLevel::Scalar, &map, &pc, y, max_code, 0..w, &mut want);
                row_sums(level, &map, &pc, y, max_code, 0..w, &mut got);
                ok &= got == want;
            }
        }
        // Winograd with i32 sums on 7-bit codes (the transform needs 2Q ≤ 255).
        if pc.wino.is_some() && level.is_vnni() {
            let map7 = Codes { data: &q7, ..map };
            let tl = wino::row_len(w, cs);
            let mut rows = vec![0u8; (h + 2) * tl];
            for (r, row) in rows.chunks_exact_mut(tl).enumerate() {
                wino::build_row(level, &map7, r, 127, row);
            }
            for y in 0..h {
                let v = wino::WinoInput {
                    rows: [0, 1, 2].map(|k| &rows[(y + k) * tl..(y + k + 1) * tl]),
                    w,
                    cstride: cs,
                    max_code: 127,
                };
                let mut want = vec![0i32; w * pc.cout8];
                let mut got = vec![1i32; w * pc.cout8];
                row_sums(CpuLevel::Scalar, &map7, &pc, y, 127, 0..w, &mut want);
                row_sums_wino_i32(level, &v, &pc, 0..w, &mut got);
                ok &= got == want;
            }
        } else {
            ok &= bits == 8 || !level.is_vnni();
        }
    }
    // Winograd F(4x4, 3x3) on i16 (8-bit codes and weights, two blocks of four rows, a
    // partial last one).
    if has_wino4(level) {
        let (h, w, cin, cout) = (6, 9, 32, 16);
        let oihw: Vec<f32> = (0..cout * cin * 9).map(|_| rng.symmetric(0.5)).collect();
        let pc = PackedConv::new(&IntConv::new(cin, cout, &oihw, &vec![0.0; cout], 0.4, 8));
        let data: Vec<u8> = (0..(h + 2) * (w + 2) * cin)
            .map(|i| {
                let (y, x) = (i / cin / (w + 2), i / cin % (w + 2));
                if (1..=h).contains(&y) && (1..=w).contains(&x) {
                    rng.below(256) as u8
                } else {
                    0
                }
            })
            .collect();
        let map = Codes {
            data: &data,
            h,
            w,
            cstride: cin,
            sums: None,
            defer_offset: false,
        };
        let plane = w * pc.cout8;
        let mut tiles = Vec::new();
        for y0 in [0, 4] {
            let mut got = vec![1i32; 4 * plane];
            row_sums_wino4(level, &map, &pc, y0, 0..w, &mut tiles, &mut got);
            for r in 0..(h - y0).min(4) {
                let mut want = vec![0i32; plane];
                row_sums(CpuLevel::Scalar, &map, &pc, y0 + r, 255, 0..w, &mut want);
                ok &= got[r * plane..(r + 1) * plane] == want[..];
            }
        }
    }
    ok
}

/// Which Winograd kernels the fused engine may use (each only where it is exact; the output is
/// the same in every mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Winograd {
    /// Direct kernels only.
    Off,
    /// F(2,3) along x ([`wino::WinoWeights`], [`wino::WinoWeights16`]).
    Rows,
    /// Tiles: at AVX-512 VNNI F(2x2, 3x3) ([`wino::Wino2Weights`]) where exact, else
    /// F(4x4, 3x3) on i16 ([`wino4`]) where the conv fits it; at AVX2 F(4x4, 3x3) where it
    /// fits; at AVX-VNNI F(4x4, 3x3) for the convs it fits whose codes or weights are too
    /// wide for F(2,3) on u8; else as `Rows` (the default from AVX2 up).
    Tiles,
}

/// 0: not read yet; else 1 + the index in [`MODES`] of the mode [`set_winograd`] or
/// `ADABM_WINOGRAD` chose, or [`DEFAULT`] ([`winograd_for`]).
static WINOGRAD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
const DEFAULT: u8 = MODES.len() as u8 + 1;

const MODES: [Winograd; 3] = [Winograd::Off, Winograd::Rows, Winograd::Tiles];

/// The Winograd kernels the fused engine uses at `level`: the mode `ADABM_WINOGRAD`
/// (`0`/`off`, `rows`, `tiles`) or [`set_winograd`] chose, else the default: `Tiles` from
/// AVX2 up — at AVX-512 VNNI F(2x2, 3x3) with i32 sums ([`has_wino2_i32`]), at AVX2 F(4x4,
/// 3x3) on i16 ([`row_sums_wino4`]), at AVX-VNNI F(4x4, 3x3) for the 8-bit convs and F(2,3)
/// along x (1.5x fewer multiplies than direct) for the others. At AVX-512 VNNI F(2x2, 3x3)
/// measured 1.03–1.11x faster than F(2,3) end to end on Zen 4 (EDSR-baseline and the
/// 32-channel built-ins, x2 and x4), F(2,3) 1.02–1.17x faster than the direct 512-bit kernel,
/// and the convs no u8 transform fits (8-bit codes or weights) run as F(4x4, 3x3). At AVX2, F(4x4, 3x3) — 2.25 multiplies per output, at 16
/// per `vpmaddwd` + `vpaddd` — measured 1.45x faster than F(2,3) on EDSR-baseline x2 w4a4 and
/// 1.22–1.25x on the 32-channel built-ins (BENCHMARKS.md, session 21). At AVX-VNNI, as at
/// AVX-512 VNNI, the 8-bit convs (fq upsamplers, w8a6 bodies) take half the multiply
/// instructions as F(4x4, 3x3) on `vpdpwssd` than on the direct `vpdpbusd` kernel (the
/// 512-bit pair measured 1.5–1.6x on those convs), the 4-bit ones about as many as F(2,3):
/// unmeasured on an AVX-VNNI CPU (`scripts/gpu-check.sh` runs `--winograd-ab` on the GPU
/// machine's host CPU).
pub fn winograd_for(level: CpuLevel) -> Winograd {
    use std::sync::atomic::Ordering::Relaxed;
    if WINOGRAD.load(Relaxed) == 0 {
        set_winograd(match std::env::var("ADABM_WINOGRAD").ok().as_deref() {
            Some("0" | "off") => Some(Winograd::Off),
            Some("rows") => Some(Winograd::Rows),
            Some("tiles") => Some(Winograd::Tiles),
            _ => None,
        });
    }
    match WINOGRAD.load(Relaxed) {
        // AMX's direct kernel makes 16,384 products an instruction: more than any Winograd
        // kernel saves.
        DEFAULT if level == CpuLevel::Amx => Winograd::Off,
        DEFAULT if level >= CpuLevel::Avx2 => Winograd::Tiles,
        DEFAULT => Winograd::Rows,
        v => MODES[v as usize - 1],
    }
}

/// Sets the Winograd kernels for the whole process (for comparisons); `None`: the default
/// again.
pub fn set_winograd(mode: Option<Winograd>) {
    let v = mode.map_or(DEFAULT, |mode| {
        MODES.iter().position(|&m| m == mode).expect("a mode") as u8 + 1
    });
    WINOGRAD.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the fused and non-fused engines run `pc` as F(4x4, 3x3) on i16
/// ([`row_sums_wino4`]) at `level`: the level has the kernel, the Winograd mode is `tiles`,
/// the conv's transformed weights fit, and — in the default mode only — the direct kernel
/// is not measurably faster for this conv's shape on this CPU ([`direct_beats_wino4`]).
pub fn wino4_for(level: CpuLevel, pc: &PackedConv) -> bool {
    has_wino4(level)
        && winograd_for(level) >= Winograd::Tiles
        && pc.wino4().is_some()
        && !direct_beats_wino4(level, pc)
}

/// Whether the direct kernel ([`row_sums`]) computes the sums of a conv shaped like `pc`
/// faster than F(4x4, 3x3) on i16 on this CPU: both timed once per process, level and shape
/// (input channel stride, output lanes) on a 64x8 map of random codes, one thread, best of 7
/// rounds alternating, a few milliseconds, when a fused engine is built (non-fq models: at
/// their first frame); direct wins only when 5% faster. F(4x4) issues
/// half the multiply instructions of the direct `vpdpbusd` kernel for 8-bit convs, 1.5–1.6x
/// faster on Zen 4, which issues one 512-bit `vpdpbusd` a cycle; an Intel Xeon issues two, and
/// there the 8-bit 64->64 conv ran 1.26x faster direct while the x2 upsampler (64->256)
/// stayed faster as F(4x4) (BENCHMARKS.md, sessions 30–31). Both kernels give the same sums,
/// so the choice changes speed only. Only at the real VNNI levels in the default Winograd
/// mode: an explicit `ADABM_WINOGRAD=tiles` (or [`set_winograd`]) keeps F(4x4) everywhere.
pub fn direct_beats_wino4(level: CpuLevel, pc: &PackedConv) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    type Key = (CpuLevel, usize, usize);
    static CHOICES: std::sync::Mutex<Vec<(Key, bool)>> = std::sync::Mutex::new(Vec::new());
    winograd_for(level); // reads `ADABM_WINOGRAD` on the first call
    if !matches!(level, CpuLevel::AvxVnni | CpuLevel::Avx512Vnni)
        || WINOGRAD.load(Relaxed) != DEFAULT
        || pc.wino4().is_none()
    {
        return false;
    }
    let key = (level, pc.cstride, pc.cout8);
    let mut choices = CHOICES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, direct)) = choices.iter().find(|(k, _)| *k == key) {
        return direct;
    }
    let (direct, wino4) = probe_direct_wino4(level, pc);
    let choice = direct < 0.95 * wino4;
    choices.push((key, choice));
    choice
}

/// Best seconds of the direct kernel and of F(4x4, 3x3) on i16 for `pc` on a 64x8 map (the
/// engines' 32-pixel column chunks), alternating 7 rounds.
fn probe_direct_wino4(level: CpuLevel, pc: &PackedConv) -> (f64, f64) {
    use std::time::Instant;
    let (h, w) = (8usize, 64usize);
    let mut rng = crate::engine::random::Rng::new(0x9b0e);
    let data: Vec<u8> = (0..(h + 2) * (w + 2) * pc.cstride)
        .map(|_| rng.below(256) as u8)
        .collect();
    // With the pixels' code sums, as the engines run it.
    let mut psums = Vec::new();
    let map = Codes {
        data: &data,
        h,
        w,
        cstride: pc.cstride,
        sums: None,
        defer_offset: false,
    }
    .with_sums_for(pc, &mut psums);
    let mut sums = vec![0i32; 4 * w * pc.cout8];
    let mut tiles = Vec::new();
    let (mut direct, mut wino4) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..7 {
        let t = Instant::now();
        for y in 0..h {
            row_sums(level, &map, pc, y, 255, 0..w, &mut sums);
        }
        std::hint::black_box(&sums);
        direct = direct.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for y0 in (0..h).step_by(4) {
            for x0 in (0..w).step_by(32) {
                row_sums_wino4(level, &map, pc, y0, x0..x0 + 32, &mut tiles, &mut sums);
            }
        }
        std::hint::black_box(&sums);
        wino4 = wino4.min(t.elapsed().as_secs_f64());
    }
    (direct, wino4)
}

/// Weights of one quantized conv laid out for the kernels.
///
/// Values `w` per (tap, input channel, output channel): centred codes `k̃ = 2k − M` when they fit
/// in i8 (`M ≤ 127`; then `S = Σ q·w`), else `k − 128` (`M = 255`; then `S = 2·Σ q·w + Σ q`).
#[derive(Clone, Debug)]
pub struct PackedConv {
    pub cin: usize,
    pub cout: usize,
    /// Channels per pixel in the code maps this conv reads (cin rounded up to 4).
    pub cstride: usize,
    /// Output channels rounded up to 8.
    pub cout8: usize,
    /// `w − 128` form (8-bit weights).
    pub offset: bool,
    /// Largest |w|.
    pub wabs: i32,
    /// In the offset form, the first padding lane (`cout`, when `cout < cout8`) has weight 1
    /// on every tap and channel, so that the kernels' sums there are the window's code sum
    /// `Σ q` the offset correction needs (`finish_offset`; the tail's 3 channels leave 5
    /// lanes free, and summing the codes separately cost 8% of a built-in x4 frame).
    pub ones: Option<usize>,
    /// For convs with at most 4 output lanes (the ones lane included): their weights laid
    /// out per output lane for the AVX-512 kernel that puts input channels in the vector lanes
    /// ([`NarrowWeights`]).
    pub narrow: Option<NarrowWeights>,
    /// `[9][cstride/4][cout8][4]` i8.
    pub w8: Vec<i8>,
    /// `[9][cstride/2][cout8][2]` i16.
    pub w16: Vec<i16>,
    /// Per output lane (`cout8`), the sum of its `w8` values over taps and channels: what the
    /// `sdot` kernel ([`CpuLevel::NeonDot`]), which reads 8-bit codes as `q − 128`, adds back
    /// 128 times. Empty off aarch64.
    pub wsum: Vec<i32>,
    /// `[9][cstride/8 rounded up][cout8/2][2][8]` i8 (the padding channels 0): 2 output
    /// channels × 8 input channels per 16 bytes, the right-hand operand of the i8mm kernel's
    /// `usmmla` ([`CpuLevel::NeonI8mm`]). Empty off aarch64.
    pub wmm: Vec<i8>,
    /// Winograd F(2,3) weights when the weights fit the transform ([`wino`]).
    pub wino: Option<wino::WinoWeights>,
    /// The i16 form of the Winograd weights (any weight codes).
    pub wino16: Option<wino::WinoWeights16>,
    /// Winograd F(2x2, 3x3) weights when the weights fit that transform: built on first use
    /// ([`Self::wino2`]), since that kernel is the default at one level only.
    wino2: std::sync::OnceLock<Option<wino::Wino2Weights>>,
    /// Winograd F(4x4, 3x3) i16 weights when the conv fits that kernel ([`wino4`]), built on
    /// first use ([`Self::wino4`]).
    wino4: std::sync::OnceLock<Option<wino4::Wino4Weights>>,
    /// The weights as AMX tiles ([`amx::AmxWeights`]), built on first use ([`Self::amx`]).
    #[cfg(target_arch = "x86_64")]
    amx: std::sync::OnceLock<amx::AmxWeights>,
    /// The conv's bias (`IntConv::bias`) on a cache line: the fused epilogue reads it by the
    /// vector at every pixel.
    pub bias: Aligned<f32>,
}

/// The weights of a conv with at most 4 output lanes, `[tap 9][lane 4][cs64]` i8 (`cs64`: the
/// channel stride rounded up to 64, the padding 0), for the AVX-512 `narrow512` kernel, and
/// the same as i16 `[tap 9][lane 4][cs16]` (`cs16`: rounded up to 16) for the AVX2 kernel.
#[derive(Clone, Debug)]
pub struct NarrowWeights {
    pub w: Vec<i8>,
    pub cs64: usize,
    pub w16: Vec<i16>,
    pub cs16: usize,
}

impl NarrowWeights {
    /// From the packed weights `w8` (`[9][cstride/4][cout8][4]`) of a conv whose output lanes
    /// `lanes..cout8` are all 0; None when it has more than 4 lanes.
    fn new(lanes: usize, cstride: usize, cout8: usize, w8: &[i8]) -> Option<Self> {
        if lanes > 4 {
            return None;
        }
        let (cs64, cs16) = (cstride.div_ceil(64) * 64, cstride.div_ceil(16) * 16);
        let mut w = vec![0i8; 9 * 4 * cs64];
        let mut w16 = vec![0i16; 9 * 4 * cs16];
        for t in 0..9 {
            for o in 0..lanes {
                for i in 0..cstride {
                    let k = w8[((t * cstride / 4 + i / 4) * cout8 + o) * 4 + i % 4];
                    w[(t * 4 + o) * cs64 + i] = k;
                    w16[(t * 4 + o) * cs16 + i] = k as i16;
                }
            }
        }
        Some(Self { w, cs64, w16, cs16 })
    }
}

/// The `usmmla` layout [`PackedConv::wmm`] of the weights `w8` (`[9][cstride/4][cout8][4]`).
fn mm_weights(cstride: usize, cout8: usize, w8: &[i8]) -> Vec<i8> {
    let groups = cstride.div_ceil(8);
    let mut w = vec![0i8; 9 * groups * cout8 * 8];
    for t in 0..9 {
        for i in 0..cstride {
            for o in 0..cout8 {
                w[((t * groups + i / 8) * cout8 / 2 + o / 2) * 16 + (o % 2) * 8 + i % 8] =
                    w8[((t * cstride / 4 + i / 4) * cout8 + o) * 4 + i % 4];
            }
        }
    }
    w
}

impl PackedConv {
    pub fn new(c: &IntConv) -> Self {
        let (cin, cout) = (c.cin, c.cout);
        let cstride = cin.div_ceil(4) * 4;
        let cout8 = cout.div_ceil(8) * 8;
        let offset = c.m > 127;
        let ones = (offset && cout < cout8).then_some(cout);
        let value = |t: usize, i: usize, o: usize| -> i32 {
            if Some(o) == ones {
                return 1;
            }
            if i >= cin || o >= cout {
                return 0;
            }
            let j = (t * cin + i) * cout + o;
            if offset {
                c.codes[j] as i32 - 128
            } else {
                c.centred[j] as i32
            }
        };
        let mut w8 = vec![0i8; 9 * cstride * cout8];
        let mut w16 = vec![0i16; 9 * cstride * cout8];
        let mut wabs = 0;
        let mut wsum = vec![0i32; cout8];
        for t in 0..9 {
            for i in 0..cstride {
                for o in 0..cout8 {
                    let v = value(t, i, o);
                    wabs = wabs.max(v.abs());
                    wsum[o] += v;
                    w8[((t * cstride / 4 + i / 4) * cout8 + o) * 4 + i % 4] = v as i8;
                    w16[((t * cstride / 2 + i / 2) * cout8 + o) * 2 + i % 2] = v as i16;
                }
            }
        }
        let narrow = NarrowWeights::new(cout + ones.is_some() as usize, cstride, cout8, &w8);
        let (wsum, wmm) = if cfg!(target_arch = "aarch64") {
            (wsum, mm_weights(cstride, cout8, &w8))
        } else {
            (Vec::new(), Vec::new())
        };
        let mut pc = Self {
            cin,
            cout,
            cstride,
            cout8,
            offset,
            wabs,
            ones,
            narrow,
            w8,
            w16,
            wsum,
            wmm,
            wino: None,
            wino16: None,
            wino2: std::sync::OnceLock::new(),
            wino4: std::sync::OnceLock::new(),
            #[cfg(target_arch = "x86_64")]
            amx: std::sync::OnceLock::new(),
            bias: Aligned::new(),
        };
        pc.bias.resize(cout);
        pc.bias.copy_from_slice(&c.bias);
        pc.wino = wino::WinoWeights::new(&pc);
        pc.wino16 = wino::WinoWeights16::new(&pc);
        pc
    }

    /// The Winograd schedule for codes up to `max_code` when the kernel is exact for them and
    /// this conv has Winograd weights.
    pub fn wino_schedule(&self, max_code: u32) -> Option<wino::Schedule> {
        self.wino.as_ref()?.schedule(max_code)
    }

    /// The F(2x2, 3x3) weights (None when the weights do not fit that transform), built on
    /// the first call.
    pub fn wino2(&self) -> Option<&wino::Wino2Weights> {
        self.wino2
            .get_or_init(|| wino::Wino2Weights::new(self))
            .as_ref()
    }

    /// The F(4x4, 3x3) i16 weights (None when the conv does not fit that kernel), built on
    /// the first call.
    pub fn wino4(&self) -> Option<&wino4::Wino4Weights> {
        self.wino4
            .get_or_init(|| wino4::Wino4Weights::new(self))
            .as_ref()
    }

    /// The weights as AMX tiles, built on the first call.
    #[cfg(target_arch = "x86_64")]
    fn amx(&self) -> &amx::AmxWeights {
        self.amx.get_or_init(|| amx::AmxWeights::new(self))
    }

    /// Whether `vpmaddubsw` (u8·i8 pairs summed into saturating i16) is exact for codes up to
    /// `max_code`.
    pub fn pairs_fit_i16(&self, max_code: u32) -> bool {
        2 * max_code as i64 * self.wabs as i64 <= i16::MAX as i64
    }
}

/// A buffer of plain numbers (`u8` codes, `i32` sums, `f32` values) that starts on a 64-byte
/// cache line: the engines' code maps, sums and residual maps. With 64 channels every pixel
/// then starts a line — the AMX kernel's tile rows (one pixel's 64 codes) and the epilogue's
/// 512-bit vectors never straddle two. A large `Vec` starts 16 bytes into a line (glibc):
/// from such a map the AMX kernels ran 1.03–1.22x slower (`cargo bench --bench cpu --
/// --kernels 1 --frames 9 [--misalign 16]`, session 37), and a whole x2 network with every
/// buffer so placed about 1.4x slower on one core.
#[derive(Clone)]
pub struct Aligned<T: Plain> {
    lines: Vec<Line>,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

/// Numbers whose every bit pattern, all zeros included, is a value, and whose size divides
/// 64 (so a line holds a whole number of them, each aligned).
pub trait Plain: Copy + sealed::Sealed {}
impl Plain for u8 {}
impl Plain for i16 {}
impl Plain for i32 {}
impl Plain for f32 {}
mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i16 {}
    impl Sealed for i32 {}
    impl Sealed for f32 {}
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

impl<T: Plain> Aligned<T> {
    pub const fn new() -> Self {
        Aligned {
            lines: Vec::new(),
            len: 0,
            _t: std::marker::PhantomData,
        }
    }

    /// Makes the buffer `n` zeros (in the memory it had, when that is enough).
    pub fn zeroed(&mut self, n: usize) {
        self.lines.clear();
        self.len = 0;
        self.resize(n);
    }

    /// Makes the buffer `n` long, keeping its first elements; those it gains are zero (as
    /// `Vec::resize` with 0).
    pub fn resize(&mut self, n: usize) {
        let size = std::mem::size_of::<T>();
        let per_line = 64 / size;
        // The old last line's elements past the old length may hold earlier contents.
        let stale = self.len..n.min(self.len.div_ceil(per_line) * per_line);
        if !stale.is_empty() {
            let line = &mut self.lines[stale.start / per_line].0;
            line[stale.start % per_line * size..][..stale.len() * size].fill(0);
        }
        self.lines.resize(n.div_ceil(per_line), Line([0; 64]));
        self.len = n;
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Plain> Default for Aligned<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Plain> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `Line` is 64 bytes without padding and `T`'s size divides 64 (`Plain`), so
        // the lines are at least `len` initialised, aligned `T` (any bit pattern is one).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl<T: Plain> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

/// A padded code map as the kernels read it: `(h + 2) x (w + 2)` pixels of `cstride` codes,
/// zero border.
#[derive(Clone, Copy, Debug)]
pub struct Codes<'a> {
    pub data: &'a [u8],
    pub h: usize,
    pub w: usize,
    pub cstride: usize,
    /// Each pixel's code sum ([`pixel_sums`] of this map), when the caller made them: the
    /// offset correction of 8-bit weights reads its window sums `Σ q` from them instead of
    /// summing each pixel's codes again for every output row that reads it (that was 21% of a
    /// built-in x2 w8a6 frame).
    pub sums: Option<&'a [i32]>,
    /// The caller applies the offset correction of 8-bit weights itself (the fused engine, in
    /// its epilogue, with [`window_code_sums`]): the row-sum functions then leave
    /// `Σ q·(k − 128)` as the kernels make it.
    pub defer_offset: bool,
}

impl<'a> Codes<'a> {
    /// This map with its pixels' code sums ([`Codes::sums`], made in `buf`) when the conv `pc`
    /// reads them: 8-bit weights (the offset form) and no ones lane.
    pub fn with_sums_for(self, pc: &PackedConv, buf: &'a mut Vec<i32>) -> Codes<'a> {
        self.with_sums_of_rows(pc, buf, 0..self.h)
    }

    /// [`Codes::with_sums_for`] where only output rows `ys` will be computed: the sums of the
    /// padded rows they read (`ys.start .. ys.end + 2`) are made, the others left as they were.
    pub fn with_sums_of_rows(
        self,
        pc: &PackedConv,
        buf: &'a mut Vec<i32>,
        ys: Range<usize>,
    ) -> Codes<'a> {
        if !(pc.offset && pc.ones.is_none()) {
            return self;
        }
        pixel_sums_of_rows(&self, ys.start..ys.end + 2, buf);
        let sums: &'a Vec<i32> = buf;
        Codes {
            sums: Some(sums),
            ..self
        }
    }
}

/// Each pixel's code sum of the padded map `x` (border pixels included), `(h + 2) · (w + 2)`
/// values in `out`, rows in parallel.
pub fn pixel_sums(x: &Codes, out: &mut Vec<i32>) {
    pixel_sums_of_rows(x, 0..x.h + 2, out);
}

/// [`pixel_sums`] of the padded rows `rows` only (`out` still sized for the whole map; its
/// other rows keep their values).
pub fn pixel_sums_of_rows(x: &Codes, rows: Range<usize>, out: &mut Vec<i32>) {
    use rayon::prelude::*;
    let wp = x.w + 2;
    assert_eq!(x.data.len(), (x.h + 2) * wp * x.cstride, "code map size");
    assert!(rows.end <= x.h + 2, "rows of the padded map");
    out.resize((x.h + 2) * wp, 0);
    out[rows.start * wp..rows.end * wp]
        .par_chunks_mut(wp)
        .zip(
            x.data[rows.start * wp * x.cstride..rows.end * wp * x.cstride]
                .par_chunks(wp * x.cstride),
        )
        .for_each(|(sums, row)| {
            for (s, px) in sums.iter_mut().zip(row.chunks_exact(x.cstride)) {
                *s = code_sum(px);
            }
        });
}

/// `S` of every output channel for the pixels `cols` of output row `y`: `out[x * cout8 + o]`,
/// `x ∈ cols` (other entries untouched; pass `0..w` for the whole row).
///
/// `max_code` bounds the codes of `x` (2^bits − 1); it picks the exact AVX2 variant.
pub fn row_sums(
    level: CpuLevel,
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    max_code: u32,
    cols: Range<usize>,
    out: &mut [i32],
) {
    row_sums_hinted(level, x, pc, y, max_code, cols, out, Hint::NONE)
}

/// Memory a caller reads right after a kernel call: `len` bytes from address `at` (a hint: the
/// address need not be valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hint {
    pub at: usize,
    pub len: usize,
}

impl Hint {
    pub const NONE: Hint = Hint { at: 0, len: 0 };

    /// Asks the cache for the lines of the hint now, on x86-64; nothing elsewhere.
    #[inline]
    pub fn prefetch(self) {
        #[cfg(target_arch = "x86_64")]
        for line in (self.at & !63..self.at + self.len).step_by(64) {
            prefetch_line(line);
        }
    }
}

/// Asks the cache for the line at address `at` (`prefetcht0`: it never faults, so the address
/// need not be valid).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_line(at: usize) {
    // SAFETY: `prefetcht0` changes no architectural state and cannot fault; SSE is part of
    // x86-64.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
    }
}

/// [`row_sums`], with the memory the caller reads next: the AMX kernel spreads its
/// prefetches between its products ([`set_kernel_prefetch`]); the other kernels have it
/// prefetched before they start.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_sums_hinted(
    level: CpuLevel,
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    max_code: u32,
    cols: Range<usize>,
    out: &mut [i32],
    hint: Hint,
) {
    #[cfg(target_arch = "x86_64")]
    let amx = level == CpuLevel::Amx
        && (pc.narrow.is_none() || NARROW_AMX.load(std::sync::atomic::Ordering::Relaxed));
    #[cfg(not(target_arch = "x86_64"))]
    let amx = false;
    if !amx {
        hint.prefetch();
    }
    check_codes(x, pc, y, &cols);
    assert!(out.len() >= x.w * pc.cout8, "row sums buffer");
    match level {
        CpuLevel::Scalar => scalar::row_sums(x, pc, y, cols.clone(), out),
        #[cfg(target_arch = "x86_64")]
        CpuLevel::Avx2 => {
            // SAFETY: Avx2 is only ever selected when the CPU reports AVX2 (CpuLevel::detect /
            // available); shapes were checked above.
            unsafe {
                if let Some(nw) = &pc.narrow {
                    avx2::row_sums_narrow16(x, pc, nw, y, cols.clone(), out)
                } else if pc.pairs_fit_i16(max_code) {
                    avx2::row_sums_maddubs(x, pc, y, max_code, cols.clone(), out)
                } else {
                    avx2::row_sums_madd16(x, pc, y, cols.clone(), out)
                }
            }
        }
        // SAFETY (the arms below): a VNNI level is only selected when the CPU reports its
        // features (CpuLevel::supported), the emulated ones with AVX2; shapes checked above.
        #[cfg(target_arch = "x86_64")]
        CpuLevel::EmulatedVnni => unsafe { vnni::direct_emulated(x, pc, y, cols.clone(), out) },
        #[cfg(target_arch = "x86_64")]
        CpuLevel::AvxVnni => unsafe { vnni::direct_avxvnni(x, pc, y, cols.clone(), out) },
        #[cfg(target_arch = "x86_64")]
        CpuLevel::EmulatedVnni512 => unsafe {
            vnni::direct512_emulated(x, pc, y, cols.clone(), out)
        },
        #[cfg(target_arch = "x86_64")]
        // (Amx: also AMX-INT8, and the OS granted the tile state, `amx::available`.)
        #[cfg(target_arch = "x86_64")]
        CpuLevel::Avx512Vnni | CpuLevel::Amx => unsafe {
            match &pc.narrow {
                _ if amx => amx::row_sums(x, pc, pc.amx(), y, cols.clone(), out, hint),
                Some(nw) => vnni::narrow512_avx512vnni(x, pc, nw, y, cols.clone(), out),
                None => vnni::direct512_avx512vnni(x, pc, y, cols.clone(), out),
            }
        },
        // SAFETY: NeonDot is only selected where the CPU reports `dotprod`
        // (CpuLevel::supported); shapes checked above.
        #[cfg(target_arch = "aarch64")]
        CpuLevel::NeonDot => unsafe {
            neon::row_sums_sdot(x, pc, y, max_code > 127, cols.clone(), out)
        },
        // SAFETY: NeonI8mm is only selected where the CPU reports `i8mm` and `dotprod`
        // (CpuLevel::supported); shapes checked above.
        #[cfg(target_arch = "aarch64")]
        CpuLevel::NeonI8mm => unsafe { neon::row_sums_mmla(x, pc, y, cols.clone(), out) },
        // The other architecture's levels, never selected here.
        #[allow(unreachable_patterns)]
        _ => scalar::row_sums(x, pc, y, cols.clone(), out),
    }
    if pc.offset && !x.defer_offset {
        finish_offset(level, x, pc, y, cols, out);
    }
}

/// [`row_sums`] by Winograd F(2,3) from the transformed rows `v` ([`wino::build_row`] of the
/// output row's three input rows); the same `S` to the bit. Only at levels with a Winograd
/// kernel (AVX2), with the schedule of this conv for `v.max_code`
/// ([`PackedConv::wino_schedule`]).
// Off x86-64 there is no Winograd kernel (only the scalar level, which never asks for one), so
// the weights go unused and the match ends in its panic.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unreachable_code))]
pub fn row_sums_wino(
    level: CpuLevel,
    v: &wino::WinoInput,
    pc: &PackedConv,
    sched: &wino::Schedule,
    cols: Range<usize>,
    out: &mut [i32],
) {
    check_wino(v.w, v.cstride, v.rows.map(<[u8]>::len), pc, &cols, out);
    let ww = pc.wino.as_ref().expect("a conv with Winograd weights");
    assert!(
        sched.is_for(ww) && sched.max_code == v.max_code,
        "a Winograd schedule of another conv or other codes"
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 and the levels above it are only selected on CPUs with AVX2; shapes
        // checked above, the schedule is this conv's for these codes (so no i16 sum can
        // overflow).
        l if l >= CpuLevel::Avx2 => unsafe {
            avx2::row_sums_wino(v, pc, ww, &sched.flush, cols, out)
        },
        _ => panic!("no Winograd kernel at {level:?}"),
    }
}

/// [`row_sums`] by Winograd F(2,3) from the transformed rows `v` ([`wino::build_row`]) with
/// i32 element sums (VNNI levels: no widening schedule); the same `S` to the bit. Exact for
/// codes up to 127 (`2Q` fits u8) when the conv has Winograd weights.
// Off x86-64 there is no Winograd kernel (only the scalar level, which never asks for one), so
// the weights go unused and the match ends in its panic.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unreachable_code))]
pub fn row_sums_wino_i32(
    level: CpuLevel,
    v: &wino::WinoInput,
    pc: &PackedConv,
    cols: Range<usize>,
    out: &mut [i32],
) {
    check_wino(v.w, v.cstride, v.rows.map(<[u8]>::len), pc, &cols, out);
    let ww = pc.wino.as_ref().expect("a conv with Winograd weights");
    assert!(v.max_code <= 127, "transformed codes 0..=2Q must fit u8");
    match level {
        // SAFETY (all three): the level is only selected where the CPU has its features;
        // shapes and codes checked above (i32 sums of ≤ 3·cstride products of |V·U| ≤ 254·127
        // cannot overflow).
        #[cfg(target_arch = "x86_64")]
        CpuLevel::EmulatedVnni => unsafe { vnni::wino_emulated(v, pc, ww, cols, out) },
        #[cfg(target_arch = "x86_64")]
        CpuLevel::EmulatedVnni512 => unsafe { vnni::wino512_emulated(v, pc, ww, cols, out) },
        #[cfg(target_arch = "x86_64")]
        CpuLevel::AvxVnni => unsafe { vnni::wino_avxvnni(v, pc, ww, cols, out) },
        #[cfg(target_arch = "x86_64")]
        CpuLevel::Avx512Vnni | CpuLevel::Amx => unsafe {
            vnni::wino512_avx512vnni(v, pc, ww, cols, out)
        },
        _ => panic!("no i32 Winograd kernel at {level:?}"),
    }
}

/// [`row_sums`] of output row `y` of `x` by Winograd F(2,3) in i16 from the transformed rows
/// `v` ([`wino::build_row16`] of rows `y .. y + 3` of `x`); the same `S` to the bit, for any
/// codes and weights. Only at levels with a Winograd kernel (AVX2).
// Off x86-64 there is no Winograd kernel (only the scalar level, which never asks for one), so
// the weights go unused and the match ends in its panic.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unreachable_code))]
pub fn row_sums_wino16(
    level: CpuLevel,
    v: &wino::WinoInput16,
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    check_wino(v.w, v.cstride, v.rows.map(<[i16]>::len), pc, &cols, out);
    assert_eq!((x.w, x.cstride), (v.w, v.cstride), "code map");
    assert!(y < x.h, "row {y} of {}", x.h);
    let ww = pc
        .wino16
        .as_ref()
        .expect("a conv with i16 Winograd weights");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 and the levels above it are only selected on CPUs with AVX2; shapes
        // checked above.
        l if l >= CpuLevel::Avx2 => unsafe { avx2::row_sums_wino16(v, pc, ww, cols.clone(), out) },
        _ => panic!("no Winograd kernel at {level:?}"),
    }
    if pc.offset && !x.defer_offset {
        finish_offset(level, x, pc, y, cols, out);
    }
}

/// [`row_sums`] of output rows `y` and `y + 1` by Winograd F(2x2, 3x3) from the transformed
/// tiles `v` ([`wino::build_tiles2`] of those rows, tiles covering `cols`): row `r` into
/// `out[r · w · cout8 ..]` (the second row's values are meaningless when `y + 1` is past the
/// map); the same `S` to the bit. At the AVX-512 VNNI level (and its emulation), i32 element
/// sums: exact whenever the conv has F(2x2, 3x3) weights and `4·max_code ≤ 255`.
// Off x86-64 there is no Winograd kernel (only the scalar level, which never asks for one), so
// the weights go unused and the match ends in its panic.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unreachable_code))]
pub fn row_sums_wino2_i32(
    level: CpuLevel,
    v: &wino::Wino2Input,
    pc: &PackedConv,
    cols: Range<usize>,
    out: &mut [i32],
) {
    check_wino2(v, pc, &cols, out);
    let ww = pc.wino2().expect("a conv with F(2x2, 3x3) weights");
    assert!(v.max_code <= 63, "transformed codes 0..=4Q must fit u8");
    match level {
        // SAFETY (both): the level is only selected where the CPU has its features; shapes
        // and codes checked above (i32 sums of ≤ cstride products of |V·U| ≤ 252·127 per
        // element, 9 elements per output, cannot overflow for cstride ≤ 1024).
        #[cfg(target_arch = "x86_64")]
        CpuLevel::EmulatedVnni512 => unsafe { vnni::wino2_512_emulated(v, pc, ww, cols, out) },
        #[cfg(target_arch = "x86_64")]
        CpuLevel::Avx512Vnni | CpuLevel::Amx => unsafe {
            vnni::wino2_512_avx512vnni(v, pc, ww, cols, out)
        },
        _ => panic!("no i32 F(2x2, 3x3) kernel at {level:?}"),
    }
}

/// [`row_sums`] of output rows `y0 .. y0 + 4` (those below `x.h`; row `r` at
/// `out[r · x.w · cout8..]`) by Winograd F(4x4, 3x3) on i16 ([`wino4`]): the same `S` to the
/// bit, offset correction included. At AVX-512 VNNI, AVX-VNNI and AVX2 ([`has_wino4`]), for
/// convs with [`PackedConv::wino4`] weights; `tiles` is scratch.
// Off x86-64 there is no Winograd kernel (only the scalar level, which never asks for one), so
// the weights go unused and the match ends in its panic.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unreachable_code))]
pub fn row_sums_wino4(
    level: CpuLevel,
    x: &Codes,
    pc: &PackedConv,
    y0: usize,
    cols: Range<usize>,
    tiles: &mut Vec<i16>,
    out: &mut [i32],
) {
    check_codes(x, pc, y0, &cols);
    let rows = (x.h - y0).min(4);
    let plane = x.w * pc.cout8;
    assert!(out.len() >= rows * plane, "row sums buffer");
    let ww = pc.wino4().expect("a conv with F(4x4, 3x3) weights");
    let tiles_needed = wino4::tiles_len(cols.end.div_ceil(4) - cols.start / 4, pc.cstride);
    if tiles.len() < tiles_needed {
        tiles.resize(tiles_needed, 0);
    }
    match level {
        // SAFETY (each arm): the level is only selected where the CPU has its features (the
        // emulated one: AVX2); shapes checked above, the weights' bound on the sums by
        // `Wino4Weights::new`.
        #[cfg(target_arch = "x86_64")]
        CpuLevel::Avx512Vnni | CpuLevel::Amx => unsafe {
            wino4::row_sums_avx512(x, pc, ww, y0, cols.clone(), tiles, out)
        },
        #[cfg(target_arch = "x86_64")]
        CpuLevel::AvxVnni => unsafe {
            wino4::row_sums_avxvnni(x, pc, ww, y0, cols.clone(), tiles, out)
        },
        // The emulated AVX-VNNI level (tests only) runs the AVX-VNNI kernel's structure with
        // AVX2's pair product.
        #[cfg(target_arch = "x86_64")]
        CpuLevel::Avx2 | CpuLevel::EmulatedVnni => unsafe {
            wino4::row_sums_avx2(x, pc, ww, y0, cols.clone(), tiles, out)
        },
        _ => panic!("no F(4x4, 3x3) kernel at {level:?}"),
    }
    if pc.offset && !x.defer_offset {
        for r in 0..rows {
            finish_offset(level, x, pc, y0 + r, cols.clone(), &mut out[r * plane..]);
        }
    }
}

/// Whether [`row_sums_wino4`] has a kernel at `level`.
pub fn has_wino4(level: CpuLevel) -> bool {
    matches!(
        level,
        CpuLevel::Avx2
            | CpuLevel::EmulatedVnni
            | CpuLevel::AvxVnni
            | CpuLevel::Avx512Vnni
            | CpuLevel::Amx
    )
}

/// Whether [`row_sums_wino2_i32`] has a kernel at `level`.
pub fn has_wino2_i32(level: CpuLevel) -> bool {
    matches!(
        level,
        CpuLevel::Avx512Vnni | CpuLevel::Amx | CpuLevel::EmulatedVnni512
    )
}

/// The shape checks of the F(2x2, 3x3) entry points.
fn check_wino2(v: &wino::Wino2Input, pc: &PackedConv, cols: &Range<usize>, out: &[i32]) {
    assert_eq!(v.cstride, pc.cstride, "transformed tiles' channel stride");
    assert!(v.cstride <= 1024, "channel stride");
    assert_eq!(
        v.data.len(),
        wino::tiles2_len(v.tiles, v.cstride),
        "transformed tiles size"
    );
    assert!(
        cols.start.is_multiple_of(2)
            && cols.start / 2 >= v.t0
            && cols.start <= cols.end
            && cols.end <= v.w
            && cols.end.div_ceil(2) <= v.t0 + v.tiles,
        "columns {cols:?} of {} (starting on a tile, inside tiles {}..{})",
        v.w,
        v.t0,
        v.t0 + v.tiles
    );
    assert!(
        out.len() >= 2 * v.w * pc.cout8,
        "row sums buffer (two rows)"
    );
}

/// The shape checks of the Winograd entry points: transformed rows of a `w`-pixel map with
/// `cstride` channels, a column range starting on a tile, a large enough sums buffer.
fn check_wino(
    w: usize,
    cstride: usize,
    row_lens: [usize; 3],
    pc: &PackedConv,
    cols: &Range<usize>,
    out: &[i32],
) {
    assert_eq!(cstride, pc.cstride, "transformed rows' channel stride");
    assert!(
        cols.start.is_multiple_of(2) && cols.start <= cols.end && cols.end <= w,
        "columns {cols:?} of {w} (starting on a tile)"
    );
    let len = wino::row_len(w, cstride);
    assert!(row_lens.iter().all(|&l| l == len), "transformed row size");
    assert!(out.len() >= w * pc.cout8, "row sums buffer");
}

/// The shape checks of the entry points that read a code map directly: the map is `pc`'s
/// input, row `y` and columns `cols` are inside it.
fn check_codes(x: &Codes, pc: &PackedConv, y: usize, cols: &Range<usize>) {
    assert_eq!(x.cstride, pc.cstride, "code map channel stride");
    assert_eq!(
        x.data.len(),
        (x.h + 2) * (x.w + 2) * x.cstride,
        "code map size"
    );
    assert!(y < x.h, "row {y} of {}", x.h);
    assert!(
        cols.start <= cols.end && cols.end <= x.w,
        "columns {cols:?} of {}",
        x.w
    );
}

/// `S = 2·Σ q·(k − 128) + Σ q` for 8-bit weights (the kernels computed the first sum).
fn finish_offset(
    level: CpuLevel,
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    range: Range<usize>,
    out: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if level >= CpuLevel::Avx2 {
        // SAFETY: Avx2 and the levels above it are only selected on CPUs with AVX2.
        return unsafe { finish_offset_avx2(x, pc, y, range, out) };
    }
    let _ = level;
    finish_offset_with(x, pc, y, range, out)
}

/// [`finish_offset_with`] compiled for AVX2 (its loops 8 lanes wide).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn finish_offset_avx2(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    range: Range<usize>,
    out: &mut [i32],
) {
    finish_offset_with(x, pc, y, range, out)
}

/// [`finish_offset`]'s work, inlined into each caller (no closure or thread-local buffer, so
/// that the AVX2 copy's loops are AVX2 too).
#[inline(always)]
fn finish_offset_with(x: &Codes, pc: &PackedConv, y: usize, range: Range<usize>, out: &mut [i32]) {
    let mut sq = [0i32; 64];
    for x0 in range.clone().step_by(sq.len()) {
        let cols = x0..(x0 + sq.len()).min(range.end);
        let sq = &mut sq[..cols.len()];
        window_code_sums(x, pc, y, cols.clone(), &out[x0 * pc.cout8..], sq);
        for (s, &sq) in out[x0 * pc.cout8..cols.end * pc.cout8]
            .chunks_exact_mut(pc.cout8)
            .zip(sq.iter())
        {
            for s in s.iter_mut() {
                *s = 2 * *s + sq;
            }
        }
    }
}

/// The window code sums `Σ q` of the 8-bit weights' offset correction `S = 2·Σ q·(k − 128) +
/// Σ q` ([`PackedConv::offset`]) for the pixels `cols` of output row `y`, into `sq`: from the
/// ones lane of the kernels' sums `s` (pixel `cols.start` first, `pc.cout8` apart) when the
/// conv has one, else from the map's pixel sums ([`Codes::sums`]) or its codes. Inlined, so
/// that [`finish_offset`]'s AVX2 copy has it in AVX2 too.
#[inline(always)]
pub fn window_code_sums(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    s: &[i32],
    sq: &mut [i32],
) {
    assert!(pc.offset, "a conv with the offset form");
    check_codes(x, pc, y, &cols);
    assert!(
        sq.len() >= cols.len() && s.len() >= cols.len() * pc.cout8,
        "window sums buffers"
    );
    let wp = x.w + 2;
    // Column `xx`'s code sum over the window's 3 rows.
    #[inline(always)]
    fn column(x: &Codes, y: usize, xx: usize) -> i32 {
        let wp = x.w + 2;
        match x.sums {
            Some(p) => p[y * wp + xx] + p[(y + 1) * wp + xx] + p[(y + 2) * wp + xx],
            None => (y..y + 3)
                .map(|yy| {
                    let p = (yy * wp + xx) * x.cstride;
                    code_sum(&x.data[p..p + x.cstride])
                })
                .sum(),
        }
    }
    if let Some(p) = x.sums {
        assert!(p.len() >= (y + 3) * wp, "pixel sums of another map");
    }
    if cols.is_empty() {
        return;
    }
    match pc.ones {
        Some(lane) => {
            for (q, s) in sq.iter_mut().zip(s.chunks_exact(pc.cout8)).take(cols.len()) {
                *q = s[lane];
            }
        }
        // A sliding window of 3 column sums.
        None => {
            let (mut c0, mut c1) = (column(x, y, cols.start), column(x, y, cols.start + 1));
            for (q, xx) in sq.iter_mut().zip(cols) {
                let c2 = column(x, y, xx + 2);
                *q = c0 + c1 + c2;
                (c0, c1) = (c1, c2);
            }
        }
    }
}

/// The sum of a pixel's codes: `psadbw` on 16 bytes at a time on x86-64 (SSE2, part of the
/// base ISA; a plain byte loop here cost 8% of a built-in x4 w4a4 frame), `uaddlv` on aarch64
/// (the byte loop: 8.5% of a built-in x2 w8a6 frame's instructions), the rest one by one.
#[inline]
fn code_sum(codes: &[u8]) -> i32 {
    let chunks = codes.chunks_exact(16);
    let rest: i32 = chunks.remainder().iter().map(|&q| q as i32).sum();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; each load reads the 16 bytes of its chunk.
        unsafe {
            let mut acc = _mm_setzero_si128();
            for c in chunks {
                let v = _mm_loadu_si128(c.as_ptr().cast());
                acc = _mm_add_epi64(acc, _mm_sad_epu8(v, _mm_setzero_si128()));
            }
            let hi = _mm_unpackhi_epi64(acc, acc);
            rest + (_mm_cvtsi128_si64(acc) + _mm_cvtsi128_si64(hi)) as i32
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        // SAFETY: NEON is part of aarch64; each load reads the 16 bytes of its chunk.
        let sum: u32 = chunks
            .map(|c| unsafe { vaddlvq_u8(vld1q_u8(c.as_ptr())) } as u32)
            .sum();
        rest + sum as i32
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        rest + chunks.flatten().map(|&q| q as i32).sum::<i32>()
    }
}

#[cfg(test)]
mod tests;
