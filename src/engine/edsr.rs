//! The EDSR forward pass, in floating point or with AdaBM fake quantization.

use gemm::Parallelism;

use super::conv::{self, ConvWeights, FeatureMap};
use super::frame::Image;
use super::model::{
    EdsrConfig, LayerKind, LayerQuant, LayerSpec, Model, QuantConfig, Role, layer_kind,
};
use super::quant;

/// One prepared conv layer.
#[derive(Clone, Debug)]
pub struct Layer {
    pub spec: LayerSpec,
    pub kind: LayerKind,
    /// Activation quantizer bounds and weight clip (None for float layers).
    pub quant: Option<LayerQuant>,
    /// b_L of an adaptive layer.
    pub b_l: i32,
    /// Weights, fake-quantized at the layer's weight bits when the layer is quantized.
    pub weights: ConvWeights,
}

/// A network ready to run: weights re-laid out and fake-quantized once.
#[derive(Clone, Debug)]
pub struct Network {
    pub config: EdsrConfig,
    pub quant: Option<QuantConfig>,
    pub layers: Vec<Layer>,
}

/// Activation bits of every layer for one image (0: the layer runs in floating point).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitPlan {
    pub bits: Vec<u8>,
}

/// Called with (layer index, the layer's floating-point input) before every conv.
pub type Observer<'a> = &'a mut dyn FnMut(usize, &FeatureMap);

impl Network {
    pub fn new(model: &Model) -> Self {
        let mode = model.quant.as_ref().map(|q| q.mode);
        let layers = model
            .convs
            .iter()
            .map(|c| {
                let kind = layer_kind(mode, c.spec.role);
                let lq = model
                    .quant
                    .as_ref()
                    .and_then(|q| q.layers.get(&c.spec.name))
                    .copied();
                let w_bits = match kind {
                    LayerKind::Float => None,
                    LayerKind::Adaptive => model.quant.as_ref().map(|q| q.w_bits),
                    LayerKind::Fixed8 => Some(8),
                };
                let weight: Vec<f32> = match (w_bits, lq) {
                    (Some(b), Some(q)) => {
                        let n = quant::levels(b);
                        c.weight
                            .iter()
                            .map(|&w| quant::weight_fake_quant(w, q.u_w, n))
                            .collect()
                    }
                    _ => c.weight.clone(),
                };
                Layer {
                    spec: c.spec.clone(),
                    kind,
                    quant: if kind == LayerKind::Float { None } else { lq },
                    b_l: lq.map_or(0, |q| quant::layer_bit(q.m)),
                    weights: ConvWeights::from_oihw(c.spec.cin, c.spec.cout, &weight, &c.bias),
                }
            })
            .collect();
        Self {
            config: model.config.clone(),
            quant: model.quant.clone(),
            layers,
        }
    }

    /// `sub_mean`: the `w x h` region at `(x0, y0)` of a 0–255 RGB image, in model units.
    pub fn input_map(&self, img: &Image, x0: usize, y0: usize, w: usize, h: usize) -> FeatureMap {
        let mut x = FeatureMap::default();
        self.input_map_into(img, x0, y0, w, h, &mut x);
        x
    }

    /// [`Network::input_map`] into `x`, reusing its memory.
    pub fn input_map_into(
        &self,
        img: &Image,
        x0: usize,
        y0: usize,
        w: usize,
        h: usize,
        x: &mut FeatureMap,
    ) {
        let cfg = &self.config;
        let k = cfg.rgb_range / 255.0;
        let mean = cfg.rgb_mean.map(|m| m * cfg.rgb_range);
        x.reshape(h, w, 3);
        for y in 0..h {
            let src = &img.data[((y0 + y) * img.width + x0) * 3..][..w * 3];
            for (d, (s, c)) in x.row_mut(y).iter_mut().zip(src.iter().zip((0..3).cycle())) {
                *d = s * k - mean[c];
            }
        }
    }

    /// Indices of the adaptive layers (the ones counted in the average bit-width).
    pub fn adaptive_layers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.layers.len()).filter(|&k| self.layers[k].kind == LayerKind::Adaptive)
    }

    /// Bits per layer for an image with offset `b_i` and base bits `base`.
    pub fn plan(&self, base: u8, b_i: i32) -> BitPlan {
        BitPlan {
            bits: self
                .layers
                .iter()
                .map(|l| match l.kind {
                    LayerKind::Float => 0,
                    LayerKind::Fixed8 => 8,
                    LayerKind::Adaptive => quant::adaptive_bits(base, b_i, l.b_l),
                })
                .collect(),
        }
    }

    /// Receptive-field radius in LR pixels: how far an output depends on its neighbours.
    pub fn halo(&self) -> usize {
        // Every LR conv adds one pixel; the HR-side convs add less than one pixel together.
        let lr_convs = self
            .layers
            .iter()
            .filter(|l| !matches!(l.spec.role, Role::Tail | Role::Up { stage: 1.., .. }))
            .count();
        lr_convs + 1
    }

    /// Runs layer `k` on `x`: quantizes the input at the planned bits, then convolves.
    fn conv(
        &self,
        k: usize,
        x: &FeatureMap,
        plan: &BitPlan,
        par: Parallelism,
        obs: &mut Option<Observer>,
    ) -> FeatureMap {
        let mut dst = FeatureMap::zeros(x.h, x.w, self.layers[k].weights.cout);
        self.conv_into(k, x, &mut dst, plan, par, obs);
        dst
    }

    /// [`Self::conv`] into an existing map of the output's shape (its border stays zero).
    fn conv_into(
        &self,
        k: usize,
        x: &FeatureMap,
        dst: &mut FeatureMap,
        plan: &BitPlan,
        par: Parallelism,
        obs: &mut Option<Observer>,
    ) {
        if let Some(o) = obs.as_mut() {
            o(k, x);
        }
        let layer = &self.layers[k];
        match self.quantized_input(k, x, plan) {
            Some(q) => conv::conv3x3_into(&q, &layer.weights, dst, par),
            None => conv::conv3x3_into(x, &layer.weights, dst, par),
        }
    }

    /// The fake-quantized input of layer `k`, or None for a float layer.
    fn quantized_input(&self, k: usize, x: &FeatureMap, plan: &BitPlan) -> Option<FeatureMap> {
        let bits = plan.bits[k];
        let q = self.layers[k].quant?;
        if bits == 0 {
            return None;
        }
        let n = quant::levels(bits);
        let mut xq = x.clone();
        xq.map_interior(|v| quant::act_fake_quant(v, q.l, q.u, n));
        Some(xq)
    }

    /// Forward pass on an input of 3 channels in model units (after `sub_mean`). Returns the
    /// HR output before `add_mean`.
    pub fn forward(
        &self,
        input: &FeatureMap,
        plan: &BitPlan,
        par: Parallelism,
        mut obs: Option<Observer>,
    ) -> FeatureMap {
        assert_eq!(plan.bits.len(), self.layers.len(), "bit plan length");
        let res_scale = self.config.res_scale;
        let head = self.conv(0, input, plan, par, &mut obs);
        let mut res = head.clone();
        let mut k = 1;
        // The blocks' two intermediate maps are reused from block to block (each fresh map is
        // a round of page faults for the allocator).
        let (mut t1, mut t2) = (res.clone(), res.clone());
        for _ in 0..self.config.n_resblocks {
            self.conv_into(k, &res, &mut t1, plan, par, &mut obs);
            t1.map_interior(|v| v.max(0.0));
            self.conv_into(k + 1, &t1, &mut t2, plan, par, &mut obs);
            for (r, v) in res.data.iter_mut().zip(&t2.data) {
                *r += res_scale * v;
            }
            k += 2;
        }
        drop((t1, t2));
        let mut x = self.conv(k, &res, plan, par, &mut obs);
        drop(res);
        for (a, b) in x.data.iter_mut().zip(&head.data) {
            *a += b;
        }
        drop(head);
        k += 1;
        while let Role::Up { r, .. } = self.layers[k].spec.role {
            x = self.upsample(k, &x, r, plan, par, &mut obs);
            k += 1;
        }
        self.conv(k, &x, plan, par, &mut obs)
    }

    /// Upsampler stage: conv to r²F channels and PixelShuffle(r), in row chunks so that the
    /// r²F-channel map never exists whole.
    fn upsample(
        &self,
        k: usize,
        x: &FeatureMap,
        r: usize,
        plan: &BitPlan,
        par: Parallelism,
        obs: &mut Option<Observer>,
    ) -> FeatureMap {
        if let Some(o) = obs.as_mut() {
            o(k, x);
        }
        let layer = &self.layers[k];
        let xq = self.quantized_input(k, x, plan);
        let src = xq.as_ref().unwrap_or(x);
        let cout = layer.weights.cout;
        let mut dst = FeatureMap::zeros(x.h * r, x.w * r, cout / (r * r));
        const CHUNK_VALUES: usize = 1 << 21;
        let rows = (CHUNK_VALUES / (src.wp() * cout)).max(1);
        let mut buf = Vec::new();
        let mut y0 = 0;
        while y0 < src.h {
            let y1 = (y0 + rows).min(src.h);
            buf.resize(conv::rows_len(src.w, y0, y1) * cout, 0.0);
            conv::conv3x3_rows(src, &layer.weights, y0, y1, &mut buf, par);
            conv::pixel_shuffle_rows(&buf, src.w, y0, y1, r, &mut dst);
            y0 = y1;
        }
        dst
    }
}
