//! A worker's registration on one queue: the id it claims under, renewed by
//! the heartbeat, and made anew when the worker finds itself evicted.
//!
//! A worker that stops without dying (a frozen VM, a long pause, a network
//! partition) is presumed dead once its lease runs out: any live worker's
//! rescuer re-queues its jobs and removes it from the queue's `workers`
//! set. When it wakes, its next heartbeat (or claim) finds it gone. It then
//! fires the cancellation token of every job it still runs under the old
//! id (their outcomes would be refused by the fence anyway), never touches
//! the old in-flight set again, and registers under a fresh id.

use std::sync::{Arc, RwLock};

use hopper_shared::{QueueName, metrics as m};

use crate::{QueueClient, QueueError, WorkerId, job::Running};

/// See the module docs.
pub(crate) struct Registration {
    client: QueueClient,
    queue: QueueName,
    current: RwLock<WorkerId>,
    /// Serialises renewals, so an eviction is handled once.
    renewing: tokio::sync::Mutex<()>,
    running: Arc<Running>,
}

impl Registration {
    /// A registration under `worker` (not yet written: see [`Self::register`]).
    pub fn new(
        client: QueueClient,
        queue: impl Into<QueueName>,
        worker: WorkerId,
        running: Arc<Running>,
    ) -> Self {
        let queue = queue.into();
        Self {
            client,
            queue,
            current: RwLock::new(worker),
            renewing: tokio::sync::Mutex::new(()),
            running,
        }
    }

    /// The queue (or partition) it is registered on.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// The id to claim under now.
    pub fn id(&self) -> WorkerId {
        self.current.read().expect("registration").clone()
    }

    /// Registers the current id.
    pub async fn register(&self) -> Result<(), QueueError> {
        self.client.register(&self.queue, &self.id()).await
    }

    /// Renews the lease; when the worker was evicted, stops what it ran
    /// under the old id and registers afresh. Returns false when it had
    /// been evicted.
    pub async fn renew(&self) -> Result<bool, QueueError> {
        let _one = self.renewing.lock().await;
        let old = self.id();
        if self.client.heartbeat(&self.queue, &old).await? {
            return Ok(true);
        }
        let stopped = self.running.stop_all(Some(&old));
        let fresh = WorkerId::generate();
        self.client.register(&self.queue, &fresh).await?;
        *self.current.write().expect("registration") = fresh.clone();
        metrics::counter!(m::WORKER_EVICTIONS, "queue" => self.queue.label()).increment(1);
        tracing::warn!(
            queue = %self.queue, old = %old, new = %fresh, stopped,
            "this worker was presumed dead (its lease ran out) and its jobs went to others; \
             stopped its {stopped} running job(s) and registered afresh"
        );
        Ok(false)
    }
}
