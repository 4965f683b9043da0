//! Scalar reference of the conv sums: `S` straight from the i16 weight layout.

use std::ops::Range;

use super::{Codes, PackedConv};

/// See [`super::row_sums`] (before the offset correction).
pub fn row_sums(x: &Codes, pc: &PackedConv, y: usize, cols: Range<usize>, out: &mut [i32]) {
    let wp = x.w + 2;
    let c2 = pc.cstride / 2;
    for xx in cols {
        let acc = &mut out[xx * pc.cout8..(xx + 1) * pc.cout8];
        acc.fill(0);
        for t in 0..9 {
            let p = ((y + t / 3) * wp + xx + t % 3) * x.cstride;
            let q = &x.data[p..p + x.cstride];
            for (i, &qi) in q.iter().enumerate() {
                if qi == 0 {
                    continue;
                }
                let row = &pc.w16[(t * c2 + i / 2) * pc.cout8 * 2..][..pc.cout8 * 2];
                for (o, a) in acc.iter_mut().enumerate() {
                    *a += qi as i32 * row[o * 2 + i % 2] as i32;
                }
            }
        }
    }
}
