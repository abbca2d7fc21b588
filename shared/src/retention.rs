//! How long finished work is kept, and the Postgres half of enforcing it.
//!
//! Nothing Hopper stores may grow without bound. Redis forgets finished jobs
//! on its own clock (`queue/lua/trim.lua`, run by every worker's rescuer:
//! succeeded and cancelled jobs after their queue's retention, dead letters
//! after [`RetentionSettings::dead_letters`]). Postgres keeps job records and
//! stored embed vectors longer; [`sweep`] deletes those older than their
//! retention, in batches of [`RetentionSettings::batch`] rows so no statement
//! is long and no lock is held for long. The API runs it every
//! [`RetentionSettings::sweep_every`] (`api/src/retention.rs`); several
//! replicas may run it at once: each batch skips rows another one has locked
//! (`FOR UPDATE SKIP LOCKED`) and deleting is idempotent. Indexes on
//! `job_records (finished_at)` and `embed_results (created_at)` (migration
//! V8) make each batch an index range scan.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::error::Result;

/// One day.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// Retention of finished work (`HOPPER_*_RETENTION_*`). A zero duration
/// keeps that kind of data for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Dead letters (Redis: the dead set and the jobs' hashes) are forgotten
    /// this long after they died (`HOPPER_DEAD_RETENTION_MS`, default 30
    /// days). Their Postgres records stay, under [`Self::job_records`].
    pub dead_letters: Duration,
    /// Job records are deleted this long after their job finished
    /// (`HOPPER_RECORD_RETENTION_DAYS`, default 30).
    pub job_records: Duration,
    /// Stored vectors of large `embed` jobs are deleted this long after they
    /// were written (`HOPPER_EMBED_RESULT_RETENTION_DAYS`, default 7).
    pub embed_results: Duration,
    /// How often the API sweeps Postgres (`HOPPER_RETENTION_SWEEP_MS`,
    /// default 60 s).
    pub sweep_every: Duration,
    /// Rows deleted per statement (`HOPPER_RETENTION_BATCH`, default 5,000).
    pub batch: u32,
    /// Start latencies the `noop` benchmark jobs keep in Redis, newest
    /// (`HOPPER_NOOP_LATENCIES_KEEP`, default 100,000).
    pub noop_latencies: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            dead_letters: 30 * DAY,
            job_records: 30 * DAY,
            embed_results: 7 * DAY,
            sweep_every: Duration::from_secs(60),
            batch: 5_000,
            noop_latencies: 100_000,
        }
    }
}

/// What one [`sweep`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Job records deleted.
    pub job_records: u64,
    /// Stored embed results deleted.
    pub embed_results: u64,
    /// Statements run (each deletes at most one batch).
    pub batches: u64,
}

/// One batch of old job records: `$1` the retention in ms, `$2` the batch size.
const DELETE_JOB_RECORDS: &str = "DELETE FROM job_records WHERE id IN (SELECT id FROM job_records \
     WHERE finished_at < now() - $1::int8 * interval '1 millisecond' \
     LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// One batch of old embed results: `$1` the retention in ms, `$2` the batch size.
const DELETE_EMBED_RESULTS: &str = "DELETE FROM embed_results WHERE job_id IN (SELECT job_id \
     FROM embed_results WHERE created_at < now() - $1::int8 * interval '1 millisecond' \
     LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// Deletes the job records and embed results older than their retention,
/// one batch per statement until a batch comes back short.
pub async fn sweep(pool: &Pool, settings: &RetentionSettings) -> Result<Swept> {
    let mut swept = Swept::default();
    swept.job_records = expire(
        pool,
        DELETE_JOB_RECORDS,
        settings.job_records,
        settings.batch,
        &mut swept.batches,
    )
    .await?;
    swept.embed_results = expire(
        pool,
        DELETE_EMBED_RESULTS,
        settings.embed_results,
        settings.batch,
        &mut swept.batches,
    )
    .await?;
    Ok(swept)
}

/// Runs `delete` (one batch) until a batch comes back short; returns the
/// rows deleted and counts the statements in `batches`. Nothing when
/// `retention` is zero (kept for ever).
async fn expire(
    pool: &Pool,
    delete: &str,
    retention: Duration,
    batch: u32,
    batches: &mut u64,
) -> Result<u64> {
    if retention.is_zero() {
        return Ok(0);
    }
    let client = pool.get().await?;
    let statement = client.prepare_cached(delete).await?;
    let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
    let batch = i64::from(batch.max(1));
    let mut total = 0;
    loop {
        let n = client.execute(&statement, &[&retention_ms, &batch]).await?;
        *batches += 1;
        total += n;
        if n < batch as u64 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Error};

    fn load(vars: &[(&str, &str)]) -> Result<Config> {
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_keep_a_month_of_records_and_a_week_of_vectors() {
        let r = load(&[]).unwrap().retention;
        assert_eq!(r, RetentionSettings::default());
        assert_eq!(r.dead_letters, 30 * DAY);
        assert_eq!(r.job_records, 30 * DAY);
        assert_eq!(r.embed_results, 7 * DAY);
    }

    #[test]
    fn settings_come_from_the_environment_and_are_checked() {
        let r = load(&[
            ("HOPPER_DEAD_RETENTION_MS", "5000"),
            ("HOPPER_RECORD_RETENTION_DAYS", "0"),
            ("HOPPER_EMBED_RESULT_RETENTION_DAYS", "2"),
            ("HOPPER_RETENTION_BATCH", "10"),
        ])
        .unwrap()
        .retention;
        assert_eq!(r.dead_letters, Duration::from_secs(5));
        assert!(r.job_records.is_zero(), "0 keeps records for ever");
        assert_eq!(r.embed_results, 2 * DAY);
        assert_eq!(r.batch, 10);
        let Err(Error::Config(problems)) = load(&[
            ("HOPPER_RETENTION_BATCH", "0"),
            ("HOPPER_RECORD_RETENTION_DAYS", "100000"),
            ("HOPPER_NOOP_LATENCIES_KEEP", "-1"),
        ]) else {
            panic!("expected a config error");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
