//! The API's view of the task registry: which tasks a caller may submit,
//! and how a submission's arguments are checked.
//!
//! Workers declare their tasks in Redis (`hopper_queue::registry`). Reading
//! that hash on every submission would cost a round trip per job, so
//! [`TaskCache`] keeps a snapshot of it, read again when it is older than
//! [`TTL`] (one `HGETALL` a second at most, whatever the load; requests
//! arriving during that read use the previous snapshot) and when a name is
//! not in it (a task declared a moment ago is found at once; a name no one
//! declared costs one read before the 404, shared by the requests that
//! missed meanwhile). Reading the registry also
//! remembers each task's declared settings in the queue client, so a job's
//! `max_attempts` defaults to its task's.
//!
//! The six built-in kinds are always known, declared or not (jobs wait for
//! their worker, as with any task) and keep their typed validation
//! ([`JobKind::validate`]). A declared task with a JSON Schema is checked
//! against it with the `jsonschema` crate (no remote `$ref`: the crate is
//! built without resolvers); validators are compiled once per task and
//! schema digest and kept across snapshots. A task declared over HTTP by a
//! tenant is that tenant's: every other tenant gets the 404 of a name no one
//! declared.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use hopper_queue::QueueClient;
use hopper_shared::{QueueName, jobs::JobKind, tasks::TaskDefinition};
use serde_json::Value;

use crate::error::ApiError;

/// Longest a snapshot of the registry answers before it is read again.
pub const TTL: Duration = Duration::from_secs(1);

/// The cached registry, shared by every handler. Cheap to clone.
#[derive(Clone, Default)]
pub struct TaskCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held while reading the registry, so concurrent misses read it once.
    reading: tokio::sync::Mutex<()>,
}

/// The registry as read at one instant, with the built-in kinds added.
#[derive(Default)]
struct Snapshot {
    /// When the read began (None: never read).
    read_at: Option<Instant>,
    tasks: HashMap<QueueName, Arc<Task>>,
}

/// A task the API knows: its definition and how its arguments are checked.
#[derive(Debug)]
pub struct Task {
    /// As declared (a built-in kind not declared yet: its built-in
    /// definition).
    pub def: TaskDefinition,
    check: Check,
}

enum Check {
    /// A built-in kind: decoded into its argument type.
    BuiltIn(JobKind),
    /// A declared JSON Schema, compiled.
    Schema(Arc<jsonschema::Validator>),
    /// No schema: any JSON object.
    Object,
    /// A declared schema that does not compile (declared by a Rust worker,
    /// which does not compile it): nothing is accepted until it is fixed.
    Broken(String),
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::BuiltIn(kind) => write!(f, "BuiltIn({kind})"),
            Check::Schema(_) => f.write_str("Schema"),
            Check::Object => f.write_str("Object"),
            Check::Broken(why) => write!(f, "Broken({why})"),
        }
    }
}

impl Task {
    fn new(def: TaskDefinition, previous: Option<&Task>) -> Self {
        if let Some(kind) = def.name.job_kind() {
            // A built-in name is Hopper's, whoever declared it.
            let def = TaskDefinition {
                tenant: None,
                internal: kind.is_internal(),
                ..def
            };
            return Self {
                def,
                check: Check::BuiltIn(kind),
            };
        }
        let check = match &def.schema {
            None => Check::Object,
            Some(schema) => match previous {
                Some(Task {
                    def: old,
                    check: Check::Schema(v),
                }) if !old.schema_digest.is_empty() && old.schema_digest == def.schema_digest => {
                    Check::Schema(Arc::clone(v))
                }
                _ => compile(schema)
                    .map(|v| Check::Schema(Arc::new(v)))
                    .unwrap_or_else(|why| {
                        tracing::warn!(task = %def.name, %why, "declared schema does not compile");
                        Check::Broken(why)
                    }),
            },
        };
        Self { def, check }
    }

    /// Whether the task's arguments may hold a field `name`: false only
    /// when its schema lists its properties and allows no others.
    pub fn takes_field(&self, name: &str) -> bool {
        let Some(schema) = &self.def.schema else {
            return true;
        };
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        !closed
            || schema
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key(name))
    }

    /// The task's name.
    pub fn name(&self) -> &QueueName {
        &self.def.name
    }

    /// The built-in kind it is, if one.
    pub fn kind(&self) -> Option<JobKind> {
        match self.check {
            Check::BuiltIn(kind) => Some(kind),
            _ => None,
        }
    }

    /// 422 `internal_kind` when clients may not submit it.
    pub fn submittable(&self) -> Result<(), ApiError> {
        if !self.def.internal {
            return Ok(());
        }
        let instead = match self.kind() {
            Some(kind) => kind.instead(),
            None => "its workers queue it",
        };
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "internal_kind",
            format!(
                "{} jobs are queued by Hopper itself ({instead})",
                self.def.name
            ),
        ))
    }

    /// Checks one submission's arguments (`index`: its place in a batch):
    /// no NUL in any string, then the kind's type or the declared schema.
    /// 422 `invalid_args` naming the field otherwise.
    pub fn validate(&self, args: &Value, index: Option<usize>) -> Result<(), ApiError> {
        let refuse = |field: Option<String>, message: String| {
            let field = match (index, field) {
                (Some(i), Some(f)) if f.starts_with('[') => Some(format!("[{i}]{f}")),
                (Some(i), Some(f)) => Some(format!("[{i}].{f}")),
                (Some(i), None) => Some(format!("[{i}]")),
                (None, f) => f,
            };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_args",
                format!("invalid {} job: {message}", self.def.name),
            )
            .field(field)
        };
        if let Some(path) = hopper_shared::jobs::nul_path(args, String::new()) {
            let field = (path != ".").then_some(path);
            return Err(refuse(
                field,
                "strings may not contain NUL (\\u0000): Postgres cannot store it".into(),
            ));
        }
        match &self.check {
            Check::BuiltIn(kind) => kind.validate(args).map_err(|e| refuse(e.field, e.message)),
            Check::Object if args.is_object() => Ok(()),
            Check::Object => Err(refuse(None, "the arguments are a JSON object".into())),
            Check::Schema(validator) => match validator.validate(args) {
                Ok(()) => Ok(()),
                Err(e) => Err(refuse(schema_error_field(&e, args), e.to_string())),
            },
            Check::Broken(why) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid_task_schema",
                format!(
                    "the declared schema of {} does not compile ({why}); its worker must \
                     declare a valid one",
                    self.def.name
                ),
            )),
        }
    }
}

/// Compiles a declared schema; the message says why it cannot be.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// The field a schema error names, in the API's field style (`size[0]`,
/// `owner.name`): the instance path, plus the property a `required` or
/// `additionalProperties` error is about (reported at its parent).
fn schema_error_field(e: &jsonschema::ValidationError<'_>, args: &Value) -> Option<String> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let mut segments: Vec<String> = e
        .instance_path()
        .as_str()
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    match e.kind() {
        Kind::Required { property } => segments.push(
            property
                .as_str()
                .map_or(property.to_string(), str::to_owned),
        ),
        Kind::AdditionalProperties { unexpected } => {
            segments.extend(unexpected.first().cloned());
        }
        _ => {}
    }
    field_path(args, &segments)
}

/// `segments` of a path into `v` as `a.b[0].c`: a segment is an index where
/// the value it steps into is an array.
fn field_path(mut v: &Value, segments: &[String]) -> Option<String> {
    let mut out = String::new();
    for seg in segments {
        let index = match v {
            Value::Array(items) => seg.parse::<usize>().ok().inspect(|&i| {
                v = items.get(i).unwrap_or(&Value::Null);
            }),
            _ => None,
        };
        match index {
            Some(i) => out.push_str(&format!("[{i}]")),
            None => {
                v = v.get(seg.as_str()).unwrap_or(&Value::Null);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(seg);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

impl TaskCache {
    /// The task `raw` names, as `tenant` sees it: 422 `invalid_queue_name`
    /// (naming `field`) for a name that breaks the rule, 404 `unknown_task`
    /// listing the tasks `tenant` may submit for one no one declared (or
    /// another tenant's).
    pub async fn get(
        &self,
        queue: &QueueClient,
        raw: &str,
        tenant: &str,
        field: &str,
    ) -> Result<Arc<Task>, ApiError> {
        let name = QueueName::new(raw).map_err(|e| ApiError::invalid_queue_name(e, field))?;
        let arrived = Instant::now();
        let snapshot = self.fresh(queue).await?;
        if let Some(task) = snapshot.visible(&name, tenant) {
            return Ok(task);
        }
        // Declared since the snapshot was read? Read it again (once for
        // every request that missed meanwhile).
        let snapshot = self.read_since(queue, arrived).await?;
        snapshot.visible(&name, tenant).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_task",
                format!("no task `{name}` is declared (a worker declares the tasks it serves)"),
            )
            .field(Some(field.into()))
            .known(snapshot.submittable_names(tenant))
        })
    }

    /// Every task `tenant` may see, by name: the built-in kinds and the
    /// declared tasks open to it.
    pub async fn visible(
        &self,
        queue: &QueueClient,
        tenant: &str,
    ) -> Result<Vec<Arc<Task>>, ApiError> {
        let snapshot = self.fresh(queue).await?;
        let mut tasks: Vec<Arc<Task>> = snapshot
            .tasks
            .values()
            .filter(|t| t.def.open_to(tenant))
            .cloned()
            .collect();
        tasks.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        Ok(tasks)
    }

    /// The names of every task `tenant` may see (see [`TaskCache::visible`]).
    pub async fn names(
        &self,
        queue: &QueueClient,
        tenant: &str,
    ) -> Result<Vec<QueueName>, ApiError> {
        Ok(self
            .visible(queue, tenant)
            .await?
            .iter()
            .map(|t| t.def.name.clone())
            .collect())
    }

    /// The names of every known task, whichever tenant it belongs to (for
    /// the operator's queue-depth gauges).
    pub async fn all_names(&self, queue: &QueueClient) -> Result<Vec<QueueName>, ApiError> {
        let snapshot = self.fresh(queue).await?;
        let mut names: Vec<QueueName> = snapshot.tasks.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    /// Forgets the snapshot (after a removal): the next request reads the
    /// registry.
    pub fn invalidate(&self) {
        if let Ok(mut s) = self.inner.snapshot.write() {
            *s = Arc::default();
        }
    }

    /// A snapshot read within [`TTL`] — or, while another request is
    /// reading the registry, the one before it (so requests do not queue
    /// behind that read once a second).
    async fn fresh(&self, queue: &QueueClient) -> Result<Arc<Snapshot>, ApiError> {
        let since = Instant::now().checked_sub(TTL).unwrap_or_else(Instant::now);
        let current = self.current();
        match current.read_at {
            Some(at) if at >= since => Ok(current),
            Some(_) if self.inner.reading.try_lock().is_err() => Ok(current),
            _ => self.read_since(queue, since).await,
        }
    }

    /// A snapshot whose read began at or after `since`, reading the registry
    /// if the current one is older.
    async fn read_since(
        &self,
        queue: &QueueClient,
        since: Instant,
    ) -> Result<Arc<Snapshot>, ApiError> {
        let current = self.current();
        if current.read_at.is_some_and(|at| at >= since) {
            return Ok(current);
        }
        let _reading = self.inner.reading.lock().await;
        let current = self.current();
        if current.read_at.is_some_and(|at| at >= since) {
            return Ok(current);
        }
        let read_at = Instant::now();
        // Reading the registry also remembers each task's settings in the
        // queue client (`QueueClient::remember_settings`).
        let defs = queue.tasks().await?;
        let mut tasks = BUILT_IN.clone();
        for def in defs {
            let previous = current.tasks.get(&def.name).cloned();
            let task = Task::new(def, previous.as_deref());
            tasks.insert(task.def.name.clone(), Arc::new(task));
        }
        let snapshot = Arc::new(Snapshot {
            read_at: Some(read_at),
            tasks,
        });
        if let Ok(mut s) = self.inner.snapshot.write() {
            *s = Arc::clone(&snapshot);
        }
        Ok(snapshot)
    }

    fn current(&self) -> Arc<Snapshot> {
        self.inner
            .snapshot
            .read()
            .map(|s| Arc::clone(&s))
            .unwrap_or_default()
    }
}

/// The built-in kinds as tasks before any worker declared them (their
/// definitions generate schemas: made once, not at every registry read).
static BUILT_IN: std::sync::LazyLock<HashMap<QueueName, Arc<Task>>> =
    std::sync::LazyLock::new(|| {
        JobKind::ALL
            .iter()
            .map(|&k| {
                let def = TaskDefinition::built_in(k);
                (def.name.clone(), Arc::new(Task::new(def, None)))
            })
            .collect()
    });

impl Snapshot {
    fn visible(&self, name: &QueueName, tenant: &str) -> Option<Arc<Task>> {
        self.tasks
            .get(name)
            .filter(|t| t.def.open_to(tenant))
            .cloned()
    }

    /// What `tenant` may submit, by name (for the 404's `known`).
    fn submittable_names(&self, tenant: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.def.open_to(tenant) && !t.def.internal)
            .map(|t| t.def.name.to_string())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(schema: Value) -> Task {
        let mut def = TaskDefinition::new("resize".parse().unwrap());
        def.schema = Some(schema);
        def.schema_digest = def.schema_digest();
        Task::new(def, None)
    }

    fn field_of(t: &Task, args: Value, index: Option<usize>) -> Option<String> {
        let e = t.validate(&args, index).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        serde_json::to_value(&e).unwrap()["field"]
            .as_str()
            .map(str::to_owned)
    }

    #[test]
    fn schema_errors_name_the_json_path_in_field_style() {
        let t = task(json!({
            "type": "object",
            "required": ["size"],
            "additionalProperties": false,
            "properties": {
                "size": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                "owner": {"type": "object", "properties": {"name": {"type": "string"}}},
                "size/x": {"type": "string"}
            }
        }));
        t.validate(&json!({"size": [1, 2]}), None).unwrap();
        assert_eq!(
            field_of(&t, json!({"size": [1, 0]}), None).as_deref(),
            Some("size[1]")
        );
        assert_eq!(
            field_of(&t, json!({"size": [1], "owner": {"name": 3}}), None).as_deref(),
            Some("owner.name")
        );
        assert_eq!(field_of(&t, json!({}), None).as_deref(), Some("size"));
        assert_eq!(
            field_of(&t, json!({"size": [1], "extra": 1}), None).as_deref(),
            Some("extra")
        );
        assert_eq!(
            field_of(&t, json!({"size": [1], "size/x": 2}), None).as_deref(),
            Some("size/x")
        );
        assert_eq!(
            field_of(&t, json!({"size": ["a"]}), Some(3)).as_deref(),
            Some("[3].size[0]")
        );
        assert_eq!(field_of(&t, json!([1]), Some(2)).as_deref(), Some("[2]"));
    }

    #[test]
    fn nul_is_refused_for_every_task_and_schemaless_tasks_take_objects() {
        let open = Task::new(TaskDefinition::new("ocr".parse().unwrap()), None);
        open.validate(&json!({"anything": [1, "two"]}), None)
            .unwrap();
        assert_eq!(
            field_of(&open, json!({"a": ["x\u{0}"]}), None).as_deref(),
            Some("a[0]")
        );
        assert!(open.validate(&json!([1, 2]), None).is_err());
        let schema = task(json!({"type": "object"}));
        assert_eq!(
            field_of(&schema, json!({"k": "\u{0}"}), None).as_deref(),
            Some("k")
        );
    }

    #[test]
    fn built_in_names_keep_their_typed_validation_and_stay_open() {
        let mut def = TaskDefinition::built_in(JobKind::Embed);
        def.tenant = Some("someone".into());
        let embed = Task::new(def, None);
        assert_eq!(embed.kind(), Some(JobKind::Embed));
        assert!(embed.def.open_to("anyone"));
        assert_eq!(
            field_of(
                &embed,
                json!({"batch": {"document_id": uuid::Uuid::nil(), "version": 1, "batch_no": 0, "chunk_ids": []}}),
                None
            )
            .as_deref(),
            Some("batch")
        );
        let webhook = Task::new(TaskDefinition::built_in(JobKind::Webhook), None);
        assert!(webhook.submittable().is_err());
    }

    #[test]
    fn validators_are_reused_while_the_digest_stays() {
        let a = task(json!({"type": "object"}));
        let b = Task::new(a.def.clone(), Some(&a));
        match (&a.check, &b.check) {
            (Check::Schema(x), Check::Schema(y)) => assert!(Arc::ptr_eq(x, y)),
            other => panic!("{other:?}"),
        }
        let mut changed = a.def.clone();
        changed.schema = Some(json!({"type": "object", "required": ["x"]}));
        changed.schema_digest = changed.schema_digest();
        let c = Task::new(changed, Some(&a));
        match (&a.check, &c.check) {
            (Check::Schema(x), Check::Schema(y)) => assert!(!Arc::ptr_eq(x, y)),
            other => panic!("{other:?}"),
        }
        let broken = task(json!({"type": 12}));
        assert_eq!(
            broken.validate(&json!({}), None).unwrap_err().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
