//! AdaBM fine-tuning (method page, "Bit-aware clipping" and "Fine-tuning"): the network weights
//! stay frozen; only the quantizer parameters learn — weight clips `u_w`, activation ranges
//! `l, u`, layer bit factors `m_k` and the image thresholds `l_i2b, u_i2b` — against the same
//! network in floating point as the teacher (no HR image is needed).
//!
//! The quantized forward pass is the fake-quant network of the engine (`engine::edsr`) on a
//! [`Stack`] of crops, each crop with its own image bit `b_I`. The backward pass uses the
//! reference's estimators ([`crate::qgrad`]): straight-through rounding, `tanh(m_k)` for the
//! layer bit and `tanh((c − (u+l)/2)·2/(u − l))` for the image bit, with `N = 2^b − 1` so that
//! bits receive a gradient through the quantizer's step.
//!
//! [`Surrogate`] runs the same forward pass with every rounding replaced by its argument plus
//! the rounding residual frozen at a recorded point, and every hard bit by its soft surrogate
//! shifted to the same value: the function whose exact gradient the estimators compute. The
//! finite-difference tests differentiate it.

use crate::nn::{
    Stack, conv_backward_input, conv_forward, pixel_shuffle, pixel_unshuffle, relu, relu_backward,
};
use crate::qgrad;
use anyhow::{Result, bail};
use gstadabm::engine::complexity;
use gstadabm::engine::conv::{ConvWeights, FeatureMap};
use gstadabm::engine::model::{LayerKind, LayerSpec, Role, layer_kind};
use gstadabm::engine::quant;
use gstadabm::engine::random::Rng;
use gstadabm::engine::{ComplexityMetric, EdsrConfig, Image, LayerQuant, Model, QuantConfig};
use rayon::prelude::*;

/// Which quantizer parameters an epoch trains (the reference rotates them by epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Weight clips `u_w` (epochs 1, 4, 7, 10).
    WeightClip,
    /// Activation ranges `l, u` (epochs 2, 5, 8).
    Range,
    /// Layer bit factors `m_k` and image thresholds (epochs 3, 6, 9); `L_bit` is added.
    Bits,
}

impl Group {
    /// The group of 1-based epoch `e`.
    pub fn of_epoch(e: usize) -> Self {
        match (e.max(1) - 1) % 3 {
            0 => Group::WeightClip,
            1 => Group::Range,
            _ => Group::Bits,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Group::WeightClip => "u_w",
            Group::Range => "l,u",
            Group::Bits => "bits",
        }
    }
}

/// Fine-tuning settings; the defaults are the reference's.
#[derive(Clone, Debug)]
pub struct Settings {
    pub epochs: usize,
    /// Iterations per epoch.
    pub iters: usize,
    pub batch: usize,
    pub lr_w: f32,
    pub lr_a: f32,
    pub lr_m: f32,
    pub lr_i2b: f32,
    /// Each group's learning rate is multiplied by this after each of its epochs.
    pub lr_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub w_pix: f32,
    pub w_skt: f32,
    pub w_bit: f32,
    /// Bit-aware clipping at the first batch.
    pub bac: bool,
    /// Candidate ranges `[l, u]·(1 − step·i)`, i < `bac_steps`.
    pub bac_steps: usize,
    pub bac_step: f32,
    /// Weight of the calibrated range in the final one (the rest is the best candidate).
    pub bac_keep: f32,
    pub seed: u64,
    /// Largest memory (MiB) for keeping the teacher's outputs of every crop (computed once:
    /// its weights are frozen) instead of running the teacher on every batch; 0 = never.
    pub teacher_cache_mb: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            epochs: 10,
            iters: 50,
            batch: 2,
            lr_w: 0.01,
            lr_a: 0.01,
            lr_m: 0.01,
            lr_i2b: 0.1,
            lr_decay: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            w_pix: 1.0,
            w_skt: 10.0,
            w_bit: 50.0,
            bac: true,
            bac_steps: 100,
            bac_step: 0.01,
            bac_keep: 0.5,
            seed: 1,
            teacher_cache_mb: 4096,
        }
    }
}

/// Index of a parameter inside a quantized layer's slot of [`QNet::theta`].
const L: usize = 0;
const U: usize = 1;
const UW: usize = 2;
const M: usize = 3;

/// An AdaBM network whose quantizer parameters are being fine-tuned.
#[derive(Clone, Debug)]
pub struct QNet {
    pub config: EdsrConfig,
    pub specs: Vec<LayerSpec>,
    pub kinds: Vec<LayerKind>,
    /// Frozen floating-point weights, engine layout.
    pub weights: Vec<ConvWeights>,
    pub quant: QuantConfig,
    /// Quantizer parameters: `[l, u, u_w, m]` per quantized layer, then `l_i2b, u_i2b`.
    pub theta: Vec<f32>,
    /// Slot in `theta` (in units of 4) of every quantized layer.
    pub slot: Vec<Option<usize>>,
}

/// A batch of crops as one stacked input map, with each crop's complexity.
#[derive(Clone, Debug)]
pub struct Batch {
    pub x: FeatureMap,
    pub s: Stack,
    pub c: Vec<f32>,
}

/// What one forward pass leaves for the backward pass and the losses.
pub struct Pass {
    pub out: FeatureMap,
    /// Output of every residual block.
    pub blocks: Vec<FeatureMap>,
    /// Input of every quantized layer (of a quantized pass) before quantization.
    inputs: Vec<Option<FeatureMap>>,
    /// Quantized input of every quantized layer.
    quantized: Vec<Option<FeatureMap>>,
    /// Weights used by every layer (fake-quantized for quantized layers).
    wq: Vec<ConvWeights>,
    /// Activation bits of every layer per crop (real-valued under a frozen surrogate).
    pub bits: Vec<Vec<f32>>,
    /// Whether the bits of (layer, crop) sit on the 1..=8 clamp (no bit gradient).
    clamped: Vec<Vec<bool>>,
    /// Hard image bits of the crops.
    pub b_i: Vec<i32>,
}

impl Pass {
    /// Input of quantized layer `k` before quantization (None for float layers and the
    /// teacher).
    pub fn input(&self, k: usize) -> Option<&FeatureMap> {
        self.inputs[k].as_ref()
    }
}

/// Frozen-residual surrogate of the quantized forward pass (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Surrogate {
    frozen: bool,
    act: Vec<Vec<f32>>,
    wt: Vec<Vec<f32>>,
    tanh_m: Vec<f32>,
    tanh_z: Vec<f32>,
}

impl Surrogate {
    /// A surrogate that records the residuals of the next forward pass.
    pub fn record() -> Self {
        Self::default()
    }

    /// Later passes reuse the recorded residuals.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }
}

/// The three losses of one step (already weighted) and the batch's average bits.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Losses {
    pub pix: f64,
    pub skt: f64,
    pub bit: f64,
    pub avg_bits: f64,
}

impl Losses {
    pub fn total(&self) -> f64 {
        self.pix + self.skt + self.bit
    }

    /// Each field divided by `k` (a sum of `k` steps → their mean).
    fn over(&self, k: f64) -> Self {
        Self {
            pix: self.pix / k,
            skt: self.skt / k,
            bit: self.bit / k,
            avg_bits: self.avg_bits / k,
        }
    }
}

/// Loss weights (`L_bit` only counts when `bit` is true).
#[derive(Clone, Copy, Debug)]
pub struct LossWeights {
    pub pix: f32,
    pub skt: f32,
    pub bit: f32,
    pub with_bit: bool,
}

fn crop_of_row(s: &Stack, y: usize) -> Option<usize> {
    let i = y / (s.h + 1);
    (y % (s.h + 1) != s.h).then_some(i)
}

impl QNet {
    pub fn from_model(m: &Model) -> Result<Self> {
        let Some(q) = m.quant.clone() else {
            bail!("fine-tuning needs a calibrated (quantized) model; run adabm-calibrate first")
        };
        let specs: Vec<LayerSpec> = m.convs.iter().map(|c| c.spec.clone()).collect();
        let kinds: Vec<LayerKind> = specs
            .iter()
            .map(|s| layer_kind(Some(q.mode), s.role))
            .collect();
        let mut theta = Vec::new();
        let mut slot = Vec::new();
        for (s, k) in specs.iter().zip(&kinds) {
            if *k == LayerKind::Float {
                slot.push(None);
                continue;
            }
            let Some(lq) = q.layers.get(&s.name) else {
                bail!("quantized layer {} has no quantizer parameters", s.name)
            };
            slot.push(Some(theta.len() / 4));
            theta.extend([lq.l, lq.u, lq.u_w, lq.m]);
        }
        theta.extend([q.image_lower, q.image_upper]);
        Ok(Self {
            config: m.config.clone(),
            weights: m
                .convs
                .iter()
                .map(|c| ConvWeights::from_oihw(c.spec.cin, c.spec.cout, &c.weight, &c.bias))
                .collect(),
            specs,
            kinds,
            quant: q,
            theta,
            slot,
        })
    }

    /// The model file of the current quantizer parameters.
    pub fn to_model(&self, base: &Model) -> Result<Model> {
        let mut q = self.quant.clone();
        for (k, s) in self.specs.iter().enumerate() {
            if let Some(i) = self.slot[k] {
                let p = &self.theta[4 * i..4 * i + 4];
                q.layers.insert(
                    s.name.clone(),
                    LayerQuant {
                        l: p[L],
                        u: p[U],
                        u_w: p[UW],
                        m: p[M],
                    },
                );
            }
        }
        let n = self.theta.len();
        q.image_lower = self.theta[n - 2];
        q.image_upper = self.theta[n - 1];
        Ok(Model::new(
            base.config.clone(),
            Some(q),
            base.convs.clone(),
        )?)
    }

    fn p(&self, k: usize, which: usize) -> f32 {
        self.theta[4 * self.slot[k].expect("quantized layer") + which]
    }

    /// Index in `theta` of parameter `which` (0 l, 1 u, 2 u_w, 3 m) of layer `k`.
    pub fn index(&self, k: usize, which: usize) -> Option<usize> {
        self.slot[k].map(|i| 4 * i + which)
    }

    pub fn img_indices(&self) -> (usize, usize) {
        (self.theta.len() - 2, self.theta.len() - 1)
    }

    /// The adaptive layers (counted in the average bits).
    pub fn adaptive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.kinds.len()).filter(|&k| self.kinds[k] == LayerKind::Adaptive)
    }

    pub fn metric(&self) -> ComplexityMetric {
        self.quant.complexity
    }

    fn w_bits(&self, k: usize) -> u8 {
        match self.kinds[k] {
            LayerKind::Adaptive => self.quant.w_bits,
            _ => 8,
        }
    }

    /// Stacks crops (0–255 RGB, all the same size) into one input map after `sub_mean`.
    pub fn batch(&self, crops: &[&Image]) -> Batch {
        let (w, h) = (crops[0].width, crops[0].height);
        let s = Stack {
            n: crops.len(),
            h,
            w,
        };
        let mut x = s.zeros(3);
        let k = self.config.rgb_range / 255.0;
        let mean = self.config.rgb_mean.map(|m| m * self.config.rgb_range);
        for (i, img) in crops.iter().enumerate() {
            assert_eq!(
                (img.width, img.height),
                (w, h),
                "crops of one batch differ in size"
            );
            for y in 0..h {
                let src = &img.data[y * w * 3..(y + 1) * w * 3];
                for (j, (d, &v)) in x.row_mut(s.row(i, y)).iter_mut().zip(src).enumerate() {
                    *d = v * k - mean[j % 3];
                }
            }
        }
        let c = crops
            .iter()
            .map(|img| complexity::measure(self.metric(), &img.data, img.width, img.height))
            .collect();
        Batch { x, s, c }
    }

    /// Bits of quantized layer `k` for every crop, and whether each is clamped.
    fn layer_bits(
        &self,
        k: usize,
        b_i: &[i32],
        c: &[f32],
        sur: &Surrogate,
    ) -> (Vec<f32>, Vec<bool>) {
        if self.kinds[k] == LayerKind::Fixed8 {
            return (vec![8.0; b_i.len()], vec![true; b_i.len()]);
        }
        let base = self.quant.a_bits as i32;
        let m = self.p(k, M);
        let b_l = quant::layer_bit(m);
        let (il, iu) = self.img_indices();
        let (lo, hi) = (self.theta[il], self.theta[iu]);
        let mut bits = Vec::with_capacity(b_i.len());
        let mut clamped = Vec::with_capacity(b_i.len());
        for (j, &bi) in b_i.iter().enumerate() {
            let hard = base + bi + b_l;
            let clamp = !(1..=8).contains(&hard);
            let mut b = hard.clamp(1, 8) as f32;
            if sur.frozen && !clamp {
                let z = (c[j] - 0.5 * (hi + lo)) * 2.0 / (hi - lo);
                b += (m.tanh() - sur.tanh_m[k]) + (z.tanh() - sur.tanh_z[j]);
            }
            bits.push(b);
            clamped.push(clamp);
        }
        (bits, clamped)
    }

    /// Weights of layer `k` as the forward pass uses them.
    fn layer_weights(&self, k: usize, sur: Option<&mut Surrogate>) -> ConvWeights {
        let w = &self.weights[k];
        if self.slot[k].is_none() {
            return w.clone();
        }
        let uw = self.p(k, UW);
        let n = quant::levels(self.w_bits(k));
        let mut out = w.clone();
        match sur {
            None => out
                .w
                .par_iter_mut()
                .for_each(|v| *v = quant::weight_fake_quant(*v, uw, n)),
            Some(sur) => {
                if !sur.frozen {
                    sur.wt[k] =
                        w.w.iter()
                            .map(|&v| {
                                let t = (v.clamp(-uw, uw) + uw) / (2.0 * uw);
                                (t * n).round_ties_even() - t * n
                            })
                            .collect();
                }
                for (o, (&v, &r)) in out.w.iter_mut().zip(w.w.iter().zip(&sur.wt[k])) {
                    let t = (v.clamp(-uw, uw) + uw) / (2.0 * uw);
                    *o = (t * n + r) / n * 2.0 * uw - uw;
                }
            }
        }
        out
    }

    /// Bit-aware clipping of adaptive layer `k` on its input `x`: the range with the lowest
    /// MSE among `[l, u]·(1 − step·i)` at the layer's own bits `b_base + b_L`, mixed with the
    /// calibrated range.
    pub fn clip_layer(&mut self, k: usize, x: &FeatureMap, s: &Stack, st: &Settings) {
        let (l, u) = (self.p(k, L), self.p(k, U));
        let bits = quant::adaptive_bits(self.quant.a_bits, 0, quant::layer_bit(self.p(k, M)));
        let n = quant::levels(bits);
        let rows: Vec<&[f32]> = (0..x.h)
            .filter(|&y| crop_of_row(s, y).is_some())
            .map(|y| x.row(y))
            .collect();
        let mse: Vec<f64> = (0..st.bac_steps)
            .into_par_iter()
            .map(|i| {
                let f = 1.0 - st.bac_step * i as f32;
                let (li, ui) = (l * f, u * f);
                if ui <= li {
                    return f64::INFINITY;
                }
                range_mse(&rows, li, ui, n)
            })
            .collect();
        let best = (0..mse.len()).fold(0, |b, i| if mse[i] < mse[b] { i } else { b });
        let f = 1.0 - st.bac_step * best as f32;
        let keep = st.bac_keep;
        let i = self.slot[k].expect("adaptive layer");
        self.theta[4 * i + L] = keep * l + (1.0 - keep) * l * f;
        self.theta[4 * i + U] = keep * u + (1.0 - keep) * u * f;
    }

    /// Forward pass of a batch. `quantized = false` runs the floating-point teacher. With
    /// `bac`, each adaptive layer is clipped (bit-aware) on its input before it runs.
    pub fn forward(
        &mut self,
        b: &Batch,
        quantized: bool,
        bac: Option<&Settings>,
        mut sur: Option<&mut Surrogate>,
    ) -> Pass {
        let n = self.specs.len();
        let (il, iu) = self.img_indices();
        let (lo, hi) = (self.theta[il], self.theta[iu]);
        let b_i: Vec<i32> = b.c.iter().map(|&c| quant::image_bit(c, lo, hi)).collect();
        if let Some(s) = sur.as_deref_mut()
            && !s.frozen
        {
            s.act = vec![Vec::new(); n];
            s.wt = vec![Vec::new(); n];
            s.tanh_m = (0..n)
                .map(|k| self.slot[k].map_or(0.0, |_| self.p(k, M).tanh()))
                .collect();
            s.tanh_z =
                b.c.iter()
                    .map(|&c| ((c - 0.5 * (hi + lo)) * 2.0 / (hi - lo)).tanh())
                    .collect();
        }
        let mut pass = Pass {
            out: FeatureMap::zeros(0, 0, 0),
            blocks: Vec::new(),
            inputs: vec![None; n],
            quantized: vec![None; n],
            wq: Vec::with_capacity(n),
            bits: vec![Vec::new(); n],
            clamped: vec![Vec::new(); n],
            b_i,
        };
        for k in 0..n {
            let w = if quantized {
                self.layer_weights(k, sur.as_deref_mut())
            } else {
                self.weights[k].clone()
            };
            pass.wq.push(w);
        }
        let s = b.s;
        let rs = self.config.res_scale;
        let head = self.layer(
            0,
            b.x.clone(),
            &s,
            quantized,
            bac,
            &mut sur,
            &b.c,
            &mut pass,
        );
        let mut res = head.clone();
        let mut k = 1;
        for _ in 0..self.config.n_resblocks {
            let mut t = self.layer(
                k,
                res.clone(),
                &s,
                quantized,
                bac,
                &mut sur,
                &b.c,
                &mut pass,
            );
            relu(&mut t);
            let t2 = self.layer(k + 1, t, &s, quantized, bac, &mut sur, &b.c, &mut pass);
            res.data
                .par_iter_mut()
                .zip(&t2.data)
                .for_each(|(r, v)| *r += rs * v);
            pass.blocks.push(res.clone());
            k += 2;
        }
        let mut z = self.layer(k, res, &s, quantized, bac, &mut sur, &b.c, &mut pass);
        z.data
            .par_iter_mut()
            .zip(&head.data)
            .for_each(|(a, b)| *a += b);
        k += 1;
        let mut st = s;
        while let Role::Up { r, .. } = self.specs[k].role {
            let c = self.layer(k, z, &st, quantized, bac, &mut sur, &b.c, &mut pass);
            z = pixel_shuffle(&c, &st, r);
            st = st.scaled(r);
            k += 1;
        }
        pass.out = self.layer(k, z, &st, quantized, bac, &mut sur, &b.c, &mut pass);
        pass
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &mut self,
        k: usize,
        x: FeatureMap,
        s: &Stack,
        quantized: bool,
        bac: Option<&Settings>,
        sur: &mut Option<&mut Surrogate>,
        c: &[f32],
        pass: &mut Pass,
    ) -> FeatureMap {
        if !quantized || self.slot[k].is_none() {
            // The backward pass reads the inputs of quantized layers only (a float layer's
            // input gradient needs its weights alone); the teacher keeps no tape.
            let y = conv_forward(&x, &pass.wq[k], s);
            pass.bits[k] = vec![0.0; s.n];
            pass.clamped[k] = vec![true; s.n];
            return y;
        }
        if let Some(st) = bac
            && self.kinds[k] == LayerKind::Adaptive
        {
            self.clip_layer(k, &x, s, st);
        }
        let empty = Surrogate::default();
        let (bits, clamped) = self.layer_bits(k, &pass.b_i, c, sur.as_deref().unwrap_or(&empty));
        let ns: Vec<f32> = bits
            .iter()
            .map(|&b| {
                if sur.as_ref().is_some_and(|s| s.frozen) {
                    b.exp2() - 1.0
                } else {
                    quant::levels(b as u8)
                }
            })
            .collect();
        let (l, u) = (self.p(k, L), self.p(k, U));
        let mut xq = s.zeros(x.c);
        let rowlen = x.wp() * x.c;
        let (w, ch) = (x.w, x.c);
        match sur.as_deref_mut() {
            None => {
                xq.data
                    .par_chunks_mut(rowlen)
                    .zip(x.data.par_chunks(rowlen))
                    .enumerate()
                    .skip(1)
                    .take(x.h)
                    .for_each(|(yp, (dst, src))| {
                        if let Some(i) = crop_of_row(s, yp - 1) {
                            let n = ns[i];
                            for (d, &v) in
                                dst[ch..(w + 1) * ch].iter_mut().zip(&src[ch..(w + 1) * ch])
                            {
                                *d = quant::act_fake_quant(v, l, u, n);
                            }
                        }
                    });
            }
            Some(sur) => {
                if !sur.frozen {
                    sur.act[k] = vec![0.0; x.data.len()];
                }
                for y in 0..x.h {
                    let Some(i) = crop_of_row(s, y) else { continue };
                    let n = ns[i];
                    let base = x.idx(y, 0);
                    for j in base..base + w * ch {
                        let t = (x.data[j].clamp(l, u) - l) / (u - l);
                        if !sur.frozen {
                            sur.act[k][j] = (t * n).round_ties_even() - t * n;
                        }
                        xq.data[j] = (t * n + sur.act[k][j]) / n * (u - l) + l;
                    }
                }
            }
        }
        let y = conv_forward(&xq, &pass.wq[k], s);
        pass.bits[k] = bits;
        pass.clamped[k] = clamped;
        pass.inputs[k] = Some(x);
        pass.quantized[k] = Some(xq);
        y
    }

    /// Backward through layer `k` given `dL/d(output)`: adds its quantizer gradients
    /// (`l, u`, `u_w` when `need_dw`, and `dL/dN` per crop into `dn`) and returns
    /// `dL/d(input)` when `need_dx`.
    #[allow(clippy::too_many_arguments)]
    fn back_layer(
        &self,
        k: usize,
        dy: &FeatureMap,
        s: &Stack,
        pass: &Pass,
        need_dx: bool,
        need_dw: bool,
        g: &mut [f64],
        dn: &mut [Vec<f64>],
    ) -> Option<FeatureMap> {
        let Some(slot) = self.slot[k] else {
            return need_dx.then(|| conv_backward_input(dy, &pass.wq[k], s));
        };
        let xq = pass.quantized[k]
            .as_ref()
            .expect("quantized input on the tape");
        let x = pass.inputs[k].as_ref().expect("input on the tape");
        if need_dw {
            // dL/du_w = Σ_i dL/dŵ_i · dŵ_i/du_w = ⟨dY, conv(X̂, D)⟩ with D_i = dŵ_i/du_w:
            // one forward conv instead of the whole weight gradient.
            let uw = self.p(k, UW);
            let m = quant::levels(self.w_bits(k));
            let w = &self.weights[k];
            let dw = ConvWeights {
                cin: w.cin,
                cout: w.cout,
                w: w.w
                    .iter()
                    .map(|&v| qgrad::weight_quant(v, uw, m).1)
                    .collect(),
                bias: vec![0.0; w.cout],
            };
            let t = conv_forward(xq, &dw, s);
            let duw: f64 = t
                .data
                .par_chunks(4096)
                .zip(dy.data.par_chunks(4096))
                .map(|(a, b)| {
                    a.iter()
                        .zip(b)
                        .map(|(&x, &y)| x as f64 * y as f64)
                        .sum::<f64>()
                })
                .collect::<Vec<f64>>()
                .iter()
                .sum();
            g[4 * slot + UW] += duw;
        }
        let dxq = conv_backward_input(dy, &pass.wq[k], s);
        let (l, u) = (self.p(k, L), self.p(k, U));
        let frozen_n: Vec<f32> = pass.bits[k]
            .iter()
            .map(|&b| {
                if b.fract() == 0.0 {
                    quant::levels(b as u8)
                } else {
                    b.exp2() - 1.0
                }
            })
            .collect();
        let (w, ch) = (x.w, x.c);
        let mut dx = need_dx.then(|| s.zeros(ch));
        // Per row: (dl, du, dN) partial sums, summed in row order (deterministic).
        let rowlen = x.wp() * ch;
        let partial: Vec<(usize, f64, f64, f64)> = match dx.as_mut() {
            Some(d) => d
                .data
                .par_chunks_mut(rowlen)
                .enumerate()
                .skip(1)
                .take(x.h)
                .map(|(yp, drow)| row_back(s, yp, x, &dxq, &frozen_n, l, u, w, ch, Some(drow)))
                .collect(),
            None => (1..=x.h)
                .into_par_iter()
                .map(|yp| row_back(s, yp, x, &dxq, &frozen_n, l, u, w, ch, None))
                .collect(),
        };
        for (i, dl, du, dnv) in partial {
            if i == usize::MAX {
                continue;
            }
            g[4 * slot + L] += dl;
            g[4 * slot + U] += du;
            dn[k][i] += dnv;
        }
        dx
    }

    /// Backward pass: quantizer gradients (in `theta`'s layout) given `dL/d(output)` and the
    /// gradients of the block outputs; `dL/dN` per (layer, crop) goes to `dn`.
    pub fn backward(
        &self,
        pass: &Pass,
        s: &Stack,
        dout: &FeatureMap,
        dblocks: &[FeatureMap],
        need_dw: bool,
        dn: &mut [Vec<f64>],
    ) -> Vec<f64> {
        let n = self.specs.len();
        let mut g = vec![0.0f64; self.theta.len()];
        let (ups, stacks) = crate::nn::upsampler_stages(&self.specs, s);
        let st = *stacks.last().expect("stack");
        let mut du = self
            .back_layer(n - 1, dout, &st, pass, true, need_dw, &mut g, dn)
            .expect("dx");
        for (j, &(k, r)) in ups.iter().enumerate().rev() {
            let dc = pixel_unshuffle(&du, &stacks[j], r);
            du = self
                .back_layer(k, &dc, &stacks[j], pass, true, need_dw, &mut g, dn)
                .expect("dx");
        }
        let dz = du;
        let kb = 2 * self.config.n_resblocks + 1;
        let mut dres = self
            .back_layer(kb, &dz, s, pass, true, need_dw, &mut g, dn)
            .expect("dx");
        let rs = self.config.res_scale;
        for blk in (0..self.config.n_resblocks).rev() {
            if let Some(d) = dblocks.get(blk) {
                dres.data
                    .par_iter_mut()
                    .zip(&d.data)
                    .for_each(|(a, b)| *a += b);
            }
            let (k1, k2) = (1 + 2 * blk, 2 + 2 * blk);
            let mut dt2 = dres.clone();
            if rs != 1.0 {
                dt2.data.par_iter_mut().for_each(|v| *v *= rs);
            }
            let mut da = self
                .back_layer(k2, &dt2, s, pass, true, need_dw, &mut g, dn)
                .expect("dx");
            relu_backward(&mut da, pass.inputs[k2].as_ref().expect("tape"));
            let dx = self
                .back_layer(k1, &da, s, pass, true, need_dw, &mut g, dn)
                .expect("dx");
            dres.data
                .par_iter_mut()
                .zip(&dx.data)
                .for_each(|(a, b)| *a += b);
        }
        dres.data
            .par_iter_mut()
            .zip(&dz.data)
            .for_each(|(a, b)| *a += b);
        self.back_layer(0, &dres, s, pass, false, need_dw, &mut g, dn);
        g
    }

    /// Losses of the quantized pass against the teacher and the gradient of their weighted
    /// sum with respect to `theta`.
    pub fn loss_and_grad(
        &self,
        pass: &Pass,
        teacher: &Pass,
        b: &Batch,
        lw: &LossWeights,
        need_dw: bool,
    ) -> (Losses, Vec<f64>) {
        let s = b.s;
        let out_stack = {
            let r = self.config.scale as usize;
            Stack {
                n: s.n,
                h: s.h * r,
                w: s.w * r,
            }
        };
        let count = out_stack.values(3);
        let (pix, mut dout) = crate::nn::l1_loss(&pass.out, &teacher.out, count);
        dout.data.par_iter_mut().for_each(|v| *v *= lw.pix);
        // L_skt: Σ_k ‖F_k/‖F_k‖ − T_k/‖T_k‖‖₂ / (B²·K), norms over the whole batch tensor.
        let nb = pass.blocks.len();
        let wsk = lw.skt as f64 / ((s.n * s.n) as f64 * nb.max(1) as f64);
        let mut skt = 0.0f64;
        let mut dblocks = Vec::with_capacity(nb);
        for (f, t) in pass.blocks.iter().zip(&teacher.blocks) {
            let (len, df) = skt_distance(f, t, wsk);
            skt += len;
            dblocks.push(df);
        }
        let mut dn = vec![vec![0.0f64; s.n]; self.specs.len()];
        let mut g = self.backward(pass, &s, &dout, &dblocks, need_dw, &mut dn);
        // dL/db per (layer, crop) from dL/dN (N = 2^b − 1), plus L_bit.
        let adaptive: Vec<usize> = self.adaptive().collect();
        let ka = adaptive.len().max(1) as f64;
        let jn = s.n as f64;
        let avg_bits: f64 = adaptive
            .iter()
            .map(|&k| pass.bits[k].iter().map(|&b| b as f64).sum::<f64>())
            .sum::<f64>()
            / (ka * jn);
        let base = self.quant.a_bits as f64;
        let bit = if lw.with_bit {
            lw.bit as f64 * (avg_bits - base).max(0.0)
        } else {
            0.0
        };
        let dbit = if lw.with_bit && avg_bits > base {
            lw.bit as f64 / (ka * jn)
        } else {
            0.0
        };
        let (il, iu) = self.img_indices();
        let (lo, hi) = (self.theta[il], self.theta[iu]);
        let soft: Vec<(f32, f32)> =
            b.c.iter()
                .map(|&c| {
                    let (_, dl, du) = qgrad::image_bit(c, lo, hi);
                    (dl, du)
                })
                .collect();
        for &k in &adaptive {
            let m = self.p(k, M);
            let dm = 1.0 - (m.tanh() as f64).powi(2);
            let mi = self.index(k, M).expect("adaptive");
            for j in 0..s.n {
                if pass.clamped[k][j] {
                    continue;
                }
                let b = pass.bits[k][j];
                let db = dn[k][j] * (b.exp2() * std::f32::consts::LN_2) as f64 + dbit;
                g[mi] += db * dm;
                g[il] += db * soft[j].0 as f64;
                g[iu] += db * soft[j].1 as f64;
            }
        }
        let skt = skt * wsk;
        (
            Losses {
                pix: pix * lw.pix as f64,
                skt,
                bit,
                avg_bits,
            },
            g,
        )
    }

    /// Keeps the parameters valid after an update: `l < u`, `u_w > 0`, `l_i2b < u_i2b`.
    fn sanitize(&mut self) {
        for k in 0..self.specs.len() {
            if let Some(i) = self.slot[k] {
                let p = &mut self.theta[4 * i..4 * i + 4];
                p[UW] = p[UW].max(1e-6);
                if p[U] <= p[L] + 1e-4 {
                    p[U] = p[L] + 1e-4;
                }
            }
        }
        let (il, iu) = self.img_indices();
        if self.theta[iu] <= self.theta[il] + 1e-3 {
            self.theta[iu] = self.theta[il] + 1e-3;
        }
    }
}

/// `‖F/‖F‖ − T/‖T‖‖₂` over whole maps and `weight ·` its gradient with respect to `F`.
pub fn skt_distance(f: &FeatureMap, t: &FeatureMap, weight: f64) -> (f64, FeatureMap) {
    // Sums over fixed chunks, in parallel, added in chunk order: the same result whatever the
    // number of threads.
    const CHUNK: usize = 1 << 14;
    let sum = |parts: Vec<f64>| parts.iter().sum::<f64>();
    let sq = |m: &FeatureMap| {
        sum(m
            .data
            .par_chunks(CHUNK)
            .map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>())
            .collect())
        .sqrt()
    };
    let (nf, nt) = (sq(f).max(1e-12), sq(t).max(1e-12));
    let len = sum(f
        .data
        .par_chunks(CHUNK)
        .zip(t.data.par_chunks(CHUNK))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(&a, &b)| {
                    let d = a as f64 / nf - b as f64 / nt;
                    d * d
                })
                .sum::<f64>()
        })
        .collect())
    .sqrt();
    let mut df = f.clone();
    if len > 0.0 {
        // d‖d‖/dF = (d/‖d‖ − f̂ (f̂·d/‖d‖)) / ‖F‖, d = F/‖F‖ − T/‖T‖.
        let proj = sum(f
            .data
            .par_chunks(CHUNK)
            .zip(t.data.par_chunks(CHUNK))
            .map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(&a, &b)| a as f64 / nf * (a as f64 / nf - b as f64 / nt) / len)
                    .sum::<f64>()
            })
            .collect());
        df.data
            .par_chunks_mut(CHUNK)
            .zip(f.data.par_chunks(CHUNK).zip(t.data.par_chunks(CHUNK)))
            .for_each(|(g, (a, b))| {
                for ((g, &a), &b) in g.iter_mut().zip(a).zip(b) {
                    let d = a as f64 / nf - b as f64 / nt;
                    *g = (weight * (d / len - a as f64 / nf * proj) / nf) as f32;
                }
            });
    } else {
        df.data.fill(0.0);
    }
    (len, df)
}

/// `Σ (x − Q(x))²` over `rows` for the activation quantizer on `[l, u]` with `n` steps, in
/// 8 independent f32 lanes per row (the loop vectorises; rows are summed in f64). Rounding is
/// half-to-even through the 1.5·2^23 trick; the dequantized value is `q·step + l`, which can
/// differ from [`quant::act_fake_quant`] in the last bit — harmless for ranking candidates.
fn range_mse(rows: &[&[f32]], l: f32, u: f32, n: f32) -> f64 {
    const MAGIC: f32 = 12_582_912.0;
    const LANES: usize = 8;
    let (step, inv) = ((u - l) / n, n / (u - l));
    let err = |x: f32| {
        let t = (x.max(l).min(u) - l) * inv;
        let q = (t + MAGIC) - MAGIC;
        let d = x - (q * step + l);
        d * d
    };
    rows.iter()
        .map(|r| {
            let mut acc = [0f32; LANES];
            let mut chunks = r.chunks_exact(LANES);
            for c in &mut chunks {
                for i in 0..LANES {
                    acc[i] += err(c[i]);
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|&x| err(x)).sum();
            acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64
        })
        .sum()
}

/// Backward of the activation quantizer over one padded row `yp` of the map.
#[allow(clippy::too_many_arguments)]
fn row_back(
    s: &Stack,
    yp: usize,
    x: &FeatureMap,
    dxq: &FeatureMap,
    ns: &[f32],
    l: f32,
    u: f32,
    w: usize,
    ch: usize,
    drow: Option<&mut [f32]>,
) -> (usize, f64, f64, f64) {
    let Some(i) = crop_of_row(s, yp - 1) else {
        return (usize::MAX, 0.0, 0.0, 0.0);
    };
    let n = ns[i];
    let base = x.idx(yp - 1, 0);
    let xs = &x.data[base..base + w * ch];
    let gs = &dxq.data[base..base + w * ch];
    let dst = drow.map(|d| &mut d[ch..(w + 1) * ch]);
    thread_local! {
        static PARTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PARTS.with_borrow_mut(|parts| {
        // Every element's terms first (no loop-carried dependency: the loop vectorises), then
        // their f64 sums in element order, as a single loop would add them.
        let len = xs.len();
        parts.resize(3 * len, 0.0);
        let (pl, rest) = parts.split_at_mut(len);
        let (pu, pn) = rest.split_at_mut(len);
        let terms = (pl.iter_mut().zip(pu.iter_mut()).zip(pn.iter_mut())).zip(xs.iter().zip(gs));
        match dst {
            Some(d) => {
                for ((((tl, tu), tn), (&v, &gy)), dj) in terms.zip(d.iter_mut()) {
                    let a = qgrad::act_quant(v, l, u, n);
                    (*tl, *tu, *tn, *dj) = (gy * a.dl, gy * a.du, gy * a.dn, gy * a.dx);
                }
            }
            None => {
                for (((tl, tu), tn), (&v, &gy)) in terms {
                    let a = qgrad::act_quant(v, l, u, n);
                    (*tl, *tu, *tn) = (gy * a.dl, gy * a.du, gy * a.dn);
                }
            }
        }
        let (mut dl, mut du, mut dn) = (0.0f64, 0.0f64, 0.0f64);
        for ((&a, &b), &c) in pl.iter().zip(pu.iter()).zip(pn.iter()) {
            dl += a as f64;
            du += b as f64;
            dn += c as f64;
        }
        (i, dl, du, dn)
    })
}

/// Adam with per-parameter state (a parameter's step counts only the updates it received).
#[derive(Clone, Debug)]
pub struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: Vec<i32>,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    pub fn new(n: usize, s: &Settings) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: vec![0; n],
            beta1: s.beta1 as f64,
            beta2: s.beta2 as f64,
            eps: s.eps as f64,
        }
    }

    /// Updates parameter `i` of `theta` with gradient `g` at learning rate `lr`.
    pub fn update(&mut self, theta: &mut [f32], i: usize, g: f64, lr: f32) {
        self.t[i] += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
        self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
        let mh = self.m[i] / (1.0 - b1.powi(self.t[i]));
        let vh = self.v[i] / (1.0 - b2.powi(self.t[i]));
        theta[i] -= (lr as f64 * mh / (vh.sqrt() + self.eps)) as f32;
    }
}

/// Mean losses of one epoch.
#[derive(Clone, Debug)]
pub struct EpochLog {
    pub epoch: usize,
    pub group: Group,
    pub lr: f32,
    pub losses: Losses,
    pub seconds: f64,
}

/// Progress of fine-tuning, reported after every iteration.
pub struct Progress<'a> {
    pub epoch: usize,
    pub iter: usize,
    pub group: Group,
    /// This iteration's losses.
    pub losses: &'a Losses,
    /// Mean losses of the epoch so far.
    pub mean: &'a Losses,
}

/// Runs the reference's schedule on `crops` (all the same size): bit-aware clipping at the
/// first batch, then `epochs × iters` steps rotating the trained group by epoch.
/// The floating-point teacher's outputs for one crop, rows without padding: every residual
/// block's output and the HR output.
struct TeacherCrop {
    blocks: Vec<Vec<f32>>,
    out: Vec<f32>,
}

/// Bytes a [`TeacherCrop`] of an `h x w` crop takes.
fn teacher_crop_bytes(net: &QNet, h: usize, w: usize) -> usize {
    let r = net.config.scale as usize;
    (net.config.n_resblocks * h * w * net.config.n_feats + h * r * w * r * 3) * 4
}

/// The rows of crop `i` of a stacked map, concatenated.
fn crop_rows(m: &FeatureMap, s: &Stack, i: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(s.h * s.w * m.c);
    for y in 0..s.h {
        v.extend_from_slice(m.row(s.row(i, y)));
    }
    v
}

/// A stacked map of `c` channels from per-crop rows (the inverse of [`crop_rows`]).
fn stack_rows<'a>(s: &Stack, c: usize, crops: impl Iterator<Item = &'a [f32]>) -> FeatureMap {
    let mut m = s.zeros(c);
    let n = s.w * c;
    for (i, v) in crops.enumerate() {
        for y in 0..s.h {
            m.row_mut(s.row(i, y))
                .copy_from_slice(&v[y * n..(y + 1) * n]);
        }
    }
    m
}

/// The teacher's outputs of every crop, computed `batch` crops at a time; None when they
/// would take more than `limit_mb` MiB.
fn teacher_cache(
    net: &mut QNet,
    crops: &[Image],
    batch: usize,
    limit_mb: usize,
) -> Option<Vec<TeacherCrop>> {
    let (h, w) = (crops[0].height, crops[0].width);
    let bytes = teacher_crop_bytes(net, h, w).checked_mul(crops.len())?;
    if bytes > limit_mb.saturating_mul(1 << 20) {
        return None;
    }
    let mut cache = Vec::with_capacity(crops.len());
    for chunk in crops.chunks(batch.max(1)) {
        let pick: Vec<&Image> = chunk.iter().collect();
        let b = net.batch(&pick);
        let t = net.forward(&b, false, None, None);
        let out_stack = b.s.scaled(net.config.scale as usize);
        for i in 0..chunk.len() {
            cache.push(TeacherCrop {
                blocks: t.blocks.iter().map(|m| crop_rows(m, &b.s, i)).collect(),
                out: crop_rows(&t.out, &out_stack, i),
            });
        }
    }
    Some(cache)
}

/// The teacher pass of the crops `pick` (indices into the cache) of batch `b`, from the cache:
/// only what the losses read (block outputs and the output).
fn cached_teacher(net: &QNet, cache: &[TeacherCrop], pick: &[usize], b: &Batch) -> Pass {
    let out_stack = b.s.scaled(net.config.scale as usize);
    let blocks = (0..net.config.n_resblocks)
        .map(|k| {
            stack_rows(
                &b.s,
                net.config.n_feats,
                pick.iter().map(|&i| &cache[i].blocks[k][..]),
            )
        })
        .collect();
    Pass {
        out: stack_rows(&out_stack, 3, pick.iter().map(|&i| &cache[i].out[..])),
        blocks,
        inputs: Vec::new(),
        quantized: Vec::new(),
        wq: Vec::new(),
        bits: Vec::new(),
        clamped: Vec::new(),
        b_i: Vec::new(),
    }
}

pub fn finetune(
    net: &mut QNet,
    crops: &[Image],
    st: &Settings,
    mut progress: impl FnMut(&Progress),
) -> Result<Vec<EpochLog>> {
    if crops.is_empty() || st.batch == 0 || st.epochs == 0 || st.iters == 0 {
        bail!("fine-tuning needs crops and positive --epochs, --iters and --batch");
    }
    let mut adam = Adam::new(net.theta.len(), st);
    let mut lr = [st.lr_w, st.lr_a, st.lr_m];
    let mut rng = Rng::new(st.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut pos = 0;
    let mut logs = Vec::new();
    let mut first = true;
    let same_size = crops
        .iter()
        .all(|c| (c.width, c.height) == (crops[0].width, crops[0].height));
    let t_cache = std::time::Instant::now();
    let cache = same_size
        .then(|| teacher_cache(net, crops, st.batch, st.teacher_cache_mb))
        .flatten();
    if cache.is_some() {
        let mib = (teacher_crop_bytes(net, crops[0].height, crops[0].width) * crops.len()) >> 20;
        eprintln!(
            "teacher outputs of {} crops cached ({mib} MiB) in {:.1} s",
            crops.len(),
            t_cache.elapsed().as_secs_f64()
        );
    }
    for epoch in 1..=st.epochs {
        let t0 = std::time::Instant::now();
        let group = Group::of_epoch(epoch);
        let gi = group as usize;
        let mut sum = Losses::default();
        for it in 0..st.iters {
            let mut pick = Vec::with_capacity(st.batch);
            while pick.len() < st.batch {
                if pos == order.len() {
                    order = (0..crops.len()).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.below(i + 1));
                    }
                    pos = 0;
                }
                pick.push(order[pos]);
                pos += 1;
            }
            let imgs: Vec<&Image> = pick.iter().map(|&i| &crops[i]).collect();
            let b = net.batch(&imgs);
            let teacher = match &cache {
                Some(c) => cached_teacher(net, c, &pick, &b),
                None => net.forward(&b, false, None, None),
            };
            let pass = net.forward(&b, true, (first && st.bac).then_some(st), None);
            first = false;
            let lw = LossWeights {
                pix: st.w_pix,
                skt: st.w_skt,
                bit: st.w_bit,
                with_bit: group == Group::Bits,
            };
            let (losses, g) =
                net.loss_and_grad(&pass, &teacher, &b, &lw, group == Group::WeightClip);
            drop((pass, teacher));
            for k in 0..net.specs.len() {
                let Some(slot) = net.slot[k] else { continue };
                match group {
                    Group::WeightClip => {
                        adam.update(&mut net.theta, 4 * slot + UW, g[4 * slot + UW], lr[0])
                    }
                    Group::Range => {
                        adam.update(&mut net.theta, 4 * slot + L, g[4 * slot + L], lr[1]);
                        adam.update(&mut net.theta, 4 * slot + U, g[4 * slot + U], lr[1]);
                    }
                    Group::Bits if net.kinds[k] == LayerKind::Adaptive => {
                        adam.update(&mut net.theta, 4 * slot + M, g[4 * slot + M], lr[2])
                    }
                    Group::Bits => {}
                }
            }
            if group == Group::Bits {
                let (il, iu) = net.img_indices();
                let lr_i = st.lr_i2b * st.lr_decay.powi(((epoch - 1) / 3) as i32);
                adam.update(&mut net.theta, il, g[il], lr_i);
                adam.update(&mut net.theta, iu, g[iu], lr_i);
            }
            net.sanitize();
            sum.pix += losses.pix;
            sum.skt += losses.skt;
            sum.bit += losses.bit;
            sum.avg_bits += losses.avg_bits;
            let k = (it + 1) as f64;
            progress(&Progress {
                epoch,
                iter: it + 1,
                group,
                losses: &losses,
                mean: &sum.over(k),
            });
        }
        let k = st.iters as f64;
        logs.push(EpochLog {
            epoch,
            group,
            lr: lr[gi],
            losses: sum.over(k),
            seconds: t0.elapsed().as_secs_f64(),
        });
        lr[gi] *= st.lr_decay;
    }
    Ok(logs)
}
