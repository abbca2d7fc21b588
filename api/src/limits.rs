//! The API's protections, as tower layers: rate limits (`tower_governor`),
//! a cap on requests in flight, CORS and security headers.
//!
//! * Per-caller rate limit on `/v1` routes, keyed by the API key's prefix
//!   (or the client address when no well-formed key is sent), and a global
//!   one over all callers: 429 with `Retry-After` and a JSON body.
//! * At most `max_concurrent_requests` in flight; more are shed at once
//!   with 503 and `Retry-After` rather than queued without bound.
//! * CORS only for the origins listed in `HOPPER_CORS_ORIGINS`.
//! * Security headers on every response (nosniff, no framing, no referrer,
//!   no caching of API answers); no `Server` header is ever set.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header},
    response::IntoResponse,
};
use hopper_shared::{config::ApiSettings, keys};
use tower_governor::{
    GovernorError, GovernorLayer,
    governor::{GovernorConfig, GovernorConfigBuilder},
    key_extractor::{GlobalKeyExtractor, KeyExtractor},
};
use tower_http::{cors::CorsLayer, set_header::SetResponseHeaderLayer};

use crate::error::ApiError;

/// What a request is rate-limited as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The prefix of the API key it sent.
    Key(String),
    /// The client address (no well-formed key).
    Addr(std::net::IpAddr),
    /// Neither (a request not from a socket, in tests).
    Unknown,
}

/// Keys requests by API key prefix, else by peer address.
#[derive(Debug, Clone, Copy)]
pub struct CallerKey;

impl KeyExtractor for CallerKey {
    type Key = RateKey;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        if let Some((prefix, _)) = crate::auth::bearer(req.headers()).and_then(keys::split) {
            return Ok(RateKey::Key(prefix.to_owned()));
        }
        Ok(req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(RateKey::Unknown, |c| RateKey::Addr(c.0.ip())))
    }
}

/// A governor configuration allowing `per_second` sustained with a burst of
/// one second's worth; `None` when `per_second` is 0 (off).
fn quota<K: KeyExtractor>(per_second: u32, key: K) -> Option<GovernorConfig<K, NoOpMiddleware>> {
    if per_second == 0 {
        return None;
    }
    GovernorConfigBuilder::default()
        .per_nanosecond((1_000_000_000 / u64::from(per_second)).max(1))
        .burst_size(per_second)
        .key_extractor(key)
        .finish()
}

use governor::middleware::NoOpMiddleware;

/// Turns a governor refusal into the API's JSON error.
fn rate_limited(e: GovernorError) -> Response<Body> {
    match e {
        GovernorError::TooManyRequests { wait_time, headers } => {
            let mut res = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {}s", wait_time.max(1)),
            )
            .into_response();
            if let Some(h) = headers {
                res.headers_mut().extend(h);
            }
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait_time.max(1)));
            res
        }
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        )
        .into_response(),
    }
}

/// The per-caller limiter, if enabled.
pub fn per_caller(
    settings: &ApiSettings,
) -> Option<GovernorLayer<CallerKey, NoOpMiddleware, Body>> {
    let conf = Arc::new(quota(settings.rate_per_key, CallerKey)?);
    spawn_cleanup(conf.clone());
    Some(GovernorLayer::new(conf).error_handler(rate_limited))
}

/// The global limiter, if enabled.
pub fn global(
    settings: &ApiSettings,
) -> Option<GovernorLayer<GlobalKeyExtractor, NoOpMiddleware, Body>> {
    let conf = quota(settings.rate_global, GlobalKeyExtractor)?;
    Some(GovernorLayer::new(conf).error_handler(rate_limited))
}

/// Drops idle per-caller state every minute, so distinct callers do not
/// grow the limiter's map for ever.
fn spawn_cleanup(conf: Arc<GovernorConfig<CallerKey, NoOpMiddleware>>) {
    let limiter = conf.limiter().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiter.retain_recent();
        }
    });
}

/// 503 for a request shed because too many are in flight.
pub fn overloaded(_: tower::BoxError) -> std::future::Ready<Response<Body>> {
    let mut res = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests in flight; retry shortly",
    )
    .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    std::future::ready(res)
}

/// CORS for the configured origins (none: no CORS headers at all).
pub fn cors(settings: &ApiSettings) -> CorsLayer {
    let origins: Vec<HeaderValue> = settings
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::LOCATION,
        ])
        .max_age(Duration::from_secs(600))
}

/// Adds the security headers to every response of `router` (unless a
/// handler set its own, as the dashboard does for its cache policy).
pub fn with_security_headers<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::CACHE_CONTROL, "no-store"))
}
