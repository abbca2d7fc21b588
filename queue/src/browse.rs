//! Browsing a queue: the jobs in a given state, what the queue did minute
//! by minute, and a glance at one job (its state, attempt and progress: what
//! `GET /v1/jobs/{id}/events` polls). Read-only; used by `GET /v1/jobs`,
//! `hopper jobs list`, the job event streams and the dashboard.
//!
//! Each state is read from the structure that indexes it (pending lists and
//! the parked set of a tenant concurrency limit, the scheduled set, workers' in-flight sets, the dead and done sets), a
//! page at a time, and each id's hash is read in one pipelined round trip.
//! A listing never scans more than [`MAX_SCAN`] ids, so its cost is bounded
//! whatever the queue's length. Jobs whose hash no longer matches the state
//! asked for (a cancelled job still in a pending list, say) are skipped.

use hopper_shared::{
    QueueName,
    jobs::{JobRecord, JobState},
};
use serde::Serialize;

use crate::{Priority, QueueClient, QueueError, client::parse_id, inspect::record_from_hash};

/// Most ids one listing examines.
pub const MAX_SCAN: usize = 5_000;
/// Ids read per round trip.
const PAGE: usize = 200;

/// Outcomes of one queue in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MinuteOutcomes {
    /// Unix ms at the start of the minute.
    pub minute_ms: i64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Failed attempts (retried or not).
    pub failed: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
}

/// The few fields of a job its event stream watches, read in one `HMGET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobGlance {
    /// Current state.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The worker that runs (or ran) the last attempt.
    pub worker: Option<String>,
    /// The last progress report, as stored (JSON text).
    pub progress: Option<String>,
}

/// Where the ids of a state are kept, and in which order they are listed.
enum Source {
    /// A Redis list read from its tail (the next to be claimed first).
    ListTail(String),
    /// A sorted set, lowest score first.
    ZsetAsc(String),
    /// A sorted set, highest score first.
    ZsetDesc(String),
    /// The parked set (`<tenant>\t<rank>\t<enqueued_at>\t<id>`), in lex order.
    Parked(String),
}

impl QueueClient {
    /// Up to `limit` jobs of `queue` in `state` (of `tenant`, when given),
    /// in the order they will run (pending, scheduled, retrying), newest
    /// first (dead, succeeded), or by id (running). States Redis keeps no
    /// index of (`cancelled`, `failed`) list nothing: their records are in
    /// Postgres.
    pub async fn list_jobs(
        &self,
        queue: impl Into<QueueName>,
        state: JobState,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let queue = queue.into();
        self.list_jobs_from(&queue, state, tenant, 0, limit).await
    }

    /// [`QueueClient::list_jobs`], skipping the first `skip` matches.
    pub async fn list_jobs_from(
        &self,
        queue: impl Into<QueueName>,
        state: JobState,
        tenant: Option<&str>,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let queue = queue.into();
        // A split queue lists each partition's in turn.
        let mut found = Vec::new();
        for partition in self.partitions(&queue).await? {
            if found.len() >= skip + limit {
                break;
            }
            let want = skip + limit - found.len();
            found.extend(self.list_partition(&partition, state, tenant, want).await?);
        }
        Ok(found.into_iter().skip(skip).take(limit).collect())
    }

    /// The first `want` matches of [`Self::list_jobs`] in one partition (or
    /// a queue that is not split).
    async fn list_partition(
        &self,
        queue: &QueueName,
        state: JobState,
        tenant: Option<&str>,
        want: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let (skip, limit) = (0, want);
        let wanted = |j: &JobRecord| j.state == state && tenant.is_none_or(|t| j.tenant == t);
        let keys = self.keys(queue);
        let sources = match state {
            JobState::Pending => vec![
                Source::ListTail(keys.pending(Priority::High)),
                Source::ListTail(keys.pending(Priority::Normal)),
                Source::Parked(keys.parked()),
            ],
            JobState::Scheduled | JobState::Retrying => vec![Source::ZsetAsc(keys.scheduled())],
            JobState::Dead => vec![Source::ZsetDesc(keys.dead())],
            JobState::Succeeded => vec![Source::ZsetDesc(keys.done())],
            JobState::Running => {
                let mut jobs = self.running_jobs(queue, MAX_SCAN).await?;
                jobs.retain(|j| wanted(j));
                return Ok(jobs.into_iter().skip(skip).take(limit).collect());
            }
            JobState::Cancelled | JobState::Failed => return Ok(Vec::new()),
        };
        let mut found = Vec::new();
        let mut scanned = 0;
        for source in sources {
            let mut offset = 0;
            while found.len() < skip + limit && scanned < MAX_SCAN {
                let ids = self.page(&source, offset).await?;
                if ids.is_empty() {
                    break;
                }
                offset += ids.len();
                scanned += ids.len();
                found.extend(self.records(queue, &ids).await?.into_iter().filter(wanted));
            }
        }
        Ok(found.into_iter().skip(skip).take(limit).collect())
    }

    /// How many of `tenant`'s jobs in `queue` are unfinished (what the
    /// per-tenant cap counts at push).
    pub async fn unfinished_of(
        &self,
        queue: impl Into<QueueName>,
        tenant: &str,
    ) -> Result<u64, QueueError> {
        let mut pipe = redis::pipe();
        for partition in self.partitions(&queue.into()).await? {
            pipe.cmd("HGET")
                .arg(self.keys(partition).tenant_load())
                .arg(tenant);
        }
        let n: Vec<Option<i64>> = self.conn.query_spread(&pipe).await?;
        Ok(n.into_iter().map(|n| n.unwrap_or(0).max(0) as u64).sum())
    }

    /// Jobs held by the registered workers of one partition (or a queue
    /// that is not split), sorted by id.
    async fn running_jobs(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let mut ids: Vec<String> = Vec::new();
        for worker in self.partition_workers(queue).await? {
            ids.extend(worker.running);
        }
        ids.sort();
        ids.truncate(limit.min(MAX_SCAN));
        let mut jobs = self.records(queue, &ids).await?;
        jobs.retain(|j| j.state == JobState::Running);
        Ok(jobs)
    }

    async fn page(&self, source: &Source, offset: usize) -> Result<Vec<String>, QueueError> {
        let (start, stop) = (offset as i64, (offset + PAGE) as i64 - 1);
        let mut conn = self.conn.clone();
        Ok(match source {
            Source::ListTail(key) => {
                // Index -1 is the next id a claim takes.
                let mut ids: Vec<String> = redis::cmd("LRANGE")
                    .arg(key)
                    .arg(-stop - 1)
                    .arg(-start - 1)
                    .query_async(&mut conn)
                    .await?;
                ids.reverse();
                ids
            }
            Source::ZsetAsc(key) => {
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(stop)
                    .query_async(&mut conn)
                    .await?
            }
            Source::ZsetDesc(key) => {
                redis::cmd("ZREVRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(stop)
                    .query_async(&mut conn)
                    .await?
            }
            Source::Parked(key) => {
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(stop)
                    .query_async(&mut conn)
                    .await?;
                members
                    .into_iter()
                    .map(|m| m.rsplit('\t').next().unwrap_or_default().to_owned())
                    .collect()
            }
        })
    }

    /// The hashes of `ids`, in order, in one round trip; ids Redis has
    /// forgotten are left out.
    async fn records(
        &self,
        queue: &QueueName,
        ids: &[String],
    ) -> Result<Vec<JobRecord>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let mut pipe = redis::pipe();
        let mut parsed = Vec::with_capacity(ids.len());
        for id in ids {
            let id = parse_id(id)?;
            pipe.cmd("HGETALL").arg(keys.job(&id));
            parsed.push(id);
        }
        let hashes: Vec<std::collections::HashMap<String, String>> =
            pipe.query_async(&mut self.conn.clone()).await?;
        parsed
            .into_iter()
            .zip(hashes)
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, h)| record_from_hash(queue, id, &h))
            .collect()
    }

    /// Outcome counts of `queue` for each of the last `minutes` minutes
    /// (the current one last). Counters are kept two hours.
    pub async fn outcomes(
        &self,
        queue: impl Into<QueueName>,
        minutes: i64,
    ) -> Result<Vec<MinuteOutcomes>, QueueError> {
        let queue = queue.into();
        let now = self.redis_now_ms();
        let last = now / 60_000;
        let first = last - minutes.clamp(1, 120) + 1;
        let mut total: Vec<MinuteOutcomes> = (first..=last)
            .map(|m| MinuteOutcomes {
                minute_ms: m * 60_000,
                succeeded: 0,
                failed: 0,
                retried: 0,
                dead: 0,
            })
            .collect();
        // A split queue's counts are its partitions' added up.
        for partition in self.partitions(&queue).await? {
            let keys = self.keys(&partition);
            let mut pipe = redis::pipe();
            for m in first..=last {
                pipe.cmd("HMGET")
                    .arg(keys.stats_minute(m * 60_000))
                    .arg("succeeded")
                    .arg("failed")
                    .arg("retried")
                    .arg("dead");
            }
            let rows: Vec<Vec<Option<u64>>> = pipe.query_async(&mut self.conn.clone()).await?;
            for (t, r) in total.iter_mut().zip(rows) {
                let at = |i: usize| r.get(i).copied().flatten().unwrap_or(0);
                t.succeeded += at(0);
                t.failed += at(1);
                t.retried += at(2);
                t.dead += at(3);
            }
        }
        Ok(total)
    }

    /// A glance at job `id` of `queue`: its state, attempts, worker and
    /// progress (one `HMGET`, cheap enough to poll); `None` when Redis no
    /// longer holds it (never did, or retention trimmed it).
    pub async fn glance(
        &self,
        queue: impl Into<QueueName>,
        id: uuid::Uuid,
    ) -> Result<Option<JobGlance>, QueueError> {
        let queue = queue.into();
        let Some(partition) = self.partition_of(&queue, id).await? else {
            return Ok(None);
        };
        let (state, attempts, worker, progress): (
            Option<String>,
            Option<u32>,
            Option<String>,
            Option<String>,
        ) = redis::cmd("HMGET")
            .arg(self.keys(&partition).job(&id))
            .arg("state")
            .arg("attempts")
            .arg("worker")
            .arg("progress")
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(state) = state else {
            return Ok(None);
        };
        let state = state
            .parse::<JobState>()
            .map_err(|why| QueueError::Corrupt {
                id: id.to_string(),
                why,
            })?;
        Ok(Some(JobGlance {
            state,
            attempts: attempts.unwrap_or(0),
            worker,
            progress,
        }))
    }
}
