//! Embeds `adabmupscale` in a Rust application and reads the per-frame stats.
//!
//!   cargo run --release --example embed -- [MODEL.safetensors] [FRAMES]
//!
//! Without a model file the built-in x2 AdaBM w4a4 model runs (`precision=w4a4`).

use gst::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gst::init()?;
    // Static registration: no GST_PLUGIN_PATH needed inside this application.
    gstadabm::plugin_register_static()?;

    let mut args = std::env::args().skip(1);
    let model = match args.next() {
        Some(path) => format!("model-location={path}"),
        None => "precision=w4a4".to_string(),
    };
    let frames: u32 = args.next().map(|f| f.parse()).transpose()?.unwrap_or(10);

    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,format=RGB,width=160,height=90 ! \
         adabmupscale name=sr post-stats=true {model} ! fakesink"
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
