//! The Celery bridge in a worker process (`HOPPER_CELERY_QUEUES`): lets
//! unchanged Celery producers hand their tasks to Hopper (see the
//! `hopper-celery` crate for the wire formats).
//!
//! [`add`] starts two loops and gives the worker one internal task:
//!
//! * the intake pump ([`hopper_celery::intake`]) turns each Celery message
//!   in kombu's lists into the Hopper job it asks for, in the script that
//!   takes the message;
//! * the results loop ([`hopper_celery::publish::run_results`]) reads the
//!   outbox every Celery-sent job's outcome is told to and writes the
//!   Celery result (`SUCCESS`, `FAILURE` or `REVOKED`) where `AsyncResult`
//!   reads it;
//! * the task `celery.intake` handles what the pump could not plan (pickle,
//!   an undeclared task, canvas; and dead letters retried by an operator):
//!   it plans the message again ([`hopper_celery::submit`]) and queues its
//!   job, or publishes its FAILURE and dead-letters it with the reason.
//!   Retried with backoff when Redis or the result backend is unreachable,
//!   recovered when its worker dies, like any task.

use std::{sync::Arc, time::Duration};

use hopper_celery::{
    INTAKE_TASK,
    config::CeleryConfig,
    intake::run_pump,
    publish::{ResultStore, run_results},
    submit::{IntakeArgs, Submitted, Submitter},
};
use hopper_queue::QueueClient;
use hopper_shared::metrics as m;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Task, TaskContext, TaskError, WorkerBuilder};

/// Intake jobs one worker runs at once (each waits on one Redis round trip).
const CONCURRENCY: usize = 16;
/// How long Redis keeps finished intake jobs (they are not recorded in
/// Postgres: the Celery-sent jobs themselves are).
const RETENTION: Duration = Duration::from_secs(3600);

/// `builder` with the bridge's task; the pump and the results loop run until
/// `stop` fires. Fails when the result backend cannot be reached.
pub async fn add(
    builder: WorkerBuilder,
    config: CeleryConfig,
    client: &QueueClient,
    stop: CancellationToken,
) -> anyhow::Result<WorkerBuilder> {
    if client.is_cluster() {
        // intake.lua moves a Celery message from the broker's list into its
        // task's queue in one step: two slots, which a cluster refuses.
        anyhow::bail!(
            "the Celery bridge (HOPPER_CELERY_QUEUES) needs one Redis server: REDIS_URL names a \
             Redis Cluster; run the bridge's worker against a single Redis"
        );
    }
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
    let handler = submitter.clone();
    let intake = Task::new(
        INTAKE_TASK.as_str(),
        move |args: IntakeArgs, _ctx: TaskContext| {
            let submitter = handler.clone();
            async move { take(&submitter, &args).await }
        },
    )
    .internal()
    .concurrency(CONCURRENCY)
    .retention(RETENTION)
    .without_records()
    .description("Celery messages the intake could not plan: queued, or refused with the reason");
    // Once this worker's tasks are declared, so the first messages find them.
    let client = client.clone();
    Ok(builder.task(intake).when_declared(move || {
        tokio::spawn(run_pump(client.clone(), config, submitter, stop.clone()));
        tokio::spawn(run_results(client, results, stop));
    }))
}

/// Queues the job an intake job's message asks for, or refuses it.
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
