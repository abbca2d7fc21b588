//! The worker's own small HTTP server (when `HOPPER_WORKER_METRICS_ADDR` is
//! set): `/metrics` for Prometheus, `/health/live`, and `/health/ready` with
//! per-component detail (Redis, Postgres, the torch device).

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use deadpool_postgres::Pool;
use hopper_queue::QueueClient;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

/// What the health endpoints look at.
#[derive(Clone)]
pub struct Health {
    /// The queues' Redis.
    pub queue: QueueClient,
    /// Postgres.
    pub pool: Pool,
    /// The torch device, as described at start-up.
    pub device: Arc<str>,
    /// The torch device, for its GPU memory gauges.
    pub torch_device: tch::Device,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

/// The router of the worker's HTTP server.
pub fn router(health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move {
                crate::device::export_gpu_memory(h.torch_device);
                h.metrics.render()
            }),
        )
        .route(
            "/health/live",
            get(|| async { Json(json!({ "status": "live" })) }),
        )
        .route("/health/ready", get(ready))
        .with_state(health)
}

async fn ready(State(mut h): State<Health>) -> impl IntoResponse {
    let redis = h.queue.ping().await.map_err(|e| e.to_string());
    let postgres = hopper_shared::db::ping(&h.pool)
        .await
        .map_err(|e| e.to_string());
    let (ok, body) = hopper_shared::health::report(
        &[("redis", &redis), ("postgres", &postgres)],
        &[("device", &h.device)],
    );
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
