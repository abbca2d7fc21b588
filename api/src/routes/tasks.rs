//! The task registry over HTTP: what tasks exist and who serves them.
//!
//! `GET /v1/tasks` lists every task the caller may see (the built-in kinds
//! and the declared tasks open to its tenant), each with its definition,
//! the workers registered on its queue and the queue's depth;
//! `GET /v1/tasks/{name}` shows one; `DELETE /v1/tasks/{name}` (admin scope)
//! forgets a declaration — its queue and jobs stay, and a worker that serves
//! the task declares it again when it starts. A tenant removes its own
//! tasks; a task open to every tenant (declared by a Rust worker) is removed
//! by an admin of the operator tenant (`default`) only.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use hopper_shared::{QueueName, jobs::DEFAULT_TENANT, keys::Scope, tasks::TaskDefinition};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{AppState, auth::Caller, error::ApiError, tasks::Task};

/// A task with its workers and its queue's depth.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    /// Its definition, as declared.
    #[serde(flatten)]
    pub definition: TaskDefinition,
    /// Workers registered on its queue (Rust and HTTP alike).
    pub workers: u64,
    /// Jobs waiting to be claimed.
    pub pending: u64,
    /// Jobs waiting for a run-at time or a retry.
    pub scheduled: u64,
    /// Jobs claimed by workers.
    pub running: u64,
    /// Dead letters.
    pub dead: u64,
}

async fn view(state: &AppState, task: &Task) -> Result<TaskView, ApiError> {
    let stats = state.queue.stats(task.name()).await?;
    Ok(TaskView {
        definition: task.def.clone(),
        workers: stats.workers,
        pending: stats.pending,
        scheduled: stats.scheduled,
        running: stats.running,
        dead: stats.dead,
    })
}

/// `GET /v1/tasks`.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    responses((status = 200, body = crate::openapi::TaskList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let tasks = state.tasks.visible(&state.queue, &caller.tenant).await?;
    let views = futures::future::try_join_all(tasks.iter().map(|t| view(&state, t))).await?;
    Ok(Json(json!({ "tasks": views })))
}

/// `GET /v1/tasks/{name}`.
#[utoipa::path(get, path = "/v1/tasks/{name}", tag = "tasks",
    params(("name" = QueueName, Path, description = "The task")),
    responses((status = 200, body = TaskView),
        (status = 404, description = "No such task (`known` lists those the caller may submit)", body = crate::openapi::ErrorBody),
        (status = 422, description = "Not a queue name", body = crate::openapi::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    caller.require(Scope::Read)?;
    let task = state
        .tasks
        .get(&state.queue, &name, &caller.tenant, "name")
        .await?;
    Ok(Json(view(&state, &task).await?))
}

/// `DELETE /v1/tasks/{name}`: 204 once forgotten.
#[utoipa::path(delete, path = "/v1/tasks/{name}", tag = "tasks",
    params(("name" = QueueName, Path, description = "The task")),
    responses((status = 204, description = "Forgotten (its queue and jobs stay)"),
        (status = 403, description = "A task of every tenant: only an admin of the operator tenant removes it", body = crate::openapi::ErrorBody),
        (status = 404, description = "No declared task of that name that the caller may see", body = crate::openapi::ErrorBody),
        (status = 422, description = "Not a queue name", body = crate::openapi::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Admin)?;
    let name = QueueName::new(&name).map_err(|e| ApiError::invalid_queue_name(e, "name"))?;
    let not_declared = || ApiError::not_found(format!("no declared task `{name}`"));
    let def = state.queue.task(&name).await?.ok_or_else(not_declared)?;
    match def.tenant.as_deref() {
        Some(owner) if owner != &*caller.tenant => return Err(not_declared()),
        None if &*caller.tenant != DEFAULT_TENANT => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "`{name}` is a task of every tenant (declared by a Rust worker): only an \
                     admin key of the operator tenant `{DEFAULT_TENANT}` removes it"
                ),
            ));
        }
        _ => {}
    }
    if !state.queue.remove_task(&name).await? {
        return Err(not_declared());
    }
    state.tasks.invalidate();
    tracing::info!(task = %name, tenant = %caller.tenant, version = def.version, "task removed");
    Ok(StatusCode::NO_CONTENT)
}
