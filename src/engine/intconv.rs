//! Activation codes: the quantized form of feature maps that the integer engines run on.
//! The integer convolution and its exact semantics are in [`super::intnet`].

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

    /// `N / (u − l)`: codes are `round((clamp(x, l, u) − l) · N/(u − l))` in the integer
    /// engines (one multiply instead of a division per value).
    pub fn inv_step(&self) -> f32 {
        self.n / (self.u - self.l)
    }

    /// The code of `x`: `round_half_even((clamp(x, l, u) − l) · (N / (u − l)))` (NaN gives 0).
    /// Rounded with [`quant::round_even_small`] (the argument is at most `N ≤ 255`), not
    /// `round_ties_even`: on baseline x86-64 that is a `rintf` call per value, and
    /// quantizing the feature maps of the non-fq integer engine spent 16% of its time there.
    #[inline]
    pub fn code(&self, x: f32) -> u8 {
        quant::round_even_small((quant::clamp(x, self.l, self.u) - self.l) * self.inv_step()) as u8
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
    /// Quantizes the interior of `x` with [`ActQuant::code`].
    pub fn quantize(x: &FeatureMap, q: ActQuant) -> Self {
        let mut codes = vec![0u8; x.data.len()];
        for y in 0..x.h {
            let i = x.idx(y, 0);
            for (d, &v) in codes[i..i + x.w * x.c].iter_mut().zip(x.row(y)) {
                *d = q.code(v);
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// `code` is `round_ties_even((x.clamp(l, u) − l) · N/(u − l)) as u8` for every input: the
    /// values on and next to each half-way point, far outside the range, ±0, ±inf and NaN,
    /// at every bit-width, for ranges on either side of 0 and tiny ones.
    #[test]
    fn codes_round_half_to_even_as_the_reference() {
        let reference = |a: &ActQuant, x: f32| {
            ((x.clamp(a.l, a.u) - a.l) * a.inv_step()).round_ties_even() as u8
        };
        let mut rng = crate::engine::random::Rng::new(77);
        let mut halves = 0;
        for bits in 1..=8u8 {
            for (l, u) in [
                (-2.0f32, 2.0f32),
                (0.0, 255.0),
                (-37.5, -1.25),
                (3.0, 3.0001),
                (0.0, 1.0),
            ] {
                let a = ActQuant::new(l, u, bits);
                let mut xs = vec![
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    0.0,
                    -0.0,
                    l,
                    u,
                    1e30,
                    -1e30,
                ];
                for k in 0..=(1u32 << bits) {
                    // The input whose scaled value is k + 0.5, and its neighbours.
                    let x = l + (k as f32 + 0.5) / a.inv_step();
                    xs.extend([x, x.next_up(), x.next_down()]);
                    let scaled = (x.clamp(l, u) - l) * a.inv_step();
                    halves += (scaled.fract() == 0.5) as u32;
                }
                xs.extend((0..200).map(|_| l + (u - l) * (rng.uniform() * 1.4 - 0.2)));
                for x in xs {
                    assert_eq!(
                        a.code(x),
                        reference(&a, x),
                        "{bits} bits, [{l}, {u}], x = {x:e}"
                    );
                }
            }
        }
        assert!(halves > 100, "only {halves} exact half-way points were hit");
    }
}
