//! Stand-alone `embed` jobs through the API, with the real model: vectors in
//! order, truncation reported, the cache skipping the model, unknown models
//! refused.

use std::time::Duration;

use hopper_tests::{TestEnv, free_port};
use serde_json::json;

#[tokio::test]
async fn embed_jobs_return_vectors_report_truncation_and_hit_the_cache() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let addr = format!("127.0.0.1:{}", free_port());
    env.start_worker("embed", &[("HOPPER_WORKER_METRICS_ADDR", addr.as_str())]);
    let metrics_url = format!("http://{addr}/metrics");

    let long = "word ".repeat(600);
    let texts = json!(["A cat sat on the mat.", "Ein Hund läuft im Park.", long]);
    let (s, b) = env.post("/v1/jobs/embed", &json!({ "texts": texts })).await;
    assert_eq!(s, 202, "{b}");
    let job = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let r = &job["result"];
    assert_eq!(r["count"], 3);
    assert_eq!(r["dim"], 384);
    assert_eq!(
        r["truncated"], 1,
        "the 600-word text was cut, and said so: {r}"
    );
    let vectors = r["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 3);
    for v in vectors {
        let norm: f64 = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().powi(2))
            .sum();
        assert!((norm - 1.0).abs() < 1e-3, "unit vectors: {norm}");
    }
    let passes = env
        .metric(
            &metrics_url,
            "hopper_embed_forward_passes_total{model=\"all-MiniLM-L6-v2\"}",
        )
        .await;
    assert!(passes >= 1.0);
    // Per-pass histograms: as many observations as passes, 3 texts in all.
    let sizes = env
        .metric(
            &metrics_url,
            "hopper_embed_batch_size_count{device=\"cpu\"}",
        )
        .await;
    assert_eq!(sizes, passes);
    let texts_in_passes = env
        .metric(&metrics_url, "hopper_embed_batch_size_sum{device=\"cpu\"}")
        .await;
    assert_eq!(texts_in_passes, 3.0);
    let tokens = env
        .metric(
            &metrics_url,
            "hopper_embed_batch_tokens_sum{device=\"cpu\"}",
        )
        .await;
    assert!(
        tokens >= 256.0,
        "the long text alone fills 256 tokens: {tokens}"
    );

    // The same texts again: all from the cache, no forward pass.
    let (_, b) = env.post("/v1/jobs/embed", &json!({ "texts": texts })).await;
    let again = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(again["result"]["vectors"], job["result"]["vectors"]);
    assert_eq!(
        env.metric(
            &metrics_url,
            "hopper_embed_forward_passes_total{model=\"all-MiniLM-L6-v2\"}"
        )
        .await,
        passes
    );
    assert!(
        env.metric(&metrics_url, "hopper_embed_cache_hits_total")
            .await
            >= 3.0
    );

    // A model the worker does not have: dead at once, naming it.
    let (_, b) = env
        .post(
            "/v1/jobs/embed",
            &json!({ "texts": ["x"], "model": "no-such-model" }),
        )
        .await;
    let dead = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["attempts"], 1);
    assert!(
        dead["error"].as_str().unwrap().contains("no-such-model"),
        "{dead}"
    );

    // Bad embed requests are refused at the API.
    let (s, e) = env.post("/v1/jobs/embed", &json!({ "texts": [] })).await;
    assert_eq!((s, e["field"].clone()), (422, json!("texts")), "{e}");
}

#[tokio::test]
async fn the_embed_queue_claims_only_while_the_engine_has_room() {
    // An engine that holds 64 texts: two 32-text jobs fill it.
    let mut env = TestEnv::new(&[("HOPPER_QUEUE_EMBED_CONCURRENCY", "64")]);
    env.start_api().await;
    env.start_worker("embed", &[("HOPPER_EMBED_QUEUE_TEXTS", "64")]);
    let batch: Vec<serde_json::Value> = (0..24)
        .map(|j| {
            let texts: Vec<String> = (0..32)
                .map(|i| {
                    format!("Backpressure sentence {i} of job {j}, long enough to take a moment.")
                })
                .collect();
            json!({ "texts": texts })
        })
        .collect();
    let ids = env.submit_batch("embed", &batch).await;
    let mut most_running = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, q) = env.queue("embed").await;
        most_running = most_running.max(q["running"].as_u64().unwrap());
        if q["pending"] == 0 && q["running"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not drained: {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Without the gate all 24 would be claimed at once (64 slots). With it:
    // the two jobs the engine holds, plus the few between their claim and
    // their texts reaching the engine, or between their last vector and
    // their ack (still `running` in Redis).
    assert!(most_running <= 8, "{most_running} jobs claimed at once");
    for id in &ids {
        let job = env.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["result"]["count"], 32);
    }
}

#[tokio::test]
async fn large_embed_results_are_stored_and_served_by_reference() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("embed", &[]);
    let texts: Vec<String> = (0..100)
        .map(|i| format!("Stored vector number {i}, too many to inline."))
        .collect();
    let (s, b) = env.post("/v1/jobs/embed", &json!({ "texts": texts })).await;
    assert_eq!(s, 202, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let job = env.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let r = &job["result"];
    assert!(r.get("vectors").is_none(), "not inline: {r}");
    assert_eq!(r["count"], 100);
    let url = r["vectors_url"].as_str().unwrap();
    assert_eq!(url, format!("/v1/jobs/{id}/vectors"));
    let (s, v) = env.get(url).await;
    assert_eq!(s, 200, "{v}");
    let vectors = v["vectors"].as_array().unwrap();
    assert_eq!((vectors.len(), v["dim"].as_u64()), (100, Some(384)));

    // The same first text inline gives the same vector.
    let (_, b) = env
        .post("/v1/jobs/embed", &json!({ "texts": [texts[0].clone()] }))
        .await;
    let small = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    let inline = small["result"]["vectors"][0].as_array().unwrap();
    let stored = vectors[0].as_array().unwrap();
    let dot: f64 = inline
        .iter()
        .zip(stored)
        .map(|(a, b)| a.as_f64().unwrap() * b.as_f64().unwrap())
        .sum();
    assert!(dot > 0.9999, "cosine {dot}");
    let (s, _) = env
        .get(&format!(
            "/v1/jobs/{}/vectors",
            small["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 404, "small results are inline only");
}
