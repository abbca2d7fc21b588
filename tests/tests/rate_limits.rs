//! A rate-limited task against the real binaries: `echo` limited to 20/s
//! (`HOPPER_QUEUE_ECHO_RATE_LIMIT`) and drained by three workers of 8 slots
//! each starts at most 20 jobs a second plus one bucket (20) over any 10 s,
//! and keeps up that rate (no worker idles the bucket away).

use std::time::Duration;

use hopper_tests::TestEnv;
use serde_json::json;

#[tokio::test]
async fn twenty_a_second_across_three_workers_stays_within_one_bucket_over_ten_seconds() {
    let mut env = TestEnv::new(&[
        ("HOPPER_QUEUE_ECHO_RATE_LIMIT", "20/s"),
        ("HOPPER_QUEUE_ECHO_CONCURRENCY", "8"),
        ("HOPPER_RATE_PER_KEY", "0"),
        ("HOPPER_RATE_GLOBAL", "0"),
    ]);
    env.start_api().await;
    let ids = env
        .submit_batch("echo", &vec![json!({ "message": "limited" }); 260])
        .await;
    for _ in 0..3 {
        env.start_worker("echo", &[]);
    }
    let mut starts = Vec::with_capacity(ids.len());
    for id in &ids {
        let job = env.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        starts.push(job["started_at_ms"].as_i64().expect("started_at_ms"));
    }
    starts.sort_unstable();
    // Every 10-second window from a start on: at most 10 s × 20/s + one bucket.
    let mut busiest = 0;
    for (i, &from) in starts.iter().enumerate() {
        let n = starts[i..]
            .iter()
            .take_while(|&&t| t < from + 10_000)
            .count();
        busiest = busiest.max(n);
    }
    assert!(
        busiest <= 220,
        "{busiest} starts in 10 s, over 20/s + one bucket"
    );
    // And the rate is used: the first 10 s after the first start hold at
    // least 10 s × 20/s less one bucket.
    let first_window = starts
        .iter()
        .take_while(|&&t| t < starts[0] + 10_000)
        .count();
    assert!(
        first_window >= 180,
        "only {first_window} starts in the first 10 s"
    );
}
