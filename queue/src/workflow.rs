//! Where workflows live in Redis, and the fan-in that moves them on.
//!
//! ```text
//! {<prefix>:wf:<id>}                  HASH  the workflow: its nodes' plans, states, fan-in
//!                                           counters and outcomes (`lua/workflow_lib.lua`)
//! {<prefix>:workflows}:t:<tenant>     ZSET  the tenant's workflows by creation (ms)
//! {<prefix>:workflows}:stalled        ZSET  workflows being moved on, by when (ms): an entry
//!                                           left over 30 s is a mover that died; repaired
//! ```
//!
//! A workflow is one hash, so every script of it runs in one slot. Its
//! member jobs live in their tasks' queues like any job, each with a
//! [`Notify`] of the reserved name [`WORKFLOW_NOTIFY`] naming the workflow
//! and the node. Every path that finishes a job announces it through
//! [`QueueClient::push_callbacks`] (after its record is stored, before Redis
//! lets go of the job — the same step that fills the Celery bridge's
//! outbox); for a member that step is [`QueueClient::workflow_member_finished`]:
//!
//! 1. `workflow_step.lua` records the node's outcome once and counts down
//!    its dependents' counters; with `on_failure: stop` a failure stops the
//!    workflow (waiting nodes skipped, queued ones answered to cancel). It
//!    answers the dependents that became ready, with their inputs.
//! 2. Each ready node's job is pushed under [`node_job_id`] (a second push
//!    finds the first job), then `workflow_queued.lua` marks it queued.
//!
//! So a member re-run after a crash (between its record and its ack) or two
//! members finishing at once can neither drop nor double a counter, and a
//! ready node is pushed once. A member's job queue and the workflow live in
//! different slots: the fan-in cannot be inside `ack.lua` itself in a
//! Redis Cluster, so it is the script the ack path runs just before it.
//!
//! Who repairs a mover that died between the two steps: the member's own
//! re-run (it was not acknowledged), or — for a create or a step whose
//! Redis calls failed — [`QueueClient::repair_stalled_workflows`], run by
//! the scheduler loop in every process.
//!
//! [`Notify`]: hopper_shared::jobs::Notify

use std::{collections::BTreeMap, time::Duration};

use hopper_shared::{
    QueueName,
    jobs::{JobRecord, JobState, Notify},
    workflows::{
        NodeState, NodeView, OnFailure, Plan, PlannedNode, Template, WorkflowSpec, WorkflowState,
        WorkflowView, failed_outcome, node_job_id,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{PushOptions, QueueClient, QueueError, client::evalsha, scripts::SCRIPTS};

/// The reserved notify name of workflow members.
pub const WORKFLOW_NOTIFY: &str = "hopper.workflow";
/// How long a finished workflow is kept.
pub const WORKFLOW_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// A `stalled` entry older than this is a mover that died.
pub const STALLED_AFTER: Duration = Duration::from_secs(30);
/// Workflows repaired per round, at most.
const REPAIRS_PER_ROUND: isize = 20;

/// What a member job's notify carries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Member {
    /// The workflow.
    pub workflow: Uuid,
    /// The node's index.
    pub node: usize,
}

/// How a step script call starts.
enum Step {
    /// Which nodes are ready (after the create; a repair).
    Kick,
    /// Node `node` ended as `state` with this outcome.
    Done {
        node: usize,
        state: &'static str,
        outcome: Value,
        error: Option<String>,
    },
}

impl Step {
    /// Node `node` (job `job`) ended cancelled, for `why`, with no worker
    /// to report it.
    fn cancelled(node: usize, job: Uuid, why: &str) -> Self {
        Step::Done {
            node,
            state: "cancelled",
            outcome: failed_outcome("cancelled", Some(why), job),
            error: Some(why.to_owned()),
        }
    }
}

type StepReply = (String, Vec<(String, String)>, Vec<Vec<String>>);

/// The trace context stored beside a planned node (an extra field of its
/// JSON, which [`PlannedNode`] ignores): the W3C `traceparent` of the span
/// that created the workflow.
#[derive(Debug, Default, Deserialize)]
struct NodeTrace {
    traceparent: Option<String>,
}

impl NodeTrace {
    const FIELD: &str = "traceparent";
}

impl QueueClient {
    fn workflow_key(&self, id: Uuid) -> String {
        format!("{{{}:wf:{id}}}", self.prefix())
    }

    fn workflows_stalled_key(&self) -> String {
        format!("{{{}:workflows}}:stalled", self.prefix())
    }

    fn workflows_index_key(&self, tenant: &str) -> String {
        format!("{{{}:workflows}}:t:{tenant}", self.prefix())
    }

    /// Stores a planned workflow of `tenant` and pushes the jobs of the
    /// nodes that wait for nothing. The spec's tasks and arguments are the
    /// caller's to check first. Answers its id.
    pub async fn create_workflow(
        &self,
        spec: &WorkflowSpec,
        plan: &Plan,
        tenant: &str,
    ) -> Result<Uuid, QueueError> {
        self.create_workflow_as(Uuid::now_v7(), spec, plan, tenant)
            .await
    }

    /// [`Self::create_workflow`] under a given id: a second create of one id
    /// stores nothing new (a handler re-run submits its workflow once).
    pub async fn create_workflow_as(
        &self,
        id: Uuid,
        spec: &WorkflowSpec,
        plan: &Plan,
        tenant: &str,
    ) -> Result<Uuid, QueueError> {
        let now = self.redis_now_ms();
        let keep = WORKFLOW_RETENTION.as_millis() as i64;
        // Stalled first: a create that dies half-way is finished by a repair.
        redis::pipe()
            .cmd("ZADD")
            .arg(self.workflows_stalled_key())
            .arg(now)
            .arg(id.to_string())
            .ignore()
            .cmd("ZADD")
            .arg(self.workflows_index_key(tenant))
            .arg(now)
            .arg(id.to_string())
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.workflows_index_key(tenant))
            .arg("-inf")
            .arg(now - keep - 24 * 3_600_000)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        let mut inv = SCRIPTS.workflow_create.prepare_invoke();
        inv.key(self.workflow_key(id))
            .arg(tenant)
            .arg(spec.on_failure.as_str())
            .arg(spec.name.as_deref().unwrap_or(""))
            .arg(plan.nodes.len())
            .arg(serde_json::to_string(&plan.output)?)
            .arg(keep);
        let csv = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        // Each stored node carries the creator's trace context, so every
        // member job, pushed now or when its dependencies finish, continues
        // the creator's trace (see [`NodeTrace`]).
        let traceparent = hopper_shared::telemetry::current_traceparent();
        for node in &plan.nodes {
            let mut stored = serde_json::to_value(node)?;
            if let (Some(tp), Some(obj)) = (&traceparent, stored.as_object_mut()) {
                obj.insert(NodeTrace::FIELD.to_owned(), Value::String(tp.clone()));
            }
            inv.arg(serde_json::to_string(&stored)?)
                .arg(node.task.as_str())
                .arg(csv(&node.deps))
                .arg(csv(&node.dependents));
        }
        let _created: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        self.move_on(id, tenant, Step::Kick).await?;
        self.unstall(id).await;
        Ok(id)
    }

    /// Called for a member job that reached a final state (by
    /// [`Self::push_callbacks`]): records its outcome in its workflow and
    /// pushes the nodes that became ready.
    pub async fn workflow_member_finished(
        &self,
        member: &Member,
        job: &JobRecord,
    ) -> Result<(), QueueError> {
        let (state, outcome) = match job.state {
            JobState::Succeeded => ("succeeded", job.result.clone().unwrap_or(Value::Null)),
            JobState::Dead | JobState::Failed => {
                ("dead", failed_outcome("dead", job.error.as_deref(), job.id))
            }
            JobState::Cancelled => (
                "cancelled",
                failed_outcome("cancelled", job.error.as_deref(), job.id),
            ),
            _ => return Ok(()),
        };
        let _: () = redis::cmd("ZADD")
            .arg(self.workflows_stalled_key())
            .arg(self.redis_now_ms())
            .arg(member.workflow.to_string())
            .query_async(&mut self.conn.clone())
            .await?;
        let step = Step::Done {
            node: member.node,
            state,
            outcome,
            error: job.error.clone(),
        };
        self.move_on(member.workflow, &job.tenant, step).await?;
        self.unstall(member.workflow).await;
        Ok(())
    }

    async fn unstall(&self, id: Uuid) {
        let removed: Result<(), _> = redis::cmd("ZREM")
            .arg(self.workflows_stalled_key())
            .arg(id.to_string())
            .query_async(&mut self.conn.clone())
            .await;
        if let Err(e) = removed {
            tracing::warn!(workflow = %id, "could not clear the stalled mark (a repair will look): {e}");
        }
    }

    /// Runs a step, pushes what became ready, cancels what must stop, and
    /// repeats for the nodes those cancels finished at once.
    async fn move_on(&self, id: Uuid, tenant: &str, first: Step) -> Result<(), QueueError> {
        let key = self.workflow_key(id);
        let mut todo = vec![first];
        while let Some(step) = todo.pop() {
            let mut inv = SCRIPTS.workflow_step.prepare_invoke();
            inv.key(&key);
            match &step {
                Step::Kick => {
                    inv.arg("kick");
                }
                Step::Done {
                    node,
                    state,
                    outcome,
                    error,
                } => {
                    inv.arg("done")
                        .arg(node)
                        .arg(*state)
                        .arg(serde_json::to_string(outcome)?)
                        .arg(error.as_deref().unwrap_or(""));
                }
            }
            let (state, cancel, ready): StepReply =
                inv.invoke_async(&mut self.conn.clone()).await?;
            if state.is_empty() {
                tracing::warn!(workflow = %id, "a member finished, but its workflow is gone");
                continue;
            }
            let mut to_cancel = cancel;
            if !ready.is_empty() {
                let pushed = self.push_ready(id, tenant, &ready).await?;
                let mut mark = SCRIPTS.workflow_queued.prepare_invoke();
                mark.key(&key);
                for (node, job) in &pushed {
                    mark.arg(node).arg(job.to_string());
                }
                let skipped: Vec<(String, String)> =
                    mark.invoke_async(&mut self.conn.clone()).await?;
                to_cancel.extend(skipped);
            }
            for (node, task) in to_cancel {
                let Ok(node) = node.parse::<usize>() else {
                    continue;
                };
                let Ok(task) = task.parse::<QueueName>() else {
                    continue;
                };
                let job = node_job_id(id, node);
                if let Some((_, s)) = self.cancel_in(task, job).await?
                    && s == "cancelled"
                {
                    // A waiting job ended here: no worker will report it.
                    todo.push(Step::cancelled(node, job, "workflow stopped"));
                }
            }
        }
        Ok(())
    }

    /// Pushes the jobs of ready nodes (one pipelined round trip); answers
    /// (node, job id) pairs.
    async fn push_ready(
        &self,
        id: Uuid,
        tenant: &str,
        ready: &[Vec<String>],
    ) -> Result<Vec<(usize, Uuid)>, QueueError> {
        let mut conn = self.conn.clone();
        SCRIPTS.push.prepare_invoke().load_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        let mut durable = Vec::with_capacity(ready.len());
        let mut pushed = Vec::with_capacity(ready.len());
        for entry in ready {
            let (Some(index), Some(plan)) = (entry.first(), entry.get(1)) else {
                continue;
            };
            let node: usize = index.parse().map_err(|_| corrupt(id, "node index"))?;
            let trace: NodeTrace = serde_json::from_str(plan).unwrap_or_default();
            let plan: PlannedNode = serde_json::from_str(plan)
                .map_err(|e| corrupt(id, &format!("node {node}: {e}")))?;
            let mut outcomes = BTreeMap::new();
            for pair in entry[2..].chunks(2) {
                if let [dep, out] = pair {
                    let dep: usize = dep.parse().map_err(|_| corrupt(id, "dependency index"))?;
                    outcomes.insert(dep, serde_json::from_str(out).unwrap_or(Value::Null));
                }
            }
            let job = node_job_id(id, node);
            let opts = PushOptions {
                id: Some(job),
                tenant: Some(tenant.to_owned()),
                max_attempts: plan.max_attempts,
                request_id: Some(format!("workflow:{id}:{node}")),
                traceparent: trace.traceparent,
                notify: Some(Notify {
                    task: QueueName::from_static(WORKFLOW_NOTIFY),
                    data: serde_json::to_value(Member { workflow: id, node })?,
                }),
                ..Default::default()
            };
            let args = plan.job_args(&outcomes);
            // A split task's member goes to the partition its id picks.
            let partition = self.route(&plan.task, &args, &opts).await?;
            let (keys, argv) = self.push_parts(&partition, &args, &opts)?;
            pipe.cmd("EVALSHA")
                .arg(SCRIPTS.push.get_hash())
                .arg(keys.len())
                .arg(&keys)
                .arg(&argv);
            durable.push((partition, evalsha(&SCRIPTS.push, &keys, &argv)));
            pushed.push((node, job));
        }
        if !self.is_durable() {
            let _: Vec<(String, i64)> = conn.query_spread(&pipe).await?;
            return Ok(pushed);
        }
        // The durability option: each partition's pushes with their `WAIT`
        // behind them, on its node. A shortfall fails the step before the
        // nodes are marked queued and before the member that finished is
        // acknowledged: it runs again and pushes them again (a second push of
        // a node's job adds nothing; one a failover lost is made again), so a
        // chord cannot hang on a member push its master lost.
        let mut groups: Vec<(QueueName, Vec<redis::Cmd>)> = Vec::new();
        for (partition, eval) in durable {
            match groups.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, evals)) => evals.push(eval),
                None => groups.push((partition, vec![eval])),
            }
        }
        for (partition, evals) in groups {
            let (_, acked) = self.eval_durably(&SCRIPTS.push, evals).await?;
            self.push_replicated(&partition, acked)?;
        }
        Ok(pushed)
    }

    /// Cancels a running workflow: nodes not started are skipped, queued
    /// and running ones cancelled. Answers its state before, or `None` when
    /// there is no such workflow (of `tenant`, unless `None`: any).
    pub async fn cancel_workflow(
        &self,
        id: Uuid,
        tenant: Option<&str>,
    ) -> Result<Option<WorkflowState>, QueueError> {
        let key = self.workflow_key(id);
        let owner: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("tenant")
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(owner) = owner else { return Ok(None) };
        if tenant.is_some_and(|t| t != owner) {
            return Ok(None);
        }
        let (before, cancel): (String, Vec<(String, String)>) = SCRIPTS
            .workflow_cancel
            .key(&key)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Some(before) = WorkflowState::parse(&before) else {
            return Ok(None);
        };
        for (node, task) in cancel {
            let (Ok(node), Ok(task)) = (node.parse::<usize>(), task.parse::<QueueName>()) else {
                continue;
            };
            let job = node_job_id(id, node);
            if let Some((_, s)) = self.cancel_in(task, job).await?
                && s == "cancelled"
            {
                let step = Step::cancelled(node, job, "workflow cancelled");
                self.move_on(id, &owner, step).await?;
            }
        }
        Ok(Some(before))
    }

    /// A workflow as it stands (of `tenant`, unless `None`), with its nodes
    /// when `nodes`.
    pub async fn workflow(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        nodes: bool,
    ) -> Result<Option<WorkflowView>, QueueError> {
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.workflow_key(id))
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(owner) = fields.get("tenant") else {
            return Ok(None);
        };
        if tenant.is_some_and(|t| t != owner) {
            return Ok(None);
        }
        view(id, &fields, nodes).map(Some)
    }

    /// The newest workflows of `tenant` (at most `limit`), without their
    /// nodes.
    pub async fn workflows(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<WorkflowView>, QueueError> {
        let index = self.workflows_index_key(tenant);
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(&index)
            .arg(0)
            .arg(limit.max(1) as isize - 1)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for raw in ids {
            let Ok(id) = Uuid::parse_str(&raw) else {
                continue;
            };
            match self.workflow(id, Some(tenant), false).await? {
                Some(v) => out.push(v),
                None => {
                    // Expired: its index entry goes too.
                    let _: () = redis::cmd("ZREM")
                        .arg(&index)
                        .arg(&raw)
                        .query_async(&mut self.conn.clone())
                        .await?;
                }
            }
        }
        Ok(out)
    }

    /// Finishes what died movers left (a create that did not push its
    /// first nodes; a member's step whose pushes failed): for each workflow
    /// marked stalled for over [`STALLED_AFTER`], every queued node whose
    /// job is over is reported, then the ready nodes are pushed. Idempotent;
    /// run by the scheduler loop. Answers how many workflows it looked at.
    pub async fn repair_stalled_workflows(&self) -> Result<usize, QueueError> {
        let cutoff = self.redis_now_ms() - STALLED_AFTER.as_millis() as i64;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.workflows_stalled_key())
            .arg("-inf")
            .arg(cutoff)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(REPAIRS_PER_ROUND)
            .query_async(&mut self.conn.clone())
            .await?;
        for raw in &ids {
            let Ok(id) = Uuid::parse_str(raw) else {
                let _: () = redis::cmd("ZREM")
                    .arg(self.workflows_stalled_key())
                    .arg(raw)
                    .query_async(&mut self.conn.clone())
                    .await?;
                continue;
            };
            tracing::info!(workflow = %id, "repairing a workflow a dead mover left");
            self.repair_workflow(id).await?;
            self.unstall(id).await;
        }
        Ok(ids.len())
    }

    /// Repairs one workflow now, whether marked stalled or not: every
    /// queued node whose job is over (or gone) is reported, then the ready
    /// nodes are pushed. For a caller that finds a workflow still running
    /// and must know whether it can still finish (its members' reports may
    /// have been lost). Idempotent; a finished workflow pushes nothing.
    pub async fn repair_workflow(&self, id: Uuid) -> Result<(), QueueError> {
        let Some(wf) = self.workflow(id, None, true).await? else {
            return Ok(());
        };
        for node in wf.nodes.iter().filter(|n| n.state == NodeState::Queued) {
            let member = Member {
                workflow: id,
                node: node.index,
            };
            match self.job(&node.task, node.job_id).await? {
                Some(job) if job.state.is_final() => {
                    self.workflow_member_finished(&member, &job).await?
                }
                Some(_) => {}
                None => {
                    // Its job is gone (trimmed, or never written).
                    let step = Step::cancelled(node.index, node.job_id, "job lost");
                    self.move_on(id, &wf.tenant, step).await?;
                }
            }
        }
        self.move_on(id, &wf.tenant, Step::Kick).await
    }
}

fn corrupt(id: Uuid, why: &str) -> QueueError {
    QueueError::Corrupt {
        id: format!("workflow {id}"),
        why: why.to_owned(),
    }
}

/// A workflow's hash as a [`WorkflowView`].
fn view(
    id: Uuid,
    f: &BTreeMap<String, String>,
    with_nodes: bool,
) -> Result<WorkflowView, QueueError> {
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let count: usize = get("nodes").parse().unwrap_or(0);
    let mut counts = BTreeMap::new();
    let mut nodes = Vec::new();
    let mut outcomes = BTreeMap::new();
    for i in 0..count {
        let p = format!("n:{i}");
        let state = NodeState::parse(get(&format!("{p}:s"))).unwrap_or(NodeState::Waiting);
        *counts
            .entry(
                serde_json::to_value(state)?
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
            .or_insert(0) += 1;
        if state == NodeState::Succeeded
            && let Some(out) = f.get(&format!("{p}:out"))
        {
            outcomes.insert(i, serde_json::from_str(out).unwrap_or(Value::Null));
        }
        if with_nodes {
            let deps = get(&format!("{p}:deps"))
                .split(',')
                .filter_map(|d| d.parse().ok())
                .collect();
            let plan: Option<PlannedNode> = f.get(&p).and_then(|s| serde_json::from_str(s).ok());
            nodes.push(NodeView {
                index: i,
                path: plan.as_ref().map(|p| p.path.clone()).unwrap_or_default(),
                task: get(&format!("{p}:t"))
                    .parse::<QueueName>()
                    .unwrap_or_else(|_| QueueName::from_static("unknown")),
                state,
                job_id: node_job_id(id, i),
                deps,
                error: f.get(&format!("{p}:err")).cloned(),
            });
        }
    }
    let state = WorkflowState::parse(get("state")).ok_or_else(|| corrupt(id, "state"))?;
    let result = (state == WorkflowState::Succeeded)
        .then(|| serde_json::from_str::<Template>(get("output")).ok())
        .flatten()
        .map(|t| t.assemble(&outcomes));
    Ok(WorkflowView {
        id,
        name: f.get("name").filter(|n| !n.is_empty()).cloned(),
        state,
        on_failure: OnFailure::parse(get("on_failure")).unwrap_or_default(),
        tenant: get("tenant").to_owned(),
        created_at_ms: get("created_at").parse().unwrap_or(0),
        finished_at_ms: get("finished_at").parse().ok(),
        counts,
        result,
        nodes,
    })
}

/// Whether `notify` is a workflow member's, and whose.
pub fn member_of(notify: &Notify) -> Option<Member> {
    (notify.task.as_str() == WORKFLOW_NOTIFY)
        .then(|| serde_json::from_value(notify.data.clone()).ok())
        .flatten()
}
