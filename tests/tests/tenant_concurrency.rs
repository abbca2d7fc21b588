//! The per-tenant concurrency limit against the real binaries: `echo` with
//! `HOPPER_QUEUE_ECHO_TENANT_CONCURRENCY=2`, drained by two workers of 8
//! slots each. One tenant's burst of 12 slow jobs never has more than 2
//! running at once, while a second tenant's jobs, submitted after the
//! burst, start at once instead of waiting behind it.

use std::time::Duration;

use hopper_tests::TestEnv;
use serde_json::json;

/// The most intervals of `spans` ([start, end) ms) that overlap at once.
fn most_at_once(spans: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = spans.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // An end before a start at the same instant: back-to-back is not overlap.
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test]
async fn one_tenants_burst_runs_two_at_a_time_and_does_not_hold_up_another_tenant() {
    let mut env = TestEnv::new(&[
        ("HOPPER_AUTH", "keys"),
        ("HOPPER_QUEUE_ECHO_TENANT_CONCURRENCY", "2"),
        ("HOPPER_QUEUE_ECHO_CONCURRENCY", "8"),
        ("HOPPER_RATE_PER_KEY", "0"),
        ("HOPPER_RATE_GLOBAL", "0"),
    ]);
    env.start_api().await;
    let acme = env.create_key("acme", "submit,read").await;
    let bolt = env.create_key("bolt", "submit,read").await;
    env.start_worker("echo", &[]);
    env.start_worker("echo", &[]);

    env.use_key(Some(&acme));
    let burst = env
        .submit_batch(
            "echo",
            &vec![json!({ "message": "burst", "sleep_ms": 300 }); 12],
        )
        .await;
    env.use_key(Some(&bolt));
    let other = env
        .submit_batch(
            "echo",
            &vec![json!({ "message": "other", "sleep_ms": 50 }); 2],
        )
        .await;

    let span = |job: &serde_json::Value| {
        (
            job["started_at_ms"].as_i64().expect("started_at_ms"),
            job["finished_at_ms"].as_i64().expect("finished_at_ms"),
        )
    };
    let mut other_spans = Vec::new();
    for id in &other {
        let job = env.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        other_spans.push(span(&job));
    }
    env.use_key(Some(&acme));
    let mut burst_spans = Vec::new();
    for id in &burst {
        let job = env.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        burst_spans.push(span(&job));
    }
    assert_eq!(
        most_at_once(&burst_spans),
        2,
        "acme's jobs ran at most (and at some point exactly) two at a time: {burst_spans:?}"
    );
    // 12 jobs of 300 ms two at a time take ≥ 1.8 s; bolt's finished while
    // acme's burst was still parked.
    let burst_end = burst_spans.iter().map(|s| s.1).max().unwrap();
    let other_end = other_spans.iter().map(|s| s.1).max().unwrap();
    assert!(
        other_end + 1_000 < burst_end,
        "bolt's jobs waited behind acme's burst: bolt done at {other_end}, acme at {burst_end}"
    );
}
