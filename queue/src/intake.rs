//! Intake: jobs made from messages that another system's producers left in
//! Redis lists (a Celery producer's kombu lists), moved atomically.
//!
//! [`QueueClient::intake`] runs `intake.lua`: up to `room` messages leave
//! their lists — the most urgent list first, each list oldest first — and
//! become pending jobs of one queue in the same script, so a message is
//! never in neither place, whatever crashes when. Each job's arguments are
//! `{"source": <the source's name>, "message": <the message as it was>}`;
//! the worker serving that queue translates it (see the `hopper-celery`
//! crate). The move stops while the queue already holds `lookahead`
//! pending jobs, so the foreign lists' order of urgency still decides what
//! runs next under a backlog.
//!
//! The foreign lists are not under the queue's hash tag: intake needs them
//! on the same Redis (not a Redis Cluster) as the queue.

use hopper_shared::QueueName;
use uuid::Uuid;

use crate::{Priority, QueueClient, QueueError, scripts::SCRIPTS};

/// What to move, and into which queue.
#[derive(Debug, Clone)]
pub struct IntakeFrom<'a> {
    /// The source's name, put into each job's arguments (the Celery queue).
    pub source: &'a str,
    /// The lists' keys, most urgent first.
    pub lists: &'a [String],
    /// Most messages to move in this call.
    pub room: usize,
    /// Move nothing while the queue holds this many pending jobs.
    pub lookahead: usize,
    /// The jobs' tenant.
    pub tenant: &'a str,
}

impl QueueClient {
    /// Moves up to `from.room` messages from `from.lists` into new jobs of
    /// `queue` (see the module docs). Answers how many moved, or `None` when
    /// the queue holds its lookahead already (nothing moved).
    pub async fn intake(
        &self,
        queue: &QueueName,
        from: &IntakeFrom<'_>,
    ) -> Result<Option<usize>, QueueError> {
        let keys = self.keys(queue);
        let ids: Vec<Uuid> = (0..from.room).map(|_| Uuid::now_v7()).collect();
        let mut inv = SCRIPTS.intake.prepare_invoke();
        inv.key(keys.pending(Priority::Normal))
            .key(keys.wake())
            .key(keys.tenant_load());
        for list in from.lists {
            inv.key(list);
        }
        for id in &ids {
            inv.key(keys.job(id));
        }
        inv.arg(from.lists.len())
            .arg(from.lookahead)
            .arg(queue.as_str())
            .arg(self.settings(queue).max_attempts)
            .arg(from.tenant)
            .arg(crate::client::WAKE_CAP)
            .arg(from.source);
        for id in &ids {
            inv.arg(id.to_string());
        }
        let moved: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok((moved >= 0).then_some(moved as usize))
    }
}
