//! Progress reports of running attempts.
//!
//! A handler (a Rust task through its `TaskContext`, a remote worker through
//! `POST /v1/work/progress`) may report how far it got: the JSON is stored in
//! the job's hash as the field `progress` and shown with the job. The write
//! is fenced by the attempt's lease (`progress.lua`): an attempt that lost
//! its job (recovered, cancelled, past its hard limit) changes nothing.

use hopper_shared::QueueName;
use uuid::Uuid;

use crate::{QueueClient, QueueError, WorkerId, scripts::SCRIPTS};

/// How a progress report went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressStored {
    /// Stored on the job.
    Stored,
    /// The attempt no longer holds the job: nothing was written.
    Stale,
    /// There is no such job.
    Unknown,
}

impl QueueClient {
    /// Stores `progress` (JSON text; the caller bounds its size) as the
    /// progress of job `id`, if the attempt of `worker` under `lease` still
    /// holds it.
    pub async fn progress(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        id: Uuid,
        lease: u64,
        progress: &str,
    ) -> Result<ProgressStored, QueueError> {
        let keys = self.keys(queue);
        let stored: i64 = SCRIPTS
            .progress
            .key(keys.job(&id))
            .key(keys.inflight(worker))
            .arg(id.to_string())
            .arg(lease)
            .arg(progress)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match stored {
            1 => ProgressStored::Stored,
            0 => ProgressStored::Stale,
            _ => ProgressStored::Unknown,
        })
    }
}
