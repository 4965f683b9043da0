//! Overlapping tiles with bounded memory.
//!
//! A tile is a core rectangle of the LR frame plus a halo of the network's receptive-field
//! radius on every side (clipped at the frame border). The network runs on the extended
//! rectangle with zero padding at its edge; only the core's HR output is kept, with the
//! one-pixel HR ring around it that chroma filtering reads. Since every core and ring output
//! depends only on inputs within the halo, tiled and untiled outputs agree up to
//! floating-point summation order.

use super::conv::FeatureMap;
use super::edsr::Network;
use super::frame::{Rect, Window};
use super::model::Role;

/// One tile: core `(x, y, w, h)` and extended region `(ex, ey, ew, eh)`, in LR pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
    pub ex: usize,
    pub ey: usize,
    pub ew: usize,
    pub eh: usize,
}

impl Tile {
    /// The core in HR pixels at scale `s`.
    pub fn hr_core(&self, s: usize) -> Rect {
        Rect {
            x0: self.x * s,
            y0: self.y * s,
            x1: (self.x + self.w) * s,
            y1: (self.y + self.h) * s,
        }
    }

    /// Converts the pixels `r` (HR, within the extended region) of this tile's HR output `hr`
    /// (model units, before `add_mean`) to RGB in 0–255, `(v + add[c]) · mul`, in place, rows
    /// in parallel on the current rayon pool, and returns the window of `hr` they are in.
    pub fn to_pixels<'a>(
        &self,
        hr: &'a mut FeatureMap,
        s: usize,
        r: Rect,
        add: [f32; 3],
        mul: f32,
    ) -> Window<'a, f32> {
        use rayon::prelude::*;
        let (ox, oy) = (self.ex * s, self.ey * s);
        let (wp, w, h) = (hr.wp(), hr.w, hr.h);
        debug_assert!((w, h, hr.c) == (self.ew * s, self.eh * s, 3));
        let start = hr.idx(0, 0);
        hr.data[start..]
            .par_chunks_mut(wp * 3)
            .skip(r.y0 - oy)
            .take(r.y1 - r.y0)
            .with_min_len(super::frame::ROWS_PER_TASK)
            .for_each(|row| {
                for v in row[3 * (r.x0 - ox)..3 * (r.x1 - ox)].chunks_exact_mut(3) {
                    for c in 0..3 {
                        v[c] = (v[c] + add[c]) * mul;
                    }
                }
            });
        Window {
            data: &hr.data[start..],
            x0: ox,
            y0: oy,
            width: w,
            height: h,
            stride: wp * 3,
        }
    }
}

/// Estimated peak working memory, in bytes, of running the network on an `ew x eh` region:
/// the LR feature maps alive at once (input, head, residual, two temporaries and a quantized
/// copy), the upsampled maps and their quantized copies, and the upsampler's row buffer.
pub fn estimate_bytes(net: &Network, ew: usize, eh: usize) -> usize {
    let f = net.config.n_feats;
    let lr = (ew + 2) * (eh + 2);
    let mut maps = 6 * lr;
    for l in &net.layers {
        if let Role::Up { stage, r } = l.spec.role {
            let before = if stage == 0 { 1 } else { 4 };
            maps += 2 * lr * before * r * r;
        }
    }
    4 * f * maps + 4 * (1 << 21)
}

/// [`estimate_bytes`] for the fused integer engine (`intcpu::FusedNet`): u8 code maps (input,
/// two LR maps, each upsampled map), the f32 head and residual maps at LR, the f32 output.
pub fn estimate_bytes_fused(net: &Network, ew: usize, eh: usize) -> usize {
    let f = net.config.n_feats;
    let lr = (ew + 2) * (eh + 2);
    let mut bytes = 4 * lr + 2 * f * lr + 2 * 4 * f * lr;
    let mut s = 1;
    for l in &net.layers {
        if let Role::Up { r, .. } = l.spec.role {
            s *= r;
            bytes += f * lr * s * s;
        }
    }
    bytes + 3 * 4 * lr * s * s + 4 * (1 << 21)
}

/// Splits a `w x h` frame into tiles. `tile` = 0 picks the largest square tiles whose working
/// memory (by `estimate`: [`estimate_bytes`] or [`estimate_bytes_fused`]) fits `budget` (one
/// tile when the whole frame fits).
pub fn plan(
    net: &Network,
    w: usize,
    h: usize,
    tile: usize,
    budget: usize,
    estimate: fn(&Network, usize, usize) -> usize,
) -> Vec<Tile> {
    let halo = net.halo();
    let core = if tile > 0 {
        tile
    } else if estimate(net, w, h) <= budget {
        w.max(h)
    } else {
        let mut t = w.max(h);
        while t > 16 && estimate(net, (t + 2 * halo).min(w), (t + 2 * halo).min(h)) > budget {
            t = t * 7 / 8;
        }
        t
    };
    let split = |n: usize| {
        let k = n.div_ceil(core.min(n));
        (0..k).map(move |i| (i * n / k, (i + 1) * n / k))
    };
    let mut tiles = Vec::new();
    for (y0, y1) in split(h) {
        for (x0, x1) in split(w) {
            let ex = x0.saturating_sub(halo);
            let ey = y0.saturating_sub(halo);
            tiles.push(Tile {
                x: x0,
                y: y0,
                w: x1 - x0,
                h: y1 - y0,
                ex,
                ey,
                ew: (x1 + halo).min(w) - ex,
                eh: (y1 + halo).min(h) - ey,
            });
        }
    }
    tiles
}
