//! Overlapping tiles with bounded memory.
//!
//! A tile is a core rectangle of the LR frame plus a halo of the network's receptive-field
//! radius on every side (clipped at the frame border). The network runs on the extended
//! rectangle with zero padding at its edge; only the core's HR output is kept. Since every
//! core output depends only on inputs within the halo, tiled and untiled outputs agree up to
//! floating-point summation order.

use super::conv::FeatureMap;
use super::edsr::Network;
use super::frame::Image;
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
    /// Copies the core part of the tile's HR output into `out` as `(v + add[c]) · mul`
    /// (channel `c` of RGB), rows in parallel on the current rayon pool.
    pub fn paste(&self, hr: &FeatureMap, s: usize, add: [f32; 3], mul: f32, out: &mut Image) {
        use rayon::prelude::*;
        let (ox, oy) = ((self.x - self.ex) * s, (self.y - self.ey) * s);
        let row = out.width * 3;
        out.data
            .par_chunks_mut(row)
            .skip(self.y * s)
            .take(self.h * s)
            .enumerate()
            .with_min_len(super::frame::ROWS_PER_TASK)
            .for_each(|(y, dst)| {
                let src = &hr.row(oy + y)[ox * 3..(ox + self.w * s) * 3];
                let dst = &mut dst[self.x * s * 3..][..src.len()];
                for (d, v) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                    for c in 0..3 {
                        d[c] = (v[c] + add[c]) * mul;
                    }
                }
            });
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
