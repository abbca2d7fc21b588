//! Route table of the API. Each submodule owns one resource.

pub mod dead;
pub mod document_sets;
pub mod documents;
pub mod health;
pub mod job_events;
pub mod jobs;
pub mod keys;
pub mod queues;
pub mod schedules;
pub mod search;
pub mod tasks;
pub mod webhooks;
pub mod workflows;

use axum::{
    Router,
    routing::{delete, get, post, put},
};

use crate::AppState;

/// The `/v1` routes: every one needs a caller (an API key, or open mode).
pub fn v1() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(jobs::list))
        // `{key}` is a kind for POST and a job id for GET (one path shape).
        .route("/v1/jobs/{key}", post(jobs::submit).get(jobs::show))
        .route("/v1/jobs/{key}/batch", post(jobs::submit_batch))
        .route("/v1/jobs/{key}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{key}/events", get(job_events::events))
        .route("/v1/jobs/{key}/vectors", get(jobs::vectors))
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
        .route("/v1/document-sets", get(document_sets::list))
        .route("/v1/document-sets/{set}", get(document_sets::show))
        .route(
            "/v1/document-sets/{set}/reembed",
            post(document_sets::reembed),
        )
        .route(
            "/v1/document-sets/{set}/reembed/cancel",
            post(document_sets::cancel),
        )
        .route("/v1/queues", get(queues::list))
        .route("/v1/queues/history", get(queues::history))
        .route("/v1/queues/{kind}/partitions", put(queues::set_partitions))
        .route("/v1/queues/{kind}/placement", get(queues::placement))
        .route("/v1/workers", get(queues::workers))
        .route("/v1/queues/{kind}/dead", get(dead::list))
        .route("/v1/queues/{kind}/dead/{action}", post(dead::act))
        .route("/v1/tasks", get(tasks::list))
        .route("/v1/tasks/{name}", get(tasks::show).delete(tasks::remove))
        .route(
            "/v1/schedules",
            post(schedules::create).get(schedules::list),
        )
        .route(
            "/v1/schedules/{id}",
            get(schedules::show).delete(schedules::remove),
        )
        .route("/v1/schedules/{id}/pause", post(schedules::pause))
        .route("/v1/schedules/{id}/resume", post(schedules::resume))
        .route("/v1/schedules/{id}/runs", get(schedules::runs))
        .route(
            "/v1/workflows",
            post(workflows::create).get(workflows::list),
        )
        .route("/v1/workflows/{id}", get(workflows::show))
        .route("/v1/workflows/{id}/cancel", post(workflows::cancel))
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{id}", delete(keys::revoke))
        .route("/v1/webhooks/secret", get(webhooks::secret))
}

/// Routes anyone may call: health, metrics, the dashboard's page and assets
/// (its data comes from `/v1`), the OpenAPI document.
pub fn public() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard/{asset}", get(crate::dashboard::asset))
        .route("/openapi.json", get(crate::openapi::document))
}

/// 404 naming the problem, for any other path.
pub async fn fallback() -> crate::error::ApiError {
    crate::error::ApiError::not_found("no such route; see README.md for the API")
}
