//! adabm-convert: PyTorch zip checkpoints and reference-named safetensors ↔ our model file.
//! The Python cross-checks (stdlib only) skip with a message when python3 is absent.

use std::path::{Path, PathBuf};
use std::process::Command;

use adabm_tools::convert::{self, ImportOptions, Naming};
use adabm_tools::torch::{self, Tensor};
use gstadabm::engine::{EdsrConfig, QuantMode, random};

fn small(scale: u32) -> EdsrConfig {
    EdsrConfig {
        scale,
        n_resblocks: 2,
        n_feats: 8,
        ..EdsrConfig::baseline(scale)
    }
}

fn bits(w: u8, a: u8) -> ImportOptions {
    ImportOptions {
        w_bits: Some(w),
        a_bits: Some(a),
        ..ImportOptions::default()
    }
}

#[test]
fn float_models_round_trip_through_pytorch_zip() {
    for scale in [2, 3, 4] {
        let m = random::random_model(small(scale), scale as u64).unwrap();
        let pt = torch::write_state_dict(&convert::export(&m, Naming::Edsr));
        let back = torch::read_state_dict(&pt).unwrap();
        assert!(back.iter().any(|(n, _)| n == "body.1.body.2.weight"));
        let (m2, naming) = convert::import(back, &ImportOptions::default()).unwrap();
        assert_eq!(naming, Naming::Edsr);
        assert_eq!(m2, m, "x{scale}");
    }
}

#[test]
fn adabm_models_round_trip_in_both_modes() {
    for mode in [QuantMode::Fq, QuantMode::NonFq] {
        let fp = random::random_model(small(4), 7).unwrap();
        let q = random::quantize_on_synthetic(&fp, mode, 4, 4, 7).unwrap();
        let tensors = convert::export(&q, Naming::AdaBm);
        assert!(
            tensors
                .iter()
                .any(|(n, _)| n == "body.0.conv1.measure_layer")
        );
        assert!(tensors.iter().any(|(n, _)| n == "measure_u"));
        assert_eq!(
            tensors.iter().any(|(n, _)| n == "head.0.lower_a"),
            mode == QuantMode::Fq
        );
        let pt = torch::write_state_dict(&tensors);
        let (m2, naming) =
            convert::import(torch::read_state_dict(&pt).unwrap(), &bits(4, 4)).unwrap();
        assert_eq!(naming, Naming::AdaBm);
        assert_eq!(m2, q, "{mode:?}");
        // Reference-named safetensors too.
        let st = convert::to_safetensors(&tensors).unwrap();
        let (m3, _) =
            convert::import(convert::from_safetensors(&st).unwrap(), &bits(4, 4)).unwrap();
        assert_eq!(m3, q);
        // The bit-widths are not in the checkpoint: asking for them is the error.
        let err = convert::import(
            torch::read_state_dict(&pt).unwrap(),
            &ImportOptions::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("--w-bits"), "{err:#}");
    }
}

#[test]
fn prefixed_keys_and_training_wrappers_are_accepted() {
    let m = random::random_model(small(2), 3).unwrap();
    let prefixed: Vec<(String, Tensor)> = convert::export(&m, Naming::Edsr)
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    let (m2, _) = convert::import(prefixed, &ImportOptions::default()).unwrap();
    assert_eq!(m2, m);
}

#[test]
fn broken_checkpoints_give_clear_errors() {
    let m = random::random_model(small(2), 3).unwrap();
    let good = convert::export(&m, Naming::Edsr);
    let pt = torch::write_state_dict(&good);
    let err = |r: anyhow::Result<Vec<(String, Tensor)>>| format!("{:#}", r.unwrap_err());
    assert!(err(torch::read_state_dict(&pt[..pt.len() / 2])).contains("truncated"));
    assert!(err(torch::read_state_dict(b"")).contains("not a PyTorch checkpoint"));
    assert!(err(torch::read_state_dict(&[0x80, 2, b'K', 1, b'.'])).contains("magic number"));
    let mut corrupt = pt.clone();
    let pkl = corrupt.windows(2).position(|w| w == [0x80, 2]).unwrap();
    corrupt[pkl + 2] = 0xff; // an opcode we do not know
    // The archive's CRC-32 of the pickle no longer matches (torch.load would not notice).
    let e = err(torch::read_state_dict(&corrupt));
    assert!(e.contains("data.pkl is damaged"), "{e}");
    // Without recorded CRCs the pickle parser meets the opcode.
    assert!(err(torch::read_state_dict(&without_crcs(&corrupt))).contains("opcode"));
    // One bit of one weight: refused with the entry named, where torch.load returns the
    // changed value.
    let mut flipped = pt.clone();
    let data0 = find_entry(&pt, "data/0");
    flipped[data0 + 5] ^= 1;
    let e = err(torch::read_state_dict(&flipped));
    assert!(e.contains("data/0 is damaged"), "{e}");
    // Files written with `torch.serialization.set_crc32_options(False)` record 0: read as
    // they are.
    let read = torch::read_state_dict(&without_crcs(&pt)).unwrap();
    assert_eq!(read.len(), good.len());
    for ((n, a), (m, b)) in read.iter().zip(&good) {
        assert_eq!((n, &a.shape, &a.data), (m, &b.shape, &b.data));
    }

    let without = |name: &str| -> Vec<(String, Tensor)> {
        good.iter().filter(|(n, _)| n != name).cloned().collect()
    };
    let e =
        convert::import(without("body.1.body.2.weight"), &ImportOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("body.1.body.2.weight"), "{e:#}");
    let mut wrong = good.clone();
    let k = wrong
        .iter()
        .position(|(n, _)| n == "body.0.body.0.weight")
        .unwrap();
    wrong[k].1.shape = vec![8, 8, 1, 9];
    let e = convert::import(wrong, &ImportOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("expected [8, 8, 3, 3]"), "{e:#}");
    let e = convert::import(Vec::new(), &ImportOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("head.0.weight"), "{e:#}");
}

/// Damage at random places — mostly in the pickles, with the zip's CRCs zeroed so that the
/// parser, not the checksum, meets it — is an error or a readable checkpoint, never a panic.
#[test]
fn randomly_damaged_checkpoints_never_panic() {
    let m = random::random_model(small(2), 4).unwrap();
    let mut files = vec![without_crcs(&torch::write_state_dict(&convert::export(
        &m,
        Naming::Edsr,
    )))];
    let dir = tempfile::tempdir().unwrap();
    if python().is_some() {
        let path = dir.path().join("legacy.pt");
        run_py(&[
            "write-legacy",
            path.to_str().unwrap(),
            "2",
            "2",
            "2",
            "8",
            "edsr",
        ]);
        files.push(std::fs::read(&path).unwrap());
    }
    let mut rng = random::Rng::new(1);
    let mut rnd = move || rng.next_u64();
    let (mut refused, mut read) = (0, 0);
    for bytes in &files {
        // The pickles: the zip's data.pkl near the start, the legacy file's first 3 pickles
        // and its key list before the storages.
        let pickles = 4000.min(bytes.len());
        for _ in 0..1000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rnd() % 3 {
                let at = if rnd() % 4 == 0 {
                    rnd() as usize % b.len()
                } else {
                    rnd() as usize % pickles
                };
                b[at] = match rnd() % 3 {
                    0 => b[at] ^ (1 << (rnd() % 8)),
                    1 => 0xff,
                    _ => rnd() as u8,
                };
            }
            let outcome = std::panic::catch_unwind(|| {
                torch::read_state_dict(&b)
                    .and_then(|t| convert::import(t, &ImportOptions::default()))
                    .is_ok()
            });
            match outcome {
                Ok(true) => read += 1,
                Ok(false) => refused += 1,
                Err(_) => panic!("a damaged checkpoint panicked"),
            }
        }
    }
    eprintln!("damaged checkpoints: {refused} refused, {read} read");
    assert!(refused > 300, "refused {refused}, read {read}");
}

/// `pt` with every central-directory record's CRC-32 zeroed, as PyTorch ≥ 2.4 writes files
/// under `torch.serialization.set_crc32_options(False)`.
fn without_crcs(pt: &[u8]) -> Vec<u8> {
    let mut b = pt.to_vec();
    let cd = b.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let mut at = cd;
    while b[at..at + 4] == *b"PK\x01\x02" {
        b[at + 16..at + 20].fill(0);
        let len = |i: usize| u16::from_le_bytes([b[at + i], b[at + i + 1]]) as usize;
        at += 46 + len(28) + len(30) + len(32);
    }
    b
}

/// Where the bytes of the zip entry whose name ends with `suffix` start in `pt`.
fn find_entry(pt: &[u8], suffix: &str) -> usize {
    let mut at = 0;
    while pt[at..at + 4] == *b"PK\x03\x04" {
        let len = |i: usize| u16::from_le_bytes([pt[at + i], pt[at + i + 1]]) as usize;
        let (name, size) = (
            &pt[at + 30..at + 30 + len(26)],
            u32::from_le_bytes(pt[at + 18..at + 22].try_into().unwrap()) as usize,
        );
        let data = at + 30 + len(26) + len(28);
        if name.ends_with(suffix.as_bytes()) {
            return data;
        }
        at = data + size;
    }
    panic!("no entry {suffix}")
}

fn python() -> Option<()> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: python3 not found (the stdlib cross-check needs it)");
    }
    ok.then_some(())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_save.py")
}

fn run_py(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Checkpoints written by Python's own pickle (protocols 2 and 4) through the same globals and
/// persistent ids as torch.save import with the values the script wrote — in the zip format
/// and in the legacy one (PyTorch < 1.6, the era of the EDSR-PyTorch release models), the
/// latter with a storage view and tensors at offsets into a shared storage.
#[test]
fn reads_checkpoints_pickled_by_python() {
    if python().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (mode, proto, scale, naming) in [
        ("write", "2", "2", "edsr"),
        ("write", "4", "4", "adabm"),
        ("write", "4", "3", "edsr"),
        ("write-legacy", "2", "2", "edsr"),
        ("write-legacy", "2", "4", "edsr"),
        ("write-legacy", "4", "3", "adabm"),
    ] {
        let path = dir.path().join(format!("{mode}-p{proto}x{scale}.pt"));
        let p = path.to_str().unwrap();
        run_py(&[mode, p, proto, scale, "2", "8", naming]);
        let (m, n) = convert::import(
            torch::read_state_dict(&std::fs::read(&path).unwrap()).unwrap(),
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(n == Naming::Edsr, naming == "edsr", "{mode} x{scale}");
        if mode == "write-legacy" {
            // Cut anywhere — in a pickle or in the storages — it is an error, not a panic.
            let bytes = std::fs::read(&path).unwrap();
            for cut in [3, 20, bytes.len() / 3, bytes.len() - 40, bytes.len() - 1] {
                let e = torch::read_state_dict(&bytes[..cut]).unwrap_err();
                assert!(
                    format!("{e:#}").contains("truncated"),
                    "cut at {cut}: {e:#}"
                );
            }
        }
        assert_eq!(m.config.scale.to_string(), scale);
        assert_eq!((m.config.n_resblocks, m.config.n_feats), (2, 8));
        assert!((m.config.rgb_mean[0] - 0.4488).abs() < 1e-6);
        for c in &m.convs {
            let rn = convert::reference_name(&c.spec.name, c.spec.role, n);
            for (kind, values) in [("weight", &c.weight), ("bias", &c.bias)] {
                let name = format!("{rn}.{kind}");
                for (i, &v) in values.iter().enumerate() {
                    let want = (((name.len() * 7 + i * 13) % 101) as f32 - 50.0) / 64.0;
                    assert_eq!(v, want, "{mode} x{scale}: {name}[{i}]");
                }
            }
        }
    }
}

/// Python's zipfile (CRCs) and pickle read what we write, with every tensor's storage intact.
#[test]
fn python_reads_what_we_write() {
    if python().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fp = random::random_model(small(4), 5).unwrap();
    let q = random::quantize_on_synthetic(&fp, QuantMode::Fq, 4, 4, 5).unwrap();
    let tensors = convert::export(&q, Naming::AdaBm);
    let path: &Path = &dir.path().join("ours.pt");
    std::fs::write(path, torch::write_state_dict(&tensors)).unwrap();
    let listing = run_py(&["read", path.to_str().unwrap()]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), tensors.len());
    for ((name, t), line) in tensors.iter().zip(lines) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], name);
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        assert_eq!(f[1], shape.join("x"));
        let sum: f64 = t.data.iter().map(|&v| v as f64).sum();
        let py: f64 = f[2].parse().unwrap();
        assert!(
            (sum - py).abs() <= 1e-5 * sum.abs().max(1.0),
            "{name}: {sum} vs {py}"
        );
    }
}
