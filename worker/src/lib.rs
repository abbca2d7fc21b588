//! The Hopper worker, as a library: a process that serves tasks.
//!
//! A task is a name (its queue) and a typed async handler ([`Task`]):
//! serde arguments in, a serde result out, a [`TaskContext`] for the job
//! id, attempt, tenant, the cancellation token (soft limit, cancellation),
//! progress reports and child jobs. [`Worker::builder`] collects tasks,
//! declares them in the registry when it starts (a second schema under one
//! version, or a name someone else owns, stops it before it serves
//! anything) and runs each as one apalis worker on a
//! [`hopper_queue::RedisBackend`] whose late-acknowledgement layer records
//! every outcome in Postgres before acknowledging it in Redis
//! ([`builder`] describes the start-up and shutdown sequences).
//!
//! `hopper-worker` is such a worker serving the built-in tasks
//! ([`builtin`], their handlers in [`diagnostic_tasks`], [`pipeline`] and
//! [`webhook`]; [`run`]); `examples/custom-task` is one serving a task of
//! its own. The torch device the embed task runs on is chosen in
//! [`device`].

pub mod builder;
pub mod builtin;
pub mod celery;
pub mod context;
pub mod device;
pub mod diagnostic_tasks;
pub mod embed;
pub mod http;
pub mod pipeline;
pub mod task;
pub mod webhook;

use std::{future::Future, sync::Arc};

use anyhow::bail;
use hopper_shared::{Config, jobs::JobKind};

pub use builder::{Worker, WorkerBuilder};
pub use context::{ContextError, TaskContext};
pub use hopper_queue::{Priority, PushOptions};
pub use hopper_shared::tasks::TaskSettings;
pub use task::{Task, TaskError};

/// What a worker process runs, besides the shared [`Config`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The queues to serve.
    pub queues: Vec<JobKind>,
    /// The torch device embedding runs on.
    pub device: tch::Device,
    /// Its description (for logs and readiness).
    pub device_description: String,
    /// The embedding engine's precision and kernels, decided at start-up
    /// ([`embed::EngineChoice::decide`]); needed when the embed queue is
    /// served.
    pub embedding: Option<embed::EngineChoice>,
    /// Embedding models (the first is the default); also the tokenizer used
    /// to chunk documents.
    pub models: Vec<embed::ModelSpec>,
    /// The embedding engine's bound on unanswered texts (its default when
    /// `None`); the embed queue claims only while it has room.
    pub embed_queue_texts: Option<usize>,
    /// Torch intra-op threads for embedding, in all (torch's default when
    /// `None`).
    pub embed_threads: Option<usize>,
    /// Forward passes at once (the engine's choice when `None`).
    pub embed_streams: Option<usize>,
    /// The Celery bridge's settings (`HOPPER_CELERY_*`), when it is on.
    pub celery: Option<hopper_celery::config::CeleryConfig>,
}

/// Room (in texts) the embed queue counts per job when it asks the engine
/// how many jobs it may claim: one document batch's worth.
pub const EMBED_CLAIM_ROOM: usize = 32;

/// Runs the built-in tasks `opts.queues` until `shutdown` resolves, then
/// drains them: a [`Worker::builder`] with one [`Task::built_in`] per queue
/// ([`builtin`]), its connections, health server and pipeline state set up
/// first.
pub async fn run(
    config: Config,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if opts.queues.is_empty() && opts.celery.is_none() {
        bail!(
            "no queues given (built-ins: {}), and the Celery bridge is off \
             (HOPPER_CELERY_QUEUES)",
            JobKind::names().join(", ")
        );
    }
    let (client, pool) = builder::connect(&config).await?;
    let loaded_models = Arc::new(std::sync::OnceLock::new());
    if let Some(addr) = config.worker_metrics_addr {
        let health = http::Health {
            queue: client.clone(),
            pool: pool.clone(),
            device: opts.device_description.clone().into(),
            torch_device: opts.device,
            metrics: hopper_shared::metrics::install_exporter(),
            embedding: opts.embedding.clone().map(|choice| http::EmbedHealth {
                choice,
                models: loaded_models.clone(),
            }),
        };
        http::serve(addr, health).await?;
    }
    let pipeline = builtin::pipeline_for(&config, &opts, &client, &pool).await?;
    if let Some(models) = &pipeline.models {
        let _ = loaded_models.set(models.clone());
    }
    let mut worker = Worker::builder(config.clone()).connected(client.clone(), pool);
    for kind in opts.queues.iter().copied() {
        worker = builtin::add(worker, kind, &config, &client, &pipeline);
    }
    let pump_stop = tokio_util::sync::CancellationToken::new();
    if let Some(models) = pipeline.models.clone()
        && opts.queues.contains(&JobKind::Embed)
    {
        pipeline::query_lane::spawn(pipeline.clone(), models, pump_stop.clone());
    }
    if let Some(celery) = opts.celery {
        worker = celery::add(worker, celery, &client, pump_stop.clone()).await?;
    }
    let shutdown = async move {
        shutdown.await;
        pump_stop.cancel();
    };
    worker.run_until(shutdown).await
}

/// Installs SIGTERM and SIGINT handlers now (so a signal during start-up is
/// not lost) and returns a future that resolves on the first of them.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
