//! adabm: video super-resolution with an adaptive-bit quantized EDSR (AdaBM, CVPR 2024).
//!
//! The crate has two halves:
//! - [`engine`]: GStreamer-free. Model file loading and validation, the f32 reference engine
//!   (floating point and AdaBM fake-quant), image complexity, frame packing. Builds with
//!   `--no-default-features`.
//! - [`cuda`] (feature `cuda`, on by default): the CUDA engine, and one engine shared by
//!   several streams through [`batch`].
//! - `adabmupscale` (feature `element`, on by default): the GStreamer element.

pub mod batch;
#[cfg(feature = "cuda")]
pub mod cuda;
/// Without the `cuda` feature: the same API, an engine that is never available.
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
pub mod cuda;
mod cuda_common;
pub mod engine;

#[cfg(feature = "element")]
mod adabmupscale;

#[cfg(feature = "element")]
fn plugin_init(plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> {
    adabmupscale::register(plugin)
}

#[cfg(feature = "element")]
gst::plugin_define!(
    adabm,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
