//! Schedules across real processes: three `hopper-api` processes (each
//! runs the scheduler loop, `HOPPER_SCHEDULER` defaulting to true) race on
//! one 1-second schedule for two minutes, the busiest one SIGKILLed a
//! third of the way in and a new one started half way; every tick is fired
//! exactly once — one job per tick, none missing, none twice, none skipped
//! — and more than one process fired.
//!
//! The run's length is `HOPPER_TEST_SCHEDULE_SECS` (default 120; shorter
//! while developing). The schedule is created through the queue client (not
//! `/v1/schedules`): what is tested is the schedulers, not the routes. Its
//! task is the built-in `noop` and no worker runs, so its jobs stay
//! pending: each job hash is a tick's record that nothing trims.
//! `scripts/test` runs this test beside the others, naming it
//! (`three_racing_schedulers`): keep the two in step.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hopper_queue::QueueClient;
use hopper_shared::{
    QueueName,
    schedules::{MissedTicks, Schedule, ScheduleSpec},
};
use hopper_tests::TestEnv;
use redis::AsyncCommands;
use serde_json::{Value, json};

/// The schedule's id.
const ID: &str = "heartbeat";
/// Its interval.
const EVERY_MS: i64 = 1_000;
/// The counter of fired ticks in a process' `/metrics`.
const FIRED: &str = r#"hopper_schedule_ticks_total{outcome="fired"}"#;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// How long the schedulers run (`HOPPER_TEST_SCHEDULE_SECS`, default 120).
fn run_secs() -> u64 {
    std::env::var("HOPPER_TEST_SCHEDULE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
}

/// One scheduler process: its index in the environment and its API URL.
struct Scheduler {
    index: usize,
    url: String,
    alive: bool,
}

/// Starts one more `hopper-api` (the environment's `index`-th process:
/// this test starts nothing else).
async fn start(env: &mut TestEnv, all: &mut Vec<Scheduler>) {
    let url = env.start_api().await;
    all.push(Scheduler {
        index: all.len(),
        url,
        alive: true,
    });
}

/// Ticks fired by the process at `url`, by its own count.
async fn fired_by(env: &TestEnv, url: &str) -> u64 {
    env.metric(&format!("{url}/metrics"), FIRED).await as u64
}

/// The ticks the process at `index` logged as fired (JSON log lines).
fn logged_ticks(env: &TestEnv, index: usize) -> Vec<i64> {
    env.log(index)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "schedule fired" && l["schedule"] == ID)
        .filter_map(|l| l["tick_ms"].as_i64())
        .collect()
}

/// Every job hash of `task`: its `request_id`, by job id.
async fn request_ids(q: &QueueClient, task: &QueueName) -> BTreeMap<String, String> {
    let prefix = q.keys(task.clone()).job_prefix();
    let mut conn = q.connection();
    let mut names = Vec::new();
    {
        let mut it: redis::AsyncIter<String> =
            conn.scan_match(format!("{prefix}*")).await.expect("scan");
        while let Some(k) = it.next_item().await {
            names.push(k.expect("a key"));
        }
    }
    let mut out = BTreeMap::new();
    for name in names {
        let rid: Option<String> = conn.hget(&name, "request_id").await.expect("hget");
        out.insert(
            name[prefix.len()..].to_owned(),
            rid.unwrap_or_else(|| panic!("job {name} has no request_id")),
        );
    }
    out
}

#[tokio::test]
async fn three_racing_schedulers_fire_every_tick_once_through_a_kill_and_a_restart() {
    let secs = run_secs();
    assert!(secs >= 10, "HOPPER_TEST_SCHEDULE_SECS={secs}: at least 10");
    let mut env = TestEnv::new(&[("HOPPER_LOG_FORMAT", "json")]);
    let mut schedulers = Vec::new();
    for _ in 0..3 {
        start(&mut env, &mut schedulers).await;
    }
    let q = QueueClient::connect(&env.config()).await.expect("Redis");
    let task = QueueName::new("noop").expect("a name");
    let created = now_ms();
    let schedule = Schedule {
        spec: ScheduleSpec {
            id: ID.into(),
            task: task.clone(),
            args: json!({}),
            cron: None,
            timezone: None,
            every_ms: Some(EVERY_MS as u64),
            missed: MissedTicks::Skip,
            grace_ms: None,
            fire_time_arg: None,
        },
        tenant: "default".into(),
        created_at_ms: created,
        paused: false,
        next_fire_ms: None,
    };
    assert!(q.create_schedule(&schedule).await.expect("create"));
    let t0 = tokio::time::Instant::now();
    let run = Duration::from_secs(secs);

    // A third of the way: SIGKILL the process that fired the most so far,
    // so the ticks after it must be fired by others.
    tokio::time::sleep_until(t0 + run / 3).await;
    let mut counts = Vec::new();
    for s in &schedulers {
        counts.push(fired_by(&env, &s.url).await);
    }
    let busiest = (0..counts.len()).max_by_key(|&i| counts[i]).expect("three");
    let killed_count = counts[busiest];
    assert!(killed_count > 0, "no process fired a tick: {counts:?}");
    env.kill(schedulers[busiest].index);
    schedulers[busiest].alive = false;
    let killed_at = now_ms();

    // Half way: the ticks went on without it; a new process joins.
    tokio::time::sleep_until(t0 + run / 2).await;
    let latest = q
        .schedule_runs(ID, 1)
        .await
        .expect("runs")
        .expect("schedule")[0]
        .clone();
    assert!(
        latest.tick_ms > killed_at && latest.tick_ms >= now_ms() - 2 * EVERY_MS,
        "ticks stopped with the killed process: latest {latest:?}, killed at {killed_at}"
    );
    start(&mut env, &mut schedulers).await;

    // The end: pause (nothing fires after); every scheduler still up.
    tokio::time::sleep_until(t0 + run).await;
    assert!(q.pause_schedule(ID, true).await.expect("pause").is_some());
    for s in schedulers.iter().filter(|s| s.alive) {
        assert!(
            !env.exited(s.index),
            "scheduler {} died:\n{}",
            s.index,
            env.log(s.index)
        );
    }

    // Every tick from the first to the last has exactly one job, with the
    // tick's request id and job id.
    let jobs = request_ids(&q, &task).await;
    let mut ticks: BTreeMap<i64, String> = BTreeMap::new();
    for (job, rid) in &jobs {
        let tick: i64 = rid
            .strip_prefix(&format!("schedule:{ID}:"))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("job {job}: request_id {rid}"));
        assert_eq!(job, &schedule.job_id(q.prefix(), tick).to_string());
        assert!(
            ticks.insert(tick, job.clone()).is_none(),
            "tick {tick} twice"
        );
    }
    let first = *ticks.keys().next().expect("ticks fired");
    let last = *ticks.keys().next_back().expect("ticks fired");
    assert_eq!(first, created + EVERY_MS, "the first tick fired");
    let expected: Vec<i64> = (0..=(last - first) / EVERY_MS)
        .map(|k| first + k * EVERY_MS)
        .collect();
    let missing: Vec<&i64> = expected.iter().filter(|t| !ticks.contains_key(t)).collect();
    assert!(missing.is_empty(), "ticks never fired: {missing:?}");
    assert_eq!(ticks.len(), expected.len(), "no tick off the interval");
    let total = ticks.len() as i64;
    assert!(
        (total - secs as i64).abs() <= 2,
        "{total} ticks in {secs} s"
    );
    let pending: i64 = q
        .connection()
        .llen(q.keys(task.clone()).pending(hopper_queue::Priority::Normal))
        .await
        .expect("llen");
    assert_eq!(pending, total, "each tick's job queued once");

    // The runs kept (the last 100) agree: contiguous, every one fired.
    let mut runs = q
        .schedule_runs(ID, 100)
        .await
        .expect("runs")
        .expect("schedule");
    runs.reverse();
    assert_eq!(runs.len(), (total as usize).min(100));
    for (run, tick) in runs.iter().zip(&expected[expected.len() - runs.len()..]) {
        assert_eq!(run.tick_ms, *tick, "runs out of step: {runs:?}");
        assert_eq!(run.outcome, "fired", "{run:?}");
        assert_eq!(run.job_id.map(|j| j.to_string()).as_ref(), ticks.get(tick));
    }

    // The processes' own accounts: no tick fired by two, and more than one
    // process fired (the killed one before its death, others after). The
    // killed one may have fired a tick after its count was read, and logged
    // or counted none of it (killed in between).
    let mut by_tick: HashMap<i64, Vec<usize>> = HashMap::new();
    for s in &schedulers {
        for t in logged_ticks(&env, s.index) {
            by_tick.entry(t).or_default().push(s.index);
        }
    }
    let twice: Vec<_> = by_tick.iter().filter(|(_, who)| who.len() > 1).collect();
    assert!(twice.is_empty(), "ticks fired by two processes: {twice:?}");
    assert!(
        by_tick.len() as i64 >= total - 1,
        "{} of {total} logged",
        by_tick.len()
    );
    assert!(by_tick.keys().all(|t| ticks.contains_key(t)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (live_counts, counted) = loop {
        let mut live = BTreeMap::new();
        for s in schedulers.iter().filter(|s| s.alive) {
            live.insert(s.index, fired_by(&env, &s.url).await);
        }
        let counted = killed_count as i64 + live.values().sum::<u64>() as i64;
        if counted >= total - 1 || Instant::now() > deadline {
            break (live, counted);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        (total - 1..=total).contains(&counted),
        "counted {counted} (killed {killed_count}, live {live_counts:?}) of {total}"
    );
    assert!(
        live_counts.values().sum::<u64>() > 0,
        "nobody fired after the kill: {live_counts:?}"
    );
    let logged: Vec<usize> = schedulers
        .iter()
        .map(|s| logged_ticks(&env, s.index).len())
        .collect();
    assert!(
        logged.iter().filter(|&&n| n > 0).count() >= 2,
        "one process fired everything: {logged:?}"
    );
    for s in &schedulers {
        env.kill(s.index);
    }
    eprintln!(
        "{total} ticks in {secs} s, each fired once; fired per process (logged): {logged:?}; \
         #{busiest} SIGKILLed after {killed_count}, #3 started half way"
    );
}
