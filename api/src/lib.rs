//! Hopper's HTTP API: a thin axum server in front of the queues.
//!
//! It validates submissions and pushes them through [`hopper_queue`], reads
//! job state (Redis first, then the Postgres record once Redis has forgotten
//! the job), reports queue depth, health and Prometheus metrics. It never
//! runs a model.
//!
//! Map: [`routes`] holds the handlers, [`error`] the JSON error type,
//! [`state`] what handlers share, [`history`] the queue-depth sampler and
//! [`dashboard`] the built-in page that reads it, [`retention`] the Postgres
//! retention sweep, [`telemetry`] the HTTP metrics and the Prometheus
//! exporter, [`work`] the HTTP worker protocol (`/v1/work/*`: remote
//! workers claim and finish jobs) and its rescuer. [`app`] assembles the
//! router with tower-http's middleware; [`serve`] checks the services,
//! migrates and listens.

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod history;
pub mod limits;
pub mod openapi;
pub mod query_lane;
pub mod query_vectors;
pub mod retention;
pub mod routes;
pub mod state;
pub mod tasks;
pub mod telemetry;
pub mod work;

use std::time::Duration;

use anyhow::Context;
use axum::{Router, error_handling::HandleErrorLayer, http::HeaderName};
use hopper_queue::QueueClient;
use hopper_shared::{Config, db};
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::{
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

pub use state::AppState;

/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The router with every route and middleware.
///
/// From the outside in: request id, trace span, security headers, CORS,
/// the JSON shape of errors made below the handlers, the cap on requests in
/// flight, the body limit and the request timeout; then, for `/v1` only,
/// authentication (with the per-address limit of requests without a valid
/// key, before any key lookup), the global rate limit and the per-key one.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let max_body = state.config.max_upload_bytes;
    let settings = state.config.api.clone();
    let mut v1 = routes::v1().merge(work::router());
    if let Some(per_caller) = limits::per_caller(&settings) {
        v1 = v1.layer(per_caller);
    }
    if let Some(global) = limits::global(&settings) {
        v1 = v1.layer(global);
    }
    let v1 = v1.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    let router = v1
        .merge(routes::public())
        .fallback(routes::fallback)
        // One body limit for every route (tower-http's, answering 413), not
        // axum's per-extractor 2 MB default.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(telemetry::track_http))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(limits::overloaded))
                .load_shed()
                // One semaphore for every route (the per-route
                // `concurrency_limit` would give each route its own).
                .layer(GlobalConcurrencyLimitLayer::new(
                    settings.max_concurrent_requests,
                ))
                .layer(RequestBodyLimitLayer::new(max_body))
                .layer(TimeoutLayer::with_status_code(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                )),
        )
        .layer(axum::middleware::map_response(
            move |res: axum::response::Response| async move { error::ensure_json(res, max_body) },
        ))
        .layer(limits::cors(&settings));
    limits::with_security_headers(router)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(
                    |req: &axum::http::Request<axum::body::Body>| {
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        let span = tracing::info_span!("http", method = %req.method(), uri = %req.uri(), request_id = %id,
                            otel.name = format!("{} {}", req.method(), req.uri().path()), otel.kind = "server");
                        // A caller's own W3C trace context is continued.
                        let traceparent = req.headers().get(hopper_shared::telemetry::TRACEPARENT);
                        hopper_shared::telemetry::set_parent(&span, traceparent.and_then(|v| v.to_str().ok()));
                        span
                    },
                ))
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
        .with_state(state)
}

/// Connects to Redis and Postgres, applies migrations and serves until
/// SIGTERM/SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let queue = QueueClient::connect(&config)
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))?;
    // Every process agrees on each queue's partitions, or does not start.
    queue.check_partitions(&[]).await?;
    let pool = db::pool(&config, 32)?;
    db::ping(&pool).await.with_context(|| {
        format!(
            "cannot reach Postgres at {}",
            hopper_shared::config::redact_url(&config.database_url)
        )
    })?;
    let applied = db::migrate(&pool, &config.db_schema).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    if config.api.auth == hopper_shared::config::AuthMode::Open {
        tracing::warn!(
            "OPEN MODE (HOPPER_AUTH=open): no API keys are checked; every caller is tenant \
             `default` with every scope. For local development only."
        );
    }
    let metrics = hopper_shared::metrics::install_exporter();
    let state = AppState::new(config.clone(), queue, pool, metrics);
    state
        .history
        .spawn_sampler(state.queue.clone(), state.tasks.clone());
    state.keys.spawn_revocation_watch(state.pool.clone());
    state.unauthenticated.spawn_cleanup();
    retention::spawn_sweeper(state.pool.clone(), config.retention);
    work::rescuer::spawn(state.clone());
    if config.scheduler {
        // Never stopped: it dies with the process, and a tick it was firing
        // is either wholly done or left to the other schedulers.
        hopper_queue::scheduler::spawn_scheduler(
            state.queue.clone(),
            tokio_util::sync::CancellationToken::new(),
        );
    }
    let work = state.work.clone();
    let listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.api_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "hopper-api listening");
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Long-polls answer now, so the drain does not wait for them.
        work.stop();
    })
    .await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
