//! Hopper's own Redis backend for apalis.
//!
//! apalis-core provides the worker loop, layers and graceful shutdown; this
//! crate provides where jobs live and how they move, with its own Lua scripts
//! (in `queue/lua/`), so that Hopper's guarantees hold:
//!
//! * **Late acknowledgement.** A claim moves a job atomically into the
//!   worker's in-flight set and counts the attempt; the job leaves that set
//!   only after its handler returned and its record was committed to Postgres
//!   ([`ack`]).
//! * **Crash recovery by lease.** Workers heartbeat; the jobs of a worker
//!   silent for longer than its lease are re-queued (or dead-lettered once
//!   out of attempts) by any live worker ([`QueueClient::recover`]). A job is
//!   never re-run while its worker still heartbeats.
//! * **No polling delay.** An idle worker blocks on a wake list that every
//!   push feeds; busy workers claim in batches ([`fetcher`]).
//! * **Nothing O(queue length).** Every script touches a bounded number of
//!   keys.
//!
//! Queues are data: every operation is addressed by a queue name
//! ([`hopper_shared::QueueName`], a validated string; a built-in job kind
//! converts to one for free), and a queue's settings are found by its name.
//!
//! Key layout: every key of a queue shares the hash tag `{<prefix>:<queue>}`
//! so one queue lives in one Redis Cluster slot ([`keys`]).
//!
//! Tasks are declared in a registry ([`registry`]): name, version, argument
//! schema, default settings, who serves it.
//!
//! Entry points: [`QueueClient`] (submit, inspect, stats — used by the API
//! and the CLI) and [`RedisBackend`] (what an apalis worker pulls from).

pub mod ack;
pub mod backend;
mod batch;
pub mod browse;
mod cancel;
pub mod client;
pub mod connection;
mod dead;
pub mod error;
pub mod fetcher;
mod heartbeat;
mod inspect;
pub mod intake;
pub mod job;
pub mod keys;
mod lease;
pub mod outbox;
pub mod outcome;
pub mod partitions;
pub mod placement;
mod progress;
mod registration;
pub mod registry;
mod rescuer;
pub mod retry;
pub mod schedule;
pub mod scheduler;
mod scripts;
mod submit;
pub mod workflow;

pub use backend::{Admission, Lease, RedisBackend, ShutdownHandle};
pub use browse::MinuteOutcomes;
pub use client::{AfterFailure, DeadPage, QueueClient, QueueStats, Trimmed, WorkerInfo};
pub use connection::{Redis, RedisConn};
pub use error::QueueError;
pub use intake::IntakeItem;
pub use job::{
    JobBackoff, JobContext, MAX_DELAY, MAX_RETENTION_FACTOR, Permanent, Priority, PushOptions,
    UNIQUE_MAX, Unique, UniqueScope, WorkerId,
};
pub use keys::QueueKeys;
pub use outbox::ListEnd;
pub use outcome::{Attempt, Outcome, Recorded, Recorder};
pub use placement::{PartitionPlace, Placement};
pub use progress::ProgressStored;
pub use registry::Declared;
pub use schedule::FireRound;
pub use scripts::{script_hashes, strict_keys_script};

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, the time unit of every stored stamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
