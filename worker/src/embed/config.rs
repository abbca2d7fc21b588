//! Reads a sentence-transformers model directory's configuration.
//!
//! Four files describe a model: `config.json` (the transformer: sizes, layer
//! count, activation), `sentence_bert_config.json` (`max_seq_length`),
//! `modules.json` (where the pooling config lives and whether a `Normalize`
//! module follows) and the pooling module's `config.json` (mean, CLS, max or
//! mean-sqrt-len). Nothing here is specific to one model: every BERT-family
//! checkpoint (all-MiniLM, bge, e5, ...) loads; other architectures are
//! refused with a message naming their `model_type`.
//!
//! Both layouts sentence-transformers writes are read. Up to 5.x, the pooling
//! config has one boolean per mode (`pooling_mode_mean_tokens`, ...) and
//! `sentence_bert_config.json` holds `max_seq_length`. Version 6's `save`
//! writes one `"pooling_mode": "mean"` string instead, and the length only as
//! the tokenizer's `model_max_length` (`tokenizer_config.json`), which is
//! where sentence-transformers 6 reads it from too. The length is therefore
//! `max_seq_length` if given, else `model_max_length` if given, else the
//! model's `max_position_embeddings`, and never more than the latter.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::EmbedError;

/// `model_type` values this encoder implements.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert"];

/// The transformer's activation in its feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: `gelu`.
    Gelu,
    /// Tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    /// `relu`.
    Relu,
}

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the non-padding tokens.
    Mean,
    /// The first (`[CLS]`) token.
    Cls,
    /// Element-wise max over the non-padding tokens.
    Max,
    /// Sum of the non-padding tokens divided by the square root of their count.
    MeanSqrtLen,
}

/// Everything the encoder needs to know about one model directory.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// `model_type` from config.json.
    pub model_type: String,
    /// Rows of the word-embedding table.
    pub vocab_size: i64,
    /// Width of every hidden state and of the output vector.
    pub hidden_size: i64,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: i64,
    /// Width of the feed-forward block.
    pub intermediate_size: i64,
    /// Rows of the position-embedding table.
    pub max_position_embeddings: i64,
    /// Rows of the token-type table.
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Feed-forward activation.
    pub hidden_act: Activation,
    /// Token id used for padding.
    pub pad_token_id: i64,
    /// Longest input in tokens (special tokens included); longer texts are
    /// truncated. `max_seq_length`, capped by `max_position_embeddings`.
    pub max_seq_length: usize,
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether vectors are L2-normalised (a `Normalize` module is listed).
    pub normalize: bool,
}

#[derive(Deserialize)]
struct BertJson {
    vocab_size: i64,
    hidden_size: i64,
    num_hidden_layers: usize,
    num_attention_heads: i64,
    intermediate_size: i64,
    max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: i64,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    pad_token_id: Option<i64>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

#[derive(Deserialize)]
struct ModuleJson {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

impl ModelConfig {
    /// Reads and checks the configuration of the model in `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        if !dir.is_dir() {
            return Err(EmbedError::MissingDir(dir.to_path_buf()));
        }
        let path = dir.join("config.json");
        let raw = read_json(&path)?;
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(EmbedError::Unsupported {
                path,
                reason: format!(
                    "model_type {model_type:?} (supported: {})",
                    SUPPORTED_MODEL_TYPES.join(", ")
                ),
            });
        }
        let bert: BertJson = serde_json::from_value(raw).map_err(|e| bad(&path, e))?;
        let hidden_act = match bert.hidden_act.as_str() {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(EmbedError::Unsupported {
                    path,
                    reason: format!("hidden_act {other:?} (supported: gelu, gelu_new, relu)"),
                });
            }
        };
        if let Some(p) = bert.position_embedding_type.as_deref()
            && p != "absolute"
        {
            return Err(EmbedError::Unsupported {
                path,
                reason: format!("position_embedding_type {p:?} (supported: absolute)"),
            });
        }
        let positive = [
            ("vocab_size", bert.vocab_size),
            ("hidden_size", bert.hidden_size),
            ("num_hidden_layers", bert.num_hidden_layers as i64),
            ("num_attention_heads", bert.num_attention_heads),
            ("intermediate_size", bert.intermediate_size),
            ("max_position_embeddings", bert.max_position_embeddings),
            ("type_vocab_size", bert.type_vocab_size),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(bad(&path, format!("{name} must be positive, is {v}")));
        }
        if bert.hidden_size % bert.num_attention_heads != 0 {
            return Err(bad(
                &path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    bert.hidden_size, bert.num_attention_heads
                ),
            ));
        }

        let max_positions = bert.max_position_embeddings as usize;
        let max_seq_length = match read_max_seq_length(dir)? {
            Some(n) => Some(n),
            None => read_model_max_length(dir)?,
        }
        .unwrap_or(max_positions)
        .min(max_positions);
        if max_seq_length < 2 {
            return Err(bad(
                &dir.join("sentence_bert_config.json"),
                "max_seq_length must be at least 2",
            ));
        }
        let (pooling, normalize) = read_modules(dir)?;
        refuse_a_default_prompt(dir)?;
        Ok(ModelConfig {
            dir: dir.to_path_buf(),
            model_type,
            vocab_size: bert.vocab_size,
            hidden_size: bert.hidden_size,
            num_hidden_layers: bert.num_hidden_layers,
            num_attention_heads: bert.num_attention_heads,
            intermediate_size: bert.intermediate_size,
            max_position_embeddings: bert.max_position_embeddings,
            type_vocab_size: bert.type_vocab_size,
            layer_norm_eps: bert.layer_norm_eps,
            hidden_act,
            pad_token_id: bert.pad_token_id.unwrap_or(0),
            max_seq_length,
            pooling,
            normalize,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
}

/// `max_seq_length` from sentence_bert_config.json, if the file exists.
fn read_max_seq_length(dir: &Path) -> Result<Option<usize>, EmbedError> {
    let path = dir.join("sentence_bert_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let v = read_json(&path)?;
    match v.get("max_seq_length") {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| bad(&path, "max_seq_length is not a positive integer")),
    }
}

/// The tokenizer's `model_max_length` from tokenizer_config.json, if the
/// file names one. Tokenizers saved without a known length carry a huge
/// placeholder (transformers' `VERY_LARGE_INTEGER`, 1e30, often written as a
/// float): anything that is not a whole number of at most a million tokens
/// counts as not named.
fn read_model_max_length(dir: &Path) -> Result<Option<usize>, EmbedError> {
    let path = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let v = read_json(&path)?;
    Ok(v.get("model_max_length")
        .and_then(Value::as_u64)
        .filter(|&n| n <= 1_000_000)
        .map(|n| n as usize))
}

/// Refuses a model whose `config_sentence_transformers.json` names a
/// non-empty default prompt: sentence-transformers puts that text before
/// every input it encodes, which this engine does not, so the vectors would
/// differ from the model's own without a word. Prompts that are only named
/// (used when a caller asks for one) change nothing by default.
fn refuse_a_default_prompt(dir: &Path) -> Result<(), EmbedError> {
    let path = dir.join("config_sentence_transformers.json");
    if !path.exists() {
        return Ok(());
    }
    let v = read_json(&path)?;
    let Some(name) = v.get("default_prompt_name").and_then(Value::as_str) else {
        return Ok(());
    };
    let prompt = v
        .get("prompts")
        .and_then(|p| p.get(name))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if prompt.is_empty() {
        return Ok(());
    }
    Err(EmbedError::Unsupported {
        path,
        reason: format!(
            "default_prompt_name {name:?} (prompt {prompt:?}): the engine embeds texts as given; \
             set default_prompt_name to null, or prepend the prompt to the texts yourself"
        ),
    })
}

/// Pooling mode and normalisation from modules.json and the pooling config.
///
/// Without modules.json, sentence-transformers builds mean pooling and no
/// `Normalize`; so does this.
fn read_modules(dir: &Path) -> Result<(Pooling, bool), EmbedError> {
    let modules_path = dir.join("modules.json");
    if !modules_path.exists() {
        return Ok((Pooling::Mean, false));
    }
    let modules: Vec<ModuleJson> =
        serde_json::from_value(read_json(&modules_path)?).map_err(|e| bad(&modules_path, e))?;
    let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
    let pooling = match modules.iter().find(|m| m.kind.ends_with(".Pooling")) {
        None => Pooling::Mean,
        Some(m) => read_pooling(&dir.join(&m.path).join("config.json"))?,
    };
    if let Some(m) = modules.iter().find(|m| {
        !(m.kind.ends_with(".Transformer")
            || m.kind.ends_with(".Pooling")
            || m.kind.ends_with(".Normalize"))
    }) {
        return Err(EmbedError::Unsupported {
            path: modules_path,
            reason: format!(
                "module {} (supported: Transformer, Pooling, Normalize)",
                m.kind
            ),
        });
    }
    Ok((pooling, normalize))
}

fn read_pooling(path: &Path) -> Result<Pooling, EmbedError> {
    let v = read_json(path)?;
    // sentence-transformers 6: one mode by name (a list of several is
    // concatenated pooling). Up to 5.x: a boolean per mode.
    let named: Vec<String> = match v.get("pooling_mode") {
        None | Some(Value::Null) => LEGACY_FLAGS
            .iter()
            .filter(|(flag, _)| v.get(*flag).and_then(Value::as_bool).unwrap_or(false))
            .map(|(_, name)| (*name).to_owned())
            .collect(),
        Some(Value::String(name)) => vec![name.clone()],
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(path, format!("pooling_mode lists {n}, not a mode name")))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(bad(
                path,
                format!("pooling_mode is {other}, not a mode name or a list of them"),
            ));
        }
    };
    match named.as_slice() {
        [name] => match name.as_str() {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            "mean_sqrt_len_tokens" => Ok(Pooling::MeanSqrtLen),
            "weightedmean" | "lasttoken" => Err(EmbedError::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "pooling mode {name} (supported: mean, cls, max, mean_sqrt_len_tokens, one at a time)"
                ),
            }),
            other => Err(bad(path, format!("unknown pooling mode {other:?}"))),
        },
        [] => Err(bad(path, "no pooling mode is enabled")),
        _ => Err(EmbedError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "more than one pooling mode ({}: concatenated pooling)",
                named.join(", ")
            ),
        }),
    }
}

/// The pooling config's boolean per mode (sentence-transformers up to 5.x)
/// and the mode's name in the one-string form of version 6.
const LEGACY_FLAGS: &[(&str, &str)] = &[
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
];

/// Reads a JSON file, telling a missing file from an unreadable or invalid one.
pub(crate) fn read_json(path: &Path) -> Result<Value, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| bad(path, e))
}

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> EmbedError {
    if e.kind() == std::io::ErrorKind::NotFound {
        EmbedError::MissingFile(path.to_path_buf())
    } else {
        EmbedError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

fn bad(path: &Path, reason: impl ToString) -> EmbedError {
    EmbedError::BadConfig {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hopper-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const BGE_LIKE: &str = r#"{"model_type":"bert","vocab_size":30522,"hidden_size":384,
        "num_hidden_layers":12,"num_attention_heads":12,"intermediate_size":1536,
        "max_position_embeddings":512,"type_vocab_size":2,"layer_norm_eps":1e-12,
        "hidden_act":"gelu","pad_token_id":0}"#;

    #[test]
    fn reads_a_cls_pooled_bert_config() {
        let d = tmpdir("bge");
        write(&d, "config.json", BGE_LIKE);
        write(
            &d,
            "sentence_bert_config.json",
            r#"{"max_seq_length": 512}"#,
        );
        write(
            &d,
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(
            &d,
            "1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
        );
        let c = ModelConfig::load(&d).unwrap();
        assert_eq!(c.num_hidden_layers, 12);
        assert_eq!(c.pooling, Pooling::Cls);
        assert!(c.normalize);
        assert_eq!(c.max_seq_length, 512);
        assert_eq!(c.head_dim(), 32);
    }

    #[test]
    fn refuses_other_architectures_by_name() {
        let d = tmpdir("mpnet");
        write(
            &d,
            "config.json",
            r#"{"model_type":"mpnet","hidden_size":768}"#,
        );
        let e = ModelConfig::load(&d).unwrap_err().to_string();
        assert!(
            e.contains("\"mpnet\"") && e.contains("supported: bert"),
            "{e}"
        );
    }

    #[test]
    fn names_missing_dir_file_and_field() {
        let e = ModelConfig::load(Path::new("/nonexistent/model")).unwrap_err();
        assert!(matches!(e, EmbedError::MissingDir(_)), "{e}");
        let d = tmpdir("empty");
        let e = ModelConfig::load(&d).unwrap_err();
        assert!(matches!(e, EmbedError::MissingFile(_)), "{e}");
        write(
            &d,
            "config.json",
            r#"{"model_type":"bert","hidden_size":384}"#,
        );
        let e = ModelConfig::load(&d).unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
    }

    /// What sentence-transformers 6's `save` writes (all-MiniLM-L6-v2 saved
    /// by 6.2.0, the pinned version): the mode by name, the length only in
    /// the tokenizer's config.
    fn write_st6_layout(d: &Path, pooling: &str, tokenizer_config: &str) {
        write(d, "config.json", BGE_LIKE);
        write(
            d,
            "sentence_bert_config.json",
            r#"{"transformer_task": "feature-extraction", "modality_config": {"text":
                {"method": "forward", "method_output_name": "last_hidden_state"}},
                "module_output_name": "token_embeddings"}"#,
        );
        write(
            d,
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.base.modules.transformer.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.base.modules.normalize.Normalize"}]"#,
        );
        write(d, "1_Pooling/config.json", pooling);
        write(d, "tokenizer_config.json", tokenizer_config);
    }

    #[test]
    fn reads_the_layout_sentence_transformers_6_saves() {
        let d = tmpdir("st6");
        write_st6_layout(
            &d,
            r#"{"embedding_dimension": 384, "pooling_mode": "cls", "include_prompt": true}"#,
            r#"{"model_max_length": 256, "max_length": 128}"#,
        );
        let c = ModelConfig::load(&d).unwrap();
        assert_eq!(
            (c.pooling, c.normalize, c.max_seq_length),
            (Pooling::Cls, true, 256)
        );
        // The placeholder of a tokenizer saved without a length: the model's own.
        write(
            d.as_path(),
            "tokenizer_config.json",
            r#"{"model_max_length": 1000000000000000019884624838656}"#,
        );
        assert_eq!(ModelConfig::load(&d).unwrap().max_seq_length, 512);
        // A one-element list is that mode.
        write(
            d.as_path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode": ["mean_sqrt_len_tokens"]}"#,
        );
        assert_eq!(ModelConfig::load(&d).unwrap().pooling, Pooling::MeanSqrtLen);
    }

    #[test]
    fn refuses_a_default_prompt_it_would_not_prepend() {
        let d = tmpdir("prompt");
        write_st6_layout(&d, r#"{"pooling_mode": "mean"}"#, "{}");
        let config = |default: &str| {
            format!(
                r#"{{"prompts": {{"query": "query: ", "document": ""}}, "default_prompt_name": {default}}}"#
            )
        };
        for fine in ["null", r#""document""#] {
            write(&d, "config_sentence_transformers.json", &config(fine));
            ModelConfig::load(&d).unwrap();
        }
        write(
            &d,
            "config_sentence_transformers.json",
            &config(r#""query""#),
        );
        let e = ModelConfig::load(&d).unwrap_err().to_string();
        assert!(
            e.contains(r#"default_prompt_name "query" (prompt "query: ")"#),
            "{e}"
        );
    }

    #[test]
    fn max_seq_length_wins_over_the_tokenizers_length() {
        let d = tmpdir("both-lengths");
        write_st6_layout(
            &d,
            r#"{"pooling_mode": "mean"}"#,
            r#"{"model_max_length": 512}"#,
        );
        write(
            &d,
            "sentence_bert_config.json",
            r#"{"max_seq_length": 256}"#,
        );
        let c = ModelConfig::load(&d).unwrap();
        assert_eq!((c.pooling, c.max_seq_length), (Pooling::Mean, 256));
    }

    #[test]
    fn refuses_pooling_it_does_not_implement_by_name() {
        let d = tmpdir("st6-bad");
        for (pooling, says) in [
            (r#"{"pooling_mode": "lasttoken"}"#, "pooling mode lasttoken"),
            (
                r#"{"pooling_mode": ["cls", "mean"]}"#,
                "cls, mean: concatenated",
            ),
            (
                r#"{"pooling_mode": "median"}"#,
                "unknown pooling mode \"median\"",
            ),
            (r#"{"pooling_mode": 3}"#, "pooling_mode is 3"),
            (
                r#"{"pooling_mode_weightedmean_tokens": true}"#,
                "pooling mode weightedmean",
            ),
            (
                r#"{"pooling_mode_cls_token": true, "pooling_mode_max_tokens": true}"#,
                "cls, max",
            ),
        ] {
            write_st6_layout(&d, pooling, "{}");
            let e = ModelConfig::load(&d).unwrap_err().to_string();
            assert!(e.contains(says), "{pooling}: {e}");
        }
    }

    #[test]
    fn without_modules_json_pools_by_mean_and_caps_length() {
        let d = tmpdir("bare");
        write(&d, "config.json", BGE_LIKE);
        write(
            &d,
            "sentence_bert_config.json",
            r#"{"max_seq_length": 4096}"#,
        );
        let c = ModelConfig::load(&d).unwrap();
        assert_eq!(
            (c.pooling, c.normalize, c.max_seq_length),
            (Pooling::Mean, false, 512)
        );
    }
}
