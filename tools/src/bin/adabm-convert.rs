//! adabm-convert: EDSR-PyTorch / AdaBM checkpoints ↔ our model file.

use std::path::Path;

use adabm_tools::convert::{self, ImportOptions, Naming};
use adabm_tools::torch;
use adabm_tools::{Args, read_regular_file};
use anyhow::{Context, Result, bail};
use gstadabm::engine::{EdsrConfig, Model, QuantMode, random};

const USAGE: &str = "\
adabm-convert import IN.pt|IN.safetensors OUT.safetensors [options]
    Reads an EDSR-PyTorch (body.{i}.body.{0,2}) or AdaBM (body.{i}.conv{1,2} with lower_a,
    upper_a, upper_w, measure_layer, measure_l, measure_u) checkpoint — PyTorch zip format,
    PyTorch's legacy format (before 1.6, the era of the EDSR-PyTorch release models) or
    safetensors with the reference names — and writes our model file.
      --res-scale R    residual scaling (default 1, or 0.1 for 256-feature EDSR)
      --rgb-range R    the checkpoint's rgb_range (default 255)
      --w-bits B --a-bits B   bit-widths of an AdaBM checkpoint (it does not store them)

adabm-convert export IN.safetensors OUT.pt|OUT.safetensors [--naming edsr|adabm]
    Writes our model with the reference names (default: adabm for quantized models, edsr
    otherwise), as a PyTorch zip checkpoint (.pt, .pth) or safetensors.

adabm-convert fixture OUT.pt --naming edsr|adabm [--quant fq|non-fq] [--scale S]
                      [--n-resblocks N] [--n-feats F] [--w-bits B] [--a-bits B] [--seed N]
    Writes a random checkpoint in the reference's layout (for tests).";

fn is_torch(p: &str) -> bool {
    p.ends_with(".pt") || p.ends_with(".pth") || p.ends_with(".pth.tar")
}

fn naming(a: &Args, default: Naming) -> Result<Naming> {
    match a.get("naming") {
        None => Ok(default),
        Some("edsr") => Ok(Naming::Edsr),
        Some("adabm") => Ok(Naming::AdaBm),
        Some(o) => bail!("--naming must be edsr or adabm, found {o}"),
    }
}

fn write(out: &str, tensors: &[(String, torch::Tensor)]) -> Result<()> {
    let bytes = if is_torch(out) {
        torch::write_state_dict(tensors)
    } else {
        convert::to_safetensors(tensors)?
    };
    std::fs::write(out, bytes).with_context(|| format!("write {out}"))
}

fn main() -> Result<()> {
    let a = Args::parse(&["help"])?;
    if a.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    let pos: Vec<&str> = a.positional.iter().map(String::as_str).collect();
    match pos.as_slice() {
        ["import", input, output] => {
            a.reject_unknown(&["res-scale", "rgb-range", "w-bits", "a-bits"])?;
            let bytes = read_regular_file(Path::new(input))?;
            let tensors = if bytes.starts_with(b"PK") || is_torch(input) {
                torch::read_state_dict(&bytes)
            } else {
                convert::from_safetensors(&bytes)
            }
            .with_context(|| input.to_string())?;
            let opts = ImportOptions {
                res_scale: a
                    .get("res-scale")
                    .map(|_| a.num("res-scale", 1.0))
                    .transpose()?,
                rgb_range: a.num("rgb-range", 255.0)?,
                w_bits: a.get("w-bits").map(|_| a.num("w-bits", 4)).transpose()?,
                a_bits: a.get("a-bits").map(|_| a.num("a-bits", 4)).transpose()?,
            };
            let (model, naming) =
                convert::import(tensors, &opts).with_context(|| input.to_string())?;
            model.save(output)?;
            let c = &model.config;
            println!(
                "{input} ({naming:?} naming) → {output}: x{} EDSR, {} blocks, {} features, {} \
                 parameters, {}",
                c.scale,
                c.n_resblocks,
                c.n_feats,
                model.n_params(),
                match &model.quant {
                    None => "floating point".to_string(),
                    Some(q) => format!("AdaBM {:?} w{}a{}", q.mode, q.w_bits, q.a_bits),
                }
            );
        }
        ["export", input, output] => {
            a.reject_unknown(&["naming"])?;
            let model = Model::load(input).with_context(|| input.to_string())?;
            let default = if model.quant.is_some() {
                Naming::AdaBm
            } else {
                Naming::Edsr
            };
            let n = naming(&a, default)?;
            if n == Naming::Edsr && model.quant.is_some() {
                bail!(
                    "EDSR-PyTorch has no quantizer parameters: export a quantized model with --naming adabm"
                );
            }
            write(output, &convert::export(&model, n))?;
            println!("{input} → {output} ({n:?} names)");
        }
        ["fixture", output] => {
            a.reject_unknown(&[
                "naming",
                "quant",
                "scale",
                "n-resblocks",
                "n-feats",
                "w-bits",
                "a-bits",
                "seed",
            ])?;
            let mut cfg = EdsrConfig::baseline(a.num("scale", 2)?);
            cfg.n_resblocks = a.num("n-resblocks", 2)?;
            cfg.n_feats = a.num("n-feats", 8)?;
            let seed = a.num("seed", 1)?;
            let mut model = random::random_model(cfg, seed)?;
            if let Some(q) = a.get("quant") {
                let mode = match q {
                    "fq" => QuantMode::Fq,
                    "non-fq" => QuantMode::NonFq,
                    o => bail!("--quant must be fq or non-fq, found {o}"),
                };
                model = random::quantize_on_synthetic(
                    &model,
                    mode,
                    a.num("w-bits", 4)?,
                    a.num("a-bits", 4)?,
                    seed,
                )?;
            }
            let n = naming(&a, Naming::Edsr)?;
            if n == Naming::Edsr && model.quant.is_some() {
                bail!("--quant needs --naming adabm");
            }
            if !Path::new(output)
                .extension()
                .is_some_and(|e| e == "pt" || e == "pth")
            {
                bail!("fixture output must end in .pt or .pth");
            }
            write(output, &convert::export(&model, n))?;
        }
        _ => bail!("{USAGE}"),
    }
    Ok(())
}
