//! The API's protections, as tower layers and helpers: who the client is,
//! rate limits (`governor` / `tower_governor`), a cap on requests in
//! flight, CORS and security headers.
//!
//! * The client's address ([`client_addr`]) is the peer's, unless the peer
//!   is a trusted proxy (`HOPPER_TRUSTED_PROXIES`): then `X-Forwarded-For`
//!   is read from the right, skipping trusted proxies, and the first address
//!   no trusted proxy vouches for is the client. Without trusted proxies the
//!   header is ignored, so a client cannot pick its own bucket.
//! * Requests without a valid API key are limited per client address
//!   ([`AddressLimiter`], `HOPPER_RATE_PER_ADDRESS`) by `auth.rs` *before*
//!   any key lookup: a flood of made-up keys gets 429s, not Postgres
//!   queries. IPv6 clients are counted per /64 (one host's usual share).
//! * Requests with a valid key are then limited per key
//!   ([`per_caller`], `HOPPER_RATE_PER_KEY`; per client address in open
//!   mode), and all authenticated requests together by a global limit
//!   (`HOPPER_RATE_GLOBAL`): 429 with `Retry-After` and a JSON body. Both run
//!   after authentication, so unauthenticated floods cannot spend the
//!   budget of paying callers.
//! * At most `max_concurrent_requests` in flight; more are shed at once
//!   with 503 and `Retry-After` rather than queued without bound.
//! * CORS only for the origins listed in `HOPPER_CORS_ORIGINS`.
//! * Security headers on every response (nosniff, no framing, no referrer,
//!   no caching of API answers); no `Server` header is ever set.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header},
    response::IntoResponse,
};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
};
use hopper_shared::config::ApiSettings;
use ipnet::IpNet;
use tower_governor::{
    GovernorError, GovernorLayer,
    governor::{GovernorConfig, GovernorConfigBuilder},
    key_extractor::{GlobalKeyExtractor, KeyExtractor},
};
use tower_http::{cors::CorsLayer, set_header::SetResponseHeaderLayer};

use crate::{auth::Caller, error::ApiError};

/// The client of a request, as [`client_addr`] decided (set by
/// `auth::authenticate` on every `/v1` request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client's address: the peer's, or — when the peer is one of
/// `trusted` — the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy (all of them trusted: the left-most). An entry that does
/// not parse ends the walk at the last address vouched for. `None` without
/// a peer (a request not from a socket).
pub fn client_addr(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let trusts = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    let mut client = peer?.to_canonical();
    if !trusts(client) {
        return Some(client);
    }
    // Several headers are one list, in order; each proxy appends its peer.
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for hop in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(ip) = parse_hop(hop.trim()) else {
            break;
        };
        client = ip.to_canonical();
        if !trusts(client) {
            break;
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, maybe with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The bucket of an address: itself for IPv4, its /64 for IPv6 (a host
/// usually holds a whole /64, so per-address buckets would be free to
/// multiply).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The peer address of a request served with connect info.
pub fn peer(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The per-address budget of requests without a valid API key
/// (`HOPPER_RATE_PER_ADDRESS`; off when 0). Cheap to clone.
#[derive(Clone)]
pub struct AddressLimiter {
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

impl AddressLimiter {
    /// `per_second` sustained with a burst of as many; off when 0.
    pub fn new(per_second: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_second)
                .map(|n| Arc::new(RateLimiter::keyed(Quota::per_second(n)))),
        }
    }

    /// Counts one request without a valid key from `addr`; the 429 to
    /// answer once its budget is spent. Requests without an address (not
    /// from a socket) are not counted.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, addr: Option<IpAddr>) -> Result<(), Response<Body>> {
        let (Some(limiter), Some(addr)) = (&self.limiter, addr) else {
            return Ok(());
        };
        limiter.check_key(&bucket(addr)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            too_many(wait.as_secs().max(1))
        })
    }

    /// Drops idle addresses every minute, so a scan from many addresses
    /// does not grow the map for ever.
    pub fn spawn_cleanup(&self) {
        let Some(limiter) = self.limiter.clone() else {
            return;
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
    }
}

/// What an authenticated request is rate-limited as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The prefix of its API key.
    Key(String),
    /// The client address (open mode: no keys).
    Addr(IpAddr),
    /// Neither (a request not from a socket, in tests).
    Unknown,
}

/// Keys authenticated requests by their API key's prefix (the [`Caller`]
/// `auth::authenticate` resolved), else by client address. Runs after
/// authentication, so only real keys get a bucket.
#[derive(Debug, Clone, Copy)]
pub struct CallerKey;

impl KeyExtractor for CallerKey {
    type Key = RateKey;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        let ext = req.extensions();
        if let Some(prefix) = ext.get::<Caller>().and_then(|c| c.key_prefix.as_ref()) {
            return Ok(RateKey::Key(prefix.clone()));
        }
        Ok(ext
            .get::<ClientAddr>()
            .map_or(RateKey::Unknown, |c| RateKey::Addr(bucket(c.0))))
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

/// 429 with `Retry-After: wait_s` and the API's JSON error.
fn too_many(wait_s: u64) -> Response<Body> {
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry in {wait_s}s"),
    )
    .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait_s));
    res
}

/// Turns a governor refusal into the API's JSON error.
fn rate_limited(e: GovernorError) -> Response<Body> {
    match e {
        GovernorError::TooManyRequests { wait_time, headers } => {
            let wait_s = wait_time.max(1);
            let mut res = too_many(wait_s);
            if let Some(h) = headers {
                res.headers_mut().extend(h);
            }
            // Governor's own `Retry-After` may round down to 0.
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait_s));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let h = xff(&["203.0.113.7"]);
        assert_eq!(
            client_addr(Some(ip("198.51.100.1")), &h, &[]),
            Some(ip("198.51.100.1"))
        );
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_addr(Some(ip("198.51.100.1")), &h, &trusted),
            Some(ip("198.51.100.1")),
            "peer not trusted"
        );
        assert_eq!(
            client_addr(Some(ip("10.1.2.3")), &h, &trusted),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(client_addr(None, &h, &trusted), None);
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_proxies_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = Some(ip("10.0.0.1"));
        // A client cannot choose its address by sending its own header: the
        // entry its proxy appended is the right-most untrusted one.
        let h = xff(&["1.1.1.1, 203.0.113.7, 10.0.0.9"]);
        assert_eq!(client_addr(proxy, &h, &trusted), Some(ip("203.0.113.7")));
        // Two headers are one list.
        let h = xff(&["1.1.1.1", "203.0.113.7", "10.0.0.9"]);
        assert_eq!(client_addr(proxy, &h, &trusted), Some(ip("203.0.113.7")));
        // Ports, IPv6 and IPv4-mapped forms.
        let h = xff(&["203.0.113.7:4711"]);
        assert_eq!(client_addr(proxy, &h, &trusted), Some(ip("203.0.113.7")));
        let h = xff(&["[2001:db8::1]:443"]);
        assert_eq!(client_addr(proxy, &h, &trusted), Some(ip("2001:db8::1")));
        let h = xff(&["::ffff:203.0.113.7"]);
        assert_eq!(client_addr(proxy, &h, &trusted), Some(ip("203.0.113.7")));
        // Garbage stops the walk at the last address a trusted proxy vouched for.
        let h = xff(&["203.0.113.7, garbage, 10.0.0.9"]);
        assert_eq!(client_addr(proxy, &h, &trusted), Some(ip("10.0.0.9")));
        // No header: the proxy itself.
        assert_eq!(client_addr(proxy, &HeaderMap::new(), &trusted), proxy);
        // The peer as an IPv4-mapped IPv6 address is the same client.
        assert_eq!(
            client_addr(Some(ip("::ffff:198.51.100.1")), &HeaderMap::new(), &[]),
            Some(ip("198.51.100.1"))
        );
    }

    #[tokio::test]
    async fn the_address_budget_is_per_address_and_per_ipv6_64() {
        let l = AddressLimiter::new(2);
        let a = Some(ip("198.51.100.1"));
        assert!(l.check(a).is_ok() && l.check(a).is_ok());
        let res = l.check(a).unwrap_err();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            res.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        assert!(l.check(Some(ip("198.51.100.2"))).is_ok(), "another address");
        assert!(l.check(Some(ip("2001:db8:1:2::1"))).is_ok());
        assert!(l.check(Some(ip("2001:db8:1:2::ffff"))).is_ok());
        assert!(
            l.check(Some(ip("2001:db8:1:2:abcd::1"))).is_err(),
            "same /64"
        );
        assert!(l.check(Some(ip("2001:db8:1:3::1"))).is_ok(), "another /64");
        assert!(l.check(None).is_ok(), "no address: not counted");
        let off = AddressLimiter::new(0);
        assert!((0..100).all(|_| off.check(a).is_ok()));
    }
}
