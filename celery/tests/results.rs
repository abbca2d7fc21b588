//! The result metas of `hopper_celery::result`, read back by the real Celery
//! client: each meta is written with `SETEX` under its result key (a private
//! result prefix, so Celery's own `_` rule is checked too), then
//! `tests/check_results.py` runs `AsyncResult(id)` on it with the pinned
//! celery and checks `.status`, `.ready()`, `.successful()` and what `.get()`
//! returns or raises.
//!
//! Needs `HOPPER_CELERY_PYTHON` (a Python with the pinned `celery[redis]`;
//! `scripts/test` points it at the celery venv) and Redis at `REDIS_URL`;
//! without the former the test says so and passes.

use std::io::Write as _;
use std::process::{Command, Stdio};

use hopper_celery::config::CeleryConfig;
use hopper_celery::envelope::{Refusal, RefusalReason};
use hopper_celery::result::{ResultData, meta, refusal_meta};
use hopper_shared::jobs::{JobRecord, JobState};
use serde_json::{Value, json};
use time::OffsetDateTime;

fn job(state: JobState, result: Option<Value>, error: Option<&str>) -> JobRecord {
    serde_json::from_value(json!({
        "id": uuid::Uuid::new_v4(), "kind": "add", "state": state, "attempts": 1,
        "max_attempts": 3, "args": {}, "result": result, "error": error, "worker": "w-1",
        "enqueued_at_ms": 0, "started_at_ms": null, "finished_at_ms": null,
    }))
    .expect("a job record")
}

#[test]
fn celery_client_reads_our_results() -> anyhow::Result<()> {
    let Some(python) = std::env::var_os("HOPPER_CELERY_PYTHON") else {
        eprintln!(
            "SKIPPED: set HOPPER_CELERY_PYTHON to a Python with the pinned celery[redis] \
             (scripts/setup celery) to check results with the real client"
        );
        return Ok(());
    };
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // No separator at the end: Celery and the config both add `_`.
    let prefix = format!("hopper-celery-results-{}", uuid::Uuid::new_v4().simple());
    let config = CeleryConfig::from_lookup(|var| match var {
        "REDIS_URL" => Some(redis_url.clone()),
        "HOPPER_CELERY_RESULT_PREFIX" => Some(prefix.clone()),
        _ => None,
    })?;
    assert_eq!(
        config.result_key("x"),
        format!("{prefix}_celery-task-meta-x")
    );
    let now = OffsetDateTime::now_utc();

    let traceback = "Traceback (most recent call last):\n  File \"tasks.py\", line 9, in add\n    \
                     return {}['k']\n           ~~^^^^^\nKeyError: 'k'";
    let jobs: [(JobRecord, Value); 6] = [
        (
            job(
                JobState::Succeeded,
                Some(json!({"sum": 3, "items": [1, "two"]})),
                None,
            ),
            json!({"status": "SUCCESS", "result": {"sum": 3, "items": [1, "two"]}}),
        ),
        (
            job(JobState::Succeeded, None, None),
            json!({"status": "SUCCESS", "result": null}),
        ),
        (
            job(JobState::Dead, None, Some("ValueError: boom")),
            json!({"status": "FAILURE", "raises": "builtins.ValueError", "message": "boom"}),
        ),
        (
            job(JobState::Dead, None, Some(traceback)),
            json!({"status": "FAILURE", "raises": "builtins.KeyError", "message": "'k'"}),
        ),
        (
            job(JobState::Dead, None, Some("hard time limit of 2s exceeded")),
            json!({"status": "FAILURE", "raises": "celery.exceptions.TimeLimitExceeded",
                   "message": "hard time limit of 2s exceeded"}),
        ),
        (
            job(
                JobState::Cancelled,
                None,
                Some("expired at 2026-12-02T10:00:00Z"),
            ),
            json!({"status": "REVOKED", "raises": "celery.exceptions.TaskRevokedError",
                   "message": "expired at 2026-12-02T10:00:00Z"}),
        ),
    ];
    let mut written: Vec<(String, Value)> = Vec::new();
    let mut cases = Vec::new();
    for (index, (job, mut expected)) in jobs.into_iter().enumerate() {
        let task_id = uuid::Uuid::new_v4().to_string();
        let data = ResultData {
            task_id: task_id.clone(),
            name: "tasks.add".into(),
            args: vec![json!(index)],
            kwargs: Default::default(),
            result_key: config.result_key(&task_id),
            result_ttl_s: 60,
            queue: Some("celery".into()),
        };
        written.push((data.result_key.clone(), meta(&(&job).into(), &data, now)));
        expected["task_id"] = json!(task_id);
        expected["name"] = json!("tasks.add");
        cases.push(expected);
    }
    // A plain error text (no class named) and refused messages.
    let task_id = uuid::Uuid::new_v4().to_string();
    let data = ResultData {
        task_id: task_id.clone(),
        name: "tasks.add".into(),
        args: vec![],
        kwargs: Default::default(),
        result_key: config.result_key(&task_id),
        result_ttl_s: 60,
        queue: None,
    };
    written.push((
        data.result_key.clone(),
        meta(
            &(&job(JobState::Dead, None, Some("disk full"))).into(),
            &data,
            now,
        ),
    ));
    cases.push(json!({"task_id": task_id, "status": "FAILURE",
                      "raises": "builtins.RuntimeError", "message": "disk full"}));
    for (reason, raises) in [
        (
            RefusalReason::UnknownTask,
            "celery.exceptions.NotRegistered",
        ),
        (RefusalReason::BadArguments, "builtins.TypeError"),
        (RefusalReason::ContentType, "builtins.ValueError"),
    ] {
        let task_id = uuid::Uuid::new_v4().to_string();
        let mut refusal = Refusal::unknown_task("tasks.nope");
        refusal.reason = reason;
        refusal.id = Some(task_id.clone());
        let detail = refusal.detail.clone();
        written.push((
            config.result_key(&task_id),
            refusal_meta(&refusal, now).expect("a meta"),
        ));
        cases.push(
            json!({"task_id": task_id, "status": "FAILURE", "name": "tasks.nope",
                          "raises": raises, "message": detail}),
        );
    }

    let client = redis::Client::open(redis_url.as_str())?;
    let mut redis = client.get_connection()?;
    for (key, value) in &written {
        redis::cmd("SETEX")
            .arg(key)
            .arg(60)
            .arg(value.to_string())
            .query::<()>(&mut redis)?;
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/check_results.py");
    let mut child = Command::new(&python)
        .args([script, &redis_url, &prefix])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&cases)?.as_bytes())?;
    let output = child.wait_with_output()?;

    for (key, _) in &written {
        redis::cmd("DEL").arg(key).query::<()>(&mut redis)?;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the Celery client disagrees:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with(": ok")).count(),
        cases.len()
    );
    Ok(())
}
