//! The built-in queue dashboard at `/dashboard`.
//!
//! One server-rendered page (`api/dashboard/index.html`, with the queue
//! table filled in here so it shows the current depth before any script
//! runs: the built-in kinds and the tasks declared for every tenant; the
//! page is public, so a tenant's own tasks appear only once the script reads
//! `/v1/queues` with its key) plus one script and one stylesheet, compiled into the binary: no
//! build step, no CDN, works air-gapped. The script polls the JSON API the
//! CLI uses (`/v1/queues`, `/v1/queues/history`, `/v1/workers`,
//! `/v1/schedules`, `/v1/workflows`, `/v1/jobs`, dead letters, job detail) every two seconds and
//! draws the charts — and the selected workflow's DAG, nodes in columns by depth — as SVG.
//!
//! The page is served with a strict Content-Security-Policy (same-origin
//! scripts, styles and fetches only; no inline script), and the script puts
//! job data into the page only as text, never as markup.

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};
use hopper_shared::{
    QueueName,
    jobs::{DEFAULT_TENANT, JobKind},
};

use crate::{AppState, error::ApiError};

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../dashboard/style.css");
const FAVICON_SVG: &str = include_str!("../dashboard/favicon.svg");

/// Where the server-rendered queue rows go in `index.html`.
const ROWS_MARK: &str = "<!-- queue rows -->";

/// Same-origin everything; no inline script or style; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /dashboard`: the page, with the queue table as it is now.
pub async fn page(State(state): State<AppState>) -> Response {
    // Tasks open to every tenant: the page is public.
    let names: Vec<QueueName> = match state.tasks.visible(&state.queue, DEFAULT_TENANT).await {
        Ok(tasks) => tasks
            .iter()
            .filter(|t| t.def.tenant.is_none())
            .map(|t| t.def.name.clone())
            .collect(),
        Err(_) => JobKind::ALL.iter().map(|&k| k.into()).collect(),
    };
    let mut rows = String::new();
    for name in &names {
        let stats = state.queue.stats(name).await.ok();
        rows.push_str(&queue_row(name, stats.as_ref()));
    }
    let html = INDEX_HTML.replacen(ROWS_MARK, &rows, 1);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        html,
    )
        .into_response()
}

/// `GET /dashboard/{asset}`: the script, the stylesheet and the icon.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (body, content_type) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (FAVICON_SVG, "image/svg+xml"),
        _ => return Err(ApiError::not_found(format!("no dashboard asset `{name}`"))),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// One row of the queue table; the script updates the same cells by their
/// `data-field`. Unreachable stats render as dashes.
fn queue_row(queue: &QueueName, s: Option<&hopper_queue::QueueStats>) -> String {
    let cell = |field: &str, value: Option<String>| {
        format!(
            "<td data-field=\"{field}\">{}</td>",
            escape(&value.unwrap_or_else(|| "–".into()))
        )
    };
    let per_min = |n: u64, s: &hopper_queue::QueueStats| {
        format!("{:.1}", n as f64 / s.recent_minutes.max(1) as f64)
    };
    let name = escape(queue.as_str());
    format!(
        "<tr data-queue=\"{name}\"><th scope=\"row\"><span class=\"swatch q-{name}\"></span>{name}</th>{}{}{}{}{}{}{}{}</tr>\n",
        cell("pending", s.map(|s| s.pending.to_string())),
        cell("scheduled", s.map(|s| s.scheduled.to_string())),
        cell("running", s.map(|s| s.running.to_string())),
        cell("dead", s.map(|s| s.dead.to_string())),
        cell("workers", s.map(|s| s.workers.to_string())),
        cell(
            "oldest",
            s.map(|s| match s.oldest_pending_age_ms {
                Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
                None => "–".into(),
            })
        ),
        cell("succeeded_rate", s.map(|s| per_min(s.succeeded_recent, s))),
        cell("failed_rate", s.map(|s| per_min(s.failed_recent, s))),
    )
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_its_row_mark_and_assets() {
        assert!(INDEX_HTML.contains(ROWS_MARK));
        assert!(INDEX_HTML.contains("/dashboard/app.js"));
        assert!(INDEX_HTML.contains("/dashboard/style.css"));
        assert!(
            !INDEX_HTML.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
    }

    #[test]
    fn rows_escape_and_show_dashes_without_stats() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let row = queue_row(&JobKind::Echo.into(), None);
        assert!(row.starts_with("<tr data-queue=\"echo\">"), "{row}");
        assert!(row.contains("<td data-field=\"pending\">–</td>"), "{row}");
    }
}
