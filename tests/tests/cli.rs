//! The `hopper` command against a live API (real Redis and Postgres).

use std::process::Command;

use hopper_tests::{TestEnv, binary};
use serde_json::json;

fn hopper(env: &TestEnv, args: &[&str]) -> std::process::Output {
    env.cli(args)
}

#[tokio::test]
async fn submit_wait_show_and_queues() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);

    let out = hopper(
        &env,
        &[
            "submit",
            "echo",
            r#"{"message":"from the cli"}"#,
            "--wait",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["result"]["message"], "from the cli");

    let id = job["id"].as_str().unwrap();
    let out = hopper(&env, &["jobs", "show", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("state succeeded") && text.contains("finished"),
        "{text}"
    );

    let out = hopper(&env, &["queues"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("QUEUE"), "{text}");
    let header = text.lines().next().unwrap();
    let echo = text
        .lines()
        .find(|l| l.starts_with("echo "))
        .expect("an echo row");
    assert_eq!(echo.len(), header.len(), "columns line up:\n{text}");
    assert_eq!(
        echo.split_whitespace().nth(6),
        Some("-"),
        "no pending job, no age:\n{text}"
    );

    // --watch redraws until interrupted.
    let out = Command::new("timeout")
        .args(["2.5"])
        .arg(binary("hopper"))
        .args(["queues", "--watch", "1"])
        .env("HOPPER_API_URL", env.api.clone().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("QUEUE").count() >= 2, "redrawn: {text}");

    let out = hopper(&env, &["workers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("QUEUE") && text.lines().any(|l| l.starts_with("echo ")),
        "{text}"
    );
}

#[tokio::test]
async fn errors_exit_non_zero_with_one_line() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;

    let out = hopper(&env, &["submit", "nope", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no task `nope` is declared"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = hopper(&env, &["submit", "echo", r#"{"message": 1}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("field `message`"));

    let out = hopper(&env, &["submit", "echo", "{not json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

#[tokio::test]
async fn migrate_creates_the_schema_and_is_idempotent() {
    let env = TestEnv::new(&[]);
    let out = hopper(&env, &["migrate", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["applied"],
        serde_json::json!([1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13])
    );
    let out = hopper(&env, &["migrate", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["applied"], serde_json::json!([]));
    let client = env.pool().get().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM chunks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn dead_letters_cancel_documents_and_search_from_the_terminal() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo,ingest,embed,summarize", &[]);

    // A dead letter, listed and retried by the CLI.
    let out = hopper(
        &env,
        &[
            "submit",
            "echo",
            r#"{"message":"x","fail":"nope"}"#,
            "--wait",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "a dead job is a failure");
    let out = hopper(&env, &["dlq", "list", "echo"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("1 dead letter(s) in echo") && text.contains("nope"),
        "{text}"
    );
    let out = hopper(&env, &["dlq", "purge", "echo", "--all"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("purge: 1 job(s)"));
    let out = hopper(&env, &["dlq", "retry", "echo"]);
    assert_eq!(out.status.code(), Some(1), "ids or --all are required");

    // Cancel a delayed job.
    let out = hopper(
        &env,
        &[
            "submit",
            "echo",
            r#"{"message":"later"}"#,
            "--delay-ms",
            "60000",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = hopper(&env, &["jobs", "cancel", v["id"].as_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));

    // Upload two documents, follow them to ready, search.
    let dir = std::env::temp_dir().join(format!("hopper-cli-{}", env.id));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("volcanoes.md");
    // A non-ASCII name: its bytes cross the progress stream's chunks and
    // must come out whole (no U+FFFD), in the upload's output and search.
    let b = dir.join("Bäckerei — パン.txt");
    std::fs::write(
        &a,
        "# Volcanoes\n\nMagma rises through the crust and erupts as lava.\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "Sourdough bread needs a starter, flour, water and a long proof.\n",
    )
    .unwrap();
    let out = hopper(
        &env,
        &[
            "documents",
            "upload",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--document-set",
            "cli",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("status ready").count(), 2, "{text}");
    assert!(
        text.contains("Bäckerei — パン.txt") && !text.contains('\u{FFFD}'),
        "{text}"
    );
    let out = hopper(&env, &["search", "how is bread made", "-k", "1"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with(" 1. ") && text.contains("Bäckerei — パン.txt"),
        "{text}"
    );
    let out = hopper(&env, &["documents", "list", "--document-set", "cli"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.lines().filter(|l| l.contains(" ready ")).count(),
        2,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn jobs_list_by_queue_and_state() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    // Three pending noop jobs (no noop worker), one scheduled echo, one
    // succeeded echo (its record in Postgres).
    let pending = env
        .submit_batch("noop", &[json!({}), json!({}), json!({})])
        .await;
    let (s, b) = env
        .post(
            "/v1/jobs/echo?delay_ms=600000",
            &json!({"message": "later"}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let scheduled = b["id"].as_str().unwrap().to_owned();
    let (_, b) = env.post("/v1/jobs/echo", &json!({"message": "now"})).await;
    let done = b["id"].as_str().unwrap().to_owned();
    env.wait_final(&done, std::time::Duration::from_secs(20))
        .await;

    let out = hopper(
        &env,
        &["jobs", "list", "--queue", "noop", "--state", "pending"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("ID"), "{text}");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{text}");
    // Claim order: the first submitted is the next to run.
    assert!(rows[0].starts_with(&pending[0]), "{text}");
    assert!(rows.iter().all(|r| r.contains(" pending ")), "{text}");

    let out = hopper(
        &env,
        &[
            "jobs",
            "list",
            "--state",
            "succeeded",
            "--json",
            "--limit",
            "5",
        ],
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![done.as_str()], "{v}");

    // Without filters: every job of every queue, five in all.
    let out = hopper(&env, &["jobs", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = v["jobs"].as_array().unwrap();
    assert_eq!(all.len(), 5, "{v}");
    assert!(
        all.iter()
            .any(|j| j["id"] == scheduled.as_str() && j["state"] == "scheduled")
    );

    // A bad state: non-zero exit and one line naming the problem.
    let out = hopper(&env, &["jobs", "list", "--state", "sleeping"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown job state `sleeping`"), "{err}");
}

#[tokio::test]
async fn submit_passes_a_callback_url_and_reports_its_refusal() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let out = hopper(
        &env,
        &[
            "submit",
            "echo",
            r#"{"message":"x"}"#,
            "--callback-url",
            "https://hooks.example.com/h",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("HOPPER_WEBHOOK_SECRET") && err.contains("callback_url"),
        "{err}"
    );
}

#[tokio::test]
async fn schedules_add_list_runs_pause_and_remove() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Refusals name the field, in one line; a timing is required.
    let out = hopper(
        &env,
        &["schedules", "add", "bad", "noop", "--cron", "61 * * * *"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("field `cron`") && err.contains("61 * * * *"),
        "{err}"
    );
    let out = hopper(&env, &["schedules", "add", "bad", "noop"]);
    assert!(!out.status.success());

    // No noop worker: the ticks' jobs wait, and the runs name them.
    let text = ok(&hopper(
        &env,
        &[
            "schedules",
            "add",
            "tick",
            "noop",
            "--every-ms",
            "1000",
            "--args",
            "{}",
        ],
    ));
    assert!(
        text.starts_with("created schedule tick: every 1s, next fire "),
        "{text}"
    );
    let text = ok(&hopper(
        &env,
        &[
            "schedules",
            "add",
            "nightly",
            "echo",
            "--cron",
            "30 4 * * *",
            "--timezone",
            "Europe/Paris",
            "--args",
            r#"{"message":"hi"}"#,
            "--missed",
            "latest",
        ],
    ));
    assert!(text.contains("cron 30 4 * * * (Europe/Paris)"), "{text}");

    let text = ok(&hopper(&env, &["schedules", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("NEXT FIRE"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("tick ") && l.contains("every 1s")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("nightly ") && l.contains("Europe/Paris")),
        "{text}"
    );
    let text = ok(&hopper(&env, &["schedules", "show", "nightly"]));
    assert!(
        text.contains("missed     latest") && text.contains(r#"{"message":"hi"}"#),
        "{text}"
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let fired = loop {
        let out = ok(&hopper(&env, &["schedules", "runs", "tick", "--json"]));
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        let fired: Vec<String> = r["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "fired")
            .map(|r| r["job_id"].as_str().unwrap().to_owned())
            .collect();
        if !fired.is_empty() {
            break fired;
        }
        assert!(std::time::Instant::now() < deadline, "no run in 30 s: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let text = ok(&hopper(&env, &["schedules", "runs", "tick"]));
    assert!(text.starts_with("TICK (UTC)"), "{text}");
    assert!(text.contains("fired") && text.contains(&fired[0]), "{text}");
    let text = ok(&hopper(&env, &["jobs", "show", &fired[0]]));
    assert!(text.contains("kind noop"), "{text}");

    let text = ok(&hopper(&env, &["schedules", "pause", "tick"]));
    assert_eq!(text, "tick: paused\n");
    let text = ok(&hopper(&env, &["schedules", "list"]));
    assert!(
        text.lines()
            .any(|l| l.starts_with("tick ") && l.ends_with("paused")),
        "{text}"
    );
    let text = ok(&hopper(&env, &["schedules", "resume", "tick"]));
    assert!(text.starts_with("tick: resumed, next fire "), "{text}");

    let text = ok(&hopper(&env, &["schedules", "remove", "tick"]));
    assert!(
        text.starts_with("removed schedule tick: noop, every 1s;"),
        "{text}"
    );
    let out = hopper(&env, &["schedules", "show", "tick"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no schedule `tick`"),
        "{err}"
    );
    let out = ok(&hopper(&env, &["schedules", "list", "--json"]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["schedules"][0]["id"], "nightly", "{r}");
    assert_eq!(r["schedules"].as_array().unwrap().len(), 1, "{r}");
}

#[tokio::test]
async fn workflows_submit_show_list_and_cancel() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let echo = |m: &str| json!({"task": "echo", "args": {"message": m}});

    // A chain whose second step is a chord: a, then b and c side by side,
    // then d with both results.
    let file = std::env::temp_dir().join(format!("hopper-workflow-{}.json", env.id));
    let spec = json!({"name": "fan", "root": {"chain": [
        echo("a"),
        {"chord": {"header": [echo("b"), echo("c")], "body": echo("d")}},
    ]}});
    std::fs::write(&file, spec.to_string()).unwrap();
    let text = ok(&hopper(
        &env,
        &["workflows", "submit", file.to_str().unwrap()],
    ));
    let id = text.trim().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{text}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = ok(&hopper(&env, &["workflows", "show", &id, "--json"]));
        let w: serde_json::Value = serde_json::from_str(&out).unwrap();
        if w["state"] != "running" {
            assert_eq!(w["state"], "succeeded", "{w}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not over in 30 s: {w}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let text = ok(&hopper(&env, &["workflows", "show", &id]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("workflow {id} \"fan\"  succeeded  on_failure stop  4 nodes: 4 succeeded"),
        "{text}"
    );
    // One line per node in index order, indented by depth, with its state,
    // place, job and what it waits for.
    for (line, (start, path, deps)) in lines[1..5].iter().zip([
        ("   ├─ [0] echo", "root.chain[0]", ""),
        (
            "      ├─ [1] echo",
            "root.chain[1].chord.header[0]",
            "  ← 0",
        ),
        (
            "      ├─ [2] echo",
            "root.chain[1].chord.header[1]",
            "  ← 0",
        ),
        (
            "         └─ [3] echo",
            "root.chain[1].chord.body",
            "  ← 1,2",
        ),
    ]) {
        assert!(line.starts_with(start), "{line:?} in\n{text}");
        assert!(line.contains("  succeeded  "), "{line:?}");
        assert!(line.contains(&format!("  {path} ")), "{line:?}");
        assert!(
            line.contains("  job ") && line.ends_with(&format!("…{deps}")),
            "{line:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(r#"  result: {"attempt":1,"input":["#)),
        "{text}"
    );

    let text = ok(&hopper(&env, &["workflows", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{text}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{text}"));
    assert!(
        row.contains(" fan ") && row.contains(" succeeded ") && row.contains(" 4/4 "),
        "{row}"
    );

    // From stdin, with --json: the view; then cancelled while its first
    // step sleeps.
    let slow = json!({"root": {"chain": [
        {"task": "echo", "args": {"message": "slow", "sleep_ms": 30_000}},
        echo("never"),
    ]}});
    let mut child = Command::new(binary("hopper"))
        .args(["workflows", "submit", "-", "--json"])
        .env("HOPPER_API_URL", env.api.clone().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(slow.to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let w: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(w["nodes"].as_array().unwrap().len(), 2, "{w}");
    let slow_id = w["id"].as_str().unwrap();
    let text = ok(&hopper(&env, &["workflows", "cancel", slow_id]));
    assert_eq!(text, format!("{slow_id}: cancelled (was running)\n"));
    let text = ok(&hopper(&env, &["workflows", "show", slow_id]));
    assert!(
        text.lines().next().unwrap().contains("  cancelled  "),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("[1] echo") && l.contains("  skipped  ")),
        "{text}"
    );

    // Refusals: one line naming the field.
    std::fs::write(&file, json!({"root": {"task": "nope"}}).to_string()).unwrap();
    let out = hopper(&env, &["workflows", "submit", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("field `root.task`"), "{err}");
    let out = hopper(
        &env,
        &["workflows", "show", &uuid::Uuid::now_v7().to_string()],
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no workflow"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
}
