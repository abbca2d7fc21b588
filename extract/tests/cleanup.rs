//! Extraction leaves out what is not the document's content, shown before
//! and after on files shaped like the ones that showed the problem (issue
//! 19): a Debian manual's HTML chapter and two PDF manuals.
//!
//! - `fixtures/debian-manual.html` is the HTML page. `debian-manual.before.txt`
//!   is what the extractor made of it before (html2text's plain output:
//!   `[text][n]` links, a `[n]: url` list at the end, table borders, every
//!   navigation bar), `debian-manual.txt` what it makes now.
//! - The PDF manuals are written here ([`install_guide`], [`handbook`]):
//!   pages with running headers, footers and page numbers.
//!   `install-guide.before.txt` is pdf-extract's text of the first, as the
//!   extractor took it before, `install-guide.txt` the text now.
//!
//! The `.txt` files are compared exactly; `HOPPER_BLESS=1` rewrites them
//! from the current code instead (read the diff before committing it). The
//! worker's summary tests (`worker/src/pipeline/summary.rs`) summarise them.
//! Chunking needs the model's tokenizer (`HOPPER_MODEL_DIR`, set by
//! `scripts/env.sh`).

use std::path::{Path, PathBuf};

use hopper_extract::{
    chunk::{TokenCounter, chunk},
    text::{ParseLimits, extract},
};

const LIMITS: ParseLimits = ParseLimits {
    max_pdf_pages: 100,
    max_html_depth: 256,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `text` equals the golden file `name` (or becomes it, with
/// `HOPPER_BLESS=1`).
fn golden(name: &str, text: &str) {
    let path = fixture(name);
    if std::env::var_os("HOPPER_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (HOPPER_BLESS=1 writes it)", path.display()));
    assert!(
        text == expected,
        "{name} differs (HOPPER_BLESS=1 rewrites it):\n--- expected\n{expected}\n--- got\n{text}"
    );
}

/// The chunks of `text`, 64 tokens each, as the pipeline cuts them.
fn chunks(text: &str) -> Vec<&str> {
    let dir = std::env::var_os("HOPPER_MODEL_DIR")
        .expect("HOPPER_MODEL_DIR: the model's directory (scripts/env.sh sets it)");
    let counter = TokenCounter::load(Path::new(&dir)).expect("the model's tokenizer");
    let spans = chunk(text, false, &counter, 64, 8).unwrap();
    assert!(spans.len() > 3, "{} chunks", spans.len());
    spans.iter().map(|s| &text[s.start..s.end]).collect()
}

/// Lines of the form `[12]: target`: html2text's list of link references.
fn link_references(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            l.strip_prefix('[')
                .and_then(|l| l.split_once("]: "))
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .count()
}

/// `[text][12]`-style link markers (and `[][12]`, a link with no text).
fn link_markers(text: &str) -> usize {
    text.matches("][").count()
}

const MANUAL: &str = include_str!("fixtures/debian-manual.html");

/// Lines only the page's navigation, table of contents and link footer
/// hold.
const HTML_CHROME: &[&str] = &[
    "Developers' Corner",
    "Prev",
    "Next",
    "Table of Contents",
    "2.1.3. Life with eternal upgrades",
    "Quick links",
    "See also",
    "Chapter 1. GNU/Linux tutorials",
    "Authentication and access controls",
    "I18N and L10N",
    "https://",
    "index.en.html",
];

/// Sentences of the page's prose, each of which must survive.
const HTML_PROSE: &[&str] = &[
    "Debian is a volunteer project that builds consistent distributions of pre-compiled binary \
     packages of free software and serves them from its archive mirrors.",
    "The archive is split into suites such as stable, testing and unstable, and each suite into \
     the areas main, contrib and non-free.",
    "Never mix packages from unrelated archives on one system, because their dependencies can \
     conflict in ways that are hard to undo.",
    "The library compares two package versions the way the package manager does, and returns a \
     negative number, zero or a positive number.",
    "An upgrade that would remove many packages deserves a second look: stop and read what it \
     plans before you confirm it.",
    "The names of the areas changed over time; see the Debian Policy Manual.",
];

#[test]
fn html_loses_its_navigation_link_lists_and_reference_markers() {
    // Before: the extractor's former html2text settings.
    let before = html2text::config::plain()
        .no_link_wrapping()
        .string_from_read(MANUAL.as_bytes(), 10_000)
        .unwrap();
    golden("debian-manual.before.txt", &before);
    assert_eq!(link_references(&before), 37, "{before}");
    assert!(link_markers(&before) >= 37, "{before}");
    assert!(
        before.contains('│') && before.contains("[Prev][7]"),
        "{before}"
    );
    let before_chunks = chunks(&before);
    assert!(
        before_chunks.iter().any(|c| link_references(c) >= 5),
        "a chunk of nothing but link references"
    );

    let after = extract("text/html", MANUAL.as_bytes(), &LIMITS).unwrap();
    golden("debian-manual.txt", &after);
    assert_eq!(link_references(&after), 0, "{after}");
    assert_eq!(link_markers(&after), 0, "{after}");
    for chrome in HTML_CHROME {
        assert!(before.contains(chrome), "the fixture has {chrome:?} before");
        assert!(!after.contains(chrome), "{chrome:?} is left:\n{after}");
    }
    assert!(
        !after.contains(['│', '─'])
            && !after.contains("**")
            && after.lines().all(|l| l == "```" || !l.contains('`')),
        "no table borders, no bold or code marks:\n{after}"
    );
    let flat = after.split_whitespace().collect::<Vec<_>>().join(" ");
    for sentence in HTML_PROSE {
        assert!(flat.contains(sentence), "{sentence:?} is lost:\n{after}");
    }
    // Code stays, fenced.
    assert!(
        after.contains("```\n$ sudo apt update\n$ sudo apt install package_name\n"),
        "{after}"
    );
    for c in chunks(&after) {
        assert_eq!(link_references(c) + link_markers(c), 0, "{c}");
    }
}

/// One page of a hand-made PDF: lines at the top, body lines (an empty one
/// is a paragraph break), lines at the bottom.
struct Page {
    top: Vec<String>,
    body: Vec<&'static str>,
    bottom: Vec<String>,
}

/// A PDF of `pages` in Helvetica on US Letter.
fn pdf(pages: &[Page]) -> Vec<u8> {
    fn text_block(size: u32, x: u32, y: u32, lines: &[&str]) -> String {
        let mut block = format!("BT /F1 {size} Tf {x} {y} Td 15 TL\n");
        for line in lines {
            if line.is_empty() {
                block.push_str("T*\n");
                continue;
            }
            let escaped = line
                .replace('\\', "\\\\")
                .replace('(', "\\(")
                .replace(')', "\\)");
            block.push_str(&format!("({escaped}) Tj T*\n"));
        }
        block.push_str("ET\n");
        block
    }
    let n = pages.len();
    let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_string(),
    ];
    for (i, page) in pages.iter().enumerate() {
        let top: Vec<&str> = page.top.iter().map(String::as_str).collect();
        let bottom: Vec<&str> = page.bottom.iter().map(String::as_str).collect();
        let content = [
            text_block(9, 72, 760, &top),
            text_block(11, 72, 700, &page.body),
            text_block(9, 72, 50, &bottom),
        ]
        .concat();
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R \
             /Resources << /Font << /F1 3 0 R >> >> >>",
            5 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// Five pages under a two-line running header (the guide's title and the
/// chapter's), each with a "Page n of 5" footer; one page opens with a
/// function signature, one with a list of mirror URLs.
fn install_guide() -> Vec<u8> {
    let bodies: [Vec<&'static str>; 5] = [
        vec![
            "This guide explains how to install Debian on a new machine. It covers",
            "preparing the installation media, booting the installer and choosing",
            "a partition layout.",
            "",
            "Debian runs on most 64-bit PCs sold in the last ten years.",
        ],
        vec![
            "$ dd if=debian-12-amd64-netinst.iso of=/dev/sdX bs=4M status=progress",
            "",
            "The installer boots from a USB stick written with the command above.",
            "Replace sdX with the name of your device before you run it.",
        ],
        vec![
            "int partman_auto(const char *recipe, struct disk_layout *out);",
            "",
            "Partitioning comes next. The guided mode suits most machines and puts",
            "the whole system in one partition.",
        ],
        vec![
            "https://deb.debian.org/debian/",
            "https://security.debian.org/debian-security/",
            "",
            "Packages are fetched from a mirror close to you. The installer asks",
            "which one to use and tests it before going on.",
        ],
        vec![
            "Reboot when the installer asks, and remove the USB stick first. The",
            "new system starts with a login prompt.",
        ],
    ];
    let pages: Vec<Page> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Page {
            top: vec![
                "Debian GNU/Linux Installation Guide".into(),
                "Chapter 4. Installing Debian".into(),
            ],
            body,
            bottom: vec![format!("Page {} of 5", i + 1)],
        })
        .collect();
    pdf(&pages)
}

/// Six pages whose running headers alternate (the book's title on even
/// pages, the chapter's on odd ones), a bare page number at the bottom, and
/// a note repeated in the middle of three pages.
fn handbook() -> Vec<u8> {
    let bodies: [Vec<&'static str>; 6] = [
        vec![
            "Every package names the packages it depends on.",
            "Note: run these commands as root.",
            "The package manager reads those lists.",
        ],
        vec!["A package may also recommend or suggest others."],
        vec![
            "Conflicts keep two packages off one system.",
            "Note: run these commands as root.",
            "Breaks is a milder form of a conflict.",
        ],
        vec!["Virtual packages name a feature, not a program."],
        vec![
            "Several packages may provide the same virtual package.",
            "Note: run these commands as root.",
            "Alternatives choose one of them.",
        ],
        vec!["Pinning decides which version a system prefers."],
    ];
    let pages: Vec<Page> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let n = i + 1;
            let header = if n % 2 == 0 {
                format!("{n}    The Debian Administrator's Handbook")
            } else {
                format!("Chapter 5. Packaging System    {n}")
            };
            Page {
                top: vec![header],
                body,
                bottom: vec![format!("{}", 40 + n)],
            }
        })
        .collect();
    pdf(&pages)
}

#[test]
fn pdf_running_headers_footers_and_page_numbers_are_dropped() {
    let bytes = install_guide();
    // Before: pdf-extract's text of the whole document, as the extractor took it.
    let before = pdf_extract::extract_text_from_mem(&bytes).unwrap();
    golden("install-guide.before.txt", &before);
    let after = extract("application/pdf", &bytes, &LIMITS).unwrap();
    golden("install-guide.txt", &after);
    for running in [
        "Debian GNU/Linux Installation Guide",
        "Chapter 4. Installing Debian",
        "Page 3 of 5",
    ] {
        assert!(before.contains(running), "{running:?} before:\n{before}");
        assert!(!after.contains(running), "{running:?} is left:\n{after}");
    }
    assert!(!after.contains(" of 5"), "{after}");
    for body in [
        "This guide explains how to install Debian on a new machine.",
        "$ dd if=debian-12-amd64-netinst.iso of=/dev/sdX bs=4M status=progress",
        "int partman_auto(const char *recipe, struct disk_layout *out);",
        "https://security.debian.org/debian-security/",
        "new system starts with a login prompt.",
    ] {
        assert!(after.contains(body), "{body:?} is lost:\n{after}");
    }
    let before_chunks = chunks(&before);
    assert!(
        before_chunks
            .iter()
            .any(|c| c.contains("Installation Guide")),
        "the running header sits in the chunks before"
    );
    for c in chunks(&after) {
        assert!(
            !c.contains("Installation Guide") && !c.contains("Page "),
            "{c}"
        );
    }
}

#[test]
fn alternating_headers_and_bare_page_numbers_are_dropped_repeated_body_lines_stay() {
    let bytes = handbook();
    let before = pdf_extract::extract_text_from_mem(&bytes).unwrap();
    let after = extract("application/pdf", &bytes, &LIMITS).unwrap();
    for running in ["Administrator's Handbook", "Chapter 5.", "\n43\n"] {
        assert!(before.contains(running), "{running:?} before:\n{before}");
        assert!(!after.contains(running), "{running:?} is left:\n{after}");
    }
    assert_eq!(
        after.matches("Note: run these commands as root.").count(),
        3,
        "{after}"
    );
    assert!(
        !after.lines().any(|l| l.trim().parse::<u32>().is_ok()),
        "{after}"
    );
    assert_eq!(
        after.lines().filter(|l| !l.trim().is_empty()).count(),
        12,
        "the body's twelve lines and nothing else:\n{after}"
    );
}
