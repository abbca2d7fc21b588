//! The per-job options the Celery bridge submits with (`PushOptions`: a
//! given `id`, `expires_at_ms`, its own hard/soft time limits, `notify`)
//! against a real Redis: a given id names one job for good, an expired job
//! is cancelled by the claim instead of running, the limits travel with the
//! claim, and a finished job with a `notify` queues exactly one job of the
//! task it names.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hopper_queue::{Attempt, Outcome, PushOptions, Recorded, Recorder, client::Claimed};
use hopper_shared::{
    QueueName,
    jobs::{JobState, Notify, QueueSettings},
};
use redis::AsyncCommands;
use serde_json::json;
use support::{TestQueue, claim, eventually, registered};
use uuid::Uuid;

fn queue() -> QueueName {
    QueueName::new("t-opts").unwrap()
}

fn notify_task() -> QueueName {
    QueueName::new("t-notify").unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
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

/// The record of `claimed` as `Recorder::finish` takes it.
fn attempt<'a>(
    claimed: &'a Claimed,
    queue: &'a QueueName,
    w: &'a hopper_queue::WorkerId,
) -> Attempt<'a> {
    Attempt {
        id: claimed.id,
        queue,
        worker: w,
        lease: claimed.lease,
        attempt: claimed.attempt,
        max_attempts: claimed.max_attempts,
        enqueued_at_ms: claimed.enqueued_at_ms,
        started_at_ms: now_ms(),
        args_json: &claimed.args,
        priority: claimed.priority,
        request_id: claimed.request_id.as_deref(),
        tenant: &claimed.tenant,
        callback_url: claimed.callback_url.as_deref(),
        notify: claimed.notify.as_ref(),
        cancel_requested: false,
    }
}

/// The jobs of `t-notify`, claimed: their args.
async fn notified(q: &hopper_queue::QueueClient) -> Vec<serde_json::Value> {
    let w = registered(q, &notify_task()).await;
    let batch = claim(q, &notify_task(), &w, 10).await;
    batch
        .jobs
        .iter()
        .map(|j| serde_json::from_str(&j.args).unwrap())
        .collect()
}

#[tokio::test]
async fn a_finished_job_with_notify_queues_one_job_of_the_named_task() {
    let t = TestQueue::new();
    let q = t.client().await;
    let data = json!({ "task_id": "celery-1", "result_key": "k" });
    let opts = PushOptions {
        notify: Some(Notify {
            task: notify_task(),
            data: data.clone(),
        }),
        tenant: Some("acme".into()),
        ..Default::default()
    };
    let id = q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap().id;
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 1).await;
    let claimed = &batch.jobs[0];
    assert_eq!(claimed.notify.as_ref().map(|n| &n.data), Some(&data));

    // Acknowledged through a recorder without Postgres, as Rust workers
    // without a store (and the backend tests) record.
    let recorder = Recorder::start(q.clone(), queue(), QueueSettings::default(), None, false);
    let recorded = recorder
        .finish(
            &attempt(claimed, &queue(), &w),
            Outcome::Succeeded(json!({ "ok": true })),
        )
        .await;
    assert_eq!(recorded, Recorded::Done);
    let rec = eventually("the job succeeded", Duration::from_secs(5), || async {
        let rec = q.job(queue(), id).await.unwrap().unwrap();
        (rec.state == JobState::Succeeded).then_some(rec)
    })
    .await;

    let jobs = notified(&q).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["data"], data);
    let job = &jobs[0]["job"];
    assert_eq!(job["id"], id.to_string());
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["result"], json!({ "ok": true }));
    assert_eq!(job["tenant"], "acme");
    assert!(
        job.get("notify").is_none(),
        "the record passed on leaves notify out"
    );

    // The callbacks queued again for the same outcome (a crash, a re-run):
    // still one job.
    q.push_callbacks(&rec).await.unwrap();
    q.push_callbacks(&rec).await.unwrap();
    let stats = q.stats(notify_task()).await.unwrap();
    assert_eq!(
        (stats.pending, stats.running),
        (0, 1),
        "one job of t-notify"
    );
}

#[tokio::test]
async fn push_callbacks_on_a_record_with_notify_queues_it_once() {
    let t = TestQueue::new();
    let q = t.client().await;
    let data = json!({ "anything": [1, 2] });
    let opts = PushOptions {
        notify: Some(Notify {
            task: notify_task(),
            data: data.clone(),
        }),
        ..Default::default()
    };
    let id = q.push(queue(), &json!({}), &opts).await.unwrap().id;
    let mut rec = q.job(queue(), id).await.unwrap().unwrap();
    assert_eq!(rec.notify.as_ref().map(|n| &n.data), Some(&data));
    rec.state = JobState::Succeeded;
    rec.result = Some(json!("done"));
    q.push_callbacks(&rec).await.unwrap();
    q.push_callbacks(&rec).await.unwrap();
    let jobs = notified(&q).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["data"], data);
    assert_eq!(jobs[0]["job"]["state"], "succeeded");
    assert_eq!(jobs[0]["job"]["result"], "done");
    // A record without notify (nor webhook) queues nothing.
    rec.notify = None;
    rec.id = Uuid::now_v7();
    q.push_callbacks(&rec).await.unwrap();
    assert!(notified(&q).await.is_empty());
}
