//! The CUDA engine: device weights, persistent buffers, the launch sequence of one batch.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    LaunchConfig, PinnedHostSlice, PushKernelArg, sys,
};

use super::{CudaError, FrameStats, Pixels, Result, compiled_for};
use crate::engine::conv::ConvWeights;
use crate::engine::edsr::Network;
use crate::engine::intnet::{IntConv, IntLayer, IntNetwork};
use crate::engine::model::{LayerKind, Role};
use crate::engine::yuv::{YuvFormat, YuvParams};
use crate::engine::{ComplexityMetric, Model, Options, complexity, quant};

const TILE: usize = 16;
const HALO: usize = TILE + 2;
const MMA_THREADS: u32 = 256;

/// kernels/adabm.cu `Quant`, field for field (public for the emulated-GPU tests,
/// tests/cuda_host.rs).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Quant {
    pub l: f32,
    pub u: f32,
    pub s: f32,
    pub da: f32,
}
unsafe impl DeviceRepr for Quant {}
unsafe impl cudarc::driver::ValidAsZeroBits for Quant {}

/// kernels/adabm.cu `LayerInfo`, field for field (public for the emulated-GPU tests,
/// tests/cuda_host.rs).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerInfo {
    pub l: f32,
    pub u: f32,
    pub kind: i32,
    pub b_l: i32,
}
unsafe impl DeviceRepr for LayerInfo {}

/// kernels/adabm.cu `DirectArgs`, field for field (public for the emulated-GPU tests,
/// tests/cuda_host.rs).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectArgs {
    pub input: u64,
    pub wts: u64,
    pub bias: u64,
    pub ktab: u64,
    pub plan: u64,
    pub head: u64,
    pub res: u64,
    pub out: u64,
    pub rgb: u64,
    pub rgbf: u64,
    pub h: i32,
    pub w: i32,
    pub hp_in: i32,
    pub wp_in: i32,
    pub hp_out: i32,
    pub wp_out: i32,
    pub m: i32,
    pub layer: i32,
    pub next: i32,
    pub l_count: i32,
    pub hw: f32,
    pub mean: [f32; 3],
    pub inv: f32,
    /// No implicit padding (the emulated-GPU tests send the struct's bytes).
    pub pad: i32,
}
unsafe impl DeviceRepr for DirectArgs {}

/// kernels/adabm.cu `MmaArgs`, field for field (public for the emulated-GPU tests,
/// tests/cuda_host.rs).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmaArgs {
    pub input: u64,
    pub wts: u64,
    pub bias: u64,
    pub ktab: u64,
    pub plan: u64,
    pub res: u64,
    pub head: u64,
    pub out: u64,
    pub h: i32,
    pub w: i32,
    pub hp: i32,
    pub wp: i32,
    pub tiles_x: i32,
    pub tiles_y: i32,
    pub frames: i32,
    pub hp_out: i32,
    pub wp_out: i32,
    pub cout: i32,
    pub m: i32,
    pub layer: i32,
    pub next: i32,
    pub l_count: i32,
    pub r: i32,
    pub hw: f32,
    pub res_scale: f32,
    /// No implicit padding (the emulated-GPU tests send the struct's bytes).
    pub pad: i32,
}
unsafe impl DeviceRepr for MmaArgs {}

/// What one frame of a batch asks for (kernels/adabm.cu `FrameParams`; public for the
/// emulated-GPU tests).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameParams {
    pub lower: f32,
    pub upper: f32,
    pub base: i32,
    pub adaptive: i32,
    /// The frame's complexity measured on the host (`has_c` = 1: a metric other than the
    /// gradient density, which the GPU measures itself).
    pub c_host: f32,
    pub has_c: i32,
}
unsafe impl DeviceRepr for FrameParams {}
unsafe impl cudarc::driver::ValidAsZeroBits for FrameParams {}

/// Arguments of the floating-point head and tail (kernels/adabm.cu `FloatArgs`, field for
/// field; public for the emulated-GPU tests, tests/cuda_host.rs).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FloatArgs {
    pub rgb: u64,
    pub input: u64,
    pub wts: u64,
    pub bias: u64,
    pub plan: u64,
    pub head: u64,
    pub res: u64,
    pub out: u64,
    pub rgbo: u64,
    pub rgbf: u64,
    pub h: i32,
    pub w: i32,
    pub hp_in: i32,
    pub wp_in: i32,
    pub hp_out: i32,
    pub wp_out: i32,
    pub next: i32,
    pub l_count: i32,
    pub codes: i32,
    pub k: f32,
    pub mean: [f32; 3],
    pub inv: f32,
}
unsafe impl DeviceRepr for FloatArgs {}

/// Where the network's layers run: every layer on integer codes (fq), a floating-point head,
/// upsampler and tail around an integer body (non-fq), or every layer in floating point
/// (f16 tensor cores, f32 head and tail).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Fq,
    NonFq,
    Float,
}

// SAFETY: `#[repr(C)]` plain data (u64, i32 and f32 fields), `struct YuvParams` of
// kernels/adabm.cu field for field.
unsafe impl DeviceRepr for YuvParams {}

/// One conv on the device.
type DevConv = Conv<CudaSlice<u8>, CudaSlice<f32>, CudaSlice<i32>>;

/// HR frames with their stats, and (when asked for) the unrounded f32 outputs.
pub type Batch = (Vec<(Vec<u8>, FrameStats)>, Vec<Vec<f32>>);

/// Padded geometry of a code map: `hp x wp` pixels, tiles of 16 (public for the emulated-GPU
/// tests, tests/cuda_host.rs).
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    pub h: usize,
    pub w: usize,
    pub hp: usize,
    pub wp: usize,
    pub tiles_y: usize,
    pub tiles_x: usize,
}

impl Geom {
    pub fn new(h: usize, w: usize) -> Self {
        let (ty, tx) = (h.div_ceil(TILE), w.div_ceil(TILE));
        Self {
            h,
            w,
            hp: ty * TILE + 2,
            wp: tx * TILE + 2,
            tiles_y: ty,
            tiles_x: tx,
        }
    }
    fn pixels(&self) -> usize {
        self.hp * self.wp
    }
}

/// Buffers of one batch shape, kept between batches.
struct Buffers {
    /// Frames of the current batch, and how many the buffers hold (batches of any size up to
    /// `cap` reuse them: the batch size of a shared engine varies from call to call).
    frames: usize,
    cap: usize,
    lr: Geom,
    /// Geometry after each upsampler stage.
    hr: Vec<Geom>,
    /// The RGB frames' bytes as uploaded.
    rgb_in: CudaSlice<u8>,
    /// Every frame's RGB values (f32, 0–255 scale) that the network reads: RGB bytes widened
    /// (`rgb_widen`), YUV frames converted (`yuv_unpack`) without rounding, as the CPU engine
    /// reads them.
    rgbf_in: CudaSlice<u8>,
    csum: CudaSlice<u64>,
    params: CudaSlice<FrameParams>,
    plan: CudaSlice<Quant>,
    stats: CudaSlice<f32>,
    bits: CudaSlice<u8>,
    input: CudaSlice<u8>,
    codes_a: CudaSlice<u8>,
    codes_b: CudaSlice<u8>,
    head: CudaSlice<f32>,
    res: CudaSlice<f32>,
    hr_codes: Vec<CudaSlice<u8>>,
    /// f16 feature maps (same padded geometry, 2 bytes per value) of the floating-point
    /// layers: LR maps and each upsampler stage's output. One byte when unused.
    half_a: CudaSlice<u8>,
    half_b: CudaSlice<u8>,
    hr_half: Vec<CudaSlice<u8>>,
    rgb_out: CudaSlice<u8>,
    /// The unrounded f32 output, when a caller asks for it or a frame is packed to YUV from it.
    rgbf: Option<CudaSlice<u8>>,
    host_in: PinnedHostSlice<u8>,
    host_out: PinnedHostSlice<u8>,
    /// Staging of YUV frames (tight planes), made when a batch first has one.
    yuv: Option<YuvStage>,
}

/// Device and pinned host bytes of a batch's YUV frames: inputs before `yuv_unpack`, outputs
/// after `yuv_pack` (each frame's at the sum of the sizes before it).
struct YuvStage {
    dev_in: CudaSlice<u8>,
    dev_out: CudaSlice<u8>,
    host_in: PinnedHostSlice<u8>,
    host_out: PinnedHostSlice<u8>,
}

/// The integer EDSR on one CUDA device.
pub struct CudaEngine {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    net: Network,
    layout: Layout,
    convs: Vec<DevConv>,
    layer_info: CudaSlice<LayerInfo>,
    f_complexity: CudaFunction,
    f_plan: CudaFunction,
    f_input: CudaFunction,
    f_head: CudaFunction,
    f_tail: CudaFunction,
    /// `[mode-1][signed]` tensor-core kernels.
    f_mma: Vec<[CudaFunction; 2]>,
    /// `[signed]`: the last block's conv2 writing the f16 input of a floating-point last body
    /// conv (non-fq).
    f_mma_h: [CudaFunction; 2],
    /// `[mode-1]`: f16 tensor-core kernels of floating-point layers.
    f_hmma: Vec<CudaFunction>,
    f_fhead: CudaFunction,
    f_ftail: CudaFunction,
    f_yuv_unpack: CudaFunction,
    f_yuv_pack: CudaFunction,
    f_widen: CudaFunction,
    sms: u32,
    bufs: Option<Buffers>,
    /// f32 values of a frame whose complexity the host measures (kept between frames).
    host_frame: Vec<f32>,
    name: String,
}

/// How the engine reads a model: its network, each layer as it runs on the device (integer
/// codes or floating point; a float model has only floating-point layers), and where they run.
#[doc(hidden)]
pub fn device_network(model: &Model) -> Result<(Network, Vec<IntLayer>, Layout)> {
    let (net, layers) = match IntNetwork::new(model) {
        Some(n) => (n.net, n.layers),
        None => {
            let net = Network::new(model);
            let layers = net
                .layers
                .iter()
                .map(|l| IntLayer::Float(l.weights.clone()))
                .collect();
            (net, layers)
        }
    };
    // Which layers of each part (residual blocks; the rest) run on integer codes. Non-fq
    // quantizes the blocks only: its last body conv is a float layer.
    let part = |body: bool| {
        let mut it = layers.iter().zip(&net.layers).filter(|(_, l)| {
            body == matches!(l.spec.role, Role::BlockConv1(_) | Role::BlockConv2(_))
        });
        let int = |(c, _): (&IntLayer, _)| matches!(c, IntLayer::Int(_));
        (it.clone().all(int), it.any(int))
    };
    let layout = match (part(true), part(false)) {
        ((_, false), (_, false)) => Layout::Float,
        ((true, _), (true, _)) => Layout::Fq,
        ((true, _), (_, false)) => Layout::NonFq,
        _ => {
            return Err(CudaError::Unsupported(
                "a model quantized neither fq (every layer) nor non-fq (the body)".into(),
            ));
        }
    };
    Ok((net, layers, layout))
}

fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p
}

impl CudaEngine {
    /// Prepares `model` on CUDA device `device`: quantized (fq or non-fq) and floating-point
    /// models with 32 or 64 features; others get [`CudaError::Unsupported`].
    pub fn new(model: &Model, device: usize) -> Result<Self> {
        model
            .validate()
            .map_err(|e| CudaError::Input(e.to_string()))?;
        let (net, layers, layout) = device_network(model)?;
        let f = net.config.n_feats;
        if f != 32 && f != 64 {
            return Err(CudaError::Unsupported(format!(
                "{f} features; the kernels are built for 32 or 64"
            )));
        }
        let (name, (major, minor)) = super::probe(device)?;
        let ctx = CudaContext::new(device)?;
        // One stream per engine: ordering is the stream's, no per-buffer events needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let compiled = compiled_for(&format!("sm_{major}{minor}"))?;
        let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(
            compiled.cubin.as_ref().clone(),
        ))?;
        let load = |n: &str| module.load_function(n);
        let mut f_mma = Vec::new();
        let mut f_hmma = Vec::new();
        for e in 1..=4 {
            // Upsampler convs (e4) are fixed 8-bit: only the unsigned kernel exists.
            let signed = if e == 4 { 0 } else { 1 };
            f_mma.push([
                load(&format!("conv_mma_c{f}_e{e}_s0"))?,
                load(&format!("conv_mma_c{f}_e{e}_s{signed}"))?,
            ]);
            f_hmma.push(load(&format!("conv_hmma_c{f}_e{e}"))?);
        }
        let f_mma_h = [
            load(&format!("conv_mma_c{f}_e2_s0_h"))?,
            load(&format!("conv_mma_c{f}_e2_s1_h"))?,
        ];
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            as u32;
        let smem_limit = ctx.attribute(
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        )? as u32;

        let mut convs = Vec::new();
        let mut infos = Vec::new();
        for (k, layer) in layers.iter().enumerate() {
            let spec = &net.layers[k];
            let role = spec.spec.role;
            match layer {
                IntLayer::Int(c) => {
                    let q = spec.quant.expect("quantized layer has bounds");
                    infos.push(LayerInfo {
                        l: q.l,
                        u: q.u,
                        kind: match spec.kind {
                            LayerKind::Float => 0,
                            LayerKind::Adaptive => 1,
                            LayerKind::Fixed8 => 2,
                        },
                        b_l: spec.b_l,
                    });
                    convs.push(upload_conv(&stream, c, role)?);
                }
                IntLayer::Float(w) => {
                    // Bits 0: the plan's quantizer of a float layer is never read.
                    infos.push(LayerInfo {
                        l: 0.0,
                        u: 1.0,
                        kind: 0,
                        b_l: 0,
                    });
                    convs.push(upload_float_conv(&stream, w, role)?);
                }
            }
        }
        let max_smem = convs.iter().map(|c| c.smem).max().unwrap_or(0);
        if max_smem > smem_limit {
            return Err(CudaError::Unsupported(format!(
                "{name} has {smem_limit} bytes of shared memory per block; this model's \
                 {} convs need {max_smem}",
                if layout == Layout::Fq {
                    "integer"
                } else {
                    "floating-point"
                }
            )));
        }
        let layer_info = stream.clone_htod(&infos)?;
        let engine = Self {
            f_complexity: load("complexity")?,
            f_plan: load("plan_bits")?,
            f_input: load("input_codes")?,
            f_head: load(&format!("conv_head_c{f}"))?,
            f_tail: load(&format!("conv_tail_c{f}"))?,
            f_fhead: load(&format!("conv_fhead_c{f}"))?,
            f_ftail: load(&format!("conv_ftail_c{f}"))?,
            f_yuv_unpack: load("yuv_unpack")?,
            f_yuv_pack: load("yuv_pack")?,
            f_widen: load("rgb_widen")?,
            f_mma,
            f_mma_h,
            f_hmma,
            ctx,
            stream,
            _module: module,
            net,
            layout,
            convs,
            layer_info,
            sms,
            bufs: None,
            host_frame: Default::default(),
            name,
        };
        for func in engine
            .f_mma
            .iter()
            .flatten()
            .chain(&engine.f_mma_h)
            .chain(&engine.f_hmma)
        {
            func.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                max_smem as i32,
            )?;
        }
        engine.ctx.bind_to_thread()?;
        Ok(engine)
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    pub fn scale(&self) -> usize {
        self.net.config.scale as usize
    }

    /// Buffers for `frames` frames of `w x h` (kept when they fit); `want_f32`: with the f32
    /// output (buffers that have it are kept for batches that do not need it).
    fn ensure_buffers(&mut self, frames: usize, h: usize, w: usize, want_f32: bool) -> Result<()> {
        if let Some(b) = &mut self.bufs
            && b.cap >= frames
            && b.lr.h == h
            && b.lr.w == w
            && (b.rgbf.is_some() || !want_f32)
        {
            b.frames = frames;
            return Ok(());
        }
        self.bufs = None; // free the old ones first
        let s = &self.stream;
        let c = self.net.config.n_feats;
        let l_count = self.convs.len();
        let lr = Geom::new(h, w);
        let mut hr = Vec::new();
        let mut scale = 1;
        for layer in &self.net.layers {
            if let Role::Up { r, .. } = layer.spec.role {
                scale *= r;
                hr.push(Geom::new(h * scale, w * scale));
            }
        }
        let s_total = self.scale();
        let out_px = frames * h * s_total * w * s_total;
        let f = frames;
        let bytes = |n: usize| -> Result<CudaSlice<u8>> { Ok(s.alloc_zeros::<u8>(n)?) };
        let floats = |n: usize| -> Result<CudaSlice<f32>> { Ok(s.alloc_zeros::<f32>(n)?) };
        // Code maps where integer layers read them, f16 maps where float layers do (unused
        // ones get one byte).
        let int_body = self.layout != Layout::Float;
        let int_up = self.layout == Layout::Fq;
        let sized = |n: usize, used: bool| bytes(if used { n } else { 1 });
        let mut hr_codes = Vec::new();
        let mut hr_half = Vec::new();
        for g in &hr {
            hr_codes.push(sized(f * g.pixels() * c, int_up)?);
            hr_half.push(sized(f * g.pixels() * c * 2, !int_up)?);
        }
        self.bufs = Some(Buffers {
            frames,
            cap: frames,
            lr,
            rgb_in: bytes(f * h * w * 3)?,
            rgbf_in: bytes(f * h * w * 12)?,
            csum: s.alloc_zeros::<u64>(f)?,
            params: s.alloc_zeros::<FrameParams>(f)?,
            plan: s.alloc_zeros::<Quant>(f * l_count)?,
            stats: floats(2 * f)?,
            bits: bytes(f * l_count)?,
            input: sized(f * lr.pixels() * 4, int_up)?,
            codes_a: sized(f * lr.pixels() * c, int_body)?,
            codes_b: sized(f * lr.pixels() * c, int_body)?,
            half_a: sized(f * lr.pixels() * c * 2, !int_up)?,
            half_b: sized(f * lr.pixels() * c * 2, !int_up)?,
            hr_half,
            head: floats(f * h * w * c)?,
            res: floats(f * h * w * c)?,
            hr,
            hr_codes,
            rgb_out: bytes(out_px * 3)?,
            rgbf: if want_f32 {
                Some(bytes(out_px * 12)?)
            } else {
                None
            },
            // SAFETY: written before read.
            host_in: unsafe { self.ctx.alloc_pinned_with_flags::<u8>(f * h * w * 3, 0)? },
            host_out: unsafe { self.ctx.alloc_pinned_with_flags::<u8>(out_px * 3, 0)? },
            yuv: None,
        });
        Ok(())
    }

    /// Makes the YUV staging hold `inp` input and `out` output bytes (kept when it does).
    fn ensure_yuv(&mut self, inp: usize, out: usize) -> Result<()> {
        let b = self.bufs.as_mut().expect("buffers");
        if let Some(y) = &b.yuv
            && y.dev_in.len() >= inp
            && y.dev_out.len() >= out
        {
            return Ok(());
        }
        b.yuv = None;
        let (inp, out) = (inp.max(1), out.max(1));
        let s = &self.stream;
        b.yuv = Some(YuvStage {
            dev_in: s.alloc_zeros::<u8>(inp)?,
            dev_out: s.alloc_zeros::<u8>(out)?,
            // SAFETY: written before read.
            host_in: unsafe { self.ctx.alloc_pinned_with_flags::<u8>(inp, 0)? },
            host_out: unsafe { self.ctx.alloc_pinned_with_flags::<u8>(out, 0)? },
        });
        Ok(())
    }

    /// Upscales a batch of packed RGB frames (`w x h x 3` bytes each); each frame gets its own
    /// complexity and bit-widths. Returns the HR frames (packed RGB) and their stats.
    pub fn upscale_batch(
        &mut self,
        frames: &[&[u8]],
        w: usize,
        h: usize,
        opts: &Options,
    ) -> Result<Vec<(Vec<u8>, FrameStats)>> {
        self.run(frames, w, h, std::slice::from_ref(opts), false)
            .map(|(v, _)| v)
    }

    /// [`Self::upscale_batch`] with options per frame (`opts[i]` for frame `i`: base bits,
    /// thresholds, adaptive), in one launch: frames of several streams, each with its own
    /// element properties.
    pub fn upscale_frames(
        &mut self,
        frames: &[&[u8]],
        w: usize,
        h: usize,
        opts: &[Options],
    ) -> Result<Vec<(Vec<u8>, FrameStats)>> {
        self.run(frames, w, h, opts, false).map(|(v, _)| v)
    }

    /// [`Self::upscale_frames`] into `outs` (one per frame, resized to the HR frame and
    /// overwritten; memory they already have is reused, so a caller that hands back the same
    /// buffers every frame allocates no frame-sized memory); returns the frames' stats.
    pub fn upscale_frames_into(
        &mut self,
        frames: &[&[u8]],
        w: usize,
        h: usize,
        opts: &[Options],
        outs: &mut [Vec<u8>],
    ) -> Result<Vec<FrameStats>> {
        self.run_into(frames, &[], w, h, opts, false, outs)
            .map(|(stats, _)| stats)
    }

    /// [`Self::upscale_frames_into`] with each frame's layout in and out (`fmts[i]` for frame
    /// `i`, or one pair for every frame): YUV frames ([`Pixels::Yuv`], tight planes) are
    /// converted to the network's f32 RGB and back on the device with the CPU engine's
    /// arithmetic, so the output is byte for byte the CPU engine's; [`Pixels::RgbF32`] frames
    /// go in and come out as the network's f32 values.
    pub fn upscale_formats_into(
        &mut self,
        frames: &[&[u8]],
        fmts: &[(Pixels, Pixels)],
        w: usize,
        h: usize,
        opts: &[Options],
        outs: &mut [Vec<u8>],
    ) -> Result<Vec<FrameStats>> {
        if fmts.len() != 1 && fmts.len() != frames.len() {
            return Err(CudaError::Input(format!(
                "{} formats for {} frames: give one, or one per frame",
                fmts.len(),
                frames.len()
            )));
        }
        self.run_into(frames, fmts, w, h, opts, false, outs)
            .map(|(stats, _)| stats)
    }

    /// One YUV frame (tight planes) to the network's RGB values (f32, 0–255) with
    /// `yuv_unpack` alone, in buffers of its own: what the parity tests and the start-up check
    /// compare with the host's conversion.
    pub fn yuv_to_rgb(&self, frame: &[u8], f: YuvFormat, w: usize, h: usize) -> Result<Vec<f32>> {
        let p = yuv_params(f, w, h, frame.len())?;
        let st = &self.stream;
        let src = st.clone_htod(frame)?;
        let dst = st.alloc_zeros::<f32>(w * h * 3)?;
        launch_yuv(st, &self.f_yuv_unpack, ptr(&src, st), ptr(&dst, st), &p)?;
        Ok(st.clone_dtoh(&dst)?)
    }

    /// RGB values (f32, 0–255 scale, as the network gives them) of a `w x h` frame to a YUV
    /// frame (tight planes) with `yuv_pack` alone.
    pub fn rgb_to_yuv(&self, rgb: &[f32], f: YuvFormat, w: usize, h: usize) -> Result<Vec<u8>> {
        let p = yuv_params(f, w, h, f.tight_len(w, h))?;
        if rgb.len() != w * h * 3 {
            return Err(CudaError::Input(format!(
                "{} RGB values for a {w}x{h} frame",
                rgb.len()
            )));
        }
        let st = &self.stream;
        let src = st.clone_htod(rgb)?;
        let dst = st.alloc_zeros::<u8>(f.tight_len(w, h))?;
        launch_yuv(st, &self.f_yuv_pack, ptr(&src, st), ptr(&dst, st), &p)?;
        Ok(st.clone_dtoh(&dst)?)
    }

    /// [`Self::upscale_frames`] that also returns the unrounded f32 outputs.
    pub fn upscale_frames_f32(
        &mut self,
        frames: &[&[u8]],
        w: usize,
        h: usize,
        opts: &[Options],
    ) -> Result<Batch> {
        self.run(frames, w, h, opts, true)
    }

    /// [`Self::upscale_batch`] that also returns the unrounded f32 output of every frame
    /// (`W x H x 3`, 0–255 scale), for parity checks against the CPU integer engine.
    pub fn upscale_batch_f32(
        &mut self,
        frames: &[&[u8]],
        w: usize,
        h: usize,
        opts: &Options,
    ) -> Result<Batch> {
        self.run(frames, w, h, std::slice::from_ref(opts), true)
    }

    /// Queues the whole network for a batch already in device memory (`rgbf_in`), without
    /// transfers: what the throughput benchmark times.
    pub fn run_resident(&mut self, opts: &Options) -> Result<()> {
        if self.metric(opts) != ComplexityMetric::Gradient {
            return Err(CudaError::Unsupported(
                "resident frames get the gradient metric only (the GPU's); other metrics are \
                 measured on the host's copy of a frame"
                    .into(),
            ));
        }
        self.enqueue(std::slice::from_ref(opts), &[])?;
        self.stream.synchronize()?;
        Ok(())
    }

    /// Prepares buffers for `frames` frames of `w x h` and uploads them once
    /// (for [`Self::run_resident`]).
    pub fn upload(&mut self, frames: &[&[u8]], w: usize, h: usize) -> Result<()> {
        self.check_input(frames, &[], w, h)?;
        self.stage_input(frames, &[], w, h, false)?;
        self.stream.synchronize()?;
        Ok(())
    }

    /// Sizes the buffers and queues the upload of frames [`Self::check_input`] accepted
    /// through pinned memory (`fmts`: [`Self::upscale_formats_into`]'s; empty: all RGB), and
    /// their conversion into `rgbf_in`: RGB bytes widened, YUV frames converted.
    fn stage_input(
        &mut self,
        frames: &[&[u8]],
        fmts: &[(Pixels, Pixels)],
        w: usize,
        h: usize,
        want_f32: bool,
    ) -> Result<()> {
        self.ensure_buffers(frames.len(), h, w, want_f32)?;
        let n = w * h * 3;
        // Staging for the inputs and the HR outputs that are YUV or f32.
        let s = self.scale();
        let (mut yin, mut yout) = (0, 0);
        for i in 0..frames.len() {
            let (fi, fo) = format_of(fmts, i);
            if fi != Pixels::Rgb {
                yin += fi.bytes(w, h);
            }
            if fo != Pixels::Rgb {
                yout += fo.bytes(w * s, h * s);
            }
        }
        if yin + yout > 0 {
            self.ensure_yuv(yin, yout)?;
        }
        if yin == 0 {
            let b = self.bufs.as_mut().expect("buffers");
            let host = b.host_in.as_mut_slice()?;
            for (i, fr) in frames.iter().enumerate() {
                par_copy(&mut host[i * n..][..n], fr);
            }
            let st = &self.stream;
            st.memcpy_htod(&host[..frames.len() * n], &mut b.rgb_in)?;
            let (src, dst) = (ptr(&b.rgb_in, st), ptr(&b.rgbf_in, st));
            return launch_widen(st, &self.f_widen, src, dst, frames.len() * n);
        }
        let st = &self.stream;
        let b = self.bufs.as_mut().expect("buffers");
        let y = b.yuv.as_mut().expect("YUV staging");
        let host = b.host_in.as_mut_slice()?;
        let yhost = y.host_in.as_mut_slice()?;
        let mut at = 0;
        for (i, fr) in frames.iter().enumerate() {
            match format_of(fmts, i).0 {
                Pixels::Rgb => {
                    let hs = &mut host[i * n..][..n];
                    par_copy(hs, fr);
                    st.memcpy_htod(&*hs, &mut b.rgb_in.slice_mut(i * n..(i + 1) * n))?;
                    let (src, dst) = (ptr(&b.rgb_in, st), ptr(&b.rgbf_in, st));
                    let (src, dst) = (src + (i * n) as u64, dst + (i * n * 4) as u64);
                    launch_widen(st, &self.f_widen, src, dst, n)?;
                }
                Pixels::Yuv(f) => {
                    let p = yuv_params(f, w, h, fr.len())?;
                    let hs = &mut yhost[at..at + fr.len()];
                    par_copy(hs, fr);
                    st.memcpy_htod(&*hs, &mut y.dev_in.slice_mut(at..at + fr.len()))?;
                    let (src, dst) = (ptr(&y.dev_in, st), ptr(&b.rgbf_in, st));
                    launch_yuv(
                        st,
                        &self.f_yuv_unpack,
                        src + at as u64,
                        dst + (i * n * 4) as u64,
                        &p,
                    )?;
                    at += fr.len();
                }
                Pixels::RgbF32 => {
                    let hs = &mut yhost[at..at + fr.len()];
                    par_copy(hs, fr);
                    let dst = &mut b.rgbf_in.slice_mut(i * n * 4..(i + 1) * n * 4);
                    st.memcpy_htod(&*hs, dst)?;
                    at += fr.len();
                }
            }
        }
        Ok(())
    }

    fn check_input(
        &self,
        frames: &[&[u8]],
        fmts: &[(Pixels, Pixels)],
        w: usize,
        h: usize,
    ) -> Result<()> {
        if frames.is_empty() || w == 0 || h == 0 {
            return Err(CudaError::Input(format!(
                "{} frame(s) of {w}x{h}: expected at least one frame of at least 1x1",
                frames.len()
            )));
        }
        let s = self.scale();
        for (i, fr) in frames.iter().enumerate() {
            let (fi, fo) = format_of(fmts, i);
            if let Pixels::Yuv(f) = fi {
                yuv_params(f, w, h, fr.len())?;
            } else if fr.len() != fi.bytes(w, h) {
                let per = if fi == Pixels::Rgb { 3 } else { 12 };
                return Err(CudaError::Input(format!(
                    "frame {i} has {} bytes, expected {w}x{h}x{per} = {}",
                    fr.len(),
                    fi.bytes(w, h)
                )));
            }
            if let Pixels::Yuv(f) = fo {
                yuv_params(f, w * s, h * s, f.tight_len(w * s, h * s))?;
            }
        }
        Ok(())
    }

    fn run(
        &mut self,
        frames: &[&[u8]],
        w: usize,
        h: usize,
        opts: &[Options],
        want_f32: bool,
    ) -> Result<Batch> {
        let mut outs = vec![Vec::new(); frames.len()];
        let (stats, f32s) = self.run_into(frames, &[], w, h, opts, want_f32, &mut outs)?;
        Ok((outs.into_iter().zip(stats).collect(), f32s))
    }

    /// [`Self::run`] into `outs`, one per frame; returns the frames' stats (and, with
    /// `want_f32`, the f32 outputs).
    #[allow(clippy::too_many_arguments)]
    fn run_into(
        &mut self,
        frames: &[&[u8]],
        fmts: &[(Pixels, Pixels)],
        w: usize,
        h: usize,
        opts: &[Options],
        want_f32: bool,
        outs: &mut [Vec<u8>],
    ) -> Result<(Vec<FrameStats>, Vec<Vec<f32>>)> {
        if outs.len() != frames.len() {
            return Err(CudaError::Input(format!(
                "{} output buffers for {} frames",
                outs.len(),
                frames.len()
            )));
        }
        if opts.len() != 1 && opts.len() != frames.len() {
            return Err(CudaError::Input(format!(
                "{} option sets for {} frames: give one, or one per frame",
                opts.len(),
                frames.len()
            )));
        }
        self.check_input(frames, fmts, w, h)?;
        let host_c = self.host_complexities(frames, fmts, w, h, opts)?;
        // YUV and f32 outputs come from the unrounded f32 output (YUV packed from it as the CPU
        // engine packs it).
        let f32_out = (0..frames.len()).any(|i| format_of(fmts, i).1 != Pixels::Rgb);
        self.stage_input(frames, fmts, w, h, want_f32 || f32_out)?;
        self.enqueue(opts, &host_c)?;
        let s = self.scale();
        let (hw, hh) = (w * s, h * s);
        let n = hw * hh * 3;
        let n_all = frames.len() * n;
        let st = &self.stream;
        let b = self.bufs.as_mut().expect("buffers");
        // Where each YUV or f32 output starts in the staging.
        let mut yuv_at = vec![0usize; frames.len()];
        if fmts.iter().all(|f| f.1 == Pixels::Rgb) {
            st.memcpy_dtoh(&b.rgb_out.slice(0..n_all), &mut b.host_out)?;
        } else {
            let y = b.yuv.as_mut().expect("YUV staging");
            let host = b.host_out.as_mut_slice()?;
            let yhost = y.host_out.as_mut_slice()?;
            let mut at = 0;
            for (i, start) in yuv_at.iter_mut().enumerate() {
                match format_of(fmts, i).1 {
                    Pixels::Rgb => st.memcpy_dtoh(
                        &b.rgb_out.slice(i * n..(i + 1) * n),
                        &mut host[i * n..(i + 1) * n],
                    )?,
                    Pixels::Yuv(f) => {
                        let p = yuv_params(f, hw, hh, f.tight_len(hw, hh))?;
                        let len = f.tight_len(hw, hh);
                        let rgbf = b.rgbf.as_ref().expect("f32 output for YUV frames");
                        let (src, dst) = (ptr(rgbf, st), ptr(&y.dev_out, st));
                        launch_yuv(
                            st,
                            &self.f_yuv_pack,
                            src + (i * n * 4) as u64,
                            dst + at as u64,
                            &p,
                        )?;
                        st.memcpy_dtoh(&y.dev_out.slice(at..at + len), &mut yhost[at..at + len])?;
                        *start = at;
                        at += len;
                    }
                    Pixels::RgbF32 => {
                        let rgbf = b.rgbf.as_ref().expect("f32 output for f32 frames");
                        let len = n * 4;
                        let src = rgbf.slice(i * len..(i + 1) * len);
                        st.memcpy_dtoh(&src, &mut yhost[at..at + len])?;
                        *start = at;
                        at += len;
                    }
                }
            }
        }
        let stats = self.stream.clone_dtoh(&b.stats)?;
        let bits = self.stream.clone_dtoh(&b.bits)?;
        let rgbf = match &b.rgbf {
            Some(d) if want_f32 => Some(self.stream.clone_dtoh(&d.slice(0..n_all * 4))?),
            _ => None,
        };
        self.stream.synchronize()?;
        let host = b.host_out.as_slice()?;
        let yhost = match &b.yuv {
            Some(y) => y.host_out.as_slice()?,
            None => &[],
        };
        let l_count = self.convs.len();
        let adaptive: Vec<usize> = self.net.adaptive_layers().collect();
        let mut out = Vec::with_capacity(frames.len());
        for (i, frame) in outs.iter_mut().enumerate() {
            let layer_bits: Vec<u8> = adaptive.iter().map(|&k| bits[i * l_count + k]).collect();
            let fab = if layer_bits.is_empty() {
                0.0
            } else {
                layer_bits.iter().map(|&b| b as f32).sum::<f32>() / layer_bits.len() as f32
            };
            let src = match format_of(fmts, i).1 {
                Pixels::Rgb => &host[i * n..(i + 1) * n],
                f => &yhost[yuv_at[i]..][..f.bytes(hw, hh)],
            };
            // Every byte is overwritten: only a buffer of another size is resized.
            if frame.len() != src.len() {
                frame.clear();
                frame.resize(src.len(), 0);
            }
            par_copy(frame, src);
            out.push(FrameStats {
                complexity: stats[2 * i],
                image_bits: stats[2 * i + 1] as i32,
                layer_bits,
                fab,
            });
        }
        let f32s = rgbf
            .map(|v| {
                v.chunks(n * 4)
                    .map(crate::engine::model::f32_from_bytes)
                    .collect()
            })
            .unwrap_or_default();
        Ok((out, f32s))
    }

    /// The complexity metric deciding b_I under `opts`: its override, else the model's.
    pub fn metric(&self, opts: &Options) -> ComplexityMetric {
        self.net.metric(opts.metric)
    }

    /// Per frame, its complexity when its metric is not the gradient density (which the GPU
    /// measures): the frequency and attention metrics are measured here on the host, from the
    /// frame's RGB values (YUV frames unpacked to f32 as the device and the CPU engine do),
    /// exactly as the CPU engine measures the frame; None for gradient frames.
    fn host_complexities(
        &mut self,
        frames: &[&[u8]],
        fmts: &[(Pixels, Pixels)],
        w: usize,
        h: usize,
        opts: &[Options],
    ) -> Result<Vec<Option<f32>>> {
        let mut values = std::mem::take(&mut self.host_frame);
        let c = (0..frames.len())
            .map(|i| {
                let metric = self.metric(&opts[if opts.len() == 1 { 0 } else { i }]);
                if metric == ComplexityMetric::Gradient {
                    return Ok(None);
                }
                // Frames as `check_input` accepted them.
                match format_of(fmts, i).0 {
                    Pixels::Rgb => {
                        values.clear();
                        values.extend(frames[i].iter().map(|&v| v as f32));
                    }
                    Pixels::RgbF32 => {
                        values.clear();
                        let f32s = frames[i].chunks_exact(4);
                        values.extend(f32s.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                    }
                    Pixels::Yuv(f) => {
                        use crate::engine::yuv::{YuvRef, unpack_with};
                        YuvRef::from_tight(frames[i], f, w, h)
                            .and_then(|src| unpack_with(&src, |v| v, &mut values))
                            .map_err(|e| CudaError::Input(e.to_string()))?;
                    }
                }
                Ok(Some(complexity::measure(metric, &values, w, h)))
            })
            .collect();
        self.host_frame = values;
        c
    }

    /// Checks what the device path of `opts` uses; returns the frame's base bits.
    pub fn check_options(&self, opts: &Options) -> Result<u8> {
        let q = self.net.quant.as_ref();
        let base = opts.base_bits.unwrap_or(q.map_or(8, |q| q.a_bits));
        if !(1..=8).contains(&base) {
            return Err(CudaError::Input(format!(
                "base bits must be in 1..=8, found {base}"
            )));
        }
        Ok(base)
    }

    /// Queues complexity, bit plan and every layer for the batch in `rgbf_in`.
    /// `opts`: one set for every frame, or one per frame.
    /// `host_c[i]`: frame `i`'s complexity measured on the host, for metrics the GPU does
    /// not measure ([`Self::host_complexities`]; empty: none).
    fn enqueue(&mut self, opts: &[Options], host_c: &[Option<f32>]) -> Result<()> {
        // A floating-point model still gets its complexity (stats); no bits to plan.
        let q = self.net.quant.clone();
        let frames = self.bufs.as_ref().expect("buffers").frames;
        let mut params = Vec::with_capacity(frames);
        for i in 0..frames {
            let o = &opts[if opts.len() == 1 { 0 } else { i }];
            let base = self.check_options(o)?;
            params.push(FrameParams {
                lower: o
                    .image_lower
                    .unwrap_or(q.as_ref().map_or(0.0, |q| q.image_lower)),
                upper: o
                    .image_upper
                    .unwrap_or(q.as_ref().map_or(0.0, |q| q.image_upper)),
                base: base as i32,
                adaptive: (o.adaptive && q.is_some()) as i32,
                c_host: host_c.get(i).copied().flatten().unwrap_or(0.0),
                has_c: host_c.get(i).is_some_and(|c| c.is_some()) as i32,
            });
        }
        {
            let b = self.bufs.as_mut().expect("buffers");
            self.stream.memcpy_htod(&params, &mut b.params)?;
        }
        let cfg = self.net.config.clone();
        let st = &self.stream;
        {
            let b = self.bufs.as_mut().expect("buffers");
            st.memset_zeros(&mut b.csum)?;
        }
        let b = self.bufs.as_ref().expect("buffers");
        let (f, h, w) = (b.frames, b.lr.h as i32, b.lr.w as i32);
        let l_count = self.convs.len() as i32;
        let grid = |n: usize, t: usize| (n.div_ceil(t) as u32, f as u32, 1);
        unsafe {
            st.launch_builder(&self.f_complexity)
                .arg(&b.rgbf_in)
                .arg(&b.csum)
                .arg(&h)
                .arg(&w)
                .launch(LaunchConfig {
                    grid_dim: grid(b.lr.h * b.lr.w, 256),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                })?;
            let frames = f as i32;
            st.launch_builder(&self.f_plan)
                .arg(&b.csum)
                .arg(&self.layer_info)
                .arg(&b.plan)
                .arg(&b.stats)
                .arg(&b.bits)
                .arg(&frames)
                .arg(&h)
                .arg(&w)
                .arg(&l_count)
                .arg(&b.params)
                .launch(LaunchConfig {
                    grid_dim: ((f as u32).div_ceil(32), 1, 1),
                    block_dim: (32, 1, 1),
                    shared_mem_bytes: 0,
                })?;
        }
        let k_in = cfg.rgb_range / 255.0;
        let mean = cfg.rgb_mean.map(|m| m * cfg.rgb_range);
        if self.layout == Layout::Fq {
            self.int_head(b, k_in, mean, l_count)?;
        } else {
            // Floating-point head from the RGB values: head, res, and the first body conv's
            // codes (non-fq) or its f16 input (float).
            let head = &self.convs[0];
            // (NonFq with blocks; without blocks it is classified Float.)
            let codes = self.layout == Layout::NonFq;
            let args = FloatArgs {
                rgb: ptr(&b.rgbf_in, st),
                wts: ptr(&head.wts, st),
                bias: ptr(&head.bias, st),
                plan: ptr(&b.plan, st),
                head: ptr(&b.head, st),
                res: ptr(&b.res, st),
                out: if codes {
                    ptr(&b.codes_a, st)
                } else {
                    ptr(&b.half_a, st)
                },
                h,
                w,
                hp_out: b.lr.hp as i32,
                wp_out: b.lr.wp as i32,
                next: 1,
                l_count,
                codes: codes as i32,
                k: k_in,
                mean,
                ..Default::default()
            };
            self.direct(&self.f_fhead, &args, b.lr.h * b.lr.w * head.cout / 4)?;
        }

        // Body: codes_a -> codes_b -> codes_a ... (integer blocks) or half_a -> half_b ...
        // (float); the last body conv leaves the upsampler's input in codes_b (fq) or half_b.
        // Non-fq: the last block's conv2 writes the f16 input of the float last body conv.
        let mut k = 1;
        let lr = b.lr;
        let blocks = cfg.n_resblocks;
        if self.layout == Layout::Float {
            for _ in 0..blocks {
                self.hmma(k, 1, &b.half_a, &b.half_b, lr, lr, b, 1)?;
                self.hmma(k + 1, 2, &b.half_b, &b.half_a, lr, lr, b, 1)?;
                k += 2;
            }
        } else {
            for i in 0..blocks {
                self.mma(k, 1, &b.codes_a, &b.codes_b, lr, lr, b, 1)?;
                if self.layout == Layout::NonFq && i + 1 == blocks {
                    let func = &self.f_mma_h[self.convs[k + 1].signed as usize];
                    self.launch_mma(func, k + 1, &b.codes_b, &b.half_a, lr, lr, b, 1)?;
                } else {
                    self.mma(k + 1, 2, &b.codes_b, &b.codes_a, lr, lr, b, 1)?;
                }
                k += 2;
            }
        }
        if self.layout == Layout::Fq {
            self.mma(k, 3, &b.codes_a, &b.codes_b, lr, lr, b, 1)?;
        } else {
            self.hmma(k, 3, &b.half_a, &b.half_b, lr, lr, b, 1)?;
        }
        k += 1;
        let float_up = self.layout != Layout::Fq;
        let mut src = (if float_up { &b.half_b } else { &b.codes_b }, lr);
        for (stage, g) in b.hr.iter().enumerate() {
            let Role::Up { r, .. } = self.net.layers[k].spec.role else {
                unreachable!("upsampler layers follow the body")
            };
            if float_up {
                self.hmma(k, 4, src.0, &b.hr_half[stage], src.1, *g, b, r)?;
                src = (&b.hr_half[stage], *g);
            } else {
                self.mma(k, 4, src.0, &b.hr_codes[stage], src.1, *g, b, r)?;
                src = (&b.hr_codes[stage], *g);
            }
            k += 1;
        }
        let tail = &self.convs[k];
        let g = src.1;
        if float_up {
            let args = FloatArgs {
                input: ptr(src.0, st),
                wts: ptr(&tail.wts, st),
                bias: ptr(&tail.bias, st),
                rgbo: ptr(&b.rgb_out, st),
                rgbf: b.rgbf.as_ref().map_or(0, |d| ptr(d, st)),
                h: g.h as i32,
                w: g.w as i32,
                hp_in: g.hp as i32,
                wp_in: g.wp as i32,
                l_count,
                mean,
                inv: 255.0 / cfg.rgb_range,
                ..Default::default()
            };
            // Four threads per pixel.
            return self.direct(&self.f_ftail, &args, g.h * g.w * 4);
        }
        let args = DirectArgs {
            input: ptr(src.0, st),
            wts: ptr(&tail.wts, st),
            bias: ptr(&tail.bias, st),
            ktab: ptr(&tail.ktab, st),
            plan: ptr(&b.plan, st),
            rgb: ptr(&b.rgb_out, st),
            rgbf: b.rgbf.as_ref().map_or(0, |d| ptr(d, st)),
            h: g.h as i32,
            w: g.w as i32,
            hp_in: g.hp as i32,
            wp_in: g.wp as i32,
            m: tail.m,
            layer: k as i32,
            next: k as i32,
            l_count,
            hw: tail.hw,
            mean,
            inv: 255.0 / cfg.rgb_range,
            ..Default::default()
        };
        // Four threads per pixel.
        self.direct(&self.f_tail, &args, g.h * g.w * 4)?;
        Ok(())
    }

    /// Integer head: the input codes, then the direct conv that writes head, res and the first
    /// block's codes.
    fn int_head(&self, b: &Buffers, k: f32, mean: [f32; 3], l_count: i32) -> Result<()> {
        let st = &self.stream;
        let (h, w) = (b.lr.h as i32, b.lr.w as i32);
        let (hp, wp) = (b.lr.hp as i32, b.lr.wp as i32);
        unsafe {
            st.launch_builder(&self.f_input)
                .arg(&b.rgbf_in)
                .arg(&b.input)
                .arg(&b.plan)
                .arg(&h)
                .arg(&w)
                .arg(&hp)
                .arg(&wp)
                .arg(&l_count)
                .arg(&k)
                .arg(&mean[0])
                .arg(&mean[1])
                .arg(&mean[2])
                .launch(LaunchConfig {
                    grid_dim: ((b.lr.h * b.lr.w).div_ceil(256) as u32, b.frames as u32, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                })?;
        }
        let head = &self.convs[0];
        let args = DirectArgs {
            input: ptr(&b.input, st),
            wts: ptr(&head.wts, st),
            bias: ptr(&head.bias, st),
            ktab: ptr(&head.ktab, st),
            plan: ptr(&b.plan, st),
            head: ptr(&b.head, st),
            res: ptr(&b.res, st),
            out: ptr(&b.codes_a, st),
            h,
            w,
            hp_in: hp,
            wp_in: wp,
            hp_out: hp,
            wp_out: wp,
            m: head.m,
            layer: 0,
            next: 1,
            l_count,
            hw: head.hw,
            ..Default::default()
        };
        // One thread per pixel and 4 output channels.
        self.direct(&self.f_head, &args, b.lr.h * b.lr.w * head.cout / 4)
    }

    /// Launches a direct (head or tail) kernel: `threads` threads per frame in blocks of 128,
    /// one grid row per frame; `args` is its `DirectArgs` or `FloatArgs`.
    fn direct<A: DeviceRepr>(&self, func: &CudaFunction, args: &A, threads: usize) -> Result<()> {
        let f = self.bufs.as_ref().expect("buffers").frames as u32;
        unsafe {
            self.stream
                .launch_builder(func)
                .arg(args)
                .launch(LaunchConfig {
                    grid_dim: (threads.div_ceil(128) as u32, f, 1),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: 0,
                })?;
        }
        Ok(())
    }

    /// Tensor-core conv of layer `k` with epilogue `mode` from `input` (geometry `gi`) into
    /// `out` (geometry `go`).
    #[allow(clippy::too_many_arguments)]
    fn mma(
        &self,
        k: usize,
        mode: usize,
        input: &CudaSlice<u8>,
        out: &CudaSlice<u8>,
        gi: Geom,
        go: Geom,
        b: &Buffers,
        r: usize,
    ) -> Result<()> {
        let c = &self.convs[k];
        debug_assert!(!(mode == 4 && c.signed), "upsampler convs are 8-bit");
        debug_assert!(!c.float, "integer conv");
        let func = &self.f_mma[mode - 1][c.signed as usize];
        self.launch_mma(func, k, input, out, gi, go, b, r)
    }

    /// f16 tensor-core conv of floating-point layer `k` with epilogue `mode` (f16 maps).
    #[allow(clippy::too_many_arguments)]
    fn hmma(
        &self,
        k: usize,
        mode: usize,
        input: &CudaSlice<u8>,
        out: &CudaSlice<u8>,
        gi: Geom,
        go: Geom,
        b: &Buffers,
        r: usize,
    ) -> Result<()> {
        debug_assert!(self.convs[k].float, "floating-point conv");
        self.launch_mma(&self.f_hmma[mode - 1], k, input, out, gi, go, b, r)
    }

    /// Launches tensor-core kernel `func` for conv `k`.
    #[allow(clippy::too_many_arguments)]
    fn launch_mma(
        &self,
        func: &CudaFunction,
        k: usize,
        input: &CudaSlice<u8>,
        out: &CudaSlice<u8>,
        gi: Geom,
        go: Geom,
        b: &Buffers,
        r: usize,
    ) -> Result<()> {
        let st = &self.stream;
        let c = &self.convs[k];
        let args = MmaArgs {
            input: ptr(input, st),
            wts: ptr(&c.wts, st),
            bias: ptr(&c.bias, st),
            ktab: ptr(&c.ktab, st),
            plan: ptr(&b.plan, st),
            res: ptr(&b.res, st),
            head: ptr(&b.head, st),
            out: ptr(out, st),
            h: gi.h as i32,
            w: gi.w as i32,
            hp: gi.hp as i32,
            wp: gi.wp as i32,
            tiles_x: gi.tiles_x as i32,
            tiles_y: gi.tiles_y as i32,
            frames: b.frames as i32,
            hp_out: go.hp as i32,
            wp_out: go.wp as i32,
            cout: c.cout as i32,
            m: c.m,
            layer: k as i32,
            next: k as i32 + 1,
            l_count: self.convs.len() as i32,
            r: r as i32,
            hw: c.hw,
            res_scale: self.net.config.res_scale,
            pad: 0,
        };
        let tiles = b.frames * gi.tiles_x * gi.tiles_y;
        let per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(MMA_THREADS, c.smem as usize, None)?
            .max(1);
        let blocks = tiles.min((self.sms * per_sm) as usize) as u32;
        unsafe {
            st.launch_builder(func).arg(&args).launch(LaunchConfig {
                grid_dim: (blocks, (c.cout / c.ns) as u32, 1),
                block_dim: (MMA_THREADS, 1, 1),
                shared_mem_bytes: c.smem,
            })?;
        }
        Ok(())
    }
}

/// Frame `i`'s layouts in and out of `fmts` ([`CudaEngine::upscale_formats_into`]'s: one pair
/// per frame, one for all, or none for RGB).
fn format_of(fmts: &[(Pixels, Pixels)], i: usize) -> (Pixels, Pixels) {
    match fmts.len() {
        0 => (Pixels::Rgb, Pixels::Rgb),
        1 => fmts[0],
        _ => fmts[i],
    }
}

/// The kernels' parameters of a `w x h` YUV frame of format `f` given as `len` bytes of tight
/// planes, or why the device cannot convert it.
fn yuv_params(f: YuvFormat, w: usize, h: usize, len: usize) -> Result<YuvParams> {
    let p = YuvParams::new(f, w, h).ok_or_else(|| {
        CudaError::Input(format!(
            "{:?} {w}x{h}: not a layout the device converts (v210 goes as I422_10LE planes: \
             YuvFormat::device), or too large",
            f.layout
        ))
    })?;
    if len != f.tight_len(w, h) {
        return Err(CudaError::Input(format!(
            "{:?} frame {w}x{h} has {len} bytes, expected {} (planes packed tightly)",
            f.layout,
            f.tight_len(w, h)
        )));
    }
    Ok(p)
}

/// Launches `yuv_unpack` or `yuv_pack` (`func`) on one frame: from device address `src` to
/// `dst`, one thread per pixel.
fn launch_yuv(
    st: &Arc<CudaStream>,
    func: &CudaFunction,
    src: u64,
    dst: u64,
    p: &YuvParams,
) -> Result<()> {
    let px = p.w as usize * p.h as usize;
    // SAFETY: `src` and `dst` hold the frame's bytes in the kernel's layouts (the callers'
    // buffers are sized by the same `YuvParams`); the argument types are the kernel's.
    unsafe {
        st.launch_builder(func)
            .arg(&src)
            .arg(&dst)
            .arg(p)
            .launch(LaunchConfig {
                grid_dim: (px.div_ceil(256) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            })?;
    }
    Ok(())
}

/// Launches `rgb_widen`: `n` RGB bytes at device address `src` to f32 at `dst`.
fn launch_widen(
    st: &Arc<CudaStream>,
    func: &CudaFunction,
    src: u64,
    dst: u64,
    n: usize,
) -> Result<()> {
    let n64 = n as u64;
    // SAFETY: `src` holds `n` bytes and `dst` `n` f32 (the callers' buffers hold the batch's
    // frames of `n` values); the argument types are the kernel's.
    unsafe {
        st.launch_builder(func)
            .arg(&src)
            .arg(&dst)
            .arg(&n64)
            .launch(LaunchConfig {
                grid_dim: (n.div_ceil(4 * 256) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            })?;
    }
    Ok(())
}

/// `dst.copy_from_slice(src)` in 1 MiB pieces over the thread pool: the frames' copies into and
/// out of pinned memory (6 MB in, 25 MB out for 1080p→4K) are memory-bound, and one core
/// copies a fraction of what the memory system gives several.
fn par_copy(dst: &mut [u8], src: &[u8]) {
    use rayon::prelude::*;
    const PIECE: usize = 1 << 20;
    dst.par_chunks_mut(PIECE)
        .zip(src.par_chunks(PIECE))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// One conv as the kernels take it: how it is launched, and its weight image `W`, bias `B`
/// and K table `K` — host vectors in a [`ConvImage`], device buffers in the engine.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct Conv<W, B, K> {
    pub cout: usize,
    /// A floating-point layer: f16 weights on the tensor-core path, f32 in the head and tail.
    pub float: bool,
    pub m: i32,
    pub hw: f32,
    /// Signed centred weights (weight bits ≤ 7) on the tensor-core path.
    pub signed: bool,
    pub wts: W,
    pub bias: B,
    pub ktab: K,
    /// Tensor-core path: slice width and dynamic shared memory.
    pub ns: usize,
    pub smem: u32,
}

/// What the device holds of one conv, laid out on the host. [`conv_image`] and
/// [`float_conv_image`] build it; the engine uploads it, and the host build of the kernels
/// (tests/cuda_host.rs) runs on it.
#[doc(hidden)]
pub type ConvImage = Conv<Vec<u8>, Vec<f32>, Vec<i32>>;

impl<W, B, K> Conv<W, B, K> {
    /// The same conv with its three buffers replaced by `f`'s.
    fn with_buffers<W2, B2, K2>(
        self,
        f: impl FnOnce(W, B, K) -> Result<(W2, B2, K2)>,
    ) -> Result<Conv<W2, B2, K2>> {
        let (wts, bias, ktab) = f(self.wts, self.bias, self.ktab)?;
        Ok(Conv {
            cout: self.cout,
            float: self.float,
            m: self.m,
            hw: self.hw,
            signed: self.signed,
            wts,
            bias,
            ktab,
            ns: self.ns,
            smem: self.smem,
        })
    }
}

/// Lays out one conv's weights for its kernel and uploads them.
fn upload_conv(stream: &Arc<CudaStream>, c: &IntConv, role: Role) -> Result<DevConv> {
    upload_image(stream, conv_image(c, role)?)
}

/// Uploads a conv's weight image, bias and K table.
fn upload_image(stream: &Arc<CudaStream>, c: ConvImage) -> Result<DevConv> {
    c.with_buffers(|w, b, k| {
        Ok((
            stream.clone_htod(&w)?,
            stream.clone_htod(&b)?,
            stream.clone_htod(&k)?,
        ))
    })
}

/// The device form of an integer conv in role `role` (head and tail: the direct `dp4a`
/// kernels' `[cout][9][cin/4]` words; otherwise the tensor-core kernels' slices).
#[doc(hidden)]
pub fn conv_image(c: &IntConv, role: Role) -> Result<ConvImage> {
    let (cin, cout) = (c.cin, c.cout);
    let direct = matches!(role, Role::Head | Role::Tail);
    let signed = !direct && c.m <= 127;
    let (wts, ns, smem) = if direct {
        // [cout][9][cinw] words of 4 unsigned codes; the head's 3 channels padded to 4.
        let cinw = cin.div_ceil(4);
        let mut v = vec![0u8; cout * 9 * cinw * 4];
        for o in 0..cout {
            for t in 0..9 {
                for i in 0..cin {
                    v[(o * 9 + t) * cinw * 4 + i] = c.codes[(t * cin + i) * cout + o];
                }
            }
        }
        (v, cout, 0)
    } else {
        let ns = cin.min(64);
        let (v, smem) = mma_image(cin, cout, ns, role, |j| {
            [if signed {
                c.centred[j] as i8 as u8
            } else {
                c.codes[j]
            }]
        });
        (v, ns, smem)
    };
    if !direct && cin % 32 != 0 {
        return Err(CudaError::Unsupported(format!("{cin} input channels")));
    }
    debug_assert!(quant::levels(8) as i32 == 255);
    Ok(Conv {
        cout,
        float: false,
        m: c.m,
        hw: c.hw,
        signed,
        wts,
        bias: c.bias.clone(),
        ktab: c.ktab.clone(),
        ns,
        smem,
    })
}

/// The tensor-core kernel's weight image of a conv — per slice of `ns` output channels,
/// `[9][ns][E·cin + 16 bytes]`, the byte image of the slice's shared memory — from `elem(j)`,
/// the `E` bytes of weight `j` in the `[9·cin][cout]` layout (1: u8/s8 codes, 2: f16); and
/// the kernel's dynamic shared memory (kernels/adabm.cu `MmaShape`): the weights, the K table
/// and bias, two halo buffers of `E`-byte values and, for an upsampler, the pixel-shuffle
/// staging of 8 warps.
fn mma_image<const E: usize>(
    cin: usize,
    cout: usize,
    ns: usize,
    role: Role,
    elem: impl Fn(usize) -> [u8; E],
) -> (Vec<u8>, u32) {
    let wrow = E * cin + 16;
    let wbytes = 9 * ns * wrow;
    let mut v = vec![0u8; (cout / ns) * wbytes];
    for s in 0..cout / ns {
        for t in 0..9 {
            for row in 0..ns {
                for i in 0..cin {
                    let d = s * wbytes + (t * ns + row) * wrow + E * i;
                    v[d..d + E].copy_from_slice(&elem((t * cin + i) * cout + s * ns + row));
                }
            }
        }
    }
    let staging = if matches!(role, Role::Up { .. }) {
        8 * 32 * ns * E
    } else {
        0
    };
    let smem = wbytes + 17 * ns * 4 + 2 * HALO * HALO * E * cin + staging;
    (v, smem as u32)
}

/// Lays out a floating-point conv's weights for its kernel and uploads them: f32 for the head
/// (`[9][3][cout]`) and tail (`[3][9][cin]`), f16 slices for the tensor-core path
/// (`[cout/ns][9][ns][2·cin + 16 bytes]`, the byte image of the shared memory).
fn upload_float_conv(stream: &Arc<CudaStream>, c: &ConvWeights, role: Role) -> Result<DevConv> {
    upload_image(stream, float_conv_image(c, role)?)
}

/// The device form of a floating-point conv (see [`upload_float_conv`]).
#[doc(hidden)]
pub fn float_conv_image(c: &ConvWeights, role: Role) -> Result<ConvImage> {
    let (cin, cout) = (c.cin, c.cout);
    // c.w is [9·cin][cout]: index (t·cin + i)·cout + o.
    let at = |t: usize, i: usize, o: usize| c.w[(t * cin + i) * cout + o];
    let f32_bytes = |v: Vec<f32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_ne_bytes()).collect() };
    let (wts, ns, smem) = match role {
        Role::Head => {
            if cin != 3 || cout % 4 != 0 {
                return Err(CudaError::Unsupported(format!("a {cin}->{cout} head")));
            }
            (f32_bytes(c.w.clone()), cout, 0)
        }
        Role::Tail => {
            if cout != 3 || cin % 32 != 0 {
                return Err(CudaError::Unsupported(format!("a {cin}->{cout} tail")));
            }
            let mut v = vec![0f32; 3 * 9 * cin];
            for o in 0..3 {
                for t in 0..9 {
                    for i in 0..cin {
                        v[(o * 9 + t) * cin + i] = at(t, i, o);
                    }
                }
            }
            (f32_bytes(v), 3, 0)
        }
        _ => {
            if cin % 32 != 0 || cout % 32 != 0 {
                return Err(CudaError::Unsupported(format!("a {cin}->{cout} conv")));
            }
            // f16 slices of 32 output channels (the K table in the image stays unused).
            let ns = 32;
            let (v, smem) = mma_image(cin, cout, ns, role, |j| {
                half::f16::from_f32(c.w[j]).to_ne_bytes()
            });
            (v, ns, smem)
        }
    };
    Ok(Conv {
        cout,
        float: true,
        m: 0,
        hw: 0.0,
        signed: false,
        wts,
        bias: c.bias.clone(),
        ktab: vec![0i32; 16 * cout],
        ns,
        smem,
    })
}
