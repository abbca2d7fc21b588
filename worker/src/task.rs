//! [`Task`]: a typed handler and what the registry is told about it.
//!
//! A task pairs a name (a [`QueueName`]: its queue) with an async handler
//! `async fn(Args, TaskContext) -> Result<Out, TaskError>`: `Args` is
//! decoded from the job's JSON with serde (a payload that does not decode is
//! a poison job, dead-lettered at once, never a crash), `Out` is stored as
//! the job's result. Its definition ([`TaskDefinition`]: version, argument
//! schema, default settings, description) is declared in the registry when
//! the worker starts ([`crate::WorkerBuilder::run`]).
//!
//! [`TaskError`] tells the queue what follows a failure: a retryable error
//! (any error, through `?`) is retried with the task's backoff until its
//! attempts run out; a [`TaskError::permanent`] one goes to the dead letters
//! at once.
//!
//! Under the hood each task is one apalis worker on a
//! [`hopper_queue::RedisBackend`] of its queue (`Serve`): late
//! acknowledgement, leases, fencing, retries, dead letters, soft and hard
//! limits all come from there.

use std::{
    future::Future,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
};

use apalis_core::{error::BoxDynError, worker::builder::WorkerBuilder as ApalisBuilder};
use futures::{TryFutureExt, future::MapErr};
use hopper_queue::{
    Admission, Lease, Permanent, QueueClient, RedisBackend, ShutdownHandle, WorkerId,
};
use hopper_shared::{
    QueueName,
    jobs::JobKind,
    tasks::{TaskDefinition, TaskSettings},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use crate::context::TaskContext;

/// Why an attempt failed, and whether trying again could help.
///
/// Any error converts into a retryable one, so `?` works on every
/// `std::error::Error` in a handler; [`TaskError::permanent`] sends the job
/// to the dead letters at once.
#[derive(Debug)]
pub struct TaskError {
    error: BoxDynError,
    permanent: bool,
}

impl TaskError {
    /// A failure no retry can fix (bad input, a missing resource): the job
    /// goes to the dead letters at once with this message.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Self {
            error: Box::new(Permanent(message.to_string())),
            permanent: true,
        }
    }

    /// A failure worth retrying (with the task's backoff, until its
    /// attempts run out).
    pub fn retryable(message: impl std::fmt::Display) -> Self {
        Self {
            error: message.to_string().into(),
            permanent: false,
        }
    }

    /// An error boxed by other code: permanent when it is a
    /// [`Permanent`], retryable otherwise.
    pub fn from_boxed(error: BoxDynError) -> Self {
        let permanent = error.downcast_ref::<Permanent>().is_some();
        Self { error, permanent }
    }

    /// Whether no retry can fix it.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The error as the queue's acknowledgement layer reads it (a permanent
    /// one is a [`Permanent`]).
    fn into_boxed(self) -> BoxDynError {
        self.error
    }
}

impl std::fmt::Display for TaskError {
    /// The error and its sources, `: `-separated (the job's error text).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        let mut source = self.error.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    /// A retryable error whose text keeps its source chain (a
    /// [`Permanent`] stays permanent).
    fn from(e: E) -> Self {
        let boxed: BoxDynError = Box::new(e);
        if boxed.downcast_ref::<Permanent>().is_some() {
            return Self::from_boxed(boxed);
        }
        let error = if boxed.source().is_some() {
            let chained = Self {
                error: boxed,
                permanent: false,
            };
            chained.to_string().into()
        } else {
            boxed
        };
        Self {
            error,
            permanent: false,
        }
    }
}

/// A task: its definition and its handler. Build it with [`Task::new`],
/// adjust it with the setters, hand it to [`crate::WorkerBuilder::task`].
pub struct Task<Args, Out, H> {
    /// The definition, or why the name is invalid (reported by `run`).
    def: Result<TaskDefinition, String>,
    handler: H,
    admission: Option<Admission>,
    /// Whether finished jobs are recorded in Postgres.
    records: bool,
    _types: PhantomData<fn(Args) -> Out>,
}

impl<Args, Out, H, Fut> Task<Args, Out, H>
where
    Args: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + Sync + 'static,
    H: Fn(Args, TaskContext) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, TaskError>> + Send + 'static,
{
    /// A task named `name` (checked against the queue-name rule; a bad name
    /// makes [`crate::WorkerBuilder::run`] fail, naming it), version 1, no
    /// schema, the default settings, open to every tenant.
    pub fn new(name: &str, handler: H) -> Self {
        let def = QueueName::new(name)
            .map(TaskDefinition::new)
            .map_err(|e| format!("task name `{}` is invalid: {}", e.name, e.problem));
        Self {
            def,
            handler,
            admission: None,
            records: true,
            _types: PhantomData,
        }
    }

    /// The built-in kind `kind`, with its definition
    /// ([`TaskDefinition::built_in`]).
    pub fn built_in(kind: JobKind, handler: H) -> Self {
        Self {
            def: Ok(TaskDefinition::built_in(kind)),
            handler,
            admission: None,
            records: true,
            _types: PhantomData,
        }
    }
}

impl<Args, Out, H> Task<Args, Out, H> {
    fn edit(mut self, f: impl FnOnce(&mut TaskDefinition)) -> Self {
        if let Ok(def) = &mut self.def {
            f(def);
        }
        self
    }

    /// Its version (from 1). Another schema needs another version.
    pub fn version(self, version: u32) -> Self {
        self.edit(|d| d.version = version)
    }

    /// The JSON Schema of its arguments (the API refuses submissions that
    /// break it, 422 naming the JSON path).
    pub fn schema(self, schema: serde_json::Value) -> Self {
        self.edit(|d| d.schema = Some(schema))
    }

    /// The JSON Schema of `T` (usually `Args`), generated by schemars.
    pub fn schema_for<T: schemars::JsonSchema>(self) -> Self {
        self.schema(schemars::schema_for!(T).to_value())
    }

    /// Its default settings (`HOPPER_QUEUE_<NAME>_*` still override them).
    pub fn settings(self, settings: TaskSettings) -> Self {
        self.edit(|d| d.settings = settings)
    }

    /// Jobs one worker process runs at once.
    pub fn concurrency(self, n: usize) -> Self {
        self.edit(|d| d.settings.concurrency = n)
    }

    /// Attempts before the dead letters (the first run included).
    pub fn max_attempts(self, n: u32) -> Self {
        self.edit(|d| d.settings.max_attempts = n)
    }

    /// The soft time limit: the context's cancellation token fires then.
    pub fn soft_limit(self, limit: std::time::Duration) -> Self {
        self.edit(|d| d.settings.soft_limit_ms = limit.as_millis() as u64)
    }

    /// The hard time limit: the attempt is abandoned and counted failed.
    pub fn hard_limit(self, limit: std::time::Duration) -> Self {
        self.edit(|d| d.settings.hard_limit_ms = limit.as_millis() as u64)
    }

    /// What it does, for listings.
    pub fn description(self, text: impl Into<String>) -> Self {
        let text = text.into();
        self.edit(|d| d.description = Some(text))
    }

    /// Its arguments' names in positional order, so a Celery producer may
    /// pass them by position: with `["a", "b"]`, `add.delay(2, 3)` arrives
    /// as `{"a": 2, "b": 3}` (see the `hopper-celery` crate).
    pub fn params<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        self.edit(|d| d.params = Some(names))
    }

    /// How long Redis keeps its finished jobs (then only their Postgres
    /// records remain, if any).
    pub fn retention(self, keep: std::time::Duration) -> Self {
        self.edit(|d| d.settings.retention_ms = keep.as_millis() as u64)
    }

    /// Its finished jobs are not recorded in Postgres: for plumbing whose
    /// jobs matter only while Redis keeps them (the Celery bridge's). Dead
    /// letters are still listed, retried and purged from Redis.
    pub fn without_records(mut self) -> Self {
        self.records = false;
        self
    }

    /// Only Hopper itself (or other tasks) queue it: clients may not
    /// submit it.
    pub fn internal(self) -> Self {
        self.edit(|d| d.internal = true)
    }

    /// Claims only while `admission` answers room for more jobs
    /// (backpressure from whatever the handler feeds, beyond its
    /// concurrency).
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = Some(admission);
        self
    }
}

/// What a task needs from the process to start serving.
pub(crate) struct Launch<'a> {
    pub client: &'a QueueClient,
    /// Shared by every handler's context (one per process).
    pub shared: &'a Arc<QueueClient>,
    pub worker: &'a WorkerId,
    pub lease: Lease,
    pub pool: &'a deadpool_postgres::Pool,
    /// Every backend's shutdown handle, for the shutdown sequence.
    pub handles: &'a mut Vec<ShutdownHandle>,
    /// Turns true when the workers should stop.
    pub stop: watch::Receiver<bool>,
    pub running: &'a mut Running,
}

/// The apalis workers of a process, each ending with its queue and how it
/// ended.
pub(crate) type Running =
    tokio::task::JoinSet<(QueueName, Result<(), apalis_core::error::WorkerError>)>;

/// A task with its types erased, as the builder keeps it.
pub(crate) trait Serve: Send {
    /// Its definition, or why its name is invalid.
    fn definition(&self) -> Result<&TaskDefinition, &str>;
    /// Starts its apalis worker.
    fn launch(self: Box<Self>, at: Launch<'_>);
}

impl<Args, Out, H, Fut> Serve for Task<Args, Out, H>
where
    Args: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + Sync + 'static,
    H: Fn(Args, TaskContext) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, TaskError>> + Send + 'static,
{
    fn definition(&self) -> Result<&TaskDefinition, &str> {
        self.def.as_ref().map_err(String::as_str)
    }

    fn launch(self: Box<Self>, at: Launch<'_>) {
        let Ok(def) = self.def else { return };
        let queue = def.name;
        let mut backend = RedisBackend::<Args>::new(
            at.client.clone(),
            &queue,
            at.worker.clone(),
            at.lease,
            self.records.then(|| at.pool.clone()),
        );
        if let Some(admission) = self.admission {
            backend = backend.with_admission(admission);
        }
        at.handles.push(backend.shutdown_handle());
        let service = TaskService {
            handler: self.handler,
            client: at.shared.clone(),
            _types: PhantomData,
        };
        let worker = ApalisBuilder::new(format!("{}/{queue}", at.worker))
            .backend(backend)
            .build(service);
        let mut stop = at.stop;
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        };
        at.running
            .spawn(async move { (queue, worker.run_until(signal).await) });
    }
}

/// The tower service apalis runs for a task: decoded arguments and a
/// [`TaskContext`] in, the typed result out. No allocation of its own per
/// job (two reference counts: the attempt's context and the client).
struct TaskService<H, Args, Out> {
    handler: H,
    client: Arc<QueueClient>,
    _types: PhantomData<fn(Args) -> Out>,
}

impl<H, Args, Out, Fut> tower::Service<apalis_core::task::Task<Args>> for TaskService<H, Args, Out>
where
    H: Fn(Args, TaskContext) -> Fut,
    Fut: Future<Output = Result<Out, TaskError>>,
{
    type Response = Out;
    type Error = BoxDynError;
    type Future = MapErr<Fut, fn(TaskError) -> BoxDynError>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: apalis_core::task::Task<Args>) -> Self::Future {
        let ctx = TaskContext::new(task.ctx().clone(), self.client.clone());
        (self.handler)(task.args, ctx)
            .map_err(TaskError::into_boxed as fn(TaskError) -> BoxDynError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    fn fails() -> Result<(), TaskError> {
        Err(Outer(std::io::Error::other("inner")))?;
        Ok(())
    }

    #[test]
    fn question_mark_is_retryable_and_keeps_the_source_chain() {
        let e = fails().unwrap_err();
        assert!(!e.is_permanent());
        assert_eq!(e.to_string(), "outer: inner");
        let boxed = e.into_boxed();
        assert!(boxed.downcast_ref::<Permanent>().is_none());
        assert_eq!(boxed.to_string(), "outer: inner");
    }

    #[test]
    fn permanent_errors_reach_the_ack_layer_as_permanent() {
        let e = TaskError::permanent("no such file");
        assert!(e.is_permanent());
        let boxed = e.into_boxed();
        assert_eq!(boxed.downcast_ref::<Permanent>().unwrap().0, "no such file");
        let again = TaskError::from(Permanent("bad".into()));
        assert!(again.is_permanent());
        assert!(!TaskError::from_boxed("flaky".into()).is_permanent());
    }

    #[test]
    fn an_invalid_name_is_an_error_not_a_panic() {
        let task = Task::new("Not A Name", |_: (), _: TaskContext| async { Ok(()) });
        let why = task.definition().unwrap_err();
        assert!(why.contains("task name `Not A Name` is invalid"), "{why}");
        let task = Task::new("ok", |_: (), _: TaskContext| async { Ok(()) })
            .version(2)
            .max_attempts(9)
            .internal();
        let def = task.definition().unwrap();
        assert_eq!(
            (def.version, def.settings.max_attempts, def.internal),
            (2, 9, true)
        );
    }
}
