//! What the intake pump and the results loop do when there is nothing to
//! do: wait for a list to hold an element without taking it (on a
//! dedicated connection, made again after an error), or pause.

use std::time::Duration;

use hopper_queue::RedisConn;
use hopper_queue::{ListEnd, QueueClient, QueueError};
use tokio_util::sync::CancellationToken;

/// A loop's idle wait on lists.
#[derive(Default)]
pub(crate) struct IdleWait {
    conn: Option<RedisConn>,
}

impl IdleWait {
    /// Waits until the list `key` holds an element at `end`, at most `wait`,
    /// or until `stop` fires. `Err` only when no connection could be made
    /// (the caller pauses); a failed wait drops the connection and answers
    /// `Ok` (the caller simply looks again).
    pub async fn until_element(
        &mut self,
        client: &QueueClient,
        key: &str,
        end: ListEnd,
        wait: Duration,
        stop: &CancellationToken,
    ) -> Result<(), QueueError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(client.dedicated_connection(wait).await?),
        };
        tokio::select! {
            r = QueueClient::wait_for_element(conn, key, end, wait) => if r.is_err() { self.conn = None },
            _ = stop.cancelled() => {}
        }
        Ok(())
    }

    /// Forgets the connection (after an error elsewhere).
    pub fn reset(&mut self) {
        self.conn = None;
    }
}

/// Sleeps `d`, or until `stop` fires.
pub(crate) async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}
