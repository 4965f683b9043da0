//! Training ops for EDSR: forward and backward of 3x3 conv, ReLU, residual add, PixelShuffle
//! and the L1 loss, on the engine's zero-padded NHWC [`FeatureMap`], plus Adam.
//!
//! A batch of `n` crops of `h x w` is one tall map: the crops are stacked vertically with a
//! single zero row between them ([`Stack`]). A 3x3 conv with zero padding then sees exactly
//! the padding each crop would see alone, so every conv of the batch is one large GEMM. The
//! separator rows are re-zeroed after every op that writes them.
//!
//! Backward of a conv: `dX` is the forward conv of `dY` with the weights flipped in space and
//! transposed in channels; `dW = im2col(X)^T · dY` (blocks of rows, fixed partition, summed in
//! order — results do not depend on the number of threads); `db = Σ dY`.

use gemm::Parallelism;
use gstadabm::engine::conv::{self, ConvWeights, FeatureMap};
use gstadabm::engine::model::{EdsrConfig, LayerSpec, Role, layer_specs};
use gstadabm::engine::random::Rng;
use rayon::prelude::*;

/// `n` crops of `h x w` stacked in one map, one zero row between neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stack {
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl Stack {
    pub fn rows(&self) -> usize {
        self.n * (self.h + 1) - 1
    }

    /// Map row of row `y` of crop `i`.
    #[inline]
    pub fn row(&self, i: usize, y: usize) -> usize {
        i * (self.h + 1) + y
    }

    pub fn zeros(&self, c: usize) -> FeatureMap {
        FeatureMap::zeros(self.rows(), self.w, c)
    }

    /// The same crops `r` times larger.
    pub fn scaled(&self, r: usize) -> Stack {
        Stack {
            n: self.n,
            h: self.h * r,
            w: self.w * r,
        }
    }

    pub fn clear_separators(&self, m: &mut FeatureMap) {
        for i in 1..self.n {
            m.row_mut(i * (self.h + 1) - 1).fill(0.0);
        }
    }

    /// Number of values of a `c`-channel batch (separators excluded).
    pub fn values(&self, c: usize) -> usize {
        self.n * self.h * self.w * c
    }
}

const PAR: Parallelism = Parallelism::Rayon(0);

/// Conv forward on a stack.
pub fn conv_forward(x: &FeatureMap, cw: &ConvWeights, s: &Stack) -> FeatureMap {
    let mut y = conv::conv3x3(x, cw, PAR);
    s.clear_separators(&mut y);
    y
}

/// The weights whose forward conv is the input gradient of `cw`'s conv.
pub fn flipped(cw: &ConvWeights) -> ConvWeights {
    let (cin, cout) = (cw.cin, cw.cout);
    let mut w = vec![0.0; 9 * cin * cout];
    for t in 0..9 {
        for i in 0..cin {
            for o in 0..cout {
                w[((8 - t) * cout + o) * cin + i] = cw.w[(t * cin + i) * cout + o];
            }
        }
    }
    ConvWeights {
        cin: cout,
        cout: cin,
        w,
        bias: vec![0.0; cin],
    }
}

/// `dL/dX` of a conv, given `dL/dY` (zero on borders and separators).
pub fn conv_backward_input(dy: &FeatureMap, cw: &ConvWeights, s: &Stack) -> FeatureMap {
    conv_forward(dy, &flipped(cw), s)
}

/// Gradients of one conv's parameters, in the layout of [`ConvWeights`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGrad {
    /// `[tap][cin][cout]`.
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// Fixed number of partial sums for `dW` (independent of the thread count: deterministic).
const DW_PARTS: usize = 16;
const BLOCK_VALUES: usize = 64 * 1024;

/// `dL/dW` and `dL/db` of a conv with input `x`, given `dL/dY`.
pub fn conv_backward_params(x: &FeatureMap, dy: &FeatureMap) -> ConvGrad {
    assert_eq!((x.h, x.w), (dy.h, dy.w), "conv backward shapes");
    let (cin, cout) = (x.c, dy.c);
    let k = 9 * cin;
    let wp = x.wp();
    let p0 = wp + 1;
    let m = conv::rows_len(x.w, 0, x.h);
    let per = m.div_ceil(DW_PARTS).max(1);
    let block = (BLOCK_VALUES / k).clamp(8, 1024);
    let parts: Vec<ConvGrad> = (0..DW_PARTS)
        .into_par_iter()
        .map(|part| {
            let mut g = ConvGrad {
                w: vec![0.0; k * cout],
                b: vec![0.0; cout],
            };
            let (a, e) = ((part * per).min(m), ((part + 1) * per).min(m));
            let mut cols = vec![0.0f32; block * k];
            let mut pb = a;
            while pb < e {
                let mb = block.min(e - pb);
                for r in 0..mb {
                    let p = p0 + pb + r;
                    let dst = &mut cols[r * k..(r + 1) * k];
                    // The three taps of a kernel row are three consecutive pixels: one copy.
                    for dy in 0..3 {
                        let q = p + dy * wp - wp - 1;
                        dst[3 * dy * cin..3 * (dy + 1) * cin]
                            .copy_from_slice(&x.data[q * cin..(q + 3) * cin]);
                    }
                }
                let dyb = &dy.data[(p0 + pb) * cout..(p0 + pb + mb) * cout];
                for row in dyb.chunks_exact(cout) {
                    for (b, v) in g.b.iter_mut().zip(row) {
                        *b += v;
                    }
                }
                // SAFETY: g.w is k x cout row-major; lhs is cols^T (k x mb, column stride k);
                // rhs is dyb (mb x cout row-major); lengths match and nothing aliases.
                unsafe {
                    gemm::gemm(
                        k,
                        cout,
                        mb,
                        g.w.as_mut_ptr(),
                        1,
                        cout as isize,
                        true,
                        cols.as_ptr(),
                        k as isize,
                        1,
                        dyb.as_ptr(),
                        1,
                        cout as isize,
                        1.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                pb += mb;
            }
            g
        })
        .collect();
    let mut g = ConvGrad {
        w: vec![0.0; k * cout],
        b: vec![0.0; cout],
    };
    for p in parts {
        g.w.iter_mut().zip(&p.w).for_each(|(a, b)| *a += b);
        g.b.iter_mut().zip(&p.b).for_each(|(a, b)| *a += b);
    }
    g
}

/// In-place ReLU.
pub fn relu(x: &mut FeatureMap) {
    x.map_interior(|v| v.max(0.0));
}

/// ReLU backward given the ReLU's output: zeroes `dy` where the output is 0.
pub fn relu_backward(dy: &mut FeatureMap, out: &FeatureMap) {
    dy.data.par_iter_mut().zip(&out.data).for_each(|(g, &o)| {
        if o <= 0.0 {
            *g = 0.0
        }
    });
}

/// Calls `f(lr, hr)` for every value PixelShuffle(r) moves: `lr` indexes the `c*r*r`-channel
/// stack `s`, `hr` the `c`-channel stack `s.scaled(r)` (both [`Stack::zeros`] layouts). Input
/// channel `ch*r*r + a*r + b` of LR pixel `(y, x)` goes to channel `ch` of HR pixel
/// `(r*y + a, r*x + b)`.
fn for_each_shuffled(s: &Stack, r: usize, c: usize, mut f: impl FnMut(usize, usize)) {
    let hs = s.scaled(r);
    let (lw, hw) = (s.w + 2, hs.w + 2);
    for i in 0..s.n {
        for y in 0..s.h {
            for x in 0..s.w {
                let lr = ((s.row(i, y) + 1) * lw + x + 1) * c * r * r;
                for a in 0..r {
                    for b in 0..r {
                        let hr = ((hs.row(i, r * y + a) + 1) * hw + r * x + b + 1) * c;
                        for ch in 0..c {
                            f(lr + ch * r * r + a * r + b, hr + ch);
                        }
                    }
                }
            }
        }
    }
}

/// PyTorch `PixelShuffle(r)` of a stack of `c*r*r` channels into `s.scaled(r)`, `c` channels.
pub fn pixel_shuffle(x: &FeatureMap, s: &Stack, r: usize) -> FeatureMap {
    let mut out = s.scaled(r).zeros(x.c / (r * r));
    for_each_shuffled(s, r, out.c, |lr, hr| out.data[hr] = x.data[lr]);
    out
}

/// Backward of [`pixel_shuffle`]: the inverse permutation.
pub fn pixel_unshuffle(dy: &FeatureMap, s: &Stack, r: usize) -> FeatureMap {
    let mut out = s.zeros(dy.c * r * r);
    for_each_shuffled(s, r, dy.c, |lr, hr| out.data[lr] = dy.data[hr]);
    out
}

/// Mean absolute error over the interior values and its gradient (sign / count).
pub fn l1_loss(out: &FeatureMap, target: &FeatureMap, count: usize) -> (f64, FeatureMap) {
    assert_eq!(out.data.len(), target.data.len(), "loss shapes");
    let inv = 1.0 / count as f32;
    let mut g = out.clone();
    let mut sum = 0.0f64;
    for ((gv, &o), &t) in g.data.iter_mut().zip(&out.data).zip(&target.data) {
        let d = o - t;
        sum += d.abs() as f64;
        *gv = if d > 0.0 {
            inv
        } else if d < 0.0 {
            -inv
        } else {
            0.0
        };
    }
    (sum / count as f64, g)
}

/// The upsampler convs as `(layer, r)` and the stack at each stage's input, followed by the
/// output stack: `stacks[j]` feeds stage `j`, `stacks.last()` is the tail's.
pub fn upsampler_stages(specs: &[LayerSpec], s: &Stack) -> (Vec<(usize, usize)>, Vec<Stack>) {
    let ups: Vec<(usize, usize)> = specs
        .iter()
        .enumerate()
        .filter_map(|(k, sp)| match sp.role {
            Role::Up { r, .. } => Some((k, r)),
            _ => None,
        })
        .collect();
    let mut stacks = vec![*s];
    for &(_, r) in &ups {
        let last = *stacks.last().expect("stack");
        stacks.push(last.scaled(r));
    }
    (ups, stacks)
}

/// An EDSR in training: the parameters in engine layout, in [`layer_specs`] order.
#[derive(Clone, Debug)]
pub struct Edsr {
    pub config: EdsrConfig,
    pub specs: Vec<LayerSpec>,
    pub params: Vec<ConvWeights>,
}

/// What the forward pass keeps for the backward pass: the input of every conv.
pub struct Tape {
    inputs: Vec<FeatureMap>,
}

impl Edsr {
    /// PyTorch's default conv initialisation (Kaiming-uniform with a = √5: weights and biases
    /// uniform in ±1/√fan_in), as EDSR-PyTorch trains from.
    pub fn init(config: EdsrConfig, seed: u64) -> Self {
        let specs = layer_specs(&config);
        let mut rng = Rng::new(seed);
        let params = specs
            .iter()
            .map(|s| {
                let a = 1.0 / ((s.cin * 9) as f32).sqrt();
                let w: Vec<f32> = (0..s.cout * s.cin * 9).map(|_| rng.symmetric(a)).collect();
                let b: Vec<f32> = (0..s.cout).map(|_| rng.symmetric(a)).collect();
                ConvWeights::from_oihw(s.cin, s.cout, &w, &b)
            })
            .collect();
        Self {
            config,
            specs,
            params,
        }
    }

    pub fn from_model(m: &gstadabm::engine::Model) -> Self {
        Self {
            config: m.config.clone(),
            specs: m.convs.iter().map(|c| c.spec.clone()).collect(),
            params: m
                .convs
                .iter()
                .map(|c| ConvWeights::from_oihw(c.spec.cin, c.spec.cout, &c.weight, &c.bias))
                .collect(),
        }
    }

    /// A floating-point model file of the current parameters.
    pub fn to_model(&self) -> gstadabm::engine::Result<gstadabm::engine::Model> {
        let convs = self
            .specs
            .iter()
            .zip(&self.params)
            .map(|(s, p)| gstadabm::engine::model::ConvParams {
                spec: s.clone(),
                weight: p.to_oihw(),
                bias: p.bias.clone(),
            })
            .collect();
        gstadabm::engine::Model::new(self.config.clone(), None, convs)
    }

    pub fn n_params(&self) -> usize {
        self.params.iter().map(|p| p.w.len() + p.bias.len()).sum()
    }

    /// Forward pass of a stack of LR crops (3 channels, model units). Returns the HR output
    /// (before `add_mean`) and the tape for [`Edsr::backward`].
    pub fn forward(&self, x: FeatureMap, s: &Stack) -> (FeatureMap, Tape) {
        let n_layers = self.specs.len();
        let mut inputs: Vec<FeatureMap> = Vec::with_capacity(n_layers);
        let rs = self.config.res_scale;
        let head = conv_forward(&x, &self.params[0], s);
        inputs.push(x);
        let mut res = head.clone();
        let mut k = 1;
        for _ in 0..self.config.n_resblocks {
            let mut t = conv_forward(&res, &self.params[k], s);
            relu(&mut t);
            let t2 = conv_forward(&t, &self.params[k + 1], s);
            inputs.push(res.clone());
            inputs.push(t);
            res.data
                .par_iter_mut()
                .zip(&t2.data)
                .for_each(|(r, v)| *r += rs * v);
            k += 2;
        }
        let mut z = conv_forward(&res, &self.params[k], s);
        inputs.push(res);
        z.data
            .par_iter_mut()
            .zip(&head.data)
            .for_each(|(a, b)| *a += b);
        k += 1;
        let mut st = *s;
        while let Role::Up { r, .. } = self.specs[k].role {
            let c = conv_forward(&z, &self.params[k], &st);
            inputs.push(z);
            z = pixel_shuffle(&c, &st, r);
            st = st.scaled(r);
            k += 1;
        }
        let out = conv_forward(&z, &self.params[k], &st);
        inputs.push(z);
        (out, Tape { inputs })
    }

    /// Backward pass: parameter gradients given `dL/d(output)`.
    pub fn backward(&self, tape: Tape, dout: FeatureMap, s: &Stack) -> Vec<ConvGrad> {
        let n = self.specs.len();
        let inputs = tape.inputs;
        let mut grads: Vec<Option<ConvGrad>> = vec![None; n];
        // Stacks at each upsampler stage input.
        let (ups, stacks) = upsampler_stages(&self.specs, s);
        let tail = n - 1;
        let mut st = *stacks.last().unwrap();
        grads[tail] = Some(conv_backward_params(&inputs[tail], &dout));
        let mut du = conv_backward_input(&dout, &self.params[tail], &st);
        for (j, &(k, r)) in ups.iter().enumerate().rev() {
            st = stacks[j];
            let dc = pixel_unshuffle(&du, &st, r);
            grads[k] = Some(conv_backward_params(&inputs[k], &dc));
            du = conv_backward_input(&dc, &self.params[k], &st);
        }
        let dz = du;
        let kb = 2 * self.config.n_resblocks + 1;
        grads[kb] = Some(conv_backward_params(&inputs[kb], &dz));
        let mut dres = conv_backward_input(&dz, &self.params[kb], s);
        let rs = self.config.res_scale;
        for b in (0..self.config.n_resblocks).rev() {
            let (k1, k2) = (1 + 2 * b, 2 + 2 * b);
            let mut dt2 = dres.clone();
            if rs != 1.0 {
                dt2.data.par_iter_mut().for_each(|v| *v *= rs);
            }
            grads[k2] = Some(conv_backward_params(&inputs[k2], &dt2));
            let mut da = conv_backward_input(&dt2, &self.params[k2], s);
            relu_backward(&mut da, &inputs[k2]);
            grads[k1] = Some(conv_backward_params(&inputs[k1], &da));
            let dx = conv_backward_input(&da, &self.params[k1], s);
            dres.data
                .par_iter_mut()
                .zip(&dx.data)
                .for_each(|(a, b)| *a += b);
        }
        dres.data
            .par_iter_mut()
            .zip(&dz.data)
            .for_each(|(a, b)| *a += b);
        grads[0] = Some(conv_backward_params(&inputs[0], &dres));
        grads.into_iter().map(|g| g.expect("every layer")).collect()
    }
}

/// Adam (PyTorch semantics, no weight decay) over all conv weights and biases.
#[derive(Clone, Debug)]
pub struct Adam {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub step: u64,
    /// First and second moments, per layer: weights then bias, flattened.
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl Adam {
    pub fn new(net: &Edsr) -> Self {
        let sizes: Vec<usize> = net
            .params
            .iter()
            .map(|p| p.w.len() + p.bias.len())
            .collect();
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    pub fn update(&mut self, net: &mut Edsr, grads: &[ConvGrad], lr: f32) {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        for (((p, g), m), v) in net
            .params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            let nw = p.w.len();
            let params = p.w.iter_mut().chain(p.bias.iter_mut());
            let gs = g.w.iter().chain(&g.b);
            for (((x, &gv), mv), vv) in params.zip(gs).zip(m.iter_mut()).zip(v.iter_mut()) {
                *mv = b1 * *mv + (1.0 - b1) * gv;
                *vv = b2 * *vv + (1.0 - b2) * gv * gv;
                let mh = *mv / bc1;
                let vh = *vv / bc2;
                *x -= lr * mh / (vh.sqrt() + eps);
            }
            debug_assert_eq!(m.len(), nw + p.bias.len());
        }
    }
}
