//! [`RedisBackend`]: the apalis [`Backend`] a Hopper worker pulls jobs from.
//!
//! On its first poll it registers the worker and starts the claim loop
//! ([`crate::fetcher`]), the heartbeat ([`crate::heartbeat`]) and the
//! rescuer ([`crate::rescuer`]), each a task of its own; claimed, decoded
//! jobs arrive through a channel bounded by the queue's concurrency. Its
//! middleware is the late-acknowledgement layer ([`crate::ack::AckLayer`]).
//!
//! A partitioned queue ([`crate::partitions`]) gets all of that once per
//! partition — a registration, claim loop, heartbeat, rescuer and outcome
//! recorder each — sharing the worker's slots, so the loops take turns as
//! slots free up and no partition starves.
//!
//! Shutdown, through a [`ShutdownHandle`] taken before the worker runs:
//! claiming stops at once (nothing is claimed during the drain) while the
//! heartbeat goes on; after the grace period the running jobs' cancellation
//! tokens fire. On close the loops stop, jobs that were claimed but never
//! started go back uncounted, and the worker deregisters, handing back
//! whatever it still holds in the same script.

use std::{
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    task::Task,
    worker::context::WorkerContext,
};
use deadpool_postgres::Pool;
use futures::{FutureExt, future::BoxFuture};
use hopper_shared::{QueueName, jobs::QueueSettings};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    JobContext, QueueClient, QueueError, WorkerId,
    ack::{AckLayer, AckShared},
    fetcher::Fetcher,
    heartbeat::heartbeat_loop,
    job::Running,
    registration::Registration,
    rescuer::rescuer_loop,
};

/// Timing of a worker's lease on its jobs.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    /// How often the worker heartbeats.
    pub heartbeat: Duration,
    /// Silence after which its jobs are re-queued.
    pub lease: Duration,
}

/// How many more jobs the worker can take now, beyond its free slots (what
/// the embed engine's queue of texts has room for, say). The claim loop
/// claims at most that many, and polls it every
/// [`crate::fetcher::ADMISSION_POLL`] while it answers 0.
pub type Admission = Arc<dyn Fn() -> usize + Send + Sync>;

/// One queue (by name), as an apalis backend.
pub struct RedisBackend<Args> {
    admission: Option<Admission>,
    client: QueueClient,
    queue: QueueName,
    /// One registration per partition (one in all when it is not split).
    parts: Vec<Arc<Registration>>,
    settings: QueueSettings,
    lease: Lease,
    pool: Option<Pool>,
    slots: Arc<Semaphore>,
    running: Arc<Running>,
    rx: Option<mpsc::Receiver<Task<Args>>>,
    tx: Option<mpsc::Sender<Task<Args>>>,
    stop: CancellationToken,
    /// Fires at shutdown (or with `stop`): the claim loop ends.
    claim_stop: CancellationToken,
    loops: Vec<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, Result<(), QueueError>>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for RedisBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("kind", &self.queue)
            .field("worker", &self.parts[0].id())
            .finish()
    }
}

impl<Args: DeserializeOwned + Send + 'static> RedisBackend<Args> {
    /// A backend for the queue `queue`, run by `worker`. With a `pool`, every
    /// finished job's record is written to Postgres before its ack.
    pub fn new(
        client: QueueClient,
        queue: impl Into<QueueName>,
        worker: WorkerId,
        lease: Lease,
        pool: Option<Pool>,
    ) -> Self {
        let queue = queue.into();
        let settings = client.settings(&queue);
        let (tx, rx) = mpsc::channel(settings.concurrency.max(1));
        let running: Arc<Running> = Arc::default();
        let stop = CancellationToken::new();
        // Partition k > 0 registers as `<worker>~k`: an eviction on one
        // partition stops only the jobs claimed there.
        let parts = client
            .partitions_cached(&queue)
            .into_iter()
            .map(|partition| {
                let k = partition.partition_index();
                let id = match k {
                    0 => worker.clone(),
                    k => WorkerId::from_raw(&format!("{worker}~{k}")),
                };
                Arc::new(Registration::new(
                    client.clone(),
                    partition,
                    id,
                    running.clone(),
                ))
            })
            .collect();
        Self {
            admission: None,
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            parts,
            running,
            client,
            queue,
            settings,
            lease,
            pool,
            rx: Some(rx),
            tx: Some(tx),
            claim_stop: stop.child_token(),
            stop,
            loops: Vec::new(),
            closing: None,
            _args: PhantomData,
        }
    }

    /// Claims only while `admission` says there is room (backpressure from
    /// whatever the handlers feed, beyond the queue's concurrency).
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = Some(admission);
        self
    }

    /// A handle for the process' shutdown sequence (take it before the
    /// backend goes into a worker).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            claim_stop: self.claim_stop.clone(),
            running: self.running.clone(),
            parts: self.parts.clone(),
            client: self.client.clone(),
        }
    }

    /// Registers, then starts the claim loop, the heartbeat and the rescuer
    /// (once).
    fn start(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        for registration in self.parts.clone() {
            self.start_partition(registration, tx.clone());
        }
    }

    /// The loops of one partition (of the queue, when it is not split).
    fn start_partition(&mut self, registration: Arc<Registration>, tx: mpsc::Sender<Task<Args>>) {
        let queue = registration.queue().clone();
        let fetcher = Fetcher {
            client: self.client.clone(),
            queue: self.queue.clone(),
            keys: self.client.keys(&queue),
            registration: registration.clone(),
            running: self.running.clone(),
            lease: self.lease.lease,
            slots: self.slots.clone(),
            admission: self.admission.clone(),
            batch: self.settings.concurrency.clamp(1, 256),
            tx,
            stop: self.claim_stop.clone(),
            pool: self.pool.clone(),
        };
        let heartbeat = heartbeat_loop(
            self.client.clone(),
            queue.clone(),
            registration.clone(),
            self.lease.heartbeat,
            self.running.clone(),
            self.stop.clone(),
        );
        let rescuer = rescuer_loop(
            self.client.clone(),
            queue.clone(),
            registration.clone(),
            self.lease.heartbeat,
            self.lease.lease,
            self.pool.clone(),
            self.running.clone(),
            self.stop.clone(),
        );
        // Register before the first claim, so recovery can see our jobs (a
        // failure here is no harm: claims are refused until the heartbeat
        // gets through).
        self.loops.push(tokio::spawn(async move {
            if let Err(e) = registration.register().await {
                tracing::warn!(queue = %queue, "registering the worker failed: {e}");
            }
            fetcher.run().await;
        }));
        self.loops.push(tokio::spawn(heartbeat));
        self.loops.push(tokio::spawn(rescuer));
    }

    /// The closing sequence: stop the loops, give back unstarted jobs,
    /// deregister.
    fn close_future(&mut self) -> BoxFuture<'static, Result<(), QueueError>> {
        self.stop.cancel();
        let loops = std::mem::take(&mut self.loops);
        let rx = self.rx.take();
        let client = self.client.clone();
        let parts = self.parts.clone();
        async move {
            for l in loops {
                let _ = l.await;
            }
            let mut unstarted: Vec<(QueueName, (uuid::Uuid, u64))> = Vec::new();
            if let Some(mut rx) = rx {
                while let Ok(task) = rx.try_recv() {
                    if let Some(ctx) = task.data().get::<JobContext>() {
                        unstarted.push((ctx.partition.clone(), (ctx.id, ctx.lease)));
                    }
                }
            }
            for registration in parts {
                let queue = registration.queue();
                let worker = registration.id();
                let mine: Vec<(uuid::Uuid, u64)> = unstarted
                    .iter()
                    .filter(|(p, _)| p == queue)
                    .map(|(_, job)| *job)
                    .collect();
                let n = client.release(queue, &worker, &mine, true).await?;
                if n > 0 {
                    tracing::info!(queue = %queue, "gave back {n} unstarted job(s)");
                }
                let held = client.deregister(queue, &worker, "worker stopped").await?;
                tracing::info!(queue = %queue, %worker, held, "worker deregistered");
            }
            Ok(())
        }
        .boxed()
    }
}

impl<Args: DeserializeOwned + Send + 'static> Backend for RedisBackend<Args> {
    type Task = Task<Args>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.start();
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        match &mut self.rx {
            Some(rx) => rx.poll_recv(cx).map(|t| t.map(Ok)),
            None => Poll::Ready(None),
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            self.closing = Some(self.close_future());
        }
        self.closing.as_mut().expect("set above").poll_unpin(cx)
    }
}

impl<Args: DeserializeOwned + Send + 'static> BackendConfig for RedisBackend<Args> {
    type Args = Args;
    type Id = uuid::Uuid;
    type Kind = Ephemeral;
    type Config = QueueSettings;
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        &self.settings
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        AckLayer {
            inner: Arc::new(AckShared::start(
                self.client.clone(),
                self.parts.iter().map(|r| r.queue().clone()),
                self.settings.clone(),
                self.pool.clone(),
                self.slots.clone(),
                self.running.clone(),
            )),
        }
    }
}

impl<Args> Drop for RedisBackend<Args> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What a stopping process does to one backend, step by step (see
/// `hopper_worker::run`): stop claiming, let jobs run out their grace,
/// stop them, give back the rest.
#[derive(Clone)]
pub struct ShutdownHandle {
    claim_stop: CancellationToken,
    running: Arc<Running>,
    parts: Vec<Arc<Registration>>,
    client: QueueClient,
}

impl ShutdownHandle {
    /// The claim loop ends now; the heartbeat goes on while jobs drain.
    pub fn stop_claiming(&self) {
        self.claim_stop.cancel();
    }

    /// Fires the cancellation token of every running job (the grace period
    /// is over). Returns how many.
    pub fn stop_running(&self) -> usize {
        self.running.stop_all(None)
    }

    /// Deregisters, handing back whatever the worker still holds, in one
    /// script. Returns how many jobs went back.
    pub async fn give_back(&self, why: &str) -> Result<usize, QueueError> {
        let mut n = 0;
        for registration in &self.parts {
            n += self
                .client
                .deregister(registration.queue(), &registration.id(), why)
                .await?;
        }
        Ok(n)
    }
}
