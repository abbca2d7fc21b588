//! Stand-alone `embed` jobs through the API, with the real model: vectors in
//! order, truncation reported, the cache skipping the model, unknown models
//! refused; the admission gate's invariant; and the precision following the
//! CPU (`HOPPER_CPU_BF16=0` plays a CPU without native bf16 on any CPU).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hopper_tests::{TestEnv, binary, free_port};
use serde_json::{Value, json};

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
    // An engine that holds 64 texts: two 32-text jobs fill it. 64 claim
    // slots, so only the admission gate holds the other jobs back in Redis.
    let mut env = TestEnv::new(&[("HOPPER_QUEUE_EMBED_CONCURRENCY", "64")]);
    env.start_api().await;
    let addr = format!("127.0.0.1:{}", free_port());
    env.start_worker(
        "embed",
        &[
            ("HOPPER_EMBED_QUEUE_TEXTS", "64"),
            ("HOPPER_WORKER_METRICS_ADDR", addr.as_str()),
        ],
    );
    let jobs = 24;
    let batch: Vec<Value> = (0..jobs)
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
    for id in &ids {
        let job = env.wait_final(id, Duration::from_secs(120)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["result"]["count"], 32);
    }
    // The worker counts, as they happen, the texts holding room in the
    // engine and those waiting for it (from the moment their job starts),
    // with high-water marks: no sampling.
    let url = format!("http://{addr}/metrics");
    let capacity = env.metric(&url, "hopper_embed_capacity_texts").await;
    let admitted = env.metric(&url, "hopper_embed_admitted_texts_max").await;
    let waited = env.metric(&url, "hopper_embed_waiting_texts_max").await;
    let waiting = env.metric(&url, "hopper_embed_waiting_texts").await;
    eprintln!("capacity {capacity}, most admitted {admitted}, most waiting {waited}");
    assert_eq!(capacity, 64.0);
    // What the engine was handed never exceeded its room, and it was used.
    assert!(
        (32.0..=capacity).contains(&admitted),
        "{admitted} texts in an engine with room for {capacity}"
    );
    assert_eq!(waiting, 0.0, "nothing waits once the queue is drained");
    // Claimed jobs wait for room only in the moment between their claim and
    // the gate seeing their texts. Without the gate every job would be
    // claimed at once: 22 of them (704 texts) waiting in this process.
    let total = (jobs * 32) as f64;
    assert!(
        waited <= total / 2.0,
        "{waited} texts claimed beyond the engine's room (of {total})"
    );
}

/// Runs `hopper-worker --queues embed` with `env` plus `extra` until it
/// exits (at most `within`); returns whether it succeeded, its stderr and
/// how long it ran.
fn run_worker(env: &TestEnv, extra: &[(&str, &str)], within: Duration) -> (bool, String, Duration) {
    let bin = binary("hopper-worker");
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["--queues", "embed", "--device", "cpu"])
        .envs(&env.env)
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hopper-worker");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hopper-worker still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    (status.success(), stderr, started.elapsed())
}

#[test]
fn bf16_on_a_cpu_without_native_bf16_is_refused_at_start_up() {
    let env = TestEnv::new(&[("HOPPER_CPU_BF16", "0")]);
    // Refused before Redis, Postgres or the model are touched: quickly.
    let (ok, stderr, took) = run_worker(
        &env,
        &[("HOPPER_PRECISION", "bf16")],
        Duration::from_secs(60),
    );
    assert!(!ok, "bf16 without native bf16 must not start:\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("hopper-worker: precision bf16 refused")
            && last.contains("no native bf16 (HOPPER_CPU_BF16=0)")
            && last.contains("fp32"),
        "the reason, in one line: {stderr}"
    );
    assert!(
        !stderr.contains("frame #") && !stderr.contains("Exception raised from"),
        "no stack trace: {stderr}"
    );
    // And a mistyped override is refused too, naming it.
    let (ok, stderr, _) = run_worker(
        &env,
        &[("HOPPER_CPU_BF16", "maybe")],
        Duration::from_secs(60),
    );
    assert!(!ok && stderr.contains("HOPPER_CPU_BF16=maybe"), "{stderr}");
}

/// `/health/ready`'s `embedding` component once the models are loaded.
async fn embedding_when_loaded(addr: &str) -> Value {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/health/ready")).send().await
            && let Ok(body) = r.json::<Value>().await
            && body["components"]["embedding"]["loaded"] == true
        {
            return body["components"]["embedding"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the worker on {addr} never loaded its model"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn auto_precision_follows_the_cpu_and_says_so_in_health() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    // A CPU without native bf16 (whatever this one is): fp32, and why.
    let plain = format!("127.0.0.1:{}", free_port());
    env.start_worker(
        "embed",
        &[
            ("HOPPER_CPU_BF16", "0"),
            ("HOPPER_WORKER_METRICS_ADDR", plain.as_str()),
        ],
    );
    let e = embedding_when_loaded(&plain).await;
    assert_eq!(e["precision"], "fp32", "{e}");
    assert_eq!(e["precision_asked"], "auto", "{e}");
    assert_eq!(e["cpu_bf16"], false, "{e}");
    assert_eq!(e["kernels"], "onednn", "fp32 keeps oneDNN's GEMMs: {e}");
    assert!(
        e["precision_why"]
            .as_str()
            .is_some_and(|w| w.contains("HOPPER_CPU_BF16=0")),
        "{e}"
    );
    // It embeds.
    let (s, b) = env
        .post(
            "/v1/jobs/embed",
            &json!({ "texts": ["A CPU without bf16."] }),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let job = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");

    // This CPU as it is: bf16 exactly where it has native bf16.
    let native = format!("127.0.0.1:{}", free_port());
    env.start_worker("embed", &[("HOPPER_WORKER_METRICS_ADDR", native.as_str())]);
    let e = embedding_when_loaded(&native).await;
    let has = e["cpu_bf16"].as_bool().expect("cpu_bf16 on a CPU");
    eprintln!("this CPU: {}", e["detail"]);
    assert_eq!(e["precision"], if has { "bf16" } else { "fp32" }, "{e}");
    assert_eq!(e["kernels"], "onednn", "{e}");
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
