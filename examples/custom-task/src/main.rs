//! A worker serving a task of its own, `word_count`: it counts a text's words, reports progress,
//! waits when asked (until its soft time limit) and counts a second text in a child job.
//! Run it with the usual environment (`REDIS_URL`, `DATABASE_URL`, …) next to `hopper-api`.
use std::time::Duration;

use hopper_worker::{Task, TaskContext, TaskError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Arguments of a `word_count` job (its schema is declared to the API).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Count {
    /// The text to count.
    text: String,
    /// Wait this long first (the soft time limit interrupts the wait).
    #[serde(default)]
    pause_ms: u64,
    /// A second text, counted by a child `word_count` job.
    then: Option<String>,
}

/// Its result.
#[derive(Serialize)]
struct Counted {
    words: usize,
    child: Option<uuid::Uuid>,
}

async fn word_count(args: Count, ctx: TaskContext) -> Result<Counted, TaskError> {
    if args.text.trim().is_empty() {
        return Err(TaskError::permanent("`text` has no words to count"));
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(args.pause_ms)) => {}
        _ = ctx.cancellation().cancelled() => return Err(TaskError::retryable(ctx.stop_reason())),
    }
    let words = args.text.split_whitespace().count();
    ctx.progress(&json!({ "counted": words })).await?;
    let child = match args.then {
        // `once`: keyed by this job, so a re-run attempt pushes it once.
        Some(text) => {
            let child = json!({ "text": text });
            Some(ctx.push("word_count", &child, ctx.once("then")).await?)
        }
        None => None,
    };
    Ok(Counted { words, child })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let task = Task::new("word_count", word_count)
        .schema_for::<Count>()
        .description("Counts the words of a text");
    Worker::builder(hopper_shared::Config::from_env()?)
        .task(task)
        .run()
        .await
}
