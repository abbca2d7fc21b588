//! Unique jobs (`PushOptions::unique`) against a real Redis: one job at a
//! time per key — by a digest of the arguments or a given key, per tenant —
//! for a window or until the first job is over; 50 concurrent submissions
//! make one job; a unique duplicate is answered before any tenant cap.

mod support;

use std::time::Duration;

use hopper_queue::{PushOptions, Unique, UniqueScope};
use hopper_shared::QueueName;
use serde_json::json;
use support::{TestQueue, claim, registered};

fn queue() -> QueueName {
    QueueName::new("t-unique").unwrap()
}

fn unique(key: Option<&str>, scope: UniqueScope) -> PushOptions {
    PushOptions {
        unique: Some(Unique {
            key: key.map(str::to_owned),
            scope,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn fifty_concurrent_submissions_of_one_unique_job_make_one_job() {
    let t = TestQueue::new();
    let q = t.client().await;
    let opts = unique(None, UniqueScope::UntilFinished);
    let pushes = (0..50).map(|_| {
        let q = q.clone();
        let opts = opts.clone();
        // The same arguments, keys in another order half of the time.
        tokio::spawn(async move {
            q.push(queue(), &json!({ "a": 1, "b": [1, 2] }), &opts)
                .await
                .unwrap()
        })
    });
    let pushed: Vec<_> = futures::future::join_all(pushes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created = pushed.iter().filter(|p| p.created).count();
    assert_eq!(created, 1, "exactly one submission made the job");
    assert!(
        pushed.iter().all(|p| p.id == pushed[0].id),
        "all answer the same job"
    );
    assert_eq!(q.stats(queue()).await.unwrap().pending, 1);

    let reordered = q
        .push(queue(), &json!({ "b": [1, 2], "a": 1 }), &opts)
        .await
        .unwrap();
    assert_eq!((reordered.id, reordered.created), (pushed[0].id, false));
    let other = q.push(queue(), &json!({ "a": 2 }), &opts).await.unwrap();
    assert!(other.created, "other arguments are another job");
}

#[tokio::test]
async fn until_finished_holds_while_the_job_lives_and_frees_once_it_is_over() {
    let t = TestQueue::new();
    let q = t.client().await;
    let opts = unique(Some("nightly-report"), UniqueScope::UntilFinished);
    let first = q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap();
    assert!(first.created);
    // Other arguments, same key: the first job answers while it waits…
    let dup = q.push(queue(), &json!({ "n": 2 }), &opts).await.unwrap();
    assert_eq!((dup.id, dup.created), (first.id, false));
    // …and while it runs.
    let w = registered(&q, &queue()).await;
    let batch = claim(&q, &queue(), &w, 10).await;
    assert_eq!(batch.jobs.len(), 1);
    let dup = q.push(queue(), &json!({ "n": 3 }), &opts).await.unwrap();
    assert_eq!((dup.id, dup.created), (first.id, false));
    // A running job's cancellation is a request: the job lives on until its
    // worker stops it, and so does its hold on the key (a finished job's
    // release: the next test).
    q.cancel_in(queue(), first.id).await.unwrap();
    let state = q.job(queue(), first.id).await.unwrap().unwrap().state;
    assert!(!state.is_final(), "{state:?}");
    let dup = q.push(queue(), &json!({ "n": 4 }), &opts).await.unwrap();
    assert_eq!((dup.id, dup.created), (first.id, false));
}

#[tokio::test]
async fn a_waiting_unique_job_cancelled_frees_its_key() {
    let t = TestQueue::new();
    let q = t.client().await;
    let opts = unique(None, UniqueScope::UntilFinished);
    let first = q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap();
    q.cancel_in(queue(), first.id).await.unwrap();
    let next = q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap();
    assert!(next.created);
    assert_ne!(next.id, first.id);
}

#[tokio::test]
async fn a_window_holds_for_its_length_whatever_the_job_does() {
    let t = TestQueue::new();
    let q = t.client().await;
    // Long enough that a loaded machine cannot end it between two pushes.
    let opts = unique(None, UniqueScope::Window(Duration::from_secs(2)));
    let first = q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap();
    q.cancel_in(queue(), first.id).await.unwrap();
    let dup = q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap();
    assert_eq!(
        (dup.id, dup.created),
        (first.id, false),
        "cancelled, but within the window"
    );
    let next = support::eventually("the window to end", Duration::from_secs(15), || {
        let q = q.clone();
        let opts = opts.clone();
        async move {
            let p = q.push(queue(), &json!({ "n": 1 }), &opts).await.unwrap();
            p.created.then_some(p)
        }
    })
    .await;
    assert_ne!(next.id, first.id);
}

#[tokio::test]
async fn keys_are_per_tenant_and_a_duplicate_is_answered_before_the_tenant_cap() {
    let t = TestQueue::new();
    let q = t.client().await;
    let mut a = unique(Some("k"), UniqueScope::UntilFinished);
    a.tenant = Some("tenant-a".into());
    a.max_unfinished = Some(1);
    let mut b = a.clone();
    b.tenant = Some("tenant-b".into());
    let first_a = q.push(queue(), &json!({}), &a).await.unwrap();
    let first_b = q.push(queue(), &json!({}), &b).await.unwrap();
    assert!(
        first_a.created && first_b.created,
        "one key, two tenants: two jobs"
    );
    assert_ne!(first_a.id, first_b.id);
    // Tenant a is at its cap of 1: its duplicate still answers its job.
    let dup = q.push(queue(), &json!({}), &a).await.unwrap();
    assert_eq!((dup.id, dup.created), (first_a.id, false));
}
