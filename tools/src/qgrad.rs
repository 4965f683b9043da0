//! Gradients of the AdaBM quantizers as the reference trains them (the building blocks of
//! fine-tuning): rounding is straight-through (`round` passes the gradient unchanged), the
//! layer bit `round(clamp(m, −1, 1))` back-propagates through `tanh(m)`, and the image bit
//! back-propagates through `tanh((c − (u+l)/2) · 2/(u − l))` (hard value forward, soft
//! gradient backward).
//!
//! Each function returns the forward value and its partial derivatives. The tests check them
//! against finite differences of the "frozen residual" surrogate: the same function with every
//! rounding replaced by its argument plus the rounding residual at the evaluation point — the
//! function whose true gradient the straight-through estimator computes.

use gstadabm::engine::quant;

/// Activation fake-quant `y = round(t·N)/N · (u − l) + l`, `t = (clamp(x, l, u) − l)/(u − l)`,
/// and `∂y/∂x`, `∂y/∂l`, `∂y/∂u`, `∂y/∂N` under straight-through rounding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActGrad {
    pub y: f32,
    pub dx: f32,
    pub dl: f32,
    pub du: f32,
    pub dn: f32,
}

pub fn act_quant(x: f32, l: f32, u: f32, n: f32) -> ActGrad {
    let r = u - l;
    let t = (quant::clamp(x, l, u) - l) / r;
    let q = quant::round_even_small(t * n);
    let y = q / n * r + l;
    // torch.clamp's convention: a value on a bound is inside (its gradient goes to x).
    let inside = x >= l && x <= u;
    // y = (q/N)·r + l with dq = N·dt:
    //   inside: ∂y/∂x = 1, ∂y/∂u = q/N − t, ∂y/∂l = t − q/N;
    //   x < l: y = l (∂y/∂l = 1); x > u: y = u (∂y/∂u = 1).
    let (dx, dl, du) = if inside {
        (1.0, t - q / n, q / n - t)
    } else if x < l {
        (0.0, 1.0, 0.0)
    } else {
        (0.0, 0.0, 1.0)
    };
    // ∂(q/N)/∂N with dq = t·dN: t/N − q/N².
    let dn = r * (t / n - q / (n * n));
    ActGrad { y, dx, dl, du, dn }
}

/// Weight fake-quant `ŵ = round(t·M)/M · 2u_w − u_w`, `t = (clamp(w, −u_w, u_w) + u_w)/(2u_w)`,
/// and `∂ŵ/∂u_w` under straight-through rounding (the weights themselves are frozen).
pub fn weight_quant(w: f32, u_w: f32, m: f32) -> (f32, f32) {
    let t = (quant::clamp(w, -u_w, u_w) + u_w) / (2.0 * u_w);
    let k = quant::round_even_small(t * m);
    let y = k / m * 2.0 * u_w - u_w;
    // torch.clamp's convention: a weight on the clip is inside.
    let d = if w > u_w {
        1.0
    } else if w < -u_w {
        -1.0
    } else {
        // y = (k/M)·2u_w − u_w with dk = M·dt, dt/du_w = −(w)/(2u_w²) = (1 − 2t)/(2u_w).
        2.0 * k / m - 1.0 + (1.0 - 2.0 * t)
    };
    (y, d)
}

/// `N = 2^b − 1` and `dN/db = 2^b ln 2` (bits are real-valued in training).
pub fn levels(bits: f32) -> (f32, f32) {
    let p = bits.exp2();
    (p - 1.0, p * std::f32::consts::LN_2)
}

/// Layer bit: forward `round(clamp(m, −1, 1))`, backward `d tanh(m)/dm`.
pub fn layer_bit(m: f32) -> (f32, f32) {
    let th = m.tanh();
    (quant::layer_bit(m) as f32, 1.0 - th * th)
}

/// Image bit: forward −1 / 0 / +1 from the thresholds, backward the gradient of
/// `tanh((c − (u+l)/2) · 2/(u − l))` with respect to `l` and `u`.
pub fn image_bit(c: f32, l: f32, u: f32) -> (f32, f32, f32) {
    let r = u - l;
    let z = (c - 0.5 * (u + l)) * 2.0 / r;
    let s = 1.0 - z.tanh().powi(2);
    // z = (2c − u − l)/(u − l): ∂z/∂l = (−(u − l) + (2c − u − l))/r² = 2(c − u)/r²,
    // ∂z/∂u = (−(u − l) − (2c − u − l))/r² = 2(l − c)/r².
    let dl = s * 2.0 * (c - u) / (r * r);
    let du = s * 2.0 * (l - c) / (r * r);
    (quant::image_bit(c, l, u) as f32, dl, du)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `round` replaced by identity plus the residual frozen at the evaluation point.
    fn act_surrogate(x: f64, l: f64, u: f64, n: f64, res: f64) -> f64 {
        let r = u - l;
        let t = (x.clamp(l, u) - l) / r;
        (t * n + res) / n * r + l
    }

    fn close(num: f64, ana: f32, what: &str) {
        assert!(
            (num - ana as f64).abs() <= 1e-4 * (1.0 + num.abs()),
            "{what}: numerical {num} vs analytic {ana}"
        );
    }

    #[test]
    fn activation_quantizer_gradients() {
        let (l, u) = (-1.3f32, 2.1f32);
        for bits in [2.0f32, 4.0, 6.0] {
            let (n, _) = levels(bits);
            for i in 0..60 {
                let x = -2.0 + 0.0731 * i as f32;
                if (x - l).abs() < 1e-3 || (x - u).abs() < 1e-3 {
                    continue;
                }
                let g = act_quant(x, l, u, n);
                assert_eq!(g.y, quant::act_fake_quant(x, l, u, n));
                let t = ((x.clamp(l, u) - l) / (u - l)) as f64;
                let res = (t * n as f64).round_ties_even() - t * n as f64;
                let f = |x: f64, l: f64, u: f64, n: f64| act_surrogate(x, l, u, n, res);
                let e = 1e-5;
                let (xd, ld, ud, nd) = (x as f64, l as f64, u as f64, n as f64);
                close(
                    (f(xd + e, ld, ud, nd) - f(xd - e, ld, ud, nd)) / (2.0 * e),
                    g.dx,
                    "dx",
                );
                close(
                    (f(xd, ld + e, ud, nd) - f(xd, ld - e, ud, nd)) / (2.0 * e),
                    g.dl,
                    "dl",
                );
                close(
                    (f(xd, ld, ud + e, nd) - f(xd, ld, ud - e, nd)) / (2.0 * e),
                    g.du,
                    "du",
                );
                close(
                    (f(xd, ld, ud, nd + e) - f(xd, ld, ud, nd - e)) / (2.0 * e),
                    g.dn,
                    "dn",
                );
            }
        }
    }

    #[test]
    fn weight_quantizer_and_bit_gradients() {
        let u_w = 0.37f32;
        for bits in [4.0f32, 8.0] {
            let (m, _) = levels(bits);
            for i in 0..50 {
                let w = -0.5 + 0.0213 * i as f32;
                if (w.abs() - u_w).abs() < 1e-3 {
                    continue;
                }
                let (y, d) = weight_quant(w, u_w, m);
                assert_eq!(y, quant::weight_fake_quant(w, u_w, m));
                let t = ((w.clamp(-u_w, u_w) + u_w) / (2.0 * u_w)) as f64;
                let res = (t * m as f64).round_ties_even() - t * m as f64;
                let f = |uw: f64| {
                    let t = ((w as f64).clamp(-uw, uw) + uw) / (2.0 * uw);
                    (t * m as f64 + res) / m as f64 * 2.0 * uw - uw
                };
                let e = 1e-6;
                close(
                    (f(u_w as f64 + e) - f(u_w as f64 - e)) / (2.0 * e),
                    d,
                    "du_w",
                );
            }
        }
        for b in [2.0f32, 4.5, 8.0] {
            let (n, dn) = levels(b);
            let e = 1e-3;
            let num = (((b + e).exp2() - 1.0) - ((b - e).exp2() - 1.0)) / (2.0 * e);
            assert!((n - (b.exp2() - 1.0)).abs() < 1e-6 && (num - dn).abs() < 1e-2 * dn);
        }
        for m in [-1.7f32, -0.4, 0.0, 0.6, 2.0] {
            let (hard, d) = layer_bit(m);
            assert_eq!(hard, m.clamp(-1.0, 1.0).round_ties_even());
            let num = (((m + 1e-3).tanh() - (m - 1e-3).tanh()) / 2e-3) as f64;
            close(num, d, "dm");
        }
        let (l, u) = (10.0f32, 30.0f32);
        for c in [5.0f32, 12.0, 20.0, 29.0, 44.0] {
            let (hard, dl, du) = image_bit(c, l, u);
            assert_eq!(hard, quant::image_bit(c, l, u) as f32);
            let soft = |l: f64, u: f64| ((c as f64 - (u + l) / 2.0) * 2.0 / (u - l)).tanh();
            let e = 1e-4;
            let (ld, ud) = (l as f64, u as f64);
            close(
                (soft(ld + e, ud) - soft(ld - e, ud)) / (2.0 * e),
                dl,
                "dl_i2b",
            );
            close(
                (soft(ld, ud + e) - soft(ld, ud - e)) / (2.0 * e),
                du,
                "du_i2b",
            );
        }
    }
}
