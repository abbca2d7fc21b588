//! `hopper`: the command line for Hopper.
//!
//! Talks to the API (`--api` / `HOPPER_API_URL`) for everything about jobs
//! and queues; `hopper migrate` talks to Postgres directly (`DATABASE_URL`,
//! `HOPPER_DB_SCHEMA`). Human output by default, `--json` for scripts; any
//! error exits non-zero with one line on stderr.

mod api;
mod output;

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::api::Api;

#[derive(Debug, Parser)]
#[command(name = "hopper", version, about = "Submit and inspect Hopper jobs")]
struct Cli {
    /// Base URL of the Hopper API.
    #[arg(
        long,
        global = true,
        env = "HOPPER_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit a job: `hopper submit echo '{"message":"hi"}'` or `@file.json`.
    Submit {
        /// Job kind (echo, ingest, embed, summarize).
        kind: String,
        /// Arguments as JSON, or @path to a JSON file.
        args: String,
        /// Wait until the job finishes and print it.
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
    },
    /// Inspect jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Depth of every queue.
    Queues,
    /// Apply database migrations (DATABASE_URL, HOPPER_DB_SCHEMA).
    Migrate,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Show one job: state, attempts, timings, result or error.
    Show {
        /// The job id.
        id: String,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("hopper: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api::new(&cli.api);
    match cli.command {
        Command::Submit {
            kind,
            args,
            wait,
            timeout,
            delay_ms,
            priority,
            idempotency_key,
        } => {
            let body = read_args(&args)?;
            let mut query = Vec::new();
            if let Some(d) = delay_ms {
                query.push(("delay_ms", d.to_string()));
            }
            if let Some(p) = priority {
                query.push(("priority", p));
            }
            let created = api
                .submit(&kind, &body, &query, idempotency_key.as_deref())
                .await?;
            let id = created["id"]
                .as_str()
                .context("API answered no id")?
                .to_owned();
            if !wait {
                return output::print(cli.json, &created, || format!("{id}\n"));
            }
            let job = api.wait(&id, Duration::from_secs(timeout)).await?;
            output::print(cli.json, &job, || output::job(&job))?;
            if job["state"] != "succeeded" {
                bail!("job {id} ended {}", job["state"]);
            }
            Ok(())
        }
        Command::Jobs {
            command: JobsCommand::Show { id },
        } => {
            let job = api.job(&id).await?;
            output::print(cli.json, &job, || output::job(&job))
        }
        Command::Queues => {
            let stats = api.queues().await?;
            output::print(cli.json, &stats, || output::queues(&stats))
        }
        Command::Migrate => {
            let config = hopper_shared::Config::from_env()?;
            let pool = hopper_shared::db::pool(&config, 1)?;
            let applied = hopper_shared::db::migrate(&pool, &config.db_schema)
                .await
                .with_context(|| {
                    format!(
                        "migrating {}",
                        hopper_shared::config::redact_url(&config.database_url)
                    )
                })?;
            let v = serde_json::json!({ "schema": config.db_schema, "applied": applied });
            output::print(cli.json, &v, || {
                format!("schema {}: applied {:?}\n", config.db_schema, applied)
            })
        }
    }
}

/// Job arguments from the command line: inline JSON or `@path`.
fn read_args(arg: &str) -> anyhow::Result<Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).context("job arguments are not valid JSON")
}
