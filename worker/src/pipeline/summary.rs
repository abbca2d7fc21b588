//! Extractive summaries from stored chunk vectors: the chunks nearest the
//! document's centroid carry its main topic; their leading sentences, in
//! document order, make the summary. No extra model is needed.

/// At most this many sentences.
const MAX_SENTENCES: usize = 3;
/// At most this many characters.
const MAX_CHARS: usize = 800;
/// Fewer words than this before a full stop do not make a sentence.
const MIN_SENTENCE_WORDS: usize = 2;
/// A sentence longer than this is cut at a word boundary.
const MAX_SENTENCE_CHARS: usize = 300;

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
    let mut chosen: Vec<usize> = ranked.iter().take(MAX_SENTENCES).map(|(i, _)| *i).collect();
    chosen.sort_unstable();
    let mut out = String::new();
    for i in chosen {
        let Some(sentence) = first_sentence(&chunks[i].0) else {
            continue;
        };
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

/// The first sentence of a chunk's prose, whitespace collapsed (Markdown
/// headings are titles, not sentences: skipped unless nothing else is there).
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
    // A sentence ends at . ! ? followed by a space, once it has a few words
    // (so a one-word label such as "Submit." is not a sentence).
    let end = flat
        .char_indices()
        .find(|&(i, c)| {
            matches!(c, '.' | '!' | '?' | '。')
                && flat[i + c.len_utf8()..].starts_with(|n: char| n.is_whitespace())
                && (c == '。' || flat[..i].split_whitespace().count() >= MIN_SENTENCE_WORDS)
        })
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(flat.len());
    let s = flat[..end].trim();
    (!s.is_empty()).then(|| cap(s, MAX_SENTENCE_CHARS))
}

/// A line without its list marker (`1.`, `2)`, `-`, `*`, `+`).
fn strip_list_marker(line: &str) -> &str {
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let marker = if digits > 0 {
        line[digits..].strip_prefix(['.', ')'])
    } else {
        line.strip_prefix(['-', '*', '+'])
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
}
