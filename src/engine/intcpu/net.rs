//! The fully integer network (fq models) on the CPU kernels, with the epilogues fused: each
//! conv writes the next layer's codes directly (and the f32 residual stream where the network
//! needs it), so no f32 feature map is re-read to be quantized. Buffers are kept between
//! frames of the same size. Bit-identical to [`IntNetwork`](crate::engine::intnet::IntNetwork).

use std::cell::RefCell;
use std::sync::Mutex;

use rayon::prelude::*;

use super::engine::quantize_into;
use super::{Codes, CpuLevel, row_sums};
use crate::engine::conv::FeatureMap;
use crate::engine::edsr::BitPlan;
use crate::engine::intconv::ActQuant;
use crate::engine::intnet::{IntConv, IntLayer, IntNetwork};
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

/// The fused integer path of an fq [`IntNetwork`] running on the kernels: what each layer's
/// epilogue does, and the buffers. Convs, packed weights and the SIMD level are the network's.
pub struct FusedNet {
    epis: Vec<Epi>,
    bufs: Mutex<Buffers>,
}

/// Largest conv width the fused path handles (x3 upsampler of 64 features: 576).
const MAX_COUT: usize = 1024;

thread_local! {
    static SUMS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

impl FusedNet {
    /// None unless every layer of `net` is integer (fq) and runs on the kernels.
    pub fn new(net: &IntNetwork) -> Option<Self> {
        let mut epis = Vec::new();
        for (k, l) in net.layers.iter().enumerate() {
            let IntLayer::Int(c) = l else { return None };
            if c.cout > MAX_COUT || net.kernels(k).is_none() {
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
            epis.push(epi);
        }
        Some(Self {
            epis,
            bufs: Mutex::new(Buffers::default()),
        })
    }

    /// `net` (the one this was made from) on an input map in model units; returns the HR
    /// output before `add_mean`.
    pub fn forward(&self, x: &FeatureMap, plan: &BitPlan, net: &IntNetwork) -> FeatureMap {
        let q = |k: usize| net.act_quant(k, plan).expect("fq layers are all quantized");
        let mut guard = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut *guard;
        self.prepare(b, x.h, x.w, net.net.config.n_feats);
        let (h, w) = (x.h, x.w);
        // Input codes (4 channels per pixel, the 4th 0).
        quantize_into(x, q(0), 4, &mut b.input);
        let mut out = FeatureMap::zeros(0, 0, 3);
        let (mut hh, mut ww) = (h, w);
        let mut stage = 0;
        for (k, &epi) in self.epis.iter().enumerate() {
            let next = (k + 1 < self.epis.len()).then(|| q(k + 1));
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
                Epi::Head => self.conv(net, k, input, h, w, q(k), next, head, res, a, None),
                Epi::Relu => self.conv(net, k, a, h, w, q(k), next, head, res, bb, None),
                Epi::Res => self.conv(net, k, bb, h, w, q(k), next, head, res, a, None),
                Epi::Skip => self.conv(net, k, a, h, w, q(k), next, head, res, bb, None),
                Epi::Shuffle(r) => {
                    let (src, dst) = if stage == 0 {
                        (&bb[..], &mut hr[0])
                    } else {
                        let (lo, hi) = hr.split_at_mut(stage);
                        (&lo[stage - 1][..], &mut hi[0])
                    };
                    self.conv(net, k, src, hh, ww, q(k), next, head, res, dst, None);
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
                        net,
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
    fn prepare(&self, b: &mut Buffers, h: usize, w: usize, f: usize) {
        if (b.h, b.w) == (h, w) && !b.a.is_empty() {
            return;
        }
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
        for epi in &self.epis {
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
        net: &IntNetwork,
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
        let IntLayer::Int(ic) = &net.layers[k] else {
            unreachable!("checked in FusedNet::new")
        };
        let (level, pc) = net.kernels(k).expect("checked in FusedNet::new");
        let epi = &self.epis[k];
        let map = Codes {
            data: src,
            h,
            w,
            cstride: pc.cstride,
        };
        let cout = ic.cout;
        let max_code = a.n as u32;
        let da = a.step();
        let rs = net.net.config.res_scale;
        let row_work = |y: usize, row_out: &mut dyn FnMut(usize, &[f32])| {
            SUMS.with(|cell| {
                let mut sums = cell.borrow_mut();
                sums.resize(w * pc.cout8, 0);
                row_sums(level, &map, pc, y, max_code, &mut sums);
                let mut v = [0f32; MAX_COUT];
                for xx in 0..w {
                    let s = &sums[xx * pc.cout8..][..cout];
                    values(
                        level,
                        ic,
                        s,
                        ic.ktab_at(y, xx, h, w),
                        da,
                        a.l,
                        &mut v[..cout],
                    );
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

/// [`IntConv::values`], compiled for AVX2 at that level (same operations, wider registers).
fn values(level: CpuLevel, ic: &IntConv, s: &[i32], k: &[i32], da: f32, l: f32, v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn wide(ic: &IntConv, s: &[i32], k: &[i32], da: f32, l: f32, v: &mut [f32]) {
        ic.values(s, k, da, l, v)
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is selected only on CPUs with AVX2.
        CpuLevel::Avx2 => unsafe { wide(ic, s, k, da, l, v) },
        _ => ic.values(s, k, da, l, v),
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
