//! One CUDA engine per (model, device), shared by every stream that runs that model: element
//! instances (or any other callers) get the same [`SharedCuda`], and their frames of the same
//! size go through the device in one launch ([`crate::batch`]), each with its own options
//! (base bits, thresholds, adaptive). The model's weights, the compiled kernels and the
//! device buffers exist once per device instead of once per stream.

use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::{CudaEngine, Done, FrameStats, Pixels, Result};
use crate::batch::{BatchExec, Batcher};
use crate::engine::model::{f32_bytes, f32_from_bytes};
use crate::engine::{Model, Options};

/// Frames per launch at most: enough for several streams, bounded device memory (the
/// buffers grow to the largest batch seen).
pub const MAX_BATCH: usize = 4;

/// One frame to upscale: its bytes (laid out as `fmt.0` says), its size and its stream's
/// options, and the buffer its HR frame goes into (laid out as `fmt.1` says; any memory it has
/// is reused).
pub struct Job {
    pub rgb: Vec<u8>,
    pub fmt: (Pixels, Pixels),
    pub w: usize,
    pub h: usize,
    pub opts: Options,
    pub out: Vec<u8>,
}

/// A frame done, or why it failed.
pub type Reply = std::result::Result<Done, String>;

/// An HR frame (packed RGB) and its stats, or why it failed.
pub type Output = std::result::Result<(Vec<u8>, FrameStats), String>;

struct Exec {
    engine: CudaEngine,
}

impl BatchExec for Exec {
    type Job = Job;
    type Out = Reply;
    type Key = (usize, usize);

    fn key(j: &Job) -> (usize, usize) {
        (j.w, j.h)
    }

    fn run(&mut self, mut jobs: Vec<Job>) -> Vec<Reply> {
        let (w, h) = (jobs[0].w, jobs[0].h);
        // A frame whose options the device refuses fails alone, not its batch.
        let checked: Vec<std::result::Result<(), String>> = jobs
            .iter()
            .map(|j| {
                self.engine
                    .check_options(&j.opts)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .collect();
        let ok: Vec<usize> = (0..jobs.len()).filter(|&i| checked[i].is_ok()).collect();
        let mut outs: Vec<Vec<u8>> = ok
            .iter()
            .map(|&i| std::mem::take(&mut jobs[i].out))
            .collect();
        let ran = if ok.is_empty() {
            Ok(Vec::new())
        } else {
            let frames: Vec<&[u8]> = ok.iter().map(|&i| jobs[i].rgb.as_slice()).collect();
            let opts: Vec<Options> = ok.iter().map(|&i| jobs[i].opts).collect();
            let fmts: Vec<(Pixels, Pixels)> = ok.iter().map(|&i| jobs[i].fmt).collect();
            self.engine
                .upscale_formats_into(&frames, &fmts, w, h, &opts, &mut outs)
                .map_err(|e| e.to_string())
        };
        let mut done = match ran {
            Ok(stats) => Ok(outs.into_iter().zip(stats)),
            Err(e) => Err(e),
        };
        jobs.into_iter()
            .zip(checked)
            .map(|(job, c)| {
                c?;
                match &mut done {
                    Ok(it) => it
                        .next()
                        .map(|(hr, stats)| Done {
                            hr,
                            stats,
                            rgb: job.rgb,
                        })
                        .ok_or_else(|| "no output for this frame".to_string()),
                    Err(e) => Err(e.clone()),
                }
            })
            .collect()
    }

    fn failed(why: &str) -> Reply {
        Err(why.to_string())
    }
}

/// A CUDA engine shared by several streams.
pub struct SharedCuda {
    batcher: Batcher<Exec>,
    /// Whether the device's YUV conversion passed its start-up check ([`yuv_self_check`]),
    /// or why not.
    yuv: std::result::Result<(), String>,
    model: Model,
    device: usize,
    lanes: usize,
    name: String,
    scale: usize,
}

/// Engines (lanes) per shared engine from `ADABM_CUDA_LANES` (1–4, default 1): with 2, two
/// batches are in flight at once, each on its own device stream and buffers, so one batch's
/// host copies and transfers overlap the other's kernels when several streams feed the engine
/// (weights, kernels and buffers then exist twice). Opt-in until measured on a GPU
/// (`scripts/gpu-check.sh`'s shared-engine table has rows for 1 and 2 lanes).
pub fn lanes_from_env() -> usize {
    std::env::var("ADABM_CUDA_LANES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(1, |n| n.clamp(1, 4))
}

/// Live shared engines; an entry goes away with its last user.
static SHARED: LazyLock<Mutex<Vec<Weak<SharedCuda>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

impl SharedCuda {
    /// The shared engine running `model` on `device`: the existing one when another stream
    /// runs the same model there, else a new one ([`CudaEngine::new`]'s errors), with
    /// `lanes_from_env` lanes.
    pub fn get(model: &Model, device: usize) -> Result<Arc<SharedCuda>> {
        Self::get_with_lanes(model, device, lanes_from_env())
    }

    /// [`Self::get`] with `lanes` (1–4) engines that run batches at once.
    pub fn get_with_lanes(model: &Model, device: usize, lanes: usize) -> Result<Arc<SharedCuda>> {
        let lanes = lanes.clamp(1, 4);
        let mut list = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        if let Some(s) = list
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.device == device && s.lanes == lanes && s.model == *model)
        {
            return Ok(s);
        }
        let mut engines = (0..lanes)
            .map(|_| CudaEngine::new(model, device))
            .collect::<Result<Vec<_>>>()?;
        let yuv = yuv_self_check(&mut engines[0]);
        let s = Arc::new(SharedCuda {
            yuv,
            name: engines[0].device_name().to_string(),
            scale: engines[0].scale(),
            batcher: Batcher::with_executors(
                engines.into_iter().map(|engine| Exec { engine }).collect(),
                MAX_BATCH,
            ),
            model: model.clone(),
            device,
            lanes,
        });
        list.push(Arc::downgrade(&s));
        Ok(s)
    }

    /// Upscales one frame (packed RGB, `w x h`), batched with the frames other streams submit
    /// meanwhile.
    pub fn upscale(&self, rgb: Vec<u8>, w: usize, h: usize, opts: &Options) -> Output {
        self.upscale_reusing(rgb, Vec::new(), w, h, opts)
            .map(|d| (d.hr, d.stats))
    }

    /// [`Self::upscale`] into `out`, handing back `rgb` too: a caller that passes the buffers
    /// of its previous frame allocates no frame-sized memory (the element's path).
    pub fn upscale_reusing(
        &self,
        rgb: Vec<u8>,
        out: Vec<u8>,
        w: usize,
        h: usize,
        opts: &Options,
    ) -> Reply {
        self.upscale_as(rgb, (Pixels::Rgb, Pixels::Rgb), out, w, h, opts)
    }

    /// [`Self::upscale_reusing`] of a frame laid out as `fmt.0`, its HR frame as `fmt.1`: YUV
    /// frames (tight planes) are converted on the device. Check [`Self::yuv_on_device`] first:
    /// a device whose conversion failed its start-up check should be given RGB.
    pub fn upscale_as(
        &self,
        frame: Vec<u8>,
        fmt: (Pixels, Pixels),
        out: Vec<u8>,
        w: usize,
        h: usize,
        opts: &Options,
    ) -> Reply {
        self.batcher.run(Job {
            rgb: frame,
            fmt,
            w,
            h,
            opts: *opts,
            out,
        })
    }

    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// Whether YUV frames can be converted on the device ([`yuv_self_check`] passed at start),
    /// or why not.
    pub fn yuv_on_device(&self) -> std::result::Result<(), &str> {
        self.yuv.as_ref().map(|_| ()).map_err(|e| e.as_str())
    }

    pub fn scale(&self) -> usize {
        self.scale
    }

    /// Batches that can be in flight at once.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Frames per launch of the most recent launches (up to 1024), oldest first.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batcher.run_sizes()
    }
}

/// Checks the device's YUV conversion against the host's on small frames of every layout it
/// converts, in the four variants of [`device_formats`](crate::engine::yuv::device::device_formats)
/// (random samples and pixels, an odd size, limited and full range, co-sited and centred
/// chroma): `yuv_unpack` must give the f32 values of
/// [`unpack_with`](crate::engine::yuv::unpack_with) and `yuv_pack` the bytes of
/// [`pack_with`](crate::engine::yuv::pack_with) (the CPU engine's conversions); then one batch
/// of YUV, RGB and f32 frames through the whole engine must give the host conversions around
/// the f32 path. A device that fails gets its frames converted by the host
/// ([`Pixels::RgbF32`]) instead of frames that differ from the CPU engine's.
pub fn yuv_self_check(engine: &mut CudaEngine) -> std::result::Result<(), String> {
    use crate::engine::yuv::{ChromaSiting, YuvFormat, YuvLayout, YuvMatrix};
    let host_unpack = |data: &[u8], f: YuvFormat, w: usize, h: usize| {
        f.unpack_tight(data, w, h)
            .map_err(|e| format!("{:?} host unpack: {e}", f.layout))
    };
    let host_pack = |rgb: &[f32], f: YuvFormat, w: usize, h: usize| {
        f.pack_tight(rgb, w, h)
            .map_err(|e| format!("{:?} host pack: {e}", f.layout))
    };
    let mut rng = crate::engine::random::Rng::new(0x2545_F491_4F6C_DD1D);
    let mut noise = |n: usize| rng.bytes(n);
    // The network's output: fractions, some outside 0–255.
    let mut rng_f = crate::engine::random::Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut noise_f = |n: usize| rng_f.network_rgb(n);
    let (w, h) = (11, 7);
    for f in crate::engine::yuv::device::device_formats() {
        let layout = f.layout;
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("{layout:?} {what}: {e}");
        let data = noise(f.tight_len(w, h));
        let got = engine
            .yuv_to_rgb(&data, f, w, h)
            .map_err(|e| fail("yuv_unpack", &e))?;
        let want = host_unpack(&data, f, w, h)?;
        if got
            .iter()
            .map(|v| v.to_bits())
            .ne(want.iter().map(|v| v.to_bits()))
        {
            return Err(format!(
                "{layout:?}: yuv_unpack differs from the host's conversion"
            ));
        }
        let rgb = noise_f(w * h * 3);
        let got = engine
            .rgb_to_yuv(&rgb, f, w, h)
            .map_err(|e| fail("yuv_pack", &e))?;
        if got != host_pack(&rgb, f, w, h)? {
            return Err(format!(
                "{layout:?}: yuv_pack differs from the host's conversion"
            ));
        }
    }
    // A batch mixing YUV, RGB and f32 in and out, against the f32 path with the host's
    // conversions around it: the engine's staging of YUV frames.
    let (w, h) = (9, 7);
    let (s, opts) = (engine.scale(), [crate::engine::Options::default()]);
    let fa = YuvFormat {
        layout: YuvLayout::I420,
        matrix: YuvMatrix::new(YuvMatrix::BT709, false),
        siting: ChromaSiting::default(),
    };
    let fb = YuvFormat {
        layout: YuvLayout::P010,
        matrix: YuvMatrix::new(YuvMatrix::BT2020, true),
        siting: ChromaSiting {
            h_cosited: true,
            v_cosited: true,
        },
    };
    let rgb: Vec<Vec<f32>> = (0..4).map(|_| noise_f(w * h * 3)).collect();
    let bytes = noise(w * h * 3);
    let fmts = [
        (Pixels::Yuv(fa), Pixels::Yuv(fa)),
        (Pixels::Rgb, Pixels::Yuv(fb)),
        (Pixels::Yuv(fb), Pixels::Rgb),
        (Pixels::RgbF32, Pixels::RgbF32),
    ];
    let inputs = [
        host_pack(&rgb[0], fa, w, h)?,
        bytes.clone(),
        host_pack(&rgb[2], fb, w, h)?,
        f32_bytes(&rgb[3]),
    ];
    let as_f32 = [
        host_unpack(&inputs[0], fa, w, h)?,
        bytes.iter().map(|&v| v as f32).collect(),
        host_unpack(&inputs[2], fb, w, h)?,
        rgb[3].clone(),
    ];
    let refs: Vec<&[u8]> = inputs.iter().map(|v| &v[..]).collect();
    let mut got = vec![Vec::new(); 4];
    engine
        .upscale_formats_into(&refs, &fmts, w, h, &opts, &mut got)
        .map_err(|e| format!("a batch of YUV frames: {e}"))?;
    let f32_in: Vec<Vec<u8>> = as_f32.iter().map(|v| f32_bytes(v)).collect();
    let refs: Vec<&[u8]> = f32_in.iter().map(|v| &v[..]).collect();
    let mut out = vec![Vec::new(); 4];
    engine
        .upscale_formats_into(
            &refs,
            &[(Pixels::RgbF32, Pixels::RgbF32)],
            w,
            h,
            &opts,
            &mut out,
        )
        .map_err(|e| format!("a batch of f32 frames: {e}"))?;
    let out: Vec<Vec<f32>> = out.iter().map(|v| f32_from_bytes(v)).collect();
    let want = [
        host_pack(&out[0], fa, w * s, h * s)?,
        host_pack(&out[1], fb, w * s, h * s)?,
        out[2]
            .iter()
            .map(|&v| crate::engine::frame::to_u8(v))
            .collect(),
        f32_bytes(&out[3]),
    ];
    if let Some(i) = (0..4).find(|&i| got[i] != want[i]) {
        return Err(format!(
            "frame {i} of a batch of YUV, RGB and f32 frames differs from the host's conversions"
        ));
    }
    Ok(())
}
