//! AdaBM quantizers (method page, "Quantizers"), in floating point ("fake quant").
//!
//! Rounding is half-to-even, as `torch.round` in the reference implementation.

/// Number of steps of a `bits`-bit grid: `2^bits - 1`.
#[inline]
pub fn levels(bits: u8) -> f32 {
    ((1u32 << bits) - 1) as f32
}

/// `x.round_ties_even()` bit for bit for `|x| < 2^22` and for NaN and ±inf (which pass
/// through), inlined and without a branch, so loops over it vectorise: adding and subtracting
/// `1.5·2^23` rounds half to even in the FPU (the sum's unit in the last place is 1), and
/// `copysign` keeps the −0.0 of `x ∈ [−0.5, −0.0]`. On baseline x86-64 (no SSE4.1 `roundss`)
/// `round_ties_even` is a libm call per value. The quantizers' arguments are `t·N` with
/// `t ∈ [0, 1]` and `N ≤ 255`.
#[inline(always)]
pub fn round_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    ((x + MAGIC) - MAGIC).copysign(x)
}

/// `x.clamp(lo, hi)` without its assertion, so that loops over it vectorise: the same value
/// for every `x` (NaN passes through) when `lo ≤ hi`, which the callers guarantee (quantizer
/// ranges and clips are validated when a model is built).
#[inline(always)]
pub fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// Activation code `q = round((clamp(x, l, u) - l) / (u - l) * (2^b - 1))`.
#[inline]
pub fn act_code(x: f32, l: f32, u: f32, n: f32) -> f32 {
    round_even_small((clamp(x, l, u) - l) / (u - l) * n)
}

/// Activation fake-quant: `x̂ = q / (2^b - 1) * (u - l) + l`.
#[inline]
pub fn act_fake_quant(x: f32, l: f32, u: f32, n: f32) -> f32 {
    act_code(x, l, u, n) / n * (u - l) + l
}

/// Weight code `k = round((clamp(w, -u_w, u_w) + u_w) / (2 u_w) * (2^b_w - 1))`.
#[inline]
pub fn weight_code(w: f32, u_w: f32, n: f32) -> f32 {
    round_even_small((clamp(w, -u_w, u_w) + u_w) / (2.0 * u_w) * n)
}

/// Weight fake-quant: `ŵ = k / (2^b_w - 1) * 2 u_w - u_w`.
#[inline]
pub fn weight_fake_quant(w: f32, u_w: f32, n: f32) -> f32 {
    weight_code(w, u_w, n) / n * 2.0 * u_w - u_w
}

/// Image-level bit offset: -1 below `lower`, +1 above `upper`, else 0.
#[inline]
pub fn image_bit(c: f32, lower: f32, upper: f32) -> i32 {
    if c < lower {
        -1
    } else if c > upper {
        1
    } else {
        0
    }
}

/// The image thresholds `(lower, upper)` with hysteresis for a frame whose predecessor had
/// b_I = `prev`: each threshold moved by `h · |threshold|` away from `prev`'s side, so that
/// [`image_bit`] with them changes b_I only when the complexity crosses a threshold by that
/// margin (a video whose complexity hovers at a threshold keeps its bits instead of toggling
/// them frame by frame). `h = 0` gives the thresholds unchanged.
pub fn sticky_thresholds(lower: f32, upper: f32, prev: i32, h: f32) -> (f32, f32) {
    let (ml, mu) = (h * lower.abs(), h * upper.abs());
    (
        if prev >= 0 { lower - ml } else { lower + ml },
        if prev >= 1 { upper - mu } else { upper + mu },
    )
}

/// Layer-level bit offset from the stored factor m_k: `round(clamp(m_k, -1, 1))`.
#[inline]
pub fn layer_bit(m: f32) -> i32 {
    m.clamp(-1.0, 1.0).round_ties_even() as i32
}

/// `b_base + b_I + b_L`, kept inside 1..=8.
#[inline]
pub fn adaptive_bits(base: u8, b_i: i32, b_l: i32) -> u8 {
    (base as i32 + b_i + b_l).clamp(1, 8) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_is_std_clamp() {
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            2.5,
            -7.25,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            1e30,
        ];
        for &(lo, hi) in &[
            (0.0f32, 1.0f32),
            (-3.0, 2.5),
            (-0.0, 0.0),
            (2.5, 2.5),
            (-7.25, 1e30),
        ] {
            for &x in &specials {
                assert_eq!(
                    clamp(x, lo, hi).to_bits(),
                    x.clamp(lo, hi).to_bits(),
                    "{x} in [{lo}, {hi}]"
                );
            }
            assert!(clamp(f32::NAN, lo, hi).is_nan());
        }
    }

    #[test]
    fn round_even_small_is_round_ties_even() {
        let mut v: Vec<f32> = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.49999997,
            254.5,
            255.5,
            4_194_303.5,
            4_194_304.0,
            4_194_304.5,
            -4_194_305.5,
            6_000_000.5,
            8_388_607.5,
            16_777_217.0,
            1e30,
            -1e30,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut r = crate::engine::random::Rng::new(3);
        for _ in 0..200_000 {
            let x = r.symmetric(300.0);
            v.extend([x, x.round() + 0.5, x * 1e5]);
        }
        for x in v {
            let b = x.round_ties_even();
            let a = round_even_small(x);
            if !(x.abs() >= 4_194_304.0 && x.is_finite()) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{x}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn activation_grid_by_hand() {
        // 2 bits over [0, 3]: grid 0, 1, 2, 3.
        let n = levels(2);
        assert_eq!(n, 3.0);
        assert_eq!(act_fake_quant(-5.0, 0.0, 3.0, n), 0.0);
        assert_eq!(act_fake_quant(1.2, 0.0, 3.0, n), 1.0);
        assert_eq!(act_fake_quant(2.6, 0.0, 3.0, n), 3.0);
        assert_eq!(act_fake_quant(9.0, 0.0, 3.0, n), 3.0);
        // Half-to-even: 0.5 -> 0, 1.5 -> 2.
        assert_eq!(act_code(0.5, 0.0, 3.0, n), 0.0);
        assert_eq!(act_code(1.5, 0.0, 3.0, n), 2.0);
        // Zero is not on a grid that does not contain it.
        assert_eq!(act_fake_quant(0.0, -1.0, 2.0, levels(1)), -1.0);
    }

    #[test]
    fn weight_grid_has_no_zero() {
        // 4 bits over [-1.5, 1.5]: 16 levels, step 0.2, -1.5 .. 1.5, zero is not a level.
        let n = levels(4);
        let z = weight_fake_quant(0.0, 1.5, n);
        assert!((z.abs() - 0.1).abs() < 1e-6, "{z}");
        assert_eq!(weight_fake_quant(7.0, 1.5, n), 1.5);
        assert_eq!(weight_fake_quant(-7.0, 1.5, n), -1.5);
    }

    #[test]
    fn bit_offsets() {
        assert_eq!(image_bit(1.0, 2.0, 3.0), -1);
        assert_eq!(image_bit(2.5, 2.0, 3.0), 0);
        assert_eq!(image_bit(3.5, 2.0, 3.0), 1);
    }

    /// With hysteresis b_I keeps the previous frame's value until the complexity is past a
    /// threshold by the margin, in either direction and at either threshold; without, it is
    /// `image_bit`'s.
    #[test]
    fn sticky_thresholds_keep_the_bits_near_a_threshold() {
        let (l, u, h) = (10.0, 20.0, 0.1);
        let b = |c: f32, prev: i32| {
            let (l, u) = sticky_thresholds(l, u, prev, h);
            image_bit(c, l, u)
        };
        // Around the lower threshold (margin 1).
        assert_eq!(
            [b(9.5, 0), b(8.9, 0), b(10.5, -1), b(11.1, -1)],
            [0, -1, -1, 0]
        );
        // Around the upper one (margin 2).
        assert_eq!(
            [b(21.0, 0), b(22.1, 0), b(19.0, 1), b(17.9, 1)],
            [0, 1, 1, 0]
        );
        // Far past both: the jump is taken at once.
        assert_eq!([b(5.0, 1), b(30.0, -1)], [-1, 1]);
        for c in [5.0, 9.5, 10.0, 10.5, 15.0, 20.0, 21.0, 30.0] {
            for prev in [-1, 0, 1] {
                let (l0, u0) = sticky_thresholds(l, u, prev, 0.0);
                assert_eq!(image_bit(c, l0, u0), image_bit(c, l, u));
            }
        }
        assert_eq!(layer_bit(-0.7), -1);
        assert_eq!(layer_bit(0.4), 0);
        assert_eq!(layer_bit(3.0), 1);
        assert_eq!(adaptive_bits(4, 1, 1), 6);
        assert_eq!(adaptive_bits(1, -1, -1), 1);
        assert_eq!(adaptive_bits(8, 1, 0), 8);
    }
}
