//! `POST /v1/work/heartbeat`: a remote worker keeps its leases alive and
//! learns which attempts to stop.
//!
//! Every (queue, worker id) its lease tokens name is renewed on the queue's
//! workers set (the worker of the body too, on those queues), so recovery
//! leaves its jobs alone while it beats. The answer lists, per token:
//! `lost` — the attempt no longer holds its job (its worker was presumed
//! dead and the job recovered, the server failed it at its hard limit, it
//! was cancelled, or the token is not one of the caller's): stop, and send
//! nothing more for it; `cancel` — a client asked for its cancellation, or
//! its soft time limit passed: stop soon and fail the attempt.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
};
use hopper_queue::WorkerId;
use serde::{Deserialize, Serialize};

use super::{
    attempt::{self, Found},
    require_worker,
    token::worker_tenant,
};
use crate::{AppState, auth::Caller, error::ApiError};

/// Leases one heartbeat may carry.
pub const MAX_LEASES: usize = 5_000;

/// Body of `POST /v1/work/heartbeat`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The worker id from the last claim.
    pub worker: String,
    /// The lease tokens of the attempts it runs.
    #[serde(default)]
    pub leases: Vec<String>,
}

/// What to stop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeartbeatResponse {
    /// Tokens whose attempt no longer holds its job.
    pub lost: Vec<String>,
    /// Tokens whose attempt should stop (cancellation asked for, or soft
    /// time limit passed) and then be failed.
    pub cancel: Vec<String>,
}

/// `POST /v1/work/heartbeat`.
#[utoipa::path(post, path = "/v1/work/heartbeat", tag = "work", request_body = HeartbeatRequest,
    responses(
        (status = 200, body = HeartbeatResponse),
        (status = 403, description = "Not a work key", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad body", body = crate::openapi::ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    require_worker(&caller)?;
    let Json(req) = body?;
    if worker_tenant(&req.worker) != Some(&*caller.tenant) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_args",
            "not a worker id of this tenant: use the `worker` of a claim's answer",
        )
        .field(Some("worker".into())));
    }
    if req.leases.len() > MAX_LEASES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_args",
            format!("at most {MAX_LEASES} leases per heartbeat"),
        )
        .field(Some("leases".into())));
    }
    let body_worker = WorkerId::from_raw(&req.worker);
    let tokens: Vec<_> = req
        .leases
        .iter()
        .map(|t| attempt::parse(t, &caller))
        .collect();
    // Renew every (queue, worker) named; a pair no longer registered was
    // evicted: its attempts are lost.
    let pairs = attempt::group(
        tokens
            .iter()
            .flatten()
            .map(|t| (t.queue.clone(), t.worker.clone())),
    );
    let mut evicted = Vec::new();
    for ((queue, worker), _) in &pairs {
        if !state.queue.heartbeat(queue, worker).await? {
            evicted.push((queue.clone(), worker.clone()));
        }
        if *worker != body_worker {
            state.queue.heartbeat(queue, &body_worker).await?;
        }
    }
    let found = attempt::read(&state, &tokens).await?;
    let now = state.queue.redis_now_ms();
    let mut lost = Vec::new();
    let mut cancel = Vec::new();
    for ((text, token), found) in req.leases.iter().zip(&tokens).zip(found) {
        let gone = token
            .as_ref()
            .is_none_or(|t| evicted.contains(&(t.queue.clone(), t.worker.clone())));
        match found {
            Found::Held(held) if !gone => {
                let soft = state.queue.settings(&held.token.queue).soft_time_limit;
                let soft_passed = now - held.started_at_ms >= soft.as_millis() as i64;
                if held.cancel_requested || soft_passed {
                    cancel.push(text.clone());
                }
            }
            _ => lost.push(text.clone()),
        }
    }
    Ok(Json(HeartbeatResponse { lost, cancel }))
}
