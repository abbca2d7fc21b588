//! Liveness, readiness and Prometheus metrics.
//!
//! `/health/live` answers while the process runs. `/health/ready` checks
//! Redis and Postgres and reports each component (503 when one is down), with
//! the build's version and commit and the process' uptime. `/metrics`
//! refreshes the queue-depth gauges (every built-in and declared task's
//! queue) and the build, uptime and process gauges, then renders everything.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use hopper_shared::{
    QueueName,
    build_info::{self, BuildInfo},
    db,
    jobs::JobKind,
    metrics as m,
};
use serde_json::json;

use crate::AppState;

/// `GET /health/live`.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is up", body = Object)))]
pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = crate::openapi::Readiness), (status = 503, body = crate::openapi::Readiness)))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let redis = state.queue.clone().ping().await.map_err(|e| e.to_string());
    let postgres = db::ping(&state.pool).await.map_err(|e| e.to_string());
    let (ok, mut body) =
        hopper_shared::health::report(&[("redis", &redis), ("postgres", &postgres)], &[]);
    BuildInfo::current().insert_into(&mut body);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// `GET /metrics` in Prometheus' text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let names = match state.tasks.all_names(&state.queue).await {
        Ok(names) => names,
        Err(_) => JobKind::ALL.iter().map(|&k| QueueName::from(k)).collect(),
    };
    for name in &names {
        if let Ok(s) = state.queue.stats(name).await {
            let q = name.label();
            metrics::gauge!(m::QUEUE_PENDING, "queue" => q.clone()).set(s.pending as f64);
            metrics::gauge!(m::QUEUE_SCHEDULED, "queue" => q.clone()).set(s.scheduled as f64);
            metrics::gauge!(m::QUEUE_RUNNING, "queue" => q.clone()).set(s.running as f64);
            metrics::gauge!(m::QUEUE_DEAD, "queue" => q.clone()).set(s.dead as f64);
            metrics::gauge!(m::QUEUE_WORKERS, "queue" => q.clone()).set(s.workers as f64);
            let age = s.oldest_pending_age_ms.unwrap_or(0) as f64 / 1000.0;
            metrics::gauge!(m::QUEUE_OLDEST_PENDING_SECONDS, "queue" => q.clone()).set(age);
        }
    }
    build_info::export_metrics();
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
