//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types' `ToSchema` derives, served at `/openapi.json`.
//!
//! Errors every `/v1` route can answer (401 without a valid key, 408, 413,
//! 429 rate limits, 503 when a backing service is down or too many requests
//! are in flight) are added to each operation by [`CommonResponses`], with
//! the bearer-key security requirement. `tests/tests/fuzz.rs` runs
//! schemathesis against this document: a drift between it and the handlers
//! fails CI.

use axum::{Json, response::IntoResponse};
use hopper_queue::{MinuteOutcomes, PartitionPlace, Placement, QueueStats, WorkerInfo};
use hopper_shared::{
    QueueName,
    document_sets::{ReembedView, SetView},
    documents::{DocumentOptions, DocumentView, Hit, SearchMode},
    jobs::{AttemptRecord, JobKind, JobRecord, JobState},
    keys::{KeyInfo, Scope},
    schedules::{MissedTicks, Schedule, ScheduleRun, ScheduleSpec},
    workflows::{NodeState, NodeView, OnFailure, WorkflowSpec, WorkflowState, WorkflowView},
};
use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        RefOr, Response, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use crate::{routes, work::openapi::MergeWork};

/// Every error answer: a machine-readable code, a sentence, and the field
/// or the known values when they help.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code: `invalid_args`, `unknown_task`, `unauthorized`, `rate_limited`, …
    pub error: String,
    /// What went wrong, for people.
    pub detail: String,
    /// The offending field, when there is one.
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// Known values, when an unknown one was given.
    #[schema(nullable = false)]
    pub known: Option<Vec<String>>,
    /// What is in the way, for a conflict (a running re-embed's id).
    #[schema(nullable = false)]
    pub id: Option<String>,
}

/// A submitted job.
#[derive(Serialize, ToSchema)]
pub struct Submitted {
    /// The job's id (the first job's, for a repeated idempotency key).
    pub id: uuid::Uuid,
    /// Its kind (task).
    pub kind: QueueName,
    /// False when an idempotency key matched an earlier submission.
    pub created: bool,
}

/// A submitted batch.
#[derive(Serialize, ToSchema)]
pub struct BatchSubmitted {
    /// The kind (task) of every job.
    pub kind: QueueName,
    /// Their ids, in order.
    pub ids: Vec<uuid::Uuid>,
}

/// The state of a job after a cancel request.
#[derive(Serialize, ToSchema)]
pub struct Cancelled {
    /// The job.
    pub id: uuid::Uuid,
    /// Its kind (task).
    pub kind: QueueName,
    /// `cancelled`, `cancelling`, or the final state it already had.
    pub state: String,
}

/// The stored vectors of a large embed job.
#[derive(Serialize, ToSchema)]
pub struct StoredVectorsDoc {
    /// The job.
    pub id: uuid::Uuid,
    /// Model version that made them.
    pub model: String,
    /// Floats per vector.
    pub dim: usize,
    /// How many.
    pub count: usize,
    /// In the order of the job's texts.
    pub vectors: Vec<Vec<f32>>,
}

/// A job listing.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<JobRecord>,
    /// The limit applied.
    pub limit: usize,
}

/// Every queue's depth.
#[derive(Serialize, ToSchema)]
pub struct QueueList {
    /// One entry per queue.
    pub queues: Vec<QueueStats>,
}

/// Workers of every queue.
#[derive(Serialize, ToSchema)]
pub struct WorkerList {
    /// One entry per worker and queue.
    pub workers: Vec<WorkerInfo>,
}

/// Depth over time and outcomes per minute.
#[derive(Serialize, ToSchema)]
pub struct History {
    /// Sampling interval of `samples`.
    pub every_ms: u64,
    /// `{at_ms, queues: {name: {pending, scheduled, running, dead}}}`, oldest first.
    pub samples: Vec<serde_json::Value>,
    /// Per queue name, one entry per minute.
    #[schema(value_type = Object)]
    pub outcomes: std::collections::BTreeMap<String, Vec<MinuteOutcomes>>,
}

/// Every task the caller may see.
#[derive(Serialize, ToSchema)]
pub struct TaskList {
    /// By name.
    pub tasks: Vec<routes::tasks::TaskView>,
}

/// A page of dead letters.
#[derive(Serialize, ToSchema)]
pub struct DeadList {
    /// The queue.
    pub queue: QueueName,
    /// The caller's dead letters in it.
    pub total: u64,
    /// Paging.
    pub offset: usize,
    /// Paging.
    pub limit: usize,
    /// This page, newest first.
    pub jobs: Vec<JobRecord>,
}

/// A dead-letter action.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DeadActionName {
    /// Back to the queue with a fresh attempt budget.
    Retry,
    /// Forget it (its Postgres record stays); admin scope.
    Purge,
}

/// A queue's partitions after a change.
#[derive(Serialize, ToSchema)]
pub struct Partitions {
    /// The queue.
    pub queue: QueueName,
    /// Partitions new jobs spread over.
    pub current: u16,
    /// Partitions claims and lookups cover: the most it ever had.
    pub high: u16,
}

/// What a dead-letter action did.
#[derive(Serialize, ToSchema)]
pub struct DeadAction {
    /// The queue.
    pub queue: QueueName,
    /// `retry` or `purge`.
    pub action: String,
    /// How many dead letters it applied to.
    pub count: u64,
}

/// An uploaded document.
#[derive(Serialize, ToSchema)]
pub struct Uploaded {
    /// The document.
    pub document_id: uuid::Uuid,
    /// Its ingest job.
    pub job_id: uuid::Uuid,
    /// `queued`.
    pub status: String,
}

/// A page of documents.
#[derive(Serialize, ToSchema)]
pub struct DocumentList {
    /// Documents of the caller's tenant (in the set, when given).
    pub total: i64,
    /// Paging.
    pub offset: i64,
    /// Paging.
    pub limit: i64,
    /// Newest first, each with its `chunk_count`.
    pub documents: Vec<serde_json::Value>,
}

/// A JSON document upload (multipart takes a `file` part instead).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JsonUploadDoc {
    /// A name for it.
    name: String,
    /// The text itself.
    text: String,
    /// `text/plain` (default), `text/markdown` or `text/html`.
    content_type: Option<String>,
    /// A set to search within.
    document_set: Option<String>,
    /// A JSON object, matched by search filters.
    metadata: Option<serde_json::Value>,
    /// Chunking and embedding options.
    options: Option<DocumentOptions>,
}

/// Search results.
#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    /// The query.
    pub query: String,
    /// Hits asked for.
    pub k: i64,
    /// How the hits were ranked.
    pub mode: SearchMode,
    /// The model (and version) that embedded the query; null in `keyword`
    /// mode, which embeds nothing.
    pub model: Option<String>,
    /// Time to embed the query (0 in `keyword` mode).
    pub embed_ms: f64,
    /// Total time.
    pub took_ms: f64,
    /// Best first; empty when nothing matched (a keyword query of stop
    /// words only matches nothing).
    pub hits: Vec<Hit>,
}

/// The tenant's keys.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    /// Newest first, without secrets.
    pub keys: Vec<KeyInfo>,
}

/// A new key, shown once.
#[derive(Serialize, ToSchema)]
pub struct NewKeyShown {
    /// The full key (`hop_…`): store it now.
    pub key: String,
    /// Its public facts.
    pub info: KeyInfo,
}

/// The caller's webhook signing secret.
#[derive(Serialize, ToSchema)]
pub struct WebhookSecret {
    /// Whose callbacks it signs.
    pub tenant: String,
    /// `whsec_…`: the HMAC key, used as is.
    pub secret: String,
    /// How a delivery is signed with it.
    pub signature: String,
}

/// A readiness report.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unready`.
    pub status: String,
    /// Per component: `{ok, error?, detail?}`.
    #[schema(value_type = Object)]
    pub components: serde_json::Value,
    /// Hopper's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// The short sha of the commit the API was built from (`unknown` when
    /// built outside a repository).
    #[schema(example = "016ed42")]
    pub git_sha: String,
    /// Whole seconds since the API process started.
    pub uptime_s: u64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hopper",
        description = "Background jobs for ML document pipelines: submit jobs and documents, \
                       read their state, search, and operate the queues.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::jobs::list,
        routes::jobs::submit,
        routes::jobs::show,
        routes::jobs::submit_batch,
        routes::jobs::cancel,
        routes::jobs::vectors,
        routes::job_events::events,
        routes::documents::upload,
        routes::documents::list,
        routes::documents::show,
        routes::documents::delete,
        routes::documents::events,
        routes::search::search,
        routes::document_sets::list,
        routes::document_sets::show,
        routes::document_sets::reembed,
        routes::document_sets::cancel,
        routes::queues::list,
        routes::queues::history,
        routes::queues::workers,
        routes::queues::set_partitions,
        routes::queues::placement,
        routes::dead::list,
        routes::dead::act,
        routes::tasks::list,
        routes::tasks::show,
        routes::tasks::remove,
        routes::schedules::create,
        routes::schedules::list,
        routes::schedules::show,
        routes::schedules::remove,
        routes::schedules::pause,
        routes::schedules::resume,
        routes::schedules::runs,
        routes::workflows::create,
        routes::workflows::list,
        routes::workflows::show,
        routes::workflows::cancel,
        routes::keys::list,
        routes::keys::create,
        routes::keys::revoke,
        routes::webhooks::secret,
        routes::health::live,
        routes::health::ready,
    ),
    components(schemas(
        ErrorBody, Partitions, routes::queues::PartitionsBody, Placement, PartitionPlace, JobKind, QueueName, JobState, JobRecord, AttemptRecord, Scope, KeyInfo, QueueStats,
        WorkerInfo, MinuteOutcomes, DocumentView, DocumentOptions, Hit, SearchMode,
        routes::search::SearchWeights, DeadActionName,
        ScheduleSpec, Schedule, ScheduleRun, MissedTicks, WorkflowSpec, WorkflowView, NodeView,
        WorkflowState, NodeState, OnFailure, routes::workflows::WorkflowList,
        routes::workflows::WorkflowCancelled, SetView, ReembedView,
        routes::document_sets::SetList, routes::document_sets::ReembedRequest,
        routes::document_sets::ReembedCancelled
    )),
    modifiers(&MergeWork, &CommonResponses, &FlatSchedule),
)]
pub struct ApiDoc;

/// Documents `Schedule` as one object: utoipa makes a flattened struct an
/// `allOf` of its parts, and the spec's part forbids other properties (the
/// request body refuses unknown fields), which every stored schedule, with
/// its `tenant`, would break.
pub struct FlatSchedule;

impl Modify for FlatSchedule {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let schemas = &mut components.schemas;
        let (Some(RefOr::T(Schema::Object(spec))), Some(RefOr::T(Schema::AllOf(stored)))) =
            (schemas.get("ScheduleSpec"), schemas.get("Schedule"))
        else {
            return;
        };
        let mut flat = spec.clone();
        flat.additional_properties = None;
        flat.description = stored.description.clone();
        for part in &stored.items {
            if let RefOr::T(Schema::Object(more)) = part {
                flat.properties.extend(more.properties.clone());
                flat.required.extend(more.required.iter().cloned());
            }
        }
        schemas.insert("Schedule".into(), RefOr::T(Schema::Object(flat)));
    }
}

/// Adds the answers every `/v1` operation can give, and the bearer key.
pub struct CommonResponses;

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hop_<prefix>_<secret>")
                    .build(),
            ),
        );
        let common = [
            ("400", "Malformed request (query, JSON or path)"),
            ("401", "No valid API key"),
            ("403", "The key lacks the scope this needs"),
            ("408", "The request took longer than 30 s"),
            ("413", "The body is over HOPPER_MAX_UPLOAD_BYTES"),
            (
                "429",
                "Rate limited, or the tenant's queue is full (see Retry-After)",
            ),
            (
                "503",
                "A backing service is unavailable or too many requests are in flight (see Retry-After)",
            ),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                for (code, description) in common {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error_response(description));
                }
                op.security = Some(vec![SecurityRequirement::new(
                    "api_key",
                    Vec::<String>::new(),
                )]);
            }
        }
    }
}

/// `GET /openapi.json`.
pub async fn document() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
