//! The claim loop behind a [`crate::RedisBackend`], and its heartbeat.
//!
//! The loop claims only as many jobs as the worker has free slots (a
//! semaphore of `concurrency` permits, given back when a job is
//! acknowledged), so nothing is prefetched that another worker could run.
//! Busy, it claims in batches; idle, it blocks on the queue's wake list
//! (fed by every push) until a job arrives or the next scheduled job is
//! due. Redis errors never end the loop: it reconnects with capped
//! exponential backoff (`hopper_shared::retry_policy::redis_reconnect`:
//! 50 ms doubling to 5 s, reset by a successful claim).
//!
//! A payload that does not decode into the worker's argument type is a
//! poison job: it goes to the dead letters at once and the loop goes on.
//!
//! It claims under the worker's current registration ([`Registration`]);
//! `claim.lua` refuses a worker that is not registered or whose lease ran
//! out, and the loop then renews (or registers afresh) before it claims
//! again, so no job ever lands in the in-flight set of a worker presumed
//! dead. Shutdown stops it at once: no job is claimed during a drain.

use std::{sync::Arc, time::Duration};

use apalis_core::task::{Task, builder::TaskBuilder, task_id::TaskId};
use hopper_shared::retry_policy::{self, Pauses};
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    JobContext, QueueClient, QueueError, QueueKeys,
    client::{AfterFailure, ClaimBatch, Claimed},
    job::Running,
    now_ms,
    registration::Registration,
};

/// Longest single block on the wake list; also bounds how late a worker
/// notices a scheduled job pushed while it sleeps without a token.
const MAX_BLOCK: Duration = Duration::from_secs(1);
/// How many times a saturated worker yields (letting finished jobs give
/// their slots back) before it claims.
const SATURATED_YIELDS: usize = 16;
/// How often a claim loop held back by its admission gate looks again.
pub const ADMISSION_POLL: Duration = Duration::from_millis(5);

/// Everything the claim loop needs.
pub(crate) struct Fetcher<Args> {
    pub client: QueueClient,
    /// The queue's name (the task the jobs run), whichever partition
    /// `keys` addresses: what each job's context names.
    pub queue: hopper_shared::QueueName,
    pub keys: QueueKeys,
    pub registration: Arc<Registration>,
    pub running: Arc<Running>,
    pub lease: Duration,
    pub slots: Arc<Semaphore>,
    pub admission: Option<crate::backend::Admission>,
    pub batch: usize,
    pub tx: mpsc::Sender<Task<Args>>,
    pub stop: CancellationToken,
    /// Where the records of jobs found expired go.
    pub pool: Option<deadpool_postgres::Pool>,
}

impl<Args: DeserializeOwned + Send + 'static> Fetcher<Args> {
    /// Runs until `stop` fires or the backend is dropped.
    pub async fn run(self) {
        let mut conn = None;
        let mut backoff = Pauses::new(retry_policy::redis_reconnect());
        loop {
            // Wait for one free slot, then take as many more as are free.
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => p,
                _ = self.stop.cancelled() => return,
            };
            let Ok(first) = first else { return };
            // Backpressure beyond the slots: wait (holding this one slot)
            // until the handlers' own queue has room, and claim no more
            // than it has room for.
            let mut admitted = usize::MAX;
            if let Some(room) = &self.admission {
                loop {
                    admitted = room();
                    if admitted > 0 {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(ADMISSION_POLL) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
            }
            first.forget();
            // Saturated (nearly every slot busy): let a few more jobs finish
            // so the claim is a batch, not a trickle of one-job round trips.
            // Never taken when the worker has room, so it adds no latency
            // to an unsaturated queue.
            for _ in 0..SATURATED_YIELDS {
                if self.slots.available_permits() + 1 >= self.batch / 4 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let mut want = 1;
            while want < self.batch.min(admitted) {
                match self.slots.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        want += 1;
                    }
                    Err(_) => break,
                }
            }

            let c = match &mut conn {
                Some(c) => c,
                None => match self.client.dedicated_connection(MAX_BLOCK).await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        self.slots.add_permits(want);
                        self.pause(&mut backoff, &e).await;
                        continue;
                    }
                },
            };
            let worker = self.registration.id();
            let claimed = self
                .client
                .claim(c, &self.keys.queue, &worker, want, self.lease)
                .await;
            let batch = match claimed {
                Ok(b) => b,
                Err(QueueError::Evicted { .. }) => {
                    self.slots.add_permits(want);
                    if let Err(e) = self.registration.renew().await {
                        self.pause(&mut backoff, &e).await;
                    }
                    continue;
                }
                Err(e) => {
                    self.slots.add_permits(want);
                    conn = None;
                    self.pause(&mut backoff, &e).await;
                    continue;
                }
            };
            backoff.reset();
            let ClaimBatch {
                jobs,
                expired,
                next_due_in,
                throttled_for,
            } = batch;
            self.slots.add_permits(want - jobs.len());
            let found_expired = !expired.is_empty();
            if found_expired {
                self.record_finished(expired);
            }
            if jobs.is_empty()
                && !found_expired
                && let Some(wait) = throttled_for
            {
                // Rate-limited: the jobs wait in the queue, not in a slot.
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(MAX_BLOCK)) => {}
                    _ = self.stop.cancelled() => {}
                }
                continue;
            }
            if jobs.is_empty() && !found_expired {
                if !self.wait_for_work(c, next_due_in).await {
                    conn = None;
                }
                continue;
            }
            for job in &jobs {
                self.running.claimed(job.id);
            }
            for job in jobs {
                if !self.hand_over(job, &worker).await {
                    return;
                }
            }
            if self.admission.is_some() {
                // Let the handlers just started take their room before the
                // gate is asked again.
                tokio::time::sleep(ADMISSION_POLL).await;
            }
        }
    }

    /// Blocks on the wake list until a push, the next due time or one
    /// second, whichever comes first. False when the connection failed.
    async fn wait_for_work(
        &self,
        conn: &mut crate::RedisConn,
        next_due_in: Option<Duration>,
    ) -> bool {
        let block = next_due_in
            .unwrap_or(MAX_BLOCK)
            .clamp(Duration::from_millis(1), MAX_BLOCK);
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(self.keys.wake()).arg(block.as_secs_f64());
        let blpop = cmd.query_async::<Option<(String, String)>>(conn);
        tokio::select! {
            r = blpop => r.is_ok(),
            _ = self.stop.cancelled() => true,
        }
    }

    /// Decodes a claimed job and passes it to the worker; a poison payload
    /// is dead-lettered. False when the worker is gone.
    async fn hand_over(&self, job: Claimed, worker: &crate::WorkerId) -> bool {
        let args = match serde_json::from_str::<Args>(&job.args) {
            Ok(a) => a,
            Err(e) => {
                self.poison(&job, worker, &e.to_string()).await;
                self.running.remove(&job.id);
                self.slots.add_permits(1);
                return true;
            }
        };
        let ctx = JobContext {
            id: job.id,
            queue: self.queue.clone(),
            partition: self.keys.queue.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            enqueued_at_ms: job.enqueued_at_ms,
            started_at_ms: now_ms(),
            worker: worker.clone(),
            lease: job.lease,
            args_json: job.args.into(),
            priority: job.priority,
            request_id: job.request_id,
            traceparent: job.traceparent,
            tenant: job.tenant.into(),
            callback_url: job.callback_url,
            notify: job.notify,
            hard_time_limit: job.hard_time_limit,
            soft_time_limit: job.soft_time_limit,
            backoff: job.backoff,
            cancel: CancellationToken::new(),
            cancel_requested: Default::default(),
            stopped_by_worker: Default::default(),
        };
        let task = TaskBuilder::new(args)
            .task_id(TaskId::from_uuid(job.id))
            .max_attempts(job.max_attempts as usize)
            .data(ctx)
            .build();
        if self.tx.send(task).await.is_err() {
            // The backend is gone: give the job back untouched.
            let _ = self
                .client
                .release(&self.keys.queue, worker, &[(job.id, job.lease)], true)
                .await;
            self.running.remove(&job.id);
            return false;
        }
        true
    }

    async fn poison(&self, job: &Claimed, worker: &crate::WorkerId, why: &str) {
        let error = format!(
            "payload does not decode as a {} job: {why}",
            self.keys.queue
        );
        tracing::error!(job = %job.id, queue = %self.keys.queue, %error, "poison job dead-lettered");
        metrics::counter!(hopper_shared::metrics::JOBS_DEAD_LETTERED,
            "kind" => self.keys.queue.label(), "reason" => "poison")
        .increment(1);
        match self
            .client
            .fail(
                &self.keys.queue,
                worker,
                job.id,
                job.lease,
                &error,
                AfterFailure::Dead("poison"),
            )
            .await
        {
            // Its record, and the callbacks it asked for (a Celery producer
            // waits for its result).
            Ok(true) => self.record_finished(vec![job.id]),
            Ok(false) => {}
            Err(e) => tracing::warn!(job = %job.id, "could not dead-letter poison job: {e}"),
        }
    }

    /// Writes the records of jobs finished without their handler — found
    /// expired by a claim, or poison — and queues their callbacks, off the
    /// claim loop's path.
    fn record_finished(&self, ids: Vec<uuid::Uuid>) {
        let (client, queue, pool) = (
            self.client.clone(),
            self.keys.queue.clone(),
            self.pool.clone(),
        );
        tokio::spawn(async move {
            for id in ids {
                crate::outcome::record_finished_job(&client, &queue, pool.as_ref(), id).await;
            }
        });
    }

    /// Waits the reconnect policy's next pause, or until `stop` fires.
    async fn pause(&self, backoff: &mut Pauses, e: &crate::QueueError) {
        let pause = backoff.next_pause();
        tracing::warn!(queue = %self.keys.queue, "claim failed, retrying in {pause:?}: {e}");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = self.stop.cancelled() => {}
        }
    }
}
