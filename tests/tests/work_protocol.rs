//! The HTTP worker protocol (`/v1/work/*`) against the real API binary,
//! spoken over HTTP like a remote worker would: declare a task, claim,
//! heartbeat, complete, fail; leases fencing stale attempts; the server's
//! recovery and hard limit; who may serve what.

use std::time::{Duration, Instant};

use hopper_tests::TestEnv;
use serde_json::{Value, json};

/// Fast leases, so recovery and the hard limit come within a test.
const FAST: [(&str, &str); 5] = [
    ("HOPPER_AUTH", "keys"),
    ("HOPPER_HEARTBEAT_MS", "200"),
    ("HOPPER_LEASE_MS", "1000"),
    ("HOPPER_RATE_PER_KEY", "0"),
    ("HOPPER_RATE_GLOBAL", "0"),
];

/// An API in keys mode with a work key and a submit key of tenant `acme`.
struct Setup {
    env: TestEnv,
    work: String,
    submit: String,
}

async fn setup() -> Setup {
    let mut env = TestEnv::new(&FAST);
    env.start_api().await;
    let work = env.create_key("acme", "work").await;
    let submit = env.create_key("acme", "submit,read").await;
    Setup { env, work, submit }
}

/// `POST path` with `key`.
async fn post(env: &TestEnv, key: &str, path: &str, body: &Value) -> (u16, Value) {
    env.request(env.http().post(env.url(path)).bearer_auth(key).json(body))
        .await
}

/// `GET path` with `key`.
async fn get(env: &TestEnv, key: &str, path: &str) -> (u16, Value) {
    env.request(env.http().get(env.url(path)).bearer_auth(key))
        .await
}

/// Declares `name` over HTTP with `settings`; asserts it worked.
async fn declare(s: &Setup, name: &str, settings: Value) {
    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/tasks",
        &json!({"tasks": [{"name": name, "settings": settings,
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["tasks"][0]["runtime"], "http", "{b}");
    assert_eq!(b["tasks"][0]["tenant"], "acme", "{b}");
}

/// Submits one job to `task`; returns its id.
async fn submit(s: &Setup, task: &str, n: i64) -> String {
    let (st, b) = post(
        &s.env,
        &s.submit,
        &format!("/v1/jobs/{task}"),
        &json!({"n": n}),
    )
    .await;
    assert_eq!(st, 202, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

/// Claims from `queues` (waiting at most `wait_ms`) under `worker`.
async fn claim(s: &Setup, queues: &[&str], worker: Option<&str>, wait_ms: u64) -> Value {
    let mut body = json!({"queues": queues, "max_jobs": 10, "wait_ms": wait_ms});
    if let Some(w) = worker {
        body["worker"] = json!(w);
    }
    let (st, b) = post(&s.env, &s.work, "/v1/work/claim", &body).await;
    assert_eq!(st, 200, "{b}");
    b
}

/// Claims until a job comes (each claim long-polls up to 5 s).
async fn claim_one(s: &Setup, queue: &str, worker: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = claim(s, &[queue], worker, 5_000).await;
        if let Some(job) = b["jobs"].as_array().and_then(|j| j.first()) {
            let mut job = job.clone();
            job["worker"] = b["worker"].clone();
            return job;
        }
        assert!(Instant::now() < deadline, "no job to claim on {queue}");
    }
}

async fn job(s: &Setup, id: &str) -> Value {
    let (st, b) = get(&s.env, &s.submit, &format!("/v1/jobs/{id}")).await;
    assert_eq!(st, 200, "{b}");
    b
}

/// The job's Postgres record: (state, result).
async fn record(s: &Setup, id: &str) -> Option<(String, Option<Value>)> {
    let client = s.env.pool().get().await.unwrap();
    let id = uuid::Uuid::parse_str(id).unwrap();
    client
        .query_opt(
            "SELECT state, result FROM job_records WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

#[tokio::test]
async fn a_claimed_job_completes_into_redis_and_postgres() {
    let s = setup().await;
    declare(&s, "resize", json!({})).await;
    let id = submit(&s, "resize", 7).await;
    let j = claim_one(&s, "resize", None).await;
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["args"], json!({"n": 7}));
    assert_eq!(j["attempt"], 1);
    assert_eq!(j["tenant"], "acme");
    assert!(
        j["worker"].as_str().unwrap().starts_with("http-acme-"),
        "{j}"
    );
    assert!(j["hard_limit_ms"].as_u64().unwrap() > 0, "{j}");

    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/progress",
        &json!({"lease": j["lease"], "progress": {"done": 1, "of": 2}}),
    )
    .await;
    assert_eq!(st, 204, "{b}");
    let shown = job(&s, &id).await;
    assert_eq!(shown["progress"], json!({"done": 1, "of": 2}), "{shown}");

    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/complete",
        &json!({"results": [{"lease": j["lease"], "result": {"size": 42}}]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["results"], json!([{"id": id, "status": "completed"}]));
    let done = job(&s, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"size": 42}));
    assert_eq!(
        record(&s, &id).await,
        Some(("succeeded".into(), Some(json!({"size": 42}))))
    );
    // A repeated complete of the same attempt is answered the same.
    let (st, _) = post(
        &s.env,
        &s.work,
        "/v1/work/complete",
        &json!({"results": [{"lease": j["lease"], "result": {"size": 42}}]}),
    )
    .await;
    assert_eq!(st, 200);
    // The worker protocol is in the OpenAPI document, behind the API key.
    let (_, doc) = s.env.get("/openapi.json").await;
    for path in [
        "tasks",
        "claim",
        "heartbeat",
        "complete",
        "fail",
        "progress",
    ] {
        let op = &doc["paths"][format!("/v1/work/{path}")]["post"];
        assert!(op["security"].is_array(), "/v1/work/{path}: {op}");
    }
}

#[tokio::test]
async fn a_stale_attempt_cannot_complete_and_an_unknown_lease_is_404() {
    let s = setup().await;
    declare(&s, "slow", json!({"max_attempts": 3})).await;
    let id = submit(&s, "slow", 1).await;
    let first = claim_one(&s, "slow", None).await;
    // The first worker falls silent: the API's rescuer gives the job back
    // after the lease, and another worker claims it.
    let second = claim_one(&s, "slow", None).await;
    assert_eq!(second["id"], id.as_str());
    assert_eq!(second["attempt"], 2);
    assert_ne!(second["worker"], first["worker"]);
    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/complete",
        &json!({"results": [{"lease": second["lease"], "result": "second"}]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");

    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/complete",
        &json!({"results": [{"lease": first["lease"], "result": "first"}]}),
    )
    .await;
    assert_eq!(st, 409, "{b}");
    assert_eq!(b["error"], "stale_lease");
    assert_eq!(b["results"], json!([{"id": id, "status": "stale"}]));
    assert_eq!(job(&s, &id).await["result"], "second");
    assert_eq!(
        record(&s, &id).await,
        Some(("succeeded".into(), Some(json!("second"))))
    );
    // Its heartbeat says so too.
    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/heartbeat",
        &json!({"worker": first["worker"], "leases": [first["lease"]]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["lost"], json!([first["lease"]]));
    // Coming back under its evicted id, it is given a fresh one.
    let again = claim(&s, &["slow"], first["worker"].as_str(), 0).await;
    assert_ne!(again["worker"], first["worker"], "{again}");
    assert!(again["worker"].as_str().unwrap().starts_with("http-acme-"));

    for lease in ["not-a-token", "aGVsbG8"] {
        let (st, b) = post(
            &s.env,
            &s.work,
            "/v1/work/complete",
            &json!({"results": [{"lease": lease, "result": 1}]}),
        )
        .await;
        assert_eq!(st, 404, "{b}");
        assert_eq!(b["error"], "unknown_lease");
        assert_eq!(b["results"][0]["status"], "unknown");
        let (st, b) = post(
            &s.env,
            &s.work,
            "/v1/work/progress",
            &json!({"lease": lease, "progress": 1}),
        )
        .await;
        assert_eq!(
            (st, b["error"].as_str()),
            (404, Some("unknown_lease")),
            "{b}"
        );
    }
}

#[tokio::test]
async fn failures_retry_then_dead_letter_and_permanent_ones_die_at_once() {
    let s = setup().await;
    declare(
        &s,
        "flaky",
        json!({"max_attempts": 2, "backoff_base_ms": 10, "backoff_max_ms": 20}),
    )
    .await;
    let id = submit(&s, "flaky", 1).await;
    let a1 = claim_one(&s, "flaky", None).await;
    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/fail",
        &json!({"failures": [{"lease": a1["lease"], "error": "Traceback: boom 1"}]}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let a2 = claim_one(&s, "flaky", a1["worker"].as_str()).await;
    assert_eq!(
        (a2["id"].as_str(), a2["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    let (st, _) = post(&s.env, &s.work, "/v1/work/fail",
        &json!({"failures": [{"lease": a2["lease"], "error": "Traceback: boom 2", "retryable": true}]})).await;
    assert_eq!(st, 200);
    let dead = job(&s, &id).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["error"], "Traceback: boom 2");
    assert_eq!(record(&s, &id).await.map(|r| r.0), Some("dead".into()));

    let id = submit(&s, "flaky", 2).await;
    let a = claim_one(&s, "flaky", None).await;
    let (st, _) = post(
        &s.env,
        &s.work,
        "/v1/work/fail",
        &json!({"failures": [{"lease": a["lease"], "error": "bad input", "retryable": false}]}),
    )
    .await;
    assert_eq!(st, 200);
    let dead = job(&s, &id).await;
    assert_eq!(
        (dead["state"].as_str(), dead["attempts"].as_u64()),
        (Some("dead"), Some(1)),
        "{dead}"
    );
    assert_eq!(dead["error"], "bad input");
}

#[tokio::test]
async fn the_server_fails_an_attempt_past_its_hard_limit() {
    let s = setup().await;
    declare(
        &s,
        "stuck",
        json!({"max_attempts": 1, "soft_limit_ms": 300, "hard_limit_ms": 800}),
    )
    .await;
    let id = submit(&s, "stuck", 1).await;
    let a = claim_one(&s, "stuck", None).await;
    // The worker keeps beating (so recovery leaves it alone); past the soft
    // limit it is told to stop, past the hard limit the job is lost.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut told_to_cancel = false;
    loop {
        let (st, b) = post(
            &s.env,
            &s.work,
            "/v1/work/heartbeat",
            &json!({"worker": a["worker"], "leases": [a["lease"]]}),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        told_to_cancel |= b["cancel"] == json!([a["lease"]]);
        if b["lost"] == json!([a["lease"]]) {
            break;
        }
        assert!(Instant::now() < deadline, "never lost: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(told_to_cancel, "the soft limit was never announced");
    let dead = job(&s, &id).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert!(
        dead["error"].as_str().unwrap().contains("hard time limit"),
        "{dead}"
    );
    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/complete",
        &json!({"results": [{"lease": a["lease"], "result": "late"}]}),
    )
    .await;
    assert_eq!(st, 409, "{b}");
    assert_eq!(record(&s, &id).await.map(|r| r.0), Some("dead".into()));
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_a_job_is_pushed() {
    let s = setup().await;
    declare(&s, "wake", json!({})).await;
    let (env, work) = (&s.env, s.work.clone());
    let url = env.url("/v1/work/claim");
    let http = env.http().clone();
    let polling = tokio::spawn(async move {
        let started = Instant::now();
        let res = http
            .post(url)
            .bearer_auth(work)
            .json(&json!({"queues": ["wake"], "wait_ms": 20_000}))
            .send()
            .await
            .unwrap();
        (res.json::<Value>().await.unwrap(), started.elapsed())
    });
    // Wait until the long-poll is registered as a worker on the queue.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, w) = get(env, &s.submit, "/v1/workers").await;
        if w.to_string().contains("http-acme-") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the long-poll never registered: {w}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pushed = Instant::now();
    let id = submit(&s, "wake", 1).await;
    let (b, waited) = polling.await.unwrap();
    assert_eq!(b["jobs"][0]["id"], id.as_str(), "{b}");
    assert!(
        pushed.elapsed() < Duration::from_secs(3),
        "answered {:?} after the push",
        pushed.elapsed()
    );
    assert!(waited < Duration::from_secs(15), "{waited:?}");
}

#[tokio::test]
async fn work_keys_serve_only_their_queues_and_their_tenant() {
    let s = setup().await;
    declare(&s, "qa", json!({})).await;
    declare(&s, "qb", json!({})).await;
    // A work key limited to `qa`, made by the CLI as an operator would.
    let out = s.env.cli(&[
        "--json", "keys", "create", "--tenant", "acme", "--scope", "work", "--queues", "qa",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(made["info"]["queues"], json!(["qa"]), "{made}");
    assert_eq!(made["info"]["scopes"], json!(["work"]), "{made}");
    let limited = made["key"].as_str().unwrap().to_owned();
    // The API makes the same keys for an admin of the tenant; a queue list
    // needs the work scope.
    let admin = s.env.create_key("acme", "admin").await;
    let (st, b) = post(
        &s.env,
        &admin,
        "/v1/keys",
        &json!({"scopes": ["work"], "queues": ["qa", "qb"]}),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["info"]["queues"], json!(["qa", "qb"]));
    let (st, b) = post(
        &s.env,
        &admin,
        "/v1/keys",
        &json!({"scopes": ["read"], "queues": ["qa"]}),
    )
    .await;
    assert_eq!((st, b["field"].as_str()), (422, Some("queues")), "{b}");
    let (st, b) = post(
        &s.env,
        &limited,
        "/v1/work/claim",
        &json!({"queues": ["qa"], "wait_ms": 0}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = post(
        &s.env,
        &limited,
        "/v1/work/claim",
        &json!({"queues": ["qb"], "wait_ms": 0}),
    )
    .await;
    assert_eq!((st, b["error"].as_str()), (403, Some("forbidden")), "{b}");
    // Nor may it finish a job of `qb` that another key of the tenant claimed.
    let qb_job = submit(&s, "qb", 1).await;
    let j = claim_one(&s, "qb", None).await;
    assert_eq!(j["id"], qb_job.as_str());
    let (st, b) = post(
        &s.env,
        &limited,
        "/v1/work/complete",
        &json!({"results": [{"lease": j["lease"], "result": 1}]}),
    )
    .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (404, Some("unknown_lease")),
        "{b}"
    );
    let (st, b) = post(
        &s.env,
        &limited,
        "/v1/work/claim",
        &json!({"queues": ["nope"], "wait_ms": 0}),
    )
    .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (404, Some("unknown_task")),
        "{b}"
    );
    // A submit key is no work key.
    let (st, _) = post(
        &s.env,
        &s.submit,
        "/v1/work/claim",
        &json!({"queues": ["qa"], "wait_ms": 0}),
    )
    .await;
    assert_eq!(st, 403);

    // Another tenant may neither serve acme's task (to it, there is no
    // such task) nor take its name.
    let other = s.env.create_key("globex", "work").await;
    let (st, b) = post(
        &s.env,
        &other,
        "/v1/work/claim",
        &json!({"queues": ["qa"], "wait_ms": 0}),
    )
    .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (404, Some("unknown_task")),
        "{b}"
    );
    let (st, b) = post(
        &s.env,
        &other,
        "/v1/work/tasks",
        &json!({"tasks": [{"name": "qa"}]}),
    )
    .await;
    assert_eq!((st, b["error"].as_str()), (409, Some("task_owned")), "{b}");
    // Nor use a lease of acme's worker.
    let id = submit(&s, "qa", 1).await;
    let j = claim_one(&s, "qa", None).await;
    assert_eq!(j["id"], id.as_str());
    let (st, b) = post(
        &s.env,
        &other,
        "/v1/work/complete",
        &json!({"results": [{"lease": j["lease"], "result": 1}]}),
    )
    .await;
    assert_eq!(st, 404, "{b}");
    assert_eq!(job(&s, &id).await["state"], "running");

    // A schema that does not compile, and a second schema under version 1.
    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/tasks",
        &json!({"tasks": [{"name": "bad", "schema": {"type": 12}}]}),
    )
    .await;
    assert_eq!(
        (st, b["field"].as_str()),
        (422, Some("tasks[0].schema")),
        "{b}"
    );
    let (st, b) = post(
        &s.env,
        &s.work,
        "/v1/work/tasks",
        &json!({"tasks": [{"name": "qa", "schema": {"type": "string"}}]}),
    )
    .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (409, Some("schema_conflict")),
        "{b}"
    );
}

#[tokio::test]
async fn a_long_poll_answers_at_once_when_the_api_shuts_down() {
    let mut s = setup().await;
    declare(&s, "idle", json!({})).await;
    let url = s.env.url("/v1/work/claim");
    let (http, work) = (s.env.http().clone(), s.work.clone());
    let polling = tokio::spawn(async move {
        let res = http
            .post(url)
            .bearer_auth(work)
            .json(&json!({"queues": ["idle"], "wait_ms": 20_000}))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, w) = get(&s.env, &s.submit, "/v1/workers").await;
        if w.to_string().contains("http-acme-") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the long-poll never registered: {w}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = Instant::now();
    s.env.terminate(0);
    let (st, b) = polling.await.unwrap();
    assert_eq!((st, &b["jobs"]), (200, &json!([])), "{b}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn long_polls_past_their_budget_are_refused_with_503_and_retry_after() {
    // Two requests in flight at most: one long-poll may wait (half of them).
    let mut env = TestEnv::new(&[FAST[0], ("HOPPER_MAX_CONCURRENT_REQUESTS", "2")]);
    env.start_api().await;
    let work = env.create_key("acme", "work").await;
    let submit_key = env.create_key("acme", "submit,read").await;
    let s = Setup {
        env,
        work,
        submit: submit_key,
    };
    declare(&s, "busy", json!({})).await;
    let url = s.env.url("/v1/work/claim");
    let (http, work) = (s.env.http().clone(), s.work.clone());
    let first = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(work)
            .json(&json!({"queues": ["busy"], "wait_ms": 20_000}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, w) = get(&s.env, &s.submit, "/v1/workers").await;
        if w.to_string().contains("http-acme-") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the long-poll never registered: {w}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res = s
        .env
        .http()
        .post(s.env.url("/v1/work/claim"))
        .bearer_auth(&s.work)
        .json(&json!({"queues": ["busy"], "wait_ms": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert!(
        res.headers().contains_key("retry-after"),
        "{:?}",
        res.headers()
    );
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["error"], "too_many_polls", "{b}");
    // The waiting one is served as soon as a job comes.
    submit(&s, "busy", 1).await;
    assert_eq!(first.await.unwrap(), 200);
}
