//! `adabmupscale`: video super-resolution with an adaptive-bit quantized EDSR (AdaBM).
//!
//! Upscales video by the model's scale: packed 8-bit RGB (RGB, BGR, RGBx, BGRx, xRGB, xBGR,
//! RGBA, BGRA, ARGB, ABGR), the deeper and planar RGB formats (64-bit RGBA, 10-bit packed RGB,
//! planar GBR / RGBP / BGRP at 8–12 bits: `engine::rgbfmt`), YUV at 8–16 bits and grey
//! (`engine::yuv`), each read and written at its own depth. Alpha is upscaled apart with
//! bilinear interpolation. Framerate and pixel-aspect-ratio pass through.
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
