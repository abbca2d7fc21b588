//! Text extraction by content type: plain text and Markdown as they are
//! (after a UTF-8 check), HTML without scripts and styles (block structure
//! kept as line breaks), PDF from its text layer.

/// Content types the pipeline reads.
pub const SUPPORTED: &[&str] = &[
    "text/plain",
    "text/markdown",
    "text/html",
    "application/pdf",
];

/// Why a document yields no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// Not one of [`SUPPORTED`].
    #[error(
        "unsupported content type `{0}` (supported: text/plain, text/markdown, text/html, application/pdf)"
    )]
    Unsupported(String),
    /// A text format whose bytes are not UTF-8.
    #[error("the document is not valid UTF-8 (byte {0})")]
    InvalidUtf8(usize),
    /// Nothing but whitespace.
    #[error("the document contains no text")]
    Empty,
    /// A PDF whose pages carry no text layer (scanned images).
    #[error("the PDF has no text layer (scanned pages need OCR, which Hopper does not do)")]
    NoTextLayer,
    /// A PDF that does not parse.
    #[error("the PDF cannot be read: {0}")]
    Pdf(String),
}

/// The document's text.
pub fn extract(content_type: &str, body: &[u8]) -> Result<String, ExtractError> {
    let text = match content_type {
        "text/plain" | "text/markdown" => utf8(body)?.to_owned(),
        "text/html" => html(utf8(body)?),
        "application/pdf" => pdf(body)?,
        other => return Err(ExtractError::Unsupported(other.to_owned())),
    };
    // Postgres text cannot hold NUL; it carries no meaning in prose anyway.
    let text = if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text
    };
    if text.trim().is_empty() {
        return Err(if content_type == "application/pdf" {
            ExtractError::NoTextLayer
        } else {
            ExtractError::Empty
        });
    }
    Ok(text)
}

/// `body` as UTF-8, or the offset of the first bad byte.
pub fn utf8(body: &[u8]) -> Result<&str, ExtractError> {
    std::str::from_utf8(body).map_err(|e| ExtractError::InvalidUtf8(e.valid_up_to()))
}

fn html(source: &str) -> String {
    // Wide lines: the chunker, not the renderer, decides where text breaks.
    html2text::config::plain()
        .no_link_wrapping()
        .string_from_read(source.as_bytes(), 10_000)
        .unwrap_or_default()
}

fn pdf(body: &[u8]) -> Result<String, ExtractError> {
    let body = body.to_vec();
    // pdf-extract panics on some malformed files: contain it.
    match std::panic::catch_unwind(move || pdf_extract::extract_text_from_mem(&body)) {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(ExtractError::Pdf(e.to_string())),
        Err(_) => Err(ExtractError::Pdf(
            "the PDF parser gave up on this file".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_drops_scripts_and_styles_and_keeps_paragraphs() {
        let t = extract(
            "text/html",
            b"<html><head><style>p{color:red}</style><script>alert('x')</script></head>\
              <body><h1>Title</h1><p>First para.</p><p>Second para.</p></body></html>",
        )
        .unwrap();
        assert!(
            t.contains("Title") && t.contains("First para.") && t.contains("Second para."),
            "{t}"
        );
        assert!(!t.contains("alert") && !t.contains("color"), "{t}");
        assert!(t.contains('\n'), "block structure kept: {t:?}");
    }

    #[test]
    fn bad_inputs_name_their_problem() {
        assert_eq!(extract("text/plain", b"  \n "), Err(ExtractError::Empty));
        assert_eq!(
            extract("text/plain", b"ok\xff"),
            Err(ExtractError::InvalidUtf8(2))
        );
        assert!(matches!(
            extract("image/png", b"x"),
            Err(ExtractError::Unsupported(_))
        ));
        assert!(matches!(
            extract("application/pdf", b"not a pdf"),
            Err(ExtractError::Pdf(_))
        ));
    }
}
