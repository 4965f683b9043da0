//! adabm-upscale: upscale PNG images with a model file through the reference engine.
//!
//!   adabm-upscale --model M.safetensors [--tile N] [--threads N] [--base-bits B]
//!                 [--no-adaptive] IN.png OUT.png

use std::path::Path;

use adabm_tools::{Args, decode_png, write_png_rgb8};
use anyhow::{Context, Result};
use gstadabm::engine::rgbfmt::{RgbFormat, RgbMut, RgbRef};
use gstadabm::engine::{Engine, FrameMut, FrameRef, Image, Model, Options, PixelLayout};

const USAGE: &str = "\
adabm-upscale --model FILE [options] IN.png OUT.png

Upscales one PNG image with a model file (floating point or quantized) and prints the
frame's complexity, image bits b_I, FAB, tiles and time. The output keeps the input's alpha
channel (upscaled bilinearly, as the element does) and its bit depth (8 or 16); grey images
come out as RGB.

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
    let png = read_png_pixels(Path::new(input))?;
    let s = engine.scale();
    let (w, h) = (png.width * s, png.height * s);
    let st = if png.sixteen {
        // 16-bit PNGs keep their depth (and alpha): as RGBA64 (PNG's samples are big-endian).
        let mut out = vec![0u8; w * h * 8];
        let st = engine.process_rgb_frame(
            &RgbRef {
                planes: [&png.rgba, &[], &[], &[]],
                strides: [png.width * 8, 0, 0, 0],
                width: png.width,
                height: png.height,
                format: RgbFormat::RGBA64_BE,
            },
            &mut RgbMut {
                planes: [&mut out, &mut [], &mut [], &mut []],
                strides: [w * 8, 0, 0, 0],
                width: w,
                height: h,
                format: RgbFormat::RGBA64_BE,
            },
            &opts,
        )?;
        write_png_pixels(Path::new(output), w, h, png.alpha, 16, &out)?;
        st
    } else if png.alpha {
        // Alpha is upscaled apart (bilinearly), as the element does.
        let mut out = vec![0u8; w * h * 4];
        let st = engine.process_frame(
            &FrameRef {
                data: &png.rgba,
                stride: png.width * 4,
                width: png.width,
                height: png.height,
                layout: PixelLayout::Rgba,
            },
            &mut FrameMut {
                data: &mut out,
                stride: w * 4,
                width: w,
                height: h,
                layout: PixelLayout::Rgba,
            },
            &opts,
        )?;
        write_png_pixels(Path::new(output), w, h, true, 8, &out)?;
        st
    } else {
        // Straight into 8-bit RGB, tile by tile: no f32 image of the output's size.
        let lr: Vec<u8> = png
            .rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let img = Image::from_rgb8(png.width, png.height, &lr);
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
        st
    };
    println!(
        "{input} {}x{} -> {output} {}x{}: complexity {:.3}, b_I {:+}, FAB {:.3}, {} tile(s), {:.1} ms",
        png.width, png.height, w, h, st.complexity, st.image_bits, st.fab, st.tiles, st.millis
    );
    Ok(())
}

/// A PNG's pixels as RGBA (grey, palette and tRNS expanded): 4 bytes a pixel, or 8 for a
/// 16-bit PNG (big-endian samples, as PNG stores them).
struct PngPixels {
    width: usize,
    height: usize,
    sixteen: bool,
    alpha: bool,
    rgba: Vec<u8>,
}

fn read_png_pixels(path: &Path) -> Result<PngPixels> {
    let (info, px) = decode_png(path, false)?;
    let sixteen = info.bit_depth == png::BitDepth::Sixteen;
    let b = if sixteen { 2 } else { 1 };
    let opaque = if sixteen {
        &[255u8, 255][..]
    } else {
        &[255u8][..]
    };
    let (channels, alpha) = match info.color_type {
        png::ColorType::Grayscale => (1, false),
        png::ColorType::GrayscaleAlpha => (2, true),
        png::ColorType::Rgb => (3, false),
        png::ColorType::Rgba => (4, true),
        png::ColorType::Indexed => {
            anyhow::bail!("{}: indexed PNG was not expanded", path.display())
        }
    };
    let mut rgba = Vec::with_capacity(info.width as usize * info.height as usize * 4 * b);
    for p in px.chunks_exact(channels * b) {
        let sample = |c: usize| &p[c * b..(c + 1) * b];
        let (rgb, a) = match channels {
            1 => ([sample(0); 3], opaque),
            2 => ([sample(0); 3], sample(1)),
            3 => ([sample(0), sample(1), sample(2)], opaque),
            _ => ([sample(0), sample(1), sample(2)], sample(3)),
        };
        for v in rgb {
            rgba.extend_from_slice(v);
        }
        rgba.extend_from_slice(a);
    }
    Ok(PngPixels {
        width: info.width as usize,
        height: info.height as usize,
        sixteen,
        alpha,
        rgba,
    })
}

/// Writes RGBA pixels (4 or 8 bytes each, 16-bit big-endian) as an RGBA PNG, or as RGB
/// without their alpha.
fn write_png_pixels(
    path: &Path,
    width: usize,
    height: usize,
    alpha: bool,
    depth: usize,
    rgba: &[u8],
) -> Result<()> {
    let b = depth / 8;
    let data: Vec<u8> = if alpha {
        rgba.to_vec()
    } else {
        rgba.chunks_exact(4 * b)
            .flat_map(|p| p[..3 * b].iter().copied())
            .collect()
    };
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(if alpha {
        png::ColorType::Rgba
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(if b == 2 {
        png::BitDepth::Sixteen
    } else {
        png::BitDepth::Eight
    });
    enc.write_header()?.write_image_data(&data)?;
    Ok(())
}
