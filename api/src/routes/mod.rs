//! Route table of the API. Each submodule owns one resource.

pub mod dead;
pub mod documents;
pub mod health;
pub mod jobs;
pub mod queues;
pub mod search;

use axum::{
    Router,
    routing::{get, post},
};

use crate::AppState;

/// Every route, without middleware or state.
pub fn router() -> Router<AppState> {
    Router::new()
        // `{key}` is a kind for POST and a job id for GET (one path shape).
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{key}", post(jobs::submit).get(jobs::show))
        .route("/v1/jobs/{key}/batch", post(jobs::submit_batch))
        .route("/v1/jobs/{key}/cancel", post(jobs::cancel))
        .route(
            "/v1/documents",
            post(documents::upload).get(documents::list),
        )
        .route(
            "/v1/documents/{id}",
            get(documents::show).delete(documents::delete),
        )
        .route("/v1/documents/{id}/events", get(documents::events))
        .route("/v1/search", post(search::search))
        .route("/v1/queues", get(queues::list))
        .route("/v1/queues/history", get(queues::history))
        .route("/v1/workers", get(queues::workers))
        .route("/v1/queues/{kind}/dead", get(dead::list))
        .route("/v1/queues/{kind}/dead/{action}", post(dead::act))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard/{asset}", get(crate::dashboard::asset))
        .fallback(|| async {
            crate::error::ApiError::not_found("no such route; see README.md for the API")
        })
}
