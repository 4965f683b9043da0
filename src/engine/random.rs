//! Seeded random models and images, for tests, benchmarks and the `adabm-model` tool.
//!
//! Random quantized models get their activation ranges from one floating-point pass over a
//! synthetic image (min/max of each layer input), u_w = max |w|, and layer factors from the
//! 30th/70th percentiles of the input standard deviations — the shape of AdaBM's calibration,
//! on made-up data. Real calibration lives in the tools.

use std::collections::BTreeMap;

use gemm::Parallelism;

use super::complexity::gradient_density;
use super::conv::FeatureMap;
use super::edsr::Network;
use super::error::Result;
use super::frame::Image;
use super::metrics::percentile;
use super::model::{
    ComplexityMetric, ConvParams, EdsrConfig, LayerKind, LayerQuant, Model, QuantConfig, QuantMode,
    Role, layer_kind, layer_specs,
};

/// SplitMix64: small, seeded, good enough for weights and test images.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The generator's whole state (for checkpoints); [`Rng::from_state`] restores it.
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn from_state(state: u64) -> Self {
        Self(state)
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` uniform bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-a, a).
    pub fn symmetric(&mut self, a: f32) -> f32 {
        (2.0 * self.uniform() - 1.0) * a
    }

    /// `n` RGB values as the network gives them: fractions on the 0–255 scale, some below 0
    /// and above 255 (uniform in [-20, 275)), so that every rounding and clamp of the packing
    /// that follows is exercised.
    pub fn network_rgb(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| -20.0 + 295.0 * self.uniform()).collect()
    }
}

/// A floating-point EDSR with random weights (Kaiming-uniform scale, residual branches damped
/// so that activations stay in a realistic range).
pub fn random_model(config: EdsrConfig, seed: u64) -> Result<Model> {
    let mut rng = Rng::new(seed);
    let convs = layer_specs(&config)
        .into_iter()
        .map(|spec| {
            let fan_in = (spec.cin * 9) as f32;
            let gain = match spec.role {
                Role::BlockConv2(_) => 0.2,
                Role::Tail => 0.5,
                _ => 1.0,
            };
            let a = gain * (6.0 / fan_in).sqrt();
            let weight = (0..spec.cout * spec.cin * 9)
                .map(|_| rng.symmetric(a))
                .collect();
            let bias = (0..spec.cout).map(|_| rng.symmetric(0.01)).collect();
            ConvParams { spec, weight, bias }
        })
        .collect();
    Model::new(config, None, convs)
}

/// A synthetic natural-looking test image: smooth gradients, a few edges and some texture.
pub fn test_image(width: usize, height: usize, seed: u64) -> Image {
    let mut rng = Rng::new(seed);
    let f = [
        rng.uniform() * 0.2 + 0.02,
        rng.uniform() * 0.3 + 0.05,
        rng.uniform() * 0.5,
    ];
    let mut img = Image::new(width, height);
    for y in 0..height {
        for x in 0..width {
            let (xf, yf) = (x as f32, y as f32);
            let base = 128.0 + 80.0 * (xf * f[0]).sin() * (yf * f[1]).cos();
            let edge = if (x / 7 + y / 5) % 3 == 0 {
                40.0
            } else {
                -20.0
            };
            for c in 0..3 {
                let noise = rng.symmetric(20.0 * f[2]);
                let v = base + edge + noise + 15.0 * c as f32;
                img.data[(y * width + x) * 3 + c] = v.clamp(0.0, 255.0);
            }
        }
    }
    img
}

/// Quantizes a floating-point model with ranges measured on synthetic images (see module doc).
pub fn quantize_on_synthetic(
    fp: &Model,
    mode: QuantMode,
    w_bits: u8,
    a_bits: u8,
    seed: u64,
) -> Result<Model> {
    let net = Network::new(fp);
    let n = net.layers.len();
    let mut lo = vec![f32::INFINITY; n];
    let mut hi = vec![f32::NEG_INFINITY; n];
    let mut std = vec![0.0f32; n];
    let mut complexities = Vec::new();
    for i in 0..4 {
        let img = test_image(40, 32, seed.wrapping_add(i));
        complexities.push(gradient_density(&img.data, img.width, img.height));
        let x = net.input_map(&img, 0, 0, img.width, img.height);
        let mut obs = |k: usize, m: &FeatureMap| {
            let vals: Vec<f32> = (0..m.h).flat_map(|y| m.row(y).to_vec()).collect();
            let mean = vals.iter().sum::<f32>() / vals.len() as f32;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / vals.len() as f32;
            std[k] += var.sqrt() / 4.0;
            for v in vals {
                lo[k] = lo[k].min(v);
                hi[k] = hi[k].max(v);
            }
        };
        net.forward(&x, &net.plan(0, 0), Parallelism::None, Some(&mut obs));
    }
    let adaptive: Vec<usize> = (0..n)
        .filter(|&k| layer_kind(Some(mode), fp.convs[k].spec.role) == LayerKind::Adaptive)
        .collect();
    let sens: Vec<f32> = adaptive.iter().map(|&k| std[k]).collect();
    let (l30, l70) = (percentile(&sens, 30.0), percentile(&sens, 70.0));
    let mut layers = BTreeMap::new();
    for (k, c) in fp.convs.iter().enumerate() {
        let kind = layer_kind(Some(mode), c.spec.role);
        if kind == LayerKind::Float {
            continue;
        }
        let m = if kind == LayerKind::Adaptive && std[k] < l30 {
            -1.0
        } else if kind == LayerKind::Adaptive && std[k] > l70 {
            1.0
        } else {
            0.0
        };
        let u_w = c
            .weight
            .iter()
            .fold(0.0f32, |a, w| a.max(w.abs()))
            .max(1e-8);
        let (l, u) = if hi[k] > lo[k] {
            (lo[k], hi[k])
        } else {
            (lo[k], lo[k] + 1.0)
        };
        layers.insert(c.spec.name.clone(), LayerQuant { l, u, u_w, m });
    }
    let quant = QuantConfig {
        mode,
        w_bits,
        a_bits,
        complexity: ComplexityMetric::Gradient,
        image_lower: percentile(&complexities, 10.0),
        image_upper: percentile(&complexities, 90.0),
        layers,
    };
    Model::new(fp.config.clone(), Some(quant), fp.convs.clone())
}
