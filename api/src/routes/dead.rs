//! Dead letters of a queue: list (paged), retry and purge — by id or all.
//!
//! `GET  /v1/queues/{queue}/dead?offset=0&limit=50`
//! `POST /v1/queues/{queue}/dead/retry` with `{"ids": [...]}` or `{"all": true}`
//! `POST /v1/queues/{queue}/dead/purge` with the same body
//!
//! The queue is a built-in kind or a declared task the caller may see (422
//! for a name that is not a queue name, 404 for one no one declared).
//!
//! A retried job goes to the front of its queue with a fresh attempt budget;
//! a purged one is forgotten by Redis (its Postgres record stays).

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
use uuid::Uuid;

use crate::{AppState, auth::Caller, error::ApiError};
use hopper_shared::keys::Scope;

/// Paging of the dead-letter list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Dead letters to skip.
    #[serde(default)]
    offset: usize,
    /// Page size (1–500, default 50).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

/// Which dead letters an action applies to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    ids: Vec<Uuid>,
    #[serde(default)]
    all: bool,
}

/// `GET /v1/queues/{kind}/dead`.
#[utoipa::path(get, path = "/v1/queues/{kind}/dead", tag = "dead letters",
    params(("kind" = hopper_shared::QueueName, Path, description = "The queue (task)"), Page),
    responses((status = 200, body = crate::openapi::DeadList), (status = 404, description = "No such task", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad paging or queue name", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let task = state
        .tasks
        .get(&state.queue, &kind, &caller.tenant, "queue")
        .await?;
    let kind = task.name();
    let Query(page) = page?;
    if !(1..=500).contains(&page.limit) {
        return Err(ApiError::out_of_range("limit", 1, 500));
    }
    let dead = state
        .queue
        .dead_letters(kind, Some(&caller.tenant), page.offset, page.limit)
        .await?;
    Ok(Json(json!({
        "queue": kind,
        "total": dead.total,
        "offset": page.offset,
        "limit": page.limit,
        "jobs": dead.jobs,
    })))
}

/// `POST /v1/queues/{kind}/dead/{action}` (`retry` or `purge`).
#[utoipa::path(post, path = "/v1/queues/{kind}/dead/{action}", tag = "dead letters",
    params(("kind" = hopper_shared::QueueName, Path, description = "The queue (task)"), ("action" = crate::openapi::DeadActionName, Path, description = "What to do")),
    request_body = Selection,
    responses((status = 200, body = crate::openapi::DeadAction), (status = 404, description = "No such task or action", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody), (status = 422, description = "Give ids or all; or not a queue name", body = crate::openapi::ErrorBody)))]
pub async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, action)): Path<(String, String)>,
    body: Result<Json<Selection>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let task = state
        .tasks
        .get(&state.queue, &kind, &caller.tenant, "queue")
        .await?;
    let kind = task.name();
    if action != "retry" && action != "purge" {
        return Err(ApiError::not_found(format!(
            "no dead-letter action `{action}` (retry, purge)"
        )));
    }
    // Retrying puts work back; purging forgets it for good.
    caller.require(if action == "purge" {
        Scope::Admin
    } else {
        Scope::Submit
    })?;
    let Json(sel) = body?;
    // Exactly one of the two: `all`, or some ids.
    if sel.all != sel.ids.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_selection",
            "give either a non-empty `ids` list or `\"all\": true`",
        ));
    }
    let n = match (sel.all, action.as_str()) {
        (true, a) => state.queue.all_dead(kind, a, Some(&caller.tenant)).await?,
        (false, a) => {
            // Ids of other tenants count as not dead here: nothing of theirs
            // is touched or revealed.
            let owned = state.queue.owned(kind, &caller.tenant, &sel.ids).await?;
            if a == "retry" {
                state.queue.retry_dead(kind, &owned).await?
            } else {
                state.queue.purge_dead(kind, &owned).await?
            }
        }
    };
    tracing::info!(queue = %kind, %action, count = n, "dead letters {action}");
    Ok(Json(json!({ "queue": kind, "action": action, "count": n })))
}
