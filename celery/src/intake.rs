//! The intake pump: moves Celery messages from kombu's lists into jobs of
//! the internal task `celery.intake`, atomically (`QueueClient::intake`,
//! one script per batch), the most urgent sub-list first.
//!
//! Each configured kombu queue `q` has four lists (kombu's priority steps
//! 0, 3, 6, 9: `q`, `q\x06\x163`, …). The pump moves up to [`BATCH`]
//! messages per queue per round. With nothing to move it waits on the
//! queue's bare list with `BLMOVE q q RIGHT RIGHT` — which blocks until a
//! message arrives and then puts it back where it was (a rotation of one
//! element onto the same end), so waiting takes nothing out of the list —
//! for at most [`IDLE_WAIT`] (the other sub-lists are looked at after it).
//! While `celery.intake` holds the configured lookahead the pump pauses, so
//! kombu's order of urgency decides under a backlog.
//!
//! Any number of pumps may run (one per worker with the bridge on): each
//! message moves once. Redis errors pause the pump with a capped backoff;
//! nothing is lost meanwhile (the messages stay in kombu's lists).

use std::{sync::Arc, time::Duration};

use hopper_queue::{IntakeFrom, QueueClient};
use tokio_util::sync::CancellationToken;

use crate::{INTAKE_TASK, config::CeleryConfig};

/// Most messages moved per queue per round.
pub const BATCH: usize = 256;
/// Longest wait on an idle queue's bare list.
pub const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Pause while `celery.intake` is at its lookahead.
const FULL_PAUSE: Duration = Duration::from_millis(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs the pump until `stop` fires.
pub async fn run_pump(client: QueueClient, config: Arc<CeleryConfig>, stop: CancellationToken) {
    let lists: Vec<(String, Vec<String>)> = config
        .queues
        .iter()
        .map(|q| (q.clone(), config.sublists(q).to_vec()))
        .collect();
    tracing::info!(queues = ?config.queues, lookahead = config.lookahead, "Celery intake started");
    let mut waiter = None;
    let mut backoff = BACKOFF_MIN;
    let mut turn = 0usize;
    while !stop.is_cancelled() {
        let mut moved = 0;
        let mut full = false;
        let mut failed = None;
        for (queue, sublists) in &lists {
            let from = IntakeFrom {
                source: queue,
                lists: sublists,
                room: BATCH,
                lookahead: config.lookahead,
                tenant: &config.tenant,
            };
            match client.intake(&INTAKE_TASK, &from).await {
                Ok(Some(n)) => moved += n,
                Ok(None) => full = true,
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            tracing::warn!("Celery intake failed, retrying in {backoff:?}: {e}");
            pause(&stop, backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            waiter = None;
            continue;
        }
        backoff = BACKOFF_MIN;
        if moved > 0 {
            metrics::counter!(hopper_shared::metrics::CELERY_MESSAGES_TAKEN)
                .increment(moved as u64);
            continue;
        }
        if full {
            pause(&stop, FULL_PAUSE).await;
            continue;
        }
        // Nothing waits: block on one queue's bare list (in turn) until a
        // message arrives there, or for IDLE_WAIT.
        let conn = match &mut waiter {
            Some(c) => c,
            None => match client.dedicated_connection(IDLE_WAIT).await {
                Ok(c) => waiter.insert(c),
                Err(e) => {
                    tracing::warn!("Celery intake cannot connect, retrying in {backoff:?}: {e}");
                    pause(&stop, backoff).await;
                    continue;
                }
            },
        };
        let bare = &lists[turn % lists.len()].1[0];
        turn = turn.wrapping_add(1);
        let mut blmove = redis::cmd("BLMOVE");
        blmove
            .arg(bare)
            .arg(bare)
            .arg("RIGHT")
            .arg("RIGHT")
            .arg(IDLE_WAIT.as_secs_f64());
        let wait = blmove.query_async::<Option<redis::Value>>(conn);
        tokio::select! {
            r = wait => if r.is_err() { waiter = None },
            _ = stop.cancelled() => {}
        }
    }
    tracing::info!("Celery intake stopped");
}

async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}
