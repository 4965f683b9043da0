//! The batch-upscaling job end to end: an H.264 clip made in the test is decoded, upscaled,
//! re-encoded with x264 and muxed to MP4; the result is decoded again and checked.

mod common;

use common::*;
use gstadabm::engine::QuantMode;

#[test]
fn decode_upscale_encode_mp4() {
    gst::init().unwrap();
    gstadabm::plugin_register_static().unwrap();
    for f in ["x264enc", "mp4mux", "qtdemux", "decodebin", "avdec_h264"] {
        if gst::ElementFactory::find(f).is_none() {
            eprintln!(
                "SKIPPED: GStreamer element {f} is missing (install gstreamer1.0-plugins-ugly/-good and gstreamer1.0-libav)"
            );
            return;
        }
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
