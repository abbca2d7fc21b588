//! Postgres access: the connection pool, migrations and the job-record store.
//!
//! Every connection's `search_path` is set to the configured schema (then
//! `public`, where the `vector` extension lives), so tests run side by side
//! in schemas of their own. Migrations are the SQL files in `migrations/`,
//! embedded at build time and applied by [`migrate`] under an advisory lock,
//! so the API and `hopper migrate` may race safely.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::{NoTls, config::SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{
    Config, Error, Result,
    config::{DbTimeouts, is_identifier},
    jobs::{JobRecord, JobState, strip_nul},
    queue_name::QueueName,
};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Advisory-lock key serialising migrations across processes.
const MIGRATION_LOCK: i64 = 0x4f50_5045_5221; // "HOPPER" -ish

/// Builds a pool whose connections use the configured schema.
///
/// Building does not connect; call [`ping`] to check reachability.
pub fn pool(config: &Config, max_size: usize) -> Result<Pool> {
    pool_for(
        &config.database_url,
        &config.db_schema,
        max_size,
        config.db_timeouts,
        &config.pg_tls,
    )
}

/// Builds a pool for `url` whose connections use `schema`, within
/// `timeouts`: waiting for, opening and recycling a connection each fail
/// after `timeouts.pool`, and every statement after `timeouts.statement`.
/// Over TLS only (rustls, checking the server's certificate and name) when
/// `tls` names a file or the URL says `sslmode=require`; in the clear
/// otherwise.
pub fn pool_for(
    url: &str,
    schema: &str,
    max_size: usize,
    timeouts: DbTimeouts,
    tls: &crate::tls::TlsFiles,
) -> Result<Pool> {
    if !is_identifier(schema) {
        return Err(Error::Config(vec![format!(
            "HOPPER_DB_SCHEMA={schema:?} is not a plain identifier"
        )]));
    }
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Config(vec![format!("DATABASE_URL: {e}")]))?;
    // hnsw.iterative_scan: a filtered nearest-vector search (a tenant, a
    // set) scans pgvector's index on until it has its rows; hnsw.ef_search:
    // its candidate list (documents.rs, HNSW_EF_SEARCH_DEFAULT).
    pg.options(format!(
        "-c search_path={schema},public -c client_min_messages=warning \
         -c hnsw.iterative_scan=relaxed_order -c hnsw.ef_search={} -c statement_timeout={}",
        crate::documents::HNSW_EF_SEARCH_DEFAULT,
        timeouts.statement.as_millis()
    ));
    pg.connect_timeout(timeouts.pool);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = if !tls.is_empty() || pg.get_ssl_mode() == SslMode::Require {
        pg.ssl_mode(SslMode::Require);
        let client = tls
            .client_config()
            .map_err(|e| Error::Config(vec![format!("Postgres TLS (HOPPER_PG_TLS_*): {e}")]))?;
        Manager::from_config(pg, MakeRustlsConnect::new(client), manager_config)
    } else {
        Manager::from_config(pg, NoTls, manager_config)
    };
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(timeouts.pool),
            create: Some(timeouts.pool),
            recycle: Some(timeouts.pool),
        })
        .build()?)
}

/// Checks that Postgres answers.
pub async fn ping(pool: &Pool) -> Result<()> {
    pool.get().await?.simple_query("SELECT 1").await?;
    Ok(())
}

/// Creates the schema if needed and applies pending migrations.
///
/// Returns the versions applied by this call.
pub async fn migrate(pool: &Pool, schema: &str) -> Result<Vec<i32>> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let outcome = async {
        client
            .batch_execute(&format!(
                "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public; \
                 CREATE SCHEMA IF NOT EXISTS {schema};"
            ))
            .await?;
        let report = embedded::migrations::runner()
            .set_migration_table_name("hopper_migrations")
            .run_async(&mut **client)
            .await?;
        Ok::<_, Error>(
            report
                .applied_migrations()
                .iter()
                .map(|m| m.version())
                .collect(),
        )
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    outcome
}

/// Inserts or replaces the record of a job (keyed by its id).
pub async fn upsert_job_record(pool: &Pool, job: &JobRecord) -> Result<()> {
    upsert_job_records(pool, std::slice::from_ref(job)).await
}

/// Inserts or replaces many job records in one statement (one round trip,
/// one commit). When a batch holds the same id twice, the last one wins.
/// Fenced: a stored record is replaced only by one of the same or a later
/// claim (`lease`), so a stale attempt never overwrites its successor's.
/// A job submitted with its own retention (a `job_retention` row, see
/// [`crate::retention`]) that succeeded or was cancelled gets `keep_until`:
/// its finish plus that retention, when the sweep deletes it. The row is read
/// by `job_own_retention_ms` (V13), not a join, so the prepared statement
/// keeps one generic plan instead of being planned on every write.
#[tracing::instrument(name = "postgres", skip_all, fields(
    otel.name = "postgres upsert job_records",
    otel.kind = "client",
    db.system = "postgresql",
    db.operation = "INSERT",
    records = jobs.len(),
))]
pub async fn upsert_job_records(pool: &Pool, jobs: &[JobRecord]) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(jobs.len());
    let unique: Vec<&JobRecord> = jobs.iter().rev().filter(|j| seen.insert(j.id)).collect();
    if unique.is_empty() {
        return Ok(());
    }
    let col =
        |f: &dyn Fn(&JobRecord) -> Option<f64>| unique.iter().map(|j| f(j)).collect::<Vec<_>>();
    let ids: Vec<uuid::Uuid> = unique.iter().map(|j| j.id).collect();
    let kinds: Vec<&str> = unique.iter().map(|j| j.kind.as_str()).collect();
    let states: Vec<&str> = unique.iter().map(|j| j.state.as_str()).collect();
    let attempts: Vec<i32> = unique.iter().map(|j| j.attempts as i32).collect();
    let max_attempts: Vec<i32> = unique.iter().map(|j| j.max_attempts as i32).collect();
    // Postgres cannot store NUL in jsonb or text: a result or error holding
    // one must not keep its job from ever being recorded.
    let args: Vec<serde_json::Value> = unique.iter().map(|j| strip_nul(&j.args)).collect();
    let results: Vec<Option<serde_json::Value>> = unique
        .iter()
        .map(|j| j.result.as_ref().map(strip_nul))
        .collect();
    let errors: Vec<Option<String>> = unique
        .iter()
        .map(|j| j.error.as_ref().map(|e| e.replace('\0', "")))
        .collect();
    let workers: Vec<Option<&str>> = unique.iter().map(|j| j.worker.as_deref()).collect();
    let enqueued = col(&|j| Some(j.enqueued_at_ms as f64));
    let started = col(&|j| j.started_at_ms.map(|v| v as f64));
    let finished = col(&|j| j.finished_at_ms.map(|v| v as f64));
    let priorities: Vec<Option<&str>> = unique.iter().map(|j| j.priority.as_deref()).collect();
    let tenants: Vec<&str> = unique.iter().map(|j| j.tenant.as_str()).collect();
    let leases: Vec<i64> = unique.iter().map(|j| j.lease as i64).collect();
    let histories = unique
        .iter()
        .map(|j| serde_json::to_value(&j.history))
        .collect::<Result<Vec<_>, _>>()?;
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO job_records (id, kind, state, attempts, max_attempts, args, result, \
                 error, worker, enqueued_at, started_at, finished_at, priority, history, \
                 tenant, lease, keep_until) \
             SELECT id, kind, state, attempts, max_attempts, args, result, error, worker, \
                 to_timestamp(enq / 1000), to_timestamp(st / 1000), to_timestamp(fin / 1000), \
                 priority, history, tenant, lease, \
                 CASE WHEN state IN ('succeeded', 'cancelled') THEN to_timestamp(fin / 1000) \
                     + job_own_retention_ms(t.id) * interval '1 millisecond' END \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::int4[], \
                 $6::jsonb[], $7::jsonb[], $8::text[], $9::text[], $10::float8[], \
                 $11::float8[], $12::float8[], $13::text[], $14::jsonb[], $15::text[], \
                 $16::int8[]) \
                 AS t(id, kind, state, attempts, max_attempts, args, result, error, worker, \
                      enq, st, fin, priority, history, tenant, lease) \
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, \
                 attempts = EXCLUDED.attempts, result = EXCLUDED.result, \
                 error = EXCLUDED.error, worker = EXCLUDED.worker, \
                 started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, \
                 history = EXCLUDED.history, lease = EXCLUDED.lease, \
                 keep_until = EXCLUDED.keep_until, updated_at = now() \
             WHERE job_records.lease <= EXCLUDED.lease",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &ids,
                &kinds,
                &states,
                &attempts,
                &max_attempts,
                &args,
                &results,
                &errors,
                &workers,
                &enqueued,
                &started,
                &finished,
                &priorities,
                &histories,
                &tenants,
                &leases,
            ],
        )
        .await?;
    Ok(())
}

/// The columns [`record_from_row`] reads, in its order.
const RECORD_COLUMNS: &str = "id, kind, state, attempts, max_attempts, args, result, error, worker, \
     (extract(epoch FROM enqueued_at) * 1000)::int8, \
     (extract(epoch FROM started_at) * 1000)::int8, \
     (extract(epoch FROM finished_at) * 1000)::int8, priority, history, tenant, lease";

/// Reads a job's stored record, if it has one.
pub async fn job_record(pool: &Pool, id: uuid::Uuid) -> Result<Option<JobRecord>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {RECORD_COLUMNS} FROM job_records WHERE id = $1"),
            &[&id],
        )
        .await?;
    row.map(|r| record_from_row(&r)).transpose()
}

/// The newest `limit` finished-job records of `tenant`, optionally of one
/// kind and one state, most recently finished first.
pub async fn list_job_records(
    pool: &Pool,
    tenant: &str,
    kind: Option<&QueueName>,
    state: Option<JobState>,
    limit: usize,
) -> Result<Vec<JobRecord>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM job_records \
                 WHERE tenant = $4 AND ($1::text IS NULL OR kind = $1) \
                 AND ($2::text IS NULL OR state = $2) \
                 ORDER BY finished_at DESC NULLS LAST LIMIT $3"
            ),
            &[
                &kind.map(QueueName::as_str),
                &state.map(|s| s.as_str()),
                &(limit as i64),
                &tenant,
            ],
        )
        .await?;
    rows.iter().map(record_from_row).collect()
}

fn record_from_row(row: &tokio_postgres::Row) -> Result<JobRecord> {
    let kind: String = row.get(1);
    let state: String = row.get(2);
    Ok(JobRecord {
        id: row.get(0),
        kind: QueueName::try_from(kind).map_err(corrupt)?,
        state: state.parse::<JobState>().map_err(corrupt)?,
        attempts: row.get::<_, i32>(3) as u32,
        max_attempts: row.get::<_, i32>(4) as u32,
        args: row.get(5),
        result: row.get(6),
        error: row.get(7),
        worker: row.get(8),
        enqueued_at_ms: row.get(9),
        started_at_ms: row.get(10),
        finished_at_ms: row.get(11),
        priority: row.get(12),
        run_at_ms: None,
        request_id: None,
        history: serde_json::from_value(row.get(13))?,
        tenant: row.get(14),
        callback_url: None,
        lease: row.get::<_, i64>(15) as u64,
        progress: None,
        notify: None,
    })
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Json(serde::de::Error::custom(format!("corrupt job record: {e}")))
}
