//! The Hopper worker: runs jobs from one or more per-kind queues.
//!
//! [`run`] builds one apalis worker per queue, each pulling from a
//! [`hopper_queue::RedisBackend`] whose late-acknowledgement layer records
//! every outcome in Postgres before acknowledging it in Redis. Handlers live
//! in [`handlers`]; the torch device is chosen in [`device`].
//!
//! Shutdown: on SIGTERM/SIGINT every queue stops claiming at once (nothing
//! is claimed during the drain; heartbeats go on) and running jobs get the
//! grace period. Then their cancellation tokens fire and they get a short
//! while more to end (a cancelled attempt is retried, not lost); whatever
//! still runs after that is handed back to its queue, together with the
//! in-flight set, in one script per queue, and the process exits.

pub mod device;
pub mod embed;
pub mod handlers;
pub mod http;
pub mod pipeline;
pub mod webhook;

use std::{future::Future, sync::Arc};

use anyhow::{Context, bail};
use apalis_core::worker::builder::WorkerBuilder;
use hopper_queue::{Lease, QueueClient, RedisBackend, ShutdownHandle, WorkerId};
use hopper_shared::{Config, db, jobs::JobKind};
use tokio::sync::watch;

/// The queues this build has handlers for.
pub const SUPPORTED: &[JobKind] = &JobKind::ALL;

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
}

/// Room (in texts) the embed queue counts per job when it asks the engine
/// how many jobs it may claim: one document batch's worth.
pub const EMBED_CLAIM_ROOM: usize = 32;

/// Runs workers until `shutdown` resolves, then drains them.
pub async fn run(
    config: Config,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let queues = opts.queues.clone();
    if queues.is_empty() {
        bail!("no queues given (known: {})", JobKind::names().join(", "));
    }
    if let Some(k) = queues.iter().find(|k| !SUPPORTED.contains(k)) {
        bail!(
            "queue `{k}` has no handler in this build (supported: {})",
            SUPPORTED
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let client = QueueClient::connect(&config)
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))?;
    let pool = db::pool(&config, 16)?;
    db::ping(&pool).await.with_context(|| {
        format!(
            "cannot reach Postgres at {}",
            hopper_shared::config::redact_url(&config.database_url)
        )
    })?;
    db::migrate(&pool, &config.db_schema).await?;

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
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOPPER_WORKER_METRICS_ADDR)"))?;
        tracing::info!(%addr, "worker metrics and health on http://{addr}");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, http::router(health)).await {
                tracing::error!("worker HTTP server stopped: {e}");
            }
        });
    }

    let pipeline = pipeline_for(
        config.summary_llm.clone(),
        config.extract,
        &opts,
        &client,
        &pool,
    )
    .await?;
    if let Some(models) = &pipeline.models {
        let _ = loaded_models.set(models.clone());
    }
    let worker_id = WorkerId::generate();
    let lease = Lease {
        heartbeat: config.heartbeat,
        lease: config.lease,
    };
    tracing::info!(worker = %worker_id, queues = ?queues, "worker starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    let handles = std::sync::Mutex::new(Vec::new());
    for kind in queues.iter().copied() {
        let queue = Queue {
            client: &client,
            kind,
            worker: &worker_id,
            lease,
            pool: &pool,
            handles: &handles,
        };
        let mut stop = stop_rx.clone();
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        };
        let name = format!("{worker_id}/{kind}");
        match kind {
            JobKind::Echo => {
                let w = WorkerBuilder::new(name)
                    .backend(queue.backend())
                    .build(handlers::echo);
                running.spawn(async move { (kind, w.run_until(signal).await) });
            }
            JobKind::Noop => {
                let w = WorkerBuilder::new(name)
                    .backend(queue.backend())
                    .data(handlers::NoopEffects::new(
                        &client,
                        config.retention.noop_latencies,
                    ))
                    .build(handlers::noop);
                running.spawn(async move { (kind, w.run_until(signal).await) });
            }
            JobKind::Ingest => {
                let w = WorkerBuilder::new(name)
                    .backend(queue.backend())
                    .data(pipeline.clone())
                    .build(pipeline::handlers::ingest);
                running.spawn(async move { (kind, w.run_until(signal).await) });
            }
            JobKind::Embed => {
                // Backpressure: claim only while the engine has room, so
                // jobs wait in Redis (for any worker), not in this process.
                let backend = match pipeline.models.clone() {
                    Some(models) => queue.backend().with_admission(Arc::new(move || {
                        models.available_capacity() / EMBED_CLAIM_ROOM
                    })),
                    None => queue.backend(),
                };
                let w = WorkerBuilder::new(name)
                    .backend(backend)
                    .data(pipeline.clone())
                    .build(embed_announced);
                running.spawn(async move { (kind, w.run_until(signal).await) });
            }
            JobKind::Summarize => {
                let w = WorkerBuilder::new(name)
                    .backend(queue.backend())
                    .data(pipeline.clone())
                    .build(pipeline::handlers::summarize);
                running.spawn(async move { (kind, w.run_until(signal).await) });
            }
            JobKind::Webhook => {
                let w = WorkerBuilder::new(name)
                    .backend(queue.backend())
                    .data(webhook::Deliverer::new(config.webhook.clone()))
                    .build(webhook::deliver);
                running.spawn(async move { (kind, w.run_until(signal).await) });
            }
        }
    }

    let handles = handles.into_inner().expect("shutdown handles");
    shutdown.await;
    tracing::info!("shutdown requested: no new claims, draining running jobs");
    for h in &handles {
        h.stop_claiming();
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.shutdown_grace, drain(&mut running)).await;
    if drained.is_err() {
        let stopped: usize = handles.iter().map(ShutdownHandle::stop_running).sum();
        tracing::warn!(
            "grace period of {:?} over: cancelled {stopped} running job(s); they have {:?} more",
            config.shutdown_grace,
            CANCELLED_GRACE
        );
        if tokio::time::timeout(CANCELLED_GRACE, drain(&mut running))
            .await
            .is_err()
        {
            running.abort_all();
            while running.join_next().await.is_some() {}
            for h in &handles {
                match h
                    .give_back("the worker stopped before this attempt ended")
                    .await
                {
                    Ok(n) => tracing::warn!("handed {n} running job(s) back to their queue"),
                    Err(e) => tracing::error!("could not hand jobs back: {e}"),
                }
            }
        }
    }
    Ok(())
}

/// How long jobs whose cancellation fired at the end of the grace period
/// get to end before they are handed back.
const CANCELLED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for every queue's worker to end, logging how each did.
async fn drain(
    running: &mut tokio::task::JoinSet<(JobKind, Result<(), apalis_core::error::WorkerError>)>,
) {
    while let Some(done) = running.join_next().await {
        match done {
            Ok((kind, Err(e))) => tracing::error!(queue = %kind, "worker ended: {e}"),
            Ok((kind, Ok(()))) => tracing::info!(queue = %kind, "worker stopped"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::error!("worker task failed: {e}"),
        }
    }
}

/// The pipeline handlers' shared state: the tokenizer when documents are
/// ingested, the loaded models when texts are embedded (loading them is
/// blocking work, done off the async threads, with a warm-up pass).
async fn pipeline_for(
    llm: Option<hopper_shared::config::LlmConfig>,
    extract: hopper_shared::config::ExtractLimits,
    opts: &WorkerOptions,
    client: &QueueClient,
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<pipeline::handlers::Pipeline> {
    let wants = |k: JobKind| opts.queues.contains(&k);
    let model_dir = opts
        .models
        .first()
        .map(|m| m.dir.clone())
        .unwrap_or_default();
    let sandbox = if wants(JobKind::Ingest) {
        Some(pipeline::sandbox::Sandbox::new(&model_dir, extract).with_context(|| {
            "the ingest queue needs the default model's tokenizer (--model / HOPPER_MODEL_DIR)"
        })?)
    } else {
        None
    };
    let models = if wants(JobKind::Embed) {
        if opts.models.is_empty() {
            bail!("the embed queue needs at least one model (--model / HOPPER_MODEL_DIR)");
        }
        let Some(choice) = opts.embedding.clone() else {
            bail!("the embed queue needs the engine's precision and kernels decided at start-up");
        };
        let (specs, device) = (opts.models.clone(), opts.device);
        let (precision, kernels) = (choice.precision, choice.kernels);
        let queue_texts = opts.embed_queue_texts;
        let (threads, streams) = (opts.embed_threads, opts.embed_streams);
        let registry = tokio::task::spawn_blocking(move || {
            let mut batch = embed::BatchOptions::for_device(device);
            if let Some(texts) = queue_texts {
                batch.queue_capacity = texts.max(EMBED_CLAIM_ROOM);
            }
            batch.threads = threads;
            batch.streams = streams;
            batch.kernels = kernels;
            embed::ModelRegistry::load_with(&specs, device, precision, &batch)
        })
        .await??;
        let model = registry.default_model();
        tracing::info!(
            models = ?registry.versions(),
            %precision,
            streams = model.streams(),
            kernels = %model.kernels(),
            "embedding models loaded"
        );
        Some(std::sync::Arc::new(registry))
    } else {
        None
    };
    Ok(pipeline::handlers::Pipeline {
        pool: pool.clone(),
        queue: client.clone(),
        sandbox,
        models,
        cache: pipeline::cache::EmbedCache::new(
            client.connection(),
            client.prefix(),
            pipeline::cache::CacheConfig::default(),
        ),
        llm: llm.map(|c| std::sync::Arc::new(pipeline::llm::LlmSummarizer::new(c))),
    })
}

/// The embed handler, its texts counted against the engine's room from the
/// moment the job starts ([`embed::Embedder::announced`]): the admission gate
/// then sees a claimed job at once, not after its cache lookup.
async fn embed_announced(
    args: hopper_shared::jobs::EmbedArgs,
    job: apalis_core::task::data::Data<hopper_queue::JobContext>,
    p: apalis_core::task::data::Data<pipeline::handlers::Pipeline>,
) -> Result<serde_json::Value, apalis_core::error::BoxDynError> {
    let texts = args.texts.len() + args.batch.as_ref().map_or(0, |b| b.chunk_ids.len());
    match p.models.clone() {
        Some(models) => {
            let job = pipeline::handlers::embed(args, job, p);
            models.default_model().announced(texts, job).await
        }
        None => pipeline::handlers::embed(args, job, p).await,
    }
}

/// What a queue's backend is built from.
struct Queue<'a> {
    client: &'a QueueClient,
    kind: JobKind,
    worker: &'a WorkerId,
    lease: Lease,
    pool: &'a deadpool_postgres::Pool,
    /// Every backend's shutdown handle, for [`run`]'s shutdown sequence.
    handles: &'a std::sync::Mutex<Vec<ShutdownHandle>>,
}

impl Queue<'_> {
    /// The backend for this queue, decoding jobs as `Args`.
    fn backend<Args: serde::de::DeserializeOwned + Send + 'static>(&self) -> RedisBackend<Args> {
        let backend = RedisBackend::new(
            self.client.clone(),
            self.kind,
            self.worker.clone(),
            self.lease,
            Some(self.pool.clone()),
        );
        self.handles
            .lock()
            .expect("shutdown handles")
            .push(backend.shutdown_handle());
        backend
    }
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
