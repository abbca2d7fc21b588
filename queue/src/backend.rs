//! [`RedisBackend`]: the apalis [`Backend`] a Hopper worker pulls jobs from.
//!
//! On its first poll it starts the claim loop ([`crate::fetcher`]) and the
//! heartbeat; claimed, decoded jobs arrive through a channel bounded by the
//! queue's concurrency. Its middleware is the late-acknowledgement layer
//! ([`crate::ack::AckLayer`]). On close it stops claiming, gives back jobs
//! that were claimed but never started (their attempt uncounted) and
//! deregisters the worker, so a restart under any name starts clean.

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
use hopper_shared::jobs::{JobKind, QueueSettings};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    JobContext, QueueClient, QueueError, WorkerId,
    ack::{AckLayer, AckShared},
    fetcher::{Fetcher, heartbeat_loop},
    job::Running,
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

/// A queue of one job kind, as an apalis backend.
pub struct RedisBackend<Args> {
    admission: Option<Admission>,
    client: QueueClient,
    kind: JobKind,
    worker: WorkerId,
    settings: QueueSettings,
    lease: Lease,
    pool: Option<Pool>,
    slots: Arc<Semaphore>,
    running: Arc<Running>,
    rx: Option<mpsc::Receiver<Task<Args>>>,
    tx: Option<mpsc::Sender<Task<Args>>>,
    stop: CancellationToken,
    loops: Vec<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, Result<(), QueueError>>>,
    _args: PhantomData<Args>,
}

impl<Args> std::fmt::Debug for RedisBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("kind", &self.kind)
            .field("worker", &self.worker)
            .finish()
    }
}

impl<Args: DeserializeOwned + Send + 'static> RedisBackend<Args> {
    /// A backend for `kind`'s queue, run by `worker`. With a `pool`, every
    /// finished job's record is written to Postgres before its ack.
    pub fn new(
        client: QueueClient,
        kind: JobKind,
        worker: WorkerId,
        lease: Lease,
        pool: Option<Pool>,
    ) -> Self {
        let settings = client.settings(kind);
        let (tx, rx) = mpsc::channel(settings.concurrency.max(1));
        Self {
            admission: None,
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            running: Arc::default(),
            client,
            kind,
            worker,
            settings,
            lease,
            pool,
            rx: Some(rx),
            tx: Some(tx),
            stop: CancellationToken::new(),
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

    /// Starts the claim loop and the heartbeat (once).
    fn start(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let fetcher = Fetcher {
            client: self.client.clone(),
            keys: self.client.keys(self.kind),
            worker: self.worker.clone(),
            slots: self.slots.clone(),
            admission: self.admission.clone(),
            batch: self.settings.concurrency.clamp(1, 256),
            tx,
            stop: self.stop.clone(),
        };
        let heartbeat = heartbeat_loop(
            self.client.clone(),
            self.kind,
            self.worker.clone(),
            self.lease.heartbeat,
            self.lease.lease,
            self.pool.clone(),
            self.running.clone(),
            self.stop.clone(),
        );
        let client = self.client.clone();
        let (kind, worker) = (self.kind, self.worker.clone());
        // Register before the first claim, so recovery can see our jobs.
        self.loops.push(tokio::spawn(async move {
            if let Err(e) = client.heartbeat(kind, &worker).await {
                tracing::warn!(queue = %kind, "first heartbeat failed: {e}");
            }
            fetcher.run().await;
        }));
        self.loops.push(tokio::spawn(heartbeat));
    }

    /// The closing sequence: stop the loops, give back unstarted jobs,
    /// deregister.
    fn close_future(&mut self) -> BoxFuture<'static, Result<(), QueueError>> {
        self.stop.cancel();
        let loops = std::mem::take(&mut self.loops);
        let rx = self.rx.take();
        let client = self.client.clone();
        let (kind, worker) = (self.kind, self.worker.clone());
        async move {
            for l in loops {
                let _ = l.await;
            }
            let mut unstarted = Vec::new();
            if let Some(mut rx) = rx {
                while let Ok(task) = rx.try_recv() {
                    if let Some(ctx) = task.data().get::<JobContext>() {
                        unstarted.push(ctx.id);
                    }
                }
            }
            let n = client.release(kind, &worker, &unstarted, true).await?;
            if n > 0 {
                tracing::info!(queue = %kind, "gave back {n} unstarted job(s)");
            }
            client.deregister(kind, &worker).await?;
            tracing::info!(queue = %kind, %worker, "worker deregistered");
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
                self.kind,
                self.worker.clone(),
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
