//! The built-in dashboard, end to end: served by the real API, driven in
//! Debian's headless Chromium by `tests/dashboard/dashboard.test.mjs`
//! (playwright-core; `scripts/setup browser` installs both). The script loads
//! the page, watches a queue's depth change after a submission, finds a
//! declared task with its live worker count, retries a dead job with the
//! page's button, reads the job's timeline, lists a schedule created through
//! the API (then paused), draws two workflows' DAGs (one succeeded chord, one
//! chain cancelled while it waits) and saves a screenshot to
//! `target/test-artifacts/dashboard.png`.

use std::process::Command;

use hopper_shared::tasks::TaskDefinition;
use hopper_tests::{TestEnv, workspace};

#[tokio::test]
async fn dashboard_shows_depth_and_retries_a_dead_job_in_chromium() {
    let dir = workspace().join("tests/dashboard");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `scripts/setup browser`"
    );
    let mut env = TestEnv::new(&[]);
    let url = env.start_api().await;
    env.start_worker("echo", &[]);
    // A declared task of its own with one worker registered on its queue,
    // as a worker serving it does when it starts.
    let queue = hopper_queue::QueueClient::connect(&env.config())
        .await
        .unwrap();
    let mut thumbnail = TaskDefinition::new("thumbnail".parse().unwrap());
    thumbnail.schema = Some(serde_json::json!({"type": "object", "required": ["size"]}));
    queue.declare(&thumbnail).await.unwrap();
    queue
        .register(&thumbnail.name, &hopper_queue::WorkerId::generate())
        .await
        .unwrap();

    let artifacts = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artefact dir");
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);

    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("dashboard.test.mjs")
            .current_dir(&dir)
            .env("HOPPER_URL", &url)
            .env("SCREENSHOT", &screenshot)
            .output()
            .expect("run node (is Node.js installed?)")
    })
    .await
    .expect("join");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "dashboard test failed:\n{out}\n{err}\napi log:\n{}",
        env.log(0)
    );
    assert!(out.contains("[dashboard] ok"), "{out}");
    let png = std::fs::read(artifacts.join("dashboard.png")).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
}

#[tokio::test]
async fn the_dashboard_endpoints_answer_and_refuse_bad_queries() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let (_, b) = env
        .post("/v1/jobs/echo", &serde_json::json!({"message": "x"}))
        .await;
    let job = env
        .wait_final(
            b["id"].as_str().unwrap(),
            std::time::Duration::from_secs(20),
        )
        .await;
    assert_eq!(job["state"], "succeeded");

    // Server-rendered: the queue table is in the HTML, under a strict CSP.
    let res = env.http().get(env.url("/dashboard")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("<tr data-queue=\"echo\">") && html.contains("data-field=\"pending\""),
        "{html}"
    );
    let (s, b) = env.get("/dashboard/nope.js").await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")), "{b}");

    // History: samples every 2 s, outcomes per minute from Redis.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let (s, h) = env.get("/v1/queues/history?minutes=5").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["every_ms"], 2000);
    let samples = h["samples"].as_array().unwrap();
    assert!(!samples.is_empty(), "{h}");
    assert!(samples[0]["queues"]["echo"]["pending"].is_u64(), "{h}");
    let echo = h["outcomes"]["echo"].as_array().unwrap();
    assert_eq!(echo.len(), 5, "{h}");
    let succeeded: u64 = echo.iter().map(|m| m["succeeded"].as_u64().unwrap()).sum();
    assert_eq!(succeeded, 1, "{h}");
    let (s, b) = env.get("/v1/queues/history?minutes=0").await;
    assert_eq!((s, b["field"].as_str()), (422, Some("minutes")), "{b}");

    // Listing refuses what it cannot answer, naming the problem.
    let (s, b) = env.get("/v1/jobs?limit=0").await;
    assert_eq!((s, b["field"].as_str()), (422, Some("limit")), "{b}");
    let (s, b) = env.get("/v1/jobs?state=sleeping").await;
    assert_eq!((s, b["field"].as_str()), (422, Some("state")), "{b}");
    assert!(
        b["known"].as_array().unwrap().contains(&"dead".into()),
        "{b}"
    );
    let (s, b) = env.get("/v1/jobs?queue=nope").await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_task")), "{b}");
    let (s, b) = env.get("/v1/jobs?colour=red").await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_query")),
        "{b}"
    );
    let (s, b) = env.get("/v1/jobs?queue=echo&state=succeeded").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["jobs"][0]["id"], job["id"], "{b}");
}
