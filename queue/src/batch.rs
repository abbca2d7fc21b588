//! Group commit: many concurrent callers, one write per batch.
//!
//! A [`GroupCommit`] runs one task that takes whatever requests are waiting
//! (up to a maximum), writes them with one call, and answers every caller
//! with that call's outcome. While a write is in flight new requests queue
//! up and form the next batch, so batches grow with load and a lone request
//! waits for nothing. The acknowledgement path uses two: job records into
//! Postgres, then acks into Redis.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

type Request<T> = (T, oneshot::Sender<Result<(), String>>);

/// Handle on a group-commit task; cheap to clone.
pub(crate) struct GroupCommit<T> {
    tx: mpsc::Sender<Request<T>>,
}

impl<T> Clone for GroupCommit<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the task; `write` persists one batch (retrying as it sees
    /// fit). The task ends when every handle is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, mut write: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Request<T>>(max_batch * 4);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = vec![first.0];
                let mut waiters = vec![first.1];
                while items.len() < max_batch {
                    match rx.try_recv() {
                        Ok((item, waiter)) => {
                            items.push(item);
                            waiters.push(waiter);
                        }
                        Err(_) => break,
                    }
                }
                let outcome = write(items).await;
                for w in waiters {
                    let _ = w.send(outcome.clone());
                }
            }
        });
        Self { tx }
    }

    /// Queues `item` and waits until the batch holding it is written.
    pub async fn submit(&self, item: T) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((item, tx))
            .await
            .map_err(|_| "group commit task ended".to_owned())?;
        rx.await.map_err(|_| "group commit task ended".to_owned())?
    }
}
