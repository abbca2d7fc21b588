//! OpenTelemetry end to end: with `HOPPER_OTLP_ENDPOINT` set, the API and a
//! worker export their spans over OTLP/HTTP to an in-process receiver, and a
//! document upload is one trace: the upload request, the ingest attempt,
//! every embed attempt and the summarize attempt (the trace context travels
//! on the jobs as a W3C `traceparent`, through the pipeline's workflow).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Router, body::Bytes, extract::State, routing::post};
use hopper_tests::{TestEnv, until};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One exported span, as the receiver saw it.
#[derive(Debug, Clone)]
struct SeenSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    service: String,
    attributes: HashMap<String, String>,
}

type Seen = Arc<Mutex<Vec<SeenSpan>>>;

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// `POST /v1/traces`: decodes an OTLP protobuf export and keeps its spans.
async fn receive(State(seen): State<Seen>, body: Bytes) -> Vec<u8> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut out = seen.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(SeenSpan {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name,
                service: service.clone(),
                attributes: span
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(&a.value)))
                    .collect(),
            });
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the receiver on a free port; answers its base URL and what it saw.
async fn start_receiver() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The attempt span of job `id` (a `job` span, named `job <queue>`).
fn attempt<'a>(spans: &'a [SeenSpan], queue: &str, id: &str) -> Option<&'a SeenSpan> {
    spans.iter().find(|s| {
        s.name == format!("job {queue}") && s.attributes.get("id").map(String::as_str) == Some(id)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_upload_is_one_trace_from_request_to_summary() {
    let (otlp, seen) = start_receiver().await;
    let mut env = TestEnv::new(&[
        ("HOPPER_OTLP_ENDPOINT", otlp.as_str()),
        // Export every 100 ms, not every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    env.start_api().await;
    env.start_worker("ingest,embed,summarize", &[]);

    let text = "# Otters\n\nSea otters hold hands while they sleep so they do not drift apart.\n\n\
        ## Tools\n\nThey crack shellfish open with stones they keep in a pouch of skin.\n";
    let part = reqwest::multipart::Part::bytes(text.as_bytes().to_vec())
        .file_name("otters.md")
        .mime_str("text/markdown")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let (status, uploaded) = env
        .request(env.http().post(env.url("/v1/documents")).multipart(form))
        .await;
    assert_eq!(status, 202, "{uploaded}");
    let doc = uploaded["document_id"].as_str().unwrap().to_owned();
    let ingest = uploaded["job_id"].as_str().unwrap().to_owned();

    until(
        "the document is ready",
        Duration::from_secs(180),
        || async {
            let (_, d) = env.get(&format!("/v1/documents/{doc}")).await;
            assert_ne!(d["status"], "failed", "{d}");
            d["status"] == "ready"
        },
    )
    .await;

    // Every job of this (fresh) schema belongs to this one document.
    let pool = env.pool();
    let client = pool.get().await.unwrap();
    let ids_of = async |kind: &str| -> Vec<String> {
        client
            .query("SELECT id FROM job_records WHERE kind = $1", &[&kind])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, uuid::Uuid>(0).to_string())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (embeds, summaries) = loop {
        let (embeds, summaries) = (ids_of("embed").await, ids_of("summarize").await);
        if !embeds.is_empty() && summaries.len() == 1 {
            break (embeds, summaries);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job records: {embeds:?} {summaries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // One trace holds the upload request and every attempt of the pipeline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let trace = loop {
        let spans = seen.lock().unwrap().clone();
        match upload_trace(&spans, &ingest, &embeds, &summaries) {
            Ok(trace) => break trace,
            Err(why) => assert!(tokio::time::Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The attempts hang under the request: each has a parent in the trace,
    // up to the request span (the root).
    let by_id: HashMap<&str, &SeenSpan> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let ingest_span = attempt(&trace, "ingest", &ingest).unwrap();
    let mut at = ingest_span;
    while !at.parent_span_id.is_empty() {
        at = by_id
            .get(at.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("{}: its parent is not in the trace", at.name));
    }
    assert_eq!(at.name, "POST /v1/documents");
    assert_eq!(ingest_span.service, "hopper-worker");
    // Redis calls appear as client spans of the trace (the upload's push).
    assert!(
        trace
            .iter()
            .any(|s| s.attributes.get("db.system").map(String::as_str) == Some("redis")),
        "no Redis span in the trace: {:?}",
        trace.iter().map(|s| &s.name).collect::<HashSet<_>>()
    );
}

/// The spans of the upload request's trace, once it holds the attempt spans
/// of the ingest, every embed and the summarize job; else what is missing.
fn upload_trace(
    spans: &[SeenSpan],
    ingest: &str,
    embeds: &[String],
    summaries: &[String],
) -> Result<Vec<SeenSpan>, String> {
    let request = spans
        .iter()
        .find(|s| s.name == "POST /v1/documents" && s.service == "hopper-api")
        .ok_or_else(|| format!("no upload request span among {} spans", spans.len()))?;
    let trace: Vec<SeenSpan> = spans
        .iter()
        .filter(|s| s.trace_id == request.trace_id)
        .cloned()
        .collect();
    let missing: Vec<String> = std::iter::once(("ingest", ingest))
        .chain(embeds.iter().map(|id| ("embed", id.as_str())))
        .chain(summaries.iter().map(|id| ("summarize", id.as_str())))
        .filter(|(queue, id)| attempt(&trace, queue, id).is_none())
        .map(|(queue, id)| format!("{queue} {id}"))
        .collect();
    if missing.is_empty() {
        Ok(trace)
    } else {
        Err(format!(
            "attempts {missing:?} not in trace {} ({} spans: {:?})",
            request.trace_id,
            trace.len(),
            trace.iter().map(|s| &s.name).collect::<HashSet<_>>()
        ))
    }
}
