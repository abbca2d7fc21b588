//! Workflows over HTTP: submit a DAG of jobs (chains, groups, chords), list
//! them, show one with every node's state, cancel one.
//!
//! `POST /v1/workflows` (submit scope) takes a
//! [`WorkflowSpec`](hopper_shared::workflows::WorkflowSpec). Everything is
//! checked before anything is stored, and a refusal names the JSON path of
//! the problem: the spec's shape and its DAG by
//! [`Node::from_json`] and [`WorkflowSpec::plan`] (422 `invalid_workflow`,
//! e.g. `root.chain[1].args`), then each task node as `POST /v1/jobs/{task}`
//! checks a job: its task (404 `unknown_task` at `<node>.task`, 422 for one
//! only Hopper queues) and its arguments against the task's type or schema
//! (422 `invalid_args` at `<node>.args.<field>`). A node that waits for
//! others gets their results in its input argument, known only at run time:
//! its arguments are checked with stand-ins for it, and a complaint about
//! that argument alone is let through (see `check_args`). The workflow is
//! then stored and its first nodes queued by the queue core
//! ([`QueueClient::create_workflow`]); the fan-in that pushes the others as
//! their dependencies finish is `hopper_queue::workflow`'s. The workflow
//! and its jobs are the caller's tenant's.
//!
//! The other routes answer the caller's tenant's workflows; an admin key of
//! the operator tenant (`default`) reaches every tenant's by id (as
//! `routes/schedules.rs`). Any other workflow is 404 `workflow_not_found`,
//! as one that does not exist.
//!
//! [`QueueClient::create_workflow`]: hopper_queue::QueueClient::create_workflow

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

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
    QueueName,
    jobs::DEFAULT_TENANT,
    keys::Scope,
    workflows::{
        Node, OnFailure, Plan, PlannedNode, WorkflowError, WorkflowSpec, WorkflowState,
        WorkflowView,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{AppState, auth::Caller, error::ApiError, tasks::Task};

/// Workflows listed when the query names no limit.
const DEFAULT_LIMIT: usize = 20;
/// The most workflows one listing answers.
const MAX_LIMIT: usize = 100;
/// The most attempts a node may ask for (as a job's `max_attempts`).
const MAX_ATTEMPTS: u32 = 100;

/// The caller's newest workflows.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkflowList {
    /// Newest first, without their nodes.
    pub workflows: Vec<WorkflowView>,
}

/// What a cancel did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkflowCancelled {
    /// The workflow.
    pub id: uuid::Uuid,
    /// Its state when the cancel arrived (a finished workflow is left as it
    /// was).
    pub state_before: WorkflowState,
    /// Its state now.
    pub state: WorkflowState,
}

/// Options of `GET /v1/workflows`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Most workflows returned (1–100, default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
}

/// The top-level fields of a [`WorkflowSpec`], its root still JSON (read by
/// [`Node::from_json`], whose errors name the path inside it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    on_failure: OnFailure,
    root: Value,
}

/// 422 `invalid_workflow` at `field`.
fn invalid_workflow(field: Option<String>, problem: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_workflow",
        problem,
    )
    .field(field)
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        invalid_workflow(Some(e.field), e.message)
    }
}

/// Whether the caller reaches workflows of `tenant`: its own, or any for an
/// admin of the operator tenant.
fn reaches_all(caller: &Caller) -> bool {
    &*caller.tenant == DEFAULT_TENANT && caller.scopes.contains(&Scope::Admin)
}

/// The tenant filter of a lookup by id: the caller's, or none for the
/// operator's admin.
fn tenant_filter(caller: &Caller) -> Option<&str> {
    (!reaches_all(caller)).then_some(&*caller.tenant)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "workflow_not_found",
        format!("no workflow `{id}`"),
    )
}

/// The request body as a [`WorkflowSpec`]: a field missing, unknown or of
/// the wrong type is 422 `invalid_workflow` naming its JSON path.
fn spec_of(body: Result<Json<Value>, JsonRejection>) -> Result<WorkflowSpec, ApiError> {
    let Json(body) = body?;
    // (serde would take an array for a struct, its fields in order.)
    if !body.is_object() {
        return Err(invalid_workflow(
            None,
            "a workflow is a JSON object {\"root\": node, \"name\"?, \"on_failure\"?} \
             (see WorkflowSpec in /openapi.json)",
        ));
    }
    let fields: SpecFields = serde_path_to_error::deserialize(body).map_err(|e| {
        let e = hopper_shared::jobs::InvalidArgs::from(e);
        invalid_workflow(e.field, e.message)
    })?;
    Ok(WorkflowSpec {
        name: fields.name,
        on_failure: fields.on_failure,
        root: Node::from_json(&fields.root, "root")?,
    })
}

/// `error` (from checking a node's arguments) with its field placed under
/// `<node>.args`.
fn under_args(error: ApiError, node: &PlannedNode) -> ApiError {
    if error.status() != StatusCode::UNPROCESSABLE_ENTITY {
        return error;
    }
    let prefix = format!("{}.args", node.path);
    let field = match error.field_name() {
        Some(f) if f.starts_with('[') => format!("{prefix}{f}"),
        Some(f) => format!("{prefix}.{f}"),
        None => prefix,
    };
    error.field(Some(field))
}

/// Whether `field` is `arg` or lies under it (`arg.x`, `arg[0]`).
fn is_under(field: &str, arg: &str) -> bool {
    field
        .strip_prefix(arg)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Stand-ins for a node's input while its value is unknown: null first,
/// then one value of each other JSON type.
fn input_stand_ins() -> [Value; 6] {
    [
        Value::Null,
        json!([]),
        json!({}),
        json!(""),
        json!(0),
        json!(false),
    ]
}

/// Checks one node's arguments as its job's will be. A node that gets
/// upstream results has its input argument only once the nodes before it
/// have finished: its arguments are checked with stand-ins in its place
/// ([`input_stand_ins`]), and a complaint about that argument is let
/// through. A validator answers its first complaint only, and one about the
/// stand-in would hide the others: so the arguments pass when one stand-in
/// passes, are refused with the first complaint about another argument,
/// and pass when every complaint is about the input.
fn check_args(task: &Task, node: &PlannedNode) -> Result<(), ApiError> {
    let Some(input) = &node.input else {
        return task
            .validate(&node.args, None)
            .map_err(|e| under_args(e, node));
    };
    if !task.takes_field(&input.arg) {
        return Err(invalid_workflow(
            Some(format!("{}.input", node.path)),
            format!(
                "task {} takes no argument `{}` to receive the results before it",
                task.name(),
                input.arg
            ),
        ));
    }
    let mut args = node.args.clone();
    let mut refused = None;
    for stand_in in input_stand_ins() {
        if let Some(obj) = args.as_object_mut() {
            obj.insert(input.arg.clone(), stand_in);
        }
        match task.validate(&args, None) {
            Ok(()) => return Ok(()),
            Err(e) if e.field_name().is_some_and(|f| is_under(f, &input.arg)) => {}
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    refused.map_or(Ok(()), |e| Err(under_args(e, node)))
}

/// Refuses a workflow whose member jobs would take its tenant over the
/// per-tenant cap of unfinished jobs in one of its tasks' queues (429
/// `tenant_queue_full`, as a job push would be): members are pushed as
/// their turn comes, past the point where a refusal could reach the caller.
async fn within_tenant_caps(state: &AppState, plan: &Plan, tenant: &str) -> Result<(), ApiError> {
    let cap = state.config.api.max_pending_per_tenant;
    if cap == 0 {
        return Ok(());
    }
    let mut members: BTreeMap<&QueueName, u64> = BTreeMap::new();
    for node in &plan.nodes {
        *members.entry(&node.task).or_default() += 1;
    }
    for (task, n) in members {
        let load = state.queue.unfinished_of(task.clone(), tenant).await?;
        if load + n > cap {
            let mut full = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tenant_queue_full",
                format!(
                    "the workflow's {n} {task} jobs would take tenant `{tenant}` from {load} to \
                     {} unfinished {task} jobs, over its cap of {cap} \
                     (HOPPER_MAX_PENDING_PER_TENANT): nothing was queued; retry when some \
                     have finished",
                    load + n
                ),
            );
            full.retry_after = Some(5);
            return Err(full);
        }
    }
    Ok(())
}

/// `POST /v1/workflows`: 201 with the stored workflow and its nodes (those
/// that wait for nothing already queued).
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    request_body(content = WorkflowSpec, example = json!({
        "name": "greet then gather",
        "on_failure": "stop",
        "root": {"chain": [
            {"task": "echo", "args": {"message": "hello"}},
            {"chord": {
                "header": [{"task": "echo", "args": {"message": "a"}},
                           {"task": "echo", "args": {"message": "b"}}],
                "body": {"task": "echo", "args": {"message": "both"}}
            }}
        ]}
    })),
    responses((status = 201, body = WorkflowView),
        (status = 404, description = "A node names no task the caller may submit (`field`: `<node>.task`; `known` lists them)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "The workflow refused (`invalid_workflow`), or a node's arguments (`invalid_args`); `field` is the JSON path", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Submit)?;
    let spec = spec_of(body)?;
    let plan = spec.plan()?;
    // Each task is looked up once (most workflows name a few tasks many
    // times); a refusal names the first node that names it.
    let mut tasks: HashMap<&str, Arc<Task>> = HashMap::new();
    for node in &plan.nodes {
        if node.max_attempts.is_some_and(|m| m > MAX_ATTEMPTS) {
            return Err(invalid_workflow(
                Some(format!("{}.max_attempts", node.path)),
                format!("at most {MAX_ATTEMPTS} attempts"),
            ));
        }
        let name = node.task.as_str();
        let task = match tasks.get(name) {
            Some(task) => Arc::clone(task),
            None => {
                let field = format!("{}.task", node.path);
                let task = state
                    .tasks
                    .get(&state.queue, name, &caller.tenant, &field)
                    .await?;
                task.submittable().map_err(|e| e.field(Some(field)))?;
                tasks.insert(name, Arc::clone(&task));
                task
            }
        };
        check_args(&task, node)?;
    }
    within_tenant_caps(&state, &plan, &caller.tenant).await?;
    let id = state
        .queue
        .create_workflow(&spec, &plan, &caller.tenant)
        .await?;
    tracing::info!(workflow = %id, nodes = plan.nodes.len(), tenant = %caller.tenant,
        name = spec.name.as_deref().unwrap_or(""), "workflow created");
    let view = state
        .queue
        .workflow(id, None, true)
        .await?
        .ok_or_else(|| ApiError::unavailable(format!("workflow {id} vanished once stored")))?;
    Ok((
        StatusCode::CREATED,
        [("location", format!("/v1/workflows/{id}"))],
        Json(view),
    ))
}

/// `GET /v1/workflows?limit=`: the caller's tenant's newest workflows.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(ListQuery),
    responses((status = 200, body = WorkflowList),
        (status = 422, description = "Bad limit", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    caller.require(Scope::Read)?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::out_of_range("limit", 1, MAX_LIMIT));
    }
    let workflows = state.queue.workflows(&caller.tenant, limit).await?;
    Ok(Json(WorkflowList { workflows }))
}

/// `GET /v1/workflows/{id}`: the workflow with every node's state.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = uuid::Uuid, Path, description = "The workflow")),
    responses((status = 200, body = WorkflowView),
        (status = 404, description = "No such workflow of this tenant", body = crate::openapi::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    caller.require(Scope::Read)?;
    let uuid = ApiError::parse_uuid(&id, "workflow")?;
    state
        .queue
        .workflow(uuid, tenant_filter(&caller), true)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// `POST /v1/workflows/{id}/cancel`: nodes not started are skipped, queued
/// and running ones cancelled (a running job stops cooperatively). A
/// finished workflow is left as it was. A document's pipeline (a workflow
/// with a node of a kind only Hopper queues) is 409 `pipeline_workflow`:
/// stopped alone it would leave its document waiting for ever.
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = uuid::Uuid, Path, description = "The workflow")),
    responses((status = 200, body = WorkflowCancelled),
        (status = 404, description = "No such workflow of this tenant", body = crate::openapi::ErrorBody),
        (status = 409, description = "A document's pipeline (delete the document instead)", body = crate::openapi::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowCancelled>, ApiError> {
    caller.require(Scope::Submit)?;
    let uuid = ApiError::parse_uuid(&id, "workflow")?;
    let tenant = tenant_filter(&caller);
    let internal = state
        .queue
        .workflow(uuid, tenant, true)
        .await?
        .is_some_and(|wf| {
            wf.nodes
                .iter()
                .any(|n| n.task.job_kind().is_some_and(|k| k.is_internal()))
        });
    if internal {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "pipeline_workflow",
            format!(
                "workflow {uuid} is a document's pipeline: delete the document \
                 (DELETE /v1/documents/{{id}}) to stop it"
            ),
        ));
    }
    let before = state
        .queue
        .cancel_workflow(uuid, tenant)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let after = state
        .queue
        .workflow(uuid, tenant, false)
        .await?
        .ok_or_else(|| not_found(&id))?;
    tracing::info!(workflow = %uuid, tenant = %after.tenant, ?before, state = ?after.state,
        "workflow cancel asked");
    Ok(Json(WorkflowCancelled {
        id: uuid,
        state_before: before,
        state: after.state,
    }))
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::is_under;

    #[test]
    fn the_input_argument_and_what_lies_under_it_are_recognised() {
        assert!(is_under("input", "input"));
        assert!(is_under("input.a", "input"));
        assert!(is_under("input[0]", "input"));
        assert!(!is_under("inputs", "input"));
        assert!(!is_under("message", "input"));
    }

    #[test]
    fn the_workflow_routes_and_types_are_documented() {
        let doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        for (path, method) in [
            ("/v1/workflows", "post"),
            ("/v1/workflows", "get"),
            ("/v1/workflows/{id}", "get"),
            ("/v1/workflows/{id}/cancel", "post"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        let schemas = &doc["components"]["schemas"];
        for name in [
            "WorkflowSpec",
            "WorkflowView",
            "NodeView",
            "WorkflowState",
            "NodeState",
            "OnFailure",
            "WorkflowList",
            "WorkflowCancelled",
        ] {
            assert!(schemas[name].is_object(), "{name} missing");
        }
        assert_eq!(schemas["WorkflowSpec"]["additionalProperties"], false);
        assert_eq!(
            schemas["WorkflowSpec"]["required"],
            serde_json::json!(["root"])
        );
    }
}
