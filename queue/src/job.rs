//! What travels with a job: submission options, the worker's identity and
//! the per-attempt context a handler receives.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hopper_shared::{QueueName, jobs::Notify};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// A job's priority within its queue. High-priority jobs are always claimed
/// before normal ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Claimed before any normal job.
    High,
    /// The default.
    #[default]
    Normal,
}

impl Priority {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
        }
    }
}

/// The longest delay a job may be submitted with (one year of 365 days).
/// Longer ones are refused ([`crate::QueueError::DelayTooLong`]): a larger
/// number would overflow the due time on its way into the scheduled set.
/// Retry delays are clamped to it too.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Options of one submission.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Attempts allowed; the queue's setting when `None`.
    pub max_attempts: Option<u32>,
    /// Run no earlier than this long after submission (at most
    /// [`MAX_DELAY`]).
    pub delay: Option<Duration>,
    /// Claim order within the queue.
    pub priority: Priority,
    /// The same key within its TTL returns the first job's id and adds nothing.
    pub idempotency_key: Option<String>,
    /// The id of the HTTP request that submits it, carried into the job's
    /// log lines.
    pub request_id: Option<String>,
    /// Where a signed completion callback goes (already checked against the
    /// webhook allow-list by the submitter).
    pub callback_url: Option<String>,
    /// Refuse the job ([`crate::QueueError::TenantFull`]) when its tenant
    /// already has this many unfinished jobs in the queue; no cap when
    /// `None` (jobs Hopper makes itself are never refused).
    pub max_unfinished: Option<u64>,
    /// Refuse a high-priority job ([`crate::QueueError::TenantFull`] with
    /// `high_priority`) when its tenant already has this many unfinished
    /// high-priority jobs in the queue, so no tenant can flood the claim end
    /// of a queue; no cap when `None`.
    pub max_high_unfinished: Option<u64>,
    /// The tenant it belongs to; [`DEFAULT_TENANT`] when `None`.
    ///
    /// [`DEFAULT_TENANT`]: hopper_shared::jobs::DEFAULT_TENANT
    pub tenant: Option<String>,
    /// The job's id; a fresh UUIDv7 when `None`. A given id names one job
    /// for good: pushing it again adds nothing and answers `created: false`
    /// (a Celery task id, see [`hopper_shared::jobs::foreign_job_id`]).
    pub id: Option<uuid::Uuid>,
    /// Unix ms (on Redis' clock): a job not claimed by then is finished as
    /// cancelled ("expired") instead of running.
    pub expires_at_ms: Option<i64>,
    /// Its own hard time limit, instead of its task's.
    pub hard_time_limit: Option<Duration>,
    /// Its own soft time limit, instead of its task's.
    pub soft_time_limit: Option<Duration>,
    /// A task to tell when it finishes (see [`Notify`]).
    pub notify: Option<Notify>,
    /// One job at a time per key (see [`Unique`]).
    pub unique: Option<Unique>,
    /// Jobs of one key go to one partition of a partitioned queue, so they
    /// are claimed in the order they were pushed (see
    /// [`crate::partitions`]); `None`: round robin.
    pub partition_key: Option<String>,
    /// Its own retry backoff, instead of its task's.
    pub backoff: Option<JobBackoff>,
    /// Its own retention: how long Redis keeps it once it succeeded or was
    /// cancelled, instead of its queue's. Stored as the difference from the
    /// queue's (`done_shift`, ms), which moves its score in the done set
    /// (`done_score` in `prelude.lua`), so the queue's trimming forgets it
    /// after its own. The API allows at most [`MAX_RETENTION_FACTOR`] times
    /// the queue's and also records it in Postgres, whose sweep deletes the
    /// job's record after it (`hopper_shared::retention`).
    pub retention: Option<Duration>,
    /// The W3C `traceparent` of the span that pushed it (the API request or
    /// the parent job's attempt): its attempts' spans continue that trace.
    pub traceparent: Option<String>,
}

/// A job's own retention is at most this many times its queue's (a day by
/// default, so a month: the default life of a Postgres record).
pub const MAX_RETENTION_FACTOR: u32 = 30;

/// A job's own retry backoff: the first retry after `base`, doubling (with
/// full jitter) up to `max`. Stored on the job as `"<base ms>,<max ms>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobBackoff {
    /// Delay before the first retry.
    pub base: Duration,
    /// Upper bound of a retry's delay.
    pub max: Duration,
}

impl JobBackoff {
    /// The stored form.
    pub fn encode(&self) -> String {
        format!("{},{}", self.base.as_millis(), self.max.as_millis())
    }

    /// Reads the stored form (`None` for `''` or anything else).
    pub fn decode(s: &str) -> Option<Self> {
        let (base, max) = s.split_once(',')?;
        Some(Self {
            base: Duration::from_millis(base.parse().ok()?),
            max: Duration::from_millis(max.parse().ok()?),
        })
    }
}

/// A unique job: while the first job under its key counts, submitting
/// another answers the first (`created: false`) and adds nothing. Keys are
/// per queue and per tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unique {
    /// The key; `None`: the task and a digest of the arguments (canonical
    /// JSON), so equal arguments are one job.
    pub key: Option<String>,
    /// How long the first job counts.
    pub scope: UniqueScope,
}

/// How long a unique job holds its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueScope {
    /// For this long after its submission, whatever becomes of it.
    Window(Duration),
    /// Until it is over (succeeded, dead or cancelled), at most
    /// [`UNIQUE_MAX`] after its submission.
    UntilFinished,
}

/// The longest a unique key holds (a window, or a job that never finishes).
pub const UNIQUE_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// A worker process' identity on one or more queues: host, pid and a random
/// suffix, so two processes never share an in-flight set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// A fresh id for this process: `<host>-<pid>-<random>`.
    pub fn generate() -> Self {
        let host = gethostname::gethostname().to_string_lossy().replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
            "_",
        );
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Self(format!("{host}-{}-{suffix}", std::process::id()).into())
    }

    /// An id taken as given (tests, recovery tooling).
    pub fn from_raw(raw: &str) -> Self {
        Self(raw.into())
    }

    /// The id as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a handler knows about the attempt it runs. Handlers receive it as
/// `Data<JobContext>`.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id.
    pub id: uuid::Uuid,
    /// Its queue (the task it runs).
    pub queue: QueueName,
    /// The partition it was claimed from: the name the queue's scripts know
    /// it by (`queue` itself unless the queue is partitioned, see
    /// [`crate::partitions`]).
    pub partition: QueueName,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Unix ms: submitted.
    pub enqueued_at_ms: i64,
    /// Unix ms: this attempt claimed.
    pub started_at_ms: i64,
    /// The worker id it was claimed under.
    pub worker: WorkerId,
    /// The claim's lease token: the attempt's outcome counts only while it
    /// still holds the job under this token (fencing).
    pub lease: u64,
    /// The submitted arguments, as stored.
    pub args_json: Arc<str>,
    /// Its priority.
    pub priority: Priority,
    /// The tenant it belongs to; jobs it fans out belong to the same one.
    pub tenant: Arc<str>,
    /// Where its completion callback goes, if anywhere.
    pub callback_url: Option<String>,
    /// The task told when it finishes, if any.
    pub notify: Option<Notify>,
    /// Its own hard time limit, when it was submitted with one.
    pub hard_time_limit: Option<Duration>,
    /// Its own soft time limit, when it was submitted with one.
    pub soft_time_limit: Option<Duration>,
    /// Its own retry backoff, when it was submitted with one.
    pub backoff: Option<JobBackoff>,
    /// The id of the HTTP request that submitted it.
    pub request_id: Option<String>,
    /// The W3C `traceparent` it was pushed under: its attempt span's parent.
    pub traceparent: Option<String>,
    /// Fires at the soft time limit and on cooperative cancellation; a
    /// handler should stop soon after.
    pub cancel: CancellationToken,
    /// Set when a client asked for the job's cancellation (as opposed to
    /// the soft time limit firing).
    pub cancel_requested: Arc<AtomicBool>,
    /// Set when the worker itself stopped the attempt: its shutdown grace
    /// ran out, or it found itself evicted.
    pub stopped_by_worker: Arc<AtomicBool>,
}

impl JobContext {
    /// Whether a client asked to cancel this job.
    pub fn is_cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::SeqCst)
    }

    /// Why `cancel` fired, in words for the job's error.
    pub fn stop_reason(&self) -> &'static str {
        if self.is_cancel_requested() {
            "cancelled on request"
        } else if self.stopped_by_worker.load(Ordering::SeqCst) {
            "stopped by its worker (shutting down, or presumed dead and evicted); it will run again"
        } else {
            "stopped at the soft time limit"
        }
    }
}

/// The jobs a worker holds on one queue: from the moment a claim's reply
/// arrives until the attempt's outcome is recorded. The rescuer compares them
/// with the worker's in-flight set in Redis to find strays; the heartbeat
/// passes cancellation requests to the ones that run.
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<HashMap<uuid::Uuid, Held>>);

#[derive(Debug)]
struct Held {
    /// Set once the handler starts.
    ctx: Option<JobContext>,
}

impl Running {
    /// A claim handed this job over (its handler has not started).
    pub fn claimed(&self, id: uuid::Uuid) {
        self.0
            .lock()
            .expect("running map")
            .insert(id, Held { ctx: None });
    }

    /// Its handler starts.
    pub fn insert(&self, ctx: &JobContext) {
        self.0.lock().expect("running map").insert(
            ctx.id,
            Held {
                ctx: Some(ctx.clone()),
            },
        );
    }

    /// Its outcome is recorded (or it was given back).
    pub fn remove(&self, id: &uuid::Uuid) {
        self.0.lock().expect("running map").remove(id);
    }

    /// Every job held now.
    pub fn ids(&self) -> Vec<uuid::Uuid> {
        self.0
            .lock()
            .expect("running map")
            .keys()
            .copied()
            .collect()
    }

    /// Fires the cancellation of each listed job that runs here, as asked
    /// for by a client.
    pub fn cancel(&self, ids: &[uuid::Uuid]) -> usize {
        let map = self.0.lock().expect("running map");
        let mut n = 0;
        for id in ids {
            if let Some(Held { ctx: Some(ctx) }) = map.get(id)
                && !ctx.cancel_requested.swap(true, Ordering::SeqCst)
            {
                ctx.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Fires the cancellation token of every running job claimed under
    /// `worker` (all of them when `None`): the worker was evicted, or its
    /// shutdown grace is over. Not a client's request: their jobs are
    /// retried, not cancelled.
    pub fn stop_all(&self, worker: Option<&WorkerId>) -> usize {
        let map = self.0.lock().expect("running map");
        let mut n = 0;
        for ctx in map.values().filter_map(|h| h.ctx.as_ref()) {
            if worker.is_none_or(|w| &ctx.worker == w) && !ctx.cancel.is_cancelled() {
                ctx.stopped_by_worker.store(true, Ordering::SeqCst);
                ctx.cancel.cancel();
                n += 1;
            }
        }
        n
    }
}

/// A handler error that no retry can fix (a document with no text, an
/// unknown model): the job goes to the dead letters at once, with this
/// message. Return it as the handler's error (`Err(Permanent(..).into())`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(pub String);
