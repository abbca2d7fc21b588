//! `GET /v1/queues`: depth of every queue, from the queue's own Lua;
//! `GET /v1/workers`: the workers of every queue and what they run;
//! `GET /v1/queues/history`: depth and outcomes over time, for the dashboard;
//! `PUT /v1/queues/{kind}/partitions`: the operator changes how many
//! partitions a queue spreads over (see `hopper_queue::partitions`);
//! `GET /v1/queues/{kind}/placement`: which Redis Cluster master serves
//! each partition, and whether they spread (see `hopper_queue::placement`).
//!
//! "Every queue" is every task the caller may see: the built-in kinds and
//! the declared tasks open to its tenant (see [`crate::tasks`]).

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{AppState, auth::Caller, error::ApiError};
use hopper_shared::{jobs::DEFAULT_TENANT, keys::Scope, queue_name::MAX_PARTITIONS};

/// Body of `PUT /v1/queues/{kind}/partitions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionsBody {
    /// Partitions new jobs spread over (1–64).
    #[schema(minimum = 1, maximum = 64)]
    pub partitions: u16,
}

/// `PUT /v1/queues/{kind}/partitions`: new jobs of the queue spread over
/// `partitions` partitions from now on; claims and lookups keep covering
/// every partition it ever had, so nothing is lost. Then roll the same
/// `HOPPER_QUEUE_<NAME>_PARTITIONS` out to every process (a process started
/// with another count is refused). An admin key of the operator tenant only:
/// a queue's partitions are the deployment's, shared by every tenant.
#[utoipa::path(put, path = "/v1/queues/{kind}/partitions", tag = "queues",
    params(("kind" = hopper_shared::QueueName, Path, description = "The queue (task)")),
    request_body = PartitionsBody,
    responses((status = 200, description = "The queue's partitions now: `current` (pushes) and `high` (claims and lookups)", body = crate::openapi::Partitions),
        (status = 403, description = "Not an admin key of the operator tenant", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such task", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "A count outside 1–64, or not a queue name", body = crate::openapi::ErrorBody)))]
pub async fn set_partitions(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    body: Result<Json<PartitionsBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&caller, "changes them")?;
    let task = state
        .tasks
        .get(&state.queue, &kind, &caller.tenant, "queue")
        .await?;
    let Json(body) = body?;
    if !(1..=MAX_PARTITIONS).contains(&body.partitions) {
        return Err(ApiError::out_of_range(
            "partitions",
            1,
            i64::from(MAX_PARTITIONS),
        ));
    }
    let layout = state
        .queue
        .set_partitions(task.name(), body.partitions)
        .await?;
    tracing::info!(queue = %task.name(), current = layout.current, high = layout.high,
        "queue partitions changed");
    Ok(Json(json!({
        "queue": task.name(),
        "current": layout.current,
        "high": layout.high,
    })))
}

/// 403 unless `caller` holds an admin key of the operator tenant: a
/// queue's partitions are the deployment's, shared by every tenant. `what`
/// ends the message (`changes them`, `sees where they live`).
fn operator_only(caller: &Caller, what: &str) -> Result<(), ApiError> {
    caller.require(Scope::Admin)?;
    if &*caller.tenant != DEFAULT_TENANT {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a queue's partitions are shared by every tenant: only an admin key of the \
                 operator tenant `{DEFAULT_TENANT}` {what}"
            ),
        ));
    }
    Ok(())
}

/// `GET /v1/queues/{kind}/placement`: every partition the queue ever had,
/// its hash tag's Redis Cluster slot and the master serving it (address
/// and node id); `masters_used` of `masters`, and `spread` — false when
/// partitions share a master while another master serves none
/// (`scripts/cluster-spread` moves their slots, live). On one Redis server
/// every partition is on `the server`. An admin key of the operator
/// tenant only: it names the deployment's Redis nodes.
#[utoipa::path(get, path = "/v1/queues/{kind}/placement", tag = "queues",
    params(("kind" = hopper_shared::QueueName, Path, description = "The queue (task)")),
    responses((status = 200, description = "Where each partition lives, and whether they spread", body = hopper_queue::Placement),
        (status = 403, description = "Not an admin key of the operator tenant", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such task", body = crate::openapi::ErrorBody),
        (status = 422, description = "Not a queue name", body = crate::openapi::ErrorBody)))]
pub async fn placement(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
) -> Result<Json<hopper_queue::Placement>, ApiError> {
    operator_only(&caller, "sees where they live")?;
    let task = state
        .tasks
        .get(&state.queue, &kind, &caller.tenant, "queue")
        .await?;
    Ok(Json(state.queue.placement(task.name()).await?))
}

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
