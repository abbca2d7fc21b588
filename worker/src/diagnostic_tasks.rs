//! Handlers of the diagnostic built-in tasks, `echo` and `noop` (the
//! pipeline's are in [`crate::pipeline::stages`], the webhook's in
//! [`crate::webhook`]). Like any task's handler, each receives its decoded
//! arguments and a [`TaskContext`]; what it returns becomes the job's
//! result. It must commit its effects before returning (the ack follows) and
//! write them idempotently (a crash re-runs it).

use std::time::Duration;

use hopper_queue::QueueClient;
use hopper_shared::jobs::{EchoArgs, JobKind, NoopArgs};
use serde_json::{Value, json};

use crate::{TaskContext, TaskError};

/// The diagnostic `echo` kind: answers its message, optionally after a
/// sleep (which the soft time limit interrupts; with `progress_steps`, cut
/// into that many steps, each reported as progress first) or with a
/// failure.
pub async fn echo(args: EchoArgs, ctx: TaskContext) -> Result<Value, TaskError> {
    let job = ctx.job();
    if args.crash {
        if std::env::var("HOPPER_ALLOW_CRASH_JOBS").as_deref() != Ok("1") {
            return Err(TaskError::retryable(
                "crash jobs are refused unless HOPPER_ALLOW_CRASH_JOBS=1",
            ));
        }
        tracing::warn!(job = %job.id, "crash job: aborting the worker process");
        std::process::abort();
    }
    let steps = args.progress_steps.max(1);
    let step_sleep = Duration::from_millis(args.sleep_ms) / steps;
    for step in 1..=steps {
        if args.progress_steps > 0 {
            let fraction = f64::from(step) / f64::from(steps);
            let held = ctx
                .report(fraction, format!("step {step}"))
                .await
                .map_err(|e| TaskError::retryable(format!("progress not stored: {e}")))?;
            if !held {
                return Err(TaskError::retryable("this attempt no longer holds the job"));
            }
        }
        if !step_sleep.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(step_sleep) => {}
                _ = job.cancel.cancelled() => return Err(TaskError::retryable(job.stop_reason())),
            }
        }
    }
    if let Some(error) = args.fail {
        return Err(TaskError::retryable(error));
    }
    if job.attempt <= args.fail_attempts {
        return Err(TaskError::retryable(format!(
            "failing attempt {} of the first {} (fail_attempts)",
            job.attempt, args.fail_attempts
        )));
    }
    let mut answer = json!({
        "message": args.message,
        "attempt": job.attempt,
        "worker": job.worker.as_str(),
    });
    if let Some(input) = args.input {
        answer["input"] = input;
    }
    Ok(answer)
}

/// The start-latency list expires this long after its last sample.
pub const LATENCIES_TTL_S: i64 = 3600;

/// Where `noop` jobs leave their effect: a counter, and start latencies when
/// the submitter stamped its jobs.
#[derive(Clone)]
pub struct NoopEffects {
    conn: hopper_queue::RedisConn,
    counter: String,
    latencies: String,
    /// Latencies kept: the newest this many.
    keep: u32,
}

impl NoopEffects {
    /// Effects in the noop queue's own keys; the start-latency list keeps
    /// the newest `keep` samples (`HOPPER_NOOP_LATENCIES_KEEP`).
    pub fn new(client: &QueueClient, keep: u32) -> Self {
        let keys = client.keys(JobKind::Noop);
        Self {
            conn: client.connection(),
            counter: keys.named("effects"),
            latencies: keys.named("start_latency_us"),
            keep: keep.max(1),
        }
    }
}

/// The diagnostic `noop` kind: one Redis INCR (and, for stamped jobs, the
/// enqueue-to-start latency in µs appended to a list, which keeps its newest
/// `keep` samples and expires [`LATENCIES_TTL_S`] after the last one, so a
/// benchmark left running cannot grow Redis without bound; the same round
/// trip).
pub async fn noop(args: NoopArgs, fx: &NoopEffects) -> Result<(), TaskError> {
    let mut conn = fx.conn.clone();
    if let Some(sent) = args.sent_us {
        let latency = hopper_queue::now_us() - sent;
        redis::pipe()
            .cmd("INCR")
            .arg(&fx.counter)
            .ignore()
            .cmd("RPUSH")
            .arg(&fx.latencies)
            .arg(latency)
            .ignore()
            .cmd("LTRIM")
            .arg(&fx.latencies)
            .arg(-i64::from(fx.keep))
            .arg(-1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&fx.latencies)
            .arg(LATENCIES_TTL_S)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
    } else {
        redis::cmd("INCR")
            .arg(&fx.counter)
            .query_async::<i64>(&mut conn)
            .await?;
    }
    Ok(())
}
