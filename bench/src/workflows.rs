//! `hopper-bench chords` and `hopper-bench schedule-lag`: the measurements
//! behind `scripts/bench/workflows`.
//!
//! Chords: per round, 1,000 independent no-op jobs are pushed and drained
//! (submit to last effect), then a chord of 1,000 no-op members and a no-op
//! body is submitted and timed from submit to the body's start (its job's
//! `started_at_ms`, on Redis' clock like the submit time). The chord's
//! overhead per member is the difference over the member count: what the
//! fan-in (a step script per member, the stalled mark) adds to running the
//! same jobs alone. Schedule lag: a 1-second interval schedule of `noop`,
//! each tick's `handled_at_ms - tick_ms` over its runs.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hopper_queue::{PushOptions, QueueClient};
use hopper_shared::{
    jobs::JobKind,
    schedules::{MissedTicks, Schedule, ScheduleSpec},
    workflows::{WorkflowSpec, WorkflowState, chord, task},
};
use serde_json::{Value, json};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Rounds of: `members` independent no-op jobs drained, then a chord of
/// `members` no-op members timed to its body's start.
pub async fn chords(
    client: &QueueClient,
    members: usize,
    rounds: usize,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let mut independent_ms = Vec::new();
    let mut chord_ms = Vec::new();
    let mut overhead_us = Vec::new();
    // Round 0 warms the worker up (its first claims, connections, pages)
    // and is not counted.
    for round in 0..=rounds {
        let base = crate::counter(client).await?;
        let started = Instant::now();
        client
            .push_many(
                JobKind::Noop,
                &vec![json!({}); members],
                &PushOptions::default(),
            )
            .await?;
        loop {
            if crate::counter(client).await? - base >= members as i64 {
                break;
            }
            if started.elapsed() > timeout {
                bail!("round {round}: {members} independent jobs did not finish");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let alone = started.elapsed().as_secs_f64() * 1e3;

        let noop = || task(JobKind::Noop, json!({}));
        let spec = WorkflowSpec::new(chord((0..members).map(|_| noop()), noop()));
        let plan = spec.plan()?;
        let submitted_ms = client.redis_now_ms();
        let started = Instant::now();
        let id = client.create_workflow(&spec, &plan, "default").await?;
        let body = loop {
            let view = client
                .workflow(id, None, true)
                .await?
                .context("the chord vanished")?;
            if view.state != WorkflowState::Running {
                if view.state != WorkflowState::Succeeded {
                    bail!("round {round}: the chord ended {:?}", view.state);
                }
                break view.nodes[members].job_id;
            }
            if started.elapsed() > timeout {
                bail!("round {round}: the chord did not finish: {:?}", view.counts);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let job = client
            .job(JobKind::Noop, body)
            .await?
            .context("the body's job")?;
        let to_callback =
            (job.started_at_ms.context("the body never started")? - submitted_ms) as f64;
        if round == 0 {
            continue;
        }
        eprintln!(
            "[bench] round {round}: {members} jobs alone {alone:.0} ms; chord submit -> callback start {to_callback:.0} ms"
        );
        overhead_us.push((to_callback - alone) * 1e3 / members as f64);
        independent_ms.push(alone);
        chord_ms.push(to_callback);
    }
    Ok(json!({
        "members": members,
        "rounds": rounds,
        "independent_ms": median(&mut independent_ms.clone()),
        "chord_to_callback_ms": median(&mut chord_ms.clone()),
        "chord_overhead_per_member_us": median(&mut overhead_us.clone()).round(),
        "runs": { "independent_ms": independent_ms, "chord_to_callback_ms": chord_ms,
                  "overhead_per_member_us": overhead_us },
    }))
}

/// A 1-second schedule of `noop`; the fire lag of its first `ticks` ticks.
pub async fn schedule_lag(client: &QueueClient, ticks: usize) -> anyhow::Result<Value> {
    let spec = ScheduleSpec {
        id: "bench-lag".into(),
        task: JobKind::Noop.into(),
        args: json!({}),
        cron: None,
        timezone: None,
        every_ms: Some(1_000),
        missed: MissedTicks::Skip,
        grace_ms: None,
        fire_time_arg: None,
    };
    let created_at_ms = client.redis_now_ms();
    spec.validate(created_at_ms)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.problem))?;
    client.remove_schedule(&spec.id).await?;
    let schedule = Schedule {
        spec,
        tenant: "default".into(),
        created_at_ms,
        paused: false,
        next_fire_ms: None,
    };
    if !client.create_schedule(&schedule).await? {
        bail!("the schedule exists");
    }
    let deadline = Instant::now() + Duration::from_secs(ticks as u64 * 2 + 30);
    let runs = loop {
        let runs = client
            .schedule_runs("bench-lag", ticks)
            .await?
            .unwrap_or_default();
        if runs.len() >= ticks {
            break runs;
        }
        if Instant::now() > deadline {
            bail!("only {} of {ticks} ticks within the time", runs.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    client.remove_schedule("bench-lag").await?;
    let fired = runs.iter().filter(|r| r.outcome == "fired").count();
    let mut lag: Vec<f64> = runs
        .iter()
        .map(|r| (r.handled_at_ms - r.tick_ms) as f64)
        .collect();
    lag.sort_by(f64::total_cmp);
    Ok(json!({
        "ticks": runs.len(),
        "fired": fired,
        "schedule_lag_p50_ms": percentile(&lag, 50.0),
        "schedule_lag_p99_ms": percentile(&lag, 99.0),
        "schedule_lag_max_ms": lag.last().copied().unwrap_or(0.0),
    }))
}
