//! Following a job to its end, for `hopper submit --wait` and `hopper jobs
//! show --follow`: reads the job's event stream (`GET /v1/jobs/{id}/events`,
//! parsed by [`crate::sse`]) and shows its state and progress as they
//! change — a bar on a terminal (the report's `fraction` and `message`, the
//! standard shape of `TaskContext::report` / the Python SDK's `ctx.report`),
//! plain lines when stdout is not a terminal, nothing with `--json` — then
//! answers the finished job (`GET /v1/jobs/{id}`) for printing as before.
//!
//! A stream that reaches its lifetime cap (`reconnect`) is opened again; one
//! that ends early (the API went away) gives way to polling the job.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::{api::Api, sse::EventReader};

/// The job states after which nothing more happens.
const FINAL: [&str; 4] = ["succeeded", "failed", "dead", "cancelled"];
/// Bar positions for a whole job (a fraction in per-mille).
const BAR_LENGTH: u64 = 1000;

/// How changes are shown while following.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A progress bar on stderr.
    Bar,
    /// One plain line on stdout per change.
    Lines,
    /// Nothing (the final JSON is all that is printed).
    Quiet,
}

impl Display {
    /// Quiet with `--json`, a bar when stdout is a terminal, else lines.
    pub fn for_output(json: bool) -> Self {
        if json {
            Self::Quiet
        } else if std::io::stdout().is_terminal() {
            Self::Bar
        } else {
            Self::Lines
        }
    }
}

/// Follows job `id` until it is final (or `timeout` passed: an error
/// naming the state it was in); returns the job as `GET /v1/jobs/{id}`
/// answers it then.
pub async fn follow(
    api: &Api,
    id: &str,
    display: Display,
    timeout: Option<Duration>,
) -> anyhow::Result<Value> {
    let mut view = View::new(display);
    let started = Instant::now();
    let job = match timeout {
        Some(limit) => {
            match tokio::time::timeout(limit, watch(api, id, &mut view, started, timeout)).await {
                Ok(job) => job,
                Err(_) => {
                    view.close();
                    bail!("job {id} still {} after {limit:?}", view.state);
                }
            }
        }
        None => watch(api, id, &mut view, started, None).await,
    };
    view.close();
    job
}

/// Reads the event stream (again after each `reconnect`) until the final
/// `state` event, then reads the job.
async fn watch(
    api: &Api,
    id: &str,
    view: &mut View,
    started: Instant,
    timeout: Option<Duration>,
) -> anyhow::Result<Value> {
    loop {
        let mut events = EventReader::new(api.job_events(id).await?);
        let mut reconnect = false;
        while let Some(event) = events.next().await? {
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            match event.name.as_str() {
                "state" => {
                    let state = data["state"].as_str().unwrap_or("?");
                    if FINAL.contains(&state) {
                        view.state = state.to_owned();
                        return api.job(id).await;
                    }
                    view.show_state(&data);
                }
                "progress" => view.show_progress(&data),
                "reconnect" => reconnect = true,
                "gone" => bail!("job {id} left the queue without a record"),
                _ => {}
            }
        }
        if !reconnect {
            // The API went away mid-stream: polling finds the outcome.
            let left = timeout.map_or(Duration::from_secs(365 * 24 * 3600), |t| {
                t.saturating_sub(started.elapsed())
            });
            return api.wait(id, left).await;
        }
    }
}

/// What the user sees of the job meanwhile.
struct View {
    display: Display,
    bar: Option<ProgressBar>,
    /// The state last seen.
    state: String,
}

impl View {
    fn new(display: Display) -> Self {
        let bar = (display == Display::Bar).then(|| {
            let bar = ProgressBar::new(BAR_LENGTH).with_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{bar:30}] {percent:>3}% {wide_msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            display,
            bar,
            state: "pending".into(),
        }
    }

    /// A `state` event: `{"state", "attempt", "worker"?}`.
    fn show_state(&mut self, data: &Value) {
        self.state = data["state"].as_str().unwrap_or("?").to_owned();
        let attempt = data["attempt"].as_u64().unwrap_or(0);
        let label = if attempt > 1 {
            format!("{} (attempt {attempt})", self.state)
        } else {
            self.state.clone()
        };
        match (&self.bar, self.display) {
            (Some(bar), _) => bar.set_prefix(label),
            (None, Display::Lines) => println!("{label}"),
            _ => {}
        }
    }

    /// A `progress` event: `{"progress", "fraction"?, "message"?}`.
    fn show_progress(&mut self, data: &Value) {
        let fraction = data["fraction"].as_f64();
        let message = match data["message"].as_str() {
            Some(m) => m.to_owned(),
            // A report of another shape: shown as it is.
            None if fraction.is_none() => data["progress"].to_string(),
            None => String::new(),
        };
        match (&self.bar, self.display) {
            (Some(bar), _) => {
                if let Some(f) = fraction {
                    bar.set_position((f.clamp(0.0, 1.0) * BAR_LENGTH as f64).round() as u64);
                }
                bar.set_message(message);
            }
            (None, Display::Lines) => match fraction {
                Some(f) => {
                    let line = format!("{:>3.0}% {message}", f.clamp(0.0, 1.0) * 100.0);
                    println!("{}", line.trim_end());
                }
                None => println!("progress {message}"),
            },
            _ => {}
        }
    }

    /// Removes the bar (the finished job is printed next).
    fn close(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
