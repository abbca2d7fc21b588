//! Errors of the queue backend.

/// Errors raised by queue operations.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis could not be reached or a command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored job could not be read back.
    #[error("corrupt job {id}: {why}")]
    Corrupt {
        /// The job.
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// A payload could not be encoded.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The tenant already has `load` unfinished jobs (of high priority,
    /// when `high_priority`) in this queue, its cap.
    #[error("tenant `{tenant}` has {load} unfinished {}{queue} jobs, its cap", if *high_priority { "high-priority " } else { "" })]
    TenantFull {
        /// The tenant.
        tenant: String,
        /// The queue.
        queue: String,
        /// Its unfinished jobs there.
        load: u64,
        /// Whether the cap of high-priority jobs was reached.
        high_priority: bool,
    },
    /// The worker is no longer registered on the queue (it was presumed dead
    /// and its jobs recovered); it must register afresh before it claims.
    #[error("worker `{worker}` is not registered on the {queue} queue (evicted)")]
    Evicted {
        /// The worker id that was refused.
        worker: String,
        /// The queue.
        queue: String,
    },
    /// A submission's delay exceeds [`crate::job::MAX_DELAY`] (nothing was
    /// queued).
    #[error("a delay of {delay_ms} ms exceeds the maximum of {max_ms} ms (one year)")]
    DelayTooLong {
        /// The delay asked for.
        delay_ms: u128,
        /// [`crate::job::MAX_DELAY`] in ms.
        max_ms: u128,
    },
    /// Writing a job record to Postgres failed.
    #[error(transparent)]
    Store(#[from] hopper_shared::Error),
}
