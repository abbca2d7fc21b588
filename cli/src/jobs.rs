//! `hopper submit` and `hopper jobs list|show|cancel`: jobs through the API.
//!
//! `submit` queues one job (`POST /v1/jobs/{task}`) and prints its id, or
//! with `--wait` follows it to its end like `jobs show --follow` and exits
//! non-zero unless it succeeded. `list` lists jobs by queue and state
//! (`GET /v1/jobs`), `show` prints one (`GET /v1/jobs/{id}`) and `cancel`
//! asks it to stop (`POST /v1/jobs/{id}/cancel`).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::{api::Api, follow, output};

/// The `submit` command's arguments.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Task: a built-in kind (echo, noop, embed; documents go through
    /// `hopper documents upload`) or a declared task (`hopper tasks list`).
    kind: String,
    /// Arguments as JSON, or @path to a JSON file.
    args: String,
    /// Wait until the job finishes and print it (a progress bar
    /// meanwhile on a terminal, plain lines otherwise, none with --json).
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Run no earlier than this many milliseconds from now.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// `high` or `normal`.
    #[arg(long)]
    priority: Option<String>,
    /// Idempotency key: resubmitting with it returns the first job.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// POST the signed, finished job to this URL (completion webhook).
    #[arg(long)]
    callback_url: Option<String>,
}

/// The `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs by queue and state (waiting, running and dead ones from
    /// Redis, finished ones from Postgres).
    List {
        /// Only this queue (task).
        #[arg(long)]
        queue: Option<String>,
        /// Only this state: pending, scheduled, running, retrying,
        /// succeeded, failed, dead, cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Most jobs listed (1-500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one job: state, attempts, timings, result or error.
    Show {
        /// The job id.
        id: String,
        /// Follow it until it finishes, like `submit --wait` (exits non-zero
        /// unless it succeeded).
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a job: a waiting one at once, a running one cooperatively.
    Cancel {
        /// The job id.
        id: String,
    },
}

/// Runs `hopper submit`.
pub async fn submit(api: &Api, json: bool, submit: SubmitArgs) -> anyhow::Result<()> {
    let SubmitArgs {
        kind,
        args,
        wait,
        timeout,
        delay_ms,
        priority,
        idempotency_key,
        callback_url,
    } = submit;
    let body = read_args(&args)?;
    let mut query = Vec::new();
    if let Some(d) = delay_ms {
        query.push(("delay_ms", d.to_string()));
    }
    if let Some(p) = priority {
        query.push(("priority", p));
    }
    if let Some(u) = callback_url {
        query.push(("callback_url", u));
    }
    let created = api
        .submit(&kind, &body, &query, idempotency_key.as_deref())
        .await?;
    let id = created["id"]
        .as_str()
        .context("API answered no id")?
        .to_owned();
    if !wait {
        return output::print(json, &created, || format!("{id}\n"));
    }
    let display = follow::Display::for_output(json);
    let timeout = Some(Duration::from_secs(timeout));
    let job = follow::follow(api, &id, display, timeout).await?;
    print_finished(json, &id, &job)
}

/// Runs one `jobs` subcommand.
pub async fn run(api: &Api, json: bool, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            queue,
            state,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(queue.map(|q| ("queue", q)));
            query.extend(state.map(|s| ("state", s)));
            let r = api.get_query("/v1/jobs", &query).await?;
            output::print(json, &r, || output::jobs(&r))
        }
        JobsCommand::Show { id, follow } => {
            if follow {
                let display = follow::Display::for_output(json);
                let job = follow::follow(api, &id, display, None).await?;
                return print_finished(json, &id, &job);
            }
            let job = api.job(&id).await?;
            output::print(json, &job, || output::job(&job))
        }
        JobsCommand::Cancel { id } => {
            let r = api
                .post_json(&format!("/v1/jobs/{id}/cancel"), &serde_json::json!({}))
                .await?;
            output::print(json, &r, || {
                format!("{id}: {}\n", r["state"].as_str().unwrap_or("?"))
            })
        }
    }
}

/// Prints a followed job once it finished; an error unless it succeeded.
fn print_finished(json: bool, id: &str, job: &Value) -> anyhow::Result<()> {
    output::print(json, job, || output::job(job))?;
    if job["state"] != "succeeded" {
        bail!("job {id} ended {}", job["state"]);
    }
    Ok(())
}

/// Job arguments from the command line: inline JSON or `@path` (also
/// those of `schedules add`).
pub fn read_args(arg: &str) -> anyhow::Result<Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).context("job arguments are not valid JSON")
}
