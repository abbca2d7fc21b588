//! `hopper dlq list|retry|purge`: a queue's dead letters through the API.
//!
//! `list` prints them newest first (`GET /v1/queues/{name}/dead`); `retry`
//! and `purge` act on the ids given or, with `--all`, on every one
//! (`POST /v1/queues/{name}/dead/retry|purge`) and print how many they
//! touched.

use anyhow::bail;
use clap::Subcommand;

use crate::{api::Api, output};

/// The `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List a queue's dead letters, newest first.
    List {
        /// The queue (task).
        queue: String,
        #[arg(long, default_value_t = 0)]
        offset: u32,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Retry dead letters: the ids given, or --all.
    Retry {
        queue: String,
        ids: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Purge dead letters: the ids given, or --all.
    Purge {
        queue: String,
        ids: Vec<String>,
        #[arg(long)]
        all: bool,
    },
}

/// Runs one `dlq` subcommand.
pub async fn run(api: &Api, json: bool, command: DlqCommand) -> anyhow::Result<()> {
    let (queue, action, ids, all) = match command {
        DlqCommand::List {
            queue,
            offset,
            limit,
        } => {
            let r = api
                .get(&format!(
                    "/v1/queues/{queue}/dead?offset={offset}&limit={limit}"
                ))
                .await?;
            return output::print(json, &r, || output::dead(&r));
        }
        DlqCommand::Retry { queue, ids, all } => (queue, "retry", ids, all),
        DlqCommand::Purge { queue, ids, all } => (queue, "purge", ids, all),
    };
    if all != ids.is_empty() {
        bail!("give job ids or --all");
    }
    let body = if all {
        serde_json::json!({ "all": true })
    } else {
        serde_json::json!({ "ids": ids })
    };
    let r = api
        .post_json(&format!("/v1/queues/{queue}/dead/{action}"), &body)
        .await?;
    output::print(json, &r, || format!("{action}: {} job(s)\n", r["count"]))
}
