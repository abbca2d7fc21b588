//! `hopper documents upload|list|show|delete|sets|reembed|cancel-reembed`
//! and `hopper search`: documents
//! and semantic search over them, through the API.
//!
//! `upload` is [`crate::upload`] (files up, then each followed to `ready`);
//! `list`, `show` and `delete` are `GET /v1/documents`,
//! `GET /v1/documents/{id}` and `DELETE /v1/documents/{id}`; `sets`,
//! `reembed` and `cancel-reembed` are `/v1/document-sets` (each set's
//! model, switching it to another); `search` asks
//! `POST /v1/search` for the chunks that best answer a query: nearest
//! vectors, keyword matches or both fused (`--mode`).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::{
    api::{Api, segment},
    output, upload,
};

/// The `documents` subcommands.
#[derive(Debug, Subcommand)]
pub enum DocumentsCommand {
    /// Upload files (text, Markdown, HTML, PDF) and follow them to `ready`.
    Upload {
        /// Files to upload.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Document set to put them in.
        #[arg(long)]
        document_set: Option<String>,
        /// Return after the upload instead of following progress.
        #[arg(long)]
        no_wait: bool,
    },
    /// List documents, newest first.
    List {
        #[arg(long)]
        document_set: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one document.
    Show { id: String },
    /// Delete a document with its chunks.
    Delete { id: String },
    /// List document sets: each one's model, sizes and re-embed progress.
    Sets,
    /// Re-embed a document set with another model, in the background;
    /// search answers from the old vectors until the set switches.
    Reembed {
        /// The document set.
        set: String,
        /// The model to switch to (`name` or `name@version`).
        model: String,
    },
    /// Cancel a document set's running re-embed.
    CancelReembed {
        /// The document set.
        set: String,
    },
}

/// Runs one `documents` subcommand.
pub async fn run(api: &Api, json: bool, command: DocumentsCommand) -> anyhow::Result<()> {
    match command {
        DocumentsCommand::Upload {
            files,
            document_set,
            no_wait,
        } => upload::run(api, json, &files, document_set.as_deref(), !no_wait).await,
        DocumentsCommand::List {
            document_set,
            limit,
        } => {
            let mut path = format!("/v1/documents?limit={limit}");
            if let Some(set) = document_set {
                path.push_str(&format!("&document_set={set}"));
            }
            let r = api.get(&path).await?;
            output::print(json, &r, || output::documents(&r))
        }
        DocumentsCommand::Show { id } => {
            let r = api.get(&format!("/v1/documents/{id}")).await?;
            output::print(json, &r, || output::document(&r))
        }
        DocumentsCommand::Delete { id } => {
            api.delete(&format!("/v1/documents/{id}")).await?;
            output::print(json, &serde_json::json!({ "deleted": id }), || {
                format!("deleted {id}\n")
            })
        }
        DocumentsCommand::Sets => {
            let r = api.get("/v1/document-sets").await?;
            output::print(json, &r, || output::document_sets(&r))
        }
        DocumentsCommand::Reembed { set, model } => {
            let path = format!("/v1/document-sets/{}/reembed", segment(&set));
            let r = api
                .post_json(&path, &serde_json::json!({ "model": model }))
                .await?;
            output::print(json, &r, || {
                format!(
                    "re-embedding {set} with {}: {} chunks in {} batches (re-embed {})\n",
                    r["model"].as_str().unwrap_or("?"),
                    r["chunks_total"],
                    r["batches"],
                    r["id"].as_str().unwrap_or("?"),
                )
            })
        }
        DocumentsCommand::CancelReembed { set } => {
            let path = format!("/v1/document-sets/{}/reembed/cancel", segment(&set));
            let r = api.post_json(&path, &serde_json::json!({})).await?;
            output::print(json, &r, || {
                format!(
                    "cancelled re-embed {} of {set}\n",
                    r["id"].as_str().unwrap_or("?")
                )
            })
        }
    }
}

/// How `hopper search` ranks chunks (`POST /v1/search`'s `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchMode {
    /// Nearest vectors: finds paraphrases (the query is embedded).
    Vector,
    /// Postgres full text: finds exact words and identifiers.
    Keyword,
    /// Both, fused by reciprocal rank fusion.
    Hybrid,
}

impl SearchMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Keyword => "keyword",
            Self::Hybrid => "hybrid",
        }
    }
}

/// The arguments of `hopper search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The query.
    pub query: String,
    /// Number of hits.
    #[arg(short, long, default_value_t = 5)]
    pub k: u32,
    /// Only this document set.
    #[arg(long)]
    pub document_set: Option<String>,
    /// How chunks are ranked.
    #[arg(long, value_enum, default_value = "vector")]
    pub mode: SearchMode,
    /// `--mode hybrid`: weight of the nearest-vector list (0-100, default 1).
    #[arg(long)]
    pub vector_weight: Option<f64>,
    /// `--mode hybrid`: weight of the keyword list (0-100, default 1).
    #[arg(long)]
    pub keyword_weight: Option<f64>,
}

/// The body of `POST /v1/search` for `args`.
fn search_body(args: &SearchArgs) -> serde_json::Value {
    let mut body = serde_json::json!({
        "query": args.query,
        "k": args.k,
        "document_set": args.document_set,
        "mode": args.mode.as_str(),
    });
    let mut weights = serde_json::Map::new();
    for (name, weight) in [
        ("vector", args.vector_weight),
        ("keyword", args.keyword_weight),
    ] {
        if let Some(w) = weight {
            weights.insert(name.into(), w.into());
        }
    }
    if !weights.is_empty() {
        body["weights"] = weights.into();
    }
    body
}

/// Runs `hopper search`: the `k` chunks that best answer the query, ranked
/// by `--mode`, in `--document-set` when given.
pub async fn search(api: &Api, json: bool, args: SearchArgs) -> anyhow::Result<()> {
    let r = api.post_json("/v1/search", &search_body(&args)).await?;
    output::print(json, &r, || output::hits(&r))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        search: SearchArgs,
    }

    fn body(args: &[&str]) -> serde_json::Value {
        let cli = Cli::try_parse_from(std::iter::once("search").chain(args.iter().copied()))
            .expect("arguments parse");
        search_body(&cli.search)
    }

    #[test]
    fn mode_and_weights_reach_the_request() {
        let b = body(&["BRCA1"]);
        assert_eq!(b["mode"], "vector");
        assert!(b.get("weights").is_none(), "{b}");
        let b = body(&[
            "BRCA1",
            "--mode",
            "hybrid",
            "--keyword-weight",
            "2",
            "-k",
            "3",
        ]);
        assert_eq!(b["mode"], "hybrid");
        assert_eq!(b["k"], 3);
        assert_eq!(b["weights"], serde_json::json!({"keyword": 2.0}));
        assert!(Cli::try_parse_from(["search", "q", "--mode", "fuzzy"]).is_err());
    }
}
