//! Schedules against a real Redis: a schedule's definition, its place in its
//! task's zset and its runs are stored, read, paused, resumed and removed
//! as `schedule.rs`'s key layout says; [`QueueClient::fire_due_schedules`]
//! (`fire.lua`) handles every due tick exactly once however many clients
//! race on it — one job per tick, with the tick's arguments and
//! `request_id` `schedule:<id>:<tick>` — folds a missed tick by its policy
//! (`skip`: recorded, no job; `latest`: one job), and never fires a paused
//! schedule.

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use hopper_queue::{FireRound, Priority, QueueClient};
use hopper_shared::{
    QueueName,
    schedules::{MissedTicks, Schedule, ScheduleRun, ScheduleSpec},
};
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{TestQueue, eventually, now_ms};

/// The task the tests' schedules submit.
fn task() -> QueueName {
    QueueName::new("t-sched").unwrap()
}

/// A schedule `id` of [`task`] every `every_ms`, created at `created_at_ms`
/// (its first tick one interval later), tenant `acme`.
fn every(id: &str, every_ms: u64, created_at_ms: i64) -> Schedule {
    Schedule {
        spec: ScheduleSpec {
            id: id.into(),
            task: task(),
            args: json!({"report": id}),
            cron: None,
            timezone: None,
            every_ms: Some(every_ms),
            missed: MissedTicks::Skip,
            grace_ms: None,
            fire_time_arg: None,
        },
        tenant: "acme".into(),
        created_at_ms,
        paused: false,
        next_fire_ms: None,
    }
}

/// The keys of schedule `id` of [`task`]: (zset, definition, runs), as
/// `schedule.rs`'s module doc lays them out.
fn keys(q: &QueueClient, id: &str) -> (String, String, String) {
    let tag = q.keys(task()).tag().to_owned();
    (
        format!("{tag}:schedules"),
        format!("{tag}:schedule:{id}"),
        format!("{tag}:schedule:{id}:runs"),
    )
}

/// The zset score (next tick) of schedule `id`, if it is there.
async fn score(q: &QueueClient, id: &str) -> Option<i64> {
    let (zset, _, _) = keys(q, id);
    let s: Option<f64> = q.connection().zscore(zset, id).await.unwrap();
    s.map(|s| s as i64)
}

async fn exists(q: &QueueClient, key: &str) -> bool {
    q.connection().exists(key).await.unwrap()
}

/// Every run of schedule `id` kept, oldest first.
async fn runs_oldest_first(q: &QueueClient, id: &str) -> Vec<ScheduleRun> {
    let mut runs = q.schedule_runs(id, 100).await.unwrap().expect("schedule");
    runs.reverse();
    runs
}

/// The job hash of a tick's job (empty when there is none).
async fn job_hash(q: &QueueClient, job: &uuid::Uuid) -> HashMap<String, String> {
    q.connection()
        .hgetall(q.keys(task()).job(job))
        .await
        .unwrap()
}

/// Every job hash of [`task`] under this prefix: id -> hash.
async fn all_jobs(q: &QueueClient) -> BTreeMap<String, HashMap<String, String>> {
    // No worker runs here: every job pushed is in a pending list (read by
    // key, so a cluster routes it to the queue's node; a SCAN would not).
    let keys = q.keys(task());
    let mut conn = q.connection();
    let mut jobs = BTreeMap::new();
    for priority in [Priority::High, Priority::Normal] {
        let ids: Vec<String> = conn.lrange(keys.pending(priority), 0, -1).await.unwrap();
        for id in ids {
            let hash: HashMap<String, String> = conn
                .hgetall(format!("{}{id}", keys.job_prefix()))
                .await
                .unwrap();
            jobs.insert(id, hash);
        }
    }
    jobs
}

/// Calls `fire_due_schedules` until the schedule `id` has `n` runs (at
/// most `within`).
async fn fire_until_runs(q: &QueueClient, id: &str, n: usize, within: Duration) {
    eventually("the tick handled", within, || async {
        q.fire_due_schedules().await.unwrap();
        let have = q.schedule_runs(id, 100).await.unwrap().unwrap().len();
        (have >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_schedule_is_stored_read_listed_paused_resumed_and_removed() {
    let t = TestQueue::new();
    let q = t.client().await;
    let created = now_ms();
    let s = every("nightly", 60_000, created);
    assert!(q.create_schedule(&s).await.unwrap());
    // A second create of the id changes nothing, even with other arguments.
    let mut other = s.clone();
    other.spec.args = json!({"report": "other"});
    assert!(!q.create_schedule(&other).await.unwrap());

    let (zset, def, runs) = keys(&q, "nightly");
    let index: HashMap<String, String> = q
        .connection()
        .hgetall(q.schedules_index_key())
        .await
        .unwrap();
    assert_eq!(index, HashMap::from([("nightly".into(), "t-sched".into())]));
    let stored: String = q.connection().get(&def).await.unwrap();
    let stored: Schedule = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored.spec.args, json!({"report": "nightly"}));
    assert_eq!(
        stored.next_fire_ms, None,
        "the next tick lives in the zset only"
    );
    assert_eq!(score(&q, "nightly").await, Some(created + 60_000));

    let read = q.schedule("nightly").await.unwrap().expect("stored");
    assert_eq!(read.spec, s.spec);
    assert_eq!(
        (read.tenant.as_str(), read.created_at_ms),
        ("acme", created)
    );
    assert!(!read.paused);
    assert_eq!(read.next_fire_ms, Some(created + 60_000));
    assert_eq!(q.schedule("absent").await.unwrap(), None);

    let mut second = every("hourly", 3_600_000, created);
    second.spec.task = QueueName::new("t-sched-b").unwrap();
    assert!(q.create_schedule(&second).await.unwrap());
    let listed = q.schedules().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.spec.id.as_str()).collect();
    assert_eq!(ids, ["hourly", "nightly"]);
    assert_eq!(listed[0].next_fire_ms, Some(created + 3_600_000));
    assert_eq!(
        q.schedule_runs("nightly", 10).await.unwrap(),
        Some(Vec::new())
    );

    // Paused: out of the zset, no next tick, the definition says so.
    let paused = q
        .pause_schedule("nightly", true)
        .await
        .unwrap()
        .expect("there");
    assert!(paused.paused);
    assert_eq!(paused.next_fire_ms, None);
    assert_eq!(score(&q, "nightly").await, None);
    let stored: String = q.connection().get(&def).await.unwrap();
    assert!(serde_json::from_str::<Schedule>(&stored).unwrap().paused);
    // Pausing again is a no-op.
    assert!(
        q.pause_schedule("nightly", true)
            .await
            .unwrap()
            .unwrap()
            .paused
    );

    // Resumed: back in the zset at its next tick after now.
    let before = now_ms();
    let resumed = q
        .pause_schedule("nightly", false)
        .await
        .unwrap()
        .expect("there");
    assert!(!resumed.paused);
    let next = resumed.next_fire_ms.expect("a next tick");
    assert!(next > before && next <= now_ms() + 60_000, "{next}");
    assert_eq!(
        (next - created) % 60_000,
        0,
        "ticks keep counting from creation"
    );
    assert_eq!(score(&q, "nightly").await, Some(next));
    assert_eq!(q.pause_schedule("absent", true).await.unwrap(), None);

    // Removed: definition, runs, zset entry and index entry gone.
    assert!(q.remove_schedule("nightly").await.unwrap());
    assert!(!exists(&q, &def).await);
    assert!(!exists(&q, &runs).await);
    let in_zset: Option<f64> = q.connection().zscore(&zset, "nightly").await.unwrap();
    assert_eq!(in_zset, None);
    let indexed: bool = q
        .connection()
        .hexists(q.schedules_index_key(), "nightly")
        .await
        .unwrap();
    assert!(!indexed);
    assert_eq!(q.schedule("nightly").await.unwrap(), None);
    assert_eq!(q.schedule_runs("nightly", 10).await.unwrap(), None);
    assert!(!q.remove_schedule("nightly").await.unwrap());
    let left: Vec<String> = q
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.spec.id)
        .collect();
    assert_eq!(left, ["hourly"]);
    // The id is free again.
    assert!(q.create_schedule(&s).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_racing_schedulers_handle_every_tick_exactly_once() {
    let t = TestQueue::new();
    let setup = t.client().await;
    let created = now_ms();
    let s = every("race", 1_000, created);
    assert!(setup.create_schedule(&s).await.unwrap());

    let until = Instant::now() + Duration::from_millis(5_300);
    let mut racers = Vec::new();
    for _ in 0..8 {
        let q = t.client().await;
        racers.push(tokio::spawn(async move {
            let mut total = FireRound::default();
            while Instant::now() < until {
                let r = q.fire_due_schedules().await.expect("a round");
                total.fired += r.fired;
                total.skipped += r.skipped;
                total.lost_races += r.lost_races;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            total
        }));
    }
    let mut fired = Vec::new();
    let (mut skipped, mut lost) = (0, 0);
    for r in racers {
        let r = r.await.unwrap();
        fired.push(r.fired);
        skipped += r.skipped;
        lost += r.lost_races;
    }
    let q = setup;
    let runs = runs_oldest_first(&q, "race").await;
    let ticks: Vec<i64> = runs.iter().map(|r| r.tick_ms).collect();
    assert!(
        (4..=6).contains(&ticks.len()),
        "5 s of a 1 s schedule: {ticks:?}"
    );
    // Contiguous from the first tick, one interval after creation.
    let expected: Vec<i64> = (1..=ticks.len() as i64)
        .map(|k| created + k * 1_000)
        .collect();
    assert_eq!(ticks, expected, "each tick once, none missing");
    assert!(runs.iter().all(|r| r.outcome == "fired"), "{runs:?}");
    assert_eq!(
        fired.iter().sum::<usize>(),
        ticks.len(),
        "fired per racer: {fired:?}"
    );
    assert_eq!(skipped, 0);
    assert!(lost > 0, "the racers did race (fired per racer: {fired:?})");
    eprintln!(
        "{} ticks, fired per racer {fired:?}, {lost} races lost",
        ticks.len()
    );

    // One job per tick, with the tick's arguments and request id.
    let jobs = all_jobs(&q).await;
    assert_eq!(jobs.len(), ticks.len(), "{:?}", jobs.keys());
    for run in &runs {
        let id = run.job_id.expect("a fired tick names its job");
        assert_eq!(id, s.job_id(q.prefix(), run.tick_ms));
        let job = &jobs[&id.to_string()];
        assert_eq!(job["request_id"], format!("schedule:race:{}", run.tick_ms));
        let args: Value = serde_json::from_str(&job["args"]).unwrap();
        assert_eq!(args, json!({"report": "race"}));
        assert_eq!(job["tenant"], "acme");
        // (Its queue is its key's: all_jobs read it from t-sched's keys.)
        assert_eq!(job["state"], "pending");
    }
    let pending: usize = q
        .connection()
        .llen(q.keys(task()).pending(hopper_queue::Priority::Normal))
        .await
        .unwrap();
    assert_eq!(pending, ticks.len(), "each job queued once");
    // The schedule waits for its next tick.
    let last = *ticks.last().unwrap();
    assert_eq!(score(&q, "race").await, Some(last + 1_000));
}

/// A schedule every minute created 90 s ago whose tick 30 s ago was
/// never handled (no scheduler ran): its zset score is that tick.
async fn missed_by_30s(q: &QueueClient, id: &str, missed: MissedTicks) -> (Schedule, i64) {
    let now = now_ms();
    let mut s = every(id, 60_000, now - 90_000);
    s.spec.grace_ms = Some(5_000);
    s.spec.missed = missed;
    assert!(q.create_schedule(&s).await.unwrap());
    let tick = now - 30_000;
    assert_eq!(
        score(q, id).await,
        Some(tick + 60_000),
        "the next tick, 30 s ahead"
    );
    let (zset, _, _) = keys(q, id);
    let _: i64 = q.connection().zadd(zset, id, tick).await.unwrap();
    (s, tick)
}

#[tokio::test]
async fn a_tick_missed_past_its_grace_is_recorded_as_skipped_and_pushes_nothing() {
    let t = TestQueue::new();
    let q = t.client().await;
    let (s, tick) = missed_by_30s(&q, "skipper", MissedTicks::Skip).await;

    let round = q.fire_due_schedules().await.unwrap();
    assert_eq!((round.fired, round.skipped, round.lost_races), (0, 1, 0));
    let runs = runs_oldest_first(&q, "skipper").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].tick_ms, tick);
    assert_eq!(runs[0].outcome, "skipped");
    assert_eq!(runs[0].job_id, None);
    assert!(job_hash(&q, &s.job_id(q.prefix(), tick)).await.is_empty());
    assert!(all_jobs(&q).await.is_empty());
    // Next: the first tick after now, in the future.
    let next = score(&q, "skipper").await.expect("still scheduled");
    assert_eq!(next, tick + 60_000);
    assert!(next > now_ms());
    assert_eq!(round.next_due_ms, Some(next));
    // Nothing more is due.
    assert_eq!(q.fire_due_schedules().await.unwrap().skipped, 0);
    assert_eq!(runs_oldest_first(&q, "skipper").await.len(), 1);
}

#[tokio::test]
async fn a_tick_missed_past_its_grace_fires_once_with_missed_latest() {
    let t = TestQueue::new();
    let q = t.client().await;
    let (s, tick) = missed_by_30s(&q, "catcher", MissedTicks::Latest).await;

    let round = q.fire_due_schedules().await.unwrap();
    assert_eq!((round.fired, round.skipped), (1, 0));
    assert_eq!(q.fire_due_schedules().await.unwrap().fired, 0, "once");
    let runs = runs_oldest_first(&q, "catcher").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].tick_ms, runs[0].outcome.as_str()), (tick, "fired"));
    let id = s.job_id(q.prefix(), tick);
    assert_eq!(runs[0].job_id, Some(id));
    let jobs = all_jobs(&q).await;
    assert_eq!(jobs.len(), 1, "exactly one job for the latest tick");
    assert_eq!(
        jobs[&id.to_string()]["request_id"],
        format!("schedule:catcher:{tick}")
    );
    let next = score(&q, "catcher").await.expect("still scheduled");
    assert_eq!(next, tick + 60_000);
    assert!(next > now_ms());
}

#[tokio::test]
async fn the_fire_time_goes_into_the_jobs_arguments() {
    let t = TestQueue::new();
    let q = t.client().await;
    // The first tick 100 ms from now.
    let mut s = every("stamped", 1_000, now_ms() - 900);
    s.spec.fire_time_arg = Some("fired_at".into());
    assert!(q.create_schedule(&s).await.unwrap());

    fire_until_runs(&q, "stamped", 1, Duration::from_secs(5)).await;
    let run = runs_oldest_first(&q, "stamped").await.remove(0);
    assert_eq!(run.tick_ms, s.created_at_ms + 1_000);
    let job = job_hash(&q, &run.job_id.expect("fired")).await;
    let args: Value = serde_json::from_str(&job["args"]).unwrap();
    assert_eq!(args, json!({"report": "stamped", "fired_at": run.tick_ms}));
}

#[tokio::test]
async fn a_paused_schedule_never_fires() {
    let t = TestQueue::new();
    let q = t.client().await;
    // Due 50 ms from now, paused at once.
    let s = every("sleeper", 1_000, now_ms() - 950);
    assert!(q.create_schedule(&s).await.unwrap());
    q.pause_schedule("sleeper", true)
        .await
        .unwrap()
        .expect("there");

    // Several clients keep looking across two would-be ticks.
    let until = Instant::now() + Duration::from_millis(2_200);
    let clients = [t.client().await, t.client().await, t.client().await];
    let mut handled = 0;
    while Instant::now() < until {
        for c in &clients {
            let r = c.fire_due_schedules().await.unwrap();
            handled += r.fired + r.skipped + r.lost_races;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(handled, 0, "nothing handled while paused");
    assert!(
        q.schedule_runs("sleeper", 100)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    assert!(all_jobs(&q).await.is_empty());

    // Resumed: the ticks missed while paused are not fired; the next one is.
    let resumed = q.pause_schedule("sleeper", false).await.unwrap().unwrap();
    let next = resumed.next_fire_ms.expect("scheduled again");
    assert!(next > now_ms());
    assert_eq!(q.fire_due_schedules().await.unwrap().fired, 0);
    fire_until_runs(&q, "sleeper", 1, Duration::from_secs(5)).await;
    let runs = runs_oldest_first(&q, "sleeper").await;
    assert_eq!(runs[0].tick_ms, next, "{runs:?}");
}

#[tokio::test]
async fn removing_a_schedule_deletes_its_runs_and_its_tick_but_not_its_jobs() {
    let t = TestQueue::new();
    let q = t.client().await;
    let s = every("doomed", 1_000, now_ms() - 900);
    assert!(q.create_schedule(&s).await.unwrap());
    fire_until_runs(&q, "doomed", 1, Duration::from_secs(5)).await;
    let run = runs_oldest_first(&q, "doomed").await.remove(0);
    let (zset, def, runs) = keys(&q, "doomed");
    assert!(exists(&q, &runs).await);

    assert!(q.remove_schedule("doomed").await.unwrap());
    assert!(!exists(&q, &runs).await, "runs deleted");
    assert!(!exists(&q, &def).await, "definition deleted");
    let in_zset: Option<f64> = q.connection().zscore(&zset, "doomed").await.unwrap();
    assert_eq!(in_zset, None, "no next tick");
    assert_eq!(q.schedule("doomed").await.unwrap(), None);
    // Nothing fires any more; the job already submitted stays.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = q.fire_due_schedules().await.unwrap();
    assert_eq!((r.fired, r.skipped, r.lost_races), (0, 0, 0));
    assert_eq!(r.next_due_ms, None);
    let jobs = all_jobs(&q).await;
    assert_eq!(jobs.len(), 1);
    assert!(jobs.contains_key(&run.job_id.unwrap().to_string()));
}
