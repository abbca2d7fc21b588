//! The per-tenant concurrency limit against a real Redis: a claim starts no
//! more of one tenant's jobs than the limit allows across every worker, the
//! rest wait parked (still pending, counted in the queue's depth and
//! listed) without holding a slot or blocking another tenant, and they are
//! started — in their order, ahead of newer work — once a running job of
//! their tenant ends, by any path: ack, failure, cancellation, recovery of
//! a dead worker. Lifting the limit releases everything parked.

mod support;

use std::time::Duration;

use hopper_queue::{
    PushOptions, QueueClient, WorkerId,
    client::{Ack, AfterFailure},
};
use hopper_shared::{QueueName, jobs::JobState};
use serde_json::json;
use support::{TestQueue, claim, registered};
use uuid::Uuid;

fn queue() -> QueueName {
    QueueName::new("t-tenants").unwrap()
}

const LIMITED: (&str, &str) = ("HOPPER_QUEUE_T_TENANTS_TENANT_CONCURRENCY", "2");

/// Pushes `n` jobs of `tenant`, numbered from `from`, one at a time (so
/// their order is their number); answers their ids.
async fn push(q: &QueueClient, tenant: &str, from: usize, n: usize) -> Vec<Uuid> {
    let opts = PushOptions {
        tenant: Some(tenant.into()),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for i in from..from + n {
        ids.push(q.push(queue(), &json!({ "n": i }), &opts).await.unwrap().id);
    }
    ids
}

async fn ack(q: &QueueClient, w: &WorkerId, job: &hopper_queue::client::Claimed) {
    let lost = q
        .ack_many(
            queue(),
            &[Ack {
                id: job.id,
                result: "null".into(),
                worker: w.clone(),
                lease: job.lease,
            }],
        )
        .await
        .unwrap();
    assert!(lost.is_empty());
}

fn tenants(batch: &[hopper_queue::client::Claimed]) -> Vec<&str> {
    let mut t: Vec<&str> = batch.iter().map(|j| j.tenant.as_str()).collect();
    t.sort_unstable();
    t
}

#[tokio::test]
async fn a_tenant_runs_at_most_its_limit_and_the_rest_wait_without_blocking_others() {
    let t = TestQueue::with(&[LIMITED]);
    let q = t.client().await;
    let a = push(&q, "acme", 0, 6).await;
    let b = push(&q, "bolt", 100, 2).await;
    let w1 = registered(&q, &queue()).await;
    let w2 = registered(&q, &queue()).await;

    // Two workers, plenty of slots: two of acme's, both of bolt's.
    let first = claim(&q, &queue(), &w1, 3).await.jobs;
    let second = claim(&q, &queue(), &w2, 10).await.jobs;
    let mut all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        tenants(&all),
        ["acme", "acme", "bolt", "bolt"],
        "the limit holds across workers"
    );
    let acme_running: Vec<Uuid> = all
        .iter()
        .filter(|j| j.tenant == "acme")
        .map(|j| j.id)
        .collect();
    assert_eq!(acme_running, a[..2], "acme's oldest first");

    // Parked jobs are pending: counted, listed, and a claim answers soon.
    let stats = q.stats(queue()).await.unwrap();
    assert_eq!((stats.pending, stats.running), (4, 4));
    let listed = q
        .list_jobs(queue(), JobState::Pending, Some("acme"), 10)
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), a[2..]);
    let idle = claim(&q, &queue(), &w1, 10).await;
    assert!(idle.jobs.is_empty(), "acme is at its limit");
    assert!(
        idle.next_due_in
            .is_some_and(|d| d <= Duration::from_millis(200)),
        "a claimer looks again soon while jobs are parked: {:?}",
        idle.next_due_in
    );

    // New work of another tenant is not held up behind acme's.
    let c = push(&q, "crux", 200, 1).await;
    let next = claim(&q, &queue(), &w1, 10).await.jobs;
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), c);
    all.extend(next);

    // One of acme's ends: exactly one more of acme's starts, the oldest
    // parked, ahead of newer pending work of acme.
    let later = push(&q, "acme", 6, 1).await;
    let done = all.iter().find(|j| j.id == a[0]).unwrap();
    let holder = if first.iter().any(|j| j.id == a[0]) {
        &w1
    } else {
        &w2
    };
    ack(&q, holder, done).await;
    let freed = claim(&q, &queue(), &w1, 10).await.jobs;
    assert_eq!(freed.iter().map(|j| j.id).collect::<Vec<_>>(), [a[2]]);
    assert!(claim(&q, &queue(), &w1, 10).await.jobs.is_empty());

    // Lifting the limit (a process without it) releases every parked job.
    let unlimited = TestQueue::with(&[]);
    let mut config = unlimited.config.clone();
    config.key_prefix = t.config.key_prefix.clone();
    let free = QueueClient::connect(&config).await.unwrap();
    let rest = claim(&free, &queue(), &w2, 10).await.jobs;
    let mut ids: Vec<Uuid> = rest.iter().map(|j| j.id).collect();
    ids.sort();
    let mut want = vec![a[3], a[4], a[5], later[0]];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(free.stats(queue()).await.unwrap().pending, 0);
    let _ = b;
}

#[tokio::test]
async fn a_slot_frees_when_a_job_fails_is_cancelled_or_its_worker_dies() {
    let t = TestQueue::with(&[LIMITED]);
    let q = t.client().await;
    let a = push(&q, "acme", 0, 5).await;
    let w = registered(&q, &queue()).await;
    let running = claim(&q, &queue(), &w, 10).await.jobs;
    assert_eq!(running.len(), 2);

    // A parked job cancelled is never started.
    assert_eq!(
        q.cancel_in(queue(), a[2])
            .await
            .unwrap()
            .map(|(_, s)| s)
            .as_deref(),
        Some("cancelled")
    );

    // A failure with a retry later frees the slot now.
    let failing = &running[0];
    let recorded = q
        .fail(
            queue(),
            &w,
            failing.id,
            failing.lease,
            "boom",
            AfterFailure::RetryIn(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(recorded);
    let next = claim(&q, &queue(), &w, 10).await.jobs;
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), [a[3]]);

    // The worker dies: recovery re-queues its two jobs; a new worker runs
    // at most two of acme's again.
    let mut conn = support::conn(&q).await;
    let _: () = redis::cmd("ZADD")
        .arg(format!("{{{}:t-tenants}}:workers", t.config.key_prefix))
        .arg(0)
        .arg(w.as_str())
        .query_async(&mut conn)
        .await
        .unwrap();
    let recovered = q.recover(queue(), Duration::from_secs(30)).await.unwrap();
    assert!(recovered.is_empty(), "re-queued, not finished");
    let w2 = registered(&q, &queue()).await;
    let again = claim(&q, &queue(), &w2, 10).await.jobs;
    assert_eq!(again.len(), 2, "{:?}", tenants(&again));
    let mut ids: Vec<Uuid> = again.iter().map(|j| j.id).collect();
    ids.sort();
    let mut parked_or_requeued = [running[1].id, a[3], a[4]];
    parked_or_requeued.sort();
    assert!(ids.iter().all(|id| parked_or_requeued.contains(id)));
    assert!(!ids.contains(&a[2]), "the cancelled job stays cancelled");
}
