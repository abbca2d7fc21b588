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
//!
//! A job may have its own retention (`POST /v1/jobs/{task}?retention_ms=`),
//! replacing its queue's in Redis and the record retention in Postgres for
//! a job that succeeds or is cancelled (a dead job keeps the dead-letter and
//! record retentions). The API writes it with [`keep_jobs_for`] before it
//! queues the job; the record upsert (`crate::db::upsert_job_records`)
//! turns it into the record's `keep_until`, and [`sweep`] deletes such a
//! record at its `keep_until` (indexed, migration V10), whatever the record
//! retention, even when that is zero (kept for ever).

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
    /// A document set's previous model's vectors are kept this long after a
    /// re-embed switched it (`HOPPER_REEMBED_GRACE_MS`, default 1 hour; at
    /// most 30 days), then the sweep drops them.
    pub reembed_grace: Duration,
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
            reembed_grace: Duration::from_secs(3600),
        }
    }
}

/// A `job_retention` row whose job never got a record (it was purged, or
/// its submission answered another job) goes this long after it was
/// written: past the longest delay (a year) and then some.
pub const ORPHAN_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// What one [`sweep`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Job records deleted (past the record retention, or past their job's
    /// own).
    pub job_records: u64,
    /// Stored embed results deleted.
    pub embed_results: u64,
    /// Statements run (each deletes at most one batch).
    pub batches: u64,
}

/// One batch of old job records without a retention of their own (with
/// the `job_retention` rows of dead jobs that had one): `$1` the record
/// retention in ms, `$2` the batch size. Each statement answers its count.
const DELETE_JOB_RECORDS: &str = "WITH gone AS (DELETE FROM job_records WHERE id IN \
     (SELECT id FROM job_records WHERE finished_at < now() - $1::int8 * interval '1 millisecond' \
     AND keep_until IS NULL LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id), \
     own AS (DELETE FROM job_retention WHERE job_id IN (SELECT id FROM gone)) \
     SELECT count(*) FROM gone";

/// One batch of job records past their job's own retention (`keep_until`),
/// with their `job_retention` rows: `$1` the batch size.
const DELETE_KEPT_RECORDS: &str = "WITH gone AS (DELETE FROM job_records WHERE id IN \
     (SELECT id FROM job_records WHERE keep_until < now() LIMIT $1 FOR UPDATE SKIP LOCKED) \
     RETURNING id), own AS (DELETE FROM job_retention WHERE job_id IN (SELECT id FROM gone)) \
     SELECT count(*) FROM gone";

/// One batch of `job_retention` rows older than `$1` ms whose job has no
/// record (see [`ORPHAN_RETENTION`]): `$2` the batch size.
const DELETE_ORPHAN_RETENTIONS: &str = "WITH gone AS (DELETE FROM job_retention WHERE job_id IN \
     (SELECT job_id FROM job_retention k \
     WHERE created_at < now() - $1::int8 * interval '1 millisecond' \
     AND NOT EXISTS (SELECT 1 FROM job_records r WHERE r.id = k.job_id) \
     LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING job_id) SELECT count(*) FROM gone";

/// One batch of old embed results: `$1` the retention in ms, `$2` the batch size.
const DELETE_EMBED_RESULTS: &str = "WITH gone AS (DELETE FROM embed_results WHERE job_id IN \
     (SELECT job_id FROM embed_results \
     WHERE created_at < now() - $1::int8 * interval '1 millisecond' \
     LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING job_id) SELECT count(*) FROM gone";

/// Deletes the job records and embed results older than their retention,
/// the records past their job's own retention, and `job_retention` rows
/// left without a job; one batch per statement until a batch comes back
/// short. A zero retention keeps that kind for ever (a job's own retention
/// still applies).
pub async fn sweep(pool: &Pool, settings: &RetentionSettings) -> Result<Swept> {
    let client = pool.get().await?;
    let batch = i64::from(settings.batch.max(1));
    let mut swept = Swept::default();
    let n = &mut swept.batches;
    if !settings.job_records.is_zero() {
        let old = Some(settings.job_records);
        swept.job_records += in_batches(&client, DELETE_JOB_RECORDS, old, batch, n).await?;
    }
    swept.job_records += in_batches(&client, DELETE_KEPT_RECORDS, None, batch, n).await?;
    let orphans = Some(ORPHAN_RETENTION);
    in_batches(&client, DELETE_ORPHAN_RETENTIONS, orphans, batch, n).await?;
    if !settings.embed_results.is_zero() {
        let old = Some(settings.embed_results);
        swept.embed_results = in_batches(&client, DELETE_EMBED_RESULTS, old, batch, n).await?;
    }
    Ok(swept)
}

/// Runs `delete` (one batch of at most `batch` rows, answering its count;
/// after `retention` in ms when given) until a batch comes back short;
/// returns the rows deleted and counts the statements in `batches`.
async fn in_batches(
    client: &deadpool_postgres::Client,
    delete: &str,
    retention: Option<Duration>,
    batch: i64,
    batches: &mut u64,
) -> Result<u64> {
    let statement = client.prepare_cached(delete).await?;
    let retention_ms = retention.map(|r| r.as_millis().min(i64::MAX as u128) as i64);
    let mut total = 0;
    loop {
        let row = match &retention_ms {
            Some(ms) => client.query_one(&statement, &[ms, &batch]).await?,
            None => client.query_one(&statement, &[&batch]).await?,
        };
        let n = row.get::<_, i64>(0) as u64;
        *batches += 1;
        total += n;
        if n < batch as u64 {
            return Ok(total);
        }
    }
}

/// Records the own retention of the jobs `ids` (before they are queued):
/// once one succeeds or is cancelled, its record is kept for `retention`
/// after its finish, then deleted by [`sweep`]. Writing the same id again
/// changes nothing.
pub async fn keep_jobs_for(pool: &Pool, ids: &[uuid::Uuid], retention: Duration) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ms = retention.as_millis().clamp(1, i64::MAX as u128) as i64;
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO job_retention (job_id, retention_ms) SELECT unnest($1::uuid[]), $2 \
             ON CONFLICT (job_id) DO NOTHING",
        )
        .await?;
    client.execute(&statement, &[&ids, &ms]).await?;
    Ok(())
}

/// Forgets what [`keep_jobs_for`] wrote for `ids`: jobs that were never
/// queued (their submission answered another job).
pub async fn forget_kept_jobs(pool: &Pool, ids: &[uuid::Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("DELETE FROM job_retention WHERE job_id = ANY($1::uuid[])")
        .await?;
    client.execute(&statement, &[&ids]).await?;
    Ok(())
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
