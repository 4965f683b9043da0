//! The element through gst_check::Harness and small pipelines: caps in every format, odd and
//! 1x1 sizes, padded strides, renegotiation, live properties, stats and errors on the bus.

mod common;

use std::path::PathBuf;
use std::sync::Once;

use common::*;
use gst::prelude::*;
use gst_check::Harness;
use gstadabm::engine::rgbfmt::{RgbFormat, RgbMut, RgbRef};
use gstadabm::engine::{Engine, FrameMut, FrameRef, Options, PixelLayout, QuantMode};

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstadabm::plugin_register_static().unwrap();
    });
}

fn model_file(dir: &tempfile::TempDir, model: &gstadabm::engine::Model, name: &str) -> PathBuf {
    let p = dir.path().join(name);
    model.save(&p).unwrap();
    p
}

/// The built-in model for `scale` and `precision`.
fn builtin(scale: u32, precision: &str) -> gstadabm::engine::Model {
    gstadabm::engine::builtin::find(scale, precision)
        .unwrap()
        .load()
        .unwrap()
}

const FORMATS: [(&str, PixelLayout); 10] = [
    ("RGB", PixelLayout::Rgb),
    ("BGR", PixelLayout::Bgr),
    ("RGBx", PixelLayout::Rgbx),
    ("BGRx", PixelLayout::Bgrx),
    ("xRGB", PixelLayout::Xrgb),
    ("xBGR", PixelLayout::Xbgr),
    ("RGBA", PixelLayout::Rgba),
    ("BGRA", PixelLayout::Bgra),
    ("ARGB", PixelLayout::Argb),
    ("ABGR", PixelLayout::Abgr),
];

fn harness(model: &std::path::Path) -> Harness {
    let el = gst::ElementFactory::make("adabmupscale")
        .property("model-location", model.to_str().unwrap())
        .property_from_str("backend", "cpu")
        .build()
        .unwrap();
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.play();
    h
}

/// A harness on a small quantized x2 model (file in `dir`) whose element posts its
/// `adabm-stats` to the returned bus.
fn stats_harness(dir: &tempfile::TempDir) -> (Harness, gst::Element, gst::Bus) {
    let path = model_file(dir, &small_quant(2, QuantMode::Fq, 6), "q.safetensors");
    let h = harness(&path);
    let el = h.element().unwrap();
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    el.set_property("post-stats", true);
    (h, el, bus)
}

/// Pushes one frame of `fmt` at w x h and returns (output caps, output bytes, input bytes, strides).
fn push_frame(
    h: &mut Harness,
    fmt: &str,
    w: u32,
    hh: u32,
    seed: u8,
) -> (gst_video::VideoInfo, Vec<u8>, gst_video::VideoInfo, Vec<u8>) {
    let caps = format!("video/x-raw,format={fmt},width={w},height={hh},framerate=25/1");
    h.set_src_caps_str(&caps);
    let info = gst_video::VideoInfo::from_caps(&caps.parse::<gst::Caps>().unwrap()).unwrap();
    let data: Vec<u8> = (0..info.size())
        .map(|i| ((i * 31 + seed as usize * 7) % 251) as u8)
        .collect();
    let out = h
        .push_and_pull(gst::Buffer::from_slice(data.clone()))
        .unwrap();
    let out_caps = h.sinkpad().unwrap().current_caps().unwrap();
    let out_info = gst_video::VideoInfo::from_caps(&out_caps).unwrap();
    (out_info, out.map_readable().unwrap().to_vec(), info, data)
}

/// The engine's output for the same packed input, as the element must produce it.
fn expected(
    model: &gstadabm::engine::Model,
    layout: PixelLayout,
    inp: &gst_video::VideoInfo,
    data: &[u8],
    out: &gst_video::VideoInfo,
) -> Vec<u8> {
    let engine = Engine::new(model, 1).unwrap();
    let mut buf = vec![0u8; out.size()];
    let src = FrameRef {
        data,
        stride: inp.stride()[0] as usize,
        width: inp.width() as usize,
        height: inp.height() as usize,
        layout,
    };
    let mut dst = FrameMut {
        data: &mut buf,
        stride: out.stride()[0] as usize,
        width: out.width() as usize,
        height: out.height() as usize,
        layout,
    };
    engine
        .process_frame(&src, &mut dst, &Options::default())
        .unwrap();
    buf
}

/// The bytes of the visible pixels, row by row (row padding is undefined).
fn visible(bytes: &[u8], info: &gst_video::VideoInfo) -> Vec<u8> {
    let (stride, row) = (
        info.stride()[0] as usize,
        info.width() as usize * info.comp_pstride(0) as usize,
    );
    (0..info.height() as usize)
        .flat_map(|y| bytes[y * stride..y * stride + row].to_vec())
        .collect()
}

#[test]
fn every_format_upscales_and_matches_the_engine() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let model = small_quant(2, QuantMode::Fq, 1);
    let path = model_file(&dir, &model, "x2.safetensors");
    for (fmt, layout) in FORMATS {
        let mut h = harness(&path);
        let (out_info, out, in_info, data) = push_frame(&mut h, fmt, 7, 5, 1);
        assert_eq!((out_info.width(), out_info.height()), (14, 10), "{fmt}");
        assert_eq!(out_info.format(), in_info.format(), "{fmt}");
        assert_eq!(out_info.fps(), gst::Fraction::new(25, 1));
        let want = expected(&model, layout, &in_info, &data, &out_info);
        assert_eq!(visible(&out, &out_info), visible(&want, &out_info), "{fmt}");
    }
}

/// The RGB formats beyond 8-bit packed, GStreamer's name and ours.
const RGB_FORMATS: [(&str, RgbFormat); 24] = [
    ("ARGB64", RgbFormat::ARGB64),
    ("ARGB64_LE", RgbFormat::ARGB64_LE),
    ("ARGB64_BE", RgbFormat::ARGB64_BE),
    ("RGBA64_LE", RgbFormat::RGBA64_LE),
    ("RGBA64_BE", RgbFormat::RGBA64_BE),
    ("BGRA64_LE", RgbFormat::BGRA64_LE),
    ("BGRA64_BE", RgbFormat::BGRA64_BE),
    ("ABGR64_LE", RgbFormat::ABGR64_LE),
    ("ABGR64_BE", RgbFormat::ABGR64_BE),
    ("BGR10A2_LE", RgbFormat::BGR10A2_LE),
    ("RGB10A2_LE", RgbFormat::RGB10A2_LE),
    ("r210", RgbFormat::R210),
    ("GBR", RgbFormat::GBR),
    ("GBRA", RgbFormat::GBRA),
    ("RGBP", RgbFormat::RGBP),
    ("BGRP", RgbFormat::BGRP),
    ("GBR_10LE", RgbFormat::GBR_10LE),
    ("GBR_10BE", RgbFormat::GBR_10BE),
    ("GBRA_10LE", RgbFormat::GBRA_10LE),
    ("GBRA_10BE", RgbFormat::GBRA_10BE),
    ("GBR_12LE", RgbFormat::GBR_12LE),
    ("GBR_12BE", RgbFormat::GBR_12BE),
    ("GBRA_12LE", RgbFormat::GBRA_12LE),
    ("GBRA_12BE", RgbFormat::GBRA_12BE),
];

/// Field `f` of `n` (1: the whole frame) of an RGB frame's planes in `data` laid out as
/// `info` says.
fn rgb_ref<'a>(
    data: &'a [u8],
    info: &gst_video::VideoInfo,
    format: RgbFormat,
    (f, n): (usize, usize),
) -> RgbRef<'a> {
    let st = info.stride();
    RgbRef {
        planes: [0, 1, 2, 3].map(|p| {
            if p < format.planes {
                &data[info.offset()[p] + f * st[p] as usize..]
            } else {
                &[][..]
            }
        }),
        strides: [0, 1, 2, 3].map(|p| st.get(p).map_or(0, |&v| n * v as usize)),
        width: info.width() as usize,
        height: info.height() as usize / n,
        format,
    }
}

/// [`rgb_ref`] of a mutable frame: its planes split at their offsets.
fn rgb_mut<'a>(
    data: &'a mut [u8],
    info: &gst_video::VideoInfo,
    format: RgbFormat,
    (f, n): (usize, usize),
) -> RgbMut<'a> {
    let st = info.stride();
    let mut planes: [&mut [u8]; 4] = Default::default();
    let mut rest = data;
    for p in (0..format.planes).rev() {
        let (head, tail) = rest.split_at_mut(info.offset()[p]);
        planes[p] = &mut tail[f * st[p] as usize..];
        rest = head;
    }
    RgbMut {
        planes,
        strides: [0, 1, 2, 3].map(|p| st.get(p).map_or(0, |&v| n * v as usize)),
        width: info.width() as usize,
        height: info.height() as usize / n,
        format,
    }
}

/// The visible bytes of every plane of an RGB frame.
fn rgb_visible(bytes: &[u8], info: &gst_video::VideoInfo, format: RgbFormat) -> Vec<u8> {
    let row = info.width() as usize * format.step;
    (0..format.planes)
        .flat_map(|p| {
            let (off, stride) = (info.offset()[p], info.stride()[p] as usize);
            (0..info.height() as usize).flat_map(move |y| bytes[off + y * stride..][..row].to_vec())
        })
        .collect()
}

/// The RGB formats beyond 8-bit packed (64-bit RGBA: `pngdec`'s ARGB64 for 16-bit PNGs;
/// 10-bit packed RGB; planar GBR from FFmpeg's decoders, RGBP, BGRP) go through without
/// `videoconvert`, at their own depth both ways: the output is the engine's for the same
/// frame, alpha included, odd sizes and interlaced frames field by field; and the 16 bits
/// matter — the same frame through RGBA (8 bits) differs below one 8-bit level.
#[test]
fn rgb_formats_match_the_engine_at_their_depth() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let model = small_fp(2, 4);
    let path = model_file(&dir, &model, "x2.safetensors");
    let sizes = [
        (7, 5),
        (6, 4),
        (5, 3),
        (1, 1),
        (9, 2),
        (3, 7),
        (4, 4),
        (8, 1),
        (2, 6),
    ];
    let engine = Engine::new(&model, 1).unwrap();
    for (k, (fmt, format)) in RGB_FORMATS.into_iter().enumerate() {
        let (w, hh) = sizes[k % sizes.len()];
        // Every third format with an even height interlaced.
        let interlaced = k % 3 == 1 && hh % 2 == 0;
        let extra = if interlaced {
            ",interlace-mode=interleaved"
        } else {
            ""
        };
        let mut h = harness(&path);
        let caps = format!("video/x-raw,format={fmt},width={w},height={hh},framerate=25/1{extra}");
        h.set_src_caps_str(&caps);
        let info = gst_video::VideoInfo::from_caps(&caps.parse::<gst::Caps>().unwrap()).unwrap();
        let mut rng = gstadabm::engine::random::Rng::new(k as u64 + 40);
        let data = rng.bytes(info.size());
        let out = h
            .push_and_pull(gst::Buffer::from_slice(data.clone()))
            .unwrap();
        let out = out.map_readable().unwrap().to_vec();
        let out_info =
            gst_video::VideoInfo::from_caps(&h.sinkpad().unwrap().current_caps().unwrap()).unwrap();
        assert_eq!(out_info.format(), info.format(), "{fmt}");
        assert_eq!((out_info.width(), out_info.height()), (2 * w, 2 * hh));
        let mut want = vec![0u8; out_info.size()];
        let n = if interlaced { 2 } else { 1 };
        for f in 0..n {
            let src = rgb_ref(&data, &info, format, (f, n));
            let mut dst = rgb_mut(&mut want, &out_info, format, (f, n));
            engine
                .process_rgb_frame(&src, &mut dst, &Options::default())
                .unwrap();
        }
        assert!(
            rgb_visible(&out, &out_info, format) == rgb_visible(&want, &out_info, format),
            "{fmt} {w}x{hh}{extra}"
        );
    }
    // 16 bits against 8: 8-bit levels lifted to 16 bits (`v · 257`) are the same input to
    // the network, and the 16-bit output is the 8-bit one with its fraction kept: within half
    // an 8-bit level (and its own rounding) of it, and mostly between the 8-bit levels.
    let (w, hh) = (16u32, 8u32);
    let ramp16: Vec<u8> = (0..w * hh)
        .flat_map(|i| {
            let v = (i * 2 % 256) as u16 * 257;
            [65535u16, v, v / 257 / 2 * 257, 65535 - v]
                .into_iter()
                .flat_map(|x| x.to_ne_bytes())
        })
        .collect();
    let ramp8: Vec<u8> = ramp16
        .chunks_exact(2)
        .map(|c| (u16::from_ne_bytes([c[0], c[1]]) / 257) as u8)
        .collect();
    let mut h16 = harness(&path);
    h16.set_src_caps_str(&format!(
        "video/x-raw,format=ARGB64,width={w},height={hh},framerate=25/1"
    ));
    let o16 = h16.push_and_pull(gst::Buffer::from_slice(ramp16)).unwrap();
    let o16: Vec<u16> = o16
        .map_readable()
        .unwrap()
        .chunks_exact(2)
        .map(|c| u16::from_ne_bytes([c[0], c[1]]))
        .collect();
    let mut h8 = harness(&path);
    h8.set_src_caps_str(&format!(
        "video/x-raw,format=ARGB,width={w},height={hh},framerate=25/1"
    ));
    let o8 = h8.push_and_pull(gst::Buffer::from_slice(ramp8)).unwrap();
    let o8 = o8.map_readable().unwrap().to_vec();
    assert_eq!(o16.len(), o8.len());
    let worst = o16
        .iter()
        .zip(&o8)
        .map(|(&a, &b)| (a as f64 / 257.0 - b as f64).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 0.5 + 1e-3,
        "16-bit and 8-bit outputs differ by {worst} levels"
    );
    let off_level = o16.iter().filter(|&&v| v % 257 != 0).count();
    assert!(
        off_level > o16.len() / 2,
        "{off_level} of {} samples off the 8-bit levels",
        o16.len()
    );
}

/// Against `videoconvert`: an RGBA picture converted to each RGB format, upscaled there and
/// converted back is the picture upscaled as RGBA — exactly for the 8-bit planar formats
/// (the conversions only move bytes), within the 10- and 12-bit formats' rounding otherwise
/// — and not another picture (channels swapped, planes in another order, the wrong byte
/// order or bits).
#[test]
fn rgb_formats_agree_with_videoconvert_around_rgba() {
    init();
    let frame = |desc: &str| -> Vec<u8> {
        let s = common::run_samples(desc);
        s[0].buffer().unwrap().map_readable().unwrap().to_vec()
    };
    for pattern in ["smpte", "colors"] {
        // 62 px: RGBA rows of 248 bytes, no padding at 2x either.
        let src = format!(
            "videotestsrc num-buffers=1 pattern={pattern} ! video/x-raw,width=62,height=40 ! \
             alpha alpha=0.6 ! videoconvert ! video/x-raw,format=RGBA"
        );
        let direct = frame(&format!(
            "{src} ! adabmupscale backend=cpu ! appsink name=out"
        ));
        for (fmt, format) in RGB_FORMATS {
            let around = frame(&format!(
                "{src} ! videoconvert ! video/x-raw,format={fmt} ! adabmupscale backend=cpu ! \
                 videoconvert dither=none ! video/x-raw,format=RGBA ! appsink name=out"
            ));
            assert_eq!(around.len(), direct.len(), "{fmt}");
            let (mut worst, mut sum, mut n) = (0u8, 0u64, 0u64);
            let mut alpha_worst = 0u8;
            for (a, b) in around.chunks_exact(4).zip(direct.chunks_exact(4)) {
                for c in 0..3 {
                    let d = a[c].abs_diff(b[c]);
                    worst = worst.max(d);
                    sum += d as u64;
                    n += 1;
                }
                if format.has_alpha() {
                    alpha_worst = alpha_worst.max(a[3].abs_diff(b[3]));
                } else {
                    assert_eq!(a[3], 255, "{fmt}: no alpha reads as opaque");
                }
            }
            let mean = sum as f64 / n as f64;
            eprintln!(
                "{pattern} {fmt}: RGB worst {worst}, mean {mean:.3}; alpha worst {alpha_worst}"
            );
            if format.depth == 8 {
                assert_eq!(
                    worst, 0,
                    "{pattern} {fmt}: 8-bit planar RGB differs from RGBA"
                );
                assert_eq!(alpha_worst, 0, "{pattern} {fmt}");
            } else {
                assert!(
                    worst <= 2 && mean <= 0.75,
                    "{pattern} {fmt}: worst {worst}, mean {mean}"
                );
            }
            // 2-bit alpha: 0.6 · 255 = 153 goes in as 2 of 3 and videoconvert reads that back
            // as 128 (GStreamer 1.22 widens 2 bits by shifting); within one 2-bit level.
            let alpha_limit = match format.alpha_depth {
                2 => 64,
                _ => 1,
            };
            assert!(
                alpha_worst <= alpha_limit,
                "{pattern} {fmt}: alpha off by {alpha_worst}"
            );
        }
    }
}

#[test]
fn odd_sizes_one_pixel_and_padded_strides() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let model = small_fp(3, 2);
    let path = model_file(&dir, &model, "x3.safetensors");
    for (w, hh) in [(1, 1), (1, 7), (9, 1), (13, 11)] {
        let mut h = harness(&path);
        // RGB rows are padded to 4 bytes by GStreamer: 13 px x 3 = 39 -> stride 40.
        let (out_info, out, in_info, data) = push_frame(&mut h, "RGB", w, hh, 3);
        assert_eq!((out_info.width(), out_info.height()), (3 * w, 3 * hh));
        if w == 13 {
            assert_eq!(in_info.stride()[0], 40);
            assert_eq!(out_info.stride()[0], 120);
        }
        let want = expected(&model, PixelLayout::Rgb, &in_info, &data, &out_info);
        assert_eq!(
            visible(&out, &out_info),
            visible(&want, &out_info),
            "{w}x{hh}"
        );
    }
}

#[test]
fn renegotiates_mid_stream() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, &small_fp(2, 3), "x2.safetensors");
    let mut h = harness(&path);
    let (a, ..) = push_frame(&mut h, "RGBx", 8, 6, 1);
    let (b, ..) = push_frame(&mut h, "BGR", 5, 3, 2);
    let (c, ..) = push_frame(&mut h, "RGBA", 4, 4, 3);
    assert_eq!(
        (a.width(), a.height(), a.format()),
        (16, 12, gst_video::VideoFormat::Rgbx)
    );
    assert_eq!(
        (b.width(), b.height(), b.format()),
        (10, 6, gst_video::VideoFormat::Bgr)
    );
    assert_eq!(
        (c.width(), c.height(), c.format()),
        (8, 8, gst_video::VideoFormat::Rgba)
    );
}

#[test]
fn caps_keep_framerate_and_par_and_refuse_other_formats() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, &small_fp(2, 3), "x2.safetensors");
    let h = harness(&path);
    let el = h.element().unwrap();
    let sink = el.static_pad("sink").unwrap();
    let src = el.static_pad("src").unwrap();
    let q = src.query_caps(None);
    assert!(!q.is_empty());
    let caps: gst::Caps =
        "video/x-raw,format=RGB,width=10,height=6,framerate=30000/1001,pixel-aspect-ratio=4/3"
            .parse()
            .unwrap();
    let mut query = gst::query::AcceptCaps::new(&caps);
    assert!(sink.query(&mut query));
    assert!(query.result());
    let rgb16: gst::Caps = "video/x-raw,format=RGB16,width=10,height=6"
        .parse()
        .unwrap();
    let mut query = gst::query::AcceptCaps::new(&rgb16);
    sink.query(&mut query);
    assert!(!query.result(), "RGB16 must be refused");
    // Transform caps through the element: framerate and PAR are kept, size doubled.
    let peer_caps = el.static_pad("sink").unwrap().query_caps(Some(
        &"video/x-raw,format=RGB,width=20,height=12".parse().unwrap(),
    ));
    assert!(!peer_caps.is_empty());
    let mut h2 = harness(&path);
    let size = gst_video::VideoInfo::from_caps(&caps).unwrap().size();
    h2.set_src_caps(caps);
    let out = h2
        .push_and_pull(gst::Buffer::from_slice(vec![0u8; size]))
        .unwrap();
    assert_eq!(out.size(), 20 * 3 * 12);
    let oc = h2.sinkpad().unwrap().current_caps().unwrap();
    let s = oc.structure(0).unwrap();
    assert_eq!(
        s.get::<gst::Fraction>("framerate").unwrap(),
        gst::Fraction::new(30000, 1001)
    );
    assert_eq!(
        s.get::<gst::Fraction>("pixel-aspect-ratio").unwrap(),
        gst::Fraction::new(4, 3)
    );
}

/// Raw frames from a file, as `filesrc ! video/x-raw,... ! adabmupscale` (or `fdsrc` from a
/// pipe) gives them: the capsfilter's caps name no interlace mode and must stay fixed through
/// the element, and a truncated last frame is dropped with a warning, not the stream ended
/// with an error — every whole frame before it comes out.
#[test]
fn raw_frames_from_a_file_and_a_truncated_last_one() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let model = small_fp(2, 3);
    let path = model_file(&dir, &model, "x2.safetensors");
    let (w, h) = (8u32, 6u32);
    let frame = (w * h * 3) as usize;
    let data: Vec<u8> = (0..3 * frame + frame / 2)
        .map(|i| ((i * 37) % 253) as u8)
        .collect();
    let raw = dir.path().join("frames.rgb");
    std::fs::write(&raw, &data).unwrap();
    let p = gst::parse::launch(&format!(
        "filesrc location={} blocksize={frame} ! video/x-raw,format=RGB,width={w},height={h},framerate=25/1 ! adabmupscale backend=cpu model-location={} ! appsink name=out sync=false",
        raw.display(),
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let bus = p.bus().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut outputs = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        outputs.push(sample.buffer().unwrap().map_readable().unwrap().to_vec());
    }
    let mut warnings = Vec::new();
    for m in bus.iter_timed(gst::ClockTime::ZERO) {
        match m.view() {
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(outputs.len(), 3, "the three whole frames");
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
        .build()
        .unwrap();
    let out_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, 2 * w, 2 * h)
        .build()
        .unwrap();
    for (i, out) in outputs.iter().enumerate() {
        let input = &data[i * frame..(i + 1) * frame];
        assert_eq!(
            visible(out, &out_info),
            visible(
                &expected(&model, PixelLayout::Rgb, &info, input, &out_info),
                &out_info
            ),
            "frame {i}"
        );
    }
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!(
            "Dropped a buffer of {} bytes: a 8x6 RGB frame of the negotiated caps takes {frame} bytes",
            frame / 2
        )),
        "{warnings:?}"
    );
}

/// Runs `desc` to EOS or error; returns (the error's message, element messages).
fn run_pipeline(desc: &str) -> (Option<String>, Vec<gst::Structure>) {
    init();
    let p = match gst::parse::launch(desc) {
        Ok(p) => p.downcast::<gst::Pipeline>().unwrap(),
        Err(e) => return (Some(e.to_string()), Vec::new()),
    };
    let bus = p.bus().unwrap();
    let _ = p.set_state(gst::State::Playing);
    let mut msgs = Vec::new();
    let mut error = None;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                // The message slot alone: what an application shows its user (GError's
                // message); the debug slot is for developers.
                error = Some(e.error().to_string());
                break;
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "adabm-stats") {
                    msgs.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    (error, msgs)
}

#[test]
fn posts_stats_per_frame() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_quant(2, QuantMode::Fq, 5);
    let path = model_file(&dir, &model, "q.safetensors");
    let (err, msgs) = run_pipeline(&format!(
        "videotestsrc num-buffers=4 pattern=ball ! video/x-raw,format=BGRx,width=24,height=16 ! adabmupscale post-stats=true model-location={} ! fakesink",
        path.display()
    ));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(msgs.len(), 4);
    for (i, s) in msgs.iter().enumerate() {
        assert_eq!(s.get::<u64>("frame").unwrap(), i as u64);
        assert!(s.get::<f64>("complexity").unwrap() >= 0.0);
        let fab = s.get::<f64>("fab").unwrap();
        let bits: Vec<f64> = s
            .get::<String>("layer-bits")
            .unwrap()
            .split(',')
            .map(|b| b.parse().unwrap())
            .collect();
        assert_eq!(bits.len(), 5);
        assert!((bits.iter().sum::<f64>() / 5.0 - fab).abs() < 1e-6);
        assert!(s.get::<f64>("processing-ms").unwrap() > 0.0);
        assert!([-1, 0, 1].contains(&s.get::<i32>("image-bits").unwrap()));
    }
}

#[test]
fn thresholds_change_while_playing() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let (mut h, el, bus) = stats_harness(&dir);
    let bits = |h: &mut Harness, bus: &gst::Bus| {
        push_frame(h, "RGB", 12, 10, 1);
        let m = bus.pop_filtered(&[gst::MessageType::Element]).unwrap();
        m.structure().unwrap().get::<i32>("image-bits").unwrap()
    };
    el.set_property("image-lower", 1e5f64);
    el.set_property("image-upper", 1e5f64 + 1.0);
    assert_eq!(bits(&mut h, &bus), -1);
    el.set_property("image-lower", 0.0f64);
    el.set_property("image-upper", 0.0f64);
    assert_eq!(bits(&mut h, &bus), 1);
    el.set_property("adaptive", false);
    assert_eq!(bits(&mut h, &bus), 0);
    // Crossed thresholds are a warning naming the values in force (image-lower -1 is the
    // model's, not -1).
    let model_lower = small_quant(2, QuantMode::Fq, 6).quant.unwrap().image_lower;
    assert!(model_lower > 0.5);
    el.set_property("adaptive", true);
    el.set_property("image-lower", -1.0f64);
    el.set_property("image-upper", 0.5f64);
    push_frame(&mut h, "RGB", 12, 10, 1);
    let w = bus
        .pop_filtered(&[gst::MessageType::Warning])
        .expect("a warning");
    let gst::MessageView::Warning(w) = w.view() else {
        unreachable!()
    };
    assert_eq!(
        w.error().to_string(),
        format!(
            "image-lower {model_lower} (the model's) is above image-upper 0.5: frames of complexity between them get b_I = -1"
        )
    );
}

fn expect_error(model_bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, model_bytes).unwrap();
    let (err, _) = run_pipeline(&format!(
        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=8,height=8 ! adabmupscale model-location={} ! fakesink",
        path.display()
    ));
    let err = err.unwrap_or_default();
    assert!(
        err.contains("bad.safetensors") && err.contains(needle),
        "expected '{needle}' in: {err}"
    );
}

#[test]
fn bad_model_files_reach_the_bus() {
    let good = small_quant(2, QuantMode::Fq, 1).to_bytes().unwrap();
    expect_error(&[], "empty");
    expect_error(&good[..good.len() / 3], "truncated");
    let mut nan = small_fp(2, 1);
    nan.convs[0].weight[0] = f32::NAN;
    // Model::to_bytes does not validate, so a NaN reaches the file and the loader must catch it.
    expect_error(&nan.to_bytes().unwrap(), "head.0.weight");
    let mut lu = small_quant(2, QuantMode::Fq, 1);
    let q = lu
        .quant
        .as_mut()
        .unwrap()
        .layers
        .get_mut("body.1.conv2")
        .unwrap();
    q.u = q.l;
    expect_error(&lu.to_bytes().unwrap(), "l < u");
    let missing = rewrite(
        &good,
        |n, s, d| (n != "body.0.conv2.bias").then(|| (n.into(), s, d)),
        |_| {},
    );
    expect_error(&missing, "body.0.conv2.bias");
    let wrong_shape = rewrite(
        &good,
        |n, s, d| {
            if n == "tail.1.weight" {
                Some((n.into(), vec![3, 4, 3, 3], d[..d.len() / 2].to_vec()))
            } else {
                keep(n, s, d)
            }
        },
        |_| {},
    );
    expect_error(
        &wrong_shape,
        "expected [3, 8, 3, 3] F32, found [3, 4, 3, 3] F32",
    );
}

#[test]
fn missing_model_and_scale_mismatch_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, &small_fp(4, 1), "x4.safetensors");
    let (err, _) = run_pipeline(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=8,height=8 ! adabmupscale scale=2 model-location={} ! fakesink",
        path.display()
    ));
    assert!(err.unwrap_or_default().contains("x4"));
    let (err, _) = run_pipeline(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB16,width=8,height=8 ! adabmupscale model-location={} ! fakesink",
        path.display()
    ));
    // RGB16 is not among the element's formats: the pipeline cannot link or negotiate.
    assert!(err.is_some(), "RGB16 input must be refused");
}

#[test]
fn huge_frames_are_refused_at_negotiation() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, &small_fp(2, 1), "x2.safetensors");
    let (err, _) = run_pipeline(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=9000,height=8 ! adabmupscale model-location={} ! fakesink",
        path.display()
    ));
    assert!(
        err.is_some(),
        "a 9000-wide x2 output (18000 > 16384) must not negotiate"
    );
}

/// A folder with the plugin for `GST_PLUGIN_PATH` when `gst-launch-1.0` and the plugin beside
/// the test binary are there; else None, and why (a SKIPPED line).
fn gst_launch_plugin_dir() -> Option<tempfile::TempDir> {
    let Some(dir) = common::plugin_dir() else {
        eprintln!("SKIPPED: no libgstadabm.so beside the test binary");
        return None;
    };
    if std::process::Command::new("gst-launch-1.0")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: gst-launch-1.0 not found");
        return None;
    }
    Some(dir)
}

#[test]
fn gst_launch_exits_non_zero_on_a_bad_model() {
    let Some(dir) = gst_launch_plugin_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("truncated.safetensors");
    std::fs::write(&bad, &small_fp(2, 1).to_bytes().unwrap()[..1000]).unwrap();
    let out = std::process::Command::new("gst-launch-1.0")
        .env("GST_PLUGIN_PATH", dir.path())
        .args([
            "videotestsrc",
            "num-buffers=2",
            "!",
            "video/x-raw,format=RGB,width=8,height=8",
            "!",
            "adabmupscale",
        ])
        .arg(format!("model-location={}", bad.display()))
        .args(["!", "fakesink"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "gst-launch must fail: {text}");
    assert!(
        text.contains("truncated.safetensors") && text.contains("not a valid safetensors"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

/// A quantized model on the scalar integer kernels (here forced by `ADABM_CPU_LEVEL=scalar`, as
/// on a CPU without their SIMD levels) is a bus warning naming the remedy; the fp32 model is not.
#[test]
fn gst_launch_warns_of_a_quantized_model_on_scalar_kernels() {
    let Some(dir) = gst_launch_plugin_dir() else {
        return;
    };
    for (precision, warned) in [("w4a4", true), ("fp32", false)] {
        let out = std::process::Command::new("gst-launch-1.0")
            .env("GST_PLUGIN_PATH", dir.path())
            .env("ADABM_CPU_LEVEL", "scalar")
            .args([
                "videotestsrc",
                "num-buffers=1",
                "!",
                "video/x-raw,format=RGB,width=16,height=16",
                "!",
                "adabmupscale",
                "backend=cpu",
            ])
            .arg(format!("precision={precision}"))
            .args(["!", "fakesink"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{precision}: {text}");
        assert_eq!(
            text.contains("scalar integer kernels") && text.contains("precision=fp32"),
            warned,
            "{precision}: {text}"
        );
    }
}

/// Without a model file the element runs the built-in models: x2 by default, x4 on request,
/// at each precision, with exactly the engine's output for the embedded model.
#[test]
fn builtin_models_run_without_a_file() {
    init();
    for precision in ["fp32", "w8a6", "w4a4"] {
        for (scale, want) in [(0u32, 2u32), (2, 2), (4, 4)] {
            let el = gst::ElementFactory::make("adabmupscale")
                .property("scale", scale)
                .property_from_str("precision", precision)
                .property_from_str("backend", "cpu")
                .build()
                .unwrap();
            let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
            h.play();
            // 20 pixels: rows without stride padding, so whole buffers compare.
            let (out_info, out, in_info, data) = push_frame(&mut h, "RGB", 20, 11, 3);
            assert_eq!(
                (out_info.width(), out_info.height()),
                (20 * want, 11 * want)
            );
            let model = builtin(scale, precision);
            assert_eq!(model.config.scale, want);
            assert_eq!(model.quant.is_some(), precision != "fp32");
            assert!(
                out == expected(&model, PixelLayout::Rgb, &in_info, &data, &out_info),
                "scale={scale} precision={precision}: output differs from the engine's"
            );
        }
    }
    // Nonsense is refused when the pipeline is parsed, naming the property.
    let (err, _) = run_pipeline(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=8,height=8 ! adabmupscale precision=w3a3 ! fakesink",
    );
    let err = err.unwrap_or_default();
    assert!(err.contains("precision"), "{err}");
}

/// `scale=0` with the built-in models: the output caps choose x2, x3 or x4 (x2 when they leave
/// it open), and a stream whose caps change is switched to the other model; a fixed scale or a
/// model file keeps its own, and a model file with `scale=0` links at its own scale.
#[test]
fn builtin_scale_follows_the_output_caps() {
    init();
    for precision in ["fp32", "w4a4"] {
        let el = gst::ElementFactory::make("adabmupscale")
            .property_from_str("precision", precision)
            .property_from_str("backend", "cpu")
            .build()
            .unwrap();
        let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
        h.play();
        h.set_sink_caps_str("video/x-raw,width=120,height=72");
        // 30x18 in, 120x72 out: the x4 model; then 40x24 in: x3; 60x36: x2; 40x24 again: x3.
        for (w, hh, scale) in [(30, 18, 4), (40, 24, 3), (60, 36, 2), (40, 24, 3)] {
            let (out_info, out, in_info, data) = push_frame(&mut h, "RGB", w, hh, 5);
            assert_eq!((out_info.width(), out_info.height()), (120, 72));
            let model = builtin(scale, precision);
            assert!(
                visible(&out, &out_info)
                    == visible(
                        &expected(&model, PixelLayout::Rgb, &in_info, &data, &out_info),
                        &out_info
                    ),
                "{precision} {w}x{hh}: output is not the built-in x{scale} model's"
            );
        }
    }
    // Nothing downstream asks: the default x2.
    let samples = run_samples(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=20,height=12 ! adabmupscale ! appsink name=out",
    );
    let info = gst_video::VideoInfo::from_caps(samples[0].caps().unwrap()).unwrap();
    assert_eq!((info.width(), info.height()), (40, 24));
    // Asked for 80x48 downstream, the element offers upstream 40x24 first, then 20x12.
    let el = gst::ElementFactory::make("adabmupscale").build().unwrap();
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_sink_caps_str("video/x-raw,format=RGB,width=80,height=48");
    h.play();
    let offered = el.static_pad("sink").unwrap().query_caps(None);
    let sizes: Vec<(i32, i32)> = offered
        .iter()
        .map(|s| (s.get("width").unwrap(), s.get("height").unwrap()))
        .collect();
    assert_eq!(sizes, [(40, 24), (20, 12)]);
    // A fixed scale refuses caps of another; so does a model file of another scale.
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let (x2, x4) = (
        models.join("edsr-r8f32-x2.safetensors"),
        models.join("edsr-r8f32-x4.safetensors"),
    );
    for el in [
        "adabmupscale scale=2".to_string(),
        format!("adabmupscale model-location={}", x2.display()),
    ] {
        let (err, msgs) = run_pipeline(&format!(
            "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=20,height=12 ! {el} post-stats=true ! video/x-raw,width=80,height=48 ! fakesink"
        ));
        assert!(err.is_some() && msgs.is_empty(), "{el}: {err:?}");
    }
    // A model file with scale=0 links to caps at its scale (not only x2).
    let (err, msgs) = run_pipeline(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=20,height=12 ! adabmupscale post-stats=true model-location={} ! video/x-raw,width=80,height=48 ! fakesink",
        x4.display()
    ));
    assert_eq!((err, msgs.len()), (None, 1));
}

/// `precision`, `model-location` and `scale` changed while playing: the next frame runs the
/// new model (one of another scale renegotiates), and a file that fails to load is a warning on the
/// bus while the running model goes on.
#[test]
fn model_changes_while_playing() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let x3 = small_fp(3, 4);
    let x3_path = model_file(&dir, &x3, "x3.safetensors");
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    let el = gst::ElementFactory::make("adabmupscale")
        .property_from_str("backend", "cpu")
        .property("post-stats", true)
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
    h.play();
    // The model and scale of the last frame's adabm-stats, and the warnings, since last asked.
    let posted = || {
        let (mut last, mut warnings) = (None, Vec::new());
        for m in bus.iter_timed(gst::ClockTime::ZERO) {
            match m.view() {
                gst::MessageView::Element(e) => {
                    let s = e.structure().unwrap();
                    last = Some((
                        s.get::<String>("model").unwrap(),
                        s.get::<u32>("scale").unwrap(),
                    ));
                }
                gst::MessageView::Warning(w) => {
                    warnings.push(format!("{} {:?}", w.error(), w.debug()))
                }
                _ => {}
            }
        }
        (last, warnings)
    };
    let check = |h: &mut Harness, model: &gstadabm::engine::Model, scale: u32, what: &str| {
        let (out_info, out, in_info, data) = push_frame(h, "RGB", 20, 11, 9);
        assert_eq!(
            (out_info.width(), out_info.height()),
            (20 * scale, 11 * scale),
            "{what}"
        );
        assert!(
            visible(&out, &out_info)
                == visible(
                    &expected(model, PixelLayout::Rgb, &in_info, &data, &out_info),
                    &out_info
                ),
            "{what}: output is not the model's"
        );
    };
    let named = |name: &str, scale: u32| (Some((name.to_string(), scale)), Vec::<String>::new());
    check(&mut h, &builtin(2, "fp32"), 2, "fp32 at start");
    assert_eq!(posted(), named("edsr-r8f32-x2", 2));
    el.set_property_from_str("precision", "w4a4");
    check(&mut h, &builtin(2, "w4a4"), 2, "precision changed to w4a4");
    assert_eq!(posted(), named("edsr-r8f32-x2-w4a4", 2));
    // The same input caps (no new caps event): the element renegotiates its output itself.
    el.set_property("model-location", x3_path.to_str().unwrap());
    let out = h
        .push_and_pull(gst::Buffer::from_slice(vec![0u8; 20 * 11 * 3]))
        .unwrap();
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    assert_eq!((info.width(), info.height()), (60, 33));
    assert_eq!(out.size(), info.size());
    check(&mut h, &x3, 3, "model-location changed to an x3 file");
    assert_eq!(posted(), named(x3_path.to_str().unwrap(), 3));
    el.set_property("model-location", bad.to_str().unwrap());
    check(&mut h, &x3, 3, "after a bad file, the x3 model still");
    let (last, warnings) = posted();
    assert_eq!(last, Some((x3_path.to_str().unwrap().to_string(), 3)));
    assert!(
        warnings.len() == 1
            && warnings[0].contains("bad.safetensors")
            && warnings[0].contains("running model stays"),
        "{warnings:?}"
    );
    // Back to the built-ins: the running scale's (x3; no renegotiation).
    el.set_property("model-location", None::<&str>);
    check(&mut h, &builtin(3, "w4a4"), 3, "back to the built-in w4a4");
    assert_eq!(posted(), named("edsr-r8f32-x3-w4a4", 3));
    el.set_property("scale", 4u32);
    let x4 = builtin(4, "w4a4");
    check(&mut h, &x4, 4, "scale changed to 4");
    assert_eq!(posted(), named("edsr-r8f32-x4-w4a4", 4));
}

/// `backend`: auto picks CUDA only where it is usable (never on a machine without an NVIDIA
/// driver), float models included (f16 layers on the GPU); `cuda` without a usable GPU is an
/// error on the bus that says why; nonsense is refused at parse time.
#[test]
fn backend_selection_and_fallback() {
    init();
    let gpu = gstadabm::cuda::probe(0).is_ok();
    // The backend in use once a frame went through.
    let active = |precision: &str, backend: &str| -> String {
        let el = gst::ElementFactory::make("adabmupscale")
            .property_from_str("precision", precision)
            .property_from_str("backend", backend)
            .build()
            .unwrap();
        let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
        h.play();
        let caps = "video/x-raw,format=RGB,width=20,height=11,framerate=25/1";
        h.set_src_caps_str(caps);
        let info = gst_video::VideoInfo::from_caps(&caps.parse::<gst::Caps>().unwrap()).unwrap();
        h.push_and_pull(gst::Buffer::from_slice(vec![7u8; info.size()]))
            .unwrap();
        el.property::<Option<String>>("active-backend").unwrap()
    };
    assert_eq!(active("w4a4", "cpu"), "cpu");
    let cuda_pipeline = "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=20,height=11 ! adabmupscale precision=w4a4 backend=cuda ! fakesink";
    if gpu {
        assert!(active("w4a4", "auto").starts_with("cuda:"));
        assert!(
            active("fp32", "auto").starts_with("cuda:"),
            "backend=auto runs float models on the GPU too (f16 layers)"
        );
        assert!(active("w4a4", "cuda").starts_with("cuda:"));
        assert!(
            active("fp32", "cuda").starts_with("cuda:"),
            "backend=cuda runs float models (f16 layers)"
        );
        assert_eq!(run_pipeline(cuda_pipeline).0, None);
    } else {
        assert_eq!(active("w4a4", "auto"), "cpu");
        assert_eq!(active("fp32", "auto"), "cpu");
        let err = run_pipeline(cuda_pipeline)
            .0
            .expect("backend=cuda without a GPU must fail");
        assert!(
            err.contains("backend=cuda") && err.contains("CUDA"),
            "{err}"
        );
    }
    let (err, _) = run_pipeline(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=8,height=8 ! adabmupscale backend=opencl ! fakesink",
    );
    assert!(err.unwrap_or_default().contains("backend"));
}

/// With a GPU: `backend=cuda` gives exactly the integer reference's output (the semantics the
/// CPU integer engine shares), alpha upscaled as on the CPU, for every built-in quantized model.
#[test]
fn cuda_backend_matches_the_integer_reference() {
    init();
    if let Err(e) = gstadabm::cuda::probe(0) {
        assert!(
            std::env::var("ADABM_REQUIRE_GPU").map_or(true, |v| v != "1"),
            "ADABM_REQUIRE_GPU=1 but {e}"
        );
        eprintln!("SKIP cuda_backend_matches_the_integer_reference: {e}");
        return;
    }
    for (scale, precision) in [(2u32, "w4a4"), (2, "w8a6"), (4, "w4a4"), (4, "w8a6")] {
        let el = gst::ElementFactory::make("adabmupscale")
            .property("scale", scale)
            .property_from_str("precision", precision)
            .property_from_str("backend", "cuda")
            .build()
            .unwrap();
        let mut h = Harness::with_element(&el, Some("sink"), Some("src"));
        h.play();
        let model = builtin(scale, precision);
        let cpu = Engine::new(&model, 1).unwrap();
        let int = gstadabm::engine::intnet::IntNetwork::new(&model).unwrap();
        // Frames of other sizes and layouts in turn: the element's host buffers, reused from
        // frame to frame, must never leak one frame into the next.
        for (fmt, layout, w, hh, seed) in [
            ("RGBA", PixelLayout::Rgba, 21u32, 13u32, 5u8),
            ("RGBA", PixelLayout::Rgba, 9, 7, 6),
            ("RGB", PixelLayout::Rgb, 21, 13, 7),
            ("RGBA", PixelLayout::Rgba, 21, 13, 8),
        ] {
            let (out_info, out, in_info, data) = push_frame(&mut h, fmt, w, hh, seed);
            let (w, hh) = (w as usize, hh as usize);
            let src = FrameRef {
                data: &data,
                stride: in_info.stride()[0] as usize,
                width: w,
                height: hh,
                layout,
            };
            let (img, alpha) = gstadabm::engine::frame::unpack(&src).unwrap();
            let c = gstadabm::engine::complexity::gradient_density(&img.data, w, hh);
            let (plan, _) = cpu.bit_plan(c, &Options::default()).unwrap();
            let hr = int.upscale(&img, &plan);
            let mut want = vec![0u8; out_info.size()];
            let mut dst = FrameMut {
                data: &mut want,
                stride: out_info.stride()[0] as usize,
                width: out_info.width() as usize,
                height: out_info.height() as usize,
                layout,
            };
            let s = scale as usize;
            let alpha =
                alpha.map(|a| gstadabm::engine::frame::upscale_plane_bilinear(&a, w, hh, s));
            gstadabm::engine::frame::pack(&hr, alpha.as_deref(), &mut dst).unwrap();
            assert!(
                visible(&out, &out_info) == visible(&want, &out_info),
                "x{scale} {precision} {fmt} {w}x{hh}: CUDA element output differs from the integer reference"
            );
        }
        // RGB formats beyond 8-bit packed: their f32 values to the GPU (no rounding to bytes),
        // written back at their depth, alpha upscaled on the CPU at its own.
        for (fmt, format) in [
            ("RGBA64_BE", RgbFormat::RGBA64_BE),
            ("GBRA_10LE", RgbFormat::GBRA_10LE),
        ] {
            use gstadabm::engine::rgbfmt;
            let (out_info, out, in_info, data) = push_frame(&mut h, fmt, 13, 9, 4);
            let (w, hh) = (13, 9);
            let src = rgb_ref(&data, &in_info, format, (0, 1));
            let (mut img, mut alpha) = (gstadabm::engine::Image::default(), Vec::new());
            rgbfmt::unpack_into(&src, &mut img, &mut alpha).unwrap();
            let c = gstadabm::engine::complexity::gradient_density(&img.data, w, hh);
            let (plan, _) = cpu.bit_plan(c, &Options::default()).unwrap();
            let hr = int.upscale(&img, &plan);
            let s = scale as usize;
            let alpha = gstadabm::engine::frame::upscale_plane_bilinear(&alpha, w, hh, s);
            let mut want = vec![0u8; out_info.size()];
            let mut dst = rgb_mut(&mut want, &out_info, format, (0, 1));
            let (hw, hh) = (hr.width, hr.height);
            let whole = gstadabm::engine::frame::Window::whole(&hr.data, hw, hh);
            let r = gstadabm::engine::frame::Rect::whole(hw, hh);
            rgbfmt::pack_rect(whole, r, &alpha, &mut dst).unwrap();
            assert!(
                rgb_visible(&out, &out_info, format) == rgb_visible(&want, &out_info, format),
                "x{scale} {precision} {fmt}: CUDA element output differs from the integer reference"
            );
        }
        // YUV formats, converted to and from the network's f32 RGB on the GPU (v210 as
        // I422_10LE planes, GRAY16_BE as GRAY16_LE, Y410 as Y444_10LE planes, A420 and
        // A422_10LE as I420 and I422_10LE; alpha upscaled bilinearly on the CPU) — the bytes of
        // the CPU conversions around the integer reference.
        for fmt in [
            "I420",
            "NV12",
            "P010_10LE",
            "Y444",
            "YUY2",
            "NV21",
            "I422_10LE",
            "GRAY8",
            "UYVY",
            "VUYA",
            "v210",
            "GRAY16_BE",
            "YV12",
            "Y210",
            "P016_LE",
            "Y412_LE",
            "AYUV64",
            "A420",
            "A422_10LE",
            "Y410",
            "I420",
        ] {
            let (out_info, out, in_info, data) = push_frame(&mut h, fmt, 21, 14, 9);
            let (matrix, siting) = caps_colour(&in_info);
            let want = yuv_frames(
                &in_info,
                &data,
                &out_info,
                matrix,
                siting,
                false,
                |src, dst| {
                    let mut img = gstadabm::engine::Image::default();
                    gstadabm::engine::yuv::unpack_into(src, &mut img).unwrap();
                    let c = gstadabm::engine::complexity::gradient_density(
                        &img.data, src.width, src.height,
                    );
                    let (plan, _) = cpu.bit_plan(c, &Options::default()).unwrap();
                    let hr = int.upscale(&img, &plan);
                    gstadabm::engine::yuv::pack(&hr, dst).unwrap();
                    let mut a = Vec::new();
                    if gstadabm::engine::yuv::unpack_alpha_into(src, &mut a).unwrap() {
                        let (w, h, s) = (src.width, src.height, scale as usize);
                        let a = gstadabm::engine::frame::upscale_plane_bilinear(&a, w, h, s);
                        gstadabm::engine::yuv::pack_alpha(&a, dst).unwrap();
                    }
                },
            );
            assert!(
                yuv_visible(&out, &out_info) == yuv_visible(&want, &out_info),
                "x{scale} {precision} {fmt}: CUDA element output differs from the integer reference"
            );
        }
        eprintln!("x{scale} {precision}: element on CUDA == integer reference");
    }
}

#[test]
fn complexity_metric_override_while_playing() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let (mut h, el, bus) = stats_harness(&dir);
    // One frame (the same content each time): its complexity and the warnings it caused.
    let frame = |h: &mut Harness, bus: &gst::Bus| {
        push_frame(h, "RGB", 24, 16, 3);
        let (mut c, mut warnings) = (None, Vec::new());
        while let Some(m) = bus.pop() {
            match m.view() {
                gst::MessageView::Element(e) => {
                    c = e.structure().and_then(|s| s.get::<f64>("complexity").ok())
                }
                gst::MessageView::Warning(w) => warnings.push(format!(
                    "{} {}",
                    w.error(),
                    w.debug().map(|d| d.to_string()).unwrap_or_default()
                )),
                _ => {}
            }
        }
        (c.expect("stats"), warnings)
    };
    let (grad, w) = frame(&mut h, &bus);
    assert!(w.is_empty(), "{w:?}");
    el.set_property_from_str("complexity-metric", "frequency");
    let (freq, w) = frame(&mut h, &bus);
    assert_ne!(grad, freq);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("complexity-metric") && w[0].contains("image-lower"),
        "{}",
        w[0]
    );
    assert_eq!(frame(&mut h, &bus), (freq, vec![]), "warned once");
    el.set_property_from_str("complexity-metric", "model");
    assert_eq!(frame(&mut h, &bus), (grad, vec![]));
    el.set_property_from_str("complexity-metric", "gradient");
    assert_eq!(
        frame(&mut h, &bus),
        (grad, vec![]),
        "the model's own metric"
    );
    // A floating-point model has no b_I, so no thresholds to warn about (it warned with
    // "NaN / NaN"); the next quantized model is warned about.
    let quant = el.property::<Option<String>>("model-location");
    el.set_property_from_str("complexity-metric", "attention");
    let fp = model_file(&dir, &small_fp(2, 6), "fp.safetensors");
    el.set_property("model-location", fp.to_str());
    assert!(
        frame(&mut h, &bus).1.is_empty(),
        "no warning for a float model"
    );
    el.set_property("model-location", quant);
    let (_, w) = frame(&mut h, &bus);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("complexity-metric=Attention") && !w[0].contains("NaN"),
        "{}",
        w[0]
    );
}

/// `image-hysteresis`: a stream whose complexity hovers at a threshold keeps its b_I instead of
/// toggling it every frame; a clear crossing switches at once; 0 is the method's per-frame
/// decision (the default is 0.02); a flush forgets the previous frame.
#[test]
fn image_hysteresis_keeps_b_i_near_a_threshold() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let (mut h, el, bus) = stats_harness(&dir);
    let (w, hh) = (24usize, 16usize);
    h.set_src_caps_str(&format!(
        "video/x-raw,format=RGB,width={w},height={hh},framerate=25/1"
    ));
    // Vertical stripes two pixels wide, `k` levels above and below grey: complexity grows
    // with k. Returns (complexity, b_I).
    let frame = |h: &mut Harness, k: u8| -> (f64, i32) {
        let data: Vec<u8> = (0..w * hh * 3)
            .map(|i| {
                if (i / 3 % w / 2) % 2 == 0 {
                    128 + k
                } else {
                    128 - k
                }
            })
            .collect();
        h.push_and_pull(gst::Buffer::from_slice(data)).unwrap();
        let mut last = None;
        while let Some(m) = bus.pop_filtered(&[gst::MessageType::Element]) {
            let s = m.structure().unwrap();
            last = Some((
                s.get::<f64>("complexity").unwrap(),
                s.get::<i32>("image-bits").unwrap(),
            ));
        }
        last.expect("stats")
    };
    let c: Vec<f64> = [10, 20, 22, 40]
        .into_iter()
        .map(|k| frame(&mut h, k).0)
        .collect();
    let lower = (c[1] + c[2]) / 2.0;
    el.set_property("image-lower", lower);
    el.set_property("image-upper", 100.0 * c[3]);
    let h20 = 0.2;
    // The frames used below sit where the test needs them against the margin.
    assert!(
        c[0] < lower * (1.0 - h20) && c[3] > lower * (1.0 + h20),
        "{c:?}"
    );
    assert!(
        c[1] > lower * (1.0 - h20) && c[2] < lower * (1.0 + h20),
        "{c:?}"
    );
    let run =
        |h: &mut Harness, ks: &[u8]| -> Vec<i32> { ks.iter().map(|&k| frame(h, k).1).collect() };
    // The method (hysteresis 0; the default is 0.02): each frame on its own, so the two
    // frames at the threshold alternate.
    assert_eq!(el.property::<f64>("image-hysteresis"), 0.02);
    el.set_property("image-hysteresis", 0.0);
    assert_eq!(run(&mut h, &[20, 22, 20, 22]), [-1, 0, -1, 0]);
    el.set_property("image-hysteresis", h20);
    assert_eq!(el.property::<f64>("image-hysteresis"), h20);
    // From b_I = 0 the frames near the threshold keep 0; a clearly smooth one goes to -1
    // and the near ones then keep -1; a clearly complex one goes back to 0 at once.
    assert_eq!(
        run(&mut h, &[20, 22, 20, 10, 22, 20, 22, 40, 20]),
        [0, 0, 0, -1, -1, -1, -1, 0, 0]
    );
    // A flush forgets the last frame: the next is decided on its own.
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    h.set_src_caps_str(&format!(
        "video/x-raw,format=RGB,width={w},height={hh},framerate=25/1"
    ));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    assert_eq!(run(&mut h, &[20, 22]), [-1, -1]);
    // Back to 0: the method's alternation again.
    el.set_property("image-hysteresis", 0.0);
    assert_eq!(run(&mut h, &[22, 20, 22]), [0, -1, 0]);
}

/// The engine's output for one field (`f`: 0 top, 1 bottom) of an interlaced frame, written
/// into the same field of `buf` (the output frame).
fn expected_field(
    engine: &Engine,
    inp: &gst_video::VideoInfo,
    data: &[u8],
    out: &gst_video::VideoInfo,
    buf: &mut [u8],
    f: usize,
) -> gstadabm::engine::Stats {
    let (is, os) = (inp.stride()[0] as usize, out.stride()[0] as usize);
    let src = FrameRef {
        data: &data[f * is..],
        stride: 2 * is,
        width: inp.width() as usize,
        height: inp.height() as usize / 2,
        layout: PixelLayout::Rgbx,
    };
    let mut dst = FrameMut {
        data: &mut buf[f * os..],
        stride: 2 * os,
        width: out.width() as usize,
        height: out.height() as usize / 2,
        layout: PixelLayout::Rgbx,
    };
    engine
        .process_frame(&src, &mut dst, &Options::default())
        .unwrap()
}

/// Rows whose fields differ: the top field is one picture, the bottom another (as when the
/// camera moved between the two field times).
fn two_field_frame(info: &gst_video::VideoInfo) -> Vec<u8> {
    let stride = info.stride()[0] as usize;
    (0..info.size())
        .map(|i| {
            let (y, x) = (i / stride, i % stride);
            if y % 2 == 0 {
                ((x * 13 + y * 5) % 200) as u8
            } else {
                (255 - (x * 7 + y * 11) % 180) as u8
            }
        })
        .collect()
}

/// Interleaved frames are upscaled field by field: each output field is the engine's output
/// for that input field alone, not a picture that mixes the two fields' lines; mixed streams
/// do so for the buffers flagged interlaced and upscale the others whole.
#[test]
fn interlaced_frames_are_upscaled_field_by_field() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let model = small_quant(2, QuantMode::Fq, 4);
    let path = model_file(&dir, &model, "x2.safetensors");
    let engine = Engine::new(&model, 1).unwrap();
    for mode in ["interleaved", "mixed"] {
        let mut h = harness(&path);
        let caps = format!(
            "video/x-raw,format=RGBx,width=11,height=8,framerate=25/1,interlace-mode={mode}"
        );
        h.set_src_caps_str(&caps);
        let info = gst_video::VideoInfo::from_caps(&caps.parse::<gst::Caps>().unwrap()).unwrap();
        let data = two_field_frame(&info);
        let mut buf = gst::Buffer::from_slice(data.clone());
        if mode == "mixed" {
            use gst_video::prelude::VideoBufferExt;
            buf.get_mut()
                .unwrap()
                .set_video_flags(gst_video::VideoBufferFlags::INTERLACED);
        }
        let out = h.push_and_pull(buf).unwrap();
        let out_caps = h.sinkpad().unwrap().current_caps().unwrap();
        let out_info = gst_video::VideoInfo::from_caps(&out_caps).unwrap();
        assert_eq!((out_info.width(), out_info.height()), (22, 16));
        assert_eq!(
            out_info.interlace_mode().to_str(),
            mode,
            "the output keeps the interlace mode"
        );
        let mut want = vec![0u8; out_info.size()];
        expected_field(&engine, &info, &data, &out_info, &mut want, 0);
        expected_field(&engine, &info, &data, &out_info, &mut want, 1);
        let got = visible(&out.map_readable().unwrap(), &out_info);
        assert_eq!(got, visible(&want, &out_info), "{mode}");
        let whole = expected(&model, PixelLayout::Rgbx, &info, &data, &out_info);
        assert_ne!(
            got,
            visible(&whole, &out_info),
            "{mode}: field-wise output must differ from upscaling the woven frame"
        );
        if mode == "mixed" {
            // A progressive buffer of the mixed stream: the whole frame, as usual.
            let out = h
                .push_and_pull(gst::Buffer::from_slice(data.clone()))
                .unwrap();
            assert_eq!(
                visible(&out.map_readable().unwrap(), &out_info),
                visible(&whole, &out_info)
            );
        }
    }
}

/// Each field gets its own stats message, named by a `field` entry, with its own b_I.
#[test]
fn interlaced_frames_post_stats_per_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, &small_quant(2, QuantMode::Fq, 5), "q.safetensors");
    let (err, msgs) = run_pipeline(&format!(
        "videotestsrc num-buffers=3 pattern=ball ! video/x-raw,format=BGRx,width=24,height=16,interlace-mode=interleaved ! adabmupscale post-stats=true model-location={} ! fakesink",
        path.display()
    ));
    assert!(err.is_none(), "{err:?}");
    let fields: Vec<(u64, String)> = msgs
        .iter()
        .map(|s| {
            (
                s.get::<u64>("frame").unwrap(),
                s.get::<String>("field").unwrap(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = (0..3u64)
        .flat_map(|i| [(i, "top".to_string()), (i, "bottom".to_string())])
        .collect();
    assert_eq!(fields, want);
}

/// Interlaced video of odd height (fields of different heights) is a clear error naming the
/// fix; one field per buffer (alternate) is refused at negotiation.
#[test]
fn odd_height_interlaced_and_alternate_fields_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, &small_fp(2, 3), "x2.safetensors");
    let (err, _) = run_pipeline(&format!(
        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=8,height=7,interlace-mode=interleaved ! adabmupscale model-location={} ! fakesink",
        path.display()
    ));
    let err = err.unwrap_or_default();
    assert!(
        err.contains("odd height 7") && err.contains("deinterlace"),
        "{err}"
    );
    // Interlaced 4:2:0: each field takes every other chroma row, so the height must be a
    // multiple of 4.
    let (err, _) = run_pipeline(&format!(
        "videotestsrc num-buffers=2 ! video/x-raw,format=I420,width=8,height=10,interlace-mode=interleaved ! adabmupscale model-location={} ! fakesink",
        path.display()
    ));
    let err = err.unwrap_or_default();
    assert!(
        err.contains("multiple of 4") && err.contains("deinterlace"),
        "{err}"
    );
    init();
    let h = harness(&path);
    let sink = h.element().unwrap().static_pad("sink").unwrap();
    let alternate: gst::Caps =
        "video/x-raw(format:Interlaced),format=RGB,width=8,height=8,interlace-mode=alternate"
            .parse()
            .unwrap();
    let mut query = gst::query::AcceptCaps::new(&alternate);
    sink.query(&mut query);
    assert!(!query.result(), "alternate fields must be refused");
    // The same without the caps feature (which GStreamer requires for alternate): refused
    // when set, with the way out.
    let mut h = harness(&path);
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    h.set_src_caps_str("video/x-raw,format=RGB,width=8,height=8,interlace-mode=alternate");
    assert!(
        h.push(gst::Buffer::from_slice(vec![0u8; 8 * 8 * 3]))
            .is_err()
    );
    let err = bus
        .iter_timed(gst::ClockTime::ZERO)
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
        .expect("an error on the bus");
    assert!(
        err.contains("interlace-mode=(string)alternate") && err.contains("deinterlace"),
        "{err}"
    );
}

/// A frame downstream reports late (a QoS event, as a synchronising sink sends when the
/// element cannot keep up) is dropped before it is upscaled, with a QoS message on the bus;
/// a frame on time still comes out; `qos=false` processes every frame.
#[test]
fn late_frames_are_dropped_on_qos() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let path = model_file(&dir, &small_quant(2, QuantMode::Fq, 6), "q.safetensors");
    for qos in [true, false] {
        let mut h = harness(&path);
        let el = h.element().unwrap();
        assert!(el.property::<bool>("qos"), "QoS is on by default");
        el.set_property("qos", qos);
        let bus = gst::Bus::new();
        el.set_bus(Some(&bus));
        h.set_src_caps_str("video/x-raw,format=RGB,width=12,height=10,framerate=25/1");
        let frame = |pts_ms: u64| {
            let mut b = gst::Buffer::from_mut_slice(vec![77u8; 12 * 10 * 3]);
            let bm = b.get_mut().unwrap();
            bm.set_pts(gst::ClockTime::from_mseconds(pts_ms));
            bm.set_duration(gst::ClockTime::from_mseconds(40));
            b
        };
        assert!(h.push(frame(0)).is_ok());
        assert!(h.try_pull().is_some(), "the first frame comes out");
        // Downstream: the frame at 0 ms was rendered 1 s late, so nothing before ~1 s is
        // worth upscaling.
        let ev = gst::event::Qos::new(
            gst::QOSType::Underflow,
            0.5,
            1_000_000_000,
            gst::ClockTime::ZERO,
        );
        assert!(h.push_upstream_event(ev));
        assert!(h.push(frame(40)).is_ok());
        let late = h.try_pull();
        assert!(h.push(frame(2000)).is_ok());
        let on_time = h.try_pull();
        assert!(on_time.is_some(), "qos={qos}: a frame on time comes out");
        let qos_msgs: Vec<_> =
            std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Qos])).collect();
        if qos {
            assert!(late.is_none(), "the late frame was upscaled anyway");
            assert_eq!(qos_msgs.len(), 1, "one QoS message for the dropped frame");
            if let gst::MessageView::Qos(q) = qos_msgs[0].view() {
                let (_, _, _, ts, _) = q.get();
                assert_eq!(ts, Some(gst::ClockTime::from_mseconds(40)));
            }
        } else {
            assert!(late.is_some(), "qos=false: the late frame still comes out");
            assert!(qos_msgs.is_empty());
        }
    }
}

/// The element answers LATENCY queries with upstream's latency plus the time its frames take
/// (the longest of the recent ones), and posts a `latency` message when that estimate first
/// appears, so a live pipeline schedules frames late enough for them to get through.
#[test]
fn latency_includes_processing_time() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _, bus) = stats_harness(&dir);
    let upstream = gst::ClockTime::from_mseconds(10);
    h.set_upstream_latency(upstream);
    assert_eq!(
        h.query_latency(),
        Some(upstream),
        "nothing added before a frame"
    );
    let mut slowest = 0.0f64;
    for seed in 0..3 {
        push_frame(&mut h, "RGB", 40, 30, seed);
    }
    // (pop_filtered discards what it does not match: take both kinds at once.)
    let msgs: Vec<_> = std::iter::from_fn(|| {
        bus.pop_filtered(&[gst::MessageType::Element, gst::MessageType::Latency])
    })
    .collect();
    for m in msgs
        .iter()
        .filter(|m| m.type_() == gst::MessageType::Element)
    {
        slowest = slowest.max(m.structure().unwrap().get::<f64>("processing-ms").unwrap());
    }
    assert!(slowest > 0.0, "no stats");
    let latency_msgs = msgs
        .iter()
        .filter(|m| m.type_() == gst::MessageType::Latency)
        .count();
    assert!(
        latency_msgs >= 1,
        "no latency message after the first frame"
    );
    let l = h.query_latency().unwrap();
    assert!(
        l.nseconds() as f64 >= upstream.nseconds() as f64 + slowest * 1e6,
        "latency {l} is below upstream {upstream} + the slowest frame's {slowest} ms"
    );
    assert!(
        l < upstream + gst::ClockTime::from_seconds(5),
        "latency {l}"
    );
}

/// The engine's layout of a YUV format.
fn yuv_layout(format: gst_video::VideoFormat) -> gstadabm::engine::yuv::YuvLayout {
    use gst_video::VideoFormat as F;
    use gstadabm::engine::yuv::YuvLayout as L;
    match format {
        F::I420 => L::I420,
        F::Yv12 => L::Yv12,
        F::Nv12 => L::Nv12,
        F::Nv21 => L::Nv21,
        F::Nv16 => L::Nv16,
        F::Nv61 => L::Nv61,
        F::Nv24 => L::Nv24,
        F::Yuy2 => L::Yuy2,
        F::Uyvy => L::Uyvy,
        F::Yvyu => L::Yvyu,
        F::Y210 => L::Y210,
        F::Y212Le => L::Y212,
        F::Ayuv => L::Ayuv,
        F::Vuya => L::Vuya,
        F::Y412Le => L::Y412,
        F::Ayuv64 => L::Ayuv64,
        F::Y410 => L::Y410,
        F::A420 => L::A420,
        F::A42010le => L::A420p10,
        F::A42210le => L::A422p10,
        F::A44410le => L::A444p10,
        F::Y42b => L::Y42b,
        F::Y444 => L::Y444,
        F::I42010le => L::I420p10,
        F::I42210le => L::I422p10,
        F::Y44410le => L::Y444p10,
        F::P01010le => L::P010,
        F::I42012le => L::I420p12,
        F::I42212le => L::I422p12,
        F::Y44412le => L::Y444p12,
        F::P012Le => L::P012,
        F::P016Le => L::P016,
        F::Y44416le => L::Y444p16,
        F::V210 => L::V210,
        F::Gray8 => L::Gray8,
        F::Gray16Le => L::Gray16,
        F::Gray16Be => L::Gray16Be,
        f => panic!("not a YUV format: {f:?}"),
    }
}

/// The colour matrix, range and chroma siting GStreamer gives YUV caps `info` (with its
/// defaults where the caps say nothing: BT.601 for SD sizes, full range for grey).
fn caps_colour(
    info: &gst_video::VideoInfo,
) -> (
    gstadabm::engine::yuv::YuvMatrix,
    gstadabm::engine::yuv::ChromaSiting,
) {
    use gst_video::VideoColorMatrix as M;
    use gstadabm::engine::yuv::{ChromaSiting, YuvMatrix};
    let c = info.colorimetry();
    let k = match c.matrix() {
        M::Bt709 => YuvMatrix::BT709,
        M::Bt2020 => YuvMatrix::BT2020,
        _ => YuvMatrix::BT601,
    };
    let site = info.chroma_site();
    (
        YuvMatrix::new(k, c.range() == gst_video::VideoColorRange::Range0_255),
        ChromaSiting {
            h_cosited: site.contains(gst_video::VideoChromaSite::H_COSITED),
            v_cosited: site.contains(gst_video::VideoChromaSite::V_COSITED),
        },
    )
}

/// The planes of a YUV frame in `bytes` laid out as `info` says: (offset, stride, row
/// bytes, rows) per plane.
fn yuv_planes(info: &gst_video::VideoInfo) -> Vec<(usize, usize, usize, usize)> {
    let layout = yuv_layout(info.format());
    let sizes = layout.plane_sizes(info.width() as usize, info.height() as usize);
    (0..layout.planes())
        .map(|p| {
            (
                info.offset()[p],
                info.stride()[p] as usize,
                sizes[p].0,
                sizes[p].1,
            )
        })
        .collect()
}

fn yuv_visible(bytes: &[u8], info: &gst_video::VideoInfo) -> Vec<u8> {
    yuv_planes(info)
        .into_iter()
        .flat_map(|(off, stride, row, n)| {
            (0..n).flat_map(move |y| bytes[off + y * stride..][..row].to_vec())
        })
        .collect()
}

/// The engine's output for a YUV frame (or, `interlaced`, for each of its fields), with the
/// matrix, range and siting given.
fn expected_yuv(
    model: &gstadabm::engine::Model,
    inp: &gst_video::VideoInfo,
    data: &[u8],
    out: &gst_video::VideoInfo,
    matrix: gstadabm::engine::yuv::YuvMatrix,
    siting: gstadabm::engine::yuv::ChromaSiting,
    interlaced: bool,
) -> Vec<u8> {
    let engine = Engine::new(model, 1).unwrap();
    yuv_frames(inp, data, out, matrix, siting, interlaced, |src, dst| {
        engine
            .process_yuv_frame(src, dst, &Options::default())
            .unwrap();
    })
}

/// `run` on the YUV frame `data` laid out as `inp` (or on each of its fields) and an output
/// buffer laid out as `out`, which it returns.
fn yuv_frames(
    inp: &gst_video::VideoInfo,
    data: &[u8],
    out: &gst_video::VideoInfo,
    matrix: gstadabm::engine::yuv::YuvMatrix,
    siting: gstadabm::engine::yuv::ChromaSiting,
    interlaced: bool,
    run: impl Fn(&gstadabm::engine::yuv::YuvRef, &mut gstadabm::engine::yuv::YuvMut),
) -> Vec<u8> {
    use gstadabm::engine::yuv::{YuvMut, YuvRef};
    let layout = yuv_layout(inp.format());
    let mut buf = vec![0u8; out.size()];
    let fields: &[usize] = if interlaced { &[0, 1] } else { &[0] };
    let k = if interlaced { 2 } else { 1 };
    for &f in fields {
        let ip = yuv_planes(inp);
        let op = yuv_planes(out);
        let mut planes_in: [&[u8]; 4] = [&[], &[], &[], &[]];
        let mut strides_in = [0; 4];
        for (p, &(off, stride, _, _)) in ip.iter().enumerate() {
            planes_in[p] = &data[off + f * stride..];
            strides_in[p] = k * stride;
        }
        let src = YuvRef {
            planes: planes_in,
            strides: strides_in,
            width: inp.width() as usize,
            height: inp.height() as usize / k,
            layout,
            matrix,
            siting,
        };
        // Split the output buffer into its planes (they follow each other).
        let mut rest: &mut [u8] = &mut buf;
        let mut taken = 0;
        let mut planes_out: [&mut [u8]; 4] = [&mut [], &mut [], &mut [], &mut []];
        let mut strides_out = [0; 4];
        for (p, &(off, stride, _, _)) in op.iter().enumerate() {
            let end = op.get(p + 1).map_or(out.size(), |q| q.0);
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(off - taken);
            let (plane, tail) = tail.split_at_mut(end - off);
            rest = tail;
            taken = end;
            planes_out[p] = &mut plane[f * stride..];
            strides_out[p] = k * stride;
        }
        let mut dst = YuvMut {
            planes: planes_out,
            strides: strides_out,
            width: out.width() as usize,
            height: out.height() as usize / k,
            layout,
            matrix,
            siting,
        };
        run(&src, &mut dst);
    }
    buf
}

/// The YUV formats (4:2:0, 4:2:2, 4:4:4, 8, 10, 12 and 16 bits) go straight through the element (no
/// videoconvert): its output equals the engine's for the frame's colour matrix, range and
/// chroma siting from the caps — odd and even sizes, padded strides, interlaced field by field.
#[test]
fn yuv_formats_match_the_engine() {
    use gstadabm::engine::yuv::{ChromaSiting, YuvMatrix};
    init();
    let dir = tempfile::tempdir().unwrap();
    let model = small_quant(2, QuantMode::Fq, 6);
    let path = model_file(&dir, &model, "q.safetensors");
    let cases = [
        // (format, size, caps extra, matrix, full range, h / v co-sited, interlaced)
        (
            "I420",
            (21, 13),
            "",
            YuvMatrix::BT601,
            false,
            (false, false),
            false,
        ),
        (
            "NV12",
            (20, 14),
            ",colorimetry=bt709,chroma-site=mpeg2",
            YuvMatrix::BT709,
            false,
            (true, false),
            false,
        ),
        (
            "I420",
            (18, 10),
            ",colorimetry=1:4:0:0,chroma-site=cosited",
            YuvMatrix::BT601,
            true,
            (true, true),
            false,
        ),
        (
            "I420",
            (20, 16),
            ",colorimetry=bt709,chroma-site=jpeg,interlace-mode=interleaved",
            YuvMatrix::BT709,
            false,
            (false, false),
            true,
        ),
        (
            "Y42B",
            (15, 9),
            "",
            YuvMatrix::BT601,
            false,
            (false, false),
            false,
        ),
        (
            "Y444",
            (13, 8),
            ",colorimetry=bt709",
            YuvMatrix::BT709,
            false,
            (false, false),
            false,
        ),
        (
            "I420_10LE",
            (21, 13),
            ",colorimetry=bt2020,chroma-site=mpeg2",
            YuvMatrix::BT2020,
            false,
            (true, false),
            false,
        ),
        (
            "P010_10LE",
            (20, 14),
            ",colorimetry=bt709,chroma-site=mpeg2",
            YuvMatrix::BT709,
            false,
            (true, false),
            false,
        ),
        (
            "I422_10LE",
            (17, 10),
            ",colorimetry=1:4:0:0,chroma-site=cosited,interlace-mode=interleaved",
            YuvMatrix::BT601,
            true,
            (true, true),
            true,
        ),
        (
            "Y444_10LE",
            (12, 7),
            ",colorimetry=bt709",
            YuvMatrix::BT709,
            false,
            (false, false),
            false,
        ),
        (
            "I420_12LE",
            (19, 11),
            ",colorimetry=bt2020,chroma-site=mpeg2",
            YuvMatrix::BT2020,
            false,
            (true, false),
            false,
        ),
        (
            "P012_LE",
            (20, 12),
            ",colorimetry=bt2020,chroma-site=mpeg2",
            YuvMatrix::BT2020,
            false,
            (true, false),
            false,
        ),
        (
            "I422_12LE",
            (15, 8),
            ",colorimetry=1:4:0:0,interlace-mode=interleaved",
            YuvMatrix::BT601,
            true,
            (false, false),
            true,
        ),
        (
            "v210",
            (13, 6),
            ",colorimetry=bt709",
            YuvMatrix::BT709,
            false,
            (false, false),
            false,
        ),
        (
            "v210",
            (6, 4),
            ",colorimetry=1:4:0:0,interlace-mode=interleaved",
            YuvMatrix::BT601,
            true,
            (false, false),
            true,
        ),
        (
            "Y444_12LE",
            (9, 5),
            ",colorimetry=bt709",
            YuvMatrix::BT709,
            false,
            (false, false),
            false,
        ),
        (
            "NV21",
            (21, 13),
            ",colorimetry=bt709,chroma-site=mpeg2",
            YuvMatrix::BT709,
            false,
            (true, false),
            false,
        ),
        (
            "NV16",
            (15, 9),
            "",
            YuvMatrix::BT601,
            false,
            (false, false),
            false,
        ),
        (
            "NV24",
            (13, 8),
            "",
            YuvMatrix::BT601,
            false,
            (false, false),
            false,
        ),
        (
            "YUY2",
            (15, 9),
            ",colorimetry=bt709,chroma-site=mpeg2",
            YuvMatrix::BT709,
            false,
            (true, false),
            false,
        ),
        (
            "UYVY",
            (16, 10),
            ",interlace-mode=interleaved",
            YuvMatrix::BT601,
            false,
            (false, false),
            true,
        ),
        (
            "YVYU",
            (1, 1),
            "",
            YuvMatrix::BT601,
            false,
            (false, false),
            false,
        ),
        // Hardware decoders' formats (NVDEC, VA-API, D3D11) and the swapped-chroma ones.
        (
            "YV12",
            (21, 13),
            ",colorimetry=bt709,chroma-site=mpeg2",
            YuvMatrix::BT709,
            false,
            (true, false),
            false,
        ),
        (
            "NV61",
            (15, 10),
            ",interlace-mode=interleaved",
            YuvMatrix::BT601,
            false,
            (false, false),
            true,
        ),
        (
            "P016_LE",
            (19, 11),
            ",colorimetry=bt2020,chroma-site=mpeg2",
            YuvMatrix::BT2020,
            false,
            (true, false),
            false,
        ),
        (
            "Y444_16LE",
            (9, 5),
            ",colorimetry=1:4:0:0",
            YuvMatrix::BT601,
            true,
            (false, false),
            false,
        ),
        (
            "Y210",
            (15, 9),
            ",colorimetry=bt2020,chroma-site=mpeg2",
            YuvMatrix::BT2020,
            false,
            (true, false),
            false,
        ),
        (
            "Y212_LE",
            (16, 10),
            ",colorimetry=bt709,interlace-mode=interleaved",
            YuvMatrix::BT709,
            false,
            (false, false),
            true,
        ),
        // Packed 4:4:4 with alpha.
        (
            "Y412_LE",
            (11, 7),
            ",colorimetry=bt2020",
            YuvMatrix::BT2020,
            false,
            (false, false),
            false,
        ),
        (
            "AYUV64",
            (8, 6),
            ",colorimetry=1:4:0:0,interlace-mode=interleaved",
            YuvMatrix::BT601,
            true,
            (false, false),
            true,
        ),
        (
            "AYUV",
            (13, 7),
            ",colorimetry=bt709",
            YuvMatrix::BT709,
            false,
            (false, false),
            false,
        ),
        (
            "VUYA",
            (8, 6),
            ",interlace-mode=interleaved",
            YuvMatrix::BT601,
            false,
            (false, false),
            true,
        ),
        // 10-bit 4:4:4 in 32-bit words, 2-bit alpha.
        (
            "Y410",
            (11, 7),
            ",colorimetry=bt2020",
            YuvMatrix::BT2020,
            false,
            (false, false),
            false,
        ),
        (
            "Y410",
            (6, 4),
            ",colorimetry=1:4:0:0,interlace-mode=interleaved",
            YuvMatrix::BT601,
            true,
            (false, false),
            true,
        ),
        // Planar with an alpha plane (VP8 / VP9 with alpha).
        (
            "A420",
            (21, 13),
            ",colorimetry=bt709,chroma-site=mpeg2",
            YuvMatrix::BT709,
            false,
            (true, false),
            false,
        ),
        (
            "A420",
            (10, 8),
            ",interlace-mode=interleaved",
            YuvMatrix::BT601,
            false,
            (false, false),
            true,
        ),
        (
            "A420_10LE",
            (19, 11),
            ",colorimetry=bt2020,chroma-site=mpeg2",
            YuvMatrix::BT2020,
            false,
            (true, false),
            false,
        ),
        (
            "A422_10LE",
            (15, 10),
            ",colorimetry=1:4:0:0,chroma-site=cosited,interlace-mode=interleaved",
            YuvMatrix::BT601,
            true,
            (true, true),
            true,
        ),
        (
            "A444_10LE",
            (1, 1),
            ",colorimetry=bt709",
            YuvMatrix::BT709,
            false,
            (false, false),
            false,
        ),
        (
            "A444_10LE",
            (12, 7),
            ",colorimetry=bt709",
            YuvMatrix::BT709,
            false,
            (false, false),
            false,
        ),
        // Grey: full-range BT.601 luma, GStreamer's default for GRAY caps.
        (
            "GRAY8",
            (15, 9),
            "",
            YuvMatrix::BT601,
            true,
            (false, false),
            false,
        ),
        (
            "GRAY16_LE",
            (8, 6),
            ",interlace-mode=interleaved",
            YuvMatrix::BT601,
            true,
            (false, false),
            true,
        ),
        (
            "GRAY16_BE",
            (9, 7),
            "",
            YuvMatrix::BT601,
            true,
            (false, false),
            false,
        ),
        // One pixel, one row, one column.
        (
            "P010_10LE",
            (1, 1),
            ",colorimetry=bt709,chroma-site=mpeg2",
            YuvMatrix::BT709,
            false,
            (true, false),
            false,
        ),
        (
            "I420",
            (1, 7),
            "",
            YuvMatrix::BT601,
            false,
            (false, false),
            false,
        ),
        (
            "Y42B",
            (9, 1),
            "",
            YuvMatrix::BT601,
            false,
            (false, false),
            false,
        ),
        (
            "Y444_10LE",
            (1, 1),
            ",colorimetry=bt709",
            YuvMatrix::BT709,
            false,
            (false, false),
            false,
        ),
    ];
    for (fmt, (w, hh), extra, k, full, (hc, vc), interlaced) in cases {
        let mut h = harness(&path);
        let caps = format!("video/x-raw,format={fmt},width={w},height={hh},framerate=25/1{extra}");
        h.set_src_caps_str(&caps);
        let info = gst_video::VideoInfo::from_caps(&caps.parse::<gst::Caps>().unwrap()).unwrap();
        let layout = yuv_layout(info.format());
        let data: Vec<u8> = match layout.depth() {
            // (Y410: any bytes, 2-bit alpha included.)
            8 | 10 if fmt == "Y410" || layout.depth() == 8 => (0..info.size())
                .map(|i| ((i * 37 + 11) % 241) as u8)
                .collect(),
            16 => (0..info.size())
                .map(|i| ((i * 37 + 11) % 241) as u8)
                .collect(),
            // 10-bit samples in their words (P010: the high bits), low bits of P010 zero.
            _ => (0..info.size() / 2)
                .flat_map(|i| {
                    let v = ((i * 37 + 11) % 1021) as u16;
                    let v = if fmt == "P010_10LE" { v << 6 } else { v };
                    v.to_le_bytes()
                })
                .collect(),
        };
        let out = h
            .push_and_pull(gst::Buffer::from_slice(data.clone()))
            .unwrap();
        let out_info =
            gst_video::VideoInfo::from_caps(&h.sinkpad().unwrap().current_caps().unwrap()).unwrap();
        assert_eq!(out_info.format(), info.format());
        assert_eq!((out_info.width(), out_info.height()), (2 * w, 2 * hh));
        let siting = ChromaSiting {
            h_cosited: hc,
            v_cosited: vc,
        };
        let want = expected_yuv(
            &model,
            &info,
            &data,
            &out_info,
            YuvMatrix::new(k, full),
            siting,
            interlaced,
        );
        let got = out.map_readable().unwrap().to_vec();
        assert!(
            yuv_visible(&got, &out_info) == yuv_visible(&want, &out_info),
            "{caps}: output differs from the engine's"
        );
        // Alpha (AYUV, VUYA, Y412_LE, AYUV64; A420's and its kin's fourth plane): the
        // input's codes, upscaled bilinearly at their depth (each field of an interlaced frame
        // on its own).
        let (b, shift) = (layout.word(), layout.shift());
        let samples = match (layout.packed444(), layout.alpha_plane()) {
            // (plane, first byte of a row's first sample, bytes from one to the next, bytes
            // of a sample, its shift)
            (Some(at), _) => Some((0, at[3] * b, 4 * b, b, shift)),
            (_, true) => Some((3, 0, b, b, shift)),
            // Y410: the top two bits of each little-endian 32-bit word.
            _ if fmt == "Y410" => Some((0, 3, 4, 1, 6)),
            _ => None,
        };
        if let Some((plane, first, step, b, shift)) = samples {
            let alpha = |bytes: &[u8], i: &gst_video::VideoInfo, field: usize, k: usize| {
                let (w, stride) = (i.width() as usize, i.stride()[plane] as usize);
                let base = i.offset()[plane];
                (0..i.height() as usize / k)
                    .flat_map(|y| {
                        let row = &bytes[base + (k * y + field) * stride + first..];
                        (0..w)
                            .map(|x| match b {
                                1 => row[x * step] as u16 >> shift,
                                _ => {
                                    u16::from_le_bytes([row[x * step], row[x * step + 1]]) >> shift
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<u16>>()
            };
            let k = if interlaced { 2 } else { 1 };
            for field in 0..k {
                let a = alpha(&data, &info, field, k);
                let (lw, lh) = (w as usize, hh as usize / k);
                let want = gstadabm::engine::frame::upscale_plane_bilinear(&a, lw, lh, 2);
                assert_eq!(alpha(&got, &out_info, field, k), want, "{caps}: alpha");
                assert!(
                    a.iter().any(|&v| v != a[0]) || lw * lh == 1,
                    "{caps}: constant alpha"
                );
            }
        }
    }
}

/// Against the long way round (`videoconvert ! RGB ! adabmupscale ! videoconvert`): the same
/// picture within videoconvert's 8-bit approximations (it maps Y = 235 to 253 where BT.601
/// gives 255), and not a different one (swapped chroma, another matrix).
#[test]
fn yuv_agrees_with_videoconvert_around_rgb() {
    init();
    let frames = |desc: &str| -> Vec<u8> {
        let s = common::run_samples(desc);
        s[0].buffer().unwrap().map_readable().unwrap().to_vec()
    };
    // (format, bytes a sample, bits below the sample, mean |difference| limits Y / chroma)
    let cases = [
        ("I420", 1, 0, 5.0, 6.5),
        ("NV12", 1, 0, 4.0, 2.0),
        ("NV21", 1, 0, 4.0, 2.0),
        ("NV16", 1, 0, 4.0, 2.5),
        ("NV24", 1, 0, 4.5, 4.0),
        ("YUY2", 1, 0, 4.0, 2.5),
        ("UYVY", 1, 0, 4.0, 2.5),
        ("YVYU", 1, 0, 4.0, 2.5),
        ("Y42B", 1, 0, 4.0, 2.5),
        ("Y444", 1, 0, 4.5, 4.0),
        ("YV12", 1, 0, 5.0, 6.5),
        ("NV61", 1, 0, 4.0, 2.5),
        ("I420_10LE", 2, 0, 2.0, 1.0),
        ("P010_10LE", 2, 6, 2.0, 1.0),
        ("I422_10LE", 2, 0, 2.5, 1.5),
        ("Y444_10LE", 2, 0, 3.0, 3.5),
        ("I420_12LE", 2, 0, 2.0, 1.0),
        ("P012_LE", 2, 4, 2.0, 1.0),
        ("I422_12LE", 2, 0, 2.5, 1.5),
        ("Y444_12LE", 2, 0, 3.0, 3.5),
        ("P016_LE", 2, 0, 2.0, 1.0),
        ("Y444_16LE", 2, 0, 3.0, 3.5),
        ("Y210", 2, 6, 2.5, 1.5),
        ("Y212_LE", 2, 4, 2.5, 1.5),
        ("v210", 4, 0, 2.5, 1.5),
        ("AYUV", 1, 0, 4.5, 4.0),
        ("VUYA", 1, 0, 4.5, 4.0),
        ("Y412_LE", 2, 4, 3.0, 3.5),
        ("AYUV64", 2, 0, 3.0, 3.5),
        ("Y410", 4, 0, 3.0, 3.5),
        ("A420", 1, 0, 5.0, 6.5),
        ("A420_10LE", 2, 0, 2.0, 1.0),
        ("A422_10LE", 2, 0, 2.5, 1.5),
        ("A444_10LE", 2, 0, 3.0, 3.5),
        ("GRAY8", 1, 0, 1.0, 0.0),
        ("GRAY16_LE", 2, 0, 1.0, 0.0),
        ("GRAY16_BE", 2, 0, 1.0, 0.0),
    ];
    for (fmt, word, shift, y_limit, c_limit) in cases {
        let src = format!(
            "videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,format={fmt},width=64,height=48"
        );
        // Samples in 8-bit units (10-bit ones / 4, 12-bit ones / 16).
        let per_level = match fmt {
            "GRAY16_LE" | "GRAY16_BE" | "P016_LE" | "Y444_16LE" | "AYUV64" => 256.0,
            f if f.contains("12") => 16.0,
            _ => 4.0,
        };
        let samples = |b: Vec<u8>| -> Vec<f64> {
            match word {
                1 => b.into_iter().map(f64::from).collect(),
                // Y410: U, Y, V (10 bits) and the 2-bit alpha of each 32-bit word.
                4 if fmt == "Y410" => b
                    .chunks_exact(4)
                    .flat_map(|c| {
                        let w = u32::from_le_bytes(c.try_into().unwrap());
                        let s = |at: u32| ((w >> at) & 0x3ff) as f64 / per_level;
                        [s(0), s(10), s(20), (w >> 30) as f64]
                    })
                    .collect(),
                // v210: each row of the 128 x 96 frame (a 384-byte row of 22 groups of 6
                // pixels) up to its last whole word of visible samples: 21 groups and the Cb Y
                // Cr of pixels 126–127; luma and chroma in their word order.
                4 => (0..96)
                    .flat_map(|r| b[r * 384..][..352].chunks_exact(4).take(21 * 4 + 1))
                    .flat_map(|c| {
                        let w = u32::from_le_bytes(c.try_into().unwrap());
                        [0, 10, 20].map(|s| ((w >> s) & 0x3ff) as f64 / per_level)
                    })
                    .collect(),
                _ => b
                    .chunks_exact(2)
                    .map(|c| {
                        let c = [c[0], c[1]];
                        let v = if fmt.ends_with("_BE") {
                            u16::from_be_bytes(c)
                        } else {
                            u16::from_le_bytes(c)
                        };
                        (v >> shift) as f64 / per_level
                    })
                    .collect(),
            }
        };
        let direct = samples(frames(&format!(
            "{src} ! adabmupscale backend=cpu ! appsink name=out"
        )));
        let around = samples(frames(&format!(
            "{src} ! videoconvert ! video/x-raw,format=RGB ! adabmupscale backend=cpu ! \
             videoconvert ! video/x-raw,format={fmt} ! appsink name=out"
        )));
        assert_eq!(direct.len(), around.len());
        // Which samples are luma: the first 128 x 96 (planar), or the Y bytes of each group of
        // four (packed 4:2:2).
        let format = gst_video::VideoFormat::from_string(fmt);
        let layout = yuv_layout(format);
        let luma = |i: usize| match (layout.packed(), layout.packed444()) {
            (Some(at), _) => i % 4 == at[0] || i % 4 == at[1],
            (_, Some(at)) => i % 4 == at[0],
            _ if fmt == "Y410" => i % 4 == 1,
            // v210's word order: Cb Y Cr, Y Cb Y, Cr Y Cb, Y Cr Y.
            _ if word == 4 => i % 2 == 1,
            _ => i < 128 * 96,
        };
        // AYUV, VUYA, Y412_LE, AYUV64, A420 and its kin: `videotestsrc`'s alpha is opaque (the
        // largest code), and stays so both ways. (A420's alpha plane follows its colour
        // planes: the samples past theirs.)
        let colour_samples: usize = layout.colour().plane_sizes(128, 96)[..3]
            .iter()
            .map(|(row, rows)| row / word.min(2) * rows)
            .sum();
        let alpha = |i: usize| {
            layout.packed444().is_some_and(|at| i % 4 == at[3])
                || (layout.alpha_plane() && i >= colour_samples)
                || (fmt == "Y410" && i % 4 == 3)
        };
        let opaque = ((1u32 << layout.depth()) - 1) as f64 / per_level.max(1.0);
        let opaque = match (word, fmt) {
            (1, _) => 255.0,
            (_, "Y410") => 3.0,
            _ => opaque,
        };
        for i in (0..direct.len()).filter(|&i| alpha(i)) {
            assert_eq!((direct[i], around[i]), (opaque, opaque), "{fmt}: alpha");
        }
        let mean = |want_luma: bool| {
            let d: Vec<f64> = (0..direct.len())
                .filter(|&i| luma(i) == want_luma && !alpha(i))
                .map(|i| (direct[i] - around[i]).abs())
                .collect();
            // (The grey formats have no chroma.)
            d.iter().sum::<f64>() / d.len().max(1) as f64
        };
        let (y, c) = (mean(true), mean(false));
        eprintln!("{fmt}: mean |difference| Y {y:.2}, chroma {c:.2}");
        // Measured (Debian 12, GStreamer 1.22, in 8-bit units): I420 3.4 / 4.3, NV12 2.5 / 1.0,
        // Y42B 2.6 / 1.3, Y444 3.0 / 2.8, I420_10LE and P010_10LE 1.3 / 0.5, Y444_10LE 2.1 / 2.2,
        // GRAY8 0.2, GRAY16_LE and GRAY16_BE 0.3, YUY2 / UYVY / YVYU 2.6 / 1.3, I422_10LE 1.5 / 0.8; the 12-bit
        // formats as their 10-bit ones (I420_12LE and P012_LE 1.26 / 0.50, I422_12LE 1.44 /
        // 0.79, Y444_12LE 2.08 / 2.22); v210 1.09 / 1.16 (a Cb/Cr swap in its word order: 16.2 /
        // 16.3); AYUV and VUYA 2.98 / 2.75, as Y444 (VUYA with U and V swapped: 10.3 / 8.7);
        // YV12 and NV61 as I420 and NV16 (YV12 read with I420's plane order: 9.9 / 10.0), P016_LE
        // 1.29 / 0.49, Y444_16LE 2.17 / 2.24, Y210 and Y212_LE as I422_10LE and I422_12LE (Y210
        // with U and V swapped: 9.5 / 7.9), Y412_LE and AYUV64 as Y444_12LE and Y444_16LE
        // (Y412_LE read as U V Y A: 10.3 / 8.9); Y410 as Y444_10LE; A420, A420_10LE,
        // A422_10LE and A444_10LE as I420, I420_10LE, I422_10LE and Y444_10LE.
        assert!(
            y < y_limit && c <= c_limit,
            "{fmt}: mean |difference| Y {y:.2}, chroma {c:.2}"
        );
    }
}

/// What a streaming server does to its streams: three pipelines at once (RGB, I420, NV12), each
/// retuned at random while frames flow — precision, model file (a bad one too), thresholds,
/// hysteresis, base bits, metric, scale, tiles, threads, the input caps, flushing seeks and
/// pauses. No error reaches the bus, every warning is one a user can act on (no NaN), and every
/// stream keeps producing frames.
#[test]
fn retuning_at_random_while_playing_never_fails() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let files = [
        model_file(&dir, &small_quant(2, QuantMode::Fq, 3), "q2.safetensors"),
        model_file(&dir, &small_fp(3, 4), "fp3.safetensors"),
        model_file(
            &dir,
            &small_quant(2, QuantMode::NonFq, 5),
            "nonfq2.safetensors",
        ),
    ];
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    let formats = ["RGB", "I420", "NV12"];
    let pipes: Vec<gst::Pipeline> = formats
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let p = gst::parse::launch(&format!(
                // smpte and snow: videotestsrc's zone plates divide by zero at some tiny sizes.
                "videotestsrc pattern={} ! capsfilter name=cf caps=video/x-raw,format={f},width={},height={} ! \
                 adabmupscale name=sr backend=cpu post-stats=true n-threads={} ! fakesink sync=false",
                i % 2,
                12 + 5 * i,
                8 + 3 * i,
                1 + i % 2
            ))
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
            p.set_state(gst::State::Playing).unwrap();
            p
        })
        .collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut frames = vec![0u64; pipes.len()];
    let mut warnings = Vec::new();
    let drain = |frames: &mut Vec<u64>, warnings: &mut Vec<String>| {
        for (k, p) in pipes.iter().enumerate() {
            for m in p.bus().unwrap().iter_timed(gst::ClockTime::ZERO) {
                match m.view() {
                    gst::MessageView::Element(e)
                        if e.structure().is_some_and(|s| s.name() == "adabm-stats") =>
                    {
                        frames[k] += 1
                    }
                    gst::MessageView::Error(e) => {
                        panic!("stream {k}: {} {:?}", e.error(), e.debug())
                    }
                    gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
                    _ => {}
                }
            }
        }
    };
    for round in 0..6 {
        for _ in 0..40 {
            for p in &pipes {
                let sr = p.by_name("sr").unwrap();
                let r = next();
                let v = r >> 8;
                match r % 15 {
                    0 => sr.set_property_from_str(
                        "precision",
                        ["fp32", "w4a4", "w8a6"][(v % 3) as usize],
                    ),
                    1 => {
                        let file = match v % 5 {
                            0 => None,
                            1 => Some(bad.to_str().unwrap()),
                            k => Some(files[k as usize - 2].to_str().unwrap()),
                        };
                        sr.set_property("model-location", file)
                    }
                    2 => sr.set_property("image-lower", (v % 80) as f64 - 1.0),
                    3 => sr.set_property("image-upper", (v % 80) as f64 - 1.0),
                    4 => sr.set_property("adaptive", v % 2 == 0),
                    5 => sr.set_property("base-bits", (v % 9) as u32),
                    6 => sr.set_property_from_str(
                        "complexity-metric",
                        ["model", "gradient", "frequency", "attention"][(v % 4) as usize],
                    ),
                    7 => sr.set_property("image-hysteresis", (v % 4) as f64 * 0.1),
                    8 => sr.set_property("tile-size", (v % 40) as u32),
                    9 => sr.set_property("scale", (v % 5) as u32),
                    10 => sr.set_property("n-threads", (v % 3) as u32),
                    11 => {
                        let f = [
                            "RGB",
                            "I420",
                            "NV12",
                            "YUY2",
                            "v210",
                            "I420_10LE",
                            "GRAY8",
                            "A420",
                            "Y410",
                            "BGRA",
                            "P010_10LE",
                            "Y444_12LE",
                        ][(v % 12) as usize];
                        let caps = format!(
                            "video/x-raw,format={f},width={},height={}",
                            1 + (v >> 2) % 40,
                            1 + (v >> 8) % 30
                        );
                        p.by_name("cf")
                            .unwrap()
                            .set_property("caps", caps.parse::<gst::Caps>().unwrap());
                    }
                    12 => {
                        p.seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::ZERO)
                            .unwrap();
                    }
                    13 => {
                        p.set_state(gst::State::Paused).unwrap();
                        p.set_state(gst::State::Playing).unwrap();
                    }
                    _ => sr.set_property("post-stats", true),
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            drain(&mut frames, &mut warnings);
        }
        // Each stream still runs: after this round's changes, every one makes another frame.
        let before = frames.clone();
        let t0 = std::time::Instant::now();
        while frames.iter().zip(&before).any(|(a, b)| a == b) {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "round {round}: a stream stopped (frames {frames:?}, before {before:?})"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
            drain(&mut frames, &mut warnings);
        }
    }
    for p in &pipes {
        p.set_state(gst::State::Null).unwrap();
    }
    assert!(
        warnings.iter().any(|w| w.contains("bad.safetensors")),
        "{warnings:?}"
    );
    for w in &warnings {
        assert!(!w.contains("NaN") && !w.is_empty(), "{w}");
    }
    eprintln!(
        "frames per stream {frames:?}, {} warnings ({} distinct)",
        warnings.len(),
        warnings
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
}
