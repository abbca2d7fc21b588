//! The worker's side of the queue, everything done under a lease: a worker
//! registers on a queue and heartbeats to keep its registration, claims jobs
//! into its in-flight set, and finishes each (ack, fail) or hands it back
//! (release, reconcile, deregister).
//!
//! Every call that finishes or hands back a job is fenced: it acts only
//! while the attempt still holds the job under the claim's lease token
//! (`take()` / `holds()` in `prelude.lua`), so a worker presumed dead cannot
//! finish a job that has since been recovered. The loops that drive these
//! calls are the claim loop ([`crate::fetcher`]), the heartbeat
//! ([`crate::heartbeat`]), the rescuer ([`crate::rescuer`]) and the ack
//! layer ([`crate::ack`], through [`crate::outcome`]); the API's HTTP worker
//! protocol calls them too.

use std::time::Duration;

use hopper_shared::QueueName;
use uuid::Uuid;

use crate::{
    QueueClient, QueueError,
    client::{decode, parse_id, single_reply},
    connection::RedisConn,
    job::{MAX_DELAY, WorkerId},
    scripts::SCRIPTS,
};

/// Due scheduled jobs promoted per claim, at most.
const PROMOTE_LIMIT: usize = 200;
/// Per-minute outcome counters are kept this long.
const STATS_TTL_S: i64 = 2 * 3600;

/// A job handed to a worker by a claim.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job's id.
    pub id: Uuid,
    /// The stored arguments.
    pub args: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Unix ms: submitted.
    pub enqueued_at_ms: i64,
    /// Its priority.
    pub priority: crate::Priority,
    /// The id of the HTTP request that submitted it.
    pub request_id: Option<String>,
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its completion callback, if any.
    pub callback_url: Option<String>,
    /// The claim's lease token (the job's claim number): only an attempt
    /// holding it may acknowledge, fail or release the job.
    pub lease: u64,
    /// Its own hard time limit (submitted with the job), if any.
    pub hard_time_limit: Option<Duration>,
    /// Its own soft time limit, if any.
    pub soft_time_limit: Option<Duration>,
    /// The task told when it finishes, if any.
    pub notify: Option<hopper_shared::jobs::Notify>,
    /// Its own retry backoff, if any.
    pub backoff: Option<crate::job::JobBackoff>,
    /// The W3C `traceparent` it was pushed under, if any.
    pub traceparent: Option<String>,
}

/// A successful attempt, as acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The job.
    pub id: Uuid,
    /// Its result, as JSON text.
    pub result: String,
    /// The worker id it was claimed under.
    pub worker: WorkerId,
    /// The claim's lease token.
    pub lease: u64,
}

/// Result of a claim: the jobs, and when the next scheduled job is due.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// Claimed jobs, now in the worker's in-flight set.
    pub jobs: Vec<Claimed>,
    /// Jobs found past their expiry time on the way: finished as cancelled
    /// by the claim; their records and callbacks are the claimant's to write
    /// ([`crate::outcome::record_finished_job`]).
    pub expired: Vec<Uuid>,
    /// How long until the earliest scheduled job falls due (Redis' clock).
    pub next_due_in: Option<Duration>,
    /// The queue's rate limit allowed no start: how long until it allows
    /// one (the claimer sleeps; the jobs stay queued).
    pub throttled_for: Option<Duration>,
}

/// What follows an attempt that did not succeed.
#[derive(Debug, Clone, Copy)]
pub enum AfterFailure<'a> {
    /// Run again after this long (on Redis' clock).
    RetryIn(Duration),
    /// Dead-letter it, for this reason (`attempts`, `poison`, …).
    Dead(&'a str),
    /// Its cancellation was asked for: finish it as cancelled.
    Cancelled,
}

impl QueueClient {
    /// Registers a fresh `worker` id on the queue `queue`.
    pub async fn register(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
    ) -> Result<(), QueueError> {
        let queue = queue.into();
        self.beat(&queue, worker, true).await.map(|_| ())
    }

    /// Renews `worker`'s lease on the queue `queue`. False when it is no
    /// longer registered: it was presumed dead and its jobs were recovered,
    /// so it must stop what it runs and register under a new id.
    pub async fn heartbeat(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
    ) -> Result<bool, QueueError> {
        let queue = queue.into();
        self.beat(&queue, worker, false).await
    }

    async fn beat(
        &self,
        queue: &QueueName,
        worker: &WorkerId,
        fresh: bool,
    ) -> Result<bool, QueueError> {
        let alive: i64 = SCRIPTS
            .heartbeat
            .key(self.keys(queue).workers())
            .arg(worker.as_str())
            .arg(if fresh { "1" } else { "0" })
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(alive == 1)
    }

    /// Claims up to `n` jobs for `worker` (never blocks) on `conn`.
    /// [`QueueError::Evicted`] when `worker` is not registered or its last
    /// heartbeat is older than `lease`: it must renew or register afresh.
    pub async fn claim(
        &self,
        conn: &mut RedisConn,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        n: usize,
        lease: Duration,
    ) -> Result<ClaimBatch, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let settings = self.settings(&queue);
        // A split queue's rate is shared evenly by its partitions' buckets.
        let share = match settings.rate_limit {
            Some(_) => self.partition_layout(&queue).await?.high,
            None => 1,
        };
        let rate = settings.rate_limit.map(|r| r.split(share));
        // Debug level: an idle worker claims every few hundred ms, and each
        // claim would otherwise be a trace of its own.
        let span = tracing::debug_span!(
            "redis",
            otel.name = "redis claim",
            otel.kind = "client",
            db.system = "redis",
            db.operation = "EVALSHA",
            queue = queue.as_str(),
        );
        let mut invocation = SCRIPTS.claim.prepare_invoke();
        invocation
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.scheduled())
            .key(keys.inflight(worker))
            .key(keys.wake())
            .key(keys.workers())
            .key(keys.high_streak())
            .key(keys.done())
            .key(keys.tenant_load())
            .key(keys.rate())
            .key(keys.tenant_running())
            .key(keys.parked())
            .arg(keys.job_prefix())
            .arg(n)
            .arg(worker.as_str())
            .arg(PROMOTE_LIMIT)
            .arg(lease.as_millis() as i64)
            .arg(self.high_burst)
            .arg(rate.map_or(0, |r| r.tokens))
            .arg(rate.map_or(0, |r| r.per_ms()))
            .arg(settings.tenant_concurrency.unwrap_or(0));
        let claim = invocation.invoke_async(conn);
        let raw: Vec<redis::Value> = tracing::Instrument::instrument(claim, span).await?;
        parse_claim(&raw).map_err(|e| match e {
            ClaimError::Evicted => QueueError::Evicted {
                worker: worker.to_string(),
                queue: queue.as_str().into(),
            },
            ClaimError::Queue(e) => e,
        })
    }

    /// Records the success of many jobs in one call per worker id among
    /// them. Fenced: a job is acknowledged only while its attempt still
    /// holds it (see `ack.lua`). Returns the ids whose lease was lost.
    pub async fn ack_many(
        &self,
        queue: impl Into<QueueName>,
        acks: &[Ack],
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let retention = self.settings(&queue).retention.as_millis() as i64;
        let mut lost = Vec::new();
        let mut workers: Vec<&WorkerId> = acks.iter().map(|a| &a.worker).collect();
        workers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        workers.dedup();
        // One ack.lua per worker id, all in one pipeline (one queue, one slot).
        let evals = workers
            .into_iter()
            .map(|worker| {
                let mut eval = redis::cmd("EVALSHA");
                eval.arg(SCRIPTS.ack.get_hash())
                    .arg(5)
                    .arg(keys.inflight(worker))
                    .arg(keys.done())
                    .arg(keys.stats_minute(self.redis_now_ms()))
                    .arg(keys.cancel_requests())
                    .arg(keys.tenant_load())
                    .arg(retention)
                    .arg(keys.job_prefix())
                    .arg(STATS_TTL_S)
                    .arg(worker.as_str());
                for a in acks.iter().filter(|a| &a.worker == worker) {
                    eval.arg(a.id.to_string()).arg(&a.result).arg(a.lease);
                }
                eval
            })
            .collect();
        let (replies, acked) = self.eval_durably(&SCRIPTS.ack, evals).await?;
        self.finish_replicated("ack", &queue, acked);
        for reply in replies {
            let ids: Vec<String> = decode(reply)?;
            for id in ids {
                lost.push(parse_id(&id)?);
            }
        }
        Ok(lost)
    }

    /// Which of these attempts (job, the worker id it was claimed under,
    /// lease) still hold their jobs; in order.
    pub async fn still_held(
        &self,
        queue: impl Into<QueueName>,
        attempts: &[(Uuid, &WorkerId, u64)],
    ) -> Result<Vec<bool>, QueueError> {
        let queue = queue.into();
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(&queue);
        let mut inv = SCRIPTS.held.prepare_invoke();
        for (id, worker, lease) in attempts {
            inv.key(keys.job(id)).key(keys.inflight(worker));
            inv.arg(id.to_string()).arg(*lease);
        }
        let held: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    /// Records an attempt that did not succeed, and what follows it.
    /// Fenced like [`Self::ack_many`]: false (and nothing changed) when the
    /// attempt under `lease` no longer holds the job.
    pub async fn fail(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        id: Uuid,
        lease: u64,
        error: &str,
        next: AfterFailure<'_>,
    ) -> Result<bool, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let now = self.redis_now_ms();
        let (retry_in, final_state, reason) = match next {
            AfterFailure::RetryIn(d) => (d.min(MAX_DELAY).as_millis() as i64, "", ""),
            AfterFailure::Dead(reason) => (-1, "dead", reason),
            AfterFailure::Cancelled => (-1, "cancelled", ""),
        };
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(SCRIPTS.fail.get_hash())
            .arg(9)
            .arg(keys.job(&id))
            .arg(keys.inflight(worker))
            .arg(keys.scheduled())
            .arg(keys.dead())
            .arg(keys.stats_minute(now))
            .arg(keys.wake())
            .arg(keys.cancel_requests())
            .arg(keys.tenant_load())
            .arg(keys.done())
            .arg(id.to_string())
            .arg(error)
            .arg(retry_in)
            .arg(final_state)
            .arg(reason)
            .arg(STATS_TTL_S)
            .arg(lease);
        let (replies, acked) = self.eval_durably(&SCRIPTS.fail, vec![eval]).await?;
        self.finish_replicated("fail", &queue, acked);
        let ok: i64 = single_reply(replies)?;
        Ok(ok == 1)
    }

    /// Gives jobs claimed by `worker` back to the front of the queue: each
    /// `(id, lease)` only while that claim still holds it. `uncount`: their
    /// attempt never started, so it is not counted.
    pub async fn release(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        jobs: &[(Uuid, u64)],
        uncount: bool,
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        if jobs.is_empty() {
            return Ok(0);
        }
        let keys = self.keys(&queue);
        let mut inv = SCRIPTS.release.prepare_invoke();
        inv.key(keys.inflight(worker))
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .arg(keys.job_prefix())
            .arg(if uncount { "1" } else { "0" });
        for (id, lease) in jobs {
            inv.arg(id.to_string()).arg(*lease);
        }
        let n: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(n as usize)
    }

    /// Releases the strays in `worker`'s in-flight set: jobs it does not
    /// hold (`held`) whose claim is older than `min_age` (a younger one may
    /// still be on its way to the worker). Their attempt stays counted and
    /// their history says why. Returns their ids.
    pub async fn reconcile(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        held: &[Uuid],
        min_age: Duration,
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let mut inv = SCRIPTS.reconcile.prepare_invoke();
        inv.key(keys.inflight(worker))
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .arg(keys.job_prefix())
            .arg(worker.as_str())
            .arg(min_age.as_millis() as i64);
        for id in held {
            inv.arg(id.to_string());
        }
        let strays: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        strays.iter().map(|s| parse_id(s)).collect()
    }

    /// Removes `worker` from the queue `queue` and hands back whatever it
    /// still holds (attempts counted: they did start), in one script.
    /// `why` goes into each handed-back job's history. Returns how many.
    pub async fn deregister(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        why: &str,
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let n: i64 = SCRIPTS
            .deregister
            .key(keys.workers())
            .key(keys.inflight(worker))
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .arg(keys.job_prefix())
            .arg(worker.as_str())
            .arg(why)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(n as usize)
    }
}

/// Why a claim's reply is not a batch.
enum ClaimError {
    /// The worker must renew or register afresh.
    Evicted,
    Queue(QueueError),
}

impl From<QueueError> for ClaimError {
    fn from(e: QueueError) -> Self {
        ClaimError::Queue(e)
    }
}

fn parse_claim(raw: &[redis::Value]) -> Result<ClaimBatch, ClaimError> {
    let corrupt = |why: &str| QueueError::Corrupt {
        id: "<claim>".into(),
        why: why.into(),
    };
    let int = |v: &redis::Value| -> Result<i64, QueueError> {
        redis::from_redis_value_ref::<i64>(v).map_err(|e| corrupt(&e.to_string()))
    };
    let text = |v: &redis::Value| -> Result<String, QueueError> {
        redis::from_redis_value_ref::<String>(v).map_err(|e| corrupt(&e.to_string()))
    };
    let (first, rest) = raw.split_first().ok_or_else(|| corrupt("empty reply"))?;
    let next_due = int(first)?;
    if next_due == -2 {
        return Err(ClaimError::Evicted);
    }
    let (throttled, rest) = rest.split_first().ok_or_else(|| corrupt("no throttle"))?;
    let throttled = int(throttled)?;
    let (count, rest) = rest
        .split_first()
        .ok_or_else(|| corrupt("no expired count"))?;
    let count = int(count)?.max(0) as usize;
    if rest.len() < count {
        return Err(corrupt("truncated reply").into());
    }
    let (expired, rest) = rest.split_at(count);
    let expired = expired
        .iter()
        .map(|v| parse_id(&text(v)?))
        .collect::<Result<Vec<_>, _>>()?;
    let limit = |v: &redis::Value| -> Result<Option<Duration>, QueueError> {
        let ms = int(v)?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    };
    let mut jobs = Vec::with_capacity(rest.len() / CLAIMED_FIELDS);
    for c in rest.chunks(CLAIMED_FIELDS) {
        let [
            id,
            args,
            attempt,
            max,
            enq,
            priority,
            request_id,
            tenant,
            callback,
            lease,
            hard,
            soft,
            notify,
            backoff,
            traceparent,
        ] = c
        else {
            return Err(corrupt("truncated reply").into());
        };
        let notify = text(notify)?;
        jobs.push(Claimed {
            id: parse_id(&text(id)?)?,
            args: text(args)?,
            attempt: int(attempt)? as u32,
            max_attempts: int(max)? as u32,
            enqueued_at_ms: int(enq)?,
            priority: if text(priority)? == "high" {
                crate::Priority::High
            } else {
                crate::Priority::Normal
            },
            request_id: Some(text(request_id)?).filter(|r| !r.is_empty()),
            tenant: text(tenant)?,
            callback_url: Some(text(callback)?).filter(|c| !c.is_empty()),
            lease: int(lease)? as u64,
            hard_time_limit: limit(hard)?,
            soft_time_limit: limit(soft)?,
            notify: if notify.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&notify).map_err(|e| corrupt(&format!("notify: {e}")))?)
            },
            backoff: crate::job::JobBackoff::decode(&text(backoff)?),
            traceparent: Some(text(traceparent)?).filter(|t| !t.is_empty()),
        });
    }
    Ok(ClaimBatch {
        jobs,
        expired,
        next_due_in: (next_due >= 0).then(|| Duration::from_millis(next_due as u64)),
        throttled_for: (throttled >= 0).then(|| Duration::from_millis(throttled as u64)),
    })
}

/// Fields per job in `claim.lua`'s reply.
const CLAIMED_FIELDS: usize = 15;
