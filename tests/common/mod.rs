//! Helpers shared by the integration tests: small models made in code.
#![allow(dead_code)]

use std::collections::HashMap;

use gstadabm::engine::model::{ConvParams, layer_specs};
use gstadabm::engine::random::{quantize_on_synthetic, random_model};
use gstadabm::engine::{EdsrConfig, Model, QuantMode};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// A small EDSR (feats, blocks) at `scale`.
pub fn small_config(scale: u32, n_feats: usize, n_resblocks: usize) -> EdsrConfig {
    EdsrConfig {
        n_feats,
        n_resblocks,
        ..EdsrConfig::baseline(scale)
    }
}

pub fn small_fp(scale: u32, seed: u64) -> Model {
    random_model(small_config(scale, 8, 2), seed).unwrap()
}

pub fn small_quant(scale: u32, mode: QuantMode, seed: u64) -> Model {
    quantize_on_synthetic(&small_fp(scale, seed), mode, 4, 4, seed).unwrap()
}

/// A model whose output is nearest-neighbour pixel replication, through the full EDSR graph:
/// the head copies the three input channels, every residual block and the last body conv
/// have zero weights, each upsampler conv copies channel c into the r² shuffle slots of c,
/// and the tail copies channels 0..3 back out.
pub fn replication_model(
    scale: u32,
    n_feats: usize,
    n_resblocks: usize,
    rgb_mean: [f32; 3],
) -> Model {
    let mut cfg = small_config(scale, n_feats, n_resblocks);
    cfg.rgb_mean = rgb_mean;
    let convs = layer_specs(&cfg)
        .into_iter()
        .map(|spec| {
            let (cin, cout) = (spec.cin, spec.cout);
            let mut weight = vec![0.0; cout * cin * 9];
            let centre = |o: usize, i: usize| (o * cin + i) * 9 + 4;
            match spec.role {
                gstadabm::engine::model::Role::Head | gstadabm::engine::model::Role::Tail => {
                    for c in 0..3 {
                        weight[centre(c, c)] = 1.0;
                    }
                }
                gstadabm::engine::model::Role::Up { r, .. } => {
                    for c in 0..3 {
                        for s in 0..r * r {
                            weight[centre(c * r * r + s, c)] = 1.0;
                        }
                    }
                }
                _ => {}
            }
            ConvParams {
                spec,
                weight,
                bias: vec![0.0; cout],
            }
        })
        .collect();
    Model::new(cfg, None, convs).unwrap()
}

/// Rebuilds a model file, letting `edit` change each tensor (name, shape, bytes) and the
/// metadata; `None` from `edit` drops the tensor.
pub fn rewrite(
    bytes: &[u8],
    edit: impl Fn(&str, Vec<usize>, Vec<u8>) -> Option<(String, Vec<usize>, Vec<u8>)>,
    meta: impl Fn(&mut HashMap<String, String>),
) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let (_, md) = SafeTensors::read_metadata(bytes).unwrap();
    let mut md = md.metadata().clone().unwrap();
    meta(&mut md);
    let mut kept = Vec::new();
    for (name, t) in st.tensors() {
        if let Some(e) = edit(&name, t.shape().to_vec(), t.data().to_vec()) {
            kept.push(e);
        }
    }
    let views: Vec<(String, TensorView)> = kept
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, Some(md)).unwrap()
}

pub fn keep(n: &str, s: Vec<usize>, d: Vec<u8>) -> Option<(String, Vec<usize>, Vec<u8>)> {
    Some((n.to_string(), s, d))
}

/// A folder holding only the plugin built with these tests, for the `GST_PLUGIN_PATH` of a
/// child process (`gst-launch-1.0`, the C example): the `libgstadabm.so` cargo built with the
/// test binary (`target/<profile>/deps/`; `cargo test` does not copy it to
/// `target/<profile>/`, where only `cargo build` puts one, possibly older), linked into a
/// fresh temporary folder so that GStreamer scans nothing else. None when there is none.
pub fn plugin_dir() -> Option<tempfile::TempDir> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    let so = [
        deps.join("libgstadabm.so"),
        deps.parent()?.join("libgstadabm.so"),
    ]
    .into_iter()
    .find(|p| p.exists())?;
    let dir = tempfile::tempdir().ok()?;
    std::os::unix::fs::symlink(&so, dir.path().join("libgstadabm.so")).ok()?;
    Some(dir)
}

#[cfg(feature = "element")]
/// Runs the pipeline `desc` to EOS and returns what its appsink named `out` (if any) received;
/// an error on the bus panics with its message.
pub fn run_samples(desc: &str) -> Vec<gst::Sample> {
    use gst::prelude::*;
    let p = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = p
        .by_name("out")
        .map(|s| s.downcast::<gst_app::AppSink>().unwrap());
    p.set_state(gst::State::Playing).unwrap();
    let mut samples = Vec::new();
    let bus = p.bus().unwrap();
    loop {
        if let Some(s) = &sink {
            while let Some(sample) = s.try_pull_sample(gst::ClockTime::from_mseconds(10)) {
                samples.push(sample);
            }
        }
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            if let gst::MessageView::Error(e) = msg.view() {
                panic!("{desc}: {} {:?}", e.error(), e.debug());
            }
            if let Some(s) = &sink {
                while let Some(sample) = s.try_pull_sample(gst::ClockTime::ZERO) {
                    samples.push(sample);
                }
            }
            break;
        }
    }
    p.set_state(gst::State::Null).unwrap();
    samples
}
