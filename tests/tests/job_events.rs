//! A job's progress, end to end: `GET /v1/jobs/{id}/events` (Server-Sent
//! Events) against the real API and a real worker — the `echo` task with
//! `progress_steps` reports `{"fraction": i/n, "message": "step i"}` through
//! `TaskContext::report` — and the CLI (`hopper submit --wait`, `hopper jobs
//! show --follow`) and the dashboard (in headless Chromium) that read it.

use std::time::{Duration, Instant};

use hopper_tests::{TestEnv, sse::read_to_end, workspace};
use serde_json::{Value, json};

/// Opens the event stream of job `id` (with `key`, if any), unread.
async fn open_stream(env: &TestEnv, key: Option<&str>, id: &str) -> reqwest::Response {
    let mut req = env.http().get(env.url(&format!("/v1/jobs/{id}/events")));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.expect("open the event stream")
}

/// Submits an echo job with `args`; its id.
async fn submit(env: &TestEnv, args: Value, query: &str) -> String {
    let (s, b) = env.post(&format!("/v1/jobs/echo{query}"), &args).await;
    assert_eq!(s, 202, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

/// The steps of a stream's `progress` events: (fraction, message).
fn progress_steps(events: &[(String, Value)]) -> Vec<(f64, String)> {
    events
        .iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, data)| {
            assert_eq!(data["progress"]["fraction"], data["fraction"], "{data}");
            (
                data["fraction"].as_f64().expect("a fraction"),
                data["message"].as_str().expect("a message").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_job_streams_its_progress_in_order_and_ends_with_its_result() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    // 600 ms between reports: the stream (a glance every 100 ms) sees each.
    let id = submit(
        &env,
        json!({"message": "steps", "progress_steps": 4, "sleep_ms": 2400}),
        "",
    )
    .await;
    let events = read_to_end(open_stream(&env, None, &id).await, Duration::from_secs(30)).await;

    let (first, data) = &events[0];
    assert_eq!(first, "state", "the first event is the state: {events:?}");
    assert!(
        ["pending", "running"].contains(&data["state"].as_str().unwrap()),
        "{data}"
    );
    let steps = progress_steps(&events);
    assert_eq!(
        steps,
        vec![
            (0.25, "step 1".to_owned()),
            (0.5, "step 2".to_owned()),
            (0.75, "step 3".to_owned()),
            (1.0, "step 4".to_owned()),
        ],
        "{events:?}"
    );
    let running = events
        .iter()
        .position(|(n, d)| n == "state" && d["state"] == "running")
        .expect("a running state event");
    let first_step = events.iter().position(|(n, _)| n == "progress").unwrap();
    assert!(running < first_step, "running before its steps: {events:?}");
    assert!(
        events[running].1["worker"].is_string(),
        "{:?}",
        events[running]
    );

    let (last, data) = events.last().unwrap();
    assert_eq!(last, "state", "{events:?}");
    assert_eq!(data["state"], "succeeded", "{data}");
    assert_eq!(data["attempt"], 1, "{data}");
    assert_eq!(data["result"]["message"], "steps", "{data}");
    let finals = events
        .iter()
        .filter(|(n, d)| n == "state" && d["state"] == "succeeded")
        .count();
    assert_eq!(finals, 1, "one final event, last: {events:?}");

    // The last report stays on the job.
    let (_, job) = env.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        job["progress"],
        json!({"fraction": 1.0, "message": "step 4"}),
        "{job}"
    );
}

#[tokio::test]
async fn a_finished_job_answers_its_final_event_at_once_from_redis_or_postgres() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let id = submit(&env, json!({"message": "done already"}), "").await;
    env.wait_final(&id, Duration::from_secs(20)).await;

    let started = Instant::now();
    let events = read_to_end(open_stream(&env, None, &id).await, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{events:?}");
    assert_eq!(events.len(), 1, "{events:?}");
    let (name, data) = &events[0];
    assert_eq!(name, "state");
    assert_eq!(data["state"], "succeeded", "{data}");
    assert_eq!(data["result"]["message"], "done already", "{data}");

    // Once Redis forgot it (retention), the Postgres record answers.
    let queue = hopper_queue::QueueClient::connect(&env.config())
        .await
        .unwrap();
    let key = queue
        .keys("echo".parse::<hopper_shared::QueueName>().unwrap())
        .job(&id.parse().unwrap());
    let mut conn = queue.connection();
    let removed: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the job's hash was {key}");
    let events = read_to_end(open_stream(&env, None, &id).await, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1["state"], "succeeded", "{events:?}");
    assert_eq!(
        events[0].1["result"]["message"], "done already",
        "{events:?}"
    );
}

#[tokio::test]
async fn an_unknown_job_is_404_and_a_failed_one_ends_dead_with_its_error() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    for unknown in [uuid::Uuid::now_v7().to_string(), "no-such-task-id".into()] {
        let res = open_stream(&env, None, &unknown).await;
        assert_eq!(res.status(), 404, "{unknown}");
        let b: Value = res.json().await.unwrap();
        assert_eq!(b["error"], "not_found", "{b}");
    }

    let id = submit(
        &env,
        json!({"message": "x", "fail": "nope", "sleep_ms": 300}),
        "?max_attempts=1",
    )
    .await;
    let events = read_to_end(open_stream(&env, None, &id).await, Duration::from_secs(30)).await;
    assert_eq!(events[0].0, "state", "{events:?}");
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "state", "{events:?}");
    assert_eq!(data["state"], "dead", "{data}");
    assert!(
        data["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{data}"
    );
    assert!(data.get("result").is_none(), "{data}");

    // Bad arguments for progress drills are refused, naming the field.
    let (s, b) = env
        .post(
            "/v1/jobs/echo",
            &json!({"message": "x", "progress_steps": 100_000}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["field"], "progress_steps", "{b}");
}

#[tokio::test]
async fn streams_keep_to_their_tenant_their_cap_and_their_lifetime() {
    let mut env = TestEnv::new(&[
        ("HOPPER_AUTH", "keys"),
        ("HOPPER_SSE_MAX_STREAMS_PER_TENANT", "1"),
        ("HOPPER_SSE_MAX_LIFETIME_MS", "1500"),
    ]);
    env.start_api().await;
    let acme = env.create_key("acme", "submit,read").await;
    let acme_read = env.create_key("acme", "read").await;
    let beta = env.create_key("beta", "submit,read").await;
    env.use_key(Some(&acme));
    // No worker: the job waits, its stream stays open.
    let id = submit(&env, json!({"message": "waits"}), "").await;

    let res = open_stream(&env, Some(&beta), &id).await;
    assert_eq!(res.status(), 404, "another tenant's job");
    let started = Instant::now();
    let first = open_stream(&env, Some(&acme_read), &id).await;
    assert_eq!(first.status(), 200, "the read scope follows");
    let second = open_stream(&env, Some(&acme), &id).await;
    assert_eq!(second.status(), 429);
    let b: Value = second.json().await.unwrap();
    assert_eq!(b["error"], "too_many_streams", "{b}");

    let events = read_to_end(first, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{events:?}"
    );
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "state");
    assert_eq!(events[0].1, json!({"state": "pending", "attempt": 0}));
    assert_eq!(events[1].0, "reconnect", "{events:?}");
    assert_eq!(events[1].1["max_lifetime_ms"], 1500, "{events:?}");
    // The ended stream gave its slot back.
    let again = open_stream(&env, Some(&acme), &id).await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn the_cli_follows_a_job_with_plain_lines_or_only_the_final_json() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    // Not a terminal, --json: no bar, no lines, the final JSON alone.
    let out = env.cli(&[
        "submit",
        "echo",
        r#"{"message":"cli steps","progress_steps":3,"sleep_ms":900}"#,
        "--wait",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["message"], "cli steps", "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    // Not a terminal, no --json: a plain line per change, then the job.
    let out = env.cli(&[
        "submit",
        "echo",
        r#"{"message":"lines","progress_steps":3,"sleep_ms":1800}"#,
        "--wait",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let at = |wanted: &str| {
        lines
            .iter()
            .position(|l| *l == wanted)
            .unwrap_or_else(|| panic!("no line `{wanted}`:\n{text}"))
    };
    let (one, two, three) = (at(" 33% step 1"), at(" 67% step 2"), at("100% step 3"));
    assert!(at("running") < one && one < two && two < three, "{text}");
    assert!(
        text.contains("state succeeded")
            && text.find("state succeeded").unwrap() > text.find("100% step 3").unwrap(),
        "{text}"
    );

    // An existing job: one finished already answers at once.
    let started = Instant::now();
    let out = env.cli(&["jobs", "show", &id, "--follow", "--json"]);
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown, job);
    let out = env.cli(&["jobs", "show", &id, "--follow"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("state succeeded"), "{text}");

    // A dead job: followed, it is a failure.
    let (_, b) = env
        .post(
            "/v1/jobs/echo?max_attempts=1",
            &json!({"message": "x", "fail": "nope"}),
        )
        .await;
    let dead = b["id"].as_str().unwrap();
    let out = env.cli(&["jobs", "show", dead, "--follow", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["state"], "dead", "{shown}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ended \"dead\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.cli(&["jobs", "show", "no-such-job", "--follow"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_dashboard_draws_a_running_jobs_progress_in_chromium() {
    let dir = workspace().join("tests/dashboard");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `scripts/setup browser`"
    );
    let mut env = TestEnv::new(&[]);
    let url = env.start_api().await;
    env.start_worker("echo", &[]);
    // Each of its 2 steps holds for 10 s: long enough for the page to show
    // one.
    let id = submit(
        &env,
        json!({"message": "bar", "progress_steps": 2, "sleep_ms": 20000}),
        "",
    )
    .await;
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("progress.test.mjs")
            .current_dir(&dir)
            .env("HOPPER_URL", &url)
            .env("JOB_ID", &id)
            .output()
            .expect("run node (is Node.js installed?)")
    })
    .await
    .expect("join");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "dashboard progress test failed:\n{out}\n{err}\napi log:\n{}",
        env.log(0)
    );
    assert!(out.contains("[progress] ok"), "{out}");
}
