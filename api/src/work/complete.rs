//! `POST /v1/work/complete` and `POST /v1/work/fail`: a remote worker
//! finishes attempts, many per call.
//!
//! Each item names its attempt by lease token. The batch's attempts are
//! read back in one round trip ([`super::attempt`]), then every outcome goes
//! through its queue's [`hopper_queue::Recorder`], the code Rust workers use:
//! the Postgres record first, then the fenced ack (group-committed, so a
//! batch of 100 results is one statement and one `ack.lua` call per queue),
//! retries with the task's backoff, dead letters (`attempts`, `permanent`),
//! callbacks, metrics. Per item the answer is `completed`, `stale` (the
//! attempt lost its job; nothing changed) or `unknown`; the call answers
//! 200 when all were recorded, else 409 if any was stale, else 404. A
//! repeated complete of a recorded success answers `completed` again.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::future::join_all;
use hopper_queue::{Outcome, Recorded};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    ItemStatus,
    attempt::{self, Found},
    batch_status, require_worker,
};
use crate::{AppState, auth::Caller, error::ApiError};

/// Items one call may carry.
pub const MAX_ITEMS: usize = 500;
/// An error text is cut to this many bytes.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Body of `POST /v1/work/complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// 1 to 500 results.
    pub results: Vec<Completion>,
}

/// One successful attempt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    /// The lease token from the claim.
    pub lease: String,
    /// The handler's result (any JSON).
    #[serde(default)]
    pub result: Value,
}

/// Body of `POST /v1/work/fail`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// 1 to 500 failed attempts.
    pub failures: Vec<Failure>,
}

/// One failed attempt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The lease token from the claim.
    pub lease: String,
    /// What went wrong (a traceback is welcome; cut to 64 KiB).
    pub error: String,
    /// Whether another attempt may succeed: retried with the task's backoff
    /// until its attempts run out (dead letter `attempts`); false: dead at
    /// once (`permanent`).
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

/// The answer for each item, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemResults {
    /// `stale_lease` (409) or `unknown_lease` (404) when not every item was
    /// recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<&'static str>,
    /// One per item.
    pub results: Vec<ItemResult>,
}

/// How one item went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemResult {
    /// The job (null when the token was not one of the caller's).
    pub id: Option<Uuid>,
    /// `completed`, `stale` or `unknown`.
    pub status: ItemStatus,
}

/// `POST /v1/work/complete`.
#[utoipa::path(post, path = "/v1/work/complete", tag = "work", request_body = CompleteRequest,
    responses(
        (status = 200, description = "Every result recorded", body = ItemResults),
        (status = 409, description = "Some attempt lost its job (stale_lease); see the items", body = ItemResults),
        (status = 404, description = "Some lease is unknown (unknown_lease); see the items", body = ItemResults),
        (status = 403, description = "Not a work key", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad body", body = crate::openapi::ErrorBody)))]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    require_worker(&caller)?;
    let Json(req) = body?;
    check_len(req.results.len(), "results")?;
    let items = req
        .results
        .into_iter()
        .map(|c| (c.lease, Outcome::Succeeded(c.result)))
        .collect();
    finish(&state, &caller, items).await
}

/// `POST /v1/work/fail`.
#[utoipa::path(post, path = "/v1/work/fail", tag = "work", request_body = FailRequest,
    responses(
        (status = 200, description = "Every failure recorded (retry, dead letter or cancellation)", body = ItemResults),
        (status = 409, description = "Some attempt lost its job (stale_lease); see the items", body = ItemResults),
        (status = 404, description = "Some lease is unknown (unknown_lease); see the items", body = ItemResults),
        (status = 403, description = "Not a work key", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad body", body = crate::openapi::ErrorBody)))]
pub async fn fail(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<FailRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    require_worker(&caller)?;
    let Json(req) = body?;
    check_len(req.failures.len(), "failures")?;
    let items = req
        .failures
        .into_iter()
        .map(|f| {
            let mut error = f.error;
            if error.len() > MAX_ERROR_BYTES {
                let mut cut = MAX_ERROR_BYTES;
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                error.truncate(cut);
            }
            (f.lease, Outcome::Failed(error, !f.retryable))
        })
        .collect();
    finish(&state, &caller, items).await
}

fn check_len(n: usize, field: &str) -> Result<(), ApiError> {
    if (1..=MAX_ITEMS).contains(&n) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_args",
        format!("{field} holds 1 to {MAX_ITEMS} items, not {n}"),
    )
    .field(Some(field.into())))
}

/// Records each outcome through its queue's recorder, concurrently (so the
/// recorders' group commits batch them), and answers per item.
async fn finish(
    state: &AppState,
    caller: &Caller,
    items: Vec<(String, Outcome)>,
) -> Result<Response, ApiError> {
    let tokens: Vec<_> = items
        .iter()
        .map(|(t, _)| attempt::parse(t, caller))
        .collect();
    let found = attempt::read(state, &tokens).await?;
    let mut statuses = vec![ItemStatus::Unknown; items.len()];
    let mut pending = Vec::new();
    for (i, (found, (_, outcome))) in found.into_iter().zip(items).enumerate() {
        match found {
            Found::Held(held) => pending.push((i, held, outcome)),
            Found::Succeeded if matches!(outcome, Outcome::Succeeded(_)) => {
                statuses[i] = ItemStatus::Completed
            }
            Found::Succeeded | Found::Stale => statuses[i] = ItemStatus::Stale,
            Found::Unknown => statuses[i] = ItemStatus::Unknown,
        }
    }
    let recorded = join_all(pending.iter().map(|(_, held, outcome)| {
        let recorder = state.work.recorder(state, &held.token.queue);
        let outcome = outcome.clone();
        async move { recorder.finish(&held.attempt(), outcome).await }
    }))
    .await;
    for ((i, _, _), r) in pending.iter().zip(recorded) {
        statuses[*i] = match r {
            Recorded::Done => ItemStatus::Completed,
            Recorded::LeaseLost => ItemStatus::Stale,
            Recorded::NotStored(e) => {
                return Err(ApiError::unavailable(format!(
                    "an outcome could not be stored ({e}); the job will run again"
                )));
            }
        };
    }
    let ids = attempt::ids(&tokens);
    let results: Vec<ItemResult> = ids
        .into_iter()
        .zip(&statuses)
        .map(|(id, status)| ItemResult {
            id,
            status: *status,
        })
        .collect();
    let status = batch_status(statuses.iter().copied());
    let error = match status {
        StatusCode::CONFLICT => Some("stale_lease"),
        StatusCode::NOT_FOUND => Some("unknown_lease"),
        _ => None,
    };
    Ok((status, Json(ItemResults { error, results })).into_response())
}
