//! 64-bit ARM kernel of the conv sums: `sdot` (the ARMv8.2 dot-product extension, `dotprod`:
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
        row: (x.w + 2) * x.cstride,
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

/// One conv's pointers and strides for the blocks of [`row_sums_sdot`].
struct Kernel {
    data: *const u8,
    w8: *const i8,
    wsum: *const i32,
    /// Bytes per padded row of the code map.
    row: usize,
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
            for t in 0..9 {
                let toff = (t / 3) * self.row + (t % 3) * cs;
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
