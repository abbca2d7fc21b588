//! A cheap pre-scan of an HTML document's element nesting, run before the
//! real parser ([`crate::text`]).
//!
//! html5ever's tree builder looks through its stack of open elements for
//! most tags, so 100,000 nested `<div>`s cost it 10¹⁰ steps; html2text then
//! walks the tree recursively. This scan runs html5ever's *tokenizer* alone
//! (linear, and it knows comments, attributes and raw text such as
//! `<script>` bodies) and keeps its own small stack of open elements:
//!
//! - void elements (`<br>`, `<img>`…) open nothing, nor does a self-closing
//!   tag inside `<svg>`/`<math>`;
//! - elements whose end tag is optional and implied by their siblings
//!   (`<p>`, `<li>`, `<td>`, `<tr>`…) are not counted, so sloppy but
//!   ordinary HTML never looks deep (a table still counts one level per
//!   `<table>`);
//! - an end tag closes the nearest open element of its name and everything
//!   opened inside it; one with no open element of its name is ignored (as
//!   the parser does).
//!
//! The count approximates the tree the parser builds; a file that fools it
//! still runs inside the worker's child process, under its time and memory
//! limits.

use std::cell::{Cell, RefCell};

use html5ever::{
    LocalName,
    tendril::StrTendril,
    tokenizer::{
        BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
        states::RawKind,
    },
};

/// Elements that never have content.
const VOID: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img",
    "input", "keygen", "link", "meta", "param", "source", "track", "wbr",
];

/// Elements a sibling or their parent's end closes implicitly: not counted.
const IMPLIED_END: &[&str] = &[
    "body", "caption", "colgroup", "dd", "dt", "head", "html", "li", "optgroup", "option", "p",
    "rb", "rp", "rt", "rtc", "tbody", "td", "tfoot", "th", "thead", "tr",
];

/// Whether `html` nests elements deeper than `limit`.
pub fn exceeds(html: &str, limit: usize) -> bool {
    let sink = DepthSink {
        limit,
        open: RefCell::new(Vec::new()),
        foreign: Cell::new(0),
        exceeded: Cell::new(false),
    };
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never asks to stop for a script, so one feed reads it all.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.exceeded.get()
}

/// Tracks open elements as tokens go by.
struct DepthSink {
    limit: usize,
    /// Counted elements open now, outermost first.
    open: RefCell<Vec<LocalName>>,
    /// How many of them are `<svg>` or `<math>` (foreign content).
    foreign: Cell<usize>,
    exceeded: Cell<bool>,
}

fn is_foreign_root(name: &str) -> bool {
    name == "svg" || name == "math"
}

impl TokenSink for DepthSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let Token::TagToken(tag) = token else {
            return TokenSinkResult::Continue;
        };
        if self.exceeded.get() {
            return TokenSinkResult::Continue;
        }
        let name: &str = &tag.name;
        let mut open = self.open.borrow_mut();
        match tag.kind {
            TagKind::StartTag => {
                let foreign = self.foreign.get() > 0;
                if VOID.contains(&name)
                    || IMPLIED_END.contains(&name)
                    || (tag.self_closing && (foreign || is_foreign_root(name)))
                {
                    return TokenSinkResult::Continue;
                }
                open.push(tag.name.clone());
                if is_foreign_root(name) {
                    self.foreign.set(self.foreign.get() + 1);
                }
                if open.len() > self.limit {
                    self.exceeded.set(true);
                }
                if foreign {
                    return TokenSinkResult::Continue;
                }
                // What the tree builder would tell the tokenizer, so the
                // text of a script or a style is not read as tags.
                match name {
                    "script" => TokenSinkResult::RawData(RawKind::ScriptData),
                    "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => {
                        TokenSinkResult::RawData(RawKind::Rawtext)
                    }
                    "title" | "textarea" => TokenSinkResult::RawData(RawKind::Rcdata),
                    "plaintext" => TokenSinkResult::Plaintext,
                    _ => TokenSinkResult::Continue,
                }
            }
            TagKind::EndTag => {
                if let Some(at) = open.iter().rposition(|n| *n == tag.name) {
                    let closed = open[at..].iter().filter(|n| is_foreign_root(n)).count();
                    self.foreign.set(self.foreign.get() - closed);
                    open.truncate(at);
                }
                TokenSinkResult::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(html: &str, limit: usize) -> bool {
        !exceeds(html, limit)
    }

    #[test]
    fn counts_nesting_not_length() {
        let nested = |n| format!("{}x{}", "<div>".repeat(n), "</div>".repeat(n));
        assert!(depth_ok(&nested(10), 10));
        assert!(!depth_ok(&nested(11), 10));
        let siblings = "<div>x</div>".repeat(10_000);
        assert!(depth_ok(&siblings, 2));
        let unclosed = "<div>".repeat(11);
        assert!(!depth_ok(&unclosed, 10));
    }

    #[test]
    fn nested_tables_count_one_level_each() {
        let tables = |n| {
            format!(
                "{}x{}",
                "<table><tr><td>".repeat(n),
                "</td></tr></table>".repeat(n)
            )
        };
        assert!(depth_ok(&tables(10), 10));
        assert!(!depth_ok(&tables(11), 10));
    }

    #[test]
    fn sloppy_ordinary_html_stays_shallow() {
        // Unclosed paragraphs, list items and cells; void elements; a
        // stray end tag; an end tag that closes what it contains.
        let page = "<html><body><ul><li>a<li>b<li>c</ul><p>one<p>two<br><img src=x>\
                    <table><tr><td>1<td>2<tr><td>3</table></span>\
                    <div><span><b>bold</div>"
            .repeat(1_000);
        assert!(depth_ok(&page, 4), "repeated sloppy markup does not add up");
    }

    #[test]
    fn tags_inside_scripts_comments_and_attributes_are_not_elements() {
        let html = format!(
            "<script>var s = '{}';</script><!-- {} --><a title=\"{}\">x</a>\
             <style>{}</style><textarea>{}</textarea>",
            "<div>".repeat(100),
            "<div>".repeat(100),
            "<div>".repeat(100),
            "<div>".repeat(100),
            "<div>".repeat(100),
        );
        assert!(depth_ok(&html, 2));
    }

    #[test]
    fn self_closing_counts_only_in_foreign_content() {
        // `<div/>` opens a div in HTML; `<path/>` inside svg opens nothing.
        assert!(!depth_ok(&"<div/>".repeat(11), 10));
        let svg = format!("<svg>{}</svg>", "<path d='M0 0'/>".repeat(1_000));
        assert!(depth_ok(&svg, 1));
    }
}
