//! PDF to text from its text layer, page by page, without running headers
//! and footers.
//!
//! pdf-extract writes each page's text in content-stream order, starting a
//! line where the baseline moves. A manual repeats its title, the chapter's
//! name and the page number at the top or bottom of every page; in the text
//! those lines fall between the pages' prose, inside every chunk. So the
//! pages are read apart ([`ByPage`]), and a line among the first or last
//! [`EDGE_LINES`] lines of a page is dropped when its folded form (case and
//! spacing folded, every number read as `#`: "Page 3 of 12" is "Page 4 of
//! 12") sits at the edge of at least [`MIN_REPEATS`] pages. The same line in
//! the middle of a page stays. Pages are joined with a blank line.

use std::{cell::RefCell, collections::HashMap, collections::HashSet, fmt, rc::Rc};

use pdf_extract::{ConvertToFmt, MediaBox, OutputDev, OutputError, PlainTextOutput, Transform};

use crate::text::ExtractError;

/// Lines at the top and at the bottom of a page that may be running
/// headers or footers.
pub const EDGE_LINES: usize = 2;
/// Pages a line must sit at the edge of to be a running header or footer.
pub const MIN_REPEATS: usize = 3;

/// The text of a PDF's pages, running headers and footers dropped.
pub fn text(body: &[u8], max_pages: usize) -> Result<String, ExtractError> {
    // pdf-extract panics on some malformed files: contain it.
    let pages = std::panic::catch_unwind(|| {
        let mut doc =
            pdf_extract::Document::load_mem(body).map_err(|e| ExtractError::Pdf(e.to_string()))?;
        // The page tree as it is, not the /Count the file claims.
        let pages = doc.page_iter().count();
        if pages > max_pages {
            return Err(ExtractError::TooManyPages {
                pages,
                limit: max_pages,
            });
        }
        if doc.is_encrypted() {
            // Readable without a password (an owner password only), or not at all.
            doc.decrypt("")
                .map_err(|e| ExtractError::Pdf(format!("encrypted: {e}")))?;
        }
        let mut output = ByPage::default();
        pdf_extract::output_doc(&doc, &mut output).map_err(|e| ExtractError::Pdf(e.to_string()))?;
        Ok(output.pages.take())
    })
    .unwrap_or_else(|_| {
        Err(ExtractError::Pdf(
            "the PDF parser gave up on this file".into(),
        ))
    })?;
    Ok(without_running_lines(&pages))
}

/// `pages` joined, the lines repeated at the edges of [`MIN_REPEATS`] pages
/// or more left out.
pub fn without_running_lines(pages: &[String]) -> String {
    let pages: Vec<Vec<&str>> = pages
        .iter()
        .map(|page| page.trim().lines().map(str::trim_end).collect())
        .collect();
    // Indices of each page's edge lines.
    let edges: Vec<Vec<usize>> = pages
        .iter()
        .map(|lines| {
            let filled: Vec<usize> = (0..lines.len())
                .filter(|&i| !lines[i].trim().is_empty())
                .collect();
            let top = filled.iter().take(EDGE_LINES);
            let bottom = filled.iter().rev().take(EDGE_LINES);
            let mut edge: Vec<usize> = top.chain(bottom).copied().collect();
            edge.sort_unstable();
            edge.dedup();
            edge
        })
        .collect();
    let mut seen_on: HashMap<String, usize> = HashMap::new();
    for (lines, edge) in pages.iter().zip(&edges) {
        let keys: HashSet<String> = edge.iter().map(|&i| fold(lines[i])).collect();
        for key in keys {
            *seen_on.entry(key).or_default() += 1;
        }
    }
    let mut out = String::new();
    for (lines, edge) in pages.iter().zip(&edges) {
        let kept: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|&(i, line)| {
                !(edge.contains(&i) && seen_on.get(&fold(line)).is_some_and(|&n| n >= MIN_REPEATS))
            })
            .map(|(_, line)| *line)
            .collect();
        let page = kept.join("\n");
        let page = page.trim();
        if page.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(page);
    }
    out
}

/// A line as running headers are compared: lowercase, single spaces, each
/// run of digits as `#`.
fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_number = false;
    for word in line.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            if c.is_ascii_digit() {
                if !in_number {
                    out.push('#');
                }
                in_number = true;
            } else {
                in_number = false;
                out.extend(c.to_lowercase());
            }
        }
        in_number = false;
    }
    out
}

/// The text each page holds.
type Pages = Rc<RefCell<Vec<String>>>;

/// pdf-extract's plain-text output, one string per page.
struct ByPage {
    pages: Pages,
    plain: PlainTextOutput<PageSink>,
}

impl Default for ByPage {
    fn default() -> Self {
        let pages = Pages::default();
        Self {
            plain: PlainTextOutput::new(PageSink(pages.clone())),
            pages,
        }
    }
}

/// Where [`PlainTextOutput`] writes: the last page.
struct PageSink(Pages);

impl ConvertToFmt for PageSink {
    type Writer = PageText;
    fn convert(self) -> PageText {
        PageText(self.0)
    }
}

/// Appends to the last page.
struct PageText(Pages);

impl fmt::Write for PageText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut pages = self.0.borrow_mut();
        match pages.last_mut() {
            Some(page) => page.push_str(s),
            None => pages.push(s.to_owned()),
        }
        Ok(())
    }
}

impl OutputDev for ByPage {
    fn begin_page(
        &mut self,
        page_num: u32,
        media_box: &MediaBox,
        art_box: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), OutputError> {
        self.pages.borrow_mut().push(String::new());
        self.plain.begin_page(page_num, media_box, art_box)
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        self.plain.end_page()
    }

    fn output_character(
        &mut self,
        trm: &Transform,
        width: f64,
        spacing: f64,
        font_size: f64,
        char: &str,
    ) -> Result<(), OutputError> {
        self.plain
            .output_character(trm, width, spacing, font_size, char)
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        self.plain.begin_word()
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        self.plain.end_word()
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        self.plain.end_line()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fold_to_one_mark() {
        assert_eq!(fold("  Page 3   of 12 "), "page # of #");
        assert_eq!(fold("Page 14 of 12"), fold("page 3 of 12"));
        assert_eq!(fold("2.1.3 Setup"), "#.#.# setup");
    }

    #[test]
    fn lines_repeated_at_page_edges_go_and_the_same_line_inside_a_page_stays() {
        let page = |n: usize, body: &str| {
            format!("Debian Handbook  {n}\nChapter 4. Packages\n\n{body}\n\nPage {n} of 4\n")
        };
        let pages = [
            page(1, "First page prose.\nDebian Handbook  7\nMore prose."),
            page(2, "Second page prose."),
            page(3, "Third page prose."),
            page(4, "Fourth page prose."),
        ];
        assert_eq!(
            without_running_lines(&pages),
            "First page prose.\nDebian Handbook  7\nMore prose.\n\n\
             Second page prose.\n\nThird page prose.\n\nFourth page prose."
        );
        // Two pages are too few to tell a running header from a coincidence.
        assert_eq!(
            without_running_lines(&pages[..2]),
            format!("{}\n\n{}", pages[0].trim(), pages[1].trim())
        );
    }
}
