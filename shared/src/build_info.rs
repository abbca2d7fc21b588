//! Which build a process is and how it fares: version, commit and uptime for
//! `/health/ready`, and the gauges every `/metrics` carries with them —
//! `hopper_build_info{version,git_sha} 1`, uptime, and the process' resident
//! memory, CPU time, threads and file descriptors (`metrics-process`).
//!
//! The API and the worker call [`export_metrics`] when they render
//! `/metrics` and [`BuildInfo::current`] when they answer `/health/ready`, so
//! a scrape always sees fresh values and an idle process does no work.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::metrics as m;

/// Hopper's version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short sha of the commit this was built from (`build.rs`: the
/// `HOPPER_GIT_SHA` variable at build time, else, in a release build,
/// `git rev-parse --short HEAD`), `unknown` when built outside a repository,
/// or `dev` in a debug build (which does not follow `HEAD`, so that a commit
/// does not rebuild the workspace).
pub const GIT_SHA: &str = env!("HOPPER_GIT_SHA");

/// What `/health/ready` says about the process.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    /// [`VERSION`].
    pub version: &'static str,
    /// [`GIT_SHA`].
    pub git_sha: &'static str,
    /// Whole seconds since the process started.
    pub uptime_s: u64,
}

impl BuildInfo {
    /// This process, now.
    pub fn current() -> Self {
        Self {
            version: VERSION,
            git_sha: GIT_SHA,
            uptime_s: uptime().as_secs(),
        }
    }

    /// Adds `version`, `git_sha` and `uptime_s` to a JSON object (a
    /// readiness report); anything else is left as it is.
    pub fn insert_into(&self, report: &mut serde_json::Value) {
        if let (Some(report), Ok(serde_json::Value::Object(fields))) =
            (report.as_object_mut(), serde_json::to_value(self))
        {
            report.extend(fields);
        }
    }
}

/// When the process started: the operating system's record of it (so it
/// counts from `exec`, not from the first question), or, where that cannot be
/// read, the first time anything asked.
fn started() -> SystemTime {
    static STARTED: OnceLock<SystemTime> = OnceLock::new();
    *STARTED.get_or_init(|| {
        metrics_process::collector::collect()
            .start_time_seconds
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .unwrap_or_else(SystemTime::now)
    })
}

/// Time since the process started (zero if the clock went back past it).
pub fn uptime() -> Duration {
    SystemTime::now()
        .duration_since(started())
        .unwrap_or_default()
}

/// Sets the build-info, uptime and process gauges on the installed metrics
/// recorder; call it just before rendering `/metrics`.
pub fn export_metrics() {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    let process = PROCESS.get_or_init(|| {
        let collector = metrics_process::Collector::new(m::PROCESS_METRICS_PREFIX);
        collector.describe();
        metrics::describe_gauge!(m::BUILD_INFO, "The build that runs: always 1.");
        metrics::describe_gauge!(
            m::PROCESS_UPTIME_SECONDS,
            metrics::Unit::Seconds,
            "Seconds since the process started."
        );
        collector
    });
    metrics::gauge!(m::BUILD_INFO, "version" => VERSION, "git_sha" => GIT_SHA).set(1.0);
    metrics::gauge!(m::PROCESS_UPTIME_SECONDS).set(uptime().as_secs_f64());
    process.collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sha_is_never_empty_and_the_version_is_the_crates() {
        assert!(!GIT_SHA.trim().is_empty());
        assert_eq!(BuildInfo::current().version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_report_gains_the_three_fields_and_keeps_its_own() {
        let mut report = serde_json::json!({ "status": "ready", "components": {} });
        BuildInfo::current().insert_into(&mut report);
        assert_eq!(report["status"], "ready");
        assert_eq!(report["version"], VERSION);
        assert_eq!(report["git_sha"], GIT_SHA);
        assert!(report["uptime_s"].is_u64(), "{report}");
    }

    #[test]
    fn uptime_counts_from_this_process_start_not_from_the_epoch() {
        // The OS' start time is whole seconds, rounded down, so never later
        // than now; and this test process is younger than an hour.
        let up = uptime();
        assert!(up < Duration::from_secs(3600), "{up:?}");
    }

    #[test]
    fn the_gauges_render_under_their_names() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, export_metrics);
        let text = handle.render();
        let line = format!(
            "{}{{version=\"{VERSION}\",git_sha=\"{GIT_SHA}\"}} 1",
            m::BUILD_INFO
        );
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        };
        assert!(value(m::PROCESS_RESIDENT_MEMORY_BYTES) > 0.0);
        assert!(value(m::PROCESS_CPU_SECONDS) >= 0.0);
        assert!(value(m::PROCESS_UPTIME_SECONDS) >= 0.0);
    }
}
