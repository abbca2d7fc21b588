//! The Redis key layout of one queue.
//!
//! ```text
//! {<prefix>:<queue>}:job:<id>         HASH  the job: args, state, attempts, timings, result, error
//! {<prefix>:<queue>}:pending          LIST  ids waiting (LPUSH in, RPOP out: FIFO)
//! {<prefix>:<queue>}:pending:high     LIST  high-priority ids, always claimed first
//! {<prefix>:<queue>}:scheduled        ZSET  delayed jobs and retries, scored by due time (ms)
//! {<prefix>:<queue>}:inflight:<wid>   SET   ids claimed by one worker
//! {<prefix>:<queue>}:workers          ZSET  worker id -> last heartbeat (ms)
//! {<prefix>:<queue>}:wake             LIST  one token per push; idle workers BLPOP it
//! {<prefix>:<queue>}:dead             ZSET  dead-lettered ids, scored by time (ms)
//! {<prefix>:<queue>}:done             ZSET  succeeded and cancelled ids by finish time (retention)
//! {<prefix>:<queue>}:cancel           SET   running ids whose cancellation was asked for
//! {<prefix>:<queue>}:tenants          HASH  tenant -> unfinished jobs (the per-tenant cap)
//! {<prefix>:<queue>}:idem:<key>       STRING  idempotency key -> job id (with a TTL)
//! {<prefix>:<queue>}:unique:<key>     STRING  unique key (tenant:key or tenant:args:<sha256>)
//!                                             -> the job holding it (with a TTL)
//! {<prefix>:<queue>}:stats:<minute>   HASH  succeeded / failed / retried / dead counts
//! {<prefix>:<queue>}:fair             STRING  high-priority claims in a row (fair priorities)
//! {<prefix>:<queue>}:rate             HASH  the rate limit's token bucket: tokens, at (ms)
//! {<prefix>:<queue>}:running          ZSET  `<tenant>\t<id>` of jobs started under a tenant
//!                                           concurrency limit (lex order; pruned lazily)
//! {<prefix>:<queue>}:parked           ZSET  `<tenant>\t<rank>\t<enqueued_at>\t<id>` of pending
//!                                           jobs waiting for their tenant's running count
//! ```
//!
//! The braces are a Redis Cluster hash tag: all keys of a queue map to one
//! slot, so every Lua script runs on one node.

use hopper_shared::QueueName;

use crate::job::{Priority, WorkerId};

/// Keys of one queue under one prefix.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// The queue's name.
    pub queue: QueueName,
    tag: String,
}

impl QueueKeys {
    /// Keys of the queue `queue` under `prefix` (tests use a prefix of their own).
    pub fn new(prefix: &str, queue: impl Into<QueueName>) -> Self {
        let queue = queue.into();
        let tag = format!("{{{prefix}:{queue}}}");
        Self { queue, tag }
    }

    /// The hash tag shared by every key of this queue.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Prefix of job hashes; append the id.
    pub fn job_prefix(&self) -> String {
        format!("{}:job:", self.tag)
    }

    /// One job's hash.
    pub fn job(&self, id: &uuid::Uuid) -> String {
        format!("{}:job:{id}", self.tag)
    }

    /// The pending list of a priority.
    pub fn pending(&self, priority: Priority) -> String {
        match priority {
            Priority::High => format!("{}:pending:high", self.tag),
            Priority::Normal => format!("{}:pending", self.tag),
        }
    }

    /// Delayed jobs and retries.
    pub fn scheduled(&self) -> String {
        format!("{}:scheduled", self.tag)
    }

    /// A worker's in-flight set.
    pub fn inflight(&self, worker: &WorkerId) -> String {
        format!("{}:inflight:{}", self.tag, worker.as_str())
    }

    /// Workers and their last heartbeats.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.tag)
    }

    /// Wake tokens for idle workers.
    pub fn wake(&self) -> String {
        format!("{}:wake", self.tag)
    }

    /// Dead letters.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.tag)
    }

    /// Succeeded and cancelled jobs by finish time (trimmed after the
    /// queue's retention).
    pub fn done(&self) -> String {
        format!("{}:done", self.tag)
    }

    /// Finished jobs' outcomes told to this name (see [`crate::outbox`]).
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.tag)
    }

    /// Unfinished jobs (waiting, running or retrying) per tenant.
    pub fn tenant_load(&self) -> String {
        format!("{}:tenants", self.tag)
    }

    /// Running jobs whose cancellation was requested.
    pub fn cancel_requests(&self) -> String {
        format!("{}:cancel", self.tag)
    }

    /// An idempotency key's record.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.tag)
    }

    /// A unique job's key: the id of the job holding it.
    pub fn unique(&self, key: &str) -> String {
        format!("{}:unique:{key}", self.tag)
    }

    /// A key of the queue's own, outside the layout above (benchmarks keep
    /// their effect counters here).
    pub fn named(&self, name: &str) -> String {
        format!("{}:x:{name}", self.tag)
    }

    /// High-priority jobs claimed in a row since the last normal one (the
    /// fairness counter of `claim.lua`).
    pub fn high_streak(&self) -> String {
        format!("{}:fair", self.tag)
    }

    /// The token bucket of the queue's rate limit (`claim.lua`).
    pub fn rate(&self) -> String {
        format!("{}:rate", self.tag)
    }

    /// Jobs running under the tenant concurrency limit, by tenant.
    pub fn tenant_running(&self) -> String {
        format!("{}:running", self.tag)
    }

    /// Pending jobs parked until their tenant runs fewer than its limit.
    pub fn parked(&self) -> String {
        format!("{}:parked", self.tag)
    }

    /// Per-minute outcome counters of the minute holding `now_ms`.
    pub fn stats_minute(&self, now_ms: i64) -> String {
        format!("{}:stats:{}", self.tag, now_ms / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_queue_shares_its_hash_tag() {
        let k = QueueKeys::new("t1", QueueName::from_static("ocr.v2"));
        let w = WorkerId::from_raw("w");
        let id = uuid::Uuid::nil();
        for key in [
            k.job(&id),
            k.pending(Priority::High),
            k.pending(Priority::Normal),
            k.scheduled(),
            k.inflight(&w),
            k.workers(),
            k.wake(),
            k.dead(),
            k.done(),
            k.idempotency("x"),
            k.cancel_requests(),
            k.tenant_load(),
            k.stats_minute(0),
        ] {
            assert!(key.starts_with("{t1:ocr.v2}:"), "{key}");
        }
    }
}
