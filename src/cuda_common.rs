//! What the CUDA backend and its stub (built without the `cuda` feature) share: the error type,
//! the per-frame stats and a shared engine's finished frame.

use crate::engine::yuv::YuvFormat;

/// Everything that can go wrong on the CUDA path, with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("CUDA is not usable: no NVIDIA driver (libcuda.so not found)")]
    NoDriver,
    #[error("CUDA is not usable: {0}")]
    Unavailable(String),
    #[error("NVRTC could not compile kernels/adabm.cu for {arch}: {log}")]
    Compile { arch: String, log: String },
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("the CUDA backend does not support this model: {0}")]
    Unsupported(String),
    #[error("invalid input: {0}")]
    Input(String),
}

pub type Result<T, E = CudaError> = std::result::Result<T, E>;

/// How a frame's bytes are laid out on their way into or out of a CUDA engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pixels {
    /// Packed RGB, 3 bytes a pixel.
    Rgb,
    /// A YUV frame of a layout the device converts ([`YuvLayout::device_convertible`]: all
    /// but v210, which goes as I422_10LE) with its planes packed tightly
    /// ([`YuvFormat::tight_len`]), converted on the device to and from the network's f32 RGB
    /// exactly as the CPU engine converts it ([`unpack_with`](crate::engine::yuv::unpack_with)
    /// and [`pack_with`](crate::engine::yuv::pack_with); no 8-bit RGB in between; packed
    /// 4:4:4's alpha bytes are ignored in and written opaque out).
    ///
    /// [`YuvLayout::device_convertible`]: crate::engine::yuv::YuvLayout::device_convertible
    Yuv(YuvFormat),
    /// The network's RGB values as f32 (0–255 scale, little-endian), 12 bytes a pixel: in,
    /// what the host converted from a format the device does not (deep RGB, a YUV layout with
    /// the device's conversion off); out, the unrounded output, for the host to pack at the
    /// format's own depth as the CPU engine does.
    RgbF32,
}

impl Pixels {
    /// Bytes of a `w x h` frame.
    pub fn bytes(&self, w: usize, h: usize) -> usize {
        match self {
            Pixels::Rgb => w * h * 3,
            Pixels::Yuv(f) => f.tight_len(w, h),
            Pixels::RgbF32 => w * h * 12,
        }
    }
}

/// Stats of one frame computed on the device.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameStats {
    pub complexity: f32,
    pub image_bits: i32,
    /// Activation bits of the adaptive layers, in layer order.
    pub layer_bits: Vec<u8>,
    pub fab: f32,
}

/// A frame done by a shared engine: its HR frame (packed RGB, in the buffer the caller gave),
/// its stats, and the caller's input buffer handed back, so that both can serve its next frame.
pub struct Done {
    pub hr: Vec<u8>,
    pub stats: FrameStats,
    pub rgb: Vec<u8>,
}

/// f32 values as the little-endian bytes of a [`Pixels::RgbF32`] frame, into `out` (resized;
/// rows in parallel: a 4K frame is 100 MB).
pub fn f32_frame_bytes(v: &[f32], out: &mut Vec<u8>) {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 16;
    out.resize(v.len() * 4, 0);
    out.par_chunks_mut(PIECE * 4)
        .zip(v.par_chunks(PIECE))
        .for_each(|(o, v)| {
            for (o, x) in o.chunks_exact_mut(4).zip(v) {
                o.copy_from_slice(&x.to_le_bytes());
            }
        });
}

/// The f32 values of a [`Pixels::RgbF32`] frame's bytes, into `out` (resized).
pub fn f32_frame_values(b: &[u8], out: &mut Vec<f32>) {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 16;
    out.resize(b.len() / 4, 0.0);
    out.par_chunks_mut(PIECE)
        .zip(b.par_chunks(PIECE * 4))
        .for_each(|(o, b)| {
            for (o, c) in o.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::{f32_frame_bytes, f32_frame_values};

    /// The f32 frames of the CUDA path's host conversions (deep RGB formats, YUV converted on
    /// the CPU) are the values' little-endian bytes and back, at sizes across the parallel
    /// pieces, in buffers that held a larger frame before.
    #[test]
    fn f32_frames_round_trip_through_their_bytes() {
        let (mut bytes, mut back) = (vec![7u8; 1 << 20], vec![1.0f32; 1 << 18]);
        for n in [0usize, 1, 3, (1 << 16) - 1, 1 << 16, (1 << 16) * 3 + 5] {
            let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 20.5).collect();
            f32_frame_bytes(&v, &mut bytes);
            assert_eq!(bytes, crate::engine::model::f32_bytes(&v), "{n} values");
            f32_frame_values(&bytes, &mut back);
            assert_eq!(back, v, "{n} values back");
        }
    }
}
