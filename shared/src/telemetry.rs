//! Logging and tracing set-up shared by the binaries: `tracing` with an env
//! filter (`RUST_LOG`, default `info`), as text or as JSON lines
//! (`HOPPER_LOG_FORMAT=json`), and, when `HOPPER_OTLP_ENDPOINT` is set, the
//! same spans exported as OpenTelemetry traces over OTLP/HTTP (protobuf).
//!
//! A trace crosses the queue as a W3C `traceparent` stored on the job: the
//! pusher takes it from its current span ([`current_traceparent`]) and the
//! attempt's span continues it ([`set_parent`]). With no endpoint no
//! OpenTelemetry layer is installed: spans carry no trace context,
//! [`current_traceparent`] answers `None` and nothing is stored.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, layer::SubscriberExt};

use crate::config::LogFormat;

/// The W3C trace-context header (and job field) name.
pub const TRACEPARENT: &str = "traceparent";

/// The exporting provider, kept for [`shutdown`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber; logs go to stderr. With `otlp_endpoint`
/// (the collector's base URL, e.g. `http://localhost:4318`), spans are also
/// batched to `<endpoint>/v1/traces`; the batch delay follows the standard
/// `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5000) and the service name
/// `OTEL_SERVICE_NAME` (default: the executable's name).
pub fn init(format: LogFormat, otlp_endpoint: Option<&url::Url>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
        LogFormat::Text => logs.boxed(),
    };
    let traces = otlp_endpoint.and_then(|endpoint| match tracer_provider(endpoint) {
        Ok(provider) => {
            let tracer = provider.tracer("hopper");
            let _ = PROVIDER.set(provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        Err(e) => {
            eprintln!("OTLP exporter to {endpoint} not started: {e}");
            None
        }
    });
    let subscriber = Registry::default().with(filter).with(logs).with(traces);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The batching OTLP/HTTP exporter to `endpoint`.
fn tracer_provider(
    endpoint: &url::Url,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let traces = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces)
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").ok().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "hopper".to_owned())
    });
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Exports what is still batched, keeping the exporter running (a no-op
/// without one): what a library's run ends with (`Worker::run_until` in
/// `hopper-worker`), since the process may go on and trace more.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// Exports what is still batched and stops the exporter (a no-op without one).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// The W3C `traceparent` of the current span, to store on a job it pushes;
/// `None` when tracing is off (the span has no valid trace context).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The W3C `traceparent` of `span`; `None` when it has no valid context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the remote span `traceparent` names (a job's
/// stored one); nothing when it is absent or malformed, or tracing is off.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), tp.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_there_is_no_traceparent() {
        let span = tracing::info_span!("untraced");
        assert_eq!(traceparent_of(&span), None);
        // Setting a parent on a span with no OpenTelemetry layer is harmless.
        set_parent(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(traceparent_of(&span), None);
    }
}
