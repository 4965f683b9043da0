//! adabm-eval on a benchmark folder made here: table, JSON, bicubic baseline, patch mode; and
//! adabm-metrics' `--json` against it.

use std::path::{Path, PathBuf};
use std::process::Command;

use adabm_tools::write_png;
use gstadabm::engine::model::EdsrConfig;
use gstadabm::engine::random::{quantize_on_synthetic, random_model, test_image};
use gstadabm::engine::{Model, QuantMode};

fn run(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let o = Command::new(env!("CARGO_BIN_EXE_adabm-eval"))
        .args(args)
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (String::from_utf8(o.stdout).unwrap(), doc)
}

/// A benchmark folder `root/Syn` of HR images only (the tools make the LR), `(name, width,
/// height)` each, the i-th from [`test_image`] seed i + 1.
fn synthetic_set(root: &Path, images: &[(&str, usize, usize)]) -> PathBuf {
    let set = root.join("Syn");
    std::fs::create_dir_all(set.join("HR")).unwrap();
    for (i, &(name, w, h)) in images.iter().enumerate() {
        let img = test_image(w, h, i as u64 + 1);
        write_png(&set.join(format!("HR/{name}.png")), &img).unwrap();
    }
    set
}

/// A tiny x2 network (2 blocks of 8 features, random weights) and its fq w4a4 quantization
/// on synthetic data.
fn tiny_models() -> (Model, Model) {
    let cfg = EdsrConfig {
        n_resblocks: 2,
        n_feats: 8,
        ..EdsrConfig::baseline(2)
    };
    let fp = random_model(cfg, 3).unwrap();
    let q = quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, 3).unwrap();
    (fp, q)
}

#[test]
fn tables_json_patch_mode_and_bicubic() {
    let tmp = tempfile::tempdir().unwrap();
    // 65x47: not divisible by 2, so the HR is mod-cropped and the LR made here.
    let set = synthetic_set(tmp.path(), &[("a", 65, 47), ("b", 40, 64)]);
    let (_, q) = tiny_models();
    let mpath = tmp.path().join("q.safetensors");
    q.save(&mpath).unwrap();
    let sets = set.to_str().unwrap();
    let m = mpath.to_str().unwrap();

    let (table, doc) = run(&["--model", m, "--bicubic", "--sets", sets, "--per-image"]);
    assert!(
        table.contains("Syn") && table.contains("bicubic"),
        "{table}"
    );
    let s = &doc["sets"][0];
    let imgs = s["model"]["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 2);
    let mean = imgs
        .iter()
        .map(|i| i["psnr"].as_f64().unwrap())
        .sum::<f64>()
        / 2.0;
    assert!((s["model"]["mean"]["psnr"].as_f64().unwrap() - mean).abs() < 1e-9);
    let fab = s["model"]["mean"]["fab"].as_f64().unwrap();
    assert!((3.0..=5.0).contains(&fab), "w4a4 FAB {fab}");
    let bic = s["bicubic"]["mean"]["psnr"].as_f64().unwrap();
    assert!(bic > 20.0 && bic < 60.0, "bicubic {bic}");
    assert_eq!(doc["n_params"].as_u64().unwrap() as usize, q.n_params());
    // Speed per LR megapixel: reported for the model, not for bicubic.
    assert!(table.contains("ms/MPix"), "{table}");
    let speed = s["model"]["ms_per_lr_mpix"].as_f64().unwrap();
    assert!(speed > 0.0 && speed.is_finite(), "{speed}");
    assert!(s["bicubic"].get("ms_per_lr_mpix").is_none());

    // Patch mode: with patches larger than the image it is the whole-image result; with small
    // patches each patch is its own input (zero padding at its borders), so PSNR changes.
    let (_, big) = run(&["--model", m, "--sets", sets, "--patch", "96"]);
    assert_eq!(big["sets"][0]["model"]["mean"], s["model"]["mean"]);
    let (_, small) = run(&["--model", m, "--sets", sets, "--patch", "8"]);
    assert_ne!(
        small["sets"][0]["model"]["mean"]["psnr"],
        s["model"]["mean"]["psnr"]
    );
    assert_eq!(small["patch"], 8);

    // Without adaptation every layer runs at the base bits.
    let (_, fixed) = run(&[
        "--model",
        m,
        "--sets",
        sets,
        "--no-adaptive",
        "--base-bits",
        "6",
    ]);
    let f = fixed["sets"][0]["model"]["mean"]["fab"].as_f64().unwrap();
    assert!((5.0..=7.0).contains(&f), "FAB {f}");
    // BitOPs: every adaptive layer at 6 bits; the image a.png is 32x23 LR pixels.
    let a = &fixed["sets"][0]["model"]["images"][0];
    assert_eq!(a["name"], "a");
    let n_adaptive = q.convs.len() - 3; // head, upsampler and tail are fixed 8-bit in fq mode
    let want = q.bitops_per_lr_pixel(&vec![6; n_adaptive]) * (32.0 * 23.0);
    assert!((a["bitops"].as_f64().unwrap() - want).abs() < 1e-6 * want);
    let b4 = s["model"]["mean"]["bitops"].as_f64().unwrap();
    assert!(
        b4 < fixed["sets"][0]["model"]["mean"]["bitops"]
            .as_f64()
            .unwrap()
    );
}

#[test]
fn bad_arguments_are_refused() {
    let o = Command::new(env!("CARGO_BIN_EXE_adabm-eval"))
        .args(["--bicubic", "--sets", "/nonexistent/set"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
}

/// A folder of training images (no `HR/`, BMP and JPEG beside PNG, in subfolders) serves as a
/// validation set: every image is found, and a BMP holding a PNG's pixels scores the same.
#[test]
fn a_folder_of_training_images_is_a_validation_set() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("Train");
    std::fs::create_dir_all(set.join("sub")).unwrap();
    let img = test_image(48, 40, 4);
    write_png(&set.join("a.png"), &img).unwrap();
    let rgb = image::RgbImage::from_raw(48, 40, img.to_rgb8()).unwrap();
    rgb.save(set.join("b.bmp")).unwrap();
    rgb.save(set.join("sub/c.jpg")).unwrap();
    let cfg = EdsrConfig {
        n_resblocks: 1,
        n_feats: 8,
        ..EdsrConfig::baseline(2)
    };
    let mpath = tmp.path().join("fp.safetensors");
    random_model(cfg, 5).unwrap().save(&mpath).unwrap();
    let (_, doc) = run(&[
        "--model",
        mpath.to_str().unwrap(),
        "--sets",
        set.to_str().unwrap(),
        "--per-image",
    ]);
    let imgs = doc["sets"][0]["model"]["images"].as_array().unwrap();
    let names: Vec<&str> = imgs.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(imgs[0]["psnr"], imgs[1]["psnr"]);
    assert_ne!(imgs[0]["psnr"], imgs[2]["psnr"], "the JPEG is lossy");
}

/// adabm-metrics' `--json`: every image's metrics and its PSNR at b_I = −1, 0, +1 are those
/// adabm-eval gives the same model with its base bits lowered, kept and raised.
#[test]
fn metrics_json_has_each_images_psnr_at_every_image_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let set = synthetic_set(tmp.path(), &[("0", 64, 48), ("1", 48, 64), ("2", 56, 40)]);
    let (fp, q) = tiny_models();
    let (fpath, qpath) = (
        tmp.path().join("fp.safetensors"),
        tmp.path().join("q.safetensors"),
    );
    fp.save(&fpath).unwrap();
    q.save(&qpath).unwrap();
    let json = tmp.path().join("m.json");
    let o = Command::new(env!("CARGO_BIN_EXE_adabm-metrics"))
        .args([
            "--fp",
            fpath.to_str().unwrap(),
            "--quant",
            qpath.to_str().unwrap(),
        ])
        .args(["--data", tmp.path().to_str().unwrap(), "--sets", "Syn"])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["base_bits"], 4);
    let images = doc["sets"][0]["images"].as_array().unwrap();
    assert_eq!(doc["sets"][0]["set"], "Syn");
    assert_eq!(images.len(), 3);
    let (q, sets) = (qpath.to_str().unwrap(), set.to_str().unwrap());
    for (k, bits) in [3u8, 4, 5].into_iter().enumerate() {
        let bits_arg = bits.to_string();
        let (_, eval) = run(&[
            "--model",
            q,
            "--sets",
            sets,
            "--no-adaptive",
            "--base-bits",
            &bits_arg,
        ]);
        let scored = eval["sets"][0]["model"]["images"].as_array().unwrap();
        assert_eq!(scored.len(), images.len());
        for (img, e) in images.iter().zip(scored) {
            let name = e["name"].as_str().unwrap();
            assert_eq!(img["name"], name);
            assert_eq!(
                img["psnr"][k].as_f64().unwrap(),
                e["psnr"].as_f64().unwrap(),
                "{name} at {bits} bits"
            );
            // FAB: the base plus b_I, the layer bits summing to about zero.
            let fab = img["fab"][k].as_f64().unwrap();
            assert!(
                (fab - bits as f64).abs() < 0.75,
                "{name}: FAB {fab} at {bits}"
            );
        }
    }
    for img in images {
        assert!(img["psnr_fp"].as_f64().unwrap() > 10.0);
        for m in ["gradient", "frequency", "attention"] {
            let v = img["metrics"][m].as_f64().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{m} = {v}");
        }
    }
}
