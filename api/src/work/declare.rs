//! `POST /v1/work/tasks`: a remote worker declares the tasks it serves.
//!
//! Each definition becomes a [`TaskDefinition`] with runtime `http`, owned
//! by the key's tenant (only that tenant may submit to it and serve it),
//! stored in the registry by [`hopper_queue::QueueClient::declare`]. Its
//! settings are the queue's defaults with the given fields on top; its
//! schema must compile (`jsonschema`), else 422. A second schema under one
//! version answers 409 `schema_conflict` naming both digests; a name
//! declared by another tenant, by a Rust worker for every tenant, or a
//! built-in kind answers 409 `task_owned`. An older version than the one in
//! force changes nothing and answers the one in force.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
};
use hopper_queue::{Declared, QueueError};
use hopper_shared::{
    QueueName,
    tasks::{Runtime, TaskDefinition, TaskSettings},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::require_worker;
use crate::{AppState, auth::Caller, error::ApiError};

/// Definitions one call may carry.
pub const MAX_TASKS: usize = 100;

/// Body of `POST /v1/work/tasks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareRequest {
    /// 1 to 100 definitions.
    pub tasks: Vec<NewTask>,
}

/// One task as a remote worker declares it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// The task's (queue's) name.
    pub name: String,
    /// Its version, from 1 (default 1).
    #[serde(default = "first")]
    pub version: u32,
    /// JSON Schema of its arguments (submissions are checked against it).
    #[serde(default)]
    #[schema(value_type = Object, nullable = false)]
    pub schema: Option<Value>,
    /// Settings; those left out keep the queue's defaults.
    #[serde(default)]
    pub settings: PartialSettings,
    /// What it does, for people.
    #[serde(default)]
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// Its arguments' names in positional order: a Celery producer's
    /// positional arguments become these named arguments.
    #[serde(default)]
    #[schema(nullable = false)]
    pub params: Option<Vec<String>>,
}

fn first() -> u32 {
    1
}

/// [`TaskSettings`] with every field optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PartialSettings {
    #[schema(nullable = false)]
    pub concurrency: Option<usize>,
    #[schema(nullable = false)]
    pub max_attempts: Option<u32>,
    #[schema(nullable = false)]
    pub backoff_base_ms: Option<u64>,
    #[schema(nullable = false)]
    pub backoff_max_ms: Option<u64>,
    #[schema(nullable = false)]
    pub soft_limit_ms: Option<u64>,
    #[schema(nullable = false)]
    pub hard_limit_ms: Option<u64>,
    #[schema(nullable = false)]
    pub retention_ms: Option<u64>,
    /// At most this many starts per period across every worker: `20/s`,
    /// `600/m`, `1000/h`.
    #[schema(value_type = Option<String>, nullable = false, example = "20/s")]
    pub rate_limit: Option<hopper_shared::rate_limit::RateLimit>,
    /// At most this many jobs of one tenant running at once, across every
    /// worker.
    #[schema(nullable = false, minimum = 1)]
    pub tenant_concurrency: Option<u32>,
}

impl PartialSettings {
    fn over(&self, base: TaskSettings) -> TaskSettings {
        TaskSettings {
            concurrency: self.concurrency.unwrap_or(base.concurrency),
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            backoff_base_ms: self.backoff_base_ms.unwrap_or(base.backoff_base_ms),
            backoff_max_ms: self.backoff_max_ms.unwrap_or(base.backoff_max_ms),
            soft_limit_ms: self.soft_limit_ms.unwrap_or(base.soft_limit_ms),
            hard_limit_ms: self.hard_limit_ms.unwrap_or(base.hard_limit_ms),
            retention_ms: self.retention_ms.unwrap_or(base.retention_ms),
            rate_limit: self.rate_limit.or(base.rate_limit),
            tenant_concurrency: self.tenant_concurrency.or(base.tenant_concurrency),
        }
    }
}

/// The definitions in force after the call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeclaredTasks {
    /// One per declared task, in order.
    pub tasks: Vec<TaskDefinition>,
}

/// `POST /v1/work/tasks`.
#[utoipa::path(post, path = "/v1/work/tasks", tag = "work", request_body = DeclareRequest,
    responses(
        (status = 200, body = DeclaredTasks),
        (status = 403, description = "Not a work key, or a queue the key may not serve", body = crate::openapi::ErrorBody),
        (status = 409, description = "schema_conflict or task_owned", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad name, settings or schema", body = crate::openapi::ErrorBody)))]
pub async fn declare(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<DeclareRequest>, JsonRejection>,
) -> Result<Json<DeclaredTasks>, ApiError> {
    require_worker(&caller)?;
    let Json(req) = body?;
    if req.tasks.is_empty() || req.tasks.len() > MAX_TASKS {
        return Err(invalid("tasks", format!("declare 1 to {MAX_TASKS} tasks")));
    }
    // Check every definition before storing any.
    let mut defs = Vec::with_capacity(req.tasks.len());
    for (i, t) in req.tasks.iter().enumerate() {
        defs.push(definition(&state, &caller, t, &format!("tasks[{i}]."))?);
    }
    let mut tasks = Vec::with_capacity(defs.len());
    for def in defs {
        let name = def.name.clone();
        match state.queue.declare(&def).await {
            Ok(Declared::InForce(def)) => tasks.push(*def),
            Ok(Declared::Older(_)) => match state.queue.task(&name).await? {
                Some(def) => tasks.push(def),
                None => tasks.push(def),
            },
            Err(e @ QueueError::SchemaConflict { .. }) => {
                return Err(
                    ApiError::new(StatusCode::CONFLICT, "schema_conflict", e.to_string())
                        .field(Some("schema".into())),
                );
            }
            Err(e @ QueueError::TaskOwned { .. }) => {
                return Err(
                    ApiError::new(StatusCode::CONFLICT, "task_owned", e.to_string())
                        .field(Some("name".into())),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Submissions and claims see the new definitions at once.
    state.tasks.invalidate();
    tracing::info!(tenant = %caller.tenant, tasks = ?tasks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        "tasks declared over HTTP");
    Ok(Json(DeclaredTasks { tasks }))
}

/// The definition `t` declares, checked (name, version, settings, schema).
/// `at` prefixes the field names of errors (`tasks[2].`).
fn definition(
    state: &AppState,
    caller: &Caller,
    t: &NewTask,
    at: &str,
) -> Result<TaskDefinition, ApiError> {
    let field = |f: &str| format!("{at}{f}");
    let name = QueueName::new(&t.name).map_err(|e| invalid(&field("name"), e.to_string()))?;
    if name.job_kind().is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "task_owned",
            format!("`{name}` is a built-in task, served by Hopper's own workers"),
        )
        .field(Some(field("name"))));
    }
    if !caller.may_serve(&name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this work key may not serve `{name}`"),
        )
        .field(Some(field("name"))));
    }
    if let Some(d) = &t.description {
        ApiError::no_nul(&field("description"), d)?;
    }
    let base = TaskSettings::from(&state.queue.settings(&name));
    let def = TaskDefinition {
        version: t.version,
        schema: t.schema.clone(),
        settings: t.settings.over(base),
        runtime: Runtime::Http,
        tenant: Some(caller.tenant.to_string()),
        description: t.description.clone(),
        params: t.params.clone(),
        ..TaskDefinition::new(name)
    };
    def.check()
        .map_err(|e| invalid(&field(e.field.as_deref().unwrap_or("settings")), e.message))?;
    if let Some(schema) = &def.schema {
        jsonschema::validator_for(schema)
            .map_err(|e| invalid(&field("schema"), format!("not a valid JSON Schema: {e}")))?;
    }
    Ok(def)
}

fn invalid(field: &str, why: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_args", why).field(Some(field.into()))
}
