//! `hopper`: the command line for Hopper.
//!
//! Talks to the API (`--api` / `HOPPER_API_URL`) for everything about jobs
//! and queues; `hopper migrate` talks to Postgres directly (`DATABASE_URL`,
//! `HOPPER_DB_SCHEMA`). Human output by default, `--json` for scripts; any
//! error exits non-zero with one line on stderr.
//!
//! This file holds the top-level arguments and the dispatch; each command
//! group's subcommands and handler live in a module of its own: [`jobs`]
//! (`submit`, `jobs`), [`queues`] (`queues`, `workers`), [`tasks`],
//! [`schedules`], [`workflows`], [`dlq`], [`documents`] (`documents`,
//! `search`), [`migrate`] and [`keys`]. [`api`] is the HTTP client,
//! [`output`] the tables, [`follow`] and [`upload`] follow jobs and
//! documents to their end over [`sse`].

mod api;
mod dlq;
mod documents;
mod follow;
mod jobs;
mod keys;
mod migrate;
mod output;
mod queues;
mod schedules;
mod sse;
mod tasks;
mod upload;
mod workflows;

use clap::{Parser, Subcommand};

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
    Submit(jobs::SubmitArgs),
    /// Inspect jobs.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Depth of every queue; `queues partitions` changes a queue's
    /// partition count.
    Queues {
        #[command(subcommand)]
        command: Option<queues::QueuesCommand>,
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
        command: dlq::DlqCommand,
    },
    /// Documents: upload, list, show, delete.
    Documents {
        #[command(subcommand)]
        command: documents::DocumentsCommand,
    },
    /// Search the documents: by meaning, by keyword, or both (`--mode`).
    Search(documents::SearchArgs),
    /// Apply database migrations (DATABASE_URL, HOPPER_DB_SCHEMA).
    Migrate,
    /// API keys, straight against Postgres (DATABASE_URL, HOPPER_DB_SCHEMA):
    /// for operators, and for the first admin key.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
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

/// Runs the command given, each by its module.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api::new(&cli.api, cli.api_key.as_deref())?;
    let json = cli.json;
    match cli.command {
        Command::Submit(args) => jobs::submit(&api, json, args).await,
        Command::Jobs { command } => jobs::run(&api, json, command).await,
        Command::Queues { command, watch } => queues::run(&api, json, command, watch).await,
        Command::Workers => queues::workers(&api, json).await,
        Command::Tasks { command } => tasks::run(&api, json, command).await,
        Command::Schedules { command } => schedules::run(&api, json, command).await,
        Command::Workflows { command } => workflows::run(&api, json, command).await,
        Command::Dlq { command } => dlq::run(&api, json, command).await,
        Command::Documents { command } => documents::run(&api, json, command).await,
        Command::Search(args) => documents::search(&api, json, args).await,
        Command::Migrate => migrate::run(json).await,
        Command::Keys { command } => keys::run(json, command).await,
    }
}
