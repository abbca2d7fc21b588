//! Turning a Celery message into the Hopper job it asks for.
//!
//! [`Submitter::plan`] works the job out — the intake pump pushes it in the
//! script that takes the message ([`crate::intake`]) — and
//! [`Submitter::submit`] queues it for an intake job (a message the pump
//! could not plan, or a dead letter retried). Both parse the envelope ([`crate::envelope`]), finds
//! the Hopper task ([`crate::route`], then the registry: a task must be
//! declared), maps `[args, kwargs]` to the task's arguments and queues the
//! job under the Celery task id ([`foreign_job_id`]), so running an intake
//! job twice (a crash after the push) queues nothing twice. The job carries the message's `eta` (as a
//! delay), `expires`, time limits and, unless `ignore_result`, a
//! [`Notify`] of `celery.result` with what publishing its result needs.
//!
//! A message that cannot run is [`Submitted::Refused`]: its FAILURE result
//! is published at once (the producer's `.get()` raises instead of waiting
//! for ever) and the intake job is dead-lettered with the reason.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hopper_queue::{MAX_DELAY, Priority, PushOptions, QueueClient, QueueError};
use hopper_shared::{
    QueueName,
    jobs::{Notify, foreign_job_id},
    tasks::TaskDefinition,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::{
    RESULT_TASK,
    config::CeleryConfig,
    envelope::{self, CeleryMessage, Refusal, RefusalReason},
    publish::ResultStore,
    result::{ResultData, refusal_meta},
    route,
};

/// How long a read of the registry serves.
const REGISTRY_TTL: Duration = Duration::from_secs(1);

/// An intake job's arguments (written by `intake.lua`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntakeArgs {
    /// The kombu queue the message came from.
    pub source: String,
    /// The message: kombu's JSON envelope, as the producer pushed it.
    pub message: String,
}

/// The job a Celery message becomes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its task.
    pub queue: QueueName,
    /// Its arguments.
    pub args: serde_json::Value,
    /// Its options: the Celery id as job id, delay, expiry, limits, notify.
    pub opts: PushOptions,
}

/// What became of one message.
#[derive(Debug)]
pub enum Submitted {
    /// Queued as a job of `task` (`created` false: it was queued before).
    Queued {
        /// The Hopper task.
        task: QueueName,
        /// The job's id.
        id: uuid::Uuid,
        /// False when an earlier run of this intake job queued it already.
        created: bool,
    },
    /// Not runnable; its FAILURE result is published (when it asked for one).
    Refused(Refusal),
}

/// A failure worth another try (Redis unreachable): the intake job is retried.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Hopper's Redis.
    #[error("queueing the job failed: {0}")]
    Queue(#[from] QueueError),
    /// The result backend.
    #[error("publishing the refused message's result failed: {0}")]
    Result(#[from] redis::RedisError),
}

/// Submits Celery messages as Hopper jobs (shared by the intake task's
/// handlers; cheap to clone).
#[derive(Clone)]
pub struct Submitter {
    client: QueueClient,
    config: Arc<CeleryConfig>,
    results: ResultStore,
    registry: Arc<Mutex<Snapshot>>,
}

/// The declared tasks, as last read.
#[derive(Default)]
struct Snapshot {
    read_at: Option<Instant>,
    /// Shared, not cloned per message (a definition carries its schema).
    tasks: Vec<Arc<TaskDefinition>>,
}

impl Submitter {
    /// A submitter queueing into `client`'s Redis and publishing refusals to
    /// `results`.
    pub fn new(client: QueueClient, config: Arc<CeleryConfig>, results: ResultStore) -> Self {
        Self {
            client,
            config,
            results,
            registry: Arc::default(),
        }
    }

    /// The tenant of the jobs it makes.
    pub fn tenant(&self) -> &str {
        &self.config.tenant
    }

    /// Queues the job `job`'s message asks for (see the module docs).
    pub async fn submit(&self, job: &IntakeArgs) -> Result<Submitted, SubmitError> {
        let refusal = match self.plan(&job.message).await? {
            Ok(plan) => {
                let pushed = self
                    .client
                    .push(plan.queue.clone(), &plan.args, &plan.opts)
                    .await?;
                return Ok(Submitted::Queued {
                    task: plan.queue,
                    id: pushed.id,
                    created: pushed.created,
                });
            }
            Err(refusal) => refusal,
        };
        if let Some(meta) = refusal_meta(&refusal, OffsetDateTime::now_utc())
            && let Some(id) = &refusal.id
        {
            self.results
                .publish(
                    &self.config.result_key(id),
                    &meta,
                    self.config.result_expires_s,
                )
                .await?;
        }
        Ok(Submitted::Refused(refusal))
    }

    /// The job a message asks for, or why it cannot run (a [`Refusal`]
    /// naming the message's id and task when they could be read).
    pub async fn plan(&self, raw: &str) -> Result<Result<Plan, Refusal>, QueueError> {
        let message = match envelope::parse(raw) {
            Ok(message) => message,
            Err(refusal) => return Ok(Err(refusal)),
        };
        Ok(self
            .plan_message(&message)
            .await?
            .map_err(|refusal| refusal.for_message(&message)))
    }

    /// The job a parsed message asks for; `Err(refusal)` when it cannot run.
    async fn plan_message(
        &self,
        message: &CeleryMessage,
    ) -> Result<Result<Plan, Refusal>, QueueError> {
        let task = match self.config.routes.task_for(&message.task) {
            Ok(task) => task,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let Some(def) = self.definition(&task).await? else {
            return Ok(Err(unknown(&message.task, &task)));
        };
        if def.internal {
            return Ok(Err(Refusal::new(
                RefusalReason::UnknownTask,
                format!("task `{task}` is internal to Hopper: only Hopper queues it"),
            )));
        }
        let args = match route::arguments(def.params.as_deref(), &message.args, &message.kwargs) {
            Ok(args) => args,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let now_ms = self.client.redis_now_ms();
        let delay = message
            .eta
            .map(|eta| unix_ms(eta) - now_ms)
            .filter(|&ms| ms > 0)
            .map(|ms| Duration::from_millis(ms as u64));
        if delay.is_some_and(|d| d > MAX_DELAY) {
            return Ok(Err(Refusal::new(
                RefusalReason::Malformed,
                format!(
                    "eta is more than a year away; Hopper delays jobs by at most {} days",
                    MAX_DELAY.as_secs() / 86_400
                ),
            )));
        }
        let notify = (!message.ignore_result).then(|| Notify {
            task: RESULT_TASK,
            data: serde_json::to_value(ResultData::new(message, &self.config)).unwrap_or_default(),
        });
        let priority = match self.config.default_priority {
            Some(default) if message.priority < default => Priority::High,
            _ => Priority::Normal,
        };
        let opts = PushOptions {
            // The Celery id names the job: a message sent twice makes one job
            // while Redis keeps it (Celery itself dedups nothing).
            id: Some(foreign_job_id(&message.id)),
            delay,
            priority,
            tenant: Some(self.config.tenant.clone()),
            expires_at_ms: message.expires.map(unix_ms),
            hard_time_limit: message.hard_time_limit,
            soft_time_limit: message.soft_time_limit,
            notify,
            ..Default::default()
        };
        Ok(Ok(Plan {
            queue: task,
            args,
            opts,
        }))
    }

    /// The definition of `task` (the registry read at most once a second;
    /// its declared settings remembered for the pushes).
    async fn definition(
        &self,
        task: &QueueName,
    ) -> Result<Option<Arc<TaskDefinition>>, QueueError> {
        let mut snapshot = self.registry.lock().await;
        let fresh = snapshot
            .read_at
            .is_some_and(|at| at.elapsed() < REGISTRY_TTL);
        let known = snapshot.tasks.iter().find(|d| &d.name == task).cloned();
        if fresh && known.is_some() {
            return Ok(known);
        }
        // Stale, or a name not seen yet (declared a moment ago?): read again.
        if !fresh
            || snapshot
                .read_at
                .is_none_or(|at| at.elapsed() > REGISTRY_TTL / 10)
        {
            let tasks = self.client.tasks().await?;
            self.client.remember_settings(&tasks);
            snapshot.tasks = tasks.into_iter().map(Arc::new).collect();
            snapshot.read_at = Some(Instant::now());
        }
        Ok(snapshot.tasks.iter().find(|d| &d.name == task).cloned())
    }
}

/// The refusal of a Celery name whose Hopper task is not declared.
fn unknown(celery_name: &str, task: &QueueName) -> Refusal {
    let mut refusal = Refusal::unknown_task(celery_name);
    if task.as_str() != celery_name {
        refusal.detail = format!(
            "task `{celery_name}` is routed to `{task}`, which no worker declared: start a \
             worker that serves `{task}`"
        );
    }
    refusal
}

/// Unix ms of `t`.
fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}
