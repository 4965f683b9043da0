//! The models compiled into the plugin (trained by us; recipe in `docs/training.md`).

use super::error::{Error, Result};
use super::model::Model;

/// One built-in model.
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    /// Stable name, also the file name under `models/` without `.safetensors`.
    pub name: &'static str,
    pub scale: u32,
    /// `fp32` (floating point), or `w8a6` / `w4a4`: AdaBM (fq mode) with those weight and base
    /// activation bits.
    pub precision: &'static str,
    pub bytes: &'static [u8],
}

impl Builtin {
    /// Parses the embedded model file (validated like any other).
    pub fn load(&self) -> Result<Model> {
        Model::from_bytes(self.bytes)
    }
}

/// A [`Builtin`] whose file is `models/<name>.safetensors`.
macro_rules! builtin {
    ($name:literal, $scale:literal, $precision:literal) => {
        Builtin {
            name: $name,
            scale: $scale,
            precision: $precision,
            bytes: include_bytes!(concat!("../../models/", $name, ".safetensors")),
        }
    };
}

/// Every built-in model.
pub const MODELS: &[Builtin] = &[
    builtin!("edsr-r8f32-x2", 2, "fp32"),
    builtin!("edsr-r8f32-x2-w8a6", 2, "w8a6"),
    builtin!("edsr-r8f32-x2-w4a4", 2, "w4a4"),
    builtin!("edsr-r8f32-x3", 3, "fp32"),
    builtin!("edsr-r8f32-x3-w8a6", 3, "w8a6"),
    builtin!("edsr-r8f32-x3-w4a4", 3, "w4a4"),
    builtin!("edsr-r8f32-x4", 4, "fp32"),
    builtin!("edsr-r8f32-x4-w8a6", 4, "w8a6"),
    builtin!("edsr-r8f32-x4-w4a4", 4, "w4a4"),
];

/// Scale used when neither a model file nor a scale is given.
pub const DEFAULT_SCALE: u32 = 2;

/// The built-in model for `scale` (0: [`DEFAULT_SCALE`]) and `precision`.
pub fn find(scale: u32, precision: &str) -> Result<&'static Builtin> {
    let scale = if scale == 0 { DEFAULT_SCALE } else { scale };
    MODELS
        .iter()
        .find(|m| m.scale == scale && m.precision == precision)
        .ok_or_else(|| {
            let have: Vec<String> = MODELS
                .iter()
                .map(|m| format!("x{} {}", m.scale, m.precision))
                .collect();
            Error::Setting(format!(
                "no built-in x{scale} {precision} model (built in: {}); set model-location to a model file",
                have.join(", ")
            ))
        })
}
