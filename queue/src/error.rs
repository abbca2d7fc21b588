//! Errors of the queue backend.

/// Errors raised by queue operations.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis could not be reached or a command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The Redis named by the configuration cannot be used as named (a
    /// cluster named as one server, or the reverse; a malformed URL).
    #[error("{0}")]
    Config(String),
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
    /// The durability option (`HOPPER_REDIS_WAIT_REPLICAS`) is on and fewer
    /// replicas than asked acknowledged a submission within its time limit:
    /// the job may exist on the master, but a failover could lose it.
    #[error(
        "only {acked} of {asked} Redis replicas acknowledged the submission within {timeout_ms} ms \
         (HOPPER_REDIS_WAIT_REPLICAS): the job may exist; resubmit with the same Idempotency-Key"
    )]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas asked for.
        asked: u32,
        /// The WAIT time limit, ms.
        timeout_ms: u64,
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
    /// A task's version is in force with another argument schema: a second
    /// worker may not change it under the same version.
    #[error(
        "task `{task}` version {version} is declared with another argument schema \
         (in force: {in_force}, declared now: {declared}); declare a new version \
         or remove the task first (`hopper tasks remove {task}`)"
    )]
    SchemaConflict {
        /// The task.
        task: String,
        /// The version both declare.
        version: u32,
        /// The digest of the schema in force (`none` without one).
        in_force: String,
        /// The digest of the refused schema (`none` without one).
        declared: String,
    },
    /// The task name belongs to another owner (another tenant's task, or a
    /// task open to every tenant declared by a Rust worker).
    #[error("task `{task}` is declared by {owner}; choose another name")]
    TaskOwned {
        /// The task.
        task: String,
        /// Who declared it, in words.
        owner: String,
    },
    /// This process is configured with another partition count for a queue
    /// than the one in force (recorded in Redis by the processes already
    /// running): pushes and claims would miss each other's partitions.
    #[error(
        "queue `{queue}` is split into {recorded} partition(s) (recorded in Redis), but this \
         process is configured with {configured} (HOPPER_QUEUE_{env}_PARTITIONS); every process \
         must agree: set it to {recorded}, or change the queue's count first with \
         `hopper queues partitions {queue} {configured}` (nothing is lost, see README)"
    )]
    PartitionsDiffer {
        /// The queue.
        queue: String,
        /// Its variable's suffix.
        env: String,
        /// This process's count.
        configured: u16,
        /// The count in force.
        recorded: u16,
    },
    /// Writing a job record to Postgres failed.
    #[error(transparent)]
    Store(#[from] hopper_shared::Error),
}
