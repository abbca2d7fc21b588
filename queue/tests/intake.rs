//! Intake against a real Redis: [`QueueClient::intake_peek`] answers the
//! oldest messages that another system's producers `LPUSH`ed (kombu's
//! lists, taken from the right) — most urgent list first, each list oldest
//! first, byte for byte — and takes nothing; [`QueueClient::intake`]
//! (`intake.lua`) takes exactly the items given, each in the script that
//! pushes its job (id, arguments and options as planned), and stops at the
//! first message another reader took meanwhile, so racing readers make each
//! message exactly one job. [`QueueClient::pending_total`] is what the
//! Celery pump's lookahead reads.

mod support;

use std::{collections::HashSet, time::Duration};

use hopper_queue::{IntakeItem, Priority, PushOptions, QueueClient};
use hopper_shared::{
    QueueName,
    jobs::{JobState, Notify},
};
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{TestQueue, claim, registered};
use uuid::Uuid;

/// A real kombu envelope (celery 5.7 `send_task`), as the producer pushed it.
const ENVELOPE: &str = include_str!("../../celery/tests/fixtures/send_task.json");

/// The queue the tests' jobs go to.
fn target() -> QueueName {
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

/// The job a peeked message becomes when nothing more is planned: a job of
/// [`target`] with `{"message": <it>}`, tenant `acme`.
fn item((list, message): (usize, String)) -> IntakeItem {
    IntakeItem {
        list,
        args: json!({ "message": message }),
        message,
        queue: target(),
        opts: PushOptions {
            tenant: Some("acme".into()),
            ..Default::default()
        },
    }
}

/// Claims every pending job of [`target`] (up to `n`), in claim order:
/// (job id, its args as JSON).
async fn claim_all(q: &QueueClient, n: usize) -> Vec<(Uuid, Value)> {
    let w = registered(q, &target()).await;
    let mut out = Vec::new();
    loop {
        let batch = claim(q, &target(), &w, 500).await;
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
async fn a_peek_answers_most_urgent_list_first_oldest_first_byte_for_byte_and_takes_nothing() {
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
    // Pushed from the least urgent list to the most urgent, so that an
    // answer in push order would fail the check.
    for (i, list) in lists.iter().enumerate().rev() {
        produce(&q, list, &messages_of(i)).await;
    }
    let expected: Vec<(usize, String)> = (0..lists.len())
        .flat_map(|i| messages_of(i).into_iter().map(move |m| (i, m)))
        .collect();

    let peeked = q.intake_peek(&lists, 100).await.unwrap();
    assert_eq!(peeked, expected);
    for ((_, got), (_, want)) in peeked.iter().zip(&expected) {
        assert_eq!(got.as_bytes(), want.as_bytes());
    }
    // `n` bounds the answer, in the same order.
    let first = q.intake_peek(&lists, 5).await.unwrap();
    assert_eq!(first, expected[..5]);
    assert!(q.intake_peek(&lists, 0).await.unwrap().is_empty());
    assert!(q.intake_peek(&[], 10).await.unwrap().is_empty());
    // Nothing was taken, and nothing was queued.
    for (i, list) in lists.iter().enumerate() {
        assert_eq!(llen(&q, list).await, messages_of(i).len(), "{list:?}");
    }
    assert_eq!(q.stats(target()).await.unwrap().pending, 0);

    // Taken as peeked, each message reads back from its job byte for byte.
    let items: Vec<IntakeItem> = peeked.into_iter().map(item).collect();
    let pushed = q.intake(&lists, &items).await.unwrap();
    assert_eq!(pushed.len(), expected.len());
    for list in &lists {
        assert_eq!(llen(&q, list).await, 0, "{list:?} still holds messages");
    }
    let jobs = claim_all(&q, expected.len()).await;
    let got: Vec<&str> = jobs
        .iter()
        .map(|(_, a)| a["message"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = expected.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(got, want, "claim order = the order taken");
    let (id, _) = &jobs[want.iter().position(|m| *m == unicode).unwrap()];
    let rec = q.job(target(), *id).await.unwrap().expect("job");
    assert_eq!(
        rec.args["message"].as_str().unwrap().as_bytes(),
        unicode.as_bytes()
    );
}

#[tokio::test]
async fn intake_takes_exactly_the_items_given_and_pushes_their_jobs_as_planned() {
    let t = TestQueue::new();
    let q = t.client().await;
    let lists = kombu_lists(&t);
    let keys = q.keys(target());
    produce(&q, &lists[0], &["a0".into(), "a1".into(), "a2".into()]).await;
    produce(&q, &lists[3], &["d0".into(), "d1".into()]).await;
    let peeked = q.intake_peek(&lists, 10).await.unwrap();
    assert_eq!(peeked.len(), 5);

    // Four items of five (a0, a1, a2, d0), each with its own plan: given
    // ids, another queue for one, a delay, limits, a notify, high priority.
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let other = QueueName::new("t-intake-other").unwrap();
    let notify = Notify {
        task: QueueName::new("t-told").unwrap(),
        data: json!({ "celery": "x" }),
    };
    let mut items: Vec<IntakeItem> = peeked[..4].iter().cloned().map(item).collect();
    for (it, id) in items.iter_mut().zip(&ids) {
        it.opts.id = Some(*id);
        it.args = json!({ "planned": it.message });
    }
    items[0].opts.priority = Priority::High;
    items[0].opts.notify = Some(notify.clone());
    items[1].queue = other.clone();
    items[2].opts.delay = Some(Duration::from_secs(60));
    items[3].opts.hard_time_limit = Some(Duration::from_millis(1_500));
    items[3].opts.soft_time_limit = Some(Duration::from_millis(700));
    let pushed = q.intake(&lists, &items).await.unwrap();
    let answered: Vec<(Uuid, bool)> = pushed.iter().map(|p| (p.id, p.created)).collect();
    let want: Vec<(Uuid, bool)> = ids.iter().map(|id| (*id, true)).collect();
    assert_eq!(answered, want);

    // Exactly those left their lists: d1 stays.
    assert_eq!(llen(&q, &lists[0]).await, 0);
    let left: Vec<String> = q.connection().lrange(&lists[3], 0, -1).await.unwrap();
    assert_eq!(left, ["d1"]);

    let a0 = q.job(target(), ids[0]).await.unwrap().expect("a0's job");
    assert_eq!(a0.args, json!({ "planned": "a0" }));
    assert_eq!(a0.tenant, "acme");
    assert_eq!(a0.kind, target());
    assert_eq!(a0.priority.as_deref(), Some("high"));
    assert_eq!(a0.notify.as_ref(), Some(&notify));
    assert_eq!(a0.state, JobState::Pending);
    let a1 = q
        .job(other.clone(), ids[1])
        .await
        .unwrap()
        .expect("a1's job");
    assert_eq!(a1.args, json!({ "planned": "a1" }));
    assert!(q.job(target(), ids[1]).await.unwrap().is_none());
    let a2 = q.job(target(), ids[2]).await.unwrap().expect("a2's job");
    assert_eq!(a2.state, JobState::Scheduled);
    assert!(
        a2.run_at_ms.unwrap() >= a2.enqueued_at_ms + 59_000,
        "{a2:?}"
    );
    // Each job counts for its tenant and left a wake token, as a push does.
    let load: i64 = q
        .connection()
        .hget(keys.tenant_load(), "acme")
        .await
        .unwrap();
    assert_eq!(load, 3, "a0, a2, d0 in t-intake");
    assert_eq!(llen(&q, &keys.wake()).await, 3);
    assert_eq!(q.stats(other.clone()).await.unwrap().pending, 1);

    // The pending ones claim in order, with their own limits.
    let w = registered(&q, &target()).await;
    let batch = claim(&q, &target(), &w, 10).await;
    let claimed: Vec<Uuid> = batch.jobs.iter().map(|j| j.id).collect();
    assert_eq!(claimed, [ids[0], ids[3]]);
    let d0 = &batch.jobs[1];
    assert_eq!(d0.hard_time_limit, Some(Duration::from_millis(1_500)));
    assert_eq!(d0.soft_time_limit, Some(Duration::from_millis(700)));
    assert_eq!(batch.jobs[0].hard_time_limit, None);

    // Nothing given: nothing taken.
    assert!(q.intake(&lists, &[]).await.unwrap().is_empty());
    assert_eq!(llen(&q, &lists[3]).await, 1);
}

#[tokio::test]
async fn a_message_taken_by_another_reader_stops_the_batch_there() {
    let t = TestQueue::new();
    let q = t.client().await;
    let lists = kombu_lists(&t);
    let first: Vec<String> = (0..4).map(|i| format!("a{i}")).collect();
    let second: Vec<String> = (0..3).map(|i| format!("b{i}")).collect();
    produce(&q, &lists[0], &first).await;
    produce(&q, &lists[1], &second).await;

    // Someone else takes the oldest message (a0) between the peek and the
    // intake: the batch stops at once, nothing is taken.
    let peeked = q.intake_peek(&lists, 10).await.unwrap();
    assert_eq!(peeked.len(), 7);
    let stolen: Option<String> = q.connection().rpop(&lists[0], None).await.unwrap();
    assert_eq!(stolen.as_deref(), Some("a0"));
    let items: Vec<IntakeItem> = peeked.into_iter().map(item).collect();
    let pushed = q.intake(&lists, &items).await.unwrap();
    assert!(pushed.is_empty(), "{pushed:?}");
    assert_eq!(llen(&q, &lists[0]).await, 3);
    assert_eq!(llen(&q, &lists[1]).await, 3);

    // From a fresh peek, b0 (the fifth) goes meanwhile: a1..a3 are taken,
    // and nothing after the gap (b1, b2 stay).
    let peeked = q.intake_peek(&lists, 10).await.unwrap();
    assert_eq!(peeked.len(), 6);
    let stolen: Option<String> = q.connection().rpop(&lists[1], None).await.unwrap();
    assert_eq!(stolen.as_deref(), Some("b0"));
    let items: Vec<IntakeItem> = peeked.into_iter().map(item).collect();
    let pushed = q.intake(&lists, &items).await.unwrap();
    assert_eq!(pushed.len(), 3, "{pushed:?}");
    assert_eq!(llen(&q, &lists[0]).await, 0);
    let left: Vec<String> = q.connection().lrange(&lists[1], 0, -1).await.unwrap();
    assert_eq!(left, ["b2", "b1"], "nothing after the gap was taken");
    let jobs = claim_all(&q, 7).await;
    let got: Vec<&str> = jobs
        .iter()
        .map(|(_, a)| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["a1", "a2", "a3"], "one job per message taken");
}

#[tokio::test]
async fn racing_readers_make_every_message_exactly_one_job() {
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

    // Two readers, each: peek, plan (a fresh id per message), take; until
    // a peek finds nothing.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (q, lists) = (q.clone(), lists.clone());
            tokio::spawn(async move {
                let (mut taken, mut rounds) = (0, 0);
                loop {
                    rounds += 1;
                    assert!(rounds < 10_000, "a reader never saw the lists empty");
                    let peeked = q.intake_peek(&lists, 37).await.unwrap();
                    if peeked.is_empty() {
                        return taken;
                    }
                    let items: Vec<IntakeItem> = peeked.into_iter().map(item).collect();
                    let pushed = q.intake(&lists, &items).await.unwrap();
                    assert!(pushed.iter().all(|p| p.created));
                    taken += pushed.len();
                }
            })
        })
        .collect();
    let mut taken = 0;
    for r in readers {
        taken += tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("readers finish")
            .unwrap();
    }
    assert_eq!(taken, total);
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
async fn a_job_id_that_exists_answers_created_false_and_the_message_is_still_taken() {
    let t = TestQueue::new();
    let q = t.client().await;
    let lists = kombu_lists(&t);
    let id = Uuid::new_v4();
    let opts = PushOptions {
        id: Some(id),
        tenant: Some("acme".into()),
        ..Default::default()
    };
    q.push(target(), &json!({ "first": true }), &opts)
        .await
        .unwrap();
    // The same Celery message sent twice, then another.
    produce(&q, &lists[0], &["m".into(), "m".into(), "n".into()]).await;
    let peeked = q.intake_peek(&lists, 10).await.unwrap();
    let mut items: Vec<IntakeItem> = peeked.into_iter().map(item).collect();
    items[0].opts.id = Some(id);
    items[1].opts.id = Some(id);
    let pushed = q.intake(&lists, &items).await.unwrap();
    let answered: Vec<(Uuid, bool)> = pushed.iter().map(|p| (p.id, p.created)).collect();
    assert_eq!(answered[..2], [(id, false), (id, false)]);
    assert!(answered[2].1, "n made its job");
    assert_eq!(llen(&q, &lists[0]).await, 0, "every message was taken");

    let rec = q.job(target(), id).await.unwrap().unwrap();
    assert_eq!(
        rec.args,
        json!({ "first": true }),
        "the job stays as it was"
    );
    let stats = q.stats(target()).await.unwrap();
    assert_eq!(stats.pending, 2, "the first push's job and n's");
    let load: i64 = q
        .connection()
        .hget(q.keys(target()).tenant_load(), "acme")
        .await
        .unwrap();
    assert_eq!(load, 2, "counted once");
}

#[tokio::test]
async fn pending_total_counts_waiting_jobs_of_both_priorities_across_queues() {
    let t = TestQueue::new();
    let q = t.client().await;
    let other = QueueName::new("t-intake-other").unwrap();
    assert_eq!(q.pending_total(&[]).await.unwrap(), 0);
    assert_eq!(q.pending_total(&[target()]).await.unwrap(), 0);
    let high = PushOptions {
        priority: Priority::High,
        ..Default::default()
    };
    let later = PushOptions {
        delay: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    for opts in [
        &PushOptions::default(),
        &PushOptions::default(),
        &high,
        &later,
    ] {
        q.push(target(), &json!({}), opts).await.unwrap();
    }
    q.push(other.clone(), &json!({}), &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(
        q.pending_total(&[target()]).await.unwrap(),
        3,
        "not the delayed one"
    );
    let both = [target(), other.clone()];
    assert_eq!(q.pending_total(&both).await.unwrap(), 4);
    // A claimed job no longer waits.
    let w = registered(&q, &target()).await;
    assert_eq!(claim(&q, &target(), &w, 2).await.jobs.len(), 2);
    assert_eq!(q.pending_total(&both).await.unwrap(), 2);
}
