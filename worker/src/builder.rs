//! [`Worker::builder`]: a worker process serving a set of [`Task`]s.
//!
//! ```no_run
//! # use hopper_worker::{Task, TaskContext, TaskError, Worker};
//! # async fn count(text: String, _: TaskContext) -> Result<usize, TaskError> { Ok(text.len()) }
//! # async fn main_() -> anyhow::Result<()> {
//! let config = hopper_shared::Config::from_env()?;
//! Worker::builder(config)
//!     .task(Task::new("count", count))
//!     .run() // until SIGTERM or SIGINT
//!     .await
//! # }
//! ```
//!
//! [`WorkerBuilder::run_until`], step by step: check the tasks (valid,
//! distinct names and settings), connect to Redis and Postgres (migrating
//! the schema), start the metrics and health server when
//! `HOPPER_WORKER_METRICS_ADDR` is set, declare every task in the registry
//! (a schema that conflicts with the one in force, or a name another tenant
//! owns, stops the process before it serves anything), then run one apalis
//! worker per task until the shutdown future resolves.
//!
//! Shutdown: every queue stops claiming at once (nothing is claimed during
//! the drain; heartbeats go on) and running jobs get the grace period. Then
//! their cancellation tokens fire and they get a short while more to end (a
//! cancelled attempt is retried, not lost); whatever still runs after that
//! is handed back to its queue, together with the in-flight set, in one
//! script per queue, and the process exits.

use std::{collections::HashSet, future::Future, sync::Arc};

use anyhow::{Context, bail};
use hopper_queue::{Declared, Lease, QueueClient, ShutdownHandle, WorkerId};
use hopper_shared::{Config, db, telemetry};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use crate::{
    TaskContext,
    task::{Launch, Running, Serve, Task, TaskError},
};

/// A worker process built from tasks: see [`Worker::builder`].
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// A worker with no tasks yet, configured by `config`
    /// ([`Config::from_env`]: Redis, Postgres, lease, shutdown grace,
    /// `HOPPER_QUEUE_<NAME>_*` overrides…).
    pub fn builder(config: Config) -> WorkerBuilder {
        WorkerBuilder {
            config,
            tasks: Vec::new(),
            connections: None,
            declared: Vec::new(),
        }
    }
}

/// The tasks a worker serves and how it connects; run it with
/// [`WorkerBuilder::run`].
pub struct WorkerBuilder {
    config: Config,
    tasks: Vec<Box<dyn Serve>>,
    /// Connections opened already (the built-in worker opens them first to
    /// set up its pipeline and health server); `run` opens its own when
    /// `None`.
    connections: Option<(QueueClient, deadpool_postgres::Pool)>,
    /// Run once every task is declared, before any is served.
    declared: Vec<Box<dyn FnOnce() + Send>>,
}

impl WorkerBuilder {
    /// Serves `task` too.
    pub fn task<Args, Out, H, Fut>(mut self, task: Task<Args, Out, H>) -> Self
    where
        Args: DeserializeOwned + Send + 'static,
        Out: Serialize + Send + Sync + 'static,
        H: Fn(Args, TaskContext) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, TaskError>> + Send + 'static,
    {
        self.tasks.push(Box::new(task));
        self
    }

    /// Uses connections opened already (Postgres migrated) instead of
    /// opening its own, and starts no HTTP server of its own.
    /// Runs `f` once every task is declared (before any is served): what
    /// needs the registry to know this worker's tasks starts there.
    pub(crate) fn when_declared(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.declared.push(Box::new(f));
        self
    }

    pub(crate) fn connected(mut self, client: QueueClient, pool: deadpool_postgres::Pool) -> Self {
        self.connections = Some((client, pool));
        self
    }

    /// Runs until SIGTERM or SIGINT, then drains (see the module's doc).
    pub async fn run(self) -> anyhow::Result<()> {
        let shutdown = crate::shutdown_signal()?;
        self.run_until(shutdown).await
    }

    /// Runs until `shutdown` resolves, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            tasks,
            connections,
            declared,
        } = self;
        telemetry::init(config.log_format, config.otlp_endpoint.as_ref());
        check(&tasks)?;
        let (client, pool) = match connections {
            Some(c) => c,
            None => {
                let (client, pool) = connect(&config).await?;
                if let Some(addr) = config.worker_metrics_addr {
                    let health = crate::http::Health {
                        queue: client.clone(),
                        pool: pool.clone(),
                        device: "cpu".into(),
                        torch_device: tch::Device::Cpu,
                        metrics: hopper_shared::metrics::install_exporter(),
                        embedding: None,
                    };
                    crate::http::serve(addr, health).await?;
                }
                (client, pool)
            }
        };
        for task in &tasks {
            let def = task.definition().expect("checked above");
            match client.declare(def).await? {
                Declared::InForce(_) => {
                    tracing::info!(task = %def.name, version = def.version, "task declared");
                }
                Declared::Older(newer) => {
                    tracing::warn!(
                        task = %def.name,
                        version = def.version,
                        "version {newer} of the task is in force; this worker runs version {}",
                        def.version
                    );
                    client.task(&def.name).await?;
                }
            }
        }

        for f in declared {
            f();
        }
        // Every process agrees on each queue's partitions, or does not start.
        let served: Vec<hopper_shared::QueueName> = tasks
            .iter()
            .filter_map(|t| t.definition().ok().map(|d| d.name.clone()))
            .collect();
        client.check_partitions(&served).await?;

        let worker = WorkerId::generate();
        let lease = Lease {
            heartbeat: config.heartbeat,
            lease: config.lease,
        };
        let names: Vec<_> = tasks
            .iter()
            .filter_map(|t| t.definition().ok().map(|d| d.name.as_str().to_owned()))
            .collect();
        tracing::info!(%worker, tasks = ?names, "worker starting");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut running = Running::new();
        let mut handles = Vec::new();
        let shared = Arc::new(client.clone());
        for task in tasks {
            task.launch(Launch {
                client: &client,
                shared: &shared,
                worker: &worker,
                lease,
                pool: &pool,
                handles: &mut handles,
                stop: stop_rx.clone(),
                running: &mut running,
            });
        }

        let scheduler_stop = tokio_util::sync::CancellationToken::new();
        if config.scheduler {
            hopper_queue::scheduler::spawn_scheduler(client.clone(), scheduler_stop.clone());
        }

        shutdown.await;
        scheduler_stop.cancel();
        tracing::info!("shutdown requested: no new claims, draining running jobs");
        for h in &handles {
            h.stop_claiming();
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(config.shutdown_grace, drain(&mut running)).await;
        if drained.is_err() {
            let stopped: usize = handles.iter().map(ShutdownHandle::stop_running).sum();
            tracing::warn!(
                "grace period of {:?} over: cancelled {stopped} running job(s); they have {:?} more",
                config.shutdown_grace,
                CANCELLED_GRACE
            );
            if tokio::time::timeout(CANCELLED_GRACE, drain(&mut running))
                .await
                .is_err()
            {
                running.abort_all();
                while running.join_next().await.is_some() {}
                for h in &handles {
                    match h
                        .give_back("the worker stopped before this attempt ended")
                        .await
                    {
                        Ok(n) => tracing::warn!("handed {n} running job(s) back to their queue"),
                        Err(e) => tracing::error!("could not hand jobs back: {e}"),
                    }
                }
            }
        }
        // A worker embedded in another program (not the `hopper-worker`
        // binary, whose `main` shuts the exporter down) still sends the spans
        // of its last attempts before returning.
        telemetry::flush();
        Ok(())
    }
}

/// Every task has a valid name, distinct from the others', and settings
/// that make sense.
fn check(tasks: &[Box<dyn Serve>]) -> anyhow::Result<()> {
    if tasks.is_empty() {
        bail!("the worker has no tasks to serve");
    }
    let mut seen = HashSet::new();
    for task in tasks {
        let def = task.definition().map_err(|e| anyhow::anyhow!("{e}"))?;
        if !seen.insert(def.name.as_str()) {
            bail!("task `{}` is given twice", def.name);
        }
        def.check().map_err(|e| {
            anyhow::anyhow!(
                "task `{}`: {}{e}",
                def.name,
                e.field
                    .as_deref()
                    .map(|f| format!("{f}: "))
                    .unwrap_or_default()
            )
        })?;
    }
    Ok(())
}

/// Connects to Redis and Postgres and migrates the schema.
pub(crate) async fn connect(
    config: &Config,
) -> anyhow::Result<(QueueClient, deadpool_postgres::Pool)> {
    let client = QueueClient::connect(config)
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))?;
    let pool = db::pool(config, 16)?;
    db::ping(&pool).await.with_context(|| {
        format!(
            "cannot reach Postgres at {}",
            hopper_shared::config::redact_url(&config.database_url)
        )
    })?;
    db::migrate(&pool, &config.db_schema).await?;
    Ok((client, pool))
}

/// How long jobs whose cancellation fired at the end of the grace period
/// get to end before they are handed back.
const CANCELLED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for every task's worker to end, logging how each did.
async fn drain(running: &mut Running) {
    while let Some(done) = running.join_next().await {
        match done {
            Ok((queue, Err(e))) => tracing::error!(%queue, "worker ended: {e}"),
            Ok((queue, Ok(()))) => tracing::info!(%queue, "worker stopped"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::error!("worker task failed: {e}"),
        }
    }
}
