//! The per-job options the Celery bridge submits with (`PushOptions`: a
//! given `id`, `expires_at_ms`, its own hard/soft time limits, `notify`)
//! against a real Redis: a given id names one job for good, an expired job
//! is cancelled by the claim instead of running, the limits travel with the
//! claim, and a `notify` travels with the job to its claim and record (what
//! the finished job then tells the outbox it names: `outbox.rs`).

mod support;

use std::time::Duration;

use hopper_queue::PushOptions;
use hopper_shared::{
    QueueName,
    jobs::{JobState, Notify},
};
use redis::AsyncCommands;
use serde_json::json;
use support::{TestQueue, claim, now_ms, registered};
use uuid::Uuid;

fn queue() -> QueueName {
    QueueName::new("t-opts").unwrap()
}

#[tokio::test]
async fn a_given_id_names_one_job_for_good() {
    let t = TestQueue::new();
    let q = t.client().await;
    let id = Uuid::new_v4();
    let opts = PushOptions {
        id: Some(id),
        ..Default::default()
    };
    let first = q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap();
    assert_eq!((first.id, first.created), (id, true));
    let rec = q
        .job(queue(), id)
        .await
        .unwrap()
        .expect("the job under its id");
    assert_eq!(rec.args, json!({ "n": 1 }));

    // Again, without an idempotency key, then with a fresh one: nothing added.
    let again = q.push(queue(), &json!({ "n": 2 }), &opts).await.unwrap();
    assert_eq!((again.id, again.created), (id, false));
    let keyed = PushOptions {
        idempotency_key: Some(format!("k-{}", Uuid::new_v4())),
        ..opts.clone()
    };
    let again = q.push(queue(), &json!({ "n": 3 }), &keyed).await.unwrap();
    assert_eq!((again.id, again.created), (id, false));

    let rec = q.job(queue(), id).await.unwrap().unwrap();
    assert_eq!(rec.args, json!({ "n": 1 }), "the first push's job stays");
    let stats = q.stats(queue()).await.unwrap();
    assert_eq!(stats.pending, 1);
    let load: i64 = q
        .connection()
        .hget(q.keys(queue()).tenant_load(), "default")
        .await
        .unwrap();
    assert_eq!(load, 1, "counted once");
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    assert_eq!(batch.jobs.len(), 1);
    assert_eq!(batch.jobs[0].id, id);
    // Without a given id, pushes make distinct jobs (v7 ids).
    let a = q.push(queue(), &json!({}), &PushOptions::default()).await;
    let b = q.push(queue(), &json!({}), &PushOptions::default()).await;
    assert_ne!(a.unwrap().id, b.unwrap().id);
}

#[tokio::test]
async fn a_job_past_its_expiry_is_cancelled_by_the_claim_not_handed_out() {
    let t = TestQueue::new();
    let q = t.client().await;
    let keys = q.keys(queue());
    let past = PushOptions {
        expires_at_ms: Some(now_ms() - 1_000),
        tenant: Some("acme".into()),
        ..Default::default()
    };
    let future = PushOptions {
        expires_at_ms: Some(now_ms() + 60_000),
        tenant: Some("acme".into()),
        ..Default::default()
    };
    let stale = q.push(queue(), &json!({ "n": "stale" }), &past).await;
    let stale = stale.unwrap().id;
    let fresh = q.push(queue(), &json!({ "n": "fresh" }), &future).await;
    let fresh = fresh.unwrap().id;
    let mut conn = q.connection();
    let load: i64 = conn.hget(keys.tenant_load(), "acme").await.unwrap();
    assert_eq!(load, 2);

    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    let claimed: Vec<Uuid> = batch.jobs.iter().map(|j| j.id).collect();
    assert_eq!(claimed, vec![fresh], "the one in the future runs");
    assert_eq!(batch.expired, vec![stale], "the expired one is answered");

    let rec = q.job(queue(), stale).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Cancelled);
    let error = rec.error.clone().unwrap_or_default();
    assert!(error.starts_with("expired"), "{error}");
    assert_eq!(rec.attempts, 0, "it never ran");
    assert!(rec.finished_at_ms.is_some());
    let done: Option<f64> = conn.zscore(keys.done(), stale.to_string()).await.unwrap();
    assert!(done.is_some(), "in the done set");
    let load: i64 = conn.hget(keys.tenant_load(), "acme").await.unwrap();
    assert_eq!(load, 1, "the expired job no longer counts as unfinished");
    let stats = q.stats(queue()).await.unwrap();
    assert_eq!((stats.pending, stats.running), (0, 1));

    // Alone in the queue, an expired job is not handed out either.
    let alone = q.push(queue(), &json!({}), &past).await.unwrap().id;
    let batch = claim(&q, &queue(), &w, 10).await;
    assert!(batch.jobs.is_empty(), "{:?}", batch.jobs);
    assert_eq!(batch.expired, vec![alone]);
}

#[tokio::test]
async fn a_jobs_own_time_limits_come_back_on_its_claim() {
    let t = TestQueue::new();
    let q = t.client().await;
    let limited = PushOptions {
        hard_time_limit: Some(Duration::from_millis(1_500)),
        soft_time_limit: Some(Duration::from_millis(700)),
        ..Default::default()
    };
    let a = q.push(queue(), &json!({}), &limited).await.unwrap().id;
    let b = q.push(queue(), &json!({}), &PushOptions::default()).await;
    let b = b.unwrap().id;
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    let find = |id: Uuid| batch.jobs.iter().find(|j| j.id == id).unwrap().clone();
    let (a, b) = (find(a), find(b));
    assert_eq!(a.hard_time_limit, Some(Duration::from_millis(1_500)));
    assert_eq!(a.soft_time_limit, Some(Duration::from_millis(700)));
    assert_eq!((b.hard_time_limit, b.soft_time_limit), (None, None));
}

#[tokio::test]
async fn a_traceparent_travels_with_the_job_to_its_claim_alone_or_in_a_batch() {
    let t = TestQueue::new();
    let q = t.client().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = PushOptions {
        traceparent: Some(tp.to_owned()),
        ..Default::default()
    };
    let one = q.push(queue(), &json!({}), &traced).await.unwrap().id;
    let many = q
        .push_many(queue(), &[json!({ "n": 1 }), json!({ "n": 2 })], &traced)
        .await
        .unwrap();
    let plain = q.push(queue(), &json!({}), &PushOptions::default()).await;
    let plain = plain.unwrap().id;
    // Absent, nothing is stored (no field on the job's hash).
    let stored: Option<String> = q
        .connection()
        .hget(q.keys(queue()).job(&plain), "traceparent")
        .await
        .unwrap();
    assert_eq!(stored, None);
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    assert_eq!(batch.jobs.len(), 4);
    for job in &batch.jobs {
        let want = (job.id != plain).then_some(tp);
        assert_eq!(job.traceparent.as_deref(), want, "{}", job.id);
    }
    assert!(
        [one, many[0], many[1]]
            .iter()
            .all(|id| batch.jobs.iter().any(|j| j.id == *id))
    );
}

#[tokio::test]
async fn a_notify_travels_with_the_job_to_its_claim_and_record() {
    let t = TestQueue::new();
    let q = t.client().await;
    let notify = Notify {
        task: QueueName::new("t-told").unwrap(),
        data: json!({ "task_id": "celery-1", "nested": { "é": [1, null] } }),
    };
    let opts = PushOptions {
        notify: Some(notify.clone()),
        ..Default::default()
    };
    let id = q.push(queue(), &json!({}), &opts).await.unwrap().id;
    let plain = q.push(queue(), &json!({}), &PushOptions::default()).await;
    let plain = plain.unwrap().id;
    let rec = q.job(queue(), id).await.unwrap().unwrap();
    assert_eq!(rec.notify.as_ref(), Some(&notify));
    assert!(
        q.job(queue(), plain)
            .await
            .unwrap()
            .unwrap()
            .notify
            .is_none()
    );
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    let find = |id: Uuid| batch.jobs.iter().find(|j| j.id == id).unwrap();
    assert_eq!(find(id).notify.as_ref(), Some(&notify));
    assert!(find(plain).notify.is_none());
    // What a finished job tells the outbox it names: see outbox.rs.
}

#[tokio::test]
async fn a_jobs_own_retention_moves_its_done_score_so_the_trim_honours_it() {
    let t = TestQueue::new();
    let q = t.client().await;
    let keys = q.keys(queue());
    let queue_ms = q.settings(queue()).retention.as_millis() as i64;
    let own = |ms: u64| PushOptions {
        retention: Some(Duration::from_millis(ms)),
        ..Default::default()
    };
    // Succeeded (ack.lua): kept 1 ms, the queue's retention, twice it.
    let brief = q
        .push(queue(), &json!({ "n": 1 }), &own(1))
        .await
        .unwrap()
        .id;
    let plain = q
        .push(queue(), &json!({ "n": 2 }), &PushOptions::default())
        .await;
    let plain = plain.unwrap().id;
    let long_ms = 2 * queue_ms as u64;
    let long = q
        .push(queue(), &json!({ "n": 3 }), &own(long_ms))
        .await
        .unwrap()
        .id;
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    let acks: Vec<hopper_queue::client::Ack> = batch
        .jobs
        .iter()
        .map(|j| hopper_queue::client::Ack::of(j, &w, "null"))
        .collect();
    assert_eq!(acks.len(), 3);
    assert!(q.ack_many(queue(), &acks).await.unwrap().is_empty());
    // Cancelled while waiting (cancel.lua) and expired at its claim (claim.lua).
    let delayed = PushOptions {
        delay: Some(Duration::from_secs(60)),
        ..own(1)
    };
    let cancelled = q
        .push(queue(), &json!({ "n": 4 }), &delayed)
        .await
        .unwrap()
        .id;
    q.cancel_in(queue(), cancelled).await.unwrap();
    let past = PushOptions {
        expires_at_ms: Some(now_ms() - 1_000),
        ..own(long_ms)
    };
    let expired = q.push(queue(), &json!({ "n": 5 }), &past).await.unwrap().id;
    assert_eq!(claim(&q, &queue(), &w, 10).await.expired, vec![expired]);

    // Each score is its finish time moved by its own retention minus the
    // queue's; the finish time itself stays true.
    let mut conn = q.connection();
    for (id, shift) in [
        (brief, 1 - queue_ms),
        (plain, 0),
        (long, queue_ms),
        (cancelled, 1 - queue_ms),
        (expired, queue_ms),
    ] {
        let finished = q.job(queue(), id).await.unwrap().unwrap().finished_at_ms;
        let finished = finished.expect("finished");
        assert!((finished - now_ms()).abs() < 60_000, "a true finish time");
        let score: Option<f64> = conn.zscore(keys.done(), id.to_string()).await.unwrap();
        assert_eq!(score, Some((finished + shift) as f64), "{id}");
    }

    // The queue's trim forgets the two kept 1 ms, and only them.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let trimmed = q.trim(queue(), 100).await.unwrap();
    assert_eq!(trimmed.finished, 2);
    for (id, kept) in [
        (brief, false),
        (plain, true),
        (long, true),
        (cancelled, false),
        (expired, true),
    ] {
        let there = q.job(queue(), id).await.unwrap().is_some();
        assert_eq!(there, kept, "{id}");
    }
}
