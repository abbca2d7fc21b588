//! The queue against a real Redis: claim order, delays, leases and
//! recovery, poison, panics and time limits, a large backlog. Each test uses
//! its own key prefix.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use apalis_core::{error::BoxDynError, task::data::Data, worker::builder::WorkerBuilder};
use hopper_queue::{JobContext, Lease, Priority, PushOptions, QueueClient, RedisBackend, WorkerId};
use hopper_shared::{
    Config, QueueName,
    jobs::{EchoArgs, JobKind, JobState, QueueSettings},
};
use serde_json::json;

mod support;

use support::TestQueue;

/// A test's configuration under a key prefix of its own (removed when it
/// drops), with these variables set.
fn config(extra: &[(&str, &str)]) -> TestQueue {
    TestQueue::with(extra)
}

async fn client(c: &Config) -> QueueClient {
    QueueClient::connect(c)
        .await
        .expect("Redis is running (scripts/setup)")
}

async fn conn(q: &QueueClient) -> hopper_queue::RedisConn {
    q.dedicated_connection(Duration::from_secs(1))
        .await
        .unwrap()
}

/// Claims up to `n` echo jobs for `w` (registered by the caller) with a
/// long lease.
async fn claim(q: &QueueClient, w: &WorkerId, n: usize) -> hopper_queue::client::ClaimBatch {
    q.claim(
        &mut conn(q).await,
        JobKind::Echo,
        w,
        n,
        Duration::from_secs(60),
    )
    .await
    .unwrap()
}

/// Asserts that `w`'s claim under `lease` is refused as evicted.
async fn assert_refused(q: &QueueClient, w: &WorkerId, lease: Duration) {
    let refused = q
        .claim(&mut conn(q).await, JobKind::Echo, w, 1, lease)
        .await;
    assert!(
        matches!(refused, Err(hopper_queue::QueueError::Evicted { .. })),
        "{refused:?}"
    );
}

fn echo(msg: &str) -> serde_json::Value {
    json!({ "message": msg })
}

const LEASE: Lease = Lease {
    heartbeat: Duration::from_millis(100),
    lease: Duration::from_millis(500),
};

/// An in-process worker on the echo queue running `$handler` while `$body`
/// runs; the worker is stopped (and must stop cleanly) when `$body` ends.
macro_rules! with_worker {
    ($q:expr, $handler:expr, $body:block) => {{
        let backend = RedisBackend::<EchoArgs>::new(
            $q.clone(),
            JobKind::Echo,
            WorkerId::generate(),
            LEASE,
            None,
        );
        let worker = WorkerBuilder::new(format!("test-{}", uuid::Uuid::new_v4()))
            .backend(backend)
            .build($handler);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = worker.run_until(async move {
            let _ = rx.await;
            Ok::<(), std::io::Error>(())
        });
        let body = async {
            $body;
            tx.send(()).unwrap();
        };
        let (ran, ()) = tokio::join!(run, body);
        ran.expect("worker stops cleanly");
    }};
}

async fn wait_state(
    q: &QueueClient,
    id: uuid::Uuid,
    state: JobState,
    within: Duration,
) -> hopper_shared::jobs::JobRecord {
    let deadline = Instant::now() + within;
    loop {
        let job = q.job(JobKind::Echo, id).await.unwrap().expect("job exists");
        if job.state == state {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job not {state} in {within:?}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn high_priority_jobs_are_claimed_first_and_fifo_within_a_priority() {
    let c = config(&[]);
    let q = client(&c).await;
    let normal = PushOptions::default();
    let high = PushOptions {
        priority: Priority::High,
        ..Default::default()
    };
    let n1 = q
        .push(JobKind::Echo, &echo("n1"), &normal)
        .await
        .unwrap()
        .id;
    let n2 = q
        .push(JobKind::Echo, &echo("n2"), &normal)
        .await
        .unwrap()
        .id;
    let h1 = q.push(JobKind::Echo, &echo("h1"), &high).await.unwrap().id;
    let w = WorkerId::generate();
    q.register(JobKind::Echo, &w).await.unwrap();
    let batch = claim(&q, &w, 10).await;
    let order: Vec<_> = batch.jobs.iter().map(|j| j.id).collect();
    assert_eq!(order, vec![h1, n1, n2]);
    assert!(batch.jobs.iter().all(|j| j.attempt == 1));
    let stats = q.stats(JobKind::Echo).await.unwrap();
    assert_eq!((stats.pending, stats.running), (0, 3));
}

#[tokio::test]
async fn a_delayed_job_is_not_claimed_before_its_time() {
    let c = config(&[]);
    let q = client(&c).await;
    let opts = PushOptions {
        delay: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let id = q
        .push(JobKind::Echo, &echo("later"), &opts)
        .await
        .unwrap()
        .id;
    assert_eq!(
        q.job(JobKind::Echo, id).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    let w = WorkerId::generate();
    q.register(JobKind::Echo, &w).await.unwrap();
    let early = claim(&q, &w, 10).await;
    assert!(early.jobs.is_empty());
    let due = early
        .next_due_in
        .expect("the claim reports when the next job is due");
    assert!(due <= Duration::from_millis(300), "{due:?}");
    tokio::time::sleep(due + Duration::from_millis(5)).await;
    let late = claim(&q, &w, 10).await;
    assert_eq!(late.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
}

#[tokio::test]
async fn a_silent_workers_jobs_are_recovered_and_their_attempt_counted() {
    let c = config(&[]);
    let q = client(&c).await;
    let once = PushOptions {
        max_attempts: Some(1),
        ..Default::default()
    };
    let twice = PushOptions {
        max_attempts: Some(2),
        ..Default::default()
    };
    let last = q
        .push(JobKind::Echo, &echo("last try"), &once)
        .await
        .unwrap()
        .id;
    let again = q
        .push(JobKind::Echo, &echo("again"), &twice)
        .await
        .unwrap()
        .id;
    let gone = WorkerId::generate();
    q.register(JobKind::Echo, &gone).await.unwrap();
    let batch = claim(&q, &gone, 10).await;
    assert_eq!(batch.jobs.len(), 2);

    // Still within its lease: nothing is touched.
    assert!(
        q.recover(JobKind::Echo, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        q.job(JobKind::Echo, again).await.unwrap().unwrap().state,
        JobState::Running
    );

    tokio::time::sleep(Duration::from_millis(30)).await;
    let dead = q
        .recover(JobKind::Echo, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(
        dead,
        vec![last],
        "the job on its last attempt is dead-lettered"
    );
    let job = q.job(JobKind::Echo, again).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.attempts, 1);
    assert!(job.error.unwrap().contains("stopped heartbeating"));
    let stats = q.stats(JobKind::Echo).await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.workers), (1, 1, 0));
}

#[tokio::test]
async fn poison_is_dead_lettered_and_the_worker_keeps_serving() {
    let c = config(&[]);
    let q = client(&c).await;
    async fn handler(args: EchoArgs, _job: Data<JobContext>) -> Result<String, BoxDynError> {
        Ok(args.message)
    }
    with_worker!(q, handler, {
        let poison = q
            .push(
                JobKind::Echo,
                &json!({"not": "echo"}),
                &PushOptions::default(),
            )
            .await
            .unwrap()
            .id;
        let good = q
            .push(JobKind::Echo, &echo("fine"), &PushOptions::default())
            .await
            .unwrap()
            .id;
        let dead = wait_state(&q, poison, JobState::Dead, Duration::from_secs(10)).await;
        assert!(dead.error.unwrap().contains("does not decode"));
        let ok = wait_state(&q, good, JobState::Succeeded, Duration::from_secs(10)).await;
        assert_eq!(ok.result, Some(json!("fine")));
    });
}

#[tokio::test]
async fn panics_and_hard_time_limits_are_failed_attempts_that_retry() {
    let c = config(&[
        ("HOPPER_QUEUE_ECHO_HARD_LIMIT_MS", "200"),
        ("HOPPER_QUEUE_ECHO_SOFT_LIMIT_MS", "100"),
        ("HOPPER_QUEUE_ECHO_BACKOFF_BASE_MS", "10"),
    ]);
    let q = client(&c).await;
    async fn handler(args: EchoArgs, job: Data<JobContext>) -> Result<String, BoxDynError> {
        if job.attempt == 1 {
            match args.message.as_str() {
                "panic" => panic!("first attempt explodes"),
                "hang" => {
                    // Ignores its soft-limit token: the hard limit must end it.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                _ => {}
            }
        }
        Ok(format!("{} ok on attempt {}", args.message, job.attempt))
    }
    with_worker!(q, handler, {
        let p = q
            .push(JobKind::Echo, &echo("panic"), &PushOptions::default())
            .await
            .unwrap()
            .id;
        let h = q
            .push(JobKind::Echo, &echo("hang"), &PushOptions::default())
            .await
            .unwrap()
            .id;
        let pj = wait_state(&q, p, JobState::Succeeded, Duration::from_secs(10)).await;
        assert_eq!(pj.attempts, 2);
        assert!(
            pj.error
                .unwrap()
                .contains("panicked: first attempt explodes")
        );
        let hj = wait_state(&q, h, JobState::Succeeded, Duration::from_secs(10)).await;
        assert_eq!(hj.attempts, 2);
        assert!(hj.error.unwrap().contains("hard time limit"));
    });
}

#[tokio::test]
async fn a_20000_job_backlog_is_drained_completely() {
    let c = config(&[("HOPPER_QUEUE_ECHO_CONCURRENCY", "64")]);
    let q = client(&c).await;
    let batch: Vec<_> = (0..20_000).map(|i| echo(&i.to_string())).collect();
    for chunk in batch.chunks(5_000) {
        q.push_many(JobKind::Echo, chunk, &PushOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(q.stats(JobKind::Echo).await.unwrap().pending, 20_000);
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let ran = done.clone();
    let handler = move |_args: EchoArgs, _job: Data<JobContext>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<_, BoxDynError>(())
        }
    };
    with_worker!(q, handler, {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = q.stats(JobKind::Echo).await.unwrap();
            if s.pending == 0 && s.running == 0 && ran.load(Ordering::Relaxed) == 20_000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not drained: {s:?}, ran {}",
                ran.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(
        done.load(Ordering::Relaxed),
        20_000,
        "each job ran exactly once"
    );
    assert_eq!(
        q.stats(JobKind::Echo).await.unwrap().workers,
        0,
        "deregistered on stop"
    );
}

#[tokio::test]
async fn the_soft_time_limit_reaches_the_handler_through_its_token() {
    let c = config(&[
        ("HOPPER_QUEUE_ECHO_SOFT_LIMIT_MS", "100"),
        ("HOPPER_QUEUE_ECHO_HARD_LIMIT_MS", "5000"),
    ]);
    let q = client(&c).await;
    async fn handler(_args: EchoArgs, job: Data<JobContext>) -> Result<String, BoxDynError> {
        let started = Instant::now();
        job.cancel.cancelled().await;
        Ok(format!(
            "stopped after {} ms",
            started.elapsed().as_millis()
        ))
    }
    with_worker!(q, handler, {
        let id = q
            .push(JobKind::Echo, &echo("soft"), &PushOptions::default())
            .await
            .unwrap()
            .id;
        let job = wait_state(&q, id, JobState::Succeeded, Duration::from_secs(10)).await;
        assert_eq!(job.attempts, 1);
        let ms: u64 = job.result.unwrap().as_str().unwrap()[14..]
            .trim_end_matches(" ms")
            .parse()
            .unwrap();
        assert!((90..1000).contains(&ms), "token fired after {ms} ms");
    });
}

/// Waits until `w`'s lease is taken by recovery (as a live worker's rescuer
/// would after `w` froze).
async fn evict(q: &QueueClient, w: &WorkerId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        q.recover(JobKind::Echo, Duration::from_millis(1))
            .await
            .unwrap();
        let workers = q.workers(JobKind::Echo).await.unwrap();
        if !workers.iter().any(|i| i.worker == w.as_str()) {
            return;
        }
        assert!(Instant::now() < deadline, "{w} never evicted");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_stale_attempt_cannot_ack_fail_or_release_a_job_claimed_again() {
    let c = config(&[]);
    let q = client(&c).await;
    let id = q
        .push(JobKind::Echo, &echo("fenced"), &PushOptions::default())
        .await
        .unwrap()
        .id;
    let frozen = WorkerId::generate();
    q.register(JobKind::Echo, &frozen).await.unwrap();
    let stale = claim(&q, &frozen, 1).await.jobs.remove(0);
    evict(&q, &frozen).await;
    let live = WorkerId::generate();
    q.register(JobKind::Echo, &live).await.unwrap();
    let owner = claim(&q, &live, 1).await.jobs.remove(0);
    assert_eq!((owner.id, owner.attempt), (id, 2));
    assert!(owner.lease > stale.lease);

    // The frozen worker wakes: every write of its attempt is refused.
    let ack = |worker: &WorkerId, lease: u64, result: &str| hopper_queue::client::Ack {
        id,
        result: format!("\"{result}\""),
        worker: worker.clone(),
        lease,
    };
    let lost = q
        .ack_many(JobKind::Echo, &[ack(&frozen, stale.lease, "stale")])
        .await
        .unwrap();
    assert_eq!(lost, vec![id], "the stale ack is refused");
    let failed = q
        .fail(
            JobKind::Echo,
            &frozen,
            id,
            stale.lease,
            "stale failure",
            hopper_queue::AfterFailure::RetryIn(Duration::ZERO),
        )
        .await
        .unwrap();
    assert!(!failed, "the stale fail is refused");
    let released = q
        .release(JobKind::Echo, &frozen, &[(id, stale.lease)], true)
        .await
        .unwrap();
    assert_eq!(released, 0, "the stale release is refused");
    // Even under the live worker's id, an old lease is refused.
    let lost = q
        .ack_many(JobKind::Echo, &[ack(&live, stale.lease, "stale")])
        .await
        .unwrap();
    assert_eq!(lost, vec![id]);
    assert_eq!(
        q.still_held(
            JobKind::Echo,
            &[(id, &frozen, stale.lease), (id, &live, owner.lease)]
        )
        .await
        .unwrap(),
        vec![false, true]
    );
    let job = q.job(JobKind::Echo, id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts, job.worker.as_deref()),
        (JobState::Running, 2, Some(live.as_str()))
    );

    // The owner finishes it; the history names both attempts truly.
    let lost = q
        .ack_many(JobKind::Echo, &[ack(&live, owner.lease, "owner")])
        .await
        .unwrap();
    assert!(lost.is_empty());
    let job = q.job(JobKind::Echo, id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result, Some(json!("owner")));
    let outcomes: Vec<_> = job
        .history
        .iter()
        .map(|h| (h.attempt, h.worker.clone().unwrap(), h.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, frozen.to_string(), "worker_lost"),
            (2, live.to_string(), "succeeded")
        ]
    );
}

#[tokio::test]
async fn an_evicted_worker_can_neither_heartbeat_nor_claim_under_its_old_id() {
    let c = config(&[]);
    let q = client(&c).await;
    let w = WorkerId::generate();
    q.register(JobKind::Echo, &w).await.unwrap();
    assert!(q.heartbeat(JobKind::Echo, &w).await.unwrap());
    evict(&q, &w).await;
    assert!(
        !q.heartbeat(JobKind::Echo, &w).await.unwrap(),
        "the heartbeat does not re-register an evicted worker"
    );
    assert!(q.workers(JobKind::Echo).await.unwrap().is_empty());
    q.push(JobKind::Echo, &echo("x"), &PushOptions::default())
        .await
        .unwrap();
    assert_refused(&q, &w, Duration::from_secs(60)).await;
    // A registration older than the lease is refused too (the worker froze
    // and nobody has recovered it yet).
    let late = WorkerId::generate();
    q.register(JobKind::Echo, &late).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_refused(&q, &late, Duration::from_millis(10)).await;
    assert_eq!(q.stats(JobKind::Echo).await.unwrap().pending, 1);
}

#[tokio::test]
async fn strays_in_a_live_workers_inflight_set_are_released() {
    let c = config(&[]);
    let q = client(&c).await;
    let id = q
        .push(JobKind::Echo, &echo("lost reply"), &PushOptions::default())
        .await
        .unwrap()
        .id;
    let w = WorkerId::generate();
    q.register(JobKind::Echo, &w).await.unwrap();
    // A claim whose reply never reached the worker.
    let _ = claim(&q, &w, 1).await;
    let young = q
        .reconcile(JobKind::Echo, &w, &[], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        young.is_empty(),
        "a claim younger than a lease is left alone"
    );
    let held = q
        .reconcile(JobKind::Echo, &w, &[id], Duration::ZERO)
        .await
        .unwrap();
    assert!(held.is_empty(), "a job the worker holds is left alone");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let strays = q
        .reconcile(JobKind::Echo, &w, &[], Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(strays, vec![id]);
    let job = q.job(JobKind::Echo, id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Pending, 1));
    assert_eq!(job.history.last().unwrap().outcome, "stranded");
    assert_eq!(q.workers(JobKind::Echo).await.unwrap()[0].running.len(), 0);
}

#[tokio::test]
async fn deregistering_hands_back_every_held_job_and_refuses_later_claims() {
    let c = config(&[]);
    let q = client(&c).await;
    for i in 0..3 {
        q.push(
            JobKind::Echo,
            &echo(&i.to_string()),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    }
    let w = WorkerId::generate();
    q.register(JobKind::Echo, &w).await.unwrap();
    assert_eq!(claim(&q, &w, 2).await.jobs.len(), 2);
    let n = q.deregister(JobKind::Echo, &w, "test stop").await.unwrap();
    assert_eq!(n, 2);
    let s = q.stats(JobKind::Echo).await.unwrap();
    assert_eq!((s.pending, s.running, s.workers), (3, 0, 0));
    assert_refused(&q, &w, Duration::from_secs(60)).await;
}

/// What claim.lua leaves when its second step never comes: `n` ids out of
/// the normal pending list, in `w`'s in-flight set, not started.
async fn take(q: &QueueClient, w: &WorkerId, n: usize) -> Vec<String> {
    let keys = q.keys(JobKind::Echo);
    let mut r = conn(q).await;
    let taken: Vec<String> = redis::cmd("RPOP")
        .arg(keys.pending(Priority::Normal))
        .arg(n)
        .query_async(&mut r)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(keys.inflight(w))
        .arg(&taken)
        .query_async(&mut r)
        .await
        .unwrap();
    taken
}

/// Jobs in the echo queue's normal pending list.
async fn pending(q: &QueueClient) -> usize {
    redis::cmd("LLEN")
        .arg(q.keys(JobKind::Echo).pending(Priority::Normal))
        .query_async(&mut conn(q).await)
        .await
        .unwrap()
}

/// A claim is two steps (claim.lua takes ids into the worker's in-flight
/// set, claim_start.lua starts them); a worker that stops between them
/// loses nothing: whoever hands its set back re-queues what it took.
#[tokio::test]
async fn jobs_a_claim_took_but_never_started_go_back_to_their_queue() {
    let c = config(&[]);
    let q = client(&c).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let pushed = q
            .push(
                JobKind::Echo,
                &echo(&i.to_string()),
                &PushOptions::default(),
            )
            .await
            .unwrap();
        ids.push(pushed.id);
    }
    // Reconcile: a live worker's taken-not-started id goes back only when
    // the previous reconcile found it so too (its second step never came).
    let live = WorkerId::generate();
    q.register(JobKind::Echo, &live).await.unwrap();
    let taken = take(&q, &live, 1).await;
    assert!(
        q.reconcile(JobKind::Echo, &live, &[], Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "a claim's second step may still be on its way"
    );
    assert_eq!(pending(&q).await, 3);
    let strays = q
        .reconcile(JobKind::Echo, &live, &[], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        strays.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        taken
    );
    assert_eq!(pending(&q).await, 4);

    // Deregister hands it back.
    take(&q, &live, 1).await;
    assert_eq!(q.deregister(JobKind::Echo, &live, "stop").await.unwrap(), 1);
    assert_eq!(pending(&q).await, 4);

    // Recovery of a lapsed worker re-queues it, nothing counted.
    let gone = WorkerId::generate();
    q.register(JobKind::Echo, &gone).await.unwrap();
    let taken = take(&q, &gone, 2).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        q.recover(JobKind::Echo, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(pending(&q).await, 4);
    for id in &taken {
        let job = q
            .job(JobKind::Echo, id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    }
    let w = WorkerId::generate();
    q.register(JobKind::Echo, &w).await.unwrap();
    let mut claimed: Vec<_> = claim(&q, &w, 10).await.jobs.iter().map(|j| j.id).collect();
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids, "every job is claimable again");
}

#[tokio::test]
async fn high_priority_cannot_starve_normal_jobs() {
    let c = config(&[("HOPPER_HIGH_PRIORITY_BURST", "3")]);
    let q = client(&c).await;
    let high = PushOptions {
        priority: Priority::High,
        ..Default::default()
    };
    let mut label = HashMap::new();
    for i in 0..8 {
        let id = q.push(JobKind::Echo, &echo("h"), &high).await.unwrap().id;
        label.insert(id, format!("h{i}"));
    }
    for i in 0..2 {
        let id = q
            .push(JobKind::Echo, &echo("n"), &PushOptions::default())
            .await
            .unwrap()
            .id;
        label.insert(id, format!("n{i}"));
    }
    let w = WorkerId::generate();
    q.register(JobKind::Echo, &w).await.unwrap();
    let mut order = Vec::new();
    // One at a time, as a busy worker claims, and then in one batch.
    for _ in 0..5 {
        order.extend(
            claim(&q, &w, 1)
                .await
                .jobs
                .iter()
                .map(|j| label[&j.id].clone()),
        );
    }
    order.extend(
        claim(&q, &w, 10)
            .await
            .jobs
            .iter()
            .map(|j| label[&j.id].clone()),
    );
    assert_eq!(
        order,
        ["h0", "h1", "h2", "n0", "h3", "h4", "h5", "n1", "h6", "h7"]
    );
}

#[tokio::test]
async fn an_evicted_worker_stops_its_jobs_drops_their_outcomes_and_registers_afresh() {
    let c = config(&[]);
    let q = client(&c).await;
    async fn handler(_args: EchoArgs, job: Data<JobContext>) -> Result<String, BoxDynError> {
        if job.attempt == 1 {
            // Runs until the worker learns it was evicted.
            job.cancel.cancelled().await;
            return Ok("stale".into());
        }
        Ok("fresh".into())
    }
    with_worker!(q, handler, {
        let id = q
            .push(JobKind::Echo, &echo("long"), &PushOptions::default())
            .await
            .unwrap()
            .id;
        let running = wait_state(&q, id, JobState::Running, Duration::from_secs(10)).await;
        let first = WorkerId::from_raw(running.worker.as_deref().unwrap());
        // As if the worker had frozen past its lease: another's rescuer takes
        // its jobs away.
        evict(&q, &first).await;
        let job = wait_state(&q, id, JobState::Succeeded, Duration::from_secs(10)).await;
        assert_eq!(
            job.result,
            Some(json!("fresh")),
            "the stale result is dropped"
        );
        assert_eq!(job.attempts, 2);
        let second = job.worker.clone().unwrap();
        assert_ne!(second, first.as_str(), "it registered under a new id");
        let outcomes: Vec<_> = job.history.iter().map(|h| h.outcome.as_str()).collect();
        assert_eq!(outcomes, ["worker_lost", "succeeded"]);
        let workers = q.workers(JobKind::Echo).await.unwrap();
        assert_eq!(
            workers
                .iter()
                .map(|w| w.worker.as_str())
                .collect::<Vec<_>>(),
            [second.as_str()]
        );
    });
}

#[tokio::test]
async fn retention_trims_old_dead_letters_and_finished_jobs_a_bounded_batch_per_call() {
    let c = config(&[
        ("HOPPER_DEAD_RETENTION_MS", "60000"),
        ("HOPPER_QUEUE_ECHO_RETENTION_MS", "60000"),
    ]);
    let q = client(&c).await;
    let keys = q.keys(JobKind::Echo);
    let mut r = conn(&q).await;
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut r).await.unwrap();
    let now = secs * 1000;
    // 5 old and 1 young dead letter, 3 old and 1 young finished job.
    let mut ids = HashMap::new();
    for (set, n_old) in [(keys.dead(), 5), (keys.done(), 3)] {
        let mut made = Vec::new();
        for i in 0..=n_old {
            let id = uuid::Uuid::now_v7();
            let at = if i < n_old { now - 120_000 } else { now };
            let _: () = redis::pipe()
                .cmd("HSET")
                .arg(keys.job(&id))
                .arg("state")
                .arg("dead")
                .ignore()
                .cmd("ZADD")
                .arg(&set)
                .arg(at)
                .arg(id.to_string())
                .ignore()
                .query_async(&mut r)
                .await
                .unwrap();
            made.push(id);
        }
        ids.insert(set, made);
    }
    let mut calls = Vec::new();
    for _ in 0..4 {
        let t = q.trim(JobKind::Echo, 2).await.unwrap();
        calls.push((t.dead_letters, t.finished));
    }
    assert_eq!(
        calls,
        vec![(2, 2), (2, 1), (1, 0), (0, 0)],
        "at most 2 per set per call"
    );
    for (set, made) in &ids {
        let (young, old) = made.split_last().unwrap();
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(set)
            .arg(0)
            .arg(-1)
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(members, vec![young.to_string()], "{set}");
        for id in old {
            assert!(q.job(JobKind::Echo, *id).await.unwrap().is_none());
        }
        assert!(q.job(JobKind::Echo, *young).await.unwrap().is_some());
    }
}

/// An ack forgets finished jobs past the queue's retention in two steps (each
/// key it touches declared): one ack finds them, the next forgets them,
/// checking again that they are still that old.
#[tokio::test]
async fn acks_forget_finished_jobs_past_retention_one_ack_after_finding_them() {
    let c = config(&[("HOPPER_QUEUE_ECHO_RETENTION_MS", "60000")]);
    let q = client(&c).await;
    let keys = q.keys(JobKind::Echo);
    let mut r = conn(&q).await;
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut r).await.unwrap();
    let old: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
    for id in &old {
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(keys.job(id))
            .arg("state")
            .arg("succeeded")
            .ignore()
            .cmd("ZADD")
            .arg(keys.done())
            .arg(secs * 1000 - 120_000)
            .arg(id.to_string())
            .ignore()
            .query_async(&mut r)
            .await
            .unwrap();
    }
    let w = WorkerId::generate();
    q.register(JobKind::Echo, &w).await.unwrap();
    let mut acked = Vec::new();
    for round in 0..2 {
        q.push(JobKind::Echo, &echo("done"), &PushOptions::default())
            .await
            .unwrap();
        let job = claim(&q, &w, 1).await.jobs.remove(0);
        let lost = q
            .ack_many(
                JobKind::Echo,
                &[hopper_queue::client::Ack {
                    id: job.id,
                    result: "\"ok\"".into(),
                    worker: w.clone(),
                    lease: job.lease,
                }],
            )
            .await
            .unwrap();
        assert!(lost.is_empty());
        acked.push(job.id);
        let done: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.done())
            .arg(0)
            .arg(-1)
            .query_async(&mut r)
            .await
            .unwrap();
        for id in &old {
            let present = q.job(JobKind::Echo, *id).await.unwrap().is_some();
            // Found by the first ack, forgotten by the second.
            assert_eq!(present, round == 0, "round {round}");
            assert_eq!(done.contains(&id.to_string()), round == 0, "round {round}");
        }
        for id in &acked {
            assert!(done.contains(&id.to_string()), "a young job stays");
        }
    }
}

#[tokio::test]
async fn a_delay_over_a_year_is_refused_and_queues_nothing() {
    let c = config(&[]);
    let q = client(&c).await;
    for delay in [
        Duration::MAX,
        hopper_queue::MAX_DELAY + Duration::from_millis(1),
    ] {
        let opts = PushOptions {
            delay: Some(delay),
            ..Default::default()
        };
        let refused = q.push(JobKind::Echo, &echo("late"), &opts).await;
        assert!(
            matches!(refused, Err(hopper_queue::QueueError::DelayTooLong { .. })),
            "{refused:?}"
        );
        let many = q.push_many(JobKind::Echo, &[echo("late")], &opts).await;
        assert!(
            matches!(many, Err(hopper_queue::QueueError::DelayTooLong { .. })),
            "{many:?}"
        );
    }
    assert_eq!(q.stats(JobKind::Echo).await.unwrap().scheduled, 0);
    let opts = PushOptions {
        delay: Some(hopper_queue::MAX_DELAY),
        ..Default::default()
    };
    let id = q
        .push(JobKind::Echo, &echo("a year"), &opts)
        .await
        .unwrap()
        .id;
    let job = q.job(JobKind::Echo, id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Scheduled);
    assert_eq!(
        job.run_at_ms.unwrap() - job.enqueued_at_ms,
        hopper_queue::MAX_DELAY.as_millis() as i64
    );
}

#[tokio::test]
async fn a_queue_of_any_valid_name_pushes_claims_and_acks_under_its_own_keys() {
    use redis::AsyncCommands;
    let c = config(&[("HOPPER_QUEUE_OCR_V2_MAX_ATTEMPTS", "2")]);
    let q = client(&c).await;
    let ocr: QueueName = "ocr.v2".parse().unwrap();
    let id = q
        .push(&ocr, &json!({ "page": 1 }), &PushOptions::default())
        .await
        .unwrap()
        .id;

    // Its keys carry its own name in the hash tag; no built-in queue sees it.
    let keys = q.keys(&ocr);
    assert_eq!(keys.tag(), format!("{{{}:ocr.v2}}", c.key_prefix));
    let mut redis = q.connection();
    assert!(redis.exists::<_, bool>(keys.job(&id)).await.unwrap());
    assert_eq!(q.stats(&ocr).await.unwrap().pending, 1);
    assert_eq!(q.stats(&ocr).await.unwrap().queue, ocr);
    assert_eq!(q.stats(JobKind::Echo).await.unwrap().pending, 0);
    assert!(q.job(JobKind::Echo, id).await.unwrap().is_none());
    // Its settings come from its own variables; a name without any runs
    // with the defaults.
    assert_eq!(q.settings(&ocr).max_attempts, 2);
    let rerank: QueueName = "rerank".parse().unwrap();
    assert_eq!(q.settings(&rerank), QueueSettings::default());

    let w = WorkerId::generate();
    q.register(&ocr, &w).await.unwrap();
    let mut batch = q
        .claim(&mut conn(&q).await, &ocr, &w, 5, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(batch.jobs.len(), 1);
    let claimed = batch.jobs.remove(0);
    assert_eq!((claimed.id, claimed.attempt), (id, 1));
    assert_eq!(claimed.max_attempts, 2);
    let running = q.job(&ocr, id).await.unwrap().unwrap();
    assert_eq!(
        (running.kind.as_str(), running.state),
        ("ocr.v2", JobState::Running)
    );

    let ack = hopper_queue::client::Ack {
        id,
        result: "{\"text\":\"hello\"}".into(),
        worker: w.clone(),
        lease: claimed.lease,
    };
    let lost = q.ack_many(&ocr, &[ack]).await.unwrap();
    assert!(lost.is_empty(), "the owner's ack is taken: {lost:?}");
    let done = q.job(&ocr, id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(json!({ "text": "hello" })));
    // The record keeps the wire format: `kind` is the queue name, a string.
    let wire = serde_json::to_value(&done).unwrap();
    assert_eq!(wire["kind"], json!("ocr.v2"));
    assert_eq!(q.stats(&ocr).await.unwrap().pending, 0);
}

#[test]
fn names_that_break_the_rule_never_become_queues() {
    for bad in [
        "OCR",
        ".ocr",
        "-ocr",
        "_ocr",
        "ocr v2",
        "{ocr}",
        "",
        &"a".repeat(64),
    ] {
        let err = bad.parse::<QueueName>().expect_err(bad);
        assert!(
            err.to_string().contains("[a-z0-9][a-z0-9_.-]{0,62}"),
            "{err}"
        );
    }
    assert!(serde_json::from_value::<QueueName>(json!("Ocr")).is_err());
    assert!("a".repeat(63).parse::<QueueName>().is_ok());
}

#[tokio::test]
async fn the_registry_refuses_a_second_schema_under_one_version_and_foreign_names() {
    use hopper_queue::{Declared, QueueError};
    use hopper_shared::tasks::{Runtime, TaskDefinition};
    let cfg = config(&[("HOPPER_QUEUE_RESIZE_CONCURRENCY", "3")]);
    let q = client(&cfg).await;
    let name: QueueName = "resize".parse().unwrap();
    let mut def = TaskDefinition::new(name.clone());
    def.schema = Some(json!({"type": "object", "required": ["w"]}));
    def.settings.concurrency = 2;
    def.settings.soft_limit_ms = 1_000;
    let Declared::InForce(stored) = q.declare(&def).await.unwrap() else {
        panic!("first declaration is in force")
    };
    assert_eq!(stored.schema_digest, def.schema_digest());
    // The same definition again (a second replica) is fine.
    assert!(matches!(
        q.declare(&def).await.unwrap(),
        Declared::InForce(_)
    ));
    // Declared settings, with the variable that is set on top.
    let s = q.settings(&name);
    assert_eq!(s.concurrency, 3);
    assert_eq!(s.soft_time_limit, Duration::from_secs(1));

    let mut other = def.clone();
    other.schema = Some(json!({"type": "object"}));
    let err = q.declare(&other).await.unwrap_err();
    assert!(
        matches!(err, QueueError::SchemaConflict { version: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("hopper tasks remove resize"),
        "{err}"
    );

    other.version = 2;
    assert!(matches!(
        q.declare(&other).await.unwrap(),
        Declared::InForce(_)
    ));
    assert_eq!(q.declare(&def).await.unwrap(), Declared::Older(2));
    assert_eq!(q.task(&name).await.unwrap().unwrap().version, 2);

    let mut foreign = TaskDefinition::new(name.clone());
    foreign.version = 3;
    foreign.runtime = Runtime::Http;
    foreign.tenant = Some("acme".into());
    let err = q.declare(&foreign).await.unwrap_err();
    assert!(matches!(err, QueueError::TaskOwned { .. }), "{err}");

    let listed = q.tasks().await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["resize"]
    );
    assert!(q.remove_task(&name).await.unwrap());
    assert!(!q.remove_task(&name).await.unwrap());
    assert!(q.task(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn a_job_of_a_declared_task_is_found_by_id() {
    use hopper_shared::tasks::TaskDefinition;
    let cfg = config(&[]);
    let q = client(&cfg).await;
    let name: QueueName = "thumbnail".parse().unwrap();
    let pushed = q
        .push(&name, &json!({"x": 1}), &PushOptions::default())
        .await
        .unwrap();
    assert!(
        q.find_job(pushed.id).await.unwrap().is_none(),
        "not declared yet"
    );
    q.declare(&TaskDefinition::new(name.clone())).await.unwrap();
    let found = q.find_job(pushed.id).await.unwrap().unwrap();
    assert_eq!(found.kind, name);
}
