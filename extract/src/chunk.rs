//! Token-aware chunking with `text-splitter`: chunks are sized in the
//! embedding model's own tokens, overlap by a configurable number of tokens,
//! and break at the largest semantic boundary that fits (Markdown sections
//! and paragraphs first, then sentences, then words).
//!
//! The work stays linear in the text, whatever its shape:
//!
//! - The text is tokenized once, in windows of [`window_bytes`], and the
//!   splitter's many probes of candidate chunks (a dozen or more per chunk)
//!   count the window's tokens that fall in the candidate's range, a binary
//!   search, instead of tokenizing it again. A token cut by a range counts as
//!   one: where a chunk starts or ends inside a word, it may be a token
//!   smaller than it could have been, never larger.
//! - A chunk also holds at most [`MAX_BYTES_PER_TOKEN`] bytes per token of
//!   its budget. Ordinary text has 3–6 bytes per token; only runs the
//!   tokenizer reads as one unknown token (a 25 MB "word") reach the bound,
//!   which keeps such chunks finite.
//! - Windows are cut at the strongest boundary near their end (a blank line,
//!   a line break, a sentence, a space). The splitter re-reads the rest of
//!   the current paragraph or line for every chunk (quadratic in a 25 MB
//!   single line); the window bounds that. No chunk spans two windows and
//!   overlap does not cross them; a text shorter than one window is chunked
//!   as a whole.

use std::{cell::RefCell, path::Path};

use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

/// Default chunk size in tokens.
pub const DEFAULT_TOKENS: usize = 200;
/// Default overlap in tokens.
pub const DEFAULT_OVERLAP: usize = 20;
/// Bytes a chunk may hold per token of its budget.
pub const MAX_BYTES_PER_TOKEN: usize = 32;

/// Counts a text's tokens with the model's tokenizer (special tokens
/// excluded: they are added once per chunk at embedding time).
#[derive(Clone)]
pub struct TokenCounter(Tokenizer);

impl TokenCounter {
    /// Loads `tokenizer.json` from a model directory, without its fixed
    /// truncation and padding.
    pub fn load(model_dir: &Path) -> Result<Self, String> {
        let path = model_dir.join("tokenizer.json");
        let mut t = Tokenizer::from_file(&path)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        t.with_truncation(None)
            .map_err(|e| format!("tokenizer: {e}"))?;
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

    /// Where `text`'s tokens are: their byte ranges, in order.
    fn tokens(&self, text: &str) -> Option<Tokens> {
        let encoding = self.0.encode(text, false).ok()?;
        let (starts, ends) = encoding.get_offsets().iter().copied().unzip();
        Some(Tokens { starts, ends })
    }
}

/// The byte ranges of a window's tokens.
#[derive(Default)]
struct Tokens {
    starts: Vec<usize>,
    ends: Vec<usize>,
}

impl Tokens {
    /// Tokens that overlap `start..end`.
    fn within(&self, start: usize, end: usize) -> usize {
        let first = self.ends.partition_point(|&e| e <= start);
        let past = self.starts.partition_point(|&s| s < end);
        past.saturating_sub(first)
    }
}

/// The window being chunked and its tokens.
#[derive(Default)]
struct Window {
    /// Address of its first byte.
    base: usize,
    len: usize,
    tokens: Option<Tokens>,
}

/// A chunk's size as the splitter sees it: its tokens (counted in its
/// window's), or its length in units of [`MAX_BYTES_PER_TOKEN`] when that
/// is larger.
struct Sizer<'a> {
    counter: &'a TokenCounter,
    window: &'a RefCell<Window>,
}

impl Sizer<'_> {
    fn tokens(&self, chunk: &str) -> usize {
        let window = self.window.borrow();
        let start = (chunk.as_ptr() as usize).wrapping_sub(window.base);
        match &window.tokens {
            Some(tokens) if start + chunk.len() <= window.len => {
                tokens.within(start, start + chunk.len())
            }
            // Not a piece of the window (never, with text-splitter).
            _ => self.counter.count(chunk),
        }
    }
}

impl ChunkSizer for Sizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.tokens(chunk)
            .max(chunk.len().div_ceil(MAX_BYTES_PER_TOKEN))
    }
}

/// One chunk: a byte range of the text and its token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// Its tokens.
    pub tokens: usize,
}

/// Window size for a chunk budget of `tokens`: room for 64 chunks of 8
/// bytes per token, within 256 KiB to 2 MiB (a window is tokenized at once).
pub fn window_bytes(tokens: usize) -> usize {
    (tokens * 8 * 64).clamp(256 << 10, 2 << 20)
}

/// Window size within one long line: room for 16 such chunks, within
/// 16 to 512 KiB (the splitter reads the rest of the line for each chunk).
pub fn line_window_bytes(tokens: usize) -> usize {
    (tokens * 8 * 16).clamp(16 << 10, 512 << 10)
}

/// Splits `text` into chunks of at most `tokens` tokens (and
/// `tokens` × [`MAX_BYTES_PER_TOKEN`] bytes) overlapping by `overlap`;
/// Markdown is split along its structure. Empty chunks are dropped.
pub fn chunk(
    text: &str,
    markdown: bool,
    counter: &TokenCounter,
    tokens: usize,
    overlap: usize,
) -> Result<Vec<Span>, String> {
    let tokens = tokens.max(8);
    let window = RefCell::new(Window::default());
    let sizer = Sizer {
        counter,
        window: &window,
    };
    let config = ChunkConfig::new(tokens)
        .with_sizer(sizer)
        .with_overlap(overlap.min(tokens / 2))
        .map_err(|e| format!("chunk settings: {e}"))?;
    let splitter = if markdown {
        Splitter::Markdown(MarkdownSplitter::new(config))
    } else {
        Splitter::Text(TextSplitter::new(config))
    };
    let mut spans = Vec::new();
    let (max, max_line) = (window_bytes(tokens), line_window_bytes(tokens));
    for (window_start, piece) in windows(text, max, max_line) {
        *window.borrow_mut() = Window {
            base: piece.as_ptr() as usize,
            len: piece.len(),
            tokens: counter.tokens(piece),
        };
        let chunks: Vec<(usize, &str)> = match &splitter {
            Splitter::Text(s) => s.chunk_indices(piece).collect(),
            Splitter::Markdown(s) => s.chunk_indices(piece).collect(),
        };
        let window = window.borrow();
        for (at, chunk) in chunks {
            if chunk.trim().is_empty() {
                continue;
            }
            let tokens = match &window.tokens {
                Some(t) => t.within(at, at + chunk.len()),
                None => counter.count(chunk),
            };
            spans.push(Span {
                start: window_start + at,
                end: window_start + at + chunk.len(),
                tokens,
            });
        }
    }
    Ok(spans)
}

/// Plain text or Markdown.
enum Splitter<'a> {
    Text(TextSplitter<Sizer<'a>>),
    Markdown(MarkdownSplitter<Sizer<'a>>),
}

/// `text` cut into consecutive pieces (with their offsets). Lines of up to
/// `max_line` bytes are grouped, whole, into pieces of up to `max` bytes,
/// cut after the last blank line in the second half if there is one; a
/// longer line is cut into pieces of up to `max_line` bytes, after the last
/// sentence or space in the second half if there is one.
fn windows(text: &str, max: usize, max_line: usize) -> impl Iterator<Item = (usize, &str)> {
    let line_len = |s: &str| s.find('\n').map_or(s.len(), |at| at + 1);
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let rest = &text[start..];
        let first = line_len(rest);
        let cut = if first > max_line {
            if rest.len() <= max_line {
                rest.len()
            } else {
                let hard = floor_boundary(rest, max_line);
                let soft = floor_boundary(rest, max_line / 2);
                [". ", " "]
                    .iter()
                    .find_map(|sep| rest[soft..hard].rfind(sep).map(|at| soft + at + sep.len()))
                    .unwrap_or(hard)
            }
        } else {
            let mut end = first;
            loop {
                if end == rest.len() {
                    break end;
                }
                let next = line_len(&rest[end..]);
                if next > max_line {
                    break end;
                }
                if end + next > max {
                    let soft = floor_boundary(rest, end / 2);
                    break rest[soft..end]
                        .rfind("\n\n")
                        .map_or(end, |at| soft + at + 2);
                }
                end += next;
            }
        };
        let piece = (start, &rest[..cut]);
        start += cut;
        Some(piece)
    })
}

/// The largest char boundary of `s` at or below `at` (at least the first
/// char's end, so a window always advances).
fn floor_boundary(s: &str, mut at: usize) -> usize {
    while at > 0 && !s.is_char_boundary(at) {
        at -= 1;
    }
    if at == 0 {
        s.chars().next().map_or(0, char::len_utf8)
    } else {
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_text_and_cut_at_boundaries() {
        let paragraphs = "One sentence here. Another one there.\n\nA new paragraph. ".repeat(500);
        let one_line = "One sentence here. Another one there. ".repeat(500);
        let no_boundary = "é".repeat(1_001);
        // (text, longest piece, how every piece but the last ends)
        let cases = [
            // Short lines: grouped up to `max`, cut after a blank line.
            (&paragraphs, 1_000, Some("\n\n")),
            // One long line: `max_line` pieces, cut after a sentence.
            (&one_line, 100, Some(". ")),
            // No boundary at all: cut at a char boundary, never inside one.
            (&no_boundary, 100, None),
        ];
        for (text, longest, ending) in cases {
            let pieces: Vec<_> = windows(text, 1_000, 100).collect();
            let mut at = 0;
            for (offset, piece) in &pieces {
                assert_eq!(*offset, at, "consecutive");
                assert!(piece.len() <= longest, "{} bytes", piece.len());
                at += piece.len();
            }
            assert_eq!(at, text.len(), "nothing lost");
            if let Some(ending) = ending {
                let (_, cut) = pieces.split_last().unwrap();
                assert!(cut.iter().all(|(_, p)| p.ends_with(ending)), "{ending:?}");
            }
        }
    }

    fn counter() -> TokenCounter {
        let dir = std::env::var_os("HOPPER_MODEL_DIR")
            .expect("HOPPER_MODEL_DIR: the model's directory (scripts/env.sh sets it)");
        TokenCounter::load(Path::new(&dir)).expect("the model's tokenizer")
    }

    #[test]
    fn chunks_stay_within_their_budget_whatever_the_shape() {
        let counter = counter();
        let prose = "Giraffes are the tallest living animals. Their long necks reach acacia \
                     leaves.\n\nA giraffe sleeps only a few minutes at a time.\n"
            .repeat(2_000);
        let one_line = "lorem ipsum dolor sit amet consectetur ".repeat(20_000);
        let one_word = "a".repeat(300_000);
        for (name, text) in [
            ("prose", prose),
            ("one line", one_line),
            ("one word", one_word),
        ] {
            let spans = chunk(&text, false, &counter, 50, 5).unwrap();
            assert!(spans.len() > 10, "{name}: {} chunks", spans.len());
            for s in &spans {
                let piece = &text[s.start..s.end];
                assert!(s.tokens <= 50, "{name}: {} tokens", s.tokens);
                assert!(
                    piece.len() <= 50 * MAX_BYTES_PER_TOKEN,
                    "{name}: {} bytes",
                    piece.len()
                );
                // Counted in the window as the tokenizer counts it alone
                // (give or take a word cut at the window's edge).
                assert!(counter.count(piece) <= s.tokens + 2, "{name}: {piece:?}");
            }
            assert!(
                spans
                    .windows(2)
                    .all(|w| w[0].start < w[1].start && w[0].end <= w[1].end),
                "{name}: in order"
            );
        }
    }
}
