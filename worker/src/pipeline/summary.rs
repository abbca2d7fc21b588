//! Extractive summaries from stored chunk vectors: the chunks nearest the
//! document's centroid carry its main topic; a sentence from each, in
//! document order, makes the summary. No extra model is needed.
//!
//! Prose is preferred over whatever else a chunk holds. From each chunk,
//! nearest first, the first sentence that reads as prose is taken
//! ([`prose_sentence`]); a chunk without one is passed over for the next.
//! What never makes a sentence: code blocks (fenced or indented), tables,
//! diagrams, headings, lines that are mostly code, paths or links (a
//! function signature, `$ apt update`, `[22]: index.html`), and fragments
//! that do not end like a sentence (a label, a list of link texts). A
//! document with no prose at all still gets a summary: the first sentences
//! of its nearest chunks, whatever they hold ([`first_sentence`]).

/// At most this many sentences.
const MAX_SENTENCES: usize = 3;
/// At most this many characters.
const MAX_CHARS: usize = 800;
/// Fewer words than this before a full stop do not make a sentence.
const MIN_SENTENCE_WORDS: usize = 2;
/// A sentence longer than this is cut at a word boundary.
const MAX_SENTENCE_CHARS: usize = 300;
/// A line with at least this share of code-like words (numerator,
/// denominator) is code.
const CODE_LINE_SHARE: (usize, usize) = (1, 2);
/// A prose sentence has at most this share of code-like words.
const PROSE_CODE_SHARE: (usize, usize) = (1, 3);

/// A summary of a document from its chunks and their (unit) vectors.
pub fn extractive(chunks: &[(String, Vec<f32>)]) -> String {
    if chunks.is_empty() {
        return String::new();
    }
    let dim = chunks[0].1.len();
    let mut centroid = vec![0f32; dim];
    for (_, v) in chunks {
        for (c, x) in centroid.iter_mut().zip(v) {
            *c += x;
        }
    }
    let mut ranked: Vec<(usize, f32)> = chunks
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (i, v.iter().zip(&centroid).map(|(a, b)| a * b).sum()))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut chosen = pick(&ranked, |i| prose_sentence(&chunks[i].0));
    if chosen.is_empty() {
        // No prose anywhere (a file of code): the nearest chunks' openings.
        chosen = pick(&ranked[..ranked.len().min(MAX_SENTENCES)], |i| {
            first_sentence(&chunks[i].0)
        });
    }
    chosen.sort_unstable_by_key(|(i, _)| *i);
    let mut out = String::new();
    for (_, sentence) in chosen {
        if out.len() + sentence.len() > MAX_CHARS && !out.is_empty() {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&sentence);
    }
    out
}

/// Up to [`MAX_SENTENCES`] distinct sentences `sentence` finds in the
/// `ranked` chunks, nearest first, with their chunk's index.
fn pick(
    ranked: &[(usize, f32)],
    sentence: impl Fn(usize) -> Option<String>,
) -> Vec<(usize, String)> {
    let mut chosen: Vec<(usize, String)> = Vec::new();
    for &(i, _) in ranked {
        if chosen.len() == MAX_SENTENCES {
            break;
        }
        if let Some(s) = sentence(i)
            && !chosen.iter().any(|(_, c)| *c == s)
        {
            chosen.push((i, s));
        }
    }
    chosen
}

/// The first sentence of a chunk that reads as prose
/// ([`is_prose_sentence`]), whitespace collapsed. Sentences do not run
/// across paragraphs, list items, or the lines left out between them
/// (headings, code, tables, link lists).
fn prose_sentence(text: &str) -> Option<String> {
    paragraphs(text).iter().find_map(|paragraph| {
        sentences(paragraph)
            .into_iter()
            .find(|s| is_prose_sentence(s))
            .map(|s| cap(s, MAX_SENTENCE_CHARS))
    })
}

/// The chunk's runs of prose lines, each flattened to one line (markup,
/// list markers and Markdown link targets removed).
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut in_code = false;
    for raw in text.lines() {
        if raw.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let line = raw.trim();
        let starts_item = strip_list_marker(line).len() < line.len();
        let prose = !in_code
            && !line.starts_with("```")
            && !raw.starts_with("    ")
            && !line.starts_with('|')
            && !line.starts_with('#')
            && !line.is_empty()
            && is_prose(line);
        let line = prose.then(|| plain(strip_list_marker(line)));
        let keep = line.as_deref().is_some_and(|l| !is_code_line(l));
        if (!keep || starts_item) && !current.is_empty() {
            out.push(current.join(" "));
            current.clear();
        }
        if let Some(line) = line.filter(|_| keep) {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current.join(" "));
    }
    out
}

/// `line` without emphasis and inline-code markup, Markdown links
/// (`[text](target)`, `[text][ref]`) as their text.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    loop {
        // The first `](` or `][` ends a link's text…
        let (close, closer) = match (rest.find("]("), rest.find("][")) {
            (Some(i), Some(r)) if r < i => (r, ']'),
            (Some(i), _) => (i, ')'),
            (None, Some(r)) => (r, ']'),
            (None, None) => break,
        };
        let target = close + 2;
        // …that starts at the last `[` before it and has a target.
        let (Some(open), Some(end)) = (
            rest[..close].rfind('['),
            rest[target..].find(closer).map(|at| target + at),
        ) else {
            out.push_str(&rest[..target]);
            rest = &rest[target..];
            continue;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace("**", "").replace('`', "")
}

/// `text`'s sentences: each ends at . ! ? followed by a space (or at the
/// end), once it has a few words (so a one-word label such as "Submit." is
/// not a sentence).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if matches!(c, '.' | '!' | '?' | '。')
            && text[end..].starts_with(|n: char| n.is_whitespace())
            && (c == '。' || text[start..i].split_whitespace().count() >= MIN_SENTENCE_WORDS)
        {
            out.push(text[start..end].trim());
            start = end;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(text[start..].trim());
    }
    out
}

/// Whether a sentence reads as prose: it ends like a sentence, has at least
/// [`MIN_SENTENCE_WORDS`] words with letters, is mostly letters, and few of
/// its words look like code, paths or links ([`PROSE_CODE_SHARE`]).
fn is_prose_sentence(sentence: &str) -> bool {
    let body = sentence.trim_end_matches(['"', '\'', '”', '’', ')']);
    if !body.ends_with(['.', '!', '?', '。']) {
        return false;
    }
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let lettered = words
        .iter()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    let code = words.iter().filter(|w| is_code_like(w)).count();
    let letters = sentence.chars().filter(|c| c.is_alphabetic()).count();
    let visible = sentence.chars().filter(|c| !c.is_whitespace()).count();
    let (num, den) = PROSE_CODE_SHARE;
    // Scripts without spaces between words end their sentences with 。.
    let enough_words = lettered >= MIN_SENTENCE_WORDS || body.ends_with('。');
    enough_words && code * den <= words.len() * num && letters * 2 >= visible
}

/// Whether a line is code, a command or a list of links rather than text:
/// a shell prompt, a share of code-like words of at least
/// [`CODE_LINE_SHARE`], or a statement's end (`;`, `{`, `}`) after code.
fn is_code_line(line: &str) -> bool {
    if line.starts_with("$ ") || line.starts_with(">>> ") {
        return true;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let code = words.iter().filter(|w| is_code_like(w)).count();
    let (num, den) = CODE_LINE_SHARE;
    code > 0 && (code * den >= words.len() * num || line.ends_with([';', '{', '}']))
}

/// Whether a word (its quotes and trailing punctuation aside) looks like
/// code, a path, an option or a link.
fn is_code_like(word: &str) -> bool {
    let w = word
        .trim_start_matches(['(', '"', '\'', '“', '‘'])
        .trim_end_matches(['"', '\'', '”', '’', ',', '.', ':', '!', '?', ')']);
    if w.is_empty() {
        return false;
    }
    w.contains("://")
        || w.starts_with("www.")
        || w.starts_with(['/', '~'])
        || w.starts_with("./")
        || (w.starts_with('-') && w[1..].starts_with(|c: char| c == '-' || c.is_alphabetic()))
        || w.contains([
            '_', '{', '}', '[', ']', '<', '>', '=', '*', '\\', '|', '$', '@', '#', '^', '`', '(',
            ')', ';',
        ])
        || w.contains("::")
        || w.contains("&&")
}

/// The first sentence of a chunk's text, whitespace collapsed (Markdown
/// headings are titles, not sentences: skipped unless nothing else is
/// there); the summary's fallback when no chunk holds prose.
fn first_sentence(text: &str) -> Option<String> {
    let mut in_code = false;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            // Code blocks, tables and diagrams are not prose.
            if l.trim_start().starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code && !l.starts_with("    ") && !l.trim_start().starts_with('|') && is_prose(l)
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let prose: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with('#'))
        .collect();
    let pick = if prose.is_empty() { &lines } else { &prose };
    let flat: String = pick
        .iter()
        .map(|l| strip_list_marker(l.trim_start_matches('#').trim()))
        .collect::<Vec<_>>()
        .join(" ")
        .replace("**", "");
    let s = sentences(&flat).into_iter().next()?;
    Some(cap(s, MAX_SENTENCE_CHARS))
}

/// A line without its list marker (`1.`, `2)`, `-`, `*`, `+`, `•`).
fn strip_list_marker(line: &str) -> &str {
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let marker = if digits > 0 {
        line[digits..].strip_prefix(['.', ')'])
    } else {
        line.strip_prefix(['-', '*', '+', '•'])
    };
    match marker {
        Some(rest) if rest.starts_with(' ') => rest.trim_start(),
        _ => line,
    }
}

/// Whether a line reads as text: mostly letters, digits and spaces.
fn is_prose(line: &str) -> bool {
    let total = line.chars().count();
    let wordy = line
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .count();
    total == 0 || wordy * 10 >= total * 7
}

/// `s` cut at a word boundary to at most `max` characters (with an ellipsis).
fn cap(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max).collect();
    let at = cut.rfind(' ').unwrap_or(cut.len());
    format!("{}…", cut[..at].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_central_chunks_in_document_order() {
        let chunks = vec![
            ("Cats purr. More about cats.".to_string(), vec![1.0, 0.0]),
            ("Outlier text here. Noise.".to_string(), vec![0.0, 1.0]),
            ("Cats nap a lot. Zzz.".to_string(), vec![0.9, 0.1]),
        ];
        let s = extractive(&chunks);
        assert!(s.starts_with("Cats purr."), "{s}");
        assert!(s.contains("Cats nap a lot."), "{s}");
    }

    #[test]
    fn headings_are_not_sentences() {
        let chunks = vec![("# Cats\n\nCats purr. A lot.".to_string(), vec![1.0])];
        assert_eq!(extractive(&chunks), "Cats purr.");
    }

    #[test]
    fn code_tables_and_diagrams_are_skipped() {
        let text = "```text\n┌──┐ box │\n```\n| a | b |\n|---|---|\nReal prose starts here. More.";
        let chunks = vec![(text.to_string(), vec![1.0])];
        assert_eq!(extractive(&chunks), "Real prose starts here.");
    }

    #[test]
    fn endless_sentences_are_capped_at_a_word() {
        let long = "word ".repeat(200);
        let s = extractive(&[(long, vec![1.0])]);
        assert!(
            s.chars().count() <= MAX_SENTENCE_CHARS + 1 && s.ends_with('…'),
            "{s}"
        );
    }

    #[test]
    fn list_markers_and_short_fragments_do_not_end_a_sentence() {
        let text =
            "## Crates\n\n1. **Submit.** The API validates the job and queues it. Then more.";
        let chunks = vec![(text.to_string(), vec![1.0])];
        assert_eq!(
            extractive(&chunks),
            "Submit. The API validates the job and queues it."
        );
        assert_eq!(strip_list_marker("- item"), "item");
        assert_eq!(strip_list_marker("12) twelve"), "twelve");
        assert_eq!(strip_list_marker("-5 degrees"), "-5 degrees");
        assert_eq!(strip_list_marker("2026 was"), "2026 was");
    }

    #[test]
    fn empty_documents_have_empty_summaries() {
        assert_eq!(extractive(&[]), "");
    }

    #[test]
    fn code_commands_and_link_references_are_not_sentences() {
        let text = "int pkg_compare(const char *a, const char *b);\n\
                    $ sudo apt update\n\
                    [22]: index.html\n\
                    https://www.debian.org/doc/\n\
                    The tool compares two versions. More.";
        assert_eq!(
            extractive(&[(text.to_string(), vec![1.0])]),
            "The tool compares two versions."
        );
    }

    #[test]
    fn a_chunk_without_prose_gives_way_to_the_next_nearest() {
        let chunks = vec![
            (
                "Apt keeps a cache of package lists.".to_string(),
                vec![0.0, 1.0],
            ),
            (
                "* [Home](index.html)\n* [Next](ch02.html)\nfn main() -> Result<()> {".to_string(),
                vec![1.0, 0.0],
            ),
            ("Reading them is fast.".to_string(), vec![0.9, 0.1]),
            ("Labels only\n\nSee also:".to_string(), vec![0.95, 0.05]),
        ];
        assert_eq!(
            extractive(&chunks),
            "Apt keeps a cache of package lists. Reading them is fast."
        );
    }

    #[test]
    fn sentences_without_spaces_are_prose() {
        let chunks = vec![
            ("$ apt update".to_string(), vec![1.0]),
            (
                "猫は一日の大半を眠って過ごす。 二文目。".to_string(),
                vec![0.5],
            ),
        ];
        assert_eq!(extractive(&chunks), "猫は一日の大半を眠って過ごす。");
    }

    #[test]
    fn a_document_of_nothing_but_code_still_gets_a_summary() {
        let chunks = vec![
            ("fn main() {\n    run();\n}".to_string(), vec![1.0]),
            ("$ cargo run".to_string(), vec![1.0]),
        ];
        assert_eq!(extractive(&chunks), "fn main() { $ cargo run");
    }

    #[test]
    fn sentences_stay_inside_their_paragraph_and_links_read_as_text() {
        let text = "See also:\n\nDebian Reference\n* Network setup\n\n\
                    Read [the guide](https://x.org/guide) before you start. More.";
        assert_eq!(
            extractive(&[(text.to_string(), vec![1.0])]),
            "Read the guide before you start."
        );
        assert_eq!(
            plain("See [the guide][3] and [apt](apt.html), [not a link]. [a](b) [c]("),
            "See the guide and apt, [not a link]. a [c]("
        );
        assert_eq!(
            paragraphs("One line\nwraps here.\n\n* item one\n* item two\n`code` too."),
            ["One line wraps here.", "item one", "item two code too."]
        );
    }

    /// A summary of `text` cut into 64-token chunks as the pipeline cuts
    /// them, the first chunks nearest the centroid (`last_first`: the last).
    fn summary_of(text: &str, last_first: bool) -> String {
        use hopper_extract::chunk::{TokenCounter, chunk};
        let dir = std::env::var_os("HOPPER_MODEL_DIR")
            .expect("HOPPER_MODEL_DIR: the model's directory (scripts/env.sh sets it)");
        let counter =
            TokenCounter::load(std::path::Path::new(&dir)).expect("the model's tokenizer");
        let spans = chunk(text, false, &counter, 64, 8).unwrap();
        let n = spans.len();
        let chunks: Vec<(String, Vec<f32>)> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // Scores against the centroid rise (or fall) with the index.
                let rank = if last_first { i } else { n - 1 - i };
                (text[s.start..s.end].to_string(), vec![1.0, rank as f32])
            })
            .collect();
        extractive(&chunks)
    }

    /// extract/tests/cleanup.rs checks these are the extractor's output, old
    /// and new.
    const MANUAL_BEFORE: &str =
        include_str!("../../../extract/tests/fixtures/debian-manual.before.txt");
    const MANUAL: &str = include_str!("../../../extract/tests/fixtures/debian-manual.txt");
    const GUIDE_BEFORE: &str =
        include_str!("../../../extract/tests/fixtures/install-guide.before.txt");
    const GUIDE: &str = include_str!("../../../extract/tests/fixtures/install-guide.txt");

    const DEBIAN: &str = "Debian is a volunteer project that builds consistent distributions \
                          of pre-compiled binary packages of free software and serves them \
                          from its archive mirrors.";
    const SUITES: &str = "The archive is split into suites such as stable, testing and \
                          unstable, and each suite into the areas main, contrib and non-free.";
    const NEVER_MIX: &str = "Never mix packages from unrelated archives on one system, because \
                             their dependencies can conflict in ways that are hard to undo.";
    const LIBRARY: &str = "The library compares two package versions the way the package \
                           manager does, and returns a negative number, zero or a positive \
                           number.";
    const UPGRADE: &str = "An upgrade that would remove many packages deserves a second look: \
                           stop and read what it plans before you confirm it.";

    /// Before, the old summary of the old text was its site bar
    /// ("[[Debian]][1] [Home][2] | … Chapter 2. Table of Contents") with the
    /// first chunks nearest, and ten `[n]: url` lines with the last.
    #[test]
    fn the_html_manual_is_summarised_in_prose() {
        assert_eq!(
            summary_of(MANUAL, false),
            [DEBIAN, SUITES, NEVER_MIX].join(" ")
        );
        assert_eq!(
            summary_of(MANUAL, true),
            [NEVER_MIX, LIBRARY, UPGRADE].join(" ")
        );
        // The old text's link markers and references never make a sentence
        // either, though its footnote markers ride along.
        assert_eq!(
            summary_of(MANUAL_BEFORE, false),
            [
                DEBIAN,
                "The archive is split into suites such as stable, testing and unstable, and each \
                 suite into the areas main, contrib and non-free.^{[1]} A system follows one \
                 suite at a time and upgrades within it.",
                NEVER_MIX
            ]
            .join(" ")
        );
        let last = summary_of(MANUAL_BEFORE, true);
        assert!(
            last.starts_with(UPGRADE) && !last.contains("]: ") && !last.contains("]["),
            "{last}"
        );
    }

    /// Before, the old summary of the old text began "Debian GNU/Linux
    /// Installation Guide Chapter 4. Page 1 of 5 Debian GNU/Linux
    /// Installation Guide Chapter 4." (the running header and footer).
    #[test]
    fn the_pdf_manual_is_summarised_in_prose() {
        let first = "This guide explains how to install Debian on a new machine. The installer \
                     boots from a USB stick written with the command above. Partitioning comes \
                     next.";
        let last = "Partitioning comes next. Packages are fetched from a mirror close to you. \
                    Reboot when the installer asks, and remove the USB stick first.";
        for text in [GUIDE, GUIDE_BEFORE] {
            assert_eq!(summary_of(text, false), first);
            assert_eq!(summary_of(text, true), last);
        }
    }
}
