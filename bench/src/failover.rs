//! `hopper-bench failover-round`: how long the queue stops when a Redis
//! Cluster master dies mid-drain — the `failover_pause_s` of
//! `scripts/bench/cluster`.
//!
//! On a private cluster the script started (`REDIS_URL` names it, each
//! node's pid file under `--node-dir/<port>/redis.pid`): `jobs` no-op jobs
//! are pushed through the Rust client, the master of the noop queue's slot
//! is waited on until its replica has every push, and a line
//! `{"filled": …}` tells the script to start one worker. The noop counter
//! (one `INCR` per job run, `worker/src/diagnostic_tasks.rs`) is polled
//! every `--poll-ms` through this process' own cluster client, which must
//! ride out the failover itself: a read that fails or takes longer than
//! 250 ms is counted and polled again. Once `--kill-at` of the jobs ran,
//! that master is SIGKILLed (only a node whose pid file and `INFO server`
//! agree: never one the script did not start). A line `{"promoted": …}`
//! says when a surviving node first names a new master for the slot (the
//! script then starts the killed node again, to rejoin as its replica).
//!
//! The pause: from the kill to the first change of the counter after it.
//! The first read after the kill is the new master's value, which may
//! differ from the last one before it without a job having run (writes the
//! dead master had not streamed yet are gone; some it had are new to us),
//! so it is the baseline and the first change after it ends the pause.
//! Cross-check from the queue's side: the longest gap between consecutive
//! `finished_at` of the round's jobs around the kill. Then the drain must
//! finish: every job's hash in Redis (on the promoted master) `succeeded`,
//! those that ran more than once (`attempts > 1`: a claim or an ack the
//! dead master had not passed on), and the counter against `jobs` (runs
//! again add to it, increments the dead master lost subtract).

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use hopper_queue::{PushOptions, QueueClient, connection};
use hopper_shared::{Config, QueueName, jobs::JobKind};
use serde_json::{Value, json};
use uuid::Uuid;

/// A counter read slower than this counts as failed (and is polled again).
const READ_TIMEOUT: Duration = Duration::from_millis(250);

/// Options of one failover round.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// No-op jobs pushed before the worker starts.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// The share of the jobs run when the master is killed.
    #[arg(long, default_value_t = 0.25)]
    pub kill_at: f64,
    /// The directory of the private cluster's nodes: `<port>/redis.pid` each.
    #[arg(long)]
    pub node_dir: PathBuf,
    /// How often the counter is read, in ms.
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// The whole round, from the fill to the last record.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
}

/// One round: see the module's comment.
pub async fn round(
    config: &Config,
    client: &QueueClient,
    args: &FailoverArgs,
) -> anyhow::Result<Value> {
    if !connection::is_cluster_url(&config.redis_url) {
        bail!("failover-round needs a Redis Cluster URL (redis+cluster://…)");
    }
    let queue = QueueName::from(JobKind::Noop);
    let partitions = client.partitions(&queue).await?;
    if partitions.len() != 1 {
        bail!(
            "failover-round measures one slot: the noop queue has {} partitions",
            partitions.len()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let seeds = connection::cluster_nodes(&config.redis_url)?;
    let counter_key = client.keys(JobKind::Noop).named("effects");
    let slot = keyslot(&seeds, &counter_key).await?;
    let master = master_of(&seeds, slot, None)
        .await?
        .with_context(|| format!("slot {slot} has no master"))?;
    let pid = node_pid(&args.node_dir, &master).await?;
    let base = read_until(client, deadline).await?;

    let body = vec![json!({}); 1_000];
    let mut ids: Vec<Uuid> = Vec::with_capacity(args.jobs);
    while ids.len() < args.jobs {
        let n = body.len().min(args.jobs - ids.len());
        ids.extend(
            client
                .push_many(JobKind::Noop, &body[..n], &PushOptions::default())
                .await?,
        );
    }
    replica_caught_up(&master, deadline).await?;
    println!(
        "{}",
        json!({ "filled": args.jobs, "master": master, "slot": slot })
    );
    std::io::stdout().flush()?;

    let jobs = args.jobs as i64;
    let kill_after = ((args.jobs as f64 * args.kill_at) as i64).clamp(1, jobs - 1);
    let poll = Duration::from_millis(args.poll_ms);
    let mut last = base;
    let mut first_effect: Option<Instant> = None;
    let mut failed_reads = 0u64;
    // When the kill came (right after the read that saw the counter pass
    // `kill_after`: the queue ran up to the kill, to within one poll), and
    // how many jobs had run by then.
    let mut killed: Option<(Instant, SystemTime, i64)> = None;
    // The first read after the kill: when, and what it said.
    let mut after_kill: Option<(Instant, i64)> = None;
    let mut resumed: Option<Instant> = None;
    let mut promoted: Option<tokio::task::JoinHandle<Option<Duration>>> = None;
    loop {
        if Instant::now() > deadline {
            bail!(
                "only {} of {jobs} jobs ran within {}s ({failed_reads} failed reads)",
                last - base,
                args.timeout_s
            );
        }
        let read = tokio::time::timeout(READ_TIMEOUT, crate::counter(client)).await;
        let now = Instant::now();
        let Ok(Ok(value)) = read else {
            failed_reads += 1;
            tokio::time::sleep(poll).await;
            continue;
        };
        match killed {
            None => {
                if value != last {
                    first_effect.get_or_insert(now);
                }
                if value - base >= kill_after {
                    let at = kill(pid).await?;
                    killed = Some((at, SystemTime::now(), value - base));
                    promoted = Some(tokio::spawn(watch_promotion(
                        seeds.clone(),
                        slot,
                        master.clone(),
                        at,
                    )));
                }
            }
            Some(_) => match after_kill {
                None => after_kill = Some((now, value)),
                Some((_, baseline)) => {
                    if resumed.is_none() && value != baseline {
                        resumed = Some(now);
                    }
                }
            },
        }
        last = value;
        if resumed.is_some() && value - base >= jobs {
            break;
        }
        // The counter may end short of `jobs` (increments the dead master
        // lost): the records say when every job is done.
        if resumed.is_some()
            && value - base >= jobs * 9 / 10
            && outcomes(client, &ids).await?.succeeded == ids.len()
        {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    let drained = first_effect.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let effects = last - base;
    let (killed_at, killed_wall, done_at_kill) = killed.expect("killed");
    let (first_read, _) = after_kill.expect("read after the kill");
    let resumed = resumed.expect("resumed");
    let promoted_after = match promoted {
        Some(task) => task.await?,
        None => None,
    };

    let outcome = loop {
        let outcome = outcomes(client, &ids).await?;
        if outcome.succeeded == ids.len() || Instant::now() > deadline {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let effects = effects.max(crate::counter(client).await? - base);
    let gap = longest_gap(&outcome.finished_ms, killed_wall);
    let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(json!({
        "jobs": args.jobs,
        "wait_replicas": config.redis_wait.replicas,
        "slot": slot,
        "killed": master,
        "killed_after_jobs": done_at_kill,
        "promoted_after_s": promoted_after.map(secs),
        "pause_s": secs(resumed.duration_since(killed_at)),
        "first_read_after_kill_s": secs(first_read.duration_since(killed_at)),
        "failed_reads": failed_reads,
        "finished_longest_gap_s": gap,
        "drain_s": (drained * 100.0).round() / 100.0,
        "jobs_found": outcome.found,
        "jobs_succeeded": outcome.succeeded,
        "jobs_lost": ids.len() - outcome.succeeded,
        "jobs_run_again": outcome.run_again,
        "effects_minus_jobs": effects - jobs,
    }))
}

/// Reads the counter until a read succeeds.
async fn read_until(client: &QueueClient, deadline: Instant) -> anyhow::Result<i64> {
    loop {
        match tokio::time::timeout(READ_TIMEOUT, crate::counter(client)).await {
            Ok(Ok(v)) => return Ok(v),
            _ if Instant::now() > deadline => bail!("the noop counter cannot be read"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// What the queue says of the round's jobs (their hashes).
struct Outcomes {
    /// Jobs whose hash exists.
    found: usize,
    /// Jobs in state `succeeded`.
    succeeded: usize,
    /// Jobs claimed more than once (`attempts > 1`).
    run_again: usize,
    /// Every `finished_at` (ms since the epoch).
    finished_ms: Vec<i64>,
}

/// Reads `state`, `attempts` and `finished_at` of every job of `ids`
/// (pipelines of 1,000: one slot, one node).
async fn outcomes(client: &QueueClient, ids: &[Uuid]) -> anyhow::Result<Outcomes> {
    let keys = client.keys(JobKind::Noop);
    let mut out = Outcomes {
        found: 0,
        succeeded: 0,
        run_again: 0,
        finished_ms: Vec::with_capacity(ids.len()),
    };
    for chunk in ids.chunks(1_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HMGET")
                .arg(keys.job(id))
                .arg("state")
                .arg("attempts")
                .arg("finished_at");
        }
        let rows: Vec<(Option<String>, Option<u32>, Option<i64>)> =
            pipe.query_async(&mut client.connection()).await?;
        for (state, attempts, finished) in rows {
            let Some(state) = state else { continue };
            out.found += 1;
            if state == "succeeded" {
                out.succeeded += 1;
                out.finished_ms.extend(finished);
            }
            if attempts.unwrap_or(0) > 1 {
                out.run_again += 1;
            }
        }
    }
    Ok(out)
}

/// The longest gap between consecutive `finished_at` (ms) from 1 s before
/// the kill to 30 s after it, in s: the queue's own pause.
fn longest_gap(finished_ms: &[i64], killed: SystemTime) -> Option<f64> {
    let killed_ms = killed
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    let mut window: Vec<i64> = finished_ms
        .iter()
        .copied()
        .filter(|&t| t >= killed_ms - 1_000 && t <= killed_ms + 30_000)
        .collect();
    window.sort_unstable();
    window
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .map(|ms| ms as f64 / 1000.0)
}

/// `CLUSTER KEYSLOT key`, asked of the first node that answers.
async fn keyslot(seeds: &[String], key: &str) -> anyhow::Result<u16> {
    for seed in seeds {
        if let Ok(mut conn) = crate::cluster::plain(seed).await
            && let Ok(slot) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async::<u16>(&mut conn)
                .await
        {
            return Ok(slot);
        }
    }
    bail!("no node of the cluster answers CLUSTER KEYSLOT")
}

/// `host:port` of the master serving `slot` as the first answering node
/// other than `not_asking` sees it (`CLUSTER NODES`; a master marked failed
/// does not count); `None` while it knows none.
async fn master_of(
    seeds: &[String],
    slot: u16,
    not_asking: Option<&str>,
) -> anyhow::Result<Option<String>> {
    for seed in seeds {
        if not_asking.is_some_and(|addr| seed.ends_with(addr)) {
            continue;
        }
        let Ok(Ok(mut conn)) =
            tokio::time::timeout(Duration::from_millis(500), crate::cluster::plain(seed)).await
        else {
            continue;
        };
        let Ok(text) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<String>(&mut conn)
            .await
        else {
            continue;
        };
        return Ok(text.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                return None;
            }
            let serves = f[8..].iter().any(|range| match range.split_once('-') {
                Some((lo, hi)) => matches!(
                    (lo.parse::<u16>(), hi.parse::<u16>()),
                    (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi
                ),
                None => range.parse::<u16>() == Ok(slot),
            });
            serves.then(|| f[1].split('@').next().unwrap_or(f[1]).to_owned())
        }));
    }
    bail!("no node of the cluster answers CLUSTER NODES")
}

/// The pid of the node on `addr`: its pid file under `dir` and its own
/// `INFO server` must agree (only a node this bench started is killed).
async fn node_pid(dir: &std::path::Path, addr: &str) -> anyhow::Result<u32> {
    let port = addr.rsplit(':').next().unwrap_or(addr);
    let file = dir.join(port).join("redis.pid");
    let from_file: u32 = std::fs::read_to_string(&file)
        .with_context(|| format!("{} (not a node of the private cluster?)", file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", file.display()))?;
    let mut conn = crate::cluster::plain(&format!("redis://{addr}")).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    let reported = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))
        .and_then(|v| v.parse::<u32>().ok());
    if reported != Some(from_file) {
        bail!("{addr} reports pid {reported:?}, its pid file {from_file}: not killing it");
    }
    Ok(from_file)
}

/// Waits until a replica of the master on `addr` has every write it had
/// (`INFO replication`: an online replica's offset reaches
/// `master_repl_offset`), so no push is lost with it.
async fn replica_caught_up(addr: &str, deadline: Instant) -> anyhow::Result<()> {
    let mut conn = crate::cluster::plain(&format!("redis://{addr}")).await?;
    let field = |info: &str, name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_owned)
    };
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await?;
    let target: u64 = field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .context("INFO replication without master_repl_offset")?;
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await?;
        let caught_up = info.lines().any(|l| {
            l.starts_with("slave")
                && l.contains("state=online")
                && l.split(',')
                    .find_map(|kv| kv.strip_prefix("offset="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|o| o >= target)
        });
        if caught_up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no replica of {addr} caught up with offset {target}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs `pid`; the instant just before.
async fn kill(pid: u32) -> anyhow::Result<Instant> {
    let at = Instant::now();
    let status = tokio::process::Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .await?;
    if !status.success() {
        bail!("kill -KILL {pid} failed");
    }
    Ok(at)
}

/// Polls the surviving nodes until one names a master other than `dead`
/// for `slot`; prints `{"promoted": …}` then, for the script. How long
/// after `killed` (`None` if not within 60 s).
async fn watch_promotion(
    seeds: Vec<String>,
    slot: u16,
    dead: String,
    killed: Instant,
) -> Option<Duration> {
    while killed.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(master)) = master_of(&seeds, slot, Some(&dead)).await
            && master != dead
        {
            let after = killed.elapsed();
            println!(
                "{}",
                json!({ "promoted": master, "killed": dead, "after_s": after.as_secs_f64() })
            );
            let _ = std::io::stdout().flush();
            return Some(after);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
