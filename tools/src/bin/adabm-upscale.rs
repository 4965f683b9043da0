//! adabm-upscale: upscale PNG images with a model file through the reference engine.
//!
//!   adabm-upscale --model M.safetensors [--tile N] [--threads N] [--base-bits B]
//!                 [--no-adaptive] IN.png OUT.png

use std::path::Path;

use adabm_tools::{Args, read_png, write_png_rgb8};
use anyhow::{Context, Result};
use gstadabm::engine::{Engine, FrameMut, Model, Options, PixelLayout};

const USAGE: &str = "\
adabm-upscale --model FILE [options] IN.png OUT.png

Upscales one PNG image with a model file (floating point or quantized) and prints the
frame's complexity, image bits b_I, FAB, tiles and time.

  --model FILE     model file (.safetensors)
  --tile N         process in overlapping tiles of N LR pixels (0: automatic, default)
  --threads N      worker threads (default: all cores)
  --base-bits B    override the model's base activation bits
  --no-adaptive    b_I = 0 (no image-level adaptation)";

fn main() -> Result<()> {
    let args = Args::parse(&["no-adaptive"])?;
    if args.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    args.reject_unknown(&["model", "tile", "threads", "base-bits", "no-adaptive"])?;
    let [input, output] = args.positional.as_slice() else {
        anyhow::bail!("expected IN.png OUT.png\n\n{USAGE}");
    };
    let path = args.get("model").context("--model FILE is required")?;
    let model = Model::load(path).with_context(|| format!("--model {path}"))?;
    let engine = Engine::new(&model, args.num("threads", 0)?)?;
    let opts = Options {
        adaptive: !args.flag("no-adaptive"),
        base_bits: args.get("base-bits").map(str::parse).transpose()?,
        tile_size: args.num("tile", 0)?,
        ..Options::default()
    };
    let img = read_png(Path::new(input))?;
    // Straight into 8-bit RGB, tile by tile: no f32 image of the output's size.
    let s = engine.scale();
    let (w, h) = (img.width * s, img.height * s);
    let mut rgb = vec![0u8; w * h * 3];
    let st = engine.upscale_to_frame(
        &img,
        &mut FrameMut {
            data: &mut rgb,
            stride: w * 3,
            width: w,
            height: h,
            layout: PixelLayout::Rgb,
        },
        &opts,
    )?;
    write_png_rgb8(Path::new(output), w, h, &rgb)?;
    println!(
        "{input} {}x{} -> {output} {}x{}: complexity {:.3}, b_I {:+}, FAB {:.3}, {} tile(s), {:.1} ms",
        img.width, img.height, w, h, st.complexity, st.image_bits, st.fab, st.tiles, st.millis
    );
    Ok(())
}
