//! Rate limits per task against a real Redis: a claim takes no more jobs
//! than the task's token bucket holds, answers how long until the next
//! token when it is empty (the jobs stay queued), and the bucket refills at
//! the limit's rate; a queue without a limit is never throttled.

mod support;

use std::time::Duration;

use hopper_queue::PushOptions;
use hopper_shared::QueueName;
use serde_json::json;
use support::{TestQueue, claim, registered};

fn queue() -> QueueName {
    QueueName::new("t-rate").unwrap()
}

#[tokio::test]
async fn a_claim_takes_no_more_than_the_bucket_holds_and_waits_for_the_refill() {
    let t = TestQueue::with(&[("HOPPER_QUEUE_T_RATE_RATE_LIMIT", "5/s")]);
    let q = t.client().await;
    q.push_many(queue(), &vec![json!({}); 20], &PushOptions::default())
        .await
        .unwrap();
    let w = registered(&q, &queue()).await;

    let first = claim(&q, &queue(), &w, 100).await;
    assert_eq!(first.jobs.len(), 5, "a full bucket: one period's worth");
    assert_eq!(first.throttled_for, None);

    let empty = claim(&q, &queue(), &w, 100).await;
    assert!(empty.jobs.is_empty());
    let wait = empty.throttled_for.expect("throttled");
    assert!(
        wait <= Duration::from_millis(200),
        "the next token is due within 1/5 s: {wait:?}"
    );
    assert_eq!(
        q.stats(queue()).await.unwrap().pending,
        15,
        "the rest stay queued"
    );

    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    let refilled = claim(&q, &queue(), &w, 100).await;
    assert_eq!(refilled.jobs.len(), 1, "one token refilled");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let more = claim(&q, &queue(), &w, 100).await;
    assert!(
        (2..=4).contains(&more.jobs.len()),
        "about 3 tokens in 0.6 s: {}",
        more.jobs.len()
    );
}

#[tokio::test]
async fn an_unlimited_queue_is_never_throttled() {
    let t = TestQueue::new();
    let q = t.client().await;
    q.push_many(queue(), &vec![json!({}); 50], &PushOptions::default())
        .await
        .unwrap();
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 100).await;
    assert_eq!(batch.jobs.len(), 50);
    let again = claim(&q, &queue(), &w, 100).await;
    assert_eq!(again.throttled_for, None);
}
