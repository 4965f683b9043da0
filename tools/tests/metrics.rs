//! PSNR and SSIM agree with scikit-image (an independent implementation) to 0.01 dB and
//! 0.0005. Skips with a message when python3 with scikit-image is absent (.ci/run installs it).

use std::process::Command;

use gstadabm::engine::metrics::{luma, psnr_y, ssim_y};
use gstadabm::engine::random::{Rng, test_image};

const SCRIPT: &str = r#"
import sys, numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
w, h = int(sys.argv[3]), int(sys.argv[4])
a = np.fromfile(sys.argv[1], dtype=np.float64).reshape(h, w)
b = np.fromfile(sys.argv[2], dtype=np.float64).reshape(h, w)
p = peak_signal_noise_ratio(a, b, data_range=255)
s = structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
print(p, s)
"#;

fn have_skimage() -> bool {
    Command::new("python3")
        .args(["-c", "import skimage.metrics"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn psnr_and_ssim_match_scikit_image() {
    if !have_skimage() {
        eprintln!("SKIPPED: python3 with scikit-image not found (pip install scikit-image)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(5);
    for (i, (w, h, noise)) in [(48usize, 40usize, 6.0f32), (64, 33, 20.0), (30, 30, 2.0)]
        .into_iter()
        .enumerate()
    {
        let a = test_image(w, h, i as u64).to_rgb8();
        let b: Vec<u8> = a
            .iter()
            .map(|&v| (v as f32 + rng.symmetric(noise)).round().clamp(0.0, 255.0) as u8)
            .collect();
        let shave = 2;
        let (ya, cw, ch) = luma(&a, w, h, shave);
        let (yb, ..) = luma(&b, w, h, shave);
        let pa = dir.path().join(format!("a{i}.bin"));
        let pb = dir.path().join(format!("b{i}.bin"));
        std::fs::write(
            &pa,
            ya.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        std::fs::write(
            &pb,
            yb.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        let out = Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(&pa)
            .arg(&pb)
            .args([cw.to_string(), ch.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let (p, s) = (psnr_y(&a, &b, w, h, shave), ssim_y(&a, &b, w, h, shave));
        assert!((p - v[0]).abs() < 0.01, "PSNR {p} vs scikit-image {}", v[0]);
        assert!(
            (s - v[1]).abs() < 0.0005,
            "SSIM {s} vs scikit-image {}",
            v[1]
        );
    }
}
