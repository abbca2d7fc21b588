//! `scripts/cluster-spread` moves a partitioned queue's slots to distinct
//! masters while the queue runs, and no job is lost or run twice.
//!
//! A private Redis Cluster of 3 masters without replicas (its nodes stopped
//! by pid when the test ends, panics included); a queue of 3 partitions
//! (the built-in `echo`) under a key prefix chosen so that its partitions'
//! slots share a master on the cluster's default layout (so the script has
//! at least one slot to move); the API (`GET /v1/queues/{queue}/placement`)
//! and the CLI (`hopper queues placement`) saying so before and after;
//! thousands of jobs pushed before and, in batches of more than one
//! `push_batch.lua` per partition, while the script moves the slots;
//! consumers claiming and acknowledging through `QueueClient` the whole
//! time. Every job must have run exactly once (each id claimed once, each
//! argument seen once, the queue's stats agreeing), no operation may have
//! failed (while a slot moves its scripts are answered `ASK`/`TRYAGAIN`
//! and sent again: `queue/src/connection.rs`), and the placement must then
//! say 3 masters used, spread. A second run of the script moves nothing.

use std::{
    collections::HashMap,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hopper_queue::{PushOptions, QueueClient, WorkerId, client::Ack, placement};
use hopper_shared::{Config, QueueName};
use hopper_tests::{PrivateCluster, TestEnv, private_cluster::cli, workspace};
use serde_json::json;

/// Jobs pushed before the script starts (1,000 per partition: two
/// `push_batch.lua` calls each).
const BEFORE: usize = 3_000;
/// Jobs per push while the slots move (600 per partition: two calls each,
/// sent as one pipeline per call — the case a redirected pipeline ran twice).
const DURING_BATCH: usize = 1_800;
/// At most this many pushes while the slots move.
const DURING_PUSHES: usize = 4;
/// Everything is over within this.
const WITHIN: Duration = Duration::from_secs(240);

/// The built-in `echo` queue (so the API serves it) split in 3.
fn echo() -> QueueName {
    QueueName::new("echo").unwrap()
}

/// A key prefix under which two of `echo`'s 3 partitions share a master on
/// `nodes` (the cluster's default layout) and the third is on another.
fn unspread_prefix(nodes: &[placement::ClusterNode]) -> String {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    (0..1000)
        .map(|i| format!("cs-{run}-{i}"))
        .find(|prefix| {
            let parts: Vec<(QueueName, String)> = (0..3)
                .map(|k| {
                    let p = echo().partition(k);
                    let tag = hopper_queue::QueueKeys::new(prefix, p.clone())
                        .tag()
                        .to_owned();
                    (p, tag)
                })
                .collect();
            // Two masters used of three, as the test asserts before the move:
            // an unspread placement is also all three on one master (one time
            // in seven, and a fresh-clone CI run drew it).
            let place = placement::place(&echo(), &parts, Some(nodes));
            !place.spread && place.masters_used == 2
        })
        .expect("some prefix puts two partitions on one master and one on another")
}

/// What the consumers saw: each job id's claims and each argument's runs.
#[derive(Default)]
struct Seen {
    claims: HashMap<uuid::Uuid, u32>,
    runs: HashMap<i64, u32>,
    errors: Vec<String>,
}

/// Claims and acknowledges `partition`'s jobs until `stop`.
async fn consume(
    client: QueueClient,
    partition: QueueName,
    seen: Arc<Mutex<Seen>>,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let worker = WorkerId::generate();
    let lease = Duration::from_secs(300);
    client
        .register(&partition, &worker)
        .await
        .expect("register");
    let mut conn = client
        .dedicated_connection(Duration::from_secs(1))
        .await
        .expect("connection");
    while !stop.load(Ordering::Relaxed) {
        let batch = match client
            .claim(&mut conn, &partition, &worker, 50, lease)
            .await
        {
            Ok(b) => b.jobs,
            Err(e) => {
                seen.lock().unwrap().errors.push(format!("claim: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        {
            let mut s = seen.lock().unwrap();
            for j in &batch {
                *s.claims.entry(j.id).or_default() += 1;
                let args: serde_json::Value = serde_json::from_str(&j.args).unwrap();
                *s.runs.entry(args["n"].as_i64().unwrap()).or_default() += 1;
            }
        }
        let acks: Vec<Ack> = batch.iter().map(|j| Ack::of(j, &worker, "null")).collect();
        match client.ack_many(&partition, &acks).await {
            Ok(lost) if lost.is_empty() => {
                done.fetch_add(acks.len(), Ordering::Relaxed);
            }
            Ok(lost) => seen
                .lock()
                .unwrap()
                .errors
                .push(format!("ack lost {} job(s)", lost.len())),
            Err(e) => seen.lock().unwrap().errors.push(format!("ack: {e}")),
        }
    }
}

/// Whether the node on `port` is moving a slot away (`[slot->-node]` in
/// its own line of `CLUSTER NODES`).
fn moving_away(port: u16) -> bool {
    cli(port, &["cluster", "nodes"]).is_some_and(|nodes| {
        nodes
            .lines()
            .any(|l| l.contains("myself") && l.contains("->-"))
    })
}

/// Runs `scripts/cluster-spread` (blocking); its output.
fn spread(seed: u16, prefix: &str, queue: &QueueName) -> String {
    let out = Command::new(workspace().join("scripts/cluster-spread"))
        // 4 keys per MIGRATE: the slot takes seconds to move, longer than
        // the cluster client's own retries last.
        .env("CLUSTER_SPREAD_BATCH", "4")
        .args(["--prefix", prefix])
        .arg(format!("127.0.0.1:{seed}"))
        .arg(queue.as_str())
        .arg("3")
        .output()
        .expect("run scripts/cluster-spread");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/cluster-spread failed:\n{text}"
    );
    text
}

/// The N of the script's last line, `moved N slot(s); …`.
fn moved(output: &str) -> usize {
    output
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("moved "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `moved N` line:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_partitions_slot_live_loses_no_job_and_runs_none_twice() {
    let cluster = PrivateCluster::start_with(3, 0);
    let seed = cluster.ports()[0];
    let nodes = placement::parse_cluster_nodes(&cli(seed, &["cluster", "nodes"]).unwrap());
    let prefix = unspread_prefix(&nodes);
    let queue = echo();
    let url = cluster.url();
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("HOPPER_KEY_PREFIX", prefix.as_str()),
        ("HOPPER_QUEUE_ECHO_PARTITIONS", "3"),
    ];
    let config = Config::from_vars(
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    )
    .unwrap();
    let client = QueueClient::connect(&config).await.expect("the cluster");
    let before = client.placement(&queue).await.unwrap();
    assert_eq!(before.partitions.len(), 3);
    assert!(
        !before.spread && before.masters_used == 2 && before.masters == 3,
        "{before:?}"
    );
    for p in &before.partitions {
        assert_eq!(p.slot, cluster.slot(&format!("{{{prefix}:{}}}", p.name)));
    }
    // The API and the CLI say the same, and name the command that moves
    // the partitions; an unknown queue is 404.
    let mut env = TestEnv::new(&vars);
    env.start_api().await;
    let (status, body) = env.get("/v1/queues/echo/placement").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::to_value(&before).unwrap());
    let (status, body) = env.get("/v1/queues/no-such-queue/placement").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_task")),
        "{body}"
    );
    let out = env.cli(&["queues", "placement", "echo"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("3 partition(s) on 2 of 3 master(s)")
            && said.contains("scripts/cluster-spread --prefix \"$HOPPER_KEY_PREFIX\" "),
        "{said}"
    );

    let run = async {
        let opts = PushOptions::default();
        let batch = |from: usize, n: usize| -> Vec<serde_json::Value> {
            (from..from + n).map(|n| json!({ "n": n })).collect()
        };
        client
            .push_many(queue.clone(), &batch(0, BEFORE), &opts)
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let done = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let consumers: Vec<_> = client
            .partitions(&queue)
            .await
            .unwrap()
            .into_iter()
            .map(|p| {
                tokio::spawn(consume(
                    client.clone(),
                    p,
                    seen.clone(),
                    done.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        // The script runs beside the consumers and the pushes.
        let (p, q) = (prefix.clone(), queue.clone());
        let mover = tokio::task::spawn_blocking(move || spread(seed, &p, &q));
        // Pushes while the slot is migrating (they wait for its end: every
        // push declares job keys that do not exist yet, so TRYAGAIN).
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.ports().iter().any(|&p| moving_away(p)) {
            assert!(
                !mover.is_finished(),
                "the script ended before any slot moved"
            );
            assert!(Instant::now() < deadline, "no slot migrating within 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut pushed = BEFORE;
        for _ in 0..DURING_PUSHES {
            let t0 = Instant::now();
            let ids = client
                .push_many(queue.clone(), &batch(pushed, DURING_BATCH), &opts)
                .await
                .expect("a push while the slot moves");
            assert_eq!(ids.len(), DURING_BATCH);
            println!("pushed {DURING_BATCH} jobs in {:?}", t0.elapsed());
            // Reads across the partitions (one command per node,
            // `RedisConn::query_spread`) find the jobs meanwhile.
            for id in [ids[0], ids[DURING_BATCH - 1]] {
                let found = client
                    .partition_of(&queue, id)
                    .await
                    .expect("a read across partitions while the slot moves");
                assert!(found.is_some(), "job {id} in no partition");
            }
            pushed += DURING_BATCH;
            if mover.is_finished() {
                break;
            }
        }
        let output = mover.await.unwrap();
        println!("{output}");
        // Everything pushed runs.
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.load(Ordering::Relaxed) < pushed {
            if Instant::now() >= deadline {
                let errors = seen.lock().unwrap().errors.clone();
                panic!(
                    "{} of {pushed} jobs done after 120 s; errors: {errors:?}",
                    done.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Anything run twice would show up a moment later.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for c in consumers {
            c.await.unwrap();
        }
        let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
        (output, pushed, seen)
    };
    let (output, pushed, seen) = tokio::time::timeout(WITHIN, run)
        .await
        .expect("the test ends within its bound");

    assert!(moved(&output) >= 1, "the script moved no slot:\n{output}");
    assert!(
        seen.errors.is_empty(),
        "operations failed: {:?}",
        seen.errors
    );
    let twice: Vec<_> = seen.claims.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs claimed more than once: {twice:?}");
    assert_eq!(seen.claims.len(), pushed, "every job claimed");
    let runs: Vec<i64> = {
        let mut r: Vec<i64> = seen
            .runs
            .iter()
            .filter(|(_, n)| **n != 1)
            .map(|(k, _)| *k)
            .collect();
        r.sort_unstable();
        r
    };
    assert!(runs.is_empty(), "arguments run other than once: {runs:?}");
    assert_eq!(seen.runs.len(), pushed, "every argument ran");
    let stats = client.stats(queue.clone()).await.unwrap();
    assert_eq!(
        (stats.pending, stats.running, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.succeeded_recent, pushed as u64, "{stats:?}");

    let after = client.placement(&queue).await.unwrap();
    assert!(after.spread && after.masters_used == 3, "{after:?}");
    for p in &after.partitions {
        assert_eq!(
            cluster.master_of(p.slot, seed),
            p.master.rsplit(':').next().and_then(|s| s.parse().ok()),
            "{after:?}"
        );
    }
    let out = env.cli(&["queues", "placement", "echo", "--json"]);
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(said, serde_json::to_value(&after).unwrap());
    let out = env.cli(&["queues", "placement", "echo"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("3 partition(s) on 3 of 3 master(s)") && !said.contains("cluster-spread"),
        "{said}"
    );
    // Idempotent: a second run moves nothing.
    let again = spread(seed, &prefix, &queue);
    assert_eq!(moved(&again), 0, "{again}");
}

/// Why `QueueClient::eval_durably` sends each script in a pipeline of its
/// own on a cluster: the redis crate sends a whole pipeline again when one
/// of its commands is redirected, so a script before it that ran, runs
/// again. Here the first script (an `INCR` of a key the source still holds)
/// runs, the second (declaring a key that does not exist) is redirected
/// because the slot is migrating, and the counter ends above 1.
#[tokio::test]
async fn the_redis_crate_resends_a_whole_pipeline_when_one_command_is_redirected() {
    let cluster = PrivateCluster::start_with(3, 0);
    let seed = cluster.ports()[0];
    let counter = "{pipeline-demo}:counter";
    let slot = cluster.slot(counter);
    let src = cluster.master_of(slot, seed).unwrap();
    let dst = *cluster.ports().iter().find(|&&p| p != src).unwrap();
    let id = |port: u16| cli(port, &["cluster", "myid"]).unwrap().trim().to_owned();
    assert_eq!(cli(src, &["set", counter, "0"]).unwrap().trim(), "OK");
    let setslot = |port: u16, state: &str, node: &str| {
        let out = cli(
            port,
            &["cluster", "setslot", &slot.to_string(), state, node],
        )
        .unwrap();
        assert_eq!(out.trim(), "OK", "{out}");
    };
    setslot(dst, "importing", &id(src));
    setslot(src, "migrating", &id(dst));

    let nodes: Vec<String> = cluster
        .ports()
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let client = redis::cluster::ClusterClient::builder(nodes)
        .retries(3)
        .min_retry_wait(10)
        .max_retry_wait(50)
        .build()
        .unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    pipe.cmd("EVAL")
        .arg("return redis.call('INCR', KEYS[1])")
        .arg(1)
        .arg(counter);
    pipe.cmd("EVAL")
        .arg("return redis.call('MGET', KEYS[1], KEYS[2])")
        .arg(2)
        .arg(counter)
        .arg("{pipeline-demo}:missing");
    let answer: redis::RedisResult<redis::Value> = pipe.query_async(&mut conn).await;
    let ran: i64 = cli(src, &["get", counter]).unwrap().trim().parse().unwrap();
    println!("the first script ran {ran} times; the pipeline answered {answer:?}");
    assert!(
        ran > 1,
        "the first script ran {ran} time(s) (answer {answer:?}): the redis crate no longer \
         resends a redirected pipeline whole, and eval_durably's split may be dropped"
    );
}
