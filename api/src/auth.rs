//! Who is calling: an API key resolved to a [`Caller`] (tenant and scopes).
//!
//! [`authenticate`] runs in front of every `/v1` route. In keys mode (the
//! default) it reads `Authorization: Bearer hop_…`, finds the key by its
//! prefix (a short in-memory cache spares Postgres a query per request),
//! checks the secret in constant time and refuses missing, malformed,
//! unknown or revoked keys with 401. In open mode (`HOPPER_AUTH=open`, local
//! development) every caller is tenant `default` with every scope.
//!
//! Handlers take a [`Caller`] and call [`Caller::require`] with the scope
//! they need (403 otherwise); everything they read or write is filtered by
//! `caller.tenant`, so another tenant's ids answer 404.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

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
};

use crate::{AppState, error::ApiError};

/// How long a looked-up key is trusted before Postgres is asked again (so a
/// revocation takes effect within this).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Whose data the request reaches.
    pub tenant: Arc<str>,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The key's prefix (`None` in open mode).
    pub key_prefix: Option<String>,
}

impl Caller {
    fn open() -> Self {
        Self {
            tenant: DEFAULT_TENANT.into(),
            scopes: Scope::ALL.to_vec(),
            key_prefix: None,
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

/// A looked-up key (or its absence) and when it was looked up.
type CacheEntry = (Option<StoredKey>, Instant);

/// Keys looked up recently, by prefix.
#[derive(Debug, Default, Clone)]
pub struct KeyCache {
    entries: Arc<Mutex<HashMap<String, CacheEntry>>>,
}

impl KeyCache {
    /// The caller holding `token`, `None` when the key is unknown, revoked or
    /// its secret is wrong.
    pub async fn check(&self, pool: &Pool, token: &str) -> Result<Option<Caller>, ApiError> {
        let Some((prefix, secret)) = keys::split(token) else {
            return Ok(None);
        };
        let cached = {
            let entries = self.entries.lock().expect("key cache lock");
            entries
                .get(prefix)
                .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
                .map(|(k, _)| k.clone())
        };
        let stored = match cached {
            Some(k) => k,
            None => {
                let k = keys::find(pool, prefix).await?;
                let mut entries = self.entries.lock().expect("key cache lock");
                if entries.len() > 10_000 {
                    entries.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
                }
                entries.insert(prefix.to_owned(), (k.clone(), Instant::now()));
                k
            }
        };
        Ok(stored
            .filter(|k| k.info.revoked_at_ms.is_none() && k.matches(secret))
            .map(|k| Caller {
                tenant: k.info.tenant.as_str().into(),
                scopes: k.info.scopes.clone(),
                key_prefix: Some(k.info.prefix.clone()),
            }))
    }

    /// Forgets a key at once (after it was revoked through this API).
    pub fn forget(&self, prefix: &str) {
        self.entries.lock().expect("key cache lock").remove(prefix);
    }
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

/// Middleware: resolves the caller of a `/v1` request, or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match state.config.api.auth {
        AuthMode::Open => Caller::open(),
        AuthMode::Keys => {
            let Some(token) = bearer(req.headers()) else {
                return with_challenge(unauthorized(
                    "send an API key: `Authorization: Bearer hop_…` (create one with `hopper keys create`)",
                ));
            };
            match state.keys.check(&state.pool, token).await {
                Ok(Some(caller)) => caller,
                Ok(None) => {
                    return with_challenge(unauthorized("the API key is invalid or revoked"));
                }
                Err(e) => return e.into_response(),
            }
        }
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
        };
        assert!(c.require(Scope::Read).is_ok());
        let e = c.require(Scope::Admin).unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(c.owns("a") && !c.owns("b"));
    }
}
