//! The batch-upscaling job end to end: an H.264 clip made in the test is decoded, upscaled,
//! re-encoded with x264 and muxed to MP4; the result is decoded again and checked.

mod common;

use common::*;
use gstadabm::engine::QuantMode;

/// Initialises GStreamer with the element registered; false (after a visible SKIPPED line
/// naming what to install) when one of `elements` is missing.
fn init_with(elements: &[&str], install: &str) -> bool {
    gst::init().unwrap();
    gstadabm::plugin_register_static().unwrap();
    match elements
        .iter()
        .find(|f| gst::ElementFactory::find(f).is_none())
    {
        Some(f) => {
            eprintln!("SKIPPED: GStreamer element {f} is missing (install {install})");
            false
        }
        None => true,
    }
}

#[test]
fn decode_upscale_encode_mp4() {
    if !init_with(
        &["x264enc", "mp4mux", "qtdemux", "decodebin", "avdec_h264"],
        "gstreamer1.0-plugins-ugly/-good and gstreamer1.0-libav",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("x2.safetensors");
    small_quant(2, QuantMode::Fq, 1).save(&model).unwrap();
    let clip = dir.path().join("in.mp4");
    let out = dir.path().join("out.mp4");
    run_samples(&format!(
        "videotestsrc num-buffers=12 pattern=smpte ! video/x-raw,width=48,height=32,framerate=12/1 ! x264enc ! mp4mux ! filesink location={}",
        clip.display()
    ));
    run_samples(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! adabmupscale model-location={} ! videoconvert ! video/x-raw,format=I420 ! x264enc ! mp4mux ! filesink location={}",
        clip.display(),
        model.display(),
        out.display()
    ));
    let samples = run_samples(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=out sync=false",
        out.display()
    ));
    assert_eq!(samples.len(), 12);
    let info = gst_video::VideoInfo::from_caps(samples[0].caps().unwrap()).unwrap();
    assert_eq!((info.width(), info.height()), (96, 64));
    assert_eq!(info.fps(), gst::Fraction::new(12, 1));
}

/// WebM with transparency as a user has it (VP9 with an alpha channel: tests/data/vp9-alpha.webm,
/// written by scripts/make-vp9-alpha.py): `decodebin` gives A420, which goes straight into the
/// element (no `videoconvert`) and comes out at twice the size, A420 still, with the decoded
/// alpha plane upscaled bilinearly.
#[test]
fn webm_with_alpha_goes_through_as_a420() {
    if !init_with(
        &["matroskademux", "vp9alphadecodebin", "vp9dec", "decodebin"],
        "gstreamer1.0-plugins-good and -bad",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("x2.safetensors");
    small_quant(2, QuantMode::Fq, 1).save(&model).unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vp9-alpha.webm");
    let decoded = run_samples(&format!(
        "filesrc location={file} ! decodebin ! appsink name=out sync=false"
    ));
    let upscaled = run_samples(&format!(
        "filesrc location={file} ! decodebin ! adabmupscale model-location={} backend=cpu ! \
         appsink name=out sync=false",
        model.display()
    ));
    assert_eq!((decoded.len(), upscaled.len()), (10, 10));
    // The alpha plane (the fourth) of a sample, without its row padding.
    let alpha = |s: &gst::Sample| -> (gst_video::VideoInfo, Vec<u8>) {
        let info = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
        let map = s.buffer().unwrap().map_readable().unwrap();
        let (w, h) = (info.width() as usize, info.height() as usize);
        let (off, stride) = (info.offset()[3], info.stride()[3] as usize);
        let a = (0..h)
            .flat_map(|y| map[off + y * stride..][..w].to_vec())
            .collect();
        (info, a)
    };
    for (d, u) in decoded.iter().zip(&upscaled) {
        let ((di, da), (ui, ua)) = (alpha(d), alpha(u));
        assert_eq!(di.format(), gst_video::VideoFormat::A420);
        assert_eq!(ui.format(), gst_video::VideoFormat::A420, "no conversion");
        assert_eq!((ui.width(), ui.height()), (320, 192));
        let (lo, hi) = (da.iter().min().unwrap(), da.iter().max().unwrap());
        assert!(*lo < 100 && *hi > 200, "the stripes' alpha: {lo}..{hi}");
        let want = gstadabm::engine::frame::upscale_plane_bilinear(&da, 160, 96, 2);
        assert!(ua == want, "alpha upscaled bilinearly");
    }
}
