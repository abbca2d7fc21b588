//! The Rust task API end to end: `examples/custom-task`, a worker binary
//! built on the hopper-worker library, serves its own `word_count` task
//! against the real API, Redis and Postgres. It declares the task (schema
//! from schemars) when it starts, runs jobs with typed arguments and
//! results, reports progress, pushes a child job once, dead-letters a
//! payload that does not decode (and keeps serving), stops at the soft
//! limit through the context's cancellation token, and refuses to start
//! when the task's version is in force with another schema or another
//! tenant owns the name. `hopper-worker` refuses names that are not
//! built-in tasks, pointing at the example.

use std::time::{Duration, Instant};

use hopper_queue::{PushOptions, QueueClient};
use hopper_shared::{
    QueueName,
    tasks::{Runtime, TaskDefinition},
};
use hopper_tests::TestEnv;
use serde_json::{Value, json};

const BIN: &str = "custom-task";

fn word_count() -> QueueName {
    "word_count".parse().unwrap()
}

/// Starts the example worker and waits until it has declared its task.
async fn start(env: &mut TestEnv, extra: &[(&str, &str)]) -> (usize, QueueClient) {
    let client = QueueClient::connect(&env.config()).await.unwrap();
    let index = env.start_binary(BIN, &[], extra);
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.task(&word_count()).await.unwrap().is_none() {
        assert!(!env.exited(index), "custom-task exited: {}", env.log(index));
        assert!(Instant::now() < deadline, "word_count was never declared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (index, client)
}

/// Submits a `word_count` job over HTTP (the API checks it against the
/// declared schema); its id.
async fn submit(env: &TestEnv, args: Value) -> String {
    let (status, body) = env.post("/v1/jobs/word_count", &args).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().expect("job id").to_owned()
}

/// Pushes a `word_count` job straight into its queue (no schema check), as
/// the default tenant; its id.
async fn push(client: &QueueClient, args: Value) -> String {
    let pushed = client
        .push(word_count(), &args, &PushOptions::default())
        .await
        .unwrap();
    pushed.id.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_of_its_own_runs_with_typed_args_result_progress_and_a_child() {
    let mut env = TestEnv::new(&[]);
    env.start_api().await;
    let (worker, client) = start(&mut env, &[]).await;

    let def = client.task(&word_count()).await.unwrap().unwrap();
    let schema = def.schema.as_ref().expect("schema from schemars");
    assert_eq!(schema["required"], json!(["text"]), "{schema}");
    assert_eq!(
        def.description.as_deref(),
        Some("Counts the words of a text")
    );

    let id = submit(&env, json!({"text": "one two three", "then": "four five"})).await;
    let job = env.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["words"], 3, "{job}");
    let child = job["result"]["child"]
        .as_str()
        .expect("a child id")
        .to_owned();
    let child_job = env.wait_final(&child, Duration::from_secs(30)).await;
    assert_eq!(child_job["state"], "succeeded", "{child_job}");
    assert_eq!(child_job["result"], json!({"words": 2, "child": null}));
    assert_eq!(child_job["tenant"], job["tenant"]);

    // The progress report is shown with the job.
    assert_eq!(job["progress"], json!({"counted": 3}), "{job}");

    // The API refuses arguments that break the declared schema; one that
    // gets into the queue anyway and does not decode is a poison job, dead
    // at once, and the worker goes on serving.
    let (status, body) = env.post("/v1/jobs/word_count", &json!({"text": 5})).await;
    assert_eq!(status, 422, "{body}");
    let poison = push(&client, json!({"text": 5})).await;
    let dead = env.wait_final(&poison, Duration::from_secs(30)).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["attempts"], 1, "{dead}");
    let error = dead["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not decode as a word_count job"),
        "{dead}"
    );
    // A permanent error is dead at once too, with the handler's words.
    let empty = submit(&env, json!({"text": "   "})).await;
    let dead = env.wait_final(&empty, Duration::from_secs(30)).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["attempts"], 1, "{dead}");
    assert_eq!(dead["error"], "`text` has no words to count", "{dead}");

    let after = submit(&env, json!({"text": "still here"})).await;
    let job = env.wait_final(&after, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(!env.exited(worker), "{}", env.log(worker));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_soft_limit_fires_the_cancellation_token() {
    // Every process (and the test's own client, which pushes) sees them.
    let mut env = TestEnv::new(&[
        ("HOPPER_QUEUE_WORD_COUNT_SOFT_LIMIT_MS", "300"),
        ("HOPPER_QUEUE_WORD_COUNT_MAX_ATTEMPTS", "1"),
    ]);
    env.start_api().await;
    start(&mut env, &[]).await;
    let started = Instant::now();
    let id = submit(&env, json!({"text": "slow", "pause_ms": 600_000})).await;
    let job = env.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["error"], "stopped at the soft time limit", "{job}");
    // Stopped by the token, long before the pause or the hard limit.
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Waits for the process at `index` to exit non-zero; what it wrote.
fn refused(env: &mut TestEnv, index: usize) -> String {
    let status = env
        .wait_exit(index, Duration::from_secs(60))
        .expect("the worker should refuse to start");
    assert!(!status.success(), "{status}");
    env.log(index)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_schema_under_one_version_refuses_to_start() {
    let mut env = TestEnv::new(&[]);
    let client = QueueClient::connect(&env.config()).await.unwrap();
    // Another worker declared version 1 with another schema.
    let mut other = TaskDefinition::new(word_count());
    other.schema = Some(json!({"type": "object", "required": ["words"]}));
    client.declare(&other).await.unwrap();

    let index = env.start_binary(BIN, &[], &[]);
    let log = refused(&mut env, index);
    assert!(
        log.contains("task `word_count` version 1 is declared with another argument schema"),
        "{log}"
    );
    assert!(log.contains("declare a new version"), "{log}");
    let in_force = client.task(&word_count()).await.unwrap().unwrap();
    assert_eq!(in_force.schema, other.schema, "the schema in force stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_a_tenant_owns_refuses_to_start() {
    let mut env = TestEnv::new(&[]);
    let client = QueueClient::connect(&env.config()).await.unwrap();
    // Tenant acme declared its own word_count over HTTP.
    let mut owned = TaskDefinition::new(word_count());
    owned.runtime = Runtime::Http;
    owned.tenant = Some("acme".into());
    client.declare(&owned).await.unwrap();

    let index = env.start_binary(BIN, &[], &[]);
    let log = refused(&mut env, index);
    assert!(
        log.contains("task `word_count` is declared by another tenant; choose another name"),
        "{log}"
    );
    let in_force = client.task(&word_count()).await.unwrap().unwrap();
    assert_eq!(in_force.tenant.as_deref(), Some("acme"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hopper_worker_serves_built_in_tasks_only() {
    let mut env = TestEnv::new(&[]);
    let index = env.start_worker("echo,word_count", &[]);
    let log = refused(&mut env, index);
    assert!(log.contains("`word_count` is not a built-in task"), "{log}");
    assert!(log.contains("examples/custom-task"), "{log}");
}
