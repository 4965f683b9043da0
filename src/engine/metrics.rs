//! Quality measures as the method page defines them: PSNR and SSIM on the Y channel
//! (Y = 16 + (65.738 R + 129.057 G + 25.064 B) / 256 on 0–255 values), a border of `shave`
//! pixels removed, on 8-bit images.

/// The Y channel of an interleaved RGB u8 image, with `shave` pixels cut from every border.
pub fn luma(rgb: &[u8], w: usize, h: usize, shave: usize) -> (Vec<f64>, usize, usize) {
    assert_eq!(rgb.len(), w * h * 3);
    let (cw, ch) = (w.saturating_sub(2 * shave), h.saturating_sub(2 * shave));
    let mut y = Vec::with_capacity(cw * ch);
    for r in shave..shave + ch {
        for c in shave..shave + cw {
            let p = &rgb[(r * w + c) * 3..][..3];
            y.push(
                16.0 + (65.738 * p[0] as f64 + 129.057 * p[1] as f64 + 25.064 * p[2] as f64)
                    / 256.0,
            );
        }
    }
    (y, cw, ch)
}

/// PSNR in dB between two RGB u8 images of the same size (infinite when identical).
pub fn psnr_y(a: &[u8], b: &[u8], w: usize, h: usize, shave: usize) -> f64 {
    let (ya, ..) = luma(a, w, h, shave);
    let (yb, ..) = luma(b, w, h, shave);
    let mse = ya
        .iter()
        .zip(&yb)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        / ya.len() as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// SSIM (Wang et al.; Gaussian window 11, sigma 1.5, C1 = (0.01·255)², C2 = (0.03·255)²,
/// mean over the positions where the window fits) on the Y channel.
pub fn ssim_y(a: &[u8], b: &[u8], w: usize, h: usize, shave: usize) -> f64 {
    let (ya, cw, ch) = luma(a, w, h, shave);
    let (yb, ..) = luma(b, w, h, shave);
    ssim_plane(&ya, &yb, cw, ch)
}

/// SSIM of two f64 planes (0–255 range).
pub fn ssim_plane(a: &[f64], b: &[f64], w: usize, h: usize) -> f64 {
    const R: usize = 5;
    let g: Vec<f64> = (0..=2 * R)
        .map(|i| (-((i as f64 - R as f64).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let sum: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / sum).collect();
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    assert!(
        w > 2 * R && h > 2 * R,
        "SSIM needs at least 11x11 pixels, got {w}x{h}"
    );
    let mut total = 0.0;
    for y in R..h - R {
        for x in R..w - R {
            let (mut ma, mut mb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (dy, gy) in g.iter().enumerate() {
                for (dx, gx) in g.iter().enumerate() {
                    let k = gy * gx;
                    let i = (y + dy - R) * w + x + dx - R;
                    ma += k * a[i];
                    mb += k * b[i];
                    saa += k * a[i] * a[i];
                    sbb += k * b[i] * b[i];
                    sab += k * a[i] * b[i];
                }
            }
            let (va, vb, cov) = (saa - ma * ma, sbb - mb * mb, sab - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        }
    }
    total / ((w - 2 * R) * (h - 2 * R)) as f64
}

/// Percentile `p` (0–100) with linear interpolation between order statistics, as
/// `torch.quantile` and NumPy's default.
pub fn percentile(values: &[f32], p: f32) -> f32 {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let pos = p / 100.0 * (v.len() - 1) as f32;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images() {
        let img: Vec<u8> = (0..20 * 16 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert!(psnr_y(&img, &img, 20, 16, 2).is_infinite());
        assert!((ssim_y(&img, &img, 20, 16, 2) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_a_known_offset() {
        // Gray images 10 levels apart in R=G=B: ΔY = 10 · (65.738 + 129.057 + 25.064) / 256.
        let a = vec![100u8; 8 * 8 * 3];
        let b = vec![110u8; 8 * 8 * 3];
        let dy = 10.0 * (65.738 + 129.057 + 25.064) / 256.0;
        let want = 10.0 * (255.0f64 * 255.0 / (dy * dy)).log10();
        assert!((psnr_y(&a, &b, 8, 8, 2) - want).abs() < 1e-9);
    }

    #[test]
    fn ssim_of_constant_planes() {
        // Constant planes: variances and covariance vanish, SSIM = (2ab + C1) / (a² + b² + C1).
        let (a, b) = (vec![50.0; 144], vec![60.0; 144]);
        let c1 = (0.01f64 * 255.0).powi(2);
        let want = (2.0 * 50.0 * 60.0 + c1) / (50.0f64 * 50.0 + 60.0 * 60.0 + c1);
        assert!((ssim_plane(&a, &b, 12, 12) - want).abs() < 1e-12);
    }
}
