//! One integer conv layer on the CPU with the SIMD kernels: quantize the input into a padded
//! code map, compute the sums row by row in parallel, apply the reference epilogue.

use rayon::prelude::*;

use super::{Codes, CpuLevel, PackedConv, row_sums};
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
    assert_eq!(x.c, ic.cin, "conv input channels");
    let (h, w, cs) = (x.h, x.w, pc.cstride);
    let wp = w + 2;
    let mut codes = vec![0u8; (h + 2) * wp * cs];
    quantize_into(x, a, cs, &mut codes);
    let map = Codes {
        data: &codes,
        h,
        w,
        cstride: cs,
    };
    let max_code = a.n as u32;
    let da = a.step();
    let cout = ic.cout;
    let mut out = FeatureMap::zeros(h, w, cout);
    out.data[wp * cout..(h + 1) * wp * cout]
        .par_chunks_mut(wp * cout)
        .enumerate()
        .for_each_init(
            || vec![0i32; w * pc.cout8],
            |sums, (y, row)| {
                row_sums(level, &map, pc, y, max_code, 0..w, sums);
                for xx in 0..w {
                    let s = &sums[xx * pc.cout8..][..cout];
                    let dst = &mut row[(xx + 1) * cout..][..cout];
                    ic.values(s, ic.ktab_at(y, xx, h, w), da, a.l, dst);
                }
            },
        );
    out
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
