//! The OpenAPI description of the worker protocol's paths and bodies,
//! merged into the API's document (`crate::openapi::ApiDoc`).

use hopper_shared::tasks::{Runtime, TaskDefinition, TaskSettings};
use utoipa::OpenApi;

use super::{ItemStatus, claim, complete, declare, heartbeat, progress};

/// `/v1/work/*`.
#[derive(OpenApi)]
#[openapi(
    paths(
        declare::declare,
        claim::claim,
        heartbeat::heartbeat,
        complete::complete,
        complete::fail,
        progress::progress,
    ),
    components(schemas(
        declare::DeclareRequest, declare::NewTask, declare::PartialSettings,
        declare::DeclaredTasks, TaskDefinition, TaskSettings, Runtime,
        claim::ClaimRequest, claim::ClaimResponse, claim::ClaimedJob,
        heartbeat::HeartbeatRequest, heartbeat::HeartbeatResponse,
        complete::CompleteRequest, complete::Completion, complete::FailRequest,
        complete::Failure, complete::ItemResults, complete::ItemResult, ItemStatus,
        progress::ProgressRequest,
    )),
    tags((name = "work", description = "The HTTP worker protocol: remote workers declare \
        tasks, claim jobs, heartbeat, report progress and finish attempts (work keys)")),
)]
pub struct WorkDoc;

/// Merges [`WorkDoc`] into the API's document (listed before the modifier
/// that adds the common error answers, so the work paths get them too).
pub struct MergeWork;

impl utoipa::Modify for MergeWork {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.merge(WorkDoc::openapi());
    }
}
