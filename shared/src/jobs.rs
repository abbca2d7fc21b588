//! Job kinds, their argument types and the job states a client can observe.
//!
//! Every kind has its own Redis queue (named by [`JobKind::as_str`]) and its
//! own default [`QueueSettings`]. The API validates a submission by decoding
//! it into the kind's argument type ([`JobKind::validate`]), so a malformed
//! payload is refused at the door instead of poisoning a worker.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

/// The kinds of job Hopper runs. Each one is a queue of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobKind {
    /// Diagnostic kind: returns its message; can sleep or fail on request.
    Echo,
    /// Diagnostic kind for benchmarks: one Redis INCR as its effect.
    Noop,
    /// Extract, chunk and store a document, then start its pipeline's
    /// workflow (embed jobs, then `summarize`).
    Ingest,
    /// Embed texts (or a document's chunks) with a transformer.
    Embed,
    /// Finish an embedded document: move it on once every embed batch is
    /// done (the body of its pipeline's workflow) and summarise it when asked.
    Summarize,
    /// Deliver a signed completion callback (made by Hopper, never
    /// submitted by clients).
    Webhook,
}

impl JobKind {
    /// Every kind, in a stable order.
    pub const ALL: [JobKind; 6] = [
        JobKind::Echo,
        JobKind::Noop,
        JobKind::Ingest,
        JobKind::Embed,
        JobKind::Summarize,
        JobKind::Webhook,
    ];

    /// The queue name of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Echo => "echo",
            JobKind::Noop => "noop",
            JobKind::Ingest => "ingest",
            JobKind::Embed => "embed",
            JobKind::Summarize => "summarize",
            JobKind::Webhook => "webhook",
        }
    }

    /// Whether only Hopper itself queues this kind. Clients may not: a
    /// client-made webhook job would be a signed request to anywhere, and
    /// `ingest`/`summarize` jobs name a stored document by id, so a client
    /// who learned another tenant's id could re-run its pipeline. (A
    /// chunk-batch `embed` is refused by [`JobKind::validate`].)
    pub fn is_internal(self) -> bool {
        matches!(
            self,
            JobKind::Webhook | JobKind::Ingest | JobKind::Summarize
        )
    }

    /// For an internal kind, what a client does instead (for the 422).
    pub fn instead(self) -> &'static str {
        match self {
            JobKind::Webhook => "use callback_url on a job",
            JobKind::Ingest | JobKind::Summarize => "upload documents with POST /v1/documents",
            _ => "submit it as is",
        }
    }

    /// What the kind does, one line (its task description).
    pub fn description(self) -> &'static str {
        match self {
            JobKind::Echo => "Diagnostic: returns its message; can sleep or fail on request",
            JobKind::Noop => "Benchmarks: one Redis INCR as its effect",
            JobKind::Ingest => "Extract, chunk and store a document, then fan out embed jobs",
            JobKind::Embed => "Embed texts (or a document's chunks) with a transformer",
            JobKind::Summarize => {
                "Finish an embedded document: mark it ready, summarised when asked"
            }
            JobKind::Webhook => "Deliver a signed completion callback",
        }
    }

    /// The names of every kind, for error messages.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|k| k.as_str()).collect()
    }

    /// Checks that `args` decodes into this kind's argument type and is
    /// something a client may submit (the API's check of every submission;
    /// Hopper's own pushes do not go through it).
    ///
    /// The error names the offending field.
    pub fn validate(self, args: &serde_json::Value) -> Result<(), InvalidArgs> {
        if let Some(path) = nul_path(args, String::new()) {
            return Err(InvalidArgs {
                field: Some(path),
                message: "strings may not contain NUL (\\u0000): Postgres cannot store it".into(),
            });
        }
        fn check<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<(), InvalidArgs> {
            serde_path_to_error::deserialize::<_, T>(v)
                .map(|_| ())
                .map_err(InvalidArgs::from)
        }
        match self {
            JobKind::Echo => {
                let parsed: EchoArgs =
                    serde_path_to_error::deserialize(args).map_err(InvalidArgs::from)?;
                if parsed.progress_steps > EchoArgs::MAX_PROGRESS_STEPS {
                    return Err(InvalidArgs {
                        field: Some("progress_steps".into()),
                        message: format!("at most {} progress steps", EchoArgs::MAX_PROGRESS_STEPS),
                    });
                }
                Ok(())
            }
            JobKind::Noop => check::<NoopArgs>(args),
            JobKind::Ingest => check::<IngestArgs>(args),
            JobKind::Embed => {
                let parsed: EmbedArgs =
                    serde_path_to_error::deserialize(args).map_err(InvalidArgs::from)?;
                if parsed.reembed.is_some() {
                    return Err(InvalidArgs {
                        field: Some("reembed".into()),
                        message: "re-embed batches are queued by \
                                  POST /v1/document-sets/{set}/reembed only; give `texts`"
                            .into(),
                    });
                }
                if parsed.batch.is_some() {
                    // A batch names stored chunks by id: only the pipeline
                    // may queue one, for the document's own tenant.
                    return Err(InvalidArgs {
                        field: Some("batch".into()),
                        message: "chunk batches are queued by the document pipeline only; \
                                  give `texts`"
                            .into(),
                    });
                }
                parsed.check()
            }
            JobKind::Summarize => check::<SummarizeArgs>(args),
            JobKind::Webhook => check::<WebhookArgs>(args),
        }
    }

    /// Built-in queue settings for this kind; environment overrides are
    /// applied by [`crate::Config`].
    pub fn default_settings(self) -> QueueSettings {
        let base = QueueSettings::default();
        match self {
            JobKind::Echo => QueueSettings {
                concurrency: 32,
                ..base
            },
            JobKind::Noop => QueueSettings {
                concurrency: 32,
                retention: Duration::from_secs(600),
                ..base
            },
            JobKind::Ingest => QueueSettings {
                concurrency: 4,
                hard_time_limit: Duration::from_secs(600),
                soft_time_limit: Duration::from_secs(540),
                ..base
            },
            JobKind::Embed => QueueSettings {
                concurrency: 8,
                ..base
            },
            JobKind::Summarize => QueueSettings {
                concurrency: 4,
                ..base
            },
            // Receivers go down for minutes: 8 tries over about 20 minutes.
            JobKind::Webhook => QueueSettings {
                concurrency: 16,
                max_attempts: 8,
                backoff_base: Duration::from_secs(5),
                backoff_max: Duration::from_secs(600),
                soft_time_limit: Duration::from_secs(15),
                hard_time_limit: Duration::from_secs(20),
                ..base
            },
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The path of the first string (value or key) in `v` holding a NUL
/// character, which Postgres' `text` and `jsonb` cannot store.
pub fn nul_path(v: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    let here = || {
        if at.is_empty() {
            ".".to_owned()
        } else {
            at.clone()
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(here()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_path(x, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, x)| {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k.contains('\0') {
                Some(path)
            } else {
                nul_path(x, path)
            }
        }),
        _ => None,
    }
}

/// `v` with every NUL character removed from its strings and keys (for
/// values that must reach Postgres whatever they hold, such as results).
pub fn strip_nul(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(items) => Value::Array(items.iter().map(strip_nul).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, x)| (k.replace('\0', ""), strip_nul(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Job arguments that do not fit their kind, naming the field at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct InvalidArgs {
    /// Path of the offending field (`texts[2]`), when one can be named.
    pub field: Option<String>,
    /// What is wrong, as serde puts it.
    pub message: String,
}

impl From<serde_path_to_error::Error<serde_json::Error>> for InvalidArgs {
    fn from(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        // Missing/unknown fields are reported at the parent: name them.
        // A missing field is reported at its parent: name it. (An unknown
        // field's path already ends with it.)
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(|f| {
                if path == "." {
                    f.to_owned()
                } else {
                    format!("{path}.{f}")
                }
            });
        let field = missing.or_else(|| (path != ".").then_some(path));
        Self { field, message }
    }
}

/// A kind name that is not one of [`JobKind::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown job kind `{0}`")]
pub struct UnknownKind(pub String);

impl FromStr for JobKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// Per-queue behaviour: how many jobs run at once, how failures are retried
/// and how long a job may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Jobs one worker process runs at once on this queue.
    pub concurrency: usize,
    /// Attempts before a job goes to the dead letters (first run included).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each attempt (with jitter).
    pub backoff_base: Duration,
    /// Upper bound of the retry delay.
    pub backoff_max: Duration,
    /// The handler's cancellation token fires after this long.
    pub soft_time_limit: Duration,
    /// The attempt is abandoned and counted as failed after this long.
    pub hard_time_limit: Duration,
    /// How long finished job records stay in Redis (Postgres keeps them).
    pub retention: Duration,
    /// At most this many job starts per period, across every worker.
    pub rate_limit: Option<crate::rate_limit::RateLimit>,
    /// At most this many jobs of one tenant running at once, across every
    /// worker (the rest wait, parked, without holding a worker slot).
    pub tenant_concurrency: Option<u32>,
    /// Partitions the queue is split into, each with a Redis hash tag of
    /// its own so one hot queue spreads over a cluster's masters (1: not
    /// split). Set per deployment (`HOPPER_QUEUE_<NAME>_PARTITIONS`), never
    /// declared by a task; see `hopper_queue::partitions`.
    #[serde(default = "one_partition")]
    pub partitions: u16,
}

fn one_partition() -> u16 {
    1
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            soft_time_limit: Duration::from_secs(270),
            hard_time_limit: Duration::from_secs(300),
            retention: Duration::from_secs(24 * 3600),
            rate_limit: None,
            tenant_concurrency: None,
            partitions: 1,
        }
    }
}

/// Arguments of the diagnostic `echo` kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoArgs {
    /// Returned as the job's result.
    pub message: String,
    /// Sleep this long before answering (to exercise time limits and leases).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail every attempt with this error text (to exercise retries).
    #[serde(default)]
    pub fail: Option<String>,
    /// Abort the worker process (crash-recovery drills). Refused unless the
    /// worker runs with `HOPPER_ALLOW_CRASH_JOBS=1`.
    #[serde(default)]
    pub crash: bool,
    /// Fail the first this many attempts, then answer (flaky-task drills).
    #[serde(default)]
    pub fail_attempts: u32,
    /// A workflow node's upstream results: answered back as `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Report progress this many times while sleeping (progress drills):
    /// step `i` of `n` reports `{"fraction": i/n, "message": "step i"}`,
    /// then sleeps `sleep_ms / n`. 0 (the default): no reports; at most
    /// [`EchoArgs::MAX_PROGRESS_STEPS`].
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub progress_steps: u32,
}

impl EchoArgs {
    /// Most progress reports one echo job may ask for.
    pub const MAX_PROGRESS_STEPS: u32 = 1000;
}

/// Arguments of a `webhook` job: one signed `POST` of `body` to `url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookArgs {
    /// Where to deliver (checked against the allow-list again at delivery).
    pub url: String,
    /// `job.finished`.
    pub event: String,
    /// The JSON body, sent as is.
    pub body: serde_json::Value,
}

/// Arguments of the diagnostic `noop` kind (benchmarks). Its effect is one
/// Redis `INCR` of the queue's effect counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopArgs {
    /// Submission time in Unix microseconds; when present, the handler
    /// records its start latency (for the latency benchmark).
    #[serde(default)]
    pub sent_us: Option<i64>,
    /// A workflow node's upstream results (ignored: a no-op chord body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// Arguments of an `ingest` job: a stored document to extract and chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestArgs {
    /// The document to ingest.
    pub document_id: uuid::Uuid,
}

/// Most texts one stand-alone embed job may carry.
pub const MAX_EMBED_TEXTS: usize = 1024;
/// Longest text (in characters) an embed job accepts; longer ones are
/// refused rather than silently cut (the model truncates at its own limit,
/// and reports it).
pub const MAX_EMBED_TEXT_CHARS: usize = 100_000;

/// Arguments of an `embed` job: free texts (stand-alone) or one batch of a
/// document's chunks (pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedArgs {
    /// Texts to embed; the result carries their vectors.
    #[serde(default)]
    pub texts: Vec<String>,
    /// A batch of a document's chunks to embed and store.
    #[serde(default)]
    pub batch: Option<ChunkBatch>,
    /// Model name (`name` or `name@version`); the worker's default when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// A batch of a document set's re-embed (`document_sets.rs`): its
    /// chunks get vectors of `model` beside the ones they have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reembed: Option<ReembedBatch>,
}

/// One batch of a document set's re-embed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReembedBatch {
    /// The re-embed.
    pub reembed_id: uuid::Uuid,
    /// The batch's number within it.
    pub batch_no: i32,
}

/// One embed batch of a document version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkBatch {
    /// The document.
    pub document_id: uuid::Uuid,
    /// Its ingest version.
    pub version: i32,
    /// The batch's number within that version.
    pub batch_no: i32,
    /// Its chunks.
    pub chunk_ids: Vec<uuid::Uuid>,
}

impl EmbedArgs {
    /// Checks what serde cannot: exactly one of `texts` and `batch`, and
    /// the size limits.
    pub fn check(&self) -> Result<(), InvalidArgs> {
        let bad = |field: &str, message: String| InvalidArgs {
            field: Some(field.to_owned()),
            message,
        };
        let work = [
            !self.texts.is_empty(),
            self.batch.is_some(),
            self.reembed.is_some(),
        ];
        match work.iter().filter(|w| **w).count() {
            0 => return Err(bad("texts", "give `texts` (non-empty) or `batch`".into())),
            1 => {}
            _ if self.batch.is_some() => {
                return Err(bad("batch", "give `texts` or `batch`, not both".into()));
            }
            _ => return Err(bad("reembed", "a re-embed batch has no `texts`".into())),
        }
        if self.texts.len() > MAX_EMBED_TEXTS {
            return Err(bad(
                "texts",
                format!(
                    "at most {MAX_EMBED_TEXTS} texts per job, not {}",
                    self.texts.len()
                ),
            ));
        }
        if let Some(i) = self
            .texts
            .iter()
            .position(|t| t.chars().count() > MAX_EMBED_TEXT_CHARS)
        {
            return Err(bad(
                &format!("texts[{i}]"),
                format!("longer than {MAX_EMBED_TEXT_CHARS} characters"),
            ));
        }
        Ok(())
    }
}

/// Arguments of a `summarize` job: the body of a document version's
/// pipeline workflow, which moves the version on once its embed batches are
/// done and writes its summary when it asked for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummarizeArgs {
    /// The document to finish.
    pub document_id: uuid::Uuid,
    /// The version its workflow ran for (absent: the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// The embed batches' results, as the workflow hands them to its body
    /// (not read: Postgres says what is done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// The states a job moves through. Stored as lower-case strings in Redis and
/// Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobState {
    /// Waiting in its queue.
    Pending,
    /// Waiting for its run-at time.
    Scheduled,
    /// Claimed by a worker and running.
    Running,
    /// Failed an attempt; waiting for its retry.
    Retrying,
    /// Finished successfully.
    Succeeded,
    /// Failed for good without being dead-lettered (reserved).
    Failed,
    /// In the dead letters.
    Dead,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 8] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// Whether listings read jobs in this state from their Postgres records
    /// (Redis keeps no index of them, or forgets them after retention).
    pub fn is_finished_record(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// The stored name of this state.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will not run again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Dead | JobState::Cancelled
        )
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown job state `{s}`"))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client sees of a job: its state, attempts, timings and result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    /// The job's id.
    pub id: uuid::Uuid,
    /// The job's queue (its task name; a built-in kind or any other).
    pub kind: crate::QueueName,
    /// Current state.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The submitted arguments.
    pub args: serde_json::Value,
    /// The handler's result, once succeeded.
    pub result: Option<serde_json::Value>,
    /// The last error, if an attempt failed.
    pub error: Option<String>,
    /// The worker that ran (or runs) the last attempt.
    pub worker: Option<String>,
    /// Unix milliseconds: submitted.
    pub enqueued_at_ms: i64,
    /// Unix milliseconds: last attempt started.
    pub started_at_ms: Option<i64>,
    /// Unix milliseconds: finished (succeeded, dead or cancelled).
    pub finished_at_ms: Option<i64>,
    /// `high` or `normal`.
    #[serde(default)]
    pub priority: Option<String>,
    /// The id of the HTTP request that submitted it (while Redis keeps the job).
    #[serde(default)]
    pub request_id: Option<String>,
    /// Unix milliseconds: when a scheduled job or retry falls due.
    #[serde(default)]
    pub run_at_ms: Option<i64>,
    /// Every finished attempt, oldest first (the last 20).
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
    /// The tenant that submitted it (the API key's); only that tenant sees it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Where a signed completion callback goes when it finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Claims of the job so far: the lease token of its latest attempt. Only
    /// the attempt holding it may finish the job or write its record.
    #[serde(default)]
    pub lease: u64,
    /// The last progress report of its running (or last) attempt, as the
    /// handler sent it (while Redis keeps the job; not in Postgres records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub progress: Option<serde_json::Value>,
    /// Whom to tell of the job's outcome when it finishes (the Celery bridge
    /// publishes Celery results this way); while Redis keeps the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub notify: Option<Notify>,
}

/// Whom to tell when a job finishes, besides its webhook: when the job
/// reaches a final state (succeeded, dead, cancelled), Hopper appends
/// `{"data": <data>, "job": <the job's record>}` to the outbox named `task`
/// (`hopper_queue::outbox`; at least once), before Redis lets go of the job.
/// The Celery bridge asks for this to publish each Celery-sent job's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notify {
    /// The outbox's name (a queue name: the outbox lives under its tag).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task: crate::QueueName,
    /// Passed as is in the entry.
    pub data: serde_json::Value,
}

/// Hopper's namespace for job ids derived from foreign ids.
const FOREIGN_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f70_7065_725f_4a6f_625f_4964_735f_7631);

/// The job id of a job known elsewhere by `id` (a Celery task id): the id
/// itself when it is a UUID, else a UUIDv5 of it in Hopper's namespace, so
/// the same foreign id always names the same job and `GET /v1/jobs/{id}`
/// finds it by the id its producer knows.
pub fn foreign_job_id(id: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(id)
        .unwrap_or_else(|_| uuid::Uuid::new_v5(&FOREIGN_ID_NAMESPACE, id.as_bytes()))
}

/// The tenant of everything submitted without an API key (open mode).
pub const DEFAULT_TENANT: &str = "default";

fn default_tenant() -> String {
    DEFAULT_TENANT.to_owned()
}

/// One finished attempt of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The worker that ran it.
    #[serde(default)]
    pub worker: Option<String>,
    /// Unix ms: started.
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    /// Unix ms: ended.
    pub finished_at_ms: i64,
    /// `succeeded`, `retrying`, `dead`, `cancelled` or `worker_lost`.
    pub outcome: String,
    /// The error, when it failed.
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>().unwrap(), kind);
        }
        assert!("nope".parse::<JobKind>().is_err());
    }

    #[test]
    fn validation_names_the_bad_field() {
        let err = JobKind::Echo
            .validate(&serde_json::json!({"message": 3}))
            .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        assert_eq!(err.field.as_deref(), Some("message"));
        let err = JobKind::Echo
            .validate(&serde_json::json!({"mesage": "x"}))
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("mesage"));
        let err = JobKind::Echo.validate(&serde_json::json!({})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("message"));
        let err = JobKind::Embed
            .validate(&serde_json::json!({"texts": ["a", 2]}))
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("texts[1]"));
        let err = JobKind::Embed.validate(&serde_json::json!({})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("texts"));
        let many = vec!["x"; MAX_EMBED_TEXTS + 1];
        let err = JobKind::Embed
            .validate(&serde_json::json!({ "texts": many }))
            .unwrap_err();
        assert!(err.message.contains("at most"), "{err}");
        JobKind::Embed
            .validate(&serde_json::json!({"texts": ["fine"]}))
            .unwrap();
        JobKind::Echo
            .validate(&serde_json::json!({"message": "hi"}))
            .unwrap();
    }

    #[test]
    fn clients_cannot_submit_what_names_stored_documents() {
        for kind in [JobKind::Ingest, JobKind::Summarize, JobKind::Webhook] {
            assert!(kind.is_internal(), "{kind}");
        }
        for kind in [JobKind::Echo, JobKind::Noop, JobKind::Embed] {
            assert!(!kind.is_internal(), "{kind}");
        }
        let doc = uuid::Uuid::now_v7();
        let batch = serde_json::json!({"batch": {
            "document_id": doc, "version": 1, "batch_no": 0, "chunk_ids": [doc]}});
        let err = JobKind::Embed.validate(&batch).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("batch"));
        assert!(err.message.contains("pipeline"), "{err}");
    }

    #[test]
    fn states_parse_from_their_names() {
        assert_eq!("dead".parse::<JobState>().unwrap(), JobState::Dead);
        assert!("zombie".parse::<JobState>().is_err());
    }
}
