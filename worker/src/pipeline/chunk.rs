//! Token-aware chunking with `text-splitter`: chunks are sized in the
//! embedding model's own tokens, overlap by a configurable number of tokens,
//! and break at the largest semantic boundary that fits (Markdown sections
//! and paragraphs first, then sentences, then words).

use std::path::Path;

use hopper_shared::documents::NewChunk;
use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

/// Default chunk size in tokens.
pub const DEFAULT_TOKENS: usize = 200;
/// Default overlap in tokens.
pub const DEFAULT_OVERLAP: usize = 20;

/// Counts a text's tokens with the model's tokenizer (special tokens
/// excluded: they are added once per chunk at embedding time).
#[derive(Clone)]
pub struct TokenCounter(Tokenizer);

impl TokenCounter {
    /// Loads `tokenizer.json` from a model directory, without its fixed
    /// truncation and padding.
    pub fn load(model_dir: &Path) -> anyhow::Result<Self> {
        let path = model_dir.join("tokenizer.json");
        let mut t = Tokenizer::from_file(&path)
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", path.display()))?;
        t.with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        t.with_padding(None);
        Ok(Self(t))
    }

    /// Tokens in `text`.
    pub fn count(&self, text: &str) -> usize {
        self.0
            .encode(text, false)
            .map(|e| e.get_ids().len())
            .unwrap_or_else(|_| text.split_whitespace().count())
    }
}

impl ChunkSizer for TokenCounter {
    fn size(&self, chunk: &str) -> usize {
        self.count(chunk)
    }
}

/// Splits `text` into chunks of at most `tokens` tokens overlapping by
/// `overlap`; Markdown is split along its structure.
pub fn chunk(
    text: &str,
    markdown: bool,
    counter: &TokenCounter,
    tokens: usize,
    overlap: usize,
) -> anyhow::Result<Vec<NewChunk>> {
    let config = ChunkConfig::new(tokens.max(8))
        .with_sizer(counter.clone())
        .with_overlap(overlap.min(tokens / 2))
        .map_err(|e| anyhow::anyhow!("chunk settings: {e}"))?;
    let pieces: Vec<&str> = if markdown {
        MarkdownSplitter::new(config).chunks(text).collect()
    } else {
        TextSplitter::new(config).chunks(text).collect()
    };
    Ok(pieces
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| NewChunk {
            tokens: counter.count(p) as i32,
            text: p.to_owned(),
        })
        .collect())
}
