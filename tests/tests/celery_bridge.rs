//! The Celery bridge in the real `hopper-worker` binary (`HOPPER_CELERY_QUEUES`),
//! fed by raw `LPUSH`es of kombu envelopes — the fixtures celery 5.7 produced
//! (`celery/tests/fixtures/`), with their id, task and body rewritten — so no
//! Python is needed: a message runs as a job under its Celery id, its result
//! lands (SET with a TTL, and PUBLISH) where `AsyncResult` reads it — through
//! the outbox `celery.result`, which ends empty — with no job of the bridge's
//! own on the way, a message pushed twice runs once, refusals are
//! dead-lettered with a FAILURE result, `ignore_result`, `eta` and
//! `timelimit` are honoured, the pump pauses at `HOPPER_CELERY_LOOKAHEAD`
//! (the backlog waits in kombu's list), takes kombu's priority sub-lists
//! most urgent first, and a worker SIGKILLed mid-intake loses none.
//!
//! Each test has its own `TestEnv` (key prefix, schema); the kombu lists and
//! result keys live under that prefix too (`{t-<id>:}celery`,
//! `{t-<id>:}_celery-task-meta-<id>`), so the environment's cleanup removes them.

use std::{
    collections::HashSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hopper_queue::QueueClient;
use hopper_shared::{
    QueueName,
    jobs::{JobRecord, JobState, foreign_job_id},
};
use hopper_tests::TestEnv;
use redis::AsyncCommands;
use serde_json::{Value, json};

/// celery 5.7's `send_task('tasks.add', args=[2, 3])` (protocol 2, JSON).
const SEND_TASK: &str = include_str!("../../celery/tests/fixtures/send_task.json");
/// The same with `task_serializer='pickle'`.
const PICKLE: &str = include_str!("../../celery/tests/fixtures/pickle.json");

/// How long a result is kept (`HOPPER_CELERY_RESULT_EXPIRES_S`).
const RESULT_EXPIRES_S: i64 = 600;

const ECHO: QueueName = QueueName::from_static("echo");
const INTAKE: QueueName = QueueName::from_static("celery.intake");
const RESULT: QueueName = QueueName::from_static("celery.result");

/// One isolated Hopper with the bridge's settings, and a client on its Redis.
struct Bridge {
    env: TestEnv,
    q: QueueClient,
    redis: redis::aio::MultiplexedConnection,
    /// `HOPPER_CELERY_BROKER_PREFIX` (kombu's `global_keyprefix`).
    broker_prefix: String,
    /// The processes started, for their logs.
    started: Vec<usize>,
}

impl Bridge {
    /// An environment whose workers take Celery queue `celery`; `extra`
    /// is given to every process.
    async fn new(extra: &[(&str, &str)]) -> Self {
        let mut env = TestEnv::new(extra);
        let prefix = format!("{{t-{}:}}", env.id);
        for (k, v) in [
            ("HOPPER_CELERY_QUEUES", "celery".to_owned()),
            ("HOPPER_CELERY_BROKER_PREFIX", prefix.clone()),
            // Ends in `}`: the bridge adds `_` as celery does.
            ("HOPPER_CELERY_RESULT_PREFIX", prefix.clone()),
            (
                "HOPPER_CELERY_RESULT_EXPIRES_S",
                RESULT_EXPIRES_S.to_string(),
            ),
        ] {
            env.env.entry(k.to_owned()).or_insert(v);
        }
        let q = QueueClient::connect(&env.config())
            .await
            .expect("Redis is running (scripts/setup)");
        let redis = redis::Client::open(hopper_tests::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self {
            env,
            q,
            redis,
            broker_prefix: prefix,
            started: Vec::new(),
        }
    }

    /// Starts a `hopper-worker` serving `queues` with the bridge on, and
    /// waits until one serves `celery.intake`.
    async fn start_worker_on(&mut self, queues: &str) -> usize {
        let index = self.env.start_worker(queues, &[]);
        self.started.push(index);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.q.stats(INTAKE).await.unwrap().workers == 0 {
            assert!(
                !self.env.exited(index) && Instant::now() < deadline,
                "the worker did not start\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        index
    }

    /// Starts a `hopper-worker` serving `echo` with the bridge on, and
    /// waits until one serves `celery.intake`.
    async fn start_worker(&mut self) -> usize {
        self.start_worker_on("echo").await
    }

    /// Declares `echo` in the registry and leaves it without a worker: a
    /// `hopper-worker` serving it (bridge off) starts, declares it, and is
    /// stopped (a definition stays after its workers stop).
    async fn declare_echo_without_worker(&mut self) {
        let index = self
            .env
            .start_worker("echo", &[("HOPPER_CELERY_QUEUES", "")]);
        self.started.push(index);
        self.eventually("echo declared", Duration::from_secs(60), || async {
            self.q.task(&ECHO).await.unwrap().map(|_| ())
        })
        .await;
        self.env.terminate(index);
        assert_eq!(self.q.stats(INTAKE).await.unwrap().workers, 0);
    }

    /// kombu's list of queue `celery` (priority 0).
    fn list(&self) -> String {
        self.sublist(0)
    }

    /// kombu's list of queue `celery` for priority step `step` (0, 3, 6, 9).
    fn sublist(&self, step: u8) -> String {
        match step {
            0 => format!("{}celery", self.broker_prefix),
            _ => format!("{}celery\x06\x16{step}", self.broker_prefix),
        }
    }

    /// How many outcomes wait in the outbox the bridge writes results from
    /// (`{<prefix>:celery.result}:outbox`).
    async fn outbox_len(&self) -> usize {
        self.conn()
            .llen(self.q.keys(RESULT).outbox())
            .await
            .unwrap()
    }

    /// Waits until the outbox is empty (every result written).
    async fn wait_outbox_empty(&self) {
        self.eventually("the outbox empty", Duration::from_secs(30), || async {
            (self.outbox_len().await == 0).then_some(())
        })
        .await;
    }

    /// No job of `celery.intake` was ever made (every message was planned
    /// by the pump).
    async fn assert_no_intake_jobs(&self) {
        let stats = self.q.stats(INTAKE).await.unwrap();
        assert_eq!((stats.pending, stats.running), (0, 0), "{stats:?}");
        assert!(self.done_ids(INTAKE).await.is_empty());
        let dead = self.q.dead_letters(INTAKE, None, 0, 10).await.unwrap();
        assert!(dead.jobs.is_empty(), "{:?}", dead.jobs);
    }

    /// Where Celery's `AsyncResult` reads task `id`'s result.
    fn result_key(&self, id: &str) -> String {
        format!("{}_celery-task-meta-{id}", self.broker_prefix)
    }

    /// `LPUSH`es `message` onto kombu's list, as a Celery producer does.
    async fn produce(&self, message: &str) {
        let _: i64 = self.conn().lpush(self.list(), message).await.unwrap();
    }

    /// `LPUSH`es `n` echo messages (message `m<i>`) with fresh Celery ids,
    /// oldest first; their ids.
    async fn produce_echoes(&self, n: usize) -> Vec<String> {
        let ids: Vec<String> = (0..n).map(|_| celery_id()).collect();
        for (i, id) in ids.iter().enumerate() {
            let kwargs = json!({ "message": format!("m{i}") });
            self.produce(&echo_message(id, kwargs, |_| {})).await;
        }
        ids
    }

    /// A handle on the test's Redis connection (multiplexed: cheap).
    fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.redis.clone()
    }

    /// How many messages wait in kombu's list.
    async fn waiting(&self) -> usize {
        self.conn().llen(self.list()).await.unwrap()
    }

    /// Polls `probe` every 20 ms until it answers `Some`, for at most
    /// `within`; the workers' logs in the panic message.
    async fn eventually<T, Fut>(
        &self,
        what: &str,
        within: Duration,
        mut probe: impl FnMut() -> Fut,
    ) -> T
    where
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn meta(&self, id: &str) -> Option<Value> {
        let raw: Option<String> = self.conn().get(self.result_key(id)).await.unwrap();
        raw.map(|r| serde_json::from_str(&r).expect("meta is JSON"))
    }

    /// Polls the job of Celery task `celery_id` in `echo` until `done` says
    /// so, for at most `within` (worker logs in the panic message).
    async fn wait_job(
        &self,
        celery_id: &str,
        within: Duration,
        done: impl Fn(&JobRecord) -> bool,
    ) -> JobRecord {
        let id = foreign_job_id(celery_id);
        self.eventually(&format!("job {celery_id}"), within, || async {
            let job = self.q.job(ECHO, id).await.unwrap();
            job.filter(|j| done(j))
        })
        .await
    }

    /// Waits for the job of `celery_id` to reach a final state.
    async fn wait_final(&self, celery_id: &str, within: Duration) -> JobRecord {
        self.wait_job(celery_id, within, |j| j.state.is_final())
            .await
    }

    /// Polls the dead letters of `celery.intake` until one holds `celery_id`'s
    /// message; that dead letter.
    async fn wait_refused(&self, celery_id: &str, within: Duration) -> JobRecord {
        self.eventually(&format!("a dead letter of {celery_id}"), within, || async {
            let page = self.q.dead_letters(INTAKE, None, 0, 100).await.unwrap();
            page.jobs.into_iter().find(|j| {
                j.args["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(celery_id))
            })
        })
        .await
    }

    /// Every started process' log, for failure messages.
    fn logs(&self) -> String {
        self.started
            .iter()
            .map(|&i| format!("--- process {i} ---\n{}\n", tail(&self.env.log(i))))
            .collect()
    }

    /// Ids in a queue's set of finished jobs.
    async fn done_ids(&self, queue: QueueName) -> Vec<String> {
        let key = self.q.keys(queue).done();
        self.conn().zrange(key, 0, -1).await.unwrap()
    }
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A fresh Celery task id (celery's are UUID4 strings).
fn celery_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A kombu envelope made from `template` (a captured celery 5.7 message):
/// Celery id `id`, task `task`, body `[args, kwargs, embed]` (JSON, base64),
/// then `edit` applied to the headers.
fn envelope(
    template: &str,
    id: &str,
    task: &str,
    args: Value,
    kwargs: Value,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> String {
    let mut env: Value = serde_json::from_str(template).unwrap();
    let embed = json!({ "callbacks": null, "errbacks": null, "chain": null, "chord": null });
    if env["content-type"] == "application/json" {
        let body = json!([args, kwargs, embed]).to_string();
        env["body"] = Value::from(base64(body.as_bytes()));
    }
    let headers = env["headers"].as_object_mut().unwrap();
    headers.insert("id".into(), Value::from(id));
    headers.insert("root_id".into(), Value::from(id));
    headers.insert("task".into(), Value::from(task));
    edit(headers);
    env["properties"]["correlation_id"] = Value::from(id);
    env["properties"]["delivery_tag"] = Value::from(uuid::Uuid::new_v4().to_string());
    env.to_string()
}

/// An `echo` message with `kwargs`, headers edited by `edit`.
fn echo_message(
    id: &str,
    kwargs: Value,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> String {
    envelope(SEND_TASK, id, "echo", json!([]), kwargs, edit)
}

/// Standard base64 with padding (kombu's `body_encoding: base64`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Unix ms now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Unix ms as celery writes `eta`: ISO 8601 with microseconds and `+00:00`.
fn iso_utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000 * 1000
    )
}

#[test]
fn helpers_encode_like_python() {
    // base64.b64encode / datetime.isoformat, as kombu and celery write them.
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"[[2, 3], {}]"), "W1syLCAzXSwge31d");
    assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000000+00:00");
    assert_eq!(
        iso_utc(1_795_000_110_282),
        "2026-11-18T11:08:30.282000+00:00"
    );
    assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.000000+00:00");
}

#[tokio::test]
async fn an_echo_message_runs_under_its_celery_id_and_its_result_is_set_and_published() {
    let mut b = Bridge::new(&[]).await;
    let w = b.start_worker().await;
    let id = celery_id();
    let key = b.result_key(&id);

    // Subscribe (as AsyncResult.get() does) before the message is sent.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subscriber = std::thread::spawn(move || -> Option<String> {
        let client = redis::Client::open(hopper_tests::redis_url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(&key).unwrap();
        pubsub
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let message = pubsub.get_message().ok()?;
        assert_eq!(message.get_channel_name(), key);
        message.get_payload::<String>().ok()
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    b.produce(&echo_message(&id, json!({ "message": "hi" }), |_| {}))
        .await;
    let job = b.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}\n{}", b.logs());
    assert_eq!(job.id.to_string(), id, "the Celery id is the job id");
    assert_eq!(job.args, json!({ "message": "hi" }));
    assert_eq!(job.result.as_ref().unwrap()["message"], "hi");

    let published = tokio::task::spawn_blocking(move || subscriber.join().unwrap())
        .await
        .unwrap()
        .expect("the result was published on its key's channel");
    let meta = b.meta(&id).await.expect("the result key is set");
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"]["message"], "hi", "{meta}");
    assert_eq!(meta["task_id"], id.as_str());
    assert_eq!(
        serde_json::from_str::<Value>(&published).unwrap(),
        meta,
        "the same JSON is published"
    );
    let ttl: i64 = b.conn().ttl(b.result_key(&id)).await.unwrap();
    assert!(
        (RESULT_EXPIRES_S - 30..=RESULT_EXPIRES_S).contains(&ttl),
        "TTL {ttl}"
    );
    // kombu's list is empty, the outbox too; the pump made the job itself.
    let left = b.waiting().await;
    assert_eq!(left, 0);
    b.wait_outbox_empty().await;
    b.assert_no_intake_jobs().await;
    assert!(!b.env.exited(w), "{}", b.logs());
}

#[tokio::test]
async fn the_same_message_pushed_twice_runs_once() {
    let mut b = Bridge::new(&[]).await;
    b.start_worker().await;
    let id = celery_id();
    let message = echo_message(&id, json!({ "message": "once" }), |_| {});
    b.produce(&message).await;
    b.produce(&message).await;
    let job = b.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(job.state, JobState::Succeeded);

    // Both were taken (the second found the job under its id already).
    b.eventually("both messages taken", Duration::from_secs(30), || async {
        (b.waiting().await == 0).then_some(())
    })
    .await;
    b.wait_outbox_empty().await;
    b.assert_no_intake_jobs().await;
    let job = b.q.job(ECHO, job.id).await.unwrap().unwrap();
    assert_eq!((job.attempts, job.history.len()), (1, 1), "ran once");
    assert_eq!(b.done_ids(ECHO).await.len(), 1, "one echo job in all");
    // One result written and kept.
    let meta = b.meta(&id).await.unwrap();
    assert_eq!(meta["status"], "SUCCESS");
}

#[tokio::test]
async fn a_pickle_message_is_dead_lettered_naming_its_content_type_with_a_failure_result() {
    let mut b = Bridge::new(&[]).await;
    b.start_worker().await;
    let id = celery_id();
    b.produce(&envelope(PICKLE, &id, "echo", json!([]), json!({}), |_| {}))
        .await;
    let dead = b.wait_refused(&id, Duration::from_secs(60)).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempts, 1, "refused for good, not retried");
    let error = dead.error.unwrap_or_default();
    assert!(
        error.contains("application/x-python-serialize") && error.contains("pickle"),
        "{error}"
    );
    let meta = b.meta(&id).await.expect("a FAILURE result is written");
    assert_eq!(meta["status"], "FAILURE", "{meta}");
    assert_eq!(meta["task_id"], id.as_str());
    assert!(
        meta["result"]["exc_message"].to_string().contains("pickle"),
        "{meta}"
    );
    // No echo job was made of it.
    assert!(b.q.job(ECHO, foreign_job_id(&id)).await.unwrap().is_none());
}

#[tokio::test]
async fn an_unknown_task_is_dead_lettered_by_name_with_a_not_registered_result() {
    let mut b = Bridge::new(&[]).await;
    b.start_worker().await;
    let id = celery_id();
    b.produce(&envelope(
        SEND_TASK,
        &id,
        "tasks.nobody_serves_this",
        json!([1]),
        json!({}),
        |_| {},
    ))
    .await;
    let dead = b.wait_refused(&id, Duration::from_secs(60)).await;
    let error = dead.error.unwrap_or_default();
    assert!(error.contains("tasks.nobody_serves_this"), "{error}");
    let meta = b.meta(&id).await.expect("a FAILURE result is written");
    assert_eq!(meta["status"], "FAILURE", "{meta}");
    assert_eq!(meta["result"]["exc_type"], "NotRegistered", "{meta}");
    assert_eq!(meta["result"]["exc_module"], "celery.exceptions", "{meta}");
}

#[tokio::test]
async fn ignore_result_runs_the_job_and_writes_no_result() {
    let mut b = Bridge::new(&[]).await;
    b.start_worker().await;
    let id = celery_id();
    b.produce(&echo_message(&id, json!({ "message": "quiet" }), |h| {
        h.insert("ignore_result".into(), Value::Bool(true));
    }))
    .await;
    let job = b.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert!(job.notify.is_none(), "{job:?}");
    // For a while after it succeeded: no result, and nothing told to the
    // outbox (it is empty the whole time).
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(b.meta(&id).await.is_none(), "a result was written");
        assert_eq!(b.outbox_len().await, 0, "an outcome was told");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The check can fail: a message with results does get one here.
    let other = celery_id();
    b.produce(&echo_message(&other, json!({ "message": "loud" }), |_| {}))
        .await;
    b.wait_final(&other, Duration::from_secs(60)).await;
    b.eventually("the other result", Duration::from_secs(30), || {
        b.meta(&other)
    })
    .await;
    b.wait_outbox_empty().await;
    assert!(b.meta(&id).await.is_none());
}

#[tokio::test]
async fn a_message_with_an_eta_runs_no_earlier() {
    let mut b = Bridge::new(&[]).await;
    b.start_worker().await;
    let id = celery_id();
    let eta_ms = now_ms() + 2_000;
    b.produce(&echo_message(&id, json!({ "message": "later" }), |h| {
        h.insert("eta".into(), Value::from(iso_utc(eta_ms)));
    }))
    .await;
    // It is queued (scheduled) well before it runs.
    let scheduled = b.wait_job(&id, Duration::from_secs(30), |_| true).await;
    let job = b.wait_final(&id, Duration::from_secs(60)).await;
    assert_eq!(job.state, JobState::Succeeded);
    let started = job.started_at_ms.unwrap();
    assert!(
        started >= eta_ms,
        "started {} ms before its eta (scheduled: {scheduled:?})",
        eta_ms - started
    );
    // Queued with a delay (not held back somewhere else).
    assert!(job.enqueued_at_ms < eta_ms, "{job:?}");
    assert!(job.run_at_ms.is_some_and(|r| r >= eta_ms - 5), "{job:?}");
}

#[tokio::test]
async fn a_messages_own_hard_time_limit_ends_the_attempt() {
    let mut b = Bridge::new(&[]).await;
    b.start_worker().await;
    let id = celery_id();
    b.produce(&echo_message(
        &id,
        json!({ "message": "slow", "sleep_ms": 3000 }),
        |h| {
            h.insert("timelimit".into(), json!([1, null]));
        },
    ))
    .await;
    // The first attempt ends at 1 s (echo's own hard limit is minutes).
    let job = b
        .wait_job(&id, Duration::from_secs(60), |j| !j.history.is_empty())
        .await;
    let first = &job.history[0];
    let error = first.error.clone().unwrap_or_default();
    assert!(error.contains("hard time limit"), "{first:?}");
    assert!(error.contains("1s"), "names the job's limit: {error}");
    let took = first.finished_at_ms - first.started_at_ms.unwrap_or(first.finished_at_ms);
    assert!((900..2_500).contains(&took), "attempt took {took} ms");
}

#[tokio::test]
async fn a_worker_killed_while_the_intake_holds_messages_loses_none() {
    const MESSAGES: usize = 500;
    // A short lease, so the killed worker's jobs are recovered soon; a
    // lookahead of 2 keeps the intake moving a few messages at a time.
    let mut b = Bridge::new(&[
        ("HOPPER_HEARTBEAT_MS", "200"),
        ("HOPPER_LEASE_MS", "1000"),
        ("HOPPER_CELERY_LOOKAHEAD", "2"),
    ])
    .await;
    let ids = b.produce_echoes(MESSAGES).await;
    let first = b.start_worker().await;
    // Kill it mid-way: some messages became jobs (some of them running),
    // others wait in kombu's list.
    let (left, made) = b
        .eventually("the intake mid-way", Duration::from_secs(60), || async {
            let left = b.waiting().await;
            assert!(left > 0, "the intake finished before the kill");
            let made = b.q.stats(ECHO).await.unwrap();
            let made = made.pending + made.running + b.done_ids(ECHO).await.len() as u64;
            (made >= 20).then_some((left, made))
        })
        .await;
    b.env.kill(first);
    let echo = b.q.stats(ECHO).await.unwrap();
    eprintln!("killed with {left} messages in kombu's list, {made} echo jobs made, {echo:?}");
    b.start_worker().await;

    b.eventually("every message done", Duration::from_secs(120), || async {
        let done = b.done_ids(ECHO).await.len();
        (done >= MESSAGES && b.waiting().await == 0).then_some(())
    })
    .await;
    let done: HashSet<String> = b.done_ids(ECHO).await.into_iter().collect();
    let want: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(done, want, "each message became exactly its own job");
    for (i, id) in ids.iter().enumerate() {
        let job = b.q.job(ECHO, foreign_job_id(id)).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(job.result.unwrap()["message"], format!("m{i}"));
    }
    // Each result is written (the notify of each job, once finished).
    for id in &ids {
        let meta = b
            .eventually(
                &format!("the result of {id}"),
                Duration::from_secs(60),
                || b.meta(id),
            )
            .await;
        assert_eq!(meta["status"], "SUCCESS", "{meta}");
    }
    b.wait_outbox_empty().await;
    b.assert_no_intake_jobs().await;
}

#[tokio::test]
async fn the_pump_pauses_at_the_lookahead_and_the_backlog_waits_in_kombus_list() {
    const MESSAGES: usize = 20;
    let mut b = Bridge::new(&[("HOPPER_CELERY_LOOKAHEAD", "5")]).await;
    b.declare_echo_without_worker().await;
    // The bridge runs in a worker that serves noop only: no echo worker.
    b.start_worker_on("noop").await;
    let ids = b.produce_echoes(MESSAGES).await;
    b.eventually("5 echo jobs", Duration::from_secs(30), || async {
        (b.q.stats(ECHO).await.unwrap().pending >= 5).then_some(())
    })
    .await;
    // And no more, for a while: 15 wait in kombu's list, the oldest 5 became
    // the jobs.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(b.q.stats(ECHO).await.unwrap().pending, 5, "{}", b.logs());
        assert_eq!(b.waiting().await, MESSAGES - 5);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, id) in ids.iter().enumerate() {
        let job = b.q.job(ECHO, foreign_job_id(id)).await.unwrap();
        assert_eq!(job.is_some(), i < 5, "message {i}");
    }

    // An echo worker comes: all 20 run, and their results are written.
    b.start_worker_on("echo").await;
    for (i, id) in ids.iter().enumerate() {
        let job = b.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(job.result.unwrap()["message"], format!("m{i}"));
    }
    assert_eq!(b.waiting().await, 0);
    for id in &ids {
        b.eventually("a result", Duration::from_secs(30), || b.meta(id))
            .await;
    }
    b.wait_outbox_empty().await;
}

#[tokio::test]
async fn the_most_urgent_priority_sub_list_is_taken_first() {
    // A lookahead of one job: with no echo worker the pump takes exactly
    // one message, the most urgent one.
    let mut b = Bridge::new(&[("HOPPER_CELERY_LOOKAHEAD", "1")]).await;
    b.declare_echo_without_worker().await;
    let urgent = celery_id();
    let later: Vec<String> = (0..3).map(|_| celery_id()).collect();
    // Three messages of priority 9 first, then one of priority 0 (bare).
    for (i, id) in later.iter().enumerate() {
        let message = echo_message(id, json!({ "message": format!("p9-{i}") }), |_| {});
        let _: i64 = b.conn().lpush(b.sublist(9), message).await.unwrap();
    }
    b.produce(&echo_message(&urgent, json!({ "message": "p0" }), |_| {}))
        .await;
    b.start_worker_on("noop").await;

    let first = b.wait_job(&urgent, Duration::from_secs(30), |_| true).await;
    let until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < until {
        assert_eq!(b.q.stats(ECHO).await.unwrap().pending, 1, "{}", b.logs());
        let left: usize = b.conn().llen(b.sublist(9)).await.unwrap();
        assert_eq!(left, 3, "the priority-9 messages wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.waiting().await, 0);

    // With an echo worker, the rest run after it, oldest first.
    b.start_worker_on("echo").await;
    let mut enqueued = Vec::new();
    for id in &later {
        let job = b.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        enqueued.push(job.enqueued_at_ms);
    }
    assert!(
        enqueued.iter().all(|&at| at > first.enqueued_at_ms),
        "the bare list's message was taken first: {} vs {enqueued:?}",
        first.enqueued_at_ms
    );
    assert!(enqueued.is_sorted(), "oldest first: {enqueued:?}");
    let first = b.wait_final(&urgent, Duration::from_secs(60)).await;
    assert_eq!(first.state, JobState::Succeeded);
}
