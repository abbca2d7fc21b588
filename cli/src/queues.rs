//! `hopper queues [--watch] [partitions]` and `hopper workers`: the queues'
//! depth and who serves them, through the API.
//!
//! `queues` prints every queue's depth (`GET /v1/queues`), with `--watch`
//! redrawn until interrupted; `queues partitions` changes a queue's
//! partition count (`PUT /v1/queues/{name}/partitions`); `workers` lists
//! the workers of every queue with their heartbeat age and running jobs
//! (`GET /v1/workers`).

use std::time::Duration;

use clap::Subcommand;

use crate::{api::Api, output};

/// The `queues` subcommands (without one, `queues` prints the depths).
#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Spread a queue's new jobs over COUNT partitions (1-64; an admin key
    /// of the operator tenant). Jobs already in other partitions still run.
    /// Then set HOPPER_QUEUE_<NAME>_PARTITIONS=COUNT on every process.
    Partitions {
        /// The queue (task).
        queue: String,
        /// Partitions new jobs spread over.
        count: u16,
    },
}

/// Runs `hopper queues`: a subcommand, or the depths (every `watch`
/// seconds, at least 1, until interrupted, when given).
pub async fn run(
    api: &Api,
    json: bool,
    command: Option<QueuesCommand>,
    watch: Option<u64>,
) -> anyhow::Result<()> {
    match command {
        Some(QueuesCommand::Partitions { queue, count }) => {
            partitions(api, json, &queue, count).await
        }
        None => loop {
            let stats = api.queues().await?;
            if watch.is_some() && !json {
                print!("\x1b[2J\x1b[H");
            }
            output::print(json, &stats, || output::queues(&stats))?;
            match watch {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
                None => return Ok(()),
            }
        },
    }
}

/// Runs `hopper queues partitions`.
async fn partitions(api: &Api, json: bool, queue: &str, count: u16) -> anyhow::Result<()> {
    let body = serde_json::json!({ "partitions": count });
    let r = api
        .put_json(&format!("/v1/queues/{queue}/partitions"), &body)
        .await?;
    output::print(json, &r, || {
        format!(
            "{queue}: new jobs spread over {} partition(s); claims cover {}\n\
             now set HOPPER_QUEUE_<NAME>_PARTITIONS={} on every process\n",
            r["current"], r["high"], r["current"]
        )
    })
}

/// Runs `hopper workers`.
pub async fn workers(api: &Api, json: bool) -> anyhow::Result<()> {
    let r = api.get("/v1/workers").await?;
    output::print(json, &r, || output::workers(&r))
}
