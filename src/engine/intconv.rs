//! Integer 3x3 convolution of AdaBM codes: the scalar reference of the integer engine.
//!
//! With activation codes `q ∈ 0..=N` (`x̂ = l + Δa·q`, `Δa = (u − l)/N`) and weight codes
//! `k ∈ 0..=M` (`ŵ = −u_w + Δw·k`, `Δw = 2u_w/M`), neither grid contains zero, and the zero
//! padding applies to `x̂`, not to `q`. Over the valid taps of an output position:
//!
//! ```text
//! Σ x̂·ŵ = Δa·(Δw·Σqk − u_w·Σq) + l·(Δw·Σk − u_w·n)
//! ```
//!
//! where `Σqk` (the integer GEMM), `Σq` (per position), `Σk` (per output channel and border
//! class) and `n` (valid input values) are exact integers. Padding positions hold code 0, so
//! they add nothing to `Σqk` and `Σq`; `Σk` and `n` count only the taps inside the image.
//! The scalar reference here defines the semantics the SIMD and CUDA kernels must reproduce
//! bit for bit in the integer sums.

use super::conv::FeatureMap;
use super::quant;

/// Activation quantizer of one layer at one bit-width.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    pub l: f32,
    pub u: f32,
    /// `2^b − 1`.
    pub n: f32,
}

impl ActQuant {
    pub fn new(l: f32, u: f32, bits: u8) -> Self {
        Self {
            l,
            u,
            n: quant::levels(bits),
        }
    }

    /// `Δa`.
    pub fn step(&self) -> f32 {
        (self.u - self.l) / self.n
    }
}

/// Activation codes of a map, zero-padded like [`FeatureMap`] (border codes are 0 and stand
/// for padding, not for `l`).
#[derive(Clone, Debug, PartialEq)]
pub struct CodeMap {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub codes: Vec<u8>,
}

impl CodeMap {
    /// Quantizes the interior of `x` (half-to-even rounding, as the fake-quant reference).
    pub fn quantize(x: &FeatureMap, q: ActQuant) -> Self {
        let mut codes = vec![0u8; x.data.len()];
        for y in 0..x.h {
            let i = x.idx(y, 0);
            for (d, &v) in codes[i..i + x.w * x.c].iter_mut().zip(x.row(y)) {
                *d = quant::act_code(v, q.l, q.u, q.n) as u8;
            }
        }
        Self {
            h: x.h,
            w: x.w,
            c: x.c,
            codes,
        }
    }
}

/// Weight codes of a conv, `[tap][cin][cout]` like [`super::conv::ConvWeights`].
#[derive(Clone, Debug, PartialEq)]
pub struct IntWeights {
    pub cin: usize,
    pub cout: usize,
    pub codes: Vec<u8>,
    /// `Σ_i k[tap][i][o]`, `[tap][cout]`.
    pub tap_sums: Vec<i32>,
    pub u_w: f32,
    /// `2^b_w − 1`.
    pub m: f32,
    pub bias: Vec<f32>,
}

impl IntWeights {
    /// From PyTorch-layout float weights `[cout][cin][3][3]`, quantized at `bits` with clip `u_w`.
    pub fn from_oihw(
        cin: usize,
        cout: usize,
        oihw: &[f32],
        bias: &[f32],
        u_w: f32,
        bits: u8,
    ) -> Self {
        assert_eq!(oihw.len(), cout * cin * 9);
        let m = quant::levels(bits);
        let mut codes = vec![0u8; 9 * cin * cout];
        let mut tap_sums = vec![0i32; 9 * cout];
        for o in 0..cout {
            for i in 0..cin {
                for t in 0..9 {
                    let k = quant::weight_code(oihw[(o * cin + i) * 9 + t], u_w, m) as u8;
                    codes[(t * cin + i) * cout + o] = k;
                    tap_sums[t * cout + o] += k as i32;
                }
            }
        }
        Self {
            cin,
            cout,
            codes,
            tap_sums,
            u_w,
            m,
            bias: bias.to_vec(),
        }
    }
}

/// Valid tap offsets along one axis at coordinate `v` of `len`: (first, last) of −1..=1.
#[inline]
fn valid(v: usize, len: usize) -> (isize, isize) {
    (
        if v == 0 { 0 } else { -1 },
        if v + 1 == len { 0 } else { 1 },
    )
}

/// The integer sums at one output position: `Σq` and, per output channel, `Σqk`.
fn sums(x: &CodeMap, wt: &IntWeights, y: usize, xx: usize, sqk: &mut [i32]) -> i32 {
    let wp = x.w + 2;
    let c = x.c;
    sqk.fill(0);
    let mut sq = 0i32;
    for t in 0..9 {
        let (dy, dx) = (t / 3, t % 3); // padded coordinates: (y + dy, xx + dx)
        let p = ((y + dy) * wp + xx + dx) * c;
        for i in 0..c {
            let q = x.codes[p + i] as i32;
            sq += q;
            let row = &wt.codes[(t * c + i) * wt.cout..][..wt.cout];
            for (s, &k) in sqk.iter_mut().zip(row) {
                *s += q * k as i32;
            }
        }
    }
    sq
}

/// 3x3 convolution (zero padding of the dequantized input) of codes, bias included: the
/// floating-point value of `Σ x̂·ŵ + b` from the exact integer sums.
pub fn conv3x3_int_scalar(x: &CodeMap, a: ActQuant, wt: &IntWeights) -> FeatureMap {
    assert_eq!(x.c, wt.cin, "conv input channels");
    let mut out = FeatureMap::zeros(x.h, x.w, wt.cout);
    let (da, dw) = (a.step(), 2.0 * wt.u_w / wt.m);
    let mut sqk = vec![0i32; wt.cout];
    for y in 0..x.h {
        let (y0, y1) = valid(y, x.h);
        for xx in 0..x.w {
            let (x0, x1) = valid(xx, x.w);
            let sq = sums(x, wt, y, xx, &mut sqk);
            let n = ((y1 - y0 + 1) * (x1 - x0 + 1)) as i32 * x.c as i32;
            let o0 = out.idx(y, xx);
            for (o, &s) in sqk.iter().enumerate() {
                let mut sk = 0i32;
                for ty in y0..=y1 {
                    for tx in x0..=x1 {
                        sk += wt.tap_sums[(((ty + 1) * 3 + tx + 1) as usize) * wt.cout + o];
                    }
                }
                out.data[o0 + o] = wt.bias[o]
                    + da * (dw * s as f32 - wt.u_w * sq as f32)
                    + a.l * (dw * sk as f32 - wt.u_w * n as f32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::conv::{self, ConvWeights};
    use crate::engine::random::Rng;
    use gemm::Parallelism;

    /// Agrees with the fake-quant reference (conv of dequantized codes with fake-quant weights)
    /// at every bit-width pair, on odd sizes, 1-pixel maps, and the head / tail channel counts.
    #[test]
    fn matches_fake_quant_reference() {
        let mut rng = Rng::new(21);
        for &(h, w, cin, cout) in &[(5, 7, 8, 6), (1, 1, 4, 4), (1, 9, 3, 8), (6, 1, 8, 3)] {
            for a_bits in [2u8, 4, 6, 8] {
                for w_bits in [4u8, 8] {
                    let mut x = FeatureMap::zeros(h, w, cin);
                    for y in 0..h {
                        for v in x.row_mut(y) {
                            *v = rng.symmetric(3.0) + 0.5;
                        }
                    }
                    let (l, u) = (-1.7f32, 2.9f32);
                    let a = ActQuant::new(l, u, a_bits);
                    let wts: Vec<f32> = (0..9 * cin * cout).map(|_| rng.symmetric(0.4)).collect();
                    let bias: Vec<f32> = (0..cout).map(|_| rng.symmetric(0.2)).collect();
                    let u_w = 0.3;
                    let iw = IntWeights::from_oihw(cin, cout, &wts, &bias, u_w, w_bits);
                    let got = conv3x3_int_scalar(&CodeMap::quantize(&x, a), a, &iw);

                    let mut xq = x.clone();
                    xq.map_interior(|v| quant::act_fake_quant(v, l, u, a.n));
                    let wq: Vec<f32> = wts
                        .iter()
                        .map(|&v| quant::weight_fake_quant(v, u_w, quant::levels(w_bits)))
                        .collect();
                    let cw = ConvWeights::from_oihw(cin, cout, &wq, &bias);
                    let want = conv::conv3x3(&xq, &cw, Parallelism::None);
                    for (g, e) in got.data.iter().zip(&want.data) {
                        assert!(
                            (g - e).abs() <= 1e-4 * (1.0 + e.abs()) * (cin as f32).sqrt(),
                            "{h}x{w}x{cin}->{cout} a{a_bits} w{w_bits}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn codes_stay_on_the_grid_and_padding_is_zero() {
        let mut x = FeatureMap::zeros(3, 4, 2);
        for y in 0..3 {
            for (i, v) in x.row_mut(y).iter_mut().enumerate() {
                *v = i as f32 - 4.0;
            }
        }
        let a = ActQuant::new(-2.0, 2.0, 3);
        let c = CodeMap::quantize(&x, a);
        assert!(c.codes.iter().all(|&q| q <= 7));
        // Border codes stay 0 (padding), interior below l clamps to code 0 too.
        assert_eq!(c.codes[..(4 + 2) * 2], [0; 12]);
        assert_eq!(c.codes[x.idx(0, 3)..][..2], [7, 7]);
    }
}
