//! Workflows: a small DAG of jobs over any tasks — chains, groups, chords,
//! nested — as submitted, as planned, and as seen.
//!
//! A client submits a [`WorkflowSpec`]: a tree of [`Node`]s. [`Node::plan`]
//! flattens it into a [`Plan`]: one [`PlannedNode`] per task node, each with
//! the nodes it waits for and a [`Template`] saying how their results make
//! its input. A chain passes each step's result to the next step; a group
//! runs its members side by side and its result is their results in order;
//! a chord is a group and then a body that gets the group's results:
//!
//! ```text
//! {"chain": [A, {"group": [B, C]}, D]}     A ──▶ B ──┐
//!                                            └─▶ C ──┴─▶ D   (D's input: [B's, C's])
//! ```
//!
//! A node that waits for others gets their results in one argument (its
//! `input`, by default `"input"`); its own `args` must be a JSON object
//! without it. Under [`OnFailure::Continue`] a failed node's place in its
//! dependents' input holds `{"failed": {"state", "error", "job_id"}}`.
//!
//! This module is pure. Storing a workflow, counting down each node's
//! dependencies as members finish and pushing the ready ones exactly once is
//! the queue core's (`hopper-queue`'s `workflow.rs` and its scripts); the
//! API, the CLI and the SDKs speak these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::QueueName;

/// The most task nodes one workflow may have.
pub const MAX_NODES: usize = 10_000;
/// The deepest a workflow's nesting may go.
pub const MAX_DEPTH: usize = 32;
/// The argument that receives a node's upstream results unless it names one.
pub const DEFAULT_INPUT: &str = "input";
/// The longest workflow name.
pub const MAX_NAME_LEN: usize = 200;

/// Hopper's namespace for the job ids of workflow nodes.
const NODE_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x776f_726b_666c_6f77_5f6e_6f64_655f_7631);

/// The job id of node `index` of workflow `workflow`: derived, so pushing a
/// node twice finds the first job.
pub fn node_job_id(workflow: uuid::Uuid, index: usize) -> uuid::Uuid {
    uuid::Uuid::new_v5(&NODE_ID_NAMESPACE, format!("{workflow}/{index}").as_bytes())
}

/// What a workflow does when one of its nodes fails for good (dead-lettered
/// or cancelled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnFailure {
    /// The workflow fails at once: nodes not started are skipped, running
    /// ones cancelled.
    #[default]
    Stop,
    /// The rest goes on; dependents see `{"failed": {...}}` in the failed
    /// node's place.
    Continue,
}

impl OnFailure {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Stop => "stop",
            OnFailure::Continue => "continue",
        }
    }

    /// Reads a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(OnFailure::Stop),
            "continue" => Some(OnFailure::Continue),
            _ => None,
        }
    }
}

/// A workflow as submitted (`POST /v1/workflows`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowSpec {
    /// A label for people (at most 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a node failing for good does to the rest.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The DAG: a task node, or a `chain`, `group` or `chord` of nodes.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub root: Node,
}

impl WorkflowSpec {
    /// A workflow of `root`, stopping at the first failure.
    pub fn new(root: Node) -> Self {
        WorkflowSpec {
            name: None,
            on_failure: OnFailure::Stop,
            root,
        }
    }

    /// Names it.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets what a failure does.
    pub fn on_failure(mut self, policy: OnFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Checks the name and plans the DAG (the tasks' existence and argument
    /// schemas are the caller's to check, node by node).
    pub fn plan(&self) -> Result<Plan, WorkflowError> {
        if let Some(name) = &self.name
            && name.chars().count() > MAX_NAME_LEN
        {
            return Err(WorkflowError::new(
                "name",
                format!("at most {MAX_NAME_LEN} characters"),
            ));
        }
        self.root.plan()
    }
}

/// One task of a workflow: its job's task and arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskNode {
    /// The task.
    pub task: QueueName,
    /// Its arguments (an object when the node gets an input).
    #[serde(default = "empty_object")]
    pub args: Value,
    /// The argument that receives the upstream results (default `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Attempts allowed (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A node of the DAG as submitted. On the wire a task node is
/// `{"task": "name", "args": {...}}` and the others `{"chain": [...]}`,
/// `{"group": [...]}`, `{"chord": {"header": [...], "body": node}}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// One job.
    Task(TaskNode),
    /// Steps one after another; each gets the previous one's result.
    Chain(Vec<Node>),
    /// Members side by side; the result is theirs, in order.
    Group(Vec<Node>),
    /// A group, then a body that gets the group's results in order.
    Chord {
        /// The group.
        header: Vec<Node>,
        /// The callback.
        body: Box<Node>,
    },
}

/// A job of `task` with `args`: the builder's leaf.
pub fn task(task: impl Into<QueueName>, args: Value) -> Node {
    Node::Task(TaskNode {
        task: task.into(),
        args,
        input: None,
        max_attempts: None,
    })
}

/// Steps run one after another, each given the previous one's result.
pub fn chain(steps: impl IntoIterator<Item = Node>) -> Node {
    Node::Chain(steps.into_iter().collect())
}

/// Members run side by side; their results, in order, are the group's.
pub fn group(members: impl IntoIterator<Item = Node>) -> Node {
    Node::Group(members.into_iter().collect())
}

/// `header` side by side, then `body` with all their results in order.
pub fn chord(header: impl IntoIterator<Item = Node>, body: Node) -> Node {
    Node::Chord {
        header: header.into_iter().collect(),
        body: Box::new(body),
    }
}

impl Node {
    /// The node's JSON (the wire form).
    pub fn to_json(&self) -> Value {
        match self {
            Node::Task(t) => serde_json::to_value(t).unwrap_or(Value::Null),
            Node::Chain(steps) => {
                serde_json::json!({ "chain": steps.iter().map(Node::to_json).collect::<Vec<_>>() })
            }
            Node::Group(members) => {
                serde_json::json!({ "group": members.iter().map(Node::to_json).collect::<Vec<_>>() })
            }
            Node::Chord { header, body } => serde_json::json!({ "chord": {
                "header": header.iter().map(Node::to_json).collect::<Vec<_>>(),
                "body": body.to_json(),
            }}),
        }
    }

    /// Reads a node from its JSON; errors name the JSON path (from `path`).
    pub fn from_json(value: &Value, path: &str) -> Result<Node, WorkflowError> {
        Self::read(value, path, 0)
    }

    fn read(value: &Value, path: &str, depth: usize) -> Result<Node, WorkflowError> {
        if depth > MAX_DEPTH {
            return Err(WorkflowError::new(
                path,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let Some(obj) = value.as_object() else {
            return Err(WorkflowError::new(
                path,
                "a node is an object: {\"task\": ...}, {\"chain\": [...]}, {\"group\": [...]} or {\"chord\": {...}}",
            ));
        };
        let list = |key: &str, v: &Value| -> Result<Vec<Node>, WorkflowError> {
            let here = format!("{path}.{key}");
            let items = v
                .as_array()
                .ok_or_else(|| WorkflowError::new(&here, "must be an array of nodes"))?;
            items
                .iter()
                .enumerate()
                .map(|(i, n)| Self::read(n, &format!("{here}[{i}]"), depth + 1))
                .collect()
        };
        let only = |key: &str| -> Result<(), WorkflowError> {
            match obj.keys().find(|k| k.as_str() != key) {
                Some(other) => Err(WorkflowError::new(
                    format!("{path}.{other}"),
                    format!("unexpected beside `{key}`"),
                )),
                None => Ok(()),
            }
        };
        if obj.contains_key("task") {
            let t: TaskNode = serde_path_to_error::deserialize(value).map_err(|e| {
                let inner = e.path().to_string();
                let field = if inner == "." {
                    path.to_owned()
                } else {
                    format!("{path}.{inner}")
                };
                WorkflowError::new(field, e.into_inner().to_string())
            })?;
            if let Some(input) = &t.input
                && input.is_empty()
            {
                return Err(WorkflowError::new(
                    format!("{path}.input"),
                    "must not be empty",
                ));
            }
            if t.max_attempts == Some(0) {
                return Err(WorkflowError::new(
                    format!("{path}.max_attempts"),
                    "must be at least 1",
                ));
            }
            Ok(Node::Task(t))
        } else if let Some(steps) = obj.get("chain") {
            only("chain")?;
            let steps = list("chain", steps)?;
            if steps.is_empty() {
                return Err(WorkflowError::new(
                    format!("{path}.chain"),
                    "a chain needs at least one step",
                ));
            }
            Ok(Node::Chain(steps))
        } else if let Some(members) = obj.get("group") {
            only("group")?;
            Ok(Node::Group(list("group", members)?))
        } else if let Some(chord) = obj.get("chord") {
            only("chord")?;
            let here = format!("{path}.chord");
            let c = chord.as_object().ok_or_else(|| {
                WorkflowError::new(&here, "must be {\"header\": [...], \"body\": node}")
            })?;
            if let Some(other) = c.keys().find(|k| *k != "header" && *k != "body") {
                return Err(WorkflowError::new(format!("{here}.{other}"), "unexpected"));
            }
            let header = c
                .get("header")
                .ok_or_else(|| WorkflowError::new(format!("{here}.header"), "missing"))?;
            let body = c
                .get("body")
                .ok_or_else(|| WorkflowError::new(format!("{here}.body"), "missing"))?;
            let header = {
                let inner = Self::read(&serde_json::json!({ "group": header }), &here, depth + 1);
                match inner? {
                    Node::Group(members) => members,
                    _ => unreachable!("read a group"),
                }
            };
            let body = Self::read(body, &format!("{here}.body"), depth + 1)?;
            Ok(Node::Chord {
                header,
                body: Box::new(body),
            })
        } else {
            Err(WorkflowError::new(
                path,
                "a node needs one of `task`, `chain`, `group`, `chord`",
            ))
        }
    }

    /// Flattens the DAG into its task nodes, each with its dependencies.
    pub fn plan(&self) -> Result<Plan, WorkflowError> {
        let mut nodes = Vec::new();
        let output = self.place(None, "root", &mut nodes)?;
        if nodes.is_empty() {
            return Err(WorkflowError::new(
                "root",
                "a workflow needs at least one task",
            ));
        }
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for d in &n.deps {
                dependents[*d].push(i);
            }
        }
        for (n, next) in nodes.iter_mut().zip(dependents) {
            n.dependents = next;
        }
        Ok(Plan { nodes, output })
    }

    fn place(
        &self,
        upstream: Option<&Template>,
        path: &str,
        nodes: &mut Vec<PlannedNode>,
    ) -> Result<Template, WorkflowError> {
        match self {
            Node::Task(t) => {
                if nodes.len() >= MAX_NODES {
                    return Err(WorkflowError::new(
                        path,
                        format!("a workflow has at most {MAX_NODES} tasks"),
                    ));
                }
                let input = match upstream {
                    None => None,
                    Some(template) => {
                        let arg = t.input.clone().unwrap_or_else(|| DEFAULT_INPUT.to_owned());
                        let Some(args) = t.args.as_object() else {
                            return Err(WorkflowError::new(
                                format!("{path}.args"),
                                "must be an object: this node gets its upstream results as an argument",
                            ));
                        };
                        if args.contains_key(&arg) {
                            return Err(WorkflowError::new(
                                format!("{path}.args.{arg}"),
                                format!(
                                    "`{arg}` is given the upstream results; name another argument with `input`"
                                ),
                            ));
                        }
                        Some(Input {
                            arg,
                            template: template.clone(),
                        })
                    }
                };
                let deps = input
                    .as_ref()
                    .map(|i| i.template.leaves())
                    .unwrap_or_default();
                nodes.push(PlannedNode {
                    task: t.task.clone(),
                    args: t.args.clone(),
                    input,
                    max_attempts: t.max_attempts,
                    path: path.to_owned(),
                    deps,
                    dependents: Vec::new(),
                });
                Ok(Template::Node(nodes.len() - 1))
            }
            Node::Chain(steps) => {
                let mut up = upstream.cloned();
                for (i, step) in steps.iter().enumerate() {
                    up = Some(step.place(up.as_ref(), &format!("{path}.chain[{i}]"), nodes)?);
                }
                up.ok_or_else(|| WorkflowError::new(path, "a chain needs at least one step"))
            }
            Node::Group(members) => members
                .iter()
                .enumerate()
                .map(|(i, m)| m.place(upstream, &format!("{path}.group[{i}]"), nodes))
                .collect::<Result<Vec<_>, _>>()
                .map(Template::List),
            Node::Chord { header, body } => {
                let results = header
                    .iter()
                    .enumerate()
                    .map(|(i, m)| m.place(upstream, &format!("{path}.chord.header[{i}]"), nodes))
                    .collect::<Result<Vec<_>, _>>()?;
                body.place(
                    Some(&Template::List(results)),
                    &format!("{path}.chord.body"),
                    nodes,
                )
            }
        }
    }
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Node::from_json(&value, "root").map_err(serde::de::Error::custom)
    }
}

/// A workflow the API refused: the JSON path of the problem and what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct WorkflowError {
    /// Where (`root.chain[1].group[0].args`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl WorkflowError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        WorkflowError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How upstream results make a value: one node's result, or a list.
/// On the wire a node index or an array of templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Template {
    /// The result of the node at this index.
    Node(usize),
    /// A list, in order.
    List(Vec<Template>),
}

impl Template {
    /// The nodes it reads, each once, in order of first use.
    pub fn leaves(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.walk(&mut |i| {
            if seen.insert(i) {
                out.push(i);
            }
        });
        out
    }

    fn walk(&self, f: &mut impl FnMut(usize)) {
        match self {
            Template::Node(i) => f(*i),
            Template::List(items) => items.iter().for_each(|t| t.walk(f)),
        }
    }

    /// The value, with each node's outcome taken from `outcomes` (null when
    /// missing).
    pub fn assemble(&self, outcomes: &BTreeMap<usize, Value>) -> Value {
        match self {
            Template::Node(i) => outcomes.get(i).cloned().unwrap_or(Value::Null),
            Template::List(items) => {
                Value::Array(items.iter().map(|t| t.assemble(outcomes)).collect())
            }
        }
    }
}

/// Where a node's input comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// The argument it is given in.
    pub arg: String,
    /// How the upstream results make it.
    pub template: Template,
}

/// A task node of a planned workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedNode {
    /// The task.
    pub task: QueueName,
    /// Its own arguments (without the input).
    pub args: Value,
    /// Its upstream results, if it waits for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// Attempts allowed, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Its place in the submitted JSON (`root.chain[2]`).
    pub path: String,
    /// The nodes it waits for, each once.
    #[serde(default)]
    pub deps: Vec<usize>,
    /// The nodes waiting for it.
    #[serde(default)]
    pub dependents: Vec<usize>,
}

impl PlannedNode {
    /// Its job's arguments once its upstream nodes' outcomes are known.
    pub fn job_args(&self, outcomes: &BTreeMap<usize, Value>) -> Value {
        let mut args = self.args.clone();
        if let (Some(input), Some(obj)) = (&self.input, args.as_object_mut()) {
            obj.insert(input.arg.clone(), input.template.assemble(outcomes));
        }
        args
    }
}

/// A workflow flattened: its task nodes and how their results make the
/// workflow's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The task nodes, in the order they appear in the submitted JSON.
    pub nodes: Vec<PlannedNode>,
    /// The workflow's result: the root's result (for a chain, its last step's).
    pub output: Template,
}

impl Plan {
    /// The nodes that wait for nothing.
    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.deps.is_empty())
            .map(|(i, _)| i)
    }
}

/// The outcome a failed node leaves in its dependents' input (under
/// [`OnFailure::Continue`]).
pub fn failed_outcome(state: &str, error: Option<&str>, job_id: uuid::Uuid) -> Value {
    serde_json::json!({ "failed": { "state": state, "error": error, "job_id": job_id } })
}

/// A workflow's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WorkflowState {
    /// Nodes still to run.
    Running,
    /// Every node succeeded.
    Succeeded,
    /// A node failed (with `stop`, at once; with `continue`, once all ended).
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl WorkflowState {
    /// Reads the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// A node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NodeState {
    /// Waiting for its dependencies.
    Waiting,
    /// Its job is queued or running.
    Queued,
    /// Its job succeeded.
    Succeeded,
    /// Its job was dead-lettered.
    Dead,
    /// Its job was cancelled.
    Cancelled,
    /// Never run: the workflow stopped or was cancelled first.
    Skipped,
}

impl NodeState {
    /// Reads the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "waiting" => Some(Self::Waiting),
            "queued" => Some(Self::Queued),
            "succeeded" => Some(Self::Succeeded),
            "dead" => Some(Self::Dead),
            "cancelled" => Some(Self::Cancelled),
            "skipped" => Some(Self::Skipped),
            _ => None,
        }
    }

    /// Whether it can change no more.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Waiting | Self::Queued)
    }
}

/// One node as `GET /v1/workflows/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    /// Its index (what `deps` name).
    pub index: usize,
    /// Its place in the submitted JSON.
    pub path: String,
    /// The task.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task: QueueName,
    /// Its state.
    pub state: NodeState,
    /// Its job (derived from the workflow and the index).
    pub job_id: uuid::Uuid,
    /// The nodes it waits for.
    pub deps: Vec<usize>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A workflow as `GET /v1/workflows/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowView {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its state.
    pub state: WorkflowState,
    /// Its failure policy.
    pub on_failure: OnFailure,
    /// Its tenant.
    pub tenant: String,
    /// Unix ms: submitted.
    pub created_at_ms: i64,
    /// Unix ms: every node ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    /// Nodes per state.
    pub counts: BTreeMap<String, usize>,
    /// Its result once succeeded: the root's result (a chain's last step's,
    /// a group's members' in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Every node (left out of listings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn planned(v: Value) -> Plan {
        Node::from_json(&v, "root").unwrap().plan().unwrap()
    }

    #[test]
    fn a_chain_passes_each_result_on() {
        let p = planned(json!({"chain": [
            {"task": "echo", "args": {"message": "a"}},
            {"task": "echo", "args": {"message": "b"}, "input": "prev"},
        ]}));
        assert_eq!(p.nodes.len(), 2);
        assert!(p.nodes[0].deps.is_empty());
        assert_eq!(p.nodes[0].dependents, vec![1]);
        assert_eq!(p.nodes[1].deps, vec![0]);
        let outcomes = BTreeMap::from([(0, json!({"x": 1}))]);
        assert_eq!(
            p.nodes[1].job_args(&outcomes),
            json!({"message": "b", "prev": {"x": 1}})
        );
        assert_eq!(p.output, Template::Node(1));
    }

    #[test]
    fn a_chord_gives_its_body_every_result_in_order() {
        let p = planned(json!({"chain": [
            {"task": "a"},
            {"chord": {"header": [{"task": "b"}, {"chain": [{"task": "c"}, {"task": "d"}]}],
                       "body": {"task": "e"}}},
        ]}));
        // a=0, b=1, c=2, d=3, e=4
        assert_eq!(p.nodes[1].deps, vec![0]);
        assert_eq!(p.nodes[2].deps, vec![0]);
        assert_eq!(p.nodes[3].deps, vec![2]);
        assert_eq!(p.nodes[4].deps, vec![1, 3]);
        assert_eq!(p.nodes[0].dependents, vec![1, 2]);
        let outcomes = BTreeMap::from([(1, json!("b")), (3, json!("d"))]);
        assert_eq!(p.nodes[4].job_args(&outcomes), json!({"input": ["b", "d"]}));
        assert_eq!(p.nodes[4].path, "root.chain[1].chord.body");
    }

    #[test]
    fn nested_groups_keep_their_shape() {
        let p = planned(json!({"chain": [
            {"group": [{"group": [{"task": "a"}, {"task": "b"}]}, {"task": "c"}]},
            {"task": "d"},
        ]}));
        let outcomes = BTreeMap::from([(0, json!(1)), (1, json!(2)), (2, json!(3))]);
        assert_eq!(
            p.nodes[3].job_args(&outcomes),
            json!({"input": [[1, 2], 3]})
        );
        assert_eq!(p.roots().collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn the_builder_and_the_wire_form_agree() {
        let built = chord(
            [
                task(QueueName::from_static("echo"), json!({"message": "1"})),
                task(QueueName::from_static("echo"), json!({"message": "2"})),
            ],
            task(QueueName::from_static("echo"), json!({"message": "done"})),
        );
        let wire = built.to_json();
        assert_eq!(Node::from_json(&wire, "root").unwrap(), built);
        let spec = WorkflowSpec::new(built).on_failure(OnFailure::Continue);
        let text = serde_json::to_string(&spec).unwrap();
        let back: WorkflowSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn bad_workflows_name_the_place() {
        let cases = [
            (json!({"chain": []}), "root.chain"),
            (
                json!({"chain": [{"task": "a"}, {"task": "b", "args": [1]}]}),
                "root.chain[1].args",
            ),
            (
                json!({"chain": [{"task": "a"}, {"task": "b", "args": {"input": 1}}]}),
                "root.chain[1].args.input",
            ),
            (
                json!({"group": [{"task": "Bad Name"}]}),
                "root.group[0].task",
            ),
            (
                json!({"group": [{"task": "a", "colour": 1}]}),
                "root.group[0].colour",
            ),
            (
                json!({"chord": {"header": [{"task": "a"}]}}),
                "root.chord.body",
            ),
            (json!({"chain": [1]}), "root.chain[0]"),
            (json!({"group": []}), "root"),
            (json!({"spin": []}), "root"),
            (json!({"group": [], "chain": []}), "root.group"),
        ];
        for (v, field) in cases {
            let err = Node::from_json(&v, "root")
                .and_then(|n| n.plan())
                .unwrap_err();
            assert_eq!(err.field, field, "{v}: {err}");
        }
    }

    #[test]
    fn too_deep_and_too_wide_are_refused() {
        let mut v = json!({"task": "a"});
        for _ in 0..=MAX_DEPTH {
            v = json!({"chain": [v]});
        }
        assert!(
            Node::from_json(&v, "root")
                .unwrap_err()
                .message
                .contains("deeper")
        );
        let wide = group((0..=MAX_NODES).map(|_| task(QueueName::from_static("a"), json!({}))));
        assert!(wide.plan().unwrap_err().message.contains("at most"));
    }

    #[test]
    fn node_job_ids_are_stable_and_distinct() {
        let w = uuid::Uuid::now_v7();
        assert_eq!(node_job_id(w, 3), node_job_id(w, 3));
        assert_ne!(node_job_id(w, 3), node_job_id(w, 4));
    }
}
