//! Readiness follows the services: with Redis stopped, the API's and the
//! worker's `/health/ready` answer 503 naming Redis (liveness stays 200), and
//! both turn ready again when Redis returns — no restart of either process.
//! Both say which build they are: version, commit and uptime in
//! `/health/ready`, `hopper_build_info` and the process gauges in `/metrics`.

use std::time::{Duration, Instant};

use hopper_shared::{build_info, metrics as m};
use hopper_tests::{PrivateRedis, TestEnv, free_port, metric_value};
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

/// Starts the API and an echo worker serving its own HTTP endpoints;
/// answers their base URLs.
async fn api_and_worker(env: &mut TestEnv) -> (String, String) {
    let api = env.start_api().await;
    let worker_addr = format!("127.0.0.1:{}", free_port());
    env.start_worker(
        "echo",
        &[("HOPPER_WORKER_METRICS_ADDR", worker_addr.as_str())],
    );
    (api, format!("http://{worker_addr}"))
}

#[tokio::test]
async fn readiness_turns_unready_without_redis_and_ready_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let redis_url = redis.url();
    let mut env = TestEnv::new(&[("REDIS_URL", redis_url.as_str())]);
    let (api, worker) = api_and_worker(&mut env).await;
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

#[tokio::test]
async fn api_and_worker_report_their_build_uptime_and_process_gauges() {
    let mut env = TestEnv::new(&[]);
    let (api, worker) = api_and_worker(&mut env).await;
    // The binaries were built from this tree, like this test.
    assert!(!build_info::GIT_SHA.trim().is_empty());
    let build_line = format!(
        "{}{{version=\"{}\",git_sha=\"{}\"}} 1",
        m::BUILD_INFO,
        build_info::VERSION,
        build_info::GIT_SHA
    );

    for base in [&api, &worker] {
        let body = until_status(&format!("{base}/health/ready"), 200).await;
        assert_eq!(body["version"], build_info::VERSION, "{base}: {body}");
        assert_eq!(body["git_sha"], build_info::GIT_SHA, "{base}: {body}");
        let uptime = body["uptime_s"].as_u64();
        assert!(
            uptime.is_some_and(|s| s < 600),
            "{base}: a process started moments ago: {body}"
        );
        assert_eq!(body["components"]["redis"]["ok"], true, "{base}: {body}");

        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            text.lines().any(|l| l == build_line),
            "{base}: no `{build_line}` in:\n{text}"
        );
        let rss = metric_value(&text, m::PROCESS_RESIDENT_MEMORY_BYTES);
        assert!(
            rss.is_some_and(|b| b > 1e6),
            "{base}: resident memory {rss:?}"
        );
        let cpu = metric_value(&text, m::PROCESS_CPU_SECONDS);
        assert!(cpu.is_some_and(|s| s > 0.0), "{base}: CPU seconds {cpu:?}");
        let up = metric_value(&text, m::PROCESS_UPTIME_SECONDS);
        assert!(
            up.is_some_and(|s| (0.0..600.0).contains(&s)),
            "{base}: uptime {up:?}"
        );
    }
}
