//! Declared tasks through the real API and CLI: a task declared in the
//! registry (straight through `QueueClient::declare`, as a worker does at
//! start-up) is submittable at once with its schema enforced (422 naming the
//! JSON path), shows in `GET /v1/tasks` with its workers and depth, is
//! invisible to other tenants when it is a tenant's, and is listed, shown and
//! removed by `hopper tasks`. Unknown names get 404 listing the known tasks;
//! names that are not queue names get 422.

use hopper_queue::{Declared, QueueClient};
use hopper_shared::tasks::{Runtime, TaskDefinition};
use hopper_tests::TestEnv;
use serde_json::{Value, json};

/// A task `name` taking `{"size": [positive integers], "label"?: string}`
/// and nothing else, with 7 attempts by default.
fn thumbnail(name: &str, tenant: Option<&str>) -> TaskDefinition {
    let mut def = TaskDefinition::new(name.parse().unwrap());
    def.schema = Some(json!({
        "type": "object",
        "required": ["size"],
        "additionalProperties": false,
        "properties": {
            "size": {"type": "array", "items": {"type": "integer", "minimum": 1}},
            "label": {"type": "string"}
        }
    }));
    def.settings.max_attempts = 7;
    def.description = Some("Makes a thumbnail".into());
    def.tenant = tenant.map(str::to_owned);
    if tenant.is_some() {
        def.runtime = Runtime::Http;
    }
    def
}

async fn declare(env: &TestEnv, def: &TaskDefinition) -> QueueClient {
    let queue = QueueClient::connect(&env.config()).await.unwrap();
    assert!(matches!(
        queue.declare(def).await.unwrap(),
        Declared::InForce(_)
    ));
    queue
}

fn known(b: &Value) -> Vec<&str> {
    b["known"]
        .as_array()
        .unwrap_or_else(|| panic!("no known list: {b}"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[tokio::test]
async fn a_declared_task_is_submitted_checked_against_its_schema_and_listed() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    // Declared while the API runs: found at once, not after a cache period.
    declare(&env, &thumbnail("thumbnail", None)).await;

    let (s, b) = env
        .post("/v1/jobs/thumbnail", &json!({"size": [64, 48]}))
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["kind"], "thumbnail");
    let id = b["id"].as_str().unwrap().to_owned();
    let (s, job) = env.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["kind"], "thumbnail");
    assert_eq!(job["state"], "pending");
    assert_eq!(job["args"]["size"], json!([64, 48]));
    // The task's declared settings apply: its attempt budget.
    assert_eq!(job["max_attempts"], 7, "{job}");

    // Arguments that break the schema: 422 naming the JSON path.
    let (s, b) = env
        .post("/v1/jobs/thumbnail", &json!({"size": [64, 0]}))
        .await;
    assert_eq!((s, b["error"].as_str()), (422, Some("invalid_args")), "{b}");
    assert_eq!(b["field"], "size[1]", "{b}");
    assert!(b["detail"].as_str().unwrap().contains("minimum"), "{b}");
    let (s, b) = env.post("/v1/jobs/thumbnail", &json!({"label": "x"})).await;
    assert_eq!((s, b["field"].as_str()), (422, Some("size")), "{b}");
    let (s, b) = env
        .post("/v1/jobs/thumbnail", &json!({"size": [1], "colour": "red"}))
        .await;
    assert_eq!((s, b["field"].as_str()), (422, Some("colour")), "{b}");
    let (s, b) = env
        .post(
            "/v1/jobs/thumbnail",
            &json!({"size": [1], "label": "a\u{0}b"}),
        )
        .await;
    assert_eq!((s, b["field"].as_str()), (422, Some("label")), "{b}");
    // A batch is refused whole, naming the job and the path.
    let (s, b) = env
        .post(
            "/v1/jobs/thumbnail/batch",
            &json!([{"size": [1]}, {"size": ["big"]}]),
        )
        .await;
    assert_eq!((s, b["field"].as_str()), (422, Some("[1].size[0]")), "{b}");
    let ids = env
        .submit_batch("thumbnail", &[json!({"size": [1]}), json!({"size": [2]})])
        .await;
    assert_eq!(ids.len(), 2);

    // A name no one declared: 404 listing what may be submitted.
    let (s, b) = env.post("/v1/jobs/resize", &json!({})).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_task")), "{b}");
    let names = known(&b);
    assert!(
        names.contains(&"thumbnail") && names.contains(&"echo"),
        "{b}"
    );
    assert!(
        !names.contains(&"webhook"),
        "internal tasks are not offered: {b}"
    );
    // A name that is not a queue name: 422 naming the rule.
    let (s, b) = env.post("/v1/jobs/Thumbnail", &json!({})).await;
    assert_eq!(
        (s, b["error"].as_str(), b["field"].as_str()),
        (422, Some("invalid_queue_name"), Some("task")),
        "{b}"
    );
    assert!(b["detail"].as_str().unwrap().contains("[a-z0-9]"), "{b}");
    let (s, b) = env.get("/v1/jobs?queue=-x").await;
    assert_eq!(
        (s, b["error"].as_str(), b["field"].as_str()),
        (422, Some("invalid_queue_name"), Some("queue")),
        "{b}"
    );
    let (s, b) = env.get("/v1/queues/resize/dead").await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_task")), "{b}");

    // Listings show it: tasks (no worker yet), queues, jobs, dead letters.
    let (s, b) = env.get("/v1/tasks").await;
    assert_eq!(s, 200, "{b}");
    let t = b["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "thumbnail")
        .unwrap_or_else(|| panic!("no thumbnail in {b}"))
        .clone();
    assert_eq!(
        (&t["workers"], &t["pending"], &t["version"], &t["runtime"]),
        (&json!(0), &json!(3), &json!(1), &json!("rust")),
        "{t}"
    );
    assert_eq!(t["schema"]["required"], json!(["size"]), "{t}");
    assert!(
        b["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo")
    );
    let (s, one) = env.get("/v1/tasks/thumbnail").await;
    assert_eq!((s, &one["name"]), (200, &json!("thumbnail")), "{one}");
    let (_, q) = env.queue("thumbnail").await;
    assert_eq!(q["pending"], 3, "{q}");
    let (s, b) = env.get("/v1/jobs?queue=thumbnail&state=pending").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["jobs"].as_array().unwrap().len(), 3, "{b}");
    let (s, b) = env.get("/v1/jobs").await;
    assert_eq!(
        b["jobs"].as_array().unwrap().len(),
        3,
        "every queue: {s} {b}"
    );
    let (s, b) = env.get("/v1/queues/thumbnail/dead").await;
    assert_eq!((s, &b["total"]), (200, &json!(0)), "{b}");
    // The operator's depth gauges cover it (what KEDA scales a deployment on).
    let pending = env
        .metric(
            &env.url("/metrics"),
            "hopper_queue_pending{queue=\"thumbnail\"}",
        )
        .await;
    assert_eq!(pending, 3.0);

    // A task only Hopper queues: 422, as for the built-in ones.
    let mut internal = TaskDefinition::new("reindex".parse().unwrap());
    internal.internal = true;
    declare(&env, &internal).await;
    let (s, b) = env.post("/v1/jobs/reindex", &json!({})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (422, Some("internal_kind")),
        "{b}"
    );
}

#[tokio::test]
async fn a_tenants_task_is_invisible_to_other_tenants() {
    let mut env = TestEnv::new(&[("HOPPER_AUTH", "keys")]);
    env.start_api().await;
    let acme = env.create_key("acme", "submit,read,admin").await;
    let globex = env.create_key("globex", "submit,read,admin").await;
    let operator = env.create_key("default", "admin").await;
    declare(&env, &thumbnail("acme-ocr", Some("acme"))).await;
    declare(&env, &thumbnail("shared-ocr", None)).await;

    env.use_key(Some(&acme));
    let (s, b) = env.post("/v1/jobs/acme-ocr", &json!({"size": [1]})).await;
    assert_eq!(s, 202, "{b}");
    let (_, b) = env.get("/v1/tasks").await;
    assert!(
        b["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "acme-ocr")
    );
    let (_, h) = env.get("/v1/queues/history?minutes=1").await;
    assert!(h["outcomes"]["acme-ocr"].is_array(), "{h}");

    env.use_key(Some(&globex));
    let (s, b) = env.post("/v1/jobs/acme-ocr", &json!({"size": [1]})).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_task")), "{b}");
    assert!(!known(&b).contains(&"acme-ocr"), "{b}");
    assert!(known(&b).contains(&"shared-ocr"), "{b}");
    let (_, b) = env.get("/v1/tasks").await;
    let names: Vec<&str> = b["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"acme-ocr") && names.contains(&"shared-ocr"),
        "{b}"
    );
    let (s, _) = env.get("/v1/tasks/acme-ocr").await;
    assert_eq!(s, 404);
    let (_, b) = env.get("/v1/queues").await;
    assert!(!b.to_string().contains("acme-ocr"), "{b}");
    let (s, _) = env.get("/v1/queues/acme-ocr/dead").await;
    assert_eq!(s, 404);
    // Depth history: sampled for every queue, shown to its tenant only.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let history = loop {
        let (_, h) = env.get("/v1/queues/history?minutes=1").await;
        let sampled = h["samples"]
            .as_array()
            .and_then(|s| s.last())
            .is_some_and(|s| s["queues"]["shared-ocr"].is_object());
        if sampled {
            break h;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shared-ocr never sampled: {h}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(!history.to_string().contains("acme-ocr"), "{history}");
    // The public dashboard page renders tasks of every tenant only.
    let page = env
        .http()
        .get(env.url("/dashboard"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-queue=\"shared-ocr\""), "{page}");
    assert!(!page.contains("acme-ocr"), "{page}");
    let (s, _) = env.delete("/v1/tasks/acme-ocr").await;
    assert_eq!(s, 404, "another tenant cannot remove it");

    // A task of every tenant is the operator's to remove.
    env.use_key(Some(&acme));
    let (s, b) = env.delete("/v1/tasks/shared-ocr").await;
    assert_eq!((s, b["error"].as_str()), (403, Some("forbidden")), "{b}");
    let (s, _) = env.delete("/v1/tasks/acme-ocr").await;
    assert_eq!(s, 204);
    let (s, b) = env.post("/v1/jobs/acme-ocr", &json!({"size": [1]})).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_task")), "{b}");
    env.use_key(Some(&operator));
    let (s, _) = env.delete("/v1/tasks/shared-ocr").await;
    assert_eq!(s, 204);
    let (s, b) = env.delete("/v1/tasks/shared-ocr").await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")), "{b}");
    let (s, b) = env.delete("/v1/tasks/Shared").await;
    assert_eq!(
        (s, b["error"].as_str()),
        (422, Some("invalid_queue_name")),
        "{b}"
    );
}

fn hopper(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = env.cli(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn hopper_tasks_lists_shows_and_removes_a_task() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    declare(&env, &thumbnail("thumbnail", None)).await;
    env.submit_batch("thumbnail", &[json!({"size": [1]})]).await;

    let (ok, out, err) = hopper(&env, &["tasks", "list"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("thumbnail "))
        .unwrap_or_else(|| panic!("no thumbnail row:\n{out}"))
        .split_whitespace()
        .collect();
    // name, version, runtime, workers, pending, running, dead, owner
    assert_eq!(
        row[..7],
        ["thumbnail", "1", "rust", "0", "1", "0", "0"],
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("echo ")), "{out}");

    let (ok, out, err) = hopper(&env, &["tasks", "list", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "thumbnail")
    );

    let (ok, out, err) = hopper(&env, &["tasks", "show", "thumbnail"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("task thumbnail  version 1  runtime rust"),
        "{out}"
    );
    assert!(
        out.contains("Makes a thumbnail") && out.contains("max_attempts 7"),
        "{out}"
    );
    assert!(
        out.contains("\"required\": [\n"),
        "the schema, pretty:\n{out}"
    );

    let (ok, _, err) = hopper(&env, &["tasks", "show", "nope"]);
    assert!(!ok && err.contains("no task `nope`"), "{err}");

    let (ok, out, err) = hopper(&env, &["tasks", "remove", "thumbnail"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("removed task thumbnail (version 1, rust"),
        "{out}"
    );
    let (ok, out, _) = hopper(&env, &["tasks", "list"]);
    assert!(ok && !out.contains("thumbnail"), "{out}");
    let (ok, _, err) = hopper(&env, &["tasks", "remove", "thumbnail"]);
    assert!(!ok && err.contains("404"), "{err}");
}

/// Calls of `HGETALL` (the registry read) the Redis at `url` has served.
async fn hgetall_calls(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hgetall:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn submissions_read_the_registry_at_most_once_a_second_not_once_per_job() {
    // A Redis of its own: its command counts are this test's alone.
    let redis = hopper_tests::PrivateRedis::start();
    let url = redis.url();
    // The per-key rate limit is not this test's subject: 301 submissions as
    // fast as the API answers pass 200/s.
    let mut env = TestEnv::new(&[
        ("REDIS_URL", url.as_str()),
        ("HOPPER_RATE_PER_KEY", "0"),
        ("HOPPER_RATE_GLOBAL", "0"),
    ]);
    env.start_api().await;
    declare(&env, &thumbnail("thumbnail", None)).await;
    let (s, b) = env.post("/v1/jobs/thumbnail", &json!({"size": [1]})).await;
    assert_eq!(s, 202, "{b}");

    let before = hgetall_calls(&url).await;
    let started = std::time::Instant::now();
    let jobs = 300;
    for i in 0..jobs {
        let (s, b) = env
            .post("/v1/jobs/thumbnail", &json!({"size": [i + 1]}))
            .await;
        assert_eq!(s, 202, "{b}");
    }
    let reads = hgetall_calls(&url).await - before;
    // One read a second for the cache, one every 2 s for the depth sampler.
    let seconds = started.elapsed().as_secs() + 1;
    assert!(
        reads <= 2 * seconds + 2,
        "{reads} registry reads for {jobs} submissions in {seconds} s"
    );
}

#[tokio::test]
async fn a_declared_tasks_job_is_cancelled_unless_the_task_is_internal() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    // No schema: any object, `batch` included (only the built-in embed
    // kind's `batch` marks a pipeline step).
    declare(&env, &TaskDefinition::new("reindex".parse().unwrap())).await;
    let mut internal = TaskDefinition::new("compact".parse().unwrap());
    internal.internal = true;
    let queue = declare(&env, &internal).await;

    let (s, b) = env.post("/v1/jobs/reindex", &json!({"batch": 3})).await;
    assert_eq!(s, 202, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let (s, b) = env.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "cancelled", "{b}");

    // Clients may not submit an internal task; Hopper's own job of one is
    // not theirs to cancel either.
    let (s, b) = env.post("/v1/jobs/compact", &json!({})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (422, Some("internal_kind")),
        "{b}"
    );
    let pushed = queue
        .push(
            &internal.name,
            &json!({}),
            &hopper_queue::PushOptions::default(),
        )
        .await
        .unwrap();
    let (s, b) = env
        .post(&format!("/v1/jobs/{}/cancel", pushed.id), &json!({}))
        .await;
    assert_eq!((s, b["error"].as_str()), (409, Some("pipeline_job")), "{b}");
}
