//! The caller's webhook signing secret (admin scope).
//!
//! `GET /v1/webhooks/secret` answers the tenant's own secret, derived from
//! the master secret and the tenant (`hopper_shared::webhook::tenant_secret`),
//! with the signature scheme it signs: the one secret a receiver of this
//! tenant's callbacks needs. Nothing is stored, so every replica answers the
//! same; no route shows the master secret or another tenant's secret.

use axum::{Json, extract::State, http::StatusCode};
use hopper_shared::{keys::Scope, webhook};

use crate::{AppState, auth::Caller, error::ApiError, openapi::WebhookSecret};

/// `GET /v1/webhooks/secret`.
#[utoipa::path(get, path = "/v1/webhooks/secret", tag = "webhooks",
    responses((status = 200, body = WebhookSecret),
        (status = 404, description = "Callbacks are off (no HOPPER_WEBHOOK_SECRET)", body = crate::openapi::ErrorBody)))]
pub async fn secret(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookSecret>, ApiError> {
    caller.require(Scope::Admin)?;
    let secret = state
        .config
        .webhook
        .tenant_secret(&caller.tenant)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "webhooks_off",
                "callbacks are off: HOPPER_WEBHOOK_SECRET is not set on this API",
            )
        })?;
    Ok(Json(WebhookSecret {
        tenant: caller.tenant.to_string(),
        secret,
        signature: format!(
            "Hopper-Signature: {}=<hex HMAC-SHA256(secret, \"<Hopper-Delivery>.<Hopper-Timestamp>.<raw body>\")>",
            webhook::SCHEME
        ),
    }))
}
