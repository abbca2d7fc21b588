//! `POST /v1/work/progress`: a remote worker reports how far a running
//! attempt got. The JSON (at most 16 KiB) is stored in the job's hash as
//! `progress` (the field Rust tasks write too, `hopper_queue::progress`) and
//! shown by `GET /v1/jobs/{id}`. Fenced by the lease: only the attempt that
//! holds the job writes (204); a stale attempt gets 409, an unknown lease
//! 404.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
};
use hopper_queue::ProgressStored;
use serde::Deserialize;
use serde_json::Value;

use super::{attempt, require_worker};
use crate::{AppState, auth::Caller, error::ApiError};

/// The largest progress report, as JSON text.
pub const MAX_PROGRESS_BYTES: usize = 16 * 1024;

/// Body of `POST /v1/work/progress`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// The lease token from the claim.
    pub lease: String,
    /// Any JSON, at most 16 KiB.
    pub progress: Value,
}

/// `POST /v1/work/progress`.
#[utoipa::path(post, path = "/v1/work/progress", tag = "work", request_body = ProgressRequest,
    responses(
        (status = 204, description = "Stored"),
        (status = 409, description = "The attempt lost its job (stale_lease)", body = crate::openapi::ErrorBody),
        (status = 404, description = "Unknown lease (unknown_lease)", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not a work key", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad body, or progress over 16 KiB", body = crate::openapi::ErrorBody)))]
pub async fn progress(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<ProgressRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    require_worker(&caller)?;
    let Json(req) = body?;
    let text = serde_json::to_string(&req.progress)?;
    if text.len() > MAX_PROGRESS_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_args",
            format!(
                "progress is {} bytes of JSON; at most {MAX_PROGRESS_BYTES}",
                text.len()
            ),
        )
        .field(Some("progress".into())));
    }
    ApiError::no_nul_json("progress", &req.progress)?;
    let Some(token) = attempt::parse(&req.lease, &caller) else {
        return Err(unknown_lease());
    };
    match state
        .queue
        .progress(&token.queue, &token.worker, token.id, token.lease, &text)
        .await?
    {
        ProgressStored::Stored => Ok(StatusCode::NO_CONTENT),
        ProgressStored::Stale => Err(stale_lease()),
        ProgressStored::Unknown => Err(unknown_lease()),
    }
}

/// 404 `unknown_lease`.
pub(crate) fn unknown_lease() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_lease",
        "no such lease: not a token from a claim of this tenant, or its job is gone",
    )
    .field(Some("lease".into()))
}

/// 409 `stale_lease`.
pub(crate) fn stale_lease() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "stale_lease",
        "this attempt no longer holds its job (recovered, past its hard limit, cancelled \
         or finished): nothing was changed",
    )
    .field(Some("lease".into()))
}
