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
    Config,
    jobs::{EchoArgs, JobKind, JobState},
};
use serde_json::json;

/// A test's configuration under a key prefix of its own; dropping it
/// deletes every key under that prefix.
struct TestQueue {
    config: Config,
}

impl std::ops::Deref for TestQueue {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        use redis::Commands;
        let Ok(mut conn) =
            redis::Client::open(self.config.redis_url.as_str()).and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = conn
            .scan_match::<_, String>(format!("{{{}:*", self.config.key_prefix))
            .map(|it| it.filter_map(Result::ok).collect())
            .unwrap_or_default();
        for chunk in keys.chunks(1000) {
            let _: Result<(), _> = conn.del(chunk);
        }
    }
}

fn config(extra: &[(&str, &str)]) -> TestQueue {
    let prefix = format!("qt-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut env: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("HOPPER_KEY_PREFIX".into(), prefix);
    if let Ok(url) = std::env::var("REDIS_URL") {
        env.insert("REDIS_URL".into(), url);
    }
    TestQueue {
        config: Config::from_lookup(|k| env.get(k).cloned()).unwrap(),
    }
}

async fn client(c: &Config) -> QueueClient {
    QueueClient::connect(c)
        .await
        .expect("Redis is running (scripts/setup)")
}

async fn conn(q: &QueueClient) -> redis::aio::MultiplexedConnection {
    q.dedicated_connection(Duration::from_secs(1))
        .await
        .unwrap()
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
    let batch = QueueClient::claim(&mut conn(&q).await, &q.keys(JobKind::Echo), &w, 10)
        .await
        .unwrap();
    let order: Vec<_> = batch.jobs.iter().map(|j| j.id).collect();
    assert_eq!(order, vec![h1, n1, n2]);
    assert!(batch.jobs.iter().all(|j| j.attempt == 1));
    let stats = q.stats(JobKind::Echo).await.unwrap();
    assert_eq!(
        (stats.pending, stats.running),
        (0, 0),
        "unregistered worker's jobs are not counted"
    );
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
    let keys = q.keys(JobKind::Echo);
    let mut conn = conn(&q).await;
    let early = QueueClient::claim(&mut conn, &keys, &w, 10).await.unwrap();
    assert!(early.jobs.is_empty());
    let due = early
        .next_due_ms
        .expect("the claim reports when the next job is due");
    tokio::time::sleep(Duration::from_millis(
        (due - hopper_queue::now_ms()).max(0) as u64 + 5,
    ))
    .await;
    let late = QueueClient::claim(&mut conn, &keys, &w, 10).await.unwrap();
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
    q.heartbeat(JobKind::Echo, &gone).await.unwrap();
    let batch = QueueClient::claim(&mut conn(&q).await, &q.keys(JobKind::Echo), &gone, 10)
        .await
        .unwrap();
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
