//! adabm-model: make random models (for tests and benchmarks) and inspect model files.
//!
//!   adabm-model random --scale 2 [--resblocks 16] [--feats 64] [--quant fq|non-fq]
//!                      [--w-bits 4] [--a-bits 4] [--seed 1] --out model.safetensors
//!   adabm-model info model.safetensors

use adabm_tools::Args;
use anyhow::{Context, Result, bail};
use gstadabm::engine::{EdsrConfig, Model, QuantMode, random};

const USAGE: &str = "\
adabm-model random --scale S [--resblocks N] [--feats F] [--quant fq|non-fq] [--w-bits B]
                   [--a-bits B] [--seed N] --out FILE
    A model with random weights (EDSR-baseline size by default: 16 blocks, 64 features),
    floating point or quantized on synthetic data (for tests and benchmarks).
adabm-model info FILE
    The model file's configuration, quantization and tensors.";

fn main() -> Result<()> {
    let args = Args::parse(&[])?;
    if args.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    match args.positional.first().map(String::as_str) {
        Some("random") => make_random(&args),
        Some("info") => info(&args),
        Some(other) => bail!("unknown command '{other}'\n\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}

fn make_random(args: &Args) -> Result<()> {
    args.reject_unknown(&[
        "scale",
        "resblocks",
        "feats",
        "quant",
        "w-bits",
        "a-bits",
        "seed",
        "out",
    ])?;
    let mut cfg = EdsrConfig::baseline(args.num("scale", 2)?);
    cfg.n_resblocks = args.num("resblocks", 16)?;
    cfg.n_feats = args.num("feats", 64)?;
    let seed: u64 = args.num("seed", 1)?;
    let out = args.get("out").context("--out FILE is required")?;
    let mut model = random::random_model(cfg, seed)?;
    if let Some(q) = args.get("quant") {
        let mode = match q {
            "fq" => QuantMode::Fq,
            "non-fq" => QuantMode::NonFq,
            other => bail!("--quant: expected fq or non-fq, found {other}"),
        };
        model = random::quantize_on_synthetic(
            &model,
            mode,
            args.num("w-bits", 4)?,
            args.num("a-bits", 4)?,
            seed,
        )?;
    }
    model.save(out)?;
    println!("wrote {out}: {} parameters", model.n_params());
    Ok(())
}

fn info(args: &Args) -> Result<()> {
    let path = args
        .positional
        .get(1)
        .context("usage: adabm-model info FILE")?;
    let m = Model::load(path).with_context(|| path.to_string())?;
    let c = &m.config;
    println!("{path}");
    println!(
        "  EDSR x{}  resblocks {}  feats {}  res_scale {}",
        c.scale, c.n_resblocks, c.n_feats, c.res_scale
    );
    println!(
        "  parameters {}  MACs per LR pixel {:.3} M",
        m.n_params(),
        m.macs_per_lr_pixel() / 1e6
    );
    match &m.quant {
        None => println!("  floating point"),
        Some(q) => println!(
            "  {:?} w{}a{}  image thresholds {:.3} / {:.3}  {} quantized layers",
            q.mode,
            q.w_bits,
            q.a_bits,
            q.image_lower,
            q.image_upper,
            q.layers.len()
        ),
    }
    Ok(())
}
