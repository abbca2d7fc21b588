//! The rescuer: who re-queues a dead worker's jobs, and a live worker's
//! strays.
//!
//! Every heartbeat interval it runs `recover.lua`, which re-queues the jobs
//! of workers whose lease ran out (on Redis' clock) or dead-letters those on
//! their last attempt; it writes the records of the dead-lettered ones to
//! Postgres and queues their callbacks. At least once per lease it also
//! reconciles its own worker's in-flight set with the jobs the worker really
//! holds (`reconcile.lua`): a claim whose reply was lost, or an ack that gave
//! up, would otherwise stay `running` for as long as the worker heartbeats.
//!
//! It runs apart from the heartbeat, so a slow Postgres never delays a
//! lease renewal.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use hopper_shared::{jobs::JobKind, metrics as m};
use tokio_util::sync::CancellationToken;

use crate::{QueueClient, ack::persist_record, job::Running, registration::Registration};

/// Runs recovery and reconciliation until `stop` fires.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rescuer_loop(
    client: QueueClient,
    kind: JobKind,
    registration: Arc<Registration>,
    interval: Duration,
    lease: Duration,
    pool: Option<Pool>,
    running: Arc<Running>,
    stop: CancellationToken,
) {
    let mut last_reconcile = Instant::now();
    loop {
        match client.recover(kind, lease).await {
            Ok(dead) => {
                for id in dead {
                    record_lost_job(&client, kind, pool.as_ref(), id).await;
                }
            }
            Err(e) => tracing::warn!(queue = %kind, "recovery failed: {e}"),
        }
        if last_reconcile.elapsed() >= lease / 2 {
            last_reconcile = Instant::now();
            let worker = registration.id();
            match client.reconcile(kind, &worker, &running.ids(), lease).await {
                Ok(strays) => {
                    for id in strays {
                        tracing::warn!(job = %id, queue = %kind, %worker,
                            "released a stray job: claimed by this worker but not running here");
                        metrics::counter!(m::JOBS_STRANDED, "queue" => kind.as_str()).increment(1);
                    }
                }
                Err(e) => tracing::warn!(queue = %kind, "reconciling in-flight jobs failed: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Writes the record of a job dead-lettered because its worker was lost on
/// its last attempt, and queues its callback.
async fn record_lost_job(client: &QueueClient, kind: JobKind, pool: Option<&Pool>, id: uuid::Uuid) {
    tracing::warn!(job = %id, queue = %kind, "dead-lettered: worker lost on last attempt");
    metrics::counter!(m::JOBS_DEAD_LETTERED, "kind" => kind.as_str(), "reason" => "worker_lost")
        .increment(1);
    let Some(pool) = pool else { return };
    let stored = match client.job(kind, id).await {
        Ok(Some(rec)) => match persist_record(pool, &rec).await {
            Ok(()) => client.push_webhook(&rec).await,
            Err(e) => Err(e),
        },
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        tracing::warn!(job = %id, "could not store dead job record: {e}");
    }
}
