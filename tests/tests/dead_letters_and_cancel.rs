//! Dead-letter operations and cancellation through the API, with a real
//! worker.

use std::time::Duration;

use hopper_tests::TestEnv;
use serde_json::json;

async fn dead_job(env: &TestEnv, msg: &str) -> String {
    let (s, b) = env
        .post(
            "/v1/jobs/echo?max_attempts=1",
            &json!({"message": msg, "fail": "nope"}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let job = env.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "dead", "{job}");
    id
}

#[tokio::test]
async fn dead_letters_are_listed_retried_and_purged() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let a = dead_job(&env, "a").await;
    let b = dead_job(&env, "b").await;
    let c = dead_job(&env, "c").await;

    let (s, page) = env.get("/v1/queues/echo/dead?limit=2").await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["total"], 3);
    let ids: Vec<_> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![c.clone(), b.clone()], "newest first, paged");
    let first = &page["jobs"][0];
    assert_eq!(first["error"], "nope");
    assert_eq!(first["history"][0]["outcome"], "dead", "{first}");

    // Retry one: it runs again (and fails again: its args still say so).
    let (s, r) = env
        .post("/v1/queues/echo/dead/retry", &json!({"ids": [a]}))
        .await;
    assert_eq!((s, r["count"].clone()), (200, json!(1)), "{r}");
    let job = env.wait_final(&a, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "dead");
    assert_eq!(
        job["history"].as_array().unwrap().len(),
        2,
        "both runs in the history: {job}"
    );

    // Purge all: Redis forgets them, Postgres keeps their records.
    let (s, r) = env
        .post("/v1/queues/echo/dead/purge", &json!({"all": true}))
        .await;
    assert_eq!((s, r["count"].clone()), (200, json!(3)), "{r}");
    let (_, page) = env.get("/v1/queues/echo/dead").await;
    assert_eq!(page["total"], 0);
    let (s, job) = env.get(&format!("/v1/jobs/{b}")).await;
    assert_eq!(
        (s, job["state"].clone()),
        (200, json!("dead")),
        "record kept: {job}"
    );

    // Bad selections are refused.
    let (s, r) = env.post("/v1/queues/echo/dead/retry", &json!({})).await;
    assert_eq!(s, 422, "{r}");
    let (s, _) = env
        .post("/v1/queues/echo/dead/explode", &json!({"all": true}))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn pending_and_running_jobs_can_be_cancelled() {
    let lease = [("HOPPER_HEARTBEAT_MS", "100"), ("HOPPER_LEASE_MS", "1000")];
    let mut env = TestEnv::new(&lease);
    env.start_api().await;
    env.start_worker("echo", &[]);

    // Waiting (delayed) job: cancelled at once, never runs.
    let (_, b) = env
        .post("/v1/jobs/echo?delay_ms=60000", &json!({"message": "later"}))
        .await;
    let later = b["id"].as_str().unwrap().to_owned();
    let (s, r) = env
        .post(&format!("/v1/jobs/{later}/cancel"), &json!({}))
        .await;
    assert_eq!((s, r["state"].clone()), (200, json!("cancelled")), "{r}");
    let (_, job) = env.get(&format!("/v1/jobs/{later}")).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["attempts"], 0);

    // Running job: asked to stop; its handler sees the token and ends.
    let (_, b) = env
        .post(
            "/v1/jobs/echo",
            &json!({"message": "long", "sleep_ms": 30000}),
        )
        .await;
    let long = b["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.get(&format!("/v1/jobs/{long}")).await.1["state"] != "running" {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The workers view shows who runs it.
    let (s, w) = env.get("/v1/workers").await;
    assert_eq!(s, 200, "{w}");
    let holders: Vec<_> = w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["queue"] == "echo" && w["running"].as_array().unwrap().contains(&json!(long)))
        .collect();
    assert_eq!(holders.len(), 1, "{w}");
    assert!(
        holders[0]["heartbeat_age_ms"].as_u64().unwrap() < 1000,
        "{w}"
    );
    let (s, r) = env
        .post(&format!("/v1/jobs/{long}/cancel"), &json!({}))
        .await;
    assert_eq!((s, r["state"].clone()), (200, json!("cancelling")), "{r}");
    let job = env.wait_final(&long, Duration::from_secs(10)).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["error"], "cancelled on request");

    let (s, _) = env
        .post(
            &format!("/v1/jobs/{}/cancel", uuid::Uuid::now_v7()),
            &json!({}),
        )
        .await;
    assert_eq!(s, 404);
}
