//! Inspection: one job by id (in a known queue or any), a queue's depth and
//! recent outcomes, the workers on a queue, and which jobs belong to a
//! tenant. Read-only; used by the API, the CLI and the dashboard. Listings
//! of jobs by state are [`crate::browse`]'s.
//!
//! A split queue ([`crate::partitions`]) is read across its partitions: a
//! job is looked up in each (one pipelined round trip), depths are summed.
//! A job's hash is decoded into its [`JobRecord`] by [`record_from_hash`],
//! the one reader of the hash layout that `push.lua` and the other scripts
//! write.

use std::collections::HashMap;

use hopper_shared::{
    QueueName,
    jobs::{JobRecord, JobState},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{QueueClient, QueueError, job::WorkerId, scripts::SCRIPTS};

/// Window of the recent-outcome counts in [`QueueStats`].
pub const RECENT_MINUTES: i64 = 5;

/// Depth of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueStats {
    /// The queue.
    pub queue: QueueName,
    /// Waiting to be claimed.
    pub pending: u64,
    /// Waiting for a run-at time or a retry.
    pub scheduled: u64,
    /// Claimed by live or not-yet-recovered workers.
    pub running: u64,
    /// In the dead letters.
    pub dead: u64,
    /// Workers registered on the queue.
    pub workers: u64,
    /// Age of the oldest pending job, in ms.
    pub oldest_pending_age_ms: Option<u64>,
    /// The window of the `*_recent` counts, in minutes (the current minute
    /// included).
    pub recent_minutes: i64,
    /// Jobs that succeeded within the window.
    pub succeeded_recent: u64,
    /// Failed attempts within the window (retried or not).
    pub failed_recent: u64,
    /// Failed attempts scheduled for a retry within the window.
    pub retried_recent: u64,
    /// Jobs dead-lettered within the window.
    pub dead_lettered_recent: u64,
}

/// A worker on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    /// Its id (host-pid-random).
    pub worker: String,
    /// The queue.
    pub queue: QueueName,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Ids of the jobs it holds.
    pub running: Vec<String>,
}

impl QueueClient {
    /// Reads a job of `queue` from Redis.
    pub async fn job(
        &self,
        queue: impl Into<QueueName>,
        id: Uuid,
    ) -> Result<Option<JobRecord>, QueueError> {
        let queue = queue.into();
        if queue.partition_index() == 0 {
            let partitions = self.partitions(&queue).await?;
            if partitions.len() > 1 {
                return self.find_in(id, &partitions).await;
            }
        }
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys(&queue).job(&id))
            .query_async(&mut self.conn.clone())
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        record_from_hash(&queue, id, &fields).map(Some)
    }

    /// The partition of `queue` that holds the job `id` (the queue itself
    /// when it is not split), if any holds it.
    pub async fn partition_of(
        &self,
        queue: &QueueName,
        id: Uuid,
    ) -> Result<Option<QueueName>, QueueError> {
        let partitions = self.partitions(queue).await?;
        if partitions.len() == 1 {
            return Ok(partitions.into_iter().next());
        }
        let mut pipe = redis::pipe();
        for p in &partitions {
            pipe.cmd("EXISTS").arg(self.keys(p).job(&id));
        }
        let found: Vec<bool> = self.conn.query_spread(&pipe).await?;
        Ok(partitions
            .into_iter()
            .zip(found)
            .find(|(_, f)| *f)
            .map(|(p, _)| p))
    }

    /// Finds a job by id in any built-in queue or declared task's queue
    /// (one HGETALL per queue, pipelined).
    pub async fn find_job(&self, id: Uuid) -> Result<Option<JobRecord>, QueueError> {
        let queues = self.task_names().await?;
        self.find_job_in(id, &queues).await
    }

    /// Finds a job by id in one of `queues` (one HGETALL per queue,
    /// pipelined): for callers that already know the task names (the API's
    /// registry cache), without reading the registry.
    pub async fn find_job_in(
        &self,
        id: Uuid,
        queues: &[QueueName],
    ) -> Result<Option<JobRecord>, QueueError> {
        let mut all = Vec::with_capacity(queues.len());
        for queue in queues {
            if queue.partition_index() == 0 {
                all.extend(self.partitions(queue).await?);
            } else {
                all.push(queue.clone());
            }
        }
        self.find_in(id, &all).await
    }

    /// The job `id` in one of these queues or partitions, as named (one
    /// HGETALL each, pipelined).
    async fn find_in(
        &self,
        id: Uuid,
        queues: &[QueueName],
    ) -> Result<Option<JobRecord>, QueueError> {
        let mut pipe = redis::pipe();
        for queue in queues {
            pipe.cmd("HGETALL").arg(self.keys(queue).job(&id));
        }
        let all: Vec<HashMap<String, String>> = self.conn.query_spread(&pipe).await?;
        for (queue, fields) in queues.iter().zip(all) {
            if !fields.is_empty() {
                return record_from_hash(queue, id, &fields).map(Some);
            }
        }
        Ok(None)
    }

    /// Depth of the queue `queue`: of all its partitions together, when it
    /// is split (workers: the most on any one partition, as every worker
    /// serves them all; the oldest pending job: of any).
    pub async fn stats(&self, queue: impl Into<QueueName>) -> Result<QueueStats, QueueError> {
        let queue = queue.into();
        let partitions = self.partitions(&queue).await?;
        if partitions.len() == 1 {
            return self.partition_stats(&queue).await;
        }
        let all = futures::future::try_join_all(partitions.iter().map(|p| self.partition_stats(p)))
            .await?;
        let mut total = QueueStats {
            queue: queue.logical(),
            pending: 0,
            scheduled: 0,
            running: 0,
            dead: 0,
            workers: 0,
            oldest_pending_age_ms: None,
            recent_minutes: RECENT_MINUTES,
            succeeded_recent: 0,
            failed_recent: 0,
            retried_recent: 0,
            dead_lettered_recent: 0,
        };
        for s in all {
            total.pending += s.pending;
            total.scheduled += s.scheduled;
            total.running += s.running;
            total.dead += s.dead;
            total.workers = total.workers.max(s.workers);
            total.oldest_pending_age_ms = total.oldest_pending_age_ms.max(s.oldest_pending_age_ms);
            total.succeeded_recent += s.succeeded_recent;
            total.failed_recent += s.failed_recent;
            total.retried_recent += s.retried_recent;
            total.dead_lettered_recent += s.dead_lettered_recent;
        }
        Ok(total)
    }

    /// Depth of one partition (or of a queue that is not split).
    async fn partition_stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        let keys = self.keys(queue);
        // Every key stats.lua touches is declared: it reads the queue-level
        // keys at one moment; what they lead to is read right after.
        let v: Vec<redis::Value> = SCRIPTS
            .stats
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.scheduled())
            .key(keys.dead())
            .key(keys.workers())
            .key(keys.parked())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let corrupt = |why: String| QueueError::Corrupt {
            id: "<stats>".into(),
            why,
        };
        let [
            pending,
            scheduled,
            dead,
            now,
            oldest_high,
            oldest,
            workers @ ..,
        ] = &v[..]
        else {
            return Err(corrupt(format!("{} values", v.len())));
        };
        let int = |v: &redis::Value| {
            redis::from_redis_value_ref::<i64>(v).map_err(|e| corrupt(e.to_string()))
        };
        let text = |v: &redis::Value| {
            redis::from_redis_value_ref::<String>(v).map_err(|e| corrupt(e.to_string()))
        };
        let now = int(now)?;
        let workers = workers.iter().map(text).collect::<Result<Vec<_>, _>>()?;
        let oldest = [text(oldest_high)?, text(oldest)?];
        let mut pipe = redis::pipe();
        for w in &workers {
            pipe.cmd("SCARD").arg(keys.inflight(&WorkerId::from_raw(w)));
        }
        for id in &oldest {
            // (an empty list's '' names no job: a hash that does not exist)
            pipe.cmd("HGET")
                .arg(format!("{}{id}", keys.job_prefix()))
                .arg("enqueued_at");
        }
        for m in (0..RECENT_MINUTES).rev() {
            pipe.cmd("HMGET")
                .arg(keys.stats_minute(now - m * 60_000))
                .arg("succeeded")
                .arg("failed")
                .arg("retried")
                .arg("dead");
        }
        let more: Vec<redis::Value> = pipe.query_async(&mut self.conn.clone()).await?;
        let (running, rest) = more.split_at(workers.len().min(more.len()));
        let running = running.iter().map(int).sum::<Result<i64, _>>()?;
        let mut oldest_age = -1;
        for (id, at) in oldest.iter().zip(rest) {
            if id.is_empty() {
                continue;
            }
            let at = redis::from_redis_value_ref::<Option<i64>>(at)
                .map_err(|e| corrupt(e.to_string()))?
                .unwrap_or(now);
            oldest_age = oldest_age.max(now - at);
        }
        let mut sums = [0u64; 4];
        for minute in rest.iter().skip(oldest.len()) {
            let counts = redis::from_redis_value_ref::<Vec<Option<u64>>>(minute)
                .map_err(|e| corrupt(e.to_string()))?;
            for (sum, n) in sums.iter_mut().zip(counts) {
                *sum += n.unwrap_or(0);
            }
        }
        let count = |v: &redis::Value| int(v).map(|n| n.max(0) as u64);
        Ok(QueueStats {
            queue: queue.logical(),
            pending: count(pending)?,
            scheduled: count(scheduled)?,
            running: running.max(0) as u64,
            dead: count(dead)?,
            workers: workers.len() as u64,
            oldest_pending_age_ms: (oldest_age >= 0).then_some(oldest_age as u64),
            recent_minutes: RECENT_MINUTES,
            succeeded_recent: sums[0],
            failed_recent: sums[1],
            retried_recent: sums[2],
            dead_lettered_recent: sums[3],
        })
    }

    /// Workers registered on the queue `queue` (on each of its partitions,
    /// when it is split): their last heartbeat and the jobs they hold.
    /// O(workers + their in-flight jobs).
    pub async fn workers(
        &self,
        queue: impl Into<QueueName>,
    ) -> Result<Vec<WorkerInfo>, QueueError> {
        let queue = queue.into();
        let mut all = Vec::new();
        for partition in self.partitions(&queue).await? {
            all.extend(self.partition_workers(&partition).await?);
        }
        Ok(all)
    }

    pub(crate) async fn partition_workers(
        &self,
        queue: &QueueName,
    ) -> Result<Vec<WorkerInfo>, QueueError> {
        let keys = self.keys(queue);
        let beats: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys.workers())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        let mut pipe = redis::pipe();
        for (w, _) in &beats {
            pipe.cmd("SMEMBERS")
                .arg(keys.inflight(&WorkerId::from_raw(w)));
        }
        let held: Vec<Vec<String>> = if beats.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut self.conn.clone()).await?
        };
        let now = self.redis_now_ms();
        Ok(beats
            .into_iter()
            .zip(held)
            .map(|((worker, beat), mut running)| {
                running.sort();
                WorkerInfo {
                    worker,
                    queue: queue.logical(),
                    heartbeat_age_ms: (now - beat as i64).max(0) as u64,
                    running,
                }
            })
            .collect())
    }

    /// Those of `ids` whose job in the queue `queue` belongs to `tenant`.
    pub async fn owned(
        &self,
        queue: impl Into<QueueName>,
        tenant: &str,
        ids: &[Uuid],
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A split queue's jobs may be in any partition (a partition's name
        // names just that one).
        let partitions = match queue.partition_index() {
            0 => self.partitions(&queue).await?,
            _ => vec![queue],
        };
        let mut pipe = redis::pipe();
        for partition in &partitions {
            let keys = self.keys(partition);
            for id in ids {
                pipe.cmd("HGET").arg(keys.job(id)).arg("tenant");
            }
        }
        let tenants: Vec<Option<String>> = self.conn.query_spread(&pipe).await?;
        let default = hopper_shared::jobs::DEFAULT_TENANT;
        let of = |i: usize| {
            // One answer per partition; a job lives in one (a hash without a
            // tenant is the default tenant's).
            let mut answers = tenants.iter().skip(i).step_by(ids.len());
            match partitions.len() {
                1 => answers.any(|t| t.as_deref().unwrap_or(default) == tenant),
                _ => answers.any(|t| t.as_deref() == Some(tenant)),
            }
        };
        Ok(ids
            .iter()
            .enumerate()
            .filter(|(i, _)| of(*i))
            .map(|(_, id)| *id)
            .collect())
    }
}

pub(crate) fn record_from_hash(
    queue: &QueueName,
    id: Uuid,
    f: &HashMap<String, String>,
) -> Result<JobRecord, QueueError> {
    let corrupt = |why: String| QueueError::Corrupt {
        id: id.to_string(),
        why,
    };
    let int = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
    let state = f
        .get("state")
        .ok_or_else(|| corrupt("no state".into()))?
        .parse::<JobState>()
        .map_err(corrupt)?;
    let json = |k: &str| -> Result<Option<serde_json::Value>, QueueError> {
        f.get(k)
            .map(|v| serde_json::from_str(v))
            .transpose()
            .map_err(|e| corrupt(format!("{k}: {e}")))
    };
    let mut record = JobRecord {
        id,
        kind: queue.logical(),
        state,
        attempts: int("attempts").unwrap_or(0) as u32,
        max_attempts: int("max_attempts").unwrap_or(0) as u32,
        args: json("args")?.unwrap_or(serde_json::Value::Null),
        result: json("result")?,
        error: f.get("error").cloned(),
        worker: f.get("worker").cloned(),
        enqueued_at_ms: int("enqueued_at").unwrap_or(0),
        started_at_ms: int("started_at"),
        finished_at_ms: int("finished_at"),
        priority: f.get("priority").cloned(),
        request_id: f.get("request_id").cloned(),
        run_at_ms: int("run_at").filter(|&t| t > 0),
        lease: int("lease").unwrap_or(0) as u64,
        callback_url: f.get("callback").cloned(),
        // A report that does not parse is not worth failing the read for.
        progress: f.get("progress").and_then(|p| serde_json::from_str(p).ok()),
        notify: f.get("notify").and_then(|n| serde_json::from_str(n).ok()),
        tenant: f
            .get("tenant")
            .cloned()
            .unwrap_or_else(|| hopper_shared::jobs::DEFAULT_TENANT.to_owned()),
        history: match f.get("history") {
            // cjson encodes an empty table as an object.
            Some(h) if h != "{}" => {
                serde_json::from_str(h).map_err(|e| corrupt(format!("history: {e}")))?
            }
            _ => Vec::new(),
        },
    };
    // `ack.lua` leaves the successful attempt's entry to the reader: every
    // field of it is on the hash (older jobs carry it in their history).
    if record.state == JobState::Succeeded
        && record
            .history
            .last()
            .is_none_or(|h| h.outcome != JobState::Succeeded.as_str())
    {
        record.history.push(hopper_shared::jobs::AttemptRecord {
            attempt: record.attempts,
            worker: record.worker.clone(),
            started_at_ms: record.started_at_ms,
            finished_at_ms: record.finished_at_ms.unwrap_or(0),
            outcome: JobState::Succeeded.as_str().to_owned(),
            error: None,
        });
        let over = record.history.len().saturating_sub(HISTORY_KEPT);
        record.history.drain(..over);
    }
    Ok(record)
}

/// Attempts a job's history keeps (the newest; `history_with` in
/// `prelude.lua` keeps as many).
const HISTORY_KEPT: usize = 20;
