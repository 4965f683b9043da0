//! The model file: round trip, and one clear error per kind of damage.

mod common;

use common::*;
use gstadabm::engine::{Model, QuantMode};
use safetensors::SafeTensors;
use std::path::PathBuf;

fn err(bytes: &[u8]) -> String {
    Model::from_bytes(bytes).unwrap_err().to_string()
}

fn quant_bytes() -> Vec<u8> {
    small_quant(2, QuantMode::Fq, 1).to_bytes().unwrap()
}

#[test]
fn round_trip_is_lossless() {
    for m in [
        small_fp(3, 1),
        small_quant(4, QuantMode::NonFq, 2),
        small_quant(2, QuantMode::Fq, 3),
    ] {
        let back = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back, m);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let m = small_fp(2, 9);
    m.save(&path).unwrap();
    assert_eq!(Model::load(&path).unwrap(), m);
}

/// The same model gives the same file bytes every time it is written (safetensors writes its
/// metadata in a hash map's order, which changes between maps and runs), and those bytes are
/// still a safetensors file that loads back to the model.
#[test]
fn the_same_model_writes_the_same_bytes() {
    for m in [small_fp(2, 4), small_quant(4, QuantMode::Fq, 5)] {
        let first = m.to_bytes().unwrap();
        for _ in 0..16 {
            assert!(m.to_bytes().unwrap() == first, "another byte order");
        }
        SafeTensors::deserialize(&first).unwrap();
        assert_eq!(Model::from_bytes(&first).unwrap(), m);
    }
}

#[test]
fn missing_file_names_the_path() {
    let e = Model::load("/nonexistent/dir/model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/dir/model.safetensors"), "{e}");
}

#[test]
fn empty_file() {
    assert!(err(&[]).contains("empty"));
}

#[test]
fn truncated_file() {
    let b = quant_bytes();
    for cut in [4, 100, b.len() / 2, b.len() - 1] {
        let e = err(&b[..cut]);
        assert!(
            e.contains("not a valid safetensors") && e.contains("truncated"),
            "cut {cut}: {e}"
        );
    }
}

/// A model file is read only as far as its header says, with the errors of its bytes, and what
/// is not a regular file is refused at once (`/dev/zero` took 24 GB and `/dev/urandom` never
/// finished before; a FIFO without a writer blocked).
#[test]
fn files_are_read_only_as_far_as_their_header_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let load = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        Model::load(&path)
    };
    let good = quant_bytes();
    assert_eq!(load(&good).unwrap(), Model::from_bytes(&good).unwrap());
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"more");
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    for bytes in [
        &[][..],
        &good[..4],
        &good[..100],
        &good[..good.len() - 1],
        &trailing,
        &huge_header,
        b"this is not a model at all, just some text that goes on",
    ] {
        assert_eq!(load(bytes).err().map(|e| e.to_string()), Some(err(bytes)));
    }
    // A header that declares more tensor bytes than any model has: refused before reading them.
    let header = br#"{"w":{"dtype":"F32","shape":[2000000000],"data_offsets":[0,8000000000]}}"#;
    let mut declared = (header.len() as u64).to_le_bytes().to_vec();
    declared.extend_from_slice(header);
    let e = load(&declared)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("declares 8000000000 bytes of tensors") && e.contains("4 GiB"),
        "{e}"
    );
    // Not regular files: refused by type (a FIFO without a writer blocked the element's start).
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut others = vec![
        (PathBuf::from("/dev/zero"), "a device"),
        (PathBuf::from("/dev/urandom"), "a device"),
        (dir.path().to_path_buf(), "a directory"),
    ];
    if made.is_ok_and(|s| s.success()) {
        others.push((fifo, "a FIFO"));
    }
    for (other, kind) in others {
        if other.exists() {
            let e = Model::load(&other)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains(&format!("{kind} is not a regular file")),
                "{}: {e}",
                other.display()
            );
        }
    }
}

#[test]
fn garbage_file() {
    let e = err(b"this is not a model at all, just some text that goes on");
    assert!(e.contains("not a valid safetensors"), "{e}");
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let b = rewrite(
        &quant_bytes(),
        |n, s, d| {
            if n == "body.1.conv1.weight" {
                Some((n.into(), vec![8, 4, 3, 3], d[..d.len() / 2].to_vec()))
            } else {
                keep(n, s, d)
            }
        },
        |_| {},
    );
    let e = err(&b);
    assert!(
        e.contains("body.1.conv1.weight")
            && e.contains("[8, 8, 3, 3]")
            && e.contains("[8, 4, 3, 3]"),
        "{e}"
    );
}

#[test]
fn missing_tensor() {
    let b = rewrite(
        &quant_bytes(),
        |n, s, d| (n != "tail.1.bias").then(|| (n.into(), s, d)),
        |_| {},
    );
    let e = err(&b);
    assert!(e.contains("tail.1.bias") && e.contains("missing"), "{e}");
}

#[test]
fn unexpected_tensor() {
    let b = rewrite(
        &quant_bytes(),
        |n, s, d| {
            if n == "tail.1.bias" {
                Some(("body.99.conv1.bias".into(), s, d))
            } else {
                keep(n, s, d)
            }
        },
        |_| {},
    );
    assert!(err(&b).contains("body.99.conv1.bias"));
}

#[test]
fn nan_weight() {
    let b = rewrite(
        &quant_bytes(),
        |n, s, mut d| {
            if n == "head.0.weight" {
                d[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            keep(n, s, d)
        },
        |_| {},
    );
    let e = err(&b);
    assert!(
        e.contains("head.0.weight") && e.contains("finite") && e.contains("index 2"),
        "{e}"
    );
}

fn edit_quant(f: impl Fn(&mut serde_json::Value)) -> String {
    err(&rewrite(&quant_bytes(), keep, |md| {
        let mut q: serde_json::Value = serde_json::from_str(&md["quant"]).unwrap();
        f(&mut q);
        md.insert("quant".into(), q.to_string());
    }))
}

#[test]
fn l_not_below_u() {
    let e = edit_quant(|q| {
        q["layers"]["body.0.conv2"]["l"] = 5.0.into();
        q["layers"]["body.0.conv2"]["u"] = 5.0.into();
    });
    assert!(e.contains("body.0.conv2") && e.contains("l < u"), "{e}");
}

#[test]
fn bits_out_of_range() {
    let e = edit_quant(|q| q["a_bits"] = 9.into());
    assert!(
        e.contains("a_bits") && e.contains("1..=8") && e.contains('9'),
        "{e}"
    );
    let e = edit_quant(|q| q["w_bits"] = 0.into());
    assert!(e.contains("w_bits"), "{e}");
}

#[test]
fn missing_layer_quantizer() {
    let e = edit_quant(|q| {
        q["layers"].as_object_mut().unwrap().remove("head.0");
    });
    assert!(
        e.contains("head.0") && e.contains("missing quantizer"),
        "{e}"
    );
}

#[test]
fn unknown_mode_and_version() {
    let e = edit_quant(|q| q["mode"] = "int3".into());
    assert!(e.contains("quant") && e.contains("int3"), "{e}");
    let e = err(&rewrite(&quant_bytes(), keep, |md| {
        md.insert("format_version".into(), "7".into());
    }));
    assert!(e.contains("format_version") && e.contains('7'), "{e}");
    let e = err(&rewrite(&quant_bytes(), keep, |md| {
        md.remove("config");
    }));
    assert!(e.contains("config"), "{e}");
}

#[test]
fn config_must_match_tensors() {
    let e = err(&rewrite(&quant_bytes(), keep, |md| {
        let mut c: serde_json::Value = serde_json::from_str(&md["config"]).unwrap();
        c["n_feats"] = 16.into();
        md.insert("config".into(), c.to_string());
    }));
    assert!(
        e.contains("expected [16, 3, 3, 3]") || e.contains("[16"),
        "{e}"
    );
    let e = err(&rewrite(&quant_bytes(), keep, |md| {
        let mut c: serde_json::Value = serde_json::from_str(&md["config"]).unwrap();
        c["scale"] = 5.into();
        md.insert("config".into(), c.to_string());
    }));
    assert!(e.contains("config.scale") && e.contains("2, 3 or 4"), "{e}");
}

#[test]
fn float_model_has_no_quantizers_and_runs_unquantized() {
    let m = small_fp(2, 4);
    let b = m.to_bytes().unwrap();
    let (_, md) = SafeTensors::read_metadata(&b).unwrap();
    assert!(!md.metadata().as_ref().unwrap().contains_key("quant"));
    assert!(Model::from_bytes(&b).unwrap().quant.is_none());
}

/// Damage at random places — bits flipped, JSON characters or random bytes written, mostly
/// into the header — never panics: each file is refused with an error, or loads, and then runs
/// a small frame (a model the damage left valid, e.g. a changed weight) without panicking.
#[test]
fn randomly_damaged_files_never_panic() {
    use gstadabm::engine::{Engine, FrameMut, FrameRef, Options, PixelLayout};
    let mut rng = gstadabm::engine::random::Rng::new(1);
    let mut rnd = move || rng.next_u64();
    let (mut refused, mut ran) = (0, 0);
    for (scale, precision) in [(2, "w4a4"), (2, "fp32"), (4, "w8a6")] {
        let bytes = gstadabm::engine::builtin::find(scale, precision)
            .unwrap()
            .load()
            .unwrap()
            .to_bytes()
            .unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + rnd() % 3 {
                let len = if rnd() % 4 == 0 { b.len() } else { header };
                let at = rnd() as usize % len;
                b[at] = match rnd() % 3 {
                    0 => b[at] ^ (1 << (rnd() % 8)),
                    1 => b"0123456789-.e,:\"{}[]"[rnd() as usize % 20],
                    _ => rnd() as u8,
                };
            }
            let outcome = std::panic::catch_unwind(|| {
                let Ok(model) = Model::from_bytes(&b) else {
                    return false;
                };
                let Ok(engine) = Engine::new(&model, 1) else {
                    return false;
                };
                let s = engine.scale();
                let input = vec![100u8; 5 * 4 * 3];
                let mut out = vec![0u8; 5 * s * 4 * s * 3];
                let src = FrameRef {
                    data: &input,
                    stride: 15,
                    width: 5,
                    height: 4,
                    layout: PixelLayout::Rgb,
                };
                let mut dst = FrameMut {
                    data: &mut out,
                    stride: 15 * s,
                    width: 5 * s,
                    height: 4 * s,
                    layout: PixelLayout::Rgb,
                };
                engine
                    .process_frame(&src, &mut dst, &Options::default())
                    .is_ok()
            });
            match outcome {
                Ok(true) => ran += 1,
                Ok(false) => refused += 1,
                Err(_) => panic!("a damaged {precision} x{scale} model panicked"),
            }
        }
    }
    eprintln!("damaged model files: {refused} refused, {ran} loaded and ran");
    // Both kinds occur: the test exercises loading and running, not only the header parser.
    assert!(refused > 300 && ran > 20, "refused {refused}, ran {ran}");
}
