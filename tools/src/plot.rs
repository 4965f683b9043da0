//! Small line plots as PNG (no plotting dependency): one panel per series, a 5x7 bitmap font
//! for titles and axis values.

use std::path::Path;

use anyhow::Result;
use gstadabm::engine::Image;

const W: usize = 360;
const H: usize = 240;

fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        _ => [0; 7],
    }
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<[u8; 3]>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            self.px[y as usize * self.w + x as usize] = c;
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (r, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.set(x + i as i64 * 6 + col, y + r as i64, c);
                    }
                }
            }
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// One panel per `(title, values per epoch)`, two panels per row, x axis = epoch 1..n.
pub fn epoch_panels(path: &Path, series: &[(&str, Vec<f64>)]) -> Result<()> {
    let cols = 2;
    let rows = series.len().div_ceil(cols);
    let mut cv = Canvas {
        w: W * cols,
        h: H * rows,
        px: vec![[255; 3]; W * cols * H * rows],
    };
    let (ink, grid, blue) = ([20, 20, 20], [200, 200, 200], [30, 90, 200]);
    for (p, (title, ys)) in series.iter().enumerate() {
        let (ox, oy) = ((p % cols * W) as i64, (p / cols * H) as i64);
        let (l, r, t, b) = (ox + 76, ox + W as i64 - 16, oy + 24, oy + H as i64 - 30);
        cv.text(l, oy + 8, title, ink);
        cv.line((l, b), (r, b), ink);
        cv.line((l, t), (l, b), ink);
        if ys.is_empty() {
            continue;
        }
        let (mut lo, mut hi) = ys
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if hi - lo < 1e-12 {
            lo -= 0.5 * lo.abs().max(1e-3);
            hi += 0.5 * hi.abs().max(1e-3);
        }
        cv.text(ox + 4, t - 3, &label(hi), ink);
        cv.text(ox + 4, b - 3, &label(lo), ink);
        cv.line((l, t), (r, t), grid);
        let n = ys.len();
        let xat = |i: usize| {
            if n == 1 {
                (l + r) / 2
            } else {
                l + (i as i64 * (r - l)) / (n as i64 - 1)
            }
        };
        let yat = |v: f64| b - (((v - lo) / (hi - lo)) * (b - t) as f64).round() as i64;
        for i in 0..n {
            let x = xat(i);
            cv.line((x, b), (x, b + 3), ink);
            if n <= 12 || i % (n / 10 + 1) == 0 {
                cv.text(x - 3, b + 6, &(i + 1).to_string(), ink);
            }
        }
        cv.text(r - 30, b + 16, "EPOCH", ink);
        for i in 0..n {
            let p0 = (xat(i), yat(ys[i]));
            if i + 1 < n {
                cv.line(p0, (xat(i + 1), yat(ys[i + 1])), blue);
            }
            for (dx, dy) in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)] {
                cv.set(p0.0 + dx, p0.1 + dy, blue);
            }
        }
    }
    let mut img = Image::new(cv.w, cv.h);
    for (d, s) in img.data.chunks_exact_mut(3).zip(&cv.px) {
        for c in 0..3 {
            d[c] = s[c] as f32;
        }
    }
    crate::write_png(path, &img)
}
