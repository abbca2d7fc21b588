//! Late acknowledgement: the layer every Hopper worker's handler runs inside.
//!
//! [`AckLayer`] is the backend's own middleware (apalis puts it outside the
//! user's layers). For each attempt it:
//!
//! 1. runs the handler under the hard time limit (the job's own, else its
//!    queue's), fires the job's cancellation token at the soft limit, and catches a panic, so no job
//!    can crash or wedge the worker;
//! 2. records the outcome through the queue's [`Recorder`]
//!    ([`crate::outcome`], shared with remote workers): on success the
//!    record goes to Postgres **then** the ack to Redis; on failure a retry
//!    or, after the last attempt, the dead record and the dead letter; every
//!    write fenced by the attempt's lease;
//! 3. frees the worker's slot, so the claim loop may claim one more job.
//!
//! An attempt that lost its lease (its worker was frozen past the lease and
//! the job was recovered) has its outcome dropped, logged and counted
//! (`hopper_job_lease_lost_total`). What such an attempt did outside Hopper
//! still happened: handlers write idempotently, keyed by job id.

use std::{
    any::Any,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use apalis_core::{error::BoxDynError, task::Task};
use deadpool_postgres::Pool;
use futures::{FutureExt, future::BoxFuture};
use hopper_shared::{QueueName, jobs::QueueSettings, metrics as m};
use serde::Serialize;
use tokio::sync::Semaphore;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{
    JobContext, Permanent, QueueClient,
    job::Running,
    outcome::{Attempt, Outcome, Recorder},
};

/// Middleware that acknowledges each job after its handler returned.
#[derive(Clone)]
pub struct AckLayer {
    pub(crate) inner: Arc<AckShared>,
}

pub(crate) struct AckShared {
    /// Record outcomes (Postgres, then Redis): one per partition, in
    /// partition order (one in all when the queue is not split).
    pub recorders: Vec<Recorder>,
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
            otel.name = format!("job {}", ctx.queue.as_str()),
        );
        // The attempt continues the trace of whatever pushed the job.
        hopper_shared::telemetry::set_parent(&span, ctx.traceparent.as_deref());
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
            // A job's own limits (given at submission) replace its task's.
            let recorder = shared.recorder(&ctx.partition);
            let settings = recorder.settings();
            let hard = ctx.hard_time_limit.unwrap_or(settings.hard_time_limit);
            let soft = ctx.soft_time_limit.unwrap_or(settings.soft_time_limit);
            let attempt = tokio::time::timeout(hard, AssertUnwindSafe(fut).catch_unwind());
            let soft = tokio::time::sleep(soft);
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
            recorder.finish(&Attempt::from(&ctx), outcome).await;
            shared.running.remove(&ctx.id);
            shared.slots.add_permits(1);
            result
        }
        .instrument(span)
        .boxed()
    }
}

impl AckShared {
    /// The shared state of one worker's queue, with its recorder's
    /// group-commit tasks started.
    pub fn start(
        client: QueueClient,
        partitions: impl IntoIterator<Item = QueueName>,
        settings: QueueSettings,
        pool: Option<Pool>,
        slots: Arc<Semaphore>,
        running: Arc<Running>,
    ) -> Self {
        let recorders = partitions
            .into_iter()
            .map(|p| Recorder::start(client.clone(), p, settings.clone(), pool.clone(), false))
            .collect();
        Self {
            recorders,
            slots,
            running,
        }
    }

    /// The recorder of the partition a job was claimed from.
    fn recorder(&self, partition: &QueueName) -> &Recorder {
        let k = usize::from(partition.partition_index());
        self.recorders.get(k).unwrap_or(&self.recorders[0])
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
