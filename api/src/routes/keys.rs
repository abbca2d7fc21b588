//! API keys of the caller's tenant (admin scope).
//!
//! `GET /v1/keys` lists them (never their secrets); `POST /v1/keys` with
//! `{"name", "scopes": ["submit", "read"]}` creates one in the caller's
//! tenant and returns the full key once (a `work` key may carry
//! `"queues": ["resize"]`, the only queues it serves); `DELETE /v1/keys/{id-or-prefix}`
//! revokes one. Keys of other tenants are invisible (404). Operators create
//! keys for any tenant with `hopper keys create` against Postgres.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use hopper_shared::keys::{self, Scope};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{AppState, auth::Caller, error::ApiError};

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label.
    #[serde(default)]
    name: String,
    /// What the key may do.
    scopes: Vec<Scope>,
    /// Only for a `work` key: the queues it may serve (left out: any).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, nullable = false)]
    queues: Option<Vec<String>>,
}

/// `GET /v1/keys`.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = crate::openapi::KeyList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let keys = keys::list(&state.pool, Some(&caller.tenant)).await?;
    Ok(Json(json!({ "keys": keys })))
}

/// `POST /v1/keys`: 201 with the key, shown this once.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKey,
    responses((status = 201, body = crate::openapi::NewKeyShown), (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad scopes or name", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewKey>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Admin)?;
    let Json(new) = body?;
    if new.scopes.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_args",
            "a key needs at least one scope (submit, read, admin, work)",
        )
        .field(Some("scopes".into())));
    }
    ApiError::no_nul("name", &new.name)?;
    if new.name.len() > 200 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_args",
            "name is at most 200 bytes",
        )
        .field(Some("name".into())));
    }
    let queues = new
        .queues
        .map(|q| {
            q.iter()
                .map(|name| {
                    hopper_shared::QueueName::new(name).map_err(|e| {
                        ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "invalid_args",
                            e.to_string(),
                        )
                        .field(Some("queues".into()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let (info, key) = keys::create_limited(
        &state.pool,
        &caller.tenant,
        &new.name,
        &new.scopes,
        queues.as_deref(),
    )
    .await
    .map_err(|e| match e {
        hopper_shared::Error::Invalid(why) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_args", why)
                .field(Some("queues".into()))
        }
        e => e.into(),
    })?;
    tracing::info!(tenant = %info.tenant, prefix = %info.prefix, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key": key, "info": info })),
    ))
}

/// `DELETE /v1/keys/{id-or-prefix}`.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id or prefix")),
    responses((status = 200, description = "Revoked", body = Object), (status = 404, description = "No live key of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let Some(prefix) = keys::revoke(&state.pool, &id, Some(&caller.tenant)).await? else {
        return Err(ApiError::not_found(format!("no live key `{id}`")));
    };
    // The key stops working at once on this replica, and on the others
    // within a second (their revocation poll, `auth.rs`).
    state.keys.forget(&prefix);
    tracing::info!(tenant = %caller.tenant, key = %id, "API key revoked");
    Ok(Json(json!({ "revoked": id })))
}
