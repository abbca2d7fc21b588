//! The rescuer: who re-queues a dead worker's jobs, and a live worker's
//! strays.
//!
//! Every heartbeat interval it runs `recover.lua`, which re-queues the jobs
//! of workers whose lease ran out (on Redis' clock), dead-letters those on
//! their last attempt and cancels those whose cancellation was asked for; it
//! writes the records of the finished ones to Postgres and queues their
//! callbacks. It also runs the queue's retention (`trim.lua`): dead letters
//! and finished jobs past their retention leave Redis, [`TRIM_LIMIT`] of each
//! per call, a few calls per tick while there is a backlog, so push, claim
//! and ack never pay for it. At least once per lease it also
//! reconciles its own worker's in-flight set with the jobs the worker really
//! holds (`reconcile.lua`): a claim whose reply was lost, or an ack that gave
//! up, would otherwise stay `running` for as long as the worker heartbeats.
//!
//! It runs apart from the heartbeat, so a slow Postgres never delays a
//! lease renewal, and apart from the claim loop ([`crate::fetcher`]), which
//! recovers nothing (it only records the jobs a claim found expired).
//!
//! The two client calls it makes per tick live here too:
//! [`QueueClient::recover`] and [`QueueClient::trim`] (the API's rescuer of
//! HTTP-served queues calls them as well). Reconciliation is part of the
//! worker's protocol ([`QueueClient::reconcile`], [`crate::lease`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use hopper_shared::{QueueName, metrics as m};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    QueueClient, QueueError,
    client::parse_id,
    job::{Running, WorkerId},
    outcome::record_finished_job,
    registration::Registration,
    scripts::SCRIPTS,
};

/// Dead letters (and, apart, finished jobs) one `trim.lua` call forgets, at
/// most.
pub const TRIM_LIMIT: usize = 200;
/// Dead workers one `recover.lua` call takes, at most.
const RECOVER_WORKERS: usize = 16;
/// `recover.lua` calls per [`QueueClient::recover`], at most (another call
/// follows when a worker's in-flight set changed under the first, or more
/// workers are gone than one call takes).
const RECOVER_TRIES: usize = 4;
/// `trim.lua` calls per tick, at most (a backlog drains over several ticks).
const TRIM_CALLS: usize = 10;

/// What one [`QueueClient::trim`] call forgot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Dead letters past the dead-letter retention.
    pub dead_letters: u64,
    /// Succeeded and cancelled jobs past the queue's retention.
    pub finished: u64,
}

impl QueueClient {
    /// Re-queues the jobs of workers silent for longer than `lease`;
    /// returns the ids this finished: dead-lettered (out of attempts) or
    /// cancelled (their cancellation had been asked for).
    pub async fn recover(
        &self,
        queue: impl Into<QueueName>,
        lease: Duration,
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let lease_ms = lease.as_millis() as i64;
        let mut finished = Vec::new();
        // Every key recover.lua touches is declared: the workers past their
        // lease and their in-flight sets are read first, and the script
        // checks both again (a set that changed meanwhile is read again).
        for _ in 0..RECOVER_TRIES {
            let gone: Vec<String> = redis::cmd("ZRANGE")
                .arg(keys.workers())
                .arg("-inf")
                .arg(self.redis_now_ms() - lease_ms)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(RECOVER_WORKERS)
                .query_async(&mut self.conn.clone())
                .await?;
            if gone.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for w in &gone {
                pipe.cmd("SMEMBERS")
                    .arg(keys.inflight(&WorkerId::from_raw(w)));
            }
            let held: Vec<Vec<String>> = pipe.query_async(&mut self.conn.clone()).await?;
            let mut inv = SCRIPTS.recover.prepare_invoke();
            inv.key(keys.workers())
                .key(keys.pending(crate::Priority::High))
                .key(keys.pending(crate::Priority::Normal))
                .key(keys.dead())
                .key(keys.wake())
                .key(keys.tenant_load())
                .key(keys.cancel_requests())
                .key(keys.done())
                .arg(lease_ms);
            for (w, ids) in gone.iter().zip(&held) {
                inv.key(keys.inflight(&WorkerId::from_raw(w)))
                    .arg(w)
                    .arg(ids.len());
                for id in ids {
                    inv.key(format!("{}{id}", keys.job_prefix())).arg(id);
                }
            }
            let (ids, changed): (Vec<String>, i64) =
                inv.invoke_async(&mut self.conn.clone()).await?;
            for id in ids {
                finished.push(parse_id(&id)?);
            }
            if changed == 0 && gone.len() < RECOVER_WORKERS {
                break;
            }
        }
        Ok(finished)
    }

    /// Forgets, on Redis' clock, dead letters older than the dead-letter
    /// retention and finished (succeeded or cancelled) jobs older than the
    /// queue's retention: out of their sets, their hashes deleted (Postgres
    /// keeps the records). At most `limit` of each per call.
    pub async fn trim(
        &self,
        queue: impl Into<QueueName>,
        limit: usize,
    ) -> Result<Trimmed, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        let dead_retention = if self.dead_retention.is_zero() {
            -1
        } else {
            ms(self.dead_retention)
        };
        let retention = ms(self.settings(&queue).retention);
        // Every key trim.lua touches is declared: the entries past retention
        // are read first (by the estimate of Redis' clock), and the script
        // checks each again on Redis' own.
        let now = self.redis_now_ms();
        let past = |set: String, retention: i64| {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(set)
                .arg("-inf")
                .arg(now - retention)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
            cmd
        };
        let mut pipe = redis::pipe();
        pipe.add_command(past(keys.done(), retention));
        if dead_retention >= 0 {
            pipe.add_command(past(keys.dead(), dead_retention));
        }
        let mut found: Vec<Vec<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        let dead = if found.len() > 1 {
            found.pop().unwrap_or_default()
        } else {
            Vec::new()
        };
        let done = found.pop().unwrap_or_default();
        if dead.is_empty() && done.is_empty() {
            return Ok(Trimmed::default());
        }
        let mut inv = SCRIPTS.trim.prepare_invoke();
        inv.key(keys.dead())
            .key(keys.done())
            .arg(dead_retention)
            .arg(retention)
            .arg(dead.len());
        for id in dead.iter().chain(&done) {
            inv.key(format!("{}{id}", keys.job_prefix())).arg(id);
        }
        let (dead_letters, finished): (u64, u64) = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(Trimmed {
            dead_letters,
            finished,
        })
    }
}

/// Runs recovery and reconciliation until `stop` fires.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rescuer_loop(
    client: QueueClient,
    queue: QueueName,
    registration: Arc<Registration>,
    interval: Duration,
    lease: Duration,
    pool: Option<Pool>,
    running: Arc<Running>,
    stop: CancellationToken,
) {
    let queue = &queue;
    let mut last_reconcile = Instant::now();
    loop {
        match client.recover(queue, lease).await {
            Ok(finished) => {
                for id in finished {
                    record_finished_job(&client, queue, pool.as_ref(), id).await;
                }
            }
            Err(e) => tracing::warn!(queue = %queue, "recovery failed: {e}"),
        }
        trim(&client, queue).await;
        if last_reconcile.elapsed() >= lease / 2 {
            last_reconcile = Instant::now();
            let worker = registration.id();
            match client
                .reconcile(queue, &worker, &running.ids(), lease)
                .await
            {
                Ok(strays) => {
                    for id in strays {
                        tracing::warn!(job = %id, queue = %queue, %worker,
                            "released a stray job: claimed by this worker but not running here");
                        metrics::counter!(m::JOBS_STRANDED, "queue" => queue.label()).increment(1);
                    }
                }
                Err(e) => tracing::warn!(queue = %queue, "reconciling in-flight jobs failed: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Forgets what is past its retention in the queue `queue` (see `trim.lua`),
/// counting it.
async fn trim(client: &QueueClient, queue: &QueueName) {
    for _ in 0..TRIM_CALLS {
        let trimmed = match client.trim(queue, TRIM_LIMIT).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(queue = %queue, "retention trim failed: {e}");
                return;
            }
        };
        for (store, n) in [
            ("dead_letters", trimmed.dead_letters),
            ("finished_jobs", trimmed.finished),
        ] {
            if n > 0 {
                metrics::counter!(m::RETENTION_REMOVED, "store" => store, "queue" => queue.label())
                    .increment(n);
            }
        }
        if trimmed.dead_letters < TRIM_LIMIT as u64 && trimmed.finished < TRIM_LIMIT as u64 {
            return;
        }
    }
}
