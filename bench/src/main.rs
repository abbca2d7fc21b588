//! `hopper-bench`: the load generators behind
//! `scripts/bench/{queue,scale,ingest,soak,workflows,cluster,search}`.
//!
//! Each subcommand does one measurement against a running Redis (and API,
//! where named) under the key prefix of `HOPPER_KEY_PREFIX`, and prints one
//! JSON object on its last line. The script starts and stops the processes;
//! this binary only drives load and reads the results.

mod cluster;
mod failover;
mod search;
mod soak;
mod workflows;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::{StreamExt, stream};
use hopper_queue::{PushOptions, QueueClient, now_us};
use hopper_shared::{Config, jobs::JobKind};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "hopper-bench")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Single-job HTTP submissions (`POST /v1/jobs/noop`).
    EnqueueHttp {
        #[arg(long)]
        api: String,
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Batch HTTP submissions (`POST /v1/jobs/noop/batch`).
    EnqueueBatch {
        #[arg(long)]
        api: String,
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Rust client submissions, pipelined in batches (`QueueClient::push_many`).
    EnqueueClient {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
    },
    /// Pre-enqueues `jobs` noop jobs (no measurement).
    Fill {
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
    },
    /// Waits until the noop effect counter reaches `jobs`; reports the drain
    /// rate from the first effect to the last.
    Drain {
        #[arg(long, default_value_t = 20_000)]
        jobs: i64,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// Submits stamped jobs at a steady rate; reports enqueue-to-start
    /// latency percentiles measured by the handler.
    Latency {
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Uploads a generated corpus, waits until every document is ready,
    /// then times search queries.
    Ingest {
        #[arg(long)]
        api: String,
        #[arg(long, default_value_t = 200)]
        docs: usize,
        #[arg(long, default_value_t = 10)]
        doc_kb: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value_t = 900)]
        timeout_s: u64,
    },
    /// Drains a backlog of the soak mix; reports the jobs/s it sustained.
    SoakCalibrate {
        #[arg(long)]
        api: String,
        #[arg(long, default_value_t = 150)]
        units: usize,
    },
    /// Submits the soak mix at `rate` jobs/s for `seconds`, then checks that
    /// nothing was lost.
    Soak {
        #[arg(long)]
        api: String,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 1800)]
        seconds: u64,
    },
    /// Rounds of independent no-op jobs vs a chord of as many no-op members:
    /// submit to callback start, and the chord's overhead per member.
    Chords {
        #[arg(long, default_value_t = 1_000)]
        members: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
    },
    /// A 1-second schedule of noop: its fire lag over `ticks` ticks.
    ScheduleLag {
        #[arg(long, default_value_t = 60)]
        ticks: usize,
    },
    /// Pushes `jobs` no-op jobs, then (after a `{"filled": …}` line, when
    /// the script starts a worker) times their drain; Redis' CPU per node and
    /// per script meanwhile (`scripts/bench/cluster`).
    RedisRound {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        /// Drain here instead of waiting for a worker: claims and acks of
        /// this many jobs at a time, as a saturated worker's claim loop and
        /// group commit send them (Redis' cost only, no handler).
        #[arg(long)]
        drain_here: Option<usize>,
    },
    /// Pushes no-op jobs onto a private Redis Cluster, SIGKILLs the master
    /// of the queue's slot mid-drain: the pause, and whether every job ran
    /// (`scripts/bench/cluster`, round (d)).
    FailoverRound(failover::FailoverArgs),
    /// Loads chunks into one document set, builds the HNSW index, and
    /// measures recall@10 against exact search and `/v1/search` end to end
    /// (`scripts/bench/search`).
    Search(search::SearchArgs),
    /// Deletes every key under the prefix (on every master of a cluster).
    Clean,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::from_env()?;
    let client = QueueClient::connect(&config)
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))?;
    let out = match args.command {
        Command::EnqueueHttp {
            api,
            jobs,
            concurrency,
        } => enqueue_http(&api, jobs, concurrency).await?,
        Command::EnqueueBatch {
            api,
            jobs,
            batch,
            concurrency,
        } => enqueue_batch(&api, jobs, batch, concurrency).await?,
        Command::EnqueueClient { jobs, batch } => enqueue_client(&client, jobs, batch).await?,
        Command::Fill { jobs } => {
            enqueue_client(&client, jobs, 1_000).await?;
            json!({ "filled": jobs })
        }
        Command::Drain { jobs, timeout_s } => drain(&client, jobs, timeout_s).await?,
        Command::Latency { rate, seconds } => latency(&client, rate, seconds).await?,
        Command::Ingest {
            api,
            docs,
            doc_kb,
            queries,
            timeout_s,
        } => ingest(&api, docs, doc_kb, queries, timeout_s).await?,
        Command::SoakCalibrate { api, units } => soak::calibrate(&config, &api, units).await?,
        Command::Soak { api, rate, seconds } => soak::run(&config, &api, rate, seconds).await?,
        Command::Chords {
            members,
            rounds,
            timeout_s,
        } => workflows::chords(&client, members, rounds, Duration::from_secs(timeout_s)).await?,
        Command::ScheduleLag { ticks } => workflows::schedule_lag(&client, ticks).await?,
        Command::RedisRound {
            jobs,
            timeout_s,
            drain_here,
        } => cluster::redis_round(&config, &client, jobs, timeout_s, drain_here).await?,
        Command::FailoverRound(failover_args) => {
            failover::round(&config, &client, &failover_args).await?
        }
        Command::Search(search_args) => search::run(&config, &search_args).await?,
        Command::Clean => json!({
            "deleted": cluster::delete_matching(&config.redis_url, &format!("{{{}:*", config.key_prefix)).await?
        }),
    };
    println!("{out}");
    Ok(())
}

fn rate(n: usize, since: Instant) -> f64 {
    (n as f64 / since.elapsed().as_secs_f64()).round()
}

async fn enqueue_http(api: &str, jobs: usize, concurrency: usize) -> anyhow::Result<Value> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = format!("{api}/v1/jobs/noop");
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    stream::iter(0..jobs)
        .for_each_concurrent(concurrency, |_| {
            let (http, url, failed) = (http.clone(), url.clone(), failed.clone());
            async move {
                let ok = http
                    .post(&url)
                    .json(&json!({}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 202);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {jobs} HTTP submissions failed");
    }
    Ok(
        json!({ "enqueue_http_jobs_per_s": rate(jobs, start), "jobs": jobs, "concurrency": concurrency }),
    )
}

async fn enqueue_batch(
    api: &str,
    jobs: usize,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let url = format!("{api}/v1/jobs/noop/batch");
    let body: Vec<Value> = vec![json!({}); batch];
    let body = Arc::new(serde_json::to_vec(&body)?);
    let requests = jobs.div_ceil(batch);
    let start = Instant::now();
    let results: Vec<bool> = stream::iter(0..requests)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                http.post(&url)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 202)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    if results.iter().any(|ok| !ok) {
        bail!("a batch submission failed");
    }
    Ok(json!({ "enqueue_batch_jobs_per_s": rate(requests * batch, start), "batch": batch }))
}

pub(crate) async fn enqueue_client(
    client: &QueueClient,
    jobs: usize,
    batch: usize,
) -> anyhow::Result<Value> {
    let body: Vec<Value> = vec![json!({}); batch];
    let start = Instant::now();
    let mut sent = 0;
    while sent < jobs {
        let n = batch.min(jobs - sent);
        client
            .push_many(JobKind::Noop, &body[..n], &PushOptions::default())
            .await?;
        sent += n;
    }
    Ok(json!({ "enqueue_client_jobs_per_s": rate(jobs, start), "batch": batch }))
}

pub(crate) async fn counter(client: &QueueClient) -> anyhow::Result<i64> {
    let v: Option<i64> = redis::cmd("GET")
        .arg(client.keys(JobKind::Noop).named("effects"))
        .query_async(&mut client.connection())
        .await?;
    Ok(v.unwrap_or(0))
}

pub(crate) async fn drain(
    client: &QueueClient,
    jobs: i64,
    timeout_s: u64,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let base = counter(client).await?;
    // The clock starts at the first effect, so worker start-up is not timed.
    let (start, first) = loop {
        let c = counter(client).await? - base;
        if c > 0 {
            break (Instant::now(), c);
        }
        if Instant::now() > deadline {
            bail!("no job ran within {timeout_s}s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    loop {
        let c = counter(client).await? - base;
        if c >= jobs {
            let secs = start.elapsed().as_secs_f64();
            return Ok(json!({
                "drain_jobs_per_s": ((c - first) as f64 / secs).round(),
                "jobs": jobs,
                "seconds": secs,
            }));
        }
        if Instant::now() > deadline {
            bail!("only {c} of {jobs} jobs ran within {timeout_s}s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn latency(client: &QueueClient, rate_per_s: u64, seconds: u64) -> anyhow::Result<Value> {
    let keys = client.keys(JobKind::Noop);
    let list = keys.named("start_latency_us");
    let mut conn = client.connection();
    redis::cmd("DEL")
        .arg(&list)
        .query_async::<()>(&mut conn)
        .await?;
    let total = rate_per_s * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate_per_s);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        tick.tick().await;
        let c = client.clone();
        tokio::spawn(async move {
            let args = json!({ "sent_us": now_us() });
            let _ = c.push(JobKind::Noop, &args, &PushOptions::default()).await;
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut samples: Vec<i64>;
    loop {
        samples = redis::cmd("LRANGE")
            .arg(&list)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        if samples.len() as u64 >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if (samples.len() as u64) < total {
        bail!("only {} of {total} stamped jobs started", samples.len());
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64 / 1000.0
    };
    Ok(json!({
        "start_latency_p50_ms": pct(0.50),
        "start_latency_p99_ms": pct(0.99),
        "start_latency_max_ms": pct(1.0),
        "rate": rate_per_s,
        "jobs": total,
    }))
}

/// A deterministic word stream (xorshift), so every run embeds the same corpus.
struct Words(u64);

const VOCAB: &[&str] = &[
    "river",
    "mountain",
    "engine",
    "signal",
    "harvest",
    "library",
    "protein",
    "orbit",
    "ledger",
    "forest",
    "current",
    "voltage",
    "market",
    "glacier",
    "theory",
    "harbor",
    "circuit",
    "climate",
    "archive",
    "lantern",
    "migration",
    "crystal",
    "pipeline",
    "canyon",
    "vector",
    "meadow",
    "turbine",
    "history",
    "fabric",
    "compass",
    "the",
    "a",
    "of",
    "and",
    "in",
    "to",
    "with",
    "across",
    "under",
    "between",
    "measures",
    "describes",
    "builds",
    "carries",
    "reveals",
];

impl Words {
    fn next(&mut self) -> &'static str {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        VOCAB[(self.0 % VOCAB.len() as u64) as usize]
    }

    /// A document of about `kb` KB: paragraphs of 3-6 sentences of 8-24 words.
    fn document(&mut self, n: usize, kb: usize) -> String {
        let mut text = format!("# Report {n}\n\nThis report number {n} concerns topic-{n}.\n\n");
        while text.len() < kb * 1024 {
            let sentences = 3 + (self.0 % 4) as usize;
            for _ in 0..sentences {
                let words = 8 + (self.0 % 17) as usize;
                let s: Vec<&str> = (0..words).map(|_| self.next()).collect();
                text.push_str(&capitalise(&s.join(" ")));
                text.push_str(". ");
            }
            text.push_str("\n\n");
        }
        text
    }
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

async fn ingest(
    api: &str,
    docs: usize,
    kb: usize,
    queries: usize,
    timeout_s: u64,
) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let mut words = Words(0x9E37_79B9_7F4A_7C15);
    let corpus: Vec<String> = (0..docs).map(|n| words.document(n, kb)).collect();
    let bytes: usize = corpus.iter().map(String::len).sum();
    let start = Instant::now();
    let uploads: Vec<bool> = stream::iter(corpus.into_iter().enumerate())
        .map(|(n, text)| {
            let http = http.clone();
            let url = format!("{api}/v1/documents");
            async move {
                http.post(url)
                    .json(&json!({"name": format!("report-{n}.md"), "text": text, "document_set": "bench"}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 202)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    if uploads.iter().any(|ok| !ok) {
        bail!("an upload failed");
    }
    let uploaded_s = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let (chunks, failed) = loop {
        let list: Value = http
            .get(format!("{api}/v1/documents?document_set=bench&limit=500"))
            .send()
            .await?
            .json()
            .await?;
        let items = list["documents"].as_array().cloned().unwrap_or_default();
        let ready = items.iter().filter(|d| d["status"] == "ready").count();
        let failed = items.iter().filter(|d| d["status"] == "failed").count();
        if ready + failed == docs {
            let chunks: i64 = items
                .iter()
                .map(|d| d["chunks_total"].as_i64().unwrap_or(0))
                .sum();
            break (chunks, failed);
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {docs} documents ready after {timeout_s}s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    if failed > 0 {
        bail!("{failed} documents failed");
    }
    let mut latencies = Vec::with_capacity(queries);
    for q in 0..queries {
        let body = json!({"query": format!("what does report {} say about topic-{}", q % docs, q % docs), "k": 5});
        let t = Instant::now();
        let r = http
            .post(format!("{api}/v1/search"))
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("search failed: {}", r.text().await.unwrap_or_default());
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Ok(json!({
        "docs": docs,
        "corpus_mb": bytes as f64 / 1e6,
        "chunks": chunks,
        "upload_s": uploaded_s,
        "seconds": secs,
        "docs_per_min": (docs as f64 / secs * 60.0 * 10.0).round() / 10.0,
        "chunks_per_s": (chunks as f64 / secs * 10.0).round() / 10.0,
        "search_p50_ms": (pct(0.50) * 100.0).round() / 100.0,
        "search_p99_ms": (pct(0.99) * 100.0).round() / 100.0,
    }))
}
