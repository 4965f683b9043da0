//! `adabmupscale`: video super-resolution with an adaptive-bit quantized EDSR (AdaBM).
//!
//! Upscales packed 8-bit RGB video (RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR)
//! by the model's scale. Alpha is upscaled apart with bilinear interpolation. Framerate and
//! pixel-aspect-ratio pass through.
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! \
//!     adabmupscale model-location=edsr_x2.safetensors post-stats=true ! \
//!     videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location=out.mp4
//! ```
//!
//! With `post-stats=true` every frame posts an element message `adabm-stats` with the fields
//! `frame` (u64), `pts` (u64 nanoseconds, absent when the buffer has none), `complexity`
//! (f64), `image-bits`
//! (i32, b_I), `fab` (f64), `layer-bits` (string, comma separated) and `processing-ms` (f64).

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct AdabmUpscale(ObjectSubclass<imp::AdabmUpscale>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "adabmupscale",
        gst::Rank::NONE,
        AdabmUpscale::static_type(),
    )
}
