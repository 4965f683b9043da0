use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;

use crate::cuda::{CudaError, Pixels, SharedCuda};
use crate::engine::intcpu::CpuLevel;
use crate::engine::rgbfmt::{RgbFormat, RgbMut, RgbRef};
use crate::engine::yuv::{ChromaSiting, YuvLayout, YuvMatrix, YuvMut, YuvRef};
use crate::engine::{self, Engine, FrameMut, FrameRef, Model, Options, PixelLayout};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "adabmupscale",
        gst::DebugColorFlags::empty(),
        Some("AdaBM adaptive-bit EDSR super-resolution"),
    )
});

/// Largest output width or height accepted in caps (a 16K frame).
const MAX_OUTPUT_DIM: i32 = 16384;

const DEFAULT_SCALE: u32 = 0;
const DEFAULT_ADAPTIVE: bool = true;
const DEFAULT_BASE_BITS: u32 = 0;
const DEFAULT_THRESHOLD: f64 = -1.0;
const DEFAULT_HYSTERESIS: f64 = 0.02;
const DEFAULT_POST_STATS: bool = false;
const DEFAULT_TILE_SIZE: u32 = 0;
const DEFAULT_N_THREADS: u32 = 0;

const FORMATS: [(gst_video::VideoFormat, PixelLayout); 10] = [
    (gst_video::VideoFormat::Rgb, PixelLayout::Rgb),
    (gst_video::VideoFormat::Bgr, PixelLayout::Bgr),
    (gst_video::VideoFormat::Rgbx, PixelLayout::Rgbx),
    (gst_video::VideoFormat::Bgrx, PixelLayout::Bgrx),
    (gst_video::VideoFormat::Xrgb, PixelLayout::Xrgb),
    (gst_video::VideoFormat::Xbgr, PixelLayout::Xbgr),
    (gst_video::VideoFormat::Rgba, PixelLayout::Rgba),
    (gst_video::VideoFormat::Bgra, PixelLayout::Bgra),
    (gst_video::VideoFormat::Argb, PixelLayout::Argb),
    (gst_video::VideoFormat::Abgr, PixelLayout::Abgr),
];

/// The YUV (and grey) formats, converted to and from the network's RGB inside the element.
const YUV_FORMATS: [(gst_video::VideoFormat, YuvLayout); 37] = [
    (gst_video::VideoFormat::I420, YuvLayout::I420),
    (gst_video::VideoFormat::Yv12, YuvLayout::Yv12),
    (gst_video::VideoFormat::Nv12, YuvLayout::Nv12),
    (gst_video::VideoFormat::Nv21, YuvLayout::Nv21),
    (gst_video::VideoFormat::Nv16, YuvLayout::Nv16),
    (gst_video::VideoFormat::Nv61, YuvLayout::Nv61),
    (gst_video::VideoFormat::Nv24, YuvLayout::Nv24),
    (gst_video::VideoFormat::Y42b, YuvLayout::Y42b),
    (gst_video::VideoFormat::Y444, YuvLayout::Y444),
    (gst_video::VideoFormat::I42010le, YuvLayout::I420p10),
    (gst_video::VideoFormat::I42210le, YuvLayout::I422p10),
    (gst_video::VideoFormat::Y44410le, YuvLayout::Y444p10),
    (gst_video::VideoFormat::P01010le, YuvLayout::P010),
    (gst_video::VideoFormat::I42012le, YuvLayout::I420p12),
    (gst_video::VideoFormat::I42212le, YuvLayout::I422p12),
    (gst_video::VideoFormat::Y44412le, YuvLayout::Y444p12),
    (gst_video::VideoFormat::P012Le, YuvLayout::P012),
    (gst_video::VideoFormat::P016Le, YuvLayout::P016),
    (gst_video::VideoFormat::Y44416le, YuvLayout::Y444p16),
    (gst_video::VideoFormat::V210, YuvLayout::V210),
    (gst_video::VideoFormat::Yuy2, YuvLayout::Yuy2),
    (gst_video::VideoFormat::Uyvy, YuvLayout::Uyvy),
    (gst_video::VideoFormat::Yvyu, YuvLayout::Yvyu),
    (gst_video::VideoFormat::Y210, YuvLayout::Y210),
    (gst_video::VideoFormat::Y212Le, YuvLayout::Y212),
    (gst_video::VideoFormat::Ayuv, YuvLayout::Ayuv),
    (gst_video::VideoFormat::Vuya, YuvLayout::Vuya),
    (gst_video::VideoFormat::Y412Le, YuvLayout::Y412),
    (gst_video::VideoFormat::Ayuv64, YuvLayout::Ayuv64),
    (gst_video::VideoFormat::Y410, YuvLayout::Y410),
    (gst_video::VideoFormat::A420, YuvLayout::A420),
    (gst_video::VideoFormat::A42010le, YuvLayout::A420p10),
    (gst_video::VideoFormat::A42210le, YuvLayout::A422p10),
    (gst_video::VideoFormat::A44410le, YuvLayout::A444p10),
    (gst_video::VideoFormat::Gray8, YuvLayout::Gray8),
    (gst_video::VideoFormat::Gray16Le, YuvLayout::Gray16),
    (gst_video::VideoFormat::Gray16Be, YuvLayout::Gray16Be),
];

/// The RGB formats beyond 8-bit packed: 64-bit RGBA (16 bits per channel; `pngdec`'s ARGB64
/// for 16-bit PNGs), 10-bit packed RGB and planar RGB (FFmpeg's decoders' GBR formats).
const RGB_FORMATS: [(gst_video::VideoFormat, RgbFormat); 24] = {
    use gst_video::VideoFormat as V;
    [
        (V::Argb64, RgbFormat::ARGB64),
        (V::Argb64Le, RgbFormat::ARGB64_LE),
        (V::Argb64Be, RgbFormat::ARGB64_BE),
        (V::Rgba64Le, RgbFormat::RGBA64_LE),
        (V::Rgba64Be, RgbFormat::RGBA64_BE),
        (V::Bgra64Le, RgbFormat::BGRA64_LE),
        (V::Bgra64Be, RgbFormat::BGRA64_BE),
        (V::Abgr64Le, RgbFormat::ABGR64_LE),
        (V::Abgr64Be, RgbFormat::ABGR64_BE),
        (V::Bgr10a2Le, RgbFormat::BGR10A2_LE),
        (V::Rgb10a2Le, RgbFormat::RGB10A2_LE),
        (V::R210, RgbFormat::R210),
        (V::Gbr, RgbFormat::GBR),
        (V::Gbra, RgbFormat::GBRA),
        (V::Rgbp, RgbFormat::RGBP),
        (V::Bgrp, RgbFormat::BGRP),
        (V::Gbr10le, RgbFormat::GBR_10LE),
        (V::Gbr10be, RgbFormat::GBR_10BE),
        (V::Gbra10le, RgbFormat::GBRA_10LE),
        (V::Gbra10be, RgbFormat::GBRA_10BE),
        (V::Gbr12le, RgbFormat::GBR_12LE),
        (V::Gbr12be, RgbFormat::GBR_12BE),
        (V::Gbra12le, RgbFormat::GBRA_12LE),
        (V::Gbra12be, RgbFormat::GBRA_12BE),
    ]
};

/// A negotiated format's memory layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Packed(PixelLayout),
    Rgb(RgbFormat),
    Yuv(YuvLayout),
}

impl Layout {
    fn of(format: gst_video::VideoFormat) -> Option<Self> {
        FORMATS
            .iter()
            .find(|(f, _)| *f == format)
            .map(|(_, l)| Self::Packed(*l))
            .or_else(|| {
                RGB_FORMATS
                    .iter()
                    .find(|(f, _)| *f == format)
                    .map(|(_, l)| Self::Rgb(*l))
            })
            .or_else(|| {
                YUV_FORMATS
                    .iter()
                    .find(|(f, _)| *f == format)
                    .map(|(_, l)| Self::Yuv(*l))
            })
    }
}

/// The colour matrix, range and chroma siting of YUV caps (BT.601 for an unknown matrix).
fn yuv_params(info: &gst_video::VideoInfo) -> (YuvMatrix, ChromaSiting) {
    use gst_video::VideoColorMatrix as M;
    let c = info.colorimetry();
    let k = match c.matrix() {
        M::Bt709 => YuvMatrix::BT709,
        M::Bt2020 => YuvMatrix::BT2020,
        M::Smpte240m => YuvMatrix::SMPTE240M,
        M::Fcc => YuvMatrix::FCC,
        _ => YuvMatrix::BT601,
    };
    let full = c.range() == gst_video::VideoColorRange::Range0_255;
    let site = info.chroma_site();
    let siting = ChromaSiting {
        h_cosited: site.contains(gst_video::VideoChromaSite::H_COSITED),
        v_cosited: site.contains(gst_video::VideoChromaSite::V_COSITED),
    };
    (YuvMatrix::new(k, full), siting)
}

/// Which built-in model runs when no model file is set.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstAdabmPrecision")]
pub enum Precision {
    #[enum_value(name = "Floating point (f32)", nick = "fp32")]
    Fp32 = 0,
    #[enum_value(name = "AdaBM, 8-bit weights, 6-bit base activations", nick = "w8a6")]
    W8a6 = 1,
    #[enum_value(name = "AdaBM, 4-bit weights, 4-bit base activations", nick = "w4a4")]
    W4a4 = 2,
}

impl Precision {
    fn nick(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::W8a6 => "w8a6",
            Self::W4a4 => "w4a4",
        }
    }
}

/// Which image-complexity metric decides b_I.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstAdabmComplexityMetric")]
pub enum Metric {
    #[enum_value(name = "The metric the model was calibrated with", nick = "model")]
    Model = 0,
    #[enum_value(
        name = "Sobel gradient density of the luma (AdaBM's)",
        nick = "gradient"
    )]
    Gradient = 1,
    #[enum_value(
        name = "Share of high-frequency 8x8 DCT energy of the luma",
        nick = "frequency"
    )]
    Frequency = 2,
    #[enum_value(
        name = "Concentration of windowed self-attention over 8x8 luma patch tokens",
        nick = "attention"
    )]
    Attention = 3,
}

impl Metric {
    fn get(self) -> Option<engine::ComplexityMetric> {
        match self {
            Self::Model => None,
            Self::Gradient => Some(engine::ComplexityMetric::Gradient),
            Self::Frequency => Some(engine::ComplexityMetric::Frequency),
            Self::Attention => Some(engine::ComplexityMetric::Attention),
        }
    }
}

/// Where the network runs.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstAdabmBackend")]
pub enum Backend {
    #[enum_value(
        name = "CUDA when a usable NVIDIA GPU is there, else the CPU",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 1,
    #[enum_value(name = "CUDA (error when unusable)", nick = "cuda")]
    Cuda = 2,
}

#[derive(Clone, Debug)]
struct Settings {
    model_location: Option<String>,
    precision: Precision,
    scale: u32,
    adaptive: bool,
    base_bits: u32,
    image_lower: f64,
    image_upper: f64,
    image_hysteresis: f64,
    post_stats: bool,
    tile_size: u32,
    n_threads: u32,
    backend: Backend,
    device_id: u32,
    metric: Metric,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model_location: None,
            precision: Precision::Fp32,
            scale: DEFAULT_SCALE,
            adaptive: DEFAULT_ADAPTIVE,
            base_bits: DEFAULT_BASE_BITS,
            image_lower: DEFAULT_THRESHOLD,
            image_upper: DEFAULT_THRESHOLD,
            image_hysteresis: DEFAULT_HYSTERESIS,
            post_stats: DEFAULT_POST_STATS,
            tile_size: DEFAULT_TILE_SIZE,
            n_threads: DEFAULT_N_THREADS,
            backend: Backend::Auto,
            device_id: 0,
            metric: Metric::Model,
        }
    }
}

impl Settings {
    /// The scales negotiation may choose among when the scale is automatic (`scale=0` with
    /// the built-in models): the built-ins' scales for `precision`, the default first. None
    /// when the scale is fixed (by the property or by a model file).
    fn auto_scales(&self) -> Option<Vec<u32>> {
        if self.model_location.is_some() || self.scale != 0 {
            return None;
        }
        let mut scales: Vec<u32> = engine::builtin::MODELS
            .iter()
            .filter(|m| m.precision == self.precision.nick())
            .map(|m| m.scale)
            .collect();
        scales.sort_by_key(|&s| (s != engine::builtin::DEFAULT_SCALE, s));
        scales.dedup();
        Some(scales)
    }

    /// The per-frame knobs, as engine options.
    fn options(&self) -> Options {
        let threshold = |v: f64| (v >= 0.0).then_some(v as f32);
        Options {
            adaptive: self.adaptive,
            base_bits: (self.base_bits > 0).then_some(self.base_bits as u8),
            image_lower: threshold(self.image_lower),
            image_upper: threshold(self.image_upper),
            tile_size: self.tile_size as usize,
            metric: self.metric.get(),
        }
    }
}

struct State {
    engine: Arc<Engine>,
    /// The settings the engine was made from (a new built-in model, when negotiation picks
    /// another scale, is loaded with these).
    loaded: Settings,
    /// The scales negotiation may pick (each a built-in model), or empty: the engine's only.
    auto_scales: Vec<u32>,
    /// The running model, as `adabm-stats` names it: the built-in's name or the file's path.
    model: Arc<str>,
    /// The CUDA engine when the backend is CUDA, shared with the other element instances that
    /// run the same model on the same device (their frames share launches).
    cuda: Option<Arc<SharedCuda>>,
    /// Negotiated input/output, once caps are set.
    caps: Option<(gst_video::VideoInfo, gst_video::VideoInfo, Layout)>,
    frames: u64,
    warned_thresholds: bool,
    /// A buffer too short for a frame of the caps was reported (once per caps).
    warned_size: bool,
    /// The metric override was reported (thresholds on another scale / CUDA fallback).
    warned_metric: Option<Metric>,
    /// b_I of the last frame (of each field: top, bottom) of this stream, for
    /// `image-hysteresis`; forgotten on a flush and on new caps.
    last_bits: [Option<i32>; 2],
}

#[derive(Default)]
pub struct AdabmUpscale {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// The CUDA path's host frames, kept between frames.
    cuda_bufs: Mutex<CudaBufs>,
    /// The processing latency this element reports (answering LATENCY queries).
    latency: Mutex<Latency>,
    /// `model-location`, `precision` or `scale` changed while running: load the model before the
    /// next frame.
    reload: std::sync::atomic::AtomicBool,
}

/// How long a frame takes here, as latency for live pipelines: a synchronising sink renders
/// each frame at its timestamp plus the pipeline's latency, and a frame that spends longer in
/// this element than the latency allows arrives late (and is dropped, by QoS). The estimate is
/// the longest of the last [`Latency::WINDOW`] frames; a `latency` message asks the pipeline
/// to query it again when it grows by a quarter or falls to half of what was reported.
#[derive(Default)]
struct Latency {
    recent: std::collections::VecDeque<gst::ClockTime>,
    reported: gst::ClockTime,
}

impl Latency {
    const WINDOW: usize = 16;

    /// Records a frame's processing time; true when the estimate moved enough to report.
    fn record(&mut self, t: gst::ClockTime) -> bool {
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(t);
        let est = self.estimate();
        let (est_ns, rep_ns) = (est.nseconds(), self.reported.nseconds());
        let moved = est_ns > rep_ns + rep_ns / 4 || est_ns < rep_ns / 2;
        if moved {
            // What the next query answers (so an application that never queries gets one
            // message per move, not one per frame).
            self.reported = est;
        }
        moved
    }

    fn estimate(&self) -> gst::ClockTime {
        self.recent
            .iter()
            .copied()
            .max()
            .unwrap_or(gst::ClockTime::ZERO)
    }
}

/// What a frame on the CUDA path reuses: its input and HR output as the engine takes them
/// (packed RGB bytes, tight YUV planes or f32 bytes), the f32 values of frames the CPU
/// converts, and alpha planes, so that frames of a size seen before allocate no frame-sized
/// memory (fresh buffers made the host side of an x2 1080p frame 1.2–1.3x slower: `cargo
/// bench --bench cpu -- --frame-io`).
#[derive(Default)]
struct CudaBufs {
    rgb: Vec<u8>,
    hr: Vec<u8>,
    values: engine::frame::Image,
    alpha: engine::frame::AlphaBufs,
}

#[glib::object_subclass]
impl ObjectSubclass for AdabmUpscale {
    const NAME: &'static str = "GstAdabmUpscale";
    type Type = super::AdabmUpscale;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for AdabmUpscale {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model-location")
                    .nick("Model location")
                    .blurb("Path of an adabm model file (.safetensors); unset: the built-in default model. Changed while playing: the new model runs from the next frame (a file that fails to load is a warning, the running model stays)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("precision", Precision::Fp32)
                    .nick("Precision")
                    .blurb("Built-in model to run when model-location is unset: fp32, or AdaBM w8a6 / w4a4 (ignored with a model file); changed while playing, from the next frame")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("scale")
                    .nick("Scale")
                    .blurb("Upscaling factor 2, 3 or 4; 0: the model's own — with the built-in models x2, or x3 / x4 when the output caps ask for 3x / 4x the input size. Must match a model file's scale; without a model file, 2, 3 and 4 pick the built-in x2, x3 and x4 models")
                    .minimum(0)
                    .maximum(4)
                    .default_value(DEFAULT_SCALE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("adaptive")
                    .nick("Adaptive")
                    .blurb("Image-level bit adaptation (b_I from frame complexity); off: b_I = 0")
                    .default_value(DEFAULT_ADAPTIVE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("base-bits")
                    .nick("Base bits")
                    .blurb("Base activation bit-width b_base of adaptive layers; 0: the model's")
                    .minimum(0)
                    .maximum(8)
                    .default_value(DEFAULT_BASE_BITS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("image-lower")
                    .nick("Image lower threshold")
                    .blurb("Complexity below which a frame gets one bit less (l_i2b); negative: the model's")
                    .minimum(-1.0)
                    .maximum(1e6)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("image-upper")
                    .nick("Image upper threshold")
                    .blurb("Complexity above which a frame gets one bit more (u_i2b); negative: the model's")
                    .minimum(-1.0)
                    .maximum(1e6)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("image-hysteresis")
                    .nick("Image threshold hysteresis")
                    .blurb("Keep the previous frame's b_I until the complexity is past a threshold by this fraction of it (0: decide each frame alone, as the method does)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_HYSTERESIS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("post-stats")
                    .nick("Post stats")
                    .blurb("Post an element message 'adabm-stats' per frame (complexity, b_I, FAB, bits, time)")
                    .default_value(DEFAULT_POST_STATS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("tile-size")
                    .nick("Tile size")
                    .blurb("Process frames in overlapping tiles of this many LR pixels (16 or more); 0: automatic, bounded memory")
                    .minimum(0)
                    .maximum(MAX_OUTPUT_DIM as u32)
                    .default_value(DEFAULT_TILE_SIZE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("n-threads")
                    .nick("Threads")
                    .blurb("Worker threads; 0: one per CPU. Elements with the same count share one pool of threads")
                    .minimum(0)
                    .maximum(1024)
                    .default_value(DEFAULT_N_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("backend", Backend::Auto)
                    .nick("Backend")
                    .blurb("auto: CUDA when an NVIDIA GPU, its driver and NVRTC are usable (quantized layers exactly as on the CPU, floating-point layers in f16), else the CPU with a warning; cpu; cuda: fail when CUDA is unusable")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("complexity-metric", Metric::Model)
                    .nick("Complexity metric")
                    .blurb("Image complexity metric deciding each frame's b_I: model (the one the model was calibrated with), gradient, frequency or attention. The model's image thresholds are on its own metric's scale: with another metric set image-lower and image-upper too")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("device-id")
                    .nick("Device id")
                    .blurb("CUDA device ordinal")
                    .minimum(0)
                    .maximum(1023)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("active-backend")
                    .nick("Active backend")
                    .blurb("Where frames run once started: \"cpu\" or \"cuda:<device name>\"")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        // Like videoconvert and videoscale: a frame that downstream reports late (a QoS event
        // from a synchronising sink) is dropped before it is upscaled, with a QoS message on
        // the bus, instead of making every later frame later still. The base class's `qos`
        // property turns it off.
        self.obj().set_qos(true);
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "model-location" => s.model_location = value.get().expect("type checked upstream"),
            "precision" => s.precision = value.get().expect("type checked upstream"),
            "scale" => {
                let v: u32 = value.get().expect("type checked upstream");
                if v == 1 {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "scale 1 is not a super-resolution factor; using the model's scale"
                    );
                    s.scale = 0;
                } else {
                    s.scale = v;
                }
            }
            "adaptive" => s.adaptive = value.get().expect("type checked upstream"),
            "base-bits" => s.base_bits = value.get().expect("type checked upstream"),
            "image-lower" => s.image_lower = value.get().expect("type checked upstream"),
            "image-upper" => s.image_upper = value.get().expect("type checked upstream"),
            "image-hysteresis" => s.image_hysteresis = value.get().expect("type checked upstream"),
            "post-stats" => s.post_stats = value.get().expect("type checked upstream"),
            "tile-size" => {
                let v: u32 = value.get().expect("type checked upstream");
                if v != 0 && (v as usize) < engine::MIN_TILE {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "tile-size {v} is below {}; using {}",
                        engine::MIN_TILE,
                        engine::MIN_TILE
                    );
                    s.tile_size = engine::MIN_TILE as u32;
                } else {
                    s.tile_size = v;
                }
            }
            "n-threads" => s.n_threads = value.get().expect("type checked upstream"),
            "backend" => s.backend = value.get().expect("type checked upstream"),
            "device-id" => s.device_id = value.get().expect("type checked upstream"),
            "complexity-metric" => s.metric = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
        drop(s);
        if let Some(st) = self.state.lock().unwrap().as_mut() {
            match pspec.name() {
                "image-lower" | "image-upper" => st.warned_thresholds = false,
                "model-location" | "precision" | "scale" => self
                    .reload
                    .store(true, std::sync::atomic::Ordering::Release),
                _ => {}
            }
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "model-location" => s.model_location.to_value(),
            "precision" => s.precision.to_value(),
            "scale" => s.scale.to_value(),
            "adaptive" => s.adaptive.to_value(),
            "base-bits" => s.base_bits.to_value(),
            "image-lower" => s.image_lower.to_value(),
            "image-upper" => s.image_upper.to_value(),
            "image-hysteresis" => s.image_hysteresis.to_value(),
            "post-stats" => s.post_stats.to_value(),
            "tile-size" => s.tile_size.to_value(),
            "n-threads" => s.n_threads.to_value(),
            "backend" => s.backend.to_value(),
            "device-id" => s.device_id.to_value(),
            "complexity-metric" => s.metric.to_value(),
            "active-backend" => {
                drop(s);
                let st = self.state.lock().unwrap();
                st.as_ref()
                    .map(|st| match &st.cuda {
                        Some(c) => format!("cuda:{}", c.device_name()),
                        None => "cpu".to_string(),
                    })
                    .to_value()
            }
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for AdabmUpscale {}

impl ElementImpl for AdabmUpscale {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "AdaBM super-resolution",
                "Filter/Effect/Converter/Video/Scaler",
                "Upscales video with an EDSR network whose activation bit-widths adapt to each frame and layer (AdaBM)",
                "adabm developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(
                    FORMATS
                        .iter()
                        .map(|(f, _)| *f)
                        .chain(RGB_FORMATS.iter().map(|(f, _)| *f))
                        .chain(YUV_FORMATS.iter().map(|(f, _)| *f)),
                )
                // No `interlace-mode` field: like `videoconvert`, any mode is offered, so that
                // caps without one (a capsfilter after `filesrc` or `fdsrc`) stay fixed.
                // Interleaved frames (and the interlaced frames of mixed streams) are upscaled
                // field by field; alternate (one field per buffer) needs the
                // `format:Interlaced` caps feature, which this template lacks.
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid src template"),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid sink template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

/// Why a model could not be made ready: the message, and its GStreamer error domain.
#[derive(Debug)]
enum LoadError {
    /// The settings ask for something that does not exist (`LibraryError::Settings`).
    Settings(String),
    /// The model file cannot be read or is not a valid model (`ResourceError::OpenRead`).
    OpenRead(String),
    /// The model or the backend cannot be initialised (`LibraryError::Init`).
    Init(String),
}

impl LoadError {
    fn text(&self) -> &str {
        match self {
            Self::Settings(t) | Self::OpenRead(t) | Self::Init(t) => t,
        }
    }

    /// As an error message (for `start`, which fails the state change with it).
    fn to_error_message(&self) -> gst::ErrorMessage {
        match self {
            Self::Settings(t) => gst::error_msg!(gst::LibraryError::Settings, ("{}", t)),
            Self::OpenRead(t) => gst::error_msg!(gst::ResourceError::OpenRead, ("{}", t)),
            Self::Init(t) => gst::error_msg!(gst::LibraryError::Init, ("{}", t)),
        }
    }
}

/// Loads the model the settings name (a file, checked against the `scale` property, or the
/// built-in one for `precision` and `scale` — or `builtin_scale` when the scale is automatic),
/// with its name as `adabm-stats` gives it: the built-in's name or the file's path.
fn load_model(s: &Settings, builtin_scale: u32) -> Result<(Model, Arc<str>), LoadError> {
    let model = match s.model_location.as_deref() {
        None => {
            let scale = if s.scale == 0 { builtin_scale } else { s.scale };
            let builtin = engine::builtin::find(scale, s.precision.nick())
                .map_err(|e| LoadError::Settings(e.to_string()))?;
            let model = builtin.load().map_err(|e| {
                LoadError::Init(format!("Built-in model {} is corrupt: {e}", builtin.name))
            })?;
            (model, builtin.name.into())
        }
        Some(path) => {
            let model = Model::load(path)
                .map_err(|e| LoadError::OpenRead(format!("Cannot use model '{path}': {e}")))?;
            if s.scale != 0 && s.scale != model.config.scale {
                return Err(LoadError::Settings(format!(
                    "scale={} but model '{}' upscales x{}: set scale=0 (the model's) or use an x{} model",
                    s.scale, path, model.config.scale, s.scale
                )));
            }
            (model, path.into())
        }
    };
    Ok(model)
}

/// A model made ready to run: its engine, the CUDA engine for that backend, its name.
struct Loaded {
    engine: Arc<Engine>,
    cuda: Option<Arc<SharedCuda>>,
    model: Arc<str>,
}

impl State {
    /// Runs `l` from the next frame on; the warnings about the old model's thresholds and
    /// metric may be given again.
    fn install(&mut self, l: Loaded) {
        self.engine = l.engine;
        self.cuda = l.cuda;
        self.model = l.model;
        self.warned_thresholds = false;
        self.warned_metric = None;
    }
}

/// Maps a width/height caps value by `f` (fixed values) or `range` (ranges).
fn map_dim(
    v: &glib::SendValue,
    f: impl Fn(i32) -> Option<i32>,
    range: impl Fn(i32, i32) -> Option<(i32, i32, i32)>,
) -> Option<glib::SendValue> {
    if let Ok(i) = v.get::<i32>() {
        return f(i).map(|x| x.to_send_value());
    }
    if let Ok(r) = v.get::<gst::IntRange<i32>>() {
        let (a, b, step) = range(r.min(), r.max())?;
        return Some(match a.cmp(&b) {
            std::cmp::Ordering::Less => gst::IntRange::with_step(a, b, step).to_send_value(),
            std::cmp::Ordering::Equal => a.to_send_value(),
            std::cmp::Ordering::Greater => return None,
        });
    }
    None
}

impl AdabmUpscale {
    /// The scales the caps may have, preferred first: the engine's, or with `scale=0` and the
    /// built-in models every built-in scale (the default x2 first). Before the model is loaded
    /// (linking in `gst-launch-1.0`), a model file with `scale=0` may have any scale.
    fn scales(&self) -> Vec<i32> {
        let scales = match self.state.lock().unwrap().as_ref() {
            Some(st) if st.auto_scales.is_empty() => vec![st.engine.scale() as u32],
            Some(st) => st.auto_scales.clone(),
            None => {
                let s = self.settings.lock().unwrap();
                s.auto_scales().unwrap_or_else(|| match s.scale {
                    0 => vec![2, 3, 4],
                    s => vec![s],
                })
            }
        };
        scales.into_iter().map(|s| s as i32).collect()
    }

    /// The engine (and CUDA engine, for that backend) of the model `s` names, with
    /// `builtin_scale` for the built-in model when the scale is automatic.
    fn make_engine(&self, s: &Settings, builtin_scale: u32) -> Result<Loaded, LoadError> {
        let (model, name) = load_model(s, builtin_scale)?;
        let engine = Engine::new(&model, s.n_threads as usize)
            .map_err(|e| LoadError::Init(e.to_string()))?;
        let cuda = self.start_cuda(s, &model)?;
        let level = CpuLevel::detect();
        if cuda.is_none()
            && let Some(text) = scalar_integer_warning(engine.network().quant.is_some(), level)
        {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                ("This CPU runs the quantized model 30-50x slower than precision=fp32"),
                ["{text}"]
            );
        }
        gst::info!(
            CAT,
            imp = self,
            "model loaded: x{}, {:?}; integer CPU kernels: {:?}",
            engine.scale(),
            engine.network().quant.as_ref().map(|q| q.mode),
            level
        );
        Ok(Loaded {
            engine: Arc::new(engine),
            cuda,
            model: name,
        })
    }

    /// Loads the model the settings now name and runs it from the next frame; a model that
    /// fails to load is a bus warning and the running one stays. With an automatic scale the
    /// built-in keeps the running scale; a model file of another scale renegotiates the caps.
    fn reload_model(&self) {
        let settings = self.settings.lock().unwrap().clone();
        let Some(current) = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .map(|st| st.engine.scale() as u32)
        else {
            return;
        };
        let builtin_scale = match settings.auto_scales() {
            Some(scales) if scales.contains(&current) => current,
            _ => engine::builtin::DEFAULT_SCALE,
        };
        match self.make_engine(&settings, builtin_scale) {
            Ok(loaded) => {
                let scale = loaded.engine.scale() as u32;
                if let Some(st) = self.state.lock().unwrap().as_mut() {
                    st.install(loaded);
                    st.auto_scales = settings.auto_scales().unwrap_or_default();
                    st.loaded = settings;
                }
                gst::info!(CAT, imp = self, "switched to the new model (x{scale})");
                if scale != current {
                    self.obj().src_pad().mark_reconfigure();
                }
            }
            Err(e) => gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                ("{}; the running model stays", e.text())
            ),
        }
    }

    /// The CUDA engine the `backend` setting asks for: None for the CPU. `auto` falls back to
    /// the CPU (a log line when there is no NVIDIA driver at all, a bus warning otherwise: no
    /// device, no NVRTC, or a model CUDA cannot run); `cuda` fails with the reason.
    fn start_cuda(
        &self,
        s: &Settings,
        model: &Model,
    ) -> Result<Option<Arc<SharedCuda>>, LoadError> {
        if s.backend == Backend::Cpu {
            return Ok(None);
        }
        match SharedCuda::get(model, s.device_id as usize) {
            Ok(c) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "running on CUDA device {}",
                    c.device_name()
                );
                Ok(Some(c))
            }
            Err(e) if s.backend == Backend::Cuda => {
                Err(LoadError::Init(format!("backend=cuda: {e}")))
            }
            Err(CudaError::NoDriver) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "backend=auto: no NVIDIA driver; using the CPU"
                );
                Ok(None)
            }
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::LibraryError::Init,
                    ("backend=auto: running on the CPU because {}", e)
                );
                Ok(None)
            }
        }
    }

    fn post_stats(
        &self,
        frame: u64,
        pts: Option<gst::ClockTime>,
        field: Option<&str>,
        st: &engine::Stats,
        (scale, model): (u32, &str),
    ) {
        let bits: Vec<String> = st.layer_bits.iter().map(|b| b.to_string()).collect();
        let mut b = gst::Structure::builder("adabm-stats")
            .field("frame", frame)
            .field("model", model)
            .field("scale", scale)
            .field("complexity", st.complexity as f64)
            .field("image-bits", st.image_bits)
            .field("fab", st.fab as f64)
            .field("layer-bits", bits.join(","))
            .field("tiles", st.tiles as u32)
            .field("processing-ms", st.millis);
        if let Some(pts) = pts {
            b = b.field("pts", pts.nseconds());
        }
        if let Some(field) = field {
            b = b.field("field", field);
        }
        let msg = gst::message::Element::builder(b.build())
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
    }
}

impl BaseTransformImpl for AdabmUpscale {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::NeverInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        // A change made before this start is loaded now, not again at the first frame.
        self.reload
            .store(false, std::sync::atomic::Ordering::Release);
        let settings = self.settings.lock().unwrap().clone();
        let loaded = self
            .make_engine(&settings, engine::builtin::DEFAULT_SCALE)
            .map_err(|e| e.to_error_message())?;
        let failed = CpuLevel::failed_self_checks();
        if !failed.is_empty() {
            gst::warning!(
                CAT,
                imp = self,
                "the CPU reports {failed:?} but those kernels failed their start-up check \
                 against the scalar reference; using {:?} instead (please report this CPU)",
                CpuLevel::detect()
            );
        }
        *self.state.lock().unwrap() = Some(State {
            engine: loaded.engine,
            cuda: loaded.cuda,
            model: loaded.model,
            auto_scales: settings.auto_scales().unwrap_or_default(),
            loaded: settings,
            caps: None,
            frames: 0,
            last_bits: [None; 2],
            warned_thresholds: false,
            warned_size: false,
            warned_metric: None,
        });
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        // After a flush (a seek) the next frame is not its predecessor's neighbour in time.
        if let gst::EventView::FlushStop(_) = event.view()
            && let Some(st) = self.state.lock().unwrap().as_mut()
        {
            st.last_bits = [None; 2];
        }
        self.parent_sink_event(event)
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        *self.latency.lock().unwrap() = Latency::default();
        Ok(())
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        if !BaseTransformImplExt::parent_query(self, direction, query) {
            return false;
        }
        if direction == gst::PadDirection::Src
            && let gst::QueryViewMut::Latency(q) = query.view_mut()
        {
            // Upstream's latency plus the time a frame spends here.
            let (live, min, max) = q.result();
            // The current estimate (what the pipeline gets when it asks again after our
            // latency message, or whenever it asks on its own).
            let ours = {
                let mut l = self.latency.lock().unwrap();
                l.reported = l.estimate();
                l.reported
            };
            q.set(live, min + ours, max.map(|m| m + ours));
            gst::debug!(CAT, imp = self, "latency: upstream {min} + ours {ours}");
        }
        true
    }

    fn transform_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        let scales = self.scales();
        let mut out = gst::Caps::new_empty();
        {
            let out = out.get_mut().expect("new caps are writable");
            // Scale-major: every structure at the preferred scale comes first, so that
            // fixation picks it unless the other side rules it out.
            for (s, (st, features)) in scales
                .iter()
                .flat_map(|&s| caps.iter_with_features().map(move |f| (s, f)))
            {
                let mut st = st.to_owned();
                let mut ok = true;
                for dim in ["width", "height"] {
                    let Some(v) = st.value(dim).ok().cloned() else {
                        continue;
                    };
                    let mapped = if direction == gst::PadDirection::Sink {
                        map_dim(
                            &v,
                            |x| x.checked_mul(s).filter(|&y| y <= MAX_OUTPUT_DIM),
                            |a, b| {
                                Some((
                                    a.checked_mul(s)?,
                                    b.saturating_mul(s).min(MAX_OUTPUT_DIM / s * s),
                                    s,
                                ))
                            },
                        )
                    } else {
                        map_dim(
                            &v,
                            |x| (x % s == 0).then_some(x / s),
                            |a, b| Some(((a + s - 1) / s, b / s, 1)),
                        )
                    };
                    match mapped {
                        Some(m) => st.set_value(dim, m),
                        None => ok = false,
                    }
                }
                if ok {
                    out.append_structure_full(st, Some(features.to_owned()));
                }
            }
        }
        gst::debug!(
            CAT,
            imp = self,
            "transformed {caps:?} ({direction:?}) to {out:?}"
        );
        match filter {
            Some(f) => Some(f.intersect_with_mode(&out, gst::CapsIntersectMode::First)),
            None => Some(out),
        }
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        // Caps GStreamer cannot map frames of (such as interlace-mode=alternate without its
        // caps feature): an error on the bus that names them, not a bare not-negotiated.
        let info = |caps: &gst::Caps, side: &str| {
            gst_video::VideoInfo::from_caps(caps).map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    (
                        "The {} caps {} do not describe video frames GStreamer can map (`GST_DEBUG=video-info:1` says why); for interlace-mode=alternate, `deinterlace` first",
                        side,
                        caps
                    )
                );
                gst::loggable_error!(CAT, "invalid {side} caps {caps}")
            })
        };
        let in_info = info(incaps, "input")?;
        let out_info = info(outcaps, "output")?;
        let layout = Layout::of(in_info.format()).ok_or_else(|| {
            gst::loggable_error!(CAT, "unsupported format {:?}", in_info.format())
        })?;
        // With an automatic scale the caps choose the built-in model: load the one whose scale
        // they ask for when it is not the running one (outside the lock: loading can post a
        // bus message, and a bus handler may read our properties).
        let asked = (in_info.width() > 0)
            .then(|| out_info.width() / in_info.width())
            .filter(|&s| out_info.width() == in_info.width() * s);
        let swap = {
            let guard = self.state.lock().unwrap();
            let st = guard.as_ref().ok_or_else(|| {
                gst::loggable_error!(CAT, "caps set before the element was started")
            })?;
            asked
                .filter(|&s| s != st.engine.scale() as u32 && st.auto_scales.contains(&s))
                .map(|s| (s, st.loaded.clone()))
        };
        if let Some((scale, loaded)) = swap {
            let new = self.make_engine(&loaded, scale).map_err(|e| {
                self.post_error_message(e.to_error_message());
                gst::loggable_error!(CAT, "cannot load the built-in x{scale} model: {}", e.text())
            })?;
            gst::info!(CAT, imp = self, "the caps ask for x{scale}: switched model");
            if let Some(st) = self.state.lock().unwrap().as_mut() {
                st.install(new);
            }
        }
        let mut guard = self.state.lock().unwrap();
        let st = guard
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "caps set before the element was started"))?;
        let s = st.engine.scale() as u32;
        if out_info.format() != in_info.format()
            || out_info.width() != in_info.width() * s
            || out_info.height() != in_info.height() * s
        {
            return Err(gst::loggable_error!(
                CAT,
                "output caps {outcaps} are not input caps {incaps} scaled x{s}"
            ));
        }
        // Each field of interlaced 4:2:0 takes every other chroma row: both fields need whole
        // chroma rows of their own.
        let field_rows = match layout {
            Layout::Yuv(l) => 2 * l.subsampling().1 as u32,
            Layout::Packed(_) | Layout::Rgb(_) => 2,
        };
        if in_info.interlace_mode() != gst_video::VideoInterlaceMode::Progressive
            && in_info.height() % field_rows != 0
        {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Interlaced ({}) {} video of {} {}: its two fields differ in {}, so they cannot be upscaled field by field; deinterlace first (`deinterlace ! adabmupscale`)",
                    in_info.interlace_mode().to_str(),
                    in_info.format().to_str(),
                    if field_rows == 4 {
                        "height"
                    } else {
                        "odd height"
                    },
                    in_info.height(),
                    if field_rows == 4 {
                        "chroma rows (4:2:0 needs a height that is a multiple of 4)"
                    } else {
                        "height"
                    }
                )
            );
            return Err(gst::loggable_error!(
                CAT,
                "interlaced input of height {} (not a multiple of {field_rows})",
                in_info.height()
            ));
        }
        gst::info!(
            CAT,
            imp = self,
            "{}x{} -> {}x{} {:?} {}",
            in_info.width(),
            in_info.height(),
            out_info.width(),
            out_info.height(),
            layout,
            in_info.interlace_mode().to_str()
        );
        if st.caps.as_ref().is_none_or(|(i, _, _)| *i != in_info) {
            st.last_bits = [None; 2];
        }
        st.caps = Some((in_info, out_info, layout));
        st.warned_size = false;
        Ok(())
    }

    fn submit_input_buffer(
        &self,
        is_discont: bool,
        inbuf: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        // Here, before the base class renegotiates: a model of another scale needs new caps
        // for this very buffer.
        if self.reload.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.reload_model();
        }
        self.parent_submit_input_buffer(is_discont, inbuf)
    }

    /// A frame of the other side's caps, whatever the buffer's size: a buffer that does not
    /// hold a frame of its caps (a truncated last frame of raw data) reaches `transform`,
    /// which drops it with a warning that says so, instead of the base class stopping the
    /// stream.
    fn transform_size(
        &self,
        _direction: gst::PadDirection,
        _caps: &gst::Caps,
        _size: usize,
        othercaps: &gst::Caps,
    ) -> Option<usize> {
        gst_video::VideoInfo::from_caps(othercaps)
            .ok()
            .map(|info| info.size())
    }

    fn transform(
        &self,
        inbuf: &gst::Buffer,
        outbuf: &mut gst::BufferRef,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let t0 = std::time::Instant::now();
        let settings = self.settings.lock().unwrap().clone();
        let opts = settings.options();
        let (engine, cuda, model, in_info, out_info, layout, frame_no, warn, warn_metric, last) = {
            let mut guard = self.state.lock().unwrap();
            let st = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            let Some((in_info, out_info, layout)) = st.caps.clone() else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("No caps were negotiated before the first buffer")
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            st.frames += 1;
            // The image thresholds in force (a negative property stands for the model's value);
            // only a quantized model has them (b_I), and each warning below names them.
            let thresholds = st.engine.thresholds(&opts);
            let warn = thresholds.filter(|&(l, u)| !st.warned_thresholds && l > u);
            st.warned_thresholds |= warn.is_some();
            let model_metric = st.engine.metric(&engine::Options::default());
            let overridden = opts.metric.is_some_and(|m| m != model_metric);
            let warn_metric =
                thresholds.filter(|_| overridden && st.warned_metric != Some(settings.metric));
            if warn_metric.is_some() {
                st.warned_metric = Some(settings.metric);
            }
            (
                st.engine.clone(),
                st.cuda.clone(),
                st.model.clone(),
                in_info,
                out_info,
                layout,
                st.frames - 1,
                warn,
                warn_metric,
                st.last_bits,
            )
        };
        // Field (or frame) `f`'s options: with `image-hysteresis`, the thresholds moved away
        // from its predecessor's b_I.
        let hysteresis = settings.image_hysteresis as f32;
        let field_opts = |f: usize| match (engine.thresholds(&opts), last[f]) {
            (Some((l, u)), Some(prev)) if hysteresis > 0.0 && opts.adaptive => {
                let (l, u) = engine::quant::sticky_thresholds(l, u, prev, hysteresis);
                Options {
                    image_lower: Some(l),
                    image_upper: Some(u),
                    ..opts
                }
            }
            _ => opts,
        };
        if let Some((l, u)) = warn_metric {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                (
                    "complexity-metric={:?} differs from the model's metric; b_I compares it with the thresholds {} / {}{}",
                    opts.metric.expect("override"),
                    l,
                    u,
                    if settings.image_lower < 0.0 || settings.image_upper < 0.0 {
                        " calibrated on the model's metric's scale (set image-lower and image-upper for this metric)"
                    } else {
                        ""
                    }
                )
            );
        }
        if let Some((l, u)) = warn {
            let whose = |set: f64| if set < 0.0 { " (the model's)" } else { "" };
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                (
                    "image-lower {}{} is above image-upper {}{}: frames of complexity between them get b_I = -1",
                    l,
                    whose(settings.image_lower),
                    u,
                    whose(settings.image_upper)
                )
            );
        }
        let Ok(in_frame) =
            gst_video::VideoFrameRef::from_buffer_ref_readable(inbuf.as_ref(), &in_info)
        else {
            // Too short for a frame of the caps (or a video meta that does not fit them): drop
            // it and go on; the first one of a stream is a bus warning.
            let first = self
                .state
                .lock()
                .unwrap()
                .as_mut()
                .is_some_and(|st| !std::mem::replace(&mut st.warned_size, true));
            let text = format!(
                "Dropped a buffer of {} bytes: a {}x{} {} frame of the negotiated caps takes {} bytes{}",
                inbuf.size(),
                in_info.width(),
                in_info.height(),
                in_info.format().to_str(),
                in_info.size(),
                if first {
                    " (a truncated frame, or caps that do not describe the data?); later ones are dropped with a debug log only"
                } else {
                    ""
                }
            );
            if first {
                gst::element_imp_warning!(self, gst::StreamError::Format, ("{}", text));
            } else {
                gst::warning!(CAT, imp = self, "{text}");
            }
            return Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED);
        };
        let mut out_frame = gst_video::VideoFrameRef::from_buffer_ref_writable(outbuf, &out_info)
            .map_err(|_| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ("Failed to map the output buffer")
            );
            gst::FlowError::Error
        })?;
        let (w, h) = (in_info.width() as usize, in_info.height() as usize);
        let (ow, oh) = (out_info.width() as usize, out_info.height() as usize);
        let in_data = || in_frame.plane_data(0).map_err(|_| gst::FlowError::Error);
        let in_stride = in_frame.plane_stride()[0] as usize;
        let src = match layout {
            Layout::Packed(layout) => InFrame::Packed(FrameRef {
                data: in_data()?,
                stride: in_stride,
                width: w,
                height: h,
                layout,
            }),
            Layout::Rgb(format) => InFrame::Rgb(RgbRef {
                planes: in_frame.planes_data(),
                strides: plane_strides(in_frame.plane_stride()),
                width: w,
                height: h,
                format,
            }),
            Layout::Yuv(layout) => {
                let (matrix, siting) = yuv_params(&in_info);
                InFrame::Yuv(YuvRef {
                    planes: in_frame.planes_data(),
                    strides: plane_strides(in_frame.plane_stride()),
                    width: w,
                    height: h,
                    layout,
                    matrix,
                    siting,
                })
            }
        };
        let out_strides: [usize; 4] = plane_strides(out_frame.plane_stride());
        let mut dst = match layout {
            Layout::Packed(layout) => OutFrame::Packed(FrameMut {
                data: out_frame
                    .plane_data_mut(0)
                    .map_err(|_| gst::FlowError::Error)?,
                stride: out_strides[0],
                width: ow,
                height: oh,
                layout,
            }),
            Layout::Rgb(format) => OutFrame::Rgb(RgbMut {
                strides: plane_strides(out_frame.plane_stride()),
                planes: out_frame.planes_data_mut(),
                width: ow,
                height: oh,
                format,
            }),
            Layout::Yuv(layout) => {
                let (matrix, siting) = yuv_params(&out_info);
                OutFrame::Yuv(YuvMut {
                    planes: out_frame.planes_data_mut(),
                    strides: out_strides,
                    width: ow,
                    height: oh,
                    layout,
                    matrix,
                    siting,
                })
            }
        };
        let upscale =
            |src: &InFrame, dst: &mut OutFrame, opts: &Options| -> Result<engine::Stats, String> {
                let bufs = || self.cuda_bufs.lock().unwrap_or_else(|e| e.into_inner());
                match (src, dst, &cuda) {
                    (InFrame::Packed(s), OutFrame::Packed(d), Some(c)) => {
                        cuda_frame(c, s, d, opts, &mut bufs())
                    }
                    (InFrame::Packed(s), OutFrame::Packed(d), None) => {
                        engine.process_frame(s, d, opts).map_err(|e| e.to_string())
                    }
                    (InFrame::Rgb(s), OutFrame::Rgb(d), Some(c)) => {
                        cuda_rgb_frame(c, s, d, opts, &mut bufs())
                    }
                    (InFrame::Rgb(s), OutFrame::Rgb(d), None) => engine
                        .process_rgb_frame(s, d, opts)
                        .map_err(|e| e.to_string()),
                    (InFrame::Yuv(s), OutFrame::Yuv(d), Some(c)) => {
                        cuda_yuv_frame(c, s, d, opts, &mut bufs())
                    }
                    (InFrame::Yuv(s), OutFrame::Yuv(d), None) => engine
                        .process_yuv_frame(s, d, opts)
                        .map_err(|e| e.to_string()),
                    _ => Err("input and output frames of different layouts".into()),
                }
            };
        // An interlaced frame holds two fields taken at different times: each is upscaled
        // on its own (its own complexity and b_I) into the same field of the output.
        let interlaced = match in_info.interlace_mode() {
            gst_video::VideoInterlaceMode::Interleaved => true,
            gst_video::VideoInterlaceMode::Mixed => {
                use gst_video::prelude::VideoBufferExt;
                inbuf
                    .video_flags()
                    .contains(gst_video::VideoBufferFlags::INTERLACED)
            }
            _ => false,
        };
        let results: Vec<(Option<&str>, Result<engine::Stats, String>)> = if interlaced {
            let fields = [("top", 0), ("bottom", 1)];
            fields
                .iter()
                .map(|&(name, f)| {
                    let r = src.field(f).and_then(|s| {
                        let mut d = dst.field(f)?;
                        upscale(&s, &mut d, &field_opts(f))
                    });
                    (Some(name), r)
                })
                .collect()
        } else {
            vec![(None, upscale(&src, &mut dst, &field_opts(0)))]
        };
        let took = gst::ClockTime::from_nseconds(t0.elapsed().as_nanos() as u64);
        if self.latency.lock().unwrap().record(took) {
            // The pipeline queries every element's latency again and redistributes it.
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
        let mut bits = last;
        for (f, (field, result)) in results.into_iter().enumerate() {
            let stats = result.map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Upscaling failed: {}", e)
                );
                gst::FlowError::Error
            })?;
            gst::trace!(CAT, imp = self, "frame {frame_no} {field:?}: {stats:?}");
            if settings.post_stats {
                let scale = engine.scale() as u32;
                self.post_stats(frame_no, inbuf.pts(), field, &stats, (scale, &model));
            }
            bits[f] = Some(stats.image_bits);
        }
        if let Some(st) = self.state.lock().unwrap().as_mut() {
            st.last_bits = bits;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

/// An input frame as the element maps it.
enum InFrame<'a> {
    Packed(FrameRef<'a>),
    Rgb(RgbRef<'a>),
    Yuv(YuvRef<'a>),
}

/// An output frame as the element maps it.
enum OutFrame<'a> {
    Packed(FrameMut<'a>),
    Rgb(RgbMut<'a>),
    Yuv(YuvMut<'a>),
}

/// Field `f` of an interlaced packed frame.
fn packed_field<'a, L: Copy>(frame: &FrameRef<'a, L>, f: usize) -> Result<FrameRef<'a, L>, String> {
    let (at, stride, height) = field_geometry(frame.height, frame.stride, f)?;
    Ok(FrameRef {
        data: frame.data.get(at..).unwrap_or_default(),
        stride,
        height,
        ..*frame
    })
}

/// [`packed_field`] of an output frame.
fn packed_field_mut<'b, L: Copy>(
    frame: &'b mut FrameMut<'_, L>,
    f: usize,
) -> Result<FrameMut<'b, L>, String> {
    let (at, stride, height) = field_geometry(frame.height, frame.stride, f)?;
    Ok(FrameMut {
        data: frame.data.get_mut(at..).unwrap_or_default(),
        stride,
        width: frame.width,
        height,
        layout: frame.layout,
    })
}

/// Where field `f` (0: top, the even rows; 1: bottom) of a plane of an interlaced frame
/// starts, its row stride and its height, for a plane of `height` rows (even) and row
/// stride `stride`.
fn field_geometry(height: usize, stride: usize, f: usize) -> Result<(usize, usize, usize), String> {
    if height % 2 == 1 {
        return Err(format!("interlaced frame of odd height {height}"));
    }
    Ok((f * stride, 2 * stride, height / 2))
}

/// Field `f` of each plane: `(start, stride)`; the chroma planes of 4:2:0 (half the rows)
/// give every other chroma row to each field.
fn plane_fields(
    height: usize,
    strides: [usize; 4],
    layout: YuvLayout,
    f: usize,
) -> Result<[(usize, usize); 4], String> {
    let mut out = [(0, 0); 4];
    let (_, ch) = layout.chroma_size(1, height);
    for p in 0..layout.planes() {
        // Luma and alpha planes have the frame's rows, chroma planes the chroma rows.
        let rows = if p == 0 || p == 3 { height } else { ch };
        let (at, stride, _) = field_geometry(rows, strides[p], f).map_err(|_| {
            format!(
                "interlaced {layout:?} frame of height {height}: its fields need whole chroma rows"
            )
        })?;
        out[p] = (at, stride);
    }
    Ok(out)
}

/// Field `f` of each plane of an RGB frame (all full height; planes a format lacks have
/// stride 0): `(start, stride)`.
fn rgb_plane_fields(
    height: usize,
    strides: [usize; 4],
    f: usize,
) -> Result<[(usize, usize); 4], String> {
    let mut out = [(0, 0); 4];
    for (o, &stride) in out.iter_mut().zip(&strides) {
        let (at, stride, _) = field_geometry(height, stride, f)?;
        *o = (at, stride);
    }
    Ok(out)
}

/// The row strides of a mapped frame's first `N` planes (0 for planes it lacks).
fn plane_strides<const N: usize>(st: &[i32]) -> [usize; N] {
    std::array::from_fn(|p| st.get(p).map_or(0, |&v| v as usize))
}

impl<'a> InFrame<'a> {
    /// Field `f` of an interlaced frame.
    fn field(&self, f: usize) -> Result<InFrame<'a>, String> {
        Ok(match self {
            Self::Packed(frame) => Self::Packed(packed_field(frame, f)?),
            Self::Rgb(frame) => {
                let g = rgb_plane_fields(frame.height, frame.strides, f)?;
                Self::Rgb(RgbRef {
                    planes: field_planes(frame.planes, g),
                    strides: g.map(|(_, s)| s),
                    height: frame.height / 2,
                    ..*frame
                })
            }
            Self::Yuv(frame) => {
                let g = plane_fields(frame.height, frame.strides, frame.layout, f)?;
                Self::Yuv(YuvRef {
                    planes: field_planes(frame.planes, g),
                    strides: g.map(|(_, s)| s),
                    height: frame.height / 2,
                    ..*frame
                })
            }
        })
    }
}

/// Each plane from its field's start `g[p].0` on (empty past its end).
fn field_planes<const N: usize>(planes: [&[u8]; N], g: [(usize, usize); N]) -> [&[u8]; N] {
    std::array::from_fn(|p| planes[p].get(g[p].0..).unwrap_or_default())
}

/// `p` from `at` on (empty past its end).
fn tail_mut(p: &mut [u8], at: usize) -> &mut [u8] {
    p.get_mut(at..).unwrap_or_default()
}

/// Each plane from its field's start `g[p].0` on.
fn field_planes_mut<'b, const N: usize>(
    planes: &'b mut [&mut [u8]; N],
    g: [(usize, usize); N],
) -> [&'b mut [u8]; N] {
    let mut starts = g.into_iter().map(|(at, _)| at);
    planes
        .each_mut()
        .map(|p| tail_mut(p, starts.next().unwrap_or_default()))
}

impl OutFrame<'_> {
    /// [`InFrame::field`] of an output frame.
    fn field(&mut self, f: usize) -> Result<OutFrame<'_>, String> {
        Ok(match self {
            Self::Packed(frame) => OutFrame::Packed(packed_field_mut(frame, f)?),
            Self::Rgb(frame) => {
                let g = rgb_plane_fields(frame.height, frame.strides, f)?;
                OutFrame::Rgb(RgbMut {
                    planes: field_planes_mut(&mut frame.planes, g),
                    strides: g.map(|(_, s)| s),
                    width: frame.width,
                    height: frame.height / 2,
                    format: frame.format,
                })
            }
            Self::Yuv(frame) => {
                let g = plane_fields(frame.height, frame.strides, frame.layout, f)?;
                OutFrame::Yuv(YuvMut {
                    planes: field_planes_mut(&mut frame.planes, g),
                    strides: g.map(|(_, s)| s),
                    width: frame.width,
                    height: frame.height / 2,
                    layout: frame.layout,
                    matrix: frame.matrix,
                    siting: frame.siting,
                })
            }
        })
    }
}

/// Checks that a `dst` frame is the `src` frame scaled by the CUDA engine's factor (returned).
fn cuda_scale(
    c: &SharedCuda,
    same_layout: bool,
    (sw, sh): (usize, usize),
    (dw, dh): (usize, usize),
) -> Result<usize, String> {
    let s = c.scale();
    if !same_layout || dw != sw * s || dh != sh * s {
        return Err(format!(
            "output frame {dw}x{dh} does not match input {sw}x{sh} at x{s}"
        ));
    }
    Ok(s)
}

impl CudaBufs {
    /// `self.values` (a `w x h` frame of f32 RGB, 0–255 scale: what the CPU engine reads)
    /// through the shared CUDA engine as [`Pixels::RgbF32`]; its unrounded output (what the
    /// CPU engine writes) replaces it.
    fn upscale_f32(
        &mut self,
        c: &SharedCuda,
        w: usize,
        h: usize,
        opts: &Options,
    ) -> Result<crate::cuda::FrameStats, String> {
        crate::cuda::f32_frame_bytes(&self.values.data, &mut self.rgb);
        let fs = self.upscale_as(c, (Pixels::RgbF32, Pixels::RgbF32), w, h, opts)?;
        let s = c.scale();
        crate::cuda::f32_frame_values(&self.hr, &mut self.values.data);
        (self.values.width, self.values.height) = (w * s, h * s);
        Ok(fs)
    }

    /// `self.rgb` (a `w x h` frame laid out as `fmt.0` says: packed RGB, tight YUV planes, f32
    /// bytes) through the shared CUDA engine into `self.hr` (laid out as `fmt.1`). The
    /// buffers travel with the job and come back with the frame (lost on an error: the next
    /// frame allocates them again).
    fn upscale_as(
        &mut self,
        c: &SharedCuda,
        fmt: (Pixels, Pixels),
        w: usize,
        h: usize,
        opts: &Options,
    ) -> Result<crate::cuda::FrameStats, String> {
        let done = c.upscale_as(
            std::mem::take(&mut self.rgb),
            fmt,
            std::mem::take(&mut self.hr),
            w,
            h,
            opts,
        )?;
        (self.rgb, self.hr) = (done.rgb, done.hr);
        Ok(done.stats)
    }
}

/// A CUDA frame's stats as the element reports them (one tile, the time since `t0`).
fn cuda_stats(fs: crate::cuda::FrameStats, t0: std::time::Instant) -> engine::Stats {
    engine::Stats {
        complexity: fs.complexity,
        image_bits: fs.image_bits,
        layer_bits: fs.layer_bits,
        fab: fs.fab,
        tiles: 1,
        millis: t0.elapsed().as_secs_f64() * 1e3,
    }
}

/// Whether YUV frames are converted on the GPU (every layout: v210 goes as I422_10LE planes,
/// [`YuvFormat::device`](engine::yuv::YuvFormat::device)): when the device passed its
/// start-up check of the conversion (else a warning, once) and `ADABM_CUDA_YUV` is not `host`
/// (which keeps the conversion on the CPU, for comparisons).
fn yuv_on_gpu(c: &SharedCuda) -> bool {
    static HOST: LazyLock<bool> =
        LazyLock::new(|| std::env::var("ADABM_CUDA_YUV").is_ok_and(|v| v == "host"));
    if *HOST {
        return false;
    }
    match c.yuv_on_device() {
        Ok(()) => true,
        Err(why) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                gst::warning!(
                    CAT,
                    "YUV conversion on {} failed its start-up check ({why}); converting YUV \
                     frames on the CPU instead",
                    c.device_name()
                );
            });
            false
        }
    }
}

/// One YUV frame through the CUDA engine: frames go to the GPU as they are (planes packed
/// tightly; v210 and Y410 repacked to I422_10LE and Y444_10LE planes) and are converted there
/// ([`yuv_on_gpu`]), or are converted to the network's f32 RGB on the CPU, upscaled, converted
/// back. Both give the CPU engine's bytes (no 8-bit RGB in between).
/// Alpha (AYUV, VUYA, Y412_LE, AYUV64, Y410, A420's and its kin's alpha plane) is upscaled
/// bilinearly on the CPU, as the CPU engine does.
fn cuda_yuv_frame(
    c: &SharedCuda,
    src: &YuvRef,
    dst: &mut YuvMut,
    opts: &Options,
    bufs: &mut CudaBufs,
) -> Result<engine::Stats, String> {
    let t0 = std::time::Instant::now();
    let (w, h) = (src.width, src.height);
    let s = cuda_scale(c, src.layout == dst.layout, (w, h), (dst.width, dst.height))?;
    let err = |e: engine::Error| e.to_string();
    let fs = if yuv_on_gpu(c) {
        src.copy_tight(&mut bufs.rgb).map_err(err)?;
        let fmt = (
            Pixels::Yuv(src.format().device()),
            Pixels::Yuv(dst.format().device()),
        );
        let fs = bufs.upscale_as(c, fmt, w, h, opts)?;
        dst.store_tight(&bufs.hr).map_err(err)?;
        fs
    } else {
        engine::yuv::unpack_into(src, &mut bufs.values).map_err(err)?;
        let fs = bufs.upscale_f32(c, w, h, opts)?;
        engine::yuv::pack(&bufs.values, dst).map_err(err)?;
        fs
    };
    if engine::yuv::unpack_alpha_into(src, &mut bufs.alpha.lr16).map_err(err)? {
        bufs.alpha.upscale16(w, h, s);
        engine::yuv::pack_alpha(&bufs.alpha.hr16, dst).map_err(err)?;
    }
    Ok(cuda_stats(fs, t0))
}

/// One frame through the CUDA engine: unpack to RGB bytes, upscale, pack (alpha upscaled
/// bilinearly, as on the CPU), in the buffers of `bufs`.
fn cuda_frame(
    c: &SharedCuda,
    src: &FrameRef,
    dst: &mut FrameMut,
    opts: &Options,
    bufs: &mut CudaBufs,
) -> Result<engine::Stats, String> {
    let t0 = std::time::Instant::now();
    let (w, h) = (src.width, src.height);
    let s = cuda_scale(c, src.layout == dst.layout, (w, h), (dst.width, dst.height))?;
    let has_alpha = engine::frame::unpack_rgb8_into(src, &mut bufs.rgb, &mut bufs.alpha.lr)
        .map_err(|e| e.to_string())?;
    let fs = bufs.upscale_as(c, (Pixels::Rgb, Pixels::Rgb), w, h, opts)?;
    if has_alpha {
        bufs.alpha.upscale(w, h, s);
    }
    engine::frame::pack_rgb8(&bufs.hr, has_alpha.then_some(&bufs.alpha.hr[..]), dst)
        .map_err(|e| e.to_string())?;
    Ok(cuda_stats(fs, t0))
}

/// [`cuda_frame`] of an [`RgbFormat`] frame: its samples go to the GPU as the network's f32
/// values and come back unrounded, each rounded once to the format's depth, as on the CPU;
/// alpha is upscaled at its own depth on the CPU, as the CPU engine does.
fn cuda_rgb_frame(
    c: &SharedCuda,
    src: &RgbRef,
    dst: &mut RgbMut,
    opts: &Options,
    bufs: &mut CudaBufs,
) -> Result<engine::Stats, String> {
    let t0 = std::time::Instant::now();
    let (w, h) = (src.width, src.height);
    let s = cuda_scale(c, src.format == dst.format, (w, h), (dst.width, dst.height))?;
    let err = |e: engine::Error| e.to_string();
    engine::rgbfmt::unpack_into(src, &mut bufs.values, &mut bufs.alpha.lr16).map_err(err)?;
    let fs = bufs.upscale_f32(c, w, h, opts)?;
    if src.format.has_alpha() {
        bufs.alpha.upscale16(w, h, s);
    }
    let (hw, hh) = (w * s, h * s);
    let hr = engine::frame::Window::whole(&bufs.values.data, hw, hh);
    let r = engine::frame::Rect::whole(hw, hh);
    engine::rgbfmt::pack_rect(hr, r, &bufs.alpha.hr16, dst).map_err(err)?;
    Ok(cuda_stats(fs, t0))
}

/// The bus warning for a quantized model whose convs will run on the scalar integer kernels
/// (no SIMD level on this CPU, or `ADABM_CPU_LEVEL=scalar`): a built-in x2 w4a4 frame took
/// 3.46 s there against 67 ms for the fp32 built-in on the same x86-64 host (BENCHMARKS.md,
/// session 43); on 64-bit ARM without `sdot` the scalar level executes 34x the fp32 model's
/// instructions (53.5 G against 1.57 G under qemu, sessions 33 and 42), whose convs run on NEON.
fn scalar_integer_warning(quantized: bool, level: CpuLevel) -> Option<String> {
    (quantized && level == CpuLevel::Scalar).then(|| {
        "the quantized model's convs run on the scalar integer kernels here (the CPU has none \
         of their SIMD levels: AVX2 on x86-64, the dot-product extension on 64-bit ARM, which \
         Cortex-A53/A57/A72 cores lack; or ADABM_CPU_LEVEL=scalar): frames take 30 to 50 times \
         as long as with the fp32 built-in model; for speed set precision=fp32 or use a \
         floating-point model file"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::Latency;
    use gst::ClockTime;

    #[test]
    fn quantized_models_on_the_scalar_integer_level_are_a_warning() {
        use super::{CpuLevel, scalar_integer_warning};
        let text = scalar_integer_warning(true, CpuLevel::Scalar).expect("a warning");
        assert!(
            text.contains("precision=fp32") && text.contains("scalar"),
            "{text}"
        );
        assert_eq!(scalar_integer_warning(false, CpuLevel::Scalar), None);
        for level in CpuLevel::available()
            .into_iter()
            .filter(|&l| l != CpuLevel::Scalar)
        {
            assert_eq!(scalar_integer_warning(true, level), None, "{level:?}");
        }
    }

    /// The estimate is the longest of the last 16 frames, reported again when it grows by
    /// more than a quarter or falls below half.
    #[test]
    fn latency_estimate_moves_with_the_recent_frames() {
        let ms = ClockTime::from_mseconds;
        let mut l = Latency::default();
        assert!(l.record(ms(10)), "the first frame is news");
        assert_eq!(l.reported, ms(10));
        assert!(!l.record(ms(12)), "12 ms is within a quarter of 10");
        assert_eq!(l.reported, ms(10));
        assert!(l.record(ms(13)), "13 ms is more than a quarter above 10");
        assert_eq!(l.reported, ms(13));
        // The 13 ms frame leaves the window after 16 faster ones; then 5 < 13 / 2.
        for i in 0..15 {
            assert!(!l.record(ms(5)), "frame {i}: 13 ms is still in the window");
        }
        assert!(l.record(ms(5)));
        assert_eq!(l.reported, ms(5));
    }
}
