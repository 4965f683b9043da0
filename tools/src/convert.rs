//! Conversion between reference checkpoints and our model file.
//!
//! - EDSR-PyTorch (`head.0`, `body.{i}.body.{0,2}`, `body.{N}`, `tail.0.{0,2}`, `tail.1`,
//!   `sub_mean` / `add_mean`), as in `edsr_baseline_x2-*.pt`;
//! - AdaBM (`body.{i}.conv{1,2}` with `lower_a`, `upper_a`, `upper_w`, `measure_layer` per
//!   quantized conv, `measure_l` / `measure_u` for the image thresholds).
//!
//! Keys prefixed by `module.` (DataParallel) or `model.` (EDSR-PyTorch's training wrapper) are
//! accepted.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use gstadabm::engine::model::{
    ConvParams, LayerKind, Role, f32_bytes, f32_from_bytes, layer_kind, layer_specs,
};
use gstadabm::engine::{ComplexityMetric, EdsrConfig, LayerQuant, Model, QuantConfig, QuantMode};

use crate::torch::Tensor;

/// Which reference the tensor names follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// EDSR-PyTorch.
    Edsr,
    /// AdaBM.
    AdaBm,
}

/// What a checkpoint does not say.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportOptions {
    /// Residual scaling (not stored in checkpoints): EDSR-baseline 1.0, full EDSR 0.1.
    pub res_scale: Option<f32>,
    pub rgb_range: f32,
    /// Weight and base activation bits of an AdaBM checkpoint (not stored in it).
    pub w_bits: Option<u8>,
    pub a_bits: Option<u8>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            res_scale: None,
            rgb_range: 255.0,
            w_bits: None,
            a_bits: None,
        }
    }
}

/// Reference name of one of our layers.
pub fn reference_name(ours: &str, role: Role, naming: Naming) -> String {
    match (naming, role) {
        (Naming::Edsr, Role::BlockConv1(i)) => format!("body.{i}.body.0"),
        (Naming::Edsr, Role::BlockConv2(i)) => format!("body.{i}.body.2"),
        _ => ours.to_string(),
    }
}

fn strip_prefix(tensors: Vec<(String, Tensor)>) -> HashMap<String, Tensor> {
    for p in ["module.", "model."] {
        if !tensors.is_empty() && tensors.iter().all(|(n, _)| n.starts_with(p)) {
            return tensors
                .into_iter()
                .map(|(n, t)| (n[p.len()..].to_string(), t))
                .collect();
        }
    }
    tensors.into_iter().collect()
}

fn scalar(map: &HashMap<String, Tensor>, name: &str) -> Result<Option<f32>> {
    match map.get(name) {
        None => Ok(None),
        Some(t) if t.data.len() == 1 => Ok(Some(t.data[0])),
        Some(t) => bail!("{name} should hold one value, it has shape {:?}", t.shape),
    }
}

/// Builds our model from a reference state dict.
pub fn import(tensors: Vec<(String, Tensor)>, opts: &ImportOptions) -> Result<(Model, Naming)> {
    let map = strip_prefix(tensors);
    let head = map
        .get("head.0.weight")
        .context("no head.0.weight: not an EDSR state dict")?;
    if head.shape.len() != 4 || head.shape[1] != 3 || head.shape[2..] != [3, 3] {
        bail!(
            "head.0.weight has shape {:?}, expected [F, 3, 3, 3]",
            head.shape
        );
    }
    let f = head.shape[0];
    let naming = if map.contains_key("body.0.conv1.weight") {
        Naming::AdaBm
    } else if map.contains_key("body.0.body.0.weight") {
        Naming::Edsr
    } else {
        bail!("no body.0.body.0.weight (EDSR) or body.0.conv1.weight (AdaBM)");
    };
    let first = |i: usize| match naming {
        Naming::Edsr => format!("body.{i}.body.0.weight"),
        Naming::AdaBm => format!("body.{i}.conv1.weight"),
    };
    let mut n_resblocks = 0;
    while map.contains_key(&first(n_resblocks)) {
        n_resblocks += 1;
    }
    let up0 = map
        .get("tail.0.0.weight")
        .context("no tail.0.0.weight (upsampler)")?;
    let scale = match (
        up0.shape.first().map(|&c| c / f.max(1)),
        map.contains_key("tail.0.2.weight"),
    ) {
        (Some(4), true) => 4,
        (Some(4), false) => 2,
        (Some(9), false) => 3,
        _ => bail!(
            "upsampler tail.0.0.weight has shape {:?}: not x2, x3 or x4 of {f} features",
            up0.shape
        ),
    };
    let rgb_mean = match map.get("sub_mean.bias") {
        Some(b) if b.data.len() == 3 => {
            let m = [b.data[0], b.data[1], b.data[2]].map(|v| -v / opts.rgb_range);
            if m.iter().any(|v| !(0.0..=1.0).contains(v)) {
                bail!(
                    "sub_mean.bias {:?} does not match rgb_range {} (pass the right --rgb-range)",
                    b.data,
                    opts.rgb_range
                );
            }
            m
        }
        _ => EdsrConfig::baseline(2).rgb_mean,
    };
    let config = EdsrConfig {
        scale,
        n_resblocks,
        n_feats: f,
        res_scale: opts.res_scale.unwrap_or(if f >= 256 { 0.1 } else { 1.0 }),
        rgb_range: opts.rgb_range,
        rgb_mean,
    };
    let quantized = naming == Naming::AdaBm && map.contains_key("body.0.conv1.lower_a");
    let mode = quantized.then(|| {
        if map.contains_key("head.0.lower_a") {
            QuantMode::Fq
        } else {
            QuantMode::NonFq
        }
    });
    let mut convs = Vec::new();
    let mut layers = BTreeMap::new();
    for spec in layer_specs(&config) {
        let rn = reference_name(&spec.name, spec.role, naming);
        let w = map
            .get(&format!("{rn}.weight"))
            .with_context(|| format!("missing tensor {rn}.weight"))?;
        let want = [spec.cout, spec.cin, 3, 3];
        if w.shape != want {
            bail!("{rn}.weight has shape {:?}, expected {want:?}", w.shape);
        }
        let bias = match map.get(&format!("{rn}.bias")) {
            Some(b) if b.data.len() == spec.cout => b.data.clone(),
            Some(b) => bail!(
                "{rn}.bias has shape {:?}, expected [{}]",
                b.shape,
                spec.cout
            ),
            None => vec![0.0; spec.cout],
        };
        if layer_kind(mode, spec.role) != LayerKind::Float {
            let get = |k: &str| -> Result<f32> {
                scalar(&map, &format!("{rn}.{k}"))?
                    .with_context(|| format!("quantized layer {rn} lacks {rn}.{k}"))
            };
            let m = if layer_kind(mode, spec.role) == LayerKind::Adaptive {
                scalar(&map, &format!("{rn}.measure_layer"))?.unwrap_or(0.0)
            } else {
                0.0
            };
            layers.insert(
                spec.name.clone(),
                LayerQuant {
                    l: get("lower_a")?,
                    u: get("upper_a")?,
                    u_w: get("upper_w")?,
                    m,
                },
            );
        }
        convs.push(ConvParams {
            spec,
            weight: w.data.clone(),
            bias,
        });
    }
    let quant = match mode {
        None => None,
        Some(mode) => Some(QuantConfig {
            mode,
            w_bits: opts.w_bits.context(
                "AdaBM checkpoints do not store the bit-widths: pass --w-bits and --a-bits",
            )?,
            a_bits: opts.a_bits.context(
                "AdaBM checkpoints do not store the bit-widths: pass --w-bits and --a-bits",
            )?,
            complexity: ComplexityMetric::Gradient,
            image_lower: scalar(&map, "measure_l")?
                .context("no measure_l / measure_u (checkpoint trained without --imgwise)")?,
            image_upper: scalar(&map, "measure_u")?
                .context("no measure_l / measure_u (checkpoint trained without --imgwise)")?,
            layers,
        }),
    };
    let model = Model::new(config, quant, convs).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((model, naming))
}

/// Our model as a reference state dict (with `sub_mean` / `add_mean` as EDSR-PyTorch has them).
pub fn export(model: &Model, naming: Naming) -> Vec<(String, Tensor)> {
    let t = |shape: Vec<usize>, data: Vec<f32>| Tensor { shape, data };
    let cfg = &model.config;
    let eye: Vec<f32> = (0..9).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
    let mean: Vec<f32> = cfg.rgb_mean.iter().map(|m| m * cfg.rgb_range).collect();
    let mut out = vec![
        (
            "sub_mean.weight".to_string(),
            t(vec![3, 3, 1, 1], eye.clone()),
        ),
        (
            "sub_mean.bias".to_string(),
            t(vec![3], mean.iter().map(|m| -m).collect()),
        ),
    ];
    let mode = model.quant.as_ref().map(|q| q.mode);
    for c in &model.convs {
        let rn = reference_name(&c.spec.name, c.spec.role, naming);
        let s = &c.spec;
        out.push((
            format!("{rn}.weight"),
            t(vec![s.cout, s.cin, 3, 3], c.weight.clone()),
        ));
        out.push((format!("{rn}.bias"), t(vec![s.cout], c.bias.clone())));
        if let Some(q) = model.quant.as_ref().and_then(|q| q.layers.get(&s.name)) {
            out.push((format!("{rn}.lower_a"), t(vec![1], vec![q.l])));
            out.push((format!("{rn}.upper_a"), t(vec![1], vec![q.u])));
            out.push((format!("{rn}.upper_w"), t(vec![1], vec![q.u_w])));
            if layer_kind(mode, s.role) == LayerKind::Adaptive {
                out.push((format!("{rn}.measure_layer"), t(vec![1], vec![q.m])));
            }
        }
    }
    out.push(("add_mean.weight".to_string(), t(vec![3, 3, 1, 1], eye)));
    out.push(("add_mean.bias".to_string(), t(vec![3], mean)));
    if let Some(q) = &model.quant {
        out.push(("measure_l".to_string(), t(vec![1], vec![q.image_lower])));
        out.push(("measure_u".to_string(), t(vec![1], vec![q.image_upper])));
    }
    out
}

/// A reference state dict as safetensors (F32, reference names, no metadata).
pub fn to_safetensors(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone(), f32_bytes(&t.data)))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(safetensors::serialize(views, None)?)
}

/// Reads a safetensors file with reference names (F32, F16 or BF16 tensors).
pub fn from_safetensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .context("not a safetensors file (truncated?)")?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let b = view.data();
        let data: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => f32_from_bytes(b),
            safetensors::Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            other => bail!("tensor {name}: dtype {other:?} is not supported"),
        };
        out.push((
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
