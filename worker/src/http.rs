//! The worker's own small HTTP server (when `HOPPER_WORKER_METRICS_ADDR` is
//! set): `/metrics` for Prometheus (with the build, uptime and process gauges
//! of `hopper_shared::build_info`), `/health/live`, and `/health/ready` with
//! the build's version and commit, the process' uptime and per-component
//! detail (Redis, Postgres, the torch device, and — on a worker that embeds —
//! the engine's precision and kernels and why).

use std::sync::{Arc, OnceLock};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use deadpool_postgres::Pool;
use hopper_queue::QueueClient;
use hopper_shared::build_info::{self, BuildInfo};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::embed::{EngineChoice, ModelRegistry, stats};

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
    /// The embedding engine, on a worker that serves the embed queue.
    pub embedding: Option<EmbedHealth>,
}

/// The embedding engine as the health endpoints see it.
#[derive(Clone)]
pub struct EmbedHealth {
    /// Its precision and kernels, decided at start-up.
    pub choice: EngineChoice,
    /// The models, once loaded.
    pub models: Arc<OnceLock<Arc<ModelRegistry>>>,
}

impl EmbedHealth {
    /// The `embedding` component of `/health/ready`.
    fn component(&self) -> serde_json::Value {
        let mut v = self.choice.to_json();
        v["ok"] = json!(true);
        v["detail"] = json!(self.choice.to_string());
        let loaded = self.models.get();
        v["loaded"] = json!(loaded.is_some());
        if let Some(models) = loaded {
            v["models"] = json!(models.versions());
            v["streams"] = json!(models.default_model().streams());
        }
        v
    }

    /// Sets the engine's room gauges ([`stats`]).
    fn export(&self) {
        let Some(models) = self.models.get() else {
            return;
        };
        let s = models.stats();
        metrics::gauge!(stats::METRIC_CAPACITY).set(s.capacity as f64);
        metrics::gauge!(stats::METRIC_ADMITTED_MAX).set(s.admitted_texts_max as f64);
        metrics::gauge!(stats::METRIC_WAITING).set(s.waiting_texts as f64);
        metrics::gauge!(stats::METRIC_WAITING_MAX).set(s.waiting_texts_max as f64);
    }
}

/// The router of the worker's HTTP server.
pub fn router(health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move {
                crate::device::export_gpu_memory(h.torch_device);
                if let Some(e) = &h.embedding {
                    e.export();
                }
                build_info::export_metrics();
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
    let (ok, mut body) = hopper_shared::health::report(
        &[("redis", &redis), ("postgres", &postgres)],
        &[("device", &h.device)],
    );
    if let Some(e) = &h.embedding {
        body["components"]["embedding"] = e.component();
    }
    BuildInfo::current().insert_into(&mut body);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Binds `addr` and serves [`router`] in the background (until the process
/// ends).
pub async fn serve(addr: std::net::SocketAddr, health: Health) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (HOPPER_WORKER_METRICS_ADDR)"))?;
    tracing::info!(%addr, "worker metrics and health on http://{addr}");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(health)).await {
            tracing::error!("worker HTTP server stopped: {e}");
        }
    });
    Ok(())
}
