//! `QueueClient::intake` (`intake.lua`) against a real Redis: messages that
//! another system's producers `LPUSH`ed (kombu's lists, taken from the
//! right) become jobs of one queue — most urgent list first, each list
//! oldest first, byte for byte — bounded per call by `room`, paused at the
//! lookahead, and never lost nor doubled when several pumps race.

mod support;

use std::{collections::HashSet, time::Duration};

use hopper_queue::{IntakeFrom, QueueClient};
use hopper_shared::QueueName;
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{TestQueue, claim, registered};

/// A real kombu envelope (celery 5.7 `send_task`), as the producer pushed it.
const ENVELOPE: &str = include_str!("../../celery/tests/fixtures/send_task.json");

fn intake_queue() -> QueueName {
    QueueName::new("t-intake").unwrap()
}

/// kombu's four lists of queue `celery` under this test's prefix, most
/// urgent first (priority steps 0, 3, 6, 9).
fn kombu_lists(t: &TestQueue) -> Vec<String> {
    ["", "\x06\x163", "\x06\x166", "\x06\x169"]
        .iter()
        .map(|step| t.foreign_key(&format!("celery{step}")))
        .collect()
}

/// `LPUSH`es `messages` onto `list` one by one, as kombu's producer does
/// (the first pushed is the oldest, at the right end).
async fn produce(q: &QueueClient, list: &str, messages: &[String]) {
    let mut conn = q.connection();
    for m in messages {
        let _: i64 = conn.lpush(list, m).await.unwrap();
    }
}

async fn llen(q: &QueueClient, key: &str) -> usize {
    q.connection().llen(key).await.unwrap()
}

fn from<'a>(lists: &'a [String], room: usize, lookahead: usize) -> IntakeFrom<'a> {
    IntakeFrom {
        source: "celery",
        lists,
        room,
        lookahead,
        tenant: "acme",
    }
}

/// Claims every pending job of the intake queue (up to `n`), in claim order:
/// (job id, its args as JSON).
async fn claim_all(q: &QueueClient, n: usize) -> Vec<(uuid::Uuid, Value)> {
    let queue = intake_queue();
    let w = registered(q, &queue).await;
    let mut out = Vec::new();
    loop {
        let batch = claim(q, &queue, &w, 500).await;
        if batch.jobs.is_empty() {
            break;
        }
        for j in batch.jobs {
            out.push((j.id, serde_json::from_str(&j.args).unwrap()));
        }
        assert!(out.len() <= n, "more jobs than messages: {}", out.len());
    }
    out
}

#[tokio::test]
async fn messages_move_most_urgent_list_first_oldest_first_byte_for_byte() {
    let t = TestQueue::new();
    let q = t.client().await;
    let lists = kombu_lists(&t);
    let unicode = "héllo wörld ✓ 日本語 🎉 \u{7f}".to_owned();
    let escapes = r#"{"a": "quote \" backslash \\ slash / tab	", "nl": "x\ny", "u": "\u00e9"}"#
        .to_owned()
        + "\\\"\0end";
    let messages_of = |i: usize| {
        let mut messages: Vec<String> = (0..3).map(|j| format!("L{i}-{j}")).collect();
        if i == 1 {
            messages.insert(1, unicode.clone());
            messages.push(escapes.clone());
            messages.push(ENVELOPE.to_owned());
        }
        messages
    };
    // Pushed from the least urgent list to the most urgent, so that a move
    // in push order would fail the check.
    for (i, list) in lists.iter().enumerate().rev() {
        produce(&q, list, &messages_of(i)).await;
    }
    let expected: Vec<String> = (0..lists.len()).flat_map(messages_of).collect();

    let moved = q
        .intake(&intake_queue(), &from(&lists, 100, 1000))
        .await
        .unwrap();
    assert_eq!(moved, Some(expected.len()));
    for list in &lists {
        assert_eq!(llen(&q, list).await, 0, "{list:?} still holds messages");
    }

    let jobs = claim_all(&q, expected.len()).await;
    let got: Vec<Value> = jobs.iter().map(|(_, args)| args.clone()).collect();
    let want: Vec<Value> = expected
        .iter()
        .map(|m| json!({ "source": "celery", "message": m }))
        .collect();
    assert_eq!(
        got, want,
        "claim order = most urgent list first, oldest first"
    );
    // Byte for byte, not only equal as JSON values.
    for ((_, args), m) in jobs.iter().zip(&expected) {
        assert_eq!(args["message"].as_str().unwrap().as_bytes(), m.as_bytes());
    }
    // The record reads back the same, with the tenant and kind given.
    let (id, _) = &jobs[expected.iter().position(|m| m == &unicode).unwrap()];
    let rec = q.job(intake_queue(), *id).await.unwrap().expect("job");
    assert_eq!(rec.args["message"], unicode.as_str());
    assert_eq!(rec.tenant, "acme");
    assert_eq!(rec.kind, intake_queue());
}

#[tokio::test]
async fn room_bounds_a_call_and_the_lookahead_pauses_the_move() {
    let t = TestQueue::new();
    let q = t.client().await;
    let lists = kombu_lists(&t);
    let pending = q
        .keys(intake_queue())
        .pending(hopper_queue::Priority::Normal);
    let messages: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    produce(&q, &lists[0], &messages).await;

    // `room` bounds one call.
    let moved = q.intake(&intake_queue(), &from(&lists, 4, 100)).await;
    assert_eq!(moved.unwrap(), Some(4));
    assert_eq!(llen(&q, &lists[0]).await, 6);
    assert_eq!(llen(&q, &pending).await, 4);

    // The lookahead (6) leaves room for 2 more, whatever `room` says.
    let moved = q.intake(&intake_queue(), &from(&lists, 100, 6)).await;
    assert_eq!(moved.unwrap(), Some(2));
    assert_eq!(llen(&q, &lists[0]).await, 4);
    assert_eq!(llen(&q, &pending).await, 6);

    // At the lookahead: None, and nothing leaves the lists.
    for lookahead in [6, 5, 1] {
        let moved = q
            .intake(&intake_queue(), &from(&lists, 100, lookahead))
            .await;
        assert_eq!(moved.unwrap(), None, "lookahead {lookahead}");
        assert_eq!(llen(&q, &lists[0]).await, 4);
        assert_eq!(llen(&q, &pending).await, 6);
    }

    // Once workers take jobs, the move resumes where it stopped (m6 next).
    let taken = claim_all(&q, 6).await;
    let firsts: Vec<&str> = taken
        .iter()
        .map(|(_, a)| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(firsts, ["m0", "m1", "m2", "m3", "m4", "m5"]);
    let moved = q.intake(&intake_queue(), &from(&lists, 100, 6)).await;
    assert_eq!(moved.unwrap(), Some(4));
    let rest = claim_all(&q, 4).await;
    let rest: Vec<&str> = rest
        .iter()
        .map(|(_, a)| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["m6", "m7", "m8", "m9"]);
    // Empty lists: zero moved (not None).
    let moved = q.intake(&intake_queue(), &from(&lists, 100, 6)).await;
    assert_eq!(moved.unwrap(), Some(0));
}

#[tokio::test]
async fn racing_pumps_move_every_message_into_exactly_one_job() {
    const PER_LIST: usize = 500;
    let t = TestQueue::new();
    let q = t.client().await;
    let lists = kombu_lists(&t);
    let mut sent = HashSet::new();
    for (i, list) in lists.iter().enumerate() {
        let messages: Vec<String> = (0..PER_LIST).map(|j| format!("{i}:{j}")).collect();
        sent.extend(messages.iter().cloned());
        // One LPUSH of many values: same order as one by one, faster.
        let _: i64 = q.connection().lpush(list, &messages).await.unwrap();
    }
    let total = sent.len();
    assert_eq!(total, 4 * PER_LIST);

    let pumps: Vec<_> = (0..4)
        .map(|_| {
            let (q, lists) = (q.clone(), lists.clone());
            tokio::spawn(async move {
                let mut moved = 0;
                let mut calls = 0;
                loop {
                    calls += 1;
                    assert!(calls < 10_000, "a pump never saw the lists empty");
                    match q
                        .intake(&intake_queue(), &from(&lists, 37, 100_000))
                        .await
                        .unwrap()
                    {
                        Some(0) => return moved,
                        Some(n) => moved += n,
                        None => panic!("lookahead reached"),
                    }
                }
            })
        })
        .collect();
    let mut moved = 0;
    for p in pumps {
        moved += tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .expect("pumps finish")
            .unwrap();
    }
    assert_eq!(moved, total);
    for list in &lists {
        assert_eq!(llen(&q, list).await, 0);
    }

    let jobs = claim_all(&q, total).await;
    assert_eq!(jobs.len(), total);
    let ids: HashSet<_> = jobs.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), total, "job ids are distinct");
    let got: HashSet<String> = jobs
        .iter()
        .map(|(_, a)| a["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got.len(), total, "no message made two jobs");
    assert_eq!(got, sent);
}

#[tokio::test]
async fn moved_messages_count_as_the_tenants_unfinished_jobs_and_wake_workers() {
    let t = TestQueue::new();
    let q = t.client().await;
    let lists = kombu_lists(&t);
    let keys = q.keys(intake_queue());
    produce(&q, &lists[2], &["a".into(), "b".into(), "c".into()]).await;
    produce(&q, &lists[3], &["d".into(), "e".into()]).await;
    let mut conn = q.connection();
    let load: Option<i64> = conn.hget(keys.tenant_load(), "acme").await.unwrap();
    assert_eq!(load, None);
    assert_eq!(llen(&q, &keys.wake()).await, 0);

    let moved = q.intake(&intake_queue(), &from(&lists, 3, 100)).await;
    assert_eq!(moved.unwrap(), Some(3));
    let load: i64 = conn.hget(keys.tenant_load(), "acme").await.unwrap();
    assert_eq!(load, 3);
    assert_eq!(llen(&q, &keys.wake()).await, 3);

    let moved = q.intake(&intake_queue(), &from(&lists, 100, 100)).await;
    assert_eq!(moved.unwrap(), Some(2));
    let load: i64 = conn.hget(keys.tenant_load(), "acme").await.unwrap();
    assert_eq!(load, 5);
    assert_eq!(llen(&q, &keys.wake()).await, 5);
    // Nothing moved: nothing counted.
    let moved = q.intake(&intake_queue(), &from(&lists, 100, 100)).await;
    assert_eq!(moved.unwrap(), Some(0));
    let load: i64 = conn.hget(keys.tenant_load(), "acme").await.unwrap();
    assert_eq!(load, 5);
    assert_eq!(llen(&q, &keys.wake()).await, 5);
    // The stats see them as pending jobs of the queue.
    let stats = q.stats(intake_queue()).await.unwrap();
    assert_eq!(stats.pending, 5);
}
