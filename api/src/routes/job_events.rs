//! `GET /v1/jobs/{id}/events`: one job's state and progress as Server-Sent
//! Events, until it is over.
//!
//! The job is looked up like `GET /v1/jobs/{id}` (a job id or a Celery task
//! id; only its tenant sees it; Redis first, then the Postgres record).
//! The stream then glances at the job's hash every ~100 ms (one `HMGET` of
//! state, attempts, worker and progress: [`hopper_queue::browse::JobGlance`])
//! and sends
//!
//! - `state` `{"state", "attempt", "worker"?}` first, and whenever the state
//!   or the attempt changes;
//! - `progress` `{"progress": <as reported>, "fraction"?, "message"?}`
//!   whenever the stored report changes (`fraction` and `message` when the
//!   report has them: the standard shape of `TaskContext::report` and the
//!   Python SDK's `ctx.report`);
//! - once the job is final (succeeded, failed, dead, cancelled), a last
//!   `state` event with its `result` (succeeded) or `error` (otherwise), and
//!   the stream ends. A job already final answers that event at once.
//!
//! A job that leaves Redis without a record in Postgres ends the stream with
//! a `gone` event. Streams share the bounds of the documents' streams
//! ([`super::documents`]): `HOPPER_SSE_MAX_LIFETIME_MS`, then a `reconnect`
//! event ends the stream (reconnect to follow on), and at most
//! `HOPPER_SSE_MAX_STREAMS_PER_TENANT` open per tenant on one API replica
//! (429 beyond).

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    response::sse::{Event, KeepAlive, Sse},
};
use deadpool_postgres::Pool;
use futures::Stream;
use hopper_queue::{QueueClient, browse::JobGlance};
use hopper_shared::{
    QueueName, db,
    jobs::{JobRecord, JobState},
    keys::Scope,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    documents::{StreamSlot, reconnect_event, stream_slot},
    jobs::callers_job,
};
use crate::{AppState, auth::Caller, error::ApiError};

/// How often a stream glances at its job.
const POLL: Duration = Duration::from_millis(100);
/// How long a stream waits after Redis or Postgres failed before trying
/// again.
const BACKOFF: Duration = Duration::from_millis(500);

/// `GET /v1/jobs/{id}/events`: `state` and `progress` events until the job
/// is final (a last `state` event with its result or error), or a
/// `reconnect` event at the stream's lifetime cap.
#[utoipa::path(get, path = "/v1/jobs/{key}/events", tag = "jobs",
    params(("key" = String, Path, description = "The job id, or the task id a Celery producer knows it by")),
    responses((status = 200, description = "Server-sent events: `state` (`{\"state\", \"attempt\", \"worker\"?}`, first and on every change), `progress` (`{\"progress\", \"fraction\"?, \"message\"?}`, on every new report), and a final `state` event with `result` or `error` once the job is over; a `reconnect` event when the stream reaches its lifetime cap, `gone` when the job left Redis without a record", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such job of this tenant", body = crate::openapi::ErrorBody),
        (status = 429, description = "The tenant has its most open streams on this API replica", body = crate::openapi::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Scope::Read)?;
    let job = callers_job(&state, &caller, &id).await?;
    let slot = stream_slot(&state, &caller.tenant)?;
    let lifetime = state.config.api.sse_max_lifetime;
    let watch = Watch::start(
        &job,
        state.queue.clone(),
        state.pool.clone(),
        lifetime,
        slot,
    );
    let stream = futures::stream::unfold(watch, |mut w| async move {
        let event = w.next().await?;
        Some((Ok(event), w))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One job's event stream: what it sent last and what it sends next.
struct Watch {
    queue: QueueName,
    id: Uuid,
    client: QueueClient,
    pool: Pool,
    /// Events decided but not sent yet, oldest first.
    pending: VecDeque<Event>,
    /// The state and attempt last sent.
    sent_state: Option<(JobState, u32)>,
    /// The progress report last sent.
    sent_progress: Option<Value>,
    /// Nothing follows the pending events.
    ended: bool,
    /// When the stream ends with a `reconnect` event.
    deadline: Instant,
    lifetime: Duration,
    /// Its place in the tenant's count, freed when the stream is dropped.
    _slot: StreamSlot,
}

impl Watch {
    /// A stream that opens with `job`'s current state (and progress), or
    /// its final event when it is over already.
    fn start(
        job: &JobRecord,
        client: QueueClient,
        pool: Pool,
        lifetime: Duration,
        slot: StreamSlot,
    ) -> Self {
        let mut w = Self {
            queue: job.kind.clone(),
            id: job.id,
            client,
            pool,
            pending: VecDeque::new(),
            sent_state: None,
            sent_progress: None,
            ended: false,
            deadline: Instant::now() + lifetime,
            lifetime,
            _slot: slot,
        };
        if job.state.is_final() {
            w.finish(job);
        } else {
            w.observe(&JobGlance {
                state: job.state,
                attempts: job.attempts,
                worker: job.worker.clone(),
                progress: None,
            });
            w.observe_progress(job.progress.clone());
        }
        w
    }

    /// The next event to send; `None` once the stream is over.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            if Instant::now() >= self.deadline {
                self.ended = true;
                return Some(reconnect_event(self.lifetime));
            }
            match self.poll().await {
                Ok(()) if self.pending.is_empty() => self.pause(POLL).await,
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!(job = %self.id, error = %e, "job event stream: read failed");
                    self.pause(BACKOFF).await;
                }
            }
        }
    }

    /// One glance at the job: queues the events its changes call for.
    async fn poll(&mut self) -> anyhow::Result<()> {
        let Some(glance) = self.client.glance(self.queue.clone(), self.id).await? else {
            // Retention trimmed it (or it was removed): its record tells how
            // it ended.
            match db::job_record(&self.pool, self.id).await? {
                Some(job) if job.state.is_final() => self.finish(&job),
                _ => {
                    self.pending.push_back(event(
                        "gone",
                        json!({
                            "id": self.id,
                            "detail": "the job left the queue without a record",
                        }),
                    ));
                    self.ended = true;
                }
            }
            return Ok(());
        };
        let progress = glance
            .progress
            .as_deref()
            .and_then(|p| serde_json::from_str::<Value>(p).ok());
        if !glance.state.is_final() {
            self.observe(&glance);
            self.observe_progress(progress);
            return Ok(());
        }
        // Over: its last report first, then its full record (result, error).
        let job = match self.client.job(self.queue.clone(), self.id).await? {
            Some(job) => Some(job),
            None => db::job_record(&self.pool, self.id).await?,
        };
        // Gone between the two reads: the next glance sees where to.
        if let Some(job) = job.filter(|j| j.state.is_final()) {
            self.observe_progress(progress);
            self.finish(&job);
        }
        Ok(())
    }

    /// Queues a `state` event if the state or the attempt changed.
    fn observe(&mut self, glance: &JobGlance) {
        let now = (glance.state, glance.attempts);
        if self.sent_state == Some(now) {
            return;
        }
        self.sent_state = Some(now);
        let mut data = json!({ "state": glance.state, "attempt": glance.attempts });
        if let Some(worker) = &glance.worker {
            data["worker"] = json!(worker);
        }
        self.pending.push_back(event("state", data));
    }

    /// Queues a `progress` event if the report changed.
    fn observe_progress(&mut self, progress: Option<Value>) {
        let Some(progress) = progress else { return };
        if self.sent_progress.as_ref() == Some(&progress) {
            return;
        }
        self.pending
            .push_back(event("progress", progress_data(&progress)));
        self.sent_progress = Some(progress);
    }

    /// Queues the final `state` event of `job` (final) and ends the stream.
    fn finish(&mut self, job: &JobRecord) {
        let mut data = json!({ "state": job.state, "attempt": job.attempts });
        if let Some(worker) = &job.worker {
            data["worker"] = json!(worker);
        }
        if job.state == JobState::Succeeded {
            data["result"] = job.result.clone().unwrap_or(Value::Null);
        } else {
            data["error"] = json!(job.error);
        }
        self.pending.push_back(event("state", data));
        self.ended = true;
    }

    /// Waits `between` polls, or until the stream's deadline if sooner.
    async fn pause(&self, between: Duration) {
        tokio::time::sleep_until(self.deadline.min(Instant::now() + between)).await;
    }
}

/// The data of a `progress` event: the report as stored, and its standard
/// fields when it has them (`fraction` a number, clamped to 0–1; `message`
/// a string).
fn progress_data(progress: &Value) -> Value {
    let mut data = json!({ "progress": progress });
    if let Some(fraction) = progress
        .get("fraction")
        .and_then(Value::as_f64)
        .filter(|f| f.is_finite())
    {
        data["fraction"] = json!(fraction.clamp(0.0, 1.0));
    }
    if let Some(message) = progress.get("message").and_then(Value::as_str) {
        data["message"] = json!(message);
    }
    data
}

/// An event named `name` carrying `data` as JSON.
fn event(name: &str, data: Value) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_data_names_the_standard_fields_when_present() {
        let standard = progress_data(&json!({"fraction": 0.25, "message": "step 1"}));
        assert_eq!(
            standard,
            json!({"progress": {"fraction": 0.25, "message": "step 1"},
                   "fraction": 0.25, "message": "step 1"})
        );
        let clamped = progress_data(&json!({"fraction": 7}));
        assert_eq!(clamped["fraction"], json!(1.0));
        let other = progress_data(&json!({"stage": "holding", "fraction": "half"}));
        assert_eq!(
            other,
            json!({"progress": {"stage": "holding", "fraction": "half"}})
        );
        let scalar = progress_data(&json!(3));
        assert_eq!(scalar, json!({"progress": 3}));
    }
}
