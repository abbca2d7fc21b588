//! The API's rescuer: what a Rust worker's rescuer does for its queue, done
//! for the queues remote workers serve.
//!
//! No Rust worker runs on a queue served only over HTTP, so every API
//! replica runs this loop, once per heartbeat interval (each step is
//! atomic or fenced in Redis, so replicas may overlap):
//!
//! * recovery (`QueueClient::recover`) of every declared `http` task's
//!   queue: the jobs of remote workers silent past the lease go back to
//!   their queue (dead letters on their last attempt), their records
//!   written;
//! * retention (`QueueClient::trim`) of those queues;
//! * the hard time limit, on every declared task's queue (global tasks may
//!   be served over HTTP too): an attempt of a remote worker (`http-…` ids)
//!   running longer than its task's hard limit is failed by the server,
//!   fenced by its lease, through the queue's outcome recorder (a retry or
//!   a dead letter, like any failure); the worker's later complete answers
//!   409. This also frees jobs whose claim answer never reached its worker.

use std::time::Duration;

use hopper_queue::{Outcome, WorkerId, outcome::record_finished_job};
use hopper_shared::{QueueName, tasks::Runtime};

use super::{
    attempt::{self, Found},
    token::LeaseToken,
};
use crate::AppState;

/// Finished jobs and dead letters one trim call forgets, at most.
const TRIM_LIMIT: usize = 200;

/// Starts the loop; it ends when the API shuts down.
pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        let interval = state.config.heartbeat;
        loop {
            if let Err(e) = tick(&state).await {
                tracing::warn!("rescuing remote workers' queues failed: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = state.work.stopped() => return,
            }
        }
    });
}

/// One pass over every declared task (a failure on one queue is logged and
/// the others are still served).
async fn tick(state: &AppState) -> Result<(), hopper_queue::QueueError> {
    for def in state.queue.tasks().await? {
        if def.internal {
            continue;
        }
        for partition in state.queue.partitions(&def.name).await? {
            if let Err(e) = rescue(state, &partition, def.runtime == Runtime::Http).await {
                tracing::warn!(queue = %partition, "rescuing a remote workers' queue failed: {e}");
            }
        }
    }
    Ok(())
}

/// Recovery and retention when the queue is served over HTTP only
/// (`http_only`), and the hard limit of remote attempts in any case.
async fn rescue(
    state: &AppState,
    queue: &QueueName,
    http_only: bool,
) -> Result<(), hopper_queue::QueueError> {
    if http_only {
        for id in state.queue.recover(queue, state.config.lease).await? {
            record_finished_job(&state.queue, queue, Some(&state.pool), id).await;
        }
        state.queue.trim(queue, TRIM_LIMIT).await?;
    }
    hard_limit(state, queue).await
}

/// Fails the attempts of remote workers on `queue` that passed their hard
/// time limit (the job's own, else the task's).
async fn hard_limit(state: &AppState, queue: &QueueName) -> Result<(), hopper_queue::QueueError> {
    let keys = state.queue.keys(queue);
    let mut conn = state.queue.connection();
    let workers: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.workers())
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await?;
    let workers: Vec<WorkerId> = workers
        .iter()
        .filter(|w| w.starts_with("http-"))
        .map(|w| WorkerId::from_raw(w))
        .collect();
    if workers.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for w in &workers {
        pipe.cmd("SMEMBERS").arg(keys.inflight(w));
    }
    let held: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
    let mut running: Vec<(WorkerId, uuid::Uuid)> = Vec::new();
    for (w, ids) in workers.iter().zip(held) {
        for id in ids {
            if let Ok(id) = uuid::Uuid::parse_str(&id) {
                running.push((w.clone(), id));
            }
        }
    }
    if running.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (_, id) in &running {
        pipe.cmd("HGET").arg(keys.job(id)).arg("lease");
    }
    let leases: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
    let tokens: Vec<Option<LeaseToken>> = running
        .into_iter()
        .zip(leases)
        .map(|((worker, id), lease)| {
            lease.map(|lease| LeaseToken {
                queue: queue.clone(),
                worker,
                id,
                lease,
            })
        })
        .collect();
    let found = match attempt::read(state, &tokens).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(queue = %queue, "reading remote attempts failed: {}", e.status());
            return Ok(());
        }
    };
    let task_hard = state.queue.settings(queue).hard_time_limit;
    let now = state.queue.redis_now_ms();
    let recorder = state.work.recorder(state, queue);
    for found in found {
        let Found::Held(held) = found else { continue };
        let hard = held.hard_time_limit.unwrap_or(task_hard);
        let ran = Duration::from_millis((now - held.started_at_ms).max(0) as u64);
        if ran < hard {
            continue;
        }
        let error = format!(
            "hard time limit of {hard:?} exceeded: failed by the server after {ran:?} \
             (worker {})",
            held.token.worker
        );
        tracing::warn!(job = %held.token.id, queue = %queue, worker = %held.token.worker,
            "remote attempt passed its hard time limit; failing it");
        recorder
            .finish(&held.attempt(), Outcome::Failed(error, false))
            .await;
    }
    Ok(())
}
