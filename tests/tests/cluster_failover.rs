//! A Redis Cluster master failover in the middle of a run, with the
//! durability option on (`HOPPER_REDIS_WAIT_REPLICAS=1`): on a private
//! 6-node cluster (3 masters, 3 replicas; the shared one on 7101-7106 stays
//! untouched), the API takes a steady stream of echo and noop jobs and a
//! worker drains them; the master owning the echo queue's slot is SIGKILLed
//! mid-run. Its replica is promoted, the killed node comes back as the new
//! master's replica (with one replica per master, `WAIT 1` cannot be met
//! until one is back: pushes of that queue are refused with 503 meanwhile,
//! never lost), and then: the API accepts echo jobs again and the worker
//! runs them within a few seconds (`failover_pause_s`, printed as JSON),
//! and every job answered 202 ends succeeded, with exactly one record.
//!
//! And the whole cluster down: submissions answer 503 with Retry-After and
//! the worker resumes when the cluster is back.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use hopper_tests::{PrivateCluster, TestEnv};
use serde_json::{Value, json};
use uuid::Uuid;

/// Jobs the run submits (accepted ones), half echo, half noop.
const JOBS: usize = 2_000;
/// Accepted jobs before the master is killed.
const KILL_AFTER: usize = 600;
/// Jobs per batch submission.
const BATCH: usize = 20;
/// One batch this often: 400 jobs/s, so the run spans the failover.
const PACE: Duration = Duration::from_millis(50);

/// What the submitter saw: accepted batches (when, queue, ids) and refusals.
#[derive(Default)]
struct Submissions {
    accepted: Vec<(Instant, &'static str, Vec<Uuid>)>,
    refused: Vec<(Instant, &'static str, u16, String)>,
}

impl Submissions {
    fn count(&self) -> usize {
        self.accepted.iter().map(|(_, _, ids)| ids.len()).sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_failover_loses_no_acknowledged_job() {
    let mut cluster = PrivateCluster::start();
    let url = cluster.url();
    let mut env = TestEnv::new(&[
        ("REDIS_URL", url.as_str()),
        ("HOPPER_REDIS_WAIT_REPLICAS", "1"),
        ("HOPPER_REDIS_WAIT_TIMEOUT_MS", "500"),
    ]);
    let api = env.start_api().await;
    env.start_worker("echo,noop", &[]);

    let slot = cluster.slot(&format!("{{t-{}:echo}}", env.id));
    let ports = cluster.ports();
    let doomed = cluster
        .master_of(slot, ports[0])
        .expect("the echo queue's slot has a master");

    // The submitter: batches of echo and noop jobs, one after the other,
    // until JOBS are accepted and echo jobs were accepted again after the
    // kill. A refusal (503 while the slot has no master, or no replica for
    // WAIT) is recorded and the batch dropped: only what was answered 202
    // must survive.
    let seen = Arc::new(Mutex::new(Submissions::default()));
    let killed: Arc<OnceLock<Instant>> = Arc::default();
    let submitter = {
        let (seen, killed) = (seen.clone(), killed.clone());
        let (http, api) = (env.http().clone(), api.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            let mut pace = tokio::time::interval(PACE);
            loop {
                let done = {
                    let seen = seen.lock().unwrap();
                    let echo_back = killed.get().is_some_and(|k| {
                        seen.accepted
                            .iter()
                            .any(|(at, q, _)| at > k && *q == "echo")
                    });
                    seen.count() >= JOBS && echo_back
                };
                if done {
                    break;
                }
                pace.tick().await;
                let queue = if n.is_multiple_of(2) { "echo" } else { "noop" };
                let batch: Vec<Value> = (0..BATCH)
                    .map(|i| match queue {
                        "echo" => json!({"message": format!("{n}-{i}")}),
                        _ => json!({}),
                    })
                    .collect();
                n += 1;
                let res = http
                    .post(format!("{api}/v1/jobs/{queue}/batch"))
                    .json(&batch)
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await;
                let at = Instant::now();
                let (status, body) = match res {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let retry_after = r.headers().contains_key("retry-after");
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 503 {
                            assert!(retry_after, "a 503 says when to retry: {body}");
                        }
                        (status, body)
                    }
                    Err(e) => (0, json!(e.to_string())),
                };
                if status == 202 {
                    let ids = body["ids"]
                        .as_array()
                        .expect("ids")
                        .iter()
                        .map(|v| v.as_str().and_then(|s| s.parse().ok()).expect("an id"))
                        .collect();
                    seen.lock().unwrap().accepted.push((at, queue, ids));
                } else {
                    assert!(
                        status == 503 || status == 0,
                        "only 503 (or a dropped connection) during a failover: {status} {body}"
                    );
                    let refusal = (at, queue, status, body.to_string());
                    seen.lock().unwrap().refused.push(refusal);
                }
            }
        })
    };

    hopper_tests::until(
        "jobs accepted before the kill",
        Duration::from_secs(60),
        || {
            let seen = seen.clone();
            async move { seen.lock().unwrap().count() >= KILL_AFTER }
        },
    )
    .await;

    let killed_at = Instant::now();
    killed.set(killed_at).expect("killed once");
    let killed_wall = SystemTime::now();
    let promoted = tokio::task::block_in_place(|| {
        cluster.kill(doomed);
        let promoted = cluster.wait_promoted(slot, doomed, Duration::from_secs(30));
        // Back as the new master's replica, so WAIT 1 can be met again.
        cluster.up(doomed);
        promoted
    });
    let promoted_s = killed_at.elapsed().as_secs_f64();
    hopper_tests::until(
        "the killed node resyncs as a replica",
        Duration::from_secs(30),
        || {
            let live = cluster.connected_replicas(promoted);
            async move { live >= 1 }
        },
    )
    .await;

    tokio::time::timeout(Duration::from_secs(120), submitter)
        .await
        .expect("the submitter finishes within 2 minutes")
        .expect("the submitter did not panic");

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let echo_back = seen
        .accepted
        .iter()
        .find(|(at, queue, _)| *at > killed_at && *queue == "echo")
        .map(|(at, _, ids)| (at.duration_since(killed_at), ids.clone()))
        .expect("echo jobs were accepted after the failover");
    let refused_echo = seen.refused.iter().filter(|r| r.1 == "echo").count();
    let refused_noop = seen.refused.iter().filter(|r| r.1 == "noop").count();
    // When and why submissions were refused, seconds after the kill.
    let refusals: Vec<Value> = seen
        .refused
        .iter()
        .map(|(at, queue, status, body)| {
            let error = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|b| b["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.chars().take(80).collect());
            let after = at.saturating_duration_since(killed_at).as_secs_f64();
            json!([(after * 10.0).round() / 10.0, queue, status, error])
        })
        .collect();
    eprintln!("refusals (s after the kill, queue, status, error): {refusals:?}");

    // Every accepted job ends succeeded, one record each.
    let ids: Vec<Uuid> = seen
        .accepted
        .iter()
        .flat_map(|(_, _, ids)| ids.iter().copied())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "every accepted job has an id of its own"
    );
    let pool = env.pool();
    let db = pool.get().await.expect("postgres");
    let deadline = Instant::now() + Duration::from_secs(180);
    let (succeeded, rows) = loop {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) \
                 FROM job_records WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .expect("count records");
        let (succeeded, rows): (i64, i64) = (row.get(0), row.get(1));
        if succeeded as usize == ids.len() || Instant::now() > deadline {
            break (succeeded, rows);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing: Vec<String> = if (succeeded as usize) < ids.len() {
        db.query(
            "SELECT i::text FROM unnest($1::uuid[]) AS i \
             WHERE NOT EXISTS (SELECT 1 FROM job_records r WHERE r.id = i AND r.state = 'succeeded') \
             LIMIT 5",
            &[&ids],
        )
        .await
        .expect("missing ids")
        .iter()
        .map(|r| r.get(0))
        .collect()
    } else {
        Vec::new()
    };
    assert_eq!(
        (succeeded as usize, rows as usize),
        (ids.len(), ids.len()),
        "every job answered 202 succeeded, one record each; not yet succeeded, e.g.: {missing:?}"
    );

    // The worker carried on: when the first echo jobs accepted after the
    // kill had run.
    let (accepted_after, first_ids) = echo_back;
    let first_run: Option<SystemTime> = db
        .query_one(
            "SELECT min(finished_at) FROM job_records WHERE id = ANY($1)",
            &[&first_ids],
        )
        .await
        .expect("finish time")
        .get(0);
    let resumed = first_run
        .expect("they ran")
        .duration_since(killed_wall)
        .unwrap_or_default()
        .as_secs_f64();
    let reruns: i64 = db
        .query_one(
            "SELECT count(*) FROM job_records WHERE id = ANY($1) AND attempts > 1",
            &[&ids],
        )
        .await
        .expect("reruns")
        .get(0);

    let pause = accepted_after.as_secs_f64();
    println!(
        "{}",
        json!({
            "failover_pause_s": (pause * 100.0).round() / 100.0,
            "worker_resumed_s": (resumed * 100.0).round() / 100.0,
            "promoted_after_s": (promoted_s * 100.0).round() / 100.0,
            "jobs_accepted": ids.len(),
            "refused_batches_echo": refused_echo,
            "refused_batches_noop": refused_noop,
            "jobs_run_twice": reruns,
        })
    );
    assert!(
        pause < 20.0,
        "the API accepted echo jobs again only {pause:.1} s after the kill"
    );
    assert!(
        resumed < 30.0,
        "the worker ran echo jobs again only {resumed:.1} s after the kill"
    );
}

/// The whole cluster down for a while: the API refuses submissions with 503
/// and Retry-After (nothing accepted and dropped), and the worker resumes
/// when the cluster is back, finishing what was queued before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_outage_refuses_submissions_with_503_and_workers_resume() {
    let mut cluster = PrivateCluster::start();
    let url = cluster.url();
    let mut env = TestEnv::new(&[("REDIS_URL", url.as_str())]);
    env.start_api().await;
    env.start_worker("echo", &[]);
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({"message": i.to_string(), "sleep_ms": 50}))
        .collect();
    let ids = env.submit_batch("echo", &batch).await;
    hopper_tests::until("a job ran", Duration::from_secs(30), || {
        let env = &env;
        let first = ids[0].clone();
        async move { env.get(&format!("/v1/jobs/{first}")).await.1["state"] == "succeeded" }
    })
    .await;

    tokio::task::block_in_place(|| cluster.stop_all());
    let down = Instant::now();
    let mut refused = 0;
    while down.elapsed() < Duration::from_secs(10) {
        let res = env
            .http()
            .post(env.url("/v1/jobs/echo"))
            .json(&json!({"message": "during the outage"}))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(res.status(), 503, "nothing is accepted without Redis");
        assert!(res.headers().get("retry-after").is_some());
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
        refused += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(refused > 0);
    tokio::task::block_in_place(|| cluster.up_all());

    for id in &ids {
        let job = env.wait_final(id, Duration::from_secs(90)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    // New work is accepted and served again.
    let (s, b) = env
        .post("/v1/jobs/echo", &json!({"message": "after"}))
        .await;
    assert_eq!(s, 202, "{b}");
    let job = env
        .wait_final(b["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

/// What the durability option costs, on the shared local cluster
/// (`scripts/setup redis-cluster`, `$HOPPER_CLUSTER_URL`; only keys under
/// this test's own prefixes are written, and removed): 5,000 no-op jobs
/// pushed one by one (32 at once, as API requests would) and drained
/// (4 claimers of 25, each batch acknowledged by one `ack_many`, as a
/// worker's group commit does), with `HOPPER_REDIS_WAIT_REPLICAS` 0 and 1.
/// Prints one JSON line. Run by hand:
/// `cargo test -p hopper-tests --test cluster_failover durability_cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement on the shared cluster, run by hand"]
async fn durability_cost() {
    use futures::StreamExt;
    use hopper_queue::{QueueClient, WorkerId, client::Ack};

    const N: usize = 5_000;
    let url = std::env::var("HOPPER_CLUSTER_URL")
        .expect("HOPPER_CLUSTER_URL (scripts/env.sh) names the shared cluster");
    let mut report = serde_json::Map::new();
    for replicas in ["0", "1"] {
        let env = TestEnv::new(&[
            ("REDIS_URL", url.as_str()),
            ("HOPPER_REDIS_WAIT_REPLICAS", replicas),
        ]);
        let client = QueueClient::connect(&env.config()).await.expect("cluster");
        let queue = hopper_shared::QueueName::from_static("noop");
        let opts = hopper_queue::PushOptions::default();

        let started = Instant::now();
        let pushed: Vec<Uuid> = futures::stream::iter(0..N)
            .map(|_| {
                let (client, queue, opts) = (&client, queue.clone(), &opts);
                async move { client.push(queue, &json!({}), opts).await.expect("push").id }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let push_s = started.elapsed().as_secs_f64();
        assert_eq!(pushed.len(), N);

        let started = Instant::now();
        let drained: usize = futures::future::join_all((0..4).map(|_| {
            let (client, queue) = (client.clone(), queue.clone());
            async move {
                let worker = WorkerId::generate();
                client.register(&queue, &worker).await.expect("register");
                let mut conn = client.connection();
                let mut done = 0;
                loop {
                    let batch = client
                        .claim(&mut conn, &queue, &worker, 25, Duration::from_secs(30))
                        .await
                        .expect("claim");
                    if batch.jobs.is_empty() {
                        return done;
                    }
                    let acks: Vec<Ack> = batch
                        .jobs
                        .iter()
                        .map(|j| Ack::of(j, &worker, "null"))
                        .collect();
                    let lost = client.ack_many(&queue, &acks).await.expect("ack");
                    assert!(lost.is_empty());
                    done += acks.len();
                }
            }
        }))
        .await
        .into_iter()
        .sum();
        let drain_s = started.elapsed().as_secs_f64();
        assert_eq!(drained, N);
        remove_keys(&url, &format!("t-{}", env.id));

        let round = |x: f64| (x * 10.0).round() / 10.0;
        report.insert(
            format!("wait_replicas_{replicas}"),
            json!({
                "push_jobs_per_s": round(N as f64 / push_s),
                "drain_jobs_per_s": round(N as f64 / drain_s),
                "push_us_per_job": round(push_s * 1e6 / N as f64),
                "drain_us_per_job": round(drain_s * 1e6 / N as f64),
            }),
        );
    }
    println!("{}", Value::Object(report));
}

/// Removes every key under `prefix` from each master of the cluster `url`
/// (the keys of one queue share a slot, so one `DEL` takes many).
fn remove_keys(url: &str, prefix: &str) {
    use redis::Commands;
    let hosts = url.trim_start_matches("redis+cluster://");
    for host in hosts.split(',') {
        let Ok(client) = redis::Client::open(format!("redis://{host}")) else {
            continue;
        };
        let Ok(mut conn) = client.get_connection() else {
            continue;
        };
        let keys: Vec<String> = conn
            .scan_match::<_, String>(format!("{{{prefix}:*"))
            .map(|it| it.filter_map(Result::ok).collect())
            .unwrap_or_default();
        let mut by_tag: std::collections::BTreeMap<&str, Vec<&String>> = Default::default();
        for key in &keys {
            by_tag
                .entry(key.split('}').next().unwrap_or(""))
                .or_default()
                .push(key);
        }
        for chunk in by_tag.values().flat_map(|keys| keys.chunks(500)) {
            // A replica refuses (READONLY); its master removes them.
            let _: Result<(), _> = conn.del(chunk);
        }
    }
}

/// The durability option on a Redis without the replicas it asks for (the
/// shared single server has none): a push is refused with
/// `NotReplicated`, naming the Idempotency-Key, yet the job exists (the
/// same key answers it); an ack and a fail that fall short are kept.
#[tokio::test]
async fn short_of_replicas_a_push_is_refused_and_acks_are_kept() {
    use hopper_queue::{AfterFailure, PushOptions, QueueClient, QueueError, WorkerId, client::Ack};

    let env = TestEnv::new(&[
        ("HOPPER_REDIS_WAIT_REPLICAS", "1"),
        ("HOPPER_REDIS_WAIT_TIMEOUT_MS", "50"),
    ]);
    let durable = QueueClient::connect(&env.config()).await.expect("redis");
    let mut vars = env.env.clone();
    vars.insert("HOPPER_REDIS_WAIT_REPLICAS".into(), "0".into());
    let config = hopper_shared::Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
    let plain = QueueClient::connect(&config).await.expect("redis");
    let queue = hopper_shared::QueueName::from_static("echo");
    let keyed = PushOptions {
        idempotency_key: Some("once".into()),
        ..Default::default()
    };

    let started = Instant::now();
    let refused = durable
        .push(&queue, &json!({"message": "a"}), &keyed)
        .await
        .expect_err("no replica acknowledges");
    assert!(
        matches!(
            refused,
            QueueError::NotReplicated {
                acked: 0,
                asked: 1,
                timeout_ms: 50
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("Idempotency-Key"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "WAIT is bounded"
    );
    // Written all the same: the key answers the job.
    let again = plain
        .push(&queue, &json!({"message": "a"}), &keyed)
        .await
        .expect("push");
    assert!(!again.created, "the refused push had stored the job");
    let batch = durable
        .push_many(&queue, &[json!({"message": "b"})], &PushOptions::default())
        .await;
    assert!(
        matches!(batch, Err(QueueError::NotReplicated { .. })),
        "{batch:?}"
    );

    // An ack and a fail that no replica acknowledged are kept.
    let worker = WorkerId::generate();
    durable.register(&queue, &worker).await.expect("register");
    let mut conn = durable.connection();
    let claimed = durable
        .claim(&mut conn, &queue, &worker, 2, Duration::from_secs(30))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(
        claimed.len(),
        2,
        "the refused push and batch had queued their jobs"
    );
    let ack = Ack {
        id: claimed[0].id,
        result: "\"ok\"".into(),
        worker: worker.clone(),
        lease: claimed[0].lease,
    };
    assert!(
        durable
            .ack_many(&queue, &[ack])
            .await
            .expect("ack")
            .is_empty()
    );
    let failed = durable
        .fail(
            &queue,
            &worker,
            claimed[1].id,
            claimed[1].lease,
            "boom",
            AfterFailure::RetryIn(Duration::from_secs(60)),
        )
        .await
        .expect("fail");
    assert!(failed, "the fail was written");
    let acked = plain
        .job(&queue, claimed[0].id)
        .await
        .expect("job")
        .expect("it exists");
    assert_eq!(acked.state, hopper_shared::jobs::JobState::Succeeded);
    let retried = plain
        .job(&queue, claimed[1].id)
        .await
        .expect("job")
        .expect("it exists");
    assert_eq!(retried.state, hopper_shared::jobs::JobState::Retrying);
}
