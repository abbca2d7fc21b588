//! Recording how an attempt ended: the one implementation every worker's
//! outcomes go through, Rust handlers ([`crate::ack::AckLayer`]) and remote
//! workers over HTTP (the API's `/v1/work/complete` and `/v1/work/fail`)
//! alike.
//!
//! A [`Recorder`] serves one queue. [`Recorder::finish`] takes an
//! [`Attempt`] (what the claim handed out: job, worker id, lease, the job's
//! submitted facts) and its [`Outcome`], and
//!
//! 1. on success, writes the job's record to Postgres **then** acknowledges
//!    it in Redis: if the process dies in between, the job runs again and
//!    its idempotent effects leave one copy;
//! 2. on failure, schedules a retry (exponential backoff with jitter, the
//!    queue's settings) or, after the last attempt or a permanent error,
//!    writes the dead record and dead-letters it (reason `attempts` or
//!    `permanent`); a failed attempt whose cancellation was asked for ends
//!    as cancelled;
//! 3. queues the job's completion callback before Redis lets go of it.
//!
//! Records and acks are group-committed (one Postgres statement and one
//! `ack.lua` call per batch of concurrent outcomes), so a remote worker's
//! batch of 100 results costs a statement and a script, not 100.
//!
//! Every write is fenced by the attempt's lease token: the ack, fail or
//! release only if the attempt holds the job at that moment (inside the
//! script), and Postgres never replaces a record with one of an earlier
//! claim. A record that queues a callback is also checked in Redis before
//! it is written (`held.lua`), so a stale attempt announces nothing; a
//! recorder started with `fence_every_record` checks every record so (the
//! API's, whose remote workers may be anywhere: a stale completion writes
//! nothing at all). An attempt that lost its lease has its outcome dropped,
//! logged and counted (`hopper_job_lease_lost_total`): [`Recorded::LeaseLost`].

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use deadpool_postgres::Pool;
use hopper_shared::{
    QueueName, db,
    jobs::{AttemptRecord, JobRecord, JobState, Notify, QueueSettings},
    metrics as m,
    retry_policy::{self, RECORD_TRIES, Retryable},
};
use uuid::Uuid;

use crate::{
    AfterFailure, JobContext, Priority, QueueClient, QueueError, WorkerId, batch::GroupCommit,
    client::Ack, now_ms, retry::retry_delay,
};

/// Answer of a fenced write: true when done, false when the attempt had
/// lost its lease (nothing was written).
type Fenced = bool;

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The handler's result.
    Succeeded(serde_json::Value),
    /// The error, and whether it is permanent (no retry can fix it).
    Failed(String, bool),
}

/// What [`Recorder::finish`] did with an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded (success, retry, dead letter or cancellation).
    Done,
    /// The attempt no longer held the job: nothing was written.
    LeaseLost,
    /// A store was unreachable; the job is left to run again (rescheduled,
    /// or released by recovery).
    NotStored(String),
}

/// One attempt as its claim handed it out: everything recording its
/// outcome needs, without the Rust handler's [`JobContext`].
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The job.
    pub id: Uuid,
    /// Its queue — the partition it was claimed from, when the queue is
    /// split (the name the queue's scripts know it by).
    pub queue: &'a QueueName,
    /// The worker id it was claimed under.
    pub worker: &'a WorkerId,
    /// The claim's lease token.
    pub lease: u64,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Unix ms: submitted.
    pub enqueued_at_ms: i64,
    /// Unix ms: this attempt started.
    pub started_at_ms: i64,
    /// The submitted arguments, as stored (JSON text).
    pub args_json: &'a str,
    /// Its priority.
    pub priority: Priority,
    /// The id of the HTTP request that submitted it.
    pub request_id: Option<&'a str>,
    /// Its tenant.
    pub tenant: &'a str,
    /// Its completion callback, if any.
    pub callback_url: Option<&'a str>,
    /// The task told when it finishes, if any.
    pub notify: Option<&'a Notify>,
    /// A client asked for its cancellation: a failure ends it as cancelled.
    pub cancel_requested: bool,
    /// Its own retry backoff, instead of the queue's.
    pub backoff: Option<crate::job::JobBackoff>,
}

impl<'a> From<&'a JobContext> for Attempt<'a> {
    fn from(ctx: &'a JobContext) -> Self {
        Self {
            id: ctx.id,
            // The partition: the name the queue's scripts know the job by.
            queue: &ctx.partition,
            worker: &ctx.worker,
            lease: ctx.lease,
            attempt: ctx.attempt,
            max_attempts: ctx.max_attempts,
            enqueued_at_ms: ctx.enqueued_at_ms,
            started_at_ms: ctx.started_at_ms,
            args_json: &ctx.args_json,
            priority: ctx.priority,
            request_id: ctx.request_id.as_deref(),
            tenant: &ctx.tenant,
            callback_url: ctx.callback_url.as_deref(),
            notify: ctx.notify.as_ref(),
            cancel_requested: ctx.is_cancel_requested(),
            backoff: ctx.backoff,
        }
    }
}

/// Records the outcomes of one queue's attempts (see the module docs).
/// Cheap to clone: its group-commit tasks are shared.
#[derive(Clone)]
pub struct Recorder {
    client: QueueClient,
    settings: QueueSettings,
    /// Group commit of finished-job records into Postgres (none: no store).
    records: Option<GroupCommit<JobRecord, Fenced>>,
    /// Group commit of acks into Redis.
    acks: GroupCommit<Ack, Fenced>,
}

impl Recorder {
    /// The recorder of `queue`, with its group-commit tasks started
    /// (batches of at most 256). `fence_every_record`: check in Redis that
    /// each attempt still holds its job before its record is written (one
    /// `held.lua` call per batch), not only those that queue a callback.
    pub fn start(
        client: QueueClient,
        queue: impl Into<QueueName>,
        settings: QueueSettings,
        pool: Option<Pool>,
        fence_every_record: bool,
    ) -> Self {
        let queue = queue.into();
        let records = pool.map(|pool| {
            let (client, queue) = (client.clone(), queue.clone());
            GroupCommit::spawn(256, move |batch: Vec<JobRecord>| {
                let (pool, client, queue) = (pool.clone(), client.clone(), queue.clone());
                async move {
                    store_held_records(&client, &queue, &pool, batch, fence_every_record).await
                }
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
        }
    }

    /// The queue's settings this recorder retries by.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Records the attempt's outcome in Postgres and Redis, in that order.
    pub async fn finish(&self, a: &Attempt<'_>, outcome: Outcome) -> Recorded {
        let queue = a.queue.as_str();
        let now = now_ms();
        let (result, error, permanent) = match outcome {
            Outcome::Succeeded(v) => (Some(v), None, false),
            Outcome::Failed(e, permanent) => (None, Some(e), permanent),
        };
        // What follows a failure: a retry, a cancellation, or the dead letters.
        let next = match &error {
            None => None,
            Some(_) if a.cancel_requested => Some(AfterFailure::Cancelled),
            Some(_) if permanent => Some(AfterFailure::Dead("permanent")),
            Some(_) if a.attempt < a.max_attempts => {
                let s = &self.settings;
                let (base, max) = a
                    .backoff
                    .map_or((s.backoff_base, s.backoff_max), |b| (b.base, b.max));
                Some(AfterFailure::RetryIn(retry_delay(a.attempt, base, max)))
            }
            Some(_) => Some(AfterFailure::Dead("attempts")),
        };
        match (&error, next) {
            (None, _) => {
                metrics::counter!(m::JOBS_SUCCEEDED, "kind" => a.queue.label()).increment(1)
            }
            (Some(e), next) => {
                metrics::counter!(m::JOBS_FAILED, "kind" => a.queue.label()).increment(1);
                tracing::warn!(job = %a.id, queue = queue, attempt = a.attempt, error = %e, "attempt failed");
                match next {
                    Some(AfterFailure::RetryIn(_)) => {
                        metrics::counter!(m::JOBS_RETRIED, "kind" => a.queue.label()).increment(1)
                    }
                    Some(AfterFailure::Dead(reason)) => {
                        metrics::counter!(m::JOBS_DEAD_LETTERED, "kind" => a.queue.label(), "reason" => reason)
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
            && let Some(records) = &self.records
        {
            let record = self
                .final_record(a, state, now, result.clone(), error.clone())
                .await;
            let callback = announces(&record).then(|| record.clone());
            match records.submit(record).await {
                Ok(true) => {}
                Ok(false) => return lease_lost(a),
                Err(e) => {
                    // Not acknowledged: run it again later; its effects are idempotent.
                    tracing::error!(job = %a.id, "record not stored, the job will run again: {e}");
                    let msg = format!("result not stored: {e}");
                    let again = self
                        .client
                        .fail(
                            a.queue,
                            a.worker,
                            a.id,
                            a.lease,
                            &msg,
                            AfterFailure::RetryIn(self.settings.backoff_base),
                        )
                        .await;
                    match again {
                        Ok(true) => {}
                        Ok(false) => return lease_lost(a),
                        Err(e) => {
                            tracing::error!(job = %a.id, "could not reschedule; the rescuer will: {e}")
                        }
                    }
                    return Recorded::NotStored(msg);
                }
            }
            // The callbacks are queued before Redis lets go of the job: a
            // crash here re-runs it, and their idempotency keys keep them single.
            if let Some(record) = callback {
                let queued =
                    until_recorded("callbacks", || self.client.push_callbacks(&record)).await;
                if let Err(e) = queued {
                    tracing::error!(job = %a.id, "completion callbacks not queued: {e}");
                }
            }
        } else if let Some(state) = final_state
            && (a.callback_url.is_some() || a.notify.is_some())
        {
            // No store (a backend without Postgres): the callbacks are still
            // queued — by an attempt that holds the job, as above.
            let attempt = [(a.id, a.worker, a.lease)];
            let held =
                until_recorded("lease check", || self.client.still_held(a.queue, &attempt)).await;
            match held.as_deref() {
                Ok([true]) => {
                    let record = self
                        .final_record(a, state, now, result.clone(), error.clone())
                        .await;
                    let queued =
                        until_recorded("callbacks", || self.client.push_callbacks(&record)).await;
                    if let Err(e) = queued {
                        tracing::error!(job = %a.id, "completion callbacks not queued: {e}");
                    }
                }
                Ok(_) => return lease_lost(a),
                Err(e) => tracing::error!(job = %a.id, "completion callbacks not queued: {e}"),
            }
        }
        let written = match (&result, &error, next) {
            (Some(value), _, _) => {
                let ack = Ack {
                    id: a.id,
                    result: serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
                    worker: a.worker.clone(),
                    lease: a.lease,
                };
                self.acks.submit(ack).await
            }
            (_, Some(e), Some(next)) => until_recorded("fail", || {
                self.client.fail(a.queue, a.worker, a.id, a.lease, e, next)
            })
            .await
            .map_err(|e| e.to_string()),
            _ => unreachable!("an outcome is a result or an error"),
        };
        match written {
            Ok(true) => Recorded::Done,
            Ok(false) => lease_lost(a),
            Err(e) => {
                tracing::error!(job = %a.id,
                    "could not record the outcome in Redis; the rescuer will release it: {e}");
                Recorded::NotStored(e)
            }
        }
    }

    /// The Postgres record of a job that just finished, its history included
    /// (read back from Redis only when earlier attempts exist).
    async fn final_record(
        &self,
        a: &Attempt<'_>,
        state: JobState,
        now: i64,
        result: Option<serde_json::Value>,
        error: Option<String>,
    ) -> JobRecord {
        let mut history = Vec::new();
        if a.attempt > 1
            && let Ok(Some(earlier)) = self.client.job(a.queue, a.id).await
        {
            history = earlier.history;
        }
        history.push(AttemptRecord {
            attempt: a.attempt,
            worker: Some(a.worker.to_string()),
            started_at_ms: Some(a.started_at_ms),
            finished_at_ms: now,
            outcome: state.as_str().to_owned(),
            error: error.clone(),
        });
        JobRecord {
            id: a.id,
            kind: a.queue.logical(),
            state,
            attempts: a.attempt,
            max_attempts: a.max_attempts,
            args: serde_json::from_str(a.args_json).unwrap_or(serde_json::Value::Null),
            result,
            error,
            worker: Some(a.worker.to_string()),
            enqueued_at_ms: a.enqueued_at_ms,
            started_at_ms: Some(a.started_at_ms),
            finished_at_ms: Some(now),
            priority: Some(a.priority.as_str().to_owned()),
            request_id: a.request_id.map(str::to_owned),
            run_at_ms: None,
            history,
            tenant: a.tenant.to_owned(),
            callback_url: a.callback_url.map(str::to_owned),
            lease: a.lease,
            progress: None,
            notify: a.notify.cloned(),
        }
    }
}

/// The attempt's lease was lost: its job was recovered while it ran (its
/// worker was presumed dead, or it passed its hard limit) and may have run
/// again elsewhere. Its outcome was dropped; say so once and count it.
fn lease_lost(a: &Attempt<'_>) -> Recorded {
    tracing::warn!(job = %a.id, queue = a.queue.as_str(), attempt = a.attempt,
        lease = a.lease, worker = %a.worker,
        "lease lost: the job was recovered while this attempt ran; its outcome is dropped");
    metrics::counter!(m::JOB_LEASE_LOST, "queue" => a.queue.label()).increment(1);
    Recorded::LeaseLost
}

/// Writes the records in `batch` (one statement in Postgres); answers which
/// attempts still held their jobs.
///
/// The upsert itself is fenced by lease, so a stale attempt never replaces
/// the record of a later claim; it may write first, and the owner's record
/// replaces it when the owner finishes (the job's state is read from Redis
/// meanwhile). Only records that queue a completion callback (every record,
/// with `fence_all`) are checked in Redis first (`held.lua`), so no stale
/// attempt announces an outcome: a round trip per batch for every job would
/// cost a Rust worker's drain rate ~15 %.
async fn store_held_records(
    client: &QueueClient,
    queue: &QueueName,
    pool: &Pool,
    batch: Vec<JobRecord>,
    fence_all: bool,
) -> Result<Vec<Fenced>, String> {
    let mut held = vec![true; batch.len()];
    let checked: Vec<usize> = (0..batch.len())
        .filter(|&i| fence_all || announces(&batch[i]))
        .collect();
    if !checked.is_empty() {
        let workers: Vec<WorkerId> = checked
            .iter()
            .map(|&i| WorkerId::from_raw(batch[i].worker.as_deref().unwrap_or_default()))
            .collect();
        let attempts: Vec<_> = checked
            .iter()
            .zip(&workers)
            .map(|(&i, w)| (batch[i].id, w, batch[i].lease))
            .collect();
        let answers = until_recorded("lease check", || client.still_held(queue, &attempts))
            .await
            .map_err(|e| e.to_string())?;
        for (&i, h) in checked.iter().zip(answers) {
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

/// Whether a finished job's record queues callbacks (a webhook, a notified
/// task): then it is written only by an attempt that still holds the job.
fn announces(record: &JobRecord) -> bool {
    record.callback_url.is_some() || record.notify.is_some()
}

/// Writes the record of a job finished by a script rather than by its
/// attempt — dead-lettered by recovery because its worker was lost on its
/// last attempt, cancelled as asked, or found expired by a claim — and
/// queues its callbacks (the rescuers of Rust workers and of the API call it
/// for each id [`QueueClient::recover`] answers, and the claimants for each
/// expired id a claim answers).
pub async fn record_finished_job(
    client: &QueueClient,
    queue: &QueueName,
    pool: Option<&Pool>,
    id: Uuid,
) {
    let rec = match client.job(queue, id).await {
        Ok(rec) => rec,
        Err(e) => {
            tracing::warn!(job = %id, "could not read a finished job: {e}");
            return;
        }
    };
    match &rec {
        Some(r) if r.state == JobState::Cancelled => {
            tracing::info!(job = %id, queue = %queue, reason = r.error.as_deref().unwrap_or(""),
                "cancelled")
        }
        Some(r) if r.history.last().is_some_and(|h| h.outcome == "worker_lost") => {
            tracing::warn!(job = %id, queue = %queue, "dead-lettered: worker lost on last attempt");
            metrics::counter!(m::JOBS_DEAD_LETTERED, "kind" => queue.label(), "reason" => "worker_lost")
                .increment(1);
        }
        _ => {}
    }
    let Some(rec) = rec else { return };
    let stored = match pool {
        Some(pool) => persist_record(pool, &rec).await,
        None => Ok(()),
    };
    let announced = match stored {
        Ok(()) => client.push_callbacks(&rec).await,
        Err(e) => Err(e),
    };
    if let Err(e) = announced {
        tracing::warn!(job = %id, "could not store a finished job's record or callbacks: {e}");
    }
}

/// Writes a job's record to Postgres.
pub(crate) async fn persist_record(pool: &Pool, record: &JobRecord) -> Result<(), QueueError> {
    db::upsert_job_record(pool, record).await?;
    Ok(())
}

/// Runs `op` until it succeeds, at most [`RECORD_TRIES`] times, with a
/// doubling pause between tries ([`retry_policy::record_store`]).
async fn with_retries<T, E, F, Fut>(what: &str, op: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    op.retry(retry_policy::record_store())
        .notify(|e, _| {
            tries += 1;
            tracing::warn!("{what} failed (try {tries}/{RECORD_TRIES}), retrying: {e}");
        })
        .await
}

/// Records an outcome in Redis. A connection problem (Redis restarting, a
/// network blip) is retried for as long as it lasts, with a pause capped at
/// 2 s ([`retry_policy::redis_record`]): the outcome is known and must not
/// be lost, and a job whose ack was dropped would stay claimed by this live
/// worker, out of reach of recovery. Any other error is retried
/// [`RECORD_TRIES`] times.
pub(crate) async fn until_recorded<T, F, Fut>(what: &str, op: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let unreachable = |e: &QueueError| {
        matches!(e, QueueError::Redis(e)
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout())
    };
    // Shared by `when` (which gives up) and `notify` (which logs the count).
    let other_failures = AtomicUsize::new(0);
    op.retry(retry_policy::redis_record())
        .when(|e| unreachable(e) || other_failures.fetch_add(1, Relaxed) + 1 < RECORD_TRIES)
        .notify(|e, pause| {
            if unreachable(e) {
                tracing::warn!("{what} failed, Redis unreachable; retrying in {pause:?}: {e}");
            } else {
                let n = other_failures.load(Relaxed);
                tracing::warn!("{what} failed ({n}/{RECORD_TRIES}), retrying: {e}");
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error `until_recorded` treats as Redis being unreachable.
    fn unreachable() -> QueueError {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        QueueError::Redis(redis::RedisError::from(io))
    }

    #[tokio::test]
    async fn until_recorded_outlasts_an_unreachable_redis() {
        // More failures in a row than RECORD_TRIES, then Redis is back.
        let mut calls = 0;
        let recorded = until_recorded("test", || {
            calls += 1;
            let failing = calls <= RECORD_TRIES;
            async move {
                if failing {
                    Err(unreachable())
                } else {
                    Ok(calls)
                }
            }
        })
        .await;
        assert_eq!(recorded.unwrap(), RECORD_TRIES + 1);
    }

    #[tokio::test]
    async fn until_recorded_gives_up_on_other_errors_after_record_tries() {
        let mut calls = 0;
        let giving_up = until_recorded("test", || {
            calls += 1;
            async { Err::<(), _>(QueueError::Config("refused".into())) }
        });
        // Retrying for ever would be the bug: stop waiting long before that.
        let recorded = tokio::time::timeout(std::time::Duration::from_secs(10), giving_up)
            .await
            .expect("until_recorded retried a non-connection error past RECORD_TRIES");
        assert!(matches!(recorded, Err(QueueError::Config(_))));
        assert_eq!(calls, RECORD_TRIES);
    }

    #[tokio::test]
    async fn with_retries_gives_up_after_record_tries() {
        let mut calls = 0;
        let stored = with_retries("test", || {
            calls += 1;
            async { Err::<(), _>("down") }
        })
        .await;
        assert_eq!(stored, Err("down"));
        assert_eq!(calls, RECORD_TRIES);
    }
}
