//! Turns texts into token ids with the model's own `tokenizer.json`.
//!
//! Truncation is set to the model's `max_seq_length` (special tokens
//! included), overriding whatever the file fixes; padding is turned off here
//! because batches are padded later, to the longest text of each batch, once
//! the inference thread has decided which texts share a forward pass. Every
//! truncated text is flagged so the caller can report how many there were.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::EmbedError;

/// One tokenised text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, special tokens included.
    pub ids: Vec<i64>,
    /// Token type (segment) ids, one per token.
    pub type_ids: Vec<i64>,
    /// Whether the text was cut to the model's maximum length.
    pub truncated: bool,
}

impl Tokens {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for no tokens at all (never the case with special tokens).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A model's tokenizer, truncating to its maximum length.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    path: PathBuf,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from `dir`, truncating to `max_len` tokens.
    pub fn load(dir: &Path, max_len: usize) -> Result<Self, EmbedError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(EmbedError::MissingFile(path));
        }
        let err = |reason: String| EmbedError::Tokenizer {
            path: path.clone(),
            reason,
        };
        let mut inner = Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            max_len,
            path,
        })
    }

    /// The maximum number of tokens of one text.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The tokenizer file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tokenises `texts` in order, on the calling thread.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Tokens>, EmbedError> {
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let enc = self.inner.encode_fast(text.as_ref(), true).map_err(|e| {
                    EmbedError::Tokenize {
                        index,
                        reason: e.to_string(),
                    }
                })?;
                Ok(Tokens {
                    ids: enc.get_ids().iter().map(|&i| i64::from(i)).collect(),
                    type_ids: enc.get_type_ids().iter().map(|&i| i64::from(i)).collect(),
                    truncated: !enc.get_overflowing().is_empty(),
                })
            })
            .collect()
    }
}
