//! What the worker and its `hopper-extract` child say to each other.
//!
//! - stdin: one JSON line, the [`Request`], then exactly `body_len` bytes:
//!   the document as uploaded.
//! - stdout: one JSON line, the [`Reply`], then — when it is
//!   [`Reply::Chunked`] — exactly `text_len` bytes of UTF-8: the extracted
//!   text. Chunks travel as byte ranges of that text, so the text crosses the
//!   pipe once and unescaped.
//!
//! Everything the child may say is checked by [`read_reply`]: a reply that
//! does not add up is an error, never a panic.

use std::{
    io::{BufRead, Read, Write},
    path::PathBuf,
};

use crate::{chunk::Span, text::ParseLimits};

/// Longest request line the child reads.
const MAX_REQUEST_LINE: u64 = 64 << 10;

/// The job the child does: one document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// Its content type (one of [`crate::text::SUPPORTED`]).
    pub content_type: String,
    /// Bytes of the document following the request line.
    pub body_len: usize,
    /// The embedding model's directory, for its `tokenizer.json`.
    pub model_dir: PathBuf,
    /// Chunk size in tokens.
    pub chunk_tokens: usize,
    /// Overlap in tokens.
    pub chunk_overlap: usize,
    /// Page and nesting limits.
    pub limits: ParseLimits,
}

impl Request {
    /// The request line, newline included.
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("a request serialises");
        line.push(b'\n');
        line
    }
}

/// Reads a request and its document (the child's side).
pub fn read_request(input: &mut impl BufRead) -> Result<(Request, Vec<u8>), String> {
    let mut line = Vec::new();
    input
        .take(MAX_REQUEST_LINE)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    let request: Request =
        serde_json::from_slice(&line).map_err(|e| format!("malformed request: {e}"))?;
    let mut body = vec![0; request.body_len];
    input
        .read_exact(&mut body)
        .map_err(|e| format!("cannot read the document: {e}"))?;
    Ok((request, body))
}

/// The reply line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// Extracted and chunked: the text (`text_len` bytes) follows.
    Chunked {
        /// Bytes of text after the line.
        text_len: usize,
        /// The chunks, as ranges of the text.
        chunks: Vec<Span>,
    },
    /// The document cannot be extracted or chunked: retrying cannot help.
    Refused {
        /// Why, for the document's `error`.
        error: String,
    },
    /// The child could not do its work for a reason that is not the
    /// document's (its tokenizer did not load).
    Unavailable {
        /// Why.
        error: String,
    },
}

/// A reply with its text: what the child sends and the worker receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The text and its chunks.
    Chunked {
        /// The extracted text.
        text: String,
        /// Its chunks.
        chunks: Vec<Span>,
    },
    /// See [`Reply::Refused`].
    Refused(String),
    /// See [`Reply::Unavailable`].
    Unavailable(String),
}

/// Writes `outcome` (the child's side).
pub fn write_reply(out: &mut impl Write, outcome: &Outcome) -> std::io::Result<()> {
    let reply = match outcome {
        Outcome::Chunked { text, chunks } => Reply::Chunked {
            text_len: text.len(),
            chunks: chunks.clone(),
        },
        Outcome::Refused(error) => Reply::Refused {
            error: error.clone(),
        },
        Outcome::Unavailable(error) => Reply::Unavailable {
            error: error.clone(),
        },
    };
    serde_json::to_writer(&mut *out, &reply)?;
    out.write_all(b"\n")?;
    if let Outcome::Chunked { text, .. } = outcome {
        out.write_all(text.as_bytes())?;
    }
    out.flush()
}

/// Decodes and checks everything the child wrote (the worker's side).
pub fn read_reply(mut output: Vec<u8>) -> Result<Outcome, String> {
    let newline = output
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no reply line")?;
    let reply: Reply =
        serde_json::from_slice(&output[..newline]).map_err(|e| format!("malformed reply: {e}"))?;
    let (text_len, chunks) = match reply {
        Reply::Chunked { text_len, chunks } => (text_len, chunks),
        Reply::Refused { error } => return Ok(Outcome::Refused(error)),
        Reply::Unavailable { error } => return Ok(Outcome::Unavailable(error)),
    };
    let text = output.split_off(newline + 1);
    if text.len() != text_len {
        return Err(format!(
            "the reply announced {text_len} bytes of text and carried {}",
            text.len()
        ));
    }
    let text = String::from_utf8(text).map_err(|e| format!("the text is not UTF-8: {e}"))?;
    if let Some(bad) = chunks.iter().find(|s| text.get(s.start..s.end).is_none()) {
        return Err(format!(
            "chunk {}..{} is not a range of the {}-byte text",
            bad.start,
            bad.end,
            text.len()
        ));
    }
    Ok(Outcome::Chunked { text, chunks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(outcome: &Outcome) -> Vec<u8> {
        let mut out = Vec::new();
        write_reply(&mut out, outcome).unwrap();
        out
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let request = Request {
            content_type: "text/plain".into(),
            body_len: 5,
            model_dir: "/models/m".into(),
            chunk_tokens: 200,
            chunk_overlap: 20,
            limits: ParseLimits {
                max_pdf_pages: 3,
                max_html_depth: 4,
            },
        };
        let mut input = request.line();
        input.extend_from_slice(b"hello");
        let (read, body) = read_request(&mut input.as_slice()).unwrap();
        assert_eq!((read, body.as_slice()), (request, &b"hello"[..]));

        for outcome in [
            Outcome::Chunked {
                text: "héllo\nworld".into(),
                chunks: vec![
                    Span {
                        start: 0,
                        end: 6,
                        tokens: 1,
                    },
                    Span {
                        start: 7,
                        end: 12,
                        tokens: 1,
                    },
                ],
            },
            Outcome::Refused("too deep".into()),
            Outcome::Unavailable("no tokenizer".into()),
        ] {
            assert_eq!(read_reply(encoded(&outcome)).unwrap(), outcome);
        }
    }

    #[test]
    fn a_reply_that_does_not_add_up_is_an_error() {
        let good = encoded(&Outcome::Chunked {
            text: "héllo".into(),
            chunks: vec![Span {
                start: 0,
                end: 6,
                tokens: 1,
            }],
        });
        assert!(
            read_reply(good[..good.len() - 1].to_vec()).is_err(),
            "short"
        );
        let inside_a_char = encoded(&Outcome::Chunked {
            text: "héllo".into(),
            chunks: vec![Span {
                start: 0,
                end: 2,
                tokens: 1,
            }],
        });
        // Written unchecked, refused when read.
        assert!(
            read_reply(inside_a_char)
                .unwrap_err()
                .contains("not a range")
        );
        assert!(read_reply(b"garbage".to_vec()).is_err());
        assert!(read_reply(Vec::new()).is_err());
    }
}
