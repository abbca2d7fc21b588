//! The soak load: a steady mix of job kinds through the HTTP API, and the
//! check that every one of them finished (nothing lost).
//!
//! The mix per "unit" of load: 14 `noop`, 5 `echo` (5 ms sleep) and one
//! `embed` of 1–3 fresh sentences (never a cache hit), plus one small
//! document (ingest → embed → summary) every 30 seconds. [`calibrate`]
//! drains a backlog of the mix and reports the jobs/s it sustained;
//! [`run`] submits at a given rate for a given time, then waits for every
//! job's Postgres record (and every document to be `ready`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hopper_shared::Config;
use serde_json::{Value, json};
use uuid::Uuid;

/// Jobs per unit of the mix.
const UNIT: [(&str, usize); 3] = [("noop", 14), ("echo", 5), ("embed", 1)];
const UNIT_JOBS: usize = 20;

/// A short sentence that no other call returns (so embeds miss the cache).
fn sentence(n: u64) -> String {
    const WORDS: [&str; 12] = [
        "queue", "worker", "vector", "river", "lantern", "harbor", "signal", "garden", "orbit",
        "ledger", "meadow", "circuit",
    ];
    let w = |i: u64| WORDS[(i % WORDS.len() as u64) as usize];
    format!(
        "The {} near the {} kept {} number {n} safe.",
        w(n),
        w(n / 7 + 3),
        w(n / 49 + 5)
    )
}

fn args_for(kind: &str, n: u64) -> Value {
    match kind {
        "echo" => json!({"message": format!("soak {n}"), "sleep_ms": 5}),
        "embed" => {
            let texts: Vec<String> = (0..(1 + n % 3)).map(|i| sentence(n * 3 + i)).collect();
            json!({ "texts": texts })
        }
        _ => json!({}),
    }
}

/// Submits `units` units of the mix; returns the job ids.
async fn submit_units(
    http: &reqwest::Client,
    api: &str,
    units: usize,
    seq: &mut u64,
) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(units * UNIT_JOBS);
    for (kind, per_unit) in UNIT {
        let batch: Vec<Value> = (0..units * per_unit)
            .map(|_| {
                *seq += 1;
                args_for(kind, *seq)
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        let res = http
            .post(format!("{api}/v1/jobs/{kind}/batch"))
            .json(&batch)
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or_default();
        if status.as_u16() != 202 {
            bail!("{kind} batch refused with {status}: {body}");
        }
        for id in body["ids"].as_array().into_iter().flatten() {
            ids.push(id.as_str().context("id")?.parse()?);
        }
    }
    Ok(ids)
}

/// How many of `ids` have a Postgres record, and how many of those
/// succeeded.
async fn recorded(pool: &deadpool_postgres::Pool, ids: &[Uuid]) -> anyhow::Result<(i64, i64)> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded') \
             FROM job_records WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn wait_recorded(
    pool: &deadpool_postgres::Pool,
    ids: &[Uuid],
    timeout: Duration,
) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let (n, ok) = recorded(pool, ids).await?;
        if n as usize >= ids.len() || Instant::now() > deadline {
            return Ok((n, ok));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drains a backlog of `units` units of the mix; reports jobs/s.
pub async fn calibrate(config: &Config, api: &str, units: usize) -> anyhow::Result<Value> {
    let pool = hopper_shared::db::pool(config, 4)?;
    let http = reqwest::Client::new();
    let mut seq = 1_000_000_000;
    let started = Instant::now();
    let ids = submit_units(&http, api, units, &mut seq).await?;
    let (n, ok) = wait_recorded(&pool, &ids, Duration::from_secs(600)).await?;
    let secs = started.elapsed().as_secs_f64();
    if n as usize != ids.len() || ok != n {
        bail!("calibration: {n} of {} recorded, {ok} succeeded", ids.len());
    }
    Ok(
        json!({ "jobs": ids.len(), "seconds": secs, "max_jobs_per_s": (ids.len() as f64 / secs).round() }),
    )
}

/// Submits the mix at `rate` jobs/s for `seconds`, then checks that every
/// job finished and every document is ready.
pub async fn run(config: &Config, api: &str, rate: f64, seconds: u64) -> anyhow::Result<Value> {
    let pool = hopper_shared::db::pool(config, 4)?;
    let http = reqwest::Client::new();
    let tick = Duration::from_millis(200);
    let units_per_tick = rate * tick.as_secs_f64() / UNIT_JOBS as f64;
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let (mut ids, mut docs, mut owed, mut seq) = (Vec::new(), Vec::new(), 0.0, 0u64);
    let mut next_doc = started;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < end {
        interval.tick().await;
        owed += units_per_tick;
        let units = owed.floor() as usize;
        owed -= units as f64;
        if units > 0 {
            ids.extend(submit_units(&http, api, units, &mut seq).await?);
        }
        if Instant::now() >= next_doc {
            next_doc += Duration::from_secs(30);
            let text: String = (0..40).map(|i| sentence(seq * 40 + i) + " ").collect();
            let res = http
                .post(format!("{api}/v1/documents"))
                .json(&json!({"name": format!("soak-{}.txt", docs.len()), "text": text}))
                .send()
                .await?;
            let body: Value = res.json().await?;
            docs.push(
                body["document_id"]
                    .as_str()
                    .context("document id")?
                    .to_owned(),
            );
        }
    }
    let submitted_s = started.elapsed().as_secs_f64();
    let (n, ok) = wait_recorded(&pool, &ids, Duration::from_secs(600)).await?;
    let mut ready = 0;
    for id in &docs {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let d: Value = http
                .get(format!("{api}/v1/documents/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if d["status"] == "ready" {
                ready += 1;
                break;
            }
            if d["status"] == "failed" || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(json!({
        "rate_target": rate,
        "rate_submitted": (ids.len() as f64 / submitted_s).round(),
        "jobs": ids.len(),
        "recorded": n,
        "succeeded": ok,
        "lost": ids.len() as i64 - n,
        "documents": docs.len(),
        "documents_ready": ready,
        "seconds": seconds,
    }))
}
