//! The one error type of the embedding engine.
//!
//! Every failure a model directory, a request or the inference thread can
//! cause ends up here, with the path or name it concerns: loading never
//! panics, and a bad model is reported as clearly as a bad request.

use std::path::PathBuf;

/// What can go wrong when loading a model or embedding texts.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory does not exist (or is not a directory).
    #[error("model directory {0} does not exist or is not a directory")]
    MissingDir(PathBuf),
    /// A file the model needs is absent.
    #[error("model file {0} is missing")]
    MissingFile(PathBuf),
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is not valid JSON or lacks a field.
    #[error("invalid {path}: {reason}")]
    BadConfig {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model is valid but of an architecture or mode this engine lacks.
    #[error("unsupported model in {path}: {reason}")]
    Unsupported {
        /// The file that says so.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// `model.safetensors` cannot be parsed, or its tensors do not fit the
    /// configuration.
    #[error("corrupt or mismatched weights {path}: {reason}")]
    BadWeights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `tokenizer.json` cannot be loaded or configured.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A text could not be tokenised.
    #[error("cannot tokenise text {index}: {reason}")]
    Tokenize {
        /// Position of the text in the request.
        index: usize,
        /// The tokenizer's message.
        reason: String,
    },
    /// A request named a model that is not loaded.
    #[error("unknown model {name} (loaded: {loaded})")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// `name@version` of every loaded model, comma separated.
        loaded: String,
    },
    /// Two model directories would get the same name.
    #[error("two models are named {0}")]
    DuplicateModel(String),
    /// No model directory was given.
    #[error("no model directories given")]
    NoModels,
    /// The precision cannot run on the device.
    #[error("precision {precision} is not supported on {device}")]
    UnsupportedPrecision {
        /// The precision asked for.
        precision: String,
        /// The device.
        device: String,
    },
    /// bf16 asked for on a CPU that does not run it natively (through
    /// ATen it would be ~5× slower than fp32; oneDNN refuses it).
    #[error(
        "precision bf16 refused: this CPU has no native bf16 ({0}), and without it bf16 runs \
         ~5x slower than fp32; use --precision fp32, or auto to pick what the CPU runs"
    )]
    NoNativeBf16(String),
    /// An option is out of range.
    #[error("invalid embedding option: {0}")]
    BadOptions(String),
    /// A torch operation failed while loading.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// A forward pass failed; every text in that batch gets this error.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The inference thread is gone (it panicked or the engine was dropped).
    #[error("the inference thread has stopped")]
    EngineStopped,
}

impl EmbedError {
    /// True when the request named a model this process does not have: the
    /// job may succeed on a worker that loaded it.
    pub fn is_unknown_model(&self) -> bool {
        matches!(self, EmbedError::UnknownModel { .. })
    }
}
