//! The built-in tasks (`echo`, `noop`, `ingest`, `embed`, `summarize`,
//! `webhook`), registered through the same [`Task`] API any user's worker
//! uses: `hopper-worker --queues echo,embed` is a
//! [`crate::Worker::builder`] with one [`Task::built_in`] per name. This is
//! the one place that lists them.
//!
//! Their shared state is built first (`pipeline_for`: the tokenizer when
//! documents are ingested, the loaded models when texts are embedded).

use std::sync::Arc;

use anyhow::{Context, bail};
use apalis_core::task::data::Data;
use hopper_queue::QueueClient;
use hopper_shared::{Config, jobs::JobKind};

use crate::{
    EMBED_CLAIM_ROOM, Task, TaskContext, TaskError, WorkerBuilder, WorkerOptions, diagnostic_tasks,
    embed, pipeline, webhook,
};

/// The built-in tasks `names` (as given to `--queues`); anything else is
/// refused with the list of built-ins and where custom tasks go.
pub fn parse(names: &[String]) -> anyhow::Result<Vec<JobKind>> {
    names
        .iter()
        .map(|name| {
            let name = name.trim();
            name.parse::<JobKind>().map_err(|_| {
                anyhow::anyhow!(
                    "`{name}` is not a built-in task (built-ins: {}); custom tasks run in a \
                     binary of your own built on the hopper-worker library (see \
                     examples/custom-task), or in a remote worker over /v1/work",
                    JobKind::names().join(", ")
                )
            })
        })
        .collect()
}

/// `builder` serving the built-in task `kind`.
pub(crate) fn add(
    builder: WorkerBuilder,
    kind: JobKind,
    config: &Config,
    client: &QueueClient,
    pipeline: &pipeline::stages::Pipeline,
) -> WorkerBuilder {
    // The pipeline's handlers take their state as apalis `Data`, a clone per
    // job as before.
    let p = Arc::new(pipeline.clone());
    let data = move |ctx: &TaskContext| (Data::new(ctx.job().clone()), Data::new((*p).clone()));
    match kind {
        JobKind::Echo => builder.task(Task::built_in(kind, diagnostic_tasks::echo)),
        JobKind::Noop => {
            let fx = Arc::new(diagnostic_tasks::NoopEffects::new(
                client,
                config.retention.noop_latencies,
            ));
            builder.task(Task::built_in(kind, move |args, _ctx: TaskContext| {
                let fx = fx.clone();
                async move { diagnostic_tasks::noop(args, &fx).await }
            }))
        }
        JobKind::Ingest => builder.task(Task::built_in(kind, move |args, ctx: TaskContext| {
            let (job, p) = data(&ctx);
            async move {
                pipeline::stages::ingest(args, job, p)
                    .await
                    .map_err(TaskError::from_boxed)
            }
        })),
        JobKind::Embed => {
            let mut task = Task::built_in(kind, move |args, ctx: TaskContext| {
                let (job, p) = data(&ctx);
                async move {
                    embed_announced(args, job, p)
                        .await
                        .map_err(TaskError::from_boxed)
                }
            });
            // Backpressure: claim only while the engine has room, so jobs
            // wait in Redis (for any worker), not in this process.
            if let Some(models) = pipeline.models.clone() {
                task = task.admission(Arc::new(move || {
                    models.available_capacity() / EMBED_CLAIM_ROOM
                }));
            }
            builder.task(task)
        }
        JobKind::Summarize => builder.task(Task::built_in(kind, move |args, ctx: TaskContext| {
            let (job, p) = data(&ctx);
            async move {
                pipeline::stages::summarize(args, job, p)
                    .await
                    .map_err(TaskError::from_boxed)
            }
        })),
        JobKind::Webhook => {
            let deliverer = webhook::Deliverer::new(config.webhook.clone());
            builder.task(Task::built_in(kind, move |args, ctx: TaskContext| {
                let (job, d) = (Data::new(ctx.job().clone()), Data::new(deliverer.clone()));
                async move {
                    webhook::deliver(args, job, d)
                        .await
                        .map_err(TaskError::from_boxed)
                }
            }))
        }
    }
}

/// The pipeline handlers' shared state: the tokenizer when documents are
/// ingested, the loaded models when texts are embedded (loading them is
/// blocking work, done off the async threads, with a warm-up pass).
pub(crate) async fn pipeline_for(
    config: &Config,
    opts: &WorkerOptions,
    client: &QueueClient,
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<pipeline::stages::Pipeline> {
    let wants = |k: JobKind| opts.queues.contains(&k);
    let model_dir = opts
        .models
        .first()
        .map(|m| m.dir.clone())
        .unwrap_or_default();
    let sandbox = if wants(JobKind::Ingest) {
        Some(
            pipeline::sandbox::Sandbox::new(&model_dir, config.extract).with_context(|| {
                "the ingest queue needs the default model's tokenizer (--model / HOPPER_MODEL_DIR)"
            })?,
        )
    } else {
        None
    };
    let mut registered = Vec::new();
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
        let registry = Arc::new(registry);
        registered = pipeline::served_models::register_and_renew(pool.clone(), registry.clone())
            .await
            .context("registering the served models in Postgres")?;
        Some(registry)
    } else {
        None
    };
    Ok(pipeline::stages::Pipeline {
        pool: pool.clone(),
        queue: client.clone(),
        sandbox,
        models,
        registered: Arc::new(registered),
        cache: pipeline::cache::EmbedCache::new(
            client.connection(),
            client.prefix(),
            pipeline::cache::CacheConfig::default(),
        ),
        llm: config
            .summary_llm
            .clone()
            .map(|c| Arc::new(pipeline::llm::LlmSummarizer::new(c))),
    })
}

/// The embed handler, its texts counted against the engine's room from the
/// moment the job starts ([`embed::Embedder::announced`]): the admission gate
/// then sees a claimed job at once, not after its cache lookup.
async fn embed_announced(
    args: hopper_shared::jobs::EmbedArgs,
    job: Data<hopper_queue::JobContext>,
    p: Data<pipeline::stages::Pipeline>,
) -> Result<serde_json::Value, apalis_core::error::BoxDynError> {
    let texts = args.texts.len() + args.batch.as_ref().map_or(0, |b| b.chunk_ids.len());
    match p.models.clone() {
        Some(models) => {
            let job = pipeline::stages::embed(args, job, p);
            models.default_model().announced(texts, job).await
        }
        None => pipeline::stages::embed(args, job, p).await,
    }
}
