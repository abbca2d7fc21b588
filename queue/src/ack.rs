//! Late acknowledgement: the layer every Hopper worker's handler runs inside.
//!
//! [`AckLayer`] is the backend's own middleware (apalis puts it outside the
//! user's layers). For each attempt it:
//!
//! 1. runs the handler under the queue's hard time limit, fires the job's
//!    cancellation token at the soft limit, and catches a panic, so no job
//!    can crash or wedge the worker;
//! 2. on success, writes the job's record to Postgres **then** acknowledges
//!    it in Redis: if the process dies in between, the job runs again and
//!    its idempotent effects leave one copy;
//! 3. on failure, schedules a retry (exponential backoff with jitter) or,
//!    after the last attempt, writes the dead record and dead-letters it;
//! 4. frees the worker's slot, so the claim loop may claim one more job.
//!
//! Every write is fenced by the attempt's lease token: the ack, fail or
//! release only if the attempt holds the job at that moment (inside the
//! script), and Postgres never replaces a record with one of an earlier
//! claim (a record that queues a callback is also checked in Redis before it
//! is written, so a stale attempt announces nothing). An
//! attempt that lost its lease (its worker was frozen past the lease and the
//! job was recovered) has its outcome dropped, logged and counted
//! (`hopper_job_lease_lost_total`). What such an attempt did outside Hopper
//! still happened: handlers write idempotently, keyed by job id.

use std::{
    any::Any,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use apalis_core::{error::BoxDynError, task::Task};
use deadpool_postgres::Pool;
use futures::{FutureExt, future::BoxFuture};
use hopper_shared::{
    db,
    jobs::{AttemptRecord, JobRecord, JobState, QueueSettings},
    metrics as m,
};
use serde::Serialize;
use tokio::sync::Semaphore;
use tower::{Layer, Service};
use tracing::Instrument;

use hopper_shared::QueueName;

use crate::{
    AfterFailure, JobContext, Permanent, QueueClient, QueueError, WorkerId, batch::GroupCommit,
    client::Ack, job::Running, now_ms, retry::retry_delay,
};

/// Answer of a fenced write: true when done, false when the attempt had
/// lost its lease (nothing was written).
type Fenced = bool;

/// Attempts at writing a record or an acknowledgement before giving up.
const WRITE_TRIES: u32 = 5;

/// Middleware that acknowledges each job after its handler returned.
#[derive(Clone)]
pub struct AckLayer {
    pub(crate) inner: Arc<AckShared>,
}

pub(crate) struct AckShared {
    pub client: QueueClient,
    pub settings: QueueSettings,
    /// Group commit of finished-job records into Postgres (none: no store).
    pub records: Option<GroupCommit<JobRecord, Fenced>>,
    /// Group commit of this worker's acks into Redis.
    pub acks: GroupCommit<Ack, Fenced>,
    pub slots: Arc<Semaphore>,
    pub running: Arc<Running>,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AckService {
            inner,
            shared: self.inner.clone(),
        }
    }
}

/// See [`AckLayer`].
#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<AckShared>,
}

/// How an attempt ended.
#[derive(Debug)]
enum Outcome {
    Succeeded(serde_json::Value),
    /// The error, and whether it is [`Permanent`] (no retry can fix it).
    Failed(String, bool),
}

impl<S, Args, Res> Service<Task<Args>> for AckService<S>
where
    S: Service<Task<Args>, Response = Res>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    Res: Serialize + Send + 'static,
{
    type Response = Res;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<Res, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let shared = self.shared.clone();
        let Some(ctx) = task.data().get::<JobContext>().cloned() else {
            return async { Err("task carries no JobContext: not from a Hopper queue".into()) }
                .boxed();
        };
        let fut = self.inner.call(task);
        let span = tracing::info_span!(
            "job",
            id = %ctx.id,
            queue = ctx.queue.as_str(),
            attempt = ctx.attempt,
            request_id = ctx.request_id.as_deref().unwrap_or("-"),
        );
        async move {
            shared.running.insert(&ctx);
            metrics::counter!(m::JOBS_STARTED, "kind" => ctx.queue.label()).increment(1);
            if ctx.attempt == 1 {
                let waited = (ctx.started_at_ms - ctx.enqueued_at_ms).max(0) as f64 / 1000.0;
                metrics::histogram!(m::JOB_QUEUE_WAIT_SECONDS, "kind" => ctx.queue.label())
                    .record(waited);
            }
            let started = Instant::now();
            // The soft limit fires the job's token from within this future
            // (no task per attempt); the hard limit abandons the attempt.
            let hard = shared.settings.hard_time_limit;
            let attempt = tokio::time::timeout(hard, AssertUnwindSafe(fut).catch_unwind());
            let soft = tokio::time::sleep(shared.settings.soft_time_limit);
            tokio::pin!(attempt, soft);
            let mut soft_fired = false;
            let result: Result<Res, BoxDynError> = loop {
                tokio::select! {
                    ran = &mut attempt => break match ran {
                        Ok(Ok(r)) => r.map_err(Into::into),
                        Ok(Err(panic)) => {
                            Err(format!("handler panicked: {}", panic_message(&panic)).into())
                        }
                        Err(_) => Err(format!("hard time limit of {hard:?} exceeded").into()),
                    },
                    _ = &mut soft, if !soft_fired => {
                        soft_fired = true;
                        ctx.cancel.cancel();
                    }
                }
            };
            metrics::histogram!(m::JOB_RUN_SECONDS, "kind" => ctx.queue.label())
                .record(started.elapsed().as_secs_f64());
            let outcome = match &result {
                Ok(v) => match serde_json::to_value(v) {
                    Ok(v) => Outcome::Succeeded(v),
                    Err(e) => Outcome::Failed(format!("result does not serialise: {e}"), true),
                },
                Err(e) => Outcome::Failed(e.to_string(), e.downcast_ref::<Permanent>().is_some()),
            };
            finish(&shared, &ctx, outcome).await;
            shared.running.remove(&ctx.id);
            shared.slots.add_permits(1);
            result
        }
        .instrument(span)
        .boxed()
    }
}

/// Records the attempt's outcome in Postgres and Redis, in that order.
async fn finish(shared: &AckShared, ctx: &JobContext, outcome: Outcome) {
    let queue = ctx.queue.as_str();
    let now = now_ms();
    let (result, error, permanent) = match outcome {
        Outcome::Succeeded(v) => (Some(v), None, false),
        Outcome::Failed(e, permanent) => (None, Some(e), permanent),
    };
    // What follows a failure: a retry, a cancellation, or the dead letters.
    let next = match &error {
        None => None,
        Some(_) if ctx.is_cancel_requested() => Some(AfterFailure::Cancelled),
        Some(_) if permanent => Some(AfterFailure::Dead("permanent")),
        Some(_) if ctx.attempt < ctx.max_attempts => {
            let s = &shared.settings;
            Some(AfterFailure::RetryIn(retry_delay(
                ctx.attempt,
                s.backoff_base,
                s.backoff_max,
            )))
        }
        Some(_) => Some(AfterFailure::Dead("attempts")),
    };
    match (&error, next) {
        (None, _) => metrics::counter!(m::JOBS_SUCCEEDED, "kind" => ctx.queue.label()).increment(1),
        (Some(e), next) => {
            metrics::counter!(m::JOBS_FAILED, "kind" => ctx.queue.label()).increment(1);
            tracing::warn!(job = %ctx.id, queue = queue, attempt = ctx.attempt, error = %e, "attempt failed");
            match next {
                Some(AfterFailure::RetryIn(_)) => {
                    metrics::counter!(m::JOBS_RETRIED, "kind" => ctx.queue.label()).increment(1)
                }
                Some(AfterFailure::Dead(reason)) => {
                    metrics::counter!(m::JOBS_DEAD_LETTERED, "kind" => ctx.queue.label(), "reason" => reason)
                        .increment(1)
                }
                _ => {}
            }
        }
    }

    // A final outcome is written to Postgres first; only then does Redis
    // let go of the job.
    let final_state = match (&error, next) {
        (None, _) => Some(JobState::Succeeded),
        (Some(_), Some(AfterFailure::Dead(_))) => Some(JobState::Dead),
        (Some(_), Some(AfterFailure::Cancelled)) => Some(JobState::Cancelled),
        _ => None,
    };
    if let Some(state) = final_state
        && let Some(records) = &shared.records
    {
        let record = final_record(shared, ctx, state, now, result.clone(), error.clone()).await;
        let callback = record.callback_url.is_some().then(|| record.clone());
        match records.submit(record).await {
            Ok(true) => {}
            Ok(false) => return lease_lost(ctx),
            Err(e) => {
                // Not acknowledged: run it again later; its effects are idempotent.
                tracing::error!(job = %ctx.id, "record not stored, the job will run again: {e}");
                let msg = format!("result not stored: {e}");
                let again = shared
                    .client
                    .fail(
                        &ctx.queue,
                        &ctx.worker,
                        ctx.id,
                        ctx.lease,
                        &msg,
                        AfterFailure::RetryIn(shared.settings.backoff_base),
                    )
                    .await;
                match again {
                    Ok(true) => {}
                    Ok(false) => lease_lost(ctx),
                    Err(e) => {
                        tracing::error!(job = %ctx.id, "could not reschedule; the rescuer will: {e}")
                    }
                }
                return;
            }
        }
        // The callback is queued before Redis lets go of the job: a crash
        // here re-runs it, and the webhook's idempotency key keeps it single.
        if let Some(record) = callback {
            let queued = until_recorded("webhook", || shared.client.push_webhook(&record)).await;
            if let Err(e) = queued {
                tracing::error!(job = %ctx.id, "completion callback not queued: {e}");
            }
        }
    }
    let written = match (&result, &error, next) {
        (Some(value), _, _) => {
            let ack = Ack {
                id: ctx.id,
                result: serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
                worker: ctx.worker.clone(),
                lease: ctx.lease,
            };
            shared.acks.submit(ack).await
        }
        (_, Some(e), Some(next)) => until_recorded("fail", || {
            shared
                .client
                .fail(&ctx.queue, &ctx.worker, ctx.id, ctx.lease, e, next)
        })
        .await
        .map_err(|e| e.to_string()),
        _ => unreachable!("an outcome is a result or an error"),
    };
    match written {
        Ok(true) => {}
        Ok(false) => lease_lost(ctx),
        Err(e) => tracing::error!(job = %ctx.id,
            "could not record the outcome in Redis; the rescuer will release it: {e}"),
    }
}

/// The attempt's lease was lost: its job was recovered while it ran (this
/// worker was presumed dead) and may have run again elsewhere. Its outcome
/// was dropped; say so once and count it.
fn lease_lost(ctx: &JobContext) {
    tracing::warn!(job = %ctx.id, queue = ctx.queue.as_str(), attempt = ctx.attempt,
        lease = ctx.lease, worker = %ctx.worker,
        "lease lost: the job was recovered while this attempt ran; its outcome is dropped");
    metrics::counter!(m::JOB_LEASE_LOST, "queue" => ctx.queue.label()).increment(1);
}

/// The Postgres record of a job that just finished, its history included
/// (read back from Redis only when earlier attempts exist).
async fn final_record(
    shared: &AckShared,
    ctx: &JobContext,
    state: JobState,
    now: i64,
    result: Option<serde_json::Value>,
    error: Option<String>,
) -> JobRecord {
    let mut history = Vec::new();
    if ctx.attempt > 1
        && let Ok(Some(earlier)) = shared.client.job(&ctx.queue, ctx.id).await
    {
        history = earlier.history;
    }
    history.push(AttemptRecord {
        attempt: ctx.attempt,
        worker: Some(ctx.worker.to_string()),
        started_at_ms: Some(ctx.started_at_ms),
        finished_at_ms: now,
        outcome: state.as_str().to_owned(),
        error: error.clone(),
    });
    JobRecord {
        id: ctx.id,
        kind: ctx.queue.clone(),
        state,
        attempts: ctx.attempt,
        max_attempts: ctx.max_attempts,
        args: serde_json::from_str(&ctx.args_json).unwrap_or(serde_json::Value::Null),
        result,
        error,
        worker: Some(ctx.worker.to_string()),
        enqueued_at_ms: ctx.enqueued_at_ms,
        started_at_ms: Some(ctx.started_at_ms),
        finished_at_ms: Some(now),
        priority: Some(ctx.priority.as_str().to_owned()),
        request_id: ctx.request_id.clone(),
        run_at_ms: None,
        history,
        tenant: ctx.tenant.to_string(),
        callback_url: ctx.callback_url.clone(),
        lease: ctx.lease,
    }
}

impl AckShared {
    /// The shared state of one worker's queue, with its group-commit tasks
    /// started (batches of at most 256).
    pub fn start(
        client: QueueClient,
        queue: impl Into<QueueName>,
        settings: QueueSettings,
        pool: Option<Pool>,
        slots: Arc<Semaphore>,
        running: Arc<Running>,
    ) -> Self {
        let queue = queue.into();
        let records = pool.map(|pool| {
            let (client, queue) = (client.clone(), queue.clone());
            GroupCommit::spawn(256, move |batch: Vec<JobRecord>| {
                let (pool, client, queue) = (pool.clone(), client.clone(), queue.clone());
                async move { store_held_records(&client, &queue, &pool, batch).await }
            })
        });
        let acks = {
            let client = client.clone();
            GroupCommit::spawn(256, move |batch: Vec<Ack>| {
                let (client, queue) = (client.clone(), queue.clone());
                async move {
                    let lost = until_recorded("ack", || client.ack_many(&queue, &batch))
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(batch.iter().map(|a| !lost.contains(&a.id)).collect())
                }
            })
        };
        Self {
            client,
            settings,
            records,
            acks,
            slots,
            running,
        }
    }
}

/// Writes the records in `batch` (one statement in Postgres); answers which
/// attempts still held their jobs.
///
/// The upsert itself is fenced by lease, so a stale attempt never replaces
/// the record of a later claim; it may write first, and the owner's record
/// replaces it when the owner finishes (the job's state is read from Redis
/// meanwhile). Only records that queue a completion callback are checked in
/// Redis first (`held.lua`), so no stale attempt announces an outcome: a
/// round trip per batch for every job would cost the drain rate ~15 %.
async fn store_held_records(
    client: &QueueClient,
    queue: &QueueName,
    pool: &Pool,
    batch: Vec<JobRecord>,
) -> Result<Vec<Fenced>, String> {
    let mut held = vec![true; batch.len()];
    let with_callback: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].callback_url.is_some())
        .collect();
    if !with_callback.is_empty() {
        let workers: Vec<WorkerId> = with_callback
            .iter()
            .map(|&i| WorkerId::from_raw(batch[i].worker.as_deref().unwrap_or_default()))
            .collect();
        let attempts: Vec<_> = with_callback
            .iter()
            .zip(&workers)
            .map(|(&i, w)| (batch[i].id, w, batch[i].lease))
            .collect();
        let answers = until_recorded("lease check", || client.still_held(queue, &attempts))
            .await
            .map_err(|e| e.to_string())?;
        for (&i, h) in with_callback.iter().zip(answers) {
            held[i] = h;
        }
    }
    let keep: Vec<JobRecord> = batch
        .into_iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(r, _)| r)
        .collect();
    if !keep.is_empty() {
        with_retries("store records", || db::upsert_job_records(pool, &keep))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(held)
}

/// Writes a job's record to Postgres.
pub(crate) async fn persist_record(
    pool: &Pool,
    record: &JobRecord,
) -> Result<(), crate::QueueError> {
    db::upsert_job_record(pool, record).await?;
    Ok(())
}

/// Runs `op` until it succeeds, at most [`WRITE_TRIES`] times, with a
/// doubling pause between tries.
async fn with_retries<T, E, F, Fut>(what: &str, mut op: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(50);
    let mut tries = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tries >= WRITE_TRIES => return Err(e),
            Err(e) => {
                tracing::warn!("{what} failed (try {tries}/{WRITE_TRIES}), retrying: {e}");
                tokio::time::sleep(pause).await;
                pause *= 2;
                tries += 1;
            }
        }
    }
}

/// Records an outcome in Redis. A connection problem (Redis restarting, a
/// network blip) is retried for as long as it lasts, with a pause capped at
/// 2 s: the outcome is known and must not be lost, and a job whose ack was
/// dropped would stay claimed by this live worker, out of reach of recovery.
/// Any other error is retried [`WRITE_TRIES`] times.
async fn until_recorded<T, F, Fut>(what: &str, mut op: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut pause = Duration::from_millis(50);
    let mut other_failures = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(QueueError::Redis(e))
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() =>
            {
                tracing::warn!("{what} failed, Redis unreachable; retrying in {pause:?}: {e}");
            }
            Err(e) => {
                other_failures += 1;
                if other_failures >= WRITE_TRIES {
                    return Err(e);
                }
                tracing::warn!("{what} failed ({other_failures}/{WRITE_TRIES}), retrying: {e}");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
