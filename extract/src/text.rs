//! Text extraction by content type: plain text and Markdown as they are
//! (after a UTF-8 check), HTML without scripts, styles, navigation and link
//! lists (block structure kept as line breaks, [`crate::html`]), PDF from
//! its text layer without running headers and footers ([`crate::pdf`]).
//!
//! Two limits are checked here, before the expensive parser runs: a PDF's
//! page count (counted in its page tree once loaded) and an HTML document's
//! element nesting ([`crate::html_depth`]). Time and memory are limited
//! around the whole process (see `hopper-worker`'s `pipeline/sandbox.rs`).

use crate::{html, html_depth, pdf};

/// Content types the pipeline reads.
pub const SUPPORTED: &[&str] = &[
    "text/plain",
    "text/markdown",
    "text/html",
    "application/pdf",
];

/// Largest text one document may yield, in bytes: 64 MiB (a PDF's
/// compressed streams can hold far more text than its upload size).
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// Limits on what one document may make the parsers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParseLimits {
    /// Pages a PDF may have (`HOPPER_EXTRACT_MAX_PDF_PAGES`).
    pub max_pdf_pages: usize,
    /// Element nesting an HTML document may have
    /// (`HOPPER_EXTRACT_MAX_HTML_DEPTH`).
    pub max_html_depth: usize,
}

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
    /// A PDF with more pages than allowed.
    #[error(
        "the PDF has {pages} pages, more than the {limit} allowed (HOPPER_EXTRACT_MAX_PDF_PAGES)"
    )]
    TooManyPages {
        /// Pages found.
        pages: usize,
        /// The limit.
        limit: usize,
    },
    /// HTML nested deeper than allowed.
    #[error(
        "the HTML nests elements more than {limit} deep (HOPPER_EXTRACT_MAX_HTML_DEPTH); \
         it is refused rather than parsed"
    )]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More text than [`MAX_TEXT_BYTES`].
    #[error("the document's text is larger than {} MiB", MAX_TEXT_BYTES >> 20)]
    TooMuchText,
}

/// The document's text.
pub fn extract(
    content_type: &str,
    body: &[u8],
    limits: &ParseLimits,
) -> Result<String, ExtractError> {
    let text = match content_type {
        "text/plain" | "text/markdown" => utf8(body)?.to_owned(),
        "text/html" => from_html(utf8(body)?, limits.max_html_depth)?,
        "application/pdf" => pdf::text(body, limits.max_pdf_pages)?,
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
    if text.len() > MAX_TEXT_BYTES {
        return Err(ExtractError::TooMuchText);
    }
    Ok(text)
}

/// `body` as UTF-8, or the offset of the first bad byte.
pub fn utf8(body: &[u8]) -> Result<&str, ExtractError> {
    std::str::from_utf8(body).map_err(|e| ExtractError::InvalidUtf8(e.valid_up_to()))
}

fn from_html(source: &str, max_depth: usize) -> Result<String, ExtractError> {
    // html5ever's tree builder scans its stack of open elements for every
    // tag (quadratic in the nesting) and html2text renders recursively: a
    // deeply nested file must never reach them.
    if html_depth::exceeds(source, max_depth) {
        return Err(ExtractError::TooDeep { limit: max_depth });
    }
    Ok(html::text(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParseLimits = ParseLimits {
        max_pdf_pages: 10,
        max_html_depth: 64,
    };

    #[test]
    fn html_drops_scripts_and_styles_and_keeps_paragraphs() {
        let t = extract(
            "text/html",
            b"<html><head><style>p{color:red}</style><script>alert('x')</script></head>\
              <body><h1>Title</h1><p>First para.</p><p>Second para.</p></body></html>",
            &LIMITS,
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
        assert_eq!(
            extract("text/plain", b"  \n ", &LIMITS),
            Err(ExtractError::Empty)
        );
        assert_eq!(
            extract("text/plain", b"ok\xff", &LIMITS),
            Err(ExtractError::InvalidUtf8(2))
        );
        assert!(matches!(
            extract("image/png", b"x", &LIMITS),
            Err(ExtractError::Unsupported(_))
        ));
        assert!(matches!(
            extract("application/pdf", b"not a pdf", &LIMITS),
            Err(ExtractError::Pdf(_))
        ));
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_before_parsing() {
        let deep = format!("{}x{}", "<div>".repeat(65), "</div>".repeat(65));
        assert_eq!(
            extract("text/html", deep.as_bytes(), &LIMITS),
            Err(ExtractError::TooDeep { limit: 64 })
        );
        let fine = format!("{}x{}", "<div>".repeat(60), "</div>".repeat(60));
        assert_eq!(
            extract("text/html", fine.as_bytes(), &LIMITS)
                .unwrap()
                .trim(),
            "x"
        );
    }

    /// A PDF of `pages` empty pages, written by lopdf.
    fn empty_pages(pages: usize) -> Vec<u8> {
        use pdf_extract::{Dictionary, Document, Object};
        let mut doc = Document::with_version("1.4");
        let tree = doc.new_object_id();
        let kids: Vec<Object> = (0..pages)
            .map(|_| {
                let mut page = Dictionary::new();
                page.set("Type", Object::Name(b"Page".to_vec()));
                page.set("Parent", tree);
                doc.add_object(page).into()
            })
            .collect();
        let mut root = Dictionary::new();
        root.set("Type", Object::Name(b"Pages".to_vec()));
        root.set("Count", pages as i64);
        root.set("Kids", kids);
        let letter: Vec<Object> = vec![0.into(), 0.into(), 612.into(), 792.into()];
        root.set("MediaBox", letter);
        doc.objects.insert(tree, root.into());
        let mut catalog = Dictionary::new();
        catalog.set("Type", Object::Name(b"Catalog".to_vec()));
        catalog.set("Pages", tree);
        let catalog = doc.add_object(catalog);
        doc.trailer.set("Root", catalog);
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("a PDF in memory");
        out
    }

    #[test]
    fn pdf_pages_beyond_the_limit_are_refused() {
        assert_eq!(
            extract("application/pdf", &empty_pages(11), &LIMITS),
            Err(ExtractError::TooManyPages {
                pages: 11,
                limit: 10
            })
        );
        assert_eq!(
            extract("application/pdf", &empty_pages(10), &LIMITS),
            Err(ExtractError::NoTextLayer)
        );
    }
}
