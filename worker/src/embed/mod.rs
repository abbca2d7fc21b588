//! The embedding engine: sentence-transformers models on libtorch (tch).
//!
//! [`ModelRegistry::load`] reads each model directory
//! ([`config`], [`tokenize`], [`model`]), names it `name@sha256-prefix`
//! ([`registry`]) and starts one inference thread for the device
//! ([`engine`]), which batches the texts of all concurrent callers by length
//! and token budget ([`batcher`]). Callers get an [`Embedder`] and
//! `embed(texts).await` — their own vectors, in order, plus how many texts
//! were truncated. Counters for metrics are in [`stats`]. The device itself
//! is chosen by [`crate::device`]; the precision and kernels by [`choice`],
//! following what the CPU runs natively ([`cpu`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), hopper_worker::embed::EmbedError> {
//! use hopper_worker::embed::{ModelRegistry, Precision};
//! let dirs = vec![std::path::PathBuf::from(".cache/models/all-MiniLM-L6-v2")];
//! let registry = ModelRegistry::load(&dirs, tch::Device::Cpu, Precision::Fp32)?;
//! let model = registry.resolve(None)?;
//! let out = model.embed(vec!["hello".into(), "world".into()]).await?;
//! assert_eq!(out.vectors.len(), 2);
//! # Ok(()) }
//! ```

pub mod batcher;
pub mod choice;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod model;
pub mod onednn;
pub mod registry;
pub mod stats;
pub mod tokenize;

pub use choice::EngineChoice;
pub use config::{ModelConfig, Pooling};
pub use cpu::CpuBf16;
pub use engine::{BatchOptions, EmbedOutput, Embedder};
pub use error::EmbedError;
pub use model::{Encoder, LinearKernels, Precision, PrecisionChoice};
pub use registry::{ModelRegistry, ModelSpec};
pub use stats::EmbedStats;
pub use tokenize::{TextTokenizer, Tokens};

#[cfg(test)]
mod tests {
    /// The handler moves these across tasks and into `anyhow`.
    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<super::EmbedError>();
        check::<super::Embedder>();
        check::<super::ModelRegistry>();
        check::<super::EmbedOutput>();
    }
}
