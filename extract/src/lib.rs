//! Document extraction and token-aware chunking, and the child process that
//! runs them.
//!
//! Parsers of untrusted files can hang, explode or overflow their stack on a
//! hostile input. The worker therefore never runs them in its own process:
//! per document it starts `hopper-extract` (this crate's binary, installed
//! beside `hopper-worker`), sends the document over a pipe and reads back the
//! text and its chunks ([`protocol`]), with a wall-clock timeout, an
//! address-space and CPU-time limit, and cancellation
//! (`hopper-worker`'s `pipeline/sandbox.rs`). This crate does not link
//! libtorch, so the child starts in milliseconds.
//!
//! - [`text`]: text from plain text, Markdown, HTML and PDF, with the page
//!   and nesting limits ([`html_depth`] is the HTML pre-scan); [`html`] and
//!   [`pdf`] leave out what is not the document's content (navigation, link
//!   lists, running headers and footers);
//! - [`chunk`]: chunks sized in the embedding model's tokens;
//! - [`protocol`]: the request and reply on the child's pipes;
//! - [`child`]: the child process itself.

pub mod child;
pub mod chunk;
pub mod html;
pub mod html_depth;
pub mod pdf;
pub mod protocol;
pub mod text;
