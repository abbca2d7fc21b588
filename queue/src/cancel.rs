//! Cancellation: a client cancels a job, and a worker learns which of its
//! running jobs to stop.
//!
//! A waiting job (pending, scheduled, retrying) is cancelled at once by
//! `cancel.lua`; a running one is only asked to stop: its id goes into the
//! queue's cancel-request set, which the worker's heartbeat reads
//! ([`QueueClient::cancel_requests`], [`crate::heartbeat`]) to fire the job's
//! cancellation token. The fail (or recovery) that ends it then finishes it
//! as cancelled.

use hopper_shared::QueueName;
use uuid::Uuid;

use crate::{QueueClient, QueueError, client::parse_id, scripts::SCRIPTS};

impl QueueClient {
    /// Cancels a job: a waiting one at once, a running one cooperatively
    /// (its worker fires the job's cancellation token at its next
    /// heartbeat). Returns the job's state after the call, `None` when
    /// there is no such job in Redis.
    pub async fn cancel(&self, id: Uuid) -> Result<Option<(QueueName, String)>, QueueError> {
        let Some(job) = self.find_job(id).await? else {
            return Ok(None);
        };
        self.cancel_in(job.kind, id).await
    }

    /// [`Self::cancel`] for a job known to be in the queue `queue`.
    pub async fn cancel_in(
        &self,
        queue: impl Into<QueueName>,
        id: Uuid,
    ) -> Result<Option<(QueueName, String)>, QueueError> {
        let queue = queue.into();
        let Some(partition) = self.partition_of(&queue, id).await? else {
            return Ok(None);
        };
        let keys = self.keys(&partition);
        let state: String = SCRIPTS
            .cancel
            .key(keys.job(&id))
            .key(keys.scheduled())
            .key(keys.cancel_requests())
            .key(keys.done())
            .key(keys.tenant_load())
            .arg(id.to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((!state.is_empty()).then_some((queue.logical(), state)))
    }

    /// Ids of running jobs whose cancellation was requested.
    pub async fn cancel_requests(
        &self,
        queue: impl Into<QueueName>,
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys(&queue).cancel_requests())
            .query_async(&mut self.conn.clone())
            .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }
}
