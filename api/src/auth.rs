//! Who is calling: an API key resolved to a [`Caller`] (tenant and scopes).
//!
//! [`authenticate`] runs in front of every `/v1` route. It first settles the
//! client's address (`limits::client_addr`: the peer, or `X-Forwarded-For`
//! from a trusted proxy). In keys mode (the default) it reads
//! `Authorization: Bearer hop_…`, finds the key by its prefix in a short
//! in-memory cache ([`KeyCache`]) or Postgres, checks the secret in constant
//! time and refuses missing, malformed, unknown or revoked keys with 401.
//! In open mode (`HOPPER_AUTH=open`, local development) every caller is
//! tenant `default` with every scope.
//!
//! Abuse before authentication: every request that does not present a
//! cached valid key is counted against its client address's budget
//! (`limits::AddressLimiter`) *before* Postgres is asked, and refused with
//! 429 once it is spent; a valid key is never charged there (it is limited
//! per key after this middleware). So a stream of made-up well-formed keys
//! costs a bounded number of lookups per address
//! (`hopper_api_key_lookups_total` counts them), and failed lookups are
//! cached like good ones.
//!
//! Revocation reaches every replica within [`REVOCATION_BOUND`]: each
//! replica polls Postgres for recently revoked prefixes every
//! [`REVOCATION_POLL`] (however they were revoked: API, CLI or SQL), and a
//! cached key is trusted only while the last successful poll is that
//! recent; otherwise the key is looked up again on each request.
//!
//! Handlers take a [`Caller`] and call [`Caller::require`] with the scope
//! they need (403 otherwise); everything they read or write is filtered by
//! `caller.tenant`, so another tenant's ids answer 404.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use moka::sync::Cache;

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use deadpool_postgres::Pool;
use hopper_shared::{
    config::AuthMode,
    jobs::DEFAULT_TENANT,
    keys::{self, Scope, StoredKey},
    metrics as m,
};

use crate::{
    AppState,
    error::ApiError,
    limits::{self, ClientAddr},
};

/// How long a looked-up key (or its absence) is reused before Postgres is
/// asked again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// How often each replica asks Postgres which keys were revoked lately.
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// A cached valid key is trusted only while the last successful revocation
/// poll *started* less than this ago, so a key revoked anywhere stops
/// working on every replica within it (plus one request's time).
pub const REVOCATION_BOUND: Duration = Duration::from_millis(750);
/// Each poll re-reads revocations from this long before the previous poll's
/// clock: a revoking transaction stamps `revoked_at` when it starts and may
/// commit later (bounded by the statement timeout).
const REVOCATION_OVERLAP_MS: i64 = 120_000;
/// Most prefixes the cache holds (least recently used go first).
const MAX_CACHED_KEYS: u64 = 10_000;
/// How long a looked-up prefix is kept at all: past [`KEY_CACHE_TTL`] a
/// valid key is re-checked without charging its client address.
const KEY_CACHE_KEEP: Duration = Duration::from_secs(60);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Whose data the request reaches.
    pub tenant: Arc<str>,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The key's prefix (`None` in open mode).
    pub key_prefix: Option<String>,
    /// The queues a `work` key may serve (`None`: any its tenant may serve).
    pub queues: Option<Arc<[hopper_shared::QueueName]>>,
}

impl Caller {
    fn open() -> Self {
        Self {
            tenant: DEFAULT_TENANT.into(),
            scopes: Scope::ALL.to_vec(),
            key_prefix: None,
            queues: None,
        }
    }

    /// 403 unless the caller's key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this API key lacks the `{scope}` scope"),
            ))
        }
    }

    /// Whether the key's queue list allows serving `queue` (no list: any).
    pub fn may_serve(&self, queue: &hopper_shared::QueueName) -> bool {
        self.queues.as_ref().is_none_or(|q| q.contains(queue))
    }

    /// Whether a record of `tenant` belongs to this caller.
    pub fn owns(&self, tenant: &str) -> bool {
        *self.tenant == *tenant
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| unauthorized("this route needs an API key"))
    }
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

/// A key found in Postgres, with the caller it makes.
#[derive(Debug)]
struct Known {
    key: StoredKey,
    caller: Caller,
}

/// A looked-up prefix: its key (`None`: no such key), and when the lookup
/// started.
#[derive(Debug, Clone)]
struct Entry {
    known: Option<Arc<Known>>,
    at: Instant,
}

/// What the cache says about a token.
#[derive(Debug)]
enum Cached {
    /// A valid key, fresh enough to trust.
    Valid(Caller),
    /// Known bad: no such key, revoked, or a wrong secret.
    Refused,
    /// A valid key due for re-checking (expired, or revocations unknown
    /// lately): look it up without charging the address.
    Recheck,
    /// Never seen (or long ago): charge the address, then look it up.
    Unknown,
}

/// Keys looked up recently, by prefix, and what the revocation poll
/// learned: `moka` caches, bounded in size and time.
#[derive(Clone)]
pub struct KeyCache {
    /// Looked-up prefixes (at most [`MAX_CACHED_KEYS`], each for
    /// [`KEY_CACHE_KEEP`]).
    entries: Cache<String, Entry>,
    /// Prefixes revoked lately (as the revocation poll or this replica's
    /// own revoke saw), with when that was learned; kept twice the TTL.
    revoked: Cache<String, Instant>,
    /// When the last successful revocation poll started.
    polled_at: Arc<Mutex<Option<Instant>>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(MAX_CACHED_KEYS)
                .time_to_live(KEY_CACHE_KEEP)
                .build(),
            revoked: Cache::builder()
                .max_capacity(MAX_CACHED_KEYS)
                .time_to_live(KEY_CACHE_TTL * 2)
                .build(),
            polled_at: Arc::default(),
        }
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.entries.entry_count())
            .field("revoked", &self.revoked.entry_count())
            .finish()
    }
}

impl KeyCache {
    /// What the cache knows about `prefix` with `secret`, without Postgres.
    fn cached(&self, prefix: &str, secret: &str) -> Cached {
        if self.revoked.contains_key(prefix) {
            return Cached::Refused;
        }
        let Some(e) = self.entries.get(prefix) else {
            return Cached::Unknown;
        };
        let watched = self
            .polled_at
            .lock()
            .expect("key cache lock")
            .is_some_and(|t| t.elapsed() < REVOCATION_BOUND);
        let fresh = e.at.elapsed() < KEY_CACHE_TTL;
        match e.known {
            Some(k) if k.key.info.revoked_at_ms.is_none() && k.key.matches(secret) => {
                if fresh && watched {
                    Cached::Valid(k.caller.clone())
                } else {
                    Cached::Recheck
                }
            }
            _ if fresh => Cached::Refused,
            _ => Cached::Unknown,
        }
    }

    /// Looks `prefix` up in Postgres (counted), caches the answer, and
    /// returns the caller when `secret` is its live key's.
    async fn lookup(
        &self,
        pool: &Pool,
        prefix: &str,
        secret: &str,
    ) -> Result<Option<Caller>, ApiError> {
        metrics::counter!(m::API_KEY_LOOKUPS).increment(1);
        let at = Instant::now();
        let known = keys::find(pool, prefix).await?.map(|key| {
            let caller = Caller {
                tenant: key.info.tenant.as_str().into(),
                scopes: key.info.scopes.clone(),
                key_prefix: Some(key.info.prefix.clone()),
                queues: key.info.queues.as_deref().map(Arc::from),
            };
            Arc::new(Known { key, caller })
        });
        self.entries.insert(
            prefix.to_owned(),
            Entry {
                known: known.clone(),
                at,
            },
        );
        // A revocation learned while the lookup ran wins over what it read
        // (`learn` records it before this check can miss it).
        let revoked = self.revoked.contains_key(prefix);
        Ok(known
            .filter(|k| !revoked && k.key.info.revoked_at_ms.is_none() && k.key.matches(secret))
            .map(|k| k.caller.clone()))
    }

    /// Forgets a key at once and refuses it from now on (after it was
    /// revoked through this replica).
    pub fn forget(&self, prefix: &str) {
        self.revoked.insert(prefix.to_owned(), Instant::now());
        self.entries.invalidate(prefix);
    }

    /// Records a successful revocation poll that started at `started` and
    /// found `prefixes` revoked.
    fn learn(&self, prefixes: Vec<String>, started: Instant) {
        // Past the TTL no entry read before a revocation is trusted any
        // more (and the poll re-reads recent ones): `revoked` forgets them
        // after twice that.
        for prefix in prefixes {
            self.revoked.insert(prefix.clone(), started);
            self.entries.invalidate(&prefix);
        }
        *self.polled_at.lock().expect("key cache lock") = Some(started);
    }

    /// Polls Postgres for revoked keys every [`REVOCATION_POLL`] for as long
    /// as the process runs (see the module docs).
    pub fn spawn_revocation_watch(&self, pool: Pool) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REVOCATION_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut since_ms: Option<i64> = None;
            let mut failing = false;
            loop {
                tick.tick().await;
                let started = Instant::now();
                let from = since_ms.map(|s| s - REVOCATION_OVERLAP_MS);
                match keys::revoked_since(&pool, from).await {
                    Ok((now_ms, prefixes)) => {
                        cache.learn(prefixes, started);
                        since_ms = Some(now_ms);
                        if std::mem::take(&mut failing) {
                            tracing::info!(
                                "revoked API keys are read again; cached keys are trusted"
                            );
                        }
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(
                                "cannot read revoked API keys ({e}); every key is looked up \
                                 on each request until this recovers"
                            );
                        }
                    }
                }
            }
        });
    }

    /// The caller holding `token` (`Ok(None)`: unknown, revoked, wrong
    /// secret, or not a key at all), charging `addr`'s budget for anything
    /// but a cached valid key before Postgres is asked; `Err` is the answer
    /// to give instead (429 past the budget, 503 without Postgres).
    async fn resolve(
        &self,
        state: &AppState,
        token: Option<&str>,
        addr: Option<std::net::IpAddr>,
    ) -> Result<Option<Caller>, Response> {
        let Some((prefix, secret)) = token.and_then(keys::split) else {
            state
                .unauthenticated
                .check(addr)
                .map_err(refused_by_limit)?;
            return Ok(None);
        };
        let charged = match self.cached(prefix, secret) {
            Cached::Valid(caller) => return Ok(Some(caller)),
            Cached::Refused => {
                state
                    .unauthenticated
                    .check(addr)
                    .map_err(refused_by_limit)?;
                return Ok(None);
            }
            Cached::Recheck => false,
            Cached::Unknown => {
                state
                    .unauthenticated
                    .check(addr)
                    .map_err(refused_by_limit)?;
                true
            }
        };
        let found = self
            .lookup(&state.pool, prefix, secret)
            .await
            .map_err(IntoResponse::into_response)?;
        if found.is_none() && !charged {
            // Counted all the same; this answer is a 401 either way.
            let _ = state.unauthenticated.check(addr);
        }
        Ok(found)
    }
}

/// A 429 from the per-address limit, counted.
fn refused_by_limit(res: Response) -> Response {
    metrics::counter!(m::API_AUTH_REFUSED, "outcome" => "rate_limited").increment(1);
    res
}

/// The bearer token of a request, if it sent one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware: settles the client's address and resolves the caller of a
/// `/v1` request, or answers 401 (429 past the address's budget).
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let addr = limits::client_addr(
        limits::peer(&req),
        req.headers(),
        &state.config.api.trusted_proxies,
    );
    if let Some(addr) = addr {
        req.extensions_mut().insert(ClientAddr(addr));
    }
    let caller = match state.config.api.auth {
        AuthMode::Open => Caller::open(),
        AuthMode::Keys => match state
            .keys
            .resolve(&state, bearer(req.headers()), addr)
            .await
        {
            Ok(Some(caller)) => caller,
            Ok(None) => {
                metrics::counter!(m::API_AUTH_REFUSED, "outcome" => "unauthorized").increment(1);
                let detail = if bearer(req.headers()).is_some() {
                    "the API key is invalid or revoked"
                } else {
                    "send an API key: `Authorization: Bearer hop_…` (create one with `hopper keys create`)"
                };
                return with_challenge(unauthorized(detail));
            }
            Err(res) => return res,
        },
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn with_challenge(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer hop_x_y".parse().unwrap());
        assert_eq!(bearer(&h), Some("hop_x_y"));
        h.insert(header::AUTHORIZATION, "bearer  hop_x_y ".parse().unwrap());
        assert_eq!(bearer(&h), Some("hop_x_y"));
        h.insert(header::AUTHORIZATION, "Basic dXNlcg==".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn scopes_are_required_and_tenants_compared() {
        let c = Caller {
            tenant: "a".into(),
            scopes: vec![Scope::Read],
            key_prefix: None,
            queues: Some(Arc::from(vec![hopper_shared::QueueName::new("a").unwrap()])),
        };
        assert!(c.require(Scope::Read).is_ok());
        let e = c.require(Scope::Admin).unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(c.owns("a") && !c.owns("b"));
        assert!(c.may_serve(&hopper_shared::QueueName::new("a").unwrap()));
        assert!(!c.may_serve(&hopper_shared::QueueName::new("b").unwrap()));
    }
}
