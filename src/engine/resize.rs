//! MATLAB-compatible bicubic `imresize` (the degradation that makes the standard SR benchmark
//! and training LR images): cubic kernel a = -0.5, antialiasing when downscaling (the kernel is
//! stretched by 1/scale), symmetric boundary, height resized before width, and, as MATLAB does
//! for uint8 images, each pass rounded back to 8 bits.

/// The cubic convolution kernel with a = -0.5 (Keys).
fn cubic(x: f64) -> f64 {
    let ax = x.abs();
    let (ax2, ax3) = (ax * ax, ax * ax * ax);
    if ax <= 1.0 {
        1.5 * ax3 - 2.5 * ax2 + 1.0
    } else if ax <= 2.0 {
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    } else {
        0.0
    }
}

/// Per output index: (first input index, weights) after symmetric boundary folding.
fn contributions(in_len: usize, out_len: usize, scale: f64) -> Vec<Vec<(usize, f64)>> {
    let antialias = scale < 1.0;
    let width = if antialias { 4.0 / scale } else { 4.0 };
    let taps = width.ceil() as isize + 2;
    (1..=out_len)
        .map(|i| {
            let u = i as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
            let left = (u - width / 2.0).floor() as isize;
            let mut w: Vec<(isize, f64)> = (0..taps)
                .map(|k| {
                    let j = left + k;
                    let d = u - j as f64;
                    let h = if antialias {
                        scale * cubic(scale * d)
                    } else {
                        cubic(d)
                    };
                    (j, h)
                })
                .collect();
            let sum: f64 = w.iter().map(|(_, h)| h).sum();
            w.iter_mut().for_each(|(_, h)| *h /= sum);
            // Symmetric padding: 1-based j mirrored into 1..=in_len.
            let n = in_len as isize;
            let mut folded: Vec<(usize, f64)> = Vec::new();
            for (j, h) in w {
                if h == 0.0 {
                    continue;
                }
                let m = (j - 1).rem_euclid(2 * n);
                let idx = if m < n { m } else { 2 * n - 1 - m } as usize;
                folded.push((idx, h));
            }
            folded
        })
        .collect()
}

fn round_u8(v: f64) -> f64 {
    // MATLAB rounds half away from zero when casting to uint8.
    v.round().clamp(0.0, 255.0)
}

/// Resizes an interleaved 8-bit image with `channels` channels by `scale` (output size
/// `ceil(w * scale) x ceil(h * scale)`, as MATLAB's imresize with a scale factor).
pub fn imresize_bicubic(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    scale: f64,
) -> (Vec<u8>, usize, usize) {
    assert_eq!(src.len(), w * h * channels);
    let ow = (w as f64 * scale).ceil() as usize;
    let oh = (h as f64 * scale).ceil() as usize;
    let cy = contributions(h, oh, scale);
    let cx = contributions(w, ow, scale);
    // Height first.
    let mut mid = vec![0.0f64; oh * w * channels];
    for (oy, taps) in cy.iter().enumerate() {
        for x in 0..w {
            for c in 0..channels {
                let v: f64 = taps
                    .iter()
                    .map(|&(iy, k)| k * src[(iy * w + x) * channels + c] as f64)
                    .sum();
                mid[(oy * w + x) * channels + c] = round_u8(v);
            }
        }
    }
    let mut out = vec![0u8; oh * ow * channels];
    for y in 0..oh {
        for (ox, taps) in cx.iter().enumerate() {
            for c in 0..channels {
                let v: f64 = taps
                    .iter()
                    .map(|&(ix, k)| k * mid[(y * w + ix) * channels + c])
                    .sum();
                out[(y * ow + ox) * channels + c] = round_u8(v) as u8;
            }
        }
    }
    (out, ow, oh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_stays_constant() {
        let (out, w, h) = imresize_bicubic(&[77; 9 * 6 * 3], 9, 6, 3, 0.5);
        assert_eq!((w, h), (5, 3));
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn kernel_weights_sum_to_one_and_fold_symmetrically() {
        for taps in contributions(7, 3, 1.0 / 3.0) {
            let s: f64 = taps.iter().map(|t| t.1).sum();
            assert!((s - 1.0).abs() < 1e-12);
            assert!(taps.iter().all(|&(i, _)| i < 7));
        }
    }
}
