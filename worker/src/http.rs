//! The worker's own small HTTP server (when `HOPPER_WORKER_METRICS_ADDR` is
//! set): `/metrics` for Prometheus, `/health/live`, and `/health/ready` with
//! per-component detail (Redis, Postgres, the torch device).

use std::sync::{Arc, OnceLock};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use deadpool_postgres::Pool;
use hopper_queue::QueueClient;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

/// Installs the global Prometheus recorder (once per process).
pub fn install_exporter() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    hopper_shared::metrics::SECONDS_BUCKETS,
                )
                .expect("non-empty buckets")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// The router of the worker's HTTP server.
pub fn router(health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move { h.metrics.render() }),
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
    let ok = redis.is_ok() && postgres.is_ok();
    let component = |r: &Result<(), String>| match r {
        Ok(()) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": e }),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ready" } else { "unready" },
            "components": {
                "redis": component(&redis),
                "postgres": component(&postgres),
                "device": { "ok": true, "detail": &*h.device },
            },
        })),
    )
}
