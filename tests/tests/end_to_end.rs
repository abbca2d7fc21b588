//! End to end: the real API and worker binaries against real Redis and
//! Postgres, each test in its own key prefix and schema.

use std::time::Duration;

use hopper_tests::{TestEnv, binary};
use serde_json::json;

#[tokio::test]
async fn echo_job_runs_end_to_end_and_its_record_is_stored() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    let (status, body) = env
        .post("/v1/jobs/echo", &json!({"message": "hello"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("job id").to_owned();

    let job = env.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["message"], "hello");
    assert_eq!(job["attempts"], 1);
    assert!(job["finished_at_ms"].as_i64() >= job["enqueued_at_ms"].as_i64());

    // The record was committed to Postgres before the ack.
    let pool = env.pool();
    let rec = hopper_shared::db::job_record(&pool, id.parse().unwrap())
        .await
        .unwrap()
        .expect("job record in Postgres");
    assert_eq!(rec.state.as_str(), "succeeded");
    assert_eq!(rec.result.unwrap()["message"], "hello");
}

#[tokio::test]
async fn bad_input_gets_a_clear_json_error() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;

    let (s, b) = env.post("/v1/jobs/nope", &json!({})).await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["error"], "unknown_task");
    assert!(
        b["known"].as_array().unwrap().contains(&json!("echo")),
        "{b}"
    );

    let (s, b) = env.post("/v1/jobs/echo", &json!({"message": 7})).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["field"], "message", "{b}");

    let (s, b) = env.post("/v1/jobs/echo", &json!({})).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["field"], "message", "{b}");

    let (s, b) = env
        .request(
            env.http()
                .post(env.url("/v1/jobs/echo"))
                .header("content-type", "application/json")
                .body("{\"message\": "),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "invalid_json");

    let (s, b) = env
        .post("/v1/jobs/echo?max_attempts=0", &json!({"message": "x"}))
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["field"], "max_attempts");

    // Any id a Celery producer may know a job by: unknown → 404; too long → 400.
    let (s, b) = env.get("/v1/jobs/not-a-uuid").await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = env.get(&format!("/v1/jobs/{}", "x".repeat(300))).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = env.get(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["error"], "not_found");

    // Nothing was queued by any of the refused submissions.
    let (q, echo) = env.queue("echo").await;
    assert_eq!(echo["pending"], 0, "{q}");
}

#[tokio::test]
async fn idempotency_key_gives_one_job() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let send = || {
        env.request(
            env.http()
                .post(env.url("/v1/jobs/echo"))
                .header("idempotency-key", "order-42")
                .json(&json!({"message": "once"})),
        )
    };
    let (s1, b1) = send().await;
    let (s2, b2) = send().await;
    assert_eq!((s1, s2), (202, 200), "{b1} {b2}");
    assert_eq!(b1["id"], b2["id"]);
    assert_eq!(b2["created"], false);
    let (q, echo) = env.queue("echo").await;
    assert_eq!(echo["pending"], 1, "{q}");
}

#[tokio::test]
async fn failing_job_is_retried_then_dead_lettered_with_its_error() {
    let mut env = TestEnv::new(&[("HOPPER_QUEUE_ECHO_BACKOFF_BASE_MS", "200")]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let (s, b) = env
        .post(
            "/v1/jobs/echo?max_attempts=3",
            &json!({"message": "x", "fail": "boom"}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let job = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["error"], "boom");
    // Backoff 200 ms, doubling, half of it jitter: the first retry waits
    // 100-200 ms, the second 200-400 ms.
    let h = job["history"].as_array().unwrap();
    assert_eq!(h.len(), 3, "{job}");
    let gap = |i: usize| {
        h[i + 1]["started_at_ms"].as_i64().unwrap() - h[i]["finished_at_ms"].as_i64().unwrap()
    };
    assert!((95..400).contains(&gap(0)), "first delay {} ms", gap(0));
    assert!((195..800).contains(&gap(1)), "second delay {} ms", gap(1));
    let outcomes: Vec<_> = h.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retrying", "retrying", "dead"]);
    let (q, echo) = env.queue("echo").await;
    assert_eq!(echo["dead"], 1, "{q}");
}

#[tokio::test]
async fn a_sigkilled_workers_job_runs_again_on_another_worker() {
    let lease = [("HOPPER_HEARTBEAT_MS", "200"), ("HOPPER_LEASE_MS", "1000")];
    let mut env = TestEnv::new(&lease);
    env.start_api().await;
    let first = env.start_worker("echo", &[]);
    let (_, b) = env
        .post(
            "/v1/jobs/echo",
            &json!({"message": "survive", "sleep_ms": 1500}),
        )
        .await;
    let id = b["id"].as_str().unwrap().to_owned();

    // Wait until the first worker runs it, then SIGKILL that worker.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, job) = env.get(&format!("/v1/jobs/{id}")).await;
        if job["state"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never started: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.kill(first);
    env.start_worker("echo", &[]);

    let job = env.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["attempts"], 2,
        "the crashed run counts as an attempt: {job}"
    );
}

#[test]
fn missing_services_stop_the_binaries_with_one_clear_line() {
    let env = TestEnv::new(&[]);
    for bin in ["hopper-api", "hopper-worker"] {
        let args: &[&str] = if bin == "hopper-worker" {
            &["--queues", "echo", "--device", "cpu"]
        } else {
            &[]
        };
        let out = std::process::Command::new(binary(bin))
            .args(args)
            .envs(&env.env)
            .env("REDIS_URL", "redis://127.0.0.1:1")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot reach Redis at redis://127.0.0.1:1"),
            "{bin}: {err}"
        );

        let out = std::process::Command::new(binary(bin))
            .args(args)
            .envs(&env.env)
            .env(
                "DATABASE_URL",
                "postgresql://postgres:pw@127.0.0.1:1/hopper",
            )
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot reach Postgres at postgresql://postgres:***@127.0.0.1:1/hopper"),
            "{bin}: {err}"
        );
    }
}

#[test]
fn invalid_settings_are_all_named_at_start_up() {
    let env = TestEnv::new(&[]);
    let out = std::process::Command::new(binary("hopper-api"))
        .envs(&env.env)
        .env("HOPPER_QUEUE_ECHO_CONCURRENCY", "lots")
        .env("HOPPER_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HOPPER_QUEUE_ECHO_CONCURRENCY") && err.contains("HOPPER_LOG_FORMAT"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn metrics_report_queue_depth_and_job_outcomes() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.post("/v1/jobs/echo?delay_ms=60000", &json!({"message": "later"}))
        .await;
    for _ in 0..3 {
        env.post("/v1/jobs/echo", &json!({"message": "now"})).await;
    }
    let text = env
        .http()
        .get(env.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> f64 {
        hopper_tests::metric_value(&text, series)
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(value("hopper_queue_pending{queue=\"echo\"}"), 3.0);
    assert_eq!(value("hopper_queue_scheduled{queue=\"echo\"}"), 1.0);
    assert!(value("hopper_queue_oldest_pending_seconds{queue=\"echo\"}") >= 0.0);
    assert_eq!(value("hopper_jobs_submitted_total{kind=\"echo\"}"), 4.0);
    assert!(
        text.contains(
            "hopper_http_requests_total{method=\"POST\",route=\"/v1/jobs/{key}\",status=\"202\"}"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_worker_serves_its_own_metrics_and_readiness() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let port = hopper_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    env.start_worker("echo", &[("HOPPER_WORKER_METRICS_ADDR", addr.as_str())]);
    let (_, b) = env
        .post("/v1/jobs/echo", &json!({"message": "count me"}))
        .await;
    env.wait_final(b["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;

    let ready: serde_json::Value = env
        .http()
        .get(format!("http://{addr}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(
        ready["components"]["device"]["detail"]
            .as_str()
            .unwrap()
            .contains("Cpu"),
        "{ready}"
    );
    // The first heartbeat comes one interval after the worker starts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let text = loop {
        let text = env
            .http()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let beats = hopper_tests::metric_value(
            &text,
            "hopper_worker_heartbeats_total{queue=\"echo\",outcome=\"ok\"}",
        );
        if beats.is_some_and(|b| b >= 1.0) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        text.contains("hopper_jobs_succeeded_total{kind=\"echo\"} 1"),
        "{text}"
    );
    assert!(text.contains("hopper_job_run_seconds"), "{text}");
    let waits =
        hopper_tests::metric_value(&text, "hopper_job_queue_wait_seconds_count{kind=\"echo\"}");
    assert_eq!(waits, Some(1.0), "{text}");
    let beats = hopper_tests::metric_value(
        &text,
        "hopper_worker_heartbeats_total{queue=\"echo\",outcome=\"ok\"}",
    );
    assert!(beats.is_some_and(|b| b >= 1.0), "{text}");
    assert!(
        !text.contains("hopper_gpu_memory"),
        "no GPU series on CPU: {text}"
    );
}

#[tokio::test]
async fn the_request_id_travels_into_the_job_and_its_log_lines() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let worker = env.start_worker("echo", &[]);
    let (s, b) = env
        .request(
            env.http()
                .post(env.url("/v1/jobs/echo?max_attempts=1"))
                .header("x-request-id", "req-7f3a-trace")
                .json(&json!({"message": "x", "fail": "traced failure"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let job = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(job["request_id"], "req-7f3a-trace", "{job}");
    let log = env.log(worker);
    let line = log
        .lines()
        .find(|l| l.contains("traced failure"))
        .unwrap_or_else(|| panic!("no log line for the failure:\n{log}"));
    assert!(line.contains("req-7f3a-trace"), "{line}");
}
