//! The query lane (`hopper_shared::query_lane`) end to end: the real API,
//! worker and model. A vector search in a document set has its query
//! embedded by a listening worker with no job; a repeat reads the cache; a
//! worker drops what was pushed past its deadline and what is no request;
//! a stopped worker leaves the listeners at once, so a search then asks by
//! an `embed` job, which the next worker runs; and an API with the lane
//! turned off (`HOPPER_SEARCH_QUERY_LANE=false`) always asks by a job.

use std::time::Duration;

use hopper_shared::query_lane::{LaneRequest, lane_key, listeners_key};
use hopper_tests::{TestEnv, free_port, redis_url, until};
use serde_json::{Value, json};

const SET: &str = "lane";

async fn search(env: &TestEnv, query: &str) -> Value {
    let (status, r) = env
        .post(
            "/v1/search",
            &json!({"query": query, "document_set": SET, "k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert!(!r["hits"].as_array().unwrap().is_empty(), "{r}");
    r
}

async fn lane_outcome(env: &TestEnv, outcome: &str) -> f64 {
    env.metric(
        &env.url("/metrics"),
        &format!("hopper_search_query_lane_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

async fn worker_outcome(env: &TestEnv, worker_metrics: &str, outcome: &str) -> f64 {
    env.metric(
        worker_metrics,
        &format!("hopper_query_lane_requests_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

async fn embed_jobs_succeeded(env: &TestEnv) -> u64 {
    env.queue("embed").await.1["succeeded_recent"]
        .as_u64()
        .unwrap()
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn queries_are_embedded_on_the_lane_and_by_a_job_when_no_worker_listens() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let worker = env.start_worker(
        "ingest,embed,summarize",
        &[("HOPPER_WORKER_METRICS_ADDR", addr.as_str())],
    );
    let worker_metrics = format!("http://{addr}/metrics");
    let (status, r) = env
        .post(
            "/v1/documents",
            &json!({"name": "glaciers.txt", "document_set": SET,
                    "text": "Glaciers move downhill under their own weight. Ice deforms \
                             and slides over meltwater at its base.",
                    "options": {"summarize": false}}),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    env.wait_for_set(SET, 1, &["ready"]).await;
    let (_, set) = env.get(&format!("/v1/document-sets/{SET}")).await;
    let model = set["model"]
        .as_str()
        .expect("the set has a model")
        .to_owned();
    let prefix = env.env["HOPPER_KEY_PREFIX"].clone();
    let mut conn = redis().await;
    until(
        "the worker listens on the lane",
        Duration::from_secs(30),
        || {
            let (mut conn, key) = (conn.clone(), listeners_key(&prefix, &model));
            async move {
                redis::AsyncCommands::zcard::<_, u64>(&mut conn, key)
                    .await
                    .unwrap()
                    == 1
            }
        },
    )
    .await;

    // A query never asked: the lane answers, no embed job runs.
    let jobs = embed_jobs_succeeded(&env).await;
    let r = search(&env, "how do glaciers move").await;
    assert_eq!(r["model"], json!(model));
    assert_eq!(lane_outcome(&env, "answered").await, 1.0);
    assert_eq!(worker_outcome(&env, &worker_metrics, "answered").await, 1.0);
    // Asked again: the cache answers, the lane is not asked.
    search(&env, "how do glaciers move").await;
    assert_eq!(lane_outcome(&env, "answered").await, 1.0);
    assert_eq!(embed_jobs_succeeded(&env).await, jobs, "no embed job ran");

    // Past its deadline, or no request at all: dropped unanswered.
    let lane = lane_key(&prefix, &model);
    let stale = LaneRequest {
        id: uuid::Uuid::new_v4(),
        text: "a query nobody waits for".into(),
        deadline_ms: hopper_queue::now_ms() - 1,
    };
    let _: () = redis::AsyncCommands::rpush(&mut conn, &lane, stale.encode())
        .await
        .unwrap();
    let _: () = redis::AsyncCommands::rpush(&mut conn, &lane, "not a request")
        .await
        .unwrap();
    until("both dropped", Duration::from_secs(30), || async {
        worker_outcome(&env, &worker_metrics, "expired").await == 1.0
            && worker_outcome(&env, &worker_metrics, "malformed").await == 1.0
    })
    .await;
    let reply = hopper_shared::query_lane::reply_key(&prefix, stale.id);
    let exists: bool = redis::AsyncCommands::exists(&mut conn, &reply)
        .await
        .unwrap();
    assert!(!exists, "a stale request got a reply");

    // A stopped worker leaves the listeners at once: the next query is
    // asked by a job, which the next worker runs.
    assert!(env.terminate(worker).success());
    let listening: u64 = redis::AsyncCommands::zcard(&mut conn, listeners_key(&prefix, &model))
        .await
        .unwrap();
    assert_eq!(listening, 0, "the stopped worker still listens");
    let asked = {
        let (http, url) = (env.http().clone(), env.url("/v1/search"));
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"query": "what melts a glacier", "document_set": SET, "k": 3}))
                .send()
                .await
                .unwrap()
        })
    };
    until(
        "the query's embed job is queued",
        Duration::from_secs(30),
        || async { env.queue("embed").await.1["pending"] == 1 },
    )
    .await;
    assert_eq!(lane_outcome(&env, "no_listener").await, 1.0);
    env.start_worker("embed", &[]);
    let response = tokio::time::timeout(Duration::from_secs(60), asked)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(response.status(), 200);
    until(
        "the embed job is recorded",
        Duration::from_secs(30),
        || async { embed_jobs_succeeded(&env).await == jobs + 1 },
    )
    .await;
}

#[tokio::test]
async fn an_api_with_the_lane_off_asks_by_a_job() {
    let mut env = TestEnv::new(&[("HOPPER_SEARCH_QUERY_LANE", "false")]);
    env.start_api().await;
    env.start_worker("ingest,embed,summarize", &[]);
    let (status, r) = env
        .post(
            "/v1/documents",
            &json!({"name": "tides.txt", "document_set": SET,
                    "text": "Tides rise and fall twice a day, pulled by the moon.",
                    "options": {"summarize": false}}),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    env.wait_for_set(SET, 1, &["ready"]).await;
    let jobs = embed_jobs_succeeded(&env).await;
    search(&env, "why do tides happen").await;
    assert_eq!(embed_jobs_succeeded(&env).await, jobs + 1);
    for outcome in ["answered", "no_listener", "timeout", "error"] {
        assert_eq!(lane_outcome(&env, outcome).await, 0.0, "{outcome}");
    }
}
