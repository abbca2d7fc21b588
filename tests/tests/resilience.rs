//! Crash, restart and outage behaviour of the queue with real worker
//! processes: crash loops end in the dead letters, a long job is never run
//! twice while its worker lives, a graceful stop loses and repeats nothing,
//! a Redis restart loses nothing, random SIGKILLs under load leave
//! exactly one record per job, a draining worker claims nothing and stops
//! what outlives its grace, and SIGKILLs, a freeze and a Redis restart
//! together lose nothing and let no stale attempt finish a job.

use std::time::{Duration, Instant};

use hopper_tests::{PrivateRedis, SIGCONT, SIGSTOP, TestEnv};
use serde_json::{Value, json};

const FAST_LEASE: [(&str, &str); 2] = [("HOPPER_HEARTBEAT_MS", "200"), ("HOPPER_LEASE_MS", "1000")];

/// Waits until the job is final (so a worker is surely up and serving).
async fn until_serving(env: &TestEnv, id: &str) {
    env.wait_final(id, Duration::from_secs(60)).await;
}

async fn submit(env: &TestEnv, path: &str, body: Value) -> String {
    let (s, b) = env.post(path, &body).await;
    assert_eq!(s, 202, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_job_that_kills_its_worker_every_time_ends_dead_after_max_attempts() {
    let mut env = TestEnv::new(&FAST_LEASE);
    env.start_api().await;
    let allow = [("HOPPER_ALLOW_CRASH_JOBS", "1")];
    let w = env.start_worker("echo", &allow);
    let id = submit(
        &env,
        "/v1/jobs/echo?max_attempts=3",
        json!({"message": "boom", "crash": true}),
    )
    .await;

    // A supervisor: restart the worker whenever it dies, until the job is final.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut restarts = 0;
    let job = loop {
        let (_, job) = env.get(&format!("/v1/jobs/{id}")).await;
        if job["state"] == "dead" {
            break job;
        }
        if env.exited(w) {
            restarts += 1;
            env.restart_worker(w, "echo", &allow);
        }
        assert!(Instant::now() < deadline, "crash loop never ended: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["attempts"], 3, "{job}");
    assert!(
        restarts >= 3,
        "each attempt killed the worker ({restarts} restarts)"
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("stopped heartbeating"),
        "{job}"
    );
    let outcomes: Vec<_> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].clone())
        .collect();
    assert_eq!(
        outcomes,
        vec![json!("worker_lost"); 3],
        "every attempt lost its worker: {job}"
    );
    // Its dead record reached Postgres too (written by the recovering worker).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(rec) = hopper_shared::db::job_record(&env.pool(), id.parse().unwrap())
            .await
            .unwrap()
        {
            assert_eq!(rec.state.as_str(), "dead");
            break;
        }
        assert!(Instant::now() < deadline, "no dead record in Postgres");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_long_job_outliving_the_recovery_window_runs_once_while_its_worker_lives() {
    let lease = [("HOPPER_HEARTBEAT_MS", "500"), ("HOPPER_LEASE_MS", "2000")];
    let mut env = TestEnv::new(&lease);
    env.start_api().await;
    env.start_worker("echo", &[]);
    env.start_worker("echo", &[]); // an idle peer that would steal it under a visibility timeout
    let id = submit(
        &env,
        "/v1/jobs/echo",
        json!({"message": "slow", "sleep_ms": 10_000}),
    )
    .await;
    let job = env.wait_final(&id, Duration::from_secs(40)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["attempts"], 1,
        "never re-run while its worker heartbeats: {job}"
    );
    assert_eq!(job["history"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_graceful_stop_under_load_finishes_running_jobs_and_repeats_none() {
    let mut env = TestEnv::new(&[("HOPPER_QUEUE_ECHO_CONCURRENCY", "8")]);
    env.start_api().await;
    let first = env.start_worker("echo", &[]);
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({"message": i.to_string(), "sleep_ms": 20}))
        .collect();
    let ids = env.submit_batch("echo", &batch).await;

    until_serving(&env, &ids[0]).await;
    let stopped = Instant::now();
    let status = env.terminate(first);
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "stopped within its grace period"
    );
    let (_, echo) = env.queue("echo").await;
    assert_eq!(
        (echo["running"].clone(), echo["workers"].clone()),
        (json!(0), json!(0)),
        "nothing left claimed: {echo}"
    );
    assert!(
        echo["pending"].as_u64().unwrap() > 0,
        "the stop came mid-run: {echo}"
    );

    env.start_worker("echo", &[]);
    for id in &ids {
        let job = env.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "a graceful stop repeats nothing: {job}");
    }
}

#[tokio::test]
async fn a_redis_restart_mid_run_loses_no_job() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let mut env = TestEnv::new(&[("REDIS_URL", url.as_str()), FAST_LEASE[0], FAST_LEASE[1]]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let batch: Vec<Value> = (0..200)
        .map(|i| json!({"message": i.to_string(), "sleep_ms": 10}))
        .collect();
    let ids = env.submit_batch("echo", &batch).await;

    until_serving(&env, &ids[0]).await;
    redis.restart(Duration::from_secs(2));

    for id in &ids {
        let job = env.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}

/// A run under load for the chaos tests: the API, three echo workers with
/// four slots each and 2,000 jobs of 50 ms.
struct Load {
    workers: Vec<usize>,
    ids: Vec<uuid::Uuid>,
    pool: deadpool_postgres::Pool,
}

impl Load {
    async fn start(env: &mut TestEnv) -> Self {
        env.start_api().await;
        let workers = (0..3).map(|_| env.start_worker("echo", &[])).collect();
        let batch: Vec<Value> = (0..2000)
            .map(|i| json!({"message": i.to_string(), "sleep_ms": 50}))
            .collect();
        let ids = env
            .submit_batch("echo", &batch)
            .await
            .iter()
            .map(|id| id.parse().unwrap())
            .collect();
        Self {
            workers,
            ids,
            pool: env.pool(),
        }
    }

    /// Jobs with a succeeded record.
    async fn done(&self) -> usize {
        let client = self.pool.get().await.unwrap();
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM job_records WHERE id = ANY($1) AND state = 'succeeded'",
                &[&self.ids],
            )
            .await
            .unwrap()
            .get(0);
        n as usize
    }

    /// Asserts the faults came mid-run, waits until every job succeeded,
    /// and that each has exactly one record.
    async fn finish(&self) {
        let after_faults = self.done().await;
        assert!(
            after_faults < self.ids.len(),
            "the faults came mid-run ({after_faults} done)"
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.done().await < self.ids.len() {
            assert!(
                Instant::now() < deadline,
                "only {} of {} done",
                self.done().await,
                self.ids.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let client = self.pool.get().await.unwrap();
        let rows: i64 = client
            .query_one(
                "SELECT count(*) FROM job_records WHERE id = ANY($1)",
                &[&self.ids],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows as usize, self.ids.len(), "exactly one record per job");
    }
}

#[tokio::test]
async fn random_sigkills_under_load_lose_nothing_and_duplicate_no_record() {
    let mut env = TestEnv::new(&[
        FAST_LEASE[0],
        FAST_LEASE[1],
        ("HOPPER_QUEUE_ECHO_CONCURRENCY", "4"),
    ]);
    let load = Load::start(&mut env).await;
    // The driver: every 0.7 s SIGKILL one worker (round robin) and restart
    // it, four times, all while the run is still going.
    for kill in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        env.restart_worker(load.workers[kill % load.workers.len()], "echo", &[]);
    }
    load.finish().await;
}

#[tokio::test]
async fn a_draining_worker_claims_nothing_and_stops_its_jobs_after_the_grace_period() {
    let mut env = TestEnv::new(&[
        ("HOPPER_QUEUE_ECHO_CONCURRENCY", "2"),
        ("HOPPER_SHUTDOWN_GRACE_MS", "2500"),
    ]);
    env.start_api().await;
    let w = env.start_worker("echo", &[]);
    // Two slots: one job ends early in the drain, one outlives the grace.
    let short = submit(
        &env,
        "/v1/jobs/echo",
        json!({"message": "short", "sleep_ms": 800}),
    )
    .await;
    let long = submit(
        &env,
        "/v1/jobs/echo",
        json!({"message": "long", "sleep_ms": 60_000}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in [&short, &long] {
        while env.get(&format!("/v1/jobs/{id}")).await.1["state"] != "running" {
            assert!(Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let waiting = env
        .submit_batch("echo", &vec![json!({"message": "waits"}); 5])
        .await;

    let stopping = Instant::now();
    env.signal(w, 15);
    // All through the drain no waiting job is claimed, though a slot frees.
    while !env.exited(w) {
        for id in &waiting {
            let (_, j) = env.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(j["state"], "pending", "claimed during the drain: {j}");
        }
        assert!(stopping.elapsed() < Duration::from_secs(15), "no exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, s) = env.get(&format!("/v1/jobs/{short}")).await;
    assert_eq!(s["state"], "succeeded", "the short job finished: {s}");
    // The long one was stopped at the end of the grace and will run again.
    let (_, l) = env.get(&format!("/v1/jobs/{long}")).await;
    assert_eq!(l["state"], "retrying", "{l}");
    assert!(
        l["error"]
            .as_str()
            .unwrap()
            .contains("stopped by its worker"),
        "{l}"
    );
    for id in &waiting {
        let (_, j) = env.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(
            (j["state"].as_str(), j["attempts"].as_u64()),
            (Some("pending"), Some(0)),
            "{j}"
        );
    }
    let (_, echo) = env.queue("echo").await;
    assert_eq!(
        (echo["running"].clone(), echo["workers"].clone()),
        (json!(0), json!(0)),
        "{echo}"
    );
}

/// Whether a finished job's history tells one true story: attempts in
/// order, one success, the last entry, by the attempt the record names.
fn consistent(rec: &hopper_shared::jobs::JobRecord) -> Result<(), String> {
    let h = &rec.history;
    let last = h.last().ok_or("no history")?;
    if last.outcome != "succeeded" || last.attempt != rec.attempts {
        return Err(format!("last entry {last:?}, attempts {}", rec.attempts));
    }
    if last.worker != rec.worker {
        return Err(format!(
            "record worker {:?}, history {:?}",
            rec.worker, last.worker
        ));
    }
    if h.iter().filter(|a| a.outcome == "succeeded").count() != 1 {
        return Err("more than one success".into());
    }
    if h.windows(2).any(|w| w[0].attempt >= w[1].attempt) {
        return Err("attempts out of order".into());
    }
    Ok(())
}

#[tokio::test]
async fn sigkills_freezes_and_a_redis_restart_under_load_lose_nothing_and_finish_nothing_stale() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let mut env = TestEnv::new(&[
        ("REDIS_URL", url.as_str()),
        FAST_LEASE[0],
        FAST_LEASE[1],
        ("HOPPER_QUEUE_ECHO_CONCURRENCY", "4"),
        // It reads every job back through the API.
        ("HOPPER_RATE_PER_KEY", "0"),
        ("HOPPER_RATE_GLOBAL", "0"),
    ]);
    let load = Load::start(&mut env).await;
    let workers = &load.workers;

    // The driver, all while the run goes on: a SIGKILL, a freeze past the
    // lease, a Redis restart during the freeze, the thaw, another SIGKILL.
    tokio::time::sleep(Duration::from_millis(700)).await;
    env.restart_worker(workers[0], "echo", &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.signal(workers[1], SIGSTOP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart(Duration::from_secs(1));
    // Past the lease, with Redis back: the others recover its jobs.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    env.signal(workers[1], SIGCONT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.restart_worker(workers[2], "echo", &[]);
    load.finish().await;
    let mut retried = 0;
    for id in &load.ids {
        let rec = hopper_shared::db::job_record(&load.pool, *id)
            .await
            .unwrap()
            .unwrap();
        if let Err(why) = consistent(&rec) {
            panic!("job {id}: {why}: {rec:?}");
        }
        // Redis agrees with the record.
        let (_, job) = env.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(
            (
                job["state"].as_str(),
                job["attempts"].as_u64(),
                job["worker"].as_str()
            ),
            (
                Some("succeeded"),
                Some(rec.attempts as u64),
                rec.worker.as_deref()
            ),
            "{job}"
        );
        retried += (rec.attempts > 1) as usize;
    }
    assert!(retried > 0, "some jobs ran again after the faults");
    let thawed = env.log(workers[1]);
    assert!(
        thawed.contains("presumed dead"),
        "the frozen worker learnt it was evicted: {thawed}"
    );
}
