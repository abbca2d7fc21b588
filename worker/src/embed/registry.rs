//! The models a worker serves, named and versioned.
//!
//! Each model directory becomes `name@<first 12 hex of
//! sha256(model.safetensors)>`; the name is the directory's name unless a
//! [`ModelSpec`] says otherwise. All models of one registry share one device
//! and one inference thread. Lookup takes a name, with or without
//! `@version`; an unknown one is an error naming what is loaded.

use std::{
    io::Read,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use sha2::{Digest, Sha256};
use tch::Device;

use super::{
    EmbedError,
    config::{ModelConfig, io_err},
    engine::{BatchOptions, Embedder, Engine, ModelEntry},
    model::{Encoder, Precision},
    stats::EmbedStats,
    tokenize::TextTokenizer,
};

/// Hex digits of the weights' sha256 that make a model's version.
pub const VERSION_HEX_LEN: usize = 12;

/// Where a model lives and what to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name requests use.
    pub name: String,
    /// The sentence-transformers model directory.
    pub dir: PathBuf,
}

impl ModelSpec {
    /// A model named after its directory.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.to_string_lossy().into_owned());
        Self { name, dir }
    }
}

impl FromStr for ModelSpec {
    type Err = String;
    /// `DIR` or `NAME=DIR`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
                if name.contains('@') {
                    return Err(format!("model name `{name}` may not contain `@`"));
                }
                Ok(Self {
                    name: name.to_string(),
                    dir: dir.into(),
                })
            }
            Some(_) => Err(format!("`{s}` is not DIR or NAME=DIR")),
            None if s.is_empty() => Err("empty model directory".into()),
            None => Ok(Self::from_dir(s)),
        }
    }
}

/// The loaded models of one device.
#[derive(Debug)]
pub struct ModelRegistry {
    models: Vec<Embedder>,
}

impl ModelRegistry {
    /// Loads the models in `dirs` (named after their directories) with the
    /// device's default [`BatchOptions`]. Blocking: reads and hashes the
    /// weights.
    pub fn load(
        dirs: &[PathBuf],
        device: Device,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        let specs: Vec<ModelSpec> = dirs.iter().map(ModelSpec::from_dir).collect();
        Self::load_with(&specs, device, precision, &BatchOptions::for_device(device))
    }

    /// Loads `specs` onto `device` in `precision`, starts the device's
    /// inference thread, and (with `options.warmup`) runs one small pass per
    /// model so that start-up, not the first job, pays for initialisation.
    pub fn load_with(
        specs: &[ModelSpec],
        device: Device,
        precision: Precision,
        options: &BatchOptions,
    ) -> Result<Self, EmbedError> {
        if specs.is_empty() {
            return Err(EmbedError::NoModels);
        }
        precision.check(device)?;
        // Each model's length is checked against the budget below; the
        // rest before anything is set from the options.
        options.validate(0)?;
        let layout = options.layout(device, torch_default_threads());
        // Loading and the warm-up run on this thread with a stream's threads.
        tch::set_num_threads(layout.1 as i32);
        let mut entries = Vec::with_capacity(specs.len());
        let mut encoders = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            if entries.iter().any(|e: &ModelEntry| e.name == spec.name) {
                return Err(EmbedError::DuplicateModel(spec.name.clone()));
            }
            let cfg = ModelConfig::load(&spec.dir)?;
            options.validate(cfg.max_seq_length)?;
            let tokenizer = TextTokenizer::load(&spec.dir, cfg.max_seq_length)?;
            let hash = weights_version(&spec.dir.join("model.safetensors"))?;
            let encoder = Encoder::load_with(&cfg, device, precision, options.kernels)?;
            if options.warmup {
                let probe = tokenizer.encode(&["warm-up"])?;
                encoder.embed(&probe.iter().collect::<Vec<_>>())?;
            }
            entries.push(ModelEntry {
                name: spec.name.clone(),
                version: format!("{}@{hash}", spec.name),
                dim: encoder.dim(),
                max_seq_length: cfg.max_seq_length,
                index,
                tokenizer: Arc::new(tokenizer),
            });
            encoders.push(encoder);
        }
        let engine = Arc::new(Engine::start(encoders, device, precision, options, layout)?);
        let models = entries
            .into_iter()
            .map(|m| Embedder {
                model: Arc::new(m),
                engine: engine.clone(),
            })
            .collect();
        Ok(Self { models })
    }

    /// The model called `name` (`NAME` or `NAME@VERSION`).
    pub fn get(&self, name: &str) -> Result<Embedder, EmbedError> {
        let found = match name.split_once('@') {
            Some(_) => self.models.iter().find(|m| m.version() == name),
            None => self.models.iter().find(|m| m.name() == name),
        };
        found.cloned().ok_or_else(|| EmbedError::UnknownModel {
            name: name.to_string(),
            loaded: self.versions().join(", "),
        })
    }

    /// The model called `name`, or the default (first loaded) for `None`.
    pub fn resolve(&self, name: Option<&str>) -> Result<Embedder, EmbedError> {
        match name {
            Some(n) => self.get(n),
            None => Ok(self.default_model().clone()),
        }
    }

    /// The first model loaded.
    pub fn default_model(&self) -> &Embedder {
        // `load_with` refuses an empty list, so there is always one.
        &self.models[0]
    }

    /// Every loaded model, in load order.
    pub fn models(&self) -> &[Embedder] {
        &self.models
    }

    /// `name@version` of every loaded model.
    pub fn versions(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|m| m.version().to_string())
            .collect()
    }

    /// Texts the engine can still accept without waiting.
    pub fn available_capacity(&self) -> usize {
        self.default_model().available_capacity()
    }

    /// The engine's counters.
    pub fn stats(&self) -> EmbedStats {
        self.default_model().stats()
    }
}

/// Torch's own intra-op thread count (one per core, or `OMP_NUM_THREADS`),
/// read before any registry changes it.
fn torch_default_threads() -> usize {
    static DEFAULT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| tch::get_num_threads().max(1) as usize)
}

/// The first [`VERSION_HEX_LEN`] hex digits of the file's sha256.
pub fn weights_version(path: &Path) -> Result<String, EmbedError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(hex[..VERSION_HEX_LEN].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s: ModelSpec = "/m/all-MiniLM-L6-v2".parse().unwrap();
        assert_eq!(s.name, "all-MiniLM-L6-v2");
        let s: ModelSpec = "mini=/m/x".parse().unwrap();
        assert_eq!(
            (s.name.as_str(), s.dir.as_path()),
            ("mini", Path::new("/m/x"))
        );
        assert!("a@b=/m".parse::<ModelSpec>().is_err());
        assert!("=/m".parse::<ModelSpec>().is_err());
    }

    #[test]
    fn version_is_a_sha256_prefix() {
        let p = std::env::temp_dir().join(format!("hopper-ver-{}", std::process::id()));
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(weights_version(&p).unwrap(), "ba7816bf8f01");
        let _ = std::fs::remove_file(p);
    }
}
