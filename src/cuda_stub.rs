//! The CUDA backend's API when the crate is built without the `cuda` feature: every engine
//! reports CUDA unavailable, so `backend=auto` runs on the CPU and `backend=cuda` fails with a
//! message saying how to get CUDA support.

use crate::engine::{Model, Options};

pub use crate::cuda_common::{
    CudaError, Done, FrameStats, Pixels, Result, f32_frame_bytes, f32_frame_values,
};

const NOT_BUILT: &str = "this build of adabm has no CUDA support (rebuild with the `cuda` feature)";

/// Always unavailable in this build.
pub fn probe(_device: usize) -> Result<(String, (i32, i32))> {
    Err(CudaError::Unavailable(NOT_BUILT.into()))
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

/// No value of this type can exist: [`SharedCuda::get`] always fails.
pub enum SharedCuda {}

/// Frames per launch of a shared engine (unused without CUDA).
pub const MAX_BATCH: usize = 4;

impl SharedCuda {
    pub fn get(_model: &Model, _device: usize) -> Result<std::sync::Arc<SharedCuda>> {
        Err(CudaError::Unavailable(NOT_BUILT.into()))
    }

    pub fn get_with_lanes(
        _model: &Model,
        _device: usize,
        _lanes: usize,
    ) -> Result<std::sync::Arc<SharedCuda>> {
        Err(CudaError::Unavailable(NOT_BUILT.into()))
    }

    pub fn lanes(&self) -> usize {
        match *self {}
    }

    pub fn upscale(
        &self,
        _rgb: Vec<u8>,
        _w: usize,
        _h: usize,
        _opts: &Options,
    ) -> std::result::Result<(Vec<u8>, FrameStats), String> {
        match *self {}
    }

    pub fn upscale_reusing(
        &self,
        _rgb: Vec<u8>,
        _out: Vec<u8>,
        _w: usize,
        _h: usize,
        _opts: &Options,
    ) -> std::result::Result<Done, String> {
        match *self {}
    }

    pub fn upscale_as(
        &self,
        _frame: Vec<u8>,
        _fmt: (Pixels, Pixels),
        _out: Vec<u8>,
        _w: usize,
        _h: usize,
        _opts: &Options,
    ) -> std::result::Result<Done, String> {
        match *self {}
    }

    pub fn yuv_on_device(&self) -> std::result::Result<(), &str> {
        match *self {}
    }

    pub fn device_name(&self) -> &str {
        match *self {}
    }

    pub fn scale(&self) -> usize {
        match *self {}
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        match *self {}
    }
}
