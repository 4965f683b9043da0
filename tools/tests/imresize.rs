//! Our bicubic downscaling reproduces the benchmark's LR images (MATLAB imresize) from HR.
//! Needs ../shared/data/test/Set5; skips with a message when it is absent.

use std::path::PathBuf;

use adabm_tools::read_png;
use gstadabm::engine::resize::imresize_bicubic;

fn set5() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/test/Set5");
    p.join("HR").is_dir().then_some(p)
}

#[test]
fn reproduces_set5_lr_bicubic() {
    let Some(root) = set5() else {
        eprintln!("SKIPPED: ../shared/data/test/Set5 not found");
        return;
    };
    for s in [2usize, 3, 4] {
        let (mut total, mut exact, mut worst) = (0usize, 0usize, 0u8);
        for entry in std::fs::read_dir(root.join("HR")).unwrap() {
            let hr_path = entry.unwrap().path();
            let stem = hr_path.file_stem().unwrap().to_string_lossy().to_string();
            let hr = read_png(&hr_path).unwrap();
            let lr = read_png(&root.join(format!("LR_bicubic/X{s}/{stem}x{s}.png"))).unwrap();
            // Mod-crop HR to the scale, as the benchmark's LR images were made.
            let (w, h) = (hr.width / s * s, hr.height / s * s);
            let rgb: Vec<u8> = (0..h)
                .flat_map(|y| hr.to_rgb8()[y * hr.width * 3..(y * hr.width + w) * 3].to_vec())
                .collect();
            let (ours, ow, oh) = imresize_bicubic(&rgb, w, h, 3, 1.0 / s as f64);
            assert_eq!((ow, oh), (lr.width, lr.height), "{stem} x{s}");
            for (a, b) in ours.iter().zip(lr.to_rgb8()) {
                total += 1;
                exact += (*a == b) as usize;
                worst = worst.max(a.abs_diff(b));
            }
        }
        let share = exact as f64 / total as f64;
        eprintln!("x{s}: {:.4}% exact, worst {worst}", 100.0 * share);
        assert!(
            share >= 0.99 && worst <= 2,
            "x{s}: {:.4}% exact, worst {worst}",
            100.0 * share
        );
    }
}
