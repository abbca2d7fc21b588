//! Partitioned queues against a real Redis (and, from `scripts/test`, the
//! real cluster): pushes spread round robin over the partitions, each with
//! a hash tag of its own; a key keeps its jobs in one partition, in order;
//! an idempotency key or a given id meets its first job whichever partition
//! it is in; stats, listings, lookups, cancellation and dead letters see the
//! queue as one; a process configured with another count is refused with
//! both counts named; and changing the count on a live queue loses nothing.

mod support;

use hopper_queue::{
    PushOptions, QueueClient, QueueError,
    client::{Ack, AfterFailure},
};
use hopper_shared::{QueueName, jobs::JobState};
use serde_json::json;
use support::{TestQueue, claim, registered};
use uuid::Uuid;

fn queue() -> QueueName {
    QueueName::new("t-parts").unwrap()
}

const THREE: (&str, &str) = ("HOPPER_QUEUE_T_PARTS_PARTITIONS", "3");

/// Pending jobs in each partition of `n`.
async fn depths(q: &QueueClient, n: u16) -> Vec<u64> {
    let mut conn = q.connection();
    let mut out = Vec::new();
    for k in 0..n {
        let len: u64 = redis::cmd("LLEN")
            .arg(
                q.keys(queue().partition(k))
                    .pending(hopper_queue::Priority::Normal),
            )
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push(len);
    }
    out
}

/// Claims and acknowledges everything in every partition; answers the
/// args' `n` of what ran, in claim order per partition.
async fn drain(q: &QueueClient) -> Vec<i64> {
    let mut ran = Vec::new();
    for partition in q.partitions(&queue()).await.unwrap() {
        let w = registered(q, &partition).await;
        loop {
            let batch = claim(q, &partition, &w, 50).await.jobs;
            if batch.is_empty() {
                break;
            }
            let acks: Vec<Ack> = batch.iter().map(|j| Ack::of(j, &w, "null")).collect();
            assert!(q.ack_many(&partition, &acks).await.unwrap().is_empty());
            for j in &batch {
                let args: serde_json::Value = serde_json::from_str(&j.args).unwrap();
                ran.push(args["n"].as_i64().unwrap());
            }
        }
    }
    ran
}

#[tokio::test]
async fn pushes_spread_round_robin_and_the_queue_is_seen_as_one() {
    let t = TestQueue::with(&[THREE]);
    let q = t.client().await;
    let opts = PushOptions::default();
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(q.push(queue(), &json!({ "n": n }), &opts).await.unwrap().id);
    }
    assert_eq!(depths(&q, 3).await, [10, 10, 10], "round robin");
    let batch: Vec<_> = (30..39).map(|n| json!({ "n": n })).collect();
    ids.extend(q.push_many(queue(), &batch, &opts).await.unwrap());
    assert_eq!(depths(&q, 3).await, [13, 13, 13], "a batch spreads too");

    // Each partition has a hash tag of its own.
    let tags: Vec<String> = (0..3)
        .map(|k| q.keys(queue().partition(k)).tag().to_owned())
        .collect();
    assert_eq!(tags[0], format!("{{{}:t-parts}}", t.key_prefix));
    assert_eq!(tags[2], format!("{{{}:t-parts~2}}", t.key_prefix));

    // As one: depth, listing, lookup by id.
    let stats = q.stats(queue()).await.unwrap();
    assert_eq!((stats.queue.as_str(), stats.pending), ("t-parts", 39));
    let listed = q
        .list_jobs(queue(), JobState::Pending, None, 100)
        .await
        .unwrap();
    assert_eq!(listed.len(), 39);
    assert!(
        listed.iter().all(|j| j.kind == queue()),
        "named by the queue"
    );
    for id in &ids {
        let job = q
            .job(queue(), *id)
            .await
            .unwrap()
            .expect("found in its partition");
        assert_eq!(job.kind, queue());
    }
    let found = q.find_job_in(ids[7], &[queue()]).await.unwrap().unwrap();
    assert_eq!(found.id, ids[7]);

    // Cancellation finds the job's partition.
    let (kind, state) = q.cancel_in(queue(), ids[5]).await.unwrap().unwrap();
    assert_eq!((kind.as_str(), state.as_str()), ("t-parts", "cancelled"));
    let cancelled = q.job(queue(), ids[5]).await.unwrap().unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);

    // Every job runs once.
    let mut ran = drain(&q).await;
    ran.sort_unstable();
    let mut want: Vec<i64> = (0..39).filter(|n| *n != 5).collect();
    want.sort_unstable();
    assert_eq!(ran, want);
    let stats = q.stats(queue()).await.unwrap();
    assert_eq!((stats.pending, stats.succeeded_recent), (0, 38));
}

#[tokio::test]
async fn a_key_keeps_its_jobs_in_one_partition_and_repeats_meet_their_first_job() {
    let t = TestQueue::with(&[THREE]);
    let q = t.client().await;
    let keyed = PushOptions {
        partition_key: Some("order-42".into()),
        ..Default::default()
    };
    for n in 0..12 {
        q.push(queue(), &json!({ "n": n }), &keyed).await.unwrap();
    }
    let d = depths(&q, 3).await;
    assert_eq!(
        d.iter().filter(|&&n| n == 12).count(),
        1,
        "one partition: {d:?}"
    );
    assert_eq!(drain(&q).await, (0..12).collect::<Vec<_>>(), "in order");

    // The same idempotency key (or id) meets the first job, whichever
    // partition round robin would pick next.
    let idem = PushOptions {
        idempotency_key: Some("acme:once".into()),
        ..Default::default()
    };
    let first = q.push(queue(), &json!({ "n": 1 }), &idem).await.unwrap();
    for _ in 0..5 {
        let again = q.push(queue(), &json!({ "n": 1 }), &idem).await.unwrap();
        assert_eq!((again.id, again.created), (first.id, false));
    }
    let id = Uuid::now_v7();
    let given = PushOptions {
        id: Some(id),
        ..Default::default()
    };
    assert!(
        q.push(queue(), &json!({ "n": 2 }), &given)
            .await
            .unwrap()
            .created
    );
    for _ in 0..5 {
        assert!(
            !q.push(queue(), &json!({ "n": 2 }), &given)
                .await
                .unwrap()
                .created
        );
    }
    assert_eq!(q.stats(queue()).await.unwrap().pending, 2);
}

#[tokio::test]
async fn dead_letters_of_every_partition_are_listed_and_retried_as_one() {
    let t = TestQueue::with(&[THREE]);
    let q = t.client().await;
    for n in 0..6 {
        q.push(queue(), &json!({ "n": n }), &PushOptions::default())
            .await
            .unwrap();
    }
    let mut dead = Vec::new();
    for partition in q.partitions(&queue()).await.unwrap() {
        let w = registered(&q, &partition).await;
        for j in claim(&q, &partition, &w, 10).await.jobs {
            let failed = q
                .fail(
                    &partition,
                    &w,
                    j.id,
                    j.lease,
                    "boom",
                    AfterFailure::Dead("poison"),
                )
                .await
                .unwrap();
            assert!(failed);
            dead.push(j.id);
        }
    }
    assert_eq!(dead.len(), 6);
    let page = q.dead_letters(queue(), None, 0, 4).await.unwrap();
    assert_eq!((page.total, page.jobs.len()), (6, 4));
    let rest = q.dead_letters(queue(), None, 4, 4).await.unwrap();
    assert_eq!(rest.jobs.len(), 2);
    let mut listed: Vec<Uuid> = page.jobs.iter().chain(&rest.jobs).map(|j| j.id).collect();
    listed.sort();
    dead.sort();
    assert_eq!(listed, dead, "every partition's, once");
    assert_eq!(
        q.dead_letters(queue(), Some("default"), 0, 10)
            .await
            .unwrap()
            .total,
        6
    );
    assert_eq!(q.retry_dead(queue(), &dead[..2]).await.unwrap(), 2);
    assert_eq!(q.all_dead(queue(), "purge", None).await.unwrap(), 4);
    let stats = q.stats(queue()).await.unwrap();
    assert_eq!((stats.pending, stats.dead), (2, 0));
}

#[tokio::test]
async fn a_process_with_another_count_is_refused_naming_both() {
    let t = TestQueue::with(&[THREE]);
    let q = t.client().await;
    q.push(queue(), &json!({ "n": 0 }), &PushOptions::default())
        .await
        .unwrap();
    // Another process on the same prefix, not configured for partitions.
    let mut other = t.config.clone();
    other.queues = TestQueue::new().config.queues.clone();
    let p = QueueClient::connect(&other).await.unwrap();
    let err = p.check_partitions(&[]).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::PartitionsDiffer {
                configured: 1,
                recorded: 3,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    for part in [
        "t-parts",
        "3 partition",
        "configured with 1",
        "HOPPER_QUEUE_T_PARTS_PARTITIONS",
    ] {
        assert!(message.contains(part), "{message}");
    }
    // A process that agrees starts.
    q.check_partitions(&[queue()]).await.unwrap();
}

#[tokio::test]
async fn changing_the_count_on_a_live_queue_loses_nothing() {
    let t = TestQueue::with(&[THREE]);
    let q = t.client().await;
    for n in 0..9 {
        q.push(queue(), &json!({ "n": n }), &PushOptions::default())
            .await
            .unwrap();
    }
    // Down to one: the operator's change, then the processes' variable.
    let layout = q.set_partitions(&queue(), 1).await.unwrap();
    assert_eq!((layout.current, layout.high), (1, 3));
    let mut one = t.config.clone();
    one.queues = TestQueue::new().config.queues.clone();
    let p = QueueClient::connect(&one).await.unwrap();
    p.check_partitions(&[queue()]).await.unwrap();
    for n in 9..12 {
        p.push(queue(), &json!({ "n": n }), &PushOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(
        depths(&p, 3).await,
        [6, 3, 3],
        "new jobs in partition 0 only"
    );
    assert_eq!(
        p.partitions(&queue()).await.unwrap().len(),
        3,
        "claims cover all"
    );
    assert_eq!(p.stats(queue()).await.unwrap().pending, 12);
    let mut ran = drain(&p).await;
    ran.sort_unstable();
    assert_eq!(ran, (0..12).collect::<Vec<_>>(), "nothing lost");

    // Up again to four: a fourth partition joins.
    let layout = p.set_partitions(&queue(), 4).await.unwrap();
    assert_eq!((layout.current, layout.high), (4, 4));
    assert!(matches!(
        p.set_partitions(&queue(), 65).await,
        Err(QueueError::Config(_))
    ));
    for n in 0..8 {
        p.push(queue(), &json!({ "n": n }), &PushOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(depths(&p, 4).await, [2, 2, 2, 2]);
}
