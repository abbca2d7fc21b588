//! The Postgres retention sweep, scheduled by the API.
//!
//! Every `HOPPER_RETENTION_SWEEP_MS` each API replica deletes the job records
//! and stored embed results older than their retention (a record whose job
//! had its own retention, `?retention_ms=`, after that)
//! ([`hopper_shared::retention::sweep`]: batched, index-backed, safe to run
//! on several replicas at once). The API runs it because an API always runs
//! wherever Hopper does, and it already owns periodic bookkeeping (the depth
//! sampler); workers keep the Redis side (`trim.lua` in their rescuers).
//! It also drops a re-embedded document set's previous model's vectors once
//! their grace period is over (`document_sets::drop_expired_vectors`).
//! What was removed is counted in `hopper_retention_removed_total{store}`.

use deadpool_postgres::Pool;
use hopper_shared::{
    metrics as m,
    retention::{RetentionSettings, sweep},
};

/// Sweeps Postgres every `settings.sweep_every` until the process ends. A
/// failed sweep (Postgres away) is logged and retried at the next tick.
/// It runs even when records and vectors are kept for ever: a job's own
/// retention (`?retention_ms=`) still ends its record.
pub fn spawn_sweeper(pool: Pool, settings: RetentionSettings) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep(&pool, &settings).await {
                Ok(swept) => {
                    for (store, n) in [
                        ("job_records", swept.job_records),
                        ("embed_results", swept.embed_results),
                    ] {
                        metrics::counter!(m::RETENTION_REMOVED, "store" => store).increment(n);
                    }
                    if swept.job_records + swept.embed_results > 0 {
                        tracing::info!(
                            job_records = swept.job_records,
                            embed_results = swept.embed_results,
                            batches = swept.batches,
                            "retention: deleted finished work past its retention"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; retrying next tick"),
            }
            match hopper_shared::document_sets::drop_expired_vectors(&pool).await {
                Ok(sets) => {
                    metrics::counter!(m::RETENTION_REMOVED, "store" => "previous_model_vectors")
                        .increment(sets);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dropping re-embedded sets' old vectors failed")
                }
            }
        }
    });
}
