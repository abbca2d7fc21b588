//! Documents: upload (multipart or JSON), list, show, delete, and a live
//! progress stream (SSE).
//!
//! An upload is validated before anything is stored (type, emptiness,
//! UTF-8 for text types, the PDF signature, the chunking options), then the
//! document is stored and its `ingest` job queued in one Postgres
//! transaction: 202 with both ids, or — when the push is refused (the
//! tenant's cap, Redis down) — the error and no row.
//!
//! Event streams are bounded: each lives at most
//! `HOPPER_SSE_MAX_LIFETIME_MS` (then a `reconnect` event ends it) and a
//! tenant holds at most `HOPPER_SSE_MAX_STREAMS_PER_TENANT` at once on one
//! API replica (counted in this process, documents' and jobs' streams
//! together — see [`super::job_events`]; 429 beyond).

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{LazyLock, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Multipart, Path, Query, Request, State, rejection::QueryRejection},
    http::{StatusCode, header::CONTENT_TYPE},
    response::{
        IntoResponse,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use hopper_queue::PushOptions;
use hopper_shared::{
    documents::{self, DocumentOptions, NewDocument},
    jobs::{IngestArgs, JobKind},
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{AppState, auth::Caller, error::ApiError};
use hopper_shared::keys::Scope;

/// Content types accepted for documents.
pub const SUPPORTED: &[&str] = &[
    "text/plain",
    "text/markdown",
    "text/html",
    "application/pdf",
];

/// A JSON upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonUpload {
    name: String,
    text: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    document_set: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    options: Option<DocumentOptions>,
}

fn unprocessable(code: &'static str, detail: impl Into<String>, field: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).field(Some(field.into()))
}

/// The content type of an upload: the declared one when it is specific,
/// else guessed from the file name.
fn content_type(declared: Option<&str>, name: &str) -> Result<String, ApiError> {
    let declared = declared
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty() && c != "application/octet-stream");
    let guessed = match name
        .rsplit('.')
        .next()
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("txt" | "text") => Some("text/plain"),
        Some("md" | "markdown") => Some("text/markdown"),
        Some("html" | "htm") => Some("text/html"),
        Some("pdf") => Some("application/pdf"),
        _ => None,
    };
    let ct = match (declared, guessed) {
        (Some(d), _) if d == "text/x-markdown" => "text/markdown".to_owned(),
        (Some(d), _) => d,
        (None, Some(g)) => g.to_owned(),
        (None, None) => "text/plain".to_owned(),
    };
    if SUPPORTED.contains(&ct.as_str()) {
        Ok(ct)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
            format!("unsupported document type `{ct}`"),
        )
        .known(SUPPORTED.to_vec()))
    }
}

/// Refuses what can never be ingested, before storing anything.
fn check_body(ct: &str, body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(unprocessable(
            "empty_document",
            "the document is empty",
            "file",
        ));
    }
    if ct.starts_with("text/") {
        if let Err(e) = std::str::from_utf8(body) {
            return Err(unprocessable(
                "invalid_utf8",
                format!(
                    "a {ct} document must be UTF-8; byte {} is not",
                    e.valid_up_to()
                ),
                "file",
            ));
        }
    } else if ct == "application/pdf" && !body.starts_with(b"%PDF-") {
        return Err(unprocessable(
            "invalid_pdf",
            "the file does not start like a PDF (%PDF-)",
            "file",
        ));
    }
    Ok(())
}

async fn from_multipart(mut form: Multipart, tenant: &str) -> Result<NewDocument, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), "invalid_multipart", e.body_text())
    };
    let (mut file, mut name, mut declared) = (None, None, None);
    let (mut set, mut metadata, mut options) = (
        None,
        Value::Object(Default::default()),
        DocumentOptions {
            summarize: true,
            ..Default::default()
        },
    );
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "file" => {
                name = name.or(field.file_name().map(str::to_owned));
                declared = field.content_type().map(str::to_owned);
                file = Some(field.bytes().await.map_err(bad)?);
            }
            "name" => name = Some(field.text().await.map_err(bad)?),
            "document_set" => set = Some(field.text().await.map_err(bad)?),
            "metadata" => {
                metadata = serde_json::from_str(&field.text().await.map_err(bad)?)
                    .map_err(|e| unprocessable("invalid_metadata", e.to_string(), "metadata"))?
            }
            "options" => {
                options = serde_json::from_str(&field.text().await.map_err(bad)?)
                    .map_err(|e| unprocessable("invalid_options", e.to_string(), "options"))?
            }
            other => {
                return Err(unprocessable(
                    "unknown_field",
                    format!(
                        "unknown form field `{other}` (file, name, document_set, metadata, options)"
                    ),
                    other,
                ));
            }
        }
    }
    let body: Bytes =
        file.ok_or_else(|| unprocessable("missing_file", "no `file` part in the form", "file"))?;
    let name = name.unwrap_or_else(|| "document".into());
    let ct = content_type(declared.as_deref(), &name)?;
    Ok(NewDocument {
        tenant: tenant.into(),
        name,
        document_set: set,
        content_type: ct,
        body: body.to_vec(),
        metadata,
        options,
    })
}

fn from_json(up: JsonUpload, tenant: &str) -> Result<NewDocument, ApiError> {
    let ct = content_type(up.content_type.as_deref(), &up.name)?;
    if ct == "application/pdf" {
        return Err(unprocessable(
            "invalid_upload",
            "PDFs are uploaded as multipart files, not JSON text",
            "content_type",
        ));
    }
    Ok(NewDocument {
        tenant: tenant.into(),
        name: up.name,
        document_set: up.document_set,
        content_type: ct,
        body: up.text.into_bytes(),
        metadata: up.metadata.unwrap_or_else(|| json!({})),
        options: up.options.unwrap_or(DocumentOptions {
            summarize: true,
            ..Default::default()
        }),
    })
}

/// `POST /v1/documents`: multipart (`file`, `name`, `document_set`,
/// `metadata`, `options`) or JSON (`name`, `text`, ...).
#[utoipa::path(post, path = "/v1/documents", tag = "documents",
    request_body(content(
        (crate::openapi::JsonUploadDoc = "application/json"),
        (Object = "multipart/form-data")
    ), description = "JSON text, or a multipart form with `file`, `name`, `document_set`, `metadata`, `options`"),
    responses((status = 202, body = crate::openapi::Uploaded), (status = 415, description = "Unsupported type", body = crate::openapi::ErrorBody),
        (status = 422, description = "Empty, unreadable or malformed", body = crate::openapi::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    let request_id = crate::routes::jobs::request_id(req.headers());
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let doc = if ct.starts_with("multipart/form-data") {
        let form = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid_multipart", e.body_text()))?;
        from_multipart(form, &caller.tenant).await?
    } else {
        let Json(up) = Json::<JsonUpload>::from_request(req, &state).await?;
        from_json(up, &caller.tenant)?
    };
    if !doc.metadata.is_object() {
        return Err(unprocessable(
            "invalid_metadata",
            "metadata must be a JSON object",
            "metadata",
        ));
    }
    check_body(&doc.content_type, &doc.body)?;
    ApiError::no_nul("name", &doc.name)?;
    ApiError::no_nul("document_set", doc.document_set.as_deref().unwrap_or(""))?;
    ApiError::no_nul_json("metadata", &doc.metadata)?;
    ApiError::no_nul_json("options", &serde_json::to_value(&doc.options)?)?;
    doc.options.check().map_err(|e| {
        let field = e.field.unwrap_or_else(|| "options".into());
        unprocessable("invalid_options", e.message, &field)
    })?;
    if let Some(model) = &doc.options.model {
        ApiError::no_nul("options.model", model)?;
        // Checked when some worker has registered its models: before any
        // has, the upload waits for one like any job.
        let served = hopper_shared::models::served(&state.pool).await?;
        if !served.is_empty() {
            super::document_sets::unknown_model_unless_served(&served, model, "options.model")?;
        }
    }
    if let Some(url) = &doc.options.callback_url {
        state.config.webhook.check_url(url).map_err(|why| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_callback", why)
                .field(Some("options.callback_url".into()))
        })?;
    }
    let opts = PushOptions {
        request_id,
        // The ingest (and the jobs it starts) continue this request's trace.
        traceparent: hopper_shared::telemetry::current_traceparent(),
        tenant: Some(caller.tenant.to_string()),
        max_unfinished: Some(state.config.api.max_pending_per_tenant),
        ..Default::default()
    };
    // The row commits only once its job is queued (a refused push leaves
    // no row); in a task of its own, so a client hanging up cannot stop it
    // between the push and the commit.
    let (pool, queue) = (state.pool.clone(), state.queue.clone());
    // (Still in the request's span: its Redis and Postgres calls are the request's.)
    let stored = tokio::spawn(tracing::Instrument::in_current_span(async move {
        documents::insert_then(&pool, &doc, |id| async move {
            let args = serde_json::to_value(IngestArgs { document_id: id })?;
            Ok::<_, ApiError>(queue.push(JobKind::Ingest, &args, &opts).await?)
        })
        .await
    }));
    let (id, job) = stored.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the upload did not finish: {e}"),
        )
    })??;
    Ok((
        StatusCode::ACCEPTED,
        [("location", format!("/v1/documents/{id}"))],
        Json(json!({ "document_id": id, "job_id": job.id, "status": documents::status::QUEUED })),
    ))
}

/// Paging and filtering of the document list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this document set.
    #[serde(default)]
    document_set: Option<String>,
    /// Documents to skip.
    #[serde(default)]
    #[param(minimum = 0)]
    offset: i64,
    /// Page size (1–500, default 50).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    limit: i64,
}

fn default_limit() -> i64 {
    50
}

/// `GET /v1/documents`: newest first, with chunk counts.
#[utoipa::path(get, path = "/v1/documents", tag = "documents", params(ListQuery),
    responses((status = 200, body = crate::openapi::DocumentList), (status = 422, description = "Bad paging", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let Query(q) = q?;
    ApiError::no_nul("document_set", q.document_set.as_deref().unwrap_or(""))?;
    if !(1..=500).contains(&q.limit) || q.offset < 0 {
        return Err(unprocessable(
            "invalid_query",
            "limit is 1-500 and offset ≥ 0",
            "limit",
        ));
    }
    let (total, docs) = documents::list(
        &state.pool,
        &caller.tenant,
        q.document_set.as_deref(),
        q.offset,
        q.limit,
    )
    .await?;
    let docs: Vec<Value> = docs
        .into_iter()
        .map(|(d, n)| {
            let mut v = serde_json::to_value(d).unwrap_or_default();
            v["chunk_count"] = json!(n);
            v
        })
        .collect();
    Ok(Json(
        json!({ "total": total, "offset": q.offset, "limit": q.limit, "documents": docs }),
    ))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    ApiError::parse_uuid(id, "document")
}

/// `GET /v1/documents/{id}`.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents",
    params(("id" = uuid::Uuid, Path, description = "The document id")),
    responses((status = 200, body = hopper_shared::documents::DocumentView), (status = 404, description = "No such document of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    match documents::get(&state.pool, &caller.tenant, id).await? {
        Some(d) => Ok(Json(serde_json::to_value(d)?)),
        None => Err(ApiError::not_found(format!("no document {id}"))),
    }
}

/// `DELETE /v1/documents/{id}`: the document, its chunks and vectors.
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "documents",
    params(("id" = uuid::Uuid, Path, description = "The document id")),
    responses((status = 204, description = "Deleted with its chunks"), (status = 404, description = "No such document of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    let id = parse_id(&id)?;
    if documents::delete(&state.pool, &caller.tenant, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no document {id}")))
    }
}

/// Event streams (documents' and jobs') open per tenant in this process.
static OPEN_STREAMS: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

/// One open event stream of a tenant, counted in [`OPEN_STREAMS`] from
/// [`StreamSlot::take`] until it is dropped (the stream ended or its client
/// went away).
pub(crate) struct StreamSlot {
    tenant: String,
}

/// A stream slot for `tenant`, or 429 `too_many_streams` when it holds
/// `HOPPER_SSE_MAX_STREAMS_PER_TENANT` already.
/// The last event of a stream that reached its lifetime cap
/// (`HOPPER_SSE_MAX_LIFETIME_MS`): the client reconnects to follow on.
pub(crate) fn reconnect_event(lifetime: std::time::Duration) -> Event {
    Event::default()
        .event("reconnect")
        .json_data(json!({
            "reason": "lifetime",
            "detail": "this stream reached its lifetime cap \
                       (HOPPER_SSE_MAX_LIFETIME_MS); reconnect to follow on",
            "max_lifetime_ms": lifetime.as_millis() as u64,
        }))
        .unwrap_or_else(|_| Event::default().event("reconnect"))
}

pub(crate) fn stream_slot(state: &AppState, tenant: &str) -> Result<StreamSlot, ApiError> {
    let max = state.config.api.sse_max_streams_per_tenant;
    StreamSlot::take(tenant, max).ok_or_else(|| {
        let mut full = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "tenant `{tenant}` has {max} event streams open on this API replica \
                 (HOPPER_SSE_MAX_STREAMS_PER_TENANT); close one first"
            ),
        );
        full.retry_after = Some(5);
        full
    })
}

impl StreamSlot {
    /// A slot for `tenant`, unless it holds `max` already.
    fn take(tenant: &str, max: usize) -> Option<Self> {
        let mut open = OPEN_STREAMS.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(tenant.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = OPEN_STREAMS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

/// Where one event stream stands.
struct Follow {
    /// The last state sent (status, progress, summary).
    last: Option<String>,
    /// Its final event was sent.
    done: bool,
    /// When it ends with a `reconnect` event.
    deadline: tokio::time::Instant,
    /// Its place in the tenant's count, freed when the stream is dropped.
    _slot: StreamSlot,
}

/// `GET /v1/documents/{id}/events`: a `progress` event whenever the status
/// or progress changes, ending after `ready` or `failed` — or, after
/// `HOPPER_SSE_MAX_LIFETIME_MS`, with a `reconnect` event (reconnect to
/// follow on).
#[utoipa::path(get, path = "/v1/documents/{id}/events", tag = "documents",
    params(("id" = uuid::Uuid, Path, description = "The document id")),
    responses((status = 200, description = "Server-sent `progress` events until ready or failed; a final `reconnect` event when the stream reaches its lifetime cap", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such document of this tenant", body = crate::openapi::ErrorBody),
        (status = 429, description = "The tenant has its most open streams on this API replica", body = crate::openapi::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    if documents::get(&state.pool, &caller.tenant, id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no document {id}")));
    }
    let slot = stream_slot(&state, &caller.tenant)?;
    let lifetime = state.config.api.sse_max_lifetime;
    let start = Follow {
        last: None,
        done: false,
        deadline: tokio::time::Instant::now() + lifetime,
        _slot: slot,
    };
    let pool = state.pool.clone();
    let tenant = caller.tenant.clone();
    let stream = futures::stream::unfold(start, move |mut f| {
        let (pool, tenant) = (pool.clone(), tenant.clone());
        async move {
            if f.done {
                return None;
            }
            loop {
                if tokio::time::Instant::now() >= f.deadline {
                    f.done = true;
                    let ev = reconnect_event(lifetime);
                    return Some((Ok(ev), f));
                }
                let doc = match documents::get(&pool, &tenant, id).await {
                    Ok(Some(d)) => d,
                    Ok(None) => {
                        f.done = true;
                        let ev = Event::default().event("deleted").data(id.to_string());
                        return Some((Ok(ev), f));
                    }
                    Err(_) => {
                        pause(&f, Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let key = format!(
                    "{}/{}/{}",
                    doc.status,
                    doc.chunks_embedded,
                    doc.summary.is_some()
                );
                if f.last.as_deref() != Some(key.as_str()) {
                    f.done = doc.status == documents::status::READY
                        || doc.status == documents::status::FAILED;
                    f.last = Some(key);
                    let ev = Event::default()
                        .event("progress")
                        .json_data(&doc)
                        .unwrap_or_else(|_| Event::default().event("progress"));
                    return Some((Ok(ev), f));
                }
                pause(&f, Duration::from_millis(100)).await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Waits `between` polls, or until the stream's deadline if sooner.
async fn pause(f: &Follow, between: Duration) {
    tokio::time::sleep_until(f.deadline.min(tokio::time::Instant::now() + between)).await;
}
