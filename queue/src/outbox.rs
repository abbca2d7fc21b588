//! Outboxes: finished jobs' outcomes, told to whoever reads a name.
//!
//! A job submitted with a [`Notify`] has its outcome — `{"data": <the
//! notify's data>, "job": <its record>}` — appended to the outbox of
//! `notify.task` (`{p:<task>}:outbox`, a list) when it reaches a final state,
//! before Redis lets go of it, by every path that finishes a job (see
//! [`QueueClient::push_callbacks`]). The Celery bridge reads its outbox to
//! write Celery results.
//!
//! Delivery is at least once: a reader [`QueueClient::outbox_peek`]s the
//! oldest entries, handles them, then [`QueueClient::outbox_done`] removes
//! exactly those, still at the head (`outbox_done.lua`), so an entry leaves
//! only after it was handled; two readers may handle one entry twice, never
//! zero times. A job re-run after a crash between the append and its ack
//! appends its outcome again. Readers write idempotently.
//!
//! An entry costs one `RPUSH`, where a job per outcome (claim, ack, trim)
//! cost the Celery bridge a third of Redis' time per Celery task.
//!
//! [`Notify`]: hopper_shared::jobs::Notify

use std::time::Duration;

use crate::RedisConn;
use hopper_shared::QueueName;

use crate::{QueueClient, QueueError, scripts::SCRIPTS};

/// At most this many entries wait in one outbox; the oldest are dropped
/// beyond it (a reader that never comes must not fill Redis).
pub const OUTBOX_CAP: i64 = 1_000_000;

impl QueueClient {
    /// Appends `entry` (as JSON) to the outbox of `name`.
    pub async fn tell(
        &self,
        name: &QueueName,
        entry: &impl serde::Serialize,
    ) -> Result<(), QueueError> {
        let key = self.keys(name).outbox();
        redis::pipe()
            .cmd("RPUSH")
            .arg(&key)
            .arg(serde_json::to_string(entry)?)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(-OUTBOX_CAP)
            .arg(-1)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The oldest `n` entries of `name`'s outbox, oldest first (they stay).
    pub async fn outbox_peek(&self, name: &QueueName, n: usize) -> Result<Vec<String>, QueueError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys(name).outbox())
            .arg(0)
            .arg(n as i64 - 1)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(entries)
    }

    /// Removes `handled` (as [`Self::outbox_peek`] answered them) from the
    /// head of `name`'s outbox, as long as they are still there in that
    /// order. Answers how many were removed.
    pub async fn outbox_done(
        &self,
        name: &QueueName,
        handled: &[String],
    ) -> Result<usize, QueueError> {
        if handled.is_empty() {
            return Ok(0);
        }
        let mut inv = SCRIPTS.outbox_done.prepare_invoke();
        inv.key(self.keys(name).outbox());
        for e in handled {
            inv.arg(e);
        }
        let removed: usize = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(removed)
    }

    /// Waits (on `conn`, a dedicated connection) until `name`'s outbox holds
    /// an entry, at most `wait`; takes nothing (see
    /// [`QueueClient::wait_for_element`]).
    pub async fn outbox_wait(
        &self,
        conn: &mut RedisConn,
        name: &QueueName,
        wait: Duration,
    ) -> Result<(), QueueError> {
        Self::wait_for_element(conn, &self.keys(name).outbox(), ListEnd::Left, wait).await
    }

    /// Waits (on `conn`, a dedicated connection) until the list `key` holds
    /// an element, at most `wait`, taking nothing: `BLMOVE key key end end`
    /// blocks until an element arrives, then moves it from that end back to
    /// the same end.
    pub async fn wait_for_element(
        conn: &mut RedisConn,
        key: &str,
        end: ListEnd,
        wait: Duration,
    ) -> Result<(), QueueError> {
        let end = match end {
            ListEnd::Left => "LEFT",
            ListEnd::Right => "RIGHT",
        };
        redis::cmd("BLMOVE")
            .arg(key)
            .arg(key)
            .arg(end)
            .arg(end)
            .arg(wait.as_secs_f64())
            .query_async::<Option<redis::Value>>(conn)
            .await?;
        Ok(())
    }
}

/// An end of a Redis list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListEnd {
    /// The head (`LPUSH` adds there).
    Left,
    /// The tail (`RPUSH` adds there).
    Right,
}
