//! Periodic schedules: what one is, when it fires next, and what its firing
//! records.
//!
//! A schedule pushes a job of one task with fixed arguments at every tick of
//! its timing — a cron expression (5 fields, or 6 with seconds first) read
//! in an IANA time zone, or a fixed interval. This module is pure: it parses
//! and validates a [`ScheduleSpec`], computes ticks ([`Timing::next_after`],
//! [`Timing::latest_at_or_before`]) and decides what a due tick does
//! ([`Schedule::decide`]). Storing schedules and firing them exactly once is
//! the queue core's (`hopper-queue`'s `schedule.rs`, `fire.lua`); the API
//! and the CLI speak these types.
//!
//! Time zones are chrono-tz's compiled IANA database; cron matching across
//! daylight-saving changes is croner's: a wall-clock time skipped by a
//! spring-forward gap does not fire that day, and one repeated by a
//! fall-back fires once.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{Cron, parser::CronParser, parser::Seconds};
use serde::{Deserialize, Serialize};

use crate::QueueName;

/// The shortest interval a schedule may have (ms).
pub const MIN_EVERY_MS: u64 = 1_000;
/// The longest interval (ms): one year.
pub const MAX_EVERY_MS: u64 = 366 * 24 * 3_600_000;
/// The longest grace a late tick may be given (ms): one day.
pub const MAX_GRACE_MS: u64 = 24 * 3_600_000;
/// The grace a late tick gets when the schedule names none (ms).
pub const DEFAULT_GRACE_MS: u64 = 5_000;
/// How many runs of a schedule are kept (newest first).
pub const RUNS_KEPT: usize = 100;

/// What a tick that was missed (later than its grace: no scheduler ran, or
/// the schedule was paused) does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MissedTicks {
    /// Missed ticks fire nothing; the schedule goes on from the next tick.
    #[default]
    Skip,
    /// The latest missed tick fires once; the earlier ones are dropped.
    Latest,
}

/// A schedule as submitted (`POST /v1/schedules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleSpec {
    /// The schedule's name, unique (`[a-z0-9][a-z0-9_.-]{0,62}`).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,62}$"))]
    pub id: String,
    /// The task each tick submits a job of.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task: QueueName,
    /// The job's arguments, the same at every tick (checked against the
    /// task's schema).
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub args: serde_json::Value,
    /// A cron expression: 5 fields (minute hour day-of-month month
    /// day-of-week), or 6 with seconds first; `@hourly` and the like too.
    /// Exactly one of `cron` and `every_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone the cron expression is read in (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A fixed interval in milliseconds (≥ 1000), counted from the
    /// schedule's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// What missed ticks do (default `skip`).
    #[serde(default)]
    pub missed: MissedTicks,
    /// How late a tick may fire and still count as on time, in ms (default
    /// 5000, at most a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// When set, each job's arguments (an object) get this field holding the
    /// tick's time (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_time_arg: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// A stored schedule: the spec, who owns it, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// What was submitted.
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// The tenant whose jobs it submits (the creating key's).
    pub tenant: String,
    /// Unix ms: created (an interval's ticks count from here).
    pub created_at_ms: i64,
    /// Paused schedules fire nothing until resumed.
    #[serde(default)]
    pub paused: bool,
    /// Unix ms of the next tick (absent when paused or when the expression
    /// never matches again); filled in when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire_ms: Option<i64>,
}

/// One tick of a schedule, as its run list keeps it (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRun {
    /// Unix ms: the tick.
    pub tick_ms: i64,
    /// Unix ms: when a scheduler handled it.
    pub handled_at_ms: i64,
    /// The job it submitted; absent when the tick was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<uuid::Uuid>,
    /// `fired`, or `skipped` (missed, with `missed: skip`).
    pub outcome: String,
}

/// A schedule's timing, parsed.
#[derive(Debug, Clone)]
pub enum Timing {
    /// A cron expression in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// Where it is read.
        tz: Tz,
    },
    /// Every `every_ms` from `anchor_ms`.
    Every {
        /// The interval.
        every_ms: i64,
        /// The first tick's time minus one interval (the creation time).
        anchor_ms: i64,
    },
}

/// What is wrong with a schedule: the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidSchedule {
    /// The offending field (`cron`, `timezone`, `every_ms`, …).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidSchedule {
    InvalidSchedule {
        field,
        problem: problem.into(),
    }
}

impl ScheduleSpec {
    /// Checks every field but the arguments (the task's schema is the
    /// API's to check) and parses the timing, its interval counted from
    /// `created_at_ms`.
    pub fn validate(&self, created_at_ms: i64) -> Result<Timing, InvalidSchedule> {
        QueueName::new(&self.id).map_err(|e| invalid("id", e.to_string()))?;
        if let Some(grace) = self.grace_ms
            && grace > MAX_GRACE_MS
        {
            return Err(invalid(
                "grace_ms",
                format!("{grace} is more than a day ({MAX_GRACE_MS})"),
            ));
        }
        if let Some(name) = &self.fire_time_arg {
            if name.is_empty() || name.len() > 64 {
                return Err(invalid("fire_time_arg", "must be 1 to 64 characters"));
            }
            if !self.args.is_object() {
                return Err(invalid(
                    "fire_time_arg",
                    "the arguments must be an object to receive the fire time",
                ));
            }
        }
        match (&self.cron, self.every_ms) {
            (Some(_), Some(_)) => Err(invalid(
                "cron",
                "give either `cron` or `every_ms`, not both",
            )),
            (None, None) => Err(invalid(
                "cron",
                "give `cron` (with `timezone`) or `every_ms`",
            )),
            (None, Some(every)) => {
                if self.timezone.is_some() {
                    return Err(invalid("timezone", "applies to `cron` only"));
                }
                if !(MIN_EVERY_MS..=MAX_EVERY_MS).contains(&every) {
                    return Err(invalid(
                        "every_ms",
                        format!("{every} is outside {MIN_EVERY_MS} ..= {MAX_EVERY_MS}"),
                    ));
                }
                Ok(Timing::Every {
                    every_ms: every as i64,
                    anchor_ms: created_at_ms,
                })
            }
            (Some(expr), None) => {
                let tz_name = self.timezone.as_deref().unwrap_or("UTC");
                let tz: Tz = tz_name.parse().map_err(|_| {
                    invalid(
                        "timezone",
                        format!("`{tz_name}` is not an IANA time zone (e.g. `Europe/Paris`)"),
                    )
                })?;
                let cron = parse_cron(expr)?;
                let timing = Timing::Cron {
                    cron: Box::new(cron),
                    tz,
                };
                // An expression that can never match (30 February) is refused
                // here rather than silently never firing.
                if timing.next_after(created_at_ms).is_none() {
                    return Err(invalid(
                        "cron",
                        format!("`{expr}` never matches a future time"),
                    ));
                }
                Ok(timing)
            }
        }
    }

    /// The grace of a late tick (ms).
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms.unwrap_or(DEFAULT_GRACE_MS) as i64
    }
}

/// Parses a 5- or 6-field cron expression (or an alias such as `@daily`).
pub fn parse_cron(expr: &str) -> Result<Cron, InvalidSchedule> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(invalid(
            "cron",
            format!("`{expr}` has {fields} fields; a cron expression has 5, or 6 with seconds"),
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| invalid("cron", format!("`{expr}` is not a cron expression: {e}")))
}

impl Timing {
    /// The first tick strictly after `after_ms`; `None` when there is none.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Timing::Every {
                every_ms,
                anchor_ms,
            } => {
                let k = (after_ms - anchor_ms).div_euclid(*every_ms) + 1;
                Some(anchor_ms + k.max(1) * every_ms)
            }
            Timing::Cron { cron, tz } => {
                let after = tz.from_utc_datetime(&utc(after_ms)?.naive_utc());
                cron.find_next_occurrence(&after, false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc).timestamp_millis())
            }
        }
    }

    /// The latest tick at or before `at_ms`, no earlier than `from_ms` (a tick
    /// known to be due): walks forward from `from_ms`, at most 10,000 ticks,
    /// then settles for the last one reached.
    pub fn latest_at_or_before(&self, from_ms: i64, at_ms: i64) -> i64 {
        match self {
            Timing::Every {
                every_ms,
                anchor_ms,
            } => {
                if at_ms < from_ms {
                    return from_ms;
                }
                let k = (at_ms - anchor_ms).div_euclid(*every_ms);
                (anchor_ms + k * every_ms).max(from_ms)
            }
            Timing::Cron { .. } => {
                let mut latest = from_ms;
                for _ in 0..10_000 {
                    match self.next_after(latest) {
                        Some(t) if t <= at_ms => latest = t,
                        _ => break,
                    }
                }
                latest
            }
        }
    }
}

fn utc(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// What a scheduler does with a due tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The tick handled (the latest due one; earlier missed ones fold into it).
    pub tick_ms: i64,
    /// Whether it submits a job (false: skipped as missed).
    pub fire: bool,
    /// The tick after it (`None`: the expression never matches again).
    pub next_ms: Option<i64>,
}

impl Schedule {
    /// What the tick `due_ms` (stored as due, ≤ `now_ms`) does at `now_ms`
    /// with this timing. Within the grace it is on time: it fires, and the
    /// schedule moves to the tick after it (a scheduler that stalled a moment
    /// catches up tick by tick). Later than the grace, the ticks missed so
    /// far fold into the latest of them, which fires or is skipped by the
    /// policy, and the schedule moves to the tick after that one.
    pub fn decide(&self, timing: &Timing, due_ms: i64, now_ms: i64) -> Decision {
        let grace = self.spec.grace_ms();
        if now_ms - due_ms <= grace {
            return Decision {
                tick_ms: due_ms,
                fire: true,
                next_ms: timing.next_after(due_ms),
            };
        }
        let tick_ms = timing.latest_at_or_before(due_ms, now_ms - grace - 1);
        Decision {
            tick_ms,
            fire: self.spec.missed == MissedTicks::Latest,
            next_ms: timing.next_after(tick_ms),
        }
    }

    /// The job's arguments for the tick `tick_ms`.
    pub fn args_at(&self, tick_ms: i64) -> serde_json::Value {
        let mut args = self.spec.args.clone();
        if let (Some(name), Some(map)) = (&self.spec.fire_time_arg, args.as_object_mut()) {
            map.insert(name.clone(), serde_json::json!(tick_ms));
        }
        args
    }

    /// The job id of the tick `tick_ms`: the same for every scheduler, so a
    /// tick can never make two jobs (`prefix` is the deployment's key prefix).
    pub fn job_id(&self, prefix: &str, tick_ms: i64) -> uuid::Uuid {
        let name = format!("hopper-schedule:{prefix}:{}:{tick_ms}", self.spec.id);
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: Option<&str>, tz: Option<&str>, every: Option<u64>) -> ScheduleSpec {
        ScheduleSpec {
            id: "nightly".into(),
            task: QueueName::new("echo").unwrap(),
            args: serde_json::json!({"message": "hi"}),
            cron: cron.map(str::to_owned),
            timezone: tz.map(str::to_owned),
            every_ms: every,
            missed: MissedTicks::Skip,
            grace_ms: None,
            fire_time_arg: None,
        }
    }

    fn every_second() -> Schedule {
        Schedule {
            spec: spec(None, None, Some(1000)),
            tenant: "default".into(),
            created_at_ms: 0,
            paused: false,
            next_fire_ms: None,
        }
    }

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn a_bad_cron_expression_names_the_field_and_the_expression() {
        let e = spec(Some("61 * * * *"), None, None)
            .validate(0)
            .unwrap_err();
        assert_eq!(e.field, "cron");
        assert!(e.problem.contains("61 * * * *"), "{e}");
        let e = spec(Some("* * *"), None, None).validate(0).unwrap_err();
        assert!(e.problem.contains("3 fields"), "{e}");
        let e = spec(Some("0 0 30 2 *"), None, None)
            .validate(0)
            .unwrap_err();
        assert!(e.problem.contains("never matches"), "{e}");
    }

    #[test]
    fn timing_fields_are_checked() {
        let e = spec(Some("* * * * *"), Some("Mars/Olympus"), None)
            .validate(0)
            .unwrap_err();
        assert_eq!(e.field, "timezone");
        let e = spec(None, None, None).validate(0).unwrap_err();
        assert_eq!(e.field, "cron");
        let e = spec(Some("* * * * *"), None, Some(1000))
            .validate(0)
            .unwrap_err();
        assert_eq!(e.field, "cron");
        let e = spec(None, None, Some(999)).validate(0).unwrap_err();
        assert_eq!(e.field, "every_ms");
        let mut s = spec(None, None, Some(1000));
        s.id = "Bad Id".into();
        assert_eq!(s.validate(0).unwrap_err().field, "id");
    }

    #[test]
    fn six_fields_count_seconds() {
        let t = spec(Some("*/5 * * * * *"), None, None).validate(0).unwrap();
        assert_eq!(
            t.next_after(ms("2026-01-01T00:00:01Z")),
            Some(ms("2026-01-01T00:00:05Z"))
        );
        let t = spec(Some("30 4 * * *"), None, None).validate(0).unwrap();
        assert_eq!(
            t.next_after(ms("2026-01-01T00:00:00Z")),
            Some(ms("2026-01-01T04:30:00Z"))
        );
    }

    #[test]
    fn intervals_count_from_creation() {
        let t = spec(None, None, Some(1000)).validate(500).unwrap();
        assert_eq!(t.next_after(500), Some(1500));
        assert_eq!(t.next_after(1499), Some(1500));
        assert_eq!(t.next_after(1500), Some(2500));
        assert_eq!(t.latest_at_or_before(1500, 9_700), 9_500);
    }

    #[test]
    fn daily_wall_clock_time_follows_daylight_saving_in_its_zone() {
        // 02:30 every day in New York: on 2026-03-08 clocks jump 02:00 → 03:00,
        // so that day has no 02:30; the next days fire at 02:30 EDT (06:30 UTC).
        let t = spec(Some("30 2 * * *"), Some("America/New_York"), None)
            .validate(0)
            .unwrap();
        let before = t.next_after(ms("2026-03-06T12:00:00Z")).unwrap();
        assert_eq!(before, ms("2026-03-07T07:30:00Z")); // EST, UTC-5
        let after = t.next_after(before).unwrap();
        assert_ne!(
            after,
            ms("2026-03-08T07:30:00Z"),
            "a skipped wall-clock time"
        );
        assert_eq!(
            t.next_after(ms("2026-03-08T12:00:00Z")),
            Some(ms("2026-03-09T06:30:00Z"))
        );
        // 09:00 in Paris: 08:00 UTC in winter, 07:00 UTC after 2026-03-29.
        let t = spec(Some("0 9 * * *"), Some("Europe/Paris"), None)
            .validate(0)
            .unwrap();
        assert_eq!(
            t.next_after(ms("2026-03-28T10:00:00Z")),
            Some(ms("2026-03-29T07:00:00Z"))
        );
        assert_eq!(
            t.next_after(ms("2026-03-27T10:00:00Z")),
            Some(ms("2026-03-28T08:00:00Z"))
        );
    }

    #[test]
    fn a_repeated_wall_clock_hour_fires_once() {
        // 01:30 in New York happens twice on 2026-11-01 (fall back at 02:00).
        let t = spec(Some("30 1 * * *"), Some("America/New_York"), None)
            .validate(0)
            .unwrap();
        let first = t.next_after(ms("2026-11-01T00:00:00Z")).unwrap();
        assert_eq!(first, ms("2026-11-01T05:30:00Z")); // 01:30 EDT
        let second = t.next_after(first).unwrap();
        assert_eq!(second, ms("2026-11-02T06:30:00Z"), "not again at 01:30 EST");
    }

    #[test]
    fn a_late_tick_fires_within_grace_else_by_policy() {
        let mut s = every_second();
        let t = s.spec.validate(0).unwrap();
        // On time.
        let d = s.decide(&t, 1000, 1003);
        assert_eq!((d.tick_ms, d.fire, d.next_ms), (1000, true, Some(2000)));
        // 2.5 s late, within the 5 s grace: it fires, and so will the next ones
        // (already due), one by one.
        let d = s.decide(&t, 1000, 3500);
        assert_eq!((d.tick_ms, d.fire, d.next_ms), (1000, true, Some(2000)));
        // 30 s of ticks missed: those later than the grace (up to 25,000) fold
        // into one, skipped; the schedule goes on from 26,000 (within grace).
        let d = s.decide(&t, 1000, 30_400);
        assert_eq!(
            (d.tick_ms, d.fire, d.next_ms),
            (25_000, false, Some(26_000))
        );
        // `latest`: that one fires instead.
        s.spec.missed = MissedTicks::Latest;
        let d = s.decide(&t, 1000, 30_400);
        assert_eq!((d.tick_ms, d.fire, d.next_ms), (25_000, true, Some(26_000)));
        // A cron tick a day late with a minute's grace: skipped by default.
        s.spec.missed = MissedTicks::Skip;
        s.spec.grace_ms = Some(60_000);
        let daily = spec(Some("0 3 * * *"), None, None).validate(0).unwrap();
        let d = s.decide(
            &daily,
            ms("2026-01-01T03:00:00Z"),
            ms("2026-01-02T04:00:00Z"),
        );
        assert_eq!(d.tick_ms, ms("2026-01-02T03:00:00Z"));
        assert!(!d.fire);
        assert_eq!(d.next_ms, Some(ms("2026-01-03T03:00:00Z")));
    }

    #[test]
    fn the_fire_time_goes_into_the_arguments_when_asked() {
        let mut s = every_second();
        assert_eq!(s.args_at(5000), serde_json::json!({"message": "hi"}));
        s.spec.fire_time_arg = Some("fired_at".into());
        assert_eq!(
            s.args_at(5000),
            serde_json::json!({"message": "hi", "fired_at": 5000})
        );
        assert_eq!(s.job_id("p", 5000), s.job_id("p", 5000));
        assert_ne!(s.job_id("p", 5000), s.job_id("p", 6000));
    }
}
