//! The heartbeat: renews a worker's lease on one queue and passes
//! cancellation requests to the jobs running there.
//!
//! It runs in a task of its own and does nothing else, so it is never queued
//! behind recovery, Postgres writes or record persistence (those are the
//! rescuer's, [`crate::rescuer`]). A lease only runs out when the worker
//! really stopped. It also re-measures Redis' clock now and then (only keys
//! named by time use that estimate; every time that matters is Redis' own).

use std::{sync::Arc, time::Duration};

use hopper_shared::{QueueName, metrics as m};
use tokio_util::sync::CancellationToken;

use crate::{QueueClient, job::Running, registration::Registration};

/// Heartbeats between two measurements of Redis' clock.
const CLOCK_SYNC_EVERY: u32 = 15;

/// Renews the lease every `interval` until `stop` fires.
pub(crate) async fn heartbeat_loop(
    client: QueueClient,
    queue: QueueName,
    registration: Arc<Registration>,
    interval: Duration,
    running: Arc<Running>,
    stop: CancellationToken,
) {
    let queue = &queue;
    let mut beats = 0u32;
    loop {
        // First a pause: the backend registers the worker as it starts, and a
        // renewal racing that registration would find no registration and
        // count the worker evicted.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let outcome = match registration.renew().await {
            Ok(true) => "ok",
            Ok(false) => "evicted",
            Err(e) => {
                tracing::warn!(queue = %queue, "heartbeat failed: {e}");
                "failed"
            }
        };
        metrics::counter!(m::WORKER_HEARTBEATS, "queue" => queue.label(), "outcome" => outcome)
            .increment(1);
        match client.cancel_requests(queue).await {
            Ok(ids) if !ids.is_empty() => {
                let n = running.cancel(&ids);
                if n > 0 {
                    tracing::info!(queue = %queue, "cancelling {n} running job(s) on request");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(queue = %queue, "reading cancel requests failed: {e}"),
        }
        beats = beats.wrapping_add(1);
        if beats.is_multiple_of(CLOCK_SYNC_EVERY)
            && let Err(e) = client.sync_clock().await
        {
            tracing::warn!(queue = %queue, "measuring Redis' clock failed: {e}");
        }
    }
}
