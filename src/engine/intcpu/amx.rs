//! The direct conv kernel on Intel AMX ([`super::CpuLevel::Amx`]: Sapphire Rapids and later
//! Xeons). One `tdpbusd` multiplies a tile of 16 rows × 64 u8 by one of 16 rows × 64 i8 (16
//! groups of 4 input channels × 16 output lanes) into 16 × 16 i32 sums: 16,384 products, 64
//! times those of an AVX-512 `vpdpbusd`, in about 16 cycles.
//!
//! The conv is an implicit GEMM over one output row: a row of the left operand is one output
//! pixel's window of one kernel row — taps `dx = 0, 1, 2` of the padded map are 3 neighbouring
//! pixels, so their codes are `3 · cstride` consecutive bytes — and consecutive pixels are
//! `cstride` bytes apart, so tiles load straight from the code map with that stride (rows
//! overlapping). The right operand is the packed weights `w8` (`[9][cstride/4][cout8][4]`: 4
//! input channels of one output lane per 4 bytes, a kernel row's taps consecutive) cut once
//! per conv into contiguous tiles of 16 lanes ([`AmxWeights`]; read in place at `w8`'s stride
//! of `4 · cout8` bytes the kernel was 2–2.5x slower). No transform: the sums are the same i32
//! as every other kernel's (`vpdpbusd` semantics, u8 codes times i8 weights, exact).
//!
//! Blocking: 2 pixel blocks of 16 × 2 output blocks of 16 lanes, 4 accumulator tiles, 2 left
//! and 2 right operand tiles: the 8 tile registers. Each pair of lane blocks makes one pass
//! over the pixel blocks of the columns asked for (128 a call from the fused engine). A
//! block's sums stay in its accumulator tiles until the next block of the same shape stores
//! them, each tile just before its first product of the new block (stores and products
//! overlap: 1.06x the kernel), or until a block of another shape or the call's end.
//! Each kernel row's `3 · cstride` bytes are cut into equal steps of at most 64 (a multiple of
//! 4 dividing it), so one tile configuration serves the whole row; pixel, lane and step
//! tails are shapes of the configuration (rows and bytes per tile), never reads past the map.
//!
//! Linux hands out AMX state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), once per
//! process: [`available`] asks.

use std::arch::asm;
use std::ops::Range;

use super::{Codes, Hint, PackedConv, prefetch_line};

/// Whether the CPU has AMX-TILE and AMX-INT8 and the OS granted this process the tile data
/// state (asked once).
pub fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // CPUID leaf 7: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        edx & (3 << 24) == 3 << 24 && request_tile_data()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: 0 when the kernel grants the
/// process the tile data state (it refuses when the CPU or its XCR0 lacks it, or a thread's
/// signal stack is too small for it).
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call with integer arguments; it reads and writes no memory of
    // ours and clobbers only rcx and r11 (declared).
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Other systems: not used (their AMX permission model is not wired here).
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// A tile configuration (palette 1): tiles 0–3 the sums of pixel block `i` and lane block `j`
/// (tile `2i + j`), 4–5 the codes of pixel blocks 0 and 1, 6–7 the weights of lane blocks 0
/// and 1. A block of 0 pixels or lanes leaves its tiles unconfigured (never touched).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(m: [usize; 2], n: [usize; 2], step: usize) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut set = |t: usize, rows: usize, bytes: usize| {
            if rows > 0 && bytes > 0 {
                c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(bytes as u16).to_le_bytes());
                c[48 + t] = rows as u8;
            }
        };
        for (i, &mi) in m.iter().enumerate() {
            for (j, &nj) in n.iter().enumerate() {
                set(2 * i + j, mi, 4 * nj);
            }
            set(4 + i, mi, step);
            set(6 + i, step / 4, 4 * n[i]);
        }
        TileConfig(c)
    }
}

/// The [`TileConfig`] of pixel blocks `m`, lane blocks `n` and step `step` as one word (never
/// 0: `step` is at least 4).
fn shape_key(m: [usize; 2], n: [usize; 2], step: usize) -> u64 {
    (m[0] | m[1] << 8 | n[0] << 16 | n[1] << 24 | step << 32) as u64
}

/// The step through a kernel row's `3 · cstride` bytes: the largest multiple of 4 up to 64
/// that divides it (64 for 64-channel maps, 48 for 32 channels, 44 for 44).
fn step_of(cstride: usize) -> usize {
    let k = 3 * cstride;
    (4..=64)
        .rev()
        .step_by(4)
        .find(|&s| k.is_multiple_of(s))
        .unwrap_or(4)
}

/// A conv's weights as the right-hand tiles of [`row_sums`]: for each block of 16 output
/// lanes (the last one 8 when `cout8` is not a multiple of 16), kernel row and step of the
/// row's `3 · cstride` bytes, a tile of `step / 4` rows of 64 bytes (4 input channels of each
/// of the block's lanes; a block of 8 lanes uses the first 32), contiguous: the packed `w8`
/// read at its stride of `4 · cout8` bytes made the 64->64 kernel 2–2.5x slower (`cargo bench
/// --bench cpu -- --kernels`, session 36: 5.9 ms against 2.3–2.9 ms a 320x180 map).
#[derive(Clone, Debug)]
pub struct AmxWeights {
    /// One tile row (64 bytes) per element, each on its own cache line.
    w: Vec<Line>,
    step: usize,
}

/// A tile row of weights, cache-line aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Line([i8; 64]);

impl AmxWeights {
    pub fn new(pc: &PackedConv) -> Self {
        let krow = 3 * pc.cstride;
        let step = step_of(pc.cstride);
        let (blocks, rows) = (pc.cout8.div_ceil(16), krow / 4);
        let mut w = vec![Line([0; 64]); blocks * 3 * rows];
        for b in 0..blocks {
            let lanes = (pc.cout8 - 16 * b).min(16);
            for dy in 0..3 {
                for r in 0..rows {
                    // Row r of kernel row dy: w8 row dy·krow/4 + r, lanes 16b ...
                    let src = &pc.w8[((dy * rows + r) * pc.cout8 + 16 * b) * 4..][..4 * lanes];
                    w[(b * 3 + dy) * rows + r].0[..4 * lanes].copy_from_slice(src);
                }
            }
        }
        AmxWeights { w, step }
    }

    /// The first tile of lane block `b`, kernel row `dy` (its steps follow, `step / 4 · 64`
    /// bytes apart).
    fn tiles(&self, b: usize, dy: usize, rows: usize) -> *const i8 {
        self.w[(b * 3 + dy) * rows..].as_ptr().cast()
    }
}

/// See [`super::row_sums`] (before the offset correction).
///
/// # Safety
/// The CPU has AMX-TILE and AMX-INT8 and [`available`] returned true in this process; the
/// shapes are [`super::check_codes`]' (`out` holds `x.w · cout8` sums) and `aw` is `pc`'s.
pub unsafe fn row_sums(
    x: &Codes,
    pc: &PackedConv,
    aw: &AmxWeights,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
    hint: Hint,
) {
    debug_assert!(out.len() >= x.w * pc.cout8 && cols.end <= x.w && y < x.h);
    let cs = pc.cstride;
    let krow = 3 * cs;
    let step = aw.step;
    debug_assert_eq!(aw.w.len(), pc.cout8.div_ceil(16) * krow / 4 * 3);
    // The block before, whose sums are still in the tiles: the next block stores them if it
    // has the same shape, else they are stored before its tile configuration is loaded.
    let mut pending: Option<Pending> = None;
    let overlap = OVERLAP.load(std::sync::atomic::Ordering::Relaxed);
    // What the caller reads next (a residual chunk for the epilogue: 32 KB for 128 pixels of
    // 64 channels), asked for a few lines at a time between the products.
    let mut lines = if SPREAD.load(std::sync::atomic::Ordering::Relaxed) {
        let steps = pc.cout8.div_ceil(32) * cols.len().div_ceil(32) * 3 * krow.div_ceil(step);
        Lines::new(hint, steps)
    } else {
        hint.prefetch();
        Lines::new(Hint::NONE, 1)
    };
    // Lane blocks outside, pixel blocks inside: a block's weight tiles (18 KB for 32 lanes of
    // a 64-channel conv) are read once for every pixel block of `cols` from L1.
    for o0 in (0..pc.cout8).step_by(32) {
        let no = (pc.cout8 - o0).min(32);
        let n = [no.min(16), no.saturating_sub(16)];
        for x0 in cols.clone().step_by(32) {
            let np = (cols.end - x0).min(32);
            let m = [np.min(16), np.saturating_sub(16)];
            // The padded map's column x0 is the window's left tap of output pixel x0.
            let codes = |dy: usize| {
                x.data
                    .as_ptr()
                    .wrapping_add(((y + dy) * (x.w + 2) + x0) * cs)
            };
            // The shape as one word: building the 64-byte configuration and comparing it with
            // the loaded one per block took 14% of the kernel's samples (`perf annotate`: its
            // byte stores stall the wide loads that read them back), 1.13x the kernel.
            let key = shape_key(m, n, step);
            if let Some(p) = pending.filter(|p| p.key != key) {
                // SAFETY: the configuration loaded is still that block's.
                unsafe { p.store(pc.cout8) };
                pending = None;
            }
            LOADED.with(|loaded| {
                if loaded.get() != key {
                    let cfg = TileConfig::new(m, n, step);
                    // SAFETY: a valid palette-1 configuration (rows ≤ 16, bytes ≤ 64).
                    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
                    loaded.set(key);
                }
            });
            let sums = out.as_mut_ptr().wrapping_add(x0 * pc.cout8 + o0);
            let weights = |dy: usize| aw.tiles(o0 / 16, dy, krow / 4);
            let sh = Shape {
                krow,
                step,
                cs,
                cout8: pc.cout8,
            };
            let prev = pending.map_or(std::ptr::null_mut(), |p| p.sums);
            let (m2, n2) = (m[1] > 0, n[1] > 0);
            // SAFETY: every tile read stays inside the code map (pixel rows x0 .. x0 + np of
            // rows y .. y + 2, `3·cs` bytes each from their left tap) and the weights (lane
            // blocks o0/16 and the next when there is a second); `prev`, the block before (of
            // this shape, so of the loaded configuration), stores inside `out`.
            unsafe {
                let l = &mut lines;
                match (m2, n2) {
                    (true, true) => block::<true, true>(codes, weights, sh, prev, l),
                    (true, false) => block::<true, false>(codes, weights, sh, prev, l),
                    (false, true) => block::<false, true>(codes, weights, sh, prev, l),
                    (false, false) => block::<false, false>(codes, weights, sh, prev, l),
                }
            }
            let p = Pending { sums, key, m2, n2 };
            if overlap {
                pending = Some(p);
            } else {
                // SAFETY: this block's configuration is loaded; its sums inside `out`.
                unsafe { p.store(pc.cout8) };
            }
        }
    }
    if let Some(p) = pending {
        // SAFETY: the last block's configuration is loaded; its sums inside `out`.
        unsafe { p.store(pc.cout8) };
    }
}

/// The lines of a [`Hint`] not yet prefetched, and how many [`block`] asks for per step of
/// its kernel rows: all of them over about the call's steps.
struct Lines {
    next: usize,
    end: usize,
    per_step: usize,
}

impl Lines {
    fn new(hint: Hint, steps: usize) -> Self {
        let (next, end) = (hint.at & !63, hint.at + hint.len);
        let lines = end.saturating_sub(next).div_ceil(64);
        Lines {
            next,
            end,
            per_step: lines.div_ceil(steps.max(1)),
        }
    }

    /// The next `per_step` lines (their addresses), taken.
    #[inline(always)]
    fn take(&mut self) -> std::ops::Range<usize> {
        let from = self.next;
        self.next = (from + 64 * self.per_step).min(self.end.max(from));
        from..self.next
    }

    /// Prefetches the next `per_step` lines.
    #[inline(always)]
    fn step(&mut self) {
        self.take().step_by(64).for_each(prefetch_line);
    }
}

/// Whether [`row_sums`] spreads its hint's prefetches between its products
/// ([`set_kernel_prefetch`]).
static SPREAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets for the whole process (for comparisons) whether the AMX kernel spreads the prefetches
/// of its hint between its products (the default) or issues them all before it starts.
pub fn set_kernel_prefetch(on: bool) {
    SPREAD.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a block's sums are stored by the next block of the same shape ([`block`]'s `prev`;
/// [`set_store_overlap`]).
static OVERLAP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets for the whole process (for comparisons) whether the AMX kernel stores a block's sums
/// during the next block's first products (`true`, the default) or right after its own.
pub fn set_store_overlap(on: bool) {
    OVERLAP.store(on, std::sync::atomic::Ordering::Relaxed);
}

thread_local! {
    /// The shape ([`shape_key`]; 0: none) of the tile configuration this thread loaded last:
    /// it stays loaded between calls (the engines call [`row_sums`] per chunk of a row — 32
    /// pixels when this was measured, 128 in the fused engine since — and a `ldtilecfg` +
    /// `tilerelease` pair cost about 100 ns, 7% of a 32-pixel call). Nothing else in the
    /// process configures tiles; the OS keeps a thread's tile state across context switches
    /// and frees it with the thread.
    static LOADED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The sizes [`block`] steps by: a kernel row's bytes, the step, the code map's channel stride
/// and the sums' lanes per pixel.
#[derive(Clone, Copy)]
struct Shape {
    krow: usize,
    step: usize,
    cs: usize,
    cout8: usize,
}

/// The sums of one block of up to 32 pixels × 32 lanes (`M2`: a second pixel block, `N2`: a
/// second lane block) with the tile configuration loaded, left in the accumulator tiles 0–3
/// for [`store`]. Unless `prev` is null, the tiles first hold the sums of the block before, of
/// the same shape: they are stored at `prev`, each tile just before its first product of this
/// block, so that the stores overlap this block's loads and products. (Storing a block's four
/// tiles before the next one starts left the tile unit idle for a quarter of the kernel's
/// time.)
#[inline(always)]
unsafe fn block<const M2: bool, const N2: bool>(
    codes: impl Fn(usize) -> *const u8,
    weights: impl Fn(usize) -> *const i8,
    Shape {
        krow,
        step,
        cs,
        cout8,
    }: Shape,
    prev: *mut i32,
    lines: &mut Lines,
) {
    // The second lane block's tiles follow the first's kernel rows.
    let next_block = 3 * krow / 4 * 64;
    let tile = step / 4 * 64;
    let stride = 4 * cout8;
    let lower = prev.wrapping_add(16 * cout8);
    // SAFETY (all): the caller's; the tiles used are the configured ones.
    unsafe {
        for dy in 0..3 {
            let a = codes(dy);
            let mut w = weights(dy);
            for k in (0..krow).step_by(step) {
                let first = dy == 0 && k == 0;
                asm!("tileloadd tmm6, [{p} + {s}*1]", p = in(reg) w, s = in(reg) 64usize,
                    options(nostack, readonly));
                if N2 {
                    asm!("tileloadd tmm7, [{p} + {s}*1]", p = in(reg) w.add(next_block),
                        s = in(reg) 64usize, options(nostack, readonly));
                }
                asm!("tileloadd tmm4, [{p} + {s}*1]", p = in(reg) a.add(k), s = in(reg) cs,
                    options(nostack, readonly));
                if first {
                    if !prev.is_null() {
                        asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) prev,
                            s = in(reg) stride, options(nostack));
                    }
                    asm!("tilezero tmm0", options(nostack, nomem));
                }
                asm!("tdpbusd tmm0, tmm4, tmm6", options(nostack, nomem));
                if N2 {
                    if first {
                        if !prev.is_null() {
                            asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) prev.add(16),
                                s = in(reg) stride, options(nostack));
                        }
                        asm!("tilezero tmm1", options(nostack, nomem));
                    }
                    asm!("tdpbusd tmm1, tmm4, tmm7", options(nostack, nomem));
                }
                if M2 {
                    asm!("tileloadd tmm5, [{p} + {s}*1]", p = in(reg) a.add(16 * cs + k),
                        s = in(reg) cs, options(nostack, readonly));
                    if first {
                        if !prev.is_null() {
                            asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) lower,
                                s = in(reg) stride, options(nostack));
                        }
                        asm!("tilezero tmm2", options(nostack, nomem));
                    }
                    asm!("tdpbusd tmm2, tmm5, tmm6", options(nostack, nomem));
                    if N2 {
                        if first {
                            if !prev.is_null() {
                                asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) lower.add(16),
                                    s = in(reg) stride, options(nostack));
                            }
                            asm!("tilezero tmm3", options(nostack, nomem));
                        }
                        asm!("tdpbusd tmm3, tmm5, tmm7", options(nostack, nomem));
                    }
                }
                lines.step();
                w = w.add(tile);
            }
        }
    }
}

/// Stores the sums [`block`] left in the accumulator tiles at `sums` (pixel stride `cout8`
/// i32), the tile configuration still the block's.
#[inline(always)]
unsafe fn store<const M2: bool, const N2: bool>(sums: *mut i32, cout8: usize) {
    let stride = 4 * cout8;
    // SAFETY: the caller's; the tiles stored are the configured ones.
    unsafe {
        asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) sums, s = in(reg) stride,
            options(nostack));
        if N2 {
            asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) sums.add(16), s = in(reg) stride,
                options(nostack));
        }
        if M2 {
            let lower = sums.add(16 * cout8);
            asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) lower, s = in(reg) stride,
                options(nostack));
            if N2 {
                asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) lower.add(16),
                    s = in(reg) stride, options(nostack));
            }
        }
    }
}

/// A block whose sums are still in the accumulator tiles: where they go, its shape's key and
/// whether it has a second pixel block and a second lane block.
#[derive(Clone, Copy)]
struct Pending {
    sums: *mut i32,
    key: u64,
    m2: bool,
    n2: bool,
}

impl Pending {
    /// Stores the sums ([`store`]).
    ///
    /// # Safety
    /// As [`store`]: the configuration loaded is still this block's.
    #[inline(always)]
    unsafe fn store(self, cout8: usize) {
        // SAFETY: forwarded.
        unsafe {
            match (self.m2, self.n2) {
                (true, true) => store::<true, true>(self.sums, cout8),
                (true, false) => store::<true, false>(self.sums, cout8),
                (false, true) => store::<false, true>(self.sums, cout8),
                (false, false) => store::<false, false>(self.sums, cout8),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape a block can have gets its own key, never the "none loaded" 0: a shared
    /// key would leave a block running on another block's tile configuration.
    #[test]
    fn shape_keys_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        let halves = |b: usize| [b.min(16), b.saturating_sub(16)];
        for step in (4..=64).step_by(4) {
            for pixels in 1..=32 {
                for lanes in (8..=32).step_by(8) {
                    let key = shape_key(halves(pixels), halves(lanes), step);
                    assert!(key != 0 && seen.insert(key), "{pixels} {lanes} {step}");
                }
            }
        }
    }

    /// The prefetches of a hint, taken step by step, ask for each of its lines once, all of
    /// them within the call's steps, and none past it.
    #[test]
    fn lines_cover_the_hint_in_the_steps() {
        for (at, len) in [
            (0, 0),
            (64, 64),
            (100, 1),
            (4096 + 8, 32768),
            (63, 2),
            (128, 200),
        ] {
            for steps in [1, 7, 72, 288, 1000] {
                let mut l = Lines::new(Hint { at, len }, steps);
                let mut got = Vec::new();
                for _ in 0..steps {
                    got.extend(l.take().step_by(64));
                }
                assert!(l.take().is_empty(), "{at} {len} {steps}");
                let want: Vec<usize> = (at & !63..at + len).step_by(64).collect();
                assert_eq!(got, want, "{at} {len} {steps}");
            }
        }
    }

    #[test]
    fn steps_divide_the_kernel_row() {
        for cs in (4..=512).step_by(4) {
            let s = step_of(cs);
            assert!(
                s.is_multiple_of(4) && s <= 64 && (3 * cs).is_multiple_of(s),
                "{cs}: {s}"
            );
        }
        assert_eq!(
            [step_of(64), step_of(32), step_of(44), step_of(4)],
            [64, 48, 44, 12]
        );
    }
}
