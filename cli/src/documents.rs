//! `hopper documents upload|list|show|delete` and `hopper search`: documents
//! and semantic search over them, through the API.
//!
//! `upload` is [`crate::upload`] (files up, then each followed to `ready`);
//! `list`, `show` and `delete` are `GET /v1/documents`,
//! `GET /v1/documents/{id}` and `DELETE /v1/documents/{id}`; `search` asks
//! `POST /v1/search` for the chunks nearest a query.

use std::path::PathBuf;

use clap::Subcommand;

use crate::{api::Api, output, upload};

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
    }
}

/// Runs `hopper search`: the `k` chunks nearest `query`, in `document_set`
/// when given.
pub async fn search(
    api: &Api,
    json: bool,
    query: &str,
    k: u32,
    document_set: Option<&str>,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "query": query, "k": k, "document_set": document_set });
    let r = api.post_json("/v1/search", &body).await?;
    output::print(json, &r, || output::hits(&r))
}
