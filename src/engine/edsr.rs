//! The EDSR forward pass, in floating point or with AdaBM fake quantization.

use std::sync::atomic::{AtomicBool, Ordering};

use gemm::Parallelism;

use super::conv::{self, ConvWeights, FeatureMap, Post};
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
    /// `weights` as the f32 kernels read them, packed on first use (so `weights` must not
    /// change once the network has run).
    pub packed: conv::PackedWeights,
    /// An upsampler's weights with their outputs in [`conv::subpixel_major`] order (and their
    /// packed copy), so that PixelShuffle is one copy per HR row of a pixel.
    pub subpixel: Option<(ConvWeights, conv::PackedWeights)>,
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

/// The feature maps of a forward pass ([`Network::forward_into`], and the integer engine's
/// [`IntNetwork::forward_map_into`](super::intnet::IntNetwork::forward_map_into)), kept between
/// frames: a frame of a size seen before allocates none of them.
#[derive(Default)]
pub struct ForwardScratch {
    /// The head's output, the residual stream and a block's two conv outputs (the last
    /// body conv's output goes to `t1`).
    pub(crate) head: FeatureMap,
    pub(crate) res: FeatureMap,
    pub(crate) t1: FeatureMap,
    pub(crate) t2: FeatureMap,
    /// A quantized layer's fake-quantized input (f32 reference).
    pub(crate) q: FeatureMap,
    /// Each upsampler stage's HR output.
    pub(crate) up: Vec<FeatureMap>,
    /// An upsampler conv's output before PixelShuffle: rows of it in the f32 engine, the
    /// whole map (`pre`) in the integer one.
    pub(crate) buf: Vec<f32>,
    pub(crate) pre: FeatureMap,
    /// An integer layer's input codes.
    pub(crate) codes: super::intcpu::CodeBuffer,
}

impl ForwardScratch {
    /// Makes `up` hold one map per upsampler stage.
    pub(crate) fn stages(&mut self, n: usize) {
        self.up.resize_with(n, FeatureMap::default);
    }
}

/// Whether the f32 engine fuses a block's ReLU and residual update into its convs where they
/// run on the Winograd path ([`conv::conv3x3_into_post`]: the same values, two passes over the
/// map fewer per block).
static FUSE: AtomicBool = AtomicBool::new(true);

/// Sets for the whole process (for comparisons) whether the f32 engine fuses a block's ReLU
/// and residual update into its convs (the default) or runs them as passes of their own; the
/// outputs are the same bits either way.
pub fn set_fuse(on: bool) {
    FUSE.store(on, Ordering::Relaxed);
}

/// `acc += k · x` (`acc + x` when `k` is 1, which is the same in IEEE arithmetic) over every
/// value, borders included (zero + zero), rows of the map in parallel (a serial pass left
/// the other cores idle).
fn add_scaled(acc: &mut FeatureMap, x: &FeatureMap, k: f32) {
    use rayon::prelude::*;
    assert_eq!(acc.data.len(), x.data.len(), "map sizes");
    const CHUNK: usize = 1 << 16;
    acc.data
        .par_chunks_mut(CHUNK)
        .zip(x.data.par_chunks(CHUNK))
        .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, x)| *a += k * x));
}

/// What both engines run the same way: the head, the residual blocks (ReLU between their two
/// convs, `res += res_scale · conv2`), the last body conv and the global skip, with
/// `layer(k, input, output, post)` running conv `k` into `output` with each value through
/// `post` ([`conv::Post`]: ReLU, or added to `output` scaled) and returning true, or — for a
/// `post` other than `None` that it does not fuse — doing nothing and returning false, and then
/// the conv runs plain and a pass over the map does the rest. The body's output is left in `t1`
/// (`maps` = head, res, t1, t2); returns the index of the layer after the body.
pub(crate) fn body(
    config: &EdsrConfig,
    input: &FeatureMap,
    [head, res, t1, t2]: [&mut FeatureMap; 4],
    mut layer: impl FnMut(usize, &FeatureMap, &mut FeatureMap, Post) -> bool,
) -> usize {
    layer(0, input, head, Post::None);
    copy_map(head, res);
    let mut k = 1;
    for _ in 0..config.n_resblocks {
        if !layer(k, res, t1, Post::Relu) {
            layer(k, res, t1, Post::None);
            t1.map_interior(|v| v.max(0.0));
        }
        if !layer(k + 1, t1, res, Post::Accumulate(config.res_scale)) {
            layer(k + 1, t1, t2, Post::None);
            add_scaled(res, t2, config.res_scale);
        }
        k += 2;
    }
    layer(k, res, t1, Post::None);
    add_scaled(t1, head, 1.0);
    k + 1
}

/// Copies `x` (shape and values) into `dst`'s memory.
fn copy_map(x: &FeatureMap, dst: &mut FeatureMap) {
    use rayon::prelude::*;
    (dst.h, dst.w, dst.c) = (x.h, x.w, x.c);
    // Every value is overwritten: resize writes only what grows.
    dst.data.resize(x.data.len(), 0.0);
    const CHUNK: usize = 1 << 16;
    dst.data
        .par_chunks_mut(CHUNK)
        .zip(x.data.par_chunks(CHUNK))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

impl Network {
    /// The complexity metric deciding b_I: `overridden`, else the model's (gradient for a
    /// floating-point model).
    pub fn metric(&self, overridden: Option<super::ComplexityMetric>) -> super::ComplexityMetric {
        overridden.unwrap_or(
            self.quant
                .as_ref()
                .map_or(super::ComplexityMetric::Gradient, |q| q.complexity),
        )
    }

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
                let weights = ConvWeights::from_oihw(c.spec.cin, c.spec.cout, &weight, &c.bias);
                let subpixel = match c.spec.role {
                    Role::Up { r, .. } if c.spec.cout % (r * r) == 0 => {
                        let from = conv::subpixel_major(c.spec.cout, r);
                        Some((weights.with_outputs(&from), Default::default()))
                    }
                    _ => None,
                };
                Layer {
                    spec: c.spec.clone(),
                    kind,
                    quant: if kind == LayerKind::Float { None } else { lq },
                    b_l: lq.map_or(0, |q| quant::layer_bit(q.m)),
                    weights,
                    packed: Default::default(),
                    subpixel,
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

    /// Runs layer `k` on `x` into `dst` (made the output's shape in its own memory; for
    /// [`Post::Accumulate`] added to what `dst` holds) with each value through `post`:
    /// quantizes the input at the planned bits (into `q`), then convolves; returns true. A
    /// `post` other than `None` that the conv cannot fuse ([`conv::post_fuses`], or [`set_fuse`]
    /// off): returns false and does nothing.
    #[allow(clippy::too_many_arguments)]
    fn conv_into(
        &self,
        k: usize,
        x: &FeatureMap,
        dst: &mut FeatureMap,
        q: &mut FeatureMap,
        plan: &BitPlan,
        par: Parallelism,
        obs: &mut Option<Observer>,
        post: Post,
    ) -> bool {
        let layer = &self.layers[k];
        if post != Post::None
            && (!FUSE.load(Ordering::Relaxed) || !conv::post_fuses(&layer.weights))
        {
            return false;
        }
        if let Some(o) = obs.as_mut() {
            o(k, x);
        }
        let src = if self.quantized_input(k, x, plan, q) {
            &*q
        } else {
            x
        };
        if post == Post::None {
            dst.reshape(x.h, x.w, layer.weights.cout);
            conv::conv3x3_into_cached(src, &layer.weights, &layer.packed, dst, par);
        } else {
            let fused = conv::conv3x3_into_post(src, &layer.weights, &layer.packed, dst, par, post);
            debug_assert!(fused, "post_fuses said yes");
        }
        true
    }

    /// Writes the fake-quantized input of layer `k` into `q` and returns true, or returns
    /// false for a float layer.
    fn quantized_input(
        &self,
        k: usize,
        x: &FeatureMap,
        plan: &BitPlan,
        q: &mut FeatureMap,
    ) -> bool {
        let bits = plan.bits[k];
        let Some(lq) = self.layers[k].quant else {
            return false;
        };
        if bits == 0 {
            return false;
        }
        let n = quant::levels(bits);
        copy_map(x, q);
        q.map_interior(|v| quant::act_fake_quant(v, lq.l, lq.u, n));
        true
    }

    /// Forward pass on an input of 3 channels in model units (after `sub_mean`). Returns the
    /// HR output before `add_mean`.
    pub fn forward(
        &self,
        input: &FeatureMap,
        plan: &BitPlan,
        par: Parallelism,
        obs: Option<Observer>,
    ) -> FeatureMap {
        let mut out = FeatureMap::default();
        self.forward_into(
            input,
            plan,
            par,
            obs,
            &mut ForwardScratch::default(),
            &mut out,
        );
        out
    }

    /// Number of upsampler stages.
    pub(crate) fn up_stages(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| matches!(l.spec.role, Role::Up { .. }))
            .count()
    }

    /// [`Self::forward`] into `out`, with every feature map in `sc`'s memory (allocating only
    /// to grow it).
    pub fn forward_into(
        &self,
        input: &FeatureMap,
        plan: &BitPlan,
        par: Parallelism,
        mut obs: Option<Observer>,
        sc: &mut ForwardScratch,
        out: &mut FeatureMap,
    ) {
        assert_eq!(plan.bits.len(), self.layers.len(), "bit plan length");
        sc.stages(self.up_stages());
        let ForwardScratch {
            head,
            res,
            t1,
            t2,
            q,
            up,
            buf,
            ..
        } = sc;
        let maps = [&mut *head, &mut *res, &mut *t1, &mut *t2];
        let mut k = body(&self.config, input, maps, |k, x, dst, post| {
            self.conv_into(k, x, dst, q, plan, par, &mut obs, post)
        });
        let mut x: &FeatureMap = t1;
        let mut stages = up.iter_mut();
        while let Role::Up { r, .. } = self.layers[k].spec.role {
            let dst = stages.next().expect("one map per upsampler stage");
            self.upsample_into(k, x, r, plan, par, &mut obs, q, buf, dst);
            x = dst;
            k += 1;
        }
        self.conv_into(k, x, out, q, plan, par, &mut obs, Post::None);
    }

    /// Upsampler stage into `dst`: conv to r²F channels and PixelShuffle(r), in row chunks
    /// (in `buf`) so that the r²F-channel map never exists whole.
    #[allow(clippy::too_many_arguments)]
    fn upsample_into(
        &self,
        k: usize,
        x: &FeatureMap,
        r: usize,
        plan: &BitPlan,
        par: Parallelism,
        obs: &mut Option<Observer>,
        q: &mut FeatureMap,
        buf: &mut Vec<f32>,
        dst: &mut FeatureMap,
    ) {
        if let Some(o) = obs.as_mut() {
            o(k, x);
        }
        let layer = &self.layers[k];
        let src = if self.quantized_input(k, x, plan, q) {
            &*q
        } else {
            x
        };
        // Straight into the HR map where the kernels can.
        if let Some((w, packed)) = &layer.subpixel
            && conv::conv3x3_shuffled_into(src, w, packed, r, dst, par)
        {
            return;
        }
        let cout = layer.weights.cout;
        // PixelShuffle writes every interior value.
        dst.reshape(x.h * r, x.w * r, cout / (r * r));
        // Otherwise in chunks of rows through a buffer. Rows per chunk: a multiple of 4, the
        // height of a Winograd F(4x4, 3x3) tile row (that path still lands here when r·c is
        // not a multiple of 8) — it computes whole tile rows, so a chunk of 17 rows computed 20.
        const CHUNK_VALUES: usize = 1 << 21;
        let rows = (CHUNK_VALUES / (src.wp() * cout) / 4 * 4).max(4);
        let mut y0 = 0;
        while y0 < src.h {
            let y1 = (y0 + rows).min(src.h);
            buf.resize(conv::rows_len(src.w, y0, y1) * cout, 0.0);
            match &layer.subpixel {
                Some((w, packed)) => {
                    conv::conv3x3_rows_cached(src, w, packed, y0, y1, buf, par);
                    conv::pixel_shuffle_rows_subpixel(buf, src.w, y0, y1, r, dst);
                }
                None => {
                    conv::conv3x3_rows_cached(src, &layer.weights, &layer.packed, y0, y1, buf, par);
                    conv::pixel_shuffle_rows(buf, src.w, y0, y1, r, dst);
                }
            }
            y0 = y1;
        }
    }
}
