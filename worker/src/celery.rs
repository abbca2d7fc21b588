//! The Celery bridge in a worker process (`HOPPER_CELERY_QUEUES`): lets
//! unchanged Celery producers hand their tasks to Hopper (see the
//! `hopper-celery` crate for the wire formats).
//!
//! [`add`] gives the worker two internal tasks and starts the intake pump
//! ([`hopper_celery::intake`]):
//!
//! * `celery.intake` — one job per Celery message the pump moved out of
//!   kombu's lists: queues the Hopper job the message asks for
//!   ([`hopper_celery::submit`]); a message that cannot run (pickle, an
//!   undeclared task, canvas) is dead-lettered here with the reason, and its
//!   FAILURE result published;
//! * `celery.result` — one job per finished Celery-sent job (queued by the
//!   queue core through the job's `notify`): writes the Celery result
//!   (`SUCCESS`, `FAILURE` or `REVOKED`) where `AsyncResult` reads it.
//!
//! Both are ordinary Hopper tasks: retried with backoff when Redis or the
//! result backend is unreachable, recovered when their worker dies, counted
//! on `/metrics` and the dashboard.

use std::{sync::Arc, time::Duration};

use hopper_celery::{
    INTAKE_TASK, RESULT_TASK,
    config::CeleryConfig,
    intake::run_pump,
    publish::ResultStore,
    result::{ResultData, meta},
    submit::{IntakeArgs, Submitted, Submitter},
};
use hopper_queue::QueueClient;
use hopper_shared::{jobs::JobRecord, metrics as m};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Task, TaskContext, TaskError, WorkerBuilder};

/// Jobs of each bridge task one worker runs at once (each waits on one
/// Redis round trip, no CPU).
const CONCURRENCY: usize = 128;
/// How long Redis keeps a bridge task's finished jobs (they are not
/// recorded in Postgres: the Celery-sent jobs themselves are).
const RETENTION: Duration = Duration::from_secs(600);

/// A `celery.result` job's arguments (see `hopper_shared::jobs::Notify`).
#[derive(Debug, Deserialize)]
struct ResultJob {
    data: ResultData,
    job: JobRecord,
}

/// `builder` with the bridge's two tasks; the intake pump runs until `stop`
/// fires. Fails when the result backend cannot be reached.
pub async fn add(
    builder: WorkerBuilder,
    config: CeleryConfig,
    client: &QueueClient,
    stop: CancellationToken,
) -> anyhow::Result<WorkerBuilder> {
    let config = Arc::new(config);
    let results = ResultStore::connect(&config.result_url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the Celery result backend at {} (HOPPER_CELERY_RESULT_URL): {e}",
                hopper_shared::config::redact_url(&config.result_url)
            )
        })?;
    let submitter = Submitter::new(client.clone(), config.clone(), results.clone());
    let intake = Task::new(
        INTAKE_TASK.as_str(),
        move |args: IntakeArgs, _ctx: TaskContext| {
            let submitter = submitter.clone();
            async move { take(&submitter, &args).await }
        },
    )
    .internal()
    .concurrency(CONCURRENCY)
    .retention(RETENTION)
    .without_records()
    .description("Celery messages moved in from kombu's lists: each queues its Hopper job");
    let publish = Task::new(
        RESULT_TASK.as_str(),
        move |args: ResultJob, _ctx: TaskContext| {
            let results = results.clone();
            async move { publish(&results, &args).await }
        },
    )
    .internal()
    .concurrency(CONCURRENCY)
    .retention(RETENTION)
    .without_records()
    .description("Publishes the Celery result of a finished Celery-sent job");
    tokio::spawn(run_pump(client.clone(), config, stop));
    Ok(builder.task(intake).task(publish))
}

/// Queues the job an intake job's message asks for.
async fn take(submitter: &Submitter, args: &IntakeArgs) -> Result<Value, TaskError> {
    match submitter.submit(args).await {
        Ok(Submitted::Queued { task, id, created }) => {
            Ok(json!({ "task": task, "job": id, "created": created }))
        }
        Ok(Submitted::Refused(refusal)) => {
            metrics::counter!(m::CELERY_MESSAGES_REFUSED, "reason" => refusal.reason.as_str())
                .increment(1);
            tracing::warn!(queue = %args.source, celery_id = refusal.id.as_deref().unwrap_or("-"),
                "{refusal}");
            Err(TaskError::permanent(refusal))
        }
        Err(e) => Err(TaskError::retryable(e)),
    }
}

/// Writes one Celery result.
async fn publish(results: &ResultStore, args: &ResultJob) -> Result<Value, TaskError> {
    let meta = meta(&args.job, &args.data, time::OffsetDateTime::now_utc());
    let status = meta["status"].as_str().unwrap_or("").to_owned();
    let written = results
        .publish(&args.data.result_key, &meta, args.data.result_ttl_s)
        .await?;
    metrics::counter!(m::CELERY_RESULTS_PUBLISHED, "status" => status.clone()).increment(1);
    Ok(json!({ "status": status, "written": written }))
}
