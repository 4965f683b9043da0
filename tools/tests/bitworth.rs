//! adabm-metrics' `--json`: every image's metrics and its PSNR at b_I = −1, 0, +1 are those
//! adabm-eval gives the same model with its base bits lowered, kept and raised.

use std::process::Command;

use adabm_tools::write_png;
use gstadabm::engine::QuantMode;
use gstadabm::engine::model::EdsrConfig;
use gstadabm::engine::random::{quantize_on_synthetic, random_model, test_image};

/// Per-image PSNR of `adabm-eval --no-adaptive --base-bits B`.
fn eval_psnr(model: &str, sets: &str, bits: u8) -> Vec<(String, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let o = Command::new(env!("CARGO_BIN_EXE_adabm-eval"))
        .args(["--model", model, "--sets", sets, "--no-adaptive"])
        .args(["--base-bits", &bits.to_string()])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    doc["sets"][0]["model"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["psnr"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn json_has_each_images_psnr_at_every_image_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let set = tmp.path().join("Syn");
    std::fs::create_dir_all(set.join("HR")).unwrap();
    for (i, (w, h)) in [(64usize, 48usize), (48, 64), (56, 40)]
        .into_iter()
        .enumerate()
    {
        write_png(
            &set.join(format!("HR/{i}.png")),
            &test_image(w, h, i as u64 + 1),
        )
        .unwrap();
    }
    let cfg = EdsrConfig {
        n_resblocks: 2,
        n_feats: 8,
        ..EdsrConfig::baseline(2)
    };
    let fp = random_model(cfg, 3).unwrap();
    let q = quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, 3).unwrap();
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
    let q = qpath.to_str().unwrap();
    let sets = set.to_str().unwrap();
    for (k, bits) in [3u8, 4, 5].into_iter().enumerate() {
        for (img, (name, psnr)) in images.iter().zip(eval_psnr(q, sets, bits)) {
            assert_eq!(img["name"], name.as_str());
            assert_eq!(
                img["psnr"][k].as_f64().unwrap(),
                psnr,
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
