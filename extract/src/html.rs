//! HTML to text for chunks and summaries: the page's content, without the
//! chrome around it.
//!
//! html2text renders the document (scripts and styles dropped, block
//! structure kept as lines, headings as `# `, list items as `* `). Around
//! that:
//!
//! - Before rendering, navigation is cut from the tree: `<nav>`, page-level
//!   `<footer>` and `<header>` (not those of an `<article>`, `<main>` or
//!   `<section>`, nor a header holding a heading: the page's title), the ARIA landmarks that are not content (`navigation`,
//!   `banner`, `contentinfo`, `search`), elements marked `hidden`, the
//!   class and id names that navigation bars, tables of contents, sidebars
//!   and footers go by ([`CHROME_NAMES`]: DocBook's `navheader`, `navfooter`
//!   and `toc`, Sphinx's `sphinxsidebar`…), and footnote markers (a
//!   superscript linking within the page: `^{[1]}` in the text otherwise).
//! - Links render as their text alone: no `[text][n]` markers and no list of
//!   `[n]: url` references at the end.
//! - After rendering, a line that is mostly link text ([`LINK_SHARE`]) is
//!   dropped when it holds several links (a navigation bar: `Prev | Up |
//!   Next`), is short ([`SHORT_LINE_WORDS`]), or belongs to a run of such
//!   lines (a list of links, [`LINK_RUN`], with its caption: "See also:");
//!   a sentence with a link in it stays, as does a heading.
//! - Preformatted blocks are fenced with ```` ``` ````, so that readers and
//!   the extractive summary can tell code from prose; lines of nothing but
//!   symbols (rules, table borders) are dropped.
//!
//! A page that would be left with no text at all (one that is all
//! navigation) is rendered as it is, links as their text.

use html2text::{
    Handle, RcDom,
    render::{RichAnnotation, TaggedLine},
};

/// Class and id names of page chrome (compared without case).
pub const CHROME_NAMES: &[&str] = &[
    "nav",
    "navbar",
    "navigation",
    "navheader",
    "navfooter",
    "navlinks",
    "breadcrumb",
    "breadcrumbs",
    "toc",
    "sidebar",
    "sphinxsidebar",
    "footer",
    "skip-link",
    "skiplink",
];

/// A line whose letters and digits are at least this share link text
/// (numerator, denominator) is a link line.
pub const LINK_SHARE: (usize, usize) = (2, 3);
/// A link line of at most this many words is navigation.
pub const SHORT_LINE_WORDS: usize = 8;
/// This many link lines in a row are a list of links.
pub const LINK_RUN: usize = 3;
/// A line of at most this many words ending in a colon, right above a list
/// of links, is its caption and goes with it.
pub const CAPTION_WORDS: usize = 4;

/// Render width: wide, so the chunker, not the renderer, decides where text
/// breaks.
const WIDTH: usize = 10_000;

/// The text of an HTML document, its navigation and link lists dropped.
/// Errors of the renderer yield an empty text.
pub fn text(source: &str) -> String {
    let config = || {
        html2text::config::rich()
            .no_link_wrapping()
            .no_table_borders()
    };
    let Ok(dom) = config().parse_html(source.as_bytes()) else {
        return String::new();
    };
    prune_chrome(&dom);
    let tree = config().dom_to_render_tree(&dom);
    // The tree is all the rendering needs: free the document's memory first.
    drop(dom);
    let cleaned = tree
        .and_then(|tree| config().render_to_lines(tree, WIDTH))
        .map(|lines| clean(lines.into_iter().map(|l| Line::from(&l)).collect()))
        .unwrap_or_default();
    if cleaned.chars().any(char::is_alphanumeric) {
        return cleaned;
    }
    // All chrome: better its text than none.
    config()
        .lines_from_read(source.as_bytes(), WIDTH)
        .map(|lines| {
            let lines: Vec<String> = lines.iter().map(|l| Line::from(l).text).collect();
            lines.join("\n").trim().to_owned()
        })
        .unwrap_or_default()
}

/// Removes navigation elements from the tree (see the module's doc).
fn prune_chrome(dom: &RcDom) {
    // A stack, not recursion: the nesting is bounded by the pre-scan, but
    // need not cost stack.
    let mut stack = vec![(dom.document.clone(), false)];
    while let Some((node, in_content)) = stack.pop() {
        node.children
            .borrow_mut()
            .retain(|child| !is_chrome(child, in_content));
        for child in node.children.borrow().iter() {
            let content = in_content || is_content(child);
            stack.push((child.clone(), content));
        }
    }
}

/// `<article>`, `<main>` and `<section>`: their headers and footers are
/// content.
fn is_content(node: &Handle) -> bool {
    matches!(&node.data, html2text::Element { name, .. }
        if matches!(&*name.local, "article" | "main" | "section"))
}

fn is_chrome(node: &Handle, in_content: bool) -> bool {
    let html2text::Element { name, attrs, .. } = &node.data else {
        return false;
    };
    match &*name.local {
        "nav" => return true,
        "footer" if !in_content => return true,
        // A page's header, unless it holds the page's title.
        "header" if !in_content && !any_within(node, is_heading) => return true,
        // A footnote marker.
        "sup" if any_within(node, links_within_page) => return true,
        _ => {}
    }
    let chrome_name = |name: &str| {
        CHROME_NAMES
            .iter()
            .any(|chrome| chrome.eq_ignore_ascii_case(name))
    };
    attrs.borrow().iter().any(|attr| match &*attr.name.local {
        "hidden" => true,
        "role" => ["navigation", "banner", "contentinfo", "search"]
            .iter()
            .any(|role| role.eq_ignore_ascii_case(attr.value.trim())),
        "class" => attr.value.split_ascii_whitespace().any(chrome_name),
        "id" => chrome_name(attr.value.trim()),
        _ => false,
    })
}

/// Whether `node` or an element inside it is one `matches`.
fn any_within(node: &Handle, matches: fn(&str, &[html5ever::Attribute]) -> bool) -> bool {
    let mut stack = vec![node.clone()];
    while let Some(node) = stack.pop() {
        if let html2text::Element { name, attrs, .. } = &node.data
            && matches(&name.local, &attrs.borrow())
        {
            return true;
        }
        stack.extend(node.children.borrow().iter().cloned());
    }
    false
}

fn is_heading(name: &str, _: &[html5ever::Attribute]) -> bool {
    matches!(name, "h1" | "h2" | "h3" | "h4" | "h5" | "h6")
}

/// A link to a place in the same page.
fn links_within_page(name: &str, attrs: &[html5ever::Attribute]) -> bool {
    name == "a"
        && attrs
            .iter()
            .any(|a| &*a.name.local == "href" && a.value.starts_with('#'))
}

/// A rendered line and what it is made of.
#[derive(Debug, Default)]
struct Line {
    text: String,
    /// Part of a `<pre>` block.
    preformatted: bool,
    /// Letters and digits.
    alphanumeric: usize,
    /// Letters and digits inside links.
    linked: usize,
    /// Links (runs of text with one target).
    links: usize,
}

impl From<&TaggedLine<Vec<RichAnnotation>>> for Line {
    fn from(tagged: &TaggedLine<Vec<RichAnnotation>>) -> Self {
        let mut line = Line::default();
        let mut last_target = None;
        for piece in tagged.tagged_strings() {
            let target = piece.tag.iter().find_map(|a| match a {
                RichAnnotation::Link(url) => Some(url.as_str()),
                _ => None,
            });
            line.preformatted |= piece
                .tag
                .iter()
                .any(|a| matches!(a, RichAnnotation::Preformat(_)));
            let alphanumeric = piece.s.chars().filter(|c| c.is_alphanumeric()).count();
            line.alphanumeric += alphanumeric;
            if target.is_some() {
                line.linked += alphanumeric;
                if target != last_target && alphanumeric > 0 {
                    line.links += 1;
                }
            }
            if alphanumeric > 0 || target.is_none() {
                last_target = target;
            }
            line.text.push_str(&piece.s);
        }
        line.text.truncate(line.text.trim_end().len());
        line
    }
}

impl Line {
    fn is_blank(&self) -> bool {
        !self.preformatted && self.text.trim().is_empty()
    }

    fn is_heading(&self) -> bool {
        let rest = self.text.trim_start_matches('#');
        rest.len() < self.text.len() && rest.starts_with(' ')
    }

    /// Mostly link text (headings aside).
    fn is_link_line(&self) -> bool {
        let (num, den) = LINK_SHARE;
        !self.preformatted
            && !self.is_heading()
            && self.linked > 0
            && self.linked * den >= self.alphanumeric * num
    }

    /// A few words ending in a colon: a list's caption.
    fn is_caption(&self) -> bool {
        !self.preformatted
            && !self.is_heading()
            && self.text.ends_with(':')
            && self.words() <= CAPTION_WORDS
    }

    fn words(&self) -> usize {
        self.text.split_whitespace().count()
    }
}

/// The rendered lines as text: navigation and symbol lines dropped,
/// preformatted blocks fenced, blank lines collapsed.
fn clean(lines: Vec<Line>) -> String {
    let mut navigation: Vec<bool> = lines
        .iter()
        .map(|l| l.is_link_line() && (l.links >= 2 || l.words() <= SHORT_LINE_WORDS))
        .collect();
    // Runs of consecutive link lines (the items of a list), and the caption
    // right above one ("See also:").
    let mut start = 0;
    for i in 0..=lines.len() {
        if i < lines.len() && lines[i].is_link_line() {
            continue;
        }
        if i - start >= LINK_RUN {
            navigation[start..i].fill(true);
            if let Some(above) = start.checked_sub(1)
                && lines[above].is_caption()
            {
                navigation[above] = true;
            }
        }
        start = i + 1;
    }

    let mut out = String::new();
    let mut fenced = false;
    let mut pending_blank = false;
    for (i, line) in lines.iter().enumerate() {
        if line.is_blank() {
            pending_blank = true;
            continue;
        }
        if line.preformatted {
            if !fenced {
                open_paragraph(&mut out);
                out.push_str("```\n");
                fenced = true;
            } else if pending_blank {
                out.push('\n');
            }
            pending_blank = false;
            out.push_str(&line.text);
            out.push('\n');
            continue;
        }
        if navigation[i] || !line.text.chars().any(char::is_alphanumeric) {
            continue;
        }
        if fenced {
            out.push_str("```\n");
            fenced = false;
            pending_blank = true;
        }
        if pending_blank {
            open_paragraph(&mut out);
            pending_blank = false;
        }
        out.push_str(&line.text);
        out.push('\n');
    }
    if fenced {
        out.push_str("```\n");
    }
    out.trim().to_owned()
}

/// Ends `out` with a blank line (unless it is empty).
fn open_paragraph(out: &mut String) {
    if out.is_empty() || out.ends_with("\n\n") {
        return;
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_their_text_without_reference_lists() {
        let t = text(
            "<p>The archive is served by <a href=\"https://www.debian.org/mirror\">mirrors</a> \
             all over the world.</p>",
        );
        assert_eq!(t, "The archive is served by mirrors all over the world.");
    }

    #[test]
    fn navigation_elements_are_cut() {
        let t = text(
            "<body><header><a href=/>Logo</a> Site name</header>\
             <nav><a href=a>A</a> <a href=b>B</a></nav>\
             <div role=navigation>Skip to content</div>\
             <div class=\"navheader x\">Prev Next</div>\
             <div id=TOC><p>Contents</p></div>\
             <article><header><h1>Title</h1></header><p>Body text here.</p></article>\
             <footer>Site footer</footer></body>",
        );
        assert_eq!(t, "# Title\n\nBody text here.");
    }

    #[test]
    fn a_page_header_holding_the_title_stays_without_its_navigation() {
        let t = text(
            "<body><header><a href=/>Blog</a><h1>Post title</h1>\
             <nav><a href=/a>About</a></nav></header><p>Body text here.</p></body>",
        );
        assert_eq!(t, "# Post title\n\nBody text here.");
    }

    #[test]
    fn link_lines_go_and_linked_sentences_stay() {
        let t = text(
            "<p><a href=/>Home</a> | <a href=/doc>Docs</a> | <a href=/s>Support</a></p>\
             <p><a href=/x>Download</a></p>\
             <p>A long sentence of <a href=/a>eleven words that mostly sit inside one link</a>.</p>\
             <p><a href=/b>A linked sentence that is long enough to be read as prose.</a></p>\
             <p>Related pages:</p>\
             <ul><li><a href=1>One link item that is rather long, more than eight words</a></li>\
             <li><a href=2>Two</a></li><li><a href=3>Three</a></li></ul>\
             <h2><a href=#s>Section</a></h2>",
        );
        assert_eq!(
            t,
            "A long sentence of eleven words that mostly sit inside one link.\n\n\
             A linked sentence that is long enough to be read as prose.\n\n\
             ## Section"
        );
    }

    #[test]
    fn preformatted_blocks_are_fenced() {
        let t = text("<p>Run:</p><pre>$ apt update\n\n$ apt upgrade</pre><hr><p>Done.</p>");
        assert_eq!(
            t,
            "Run:\n\n```\n$ apt update\n\n$ apt upgrade\n```\n\nDone."
        );
    }

    #[test]
    fn footnote_markers_go_and_other_superscripts_stay() {
        let t = text(
            "<p>Suites.<sup>[<a href=\"#ftn.1\">1</a>]</sup> More.</p>\
             <p>Area: 3 m<sup>2</sup>.</p>\
             <p><sup>[<a href=\"#fnref.1\">1</a>]</sup> The footnote.</p>",
        );
        assert_eq!(t, "Suites. More.\n\nArea: 3 m².\n\nThe footnote.");
    }

    #[test]
    fn a_page_of_nothing_but_navigation_keeps_its_text() {
        assert_eq!(text("<nav><a href=/>Home</a></nav>"), "Home");
    }
}
