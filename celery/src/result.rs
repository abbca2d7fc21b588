//! The Celery result of a finished job, as `AsyncResult(id)` reads it.
//!
//! Celery's Redis result backend stores, under `celery-task-meta-<id>`, a JSON
//! object `{status, result, traceback, children, date_done, task_id}` (plus
//! `name, args, kwargs, worker, retries, queue` with `result_extended`). A
//! failure's `result` names an exception class the client imports and raises
//! on `.get()`: `{exc_type, exc_module, exc_message}` — it must be a real
//! exception class or the client raises `SecurityError`, so only builtin
//! classes (taken from the error text when it names one) and
//! `celery.exceptions` classes are used.
//!
//! [`meta`] builds it for a job (from its record and the [`ResultData`] the
//! intake left in the job's `notify.data`), [`refusal_meta`] for a message
//! the intake refused. Writing it (`SETEX` + `PUBLISH`) is `publish`'s.

use hopper_shared::jobs::{JobRecord, JobState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::config::CeleryConfig;
use crate::envelope::{CeleryMessage, Refusal, RefusalReason};

/// What the intake keeps of a Celery message to publish its result later
/// (the job's `notify.data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultData {
    /// The Celery task id.
    pub task_id: String,
    /// The Celery task name.
    pub name: String,
    /// The positional arguments as sent.
    pub args: Vec<Value>,
    /// The keyword arguments as sent.
    pub kwargs: Map<String, Value>,
    /// Where the result goes (result prefix included).
    pub result_key: String,
    /// How long it is kept, in seconds; 0 = for ever.
    pub result_ttl_s: u64,
    /// The kombu queue (routing key) it came from, for `result_extended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

impl ResultData {
    /// The result data of `message` under `config`.
    pub fn new(message: &CeleryMessage, config: &CeleryConfig) -> Self {
        Self {
            task_id: message.id.clone(),
            name: message.task.clone(),
            args: message.args.clone(),
            kwargs: message.kwargs.clone(),
            result_key: config.result_key(&message.id),
            result_ttl_s: config.result_expires_s,
            queue: message.routing_key.clone(),
        }
    }
}

/// Builtin exception classes a failure may name (those taking one message
/// argument and deriving from `Exception`, so `.get()` raises them as is).
const BUILTIN_EXCEPTIONS: &[&str] = &[
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BlockingIOError",
    "BrokenPipeError",
    "BufferError",
    "ChildProcessError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "EOFError",
    "Exception",
    "FileExistsError",
    "FileNotFoundError",
    "FloatingPointError",
    "ImportError",
    "IndexError",
    "InterruptedError",
    "IsADirectoryError",
    "KeyError",
    "LookupError",
    "MemoryError",
    "ModuleNotFoundError",
    "NameError",
    "NotADirectoryError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "PermissionError",
    "ProcessLookupError",
    "RecursionError",
    "ReferenceError",
    "RuntimeError",
    "StopAsyncIteration",
    "SystemError",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeError",
    "ValueError",
    "ZeroDivisionError",
];

/// Celery's states, as the client compares them.
fn status(state: JobState) -> &'static str {
    match state {
        JobState::Succeeded => "SUCCESS",
        JobState::Dead | JobState::Failed => "FAILURE",
        JobState::Cancelled => "REVOKED",
        JobState::Retrying => "RETRY",
        JobState::Running => "STARTED",
        JobState::Pending | JobState::Scheduled => "PENDING",
    }
}

/// What a Celery meta needs of a finished job's record: read from the
/// outbox entry without the rest of the record (its arguments, history, …).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct FinishedJob {
    /// Its final state.
    pub state: JobState,
    /// The handler's result, when it succeeded.
    #[serde(default)]
    pub result: Option<Value>,
    /// The last error.
    #[serde(default)]
    pub error: Option<String>,
    /// The worker of its last attempt.
    #[serde(default)]
    pub worker: Option<String>,
    /// Attempts started.
    pub attempts: u32,
}

impl From<&JobRecord> for FinishedJob {
    fn from(job: &JobRecord) -> Self {
        Self {
            state: job.state,
            result: job.result.clone(),
            error: job.error.clone(),
            worker: job.worker.clone(),
            attempts: job.attempts,
        }
    }
}

/// The result meta of `job` (meant for a finished one: succeeded → SUCCESS
/// with its result, dead → FAILURE with the exception its error names,
/// cancelled → REVOKED with `TaskRevokedError`).
pub fn meta(job: &FinishedJob, data: &ResultData, now: OffsetDateTime) -> Value {
    let status = status(job.state);
    let error = job.error.as_deref();
    let (result, traceback) = match job.state {
        JobState::Succeeded => (job.result.clone().unwrap_or(Value::Null), Value::Null),
        JobState::Dead | JobState::Failed => {
            let text = error.unwrap_or("the job failed");
            (failure_exception(text), Value::from(text))
        }
        JobState::Cancelled => {
            let text = error.unwrap_or("cancelled");
            (
                exception("celery.exceptions", "TaskRevokedError", text),
                Value::from(text),
            )
        }
        _ => (Value::Null, Value::Null),
    };
    let ready = matches!(status, "SUCCESS" | "FAILURE" | "REVOKED");
    json!({
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": if ready { Value::from(date_done(now)) } else { Value::Null },
        "task_id": data.task_id,
        "name": data.name,
        "args": data.args,
        "kwargs": data.kwargs,
        "worker": job.worker,
        "retries": job.attempts.saturating_sub(1),
        "queue": data.queue,
    })
}

/// The FAILURE meta of a refused message, or `None` when there is nothing to
/// publish: its id could not be read, or its producer asked for no result.
pub fn refusal_meta(refusal: &Refusal, now: OffsetDateTime) -> Option<Value> {
    let task_id = refusal.id.as_deref()?;
    if refusal.ignore_result {
        return None;
    }
    let (module, class) = match refusal.reason {
        RefusalReason::UnknownTask => ("celery.exceptions", "NotRegistered"),
        RefusalReason::BadArguments => ("builtins", "TypeError"),
        _ => ("builtins", "ValueError"),
    };
    let text = format!(
        "Hopper refused the message ({}): {}",
        refusal.reason, refusal.detail
    );
    Some(json!({
        "status": "FAILURE",
        "result": exception(module, class, &refusal.detail),
        "traceback": text,
        "children": [],
        "date_done": date_done(now),
        "task_id": task_id,
        "name": refusal.task,
    }))
}

/// `{exc_type, exc_message, exc_module}` as Celery stores an exception
/// (`exc_message` is the exception's `args`).
fn exception(module: &str, class: &str, message: &str) -> Value {
    json!({"exc_type": class, "exc_message": [message], "exc_module": module})
}

/// The exception a failed job's error text names: a time limit, a builtin
/// class (`ValueError: boom`, or a Python traceback ending so), else
/// `RuntimeError` with the whole text.
fn failure_exception(text: &str) -> Value {
    if text.starts_with("hard time limit") {
        return exception("celery.exceptions", "TimeLimitExceeded", text);
    }
    if text.starts_with("stopped at the soft time limit") {
        return exception("celery.exceptions", "SoftTimeLimitExceeded", text);
    }
    let last = exception_line(text);
    if let Some((class, message)) = last.split_once(':')
        && BUILTIN_EXCEPTIONS.contains(&class)
    {
        return exception(
            "builtins",
            class,
            message.strip_prefix(' ').unwrap_or(message),
        );
    }
    if BUILTIN_EXCEPTIONS.contains(&last.trim_end()) {
        return exception("builtins", last.trim_end(), "");
    }
    exception("builtins", "RuntimeError", last)
}

/// The exception part of an error text: after a Python traceback's frames
/// (`Traceback (most recent call last):` then indented lines), the rest;
/// without one, the whole text.
fn exception_line(text: &str) -> &str {
    const HEADER: &str = "Traceback (most recent call last):";
    let Some(start) = text.rfind(HEADER) else {
        return text;
    };
    let mut offset = start + HEADER.len();
    for line in text[offset..].split_inclusive('\n') {
        let frame = line.starts_with(' ') || line.starts_with('\t') || line.trim().is_empty();
        if !frame {
            return text[offset..].trim_end();
        }
        offset += line.len();
    }
    text
}

/// `datetime.now(timezone.utc).isoformat()`: `2026-12-02T10:00:00.123456+00:00`.
fn date_done(now: OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// A finished job as its outbox entry holds it (a whole record: the
    /// fields it does not need are skipped when read).
    fn job(state: JobState, result: Option<Value>, error: Option<&str>) -> FinishedJob {
        serde_json::from_value(json!({
            "id": "018f0000-0000-7000-8000-000000000001",
            "kind": "add",
            "state": state,
            "attempts": 2,
            "max_attempts": 3,
            "args": {},
            "result": result,
            "error": error,
            "worker": "w-1",
            "enqueued_at_ms": 0,
            "started_at_ms": null,
            "finished_at_ms": null,
        }))
        .unwrap()
    }

    fn data() -> ResultData {
        serde_json::from_value(json!({
            "task_id": "t-1", "name": "tasks.add", "args": [1], "kwargs": {"y": 2},
            "result_key": "celery-task-meta-t-1", "result_ttl_s": 86400,
        }))
        .unwrap()
    }

    const NOW: OffsetDateTime = datetime!(2026-12-02 10:00:00.123456 UTC);

    #[test]
    fn success_meta() {
        let m = meta(
            &job(JobState::Succeeded, Some(json!({"sum": 3})), None),
            &data(),
            NOW,
        );
        assert_eq!(
            m,
            json!({
                "status": "SUCCESS", "result": {"sum": 3}, "traceback": null, "children": [],
                "date_done": "2026-12-02T10:00:00.123456+00:00", "task_id": "t-1",
                "name": "tasks.add", "args": [1], "kwargs": {"y": 2}, "worker": "w-1",
                "retries": 1, "queue": null,
            })
        );
    }

    #[test]
    fn failure_types() {
        let tb = "Traceback (most recent call last):\n  File \"t.py\", line 3, in add\n    \
                  raise KeyError('k')\n    ^^^^\nKeyError: 'k'";
        for (error, module, class, message) in [
            ("ValueError: boom", "builtins", "ValueError", "boom"),
            (
                "ZeroDivisionError: division by zero",
                "builtins",
                "ZeroDivisionError",
                "division by zero",
            ),
            (tb, "builtins", "KeyError", "'k'"),
            ("ValueError", "builtins", "ValueError", ""),
            (
                "Traceback (most recent call last):\n  File \"x\"\nmod.Error: bad\nmore",
                "builtins",
                "RuntimeError",
                "mod.Error: bad\nmore",
            ),
            ("disk full", "builtins", "RuntimeError", "disk full"),
            ("os: system", "builtins", "RuntimeError", "os: system"),
            (
                "hard time limit of 30s exceeded",
                "celery.exceptions",
                "TimeLimitExceeded",
                "hard time limit of 30s exceeded",
            ),
            (
                "stopped at the soft time limit",
                "celery.exceptions",
                "SoftTimeLimitExceeded",
                "stopped at the soft time limit",
            ),
        ] {
            let m = meta(&job(JobState::Dead, None, Some(error)), &data(), NOW);
            assert_eq!(m["status"], "FAILURE");
            assert_eq!(
                m["result"],
                json!({"exc_type": class, "exc_message": [message], "exc_module": module}),
                "{error}"
            );
            assert_eq!(m["traceback"], error);
        }
    }

    #[test]
    fn revoked_meta() {
        let m = meta(
            &job(
                JobState::Cancelled,
                None,
                Some("expired at 2026-12-02T10:00:00Z"),
            ),
            &data(),
            NOW,
        );
        assert_eq!(m["status"], "REVOKED");
        assert_eq!(m["result"]["exc_type"], "TaskRevokedError");
        assert_eq!(m["result"]["exc_module"], "celery.exceptions");
        assert_eq!(
            m["result"]["exc_message"],
            json!(["expired at 2026-12-02T10:00:00Z"])
        );
    }

    #[test]
    fn refusal_metas() {
        let mut refusal = Refusal::unknown_task("tasks.nope");
        assert_eq!(
            refusal_meta(&refusal, NOW),
            None,
            "no id, nothing to publish"
        );
        refusal.id = Some("t-9".into());
        let m = refusal_meta(&refusal, NOW).unwrap();
        assert_eq!(m["status"], "FAILURE");
        assert_eq!(m["task_id"], "t-9");
        assert_eq!(m["name"], "tasks.nope");
        assert_eq!(m["result"]["exc_type"], "NotRegistered");
        assert_eq!(m["result"]["exc_module"], "celery.exceptions");
        refusal.reason = RefusalReason::BadArguments;
        assert_eq!(
            refusal_meta(&refusal, NOW).unwrap()["result"]["exc_type"],
            "TypeError"
        );
        refusal.reason = RefusalReason::ContentType;
        assert_eq!(
            refusal_meta(&refusal, NOW).unwrap()["result"]["exc_type"],
            "ValueError"
        );
        refusal.ignore_result = true;
        assert_eq!(refusal_meta(&refusal, NOW), None);
    }

    #[test]
    fn result_data_serde_shape() {
        let value = serde_json::to_value(data()).unwrap();
        assert_eq!(
            value,
            json!({"task_id": "t-1", "name": "tasks.add", "args": [1], "kwargs": {"y": 2},
                   "result_key": "celery-task-meta-t-1", "result_ttl_s": 86400})
        );
    }

    #[test]
    fn date_done_like_python() {
        assert_eq!(
            date_done(datetime!(2026-01-02 03:04:05 +02:00)),
            "2026-01-02T01:04:05.000000+00:00"
        );
    }
}
