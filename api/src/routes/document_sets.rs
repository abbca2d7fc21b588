//! Document sets over HTTP: each set's model and re-embed progress, and
//! switching a set to another model with zero downtime.
//!
//! `POST /v1/document-sets/{set}/reembed {"model": …}` starts a re-embed
//! (`hopper_shared::document_sets`): the set's chunks get vectors of the
//! new model as `embed` jobs in the background (progress here, dead letters
//! and retries as any job's), search keeps answering from the old vectors,
//! and the set flips to the new model when every chunk has one. The model
//! must be one a worker serves now (`hopper_shared::models::served`): 422
//! `unknown_model` names those that are. One re-embed runs per set: a
//! second is 409 `reembed_running` with the running one's `id`.
//! `POST /v1/document-sets/{set}/reembed/cancel` stops it and drops what it
//! wrote. Every route answers the caller's tenant's sets.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::IntoResponse,
};
use hopper_queue::PushOptions;
use hopper_shared::{
    document_sets::{self, ReembedStart, ReembedView, SetView},
    jobs::JobKind,
    keys::Scope,
    models,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AppState, auth::Caller, error::ApiError};

/// A tenant's document sets.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SetList {
    /// By name.
    pub sets: Vec<SetView>,
}

/// What a re-embed request asks for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReembedRequest {
    /// The model to switch to: `name` or `name@version`, one a worker
    /// serves.
    // Read by hand, so that a missing or non-string model is a 422 naming `model`.
    #[schema(value_type = String)]
    model: Option<Value>,
}

/// What cancelling a re-embed did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReembedCancelled {
    /// The cancelled re-embed.
    pub id: uuid::Uuid,
    /// Always `cancelled`.
    pub state: String,
}

fn set_not_found(set: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "document_set_not_found",
        format!("no document set {set:?} (a set is made by its first upload)"),
    )
}

/// `GET /v1/document-sets`: the caller's tenant's sets, each with its
/// model, document and chunk counts, and latest re-embed.
#[utoipa::path(get, path = "/v1/document-sets", tag = "documents",
    responses((status = 200, body = SetList)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SetList>, ApiError> {
    caller.require(Scope::Read)?;
    let sets = document_sets::list(&state.pool, &caller.tenant).await?;
    Ok(Json(SetList { sets }))
}

/// `GET /v1/document-sets/{set}`: one set.
#[utoipa::path(get, path = "/v1/document-sets/{set}", tag = "documents",
    params(("set" = String, Path, description = "The document set")),
    responses((status = 200, body = SetView),
        (status = 404, description = "No such set of this tenant", body = crate::openapi::ErrorBody),
        (status = 422, description = "A NUL byte in the set's name", body = crate::openapi::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(set): Path<String>,
) -> Result<Json<SetView>, ApiError> {
    caller.require(Scope::Read)?;
    ApiError::no_nul("set", &set)?;
    document_sets::get(&state.pool, &caller.tenant, &set)
        .await?
        .map(Json)
        .ok_or_else(|| set_not_found(&set))
}

/// `POST /v1/document-sets/{set}/reembed`: re-embeds every chunk of the
/// set with another model in the background; search answers from the old
/// vectors until the set flips. 202 with the re-embed's progress.
#[utoipa::path(post, path = "/v1/document-sets/{set}/reembed", tag = "documents",
    params(("set" = String, Path, description = "The document set")),
    request_body = ReembedRequest,
    responses((status = 202, description = "Started (done at once for a set without chunks)", body = ReembedView),
        (status = 404, description = "No such set of this tenant", body = crate::openapi::ErrorBody),
        (status = 409, description = "A re-embed of this set is running: its `id`", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "No model, a model no worker serves (`known` lists those served), the set's own model, or a NUL byte", body = crate::openapi::ErrorBody)))]
pub async fn reembed(
    State(state): State<AppState>,
    caller: Caller,
    Path(set): Path<String>,
    body: Result<Json<ReembedRequest>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    ApiError::no_nul("set", &set)?;
    let Json(req) = body?;
    let wanted = match req.model {
        Some(Value::String(m)) if !m.trim().is_empty() => m,
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_reembed",
                format!(
                    "model must be a model's name (or name@version), not {}",
                    other.map_or("nothing".into(), |v| v.to_string())
                ),
            )
            .field(Some("model".into())));
        }
    };
    ApiError::no_nul("model", &wanted)?;
    let served = models::served(&state.pool).await?;
    let target = unknown_model_unless_served(&served, &wanted, "model")?;
    let target = models::lookup(&state.pool, &target.model)
        .await?
        .ok_or_else(|| unknown_model(&served, &wanted, "model"))?;
    let grace_s = state.config.retention.reembed_grace.as_secs() as i32;
    let (queue, tenant, model) = (
        state.queue.clone(),
        caller.tenant.to_string(),
        target.model.clone(),
    );
    let started = document_sets::start_reembed(
        &state.pool,
        &caller.tenant,
        &set,
        &target,
        grace_s,
        |id, batches| async move {
            if batches.is_empty() {
                return Ok(());
            }
            let args = document_sets::batch_jobs(id, &model, &batches);
            let opts = PushOptions {
                tenant: Some(tenant),
                ..Default::default()
            };
            queue.push_many(JobKind::Embed, &args, &opts).await?;
            Ok::<_, ApiError>(())
        },
    )
    .await?;
    match started {
        ReembedStart::Started(view) => Ok((
            StatusCode::ACCEPTED,
            [("location", format!("/v1/document-sets/{set}"))],
            Json(view),
        )),
        ReembedStart::NoSuchSet => Err(set_not_found(&set)),
        ReembedStart::SameModel(model) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_reembed",
            format!("document set {set:?} uses {model} already"),
        )
        .field(Some("model".into()))),
        ReembedStart::AlreadyRunning(id) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "reembed_running",
            format!(
                "re-embed {id} of document set {set:?} is running; wait for it or cancel it \
                 (POST /v1/document-sets/{set}/reembed/cancel)"
            ),
        )
        .conflicting(id)),
    }
}

/// `POST /v1/document-sets/{set}/reembed/cancel`: stops the set's running
/// re-embed (its queued batches then do nothing) and drops the vectors it
/// wrote; the set keeps its model.
#[utoipa::path(post, path = "/v1/document-sets/{set}/reembed/cancel", tag = "documents",
    params(("set" = String, Path, description = "The document set")),
    responses((status = 200, body = ReembedCancelled),
        (status = 404, description = "No re-embed of this set is running", body = crate::openapi::ErrorBody),
        (status = 422, description = "A NUL byte in the set's name", body = crate::openapi::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(set): Path<String>,
) -> Result<Json<ReembedCancelled>, ApiError> {
    caller.require(Scope::Submit)?;
    ApiError::no_nul("set", &set)?;
    match document_sets::cancel_reembed(&state.pool, &caller.tenant, &set).await? {
        Some(id) => Ok(Json(ReembedCancelled {
            id,
            state: "cancelled".into(),
        })),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "reembed_not_found",
            format!("no re-embed of document set {set:?} is running"),
        )),
    }
}

/// 422 `unknown_model` on `field`: no worker serves `wanted`; `known`
/// lists what is served.
pub fn unknown_model(served: &[models::ServedModel], wanted: &str, field: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_model",
        format!(
            "no worker serves model {wanted}; served: {}",
            models::describe(served)
        ),
    )
    .field(Some(field.into()))
    .known(served.iter().map(|m| m.model.clone()))
}

/// The served model `wanted` names, else [`unknown_model`].
pub fn unknown_model_unless_served<'a>(
    served: &'a [models::ServedModel],
    wanted: &str,
    field: &str,
) -> Result<&'a models::ServedModel, ApiError> {
    models::find(served, wanted).ok_or_else(|| unknown_model(served, wanted, field))
}
