//! `hopper-bench redis-round`: what Redis spends per job, node by node and
//! script by script — the measurement behind `scripts/bench/cluster` — and
//! the node list every Redis-wide chore here needs (a cluster's keys live on
//! every master, and `SCAN` or `INFO` on a cluster connection reaches one
//! random node).
//!
//! One round on the Redis `REDIS_URL` names (one server or a cluster):
//! `CONFIG RESETSTAT` and `INFO CPU` on every node, `SLOWLOG` set to log
//! every command (the old settings come back at the end); `jobs` no-op jobs
//! pushed through the Rust client (timed: the enqueue rate), then a line
//! `{"filled": …}` tells the script to start the worker; the drain is timed
//! as `hopper-bench drain` times it. `INFO CPU` again on every node after
//! the fill and after the drain: each node's `used_cpu_sys + used_cpu_user`
//! in ms per 1,000 jobs, for enqueue, drain and both. Per script:
//! `INFO commandstats` gives all of `EVALSHA`'s µs (exact, but one number
//! for every script); the slow log, read and emptied every 100 ms in one
//! `MULTI` (so no entry falls between the read and the reset), says which
//! script each call ran (its SHA, named by [`hopper_queue::script_hashes`])
//! and how long it took; `EVALSHA`'s µs are shared out in those
//! proportions and divided by the jobs.

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use hopper_queue::{QueueClient, connection, placement};
use hopper_shared::Config;
use serde_json::{Map, Value, json};

/// One Redis server of the setup: its URL and role.
#[derive(Debug, Clone)]
pub struct Node {
    /// `redis://host:port` (with the URL's credentials).
    pub url: String,
    /// `host:port`, as reported.
    pub addr: String,
    /// `master` (or the single server) or `replica`.
    pub role: &'static str,
}

/// Every node of the Redis `url` names: the one server, or each master and
/// replica of the cluster (failed nodes left out).
pub async fn nodes(url: &str) -> anyhow::Result<Vec<Node>> {
    if !connection::is_cluster_url(url) {
        let addr = url
            .rsplit('@')
            .next()
            .unwrap_or(url)
            .trim_start_matches("redis://")
            .trim_start_matches("rediss://")
            .trim_end_matches('/')
            .to_owned();
        return Ok(vec![Node {
            url: url.to_owned(),
            addr,
            role: "master",
        }]);
    }
    let seeds = connection::cluster_nodes(url)?;
    let mut listing = None;
    for seed in &seeds {
        if let Ok(mut conn) = plain(seed).await
            && let Ok(text) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut conn)
                .await
        {
            listing = Some((seed.clone(), text));
            break;
        }
    }
    let Some((seed, text)) = listing else {
        bail!("no node of the cluster answers CLUSTER NODES");
    };
    // `redis://[auth@]host:port` → `redis://[auth@]`: the prefix every
    // node's URL shares.
    let host_at = seed
        .rfind('@')
        .map_or_else(|| seed.find("://").unwrap() + 3, |i| i + 1);
    let prefix = &seed[..host_at];
    let mut found: Vec<Node> = placement::parse_cluster_nodes(&text)
        .into_iter()
        .filter(|n| !n.failed)
        .map(|n| Node {
            url: format!("{prefix}{}", n.addr),
            role: if n.master { "master" } else { "replica" },
            addr: n.addr,
        })
        .collect();
    found.sort_by(|a, b| a.addr.cmp(&b.addr));
    Ok(found)
}

/// A plain connection to one server (no cluster routing), patient enough
/// for a slow log of thousands of entries on a busy server.
pub(crate) async fn plain(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// Deletes every key matching `pattern` on every master of the Redis `url`
/// names, one key per command (a cluster node refuses a DEL across slots);
/// how many.
pub async fn delete_matching(url: &str, pattern: &str) -> anyhow::Result<usize> {
    let mut deleted = 0;
    for node in nodes(url).await?.iter().filter(|n| n.role == "master") {
        let mut conn = plain(&node.url).await?;
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter: redis::AsyncIter<String> =
                redis::AsyncCommands::scan_match(&mut conn, pattern).await?;
            while let Some(k) = iter.next_item().await {
                keys.push(k?);
            }
        }
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("UNLINK").arg(key).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        deleted += keys.len();
    }
    Ok(deleted)
}

/// `used_cpu_sys + used_cpu_user` of one server, in ms.
async fn cpu_ms(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (field("used_cpu_sys"), field("used_cpu_user")) {
        (Some(sys), Some(user)) => Ok((sys + user) * 1000.0),
        _ => bail!("INFO cpu without used_cpu_sys/used_cpu_user"),
    }
}

/// `EVALSHA`'s (calls, µs) since the last `CONFIG RESETSTAT`.
async fn evalsha_stats(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<(u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let Some(line) = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("cmdstat_evalsha:"))
    else {
        return Ok((0, 0));
    };
    let field = |name: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("calls"), field("usec")))
}

/// Per SHA: calls and µs the slow log saw.
type SlowlogTally = Arc<Mutex<HashMap<String, (u64, u64)>>>;

/// Reads and empties the slow log of `conn` in one `MULTI`, adding each
/// `EVALSHA` entry to `tally`.
async fn drain_slowlog(
    conn: &mut redis::aio::MultiplexedConnection,
    tally: &SlowlogTally,
) -> anyhow::Result<()> {
    let (entries, ()): (Vec<redis::Value>, ()) = redis::pipe()
        .atomic()
        .cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .cmd("SLOWLOG")
        .arg("RESET")
        .query_async(conn)
        .await?;
    let mut tally = tally.lock().expect("tally");
    for entry in entries {
        // [id, timestamp, µs, [command, args…], client addr, client name]
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let Some(us) = fields
            .get(2)
            .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
        else {
            continue;
        };
        let Some(redis::Value::Array(argv)) = fields.get(3) else {
            continue;
        };
        let args: Vec<String> = argv
            .iter()
            .take(2)
            .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
            .collect();
        if args.len() == 2 && args[0].eq_ignore_ascii_case("evalsha") {
            let e = tally.entry(args[1].to_lowercase()).or_default();
            e.0 += 1;
            e.1 += us;
        }
    }
    Ok(())
}

/// One measured round: see the module's comment.
pub async fn redis_round(
    config: &Config,
    client: &QueueClient,
    jobs: usize,
    timeout_s: u64,
    drain_here: Option<usize>,
) -> anyhow::Result<Value> {
    let nodes = nodes(&config.redis_url).await?;
    let mut conns = Vec::with_capacity(nodes.len());
    for node in &nodes {
        conns.push(
            plain(&node.url)
                .await
                .with_context(|| format!("cannot reach {}", node.addr))?,
        );
    }
    // Log every command; remember what to put back.
    let mut saved = Vec::with_capacity(nodes.len());
    for conn in &mut conns {
        let old: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("slowlog-*")
            .query_async(conn)
            .await?;
        saved.push(old);
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(0)
            .arg("slowlog-max-len")
            .arg(100_000)
            .query_async::<()>(conn)
            .await?;
        redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async::<()>(conn)
            .await?;
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(conn)
            .await?;
    }
    // How many masters the queue's partitions use (scripts/bench/cluster
    // spreads them first: `cluster_p3_masters_used`).
    let noop = hopper_shared::QueueName::from(hopper_shared::jobs::JobKind::Noop);
    let masters_used = client.placement(&noop).await?.masters_used;
    let result = measure(client, &nodes, &mut conns, jobs, timeout_s, drain_here)
        .await
        .map(|mut v| {
            v["masters_used"] = json!(masters_used);
            v
        });
    for (conn, old) in conns.iter_mut().zip(saved) {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET");
        for pair in old.chunks(2) {
            cmd.arg(&pair[0]).arg(&pair[1]);
        }
        if let Err(e) = cmd.query_async::<()>(conn).await {
            eprintln!("could not restore the slow log settings: {e}");
        }
        let _ = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async::<()>(conn)
            .await;
    }
    result
}

/// Claims and acknowledges every no-op job, `batch` at a time, partition
/// after partition: what a saturated worker's claim loop and group commit
/// send Redis, without a handler or Postgres.
async fn drain_in_process(
    client: &QueueClient,
    jobs: usize,
    batch: usize,
) -> anyhow::Result<Value> {
    use hopper_queue::client::Ack;
    let started = std::time::Instant::now();
    let queue = hopper_shared::QueueName::from(hopper_shared::jobs::JobKind::Noop);
    let lease = Duration::from_secs(300);
    let mut done = 0;
    for partition in client.partitions(&queue).await? {
        let worker = hopper_queue::WorkerId::generate();
        client.register(&partition, &worker).await?;
        let mut conn = client.dedicated_connection(Duration::from_secs(1)).await?;
        loop {
            let claimed = client
                .claim(&mut conn, &partition, &worker, batch, lease)
                .await?
                .jobs;
            if claimed.is_empty() {
                break;
            }
            let acks: Vec<Ack> = claimed
                .iter()
                .map(|j| Ack::of(j, &worker, "null"))
                .collect();
            anyhow::ensure!(
                client.ack_many(&partition, &acks).await?.is_empty(),
                "lease lost"
            );
            done += claimed.len();
        }
        client.deregister(&partition, &worker, "drained").await?;
    }
    anyhow::ensure!(done == jobs, "drained {done} of {jobs} jobs");
    Ok(json!({
        "drain_jobs_per_s": (jobs as f64 / started.elapsed().as_secs_f64()).round(),
    }))
}

async fn measure(
    client: &QueueClient,
    nodes: &[Node],
    conns: &mut [redis::aio::MultiplexedConnection],
    jobs: usize,
    timeout_s: u64,
    drain_here: Option<usize>,
) -> anyhow::Result<Value> {
    let tally: SlowlogTally = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for (node, conn) in nodes.iter().zip(conns.iter()) {
        if node.role != "master" {
            continue;
        }
        let (mut conn, tally, mut stopped) = (conn.clone(), tally.clone(), stopped.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let stopping = *stopped.borrow_and_update();
                drain_slowlog(&mut conn, &tally).await?;
                if stopping {
                    return anyhow::Ok(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => {}
                }
            }
        }));
    }
    let mut before = Vec::new();
    for conn in conns.iter_mut() {
        before.push(cpu_ms(conn).await?);
    }
    let enqueued = crate::enqueue_client(client, jobs, 1_000).await?;
    let mut filled = Vec::new();
    for conn in conns.iter_mut() {
        filled.push(cpu_ms(conn).await?);
    }
    // The script starts the worker on this line.
    println!("{}", json!({ "filled": jobs }));
    std::io::stdout().flush()?;
    let drained = match drain_here {
        Some(batch) => drain_in_process(client, jobs, batch).await?,
        None => crate::drain(client, jobs as i64, timeout_s).await?,
    };
    let mut after = Vec::new();
    for conn in conns.iter_mut() {
        after.push(cpu_ms(conn).await?);
    }
    stop.send_replace(true);
    for r in readers {
        r.await??;
    }

    let per_1k = |ms: f64| (ms / jobs as f64 * 1000.0 * 100.0).round() / 100.0;
    let mut cpu = Map::new();
    for (i, node) in nodes.iter().enumerate() {
        cpu.insert(
            node.addr.clone(),
            json!({
                "role": node.role,
                "enqueue": per_1k(filled[i] - before[i]),
                "drain": per_1k(after[i] - filled[i]),
                "total": per_1k(after[i] - before[i]),
            }),
        );
    }
    let (mut evalsha_calls, mut evalsha_us) = (0, 0);
    for (node, conn) in nodes.iter().zip(conns.iter_mut()) {
        if node.role == "master" {
            let (calls, us) = evalsha_stats(conn).await?;
            evalsha_calls += calls;
            evalsha_us += us;
        }
    }
    let names: HashMap<String, &str> = hopper_queue::script_hashes()
        .into_iter()
        .map(|(name, sha)| (sha, name))
        .collect();
    let tally = tally.lock().expect("tally").clone();
    let (seen_calls, seen_us) = tally
        .values()
        .fold((0, 0), |(c, u), (calls, us)| (c + calls, u + us));
    let mut by_script: HashMap<String, f64> = HashMap::new();
    for (sha, (_, us)) in &tally {
        let name = names
            .get(sha)
            .map_or_else(|| format!("sha:{sha}"), |n| (*n).to_owned());
        let share = if seen_us == 0 {
            0.0
        } else {
            *us as f64 / seen_us as f64
        };
        *by_script.entry(name).or_default() += share * evalsha_us as f64 / jobs as f64;
    }
    let by_script: Map<String, Value> = {
        let mut v: Vec<(String, f64)> = by_script.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.into_iter()
            .map(|(k, us)| (k, json!((us * 100.0).round() / 100.0)))
            .collect()
    };
    Ok(json!({
        "jobs": jobs,
        "nodes": nodes.len(),
        "enqueue_jobs_per_s": enqueued["enqueue_client_jobs_per_s"],
        "drain_jobs_per_s": drained["drain_jobs_per_s"],
        "redis_cpu_ms_per_1k_jobs": cpu,
        "redis_cpu_us_per_job_by_script": by_script,
        "evalsha_us_per_job": (evalsha_us as f64 / jobs as f64 * 100.0).round() / 100.0,
        "evalsha_calls": evalsha_calls,
        // Calls the slow log attributed, of all EVALSHA calls (1.0: every one).
        "slowlog_coverage": if evalsha_calls == 0 { 0.0 } else {
            (seen_calls as f64 / evalsha_calls as f64 * 1000.0).round() / 1000.0
        },
    }))
}
