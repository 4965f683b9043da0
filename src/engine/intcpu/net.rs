//! The fully integer network (fq models) on the CPU kernels, with the epilogues fused: each
//! conv writes the next layer's codes directly (and the f32 residual stream where the network
//! needs it), so no f32 feature map is re-read to be quantized. Buffers are kept between
//! frames of the same size. Bit-identical to [`IntNetwork`](crate::engine::intnet::IntNetwork).

use std::cell::RefCell;
use std::sync::Mutex;

use rayon::prelude::*;

use super::{Codes, CpuLevel, PackedConv, row_sums};
use crate::engine::conv::FeatureMap;
use crate::engine::edsr::BitPlan;
use crate::engine::intconv::ActQuant;
use crate::engine::intnet::{IntConv, IntLayer, IntNetwork, border_class};
use crate::engine::model::Role;

/// What a conv's epilogue does with its values `v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Epi {
    /// Head: `head = res = v`, codes of `v`.
    Head,
    /// Block conv1: codes of `max(v, 0)`.
    Relu,
    /// Block conv2: `res = res + res_scale·v`, codes of `res`.
    Res,
    /// Last body conv: codes of `v + head`.
    Skip,
    /// Upsampler: codes of `v` at the PixelShuffle(r) positions.
    Shuffle(usize),
    /// Tail: `v` into the output map.
    Out,
}

/// Per-frame-size buffers.
#[derive(Default)]
struct Buffers {
    h: usize,
    w: usize,
    input: Vec<u8>,
    a: Vec<u8>,
    b: Vec<u8>,
    head: Vec<f32>,
    res: Vec<f32>,
    hr: Vec<Vec<u8>>,
}

/// An fq network ready for the fused integer path.
pub struct FusedNet {
    layers: Vec<(IntConv, PackedConv, Epi)>,
    res_scale: f32,
    feats: usize,
    level: CpuLevel,
    bufs: Mutex<Buffers>,
}

/// Largest conv width the fused path handles (x3 upsampler of 64 features: 576).
const MAX_COUT: usize = 1024;

thread_local! {
    static SUMS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

impl FusedNet {
    /// None unless every layer of `net` is integer (fq).
    pub fn new(net: &IntNetwork, level: CpuLevel) -> Option<Self> {
        let mut layers = Vec::new();
        for (k, l) in net.layers.iter().enumerate() {
            let IntLayer::Int(c) = l else { return None };
            if c.cout > MAX_COUT {
                return None;
            }
            let epi = match net.net.layers[k].spec.role {
                Role::Head => Epi::Head,
                Role::BlockConv1(_) => Epi::Relu,
                Role::BlockConv2(_) => Epi::Res,
                Role::BodyLast => Epi::Skip,
                Role::Up { r, .. } => Epi::Shuffle(r),
                Role::Tail => Epi::Out,
            };
            layers.push((c.clone(), PackedConv::new(c), epi));
        }
        Some(Self {
            layers,
            res_scale: net.net.config.res_scale,
            feats: net.net.config.n_feats,
            level,
            bufs: Mutex::new(Buffers::default()),
        })
    }

    /// The network on an input map in model units; returns the HR output before `add_mean`.
    /// `quant(k)` is layer k's input quantizer under the frame's bit plan.
    pub fn forward(&self, x: &FeatureMap, plan: &BitPlan, net: &IntNetwork) -> FeatureMap {
        let q = |k: usize| net.act_quant(k, plan).expect("fq layers are all quantized");
        let mut guard = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut *guard;
        self.prepare(b, x.h, x.w);
        let (h, w) = (x.h, x.w);
        // Input codes (4 channels per pixel, the 4th 0).
        let a0 = q(0);
        b.input
            .par_chunks_mut((w + 2) * 4)
            .skip(1)
            .take(h)
            .enumerate()
            .for_each(|(y, row)| {
                for (xx, v) in x.row(y).chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        row[(xx + 1) * 4 + c] = a0.code(v[c]);
                    }
                }
            });
        let mut out = FeatureMap::zeros(0, 0, 3);
        let (mut hh, mut ww) = (h, w);
        let mut stage = 0;
        for k in 0..self.layers.len() {
            let epi = self.layers[k].2;
            let next = (k + 1 < self.layers.len()).then(|| q(k + 1));
            let Buffers {
                input,
                a,
                b: bb,
                head,
                res,
                hr,
                ..
            } = &mut *b;
            match epi {
                Epi::Head => self.conv(k, input, h, w, q(k), next, head, res, a, None),
                Epi::Relu => self.conv(k, a, h, w, q(k), next, head, res, bb, None),
                Epi::Res => self.conv(k, bb, h, w, q(k), next, head, res, a, None),
                Epi::Skip => self.conv(k, a, h, w, q(k), next, head, res, bb, None),
                Epi::Shuffle(r) => {
                    let (src, dst) = if stage == 0 {
                        (&bb[..], &mut hr[0])
                    } else {
                        let (lo, hi) = hr.split_at_mut(stage);
                        (&lo[stage - 1][..], &mut hi[0])
                    };
                    self.conv(k, src, hh, ww, q(k), next, head, res, dst, None);
                    hh *= r;
                    ww *= r;
                    stage += 1;
                }
                Epi::Out => {
                    out = FeatureMap::zeros(hh, ww, 3);
                    let src = if stage == 0 {
                        &bb[..]
                    } else {
                        &hr[stage - 1][..]
                    };
                    self.conv(
                        k,
                        src,
                        hh,
                        ww,
                        q(k),
                        None,
                        head,
                        res,
                        &mut [],
                        Some(&mut out),
                    );
                }
            }
        }
        out
    }

    /// Sizes the buffers for an `h x w` input (kept when the size repeats).
    fn prepare(&self, b: &mut Buffers, h: usize, w: usize) {
        if (b.h, b.w) == (h, w) && !b.a.is_empty() {
            return;
        }
        let f = self.feats;
        let lr = (h + 2) * (w + 2);
        b.h = h;
        b.w = w;
        b.input = vec![0; lr * 4];
        b.a = vec![0; lr * f];
        b.b = vec![0; lr * f];
        b.head = vec![0.0; h * w * f];
        b.res = vec![0.0; h * w * f];
        b.hr.clear();
        let mut s = 1;
        for (_, _, epi) in &self.layers {
            if let Epi::Shuffle(r) = epi {
                s *= r;
                b.hr.push(vec![0; (h * s + 2) * (w * s + 2) * f]);
            }
        }
    }

    /// Layer `k` on the `h x w` code map `src`, its epilogue writing into `dst` (codes),
    /// `head`/`res` (f32) or `out`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        k: usize,
        src: &[u8],
        h: usize,
        w: usize,
        a: ActQuant,
        next: Option<ActQuant>,
        head: &mut [f32],
        res: &mut [f32],
        dst: &mut [u8],
        out: Option<&mut FeatureMap>,
    ) {
        let (ic, pc, epi) = &self.layers[k];
        let map = Codes {
            data: src,
            h,
            w,
            cstride: pc.cstride,
        };
        let cout = ic.cout;
        let level = self.level;
        let max_code = a.n as u32;
        let da = a.step();
        let rs = self.res_scale;
        let row_work = |y: usize, row_out: &mut dyn FnMut(usize, &[f32])| {
            SUMS.with(|cell| {
                let mut sums = cell.borrow_mut();
                sums.resize(w * pc.cout8, 0);
                row_sums(level, &map, pc, y, max_code, &mut sums);
                let mut v = [0f32; MAX_COUT];
                for xx in 0..w {
                    let kt = &ic.ktab[border_class(y, xx, h, w) * cout..][..cout];
                    let s = &sums[xx * pc.cout8..][..cout];
                    values(level, ic, s, kt, da, a.l, &mut v[..cout]);
                    row_out(xx, &v[..cout]);
                }
            })
        };
        let wp = w + 2;
        match *epi {
            Epi::Out => {
                let out = out.expect("output map");
                let owp = out.wp();
                out.data[owp * cout..(h + 1) * owp * cout]
                    .par_chunks_mut(owp * cout)
                    .enumerate()
                    .for_each(|(y, row)| {
                        row_work(y, &mut |xx, v| {
                            row[(xx + 1) * cout..][..cout].copy_from_slice(v)
                        })
                    });
            }
            Epi::Shuffle(r) => {
                let n = next.expect("a layer after the upsampler");
                let c = cout / (r * r);
                let hwp = w * r + 2;
                dst[hwp * c..(h * r + 1) * hwp * c]
                    .par_chunks_mut(r * hwp * c)
                    .enumerate()
                    .for_each(|(y, rows)| {
                        row_work(y, &mut |xx, v| {
                            for (ch, vs) in v.chunks_exact(r * r).enumerate() {
                                for i in 0..r {
                                    for j in 0..r {
                                        rows[(i * hwp + xx * r + j + 1) * c + ch] =
                                            n.code(vs[i * r + j]);
                                    }
                                }
                            }
                        })
                    });
            }
            Epi::Head | Epi::Relu | Epi::Res | Epi::Skip => {
                let n = next.expect("a layer after the body");
                let fw = w * cout;
                dst[wp * cout..(h + 1) * wp * cout]
                    .par_chunks_mut(wp * cout)
                    .zip(res.par_chunks_mut(fw))
                    .zip(head.par_chunks_mut(fw))
                    .enumerate()
                    .for_each(|(y, ((row, res), head))| {
                        row_work(y, &mut |xx, v| {
                            let d = &mut row[(xx + 1) * cout..][..cout];
                            let r = &mut res[xx * cout..][..cout];
                            let hd = &mut head[xx * cout..][..cout];
                            codes(level, *epi, v, r, hd, rs, n, d);
                        })
                    });
            }
        }
    }
}

/// `v = bias + h_w·(Δa·S + l·K)` for one pixel's output channels.
fn values(level: CpuLevel, ic: &IntConv, s: &[i32], k: &[i32], da: f32, l: f32, v: &mut [f32]) {
    #[inline(always)]
    fn plain(bias: &[f32], hw: f32, s: &[i32], k: &[i32], da: f32, l: f32, v: &mut [f32]) {
        for o in 0..v.len() {
            v[o] = bias[o] + hw * (da * s[o] as f32 + l * k[o] as f32);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn wide(bias: &[f32], hw: f32, s: &[i32], k: &[i32], da: f32, l: f32, v: &mut [f32]) {
        plain(bias, hw, s, k, da, l, v)
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is selected only on CPUs with AVX2.
        CpuLevel::Avx2 => unsafe { wide(&ic.bias, ic.hw, s, k, da, l, v) },
        _ => plain(&ic.bias, ic.hw, s, k, da, l, v),
    }
}

/// The body epilogues of one pixel: update `res`/`head` and write the next layer's codes.
#[allow(clippy::too_many_arguments)]
fn codes(
    level: CpuLevel,
    epi: Epi,
    v: &[f32],
    res: &mut [f32],
    head: &mut [f32],
    rs: f32,
    n: ActQuant,
    d: &mut [u8],
) {
    #[inline(always)]
    fn plain(
        epi: Epi,
        v: &[f32],
        res: &mut [f32],
        head: &mut [f32],
        rs: f32,
        n: ActQuant,
        d: &mut [u8],
    ) {
        let (l, u, s) = (n.l, n.u, n.inv_step());
        let code = |x: f32| ((x.clamp(l, u) - l) * s).round_ties_even() as u8;
        match epi {
            Epi::Head => {
                for o in 0..v.len() {
                    head[o] = v[o];
                    res[o] = v[o];
                    d[o] = code(v[o]);
                }
            }
            Epi::Relu => {
                for o in 0..v.len() {
                    d[o] = code(v[o].max(0.0));
                }
            }
            Epi::Res => {
                for o in 0..v.len() {
                    res[o] += rs * v[o];
                    d[o] = code(res[o]);
                }
            }
            Epi::Skip => {
                for o in 0..v.len() {
                    d[o] = code(v[o] + head[o]);
                }
            }
            Epi::Shuffle(_) | Epi::Out => unreachable!("not a body epilogue"),
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn wide(
        epi: Epi,
        v: &[f32],
        res: &mut [f32],
        head: &mut [f32],
        rs: f32,
        n: ActQuant,
        d: &mut [u8],
    ) {
        plain(epi, v, res, head, rs, n, d)
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is selected only on CPUs with AVX2.
        CpuLevel::Avx2 => unsafe { wide(epi, v, res, head, rs, n, d) },
        _ => plain(epi, v, res, head, rs, n, d),
    }
}
