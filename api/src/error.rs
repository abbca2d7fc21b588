//! The API's error: a status code and a JSON body `{error, detail, field?}`
//! naming the problem. Every handler returns it; nothing answers with an
//! empty or HTML error body.

use axum::{
    Json,
    extract::rejection::{JsonRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// The rarer parts of an error answer.
#[derive(Debug, Default, Serialize)]
struct Extra {
    /// Known values, when the problem is an unknown one.
    #[serde(skip_serializing_if = "Option::is_none")]
    known: Option<Vec<String>>,
    /// The id of what is in the way, for a conflict (a running re-embed).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// An error answer.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// A stable, machine-readable code (`unknown_task`, `invalid_args`, …).
    error: &'static str,
    /// A sentence for people.
    detail: String,
    /// The offending field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// What only some errors carry (boxed: most errors carry neither, and
    /// an error is returned by value everywhere).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<Box<Extra>>,
    /// Seconds to send as `Retry-After` (429 and 503 answers).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error: code,
            detail: detail.into(),
            field: None,
            extra: None,
            retry_after: None,
        }
    }

    /// Names what is in the way (a conflict's other party).
    pub fn conflicting(mut self, id: impl std::fmt::Display) -> Self {
        self.extra.get_or_insert_default().id = Some(id.to_string());
        self
    }

    /// Names the offending field.
    pub fn field(mut self, field: Option<String>) -> Self {
        self.field = field;
        self
    }

    /// The offending field named so far, if any.
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Lists the known values.
    pub fn known<S: Into<String>>(mut self, known: impl IntoIterator<Item = S>) -> Self {
        self.extra.get_or_insert_default().known =
            Some(known.into_iter().map(Into::into).collect());
        self
    }

    /// 422 `invalid_queue_name` for a path or query parameter `field` that
    /// is not a queue name (the message states the rule).
    pub fn invalid_queue_name(e: hopper_shared::queue_name::InvalidQueueName, field: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_queue_name",
            e.to_string(),
        )
        .field(Some(field.into()))
    }

    /// 422 for a query parameter outside `lo..=hi`.
    pub fn out_of_range(
        field: &str,
        lo: impl std::fmt::Display,
        hi: impl std::fmt::Display,
    ) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            format!("{field} must be between {lo} and {hi}"),
        )
        .field(Some(field.into()))
    }

    /// 422 `invalid_schedule`: a schedule's `field` (when known) is refused
    /// for the reason `problem`.
    pub fn invalid_schedule(field: Option<String>, problem: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_schedule",
            problem,
        )
        .field(field)
    }

    /// Parses a path id as a UUID; 400 naming what it should have been
    /// (`job`, `document`) otherwise.
    pub fn parse_uuid(id: &str, what: &str) -> Result<uuid::Uuid, Self> {
        uuid::Uuid::parse_str(id).map_err(|_| {
            Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_id",
                format!("`{id}` is not a {what} id (a UUID)"),
            )
            .field(Some("id".into()))
        })
    }

    /// 422 when a string bound for Postgres holds a NUL character (which
    /// `text` and `jsonb` cannot store).
    pub fn no_nul(field: &str, value: &str) -> Result<(), Self> {
        if value.contains('\0') {
            return Err(Self::nul(field));
        }
        Ok(())
    }

    /// [`ApiError::no_nul`] for every string (and key) of a JSON value.
    pub fn no_nul_json(field: &str, value: &serde_json::Value) -> Result<(), Self> {
        match hopper_shared::jobs::nul_path(value, String::new()) {
            Some(at) if at == "." => Err(Self::nul(field)),
            Some(at) => Err(Self::nul(&format!("{field}.{at}"))),
            None => Ok(()),
        }
    }

    fn nul(field: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_text",
            format!("`{field}` may not contain NUL (\\u0000)"),
        )
        .field(Some(field.into()))
    }

    /// 404 for an unknown resource.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 503: a backing service is down; nothing was accepted.
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::error!("backing service unavailable: {e}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("a backing service is unavailable, nothing was accepted: {e}"),
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(&self)).into_response();
        let retry = match (self.retry_after, self.status) {
            (Some(s), _) => Some(s),
            (None, StatusCode::SERVICE_UNAVAILABLE) => Some(5),
            _ => None,
        };
        if let Some(s) = retry {
            res.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(s));
        }
        res
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match r {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
            JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "invalid_json", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
    }
}

impl From<hopper_queue::QueueError> for ApiError {
    fn from(e: hopper_queue::QueueError) -> Self {
        match e {
            hopper_queue::QueueError::TenantFull { high_priority, .. } => {
                let (code, setting) = if high_priority {
                    (
                        "tenant_high_priority_full",
                        "HOPPER_MAX_HIGH_PRIORITY_PER_TENANT",
                    )
                } else {
                    ("tenant_queue_full", "HOPPER_MAX_PENDING_PER_TENANT")
                };
                let mut full = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    code,
                    format!("{e} ({setting}): nothing was queued; retry when some have finished"),
                );
                full.retry_after = Some(5);
                full
            }
            // The durability option: the write may be on the master only.
            e @ hopper_queue::QueueError::NotReplicated { .. } => {
                tracing::warn!("{e}");
                let mut short = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_replicated",
                    e.to_string(),
                );
                short.retry_after = Some(1);
                short
            }
            // Redis (one server or a cluster: down, failing over, a slot
            // without a master) is a backing service: 503 with Retry-After.
            e => Self::unavailable(e),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<hopper_shared::Error> for ApiError {
    fn from(e: hopper_shared::Error) -> Self {
        match e {
            hopper_shared::Error::Invalid(why) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", why)
            }
            hopper_shared::Error::InvalidField { field, message } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message).field(Some(field))
            }
            e => Self::unavailable(e),
        }
    }
}

/// Turns the bodies of error responses made below the handlers (tower-http's
/// 413 for an oversized body, 408 for a timeout) into this module's JSON.
pub fn ensure_json(res: Response, max_body: usize) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (code, detail) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            format!("the request body is over the {max_body}-byte limit (HOPPER_MAX_UPLOAD_BYTES)"),
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long".to_owned()),
        s => (
            "http_error",
            s.canonical_reason().unwrap_or("error").to_owned(),
        ),
    };
    ApiError::new(status, code, detail).into_response()
}
