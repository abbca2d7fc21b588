//! Per-job overrides at submission, against the real API and worker: a job
//! may ask for less time than its task allows (`hard_limit_ms`,
//! `soft_limit_ms`), fewer or more attempts (`max_attempts`, 1–100) and a
//! shorter retry backoff (`backoff_base_ms`, `backoff_max_ms`), and is
//! stopped and retried by its own settings; asking beyond the task's (hard
//! limit, backoff max), or a soft limit above the hard one, is 422 naming
//! the option. A job's own retention (`retention_ms`, up to 30 times its
//! task's) replaces its queue's: Redis forgets it, and the Postgres sweep
//! deletes its record, after its own.

use std::time::Duration;

use hopper_queue::QueueKeys;
use hopper_shared::jobs::JobKind;
use hopper_tests::{TestEnv, until};
use serde_json::{Value, json};

#[tokio::test]
async fn a_job_runs_under_its_own_limits_and_cannot_exceed_its_tasks() {
    let mut env = TestEnv::new(&[
        ("HOPPER_QUEUE_ECHO_HARD_LIMIT_MS", "60000"),
        ("HOPPER_QUEUE_ECHO_SOFT_LIMIT_MS", "50000"),
        ("HOPPER_QUEUE_ECHO_BACKOFF_BASE_MS", "20000"),
        ("HOPPER_QUEUE_ECHO_BACKOFF_MAX_MS", "60000"),
    ]);
    env.start_api().await;
    let body = json!({ "message": "slow", "sleep_ms": 30_000 });

    for (query, field) in [
        ("hard_limit_ms=60001", "hard_limit_ms"),
        ("soft_limit_ms=0", "soft_limit_ms"),
        ("hard_limit_ms=1000&soft_limit_ms=2000", "soft_limit_ms"),
        ("max_attempts=101", "max_attempts"),
        ("backoff_max_ms=60001", "backoff_max_ms"),
        ("backoff_base_ms=500&backoff_max_ms=100", "backoff_base_ms"),
    ] {
        let (status, reply) = env.post(&format!("/v1/jobs/echo?{query}"), &body).await;
        assert_eq!(status, 422, "{query}: {reply}");
        assert_eq!(reply["field"], field, "{query}: {reply}");
    }

    env.start_worker("echo", &[]);
    let (status, reply) = env
        .post("/v1/jobs/echo?soft_limit_ms=300&max_attempts=1", &body)
        .await;
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"].as_str().unwrap().to_owned();
    let job = env.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("soft time limit"),
        "stopped at its own soft limit: {job}"
    );
    let took = job["finished_at_ms"].as_i64().unwrap() - job["started_at_ms"].as_i64().unwrap();
    assert!(
        took < 10_000,
        "stopped long before its 30 s sleep: {took} ms"
    );

    // Its own backoff: the task's would wait at least 10 s before the retry.
    let flaky = json!({ "message": "flaky", "fail_attempts": 1 });
    let (status, reply) = env
        .post(
            "/v1/jobs/echo?backoff_base_ms=50&backoff_max_ms=100",
            &flaky,
        )
        .await;
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"].as_str().unwrap().to_owned();
    let job = env.wait_final(&id, Duration::from_secs(8)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
}

/// Whether Redis still holds the echo job `id`'s hash.
async fn in_redis(env: &TestEnv, conn: &redis::aio::MultiplexedConnection, id: &str) -> bool {
    let key =
        QueueKeys::new(&env.env["HOPPER_KEY_PREFIX"], JobKind::Echo).job(&id.parse().unwrap());
    redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut conn.clone())
        .await
        .unwrap()
}

async fn submitted(env: &TestEnv, path: &str, body: &Value) -> String {
    let (status, reply) = env.post(path, body).await;
    assert_eq!(status, 202, "{path}: {reply}");
    reply["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_job_is_kept_for_its_own_retention_not_its_queues() {
    let mut env = TestEnv::new(&[
        ("HOPPER_QUEUE_ECHO_RETENTION_MS", "8000"),
        ("HOPPER_HEARTBEAT_MS", "100"),
        ("HOPPER_LEASE_MS", "1000"),
        ("HOPPER_RETENTION_SWEEP_MS", "200"),
    ]);
    env.start_api().await;
    let body = json!({ "message": "kept" });

    // At most 30 times the task's 8 s, at least 1 ms; the batch checks too.
    for path in [
        "/v1/jobs/echo?retention_ms=0",
        "/v1/jobs/echo?retention_ms=240001",
        "/v1/jobs/echo/batch?retention_ms=240001",
    ] {
        let payload = if path.contains("batch") {
            json!([body])
        } else {
            body.clone()
        };
        let (status, reply) = env.post(path, &payload).await;
        assert_eq!(status, 422, "{path}: {reply}");
        assert_eq!(reply["field"], "retention_ms", "{path}: {reply}");
    }
    let (status, reply) = env.post("/v1/jobs/echo?retention_ms=soon", &body).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["detail"].as_str().unwrap().contains("retention_ms"),
        "{reply}"
    );

    // Cancelled while it waits (cancel.lua), kept 300 ms.
    let cancelled = submitted(&env, "/v1/jobs/echo?delay_ms=60000&retention_ms=300", &body).await;
    let (status, reply) = env
        .post(&format!("/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{reply}");

    env.start_worker("echo", &[]);
    let brief = submitted(&env, "/v1/jobs/echo?retention_ms=300", &body).await;
    let plain = submitted(&env, "/v1/jobs/echo", &body).await;
    let long = submitted(&env, "/v1/jobs/echo?retention_ms=60000", &body).await;
    let (status, reply) = env
        .post("/v1/jobs/echo/batch?retention_ms=300", &json!([body, body]))
        .await;
    assert_eq!(status, 202, "{reply}");
    let batch: Vec<String> = reply["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    let mut gone_soon = vec![cancelled, brief];
    gone_soon.extend(batch);
    for id in gone_soon.iter().chain([&plain, &long]) {
        let job = env.wait_final(id, Duration::from_secs(20)).await;
        assert!(
            ["succeeded", "cancelled"].contains(&job["state"].as_str().unwrap()),
            "{job}"
        );
    }

    // Kept 300 ms: forgotten by Redis, then by Postgres, long before the
    // queue's 8 s are up for the plain one.
    let conn = redis::Client::open(hopper_tests::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for id in &gone_soon {
        until("forgotten by Redis", Duration::from_secs(5), || async {
            !in_redis(&env, &conn, id).await
        })
        .await;
        until("its record swept", Duration::from_secs(5), || async {
            env.get(&format!("/v1/jobs/{id}")).await.0 == 404
        })
        .await;
    }
    assert!(
        in_redis(&env, &conn, &plain).await,
        "the queue keeps it 8 s"
    );
    assert!(in_redis(&env, &conn, &long).await);

    // The queue's 8 s: the plain one leaves Redis (its record stays in
    // Postgres, under the record retention); the long one outlives it.
    until(
        "the plain job forgotten by Redis",
        Duration::from_secs(20),
        || async { !in_redis(&env, &conn, &plain).await },
    )
    .await;
    assert!(in_redis(&env, &conn, &long).await, "kept 60 s in Redis");
    let (status, job) = env.get(&format!("/v1/jobs/{plain}")).await;
    assert_eq!(
        (status, job["state"].clone()),
        (200, json!("succeeded")),
        "{job}"
    );
    let client = env.pool().get().await.unwrap();
    let kept_for = |id: &str| {
        let (client, id) = (&client, id.parse::<uuid::Uuid>().unwrap());
        async move {
            let row = client
                .query_one(
                    "SELECT (extract(epoch FROM keep_until - finished_at) * 1000)::int8 \
                     FROM job_records WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            row.get::<_, Option<i64>>(0)
        }
    };
    assert_eq!(
        kept_for(&long).await,
        Some(60_000),
        "its record kept until its own retention"
    );
    assert_eq!(kept_for(&plain).await, None, "the record retention");
}
