//! Workflows against the real worker binaries, Redis and Postgres: a chord
//! of 200 `echo` members, some of which fail their first attempt, run by
//! three workers one of which is SIGKILLed mid-way, calls back exactly once
//! with the 200 results in order.

use std::time::{Duration, Instant};

use hopper_queue::QueueClient;
use hopper_shared::{
    QueueName,
    workflows::{NodeState, WorkflowSpec, WorkflowState, WorkflowView, chord, task},
};
use hopper_tests::TestEnv;
use serde_json::json;
use uuid::Uuid;

const FAST_LEASE: [(&str, &str); 2] = [("HOPPER_HEARTBEAT_MS", "200"), ("HOPPER_LEASE_MS", "1000")];

async fn view(q: &QueueClient, id: Uuid) -> WorkflowView {
    q.workflow(id, None, true)
        .await
        .unwrap()
        .expect("the workflow")
}

#[tokio::test]
async fn a_chord_of_200_flaky_members_calls_back_once_in_order_through_a_sigkill() {
    let mut env = TestEnv::new(&[
        FAST_LEASE[0],
        FAST_LEASE[1],
        ("HOPPER_QUEUE_ECHO_CONCURRENCY", "8"),
        ("HOPPER_QUEUE_ECHO_MAX_ATTEMPTS", "5"),
        ("HOPPER_QUEUE_ECHO_BACKOFF_BASE_MS", "50"),
        ("HOPPER_QUEUE_ECHO_BACKOFF_MAX_MS", "200"),
    ]);
    env.start_api().await;
    let workers: Vec<usize> = (0..3).map(|_| env.start_worker("echo", &[])).collect();
    let q = QueueClient::connect(&env.config()).await.unwrap();

    // Members whose first attempt fails: a fixed pseudo-random third.
    let flaky = |i: u64| (i * 2_654_435_761).is_multiple_of(3);
    let echo = QueueName::from_static("echo");
    let members = (0..200u64).map(|i| {
        task(
            echo.clone(),
            json!({
                "message": i.to_string(),
                "sleep_ms": 20 + i % 40,
                "fail_attempts": u32::from(flaky(i)),
            }),
        )
    });
    let spec = WorkflowSpec::new(chord(
        members,
        task(echo.clone(), json!({ "message": "body" })),
    ));
    let plan = spec.plan().unwrap();
    let id = q.create_workflow(&spec, &plan, "default").await.unwrap();

    // SIGKILL a worker while members run: once a third of them are done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = view(&q, id).await;
        if v.counts.get("succeeded").copied().unwrap_or(0) >= 70 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members do not finish: {:?}",
            v.counts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.restart_worker(workers[0], "echo", &[]);

    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let v = view(&q, id).await;
        if v.state != WorkflowState::Running {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the workflow does not end: {:?}",
            v.counts
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.state, WorkflowState::Succeeded, "{:?}", done.counts);
    assert!(done.nodes.iter().all(|n| n.state == NodeState::Succeeded));

    // The callback: one job, run once, with every result in order.
    let body = &done.nodes[200];
    let (status, job) = env.get(&format!("/v1/jobs/{}", body.job_id)).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["attempts"], 1, "the callback ran once: {job}");
    let input = job["result"]["input"].as_array().expect("the body's input");
    assert_eq!(input.len(), 200);
    for (i, result) in input.iter().enumerate() {
        assert_eq!(result["message"], i.to_string(), "result {i} in its place");
        let attempt = result["attempt"].as_u64().unwrap();
        if flaky(i as u64) {
            assert!(attempt >= 2, "member {i} failed once first: {result}");
        }
    }
    assert_eq!(
        done.result.as_ref(),
        Some(&job["result"]),
        "the chord's result is its body's"
    );

    // Exactly 201 jobs were ever recorded: no second callback, no duplicate member.
    let records: i64 = env
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM job_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(records, 201);
}
