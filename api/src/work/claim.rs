//! `POST /v1/work/claim`: a remote worker long-polls for jobs.
//!
//! The worker names its queues, how many jobs it takes (`max_jobs`, up to
//! 500) and how long it waits (`wait_ms`, up to 30 s; the server answers
//! `[]` a little before the API's request timeout). Each queue must be a
//! task the key may serve ([`super::servable`]: 404 undeclared or another
//! tenant's, 403 internal or outside the key's queue list). The worker is
//! registered on every queue's workers set under an id
//! `http-<tenant>-<random>` like a Rust worker; a worker id the server
//! evicted (silent past the lease) is replaced, and the answer carries the
//! new one. Jobs are taken with the queues' own `claim.lua` (attempts
//! counted, jobs in the worker's in-flight set, a lease token each): one
//! script per queue per round, so 100 jobs are one call. While nothing is
//! pending the request blocks on the queues' wake lists (every push feeds
//! them), as a Rust worker's claim loop does, renewing the worker as it
//! waits; it answers as soon as one job is claimed. On one server that is
//! one `BLPOP` over every wake list; on a Redis Cluster each queue's wake
//! list lives in its queue's slot (a `BLPOP` over several would be
//! cross-slot), so each queue gets a `BLPOP` of its own on a connection of
//! its own, raced: the first token ends the wait, and the others finish in
//! the background, handing back any token they took.
//!
//! Long-polls are bounded (half the API's in-flight requests; past that
//! 503 with Retry-After) and answer at once when the API shuts down.

use std::time::{Duration, Instant};

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
};
use futures::{StreamExt, stream::FuturesUnordered};
use hopper_queue::RedisConn;
use hopper_queue::{QueueError, WorkerId, client::Claimed};
use hopper_shared::{QueueName, jobs::QueueSettings, metrics as m};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    require_worker, servable,
    token::{LeaseToken, new_worker, worker_tenant},
};
use crate::{AppState, auth::Caller, error::ApiError};

/// Longest single block on the wake lists (a scheduled job or retry that
/// falls due meanwhile is seen this late at most).
pub const MAX_BLOCK: Duration = Duration::from_secs(1);
/// The longest `wait_ms` a worker may ask for.
pub const MAX_WAIT_MS: u64 = 30_000;
/// A long-poll answers this long before the API's request timeout at the
/// latest.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(3);
/// Jobs one claim may take.
pub const MAX_JOBS: u32 = 500;
/// Queues one claim may name.
pub const MAX_QUEUES: usize = 32;

/// Body of `POST /v1/work/claim`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Queues (tasks) to take jobs from, 1 to 32.
    pub queues: Vec<String>,
    /// Jobs to take at most, 1 to 500 (default 1).
    #[serde(default = "one")]
    pub max_jobs: u32,
    /// How long to wait for a job, 0 to 30000 ms (default 30000).
    #[serde(default = "max_wait")]
    pub wait_ms: u64,
    /// The worker id of an earlier answer (left out: a new worker).
    #[serde(default)]
    pub worker: Option<String>,
}

fn one() -> u32 {
    1
}

fn max_wait() -> u64 {
    MAX_WAIT_MS
}

/// The jobs claimed, and how the worker keeps them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimResponse {
    /// The worker id to send with the next claim and heartbeats (a new one
    /// when the server had evicted the old).
    pub worker: String,
    /// Heartbeat at least this often, in ms.
    pub heartbeat_ms: u64,
    /// A worker silent this long (ms) is presumed dead: its jobs run again.
    pub lease_ms: u64,
    /// The jobs, possibly none.
    pub jobs: Vec<ClaimedJob>,
}

/// One claimed job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimedJob {
    /// The job.
    pub id: Uuid,
    /// Its queue (task).
    #[schema(value_type = String)]
    pub queue: QueueName,
    /// Its arguments.
    pub args: Value,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The lease token: send it with progress, complete and fail.
    pub lease: String,
    /// The attempt should stop after this long (ms from the claim).
    pub soft_limit_ms: u64,
    /// The server fails the attempt after this long (ms from the claim).
    pub hard_limit_ms: u64,
    /// Unix ms: submitted.
    pub enqueued_at_ms: i64,
    /// The tenant that submitted it.
    pub tenant: String,
    /// The id of the HTTP request that submitted it.
    #[schema(nullable = false)]
    pub request_id: Option<String>,
}

/// `POST /v1/work/claim`.
#[utoipa::path(post, path = "/v1/work/claim", tag = "work", request_body = ClaimRequest,
    responses(
        (status = 200, description = "Jobs (none when the wait ran out)", body = ClaimResponse),
        (status = 403, description = "Not a work key, or a queue it may not serve", body = crate::openapi::ErrorBody),
        (status = 404, description = "A queue is no declared task", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad body", body = crate::openapi::ErrorBody)))]
pub async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<ClaimRequest>, JsonRejection>,
) -> Result<Json<ClaimResponse>, ApiError> {
    require_worker(&caller)?;
    let Json(req) = body?;
    let named = check(&req, &caller)?;
    // A partitioned queue is claimed from each of its partitions in turn,
    // like several queues (see hopper_queue::partitions).
    let mut queues = Vec::with_capacity(named.len());
    for queue in &named {
        servable(&state, &caller, queue).await?;
        queues.extend(state.queue.partitions(queue).await?);
    }
    let settings: Vec<QueueSettings> = queues.iter().map(|q| state.queue.settings(q)).collect();
    let _permit = state.work.polls.clone().try_acquire_owned().map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_polls",
            "too many workers are long-polling this API replica; retry shortly",
        );
        e.retry_after = Some(1);
        e
    })?;
    let (heartbeat, lease) = (state.config.heartbeat, state.config.lease);
    let mut worker = register(&state, &caller, req.worker.as_deref(), &queues).await?;
    let wait = Duration::from_millis(req.wait_ms)
        .min(crate::REQUEST_TIMEOUT.saturating_sub(TIMEOUT_MARGIN));
    let deadline = Instant::now() + wait;
    let mut renewed = Instant::now();
    let mut conn = state.work.connection(&state).await?;
    let want = req.max_jobs as usize;
    // Start at a different queue each call, so no queue starves the others.
    let start = (Uuid::new_v4().as_u128() % queues.len() as u128) as usize;
    let mut jobs = Vec::new();
    loop {
        let mut next_due: Option<Duration> = None;
        // Rate-limited queues are not waited on (their wake tokens stay
        // until the bucket refills): the wait ends when the first refills.
        let mut throttled: Vec<&QueueName> = Vec::new();
        for k in 0..queues.len() {
            let i = (start + k) % queues.len();
            if jobs.len() >= want {
                break;
            }
            let queue = &queues[i];
            let batch = match state
                .queue
                .claim(&mut conn, queue, &worker, want - jobs.len(), lease)
                .await
            {
                Err(QueueError::Evicted { .. }) => {
                    // Silent past its lease (or unknown on this queue):
                    // come back under a fresh id.
                    worker = register(&state, &caller, None, &queues).await?;
                    state
                        .queue
                        .claim(&mut conn, queue, &worker, want - jobs.len(), lease)
                        .await?
                }
                other => other?,
            };
            if let Some(due) = batch.next_due_in {
                next_due = Some(next_due.map_or(due, |d: Duration| d.min(due)));
            }
            if let Some(wait) = batch.throttled_for {
                throttled.push(queue);
                next_due = Some(next_due.map_or(wait, |d: Duration| d.min(wait)));
            }
            if !batch.expired.is_empty() {
                record_expired(&state, queue, batch.expired);
            }
            if !batch.jobs.is_empty() {
                metrics::counter!(m::JOBS_STARTED, "kind" => queue.label())
                    .increment(batch.jobs.len() as u64);
            }
            for job in batch.jobs {
                jobs.push(claimed(queue, &worker, &settings[i], job));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if !jobs.is_empty() || left.is_zero() || state.work.is_stopping() {
            break;
        }
        if renewed.elapsed() >= heartbeat {
            renewed = Instant::now();
            worker = renew(&state, &caller, &worker, &queues).await?;
        }
        let block = next_due
            .unwrap_or(MAX_BLOCK)
            .min(MAX_BLOCK)
            .min(left)
            .max(Duration::from_millis(1));
        let waited: Vec<QueueName> = queues
            .iter()
            .filter(|q| !throttled.contains(q))
            .cloned()
            .collect();
        if waited.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(block) => {}
                _ = state.work.stopped() => {}
            }
            continue;
        }
        if !wait_for_push(&state, &mut conn, &waited, block).await {
            // The connection failed, or the API stops mid-wait: never
            // reuse it.
            if state.work.is_stopping() {
                break;
            }
            conn = state.work.connection(&state).await?;
        }
    }
    if !state.work.is_stopping() {
        state.work.give_back(conn);
    }
    Ok(Json(ClaimResponse {
        worker: worker.to_string(),
        heartbeat_ms: heartbeat.as_millis() as u64,
        lease_ms: lease.as_millis() as u64,
        jobs,
    }))
}

/// Checks the body; the queue names, deduplicated.
fn check(req: &ClaimRequest, caller: &Caller) -> Result<Vec<QueueName>, ApiError> {
    let invalid = |field: &str, why: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_args", why)
            .field(Some(field.into()))
    };
    if req.queues.is_empty() || req.queues.len() > MAX_QUEUES {
        return Err(invalid("queues", format!("name 1 to {MAX_QUEUES} queues")));
    }
    if !(1..=MAX_JOBS).contains(&req.max_jobs) {
        return Err(invalid("max_jobs", format!("1 to {MAX_JOBS}")));
    }
    if req.wait_ms > MAX_WAIT_MS {
        return Err(invalid("wait_ms", format!("0 to {MAX_WAIT_MS}")));
    }
    if let Some(w) = &req.worker
        && worker_tenant(w) != Some(&*caller.tenant)
    {
        return Err(invalid(
            "worker",
            "not a worker id of this tenant: leave it out, or send the `worker` of an \
             earlier answer"
                .into(),
        ));
    }
    let mut queues: Vec<QueueName> = Vec::with_capacity(req.queues.len());
    for q in &req.queues {
        let q = QueueName::new(q).map_err(|e| invalid("queues", e.to_string()))?;
        if !queues.contains(&q) {
            queues.push(q);
        }
    }
    Ok(queues)
}

/// The worker id to claim under: `given` renewed on every queue, or a fresh
/// id registered on every queue when none was given or `given` was evicted
/// from any of them.
async fn register(
    state: &AppState,
    caller: &Caller,
    given: Option<&str>,
    queues: &[QueueName],
) -> Result<WorkerId, ApiError> {
    if let Some(given) = given {
        return renew(state, caller, &WorkerId::from_raw(given), queues).await;
    }
    let worker = new_worker(&caller.tenant);
    for queue in queues {
        state.queue.register(queue, &worker).await?;
    }
    Ok(worker)
}

/// Renews `worker` on every queue; a fresh id (registered on all) when it
/// is no longer registered on one of them.
async fn renew(
    state: &AppState,
    caller: &Caller,
    worker: &WorkerId,
    queues: &[QueueName],
) -> Result<WorkerId, ApiError> {
    let mut alive = true;
    for queue in queues {
        alive &= state.queue.heartbeat(queue, worker).await?;
    }
    if alive {
        return Ok(worker.clone());
    }
    tracing::info!(%worker, tenant = %caller.tenant,
        "remote worker was evicted (or is new to a queue); it continues under a fresh id");
    Box::pin(register(state, caller, None, queues)).await
}

/// Blocks until a push wakes one of `queues` or `block` passed (or the API
/// stops). False when the connection failed.
async fn wait_for_push(
    state: &AppState,
    conn: &mut RedisConn,
    queues: &[QueueName],
    block: Duration,
) -> bool {
    if queues.len() > 1 && state.queue.is_cluster() {
        return wait_per_slot(state, queues, block).await;
    }
    let mut cmd = redis::cmd("BLPOP");
    for q in queues {
        cmd.arg(state.queue.keys(q).wake());
    }
    cmd.arg(block.as_secs_f64());
    let blpop = cmd.query_async::<Option<(String, String)>>(conn);
    tokio::select! {
        r = blpop => r.is_ok(),
        _ = state.work.stopped() => false,
    }
}

/// One wait on a Redis Cluster: a `BLPOP` per queue (each wake list is in
/// its queue's slot), each on a dedicated connection of its own so no wait
/// queues behind another on a node, raced. The first to answer ends the
/// wait; the rest run out (at most `block`) in the background, which hands
/// back any token they popped — another waiter of that queue may need it —
/// and returns their connections to the pool. False when the first answer
/// was an error or the API stops.
async fn wait_per_slot(state: &AppState, queues: &[QueueName], block: Duration) -> bool {
    let conns = futures::future::try_join_all(queues.iter().map(|_| state.work.connection(state)));
    let Ok(conns) = conns.await else {
        return false;
    };
    let mut waits = FuturesUnordered::new();
    for (queue, mut conn) in queues.iter().zip(conns) {
        let wake = state.queue.keys(queue).wake();
        waits.push(async move {
            let popped = redis::cmd("BLPOP")
                .arg(&wake)
                .arg(block.as_secs_f64())
                .query_async::<Option<(String, String)>>(&mut conn)
                .await;
            (popped, conn)
        });
    }
    let first = tokio::select! {
        first = waits.next() => first,
        _ = state.work.stopped() => return false,
    };
    let ok = match first {
        Some((Ok(_), conn)) => {
            state.work.give_back(conn);
            true
        }
        Some((Err(_), _)) | None => false,
    };
    let state = state.clone();
    tokio::spawn(async move {
        while let Some((popped, conn)) = waits.next().await {
            let Ok(popped) = popped else { continue };
            if let Some((wake, token)) = popped {
                // Not ours to use: the next waiter on that queue takes it.
                let give: Result<(), _> = redis::cmd("LPUSH")
                    .arg(&wake)
                    .arg(&token)
                    .query_async(&mut state.queue.connection())
                    .await;
                if let Err(e) = give {
                    tracing::debug!(%wake, "handing back a wake token failed: {e}");
                }
            }
            if !state.work.is_stopping() {
                state.work.give_back(conn);
            }
        }
    });
    ok
}

/// Writes the records (and queues the callbacks) of jobs a claim found
/// expired, off the claim's path.
fn record_expired(state: &AppState, queue: &QueueName, ids: Vec<Uuid>) {
    let (client, queue, pool) = (state.queue.clone(), queue.clone(), state.pool.clone());
    tokio::spawn(async move {
        for id in ids {
            hopper_queue::outcome::record_finished_job(&client, &queue, Some(&pool), id).await;
        }
    });
}

/// The answer's form of a claimed job.
fn claimed(
    queue: &QueueName,
    worker: &WorkerId,
    settings: &QueueSettings,
    job: Claimed,
) -> ClaimedJob {
    let token = LeaseToken {
        queue: queue.clone(),
        worker: worker.clone(),
        id: job.id,
        lease: job.lease,
    };
    ClaimedJob {
        id: job.id,
        // The task's name; the token carries the partition.
        queue: queue.logical(),
        args: serde_json::from_str(&job.args).unwrap_or(Value::Null),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        lease: token.encode(),
        soft_limit_ms: job
            .soft_time_limit
            .unwrap_or(settings.soft_time_limit)
            .as_millis() as u64,
        hard_limit_ms: job
            .hard_time_limit
            .unwrap_or(settings.hard_time_limit)
            .as_millis() as u64,
        enqueued_at_ms: job.enqueued_at_ms,
        tenant: job.tenant,
        request_id: job.request_id,
    }
}
