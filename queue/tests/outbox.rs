//! Outboxes against a real Redis (`hopper_queue::outbox`): `tell` appends,
//! `outbox_peek` answers the oldest entries and leaves them, `outbox_done`
//! removes exactly the handled entries while they are still at the head in
//! that order (a second reader's removals never make it remove anything
//! else), `outbox_wait` blocks until an entry arrives and takes nothing; a
//! finished job with a `notify` — recorded by a `Recorder` without
//! Postgres, or through `push_callbacks` — appends one `{"data", "job"}`
//! entry per call (delivery is at least once).

mod support;

use std::time::{Duration, Instant};

use hopper_queue::{Outcome, PushOptions, QueueClient, Recorded, Recorder};
use hopper_shared::{
    QueueName,
    jobs::{JobState, Notify, QueueSettings},
};
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{TestQueue, attempt, claim, eventually, registered};
use uuid::Uuid;

/// The name told (the Celery bridge's is `celery.result`).
fn told() -> QueueName {
    QueueName::new("t-told").unwrap()
}

fn queue() -> QueueName {
    QueueName::new("t-outbox-jobs").unwrap()
}

/// Every entry of `told()`'s outbox, oldest first, as JSON.
async fn entries(q: &QueueClient) -> Vec<Value> {
    let raw: Vec<String> = q
        .connection()
        .lrange(q.keys(told()).outbox(), 0, -1)
        .await
        .unwrap();
    raw.iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn tell_appends_and_a_peek_answers_the_oldest_first_and_leaves_them() {
    let t = TestQueue::new();
    let q = t.client().await;
    assert!(q.outbox_peek(&told(), 10).await.unwrap().is_empty());
    for i in 0..5 {
        q.tell(&told(), &json!({ "n": i, "text": "é ✓ \"q\"" }))
            .await
            .unwrap();
    }
    let key = q.keys(told()).outbox();
    assert!(key.contains("t-told") && key.ends_with(":outbox"), "{key}");
    let peeked = q.outbox_peek(&told(), 3).await.unwrap();
    let ns: Vec<Value> = peeked
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["n"].clone())
        .collect();
    assert_eq!(ns, [json!(0), json!(1), json!(2)]);
    assert_eq!(
        serde_json::from_str::<Value>(&peeked[0]).unwrap(),
        json!({ "n": 0, "text": "é ✓ \"q\"" })
    );
    // A peek takes nothing; a larger one answers all; none answers nothing.
    assert_eq!(q.outbox_peek(&told(), 100).await.unwrap().len(), 5);
    assert!(q.outbox_peek(&told(), 0).await.unwrap().is_empty());
    assert_eq!(entries(&q).await.len(), 5);
    // Another name's outbox is another list.
    let other = QueueName::new("t-told-other").unwrap();
    assert!(q.outbox_peek(&other, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn done_removes_exactly_the_handled_entries_still_at_the_head() {
    let t = TestQueue::new();
    let q = t.client().await;
    for i in 0..6 {
        q.tell(&told(), &json!({ "n": i })).await.unwrap();
    }
    let handled = q.outbox_peek(&told(), 2).await.unwrap();
    assert_eq!(q.outbox_done(&told(), &handled).await.unwrap(), 2);
    let ns: Vec<Value> = entries(&q).await.iter().map(|e| e["n"].clone()).collect();
    assert_eq!(ns, [json!(2), json!(3), json!(4), json!(5)]);
    // Removing them again removes nothing (2 is at the head, not 0).
    assert_eq!(q.outbox_done(&told(), &handled).await.unwrap(), 0);
    assert_eq!(q.outbox_done(&told(), &[]).await.unwrap(), 0);

    // Two readers peek the same entries (2, 3, 4); the second finishes
    // first with two of them. The first's done then removes nothing: its
    // first entry is gone, and 4 (which it handled too) and 5 stay.
    let a = q.outbox_peek(&told(), 3).await.unwrap();
    let b = q.outbox_peek(&told(), 2).await.unwrap();
    assert_eq!(q.outbox_done(&told(), &b).await.unwrap(), 2);
    assert_eq!(q.outbox_done(&told(), &a).await.unwrap(), 0);
    let ns: Vec<Value> = entries(&q).await.iter().map(|e| e["n"].clone()).collect();
    assert_eq!(ns, [json!(4), json!(5)]);

    // Entries in another order than at the head: only the matching
    // prefix goes (here: none, then one).
    let tail = q.outbox_peek(&told(), 2).await.unwrap();
    let swapped = [tail[1].clone(), tail[0].clone()];
    assert_eq!(q.outbox_done(&told(), &swapped).await.unwrap(), 0);
    let wrong_second = [tail[0].clone(), "not an entry".to_owned()];
    assert_eq!(q.outbox_done(&told(), &wrong_second).await.unwrap(), 1);
    let ns: Vec<Value> = entries(&q).await.iter().map(|e| e["n"].clone()).collect();
    assert_eq!(ns, [json!(5)]);
}

#[tokio::test]
async fn wait_returns_when_an_entry_arrives_and_takes_nothing() {
    let t = TestQueue::new();
    let q = t.client().await;
    let mut conn = q
        .dedicated_connection(Duration::from_secs(5))
        .await
        .unwrap();
    // Empty: it waits out its time.
    let start = Instant::now();
    q.outbox_wait(&mut conn, &told(), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );

    // An entry told meanwhile ends the wait long before its time.
    let teller = {
        let q = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            q.tell(&told(), &json!({ "n": 1 })).await.unwrap();
        })
    };
    let start = Instant::now();
    q.outbox_wait(&mut conn, &told(), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    teller.await.unwrap();
    assert_eq!(entries(&q).await, [json!({ "n": 1 })], "nothing taken");
}

/// A job of `queue()` with a notify of `told()` (tenant `acme`).
async fn push_notified(q: &QueueClient, data: &Value) -> Uuid {
    let opts = PushOptions {
        notify: Some(Notify {
            task: told(),
            data: data.clone(),
        }),
        tenant: Some("acme".into()),
        ..Default::default()
    };
    q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap().id
}

#[tokio::test]
async fn a_job_with_notify_finished_by_a_recorder_appends_one_entry() {
    let t = TestQueue::new();
    let q = t.client().await;
    let data = json!({ "task_id": "celery-1", "result_key": "k" });
    let id = push_notified(&q, &data).await;
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 1).await;
    let claimed = &batch.jobs[0];
    assert_eq!(claimed.notify.as_ref().map(|n| &n.data), Some(&data));
    assert!(
        entries(&q).await.is_empty(),
        "nothing told before it finishes"
    );

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
    let got = eventually("the outcome told", Duration::from_secs(5), || async {
        let e = entries(&q).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let entry = got[0].as_object().unwrap();
    let mut fields: Vec<&str> = entry.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["data", "job"]);
    assert_eq!(entry["data"], data);
    let job = &entry["job"];
    assert_eq!(job["id"], id.to_string());
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["result"], json!({ "ok": true }));
    assert_eq!(job["tenant"], "acme");
    assert!(
        job.get("notify").is_none(),
        "the record passed on leaves notify out"
    );
    let rec = q.job(queue(), id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Succeeded);
    // Still one entry a while later (the recorder told it once).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(entries(&q).await.len(), 1);
    // No job of the told name either: an outbox is not a queue.
    let stats = q.stats(told()).await.unwrap();
    assert_eq!((stats.pending, stats.running), (0, 0));
}

#[tokio::test]
async fn push_callbacks_appends_one_entry_per_call() {
    let t = TestQueue::new();
    let q = t.client().await;
    let data = json!({ "anything": [1, 2] });
    let id = push_notified(&q, &data).await;
    let mut rec = q.job(queue(), id).await.unwrap().unwrap();
    assert_eq!(rec.notify.as_ref().map(|n| &n.data), Some(&data));
    rec.state = JobState::Succeeded;
    rec.result = Some(json!("done"));
    q.push_callbacks(&rec).await.unwrap();
    let once = entries(&q).await;
    assert_eq!(once.len(), 1, "{once:?}");
    assert_eq!(once[0]["data"], data);
    assert_eq!(once[0]["job"]["state"], "succeeded");
    assert_eq!(once[0]["job"]["result"], "done");
    // Again (a re-run after a crash before the ack): told again, at least
    // once; readers write idempotently.
    q.push_callbacks(&rec).await.unwrap();
    assert_eq!(entries(&q).await, [once[0].clone(), once[0].clone()]);
    // A record without notify (nor webhook) tells nothing.
    rec.notify = None;
    rec.id = Uuid::now_v7();
    q.push_callbacks(&rec).await.unwrap();
    assert_eq!(entries(&q).await.len(), 2);
}
