//! Unique jobs over HTTP, against the real API, worker, Redis and Postgres:
//! `POST /v1/jobs/{task}?unique_until_finished=true` sent 50 times at once
//! makes one job (one 202, 49 × 200 naming it); once it is over the next
//! submission makes a new one; bad unique options get a 422 naming them.

use std::time::Duration;

use hopper_tests::TestEnv;
use serde_json::json;

#[tokio::test]
async fn a_unique_job_submitted_fifty_times_at_once_exists_once() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let path = "/v1/jobs/echo?unique_until_finished=true";
    let body = json!({ "message": "once" });
    let replies = futures::future::join_all((0..50).map(|_| env.post(path, &body))).await;
    let accepted: Vec<_> = replies.iter().filter(|(s, _)| *s == 202).collect();
    assert_eq!(accepted.len(), 1, "{replies:?}");
    let id = accepted[0].1["id"].clone();
    for (status, reply) in &replies {
        assert!(*status == 202 || *status == 200, "{status} {reply}");
        assert_eq!(reply["id"], id, "every submission names the one job");
        assert_eq!(reply["created"], *status == 202);
    }
    let (_, queue) = env.queue("echo").await;
    assert_eq!(queue["pending"], 1, "{queue}");

    // Run it: once it is over, the key is free and the next one is new.
    env.start_worker("echo", &[]);
    let job = env
        .wait_final(id.as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (status, next) = env.post(path, &body).await;
    assert_eq!(status, 202, "{next}");
    assert_ne!(next["id"], id);

    // A window holds whatever the job does; a given key spans arguments.
    let windowed = "/v1/jobs/echo?unique_for_ms=60000&unique_key=report";
    let (s1, a) = env.post(windowed, &json!({ "message": "a" })).await;
    let (s2, b) = env.post(windowed, &json!({ "message": "b" })).await;
    assert_eq!((s1, s2), (202, 200), "{a} {b}");
    assert_eq!(a["id"], b["id"]);
}

#[tokio::test]
async fn bad_unique_options_get_a_422_naming_them() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let body = json!({ "message": "x" });
    for (query, field) in [
        (
            "unique_for_ms=1000&unique_until_finished=true",
            "unique_for_ms",
        ),
        ("unique_for_ms=0", "unique_for_ms"),
        ("unique_for_ms=2592000001", "unique_for_ms"),
        ("unique_key=k", "unique_key"),
        ("unique_until_finished=true&unique_key=", "unique_key"),
    ] {
        let (status, reply) = env.post(&format!("/v1/jobs/echo?{query}"), &body).await;
        assert_eq!(status, 422, "{query}: {reply}");
        assert_eq!(reply["field"], field, "{query}: {reply}");
    }
    let (_, queue) = env.queue("echo").await;
    assert_eq!(queue["pending"], 0, "nothing queued: {queue}");
}
