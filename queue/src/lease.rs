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

/// Due scheduled jobs promoted per claim round, at most.
const PROMOTE_LIMIT: usize = 200;
/// Rounds (`claim.lua` then `claim_start.lua`) of one claim, at most.
const CLAIM_ROUNDS: usize = 4;
/// While jobs are parked, an idle claimer looks again this soon (a slot of
/// their tenant may have freed).
const PARKED_RECHECK: Duration = Duration::from_millis(200);
/// Reads of a stopping worker's in-flight set before `deregister.lua` may
/// give up (each retry means a claim landed in between: a worker that is
/// stopping claims no more, so one retry is already rare).
const DEREGISTER_TRIES: usize = 5;
/// Finished jobs past retention a queue keeps named for its next ack to
/// forget, at most (`ack.lua`; trim.lua catches up with the rest).
const MAX_TO_FORGET: usize = 4096;
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

impl Ack {
    /// The ack of `job`, claimed by `worker`, with `result` (JSON text).
    pub fn of(job: &Claimed, worker: &WorkerId, result: impl Into<String>) -> Self {
        Self {
            id: job.id,
            result: result.into(),
            worker: worker.clone(),
            lease: job.lease,
        }
    }
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
        let limit = settings.tenant_concurrency.unwrap_or(0);
        let claim = self.claim_rounds(conn, &keys, worker, n, lease, rate, limit);
        tracing::Instrument::instrument(claim, span)
            .await
            .map_err(|e| match e {
                ClaimError::Evicted => QueueError::Evicted {
                    worker: worker.to_string(),
                    queue: queue.as_str().into(),
                },
                ClaimError::Queue(e) => e,
            })
    }

    /// The rounds of one claim: `claim.lua` takes ids into the worker's
    /// in-flight set, `claim_start.lua` (their job hashes declared) starts
    /// them; another round follows while the call wants more and the last
    /// one skipped ids (cancelled, expired, parked) or re-queued due jobs.
    #[allow(clippy::too_many_arguments)]
    async fn claim_rounds(
        &self,
        conn: &mut RedisConn,
        keys: &crate::QueueKeys,
        worker: &WorkerId,
        n: usize,
        lease: Duration,
        rate: Option<hopper_shared::rate_limit::RateLimit>,
        limit: u32,
    ) -> Result<ClaimBatch, ClaimError> {
        let mut batch = ClaimBatch::default();
        for _ in 0..CLAIM_ROUNDS {
            let want = n - batch.jobs.len();
            let raw: Vec<redis::Value> = SCRIPTS
                .claim
                .key(keys.pending(crate::Priority::High))
                .key(keys.pending(crate::Priority::Normal))
                .key(keys.scheduled())
                .key(keys.inflight(worker))
                .key(keys.wake())
                .key(keys.workers())
                .key(keys.high_streak())
                .key(keys.rate())
                .key(keys.tenant_running())
                .key(keys.parked())
                .arg(want)
                .arg(worker.as_str())
                .arg(PROMOTE_LIMIT)
                .arg(lease.as_millis() as i64)
                .arg(self.high_burst)
                .arg(rate.map_or(0, |r| r.tokens))
                .arg(rate.map_or(0, |r| r.per_ms()))
                .arg(limit)
                .invoke_async(conn)
                .await
                .map_err(QueueError::from)?;
            let taken = parse_taken(&raw)?;
            batch.next_due_in = taken.next_due_in;
            batch.throttled_for = batch.throttled_for.or(taken.throttled_for);
            let count = taken.due.len() + taken.parked.len() + taken.popped.len();
            if count == 0 && taken.checked.is_empty() {
                break;
            }
            let mut start = SCRIPTS.claim_start.prepare_invoke();
            start
                .key(keys.inflight(worker))
                .key(keys.pending(crate::Priority::High))
                .key(keys.pending(crate::Priority::Normal))
                .key(keys.workers())
                .key(keys.done())
                .key(keys.tenant_load())
                .key(keys.rate())
                .key(keys.tenant_running())
                .key(keys.parked())
                .arg(worker.as_str())
                .arg(lease.as_millis() as i64)
                .arg(limit)
                .arg(taken.reserved)
                .arg(taken.due.len())
                .arg(taken.parked.len())
                .arg(taken.popped.len());
            let prefix = keys.job_prefix();
            for id in taken.due.iter().chain(&taken.parked).chain(&taken.popped) {
                start.key(format!("{prefix}{id}")).arg(id);
            }
            for member in &taken.checked {
                let id = member.rsplit('\t').next().unwrap_or_default();
                start.key(format!("{prefix}{id}")).arg(member);
            }
            let raw: Vec<redis::Value> =
                start.invoke_async(conn).await.map_err(QueueError::from)?;
            let started = parse_started(&raw)?;
            if started.parked_left {
                batch.next_due_in = Some(
                    batch
                        .next_due_in
                        .map_or(PARKED_RECHECK, |d| d.min(PARKED_RECHECK)),
                );
            }
            let skipped = taken.parked.len() + taken.popped.len() - started.jobs.len();
            batch.jobs.extend(started.jobs);
            batch.expired.extend(started.expired);
            // Another round while more is wanted and this one changed what
            // the next finds: due jobs re-queued, slots freed, ids skipped
            // (cancelled, expired, parked).
            if batch.jobs.len() >= n
                || batch.throttled_for.is_some()
                || (started.promoted == 0 && started.freed == 0 && skipped == 0)
            {
                break;
            }
        }
        Ok(batch)
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
        // Finished jobs the last ack found past retention: this ack forgets
        // them (its first call, up to as many as ack.lua would find per call).
        let mut forget = {
            let mut store = self.to_forget.lock().unwrap_or_else(|e| e.into_inner());
            store.remove(&keys.done()).unwrap_or_default()
        };
        // One ack.lua per worker id, all in one pipeline (one queue, one slot).
        let evals = workers
            .into_iter()
            .map(|worker| {
                let mine: Vec<&Ack> = acks.iter().filter(|a| &a.worker == worker).collect();
                let forget_now: Vec<String> = forget
                    .drain(..forget.len().min(2 * mine.len() + 10))
                    .collect();
                let mut eval = redis::cmd("EVALSHA");
                eval.arg(SCRIPTS.ack.get_hash())
                    .arg(5 + mine.len() + forget_now.len())
                    .arg(keys.inflight(worker))
                    .arg(keys.done())
                    .arg(keys.stats_minute(self.redis_now_ms()))
                    .arg(keys.cancel_requests())
                    .arg(keys.tenant_load());
                for a in &mine {
                    eval.arg(keys.job(&a.id));
                }
                for id in &forget_now {
                    eval.arg(format!("{}{id}", keys.job_prefix()));
                }
                eval.arg(retention).arg(STATS_TTL_S).arg(mine.len());
                for a in &mine {
                    eval.arg(a.id.to_string()).arg(&a.result).arg(a.lease);
                }
                for id in &forget_now {
                    eval.arg(id);
                }
                eval
            })
            .collect();
        let (replies, acked) = self.eval_durably(&SCRIPTS.ack, evals).await?;
        self.finish_replicated("ack", &queue, acked);
        let mut old: Vec<String> = forget;
        for reply in replies {
            let (ids, past): (Vec<String>, Vec<String>) = decode(reply)?;
            for id in ids {
                lost.push(parse_id(&id)?);
            }
            old.extend(past);
        }
        if !old.is_empty() {
            let mut store = self.to_forget.lock().unwrap_or_else(|e| e.into_inner());
            let kept = store.entry(keys.done()).or_default();
            kept.extend(old);
            kept.sort_unstable();
            kept.dedup();
            kept.truncate(MAX_TO_FORGET);
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
            .arg(if uncount { "1" } else { "0" });
        for (id, lease) in jobs {
            inv.key(keys.job(id)).arg(id.to_string()).arg(*lease);
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
        // Every key reconcile.lua touches is declared: the candidates are
        // read first (members of the set this worker does not hold), and the
        // script checks each is still a member.
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys.inflight(worker))
            .query_async(&mut self.conn.clone())
            .await?;
        let held: std::collections::HashSet<String> = held.iter().map(Uuid::to_string).collect();
        let candidates: Vec<String> = members.into_iter().filter(|m| !held.contains(m)).collect();
        let inflight = keys.inflight(worker);
        // What the previous call found taken by a claim's first step and not
        // started: still so now, its second step never came.
        let before = {
            let mut store = self.not_started.lock().unwrap_or_else(|e| e.into_inner());
            store.remove(&inflight).unwrap_or_default()
        };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = SCRIPTS.reconcile.prepare_invoke();
        inv.key(&inflight)
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .arg(worker.as_str())
            .arg(min_age.as_millis() as i64)
            .arg(candidates.len());
        for id in &candidates {
            inv.key(format!("{}{id}", keys.job_prefix())).arg(id);
        }
        for id in &before {
            inv.arg(id);
        }
        let (strays, waiting): (Vec<String>, Vec<String>) =
            inv.invoke_async(&mut self.conn.clone()).await?;
        if !waiting.is_empty() {
            let mut store = self.not_started.lock().unwrap_or_else(|e| e.into_inner());
            store.insert(inflight, waiting);
        }
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
        // Every key deregister.lua touches is declared: the in-flight set is
        // read first; the script refuses (-1) when a claim added to it since,
        // and it is read again.
        for _ in 0..DEREGISTER_TRIES {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(keys.inflight(worker))
                .query_async(&mut self.conn.clone())
                .await?;
            let mut inv = SCRIPTS.deregister.prepare_invoke();
            inv.key(keys.workers())
                .key(keys.inflight(worker))
                .key(keys.pending(crate::Priority::High))
                .key(keys.pending(crate::Priority::Normal))
                .key(keys.wake())
                .arg(worker.as_str())
                .arg(why);
            for id in &members {
                inv.key(format!("{}{id}", keys.job_prefix())).arg(id);
            }
            let n: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
            if n >= 0 {
                return Ok(n as usize);
            }
        }
        Err(QueueError::Corrupt {
            id: worker.to_string(),
            why: format!("its in-flight set kept changing over {DEREGISTER_TRIES} deregistrations"),
        })
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

/// What `claim.lua` took into the in-flight set.
struct Taken {
    next_due_in: Option<Duration>,
    throttled_for: Option<Duration>,
    /// Rate-limit tokens reserved (-1: no rate limit).
    reserved: i64,
    due: Vec<String>,
    parked: Vec<String>,
    popped: Vec<String>,
    /// Running-set members of tenants at their limit, to check.
    checked: Vec<String>,
}

/// What `claim_start.lua` did with them.
struct Started {
    promoted: i64,
    parked_left: bool,
    /// Running-set members dropped (their jobs no longer ran).
    freed: i64,
    expired: Vec<Uuid>,
    jobs: Vec<Claimed>,
}

fn claim_corrupt(why: &str) -> QueueError {
    QueueError::Corrupt {
        id: "<claim>".into(),
        why: why.into(),
    }
}

fn reply_int(v: &redis::Value) -> Result<i64, QueueError> {
    redis::from_redis_value_ref::<i64>(v).map_err(|e| claim_corrupt(&e.to_string()))
}

fn reply_text(v: &redis::Value) -> Result<String, QueueError> {
    redis::from_redis_value_ref::<String>(v).map_err(|e| claim_corrupt(&e.to_string()))
}

/// Splits a counted group (a count, then that many values) off `rest`.
fn counted<'a>(
    rest: &'a [redis::Value],
    what: &str,
) -> Result<(&'a [redis::Value], &'a [redis::Value]), QueueError> {
    let (count, rest) = rest
        .split_first()
        .ok_or_else(|| claim_corrupt(&format!("no {what} count")))?;
    let count = reply_int(count)?.max(0) as usize;
    if rest.len() < count {
        return Err(claim_corrupt("truncated reply"));
    }
    Ok(rest.split_at(count))
}

fn texts(values: &[redis::Value]) -> Result<Vec<String>, QueueError> {
    values.iter().map(reply_text).collect()
}

fn parse_taken(raw: &[redis::Value]) -> Result<Taken, ClaimError> {
    let [next_due, rest @ ..] = raw else {
        return Err(claim_corrupt("empty reply").into());
    };
    let next_due = reply_int(next_due)?;
    if next_due == -2 {
        return Err(ClaimError::Evicted);
    }
    let [throttled, reserved, rest @ ..] = rest else {
        return Err(claim_corrupt("truncated reply").into());
    };
    let throttled = reply_int(throttled)?;
    let (due, rest) = counted(rest, "due")?;
    let (parked, rest) = counted(rest, "parked")?;
    let (popped, checked) = counted(rest, "popped")?;
    Ok(Taken {
        next_due_in: (next_due >= 0).then(|| Duration::from_millis(next_due as u64)),
        throttled_for: (throttled >= 0).then(|| Duration::from_millis(throttled as u64)),
        reserved: reply_int(reserved)?,
        due: texts(due)?,
        parked: texts(parked)?,
        popped: texts(popped)?,
        checked: texts(checked)?,
    })
}

fn parse_started(raw: &[redis::Value]) -> Result<Started, ClaimError> {
    let [first, rest @ ..] = raw else {
        return Err(claim_corrupt("empty reply").into());
    };
    let promoted = reply_int(first)?;
    if promoted == -2 {
        return Err(ClaimError::Evicted);
    }
    let [parked_left, rest @ ..] = rest else {
        return Err(claim_corrupt("truncated reply").into());
    };
    let parked_left = reply_int(parked_left)? == 1;
    let [freed, rest @ ..] = rest else {
        return Err(claim_corrupt("truncated reply").into());
    };
    let freed = reply_int(freed)?;
    let (expired, rest) = counted(rest, "expired")?;
    let expired = expired
        .iter()
        .map(|v| parse_id(&reply_text(v)?))
        .collect::<Result<Vec<_>, _>>()?;
    let limit = |v: &redis::Value| -> Result<Option<Duration>, QueueError> {
        let ms = reply_int(v)?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    };
    let (int, text) = (reply_int, reply_text);
    let corrupt = claim_corrupt;
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
    Ok(Started {
        promoted,
        parked_left,
        freed,
        expired,
        jobs,
    })
}

/// Fields per job in `claim_start.lua`'s reply.
const CLAIMED_FIELDS: usize = 15;
