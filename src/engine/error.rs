//! Typed errors of the engine. Every message says what was expected and what was found.

use thiserror::Error;

/// Errors from loading a model or running the engine.
#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("model file is empty (0 bytes): expected a safetensors file")]
    Empty,
    #[error("model file is not a valid safetensors file: {0}")]
    Format(String),
    #[error("model metadata: {0}")]
    Metadata(String),
    #[error("model metadata field `{field}`: expected {expected}, found {found}")]
    Field {
        field: String,
        expected: String,
        found: String,
    },
    #[error("tensor `{0}` is missing from the model file")]
    MissingTensor(String),
    #[error("tensor `{0}` is not part of this model configuration (unexpected tensor)")]
    UnexpectedTensor(String),
    #[error("tensor `{name}`: expected {expected}, found {found}")]
    Tensor {
        name: String,
        expected: String,
        found: String,
    },
    #[error("quantizer of layer `{layer}`: {msg}")]
    Quant { layer: String, msg: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("invalid setting: {0}")]
    Setting(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
