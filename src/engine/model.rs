//! The model file: safetensors with the EDSR/AdaBM module tree as tensor names and the whole
//! configuration in the metadata. Specified in `docs/model-format.md`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// The model-file format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest accepted network sizes (a file claiming more is rejected before allocation).
pub const MAX_FEATS: usize = 1024;
pub const MAX_RESBLOCKS: usize = 256;

/// EDSR architecture.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdsrConfig {
    pub scale: u32,
    pub n_resblocks: usize,
    pub n_feats: usize,
    pub res_scale: f32,
    pub rgb_range: f32,
    pub rgb_mean: [f32; 3],
}

impl EdsrConfig {
    /// EDSR-baseline (16 blocks, 64 features) at `scale`.
    pub fn baseline(scale: u32) -> Self {
        Self {
            scale,
            n_resblocks: 16,
            n_feats: 64,
            res_scale: 1.0,
            rgb_range: 255.0,
            rgb_mean: [0.4488, 0.4371, 0.4040],
        }
    }
}

/// Which layers are quantized (method page, "Which layers").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantMode {
    /// Residual-block convs adaptive; head, last body conv, upsampler and tail in float.
    #[serde(rename = "non-fq")]
    NonFq,
    /// Residual-block convs and the last body conv adaptive; head, upsampler and tail at 8/8.
    #[serde(rename = "fq")]
    Fq,
}

/// How image complexity is measured for b_I.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComplexityMetric {
    /// Average Sobel gradient density of the luma (the reference's metric).
    #[serde(rename = "gradient")]
    Gradient,
    /// Share of high-frequency DCT energy of the luma ([`super::complexity::frequency_density`]).
    #[serde(rename = "frequency")]
    Frequency,
    /// Concentration of windowed self-attention over 8x8 luma patch tokens
    /// ([`super::complexity::attention_density`]).
    #[serde(rename = "attention")]
    Attention,
}

/// Quantizer parameters of one layer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LayerQuant {
    /// Activation lower bound.
    pub l: f32,
    /// Activation upper bound.
    pub u: f32,
    /// Weight clip.
    pub u_w: f32,
    /// Layer bit factor m_k (b_L = round(clamp(m_k, -1, 1))); 0 for fixed 8-bit layers.
    pub m: f32,
}

/// Quantization settings; absent for a floating-point model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    pub mode: QuantMode,
    /// Weight bits of adaptive layers.
    pub w_bits: u8,
    /// Base activation bits b_base of adaptive layers.
    pub a_bits: u8,
    pub complexity: ComplexityMetric,
    /// l_i2b: below it an image gets b_I = -1.
    pub image_lower: f32,
    /// u_i2b: above it an image gets b_I = +1.
    pub image_upper: f32,
    /// Per quantized layer, keyed by module name (`body.3.conv1`).
    pub layers: BTreeMap<String, LayerQuant>,
}

/// What a layer does in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Head,
    BlockConv1(usize),
    BlockConv2(usize),
    BodyLast,
    /// Upsampler conv of stage `k`, followed by PixelShuffle(r).
    Up {
        stage: usize,
        r: usize,
    },
    Tail,
}

/// How a layer is quantized under a mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Float,
    /// Activation bits adapt per image and layer; weights at `w_bits`.
    Adaptive,
    /// 8-bit weights and activations.
    Fixed8,
}

/// One conv layer of the architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    pub name: String,
    pub role: Role,
    pub cin: usize,
    pub cout: usize,
}

/// The conv layers of an EDSR configuration, in execution order.
pub fn layer_specs(cfg: &EdsrConfig) -> Vec<LayerSpec> {
    let f = cfg.n_feats;
    let spec = |name: String, role, cin, cout| LayerSpec {
        name,
        role,
        cin,
        cout,
    };
    let mut v = vec![spec("head.0".into(), Role::Head, 3, f)];
    for i in 0..cfg.n_resblocks {
        v.push(spec(format!("body.{i}.conv1"), Role::BlockConv1(i), f, f));
        v.push(spec(format!("body.{i}.conv2"), Role::BlockConv2(i), f, f));
    }
    v.push(spec(
        format!("body.{}", cfg.n_resblocks),
        Role::BodyLast,
        f,
        f,
    ));
    let stages: &[usize] = match cfg.scale {
        2 => &[2],
        3 => &[3],
        4 => &[2, 2],
        _ => &[],
    };
    for (k, &r) in stages.iter().enumerate() {
        v.push(spec(
            format!("tail.0.{}", 2 * k),
            Role::Up { stage: k, r },
            f,
            r * r * f,
        ));
    }
    v.push(spec("tail.1".into(), Role::Tail, f, 3));
    v
}

/// The quantization kind of a layer role under `mode` (None: floating-point model).
pub fn layer_kind(mode: Option<QuantMode>, role: Role) -> LayerKind {
    match (mode, role) {
        (None, _) => LayerKind::Float,
        (Some(_), Role::BlockConv1(_) | Role::BlockConv2(_)) => LayerKind::Adaptive,
        (Some(QuantMode::Fq), Role::BodyLast) => LayerKind::Adaptive,
        (Some(QuantMode::Fq), _) => LayerKind::Fixed8,
        (Some(QuantMode::NonFq), _) => LayerKind::Float,
    }
}

/// Weights of one conv, PyTorch layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvParams {
    pub spec: LayerSpec,
    /// `[cout][cin][3][3]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A validated model.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub config: EdsrConfig,
    pub quant: Option<QuantConfig>,
    /// In the order of [`layer_specs`].
    pub convs: Vec<ConvParams>,
}

fn field(field: &str, expected: impl Into<String>, found: impl ToString) -> Error {
    Error::Field {
        field: field.into(),
        expected: expected.into(),
        found: found.to_string(),
    }
}

fn check_finite(name: &str, v: f32) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(field(name, "a finite number", v))
    }
}

impl EdsrConfig {
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.scale, 2..=4) {
            return Err(field("config.scale", "2, 3 or 4", self.scale));
        }
        if self.n_feats == 0 || self.n_feats > MAX_FEATS {
            return Err(field(
                "config.n_feats",
                format!("1..={MAX_FEATS}"),
                self.n_feats,
            ));
        }
        if self.n_resblocks > MAX_RESBLOCKS {
            return Err(field(
                "config.n_resblocks",
                format!("0..={MAX_RESBLOCKS}"),
                self.n_resblocks,
            ));
        }
        check_finite("config.res_scale", self.res_scale)?;
        if !(self.rgb_range.is_finite() && self.rgb_range > 0.0) {
            return Err(field(
                "config.rgb_range",
                "a positive number",
                self.rgb_range,
            ));
        }
        for (i, m) in self.rgb_mean.iter().enumerate() {
            check_finite(&format!("config.rgb_mean[{i}]"), *m)?;
        }
        Ok(())
    }
}

impl QuantConfig {
    pub fn validate(&self, cfg: &EdsrConfig) -> Result<()> {
        for (name, b) in [("quant.w_bits", self.w_bits), ("quant.a_bits", self.a_bits)] {
            if !(1..=8).contains(&b) {
                return Err(field(name, "bits in 1..=8", b));
            }
        }
        check_finite("quant.image_lower", self.image_lower)?;
        check_finite("quant.image_upper", self.image_upper)?;
        if self.image_lower > self.image_upper {
            return Err(field(
                "quant.image_lower",
                format!("<= image_upper ({})", self.image_upper),
                self.image_lower,
            ));
        }
        let specs = layer_specs(cfg);
        for s in &specs {
            let quantized = layer_kind(Some(self.mode), s.role) != LayerKind::Float;
            match (quantized, self.layers.get(&s.name)) {
                (true, None) => {
                    return Err(Error::Quant {
                        layer: s.name.clone(),
                        msg: "missing quantizer parameters (l, u, u_w, m)".into(),
                    });
                }
                (false, Some(_)) => {
                    return Err(Error::Quant {
                        layer: s.name.clone(),
                        msg: format!(
                            "has quantizer parameters but is floating point in {:?} mode",
                            self.mode
                        ),
                    });
                }
                (true, Some(q)) => validate_layer_quant(&s.name, q)?,
                (false, None) => {}
            }
        }
        if let Some(name) = self
            .layers
            .keys()
            .find(|n| !specs.iter().any(|s| &s.name == *n))
        {
            return Err(Error::Quant {
                layer: name.clone(),
                msg: "no such layer in this configuration".into(),
            });
        }
        Ok(())
    }
}

fn validate_layer_quant(layer: &str, q: &LayerQuant) -> Result<()> {
    let err = |msg: String| Error::Quant {
        layer: layer.into(),
        msg,
    };
    for (n, v) in [("l", q.l), ("u", q.u), ("u_w", q.u_w), ("m", q.m)] {
        if !v.is_finite() {
            return Err(err(format!("{n} must be finite, found {v}")));
        }
    }
    if q.l >= q.u {
        return Err(err(format!(
            "expected l < u, found l = {} and u = {}",
            q.l, q.u
        )));
    }
    if q.u_w <= 0.0 {
        return Err(err(format!("expected u_w > 0, found {}", q.u_w)));
    }
    Ok(())
}

/// `bytes` (a safetensors file) with the keys of its JSON header and of the header's
/// `__metadata__` in sorted order. safetensors writes the metadata from a `HashMap`, whose
/// order changes from run to run, so the same model gave different file bytes (a committed
/// model rewritten unchanged showed up as modified). Same length: the header is re-padded
/// with spaces, as safetensors pads it, and the tensor data is untouched.
fn sorted_header(mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    use serde_json::Value;
    let bad = |why: &str| Error::Format(format!("safetensors header: {why}"));
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .filter(|&n| bytes.len() >= 8 + n)
        .ok_or_else(|| bad("truncated"))?;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(&e.to_string()))?;
    let header: BTreeMap<String, Value> = header
        .into_iter()
        .map(|(k, v)| match v {
            Value::Object(m) if k == "__metadata__" => {
                let sorted: BTreeMap<String, Value> = m.into_iter().collect();
                let v = serde_json::to_value(sorted).map_err(|e| bad(&e.to_string()))?;
                Ok((k, v))
            }
            v => Ok((k, v)),
        })
        .collect::<Result<_>>()?;
    let mut text = serde_json::to_string(&header).map_err(|e| bad(&e.to_string()))?;
    if text.len() > n {
        return Err(bad("grew when sorted"));
    }
    text.extend(std::iter::repeat_n(' ', n - text.len()));
    bytes[8..8 + n].copy_from_slice(text.as_bytes());
    Ok(bytes)
}

/// Little-endian bytes of f32 values (safetensors F32 data).
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// f32 values of little-endian bytes (safetensors F32 data); a trailing partial value is
/// ignored.
pub fn f32_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Model {
    /// Builds and validates a model from parts.
    pub fn new(
        config: EdsrConfig,
        quant: Option<QuantConfig>,
        convs: Vec<ConvParams>,
    ) -> Result<Self> {
        let m = Self {
            config,
            quant,
            convs,
        };
        m.validate()?;
        Ok(m)
    }

    /// Validates configuration, quantizer parameters and every tensor.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        if let Some(q) = &self.quant {
            q.validate(&self.config)?;
        }
        let specs = layer_specs(&self.config);
        if specs.len() != self.convs.len() {
            return Err(Error::Input(format!(
                "expected {} conv layers, found {}",
                specs.len(),
                self.convs.len()
            )));
        }
        for (s, c) in specs.iter().zip(&self.convs) {
            if &c.spec != s {
                return Err(Error::Input(format!(
                    "layer {:?} where {:?} was expected",
                    c.spec, s
                )));
            }
            check_values(&format!("{}.weight", s.name), &c.weight, s.cout * s.cin * 9)?;
            check_values(&format!("{}.bias", s.name), &c.bias, s.cout)?;
        }
        Ok(())
    }

    /// Loads and validates a model file.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_bytes(&read_model_file(path.as_ref())?)
    }

    /// Parses and validates a model from the bytes of a model file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::Empty);
        }
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            Error::Format(format!(
                "{e} (is the file truncated or not a safetensors file?)"
            ))
        })?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Format(e.to_string()))?;
        let md: HashMap<String, String> = meta.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            md.get(k)
                .ok_or_else(|| Error::Metadata(format!("missing key `{k}`")))
        };
        let version = get("format_version")?;
        if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
            return Err(field("format_version", FORMAT_VERSION.to_string(), version));
        }
        let config: EdsrConfig = serde_json::from_str(get("config")?)
            .map_err(|e| Error::Metadata(format!("`config`: {e}")))?;
        config.validate()?;
        let quant: Option<QuantConfig> = match md.get("quant") {
            None => None,
            Some(s) => Some(
                serde_json::from_str(s).map_err(|e| Error::Metadata(format!("`quant`: {e}")))?,
            ),
        };
        if let Some(q) = &quant {
            q.validate(&config)?;
        }
        let specs = layer_specs(&config);
        let mut expected: Vec<String> = Vec::new();
        for s in &specs {
            expected.push(format!("{}.weight", s.name));
            expected.push(format!("{}.bias", s.name));
        }
        let mut names: Vec<&str> = st.names();
        names.sort();
        if let Some(n) = names.iter().find(|n| !expected.iter().any(|e| e == *n)) {
            return Err(Error::UnexpectedTensor(n.to_string()));
        }
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| Error::MissingTensor(name.to_string()))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
                return Err(Error::Tensor {
                    name: name.into(),
                    expected: format!("{shape:?} F32"),
                    found: format!("{:?} {:?}", t.shape(), t.dtype()),
                });
            }
            let v = f32_from_bytes(t.data());
            check_values(name, &v, shape.iter().product())?;
            Ok(v)
        };
        let mut convs = Vec::with_capacity(specs.len());
        for s in specs {
            let weight = read(&format!("{}.weight", s.name), &[s.cout, s.cin, 3, 3])?;
            let bias = read(&format!("{}.bias", s.name), &[s.cout])?;
            convs.push(ConvParams {
                spec: s,
                weight,
                bias,
            });
        }
        Self::new(config, quant, convs)
    }

    /// Serialises to the bytes of a model file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let json = |e: serde_json::Error| Error::Metadata(e.to_string());
        let mut md = HashMap::new();
        md.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        md.insert(
            "config".to_string(),
            serde_json::to_string(&self.config).map_err(json)?,
        );
        if let Some(q) = &self.quant {
            md.insert("quant".to_string(), serde_json::to_string(q).map_err(json)?);
        }
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for c in &self.convs {
            let s = &c.spec;
            data.push((
                format!("{}.weight", s.name),
                vec![s.cout, s.cin, 3, 3],
                f32_bytes(&c.weight),
            ));
            data.push((format!("{}.bias", s.name), vec![s.cout], f32_bytes(&c.bias)));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, shape, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Format(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let bytes =
            safetensors::serialize(views, Some(md)).map_err(|e| Error::Format(e.to_string()))?;
        sorted_header(bytes)
    }

    /// Writes a model file (the same bytes for the same model: see `sorted_header`).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Number of parameters (weights and biases).
    pub fn n_params(&self) -> usize {
        self.convs
            .iter()
            .map(|c| c.weight.len() + c.bias.len())
            .sum()
    }

    /// Multiply-accumulates per LR input pixel.
    pub fn macs_per_lr_pixel(&self) -> f64 {
        self.layer_macs_per_lr_pixel().iter().sum()
    }

    /// Multiply-accumulates per LR input pixel of each conv, in layer order.
    pub fn layer_macs_per_lr_pixel(&self) -> Vec<f64> {
        self.convs
            .iter()
            .map(|c| {
                let area = match c.spec.role {
                    Role::Tail => (self.config.scale * self.config.scale) as f64,
                    Role::Up { stage: 1, .. } => 4.0,
                    _ => 1.0,
                };
                area * (c.spec.cin * c.spec.cout * 9) as f64
            })
            .collect()
    }

    /// BitOPs per LR pixel (Σ MACs · b_w · b_a) when the adaptive layers run at
    /// `adaptive_bits` (in layer order): fixed 8-bit layers count 8·8, floating-point
    /// layers 32·32.
    pub fn bitops_per_lr_pixel(&self, adaptive_bits: &[u8]) -> f64 {
        let mode = self.quant.as_ref().map(|q| q.mode);
        let w_bits = self.quant.as_ref().map_or(32, |q| q.w_bits) as f64;
        let mut a = adaptive_bits.iter();
        self.layer_macs_per_lr_pixel()
            .iter()
            .zip(&self.convs)
            .map(|(macs, c)| {
                macs * match layer_kind(mode, c.spec.role) {
                    LayerKind::Float => 1024.0,
                    LayerKind::Fixed8 => 64.0,
                    LayerKind::Adaptive => w_bits * *a.next().unwrap_or(&32) as f64,
                }
            })
            .sum()
    }
}

fn check_values(name: &str, v: &[f32], len: usize) -> Result<()> {
    if v.len() != len {
        return Err(Error::Tensor {
            name: name.into(),
            expected: format!("{len} values"),
            found: format!("{} values", v.len()),
        });
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Tensor {
            name: name.into(),
            expected: "finite values".into(),
            found: format!("{} at flat index {i}", v[i]),
        });
    }
    Ok(())
}

/// The safetensors crate's bound on a header's length.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The most tensor bytes a model file may declare: far above any EDSR (EDSR x4 with 256
/// features is 0.17 GB in f32), far below what a stray path can make us allocate.
pub const MAX_TENSOR_BYTES: u64 = 4 << 30;

/// The bytes of a model file, read only as far as its header says: the header's length, the
/// header (bounded by the safetensors limit), then the tensors it declares (bounded by
/// [`MAX_TENSOR_BYTES`]) and one byte more, so that trailing data is still seen: a file whose
/// header declares more is refused before its tensors are read. Devices, FIFOs, sockets and
/// directories are refused by type. What is wrong with a short or malformed file is left to
/// [`Model::from_bytes`], which names it.
fn read_model_file(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    regular_file(path).map_err(io)?;
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    (&mut file).take(8).read_to_end(&mut bytes).map_err(io)?;
    let Ok(len) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Ok(bytes);
    };
    let header = u64::from_le_bytes(len);
    if header > MAX_HEADER_BYTES {
        return Ok(bytes);
    }
    (&mut file)
        .take(header)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let Some(tensors) = declared_tensor_bytes(&bytes[8..]) else {
        return Ok(bytes);
    };
    if tensors > MAX_TENSOR_BYTES {
        return Err(Error::Format(format!(
            "its header declares {tensors} bytes of tensors, more than the {} GiB any model may have",
            MAX_TENSOR_BYTES >> 30
        )));
    }
    (&mut file)
        .take(tensors + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

/// Fails, naming what `path` is, unless it is a regular file (or a link to one): opening a FIFO
/// blocks until someone writes to it, and a device such as `/dev/zero` never ends. For every
/// file read whole (model files here, the tools' inputs).
pub fn regular_file(path: &std::path::Path) -> std::io::Result<()> {
    let kind = std::fs::metadata(path)?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{} is not a regular file", file_kind(kind)),
    ))
}

/// What a file that is not a regular file is, for an error message.
fn file_kind(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() { "a directory" } else { "it" }
}

/// The end of the last tensor a safetensors header declares; None when the header is not a
/// JSON object of tensors with data offsets.
fn declared_tensor_bytes(header: &[u8]) -> Option<u64> {
    let map: HashMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    map.iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .try_fold(0u64, |end, e| Some(end.max(e?)))
}
