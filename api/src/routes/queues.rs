//! `GET /v1/queues`: depth of every queue, from the queue's own Lua;
//! `GET /v1/workers`: the workers of every queue and what they run.

use axum::{Json, extract::State};
use hopper_shared::jobs::JobKind;
use serde_json::{Value, json};

use crate::{AppState, error::ApiError};

/// Stats of every queue.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut queues = Vec::with_capacity(JobKind::ALL.len());
    for kind in JobKind::ALL {
        queues.push(state.queue.stats(kind).await?);
    }
    Ok(Json(json!({ "queues": queues })))
}

/// Workers of every queue, with heartbeat age and the jobs they hold.
pub async fn workers(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut workers = Vec::new();
    for kind in JobKind::ALL {
        workers.extend(state.queue.workers(kind).await?);
    }
    Ok(Json(json!({ "workers": workers })))
}
