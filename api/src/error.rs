//! The API's error: a status code and a JSON body `{error, detail, field?}`
//! naming the problem. Every handler returns it; nothing answers with an
//! empty or HTML error body.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// A stable, machine-readable code (`unknown_kind`, `invalid_args`, …).
    error: &'static str,
    /// A sentence for people.
    detail: String,
    /// The offending field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// Known values, when the problem is an unknown one.
    #[serde(skip_serializing_if = "Option::is_none")]
    known: Option<Vec<&'static str>>,
}

impl ApiError {
    /// An error with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error: code,
            detail: detail.into(),
            field: None,
            known: None,
        }
    }

    /// Names the offending field.
    pub fn field(mut self, field: Option<String>) -> Self {
        self.field = field;
        self
    }

    /// Lists the known values.
    pub fn known(mut self, known: Vec<&'static str>) -> Self {
        self.known = Some(known);
        self
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
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("5"));
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

impl From<hopper_queue::QueueError> for ApiError {
    fn from(e: hopper_queue::QueueError) -> Self {
        Self::unavailable(e)
    }
}

impl From<hopper_shared::Error> for ApiError {
    fn from(e: hopper_shared::Error) -> Self {
        Self::unavailable(e)
    }
}
