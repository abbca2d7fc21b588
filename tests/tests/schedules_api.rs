//! Periodic schedules over HTTP (`/v1/schedules`), against the real API:
//! what creation refuses and how it says so, listing, pausing, resuming and
//! removing, tenants, and a 1-second schedule whose jobs a real worker runs.
//! (The scheduler's own guarantees — exactly once per tick across
//! processes, missed ticks, time zones — are `tests/tests/schedules.rs`'
//! and `queue/tests/schedules.rs`'.)

use std::time::{Duration, Instant};

use hopper_shared::tasks::TaskDefinition;
use hopper_tests::TestEnv;
use serde_json::{Value, json};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A nightly echo schedule's body, with `extra` fields set over it.
fn nightly(extra: Value) -> Value {
    let mut body = json!({
        "id": "nightly",
        "task": "echo",
        "args": {"message": "hi"},
        "cron": "30 4 * * *",
        "timezone": "Europe/Paris"
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body
}

/// Posts `body` and asserts the refusal: status, code and field.
async fn refused(
    env: &TestEnv,
    body: Value,
    status: u16,
    code: &str,
    field: Option<&str>,
) -> Value {
    let (s, b) = env.post("/v1/schedules", &body).await;
    assert_eq!(
        (s, b["error"].as_str(), b["field"].as_str()),
        (status, Some(code), field),
        "{body} → {b}"
    );
    b
}

#[tokio::test]
async fn creation_checks_every_field_and_names_the_one_it_refuses() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let queue = hopper_queue::QueueClient::connect(&env.config())
        .await
        .unwrap();

    let b = refused(
        &env,
        nightly(json!({"cron": "61 * * * *"})),
        422,
        "invalid_schedule",
        Some("cron"),
    )
    .await;
    assert!(
        b["detail"].as_str().unwrap().contains("`61 * * * *`"),
        "{b}"
    );
    let b = refused(
        &env,
        nightly(json!({"cron": "* * *"})),
        422,
        "invalid_schedule",
        Some("cron"),
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("3 fields"), "{b}");
    let every = |ms: Value| nightly(json!({"cron": null, "timezone": null, "every_ms": ms}));
    let schedule_field = |body: Value, field: &'static str| (body, "invalid_schedule", Some(field));
    for (body, code, field) in [
        schedule_field(nightly(json!({"cron": "0 0 30 2 *"})), "cron"),
        schedule_field(nightly(json!({"cron": "* ".repeat(5_000)})), "cron"),
    ] {
        refused(&env, body, 422, code, field).await;
    }
    let b = refused(
        &env,
        nightly(json!({"timezone": "Mars/Olympus"})),
        422,
        "invalid_schedule",
        Some("timezone"),
    )
    .await;
    assert!(
        b["detail"].as_str().unwrap().contains("Mars/Olympus"),
        "{b}"
    );
    // Timing: exactly one of cron and every_ms, an interval in range; then the
    // other fields, and the shape of the body.
    for (body, code, field) in [
        schedule_field(nightly(json!({"every_ms": 1000})), "cron"),
        schedule_field(nightly(json!({"cron": null, "timezone": null})), "cron"),
        schedule_field(every(json!(999)), "every_ms"),
        schedule_field(every(json!(u64::MAX)), "every_ms"),
        schedule_field(every(json!(1e30)), "every_ms"),
        schedule_field(every(json!(-5)), "every_ms"),
        schedule_field(every(json!("1000")), "every_ms"),
        schedule_field(nightly(json!({"grace_ms": 90_000_000})), "grace_ms"),
        schedule_field(nightly(json!({"missed": "sometimes"})), "missed"),
        schedule_field(nightly(json!({"id": "Not An Id"})), "id"),
        schedule_field(nightly(json!({"id": "x".repeat(100_000)})), "id"),
        schedule_field(nightly(json!({"colour": "red"})), "colour"),
        schedule_field(nightly(json!({"task": null})), "task"),
        (json!([1, 2]), "invalid_schedule", None),
        // The task: a queue name, known, open to clients.
        schedule_field(nightly(json!({"task": "Not A Task"})), "task"),
    ] {
        refused(&env, body, 422, code, field).await;
    }
    let b = refused(
        &env,
        nightly(json!({"task": "nope"})),
        404,
        "unknown_task",
        Some("task"),
    )
    .await;
    assert!(
        b["known"].as_array().unwrap().contains(&json!("echo")),
        "{b}"
    );
    // Its arguments are checked as a submission's; echo takes no other field:
    // not even the fire time.
    for (body, code, field) in [
        (nightly(json!({"task": "webhook"})), "internal_kind", None),
        (
            nightly(json!({"args": {"message": 5}})),
            "invalid_args",
            Some("message"),
        ),
        (
            nightly(json!({"args": {"message": "a\u{0}b"}})),
            "invalid_args",
            Some("message"),
        ),
        (
            nightly(json!({"fire_time_arg": "at"})),
            "invalid_args",
            Some("at"),
        ),
        schedule_field(nightly(json!({"fire_time_arg": ""})), "fire_time_arg"),
    ] {
        refused(&env, body, 422, code, field).await;
    }

    // A declared task whose schema wants the fire time: given, it passes.
    let mut report = TaskDefinition::new("report".parse().unwrap());
    report.schema = Some(json!({
        "type": "object",
        "required": ["at"],
        "properties": {"at": {"type": "integer"}}
    }));
    report.schema_digest = report.schema_digest();
    queue.declare(&report).await.unwrap();
    let body = nightly(json!({"id": "report", "task": "report", "args": {}}));
    refused(&env, body.clone(), 422, "invalid_args", Some("at")).await;
    let mut with_time = body;
    with_time["fire_time_arg"] = json!("at");
    let (s, b) = env.post("/v1/schedules", &with_time).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["fire_time_arg"], "at");

    // Not JSON at all.
    let res = env
        .http()
        .post(env.url("/v1/schedules"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // Nothing refused was stored.
    let (_, list) = env.get("/v1/schedules").await;
    let ids: Vec<&str> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["report"], "{list}");
}

#[tokio::test]
async fn a_schedule_is_listed_paused_resumed_and_removed() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;

    let before = now_ms();
    let (s, created) = env.post("/v1/schedules", &nightly(json!({}))).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["id"], "nightly");
    assert_eq!(created["tenant"], "default");
    assert_eq!(created["paused"], false);
    assert_eq!(created["missed"], "skip");
    let at = created["created_at_ms"].as_i64().unwrap();
    assert!(at >= before && at <= now_ms(), "{created}");
    // 04:30 in Paris: on a whole minute, half past some UTC hour, within a day.
    let next = created["next_fire_ms"].as_i64().expect("next_fire_ms");
    assert!(next > at && next <= at + 24 * 3_600_000, "{created}");
    assert_eq!(next % 60_000, 0, "{created}");
    assert_eq!(next / 60_000 % 60, 30, "{created}");

    let b = refused(
        &env,
        nightly(json!({"task": "noop", "args": {}})),
        409,
        "schedule_exists",
        Some("id"),
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("nightly"), "{b}");

    let (s, list) = env.get("/v1/schedules").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["schedules"], json!([created]), "{list}");
    let (s, shown) = env.get("/v1/schedules/nightly").await;
    assert_eq!((s, &shown), (200, &created));

    let (s, paused) = env.post("/v1/schedules/nightly/pause", &json!({})).await;
    assert_eq!(s, 200, "{paused}");
    assert_eq!(paused["paused"], true, "{paused}");
    assert!(paused.get("next_fire_ms").is_none(), "{paused}");
    let (_, shown) = env.get("/v1/schedules/nightly").await;
    assert_eq!(shown, paused);
    // Pausing twice changes nothing.
    let (s, again) = env.post("/v1/schedules/nightly/pause", &json!({})).await;
    assert_eq!((s, &again), (200, &paused));

    let (s, resumed) = env.post("/v1/schedules/nightly/resume", &json!({})).await;
    assert_eq!(s, 200, "{resumed}");
    assert_eq!(resumed["paused"], false, "{resumed}");
    assert_eq!(
        resumed["next_fire_ms"], created["next_fire_ms"],
        "{resumed}"
    );

    let (s, runs) = env.get("/v1/schedules/nightly/runs").await;
    assert_eq!((s, &runs), (200, &json!({"runs": []})));
    for bad in ["0", "101", "x"] {
        let (s, b) = env
            .get(&format!("/v1/schedules/nightly/runs?limit={bad}"))
            .await;
        assert!(s == 422 || s == 400, "limit={bad}: {s} {b}");
    }

    let (s, _) = env.delete("/v1/schedules/nightly").await;
    assert_eq!(s, 204);
    for (method, path) in [
        ("GET", "/v1/schedules/nightly"),
        ("DELETE", "/v1/schedules/nightly"),
        ("POST", "/v1/schedules/nightly/pause"),
        ("POST", "/v1/schedules/nightly/resume"),
        ("GET", "/v1/schedules/nightly/runs"),
    ] {
        let (s, b) = match method {
            "GET" => env.get(path).await,
            "DELETE" => env.delete(path).await,
            _ => env.post(path, &json!({})).await,
        };
        assert_eq!(
            (s, b["error"].as_str()),
            (404, Some("schedule_not_found")),
            "{method} {path}: {b}"
        );
    }
    let (_, list) = env.get("/v1/schedules").await;
    assert_eq!(list, json!({"schedules": []}));
    // The id is free again.
    let (s, b) = env.post("/v1/schedules", &nightly(json!({}))).await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn a_tenant_sees_and_changes_only_its_own_schedules() {
    let mut env = TestEnv::new(&[("HOPPER_AUTH", "keys")]);
    env.start_api().await;
    let a = env.create_key("tenant-a", "submit,read").await;
    let a_read = env.create_key("tenant-a", "read").await;
    let b = env.create_key("tenant-b", "submit,read,admin").await;
    let operator = env.create_key("default", "read,admin").await;

    env.use_key(Some(&a_read));
    let (s, _) = env.post("/v1/schedules", &nightly(json!({}))).await;
    assert_eq!(s, 403, "creating needs the submit scope");
    env.use_key(Some(&a));
    let (s, created) = env.post("/v1/schedules", &nightly(json!({}))).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["tenant"], "tenant-a");
    env.use_key(Some(&a_read));
    let (s, list) = env.get("/v1/schedules").await;
    assert_eq!((s, list["schedules"].as_array().unwrap().len()), (200, 1));
    let (s, _) = env.post("/v1/schedules/nightly/pause", &json!({})).await;
    assert_eq!(s, 403, "pausing needs the submit scope");

    env.use_key(Some(&b));
    let (_, list) = env.get("/v1/schedules").await;
    assert_eq!(list, json!({"schedules": []}));
    for (method, path) in [
        ("GET", "/v1/schedules/nightly"),
        ("GET", "/v1/schedules/nightly/runs"),
        ("POST", "/v1/schedules/nightly/pause"),
        ("POST", "/v1/schedules/nightly/resume"),
        ("DELETE", "/v1/schedules/nightly"),
    ] {
        let (s, body) = match method {
            "GET" => env.get(path).await,
            "DELETE" => env.delete(path).await,
            _ => env.post(path, &json!({})).await,
        };
        assert_eq!(s, 404, "{method} {path}: {body}");
        assert!(!body.to_string().contains("tenant-a"), "{body}");
    }

    // The operator's admin sees every tenant's.
    env.use_key(Some(&operator));
    let (_, list) = env.get("/v1/schedules").await;
    assert_eq!(list["schedules"][0]["tenant"], "tenant-a", "{list}");

    // A's schedule is untouched.
    env.use_key(Some(&a));
    let (s, shown) = env.get("/v1/schedules/nightly").await;
    assert_eq!((s, &shown), (200, &created));
}

#[tokio::test]
async fn a_one_second_schedule_makes_jobs_a_worker_runs() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("noop", &[]);
    let (s, created) = env
        .post(
            "/v1/schedules",
            &json!({"id": "heartbeat", "task": "noop", "every_ms": 1000}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["args"], json!({}));
    let first = created["next_fire_ms"].as_i64().unwrap();
    assert_eq!(first, created["created_at_ms"].as_i64().unwrap() + 1000);

    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let (s, r) = env.get("/v1/schedules/heartbeat/runs?limit=100").await;
        assert_eq!(s, 200, "{r}");
        let runs = r["runs"].as_array().unwrap().clone();
        if runs.iter().filter(|r| r["outcome"] == "fired").count() >= 2 {
            break runs;
        }
        assert!(Instant::now() < deadline, "fewer than 2 runs in 30 s: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Newest first, one second apart, from the first tick on.
    let ticks: Vec<i64> = runs
        .iter()
        .map(|r| r["tick_ms"].as_i64().unwrap())
        .collect();
    assert!(
        ticks
            .windows(2)
            .all(|w| w[0] > w[1] && (w[0] - w[1]) % 1000 == 0),
        "{ticks:?}"
    );
    assert!(*ticks.last().unwrap() >= first, "{ticks:?}");
    for run in runs.iter().filter(|r| r["outcome"] == "fired") {
        let tick = run["tick_ms"].as_i64().unwrap();
        assert!(run["handled_at_ms"].as_i64().unwrap() >= tick, "{run}");
        let id = run["job_id"].as_str().expect("a fired run names its job");
        let job = env.wait_final(id, Duration::from_secs(20)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["kind"], "noop");
        assert_eq!(job["tenant"], "default");
        assert_eq!(
            job["request_id"],
            format!("schedule:heartbeat:{tick}"),
            "{job}"
        );
    }

    // Removed, its jobs stay.
    let (s, _) = env.delete("/v1/schedules/heartbeat").await;
    assert_eq!(s, 204);
    let id = runs[0]["job_id"].as_str().unwrap();
    let (s, job) = env.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (s, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
}
