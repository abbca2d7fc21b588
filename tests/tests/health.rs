//! Readiness follows the services: with Redis stopped, the API's and the
//! worker's `/health/ready` answer 503 naming Redis (liveness stays 200), and
//! both turn ready again when Redis returns — no restart of either process.

use std::time::{Duration, Instant};

use hopper_tests::{PrivateRedis, TestEnv, free_port};
use serde_json::Value;

/// Status and body; status 0 while nothing listens (a starting worker).
async fn get(url: &str) -> (u16, Value) {
    match reqwest::get(url).await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// Polls `url` until it answers `status` (readiness checks are live, but the
/// Redis client may take a moment to notice a dropped connection).
async fn until_status(url: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, body) = get(url).await;
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {s}, not {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn readiness_turns_unready_without_redis_and_ready_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let redis_url = redis.url();
    let mut env = TestEnv::new(&[("REDIS_URL", redis_url.as_str())]);
    let api = env.start_api().await;
    let worker_addr = format!("127.0.0.1:{}", free_port());
    env.start_worker(
        "echo",
        &[("HOPPER_WORKER_METRICS_ADDR", worker_addr.as_str())],
    );
    let worker = format!("http://{worker_addr}");
    let api_ready = format!("{api}/health/ready");
    let worker_ready = format!("{worker}/health/ready");

    let body = until_status(&api_ready, 200).await;
    assert_eq!(body["components"]["redis"]["ok"], true, "{body}");
    let body = until_status(&worker_ready, 200).await;
    assert_eq!(body["components"]["redis"]["ok"], true, "{body}");

    redis.stop();
    for url in [&api_ready, &worker_ready] {
        let body = until_status(url, 503).await;
        assert_eq!(body["status"], "unready", "{url}: {body}");
        assert_eq!(body["components"]["redis"]["ok"], false, "{url}: {body}");
        assert!(
            body["components"]["redis"]["error"].is_string(),
            "{url}: {body}"
        );
        assert_eq!(body["components"]["postgres"]["ok"], true, "{url}: {body}");
    }
    assert_eq!(get(&format!("{api}/health/live")).await.0, 200);
    assert_eq!(get(&format!("{worker}/health/live")).await.0, 200);

    redis.up();
    until_status(&api_ready, 200).await;
    until_status(&worker_ready, 200).await;
    // And the queue works again end to end.
    let (s, b) = env
        .post("/v1/jobs/echo", &serde_json::json!({"message": "back"}))
        .await;
    assert_eq!(s, 202, "{b}");
    let job = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
}
