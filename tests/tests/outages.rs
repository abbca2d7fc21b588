//! 30-second outages of the backing services in the middle of a run, on
//! private Postgres and Redis servers (the shared ones serve other tests):
//! with Postgres down, finished jobs cannot be recorded, so they are
//! rescheduled, never dead-lettered, and all complete once it returns;
//! with Redis down, the API refuses submissions with 503 and Retry-After
//! (nothing accepted and dropped), and the workers resume when it returns.
//! With Postgres hung (every process frozen), heartbeats go on.

use std::time::{Duration, Instant};

use hopper_tests::{PrivatePostgres, PrivateRedis, TestEnv};
use serde_json::{Value, json};

const OUTAGE: Duration = Duration::from_secs(30);

async fn until_one_succeeded(env: &TestEnv, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for id in ids {
            if env.get(&format!("/v1/jobs/{id}")).await.1["state"] == "succeeded" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no job ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_postgres_outage_delays_jobs_but_loses_or_dead_letters_none() {
    let pg = PrivatePostgres::start();
    let url = pg.url();
    let mut env = TestEnv::new(&[
        ("DATABASE_URL", url.as_str()),
        ("HOPPER_QUEUE_ECHO_BACKOFF_BASE_MS", "200"),
        ("HOPPER_QUEUE_ECHO_BACKOFF_MAX_MS", "2000"),
        ("HOPPER_QUEUE_ECHO_MAX_ATTEMPTS", "3"),
    ]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let batch: Vec<Value> = (0..400)
        .map(|i| json!({"message": i.to_string(), "sleep_ms": 150}))
        .collect();
    let mut ids = env.submit_batch("echo", &batch).await;
    until_one_succeeded(&env, &ids).await;

    pg.stop();
    // Submissions need only Redis: they are still accepted.
    ids.extend(env.submit_batch("echo", &batch[..50]).await);
    let (s, ready) = env.get("/health/ready").await;
    assert_eq!(s, 503, "{ready}");
    assert_eq!(ready["components"]["postgres"]["ok"], false, "{ready}");
    tokio::time::sleep(OUTAGE).await;
    pg.up();

    let mut rerun = 0;
    for id in &ids {
        let job = env.wait_final(id, Duration::from_secs(120)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        if job["attempts"].as_u64().unwrap() > 1 {
            rerun += 1;
        }
    }
    // Jobs that finished during the outage could not be recorded: they ran
    // again later (idempotently), past their 3 attempts, never dead.
    assert!(rerun > 0, "the outage hit no job");
    let (_, dead) = env.get("/v1/queues/echo/dead").await;
    assert_eq!(dead["total"], 0, "nothing dead-lettered: {dead}");
    // One record per job, none missing, none twice.
    let client = env.pool().get().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM job_records WHERE kind = 'echo'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, ids.len());
}

#[tokio::test]
async fn a_redis_outage_refuses_submissions_with_503_and_workers_resume() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let mut env = TestEnv::new(&[("REDIS_URL", url.as_str())]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({"message": i.to_string(), "sleep_ms": 50}))
        .collect();
    let ids = env.submit_batch("echo", &batch).await;
    until_one_succeeded(&env, &ids).await;

    redis.stop();
    let started = Instant::now();
    while started.elapsed() < OUTAGE {
        let res = env
            .http()
            .post(env.url("/v1/jobs/echo"))
            .json(&json!({"message": "during the outage"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 503, "nothing is accepted without Redis");
        assert!(res.headers().get("retry-after").is_some());
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    redis.up();

    for id in &ids {
        let job = env.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    // The workers serve new work again.
    let (s, b) = env
        .post("/v1/jobs/echo", &json!({"message": "after"}))
        .await;
    assert_eq!(s, 202, "{b}");
    let job = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

#[tokio::test]
async fn heartbeats_go_on_while_postgres_hangs() {
    let pg = PrivatePostgres::start();
    let url = pg.url();
    let mut env = TestEnv::new(&[
        ("DATABASE_URL", url.as_str()),
        ("HOPPER_HEARTBEAT_MS", "200"),
        ("HOPPER_LEASE_MS", "1000"),
    ]);
    env.start_api().await;
    // A worker with one slot takes a job on its last attempt, then dies:
    // the survivor's rescuer must write that job's dead record while
    // Postgres hangs.
    let doomed = env.start_worker("echo", &[("HOPPER_QUEUE_ECHO_CONCURRENCY", "1")]);
    let (_, d) = env
        .post(
            "/v1/jobs/echo?max_attempts=1",
            &json!({"message": "dies with its worker", "sleep_ms": 60_000}),
        )
        .await;
    let dead_id = d["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.get(&format!("/v1/jobs/{dead_id}")).await.1["state"] != "running" {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.start_worker("echo", &[]);
    let (_, l) = env
        .post(
            "/v1/jobs/echo",
            &json!({"message": "long", "sleep_ms": 6_000}),
        )
        .await;
    let long = l["id"].as_str().unwrap().to_owned();
    let survivor = loop {
        let (_, j) = env.get(&format!("/v1/jobs/{long}")).await;
        if j["state"] == "running" {
            break j["worker"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "never started: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    pg.freeze();
    env.kill(doomed);
    // For four seconds (four leases) the survivor's heartbeat stays fresh
    // though its rescuer is stuck on Postgres, and its job is never taken.
    let watched = Instant::now();
    let mut recovered = false;
    while watched.elapsed() < Duration::from_secs(4) {
        let (_, list) = env.get("/v1/workers").await;
        let me = list["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["worker"] == survivor.as_str())
            .unwrap_or_else(|| panic!("the survivor was evicted: {list}"))
            .clone();
        assert!(
            me["heartbeat_age_ms"].as_u64().unwrap() < 1_000,
            "heartbeat stalled: {me}"
        );
        let (_, j) = env.get(&format!("/v1/jobs/{long}")).await;
        assert_eq!(j["attempts"], 1, "{j}");
        recovered |= env.get(&format!("/v1/jobs/{dead_id}")).await.1["state"] == "dead";
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the dead worker's job was recovered meanwhile");
    pg.thaw();
    let j = env.wait_final(&long, Duration::from_secs(30)).await;
    assert_eq!(
        (j["state"].as_str(), j["attempts"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{j}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while hopper_shared::db::job_record(&env.pool(), dead_id.parse().unwrap())
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the dead record never reached Postgres"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
