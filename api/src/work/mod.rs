//! The HTTP worker protocol, `/v1/work/*`: remote workers (the Python SDK,
//! anything that speaks HTTP) serve tasks like Rust workers do.
//!
//! A remote worker holds an API key with the `work` scope (optionally
//! limited to named queues); the key's tenant is the worker's tenant. It
//! declares its tasks ([`declare`]: runtime `http`, private to its tenant),
//! long-polls for jobs ([`claim`]), keeps its leases alive ([`heartbeat`]),
//! reports progress ([`progress`]) and finishes each attempt ([`complete`]:
//! complete or fail). Each claimed job comes with a lease token ([`token`])
//! that fences everything the worker does with it: once the attempt lost the
//! job (recovered after the worker went silent, failed by the server at its
//! hard limit, cancelled) the token answers 409 and changes nothing.
//!
//! Remote workers are registered on each queue's workers set like Rust
//! workers, under ids `http-<tenant>-<random>`, and their outcomes are
//! recorded by the same code as Rust workers' ([`hopper_queue::outcome`]):
//! the Postgres record before the ack, retries with the task's backoff, dead
//! letters. No Rust worker runs a rescuer on a queue served only over HTTP,
//! so the API does ([`rescuer`]): recovery of silent workers, the hard limit,
//! retention.
//!
//! Who may serve what: a task declared over HTTP only by its own tenant's
//! work keys (to others it does not exist: 404); a global task (declared by
//! a Rust worker) by any work key whose queue list allows it (jobs of every
//! tenant then come to it, so a deployment that keeps tenants apart
//! declares its tasks over HTTP); Hopper's internal tasks never.

pub mod attempt;
pub mod claim;
pub mod complete;
pub mod declare;
pub mod heartbeat;
pub mod openapi;
pub mod progress;
pub mod rescuer;
pub mod token;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{Router, http::StatusCode, routing::post};
use hopper_queue::Recorder;
use hopper_queue::RedisConn;
use hopper_shared::{QueueName, keys::Scope};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::{AppState, auth::Caller, error::ApiError};

/// The `/v1/work/*` routes (behind authentication, like every `/v1` route).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/work/tasks", post(declare::declare))
        .route("/v1/work/claim", post(claim::claim))
        .route("/v1/work/heartbeat", post(heartbeat::heartbeat))
        .route("/v1/work/complete", post(complete::complete))
        .route("/v1/work/fail", post(complete::fail))
        .route("/v1/work/progress", post(progress::progress))
}

/// What the work routes share: the long-poll budget, blocking connections,
/// one outcome recorder per queue, and the API's shutdown.
#[derive(Clone)]
pub struct WorkState {
    /// Long-polls that may wait at once (the rest get 503).
    pub(crate) polls: Arc<Semaphore>,
    /// Idle dedicated connections for blocking waits.
    connections: Arc<Mutex<Vec<RedisConn>>>,
    recorders: Arc<Mutex<HashMap<QueueName, Recorder>>>,
    /// Set when the API begins to shut down: long-polls answer at once.
    stopping: Arc<watch::Sender<bool>>,
}

impl WorkState {
    /// State for an API that admits `max_concurrent_requests` requests in
    /// flight: long-polls may take half of them.
    pub fn new(max_concurrent_requests: usize) -> Self {
        Self {
            polls: Arc::new(Semaphore::new((max_concurrent_requests / 2).max(1))),
            connections: Arc::default(),
            recorders: Arc::default(),
            stopping: Arc::new(watch::Sender::new(false)),
        }
    }

    /// The API is shutting down: every long-poll answers now.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`Self::stop`] was called.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether [`Self::stop`] was called.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// The recorder of `queue`'s outcomes (started on first use, with the
    /// queue's settings as the queue client knows them then).
    pub(crate) fn recorder(&self, state: &AppState, queue: &QueueName) -> Recorder {
        let mut map = self.recorders.lock().expect("recorders");
        let settings = state.queue.settings(queue);
        if let Some(r) = map.get(queue)
            && r.settings() == &settings
        {
            return r.clone();
        }
        let r = Recorder::start(
            state.queue.clone(),
            queue,
            settings,
            Some(state.pool.clone()),
            true,
        );
        map.insert(queue.clone(), r.clone());
        r
    }

    /// A dedicated connection for a blocking wait (an idle one, or a new
    /// one); give it back with [`Self::give_back`] once its command
    /// answered.
    pub(crate) async fn connection(&self, state: &AppState) -> Result<RedisConn, ApiError> {
        if let Some(c) = self.connections.lock().expect("connections").pop() {
            return Ok(c);
        }
        Ok(state.queue.dedicated_connection(claim::MAX_BLOCK).await?)
    }

    /// Keeps an idle connection for the next wait (at most 64 are kept).
    pub(crate) fn give_back(&self, conn: RedisConn) {
        let mut idle = self.connections.lock().expect("connections");
        if idle.len() < 64 {
            idle.push(conn);
        }
    }
}

/// 403 unless the caller may use the worker protocol (a `work` or `admin`
/// key).
pub(crate) fn require_worker(caller: &Caller) -> Result<(), ApiError> {
    if caller.scopes.contains(&Scope::Admin) {
        return Ok(());
    }
    caller.require(Scope::Work)
}

/// Whether the caller may serve task `name` (read from the API's cached
/// registry, no round trip per claim): 404 `unknown_task` when it is not
/// declared or is another tenant's (invisible, as for submissions), 403
/// when it is internal or outside the key's queue list.
pub(crate) async fn servable(
    state: &AppState,
    caller: &Caller,
    name: &QueueName,
) -> Result<(), ApiError> {
    let task = state
        .tasks
        .get(&state.queue, name.as_str(), &caller.tenant, "queues")
        .await?;
    let refuse = |why: String| {
        Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).field(Some("queues".into())))
    };
    if task.def.internal {
        return refuse(format!(
            "`{name}` is internal to Hopper; only its own workers serve it"
        ));
    }
    if !caller.may_serve(name) {
        return refuse(format!("this work key may not serve `{name}`"));
    }
    Ok(())
}

/// How one item of a complete, fail or progress call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Recorded.
    Completed,
    /// The attempt no longer holds the job (recovered, past its hard limit,
    /// cancelled, or already finished by another attempt): nothing changed.
    Stale,
    /// No such lease: not a token, another tenant's, or the job is gone.
    Unknown,
}

/// The HTTP status of a batch: 200 when every item was recorded, else 409
/// when any was stale, else 404.
pub(crate) fn batch_status(items: impl IntoIterator<Item = ItemStatus>) -> StatusCode {
    let mut status = StatusCode::OK;
    for item in items {
        match item {
            ItemStatus::Completed => {}
            ItemStatus::Stale => return StatusCode::CONFLICT,
            ItemStatus::Unknown => status = StatusCode::NOT_FOUND,
        }
    }
    status
}
