//! Allocation per frame in steady state: the element's CPU paths (`Engine::process_frame`,
//! `process_yuv_frame`, `process_rgb_frame`) on the built-in models, counted by a global
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use gstadabm::engine::builtin::MODELS;
use gstadabm::engine::frame::{FrameMut, FrameRef, PixelLayout};
use gstadabm::engine::random::quantize_on_synthetic;
use gstadabm::engine::rgbfmt::{RgbFormat, RgbMut, RgbRef};
use gstadabm::engine::yuv::{self, YuvLayout};
use gstadabm::engine::{Engine, Model, Options, QuantMode};

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size(), Relaxed);
        LARGEST.fetch_max(l.size(), Relaxed);
        // SAFETY: the caller's contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size(), Relaxed);
        LARGEST.fetch_max(l.size(), Relaxed);
        // SAFETY: the caller's contract.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        CALLS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new, Relaxed);
        LARGEST.fetch_max(new, Relaxed);
        // SAFETY: the caller's contract.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn reset() {
    CALLS.store(0, Relaxed);
    BYTES.store(0, Relaxed);
    LARGEST.store(0, Relaxed);
}

fn pixels(w: usize, h: usize, bpp: usize, seed: usize) -> Vec<u8> {
    (0..w * h * bpp)
        .map(|i| ((i * 7 + seed * 13 + (i / (w * bpp)) * 5) % 251) as u8)
        .collect()
}

/// The element's per-frame call on a packed frame of `layout`.
fn process(engine: &Engine, src: &[u8], w: usize, h: usize, layout: PixelLayout) -> Vec<u8> {
    let (s, bpp) = (engine.scale(), layout.bytes_per_pixel());
    let mut dst = vec![0u8; w * s * h * s * bpp];
    let f = FrameRef {
        data: src,
        stride: w * bpp,
        width: w,
        height: h,
        layout,
    };
    let mut d = FrameMut {
        data: &mut dst,
        stride: w * s * bpp,
        width: w * s,
        height: h * s,
        layout,
    };
    engine
        .process_frame(&f, &mut d, &Options::default())
        .unwrap();
    dst
}

/// Once a frame size has been seen, the element's path (unpack, complexity, the network,
/// paste, pack) allocates no frame-sized memory: only a few small bookkeeping values (bit
/// plan, stats), whatever the frame size — on every kind of model the element runs: the fused
/// integer network of the fq built-ins, the f32 engine of the fp32 built-ins (the element's
/// default) and the integer engine with f32 head and tail of non-fq models. And the reused
/// buffers change nothing: every frame equals a fresh engine's output, across a change of
/// size and back.
#[test]
fn steady_state_frames_allocate_no_frame_buffers() {
    let x2 = |b: &gstadabm::engine::builtin::Builtin| b.scale == 2 && b.precision == "w4a4";
    let mut models: Vec<(String, Model, bool)> = MODELS
        .iter()
        .map(|b| (b.name.to_string(), b.load().unwrap(), x2(b)))
        .collect();
    // A non-fq AdaBM model (no built-in is one): the built-in x2 fp32 weights, quantized.
    let fp = MODELS
        .iter()
        .find(|b| b.scale == 2 && b.precision == "fp32")
        .unwrap()
        .load()
        .unwrap();
    let nonfq = quantize_on_synthetic(&fp, QuantMode::NonFq, 4, 4, 3).unwrap();
    models.push(("x2 non-fq w4a4".into(), nonfq, false));
    for (name, model, more_layouts) in &models {
        let engine = Engine::new(model, 2).unwrap();
        // Every model on RGB across a change of size and back; one of them on a 4-byte
        // layout and on one with alpha (its plane is upscaled too).
        let mut cases = vec![
            (96, 64, PixelLayout::Rgb),
            (61, 37, PixelLayout::Rgb),
            (96, 64, PixelLayout::Rgb),
        ];
        if *more_layouts {
            cases.extend([(61, 37, PixelLayout::Bgrx), (61, 37, PixelLayout::Rgba)]);
        }
        for (k, &(w, h, layout)) in cases.iter().enumerate() {
            let name = format!("{name} {w}x{h} {layout:?}");
            let bpp = layout.bytes_per_pixel();
            let src = pixels(w, h, bpp, k);
            let fresh = process(&Engine::new(model, 2).unwrap(), &src, w, h, layout);
            assert_eq!(process(&engine, &src, w, h, layout), fresh, "{name}");
            // Warm-up: each worker thread sizes its own row buffers the first time it runs a
            // kind of work, which takes a few frames.
            for _ in 0..3 {
                process(&engine, &src, w, h, layout);
            }
            // The same frame again: nothing allocated but bookkeeping. (A frame whose bits
            // take a kernel path not taken before may still size that path's buffers once.)
            let (calls, bytes, got) = quietest(|| process(&engine, &src, w, h, layout));
            eprintln!(
                "{name}: {calls} allocations, {bytes} bytes (largest {})",
                LARGEST.load(Relaxed)
            );
            assert!(
                bytes <= 4096 && calls <= 16,
                "{name}: a frame allocated {calls} times, {bytes} bytes"
            );
            assert_eq!(got, fresh, "{name}: second frame");
            // Other content at the same size (other bits, maybe): still a fresh engine's output.
            let src = pixels(w, h, bpp, k + 10);
            let got = process(&engine, &src, w, h, layout);
            let fresh = process(&Engine::new(model, 2).unwrap(), &src, w, h, layout);
            assert_eq!(got, fresh, "{name}: other content");
        }
    }
    // The YUV path (`Engine::process_yuv_frame`), in the same test: the allocation counter
    // is global, so a second test running beside this one would disturb its counts.
    let (name, model, _) = &models.iter().find(|m| m.2).unwrap();
    let engine = Engine::new(model, 2).unwrap();
    for (w, h, layout) in [
        (61, 37, YuvLayout::I420),
        (96, 64, YuvLayout::Nv12),
        (61, 37, YuvLayout::I420),
        (61, 37, YuvLayout::P010),
        (40, 22, YuvLayout::Y444p10),
        (40, 22, YuvLayout::Gray8),
        (41, 22, YuvLayout::Yuy2),
        (41, 22, YuvLayout::V210),
        (41, 22, YuvLayout::Ayuv),
        (41, 22, YuvLayout::A420p10),
        (41, 22, YuvLayout::Y410),
    ] {
        let name = format!("{name} {w}x{h} {layout:?}");
        let src = pixels(w, h * 6, 1, w);
        let fresh = process_yuv(&Engine::new(model, 2).unwrap(), &src, w, h, layout);
        for _ in 0..3 {
            process_yuv(&engine, &src, w, h, layout);
        }
        let (calls, bytes, got) = quietest(|| process_yuv(&engine, &src, w, h, layout));
        eprintln!("{name}: {calls} allocations, {bytes} bytes");
        assert!(
            bytes <= 4096 && calls <= 16,
            "{name}: a frame allocated {calls} times, {bytes} bytes"
        );
        assert_eq!(got, fresh, "{name}");
    }
    // The RGB formats' path (`Engine::process_rgb_frame`: 64-bit RGBA, planar RGB with a
    // 10-bit alpha plane, packed 10-bit RGB).
    for (w, h, format) in [
        (61, 37, RgbFormat::ARGB64_LE),
        (40, 22, RgbFormat::GBRA_10LE),
        (33, 20, RgbFormat::R210),
        (61, 37, RgbFormat::ARGB64_LE),
    ] {
        let name = format!("{name} {w}x{h} {format:?}");
        let src = pixels(w, h, format.step * format.planes, w);
        let fresh = process_rgb(&Engine::new(model, 2).unwrap(), &src, w, h, format);
        for _ in 0..3 {
            process_rgb(&engine, &src, w, h, format);
        }
        let (calls, bytes, got) = quietest(|| process_rgb(&engine, &src, w, h, format));
        eprintln!("{name}: {calls} allocations, {bytes} bytes");
        assert!(
            bytes <= 4096 && calls <= 16,
            "{name}: a frame allocated {calls} times, {bytes} bytes"
        );
        assert_eq!(got, fresh, "{name}");
    }
}

/// The element's per-frame call on an [`RgbFormat`] frame (planes one after another, no
/// row padding).
fn process_rgb(engine: &Engine, src: &[u8], w: usize, h: usize, format: RgbFormat) -> Vec<u8> {
    let s = engine.scale();
    let (row, out_row) = (w * format.step, w * s * format.step);
    let mut dst = vec![0u8; out_row * h * s * format.planes];
    let f = RgbRef {
        planes: [0, 1, 2, 3].map(|p| src.get(p * row * h..).unwrap_or_default()),
        strides: [row; 4],
        width: w,
        height: h,
        format,
    };
    let mut planes = dst.chunks_mut(out_row * h * s);
    let mut d = RgbMut {
        planes: [(); 4].map(|_| planes.next().unwrap_or_default()),
        strides: [out_row; 4],
        width: w * s,
        height: h * s,
        format,
    };
    engine
        .process_rgb_frame(&f, &mut d, &Options::default())
        .unwrap();
    dst
}

/// Allocation calls and bytes of the quietest of 3 frames made by `frame` (less the output
/// buffer, which is the test's own), and its output. Which rayon worker runs which part of a
/// frame changes from frame to frame, so a worker may meet a kind of work — and size its own
/// row buffer for it, once — only after the warm-up; an allocation made on every frame shows
/// in all three.
fn quietest(mut frame: impl FnMut() -> Vec<u8>) -> (usize, usize, Vec<u8>) {
    (0..3)
        .map(|_| {
            reset();
            let got = frame();
            let (calls, bytes) = (CALLS.load(Relaxed), BYTES.load(Relaxed));
            (calls, bytes - got.len(), got)
        })
        .min_by_key(|&(calls, bytes, _)| (bytes, calls))
        .unwrap()
}

/// The element's per-frame call on a YUV frame: `src` holds the planes one after the other
/// (no row padding); returns the output planes likewise.
fn process_yuv(engine: &Engine, src: &[u8], w: usize, h: usize, layout: YuvLayout) -> Vec<u8> {
    let planes = |w: usize, h: usize| -> ([usize; 4], [usize; 4]) {
        let sizes = layout.plane_sizes(w, h);
        (
            sizes.map(|(row, _)| row),
            sizes.map(|(row, rows)| row * rows),
        )
    };
    let (is, il) = planes(w, h);
    let s = engine.scale();
    let (os, ol) = planes(w * s, h * s);
    let mut dst = vec![0u8; ol.iter().sum()];
    let (a, rest) = src.split_at(il[0]);
    let (b, rest) = rest.split_at(il[1]);
    let (c, rest) = rest.split_at(il[2]);
    let d = &rest[..il[3]];
    let (matrix, siting) = (
        yuv::YuvMatrix::new(yuv::YuvMatrix::BT709, false),
        yuv::ChromaSiting {
            h_cosited: true,
            v_cosited: false,
        },
    );
    let f = yuv::YuvRef {
        planes: [a, b, c, d],
        strides: is,
        width: w,
        height: h,
        layout,
        matrix,
        siting,
    };
    {
        let (a, rest) = dst.split_at_mut(ol[0]);
        let (b, rest) = rest.split_at_mut(ol[1]);
        let (c, e) = rest.split_at_mut(ol[2]);
        let mut d = yuv::YuvMut {
            planes: [a, b, c, e],
            strides: os,
            width: w * s,
            height: h * s,
            layout,
            matrix,
            siting,
        };
        engine
            .process_yuv_frame(&f, &mut d, &Options::default())
            .unwrap();
    }
    dst
}
