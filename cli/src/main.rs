//! `hopper`: the command line for Hopper.
//!
//! Talks to the API (`--api` / `HOPPER_API_URL`) for everything about jobs
//! and queues; `hopper migrate` talks to Postgres directly (`DATABASE_URL`,
//! `HOPPER_DB_SCHEMA`). Human output by default, `--json` for scripts; any
//! error exits non-zero with one line on stderr.

mod api;
mod follow;
mod output;
mod schedules;
mod sse;
mod tasks;
mod upload;
mod workflows;

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
    /// API key (`hop_…`), sent as a bearer token.
    #[arg(long, global = true, env = "HOPPER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
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
    },
    /// Inspect jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Depth of every queue; `queues partitions` changes a queue's
    /// partition count.
    Queues {
        #[command(subcommand)]
        command: Option<QueuesCommand>,
        /// Redraw every N seconds until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// Workers of every queue, their heartbeat age and running jobs.
    Workers,
    /// Tasks (queues) declared by workers: list, show, remove.
    Tasks {
        #[command(subcommand)]
        command: tasks::TasksCommand,
    },
    /// Periodic schedules: add, list, show, pause, resume, remove, runs.
    Schedules {
        #[command(subcommand)]
        command: schedules::SchedulesCommand,
    },
    /// Workflows (DAGs of jobs: chains, groups, chords): submit, list,
    /// show, cancel.
    Workflows {
        #[command(subcommand)]
        command: workflows::WorkflowsCommand,
    },
    /// Dead letters of a queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Documents: upload, list, show, delete.
    Documents {
        #[command(subcommand)]
        command: DocumentsCommand,
    },
    /// Semantic search over the documents.
    Search {
        /// The query.
        query: String,
        /// Number of hits.
        #[arg(short, long, default_value_t = 5)]
        k: u32,
        /// Only this document set.
        #[arg(long)]
        document_set: Option<String>,
    },
    /// Apply database migrations (DATABASE_URL, HOPPER_DB_SCHEMA).
    Migrate,
    /// API keys, straight against Postgres (DATABASE_URL, HOPPER_DB_SCHEMA):
    /// for operators, and for the first admin key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum QueuesCommand {
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

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once and never stored.
    Create {
        /// The tenant whose data the key reaches.
        #[arg(long)]
        tenant: String,
        /// Comma-separated: submit, read, admin, work.
        #[arg(long, alias = "scope", default_value = "submit,read")]
        scopes: String,
        /// Comma-separated queue names a `work` key may serve (any when left out).
        #[arg(long)]
        queues: Option<String>,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (without secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id or prefix.
    Revoke {
        /// The key's id or prefix.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
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

#[derive(Debug, Subcommand)]
enum DlqCommand {
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

#[derive(Debug, Subcommand)]
enum DocumentsCommand {
    /// Upload files (text, Markdown, HTML, PDF) and follow them to `ready`.
    Upload {
        /// Files to upload.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
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

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("hopper: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api::new(&cli.api, cli.api_key.as_deref())?;
    match cli.command {
        Command::Submit {
            kind,
            args,
            wait,
            timeout,
            delay_ms,
            priority,
            idempotency_key,
            callback_url,
        } => {
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
                return output::print(cli.json, &created, || format!("{id}\n"));
            }
            let display = follow::Display::for_output(cli.json);
            let timeout = Some(Duration::from_secs(timeout));
            let job = follow::follow(&api, &id, display, timeout).await?;
            print_finished(cli.json, &id, &job)
        }
        Command::Jobs {
            command:
                JobsCommand::List {
                    queue,
                    state,
                    limit,
                },
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(queue.map(|q| ("queue", q)));
            query.extend(state.map(|s| ("state", s)));
            let r = api.get_query("/v1/jobs", &query).await?;
            output::print(cli.json, &r, || output::jobs(&r))
        }
        Command::Jobs {
            command: JobsCommand::Show { id, follow },
        } => {
            if follow {
                let display = follow::Display::for_output(cli.json);
                let job = follow::follow(&api, &id, display, None).await?;
                return print_finished(cli.json, &id, &job);
            }
            let job = api.job(&id).await?;
            output::print(cli.json, &job, || output::job(&job))
        }
        Command::Jobs {
            command: JobsCommand::Cancel { id },
        } => {
            let r = api
                .post_json(&format!("/v1/jobs/{id}/cancel"), &serde_json::json!({}))
                .await?;
            output::print(cli.json, &r, || {
                format!("{id}: {}\n", r["state"].as_str().unwrap_or("?"))
            })
        }
        Command::Dlq { command } => dlq(&api, cli.json, command).await,
        Command::Tasks { command } => tasks::run(&api, cli.json, command).await,
        Command::Schedules { command } => schedules::run(&api, cli.json, command).await,
        Command::Workflows { command } => workflows::run(&api, cli.json, command).await,
        Command::Documents { command } => documents(&api, cli.json, command).await,
        Command::Search {
            query,
            k,
            document_set,
        } => {
            let body = serde_json::json!({ "query": query, "k": k, "document_set": document_set });
            let r = api.post_json("/v1/search", &body).await?;
            output::print(cli.json, &r, || output::hits(&r))
        }
        Command::Queues {
            command: Some(QueuesCommand::Partitions { queue, count }),
            ..
        } => {
            let body = serde_json::json!({ "partitions": count });
            let r = api
                .put_json(&format!("/v1/queues/{queue}/partitions"), &body)
                .await?;
            output::print(cli.json, &r, || {
                format!(
                    "{queue}: new jobs spread over {} partition(s); claims cover {}\n\
                     now set HOPPER_QUEUE_<NAME>_PARTITIONS={} on every process\n",
                    r["current"], r["high"], r["current"]
                )
            })
        }
        Command::Queues {
            command: None,
            watch,
        } => loop {
            let stats = api.queues().await?;
            if watch.is_some() && !cli.json {
                print!("\x1b[2J\x1b[H");
            }
            output::print(cli.json, &stats, || output::queues(&stats))?;
            match watch {
                Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs.max(1))).await,
                None => return Ok(()),
            }
        },
        Command::Workers => {
            let r = api.get("/v1/workers").await?;
            output::print(cli.json, &r, || output::workers(&r))
        }
        Command::Keys { command } => keys(cli.json, command).await,
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

/// Prints a followed job once it finished; an error unless it succeeded.
fn print_finished(json: bool, id: &str, job: &Value) -> anyhow::Result<()> {
    output::print(json, job, || output::job(job))?;
    if job["state"] != "succeeded" {
        bail!("job {id} ended {}", job["state"]);
    }
    Ok(())
}

async fn keys(json: bool, command: KeysCommand) -> anyhow::Result<()> {
    use hopper_shared::keys;
    let config = hopper_shared::Config::from_env()?;
    let pool = hopper_shared::db::pool(&config, 1)?;
    hopper_shared::db::migrate(&pool, &config.db_schema).await?;
    match command {
        KeysCommand::Create {
            tenant,
            scopes,
            queues,
            name,
        } => {
            let scopes = keys::parse_scopes(&scopes).map_err(anyhow::Error::msg)?;
            let queues = queues
                .as_deref()
                .map(keys::parse_queues)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let (info, key) =
                keys::create_limited(&pool, &tenant, &name, &scopes, queues.as_deref()).await?;
            let v = serde_json::json!({ "key": key, "info": info });
            output::print(json, &v, || {
                format!(
                    "{key}\n(tenant {}, scopes {}; shown once: store it now)\n",
                    info.tenant,
                    scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
        }
        KeysCommand::List { tenant } => {
            let list = keys::list(&pool, tenant.as_deref()).await?;
            let v = serde_json::json!({ "keys": list });
            output::print(json, &v, || output::keys(&v))
        }
        KeysCommand::Revoke { key } => {
            if keys::revoke(&pool, &key, None).await?.is_none() {
                bail!("no live key `{key}`");
            }
            output::print(json, &serde_json::json!({ "revoked": key }), || {
                format!("revoked {key}\n")
            })
        }
    }
}

async fn dlq(api: &Api, json: bool, command: DlqCommand) -> anyhow::Result<()> {
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

async fn documents(api: &Api, json: bool, command: DocumentsCommand) -> anyhow::Result<()> {
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

/// Job arguments from the command line: inline JSON or `@path`.
fn read_args(arg: &str) -> anyhow::Result<Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).context("job arguments are not valid JSON")
}
