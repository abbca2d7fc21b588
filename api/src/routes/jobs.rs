//! Job submission and job state.
//!
//! `POST /v1/jobs/{task}` takes the job's arguments as the JSON body;
//! `delay_ms`, `priority`, `max_attempts`, its own time limits
//! (`hard_limit_ms`, `soft_limit_ms`: at most its task's hard limit), retry
//! backoff and retention (`retention_ms`: at most
//! [`MAX_RETENTION_FACTOR`] times its task's) as query parameters; an
//! `Idempotency-Key` header makes a retried submission return the first
//! job instead of adding a second; `unique_for_ms` / `unique_until_finished`
//! (with an optional `unique_key`, else a digest of the arguments) make one
//! job at a time per key: a duplicate answers the first (200). `POST /v1/jobs/{task}/batch` takes a JSON
//! array of argument objects (all validated before any is queued). The task
//! is any declared one the caller may submit, or a built-in kind (see
//! [`crate::tasks`]: 422 for a name that is not a queue name, 404 listing
//! the known tasks for one no one declared, 422 for arguments that break
//! the kind's type or the task's schema).
//! `GET /v1/jobs/{id}` reads Redis first, then the Postgres record.
//! `GET /v1/jobs` lists jobs by queue and state.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use hopper_queue::{
    JobBackoff, MAX_DELAY, MAX_RETENTION_FACTOR, Priority, PushOptions, UNIQUE_MAX, Unique,
    UniqueScope,
};
use hopper_shared::{
    QueueName, db,
    jobs::{JobKind, JobRecord, JobState},
    keys::Scope,
    retention,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{AppState, auth::Caller, error::ApiError, tasks::Task};

/// Most jobs one batch request may carry.
pub const MAX_BATCH: usize = 10_000;

/// Submission options, from the query string.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubmitQuery {
    /// Run no earlier than this many milliseconds from now (at most one
    /// year: 31,536,000,000).
    #[param(maximum = 31_536_000_000.0)]
    delay_ms: Option<u64>,
    /// `high` or `normal` (default).
    #[param(value_type = Option<String>)]
    priority: Option<Priority>,
    /// Attempts allowed (1–100); the queue's setting by default.
    #[param(minimum = 1, maximum = 100)]
    max_attempts: Option<u32>,
    /// Where to `POST` the signed result when the job finishes.
    callback_url: Option<String>,
    /// A unique job for this many ms: another submission with the same
    /// arguments (or `unique_key`) within the window answers this job
    /// (200, `created: false`). At most 30 days.
    #[param(minimum = 1, maximum = 2_592_000_000.0)]
    unique_for_ms: Option<u64>,
    /// A unique job until it is over (succeeded, dead or cancelled): another
    /// submission with the same arguments (or `unique_key`) meanwhile
    /// answers this job.
    unique_until_finished: Option<bool>,
    /// The key of a unique job, instead of a digest of its arguments (1–255
    /// characters; per tenant and task).
    unique_key: Option<String>,
    /// This job's hard time limit in ms (its attempt is abandoned after it),
    /// at most its task's.
    #[param(minimum = 1)]
    hard_limit_ms: Option<u64>,
    /// This job's soft time limit in ms (its cancellation fires), at most
    /// its hard limit.
    #[param(minimum = 1)]
    soft_limit_ms: Option<u64>,
    /// This job's delay before its first retry in ms (doubling, with
    /// jitter), at most its task's `backoff_max_ms`; give it with
    /// `backoff_max_ms` or alone (the max is then the task's).
    backoff_base_ms: Option<u64>,
    /// This job's longest retry delay in ms, at most its task's.
    backoff_max_ms: Option<u64>,
    /// How long this job is kept once it succeeded or was cancelled, in ms:
    /// Redis forgets it, and the Postgres sweep deletes its record, after
    /// this instead of its task's retention and the record retention. At
    /// most 30 times its task's retention.
    #[param(minimum = 1)]
    retention_ms: Option<u64>,
    /// Jobs of one key (per tenant) go to one partition of a partitioned
    /// queue, so they are claimed in the order they were submitted (1–255
    /// characters); without it jobs spread round robin.
    partition_key: Option<String>,
}

/// A key option (`unique_key`, `partition_key`): 1-255 characters, no
/// control characters.
fn check_key(field: &str, key: Option<&str>) -> Result<(), ApiError> {
    match key {
        Some(key) if key.is_empty() || key.len() > 255 || key.chars().any(char::is_control) => {
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_option",
                format!("{field} must be 1-255 characters, none of them control characters"),
            )
            .field(Some(field.into())))
        }
        _ => Ok(()),
    }
}

/// The unique-job options of `q`, checked.
fn unique(q: &SubmitQuery) -> Result<Option<Unique>, ApiError> {
    let scope = match (q.unique_for_ms, q.unique_until_finished.unwrap_or(false)) {
        (Some(_), true) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_option",
                "give unique_for_ms or unique_until_finished, not both",
            )
            .field(Some("unique_for_ms".into())));
        }
        (Some(ms), false) => {
            if ms == 0 || u128::from(ms) > UNIQUE_MAX.as_millis() {
                return Err(ApiError::out_of_range(
                    "unique_for_ms",
                    1,
                    format!("{} (30 days)", UNIQUE_MAX.as_millis()),
                ));
            }
            Some(UniqueScope::Window(Duration::from_millis(ms)))
        }
        (None, true) => Some(UniqueScope::UntilFinished),
        (None, false) => None,
    };
    check_key("unique_key", q.unique_key.as_deref())?;
    match scope {
        Some(scope) => Ok(Some(Unique {
            key: q.unique_key.clone(),
            scope,
        })),
        None if q.unique_key.is_some() => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_option",
            "unique_key needs unique_for_ms or unique_until_finished",
        )
        .field(Some("unique_key".into()))),
        None => Ok(None),
    }
}

/// The task `name` if the caller may submit to it: 422 for a name that is
/// not a queue name or a task only Hopper queues, 404 listing the known
/// tasks for one no one declared.
async fn submittable(state: &AppState, caller: &Caller, name: &str) -> Result<Arc<Task>, ApiError> {
    let task = state
        .tasks
        .get(&state.queue, name, &caller.tenant, "task")
        .await?;
    task.submittable()?;
    Ok(task)
}

fn options(
    state: &AppState,
    task: &QueueName,
    q: Result<Query<SubmitQuery>, QueryRejection>,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<PushOptions, ApiError> {
    let Query(q) = q?;
    let unique = unique(&q)?;
    let callback_url = q
        .callback_url
        .as_deref()
        .map(|u| {
            state
                .config
                .webhook
                .check_url(u)
                .map(String::from)
                .map_err(|why| {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_callback", why)
                        .field(Some("callback_url".into()))
                })
        })
        .transpose()?;
    if let Some(m) = q.max_attempts
        && !(1..=100).contains(&m)
    {
        return Err(ApiError::out_of_range("max_attempts", 1, 100));
    }
    // A job may have less time than its task allows, never more.
    let ceiling = state.queue.settings(task).hard_time_limit;
    let ceiling_ms = ceiling.as_millis().max(1) as u64;
    for (field, value) in [
        ("hard_limit_ms", q.hard_limit_ms),
        ("soft_limit_ms", q.soft_limit_ms),
    ] {
        if let Some(ms) = value
            && !(1..=ceiling_ms).contains(&ms)
        {
            return Err(ApiError::out_of_range(
                field,
                1,
                format!("{ceiling_ms} (the {task} task's hard limit)"),
            ));
        }
    }
    if let (Some(soft), Some(hard)) = (q.soft_limit_ms, q.hard_limit_ms)
        && soft > hard
    {
        return Err(ApiError::out_of_range(
            "soft_limit_ms",
            1,
            format!("{hard} (hard_limit_ms)"),
        ));
    }
    check_key("partition_key", q.partition_key.as_deref())?;
    let backoff = job_backoff(state, task, &q)?;
    let retention = job_retention(state, task, &q)?;
    let delay = q.delay_ms.map(Duration::from_millis);
    if delay.is_some_and(|d| d > MAX_DELAY) {
        return Err(ApiError::out_of_range(
            "delay_ms",
            0,
            format!("{} (one year)", MAX_DELAY.as_millis()),
        ));
    }
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255);
            Some(
                key.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_header",
                        "Idempotency-Key must be 1-255 visible ASCII characters",
                    )
                    .field(Some("Idempotency-Key".into()))
                })?
                .to_owned(),
            )
        }
    };
    Ok(PushOptions {
        max_attempts: q.max_attempts,
        delay,
        priority: q.priority.unwrap_or_default(),
        // Keys are per tenant: one tenant's key never returns another's job.
        idempotency_key: idempotency_key.map(|k| format!("{}:{k}", caller.tenant)),
        request_id: request_id(headers),
        // Its attempts continue this request's trace.
        traceparent: hopper_shared::telemetry::current_traceparent(),
        tenant: Some(caller.tenant.to_string()),
        callback_url,
        max_unfinished: Some(state.config.api.max_pending_per_tenant),
        max_high_unfinished: Some(state.config.api.max_high_priority_per_tenant),
        unique,
        hard_time_limit: q.hard_limit_ms.map(Duration::from_millis),
        soft_time_limit: q.soft_limit_ms.map(Duration::from_millis),
        backoff,
        retention,
        partition_key: q.partition_key,
        ..Default::default()
    })
}

/// The job's own retention, if the query gives one: 1 ms to
/// [`MAX_RETENTION_FACTOR`] times its task's (a job may be kept shorter or
/// longer than its task keeps jobs, within that).
fn job_retention(
    state: &AppState,
    task: &QueueName,
    q: &SubmitQuery,
) -> Result<Option<Duration>, ApiError> {
    let Some(ms) = q.retention_ms else {
        return Ok(None);
    };
    let task_ms = state.queue.settings(task).retention.as_millis();
    let ceiling = (task_ms * u128::from(MAX_RETENTION_FACTOR)).min(u128::from(u64::MAX)) as u64;
    if !(1..=ceiling).contains(&ms) {
        return Err(ApiError::out_of_range(
            "retention_ms",
            1,
            format!("{ceiling} ({MAX_RETENTION_FACTOR} times the {task} task's retention)"),
        ));
    }
    Ok(Some(Duration::from_millis(ms)))
}

/// The job's own retry backoff, if the query gives one: within its task's
/// (a job may retry sooner, never later), base at most max.
fn job_backoff(
    state: &AppState,
    task: &QueueName,
    q: &SubmitQuery,
) -> Result<Option<JobBackoff>, ApiError> {
    if q.backoff_base_ms.is_none() && q.backoff_max_ms.is_none() {
        return Ok(None);
    }
    let s = state.queue.settings(task);
    let ceiling = s.backoff_max.as_millis() as u64;
    let max = q.backoff_max_ms.unwrap_or(ceiling);
    if max > ceiling {
        return Err(ApiError::out_of_range(
            "backoff_max_ms",
            0,
            format!("{ceiling} (the {task} task's backoff_max_ms)"),
        ));
    }
    let base = q
        .backoff_base_ms
        .unwrap_or((s.backoff_base.as_millis() as u64).min(max));
    if base > max {
        return Err(ApiError::out_of_range(
            "backoff_base_ms",
            0,
            format!("{max} (backoff_max_ms)"),
        ));
    }
    Ok(Some(JobBackoff {
        base: Duration::from_millis(base),
        max: Duration::from_millis(max),
    }))
}

/// The request's id (set by the request-id middleware), for the jobs it
/// creates.
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `POST /v1/jobs/{task}`: validates and enqueues one job; 202 with its id.
#[utoipa::path(post, path = "/v1/jobs/{key}", tag = "jobs",
    params(("key" = QueueName, Path, description = "The task (a built-in kind or a declared task; `webhook`, `ingest` and `summarize` are Hopper's own: 422)"), SubmitQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Resubmitting with the same key returns the first job")),
    request_body(content = Object, description = "The job's arguments (each kind has its own)"),
    responses((status = 202, body = crate::openapi::Submitted), (status = 200, description = "The idempotency key, or the unique job's key, was seen: the first job", body = crate::openapi::Submitted),
        (status = 404, description = "No such task (`known` lists those the caller may submit)", body = crate::openapi::ErrorBody), (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Not a queue name, or arguments or options refused", body = crate::openapi::ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    let task = submittable(&state, &caller, &kind).await?;
    let mut opts = options(&state, task.name(), query, &headers, &caller)?;
    let Json(args) = body?;
    task.validate(&args, None)?;
    // A job's own retention is in Postgres before the job exists, so
    // whichever process writes its record finds it.
    let kept = match opts.retention {
        Some(retention) => {
            let id = Uuid::now_v7();
            retention::keep_jobs_for(&state.pool, &[id], retention).await?;
            opts.id = Some(id);
            Some(id)
        }
        None => None,
    };
    let pushed = state.queue.push(task.name(), &args, &opts).await;
    if let Some(id) = kept {
        let queued = match &pushed {
            Ok(p) => p.id == id,
            Err(e) => !refused(e),
        };
        if !queued {
            // Another job answered, or nothing was written.
            forget_kept(&state, &[id]).await;
        }
    }
    let pushed = pushed?;
    if pushed.created {
        metrics::counter!(hopper_shared::metrics::JOBS_SUBMITTED, "kind" => task.name().label())
            .increment(1);
    }
    let status = if pushed.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [("location", format!("/v1/jobs/{}", pushed.id))],
        Json(json!({ "id": pushed.id, "kind": task.name(), "created": pushed.created })),
    ))
}

/// `POST /v1/jobs/{task}/batch`: a JSON array of argument objects. All are
/// validated first; then all are queued in one pipelined round trip.
#[utoipa::path(post, path = "/v1/jobs/{key}/batch", tag = "jobs",
    params(("key" = QueueName, Path, description = "The task"), SubmitQuery),
    request_body(content = Vec<Object>, description = "1 to 10,000 argument objects"),
    responses((status = 202, body = crate::openapi::BatchSubmitted), (status = 404, description = "No such task", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody), (status = 422, description = "Not a queue name, or a job's arguments refused", body = crate::openapi::ErrorBody)))]
pub async fn submit_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Json<Vec<Value>>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    let task = submittable(&state, &caller, &kind).await?;
    let opts = options(&state, task.name(), query, &headers, &caller)?;
    if opts.idempotency_key.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "Idempotency-Key applies to single submissions only",
        ));
    }
    let Json(batch) = body?;
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
            format!("a batch holds 1 to {MAX_BATCH} jobs, not {}", batch.len()),
        ));
    }
    for (i, args) in batch.iter().enumerate() {
        task.validate(args, Some(i))?;
    }
    let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    if let Some(retention) = opts.retention {
        retention::keep_jobs_for(&state.pool, &ids, retention).await?;
    }
    let pushed = state
        .queue
        .push_many_as(task.name(), &batch, &ids, &opts)
        .await;
    if opts.retention.is_some() {
        let unused: Vec<Uuid> = match &pushed {
            Ok(queued) => {
                let queued: std::collections::HashSet<&Uuid> = queued.iter().collect();
                ids.iter()
                    .filter(|id| !queued.contains(id))
                    .copied()
                    .collect()
            }
            Err(e) if refused(e) => ids.clone(),
            Err(_) => Vec::new(),
        };
        forget_kept(&state, &unused).await;
    }
    let ids = pushed?;
    metrics::counter!(hopper_shared::metrics::JOBS_SUBMITTED, "kind" => task.name().label())
        .increment(ids.len() as u64);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "kind": task.name(), "ids": ids })),
    ))
}

/// Whether a push failed knowing it wrote nothing (else some jobs may be
/// queued: their retention rows stay, and the sweep removes those of jobs
/// that never were, much later).
fn refused(e: &hopper_queue::QueueError) -> bool {
    matches!(
        e,
        hopper_queue::QueueError::TenantFull { .. } | hopper_queue::QueueError::DelayTooLong { .. }
    )
}

/// Forgets the own retention recorded for `ids`, jobs that were not queued
/// under them; on failure the sweep removes the rows much later.
async fn forget_kept(state: &AppState, ids: &[Uuid]) {
    if let Err(e) = retention::forget_kept_jobs(&state.pool, ids).await {
        tracing::warn!(error = %e, "job retention rows of unqueued jobs left to the sweep");
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    ApiError::parse_uuid(id, "job")
}

/// A job id as a client may give it: the job's UUID, or the task id a
/// Celery producer knows it by (the same job: see
/// [`hopper_shared::jobs::foreign_job_id`]).
pub(crate) fn any_job_id(id: &str) -> Result<Uuid, ApiError> {
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return parse_id(id);
    }
    Ok(hopper_shared::jobs::foreign_job_id(id))
}

/// `POST /v1/jobs/{id}/cancel`: a waiting job is cancelled at once
/// (`cancelled`); a running one is asked to stop (`cancelling`) and its
/// handler's cancellation token fires within a heartbeat.
#[utoipa::path(post, path = "/v1/jobs/{key}/cancel", tag = "jobs",
    params(("key" = String, Path, description = "The job id, or the task id a Celery producer knows it by")),
    responses((status = 200, body = crate::openapi::Cancelled), (status = 404, description = "No such job of this tenant", body = crate::openapi::ErrorBody),
        (status = 409, description = "A step of a document's pipeline (delete the document instead)", body = crate::openapi::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    let id = any_job_id(&id)?;
    let names = state.tasks.all_names(&state.queue).await?;
    let Some(job) = state
        .queue
        .find_job_in(id, &names)
        .await?
        .filter(|j| caller.owns(&j.tenant))
    else {
        return Err(ApiError::not_found(format!("no job {id} in the queues")));
    };
    // A pipeline step cancelled alone would leave its document waiting for
    // it for ever: the document is what a client stops. (Any task declared
    // internal is Hopper's own the same way.)
    let internal = match job.kind.job_kind() {
        Some(kind) => {
            kind.is_internal()
                || (kind == JobKind::Embed && job.args.get("batch").is_some_and(|b| !b.is_null()))
        }
        None => state
            .tasks
            .get(&state.queue, job.kind.as_str(), &caller.tenant, "id")
            .await
            .is_ok_and(|task| task.submittable().is_err()),
    };
    if internal {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "pipeline_job",
            format!(
                "job {id} is a step of a document's pipeline: delete the document \
                 (DELETE /v1/documents/{{id}}) to stop it"
            ),
        ));
    }
    match state.queue.cancel_in(job.kind.clone(), id).await? {
        Some((kind, s)) => {
            // A waiting job finished here: its callback goes now.
            if s == "cancelled"
                && let Some(job) = state.queue.job(&kind, id).await?
            {
                state.queue.push_callbacks(&job).await?;
            }
            Ok(Json(json!({ "id": id, "kind": kind, "state": s })))
        }
        None => Err(ApiError::not_found(format!("no job {id} in the queues"))),
    }
}

/// `GET /v1/jobs/{id}`: the job's state, attempts, timings and result.
#[utoipa::path(get, path = "/v1/jobs/{key}", tag = "jobs",
    params(("key" = String, Path, description = "The job id, or the task id a Celery producer knows it by")),
    responses((status = 200, body = hopper_shared::jobs::JobRecord), (status = 404, description = "No such job of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(callers_job(&state, &caller, &id).await?))
}

/// The job a client names (its id, or the task id a Celery producer knows
/// it by): from Redis, else its Postgres record; 404 when there is none of
/// the caller's tenant.
pub(crate) async fn callers_job(
    state: &AppState,
    caller: &Caller,
    key: &str,
) -> Result<JobRecord, ApiError> {
    let id = any_job_id(key)?;
    let names = state.tasks.all_names(&state.queue).await?;
    let job = match state.queue.find_job_in(id, &names).await? {
        Some(job) => Some(job),
        None => db::job_record(&state.pool, id).await?,
    };
    job.filter(|j| caller.owns(&j.tenant))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// `GET /v1/jobs/{id}/vectors`: the vectors of an `embed` job too large to
/// return inline (its result names this URL).
#[utoipa::path(get, path = "/v1/jobs/{key}/vectors", tag = "jobs",
    params(("key" = uuid::Uuid, Path, description = "The embed job's id")),
    responses((status = 200, body = crate::openapi::StoredVectorsDoc),
        (status = 404, description = "No stored vectors of this tenant's job", body = crate::openapi::ErrorBody)))]
pub async fn vectors(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    match hopper_shared::embeddings::load(&state.pool, id, &caller.tenant).await? {
        Some(v) => Ok(Json(json!({
            "id": id,
            "model": v.model,
            "dim": v.dim,
            "count": v.vectors.len(),
            "vectors": v.vectors,
        }))),
        None => Err(ApiError::not_found(format!(
            "no stored vectors of job {id}"
        ))),
    }
}

/// Filters of `GET /v1/jobs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// One queue (task); every queue the caller may see when absent.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9_.-]{0,62}$")]
    queue: Option<String>,
    /// One state; every state when absent.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Most jobs returned (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// Most jobs one listing returns.
pub const MAX_LIST: usize = 500;

/// `GET /v1/jobs?queue=&state=&limit=`: jobs in a queue and state. Waiting,
/// running and dead jobs come from Redis (in claim order, or newest first
/// for dead letters); finished ones (`succeeded`, `cancelled`, `failed`)
/// from their Postgres records, most recently finished first. Without a
/// state, both, most recent activity first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = crate::openapi::JobList), (status = 404, description = "No such task", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad limit, state or queue name", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::out_of_range("limit", 1, MAX_LIST));
    }
    let queues = match q.queue.as_deref() {
        Some(name) => vec![
            state
                .tasks
                .get(&state.queue, name, &caller.tenant, "queue")
                .await?
                .name()
                .clone(),
        ],
        None => state.tasks.names(&state.queue, &caller.tenant).await?,
    };
    let wanted = q
        .state
        .as_deref()
        .map(|s| {
            s.parse::<JobState>().map_err(|e| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", e)
                    .field(Some("state".into()))
                    .known(JobState::ALL.iter().map(|s| s.as_str()))
            })
        })
        .transpose()?;
    let from_redis = match wanted {
        Some(s) if s.is_finished_record() => Vec::new(),
        Some(s) => vec![s],
        None => vec![
            JobState::Running,
            JobState::Pending,
            JobState::Scheduled,
            JobState::Retrying,
            JobState::Dead,
        ],
    };
    let mut jobs = Vec::new();
    for queue in &queues {
        for s in &from_redis {
            jobs.extend(
                state
                    .queue
                    .list_jobs(queue, *s, Some(&caller.tenant), limit)
                    .await?,
            );
        }
    }
    if wanted.is_none_or(|s| s.is_finished_record()) {
        let queue = (queues.len() == 1).then(|| queues[0].clone());
        let finished =
            db::list_job_records(&state.pool, &caller.tenant, queue.as_ref(), wanted, limit)
                .await?;
        // A dead letter has a record too; Redis' copy (listed above) wins.
        jobs.extend(finished.into_iter().filter(|j| j.state != JobState::Dead));
    }
    if wanted.is_none() || queues.len() > 1 {
        jobs.sort_by_key(|j| {
            std::cmp::Reverse(
                j.finished_at_ms
                    .or(j.started_at_ms)
                    .unwrap_or(j.enqueued_at_ms),
            )
        });
    }
    jobs.truncate(limit);
    Ok(Json(json!({ "jobs": jobs, "limit": limit })))
}
