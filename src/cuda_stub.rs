//! The CUDA backend's API when the crate is built without the `cuda` feature: every engine
//! reports CUDA unavailable, so `backend=auto` runs on the CPU and `backend=cuda` fails with a
//! message saying how to get CUDA support.

use crate::engine::{Model, Options};

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("CUDA is not usable: no NVIDIA driver (libcuda.so not found)")]
    NoDriver,
    #[error("CUDA is not usable: {0}")]
    Unavailable(String),
    #[error("the CUDA backend does not support this model: {0}")]
    Unsupported(String),
}

pub type Result<T, E = CudaError> = std::result::Result<T, E>;

const NOT_BUILT: &str = "this build of adabm has no CUDA support (rebuild with the `cuda` feature)";

/// Always unavailable in this build.
pub fn probe(_device: usize) -> Result<(String, (i32, i32))> {
    Err(CudaError::Unavailable(NOT_BUILT.into()))
}

/// Stats of one frame computed on the device.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameStats {
    pub complexity: f32,
    pub image_bits: i32,
    pub layer_bits: Vec<u8>,
    pub fab: f32,
}

/// No value of this type can exist: [`CudaEngine::new`] always fails.
pub enum CudaEngine {}

impl CudaEngine {
    pub fn new(_model: &Model, _device: usize) -> Result<Self> {
        Err(CudaError::Unavailable(NOT_BUILT.into()))
    }

    pub fn device_name(&self) -> &str {
        match *self {}
    }

    pub fn scale(&self) -> usize {
        match *self {}
    }

    pub fn upscale_batch(
        &mut self,
        _frames: &[&[u8]],
        _w: usize,
        _h: usize,
        _opts: &Options,
    ) -> Result<Vec<(Vec<u8>, FrameStats)>> {
        match *self {}
    }
}
