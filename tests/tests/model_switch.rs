//! Models of any dimension in the document pipeline, and switching a
//! document set to another model with zero downtime (issue 19, items 1–2).
//!
//! A second, real BERT model of another size (768-d, 2 layers, random
//! weights: `scripts/make-test-model`, checked against sentence-transformers
//! by `worker/tests/second_model.rs`) is served beside all-MiniLM-L6-v2
//! (384-d) by one worker. A set names its model; its chunks and its search
//! queries are embedded with it. A re-embed moves a set from one model to
//! the other while searches keep answering, takes in a document uploaded
//! meanwhile, flips the set when every chunk has a vector of the new model,
//! and drops the old vectors after the grace period. A cancelled re-embed
//! leaves the set as it was. The refusals name what is wrong.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use hopper_tests::{TestEnv, until, workspace};
use serde_json::{Value, json};

/// The second model, made once per machine under the cache (the script
/// skips the work when the directory holds the same model already).
fn second_model() -> PathBuf {
    let cache = std::env::var("HOPPER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join(".cache"));
    let dir = cache.join("models/test-bert-768");
    let out = Command::new(workspace().join("scripts/make-test-model"))
        .arg(&dir)
        .output()
        .expect("run scripts/make-test-model");
    assert!(
        out.status.success(),
        "scripts/make-test-model failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn minilm() -> String {
    std::env::var("HOPPER_MODEL_DIR").unwrap_or_else(|_| {
        workspace()
            .join(".cache/models/all-MiniLM-L6-v2")
            .display()
            .to_string()
    })
}

/// Topical paragraphs: each document has several chunks' worth of text.
fn paragraph(topic: &str, i: usize) -> String {
    let sentences = [
        format!("The {topic} report number {i} describes how the system behaves under load."),
        format!("Operators of the {topic} service restart it when the queue grows past its limit."),
        format!(
            "A failed {topic} job is retried with backoff and lands in the dead letters after its last attempt."
        ),
        format!("Vectors of {topic} chunks are stored beside their text, one per model."),
    ];
    let mut text = String::new();
    for round in 0..12 {
        for s in &sentences {
            text.push_str(s);
            text.push_str(&format!(" (part {round}) "));
        }
    }
    text
}

async fn upload(env: &TestEnv, name: &str, set: &str, model: Option<&str>) -> (u16, Value) {
    let mut options = json!({"summarize": false, "chunk_tokens": 64, "chunk_overlap": 0});
    if let Some(m) = model {
        options["model"] = json!(m);
    }
    env.post(
        "/v1/documents",
        &json!({"name": name, "text": paragraph(name, name.len()), "document_set": set,
                "options": options}),
    )
    .await
}

async fn search(env: &TestEnv, body: Value) -> Value {
    let (s, r) = env.post("/v1/search", &body).await;
    assert_eq!(s, 200, "{body} → {r}");
    r
}

async fn set_view(env: &TestEnv, set: &str) -> Value {
    let (s, r) = env.get(&format!("/v1/document-sets/{set}")).await;
    assert_eq!(s, 200, "{r}");
    r
}

/// Chunks of `set`'s current versions without a vector of `model`.
async fn chunks_without(pool: &deadpool_postgres::Pool, set: &str, model: &str) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM documents d \
             JOIN chunks c ON c.document_id = d.id AND c.version = d.version \
             WHERE d.document_set = $1 AND NOT EXISTS ( \
                 SELECT 1 FROM chunk_vectors v JOIN embedding_models m ON m.id = v.model_id \
                 WHERE v.chunk_id = c.id AND m.model = $2)",
            &[&set, &model],
        )
        .await
        .unwrap()
        .get(0)
}

/// Vectors of `model` held by `set`'s chunks.
async fn vectors_of(pool: &deadpool_postgres::Pool, set: &str, model: &str) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM chunk_vectors v \
             JOIN embedding_models m ON m.id = v.model_id \
             JOIN chunks c ON c.id = v.chunk_id JOIN documents d ON d.id = c.document_id \
             WHERE d.document_set = $1 AND m.model = $2",
            &[&set, &model],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn sets_of_two_dimensions_and_a_zero_downtime_switch() {
    let bert = second_model();
    let mut env = TestEnv::new(&[
        ("HOPPER_REEMBED_GRACE_MS", "3000"),
        ("HOPPER_RETENTION_SWEEP_MS", "500"),
    ]);
    env.start_api().await;
    let models = format!("{},bert768={}", minilm(), bert.display());
    env.start_worker("ingest,embed,summarize", &[("HOPPER_MODEL_DIR", &models)]);
    let pool = env.pool();

    // The worker registers both models; the API names them when refusing one.
    until("both models served", Duration::from_secs(300), || async {
        let (s, r) = upload(&env, "probe", "probe", Some("nope")).await;
        s == 422 && r["known"].as_array().is_some_and(|k| k.len() == 2)
    })
    .await;
    let (s, r) = upload(&env, "probe", "probe", Some("nope")).await;
    assert_eq!(
        (s, r["error"].as_str()),
        (422, Some("unknown_model")),
        "{r}"
    );
    assert_eq!(r["field"], "options.model");
    let known: Vec<&str> = r["known"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let mini_model = known
        .iter()
        .find(|m| m.starts_with("all-MiniLM-L6-v2@"))
        .expect("MiniLM served")
        .to_string();
    let bert_model = known
        .iter()
        .find(|m| m.starts_with("bert768@"))
        .expect("bert768 served")
        .to_string();

    // Two sets, two dimensions: `small` takes the worker's default, `large` asks for bert768.
    for i in 0..6 {
        assert_eq!(
            upload(&env, &format!("small-{i}"), "small", None).await.0,
            202
        );
        assert_eq!(
            upload(&env, &format!("large-{i}"), "large", Some("bert768"))
                .await
                .0,
            202
        );
    }
    env.wait_for_set("small", 6, &["ready"]).await;
    env.wait_for_set("large", 6, &["ready"]).await;
    assert_eq!(set_view(&env, "small").await["model"], json!(mini_model));
    assert_eq!(set_view(&env, "large").await["model"], json!(bert_model));
    let dims: Vec<(String, i32)> = pool
        .get()
        .await
        .unwrap()
        .query("SELECT model, dim FROM embedding_models ORDER BY dim", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(dims, [(mini_model.clone(), 384), (bert_model.clone(), 768)]);
    // A set holds one model.
    let (s, r) = upload(&env, "other", "large", Some("all-MiniLM-L6-v2")).await;
    assert_eq!(
        (s, r["field"].as_str()),
        (422, Some("options.model")),
        "{r}"
    );

    // Each set's search embeds the query with the set's model and finds its chunks.
    let query = "how is a failed job retried";
    let r = search(
        &env,
        json!({"query": query, "document_set": "large", "k": 5}),
    )
    .await;
    assert_eq!(r["model"], json!(bert_model));
    assert_eq!(r["hits"].as_array().unwrap().len(), 5, "{r}");
    let r = search(
        &env,
        json!({"query": query, "document_set": "small", "k": 5}),
    )
    .await;
    assert_eq!(r["model"], json!(mini_model));
    assert_eq!(r["hits"].as_array().unwrap().len(), 5, "{r}");
    // A model the set has no vectors of is refused, naming the set's.
    let (s, r) = env
        .post(
            "/v1/search",
            &json!({"query": query, "document_set": "small", "model": "bert768"}),
        )
        .await;
    assert_eq!((s, r["field"].as_str()), (422, Some("model")), "{r}");

    // Refusals of a re-embed.
    for (body, status, field) in [
        (json!({"model": "nope"}), 422, Some("model")),
        (json!({}), 422, Some("model")),
        (json!({"model": 7}), 422, Some("model")),
        (json!({"model": "all-MiniLM-L6-v2"}), 422, Some("model")),
    ] {
        let (s, r) = env.post("/v1/document-sets/small/reembed", &body).await;
        assert_eq!((s, r["field"].as_str()), (status, field), "{body} → {r}");
    }
    let (s, r) = env
        .post(
            "/v1/document-sets/unknown/reembed",
            &json!({"model": "bert768"}),
        )
        .await;
    assert_eq!(
        (s, r["error"].as_str()),
        (404, Some("document_set_not_found")),
        "{r}"
    );

    // The switch: `small` from MiniLM to bert768.
    let before = chunks_without(&pool, "small", &mini_model).await;
    assert_eq!(before, 0);
    let (s, started) = env
        .post(
            "/v1/document-sets/small/reembed",
            &json!({"model": "bert768"}),
        )
        .await;
    assert_eq!(s, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(started["model"], json!(bert_model));
    assert!(started["chunks_total"].as_i64().unwrap() > 0, "{started}");
    // One re-embed per set: a second is 409 with the running one's id.
    let (s, r) = env
        .post(
            "/v1/document-sets/small/reembed",
            &json!({"model": "bert768"}),
        )
        .await;
    assert_eq!(
        (s, r["error"].as_str()),
        (409, Some("reembed_running")),
        "{r}"
    );
    assert_eq!(r["id"], json!(id));
    // A document uploaded during the re-embed ends up with the new model's vector too.
    assert_eq!(upload(&env, "small-late", "small", None).await.0, 202);

    // Search keeps answering throughout: from the old vectors until the flip, then the new.
    let mut answered_before_flip = 0;
    let started_at = Instant::now();
    loop {
        let view = set_view(&env, "small").await;
        let r = search(
            &env,
            json!({"query": query, "document_set": "small", "k": 5}),
        )
        .await;
        assert_eq!(r["hits"].as_array().unwrap().len(), 5, "{r}");
        let state = view["reembed"]["state"].as_str().unwrap_or("?").to_owned();
        if state == "running" && r["model"] == json!(mini_model) {
            answered_before_flip += 1;
        }
        if state == "done" {
            break;
        }
        assert!(
            started_at.elapsed() < Duration::from_secs(300),
            "the re-embed did not finish: {view}"
        );
    }
    assert!(
        answered_before_flip > 0,
        "no search ran during the re-embed"
    );
    // The repeated query's vector came from the workers' cache, with no embed job.
    let hits = env
        .metric(&env.url("/metrics"), "hopper_search_query_cache_hits_total")
        .await;
    assert!(hits > 0.0, "no search read its query vector from the cache");
    env.wait_for_set("small", 7, &["ready"]).await;
    let view = set_view(&env, "small").await;
    assert_eq!(view["model"], json!(bert_model), "{view}");
    assert_eq!(view["previous_model"], json!(mini_model), "{view}");
    let reembed = &view["reembed"];
    assert_eq!(reembed["chunks_done"], reembed["chunks_total"], "{view}");
    assert_eq!(reembed["batches_done"], reembed["batches"], "{view}");
    assert_eq!(chunks_without(&pool, "small", &bert_model).await, 0);
    let r = search(
        &env,
        json!({"query": query, "document_set": "small", "k": 5}),
    )
    .await;
    assert_eq!(r["model"], json!(bert_model));

    // A/B while both exist: the old model by name, then gone after the grace period.
    let r = search(
        &env,
        json!({"query": query, "document_set": "small", "model": "all-MiniLM-L6-v2", "k": 5}),
    )
    .await;
    assert_eq!(r["model"], json!(mini_model));
    assert_eq!(r["hits"].as_array().unwrap().len(), 5, "{r}");
    until(
        "the old vectors dropped",
        Duration::from_secs(60),
        || async {
            vectors_of(&pool, "small", &mini_model).await == 0
                && set_view(&env, "small").await["previous_model"].is_null()
        },
    )
    .await;
    let (s, r) = env
        .post(
            "/v1/search",
            &json!({"query": query, "document_set": "small", "model": "all-MiniLM-L6-v2"}),
        )
        .await;
    assert_eq!((s, r["field"].as_str()), (422, Some("model")), "{r}");

    // A cancelled re-embed leaves the set as it was and drops what it wrote.
    let (s, r) = env
        .post(
            "/v1/document-sets/large/reembed",
            &json!({"model": "all-MiniLM-L6-v2"}),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let (s, r) = env
        .post("/v1/document-sets/large/reembed/cancel", &json!({}))
        .await;
    assert_eq!((s, r["state"].as_str()), (200, Some("cancelled")), "{r}");
    assert_eq!(vectors_of(&pool, "large", &mini_model).await, 0);
    let view = set_view(&env, "large").await;
    assert_eq!(view["model"], json!(bert_model));
    assert_eq!(view["reembed"]["state"], "cancelled");
    let (s, _) = env
        .post("/v1/document-sets/large/reembed/cancel", &json!({}))
        .await;
    assert_eq!(s, 404);
    // Its queued batches end without storing anything.
    until(
        "the cancelled batches ran",
        Duration::from_secs(120),
        || async {
            let (_, q) = env.get("/v1/queues").await;
            q["queues"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|q| q["queue"] == "embed")
                .all(|q| q["pending"] == 0 && q["running"] == 0)
        },
    )
    .await;
    assert_eq!(vectors_of(&pool, "large", &mini_model).await, 0);
    let r = search(
        &env,
        json!({"query": query, "document_set": "large", "k": 3}),
    )
    .await;
    assert_eq!(r["model"], json!(bert_model));

    // The CLI lists both sets with their models.
    let out = env.cli(&["documents", "sets"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("small") && text.contains(&bert_model),
        "{text}"
    );
    assert!(text.contains("cancelled"), "{text}");
}
