//! The scheduler loop: fires due schedule ticks, in every API and worker
//! process (and, every few seconds, finishes what dead workflow movers left:
//! [`crate::workflow`]).
//!
//! There is no leader: each process runs this loop, and `fire.lua` lets
//! exactly one of them handle each tick ([`crate::schedule`]). A dead
//! scheduler is simply one racer fewer. The loop sleeps until the earliest
//! next tick it saw, at most [`MAX_SLEEP`] (a schedule created or resumed
//! meanwhile is noticed within that), and backs off (capped) while Redis
//! is unreachable. Its notion of now is Redis' clock (re-measured every
//! [`CLOCK_SYNC`]), like every time the queue keeps.

use std::time::Duration;

use hopper_shared::retry_policy::{self, Pauses};
use tokio_util::sync::CancellationToken;

use crate::QueueClient;

/// The longest sleep between two looks at the schedules.
pub const MAX_SLEEP: Duration = Duration::from_millis(250);
const MIN_SLEEP: Duration = Duration::from_millis(2);
/// How often the loop measures Redis' clock against its own again.
pub const CLOCK_SYNC: Duration = Duration::from_secs(30);
/// How often the loop looks for workflows a dead mover left
/// ([`QueueClient::repair_stalled_workflows`]).
pub const WORKFLOW_REPAIR: Duration = Duration::from_secs(5);

/// Runs the scheduler loop until `stop` fires.
pub async fn run_scheduler(client: QueueClient, stop: CancellationToken) {
    let mut backoff = Pauses::new(retry_policy::redis_reconnect());
    let mut synced = tokio::time::Instant::now();
    let mut repaired = tokio::time::Instant::now();
    while !stop.is_cancelled() {
        if repaired.elapsed() >= WORKFLOW_REPAIR {
            repaired = tokio::time::Instant::now();
            if let Err(e) = client.repair_stalled_workflows().await {
                tracing::warn!("scheduler: cannot repair stalled workflows: {e}");
            }
        }
        if synced.elapsed() >= CLOCK_SYNC {
            synced = tokio::time::Instant::now();
            if let Err(e) = client.sync_clock().await {
                tracing::warn!("scheduler: cannot read Redis' clock: {e}");
            }
        }
        let sleep = match client.fire_due_schedules().await {
            Ok(round) => {
                backoff.reset();
                match round.next_due_ms {
                    Some(at) => {
                        let wait = (at - client.redis_now_ms()).max(0) as u64;
                        Duration::from_millis(wait).clamp(MIN_SLEEP, MAX_SLEEP)
                    }
                    None => MAX_SLEEP,
                }
            }
            Err(e) => {
                let wait = backoff.next_pause();
                tracing::warn!("scheduler: cannot read the schedules, retrying in {wait:?}: {e}");
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Starts [`run_scheduler`] on the runtime; it stops when `stop` fires.
pub fn spawn_scheduler(client: QueueClient, stop: CancellationToken) {
    tokio::spawn(run_scheduler(client, stop));
}
