//! The document pipeline's own guarantees, against the real binaries:
//! another tenant cannot re-run a document's pipeline (neither through the
//! API nor as a compromised producer pushing jobs straight into Redis); an
//! ingest run again never strands a document; a refused upload leaves no
//! row; chunking options are range-checked; event streams are capped in
//! number per tenant and in lifetime.

use std::time::{Duration, Instant};

use hopper_queue::{PushOptions, QueueClient};
use hopper_shared::jobs::JobKind;
use hopper_tests::{PrivateRedis, TestEnv, sse::read_to_end};
use serde_json::{Value, json};

const OTTERS: &str = "Sea otters hold hands while they sleep so that they do not drift apart.\n\n\
    They keep a favourite stone in a pouch of loose skin under each forearm and use it to crack shellfish.";

fn pipeline_env(extra: &[(&str, &str)]) -> TestEnv {
    let mut vars = vec![("HOPPER_HEARTBEAT_MS", "200"), ("HOPPER_LEASE_MS", "1000")];
    vars.extend_from_slice(extra);
    TestEnv::new(&vars)
}

/// Opens `GET /v1/documents/{id}/events` with `key`.
async fn open_stream(env: &TestEnv, key: Option<&str>, id: &str) -> reqwest::Response {
    let req = env
        .http()
        .get(env.url(&format!("/v1/documents/{id}/events")));
    let req = match key {
        Some(k) => req.bearer_auth(k),
        None => req,
    };
    req.send().await.unwrap()
}

/// Follows a document's events until the stream ends; returns the last
/// `progress` event.
async fn follow(env: &TestEnv, key: Option<&str>, id: &str, within: Duration) -> Value {
    let events = read_to_end(open_stream(env, key, id).await, within).await;
    events
        .iter()
        .rev()
        .find(|(name, _)| name == "progress")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no progress event: {events:?}"))
}

/// Polls the document (with the environment's current key) until `done`
/// holds for it; returns it.
async fn wait_document(env: &TestEnv, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, d) = env.get(&format!("/v1/documents/{id}")).await;
        if s == 200 && done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "document never got there: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows in the environment's `documents` table.
async fn document_rows(env: &TestEnv) -> i64 {
    let client = env.pool().get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM documents", &[])
        .await
        .unwrap()
        .get(0)
}

/// Whether a search (with the current key) ranks `id` first.
async fn search_finds(env: &TestEnv, query: &str, id: &str) -> bool {
    let (s, r) = env
        .post("/v1/search", &json!({"query": query, "k": 3}))
        .await;
    assert_eq!(s, 200, "{r}");
    r["hits"][0]["document_id"] == id
}

/// The embed jobs waiting in their queue.
async fn pending_embeds(env: &TestEnv) -> Vec<Value> {
    let (s, l) = env
        .get("/v1/jobs?queue=embed&state=pending&limit=500")
        .await;
    assert_eq!(s, 200, "{l}");
    l["jobs"].as_array().unwrap().clone()
}

/// Pushes a job straight into Redis for `tenant`, as a pipeline step (or a
/// compromised producer) would, without the API's checks.
/// Uploads the otters text as the env's current key; its document id.
async fn upload_otters(env: &TestEnv) -> String {
    let (s, up) = env
        .post(
            "/v1/documents",
            &json!({"name": "otters.txt", "text": OTTERS}),
        )
        .await;
    assert_eq!(s, 202, "{up}");
    up["document_id"].as_str().unwrap().to_owned()
}

async fn push_raw(env: &TestEnv, kind: JobKind, args: Value, tenant: &str) -> String {
    let queue = QueueClient::connect(&env.config()).await.unwrap();
    let opts = PushOptions {
        tenant: Some(tenant.into()),
        ..Default::default()
    };
    queue.push(kind, &args, &opts).await.unwrap().id.to_string()
}

#[tokio::test]
async fn another_tenant_cannot_rerun_or_rewrite_a_documents_pipeline() {
    let mut env = pipeline_env(&[("HOPPER_AUTH", "keys")]);
    env.start_api().await;
    let acme = env.create_key("acme", "submit,read").await;
    let evil = env.create_key("evil", "submit,read").await;
    // A tenant whose name is the first word of the pipeline's old
    // idempotency keys (`doc:<id>:v1:embed:0`).
    let doc = env.create_key("doc", "submit,read").await;

    env.use_key(Some(&acme));
    let id = upload_otters(&env).await;

    // Before acme's ingest runs, tenant `doc` submits an embed job whose
    // key, prefixed with its tenant, is the one acme's first batch needs.
    env.use_key(Some(&doc));
    let (s, b) = env
        .request(
            env.http()
                .post(env.url("/v1/jobs/embed"))
                .header("idempotency-key", format!("{id}:v1:embed:0"))
                .json(&json!({"texts": ["squatting on a pipeline key"]})),
        )
        .await;
    assert_eq!(s, 202, "{b}");

    env.start_worker("ingest,embed,summarize", &[]);
    let last = follow(&env, Some(&acme), &id, Duration::from_secs(120)).await;
    assert_eq!(last["status"], "ready", "{last}");
    env.use_key(Some(&acme));
    let (_, before) = env.get(&format!("/v1/documents/{id}")).await;
    assert!(
        !before["summary"].as_str().unwrap_or("").is_empty(),
        "{before}"
    );
    assert!(search_finds(&env, "otters holding hands asleep", &id).await);

    let doc_id: uuid::Uuid = id.parse().unwrap();
    let client = env.pool().get().await.unwrap();
    let chunk_ids: Vec<uuid::Uuid> = client
        .query(
            "SELECT id FROM chunks WHERE document_id = $1 ORDER BY ordinal",
            &[&doc_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let batch = json!({"document_id": id, "version": 1, "batch_no": 0, "chunk_ids": chunk_ids});

    // Through the API: refused, naming why.
    env.use_key(Some(&evil));
    for kind in ["ingest", "summarize"] {
        let (s, b) = env
            .post(&format!("/v1/jobs/{kind}"), &json!({"document_id": id}))
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (422, Some("internal_kind")),
            "{b}"
        );
        assert!(
            b["detail"].as_str().unwrap().contains("POST /v1/documents"),
            "{b}"
        );
        let (s, b) = env
            .post(
                &format!("/v1/jobs/{kind}/batch"),
                &json!([{"document_id": id}]),
            )
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (422, Some("internal_kind")),
            "{b}"
        );
    }
    let (s, b) = env.post("/v1/jobs/embed", &json!({"batch": batch})).await;
    assert_eq!((s, b["field"].as_str()), (422, Some("batch")), "{b}");
    let (s, b) = env
        .post("/v1/jobs/embed/batch", &json!([{"batch": batch}]))
        .await;
    assert_eq!((s, b["field"].as_str()), (422, Some("[0].batch")), "{b}");

    // Pushed straight into Redis as tenant evil: each is skipped, having
    // found no document of its tenant.
    let jobs = [
        (JobKind::Ingest, json!({"document_id": id})),
        (JobKind::Summarize, json!({"document_id": id})),
        (JobKind::Embed, json!({"batch": batch})),
    ];
    for (kind, args) in jobs {
        let job = push_raw(&env, kind, args, "evil").await;
        let j = env.wait_final(&job, Duration::from_secs(60)).await;
        assert_eq!(j["state"].as_str(), Some("succeeded"), "{kind}: {j}");
        let skipped = j["result"]["skipped"].as_str().unwrap_or_default();
        assert!(skipped.contains("not found"), "{kind}: {j}");
    }

    // Acme's document is as it was (not even touched), and searchable.
    env.use_key(Some(&acme));
    let (_, after) = env.get(&format!("/v1/documents/{id}")).await;
    assert_eq!(after, before, "acme's document changed");
    let embedded: i64 = client
        .query_one(
            "SELECT count(v.chunk_id) FROM chunks c \
             LEFT JOIN chunk_vectors v ON v.chunk_id = c.id WHERE c.document_id = $1",
            &[&doc_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(embedded, chunk_ids.len() as i64);
    assert!(search_finds(&env, "otters holding hands asleep", &id).await);
}

#[tokio::test]
async fn an_ingest_run_again_finishes_its_document_and_queues_nothing_twice() {
    let mut env = pipeline_env(&[]);
    env.start_api().await;
    env.start_worker("ingest,summarize", &[]);
    let paragraphs: Vec<String> = (0..90)
        .map(|i| {
            format!("Paragraph {i} tells of river {i}, its bridges and the towns along its banks.")
        })
        .collect();
    let (s, up) = env
        .post(
            "/v1/documents",
            &json!({"name": "rivers.txt", "text": paragraphs.join("\n\n"),
                    "options": {"chunk_tokens": 24, "chunk_overlap": 0}}),
        )
        .await;
    assert_eq!(s, 202, "{up}");
    let id = up["document_id"].as_str().unwrap().to_owned();

    // No embed worker yet: the document waits in `embedding`.
    let d = wait_document(&env, &id, |d| d["status"] == "embedding").await;
    let total = d["chunks_total"].as_i64().unwrap();
    let batches = (total + 31) / 32;
    assert!(batches >= 2, "several embed batches: {d}");
    let queued = pending_embeds(&env).await;
    assert_eq!(queued.len() as i64, batches);

    // A client cannot cancel a step of a document's pipeline (the document
    // would wait for it for ever): 409 naming what to do instead.
    let first = queued[0]["id"].as_str().unwrap();
    let (s, c) = env
        .post(&format!("/v1/jobs/{first}/cancel"), &json!({}))
        .await;
    assert_eq!((s, c["error"].as_str()), (409, Some("pipeline_job")), "{c}");
    // Nor the workflow the pipeline runs as.
    let first_ingest = env
        .wait_final(up["job_id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    let workflow = first_ingest["result"]["workflow"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, c) = env
        .post(&format!("/v1/workflows/{workflow}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (s, c["error"].as_str()),
        (409, Some("pipeline_workflow")),
        "{c}"
    );
    let (_, wf) = env.get(&format!("/v1/workflows/{workflow}")).await;
    assert_eq!(wf["state"], "running", "{wf}");
    assert_eq!(wf["nodes"].as_array().unwrap().len() as i64, batches + 1);

    // Lose the embed jobs with no word to their workflow, as lost callbacks
    // would: the document is stranded in `embedding`, its workflow running.
    let queue = QueueClient::connect(&env.config()).await.unwrap();
    for job in &queued {
        let id = job["id"].as_str().unwrap().parse().unwrap();
        let (_, state) = queue.cancel(id).await.unwrap().expect("the job exists");
        assert_eq!(state, "cancelled");
    }

    // The same ingest again, for the document's tenant: it re-chunks
    // nothing, finds the workflow unable to finish (repaired: failed, its
    // body skipped) and starts the next generation with the batches that
    // are not done.
    let ingest = json!({"document_id": id});
    let rerun = push_raw(&env, JobKind::Ingest, ingest.clone(), "default").await;
    let j = env.wait_final(&rerun, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        j["result"]["embed_batches_queued"].as_i64(),
        Some(batches),
        "{j}"
    );
    assert_eq!(j["result"]["generation"], 1, "{j}");
    let (_, wf) = env.get(&format!("/v1/workflows/{workflow}")).await;
    assert_eq!(wf["state"], "failed", "{wf}");
    let body = wf["nodes"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (body["task"].as_str(), body["state"].as_str()),
        (Some("summarize"), Some("skipped")),
        "{wf}"
    );
    // Once more while those wait: nothing is queued twice.
    let again = push_raw(&env, JobKind::Ingest, ingest.clone(), "default").await;
    let j = env.wait_final(&again, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        (
            j["result"]["generation"].as_i64(),
            j["result"]["embed_batches_queued"].as_i64()
        ),
        (Some(1), Some(0)),
        "{j}"
    );
    assert_eq!(pending_embeds(&env).await.len() as i64, batches);

    env.start_worker("embed", &[]);
    let last = follow(&env, None, &id, Duration::from_secs(120)).await;
    assert_eq!(last["status"], "ready", "{last}");
    assert_eq!(
        (
            last["chunks_total"].as_i64(),
            last["chunks_embedded"].as_i64()
        ),
        (Some(total), Some(total)),
        "{last}"
    );
    let doc_id: uuid::Uuid = id.parse().unwrap();
    let client = env.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(v.chunk_id) FROM chunks c \
             LEFT JOIN chunk_vectors v ON v.chunk_id = c.id WHERE c.document_id = $1",
            &[&doc_id],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (total, total));

    // Run again once everything is done: nothing changes, and the event
    // stream ends at once.
    let (_, before) = env.get(&format!("/v1/documents/{id}")).await;
    let late = push_raw(&env, JobKind::Ingest, ingest, "default").await;
    let j = env.wait_final(&late, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let (_, after) = env.get(&format!("/v1/documents/{id}")).await;
    assert_eq!(after, before);
    let last = follow(&env, None, &id, Duration::from_secs(10)).await;
    assert_eq!(last["status"], "ready", "{last}");
    let summaries: i64 = client
        .query_one(
            "SELECT count(*) FROM job_records WHERE kind = 'summarize' AND state = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(summaries, 1, "one summary");
}

#[tokio::test]
async fn a_refused_upload_leaves_no_row_and_chunk_options_are_range_checked() {
    let mut env = TestEnv::new(&[("HOPPER_MAX_PENDING_PER_TENANT", "2")]);
    env.start_api().await;
    let upload = |options: Value| json!({"name": "a.txt", "text": OTTERS, "options": options});

    let (s, b) = env.post("/v1/documents", &upload(json!({}))).await;
    assert_eq!(s, 202, "{b}");

    let refused = [
        (json!({"chunk_tokens": 4}), "options.chunk_tokens"),
        (json!({"chunk_tokens": 100_000}), "options.chunk_tokens"),
        (
            json!({"chunk_tokens": 64, "chunk_overlap": 33}),
            "options.chunk_overlap",
        ),
        (json!({"chunk_overlap": 101}), "options.chunk_overlap"),
    ];
    for (options, field) in refused {
        let (s, b) = env.post("/v1/documents", &upload(options.clone())).await;
        assert_eq!(
            (s, b["field"].as_str()),
            (422, Some(field)),
            "{options}: {b}"
        );
        assert!(b["detail"].as_str().unwrap().contains("between"), "{b}");
    }
    // The same check for multipart uploads.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(OTTERS.as_bytes().to_vec()).file_name("a.txt"),
        )
        .text("options", r#"{"chunk_tokens": 9000}"#);
    let (s, b) = env
        .request(env.http().post(env.url("/v1/documents")).multipart(form))
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (422, Some("options.chunk_tokens")),
        "{b}"
    );

    // The edges are accepted.
    let (s, b) = env
        .post(
            "/v1/documents",
            &upload(json!({"chunk_tokens": 16, "chunk_overlap": 8})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(document_rows(&env).await, 2);

    // The tenant's cap of unfinished ingest jobs is reached: 429, no row.
    let (s, b) = env.post("/v1/documents", &upload(json!({}))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (429, Some("tenant_queue_full")),
        "{b}"
    );
    assert_eq!(
        document_rows(&env).await,
        2,
        "the refused upload left a row"
    );
}

#[tokio::test]
async fn an_ingest_that_runs_before_its_upload_commits_waits_for_it() {
    let mut env = pipeline_env(&[]);
    env.start_api().await;
    env.start_worker("ingest", &[]);
    let doc = hopper_shared::documents::NewDocument {
        tenant: "default".into(),
        name: "early.txt".into(),
        document_set: None,
        content_type: "text/plain".into(),
        body: OTTERS.as_bytes().to_vec(),
        metadata: json!({}),
        options: Default::default(),
    };
    // The upload's own transaction, held open until its ingest job has
    // looked for the row (and waits for this transaction) or has ended.
    let queue = QueueClient::connect(&env.config()).await.unwrap();
    let pool = env.pool();
    let (id, job) = hopper_shared::documents::insert_then(&pool, &doc, |id| {
        let (env, queue, pool) = (&env, &queue, &pool);
        async move {
            let opts = PushOptions::default();
            let args = json!({"document_id": id});
            let job = queue.push(JobKind::Ingest, &args, &opts).await.unwrap().id;
            let watcher = pool.get().await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let waiting: i64 = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                         AND NOT granted AND ((classid::int8 << 32) | objid::int8) = $1",
                        &[&hopper_shared::documents::upload_lock(id)],
                    )
                    .await
                    .unwrap()
                    .get(0);
                let (_, j) = env.get(&format!("/v1/jobs/{job}")).await;
                if waiting > 0 || ["succeeded", "dead"].contains(&j["state"].as_str().unwrap()) {
                    break;
                }
                assert!(Instant::now() < deadline, "never claimed: {j}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, hopper_shared::Error>(job)
        }
    })
    .await
    .unwrap();
    let j = env
        .wait_final(&job.to_string(), Duration::from_secs(60))
        .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 1, "{j}");
    let (_, d) = env.get(&format!("/v1/documents/{id}")).await;
    assert_eq!(d["status"], "embedding", "{d}");
}

#[tokio::test]
async fn an_upload_while_redis_is_down_leaves_no_row() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let mut env = TestEnv::new(&[("REDIS_URL", url.as_str())]);
    env.start_api().await;
    let doc = json!({"name": "a.txt", "text": OTTERS});

    redis.stop();
    let (s, b) = env.post("/v1/documents", &doc).await;
    assert_eq!((s, b["error"].as_str()), (503, Some("unavailable")), "{b}");
    assert_eq!(
        document_rows(&env).await,
        0,
        "the refused upload left a row"
    );

    redis.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, b) = env.post("/v1/documents", &doc).await;
        if s == 202 {
            break;
        }
        assert_eq!(s, 503, "{b}");
        assert!(Instant::now() < deadline, "uploads never resumed: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(document_rows(&env).await, 1);
}

#[tokio::test]
async fn a_tenant_holds_a_bounded_number_of_event_streams() {
    let mut env = TestEnv::new(&[
        ("HOPPER_AUTH", "keys"),
        ("HOPPER_SSE_MAX_STREAMS_PER_TENANT", "2"),
    ]);
    env.start_api().await;
    let acme = env.create_key("acme", "submit,read").await;
    let beta = env.create_key("beta", "submit,read").await;
    let mut docs = Vec::new();
    for key in [&acme, &beta] {
        env.use_key(Some(key));
        let (s, b) = env
            .post("/v1/documents", &json!({"name": "a.txt", "text": OTTERS}))
            .await;
        assert_eq!(s, 202, "{b}");
        docs.push(b["document_id"].as_str().unwrap().to_owned());
    }
    // No worker: the documents stay queued and their streams open.
    let first = open_stream(&env, Some(&acme), &docs[0]).await;
    let second = open_stream(&env, Some(&acme), &docs[0]).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );

    let third = open_stream(&env, Some(&acme), &docs[0]).await;
    assert_eq!(third.status(), 429);
    let b: Value = third.json().await.unwrap();
    assert_eq!(b["error"], "too_many_streams", "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("HOPPER_SSE_MAX_STREAMS_PER_TENANT"),
        "{b}"
    );
    // Per tenant: another one is not affected.
    let other = open_stream(&env, Some(&beta), &docs[1]).await;
    assert_eq!(other.status(), 200);

    // A closed stream frees its slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    let _reopened = loop {
        let res = open_stream(&env, Some(&acme), &docs[0]).await;
        if res.status() == 200 {
            break res;
        }
        assert_eq!(res.status(), 429);
        assert!(Instant::now() < deadline, "the closed stream kept its slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(second);
}

#[tokio::test]
async fn an_event_stream_ends_with_reconnect_at_its_lifetime_cap() {
    let mut env = TestEnv::new(&[
        ("HOPPER_SSE_MAX_LIFETIME_MS", "1500"),
        ("HOPPER_SSE_MAX_STREAMS_PER_TENANT", "1"),
    ]);
    env.start_api().await;
    let (s, b) = env
        .post("/v1/documents", &json!({"name": "a.txt", "text": OTTERS}))
        .await;
    assert_eq!(s, 202, "{b}");
    let id = b["document_id"].as_str().unwrap();

    // No worker: the document never finishes, the stream ends anyway.
    let started = Instant::now();
    let events = read_to_end(open_stream(&env, None, id).await, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{events:?}"
    );
    assert_eq!(
        events.first().map(|e| e.0.as_str()),
        Some("progress"),
        "{events:?}"
    );
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "reconnect", "{events:?}");
    assert_eq!(last["max_lifetime_ms"], 1500, "{last}");
    // The ended stream gave its slot back.
    let again = open_stream(&env, None, id).await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn the_cli_follows_a_document_across_stream_lifetimes() {
    let mut env = pipeline_env(&[("HOPPER_SSE_MAX_LIFETIME_MS", "300")]);
    env.start_api().await;
    let file = std::env::temp_dir().join(format!("hopper-sse-{}.txt", env.id));
    std::fs::write(&file, OTTERS).unwrap();
    let cli = std::process::Command::new(hopper_tests::binary("hopper"))
        .args(["documents", "upload", file.to_str().unwrap()])
        .envs(&env.env)
        .env("HOPPER_API_URL", env.api.clone().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The document waits (no worker) through several stream lifetimes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.get("/v1/documents").await.1["total"] != 1 {
        assert!(Instant::now() < deadline, "never uploaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    env.start_worker("ingest,embed,summarize", &[]);
    let out = tokio::task::spawn_blocking(move || cli.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("status ready"), "{text}");
}

#[tokio::test]
async fn a_document_deleted_mid_pipeline_leaves_no_dead_letters() {
    let mut env = pipeline_env(&[]);
    env.start_api().await;
    env.start_worker("ingest,summarize", &[]);
    let id = upload_otters(&env).await;
    wait_document(&env, &id, |d| d["status"] == "embedding").await;
    let queued = pending_embeds(&env).await;
    assert!(!queued.is_empty());

    // Deleted while its embed jobs wait: they find nothing and end quietly.
    let (s, _) = env.delete(&format!("/v1/documents/{id}")).await;
    assert_eq!(s, 204);
    env.start_worker("embed", &[]);
    for job in &queued {
        let j = env
            .wait_final(job["id"].as_str().unwrap(), Duration::from_secs(60))
            .await;
        assert_eq!(j["state"], "succeeded", "{j}");
        assert!(j["result"]["skipped"].is_string(), "{j}");
    }
    let (_, embed) = env.queue("embed").await;
    assert_eq!(embed["dead"], 0, "{embed}");
}

/// Polls until `queue` holds `n` dead letters.
async fn wait_dead(env: &TestEnv, queue: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, q) = env.queue(queue).await;
        if q["dead"].as_i64() == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "never {n} dead: {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The workflow of generation `generation` of a document's pipeline.
async fn pipeline_workflow(env: &TestEnv, id: &str, generation: u32) -> Value {
    let wf = hopper_shared::documents::workflow_id(id.parse().unwrap(), 1, generation);
    let (s, wf) = env.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(s, 200, "{wf}");
    wf
}

/// The workflow of generation `generation` once it is over. A document is
/// `ready` while the body that made it so is still being acknowledged, and
/// the workflow moves on with that ack.
async fn finished_workflow(env: &TestEnv, id: &str, generation: u32) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = pipeline_workflow(env, id, generation).await;
        if wf["state"] != "running" {
            return wf;
        }
        assert!(Instant::now() < deadline, "workflow still running: {wf}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Summarize jobs of one state, as recorded in Postgres.
async fn summaries(env: &TestEnv, state: &str) -> i64 {
    let client = env.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM job_records WHERE kind = 'summarize' AND state = $1",
            &[&state],
        )
        .await
        .unwrap()
        .get(0)
}

/// The worker settings under which every job of `task` overruns its time
/// limit (1 ms) and dies.
fn overrunning(task: &str) -> [(String, &'static str); 2] {
    let var = |what: &str| format!("HOPPER_QUEUE_{}_{what}_LIMIT_MS", task.to_uppercase());
    [(var("SOFT"), "1"), (var("HARD"), "1")]
}

#[tokio::test]
async fn a_pipeline_whose_body_died_is_finished_by_an_ingest_run_again() {
    let mut env = pipeline_env(&[("HOPPER_QUEUE_SUMMARIZE_MAX_ATTEMPTS", "1")]);
    env.start_api().await;
    env.start_worker("ingest,embed", &[]);
    let limits = overrunning("summarize");
    let limits: Vec<(&str, &str)> = limits.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let doomed = env.start_worker("summarize", &limits);
    let id = upload_otters(&env).await;

    // Every batch embedded, then the body dies: the workflow fails, the
    // document waits (no handler was left to mark it failed).
    wait_dead(&env, "summarize", 1).await;
    let wf = pipeline_workflow(&env, &id, 0).await;
    assert_eq!(wf["state"], "failed", "{wf}");
    let (_, d) = env.get(&format!("/v1/documents/{id}")).await;
    assert_ne!(d["status"], "ready", "{d}");
    assert_eq!(d["chunks_embedded"], d["chunks_total"], "{d}");
    env.kill(doomed);
    env.start_worker("summarize", &[]);

    // The ingest again: the next generation is just the body.
    let rerun = push_raw(&env, JobKind::Ingest, json!({"document_id": id}), "default").await;
    let j = env.wait_final(&rerun, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        (
            j["result"]["generation"].as_i64(),
            j["result"]["embed_batches_queued"].as_i64()
        ),
        (Some(1), Some(0)),
        "{j}"
    );
    let last = follow(&env, None, &id, Duration::from_secs(60)).await;
    assert_eq!(last["status"], "ready", "{last}");
    assert!(!last["summary"].as_str().unwrap_or("").is_empty(), "{last}");
    let wf = finished_workflow(&env, &id, 1).await;
    assert_eq!(wf["state"], "succeeded", "{wf}");
    let nodes = wf["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{wf}");
    assert_eq!(nodes[0]["task"], "summarize", "{wf}");
    assert_eq!(
        (
            summaries(&env, "dead").await,
            summaries(&env, "succeeded").await
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn an_embed_batch_retried_from_the_dead_letters_finishes_its_document() {
    let mut env = pipeline_env(&[("HOPPER_QUEUE_EMBED_MAX_ATTEMPTS", "1")]);
    env.start_api().await;
    env.start_worker("ingest,summarize", &[]);
    let limits = overrunning("embed");
    let limits: Vec<(&str, &str)> = limits.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let doomed = env.start_worker("embed", &limits);
    let id = upload_otters(&env).await;

    // Its one batch dies: the workflow fails and its body never runs.
    wait_dead(&env, "embed", 1).await;
    let wf = pipeline_workflow(&env, &id, 0).await;
    assert_eq!(wf["state"], "failed", "{wf}");
    let nodes = wf["nodes"].as_array().unwrap();
    assert_eq!(
        nodes.iter().map(|n| n["state"].clone()).collect::<Vec<_>>(),
        [json!("dead"), json!("skipped")],
        "{wf}"
    );
    let (_, d) = env.get(&format!("/v1/documents/{id}")).await;
    assert_eq!(d["status"], "embedding", "{d}");
    env.kill(doomed);
    env.start_worker("embed", &[]);

    // Retried from the dead letters, the batch is the version's last: with
    // its workflow over, it resumes the pipeline (the next generation: just
    // the body).
    let (s, r) = env
        .post("/v1/queues/embed/dead/retry", &json!({"all": true}))
        .await;
    assert_eq!(s, 200, "{r}");
    let last = follow(&env, None, &id, Duration::from_secs(60)).await;
    assert_eq!(last["status"], "ready", "{last}");
    assert!(!last["summary"].as_str().unwrap_or("").is_empty(), "{last}");
    let wf = finished_workflow(&env, &id, 1).await;
    assert_eq!(wf["state"], "succeeded", "{wf}");
    assert_eq!(wf["nodes"].as_array().unwrap().len(), 1, "{wf}");
    assert_eq!(summaries(&env, "succeeded").await, 1);
    assert!(search_finds(&env, "otters holding hands asleep", &id).await);
}
