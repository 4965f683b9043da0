//! The GStreamer-free engine: model files, the f32 reference engine (floating point and AdaBM
//! fake quantization), image complexity and frame packing.

pub mod builtin;
pub mod complexity;
pub mod conv;
pub mod edsr;
pub mod error;
pub mod frame;
pub mod intconv;
pub mod intcpu;
pub mod intnet;
pub mod metrics;
pub mod model;
pub mod quant;
pub mod random;
pub mod resize;
pub mod rgbfmt;
mod tile;
pub mod yuv;

use std::time::Instant;

use gemm::Parallelism;

pub use edsr::{BitPlan, Network};
pub use error::{Error, Result};
pub use frame::{FrameMut, FrameRef, Image, PixelLayout};
pub use model::{ComplexityMetric, EdsrConfig, LayerQuant, Model, QuantConfig, QuantMode};
pub use tile::Tile;

use conv::FeatureMap;

/// The worker pool of `threads` threads that every engine of the process asking for that many
/// shares (a server's streams, each with its own element and engine, run on one pool of a
/// thread per CPU, instead of a pool each that together oversubscribe the CPUs); it ends with
/// the last engine holding it.
fn shared_pool(threads: usize) -> Result<std::sync::Arc<rayon::ThreadPool>> {
    use std::sync::{Arc, Mutex, Weak};
    static POOLS: Mutex<Vec<(usize, Weak<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|(_, p)| p.strong_count() > 0);
    if let Some(p) = pools
        .iter()
        .filter(|(n, _)| *n == threads)
        .find_map(|(_, p)| p.upgrade())
    {
        return Ok(p);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("adabm-{i}"))
        .build()
        .map_err(|e| Error::Setting(format!("cannot start {threads} worker threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.push((threads, Arc::downgrade(&pool)));
    Ok(pool)
}

/// Default working-memory budget of one tile, in bytes (see `tile::estimate_bytes` and
/// `tile::estimate_bytes_fused`).
pub const DEFAULT_TILE_BUDGET: usize = 512 << 20;
/// Smallest accepted explicit tile size (LR pixels).
pub const MIN_TILE: usize = 16;

/// Per-frame run options (the element's cheap, live-changeable knobs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Image-level adaptation (b_I); off means b_I = 0 for every frame.
    pub adaptive: bool,
    /// Base activation bits; None: the model's.
    pub base_bits: Option<u8>,
    /// l_i2b; None: the model's.
    pub image_lower: Option<f32>,
    /// u_i2b; None: the model's.
    pub image_upper: Option<f32>,
    /// Tile size in LR pixels; 0: automatic (whole frame when it fits the memory budget).
    pub tile_size: usize,
    /// Image complexity metric for b_I; None: the model's. The model's thresholds are on
    /// its own metric's scale, so an override normally comes with `image_lower`/`image_upper`.
    pub metric: Option<ComplexityMetric>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            adaptive: true,
            base_bits: None,
            image_lower: None,
            image_upper: None,
            tile_size: 0,
            metric: None,
        }
    }
}

/// What the engine did for one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Image complexity c(I) (gradient density).
    pub complexity: f32,
    /// b_I.
    pub image_bits: i32,
    /// Activation bits of each adaptive layer, in layer order (empty for a float model).
    pub layer_bits: Vec<u8>,
    /// Feature average bit-width over the adaptive layers (0 for a float model).
    pub fab: f32,
    /// Number of tiles the frame was processed in.
    pub tiles: usize,
    /// Wall time of the frame, in milliseconds.
    pub millis: f64,
}

/// How quantized layers are executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Execution {
    /// Integer kernels ([`intcpu`], semantics of [`intnet`]) at the CPU's best SIMD level
    /// (`ADABM_CPU_LEVEL=scalar` lowers it): what the element runs, bit-identical to CUDA.
    Integer,
    /// The f32 fake-quant reference of the method page.
    FakeQuant,
    /// Integer kernels at a chosen level (tests and level comparisons): one of
    /// [`intcpu::CpuLevel::testable`] on this host, else an error.
    IntegerAt(intcpu::CpuLevel),
}

/// The CPU engine: one model, and the process's worker pool of its thread count.
pub struct Engine {
    net: Network,
    /// Integer execution of a quantized model.
    int: Option<intnet::IntNetwork>,
    /// The fused integer path of an fq model.
    fused: Option<intcpu::FusedNet>,
    pool: std::sync::Arc<rayon::ThreadPool>,
    threads: usize,
    /// Frame-sized buffers kept between frames (one set per frame in flight), so that frames
    /// of a size seen before allocate none.
    scratch: std::sync::Mutex<Vec<Scratch>>,
}

/// What a frame reuses: the element path's unpacked input and alpha planes, and the network's
/// maps (every engine path's: [`Maps`]). There is no frame-sized HR image: the frame paths
/// write each tile's output straight into the output frame.
#[derive(Default)]
struct Scratch {
    lr: Image,
    /// Alpha layouts: the input's alpha plane and its bilinear upscale.
    alpha: frame::AlphaBufs,
    /// A v210 output frame's staged I422_10LE planes.
    v210: Vec<u8>,
    maps: Maps,
}

/// A frame's luma plane (complexity), a tile's input map and network output, and the feature
/// maps of the f32 and non-fq integer forward passes.
#[derive(Default)]
struct Maps {
    luma: Vec<f32>,
    x: FeatureMap,
    y: FeatureMap,
    fwd: edsr::ForwardScratch,
}

impl Engine {
    /// `threads` = 0 picks the number of CPUs. Quantized layers run on the integer kernels.
    pub fn new(model: &Model, threads: usize) -> Result<Self> {
        Self::with_execution(model, threads, Execution::Integer)
    }

    /// [`Engine::new`] with a choice of execution for quantized layers.
    pub fn with_execution(model: &Model, threads: usize, exec: Execution) -> Result<Self> {
        model.validate()?;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = shared_pool(threads)?;
        let int = match exec {
            Execution::Integer => {
                intnet::IntNetwork::new(model).map(|n| n.with_kernels(intcpu::CpuLevel::detect()))
            }
            Execution::FakeQuant => None,
            Execution::IntegerAt(level) => {
                if !intcpu::CpuLevel::testable().contains(&level) {
                    return Err(Error::Setting(format!(
                        "CPU level {level:?} cannot run on this host (it can run {:?})",
                        intcpu::CpuLevel::testable()
                    )));
                }
                intnet::IntNetwork::new(model).map(|n| n.with_kernels(level))
            }
        };
        let fused = int.as_ref().and_then(intcpu::FusedNet::new);
        Ok(Self {
            net: Network::new(model),
            int,
            fused,
            pool,
            threads,
            scratch: Default::default(),
        })
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn scale(&self) -> usize {
        self.net.config.scale as usize
    }

    /// The image thresholds (l_i2b, u_i2b) in force under `opts`; None for a float model.
    pub fn thresholds(&self, opts: &Options) -> Option<(f32, f32)> {
        let q = self.net.quant.as_ref()?;
        Some((
            opts.image_lower.unwrap_or(q.image_lower),
            opts.image_upper.unwrap_or(q.image_upper),
        ))
    }

    /// The complexity metric frames are measured with under `opts`.
    pub fn metric(&self, opts: &Options) -> ComplexityMetric {
        self.net.metric(opts.metric)
    }

    /// Bits per layer and stats skeleton for an image of complexity `c`.
    pub fn bit_plan(&self, c: f32, opts: &Options) -> Result<(BitPlan, i32)> {
        let Some(q) = &self.net.quant else {
            return Ok((self.net.plan(0, 0), 0));
        };
        let base = opts.base_bits.unwrap_or(q.a_bits);
        if !(1..=8).contains(&base) {
            return Err(Error::Setting(format!(
                "base bits must be in 1..=8, found {base}"
            )));
        }
        let (lower, upper) = self
            .thresholds(opts)
            .unwrap_or((q.image_lower, q.image_upper));
        let b_i = if opts.adaptive {
            quant::image_bit(c, lower, upper)
        } else {
            0
        };
        Ok((self.net.plan(base, b_i), b_i))
    }

    /// Upscales an RGB image. Returns the HR image (unrounded f32) and the frame's stats.
    pub fn upscale(&self, img: &Image, opts: &Options) -> Result<(Image, Stats)> {
        let mut out = Image::default();
        let stats = self.upscale_into(img, opts, &mut out)?;
        Ok((out, stats))
    }

    /// [`Engine::upscale`] into `out`, reusing its memory and this engine's buffers: a frame of
    /// a size seen before allocates no frame-sized memory (whatever the model: float, fq or
    /// non-fq).
    pub fn upscale_into(&self, img: &Image, opts: &Options, out: &mut Image) -> Result<Stats> {
        let s = self.scale();
        let (w, h) = (img.width, img.height);
        // The tiles' cores cover the frame, so every value is written: no zeroing.
        (out.width, out.height) = (w * s, h * s);
        out.data.resize(w * s * h * s * 3, 0.0);
        self.with_scratch(|sc| {
            self.upscale_with(img, opts, &mut sc.maps, &mut |src, r| {
                frame::copy_rect(src, r, out)
            })
        })
    }

    /// Upscales an RGB image into a packed 8-bit frame of `scale` times its size (any
    /// [`PixelLayout`]; alpha and padding bytes 255), each tile's output written straight into
    /// the frame: no frame-sized f32 image (12 bytes per output pixel) as [`Engine::upscale`]
    /// returns.
    pub fn upscale_to_frame(
        &self,
        img: &Image,
        dst: &mut FrameMut,
        opts: &Options,
    ) -> Result<Stats> {
        self.check_scaled(
            (img.width, img.height, &dst.layout),
            (dst.width, dst.height, &dst.layout),
        )?;
        self.with_scratch(|sc| {
            self.upscale_with(img, opts, &mut sc.maps, &mut |src, r| {
                frame::pack_rect(src, r, None, dst)
            })
        })
    }

    /// `f` with a scratch set of its own (one from the pool, or a new one), returned to the
    /// pool afterwards.
    fn with_scratch<T>(&self, f: impl FnOnce(&mut Scratch) -> T) -> T {
        let pool = || self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let mut sc = pool().pop().unwrap_or_default();
        let r = f(&mut sc);
        pool().push(sc);
        r
    }

    /// Runs the network on `img` tile by tile; `put` writes each tile's core (the rectangle,
    /// in HR pixels) from a window of the tile's output (RGB in 0–255) that also holds the
    /// one-pixel ring around the core within the frame, exact as the core is (the halo has a
    /// pixel to spare: [`Network::halo`]). The cores cover the HR frame once.
    fn upscale_with(
        &self,
        img: &Image,
        opts: &Options,
        maps: &mut Maps,
        put: &mut (dyn FnMut(frame::Window<f32>, frame::Rect) -> Result<()> + Send),
    ) -> Result<Stats> {
        let t0 = Instant::now();
        let (w, h) = (img.width, img.height);
        if w == 0 || h == 0 || img.data.len() != w * h * 3 {
            return Err(Error::Input(format!(
                "image is {w}x{h} with {} values: expected at least 1x1 and 3 values per pixel",
                img.data.len()
            )));
        }
        if opts.tile_size != 0 && opts.tile_size < MIN_TILE {
            return Err(Error::Setting(format!(
                "tile size must be 0 (automatic) or at least {MIN_TILE}, found {}",
                opts.tile_size
            )));
        }
        let c = complexity::measure_with(self.metric(opts), &img.data, w, h, &mut maps.luma);
        let (plan, b_i) = self.bit_plan(c, opts)?;
        // The fused integer engine needs far less memory per pixel than the f32 one (u8 codes),
        // so it runs whole frames where the f32 engine would need tiles (each tile recomputes
        // a halo of the receptive field).
        let estimate = if self.fused.is_some() {
            tile::estimate_bytes_fused
        } else {
            tile::estimate_bytes
        };
        let tiles = tile::plan(
            &self.net,
            w,
            h,
            opts.tile_size,
            DEFAULT_TILE_BUDGET,
            estimate,
        );
        let s = self.scale();
        // HR outputs are in model units before `add_mean`: each tile's core and ring become
        // `(v + mean) · 255 / rgb_range`.
        let cfg = &self.net.config;
        let add = cfg.rgb_mean.map(|m| m * cfg.rgb_range);
        let mul = 255.0 / cfg.rgb_range;
        self.pool.install(|| -> Result<()> {
            for t in &tiles {
                self.run_tile(img, t, &plan, maps);
                let core = t.hr_core(s);
                let window = t.to_pixels(&mut maps.y, s, core.ring(w * s, h * s), add, mul);
                put(window, core)?;
            }
            Ok(())
        })?;
        let layer_bits: Vec<u8> = self.net.adaptive_layers().map(|k| plan.bits[k]).collect();
        let fab = if layer_bits.is_empty() {
            0.0
        } else {
            layer_bits.iter().map(|&b| b as f32).sum::<f32>() / layer_bits.len() as f32
        };
        Ok(Stats {
            complexity: c,
            image_bits: b_i,
            layer_bits,
            fab,
            tiles: tiles.len(),
            millis: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Runs the network on the extended region of one tile; its HR output, in model units
    /// before `add_mean` ([`Tile::paste`] converts it to 0–255), goes to `maps.y`.
    fn run_tile(&self, img: &Image, t: &Tile, plan: &BitPlan, maps: &mut Maps) {
        let Maps { x, y, fwd, .. } = maps;
        self.net.input_map_into(img, t.ex, t.ey, t.ew, t.eh, x);
        match (&self.fused, &self.int) {
            (Some(fused), Some(int)) => fused.forward_into(x, plan, int, y),
            (_, Some(int)) => int.forward_map_into(x, plan, None, fwd, y),
            (_, None) => {
                let par = Parallelism::Rayon(self.threads);
                self.net.forward_into(x, plan, par, None, fwd, y)
            }
        }
    }

    /// Checks that an output frame `(width, height, layout)` is the input's layout at `scale`
    /// times its size.
    fn check_scaled<L: PartialEq + std::fmt::Debug>(
        &self,
        (sw, sh, sl): (usize, usize, &L),
        (dw, dh, dl): (usize, usize, &L),
    ) -> Result<()> {
        let s = self.scale();
        if sl != dl || dw != sw * s || dh != sh * s {
            return Err(Error::Input(format!(
                "output frame {dw}x{dh} {dl:?} does not match input {sw}x{sh} {sl:?} at x{s}"
            )));
        }
        Ok(())
    }

    /// Upscales a packed frame into a packed frame of the same layout and `scale` times the size.
    pub fn process_frame(
        &self,
        src: &FrameRef,
        dst: &mut FrameMut,
        opts: &Options,
    ) -> Result<Stats> {
        self.check_scaled(
            (src.width, src.height, &src.layout),
            (dst.width, dst.height, &dst.layout),
        )?;
        self.with_scratch(|sc| self.process_frame_with(src, dst, opts, sc))
    }

    /// Upscales a YUV or grey frame (any [`yuv::YuvLayout`]) into one of the same layout and
    /// `scale` times the size: its samples converted straight to the network's RGB input and
    /// the network's output straight back ([`yuv`]), each at its frame's colour matrix, range
    /// and chroma siting.
    pub fn process_yuv_frame(
        &self,
        src: &yuv::YuvRef,
        dst: &mut yuv::YuvMut,
        opts: &Options,
    ) -> Result<Stats> {
        self.check_scaled(
            (src.width, src.height, &src.layout),
            (dst.width, dst.height, &dst.layout),
        )?;
        let s = self.scale();
        self.with_scratch(|sc| {
            let has_alpha = self.pool.install(|| -> Result<bool> {
                yuv::unpack_into(src, &mut sc.lr)?;
                let has_alpha = yuv::unpack_alpha_into(src, &mut sc.alpha.lr16)?;
                if has_alpha {
                    // Alpha (AYUV, VUYA, Y412_LE, AYUV64, Y410, A420's and its kin's alpha
                    // plane) is upscaled apart, bilinearly, at its depth, as in the RGB
                    // formats.
                    sc.alpha.upscale16(src.width, src.height, s);
                }
                Ok(has_alpha)
            })?;
            let mut out = yuv::YuvPacker::new(dst, &mut sc.v210)?;
            let stats =
                self.upscale_with(&sc.lr, opts, &mut sc.maps, &mut |src, r| out.put(src, r))?;
            self.pool.install(|| out.finish());
            if has_alpha {
                self.pool.install(|| yuv::pack_alpha(&sc.alpha.hr16, dst))?;
            }
            Ok(stats)
        })
    }

    /// Upscales an RGB frame of an [`rgbfmt::RgbFormat`] (64-bit RGBA, 10-bit packed RGB,
    /// planar RGB at 8–12 bits) into one of the same format and `scale` times the size:
    /// samples straight to the network's RGB and its output straight back at the format's
    /// depth ([`rgbfmt`]), alpha upscaled bilinearly at its own depth.
    pub fn process_rgb_frame(
        &self,
        src: &rgbfmt::RgbRef,
        dst: &mut rgbfmt::RgbMut,
        opts: &Options,
    ) -> Result<Stats> {
        self.check_scaled(
            (src.width, src.height, &src.format),
            (dst.width, dst.height, &dst.format),
        )?;
        let s = self.scale();
        self.with_scratch(|sc| {
            self.pool.install(|| -> Result<()> {
                rgbfmt::unpack_into(src, &mut sc.lr, &mut sc.alpha.lr16)?;
                if src.format.has_alpha() {
                    sc.alpha.upscale16(src.width, src.height, s);
                }
                Ok(())
            })?;
            let alpha = &sc.alpha.hr16[..];
            self.upscale_with(&sc.lr, opts, &mut sc.maps, &mut |src, r| {
                rgbfmt::pack_rect(src, r, alpha, dst)
            })
        })
    }

    fn process_frame_with(
        &self,
        src: &FrameRef,
        dst: &mut FrameMut,
        opts: &Options,
        sc: &mut Scratch,
    ) -> Result<Stats> {
        let s = self.scale();
        // The frame copies run on this engine's threads too (they are parallel by rows).
        let has_alpha = self
            .pool
            .install(|| frame::unpack_into(src, &mut sc.lr, &mut sc.alpha.lr))?;
        if has_alpha {
            self.pool
                .install(|| sc.alpha.upscale(src.width, src.height, s));
        }
        let alpha = has_alpha.then_some(&sc.alpha.hr[..]);
        self.upscale_with(&sc.lr, opts, &mut sc.maps, &mut |src, r| {
            frame::pack_rect(src, r, alpha, dst)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Engines asking for the same number of threads share one pool, which ends with the last
    /// of them; engines on a shared pool, run at once from several threads, give what each
    /// gives alone.
    #[test]
    fn engines_share_a_pool_per_thread_count() {
        let fp = builtin::find(2, "fp32").unwrap().load().unwrap();
        let q = builtin::find(2, "w4a4").unwrap().load().unwrap();
        // 5 threads: no other test asks for that many.
        let (a, b) = (Engine::new(&fp, 5).unwrap(), Engine::new(&q, 5).unwrap());
        let c = Engine::new(&q, 6).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a.pool, &b.pool));
        assert!(!std::sync::Arc::ptr_eq(&a.pool, &c.pool));
        assert_eq!(a.pool.current_num_threads(), 5);
        let weak = std::sync::Arc::downgrade(&a.pool);
        let imgs: Vec<Image> = (0..3).map(|k| random::test_image(40, 24, k)).collect();
        let engines = [&a, &b, &c];
        let alone: Vec<Vec<Image>> = engines
            .iter()
            .map(|e| {
                imgs.iter()
                    .map(|i| e.upscale(i, &Options::default()).unwrap().0)
                    .collect()
            })
            .collect();
        let together: Vec<Vec<Image>> = std::thread::scope(|s| {
            let runs: Vec<_> = engines
                .into_iter()
                .map(|e| {
                    let imgs = &imgs;
                    s.spawn(move || {
                        (0..4)
                            .flat_map(|_| imgs.iter())
                            .map(|i| e.upscale(i, &Options::default()).unwrap().0)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (one, all) in alone.iter().zip(&together) {
            for (k, got) in all.iter().enumerate() {
                assert!(got == &one[k % 3], "frame {k}");
            }
        }
        drop((a, b, c));
        assert_eq!(weak.strong_count(), 0, "the pool outlived its engines");
    }
}
