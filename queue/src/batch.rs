//! Group commit: many concurrent callers, one write per batch.
//!
//! A [`GroupCommit`] runs one task that takes whatever requests are waiting
//! (up to a maximum), writes them with one call, and answers every caller
//! with that call's outcome. While a write is in flight new requests queue
//! up and form the next batch, so batches grow with load and a lone request
//! waits for nothing. Each caller gets its own item's answer (`R`: was the
//! record stored, was the ack taken) or the batch's error. The
//! acknowledgement path uses two: job records into Postgres, then acks into
//! Redis.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

type Request<T, R> = (T, oneshot::Sender<Result<R, String>>);

/// Handle on a group-commit task; cheap to clone.
pub(crate) struct GroupCommit<T, R = ()> {
    tx: mpsc::Sender<Request<T, R>>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts the task; `write` persists one batch (retrying as it sees
    /// fit) and answers each item in order. The task ends when every handle
    /// is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, mut write: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, String>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Request<T, R>>(max_batch * 4);
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
                match write(items).await {
                    Ok(answers) => {
                        for (w, a) in waiters.into_iter().zip(answers) {
                            let _ = w.send(Ok(a));
                        }
                    }
                    Err(e) => {
                        for w in waiters {
                            let _ = w.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues `item` and waits until the batch holding it is written.
    pub async fn submit(&self, item: T) -> Result<R, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((item, tx))
            .await
            .map_err(|_| "group commit task ended".to_owned())?;
        rx.await.map_err(|_| "group commit task ended".to_owned())?
    }
}
