//! Bounded growth (issue 13, item 12): delays are capped, cancelled jobs and
//! dead letters leave Redis after their retention, the noop latency list is
//! trimmed, and Postgres job records and embed results are deleted in batches
//! after theirs. Real API and worker binaries, real Redis and Postgres; ages
//! are made by back-dating stored stamps, never by waiting them out.

use std::time::Duration;

use hopper_queue::QueueKeys;
use hopper_shared::{jobs::JobKind, retention::RetentionSettings};
use hopper_tests::{TestEnv, until};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use uuid::Uuid;

/// One year, in ms: the longest delay a job may ask for.
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

async fn redis() -> MultiplexedConnection {
    redis::Client::open(hopper_tests::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn keys(env: &TestEnv, kind: JobKind) -> QueueKeys {
    QueueKeys::new(&env.env["HOPPER_KEY_PREFIX"], kind)
}

async fn submit(env: &TestEnv, path: &str, args: Value) -> String {
    let (s, b) = env.post(path, &args).await;
    assert_eq!(s, 202, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

async fn wait_running(env: &TestEnv, id: &str) {
    until("job running", Duration::from_secs(15), || async {
        env.get(&format!("/v1/jobs/{id}")).await.1["state"] == "running"
    })
    .await;
}

/// A test environment whose workers heartbeat every 100 ms under a 1 s
/// lease, plus `extra`.
fn fast_env(extra: &[(&str, &str)]) -> TestEnv {
    let mut vars = vec![("HOPPER_HEARTBEAT_MS", "100"), ("HOPPER_LEASE_MS", "1000")];
    vars.extend_from_slice(extra);
    TestEnv::new(&vars)
}

/// Whether the job hash `hash` is gone and `id` is no longer in `set`.
async fn forgotten(conn: &MultiplexedConnection, hash: &str, set: &str, id: &str) -> bool {
    let (exists, score): (bool, Option<f64>) = redis::pipe()
        .cmd("EXISTS")
        .arg(hash)
        .cmd("ZSCORE")
        .arg(set)
        .arg(id)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    !exists && score.is_none()
}

#[tokio::test]
async fn delays_over_a_year_are_refused_naming_delay_ms() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let body = json!({"message": "later"});
    for delay in [u64::MAX, YEAR_MS + 1] {
        let (s, b) = env
            .post(&format!("/v1/jobs/echo?delay_ms={delay}"), &body)
            .await;
        assert_eq!(s, 422, "delay_ms={delay}: {b}");
        assert_eq!(b["field"], "delay_ms", "{b}");
        let (s, b) = env
            .post(
                &format!("/v1/jobs/echo/batch?delay_ms={delay}"),
                &json!([body]),
            )
            .await;
        assert_eq!(s, 422, "batch delay_ms={delay}: {b}");
        assert_eq!(b["field"], "delay_ms", "{b}");
    }
    let (_, queue) = env.queue("echo").await;
    assert_eq!(queue["scheduled"], 0, "nothing was queued: {queue}");
    assert_eq!(queue["pending"], 0, "nothing was queued: {queue}");

    // One year is accepted and scheduled a year out (not "now").
    let id = submit(&env, &format!("/v1/jobs/echo?delay_ms={YEAR_MS}"), body).await;
    let (_, job) = env.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "scheduled", "{job}");
    let wait = job["run_at_ms"].as_i64().unwrap() - job["enqueued_at_ms"].as_i64().unwrap();
    assert_eq!(wait, YEAR_MS as i64, "{job}");
}

#[tokio::test]
async fn a_cancelled_running_job_enters_the_done_set_and_expires_like_a_succeeded_one() {
    let mut env = fast_env(&[("HOPPER_QUEUE_ECHO_RETENTION_MS", "1000")]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let mut conn = redis().await;
    let k = keys(&env, JobKind::Echo);

    let done = submit(&env, "/v1/jobs/echo", json!({"message": "done"})).await;
    assert_eq!(
        env.wait_final(&done, Duration::from_secs(15)).await["state"],
        "succeeded"
    );
    let long = submit(
        &env,
        "/v1/jobs/echo",
        json!({"message": "long", "sleep_ms": 60000}),
    )
    .await;
    wait_running(&env, &long).await;
    let (s, r) = env
        .post(&format!("/v1/jobs/{long}/cancel"), &json!({}))
        .await;
    assert_eq!((s, r["state"].clone()), (200, json!("cancelling")), "{r}");
    let job = env.wait_final(&long, Duration::from_secs(10)).await;
    assert_eq!(job["state"], "cancelled", "{job}");

    // Both leave Redis after the queue's retention, with no other job
    // finishing to trigger it; their records stay in Postgres.
    for id in [&done, &long] {
        let uuid: Uuid = id.parse().unwrap();
        let (hash, set) = (k.job(&uuid), k.done());
        until(
            "finished job forgotten by Redis",
            Duration::from_secs(15),
            || forgotten(&conn, &hash, &set, id),
        )
        .await;
        let (s, job) = env.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(s, 200, "record kept: {job}");
    }
    let (_, job) = env.get(&format!("/v1/jobs/{long}")).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let cancels: i64 = redis::cmd("SCARD")
        .arg(k.cancel_requests())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cancels, 0);
}

#[tokio::test]
async fn a_job_whose_worker_dies_after_its_cancel_request_ends_cancelled_in_the_done_set() {
    let mut env = fast_env(&[]);
    env.start_api().await;
    let first = env.start_worker("echo", &[]);
    let mut conn = redis().await;
    let k = keys(&env, JobKind::Echo);

    let id = submit(
        &env,
        "/v1/jobs/echo?max_attempts=1",
        json!({"message": "long", "sleep_ms": 60000}),
    )
    .await;
    wait_running(&env, &id).await;
    // Frozen before its heartbeat can see the request, then gone.
    env.signal(first, hopper_tests::SIGSTOP);
    let (s, r) = env.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!((s, r["state"].clone()), (200, json!("cancelling")), "{r}");
    env.kill(first);
    env.start_worker("echo", &[]);

    // Recovery finishes it as asked (not dead-lettered, not run again).
    let job = env.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let uuid: Uuid = id.parse().unwrap();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(k.done())
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(score.is_some(), "in the done set, so it expires");
    let (cancel, dead): (bool, Option<f64>) = redis::pipe()
        .cmd("SISMEMBER")
        .arg(k.cancel_requests())
        .arg(&id)
        .cmd("ZSCORE")
        .arg(k.dead())
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!cancel, "the cancel request is consumed");
    assert!(dead.is_none(), "not a dead letter");
    // Its record reached Postgres.
    let row = env
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT state FROM job_records WHERE id = $1", &[&uuid])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "cancelled");
}

#[tokio::test]
async fn the_noop_latency_list_keeps_only_its_newest_samples_and_expires() {
    let mut env = TestEnv::new(&[("HOPPER_NOOP_LATENCIES_KEEP", "50")]);
    env.start_api().await;
    env.start_worker("noop", &[]);
    let mut conn = redis().await;
    let k = keys(&env, JobKind::Noop);
    let stamped: Vec<Value> = (0..120)
        .map(|_| json!({"sent_us": hopper_queue::now_us()}))
        .collect();
    env.submit_batch("noop", &stamped).await;
    until("120 noop jobs ran", Duration::from_secs(30), || {
        let mut conn = conn.clone();
        let counter = k.named("effects");
        async move {
            let n: Option<i64> = redis::cmd("GET")
                .arg(&counter)
                .query_async(&mut conn)
                .await
                .unwrap();
            n == Some(120)
        }
    })
    .await;
    let list = k.named("start_latency_us");
    let (len, ttl): (i64, i64) = redis::pipe()
        .cmd("LLEN")
        .arg(&list)
        .cmd("TTL")
        .arg(&list)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 50, "trimmed to HOPPER_NOOP_LATENCIES_KEEP");
    assert!(ttl > 0, "expires (TTL {ttl})");
}

#[tokio::test]
async fn dead_letters_past_their_retention_leave_redis_and_newer_ones_stay() {
    let mut env = fast_env(&[("HOPPER_DEAD_RETENTION_MS", "60000")]);
    env.start_api().await;
    let port = hopper_tests::free_port();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    env.start_worker(
        "echo",
        &[("HOPPER_WORKER_METRICS_ADDR", &format!("127.0.0.1:{port}"))],
    );
    let mut conn = redis().await;
    let k = keys(&env, JobKind::Echo);
    let mut dead = Vec::new();
    for msg in ["old", "new"] {
        let id = submit(
            &env,
            "/v1/jobs/echo?max_attempts=1",
            json!({"message": msg, "fail": "nope"}),
        )
        .await;
        assert_eq!(
            env.wait_final(&id, Duration::from_secs(20)).await["state"],
            "dead"
        );
        dead.push(id);
    }
    let (old, new) = (&dead[0], &dead[1]);
    // The old one died two minutes ago (on Redis' clock): past 60 s.
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(k.dead())
        .arg("XX")
        .arg((secs - 120) * 1000)
        .arg(old)
        .query_async(&mut conn)
        .await
        .unwrap();

    let old_hash = k.job(&old.parse().unwrap());
    let dead_set = k.dead();
    until("old dead letter forgotten", Duration::from_secs(15), || {
        forgotten(&conn, &old_hash, &dead_set, old)
    })
    .await;
    // The same trim saw the newer one and kept it.
    let (exists, score): (bool, Option<f64>) = redis::pipe()
        .cmd("EXISTS")
        .arg(k.job(&new.parse().unwrap()))
        .cmd("ZSCORE")
        .arg(k.dead())
        .arg(new)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists && score.is_some(), "the newer dead letter stays");
    let (_, page) = env.get("/v1/queues/echo/dead").await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["jobs"][0]["id"], json!(new), "{page}");
    // Postgres keeps the old one's record; the worker counted the removal.
    let (s, job) = env.get(&format!("/v1/jobs/{old}")).await;
    assert_eq!((s, job["state"].clone()), (200, json!("dead")), "{job}");
    let removed = env
        .metric(
            &metrics,
            "hopper_retention_removed_total{store=\"dead_letters\",queue=\"echo\"}",
        )
        .await;
    assert_eq!(removed, 1.0);
}

/// Inserts `n` finished job records and `n` stored embed results, `age_days`
/// old; returns their ids.
async fn backdated_rows(env: &TestEnv, n: usize, age_days: i32) -> Vec<Uuid> {
    let pool = env.pool();
    let client = pool.get().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = Uuid::now_v7();
        client
            .execute(
                "INSERT INTO job_records (id, kind, state, attempts, max_attempts, args, \
                 enqueued_at, finished_at) VALUES ($1, 'echo', 'succeeded', 1, 1, '{}', \
                 now() - make_interval(days => $2), now() - make_interval(days => $2))",
                &[&id, &age_days],
            )
            .await
            .unwrap();
        hopper_shared::embeddings::store(&pool, id, "default", "m@1", 2, &[vec![1.0, 0.0]])
            .await
            .unwrap();
        client
            .execute(
                "UPDATE embed_results SET created_at = now() - make_interval(days => $2) \
                 WHERE job_id = $1",
                &[&id, &age_days],
            )
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Which of `ids` still have a job record and which an embed result.
async fn surviving(env: &TestEnv, ids: &[Uuid]) -> (usize, usize) {
    let client = env.pool().get().await.unwrap();
    let records: i64 = client
        .query_one(
            "SELECT count(*) FROM job_records WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    let results: i64 = client
        .query_one(
            "SELECT count(*) FROM embed_results WHERE job_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    (records as usize, results as usize)
}

#[tokio::test]
async fn the_sweep_deletes_records_and_embed_results_past_their_retention_in_batches() {
    let env = TestEnv::new(&[]);
    let pool = env.pool();
    hopper_shared::db::migrate(&pool, &env.config().db_schema)
        .await
        .unwrap();
    // Defaults: records 30 days, embed results 7.
    let old = backdated_rows(&env, 20, 31).await;
    let middle = backdated_rows(&env, 3, 10).await;
    let fresh = backdated_rows(&env, 2, 1).await;
    let settings = RetentionSettings {
        batch: 7,
        ..RetentionSettings::default()
    };
    let swept = hopper_shared::retention::sweep(&pool, &settings)
        .await
        .unwrap();
    assert_eq!(swept.job_records, 20);
    assert_eq!(swept.embed_results, 23);
    // 20 records: 7 + 7 + 6; one each for jobs' own retentions (records,
    // then rows left without a job); 23 results: 7 + 7 + 7 + 2.
    assert_eq!(swept.batches, 3 + 1 + 1 + 4);
    assert_eq!(surviving(&env, &old).await, (0, 0));
    assert_eq!(surviving(&env, &middle).await, (3, 0));
    assert_eq!(surviving(&env, &fresh).await, (2, 2));
    let again = hopper_shared::retention::sweep(&pool, &settings)
        .await
        .unwrap();
    assert_eq!((again.job_records, again.embed_results), (0, 0));
}

#[tokio::test]
async fn the_api_sweeps_postgres_periodically_and_counts_what_it_removed() {
    let mut env = TestEnv::new(&[
        ("HOPPER_RETENTION_SWEEP_MS", "200"),
        ("HOPPER_RETENTION_BATCH", "4"),
        ("HOPPER_RECORD_RETENTION_DAYS", "2"),
        ("HOPPER_EMBED_RESULT_RETENTION_DAYS", "1"),
    ]);
    let api = env.start_api().await;
    let old = backdated_rows(&env, 10, 3).await;
    let middle = backdated_rows(&env, 2, 1).await;
    until("old rows swept", Duration::from_secs(15), || async {
        surviving(&env, &old).await == (0, 0)
    })
    .await;
    // A record one day and a bit old outlives a 2-day retention; its embed
    // result (1 day) does not.
    until(
        "middle embed results swept",
        Duration::from_secs(15),
        || async { surviving(&env, &middle).await == (2, 0) },
    )
    .await;
    let metrics = format!("{api}/metrics");
    let removed = |store: &'static str| {
        let (env, metrics) = (&env, &metrics);
        async move {
            env.metric(
                metrics,
                &format!("hopper_retention_removed_total{{store=\"{store}\"}}"),
            )
            .await
        }
    };
    until("removals counted", Duration::from_secs(5), || async {
        removed("job_records").await == 10.0 && removed("embed_results").await == 12.0
    })
    .await;
}

/// A finished echo job's record, `age` ago, as a worker writes it.
fn finished_record(id: Uuid, state: &str, age: Duration) -> hopper_shared::jobs::JobRecord {
    let finished = unix_ms() - age.as_millis() as i64;
    serde_json::from_value(json!({
        "id": id, "kind": "echo", "state": state, "attempts": 1, "max_attempts": 1,
        "args": {}, "result": null, "error": null, "worker": "w",
        "enqueued_at_ms": finished - 10, "started_at_ms": finished - 5,
        "finished_at_ms": finished,
    }))
    .unwrap()
}

fn sorted<const N: usize>(ids: [Uuid; N]) -> Vec<Uuid> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn the_sweep_deletes_a_record_after_its_jobs_own_retention() {
    use hopper_shared::retention::{forget_kept_jobs, keep_jobs_for, sweep};
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let env = TestEnv::new(&[]);
    let pool = env.pool();
    hopper_shared::db::migrate(&pool, &env.config().db_schema)
        .await
        .unwrap();
    let ids: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let [short, cancelled, dead, long, old, fresh, orphan, pending] = ids[..] else {
        unreachable!()
    };
    // Each job's own retention is written before the job exists, as the API does.
    keep_jobs_for(&pool, &[short, cancelled, dead], HOUR)
        .await
        .unwrap();
    keep_jobs_for(&pool, &[long], 60 * DAY).await.unwrap();
    keep_jobs_for(&pool, &[orphan, pending], HOUR)
        .await
        .unwrap();
    let records = [
        finished_record(short, "succeeded", 2 * HOUR),
        finished_record(cancelled, "cancelled", 2 * HOUR),
        // A dead letter keeps the record retention.
        finished_record(dead, "dead", 2 * HOUR),
        // Past the 30-day record retention, within its own 60 days.
        finished_record(long, "succeeded", 40 * DAY),
        finished_record(old, "succeeded", 40 * DAY),
        finished_record(fresh, "succeeded", HOUR),
    ];
    hopper_shared::db::upsert_job_records(&pool, &records)
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    // A row whose job never got a record (purged) goes after 400 days; one
    // of a job still waiting stays.
    client
        .execute(
            "UPDATE job_retention SET created_at = now() - interval '401 days' WHERE job_id = $1",
            &[&orphan],
        )
        .await
        .unwrap();

    let swept = sweep(&pool, &RetentionSettings::default()).await.unwrap();
    assert_eq!(swept.job_records, 3, "short, cancelled and old");
    let left = |table: &'static str, column: &'static str| {
        let (client, ids) = (&client, &ids);
        async move {
            let rows = client
                .query(
                    &format!("SELECT {column} FROM {table} WHERE {column} = ANY($1)"),
                    &[ids],
                )
                .await
                .unwrap();
            let mut left: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
            left.sort();
            left
        }
    };
    assert_eq!(left("job_records", "id").await, sorted([dead, long, fresh]));
    assert_eq!(
        left("job_retention", "job_id").await,
        sorted([dead, long, pending]),
        "a row goes with its record, or long after, without one"
    );

    // Records kept for ever still end at their job's own retention; a row
    // written for a job that was not queued is forgotten.
    let forever = RetentionSettings {
        job_records: Duration::ZERO,
        ..RetentionSettings::default()
    };
    client
        .execute(
            "UPDATE job_records SET keep_until = now() - interval '1 second' WHERE id = $1",
            &[&long],
        )
        .await
        .unwrap();
    let swept = sweep(&pool, &forever).await.unwrap();
    assert_eq!(swept.job_records, 1);
    assert_eq!(left("job_records", "id").await, sorted([dead, fresh]));
    forget_kept_jobs(&pool, &[pending]).await.unwrap();
    assert_eq!(left("job_retention", "job_id").await, vec![dead]);
}
