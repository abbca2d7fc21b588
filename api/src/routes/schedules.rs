//! Periodic schedules over HTTP: create, list, show, pause, resume, remove,
//! and the ticks each one handled.
//!
//! `POST /v1/schedules` (submit scope) takes a
//! [`ScheduleSpec`](hopper_shared::schedules::ScheduleSpec): its timing and
//! fields are checked by [`ScheduleSpec::validate`] (422 `invalid_schedule`
//! naming the field), its task as `POST /v1/jobs/{task}` finds one (404
//! `unknown_task`, 422 for one only Hopper queues) and its arguments against
//! the task's type or schema, with the fire-time field when it names one
//! (422 `invalid_args`); an id already taken is 409 `schedule_exists`. The
//! schedule is the caller's tenant's: its jobs are that tenant's. Firing is
//! the scheduler loop's, in every API and worker process
//! (`hopper_queue::scheduler`).
//!
//! The other routes answer the caller's tenant's schedules; an admin key of
//! the operator tenant (`default`) reaches every tenant's. Any other
//! schedule is 404 `schedule_not_found`, as one that does not exist.

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::StatusCode,
    response::IntoResponse,
};
use hopper_shared::{
    jobs::DEFAULT_TENANT,
    keys::Scope,
    schedules::{RUNS_KEPT, Schedule, ScheduleSpec},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AppState, auth::Caller, error::ApiError};

/// Runs listed when the query names no limit.
const DEFAULT_RUNS: usize = 20;
/// The longest cron expression taken.
const MAX_CRON_LEN: usize = 256;
/// The longest time zone name taken (IANA names are far shorter).
const MAX_TIMEZONE_LEN: usize = 64;

/// Every schedule the caller may see.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// By id.
    pub schedules: Vec<Schedule>,
}

/// A schedule's last ticks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ScheduleRuns {
    /// Newest first (at most the last 100 are kept).
    pub runs: Vec<hopper_shared::schedules::ScheduleRun>,
}

/// Options of `GET /v1/schedules/{id}/runs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Most runs returned (1–100, default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
}

/// Whether the caller reaches schedules of `tenant`: its own, or any for an
/// admin of the operator tenant.
fn reaches(caller: &Caller, tenant: &str) -> bool {
    caller.owns(tenant)
        || (&*caller.tenant == DEFAULT_TENANT && caller.scopes.contains(&Scope::Admin))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "schedule_not_found",
        format!("no schedule `{id}`"),
    )
}

/// The schedule `id` if the caller reaches it; 404 otherwise.
async fn reachable(state: &AppState, caller: &Caller, id: &str) -> Result<Schedule, ApiError> {
    state
        .queue
        .schedule(id)
        .await?
        .filter(|s| reaches(caller, &s.tenant))
        .ok_or_else(|| not_found(id))
}

/// The request body as a [`ScheduleSpec`]: a field missing, unknown or of
/// the wrong type is 422 `invalid_schedule` naming it.
fn spec_of(body: Result<Json<Value>, JsonRejection>) -> Result<ScheduleSpec, ApiError> {
    let Json(body) = body?;
    // (serde would take an array for a struct, its fields in order.)
    if !body.is_object() {
        return Err(ApiError::invalid_schedule(
            None,
            "a schedule is a JSON object (see ScheduleSpec in /openapi.json)",
        ));
    }
    serde_path_to_error::deserialize(body).map_err(|e| {
        // Named as a job's arguments are (a missing field by its name).
        let e = hopper_shared::jobs::InvalidArgs::from(e);
        ApiError::invalid_schedule(e.field, e.message)
    })
}

/// `POST /v1/schedules`: 201 with the stored schedule and its first tick.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = ScheduleSpec,
    responses((status = 201, body = Schedule),
        (status = 404, description = "No such task (`known` lists those the caller may submit)", body = crate::openapi::ErrorBody),
        (status = 409, description = "A schedule of that id exists", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "A field refused (`field` names it), or arguments the task refuses", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    let spec = spec_of(body)?;
    // Problems quote the field: an outsized one is refused before.
    for (field, value, max) in [
        ("cron", &spec.cron, MAX_CRON_LEN),
        ("timezone", &spec.timezone, MAX_TIMEZONE_LEN),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > max) {
            return Err(ApiError::invalid_schedule(
                Some(field.into()),
                format!("`{field}` is longer than {max} bytes"),
            ));
        }
    }
    let created_at_ms = hopper_queue::now_ms();
    let timing = spec
        .validate(created_at_ms)
        .map_err(|e| ApiError::invalid_schedule(Some(e.field.into()), e.problem))?;
    let task = state
        .tasks
        .get(&state.queue, spec.task.as_str(), &caller.tenant, "task")
        .await?;
    task.submittable()?;
    let mut schedule = Schedule {
        spec,
        tenant: caller.tenant.to_string(),
        created_at_ms,
        paused: false,
        next_fire_ms: None,
    };
    // The arguments as a tick submits them (with its fire time, if named).
    let first = timing.next_after(created_at_ms).unwrap_or(created_at_ms);
    task.validate(&schedule.args_at(first), None)?;
    if !state.queue.create_schedule(&schedule).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "schedule_exists",
            format!(
                "a schedule `{}` exists: remove it first, or choose another id",
                schedule.spec.id
            ),
        )
        .field(Some("id".into())));
    }
    tracing::info!(schedule = %schedule.spec.id, task = %schedule.spec.task, tenant = %schedule.tenant, "schedule created");
    let id = schedule.spec.id.clone();
    // As stored, with its first tick (a removal meanwhile: as submitted).
    if let Some(stored) = state.queue.schedule(&id).await? {
        schedule = stored;
    }
    Ok((
        StatusCode::CREATED,
        [("location", format!("/v1/schedules/{id}"))],
        Json(schedule),
    ))
}

/// `GET /v1/schedules`.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ScheduleList>, ApiError> {
    caller.require(Scope::Read)?;
    let schedules = state
        .queue
        .schedules()
        .await?
        .into_iter()
        .filter(|s| reaches(&caller, &s.tenant))
        .collect();
    Ok(Json(ScheduleList { schedules }))
}

/// `GET /v1/schedules/{id}`.
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule")),
    responses((status = 200, body = Schedule),
        (status = 404, description = "No such schedule of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(reachable(&state, &caller, &id).await?))
}

/// `DELETE /v1/schedules/{id}`: 204 once removed with its runs (the jobs it
/// submitted stay).
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule")),
    responses((status = 204, description = "Removed (the jobs it submitted stay)"),
        (status = 404, description = "No such schedule of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Submit)?;
    reachable(&state, &caller, &id).await?;
    if !state.queue.remove_schedule(&id).await? {
        return Err(not_found(&id));
    }
    tracing::info!(schedule = %id, tenant = %caller.tenant, "schedule removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/schedules/{id}/pause`: it fires nothing until resumed.
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules",
    params(("id" = String, Path, description = "The schedule")),
    responses((status = 200, description = "Paused (no `next_fire_ms`)", body = Schedule),
        (status = 404, description = "No such schedule of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    set_paused(state, caller, id, true).await
}

/// `POST /v1/schedules/{id}/resume`: it goes on from its next tick after now
/// (ticks missed while paused do not fire).
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules",
    params(("id" = String, Path, description = "The schedule")),
    responses((status = 200, description = "Resumed, with its next tick", body = Schedule),
        (status = 404, description = "No such schedule of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    set_paused(state, caller, id, false).await
}

async fn set_paused(
    state: AppState,
    caller: Caller,
    id: String,
    paused: bool,
) -> Result<Json<Schedule>, ApiError> {
    caller.require(Scope::Submit)?;
    reachable(&state, &caller, &id).await?;
    let schedule = state
        .queue
        .pause_schedule(&id, paused)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let what = if paused { "paused" } else { "resumed" };
    tracing::info!(schedule = %id, tenant = %caller.tenant, "schedule {what}");
    Ok(Json(schedule))
}

/// `GET /v1/schedules/{id}/runs?limit=`: its last ticks, newest first: when,
/// when handled, and the job each fired.
#[utoipa::path(get, path = "/v1/schedules/{id}/runs", tag = "schedules",
    params(("id" = String, Path, description = "The schedule"), RunsQuery),
    responses((status = 200, body = ScheduleRuns),
        (status = 404, description = "No such schedule of this tenant", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad limit", body = crate::openapi::ErrorBody)))]
pub async fn runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<ScheduleRuns>, ApiError> {
    caller.require(Scope::Read)?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_RUNS);
    if !(1..=RUNS_KEPT).contains(&limit) {
        return Err(ApiError::out_of_range("limit", 1, RUNS_KEPT));
    }
    reachable(&state, &caller, &id).await?;
    let runs = state
        .queue
        .schedule_runs(&id, limit)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(ScheduleRuns { runs }))
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn a_stored_schedule_is_documented_as_one_object_with_every_field() {
        let doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        let stored = &doc["components"]["schemas"]["Schedule"];
        assert!(stored["allOf"].is_null(), "{stored}");
        assert!(stored["additionalProperties"].is_null(), "{stored}");
        for field in ["id", "task", "cron", "every_ms", "tenant", "next_fire_ms"] {
            assert!(stored["properties"][field].is_object(), "{field}: {stored}");
        }
        let spec = &doc["components"]["schemas"]["ScheduleSpec"];
        assert_eq!(spec["additionalProperties"], false, "{spec}");
        assert!(doc["paths"]["/v1/schedules/{id}/runs"]["get"].is_object());
    }
}
