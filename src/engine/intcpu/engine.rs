//! One integer conv layer on the CPU with the SIMD kernels: quantize the input into a padded
//! code map, compute the sums row by row in parallel, apply the reference epilogue.

use rayon::prelude::*;

use super::{Codes, CpuLevel, PackedConv, row_sums, row_sums_wino4};
use crate::engine::conv::FeatureMap;
use crate::engine::intconv::ActQuant;
use crate::engine::intnet::IntConv;

/// `IntConv::forward` (same values, bit for bit) with the kernels of `level`.
pub fn conv_forward(
    level: CpuLevel,
    ic: &IntConv,
    pc: &PackedConv,
    x: &FeatureMap,
    a: ActQuant,
) -> FeatureMap {
    let mut out = FeatureMap::default();
    conv_forward_into(level, ic, pc, x, a, &mut CodeBuffer::default(), &mut out);
    out
}

/// A layer input's padded code map, kept between calls: its zero border and padding channels
/// stay as long as its shape does.
#[derive(Default)]
pub struct CodeBuffer {
    data: super::Aligned<u8>,
    /// Its pixels' code sums ([`super::pixel_sums`], for convs with 8-bit weights).
    sums: Vec<i32>,
    /// `(h, w, cstride)` of the map `data` holds.
    shape: (usize, usize, usize),
}

thread_local! {
    /// A row's sums (a worker thread's own).
    static SUMS: std::cell::RefCell<super::Aligned<i32>> =
        const { std::cell::RefCell::new(super::Aligned::new()) };
    /// Transformed tiles of the F(4x4, 3x3) path (a worker thread's own).
    static TILES4: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`conv_forward`] into `out` (made `x.h x x.w x ic.cout` in its own memory), the input's
/// codes in `codes` (re-zeroed only when the map's shape changes).
pub fn conv_forward_into(
    level: CpuLevel,
    ic: &IntConv,
    pc: &PackedConv,
    x: &FeatureMap,
    a: ActQuant,
    codes: &mut CodeBuffer,
    out: &mut FeatureMap,
) {
    assert_eq!(x.c, ic.cin, "conv input channels");
    let (h, w, cs) = (x.h, x.w, pc.cstride);
    let wp = w + 2;
    if codes.shape != (h, w, cs) {
        codes.shape = (h, w, cs);
        codes.data.zeroed((h + 2) * wp * cs);
    }
    quantize_into(x, a, cs, &mut codes.data);
    let map = Codes {
        data: &codes.data,
        h,
        w,
        cstride: cs,
        sums: None,
        defer_offset: false,
    }
    .with_sums_for(pc, &mut codes.sums);
    let max_code = a.n as u32;
    let da = a.step();
    let cout = ic.cout;
    // Every interior pixel is written; the border stays zero.
    out.reshape(h, w, cout);
    // F(4x4, 3x3) on i16 at the levels that have it, in the `ADABM_WINOGRAD` mode `tiles`
    // (the default), for every conv that fits it: four rows per task, 32-pixel chunks; else
    // the direct kernels, a row per task.
    let four = super::wino4_for(level, pc);
    let rows = if four { 4 } else { 1 };
    let plane = w * pc.cout8;
    out.data[wp * cout..(h + 1) * wp * cout]
        .par_chunks_mut(rows * wp * cout)
        .enumerate()
        .for_each(|(i, chunk)| {
            let y0 = rows * i;
            SUMS.with_borrow_mut(|sums| {
                sums.resize(rows * plane);
                if four {
                    TILES4.with_borrow_mut(|tiles| {
                        for x0 in (0..w).step_by(32) {
                            let cols = x0..(x0 + 32).min(w);
                            row_sums_wino4(level, &map, pc, y0, cols, tiles, sums);
                        }
                    });
                } else {
                    row_sums(level, &map, pc, y0, max_code, 0..w, sums);
                }
                for r in 0..rows.min(h - y0) {
                    for xx in 0..w {
                        let s = &sums[r * plane + xx * pc.cout8..][..cout];
                        let dst = &mut chunk[r * wp * cout + (xx + 1) * cout..][..cout];
                        ic.values(s, ic.ktab_at(y0 + r, xx, h, w), da, a.l, dst);
                    }
                }
            })
        });
}

/// Codes of the interior of `x` into a zero-bordered `(h + 2) x (w + 2)` map of `cs ≥ x.c`
/// codes per pixel (channels beyond `x.c` stay 0), rows in parallel.
pub fn quantize_into(x: &FeatureMap, a: ActQuant, cs: usize, codes: &mut [u8]) {
    let wp = x.w + 2;
    assert!(
        cs >= x.c && codes.len() == (x.h + 2) * wp * cs,
        "code map size"
    );
    codes[wp * cs..(x.h + 1) * wp * cs]
        .par_chunks_mut(wp * cs)
        .enumerate()
        .for_each(|(y, row)| {
            for (xx, v) in x.row(y).chunks_exact(x.c).enumerate() {
                for (q, &v) in row[(xx + 1) * cs..][..x.c].iter_mut().zip(v) {
                    *q = a.code(v);
                }
            }
        });
}
