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
    jobs::{JobRecord, JobState, QueueSettings},
    metrics as m,
};
use serde::Serialize;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::{JobContext, QueueClient, now_ms, retry::retry_delay};

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
    pub pool: Option<Pool>,
    pub slots: Arc<Semaphore>,
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
enum Outcome {
    Succeeded(serde_json::Value),
    Failed(String),
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
        async move {
            let kind = ctx.kind.as_str();
            metrics::counter!(m::JOBS_STARTED, "kind" => kind).increment(1);
            let started = Instant::now();
            let soft = {
                let token = ctx.cancel.clone();
                let limit = shared.settings.soft_time_limit;
                tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    token.cancel();
                })
            };
            let hard = shared.settings.hard_time_limit;
            let result =
                match tokio::time::timeout(hard, AssertUnwindSafe(fut).catch_unwind()).await {
                    Ok(Ok(r)) => r.map_err(Into::into),
                    Ok(Err(panic)) => {
                        Err(format!("handler panicked: {}", panic_message(&panic)).into())
                    }
                    Err(_) => Err(format!("hard time limit of {hard:?} exceeded").into()),
                };
            soft.abort();
            metrics::histogram!(m::JOB_RUN_SECONDS, "kind" => kind)
                .record(started.elapsed().as_secs_f64());
            let outcome = match &result {
                Ok(v) => match serde_json::to_value(v) {
                    Ok(v) => Outcome::Succeeded(v),
                    Err(e) => Outcome::Failed(format!("result does not serialise: {e}")),
                },
                Err(e) => Outcome::Failed(e.to_string()),
            };
            finish(&shared, &ctx, outcome).await;
            shared.slots.add_permits(1);
            result
        }
        .boxed()
    }
}

/// Records the attempt's outcome in Postgres and Redis, in that order.
async fn finish(shared: &AckShared, ctx: &JobContext, outcome: Outcome) {
    let kind = ctx.kind.as_str();
    let mut record = JobRecord {
        id: ctx.id,
        kind: ctx.kind,
        state: JobState::Succeeded,
        attempts: ctx.attempt,
        max_attempts: ctx.max_attempts,
        args: serde_json::from_str(&ctx.args_json).unwrap_or(serde_json::Value::Null),
        result: None,
        error: None,
        worker: Some(ctx.worker.to_string()),
        enqueued_at_ms: ctx.enqueued_at_ms,
        started_at_ms: Some(ctx.started_at_ms),
        finished_at_ms: Some(now_ms()),
    };
    match outcome {
        Outcome::Succeeded(value) => {
            metrics::counter!(m::JOBS_SUCCEEDED, "kind" => kind).increment(1);
            record.result = Some(value.clone());
            if let Err(e) = store(shared.pool.as_ref(), &record).await {
                // Not acknowledged: schedule a retry; the re-run is idempotent.
                tracing::error!(job = %ctx.id, "record not stored, retrying the job: {e}");
                let at = now_ms() + shared.settings.backoff_base.as_millis() as i64;
                let _ = shared
                    .client
                    .fail(ctx.kind, &ctx.worker, ctx.id, &e.to_string(), Some(at), "")
                    .await;
                return;
            }
            let acked = with_retries("ack", || {
                shared.client.ack(ctx.kind, &ctx.worker, ctx.id, &value)
            })
            .await;
            if let Err(e) = acked {
                tracing::error!(job = %ctx.id, "ack failed; the lease will re-run it: {e}");
            }
        }
        Outcome::Failed(error) => {
            metrics::counter!(m::JOBS_FAILED, "kind" => kind).increment(1);
            tracing::warn!(job = %ctx.id, queue = kind, attempt = ctx.attempt, %error, "attempt failed");
            let retry_at = (ctx.attempt < ctx.max_attempts).then(|| {
                let s = &shared.settings;
                now_ms()
                    + retry_delay(ctx.attempt, s.backoff_base, s.backoff_max).as_millis() as i64
            });
            if retry_at.is_some() {
                metrics::counter!(m::JOBS_RETRIED, "kind" => kind).increment(1);
            } else {
                metrics::counter!(m::JOBS_DEAD_LETTERED, "kind" => kind, "reason" => "attempts")
                    .increment(1);
                record.state = JobState::Dead;
                record.error = Some(error.clone());
                if let Err(e) = store(shared.pool.as_ref(), &record).await {
                    tracing::error!(job = %ctx.id, "dead record not stored: {e}");
                }
            }
            let failed = with_retries("fail", || {
                shared
                    .client
                    .fail(ctx.kind, &ctx.worker, ctx.id, &error, retry_at, "attempts")
            })
            .await;
            if let Err(e) = failed {
                tracing::error!(job = %ctx.id, "could not record failure: {e}");
            }
        }
    }
}

/// Writes a job's record to Postgres (with retries), when there is a pool.
async fn store(pool: Option<&Pool>, record: &JobRecord) -> Result<(), crate::QueueError> {
    match pool {
        Some(pool) => with_retries("store record", || persist_record(pool, record)).await,
        None => Ok(()),
    }
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

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
