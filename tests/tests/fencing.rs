//! Faults that leave a worker alive but wrong, with real worker processes:
//! a worker frozen (SIGSTOP) past its lease while it runs jobs, then resumed,
//! must not finish jobs that ran again elsewhere; a worker whose clock is a
//! minute off must neither make a live worker look dead nor run a delayed
//! job early (every time that matters is Redis' own).

use std::time::{Duration, Instant};

use hopper_tests::{SIGCONT, SIGSTOP, TestEnv, free_port};
use serde_json::{Value, json};

const FAST_LEASE: [(&str, &str); 2] = [("HOPPER_HEARTBEAT_MS", "200"), ("HOPPER_LEASE_MS", "1000")];

/// Debian's libfaketime (installed by scripts/setup).
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found
        .expect("libfaketime is installed (scripts/setup redis)")
        .display()
        .to_string()
}

async fn job(env: &TestEnv, id: &str) -> Value {
    env.get(&format!("/v1/jobs/{id}")).await.1
}

/// Polls until every job satisfies `ok`, failing after `within`.
async fn until_all(env: &TestEnv, ids: &[String], within: Duration, ok: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + within;
    'poll: loop {
        for id in ids {
            let j = job(env, id).await;
            if !ok(&j) {
                assert!(Instant::now() < deadline, "not reached in {within:?}: {j}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue 'poll;
            }
        }
        return;
    }
}

#[tokio::test]
async fn a_frozen_worker_cannot_finish_jobs_that_ran_again_elsewhere() {
    let mut env = TestEnv::new(&[
        FAST_LEASE[0],
        FAST_LEASE[1],
        ("HOPPER_QUEUE_ECHO_CONCURRENCY", "4"),
    ]);
    env.start_api().await;
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let frozen = env.start_worker("echo", &[("HOPPER_WORKER_METRICS_ADDR", metrics.as_str())]);
    let batch: Vec<Value> = (0..4)
        .map(|i| json!({"message": format!("job {i}"), "sleep_ms": 5_000}))
        .collect();
    let ids = env.submit_batch("echo", &batch).await;
    until_all(&env, &ids, Duration::from_secs(30), |j| {
        j["state"] == "running"
    })
    .await;
    let frozen_id = job(&env, &ids[0]).await["worker"]
        .as_str()
        .unwrap()
        .to_owned();

    // Freeze it past its lease; a second worker takes the jobs over.
    env.signal(frozen, SIGSTOP);
    env.start_worker("echo", &[]);
    until_all(&env, &ids, Duration::from_secs(30), |j| {
        j["state"] == "running" && j["attempts"] == 2
    })
    .await;
    // Wake it once its own attempts' sleeps are over: they end at once.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    env.signal(frozen, SIGCONT);

    // Until the live attempts end, no job reads finished or retrying.
    let mut finished = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while finished < ids.len() {
        finished = 0;
        for id in &ids {
            let j = job(&env, id).await;
            match j["state"].as_str().unwrap() {
                "running" => assert_eq!(j["attempts"], 2, "{j}"),
                "succeeded" => {
                    finished += 1;
                    assert_eq!(j["attempts"], 2, "{j}");
                    assert_ne!(
                        j["worker"],
                        frozen_id.as_str(),
                        "finished by the stale attempt: {j}"
                    );
                    let outcomes: Vec<_> = j["history"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|h| (h["attempt"].clone(), h["outcome"].clone()))
                        .collect();
                    assert_eq!(
                        outcomes,
                        [
                            (json!(1), json!("worker_lost")),
                            (json!(2), json!("succeeded"))
                        ],
                        "{j}"
                    );
                }
                _ => panic!("a stale attempt changed the job: {j}"),
            }
        }
        assert!(Instant::now() < deadline, "the live attempts never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The frozen worker refused its own outcomes and counted them; the
    // records in Postgres are the live attempts'.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lost = env
            .metric(
                &format!("http://{metrics}/metrics"),
                "hopper_job_lease_lost_total{queue=\"echo\"}",
            )
            .await;
        if lost == 4.0 {
            break;
        }
        assert!(Instant::now() < deadline, "lease-lost count {lost}, not 4");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        env.log(frozen).contains("lease lost"),
        "{}",
        env.log(frozen)
    );
    let pool = env.pool();
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        let rec = loop {
            if let Some(rec) = hopper_shared::db::job_record(&pool, id.parse().unwrap())
                .await
                .unwrap()
            {
                break rec;
            }
            assert!(Instant::now() < deadline, "no record for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            (rec.state.as_str(), rec.attempts, rec.lease),
            ("succeeded", 2, 2)
        );
        assert_ne!(rec.worker.as_deref(), Some(frozen_id.as_str()));
    }
    // It registers afresh (at its next heartbeat, maybe after its acks were
    // refused) and serves again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, echo) = env.queue("echo").await;
        if echo["workers"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never registered afresh: {echo}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, again) = env
        .post("/v1/jobs/echo", &json!({"message": "after"}))
        .await;
    let after = env
        .wait_final(again["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(after["state"], "succeeded");
}

#[tokio::test]
async fn a_worker_with_a_clock_a_minute_ahead_recovers_no_live_worker_and_runs_nothing_early() {
    let mut env = TestEnv::new(&[
        FAST_LEASE[0],
        FAST_LEASE[1],
        ("HOPPER_QUEUE_ECHO_CONCURRENCY", "4"),
    ]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let batch: Vec<Value> = (0..4)
        .map(|i| json!({"message": format!("job {i}"), "sleep_ms": 6_000}))
        .collect();
    let ids = env.submit_batch("echo", &batch).await;
    until_all(&env, &ids, Duration::from_secs(30), |j| {
        j["state"] == "running"
    })
    .await;
    let (s, delayed) = env
        .post("/v1/jobs/echo?delay_ms=30000", &json!({"message": "later"}))
        .await;
    assert_eq!(s, 202, "{delayed}");
    let delayed = delayed["id"].as_str().unwrap().to_owned();

    // libfaketime preloaded into the worker itself (the `faketime` wrapper
    // would fork it, and a test stops what it starts by pid): its wall clock
    // runs 60 s ahead, its monotonic clock is untouched.
    let skewed = env.start_worker(
        "echo",
        &[
            ("LD_PRELOAD", libfaketime().as_str()),
            ("FAKETIME", "+60s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    // Give the skewed worker several leases' worth of heartbeats and
    // recovery passes, checking all the while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut registered_at = None;
    loop {
        let (_, echo) = env.queue("echo").await;
        if echo["workers"] == 2 && registered_at.is_none() {
            registered_at = Some(Instant::now());
        }
        for id in &ids {
            let j = job(&env, id).await;
            assert_eq!(j["attempts"], 1, "a live worker's job was recovered: {j}");
        }
        let d = job(&env, &delayed).await;
        assert_eq!(d["state"], "scheduled", "the delayed job ran early: {d}");
        if registered_at.is_some_and(|t| t.elapsed() > Duration::from_secs(4)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the skewed worker never registered: {}",
            env.log(skewed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!env.exited(skewed), "{}", env.log(skewed));
    for id in &ids {
        let j = env.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(
            (j["state"].as_str(), j["attempts"].as_u64()),
            (Some("succeeded"), Some(1)),
            "{j}"
        );
    }
}
