//! Per-job overrides at submission, against the real API and worker: a job
//! may ask for less time than its task allows (`hard_limit_ms`,
//! `soft_limit_ms`), fewer or more attempts (`max_attempts`, 1–100) and a
//! shorter retry backoff (`backoff_base_ms`, `backoff_max_ms`), and is
//! stopped and retried by its own settings; asking beyond the task's (hard
//! limit, backoff max), or a soft limit above the hard one, is 422 naming
//! the option.

use std::time::Duration;

use hopper_tests::TestEnv;
use serde_json::json;

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
