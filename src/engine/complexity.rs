//! Image complexity: average gradient density of the LR input (method page, "Image → bit").
//!
//! Y = 0.299 R + 0.587 G + 0.114 B on I/255; Sobel 3x3 kernels divided by 8; replicate padding;
//! c = 1000 · mean over pixels and both directions of |G|.
//!
//! The per-pixel terms `|Gx|/8 + |Gy|/8` (at most 1) are summed in 2^-24 fixed point: an
//! exact integer sum whatever the order, so the GPU's parallel reduction gives the same `c` to
//! the bit (the fixed-point rounding moves `c` by less than 1e-7 relative).
//!
//! All three metrics run on the current rayon pool with the results of a sequential pass:
//! the per-pixel, per-block and per-query terms are computed in parallel, and the f64 sums of
//! the frequency and attention metrics are then taken in their defined order (block, window
//! and query order), so a value never depends on the thread count.

use rayon::prelude::*;

/// Fixed-point scale of the per-pixel terms.
pub const FIXED_ONE: f32 = 16_777_216.0;

/// Luma `Y = 0.299 R + 0.587 G + 0.114 B` of 0–255 RGB, on 0–1; None for an empty image.
fn luma(rgb: &[f32], w: usize, h: usize) -> Option<Vec<f32>> {
    let mut y = Vec::new();
    luma_into(rgb, w, h, &mut y).then_some(y)
}

/// [`luma`] into `y` (reusing its memory); false for an empty image.
fn luma_into(rgb: &[f32], w: usize, h: usize, y: &mut Vec<f32>) -> bool {
    assert_eq!(rgb.len(), w * h * 3, "complexity: image length");
    y.clear();
    y.par_extend(
        rgb.par_chunks_exact(3)
            .map(|p| (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) / 255.0),
    );
    w > 0 && h > 0
}

/// Gradient density of an interleaved RGB image of 0–255 values (`h * w * 3`).
pub fn gradient_density(rgb: &[f32], w: usize, h: usize) -> f32 {
    gradient_density_with(rgb, w, h, &mut Vec::new())
}

/// [`gradient_density`] with `y` as the luma plane's memory.
fn gradient_density_with(rgb: &[f32], w: usize, h: usize, y: &mut Vec<f32>) -> f32 {
    if !luma_into(rgb, w, h, y) {
        return 0.0;
    }
    // Integer sums: the same whatever the order, so rows run in parallel.
    let sum: u64 = (0..h)
        .into_par_iter()
        .with_min_len(8)
        .map(|r| (0..w).map(|c| sobel_fixed(y, w, h, r, c)).sum::<u64>())
        .sum();
    density_from_fixed(sum, w, h)
}

/// The gradient density's term of pixel (r, c) of luma `y` (edges replicated): `|Sobel x| / 8
/// + |Sobel y| / 8`, in [`FIXED_ONE`] fixed point.
fn sobel_fixed(y: &[f32], w: usize, h: usize, r: usize, c: usize) -> u64 {
    let at = |dy: isize, dx: isize| {
        let yy = (r as isize + dy).clamp(0, h as isize - 1) as usize;
        let xx = (c as isize + dx).clamp(0, w as isize - 1) as usize;
        y[yy * w + xx]
    };
    let gx = (at(-1, 1) - at(-1, -1)) + 2.0 * (at(0, 1) - at(0, -1)) + (at(1, 1) - at(1, -1));
    let gy = (at(1, -1) - at(-1, -1)) + 2.0 * (at(1, 0) - at(-1, 0)) + (at(1, 1) - at(-1, 1));
    let t = gx.abs() / 8.0 + gy.abs() / 8.0;
    (t * FIXED_ONE).round_ties_even() as u64
}

/// Orthonormal 8-point DCT-II basis: `basis[k][n] = a(k) cos((2n + 1) k π / 16)`.
fn dct_basis() -> [[f64; 8]; 8] {
    let mut basis = [[0f64; 8]; 8];
    for (k, row) in basis.iter_mut().enumerate() {
        let a = if k == 0 {
            (1.0f64 / 8.0).sqrt()
        } else {
            (2.0f64 / 8.0).sqrt()
        };
        for (n, v) in row.iter_mut().enumerate() {
            *v = a * (((2 * n + 1) * k) as f64 * std::f64::consts::PI / 16.0).cos();
        }
    }
    basis
}

/// The 2-D DCT-II of the 8x8 luma block at `(bx, by)` (edges replicated).
#[allow(clippy::needless_range_loop)] // the DCT reads better with its indices
fn block_dct(
    y: &[f32],
    w: usize,
    h: usize,
    bx: usize,
    by: usize,
    basis: &[[f64; 8]; 8],
) -> [[f64; 8]; 8] {
    let mut block = [[0f64; 8]; 8];
    for (r, row) in block.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = y[(by + r).min(h - 1) * w + (bx + c).min(w - 1)] as f64;
        }
    }
    // Rows, then columns.
    let mut tmp = [[0f64; 8]; 8];
    for r in 0..8 {
        for k in 0..8 {
            tmp[r][k] = (0..8).map(|n| basis[k][n] * block[r][n]).sum();
        }
    }
    let mut out = [[0f64; 8]; 8];
    for u in 0..8 {
        for v in 0..8 {
            out[u][v] = (0..8).map(|n| basis[u][n] * tmp[n][v]).sum();
        }
    }
    out
}

/// Frequency-domain complexity: the share (per mille) of the luma's AC spectral energy that
/// lies at high frequencies. The luma (same weights as [`gradient_density`]) is cut into 8x8
/// blocks (edges replicated), each transformed by an orthonormal 2-D DCT-II; `c = 1000 ·
/// Σ C²(u,v) over u + v ≥ 4 / Σ C²(u,v) over (u,v) ≠ (0,0)`, summed over all blocks (f64, in
/// block order). Flat images give 0; noise and fine texture approach 1000·(share of the
/// high-frequency coefficients). Unlike the gradient density it ignores contrast.
pub fn frequency_density(rgb: &[f32], w: usize, h: usize) -> f32 {
    let Some(y) = luma(rgb, w, h) else {
        return 0.0;
    };
    let basis = dct_basis();
    // The blocks' DCTs in parallel, a chunk at a time (so that only a chunk's DCTs are held),
    // their energies summed in block order.
    const CHUNK: usize = 4096;
    let (tw, n) = (w.div_ceil(8), w.div_ceil(8) * h.div_ceil(8));
    let mut blocks = Vec::with_capacity(CHUNK.min(n));
    let (mut high, mut ac) = (0f64, 0f64);
    for start in (0..n).step_by(CHUNK) {
        (start..(start + CHUNK).min(n))
            .into_par_iter()
            .with_min_len(64)
            .map(|i| block_dct(&y, w, h, i % tw * 8, i / tw * 8, &basis))
            .collect_into_vec(&mut blocks);
        for c in &blocks {
            add_energies(c, &mut high, &mut ac);
        }
    }
    high_share(high, ac)
}

/// Adds block `c`'s AC energy to `ac` and its high-frequency energy (u + v ≥ 4) to `high`,
/// coefficient by coefficient in row order.
fn add_energies(c: &[[f64; 8]; 8], high: &mut f64, ac: &mut f64) {
    for (u, row) in c.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            let e = x * x;
            if u + v > 0 {
                *ac += e;
            }
            if u + v >= 4 {
                *high += e;
            }
        }
    }
}

/// The frequency metric from the summed energies: per mille of the AC energy that is high.
fn high_share(high: f64, ac: f64) -> f32 {
    if ac <= 1e-12 {
        0.0
    } else {
        (1000.0 * high / ac) as f32
    }
}

/// Tokens per side of an attention window (Swin-style local windows of 8x8 tokens).
pub const ATTENTION_WINDOW: usize = 8;
/// Softmax temperature of the attention logits (luma on 0–1).
pub const ATTENTION_TEMPERATURE: f64 = 0.01;

/// Attention-based complexity: how concentrated ViT-style self-attention over patch tokens of
/// the luma is.
///
/// - **Tokens**: one per 8x8 luma block (edges replicated), as in a ViT's patch embedding.
/// - **Projections**: queries and keys share one fixed linear projection of the flattened
///   block — its 14 lowest-frequency AC coefficients of the orthonormal 2-D DCT-II
///   (`1 ≤ u + v ≤ 4`); no learned weights, the DC term (brightness) is left out.
/// - **Attention**: within non-overlapping windows of 8x8 tokens (Swin-style, so the cost is
///   linear in the frame size), `A_ij = softmax_j(q_i·k_j / (√d · τ))`, d = 14, τ = 0.01.
/// - **Summary**: per query the normalised entropy `H_i / ln n` (n tokens in its window);
///   `c = 1000 · mean over queries of (1 − H_i / ln n)`, windows of one token skipped.
///
/// Flat or self-similar content (identical tokens) spreads attention evenly: c = 0. Distinct
/// structures attend mostly to themselves: c approaches 1000. Summed in f64 in window order.
pub fn attention_density(rgb: &[f32], w: usize, h: usize) -> f32 {
    let Some(y) = luma(rgb, w, h) else {
        return 0.0;
    };
    let basis = dct_basis();
    let (tw, th) = (w.div_ceil(8), h.div_ceil(8));
    let tokens: Vec<Token> = (0..tw * th)
        .into_par_iter()
        .with_min_len(64)
        .map(|i| token(&block_dct(&y, w, h, i % tw * 8, i / tw * 8, &basis)))
        .collect();
    let scale = 1.0 / ((TOKEN_DIM as f64).sqrt() * ATTENTION_TEMPERATURE);
    // Each window's per-query terms in parallel, then summed in window and query order.
    let windows: Vec<(usize, usize)> = (0..th)
        .step_by(ATTENTION_WINDOW)
        .flat_map(|wy| (0..tw).step_by(ATTENTION_WINDOW).map(move |wx| (wy, wx)))
        .collect();
    let terms: Vec<Vec<f64>> = windows
        .par_iter()
        .map(|&(wy, wx)| {
            let mut win: Vec<&Token> = Vec::with_capacity(ATTENTION_WINDOW * ATTENTION_WINDOW);
            for ty in wy..(wy + ATTENTION_WINDOW).min(th) {
                for tx in wx..(wx + ATTENTION_WINDOW).min(tw) {
                    win.push(&tokens[ty * tw + tx]);
                }
            }
            let n = win.len();
            if n < 2 {
                return Vec::new();
            }
            let (ln_n, mut logits) = ((n as f64).ln(), vec![0f64; n]);
            win.iter()
                .map(|q| attention_term(q, &win, scale, ln_n, &mut logits))
                .collect()
        })
        .collect();
    let (mut sum, mut count) = (0f64, 0usize);
    for t in terms.iter().flatten() {
        sum += t;
        count += 1;
    }
    attention_mean(sum, count)
}

/// Query and key dimension of the attention metric's tokens.
const TOKEN_DIM: usize = 14;
type Token = [f64; TOKEN_DIM];

/// A block's token: its DCT's 14 lowest-frequency AC coefficients (`1 ≤ u + v ≤ 4`), by
/// anti-diagonal.
fn token(c: &[[f64; 8]; 8]) -> Token {
    let mut t = [0f64; TOKEN_DIM];
    let mut k = 0;
    for s in 1..=4 {
        for u in 0..=s {
            t[k] = c[u][s - u];
            k += 1;
        }
    }
    t
}

/// Query `q`'s term `1 − H / ln n` over the n ≥ 2 tokens of its window `win` (`ln_n` = ln n;
/// `logits`, at least n long, is scratch).
fn attention_term(q: &Token, win: &[&Token], scale: f64, ln_n: f64, logits: &mut [f64]) -> f64 {
    let logits = &mut logits[..win.len()];
    let mut max = f64::NEG_INFINITY;
    for (l, k) in logits.iter_mut().zip(win) {
        *l = scale * q.iter().zip(k.iter()).map(|(a, b)| a * b).sum::<f64>();
        max = max.max(*l);
    }
    // H = log Z − Σ p·(l − max), with Z = Σ exp(l − max).
    let (mut z, mut zl) = (0f64, 0f64);
    for &l in logits.iter() {
        let e = (l - max).exp();
        z += e;
        zl += e * (l - max);
    }
    let entropy = z.ln() - zl / z;
    1.0 - (entropy / ln_n).clamp(0.0, 1.0)
}

/// The attention metric from the summed query terms.
fn attention_mean(sum: f64, count: usize) -> f32 {
    if count == 0 {
        0.0
    } else {
        (1000.0 * sum / count as f64) as f32
    }
}

/// The complexity of an image under `metric`.
pub fn measure(metric: super::ComplexityMetric, rgb: &[f32], w: usize, h: usize) -> f32 {
    measure_with(metric, rgb, w, h, &mut Vec::new())
}

/// [`measure`] with `luma` as the gradient density's luma plane (reused between frames; the
/// other metrics allocate their own).
pub fn measure_with(
    metric: super::ComplexityMetric,
    rgb: &[f32],
    w: usize,
    h: usize,
    luma: &mut Vec<f32>,
) -> f32 {
    match metric {
        super::ComplexityMetric::Gradient => gradient_density_with(rgb, w, h, luma),
        super::ComplexityMetric::Frequency => frequency_density(rgb, w, h),
        super::ComplexityMetric::Attention => attention_density(rgb, w, h),
    }
}

/// `c` from the fixed-point sum of the per-pixel terms.
pub fn density_from_fixed(sum: u64, w: usize, h: usize) -> f32 {
    (1000.0 * sum as f64 / FIXED_ONE as f64 / (2.0 * (w * h) as f64)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics as they were written before they ran in parallel (one thread, one pass, the
    /// sums in block, window and query order), over the same per-pixel, per-block and
    /// per-query terms: the parallel ones must give their values to the bit.
    mod sequential {
        use super::super::{
            ATTENTION_TEMPERATURE, ATTENTION_WINDOW, TOKEN_DIM, Token, add_energies,
            attention_mean, attention_term, block_dct, dct_basis, density_from_fixed, high_share,
            luma, luma_into, sobel_fixed, token,
        };

        pub fn gradient_density_with(rgb: &[f32], w: usize, h: usize, y: &mut Vec<f32>) -> f32 {
            if !luma_into(rgb, w, h, y) {
                return 0.0;
            }
            let mut sum = 0u64;
            for r in 0..h {
                for c in 0..w {
                    sum += sobel_fixed(y, w, h, r, c);
                }
            }
            density_from_fixed(sum, w, h)
        }

        pub fn frequency_density(rgb: &[f32], w: usize, h: usize) -> f32 {
            let Some(y) = luma(rgb, w, h) else {
                return 0.0;
            };
            let basis = dct_basis();
            let (mut high, mut ac) = (0f64, 0f64);
            for by in (0..h).step_by(8) {
                for bx in (0..w).step_by(8) {
                    add_energies(&block_dct(&y, w, h, bx, by, &basis), &mut high, &mut ac);
                }
            }
            high_share(high, ac)
        }

        pub fn attention_density(rgb: &[f32], w: usize, h: usize) -> f32 {
            let Some(y) = luma(rgb, w, h) else {
                return 0.0;
            };
            let basis = dct_basis();
            let (tw, th) = (w.div_ceil(8), h.div_ceil(8));
            let mut tokens = vec![[0f64; TOKEN_DIM]; tw * th];
            for ty in 0..th {
                for tx in 0..tw {
                    tokens[ty * tw + tx] = token(&block_dct(&y, w, h, tx * 8, ty * 8, &basis));
                }
            }
            let scale = 1.0 / ((TOKEN_DIM as f64).sqrt() * ATTENTION_TEMPERATURE);
            let (mut sum, mut count) = (0f64, 0usize);
            let mut win: Vec<&Token> = Vec::with_capacity(ATTENTION_WINDOW * ATTENTION_WINDOW);
            let mut logits = vec![0f64; ATTENTION_WINDOW * ATTENTION_WINDOW];
            for wy in (0..th).step_by(ATTENTION_WINDOW) {
                for wx in (0..tw).step_by(ATTENTION_WINDOW) {
                    win.clear();
                    for ty in wy..(wy + ATTENTION_WINDOW).min(th) {
                        for tx in wx..(wx + ATTENTION_WINDOW).min(tw) {
                            win.push(&tokens[ty * tw + tx]);
                        }
                    }
                    let n = win.len();
                    if n < 2 {
                        continue;
                    }
                    let ln_n = (n as f64).ln();
                    for q in &win {
                        sum += attention_term(q, &win, scale, ln_n, &mut logits);
                        count += 1;
                    }
                }
            }
            attention_mean(sum, count)
        }
    }

    /// Parallel metrics equal the sequential definitions bit for bit, on sizes with partial
    /// blocks and windows, from one thread and from several.
    #[test]
    fn parallel_metrics_equal_the_sequential_ones() {
        let mut r = crate::engine::random::Rng::new(11);
        for (w, h) in [(1, 1), (7, 5), (64, 64), (130, 67), (333, 201)] {
            // Noise on a gradient: neither flat nor pure noise.
            let rgb: Vec<f32> = (0..w * h * 3)
                .map(|i| {
                    ((i / 3 % w) as f32 * 0.7 + r.uniform() * 60.0)
                        .round()
                        .min(255.0)
                })
                .collect();
            let want = [
                sequential::gradient_density_with(&rgb, w, h, &mut Vec::new()),
                sequential::frequency_density(&rgb, w, h),
                sequential::attention_density(&rgb, w, h),
            ];
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| {
                    [
                        gradient_density(&rgb, w, h),
                        frequency_density(&rgb, w, h),
                        attention_density(&rgb, w, h),
                    ]
                });
                assert_eq!(
                    got.map(f32::to_bits),
                    want.map(f32::to_bits),
                    "{w}x{h}, {threads} threads: {got:?} vs {want:?}"
                );
            }
        }
    }

    fn gray(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let g = f(x, y);
                v.extend_from_slice(&[g, g, g]);
            }
        }
        v
    }

    #[test]
    fn constant_is_zero() {
        assert_eq!(gradient_density(&gray(7, 5, |_, _| 123.0), 7, 5), 0.0);
        assert_eq!(gradient_density(&gray(1, 1, |_, _| 9.0), 1, 1), 0.0);
    }

    #[test]
    fn horizontal_ramp() {
        // Y rises by d = 25.5/255 = 0.1 per column. Interior columns: |Gx| = 4·2d/8 = d;
        // the two border columns (replicate): d/2. Gy = 0.
        // c = 1000 · H · ((W-2)·d + d) / (2·W·H) = 1000 · d · (W-1) / (2W).
        let (w, h) = (10, 4);
        let c = gradient_density(&gray(w, h, |x, _| 25.5 * x as f32), w, h);
        let want = 1000.0 * 0.1 * (w as f32 - 1.0) / (2.0 * w as f32);
        assert!((c - want).abs() < 1e-3, "{c} vs {want}");
    }

    #[test]
    fn vertical_step_edge() {
        // Rows 0..3 are 0, rows 3..6 are 255: the two rows next to the step see
        // |Gy| = (1 + 2 + 1)·1/8 = 0.5 at every column; everything else is 0.
        // c = 1000 · (2 rows · W · 0.5) / (2·W·H) = 1000 · 0.5 / H.
        let (w, h) = (8, 6);
        let c = gradient_density(&gray(w, h, |_, y| if y < 3 { 0.0 } else { 255.0 }), w, h);
        let want = 1000.0 * 0.5 / h as f32;
        assert!((c - want).abs() < 1e-3, "{c} vs {want}");
    }

    #[test]
    fn attention_is_spread_on_repeated_tokens_and_concentrated_on_distinct_ones() {
        let a = |w: usize, h: usize, f: &dyn Fn(usize, usize) -> f32| {
            attention_density(&gray(w, h, f), w, h)
        };
        // Flat, a ramp (every block has the same AC coefficients) and a pattern repeating
        // every 8 pixels: all tokens of a window are equal, attention is uniform.
        assert_eq!(a(64, 64, &|_, _| 90.0), 0.0);
        assert!(a(64, 64, &|x, _| 3.0 * x as f32) < 1e-3);
        assert!(a(64, 64, &|x, y| ((x % 8) * 20 + (y % 8) * 5) as f32) < 1e-3);
        // Distinct random blocks: each token attends mostly to itself.
        let mut r = crate::engine::random::Rng::new(4);
        let noise: Vec<f32> = (0..64 * 64).map(|_| r.uniform() * 255.0).collect();
        let noisy = a(64, 64, &|x, y| noise[y * 64 + x]);
        assert!(noisy > 900.0, "{noisy}");
        // A few edges on a flat background sit in between.
        let edges = a(64, 64, &|x, y| {
            if (x * 3 + y) % 40 < 20 { 60.0 } else { 180.0 }
        });
        assert!(edges > 1.0 && edges < noisy, "{edges}");
        // Brightness is ignored (DC left out); a one-token frame gives 0.
        let shifted = a(64, 64, &|x, y| (noise[y * 64 + x] * 0.5 + 60.0).min(255.0));
        let half = a(64, 64, &|x, y| noise[y * 64 + x] * 0.5);
        assert!((shifted - half).abs() < 1e-3 * half, "{shifted} vs {half}");
        assert_eq!(a(5, 7, &|x, y| (x * y) as f32), 0.0);
        assert_eq!(attention_density(&[], 0, 0), 0.0);
    }

    #[test]
    fn frequency_share_of_flat_smooth_and_noisy_images() {
        assert_eq!(frequency_density(&gray(16, 16, |_, _| 77.0), 16, 16), 0.0);
        // A gentle ramp keeps its energy at low frequencies; a pixel checkerboard at the
        // highest one (u = v = 7 of every block).
        let ramp = frequency_density(&gray(32, 32, |x, _| 4.0 * x as f32), 32, 32);
        let checks = frequency_density(
            &gray(32, 32, |x, y| if (x + y) % 2 == 0 { 200.0 } else { 50.0 }),
            32,
            32,
        );
        assert!(ramp < 100.0, "{ramp}");
        assert!(checks > 990.0, "{checks}");
        // Contrast does not matter; odd sizes are padded by replication.
        let lo = frequency_density(
            &gray(13, 11, |x, y| 100.0 + ((x * 7 + y * 3) % 5) as f32),
            13,
            11,
        );
        let hi = frequency_density(
            &gray(13, 11, |x, y| 100.0 + 10.0 * ((x * 7 + y * 3) % 5) as f32),
            13,
            11,
        );
        assert!((lo - hi).abs() < 1e-3 * lo.max(1.0), "{lo} vs {hi}");
    }

    #[test]
    fn luma_weights() {
        // A pure-red step counts 0.299 of a white one.
        let (w, h) = (6, 6);
        let mut red = vec![0.0; w * h * 3];
        for y in 3..h {
            for x in 0..w {
                red[(y * w + x) * 3] = 255.0;
            }
        }
        let c = gradient_density(&red, w, h);
        let want = 0.299 * 1000.0 * 0.5 / h as f32;
        assert!((c - want).abs() < 1e-3, "{c} vs {want}");
    }
}
