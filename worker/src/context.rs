//! [`TaskContext`]: what a task's handler knows about the attempt it runs
//! and what it may do besides returning its result.
//!
//! It reads the attempt's [`JobContext`] (set by the queue's claim loop:
//! job id, attempt, tenant, lease, cancellation token) without copying it,
//! reports progress (stored on the job, fenced by the attempt's lease, shown
//! by `GET /v1/jobs/{id}` and streamed by `GET /v1/jobs/{id}/events`; any
//! JSON, or the standard `{"fraction", "message"}` that the CLI and the
//! dashboard draw as a bar, through [`TaskContext::report`]) and pushes
//! child jobs (same tenant, optionally with an idempotency key so a re-run
//! attempt pushes each child once).

use std::sync::Arc;

use apalis_core::task::ExecutionContext;
use hopper_queue::{JobContext, ProgressStored, PushOptions, QueueClient, QueueError};
use hopper_shared::{QueueName, queue_name::InvalidQueueName};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Largest progress report, serialised.
pub const MAX_PROGRESS_BYTES: usize = 16 * 1024;

/// What a handler's attempt is and what it can do. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    exec: Arc<ExecutionContext>,
    client: Arc<QueueClient>,
}

/// Why a context operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The progress report or child arguments do not serialise.
    #[error("does not serialise as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A progress report larger than [`MAX_PROGRESS_BYTES`].
    #[error("a progress report of {0} bytes exceeds {MAX_PROGRESS_BYTES}")]
    ProgressTooLarge(usize),
    /// A progress fraction that is not a number (NaN).
    #[error("a progress fraction must be a number from 0 to 1, not NaN")]
    FractionNotANumber,
    /// A child pushed to an invalid task name.
    #[error(transparent)]
    InvalidTask(#[from] InvalidQueueName),
    /// Redis refused or failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A workflow that cannot be planned.
    #[error("invalid workflow: {0}")]
    Workflow(#[from] hopper_shared::workflows::WorkflowError),
}

impl TaskContext {
    /// The context of the attempt `exec` (a task from a Hopper queue always
    /// carries its [`JobContext`]).
    pub(crate) fn new(exec: Arc<ExecutionContext>, client: Arc<QueueClient>) -> Self {
        Self { exec, client }
    }

    /// Everything the queue knows about this attempt.
    pub fn job(&self) -> &JobContext {
        self.exec
            .data()
            .get::<JobContext>()
            .expect("Hopper's claim loop puts a JobContext on every task")
    }

    /// The job's id.
    pub fn id(&self) -> Uuid {
        self.job().id
    }

    /// The task (queue) it runs.
    pub fn task(&self) -> &QueueName {
        &self.job().queue
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.job().attempt
    }

    /// Attempts allowed in all.
    pub fn max_attempts(&self) -> u32 {
        self.job().max_attempts
    }

    /// The tenant the job belongs to (its children belong to it too).
    pub fn tenant(&self) -> &str {
        &self.job().tenant
    }

    /// Fires at the soft time limit, when a client cancels the job, and
    /// when the worker stops it (shutdown): stop soon after, returning an
    /// error ([`TaskContext::stop_reason`] says why).
    pub fn cancellation(&self) -> &CancellationToken {
        &self.job().cancel
    }

    /// Whether [`TaskContext::cancellation`] fired.
    pub fn is_cancelled(&self) -> bool {
        self.job().cancel.is_cancelled()
    }

    /// Why the cancellation fired, in words for the job's error.
    pub fn stop_reason(&self) -> &'static str {
        self.job().stop_reason()
    }

    /// The queue client (for reads; push children with
    /// [`TaskContext::push`]).
    pub fn client(&self) -> &QueueClient {
        &self.client
    }

    /// Reports progress: `progress` (at most [`MAX_PROGRESS_BYTES`] as
    /// JSON) replaces the job's previous report. False when this attempt no
    /// longer holds the job (it was recovered or cancelled; nothing was
    /// written and the handler should stop).
    pub async fn progress(&self, progress: &impl Serialize) -> Result<bool, ContextError> {
        let text = serde_json::to_string(progress)?;
        if text.len() > MAX_PROGRESS_BYTES {
            return Err(ContextError::ProgressTooLarge(text.len()));
        }
        let job = self.job();
        let stored = self
            .client
            .progress(&job.partition, &job.worker, job.id, job.lease, &text)
            .await?;
        Ok(stored == ProgressStored::Stored)
    }

    /// Reports progress in the standard shape, `{"fraction": f, "message":
    /// m}`, which `hopper submit --wait`, `hopper jobs show --follow` and
    /// the dashboard draw as a bar: `fraction` is how much is done, from 0
    /// to 1 (clamped into that range; NaN is refused), `message` says what
    /// it is doing. Like [`TaskContext::progress`]: false when this attempt
    /// no longer holds the job.
    pub async fn report(
        &self,
        fraction: f64,
        message: impl Into<String>,
    ) -> Result<bool, ContextError> {
        if fraction.is_nan() {
            return Err(ContextError::FractionNotANumber);
        }
        let report = serde_json::json!({
            "fraction": fraction.clamp(0.0, 1.0),
            "message": message.into(),
        });
        self.progress(&report).await
    }

    /// Push options whose idempotency key is this job's id and `label`:
    /// a child pushed with them is pushed once, however often this job
    /// runs (within the key's lifetime).
    pub fn once(&self, label: &str) -> PushOptions {
        PushOptions {
            idempotency_key: Some(format!("{}:{label}", self.id())),
            ..PushOptions::default()
        }
    }

    /// Pushes a child job of task `task` with `args`, for this job's tenant
    /// (unless `opts` names one) and under this job's request id. Give it an
    /// `idempotency_key` derived from this job ([`TaskContext::once`]), so a
    /// re-run attempt pushes it once. Returns the child's id.
    pub async fn push(
        &self,
        task: &str,
        args: &impl Serialize,
        mut opts: PushOptions,
    ) -> Result<Uuid, ContextError> {
        let queue = QueueName::new(task)?;
        let args = serde_json::to_value(args)?;
        let job = self.job();
        if opts.tenant.is_none() {
            opts.tenant = Some(job.tenant.to_string());
        }
        if opts.request_id.is_none() {
            opts.request_id = job.request_id.clone();
        }
        if opts.traceparent.is_none() {
            // The child's attempts continue this attempt's trace.
            opts.traceparent = hopper_shared::telemetry::current_traceparent();
        }
        Ok(self.client.push(queue, &args, &opts).await?.id)
    }
}

impl TaskContext {
    /// Submits a workflow ([`hopper_shared::workflows`]: build it with
    /// `chain`, `group`, `chord` and `task`) for this job's tenant. Its id is
    /// derived from this job and `label`, so a re-run attempt submits it
    /// once. Its tasks' arguments are not checked against their schemas
    /// here (the API does that): a node whose arguments its task refuses
    /// fails when it runs. Returns the workflow's id.
    pub async fn submit_workflow(
        &self,
        label: &str,
        spec: &hopper_shared::workflows::WorkflowSpec,
    ) -> Result<Uuid, ContextError> {
        let plan = spec.plan()?;
        let id = Uuid::new_v5(&self.id(), format!("workflow:{label}").as_bytes());
        Ok(self
            .client
            .create_workflow_as(id, spec, &plan, self.tenant())
            .await?)
    }
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("job", self.job())
            .finish()
    }
}
