//! Embeds `adabmupscale` in a Rust application and reads the per-frame stats.
//!
//!   cargo run --release --example embed -- [MODEL.safetensors] [FRAMES]
//!
//! Without a model file a small random fake-quant x2 model is made on the fly (the output is
//! then not a meaningful upscale, but every part of the pipeline runs).

use gst::prelude::*;
use gstadabm::engine::random::{quantize_on_synthetic, random_model};
use gstadabm::engine::{EdsrConfig, QuantMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    // Static registration: no GST_PLUGIN_PATH needed inside this application.
    gstadabm::plugin_register_static()?;

    let mut args = std::env::args().skip(1);
    let tmp = std::env::temp_dir().join("adabm-embed-example.safetensors");
    let model = match args.next() {
        Some(path) => path,
        None => {
            let cfg = EdsrConfig {
                n_resblocks: 4,
                n_feats: 32,
                ..EdsrConfig::baseline(2)
            };
            quantize_on_synthetic(&random_model(cfg, 1)?, QuantMode::Fq, 4, 4, 1)?.save(&tmp)?;
            tmp.display().to_string()
        }
    };
    let frames: u32 = args.next().map(|f| f.parse()).transpose()?.unwrap_or(10);

    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,format=RGB,width=160,height=90 ! \
         adabmupscale name=sr post-stats=true model-location={model} ! fakesink"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let sr = pipeline.by_name("sr").ok_or("no element named sr")?;
    pipeline.set_state(gst::State::Playing)?;

    let bus = pipeline.bus().ok_or("pipeline without bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                let Some(s) = e.structure().filter(|s| s.name() == "adabm-stats") else {
                    continue;
                };
                let frame = s.get::<u64>("frame")?;
                println!(
                    "frame {frame:3}: complexity {:7.3}  b_I {:+}  FAB {:.2}  {:7.1} ms  bits [{}]",
                    s.get::<f64>("complexity")?,
                    s.get::<i32>("image-bits")?,
                    s.get::<f64>("fab")?,
                    s.get::<f64>("processing-ms")?,
                    s.get::<String>("layer-bits")?
                );
                // Thresholds are live: halfway, demand one bit more for every frame.
                if frame + 1 == u64::from(frames / 2) {
                    sr.set_property("image-lower", 0.0f64);
                    sr.set_property("image-upper", 0.0f64);
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null)?;
                return Err(format!("{}: {:?}", e.error(), e.debug()).into());
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
