//! `hopper queues [--watch] [partitions|placement]` and `hopper workers`:
//! the queues' depth and who serves them, through the API.
//!
//! `queues` prints every queue's depth (`GET /v1/queues`), with `--watch`
//! redrawn until interrupted; `queues partitions` changes a queue's
//! partition count (`PUT /v1/queues/{name}/partitions`); `queues
//! placement` shows which Redis Cluster master serves each partition
//! (`GET /v1/queues/{name}/placement`) and, when they do not spread, the
//! command that moves them (`scripts/cluster-spread`); `workers` lists
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
    /// Which Redis Cluster master serves each partition of a queue, and
    /// whether they spread over the masters (an admin key of the operator
    /// tenant). When they do not, scripts/cluster-spread moves them live.
    Placement {
        /// The queue (task).
        queue: String,
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
        Some(QueuesCommand::Placement { queue }) => placement(api, json, &queue).await,
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

/// Runs `hopper queues placement`.
async fn placement(api: &Api, json: bool, queue: &str) -> anyhow::Result<()> {
    let r = api.get(&format!("/v1/queues/{queue}/placement")).await?;
    output::print(json, &r, || placement_text(&r))
}

/// A placement as a table, its summary, and the hint when not spread.
fn placement_text(r: &serde_json::Value) -> String {
    let parts = r["partitions"].as_array().cloned().unwrap_or_default();
    let rows = parts
        .iter()
        .map(|p| {
            vec![
                p["partition"].to_string(),
                p["name"].as_str().unwrap_or("?").to_owned(),
                p["slot"].to_string(),
                p["master"].as_str().unwrap_or("?").to_owned(),
                p["node_id"]
                    .as_str()
                    .map_or("-".into(), |id| id.chars().take(12).collect()),
            ]
        })
        .collect();
    let mut out = output::table(
        &["PARTITION", "NAME", "SLOT", "MASTER", "NODE"],
        &[0, 2],
        rows,
    );
    out.push_str(&format!(
        "{} partition(s) on {} of {} master(s)\n",
        parts.len(),
        r["masters_used"],
        r["masters"]
    ));
    if r["spread"] == false {
        let queue = r["queue"].as_str().unwrap_or("?");
        let node = parts
            .first()
            .and_then(|p| p["master"].as_str())
            .unwrap_or("HOST:PORT");
        out.push_str(&format!(
            "not spread: partitions share a master while another serves none; move their slots \
             live (no job is lost) with\n  scripts/cluster-spread --prefix \"$HOPPER_KEY_PREFIX\" \
             {node} {queue} {}\n",
            parts.len()
        ));
    }
    out
}

/// Runs `hopper workers`.
pub async fn workers(api: &Api, json: bool) -> anyhow::Result<()> {
    let r = api.get("/v1/workers").await?;
    output::print(json, &r, || output::workers(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_that_does_not_spread_names_the_command_that_moves_it() {
        let r = serde_json::json!({
            "queue": "ocr",
            "partitions": [
                {"partition": 0, "name": "ocr", "slot": 3765, "master": "10.0.0.1:6379", "node_id": "648ba979af3cca1f"},
                {"partition": 1, "name": "ocr~1", "slot": 3841, "master": "10.0.0.1:6379", "node_id": "648ba979af3cca1f"},
                {"partition": 2, "name": "ocr~2", "slot": 16226, "master": "10.0.0.3:6379", "node_id": "fb0f3ee39535f335"},
            ],
            "masters_used": 2, "masters": 3, "spread": false,
        });
        let text = placement_text(&r);
        assert!(
            text.starts_with("PARTITION  NAME    SLOT  MASTER"),
            "{text}"
        );
        assert!(
            text.contains("3 partition(s) on 2 of 3 master(s)"),
            "{text}"
        );
        assert!(
            text.contains(
                "scripts/cluster-spread --prefix \"$HOPPER_KEY_PREFIX\" 10.0.0.1:6379 ocr 3"
            ),
            "{text}"
        );
        let mut spread = r.clone();
        spread["spread"] = serde_json::json!(true);
        assert!(!placement_text(&spread).contains("cluster-spread"));
    }
}
