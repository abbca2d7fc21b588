//! `GET /v1/queues`: depth of every queue, from the queue's own Lua;
//! `GET /v1/workers`: the workers of every queue and what they run;
//! `GET /v1/queues/history`: depth and outcomes over time, for the dashboard.
//!
//! "Every queue" is every task the caller may see: the built-in kinds and
//! the declared tasks open to its tenant (see [`crate::tasks`]).

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{AppState, auth::Caller, error::ApiError};
use hopper_shared::keys::Scope;

/// Stats of every queue.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = crate::openapi::QueueList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let names = state.tasks.names(&state.queue, &caller.tenant).await?;
    let queues =
        futures::future::try_join_all(names.iter().map(|name| state.queue.stats(name))).await?;
    Ok(Json(json!({ "queues": queues })))
}

/// Workers of every queue, with heartbeat age and the jobs they hold.
#[utoipa::path(get, path = "/v1/workers", tag = "queues",
    responses((status = 200, body = crate::openapi::WorkerList)))]
pub async fn workers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let mut workers = Vec::new();
    for kind in state.tasks.names(&state.queue, &caller.tenant).await? {
        for mut w in state.queue.workers(&kind).await? {
            // Workers run every tenant's jobs: show the caller's only.
            let ids: Vec<uuid::Uuid> = w.running.iter().filter_map(|s| s.parse().ok()).collect();
            let mine = state.queue.owned(&kind, &caller.tenant, &ids).await?;
            w.running = mine.iter().map(|id| id.to_string()).collect();
            workers.push(w);
        }
    }
    Ok(Json(json!({ "workers": workers })))
}

/// Window of `GET /v1/queues/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Minutes back (1–60, default 30).
    #[param(minimum = 1, maximum = 60)]
    minutes: Option<i64>,
}

/// `GET /v1/queues/history?minutes=`: each queue's depth over the window
/// (this API replica's samples, every 2 s) and its outcomes per minute (from
/// Redis' counters, shared by every replica).
#[utoipa::path(get, path = "/v1/queues/history", tag = "queues", params(HistoryQuery),
    responses((status = 200, body = crate::openapi::History), (status = 422, description = "Bad window", body = crate::openapi::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let Query(q) = query?;
    let minutes = q.minutes.unwrap_or(30);
    if !(1..=60).contains(&minutes) {
        return Err(ApiError::out_of_range("minutes", 1, 60));
    }
    let names = state.tasks.names(&state.queue, &caller.tenant).await?;
    let mut outcomes = serde_json::Map::new();
    for name in &names {
        outcomes.insert(
            name.to_string(),
            json!(state.queue.outcomes(name, minutes).await?),
        );
    }
    let samples: Vec<Value> = state
        .history
        .since(minutes * 60_000)
        .into_iter()
        .map(|s| {
            // Every queue was sampled: show the caller's tasks only.
            let queues: serde_json::Map<String, Value> = s
                .queues
                .iter()
                .filter(|(k, _)| names.contains(k))
                .map(|(k, d)| (k.to_string(), json!(d)))
                .collect();
            json!({ "at_ms": s.at_ms, "queues": queues })
        })
        .collect();
    Ok(Json(json!({
        "every_ms": crate::history::SAMPLE_EVERY.as_millis() as u64,
        "samples": samples,
        "outcomes": outcomes,
    })))
}
