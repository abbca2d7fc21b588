//! `POST /v1/search`: semantic search over a tenant's chunks.
//!
//! The API holds no model: the query is embedded by an `embed` job at high
//! priority (claimed before any document batch), then pgvector's HNSW index
//! finds the nearest chunks by cosine distance.

use std::time::{Duration, Instant};

use axum::{Json, extract::State, extract::rejection::JsonRejection, http::StatusCode};
use hopper_queue::{Priority, PushOptions};
use hopper_shared::{
    documents,
    jobs::{JobKind, JobState},
    retry_policy::{self, Pauses},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{AppState, auth::Caller, error::ApiError};
use hopper_shared::keys::Scope;

/// How long a search waits for its query vector.
const EMBED_TIMEOUT: Duration = Duration::from_secs(30);

/// A search request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// What to look for (1–10,000 characters).
    #[schema(min_length = 1, max_length = 10000)]
    query: String,
    /// Hits wanted (1–100, default 10).
    #[serde(default = "default_k")]
    #[schema(minimum = 1, maximum = 100)]
    k: i64,
    /// Only this document set.
    #[serde(default)]
    document_set: Option<String>,
    /// Documents whose metadata contains this object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    /// Embedding model; the worker's default when absent.
    #[serde(default)]
    model: Option<String>,
}

fn default_k() -> i64 {
    10
}

/// `POST /v1/search`.
#[utoipa::path(post, path = "/v1/search", tag = "search", request_body = SearchRequest,
    responses((status = 200, body = crate::openapi::SearchResult), (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad query, k or filter; or the query could not be embedded", body = crate::openapi::ErrorBody),
        (status = 504, description = "No embed worker answered in time", body = crate::openapi::ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<SearchRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let Json(req) = body?;
    let bad = |field: &str, detail: &str| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_search", detail)
            .field(Some(field.into()))
    };
    if req.query.trim().is_empty() || req.query.chars().count() > 10_000 {
        return Err(bad("query", "query must be 1-10,000 characters"));
    }
    if !(1..=100).contains(&req.k) {
        return Err(bad("k", "k must be between 1 and 100"));
    }
    ApiError::no_nul("document_set", req.document_set.as_deref().unwrap_or(""))?;
    if let Some(f) = &req.filter {
        ApiError::no_nul_json("filter", f)?;
    }
    if req.filter.as_ref().is_some_and(|f| !f.is_object()) {
        return Err(bad(
            "filter",
            "filter must be a JSON object (matched by containment)",
        ));
    }
    let started = Instant::now();
    let args = json!({ "texts": [req.query], "model": req.model });
    let opts = PushOptions {
        priority: Priority::High,
        max_attempts: Some(2),
        tenant: Some(caller.tenant.to_string()),
        // A query's embed job counts against the tenant's caps like any job.
        max_unfinished: Some(state.config.api.max_pending_per_tenant),
        max_high_unfinished: Some(state.config.api.max_high_priority_per_tenant),
        ..Default::default()
    };
    let job = state.queue.push(JobKind::Embed, &args, &opts).await?;
    let (vector, model) = wait_for_vector(&state, job.id).await?;
    let embed_ms = started.elapsed().as_secs_f64() * 1e3;
    let hits = documents::search(
        &state.pool,
        &caller.tenant,
        &vector,
        req.k,
        req.document_set.as_deref(),
        req.filter.as_ref(),
    )
    .await?;
    Ok(Json(json!({
        "query": req.query,
        "k": req.k,
        "model": model,
        "embed_ms": embed_ms,
        "took_ms": started.elapsed().as_secs_f64() * 1e3,
        "hits": hits,
    })))
}

/// Polls the query's embed job until it is done, at the pace of
/// [`retry_policy::embed_poll`] (1 ms, doubling to 20 ms).
async fn wait_for_vector(state: &AppState, id: uuid::Uuid) -> Result<(Vec<f32>, String), ApiError> {
    let deadline = Instant::now() + EMBED_TIMEOUT;
    let mut pauses = Pauses::new(retry_policy::embed_poll());
    loop {
        if let Some(job) = state.queue.job(JobKind::Embed, id).await? {
            match job.state {
                JobState::Succeeded => {
                    let r = job.result.unwrap_or_default();
                    let v: Vec<f32> =
                        serde_json::from_value(r["vectors"][0].clone()).unwrap_or_default();
                    let model = r["model"].as_str().unwrap_or_default().to_owned();
                    return Ok((v, model));
                }
                JobState::Dead | JobState::Failed | JobState::Cancelled => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "embed_failed",
                        format!(
                            "the query could not be embedded: {}",
                            job.error.unwrap_or_default()
                        ),
                    ));
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "embed_timeout",
                "no embed worker answered within 30 s (is one running with --queues embed?)",
            ));
        }
        tokio::time::sleep(pauses.next_pause()).await;
    }
}
