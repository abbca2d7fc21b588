//! HTTP metrics and the Prometheus exporter.
//!
//! [`track_http`] counts requests and times them by method, matched route
//! (never the raw path, so ids do not explode cardinality) and status.

use std::time::Instant;

use axum::{extract::MatchedPath, http::Request, middleware::Next, response::Response};
use hopper_shared::metrics as m;

/// Records one request's count and duration.
pub async fn track_http(req: Request<axum::body::Body>, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_REQUEST_SECONDS, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}
