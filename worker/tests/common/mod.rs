//! Helpers shared by the embedding engine's tests against
//! sentence-transformers (`golden.rs`: all-MiniLM-L6-v2; `second_model.rs`:
//! a random 768-d BERT beside it): where the models are, the reference
//! vectors' file format, and the check of an engine's vectors against them.
//!
//! Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hopper_worker::embed::{BatchOptions, Embedder, LinearKernels};
use serde::Deserialize;

/// Reference vectors as `scripts/bench/golden.py` writes them
/// (`fixtures/golden_minilm.json`, `scripts/make-test-model --reference`).
#[derive(Debug, Deserialize)]
pub struct Reference {
    pub model_sha256: String,
    pub max_seq_length: usize,
    pub dim: usize,
    pub texts: Vec<String>,
    pub input_ids: Vec<Vec<i64>>,
    pub truncated: Vec<bool>,
    pub embeddings: Vec<Vec<f32>>,
}

impl Reference {
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    }
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file under `worker/tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `$HOPPER_CACHE` (scripts/env.sh), else the repository's `.cache`.
pub fn hopper_cache() -> PathBuf {
    std::env::var_os("HOPPER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

/// all-MiniLM-L6-v2 (`scripts/setup model`), found through `HOPPER_MODEL_DIR`.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("HOPPER_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| hopper_cache().join("models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "no model in {} (run `scripts/setup model` and `. scripts/env.sh`)",
        dir.display()
    );
    dir
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// Two threads, split into `streams` (the engine's choice for `None`).
pub fn two_thread_options(kernels: LinearKernels, streams: Option<usize>) -> BatchOptions {
    BatchOptions {
        threads: Some(2),
        streams,
        kernels,
        ..BatchOptions::default()
    }
}

/// Embeds the reference's texts with `model` and checks what must match
/// exactly (count, dimension, truncations, the version naming the weights'
/// sha256); returns the minimum cosine to the reference vectors.
pub async fn min_cosine(model: &Embedder, reference: &Reference) -> f64 {
    let setup = format!(
        "{} {} {} × {} stream(s)",
        model.name(),
        model.precision(),
        model.kernels(),
        model.streams()
    );
    assert_eq!(model.dim(), reference.dim, "{setup}: dimension");
    let out = model.embed(reference.texts.clone()).await.unwrap();
    assert_eq!(out.vectors.len(), reference.texts.len());
    assert_eq!(
        out.truncated,
        reference.truncated.iter().filter(|t| **t).count(),
        "{setup}: truncated count"
    );
    assert_eq!(
        out.model_version,
        format!("{}@{}", model.name(), &reference.model_sha256[..12])
    );
    let mut min = f64::MAX;
    for (i, (v, r)) in out.vectors.iter().zip(&reference.embeddings).enumerate() {
        assert_eq!(v.len(), reference.dim);
        let c = cosine(v, r);
        eprintln!(
            "{setup} text {i:2}: cos {c:.7} {:?}",
            reference.texts[i].chars().take(30).collect::<String>()
        );
        min = min.min(c);
    }
    eprintln!(
        "{setup}: min cosine {min:.7} over {} texts",
        reference.texts.len()
    );
    min
}
