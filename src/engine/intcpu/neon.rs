//! 64-bit ARM kernels of the conv sums, on `sdot` and on `usmmla`.
//!
//! [`row_sums_sdot`]: `sdot` (the ARMv8.2 dot-product extension, `dotprod`:
//! four i8·i8 products summed into each i32 lane) on the weight layout `w8` the VNNI kernels
//! read (`[tap 9][cstride/4][cout8][4]` i8), so one 16-byte load holds 4 output channels × 4
//! input channels and `sdot` by element multiplies it with one 4-channel group of a pixel's
//! codes.
//!
//! Codes are u8 and `sdot` is signed: codes up to 127 are read as they are; wider ones (8-bit
//! activations) are read as `q − 128` (`eor` with 0x80) and each output gets `128 · Σ w` back
//! (the sum of its weights over taps and channels, [`PackedConv::wsum`]) — exact, since
//! `Σ (q − 128)·w + 128·Σ w = Σ q·w` for every tap, the zero border included. Every product
//! fits (|(q − 128)·w| ≤ 128²) and so do the sums (≤ 9·1024·128² < 2^31 for the channel strides
//! the engine checks).
//!
//! Register blocking: 4 pixels × 16 output channels (16 accumulators), per tap and 16 input
//! channels 4 code loads, 16 weight loads, 64 `sdot`; output blocks of 8 channels for convs
//! whose lanes are not a multiple of 16 (the tail's 8), pixels one by one at the row's end,
//! 4-channel groups one by one at the channel tail. `sdot` is written as inline assembly: its
//! intrinsics (`vdotq_laneq_s32`) are not stable in Rust yet.
//!
//! [`row_sums_mmla`]: `usmmla` (the 8-bit matrix multiply, `i8mm`: Neoverse V1/V2/N2, Graviton
//! 3 and 4, Cortex-A710 and later, Apple M2 and later) multiplies a 2x8 u8 matrix by the
//! transpose of a 2x8 i8 one into the 2x2 i32 block of 4 lanes: 32 products an instruction
//! where `sdot` makes 16. Pixel pairs' codes are the left operand as they are (unsigned: no
//! correction), output-channel pairs' weights the right one ([`PackedConv::wmm`]). As
//! inline assembly too (`vusmmlaq_s32` is not stable either).

use std::arch::aarch64::*;
use std::arch::asm;
use std::ops::Range;

use super::{Codes, PackedConv};

/// `acc.s[i] += Σ_{j<4} w.b[4i + j] · q.b[4l + j]` (`sdot` by element, lane `l` of `q`).
macro_rules! sdot {
    ($acc:expr, $w:expr, $q:expr, $l:literal) => {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {q:v}.4b[{l}]",
            acc = inout(vreg) $acc,
            w = in(vreg) $w,
            q = in(vreg) $q,
            l = const $l,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
}

/// See [`super::row_sums`] (before the offset correction of 8-bit weights). `flip`: codes may
/// exceed 127 (read as `q − 128`, corrected by `128 · Σ w`).
///
/// # Safety
/// The CPU must have NEON and `dotprod`; `x` is `pc`'s input map, `y` and `cols` inside it,
/// `out` holds `x.w · pc.cout8` sums (the caller, [`super::row_sums`], checks the shapes).
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn row_sums_sdot(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    flip: bool,
    cols: Range<usize>,
    out: &mut [i32],
) {
    let k = Kernel {
        data: x.data.as_ptr(),
        w8: pc.w8.as_ptr(),
        wsum: pc.wsum.as_ptr(),
        taps: tap_offsets(x),
        cs: x.cstride,
        cout8: pc.cout8,
        flip,
    };
    let out = out.as_mut_ptr();
    let base = |xx: usize| (y * (x.w + 2) + xx) * x.cstride;
    let mut xx = cols.start;
    // SAFETY (every block): pixels `xx ..` of row `y` and their 3x3 windows lie inside the
    // padded map, their sums inside `out` (checked by the caller); the blocks read and write
    // nothing else.
    unsafe {
        while xx + 4 <= cols.end {
            let pix = [0, 1, 2, 3].map(|j| base(xx + j));
            k.pixels::<4>(pix, out.add(xx * k.cout8));
            xx += 4;
        }
        while xx < cols.end {
            k.pixels::<1>([base(xx)], out.add(xx * k.cout8));
            xx += 1;
        }
    }
}

/// The byte offsets of a 3x3 window's codes in the padded map `x` from its top-left ones, tap
/// by tap (a table both kernels read: computing them per tap took a tenth of the `usmmla`
/// kernel's instructions).
fn tap_offsets(x: &Codes) -> [usize; 9] {
    std::array::from_fn(|t| ((t / 3) * (x.w + 2) + t % 3) * x.cstride)
}

/// One conv's pointers and strides for the blocks of [`row_sums_sdot`].
struct Kernel {
    data: *const u8,
    w8: *const i8,
    wsum: *const i32,
    /// [`tap_offsets`].
    taps: [usize; 9],
    cs: usize,
    cout8: usize,
    flip: bool,
}

impl Kernel {
    /// Every output channel of `NP` pixels (`pix`: byte offsets of their windows' top-left
    /// codes) into `out` (`cout8` sums a pixel).
    #[inline(always)]
    unsafe fn pixels<const NP: usize>(&self, pix: [usize; NP], out: *mut i32) {
        let mut o0 = 0;
        // SAFETY: see `row_sums_sdot`; output blocks `o0 .. o0 + 16` / `+ 8` lie inside
        // `cout8` (a multiple of 8).
        unsafe {
            while o0 + 16 <= self.cout8 {
                self.block::<NP, 4>(pix, o0, out);
                o0 += 16;
            }
            if o0 < self.cout8 {
                self.block::<NP, 2>(pix, o0, out);
            }
        }
    }

    /// Output channels `o0 .. o0 + 4·NO` of `NP` pixels.
    // The accumulators are indexed by pixel and output block at once (`acc[j][i]`): plain
    // index loops, fully unrolled, keep them in registers.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn block<const NP: usize, const NO: usize>(
        &self,
        pix: [usize; NP],
        o0: usize,
        out: *mut i32,
    ) {
        let (cs, cout8) = (self.cs, self.cout8);
        let groups = cs / 4;
        // SAFETY (the whole body): every code load reads 16 (or 4) bytes of one pixel's
        // `cs` codes, every weight load 16 bytes of tap `t`, group `g`, lanes `o0 + 4i ..`
        // inside `w8` (`9 · cs · cout8` bytes), every store 4 lanes inside the pixel's sums.
        unsafe {
            let zero = vdupq_n_s32(0);
            let mut acc = [[zero; NO]; NP];
            let x80 = vdupq_n_u8(0x80);
            let codes =
                |v: uint8x16_t| vreinterpretq_s8_u8(if self.flip { veorq_u8(v, x80) } else { v });
            for (t, &toff) in self.taps.iter().enumerate() {
                // Weights of tap t, group g, lanes o0 + 4i ..: 16 bytes.
                let wt = self.w8.add((t * groups * cout8 + o0) * 4);
                let wload = |g: usize, i: usize| vld1q_s8(wt.add((g * cout8 + 4 * i) * 4));
                let mut g = 0;
                while g + 4 <= groups {
                    let q: [int8x16_t; NP] =
                        pix.map(|p| codes(vld1q_u8(self.data.add(p + toff + 4 * g))));
                    macro_rules! lane {
                        ($l:literal) => {
                            for i in 0..NO {
                                let w = wload(g + $l, i);
                                for j in 0..NP {
                                    sdot!(acc[j][i], w, q[j], $l);
                                }
                            }
                        };
                    }
                    lane!(0);
                    lane!(1);
                    lane!(2);
                    lane!(3);
                    g += 4;
                }
                while g < groups {
                    let q: [int8x16_t; NP] = pix.map(|p| {
                        let v = self
                            .data
                            .add(p + toff + 4 * g)
                            .cast::<u32>()
                            .read_unaligned();
                        codes(vreinterpretq_u8_u32(vdupq_n_u32(v)))
                    });
                    for i in 0..NO {
                        let w = wload(g, i);
                        for j in 0..NP {
                            sdot!(acc[j][i], w, q[j], 0);
                        }
                    }
                    g += 1;
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                for (i, &a) in acc.iter().enumerate() {
                    let lanes = o0 + 4 * i;
                    let a = if self.flip {
                        vaddq_s32(a, vshlq_n_s32::<7>(vld1q_s32(self.wsum.add(lanes))))
                    } else {
                        a
                    };
                    vst1q_s32(out.add(j * cout8 + lanes), a);
                }
            }
        }
    }
}

/// `acc += a · bᵀ` for the 2x8 u8 matrix `a` (rows: 2 pixels' 8 input channels) and the 2x8 i8
/// matrix `b` (rows: 2 output channels' weights): `acc = [a0·b0, a0·b1, a1·b0, a1·b1]`
/// (`usmmla`, ARMv8.6 `i8mm`).
macro_rules! usmmla {
    ($acc:expr, $a:expr, $b:expr) => {
        asm!(
            "usmmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) $acc,
            a = in(vreg) $a,
            b = in(vreg) $b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
}

/// See [`super::row_sums`] (before the offset correction of 8-bit weights): the sums by
/// `usmmla` on [`PackedConv::wmm`]. Codes are read as u8 as they are (`usmmla` multiplies
/// unsigned by signed), so no correction is needed; every sum fits i32 (≤ 9·1024·255·128).
///
/// Register blocking: 4 pixels (two pairs, the rows of the left operand) × 16 output channels
/// (eight pairs, the weights' 16-byte rows) in 16 accumulators, each holding a 2x2 block;
/// per tap and 16 input channels 4 code loads (16 bytes a pixel) and 4 `zip`s (the pairs'
/// operands), 16 weight loads, 32 `usmmla` (1024 products, 512 with `sdot` in as many
/// instructions). A last group of 8 input channels from 8-byte loads, one of 4 from 4-byte
/// loads (the weights' padding is 0); blocks of 8 output channels for the tail's 8; pixel
/// pairs and then a last lone pixel (paired with itself) at the row's end.
///
/// # Safety
/// The CPU must have NEON and `i8mm`; `x` is `pc`'s input map, `y` and `cols` inside it,
/// `out` holds `x.w · pc.cout8` sums (the caller, [`super::row_sums`], checks the shapes).
#[target_feature(enable = "neon,i8mm")]
pub unsafe fn row_sums_mmla(
    x: &Codes,
    pc: &PackedConv,
    y: usize,
    cols: Range<usize>,
    out: &mut [i32],
) {
    assert_eq!(
        pc.wmm.len(),
        9 * x.cstride.div_ceil(8) * 8 * pc.cout8,
        "usmmla weights"
    );
    let k = MmKernel {
        data: x.data.as_ptr(),
        wmm: pc.wmm.as_ptr(),
        taps: tap_offsets(x),
        cs: x.cstride,
        cout8: pc.cout8,
    };
    let out = out.as_mut_ptr();
    let base = |xx: usize| (y * (x.w + 2) + xx) * x.cstride;
    let mut xx = cols.start;
    // SAFETY (every block): pixels `xx ..` of row `y` and their 3x3 windows lie inside the
    // padded map, their sums inside `out` (checked by the caller); the blocks read and write
    // nothing else (a lone pixel is read twice and stored once).
    unsafe {
        while xx + 4 <= cols.end {
            let pix = [[base(xx), base(xx + 1)], [base(xx + 2), base(xx + 3)]];
            k.pixels::<2, 4>(pix, out.add(xx * k.cout8));
            xx += 4;
        }
        while xx + 2 <= cols.end {
            k.pixels::<1, 2>([[base(xx), base(xx + 1)]], out.add(xx * k.cout8));
            xx += 2;
        }
        if xx < cols.end {
            k.pixels::<1, 1>([[base(xx); 2]], out.add(xx * k.cout8));
        }
    }
}

/// One conv's pointers and strides for the blocks of [`row_sums_mmla`].
struct MmKernel {
    data: *const u8,
    wmm: *const i8,
    /// [`tap_offsets`].
    taps: [usize; 9],
    cs: usize,
    cout8: usize,
}

impl MmKernel {
    /// Every output channel of `NPP` pairs of pixels (`pix`: byte offsets of their windows'
    /// top-left codes) into `out` (`cout8` sums a pixel); only the first `STORE` pixels' sums
    /// are stored.
    #[inline(always)]
    unsafe fn pixels<const NPP: usize, const STORE: usize>(
        &self,
        pix: [[usize; 2]; NPP],
        out: *mut i32,
    ) {
        let mut o0 = 0;
        // SAFETY: see `row_sums_mmla`; output blocks `o0 .. o0 + 16` / `+ 8` lie inside
        // `cout8` (a multiple of 8).
        unsafe {
            while o0 + 16 <= self.cout8 {
                self.block::<NPP, 8, STORE>(pix, o0, out);
                o0 += 16;
            }
            if o0 < self.cout8 {
                self.block::<NPP, 4, STORE>(pix, o0, out);
            }
        }
    }

    /// Output channels `o0 .. o0 + 2·NO` of `NPP` pixel pairs (`NO` even).
    // The accumulators are indexed by pixel pair and output pair at once (`acc[j][i]`): plain
    // index loops, fully unrolled, keep them in registers.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn block<const NPP: usize, const NO: usize, const STORE: usize>(
        &self,
        pix: [[usize; 2]; NPP],
        o0: usize,
        out: *mut i32,
    ) {
        const { assert!(NO.is_multiple_of(2) && STORE <= 2 * NPP) };
        let (cs, cout8) = (self.cs, self.cout8);
        let (groups, whole) = (cs.div_ceil(8), cs / 8);
        // SAFETY (the whole body): every code load reads 8 (or, in a last group of 4, 4) bytes
        // of one pixel's `cs` codes, every weight load 16 bytes of tap `t`, group `g`, output
        // pair `o0 / 2 + i` inside `wmm` (`9 · groups · 8 · cout8` bytes), every store 4 lanes
        // inside a stored pixel's sums.
        unsafe {
            let zero = vdupq_n_s32(0);
            let mut acc = [[zero; NO]; NPP];
            let pix = pix.map(|p| p.map(|p| self.data.add(p)));
            // The left operand of pixel pair j: 8 codes of each pixel from `off`.
            let pair8 = |j: usize, off: usize| {
                vcombine_u8(vld1_u8(pix[j][0].add(off)), vld1_u8(pix[j][1].add(off)))
            };
            let pair4 = |j: usize, off: usize| {
                let q = |p: *const u8| p.add(off).cast::<u32>().read_unaligned() as u64;
                vcombine_u8(vcreate_u8(q(pix[j][0])), vcreate_u8(q(pix[j][1])))
            };
            for (t, &toff) in self.taps.iter().enumerate() {
                // Weights of tap t, group g, output pair o0 / 2 + i: 16 bytes.
                let wt = self.wmm.add((t * groups * cout8 / 2 + o0 / 2) * 16);
                let wload = |g: usize, i: usize| vld1q_s8(wt.add((g * cout8 / 2 + i) * 16));
                // Group g's products with the left operands `a` of the pixel pairs.
                macro_rules! group {
                    ($a:expr, $g:expr) => {
                        for i in 0..NO {
                            let w = wload($g, i);
                            for j in 0..NPP {
                                usmmla!(acc[j][i], $a[j], w);
                            }
                        }
                    };
                }
                let mut g = 0;
                // Two groups a step: 16 codes a pixel, the pairs' 64-bit halves interleaved.
                while g + 2 <= whole {
                    let a: [[uint8x16_t; 2]; NPP] = std::array::from_fn(|j| {
                        let q = |p: *const u8| vreinterpretq_u64_u8(vld1q_u8(p.add(toff + 8 * g)));
                        let (p0, p1) = (q(pix[j][0]), q(pix[j][1]));
                        [vzip1q_u64(p0, p1), vzip2q_u64(p0, p1)].map(|v| vreinterpretq_u8_u64(v))
                    });
                    group!(a.map(|a| a[0]), g);
                    group!(a.map(|a| a[1]), g + 1);
                    g += 2;
                }
                if g < whole {
                    let a: [uint8x16_t; NPP] = std::array::from_fn(|j| pair8(j, toff + 8 * g));
                    group!(a, g);
                    g += 1;
                }
                if g < groups {
                    let a: [uint8x16_t; NPP] = std::array::from_fn(|j| pair4(j, toff + 8 * g));
                    group!(a, g);
                }
            }
            // acc[j][i] = [p0·o0, p0·o1, p1·o0, p1·o1] of pixel pair j, output pair i: the
            // 64-bit halves of two neighbouring output pairs interleaved give each pixel's 4
            // output channels.
            for j in 0..NPP {
                for i in (0..NO).step_by(2) {
                    let (lo, hi) = (
                        vreinterpretq_s64_s32(acc[j][i]),
                        vreinterpretq_s64_s32(acc[j][i + 1]),
                    );
                    let lanes = o0 + 2 * i;
                    if 2 * j < STORE {
                        let p0 = vreinterpretq_s32_s64(vzip1q_s64(lo, hi));
                        vst1q_s32(out.add(2 * j * cout8 + lanes), p0);
                    }
                    if 2 * j + 1 < STORE {
                        let p1 = vreinterpretq_s32_s64(vzip2q_s64(lo, hi));
                        vst1q_s32(out.add((2 * j + 1) * cout8 + lanes), p1);
                    }
                }
            }
        }
    }
}
