//! Allocation per frame in steady state: the element's CPU path (`Engine::process_frame`) on
//! the built-in quantized models, counted by a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use gstadabm::engine::builtin::MODELS;
use gstadabm::engine::frame::{FrameMut, FrameRef, PixelLayout};
use gstadabm::engine::{Engine, Options};

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

fn rgb(w: usize, h: usize, seed: usize) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| ((i * 7 + seed * 13 + (i / (w * 3)) * 5) % 251) as u8)
        .collect()
}

/// The element's per-frame call on packed RGB.
fn process(engine: &Engine, src: &[u8], w: usize, h: usize) -> Vec<u8> {
    let s = engine.scale();
    let mut dst = vec![0u8; w * s * h * s * 3];
    let f = FrameRef {
        data: src,
        stride: w * 3,
        width: w,
        height: h,
        layout: PixelLayout::Rgb,
    };
    let mut d = FrameMut {
        data: &mut dst,
        stride: w * s * 3,
        width: w * s,
        height: h * s,
        layout: PixelLayout::Rgb,
    };
    engine
        .process_frame(&f, &mut d, &Options::default())
        .unwrap();
    dst
}

/// Once a frame size has been seen, the element's path (unpack, complexity, the fused integer
/// network, paste, pack) allocates no frame-sized memory: only a few small bookkeeping values
/// (bit plan, stats), whatever the frame size. And the reused buffers change nothing: every
/// frame equals a fresh engine's output, across a change of size and back.
#[test]
fn steady_state_frames_allocate_no_frame_buffers() {
    for b in MODELS.iter().filter(|b| b.precision != "fp32") {
        let model = b.load().unwrap();
        let engine = Engine::new(&model, 2).unwrap();
        let sizes = [(96, 64), (61, 37), (96, 64)];
        for (k, &(w, h)) in sizes.iter().enumerate() {
            let src = rgb(w, h, k);
            let fresh = process(&Engine::new(&model, 2).unwrap(), &src, w, h);
            assert_eq!(process(&engine, &src, w, h), fresh, "{}: {w}x{h}", b.name);
            // Warm-up: each worker thread sizes its own row buffers the first time it runs a
            // kind of work, which takes a few frames.
            for _ in 0..3 {
                process(&engine, &src, w, h);
            }
            // The same frame again: nothing allocated but bookkeeping. (A frame whose bits
            // take a kernel path not taken before may still size that path's buffers once.)
            reset();
            let got = process(&engine, &src, w, h);
            let (calls, bytes) = (CALLS.load(Relaxed), BYTES.load(Relaxed));
            // The output buffer is the test's own: w·s·h·s·3 bytes.
            let bytes = bytes - got.len();
            eprintln!("{} {w}x{h}: {calls} allocations, {bytes} bytes", b.name);
            assert!(
                bytes <= 4096 && calls <= 16,
                "{} {w}x{h}: a frame allocated {calls} times, {bytes} bytes",
                b.name
            );
            assert_eq!(got, fresh, "{}: {w}x{h}, second frame", b.name);
            // Other content at the same size (other bits, maybe): still a fresh engine's output.
            let src = rgb(w, h, k + 10);
            let got = process(&engine, &src, w, h);
            let fresh = process(&Engine::new(&model, 2).unwrap(), &src, w, h);
            assert_eq!(got, fresh, "{}: {w}x{h}, second frame", b.name);
        }
    }
}
