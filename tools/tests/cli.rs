//! The converter and calibrator command lines, end to end on files made here.

use std::path::Path;
use std::process::Command;

use adabm_tools::write_png;
use gstadabm::engine::Model;
use gstadabm::engine::random::test_image;

fn run(bin: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(bin).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn convert_fixture_import_export_round_trip() {
    let bin = env!("CARGO_BIN_EXE_adabm-convert");
    let d = tempfile::tempdir().unwrap();
    let fx = d.path().join("edsr.pt");
    let (ok, out) = run(
        bin,
        &["fixture", p(&fx), "--naming", "edsr", "--scale", "3"],
    );
    assert!(ok, "{out}");
    let ours = d.path().join("ours.safetensors");
    let (ok, out) = run(bin, &["import", p(&fx), p(&ours)]);
    assert!(ok && out.contains("x3 EDSR"), "{out}");
    let back = d.path().join("back.pt");
    let (ok, out) = run(bin, &["export", p(&ours), p(&back)]);
    assert!(ok, "{out}");
    let again = d.path().join("again.safetensors");
    assert!(run(bin, &["import", p(&back), p(&again)]).0);
    assert_eq!(Model::load(&ours).unwrap(), Model::load(&again).unwrap());
    // Reference-named safetensors too.
    let st = d.path().join("ref.safetensors");
    assert!(run(bin, &["export", p(&ours), p(&st)]).0);
    let again2 = d.path().join("again2.safetensors");
    assert!(run(bin, &["import", p(&st), p(&again2)]).0);
    assert_eq!(Model::load(&ours).unwrap(), Model::load(&again2).unwrap());

    // AdaBM checkpoint without bit-widths: the error says what to pass.
    let q = d.path().join("q.pt");
    assert!(
        run(
            bin,
            &["fixture", p(&q), "--naming", "adabm", "--quant", "non-fq"]
        )
        .0
    );
    let (ok, out) = run(bin, &["import", p(&q), p(&ours)]);
    assert!(!ok && out.contains("--w-bits"), "{out}");
    let (ok, out) = run(
        bin,
        &["import", p(&q), p(&ours), "--w-bits", "4", "--a-bits", "4"],
    );
    assert!(ok && out.contains("NonFq w4a4"), "{out}");
    // A truncated checkpoint is refused with a reason.
    let bytes = std::fs::read(&fx).unwrap();
    std::fs::write(&fx, &bytes[..bytes.len() / 3]).unwrap();
    let (ok, out) = run(bin, &["import", p(&fx), p(&ours)]);
    assert!(!ok && out.contains("truncated"), "{out}");
}

#[test]
fn calibrate_cli_writes_a_quantized_model_and_report() {
    let d = tempfile::tempdir().unwrap();
    let imgs = d.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..3 {
        write_png(&imgs.join(format!("{i}.png")), &test_image(80, 64, i)).unwrap();
    }
    let fp = d.path().join("fp.safetensors");
    let (ok, out) = run(
        env!("CARGO_BIN_EXE_adabm-model"),
        &[
            "random",
            "--scale",
            "2",
            "--resblocks",
            "2",
            "--feats",
            "8",
            "--out",
            p(&fp),
        ],
    );
    assert!(ok, "{out}");
    let bin = env!("CARGO_BIN_EXE_adabm-calibrate");
    let q = d.path().join("q.safetensors");
    let rep = d.path().join("r.json");
    let args = [
        "--model",
        p(&fp),
        "--out",
        p(&q),
        "--data",
        p(&imgs),
        "--crops",
        "8",
        "--batch",
        "4",
        "--patch",
        "16",
        "--w-bits",
        "8",
        "--a-bits",
        "6",
        "--report",
        p(&rep),
    ];
    let (ok, out) = run(bin, &args);
    assert!(ok && out.contains("w8a6"), "{out}");
    let m = Model::load(&q).unwrap();
    let qc = m.quant.unwrap();
    assert_eq!((qc.w_bits, qc.a_bits), (8, 6));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(r["complexities"].as_array().unwrap().len(), 8);
    // Nonsense is refused.
    let (ok, out) = run(
        bin,
        &[
            "--model",
            p(&fp),
            "--out",
            p(&q),
            "--data",
            p(&imgs),
            "--a-bits",
            "9",
        ],
    );
    assert!(!ok && out.contains("--a-bits"), "{out}");
    let (ok, out) = run(
        bin,
        &[
            "--model",
            p(&q),
            "--out",
            p(&q),
            "--data",
            p(&imgs),
            "--patch",
            "16",
        ],
    );
    assert!(!ok && out.contains("already quantized"), "{out}");
}

#[test]
fn finetune_cli_writes_model_log_and_plot() {
    let d = tempfile::tempdir().unwrap();
    let imgs = d.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..3 {
        write_png(&imgs.join(format!("{i}.png")), &test_image(64, 48, 10 + i)).unwrap();
    }
    let fp = d.path().join("fp.safetensors");
    let args = [
        "random",
        "--scale",
        "2",
        "--resblocks",
        "2",
        "--feats",
        "8",
        "--out",
        p(&fp),
    ];
    let (ok, out) = run(env!("CARGO_BIN_EXE_adabm-model"), &args);
    assert!(ok, "{out}");
    let q = d.path().join("q.safetensors");
    let common = ["--data", p(&imgs), "--crops", "6", "--patch", "12"];
    let mut args = vec!["--model", p(&fp), "--out", p(&q), "--batch", "3"];
    args.extend(common);
    let (ok, out) = run(env!("CARGO_BIN_EXE_adabm-calibrate"), &args);
    assert!(ok, "{out}");
    let bin = env!("CARGO_BIN_EXE_adabm-finetune");
    // A floating-point model is refused with what to do.
    let ft = d.path().join("ft.safetensors");
    let mut args = vec!["--model", p(&fp), "--out", p(&ft)];
    args.extend(common);
    let (ok, out) = run(bin, &args);
    assert!(!ok && out.contains("adabm-calibrate"), "{out}");
    let mut args = vec![
        "--model",
        p(&q),
        "--out",
        p(&ft),
        "--epochs",
        "3",
        "--iters",
        "4",
    ];
    args.extend(common);
    let (ok, out) = run(bin, &args);
    assert!(ok, "{out}");
    assert!(out.contains("epoch  3/3 bits"), "{out}");
    let (before, after) = (Model::load(&q).unwrap(), Model::load(&ft).unwrap());
    assert_eq!(before.convs, after.convs, "network weights stay frozen");
    assert_ne!(before.quant, after.quant, "quantizer parameters learn");
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("ft.finetune.json")).unwrap())
            .unwrap();
    let epochs = log["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    assert_eq!(epochs[2]["group"], "bits");
    assert!(epochs.iter().all(|e| e["pix"].as_f64().unwrap() > 0.0));
    let png = adabm_tools::read_png(&d.path().join("ft.finetune.png")).unwrap();
    assert_eq!((png.width, png.height), (720, 480));
    assert!(png.data.iter().any(|&v| v < 100.0), "the plot has ink");
    // Nonsense is refused.
    for bad in [
        ["--lr-decay", "2"],
        ["--batch", "0"],
        ["--bac-keep", "-1"],
        ["--w-bit", "nan"],
    ] {
        let mut args = vec!["--model", p(&q), "--out", p(&ft)];
        args.extend(common);
        args.extend(bad);
        let (ok, out) = run(bin, &args);
        assert!(!ok, "{bad:?} accepted: {out}");
    }
}

/// Every tool answers `--help` and `-h` with its usage (on stdout, exit status 0), and the
/// tools that take no positional argument refuse one instead of ignoring it.
#[test]
fn every_tool_has_help_and_refuses_stray_arguments() {
    let tools = [
        (
            "adabm-calibrate",
            env!("CARGO_BIN_EXE_adabm-calibrate"),
            false,
        ),
        ("adabm-convert", env!("CARGO_BIN_EXE_adabm-convert"), true),
        ("adabm-eval", env!("CARGO_BIN_EXE_adabm-eval"), false),
        (
            "adabm-finetune",
            env!("CARGO_BIN_EXE_adabm-finetune"),
            false,
        ),
        ("adabm-metrics", env!("CARGO_BIN_EXE_adabm-metrics"), false),
        ("adabm-model", env!("CARGO_BIN_EXE_adabm-model"), true),
        ("adabm-train", env!("CARGO_BIN_EXE_adabm-train"), false),
        ("adabm-upscale", env!("CARGO_BIN_EXE_adabm-upscale"), true),
    ];
    for (name, bin, positional) in tools {
        for h in ["--help", "-h"] {
            let o = Command::new(bin).arg(h).output().unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success() && out.starts_with(name) && out.contains("--"),
                "{name} {h}: {out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        if !positional {
            // `adabm-eval Set5` (meant: --sets Set5) must not run on the defaults.
            let (ok, out) = run(bin, &["Set5"]);
            assert!(
                !ok && out.contains("unexpected argument 'Set5'"),
                "{name}: {out}"
            );
        }
    }
}

/// Writes `px` (`channels` samples a pixel, 8 or 16 bits, 16-bit big-endian) as a PNG.
fn write_png_raw(path: &Path, (w, h): (usize, usize), channels: usize, depth: usize, px: &[u8]) {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut enc = png::Encoder::new(f, w as u32, h as u32);
    enc.set_color(match channels {
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    });
    enc.set_depth(match depth {
        8 => png::BitDepth::Eight,
        _ => png::BitDepth::Sixteen,
    });
    enc.write_header().unwrap().write_image_data(px).unwrap();
}

/// A PNG's (width, height, color type, bit depth, samples).
fn read_png_raw(path: &Path) -> (usize, usize, png::ColorType, png::BitDepth, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    (w, h, info.color_type, info.bit_depth, buf)
}

/// `adabm-upscale` keeps an RGBA PNG's alpha (upscaled apart, its colour the same as the
/// RGB image's) and a 16-bit PNG's depth (its samples the 8-bit output's, within rounding).
#[test]
fn upscale_cli_keeps_alpha_and_16_bit_depth() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("q.safetensors");
    let (ok, out) = run(
        env!("CARGO_BIN_EXE_adabm-model"),
        &[
            "random",
            "--scale",
            "2",
            "--quant",
            "fq",
            "--out",
            p(&model),
        ],
    );
    assert!(ok, "{out}");
    let (w, h) = (13, 9);
    let rgb = test_image(w, h, 3).to_rgb8();
    let alpha = |x: usize| (x * 255 / (w - 1)) as u8;
    let rgba: Vec<u8> = rgb
        .chunks_exact(3)
        .enumerate()
        .flat_map(|(i, c)| [c[0], c[1], c[2], alpha(i % w)])
        .collect();
    let rgb16: Vec<u8> = rgb
        .iter()
        .flat_map(|&v| (v as u16 * 257).to_be_bytes())
        .collect();
    let upscale = |name: &str, channels: usize, depth: usize, px: &[u8]| {
        let (i, o) = (
            dir.path().join(name),
            dir.path().join(format!("out-{name}")),
        );
        write_png_raw(&i, (w, h), channels, depth, px);
        let (ok, out) = run(
            env!("CARGO_BIN_EXE_adabm-upscale"),
            &["--model", p(&model), p(&i), p(&o)],
        );
        assert!(ok, "{out}");
        read_png_raw(&o)
    };
    let (ow, oh, ct, bd, base) = upscale("rgb.png", 3, 8, &rgb);
    assert_eq!(
        (ow, oh, ct, bd),
        (2 * w, 2 * h, png::ColorType::Rgb, png::BitDepth::Eight)
    );

    let (_, _, ct, bd, out) = upscale("rgba.png", 4, 8, &rgba);
    assert_eq!((ct, bd), (png::ColorType::Rgba, png::BitDepth::Eight));
    let colour: Vec<u8> = out
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    assert_eq!(
        colour, base,
        "the colour of the RGBA image is the RGB image's"
    );
    // Alpha: a left-to-right ramp from 0 to 255, upscaled, still one, in every row.
    for row in out.chunks_exact(4 * ow) {
        let a: Vec<u8> = row.chunks_exact(4).map(|p| p[3]).collect();
        assert!(a[0] == 0 && a[ow - 1] == 255, "{a:?}");
        assert!(a.windows(2).all(|p| p[0] <= p[1]), "{a:?}");
    }

    let (_, _, ct, bd, out) = upscale("rgb16.png", 3, 16, &rgb16);
    assert_eq!((ct, bd), (png::ColorType::Rgb, png::BitDepth::Sixteen));
    let levels: Vec<u16> = out
        .chunks_exact(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect();
    assert!(
        levels.iter().any(|v| v % 257 != 0),
        "16-bit samples, not 8-bit ones widened"
    );
    for (v, b) in levels.iter().zip(&base) {
        assert!((*v as f64 / 257.0 - *b as f64).abs() <= 0.51, "{v} vs {b}");
    }
}

/// `adabm-convert import` refuses what is not a regular file at once (a device was read until
/// memory ran out).
#[test]
fn convert_refuses_what_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    for input in ["/dev/zero", p(dir.path())] {
        if Path::new(input).exists() {
            let (ok, text) = run(
                env!("CARGO_BIN_EXE_adabm-convert"),
                &["import", input, p(&out)],
            );
            assert!(
                !ok && text.contains("not a regular file"),
                "{input}: {text}"
            );
        }
    }
}
