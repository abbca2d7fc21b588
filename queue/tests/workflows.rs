//! Workflows against a real Redis: a chain passes each result on, a chord's
//! body runs once with every result in order even when its members finish
//! at the same moment or one reports twice (a re-run after a crash), the
//! failure policies, cancellation, and the repair of a step that never ran.
//! Members are claimed and finished here as a worker would, through a
//! `Recorder` (without Postgres), so the fan-in runs on the real ack path.

mod support;

use std::time::Duration;

use hopper_queue::{Outcome, QueueClient, Recorded, Recorder, WorkerId};
use hopper_shared::{
    QueueName,
    jobs::{JobState, QueueSettings},
    workflows::{
        NodeState, OnFailure, WorkflowSpec, WorkflowState, WorkflowView, chain, chord, group, task,
    },
};
use serde_json::{Value, json};
use support::{TestQueue, attempt, claim, eventually, registered};
use uuid::Uuid;

fn queue() -> QueueName {
    QueueName::new("t-wf").unwrap()
}

fn step(n: u64) -> hopper_shared::workflows::Node {
    task(queue(), json!({ "n": n }))
}

/// Claims every pending job of the test queue and finishes each with what
/// `outcome` says of its arguments; answers the arguments it ran.
async fn run_pending(
    q: &QueueClient,
    w: &WorkerId,
    recorder: &Recorder,
    outcome: impl Fn(&Value) -> Outcome,
) -> Vec<Value> {
    let batch = claim(q, &queue(), w, 1_000).await;
    let mut ran = Vec::new();
    for claimed in &batch.jobs {
        let args: Value = serde_json::from_str(&claimed.args).unwrap();
        let recorded = recorder
            .finish(&attempt(claimed, &queue(), w), outcome(&args))
            .await;
        assert_eq!(recorded, Recorded::Done);
        ran.push(args);
    }
    ran
}

/// Runs the workflow's jobs round by round until it is final.
async fn drive(
    q: &QueueClient,
    id: Uuid,
    outcome: impl Fn(&Value) -> Outcome + Copy,
) -> (WorkflowView, Vec<Value>) {
    let w = registered(q, &queue()).await;
    let recorder = Recorder::start(q.clone(), queue(), settings(), None, false);
    let mut ran = Vec::new();
    for _ in 0..50 {
        ran.extend(run_pending(q, &w, &recorder, outcome).await);
        let view = q.workflow(id, None, true).await.unwrap().unwrap();
        if view.state != WorkflowState::Running {
            return (view, ran);
        }
    }
    panic!("workflow {id} did not end");
}

fn settings() -> QueueSettings {
    QueueSettings {
        max_attempts: 1,
        ..QueueSettings::default()
    }
}

fn echo(args: &Value) -> Outcome {
    Outcome::Succeeded(args.clone())
}

async fn create(q: &QueueClient, spec: &WorkflowSpec) -> Uuid {
    let plan = spec.plan().unwrap();
    q.create_workflow(spec, &plan, "acme").await.unwrap()
}

#[tokio::test]
async fn a_chain_passes_each_result_to_the_next_step() {
    let t = TestQueue::new();
    let q = t.client().await;
    let spec = WorkflowSpec::new(chain([step(1), step(2), step(3)]));
    let id = create(&q, &spec).await;
    assert_eq!(
        q.stats(queue()).await.unwrap().pending,
        1,
        "only the first step is queued"
    );

    let (view, ran) = drive(&q, id, echo).await;
    assert_eq!(view.state, WorkflowState::Succeeded);
    assert_eq!(ran[0], json!({ "n": 1 }));
    assert_eq!(ran[1], json!({ "n": 2, "input": { "n": 1 } }));
    assert_eq!(
        ran[2],
        json!({ "n": 3, "input": { "n": 2, "input": { "n": 1 } } })
    );
    assert_eq!(
        view.result,
        Some(ran[2].clone()),
        "a chain's result is its last step's"
    );
    assert!(view.nodes.iter().all(|n| n.state == NodeState::Succeeded));
    assert!(view.finished_at_ms.is_some());
    // Each node's job is the one its id is derived from, and the tenant's.
    let job = q.job(queue(), view.nodes[1].job_id).await.unwrap().unwrap();
    assert_eq!(job.tenant, "acme");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(q.workflows("acme", 10).await.unwrap().len(), 1);
    assert!(
        q.workflow(id, Some("other"), false)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_chord_calls_back_once_with_every_result_in_order_however_its_members_finish() {
    let t = TestQueue::new();
    let q = t.client().await;
    let members = 60u64;
    let spec = WorkflowSpec::new(chord((0..members).map(step), step(1_000)));
    let id = create(&q, &spec).await;
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 1_000).await;
    assert_eq!(
        batch.jobs.len(),
        members as usize,
        "the header runs side by side"
    );

    // Every member finishes at once, each from its own task.
    let recorder = Recorder::start(q.clone(), queue(), settings(), None, false);
    let finishing = batch.jobs.iter().cloned().map(|claimed| {
        let (recorder, w) = (recorder.clone(), w.clone());
        tokio::spawn(async move {
            let args: Value = serde_json::from_str(&claimed.args).unwrap();
            recorder
                .finish(
                    &attempt(&claimed, &queue(), &w),
                    Outcome::Succeeded(args["n"].clone()),
                )
                .await
        })
    });
    for r in futures::future::join_all(finishing).await {
        assert_eq!(r.unwrap(), Recorded::Done);
    }
    // A member reported twice (re-run after a crash before its ack) changes nothing.
    let first = q.job(queue(), batch.jobs[0].id).await.unwrap().unwrap();
    q.push_callbacks(&first).await.unwrap();

    let body = claim(&q, &queue(), &w, 1_000).await;
    assert_eq!(body.jobs.len(), 1, "exactly one callback");
    let args: Value = serde_json::from_str(&body.jobs[0].args).unwrap();
    let expected: Vec<u64> = (0..members).collect();
    assert_eq!(args, json!({ "n": 1_000, "input": expected }));
    q.push_callbacks(&first).await.unwrap();
    assert_eq!(
        q.stats(queue()).await.unwrap().pending,
        0,
        "still one callback"
    );
    let view = q.workflow(id, None, true).await.unwrap().unwrap();
    assert_eq!(view.counts.get("succeeded"), Some(&(members as usize)));
    assert_eq!(view.counts.get("queued"), Some(&1));
}

#[tokio::test]
async fn stop_fails_the_workflow_at_the_first_failure() {
    let t = TestQueue::new();
    let q = t.client().await;
    let spec = WorkflowSpec::new(chain([
        group([step(1), step(2), step(3)]),
        step(4),
        step(5),
    ]));
    let id = create(&q, &spec).await;
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    assert_eq!(batch.jobs.len(), 3);
    let recorder = Recorder::start(q.clone(), queue(), settings(), None, false);
    // Member 2 fails for good; 1 and 3 are still running.
    let failing = batch
        .jobs
        .iter()
        .find(|c| c.args.contains("\"n\":2"))
        .unwrap();
    let recorded = recorder
        .finish(
            &attempt(failing, &queue(), &w),
            Outcome::Failed("boom".into(), true),
        )
        .await;
    assert_eq!(recorded, Recorded::Done);

    let view = q.workflow(id, None, true).await.unwrap().unwrap();
    assert_eq!(view.state, WorkflowState::Failed);
    assert_eq!(view.nodes[1].state, NodeState::Dead);
    assert!(view.nodes[1].error.as_deref().unwrap().contains("boom"));
    assert_eq!(view.nodes[3].state, NodeState::Skipped);
    assert_eq!(view.nodes[4].state, NodeState::Skipped);
    // The running members were asked to stop; they report as cancelled.
    let requests = q.cancel_requests(queue()).await.unwrap();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for claimed in batch.jobs.iter().filter(|c| c.id != failing.id) {
        let name = queue();
        let mut a = attempt(claimed, &name, &w);
        a.cancel_requested = true;
        recorder
            .finish(&a, Outcome::Failed("cancelled".into(), false))
            .await;
    }
    let view = eventually("every node final", Duration::from_secs(5), || async {
        let v = q.workflow(id, None, true).await.unwrap().unwrap();
        v.finished_at_ms.is_some().then_some(v)
    })
    .await;
    assert_eq!(view.state, WorkflowState::Failed);
    assert_eq!(view.counts.get("cancelled"), Some(&2), "{:?}", view.counts);
    assert_eq!(
        q.stats(queue()).await.unwrap().pending,
        0,
        "nothing after the failure ran"
    );
}

#[tokio::test]
async fn continue_lets_the_callback_see_the_failures() {
    let t = TestQueue::new();
    let q = t.client().await;
    let spec = WorkflowSpec::new(chord([step(1), step(2), step(3)], step(9)))
        .on_failure(OnFailure::Continue);
    let id = create(&q, &spec).await;
    let (view, ran) = drive(&q, id, |args| {
        if args["n"] == 2 {
            Outcome::Failed("two is bad".into(), true)
        } else {
            Outcome::Succeeded(args["n"].clone())
        }
    })
    .await;
    assert_eq!(
        view.state,
        WorkflowState::Failed,
        "a failure is still a failure"
    );
    let body = ran.iter().find(|a| a["n"] == 9).expect("the callback ran");
    assert_eq!(body["input"][0], 1);
    assert_eq!(body["input"][2], 3);
    let failed = &body["input"][1]["failed"];
    assert_eq!(failed["state"], "dead");
    assert!(failed["error"].as_str().unwrap().contains("two is bad"));
    assert_eq!(failed["job_id"], view.nodes[1].job_id.to_string());
}

#[tokio::test]
async fn cancelling_skips_what_has_not_started_and_cancels_what_waits() {
    let t = TestQueue::new();
    let q = t.client().await;
    let spec = WorkflowSpec::new(chain([group([step(1), step(2)]), step(3)]));
    let id = create(&q, &spec).await;
    let before = q.cancel_workflow(id, Some("someone-else")).await.unwrap();
    assert_eq!(before, None, "another tenant's workflow is not found");
    let before = q.cancel_workflow(id, Some("acme")).await.unwrap();
    assert_eq!(before, Some(WorkflowState::Running));
    let view = q.workflow(id, None, true).await.unwrap().unwrap();
    assert_eq!(view.state, WorkflowState::Cancelled);
    assert_eq!(
        view.nodes[0].state,
        NodeState::Cancelled,
        "a waiting job ends at once"
    );
    assert_eq!(view.nodes[1].state, NodeState::Cancelled);
    assert_eq!(view.nodes[2].state, NodeState::Skipped);
    assert!(view.finished_at_ms.is_some());
    let w = registered(&q, &queue()).await;
    assert!(
        claim(&q, &queue(), &w, 10).await.jobs.is_empty(),
        "nothing left to run"
    );
    let again = q.cancel_workflow(id, None).await.unwrap();
    assert_eq!(
        again,
        Some(WorkflowState::Cancelled),
        "a second cancel changes nothing"
    );
}

#[tokio::test]
async fn a_step_that_never_ran_is_repaired() {
    let t = TestQueue::new();
    let q = t.client().await;
    let spec = WorkflowSpec::new(chain([step(1), step(2)]));
    let id = create(&q, &spec).await;
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    // Acknowledged without its fan-in step: a mover whose Redis calls failed
    // after the member's ack went through (it leaves its stalled mark).
    let claimed = &batch.jobs[0];
    q.ack_many(
        queue(),
        &[hopper_queue::client::Ack {
            id: claimed.id,
            result: "\"one\"".into(),
            worker: w.clone(),
            lease: claimed.lease,
        }],
    )
    .await
    .unwrap();
    let stalled = format!("{{{}:workflows}}:stalled", t.config.key_prefix);
    let mut conn = support::conn(&q).await;
    let _: () = redis::cmd("ZADD")
        .arg(&stalled)
        .arg(0)
        .arg(id.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(q.repair_stalled_workflows().await.unwrap(), 1);
    let view = q.workflow(id, None, true).await.unwrap().unwrap();
    assert_eq!(view.nodes[0].state, NodeState::Succeeded);
    assert_eq!(view.nodes[1].state, NodeState::Queued);
    let next = claim(&q, &queue(), &w, 10).await;
    let args: Value = serde_json::from_str(&next.jobs[0].args).unwrap();
    assert_eq!(args, json!({ "n": 2, "input": "one" }));
    assert_eq!(
        q.repair_stalled_workflows().await.unwrap(),
        0,
        "the mark is gone"
    );
}

/// With the durability option on, a workflow's member pushes wait for the
/// replicas like any push: on a single server (no replica) the step that
/// pushes them fails — before its nodes are marked queued, so whoever runs
/// it again (the member's re-run, or the stalled-workflow repair) pushes
/// them again; on the cluster (one replica per master) it goes through.
#[tokio::test]
async fn member_pushes_wait_for_the_replicas_when_asked() {
    let t = TestQueue::with(&[
        ("HOPPER_REDIS_WAIT_REPLICAS", "1"),
        ("HOPPER_REDIS_WAIT_TIMEOUT_MS", "50"),
    ]);
    let q = t.client().await;
    let spec = WorkflowSpec::new(group([step(1), step(2)]));
    let plan = spec.plan().unwrap();
    let created = q.create_workflow(&spec, &plan, "acme").await;
    if q.is_cluster() {
        let id = created.expect("the replicas acknowledged the member pushes");
        assert_eq!(q.stats(queue()).await.unwrap().pending, 2);
        let view = q.workflow(id, None, true).await.unwrap().unwrap();
        assert!(
            view.nodes.iter().all(|n| n.state == NodeState::Queued),
            "{view:?}"
        );
    } else {
        let err = created.expect_err("no replica acknowledges on a single server");
        assert!(
            matches!(
                err,
                hopper_queue::QueueError::NotReplicated { asked: 1, .. }
            ),
            "{err}"
        );
    }
}
