//! `hopper schedules add|list|show|pause|resume|remove|runs`: periodic
//! schedules through the API.
//!
//! `add` creates one (`POST /v1/schedules`) from a cron expression read in
//! a time zone, or a fixed interval, with fixed arguments (`--args`, inline
//! JSON or `@file`); the API checks it and answers the field it refuses.
//! `list` prints every schedule the key's tenant has, with its next tick;
//! `show` one with its settings; `pause`/`resume` stop and restart its
//! ticks; `remove` forgets it (its jobs stay); `runs` lists its last ticks
//! and the jobs they submitted (`GET /v1/schedules/{id}/runs`). Times are
//! printed in UTC with how far off they are. `--json` prints the API's
//! answers.

use std::fmt::Write;

use clap::{ArgGroup, Subcommand};
use serde_json::{Map, Value, json};

use crate::{
    api::{Api, segment},
    output,
};

/// The `schedules` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Create a schedule: `hopper schedules add nightly echo --cron '30 4 * * *'
    /// --timezone Europe/Paris --args '{"message":"hi"}'`.
    #[command(group(ArgGroup::new("timing").required(true).args(["cron", "every_ms"])))]
    Add {
        /// Its id (`[a-z0-9][a-z0-9_.-]{0,62}`).
        id: String,
        /// The task each tick submits a job of.
        task: String,
        /// A cron expression: 5 fields (minute hour day-of-month month
        /// day-of-week), 6 with seconds first, or `@daily` and the like.
        #[arg(long)]
        cron: Option<String>,
        /// The IANA time zone the cron expression is read in (default UTC).
        #[arg(long, requires = "cron")]
        timezone: Option<String>,
        /// A fixed interval in milliseconds (at least 1000) instead of cron.
        #[arg(long)]
        every_ms: Option<u64>,
        /// The job's arguments at every tick: JSON, or @path to a JSON file
        /// (default `{}`).
        #[arg(long)]
        args: Option<String>,
        /// What missed ticks do: `skip` (default) or `latest` (fire the
        /// latest once).
        #[arg(long, value_parser = ["skip", "latest"])]
        missed: Option<String>,
        /// How late a tick may fire and still count as on time (ms).
        #[arg(long)]
        grace_ms: Option<u64>,
        /// Add the tick's time (Unix ms) to each job's arguments under this
        /// name.
        #[arg(long)]
        fire_time_arg: Option<String>,
    },
    /// Every schedule of this key's tenant, with its next tick.
    List,
    /// One schedule: its timing, arguments and next tick.
    Show {
        /// The schedule's id.
        id: String,
    },
    /// Stop a schedule's ticks until it is resumed.
    Pause {
        /// The schedule's id.
        id: String,
    },
    /// Restart a paused schedule from its next tick (missed ones do not
    /// fire).
    Resume {
        /// The schedule's id.
        id: String,
    },
    /// Forget a schedule and its runs (the jobs it submitted stay). Asks
    /// nothing.
    Remove {
        /// The schedule's id.
        id: String,
    },
    /// A schedule's last ticks, newest first, with the jobs they submitted.
    Runs {
        /// The schedule's id.
        id: String,
        /// Most runs listed (1-100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// Runs one `schedules` subcommand.
pub async fn run(api: &Api, json: bool, command: SchedulesCommand) -> anyhow::Result<()> {
    match command {
        SchedulesCommand::Add {
            id,
            task,
            cron,
            timezone,
            every_ms,
            args,
            missed,
            grace_ms,
            fire_time_arg,
        } => {
            let mut body = Map::new();
            body.insert("id".into(), json!(id));
            body.insert("task".into(), json!(task));
            if let Some(args) = args {
                body.insert("args".into(), crate::jobs::read_args(&args)?);
            }
            let optional = [
                ("cron", cron.map(Value::from)),
                ("timezone", timezone.map(Value::from)),
                ("every_ms", every_ms.map(Value::from)),
                ("missed", missed.map(Value::from)),
                ("grace_ms", grace_ms.map(Value::from)),
                ("fire_time_arg", fire_time_arg.map(Value::from)),
            ];
            for (field, value) in optional {
                if let Some(v) = value {
                    body.insert(field.into(), v);
                }
            }
            let s = api.post_json("/v1/schedules", &Value::Object(body)).await?;
            output::print(json, &s, || {
                format!(
                    "created schedule {}: {}, next fire {}\n",
                    s["id"].as_str().unwrap_or(&id),
                    timing(&s),
                    next_fire(&s)
                )
            })
        }
        SchedulesCommand::List => {
            let r = api.get("/v1/schedules").await?;
            output::print(json, &r, || table(&r))
        }
        SchedulesCommand::Show { id } => {
            let s = api.get(&path(&id)).await?;
            output::print(json, &s, || show(&s))
        }
        SchedulesCommand::Pause { id } => {
            let s = api
                .post_json(&format!("{}/pause", path(&id)), &json!({}))
                .await?;
            output::print(json, &s, || format!("{id}: paused\n"))
        }
        SchedulesCommand::Resume { id } => {
            let s = api
                .post_json(&format!("{}/resume", path(&id)), &json!({}))
                .await?;
            output::print(json, &s, || {
                format!("{id}: resumed, next fire {}\n", next_fire(&s))
            })
        }
        SchedulesCommand::Remove { id } => {
            // Read it first, to say what was removed.
            let s = api.get(&path(&id)).await?;
            api.delete(&path(&id)).await?;
            let removed = json!({ "removed": s });
            output::print(json, &removed, || {
                format!(
                    "removed schedule {id}: {}, {}; the jobs it submitted stay\n",
                    s["task"].as_str().unwrap_or("?"),
                    timing(&s)
                )
            })
        }
        SchedulesCommand::Runs { id, limit } => {
            let r = api
                .get(&format!("{}/runs?limit={limit}", path(&id)))
                .await?;
            output::print(json, &r, || runs(&r))
        }
    }
}

/// The API path of schedule `id`.
fn path(id: &str) -> String {
    format!("/v1/schedules/{}", segment(id))
}

/// `cron 30 4 * * * (Europe/Paris)` or `every 1.0s`.
fn timing(s: &Value) -> String {
    match (s["cron"].as_str(), s["every_ms"].as_i64()) {
        (Some(cron), _) => format!("cron {cron} ({})", s["timezone"].as_str().unwrap_or("UTC")),
        (None, Some(every)) => format!("every {}", output::human_ms(every)),
        (None, None) => "?".into(),
    }
}

/// `2026-03-01 04:30:00Z (in 5.2h)`, `paused`, or `never` (no tick left).
fn next_fire(s: &Value) -> String {
    match s["next_fire_ms"].as_i64() {
        _ if s["paused"] == true => "paused".into(),
        Some(at) => {
            let from_now = at - output::now_ms();
            let when = if from_now >= 0 {
                format!("in {}", output::human_ms(from_now))
            } else {
                "due".into()
            };
            format!("{} ({when})", utc(at))
        }
        None => "never".into(),
    }
}

/// A Unix time in ms as `2026-03-01 04:30:00Z`.
fn utc(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// The schedule list as a table.
fn table(r: &Value) -> String {
    let schedules = r["schedules"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if schedules.is_empty() {
        return "no schedules\n".into();
    }
    let rows = schedules
        .iter()
        .map(|s| {
            vec![
                s["id"].as_str().unwrap_or("?").to_owned(),
                s["task"].as_str().unwrap_or("?").to_owned(),
                timing(s),
                next_fire(s),
            ]
        })
        .collect();
    output::table(&["ID", "TASK", "TIMING", "NEXT FIRE"], &[], rows)
}

/// One schedule: its timing, policy, arguments and times.
fn show(s: &Value) -> String {
    let mut out = format!(
        "schedule {}  task {}  tenant {}  {}\n",
        s["id"].as_str().unwrap_or("?"),
        s["task"].as_str().unwrap_or("?"),
        s["tenant"].as_str().unwrap_or("?"),
        if s["paused"] == true {
            "paused"
        } else {
            "active"
        }
    );
    let _ = writeln!(out, "  timing     {}", timing(s));
    let _ = writeln!(out, "  next fire  {}", next_fire(s));
    let _ = writeln!(
        out,
        "  missed     {} (grace {} ms)",
        s["missed"].as_str().unwrap_or("skip"),
        s["grace_ms"].as_u64().unwrap_or(5_000)
    );
    let _ = writeln!(out, "  args       {}", s["args"]);
    if let Some(name) = s["fire_time_arg"].as_str() {
        let _ = writeln!(out, "  fire time  in args.{name}");
    }
    if let Some(created) = s["created_at_ms"].as_i64() {
        let _ = writeln!(out, "  created    {}", utc(created));
    }
    out
}

/// A schedule's runs as a table.
fn runs(r: &Value) -> String {
    let runs = r["runs"].as_array().map(Vec::as_slice).unwrap_or_default();
    if runs.is_empty() {
        return "no runs yet\n".into();
    }
    let rows = runs
        .iter()
        .map(|run| {
            let tick = run["tick_ms"].as_i64().unwrap_or(0);
            vec![
                utc(tick),
                run["handled_at_ms"]
                    .as_i64()
                    .map_or("-".into(), |h| output::human_ms(h - tick)),
                run["outcome"].as_str().unwrap_or("?").to_owned(),
                run["job_id"].as_str().unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    output::table(&["TICK (UTC)", "LAG", "OUTCOME", "JOB"], &[1], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_timing_next_fire_and_runs() {
        let cron = json!({
            "id": "nightly", "task": "echo", "tenant": "default", "args": {"message": "hi"},
            "cron": "30 4 * * *", "timezone": "Europe/Paris", "missed": "skip",
            "created_at_ms": 0, "paused": false, "next_fire_ms": 1_772_339_400_000_i64
        });
        let every = json!({
            "id": "tick", "task": "noop", "tenant": "default", "args": {},
            "every_ms": 90_000, "missed": "latest", "created_at_ms": 0, "paused": true
        });
        let t = table(&json!({ "schedules": [cron, every] }));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("nightly  echo  cron"), "{t}");
        assert!(
            lines[1].contains("cron 30 4 * * * (Europe/Paris)")
                && lines[1].contains("2026-03-01 04:30:00Z"),
            "{t}"
        );
        assert!(
            lines[2].contains("every 1m 30s") && lines[2].ends_with("paused"),
            "{t}"
        );
        let detail = show(&cron);
        assert!(
            detail.contains("missed     skip (grace 5000 ms)"),
            "{detail}"
        );
        assert!(
            detail.contains("created    1970-01-01 00:00:00Z"),
            "{detail}"
        );
        let r = runs(&json!({ "runs": [
            {"tick_ms": 1000, "handled_at_ms": 1012, "outcome": "fired", "job_id": "0190-x"},
            {"tick_ms": 0, "handled_at_ms": 9000, "outcome": "skipped"}
        ]}));
        assert!(r.contains("12ms  fired    0190-x"), "{r}");
        assert!(r.lines().nth(2).unwrap().contains("skipped  -"), "{r}");
        assert_eq!(path("a b"), "/v1/schedules/a%20b");
    }
}
