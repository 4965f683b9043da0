//! One integer conv layer on the CPU with the SIMD kernels: quantize the input into a padded
//! code map, compute the sums row by row in parallel, apply the reference epilogue.

use rayon::prelude::*;

use super::{Codes, CpuLevel, PackedConv, row_sums};
use crate::engine::conv::FeatureMap;
use crate::engine::intconv::ActQuant;
use crate::engine::intnet::{IntConv, border_class};

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
    codes[wp * cs..(h + 1) * wp * cs]
        .par_chunks_mut(wp * cs)
        .enumerate()
        .for_each(|(y, row)| {
            for (xx, v) in x.row(y).chunks_exact(x.c).enumerate() {
                let d = &mut row[(xx + 1) * cs..][..x.c];
                for (q, &v) in d.iter_mut().zip(v) {
                    *q = a.code(v);
                }
            }
        });
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
                row_sums(level, &map, pc, y, max_code, sums);
                for xx in 0..w {
                    let kt = &ic.ktab[border_class(y, xx, h, w) * cout..][..cout];
                    let s = &sums[xx * pc.cout8..][..cout];
                    let dst = &mut row[(xx + 1) * cout..][..cout];
                    for o in 0..cout {
                        dst[o] = ic.epilogue(o, s[o], kt[o], da, a.l);
                    }
                }
            },
        );
    out
}
