//! ARCHITECTURE.md and README.md stay true to the tree: every repository
//! path they name in backticks exists, so a renamed or deleted file cannot
//! leave the map pointing at nothing.
//!
//! A backticked span names a path when its first word contains a `/` or ends
//! in a source or document extension (`.rs`, `.lua`, `.toml`, `.md`, `.sh`,
//! `.py`, `.sql`, …). Not paths: URLs (`://`), HTTP routes (a leading `/`),
//! placeholders (`<id>`), globs (`*`, `?`, `[`), elisions (`…`), shell
//! variables (`$`) and rates (`20/s`). `{a,b}` lists are expanded, each
//! alternative checked. What `scripts/setup` or the build makes (`.cache/`,
//! `target/`) is not in a fresh clone, so it is not checked.
//!
//! A path resolves from the repository root; failing that, a relative name
//! (`pipeline/sandbox.rs`, `declare.lua`) must be the tail of some path —
//! within the crate whose row of the crates table names it (a row that opens
//! with `` `shared/` `` looks only under `shared/`), else anywhere. A name
//! with a trailing `/` must be a directory.

use std::path::Path;

use hopper_tests::workspace;

/// Extensions that make a span a path even without a `/`.
const EXTENSIONS: &[&str] = &[
    ".rs", ".lua", ".toml", ".md", ".sh", ".py", ".sql", ".js", ".mjs", ".cpp", ".json", ".yaml",
    ".yml", ".css", ".html", ".txt",
];

/// Directories never searched: build output, git, what `scripts/setup`
/// downloads, installed packages.
const SKIPPED_DIRS: &[&str] = &["target", ".git", ".cache", "node_modules", "__pycache__"];

/// Made by setup or the build, absent from a fresh clone.
const GENERATED: &[&str] = &[".cache/", "target/"];

/// A path a document names.
#[derive(Debug, PartialEq)]
struct Named {
    /// 1-based line.
    line: usize,
    /// As written, `{a,b}` expanded.
    path: String,
    /// The crate directory whose table row names it (`shared/`), or empty.
    scope: String,
}

/// Every repository path named in `doc`.
fn named_paths(doc: &str) -> Vec<Named> {
    let mut named = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        let scope = table_row_scope(line).unwrap_or_default();
        for span in line.split('`').skip(1).step_by(2) {
            let Some(word) = span.split_whitespace().next() else {
                continue;
            };
            if !is_path(word) {
                continue;
            }
            for path in expand_braces(word) {
                named.push(Named {
                    line: i + 1,
                    path,
                    scope: scope.clone(),
                });
            }
        }
    }
    named
}

/// The directory a table row is about: its first cell is one backticked
/// directory, as in the crates table (`` | `worker/` | lib + bin … ``).
fn table_row_scope(line: &str) -> Option<String> {
    let first = line.strip_prefix("| `")?.split('`').next()?;
    (first.ends_with('/') && !first.contains(' ')).then(|| first.to_owned())
}

fn is_path(word: &str) -> bool {
    let looks_like_one = word.contains('/') || EXTENSIONS.iter().any(|e| word.ends_with(e));
    let is_rate = word
        .split_once('/')
        .is_some_and(|(n, unit)| n.bytes().all(|b| b.is_ascii_digit()) && unit.len() == 1);
    looks_like_one
        && !word.contains("://")
        && !word.starts_with('/')
        && !word.contains(['<', '>', '*', '?', '[', '…', '$'])
        && !is_rate
        && !GENERATED.iter().any(|g| word.starts_with(g))
}

/// `scripts/bench/{queue,soak}` → `scripts/bench/queue`, `scripts/bench/soak`.
fn expand_braces(word: &str) -> Vec<String> {
    let Some(open) = word.find('{') else {
        return vec![word.to_owned()];
    };
    let Some(close) = word[open..].find('}').map(|c| open + c) else {
        return vec![word.to_owned()];
    };
    let (head, tail) = (&word[..open], &word[close + 1..]);
    word[open + 1..close]
        .split(',')
        .flat_map(|alt| expand_braces(&format!("{head}{alt}{tail}")))
        .collect()
}

/// Every file and directory of the repository, `/`-separated from its root
/// (directories with a trailing `/`).
fn tree(root: &Path) -> Vec<String> {
    let mut entries = Vec::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let read = std::fs::read_dir(root.join(&dir)).expect("readable directory");
        for entry in read {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().expect("file type").is_dir();
            if is_dir && SKIPPED_DIRS.contains(&name.as_str()) {
                continue;
            }
            let path = format!("{dir}{name}");
            if is_dir {
                entries.push(format!("{path}/"));
                dirs.push(format!("{path}/"));
            } else {
                entries.push(path);
            }
        }
    }
    entries
}

/// Whether `named` is a path of `tree` (see the module's doc).
fn resolves(tree: &[String], named: &Named) -> bool {
    let want_dir = named.path.ends_with('/');
    let name = named.path.trim_end_matches('/');
    let kind_fits = |entry: &str| !want_dir || entry.ends_with('/');
    let from_root = tree
        .iter()
        .any(|e| e.trim_end_matches('/') == name && kind_fits(e));
    from_root
        || tree.iter().any(|e| {
            e.starts_with(&named.scope)
                && e.trim_end_matches('/').ends_with(&format!("/{name}"))
                && kind_fits(e)
        })
}

/// `file:line: path` for each path `doc` names that is not in `tree`.
fn missing(file: &str, doc: &str, tree: &[String]) -> Vec<String> {
    named_paths(doc)
        .into_iter()
        .filter(|n| !resolves(tree, n))
        .map(|n| {
            let within = if n.scope.is_empty() {
                String::new()
            } else {
                format!(" (under `{}`)", n.scope)
            };
            format!("{file}:{}: `{}`{within}", n.line, n.path)
        })
        .collect()
}

fn check(file: &str, at_least: usize) {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join(file)).expect("the document");
    let named = named_paths(&doc).len();
    assert!(
        named >= at_least,
        "{file} names only {named} paths: is the extraction broken?"
    );
    let missing = missing(file, &doc, &tree(&root));
    assert!(
        missing.is_empty(),
        "{file} names paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_path_architecture_md_names_exists() {
    check("ARCHITECTURE.md", 150);
}

#[test]
fn every_path_readme_names_exists() {
    check("README.md", 30);
}

#[test]
fn the_check_finds_paths_resolves_them_in_their_crate_and_reports_the_missing() {
    let tree: Vec<String> = [
        "shared/",
        "shared/src/",
        "shared/src/keys.rs",
        "worker/",
        "worker/src/",
        "worker/src/http.rs",
        "worker/src/pipeline/",
        "worker/src/pipeline/sandbox.rs",
        "scripts/",
        "scripts/bench/",
        "scripts/bench/queue",
    ]
    .map(String::from)
    .to_vec();
    let doc = "\
Start with `shared/src/keys.rs` and `pipeline/sandbox.rs`; run `scripts/bench/{queue,soak}`.
| `shared/` | lib | keys (`keys.rs`), and `http.rs`, which is the worker's |
Not paths: `POST /v1/jobs/{id}`, `redis://host`, `{p:q}:job:<id>`, `20/s`, `queue/*.lua`, `.cache/models/`.
`scripts/bench/queue --rounds 3` is a command; `pipeline/` a directory, `http.rs/` not one.
";
    let named: Vec<_> = named_paths(doc).into_iter().map(|n| n.path).collect();
    assert_eq!(
        named,
        [
            "shared/src/keys.rs",
            "pipeline/sandbox.rs",
            "scripts/bench/queue",
            "scripts/bench/soak",
            "shared/",
            "keys.rs",
            "http.rs",
            "scripts/bench/queue",
            "pipeline/",
            "http.rs/",
        ]
    );
    assert_eq!(
        missing("DOC.md", doc, &tree),
        [
            "DOC.md:1: `scripts/bench/soak`",
            "DOC.md:2: `http.rs` (under `shared/`)",
            "DOC.md:4: `http.rs/`",
        ]
    );
}
