//! Reading one Celery message as kombu's Redis transport stores it.
//!
//! A Celery producer (`delay`, `apply_async`, `send_task`) `LPUSH`es a JSON
//! envelope onto the queue's list: `{"body": <base64>, "content-type",
//! "content-encoding", "headers": {...}, "properties": {"body_encoding",
//! "priority", "delivery_info": {"routing_key"}, ...}}`. [`parse`] turns it
//! into a [`CeleryMessage`] — the fields the intake needs to queue a Hopper
//! job — or a [`Refusal`] that says what is wrong and how to fix it.
//!
//! Both task protocols parse: protocol 2 (celery ≥ 4's default) keeps the
//! task's name, id and options in `headers` and the body is `[args, kwargs,
//! embed]`; protocol 1 has empty headers and a body object with `task`, `id`,
//! `args`, `kwargs`, `eta`, `expires`, `timelimit`, ….
//!
//! What Hopper cannot honour is refused rather than half-done: a content type
//! other than JSON (pickle, yaml, msgpack), a body encoding other than base64,
//! and canvas primitives that would run something after the task (`callbacks`,
//! `errbacks`, `chain`, `chord`). A task of a `group` runs fine alone (results
//! are per task), so the `group` header is accepted and kept.
//!
//! The fixtures in `celery/tests/fixtures/` are envelopes captured from the
//! pinned celery; `celery/tests/envelope.rs` parses them.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};
use time::format_description::well_known::Iso8601;
use time::{OffsetDateTime, PrimitiveDateTime};

/// One Celery task message, as the intake needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct CeleryMessage {
    /// The Celery task id (`AsyncResult(id)`), usually a UUID.
    pub id: String,
    /// The Celery task name (`tasks.add`).
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Not before this time (`countdown` / `eta`).
    pub eta: Option<OffsetDateTime>,
    /// Not after this time (`expires`): an expired message is revoked.
    pub expires: Option<OffsetDateTime>,
    /// `time_limit`: the hard time limit.
    pub hard_time_limit: Option<Duration>,
    /// `soft_time_limit`.
    pub soft_time_limit: Option<Duration>,
    /// The producer asked for no result (`ignore_result=True`).
    pub ignore_result: bool,
    /// kombu priority 0..=9 (`properties.priority`; on Redis a lower number
    /// is more urgent); missing = 0.
    pub priority: u8,
    /// Times Celery retried it already (`self.retry`).
    pub retries: u32,
    /// The id of the first task of its workflow.
    pub root_id: Option<String>,
    /// The id of the task that sent it.
    pub parent_id: Option<String>,
    /// The id of the group it belongs to.
    pub group: Option<String>,
    /// The routing key it was sent with (the kombu queue, by default).
    pub routing_key: Option<String>,
    /// The producer's `pid@host`.
    pub origin: Option<String>,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The envelope or its body is not JSON.
    NotJson,
    /// A content type other than `application/json` (pickle, yaml, msgpack…).
    ContentType,
    /// A body encoding other than base64, or a body that is not valid
    /// base64 or UTF-8.
    Encoding,
    /// A missing id or task, or a field of the wrong shape.
    Malformed,
    /// Canvas: callbacks, errbacks, a chain or a chord to run afterwards.
    Canvas,
    /// No Hopper task serves the Celery task name.
    UnknownTask,
    /// The arguments do not fit the task's parameters.
    BadArguments,
}

impl RefusalReason {
    /// A short stable name (for logs, metrics and dead-letter reasons).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::ContentType => "content_type",
            Self::Encoding => "encoding",
            Self::Malformed => "malformed",
            Self::Canvas => "canvas",
            Self::UnknownTask => "unknown_task",
            Self::BadArguments => "bad_arguments",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message Hopper will not run, with what could be read of it, so the
/// intake can dead-letter it and publish a FAILURE result to its producer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Celery message refused ({reason}): {detail}")]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// What is wrong and how to fix it.
    pub detail: String,
    /// The Celery task id, when it could be read.
    pub id: Option<String>,
    /// The Celery task name, when it could be read.
    pub task: Option<String>,
    /// The producer asked for no result.
    pub ignore_result: bool,
}

impl Refusal {
    /// A refusal knowing nothing of the message yet.
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            id: None,
            task: None,
            ignore_result: false,
        }
    }

    /// The refusal of a task name no Hopper task serves.
    pub fn unknown_task(celery_name: &str) -> Self {
        Self::new(
            RefusalReason::UnknownTask,
            format!(
                "task `{celery_name}` is not declared: declare it or map it with \
                 HOPPER_CELERY_ROUTES={celery_name}=<task>"
            ),
        )
        .with_task(celery_name)
    }

    /// The same refusal, naming the message it is about (its id, task name and
    /// `ignore_result`).
    pub fn for_message(mut self, message: &CeleryMessage) -> Self {
        self.id = Some(message.id.clone());
        self.task = Some(message.task.clone());
        self.ignore_result = message.ignore_result;
        self
    }

    fn with_task(mut self, task: &str) -> Self {
        self.task = Some(task.to_owned());
        self
    }

    fn with(mut self, known: &Known) -> Self {
        self.id = self.id.or_else(|| known.id.clone());
        self.task = self.task.or_else(|| known.task.clone());
        self.ignore_result |= known.ignore_result;
        self
    }
}

/// What was read of a message so far: carried into a refusal.
#[derive(Default)]
struct Known {
    id: Option<String>,
    task: Option<String>,
    ignore_result: bool,
}

fn malformed(detail: impl Into<String>) -> Refusal {
    Refusal::new(RefusalReason::Malformed, detail)
}

/// Parses one envelope as kombu's Redis transport stores it.
pub fn parse(raw: &str) -> Result<CeleryMessage, Refusal> {
    let envelope: Value = serde_json::from_str(raw).map_err(|e| {
        Refusal::new(
            RefusalReason::NotJson,
            format!(
                "the message is not a kombu JSON envelope ({e}): send it with a Celery \
                 producer on the Redis transport"
            ),
        )
    })?;
    let Value::Object(envelope) = envelope else {
        return Err(malformed(
            "the envelope is not a JSON object: send it with a Celery producer on the Redis transport",
        ));
    };
    let empty = Map::new();
    let headers = object_field(&envelope, "headers", "the envelope")?.unwrap_or(&empty);
    let properties = object_field(&envelope, "properties", "the envelope")?.unwrap_or(&empty);

    // What the headers (protocol 2) or properties tell before the body is
    // read, so that a refused body still names its task.
    let known = Known {
        id: string_field(headers, "id")
            .ok()
            .flatten()
            .or_else(|| string_field(properties, "correlation_id").ok().flatten()),
        task: string_field(headers, "task").ok().flatten(),
        ignore_result: headers.get("ignore_result").and_then(Value::as_bool) == Some(true),
    };

    let body = decode_body(&envelope, properties).map_err(|r| r.with(&known))?;
    let mut message = if headers.contains_key("task") {
        protocol2(headers, body)
    } else {
        protocol1(body)
    }
    .map_err(|r| r.with(&known))?;

    let read_properties = || -> Result<(u8, Option<String>), Refusal> {
        let routing_key = match properties.get("delivery_info") {
            Some(Value::Object(info)) => string_field(info, "routing_key")?,
            _ => None,
        };
        Ok((priority(properties)?, routing_key))
    };
    (message.priority, message.routing_key) =
        read_properties().map_err(|r| r.for_message(&message))?;
    Ok(message)
}

/// The body's JSON: checks the content type and encodings, then decodes.
fn decode_body(
    envelope: &Map<String, Value>,
    properties: &Map<String, Value>,
) -> Result<Value, Refusal> {
    let content_type = string_field(envelope, "content-type")?;
    match content_type.as_deref() {
        Some("application/json") => {}
        Some(other) => {
            let (what, fix) = match other {
                "application/x-python-serialize" => ("(pickle) ", "set task_serializer='json'"),
                "application/x-yaml" => ("(yaml) ", "set task_serializer='json'"),
                "application/x-msgpack" => ("(msgpack) ", "set task_serializer='json'"),
                "application/data" => ("(raw bytes) ", "send JSON-serialisable arguments"),
                _ => ("", "set task_serializer='json'"),
            };
            return Err(Refusal::new(
                RefusalReason::ContentType,
                format!("content type {other} {what}is not supported: {fix}"),
            ));
        }
        None => {
            return Err(Refusal::new(
                RefusalReason::ContentType,
                "the envelope has no content-type: only application/json is supported \
                 (set task_serializer='json')",
            ));
        }
    }
    match string_field(envelope, "content-encoding")?.as_deref() {
        None | Some("utf-8") | Some("utf8") => {}
        Some(other) => {
            return Err(Refusal::new(
                RefusalReason::Encoding,
                format!("content encoding {other} is not supported: JSON messages must be utf-8"),
            ));
        }
    }
    let body = match envelope.get("body") {
        Some(Value::String(body)) => body,
        Some(_) => return Err(malformed("the envelope's body is not a string")),
        None => return Err(malformed("the envelope has no body")),
    };
    // kombu's Redis transport always base64-encodes; without a body encoding
    // kombu reads the body as is, and so does this.
    let text = match string_field(properties, "body_encoding")?.as_deref() {
        Some("base64") => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .map_err(|e| {
                    Refusal::new(
                        RefusalReason::Encoding,
                        format!("the body is not valid base64 ({e})"),
                    )
                })?;
            String::from_utf8(bytes).map_err(|e| {
                Refusal::new(
                    RefusalReason::Encoding,
                    format!("the body is not valid UTF-8 ({e})"),
                )
            })?
        }
        None => body.clone(),
        Some(other) => {
            return Err(Refusal::new(
                RefusalReason::Encoding,
                format!(
                    "body encoding {other} is not supported: only base64 (kombu's Redis \
                     transport's own) is"
                ),
            ));
        }
    };
    serde_json::from_str(&text).map_err(|e| {
        Refusal::new(
            RefusalReason::NotJson,
            format!("the body is not valid JSON ({e}) although its content type says so"),
        )
    })
}

/// Protocol 2: options in the headers, body `[args, kwargs, embed]`.
fn protocol2(headers: &Map<String, Value>, body: Value) -> Result<CeleryMessage, Refusal> {
    let id = required_string(headers, "id", "the headers")?;
    let task = required_string(headers, "task", "the headers")?;
    let Value::Array(mut parts) = body else {
        return Err(malformed(
            "the body is not a list [args, kwargs, embed] (task protocol 2)",
        ));
    };
    if !(2..=3).contains(&parts.len()) {
        return Err(malformed(format!(
            "the body has {} elements, not [args, kwargs, embed] (task protocol 2)",
            parts.len()
        )));
    }
    let embed = if parts.len() == 3 { parts.pop() } else { None };
    let kwargs = kwargs_value(parts.pop())?;
    let args = args_value(parts.pop())?;
    match embed {
        None | Some(Value::Null) => {}
        Some(Value::Object(embed)) => {
            refuse_canvas(&embed, &["callbacks", "errbacks", "chain", "chord"])?
        }
        Some(_) => {
            return Err(malformed(
                "the body's third element (embed) is not an object",
            ));
        }
    }
    refuse_canvas(headers, &["chord"])?;
    let (hard_time_limit, soft_time_limit) = time_limits(headers.get("timelimit"))?;
    Ok(CeleryMessage {
        ignore_result: optional_bool(headers, "ignore_result")?,
        eta: time_field(headers, "eta")?,
        expires: time_field(headers, "expires")?,
        retries: retries(headers)?,
        root_id: string_field(headers, "root_id")?,
        parent_id: string_field(headers, "parent_id")?,
        group: string_field(headers, "group")?,
        origin: string_field(headers, "origin")?,
        id,
        task,
        args,
        kwargs,
        hard_time_limit,
        soft_time_limit,
        priority: 0,
        routing_key: None,
    })
}

/// Protocol 1: empty headers, the body an object with everything.
fn protocol1(body: Value) -> Result<CeleryMessage, Refusal> {
    let Value::Object(body) = body else {
        return Err(malformed(
            "the headers name no task and the body is not a task protocol 1 object",
        ));
    };
    let id = required_string(&body, "id", "the body")?;
    let task = required_string(&body, "task", "the body")?;
    let known = Known {
        id: Some(id.clone()),
        task: Some(task.clone()),
        ignore_result: false,
    };
    let read = || -> Result<CeleryMessage, Refusal> {
        refuse_canvas(&body, &["callbacks", "errbacks", "chord"])?;
        let (hard_time_limit, soft_time_limit) = time_limits(body.get("timelimit"))?;
        Ok(CeleryMessage {
            args: args_value(body.get("args").cloned())?,
            kwargs: kwargs_value(body.get("kwargs").cloned())?,
            eta: time_field(&body, "eta")?,
            expires: time_field(&body, "expires")?,
            retries: retries(&body)?,
            // Protocol 1 calls the group `taskset`; newer producers also set `group`.
            group: match string_field(&body, "group")? {
                Some(group) => Some(group),
                None => string_field(&body, "taskset")?,
            },
            id: id.clone(),
            task: task.clone(),
            hard_time_limit,
            soft_time_limit,
            ignore_result: false,
            priority: 0,
            root_id: None,
            parent_id: None,
            routing_key: None,
            origin: None,
        })
    };
    read().map_err(|r| r.with(&known))
}

/// Refuses a canvas primitive: any of `fields` present and not empty.
fn refuse_canvas(object: &Map<String, Value>, fields: &[&str]) -> Result<(), Refusal> {
    for field in fields {
        let set = match object.get(*field) {
            None | Some(Value::Null) => false,
            Some(Value::Array(items)) => !items.is_empty(),
            Some(Value::Object(items)) => !items.is_empty(),
            Some(_) => true,
        };
        if set {
            return Err(Refusal::new(
                RefusalReason::Canvas,
                format!(
                    "the message carries `{field}` (canvas: {what}), which Hopper does not run: \
                     send the task alone and run what follows from the caller, or keep those \
                     tasks on Celery",
                    what = match *field {
                        "callbacks" => "link=",
                        "errbacks" => "link_error=",
                        "chain" => "a chain",
                        _ => "a chord",
                    }
                ),
            ));
        }
    }
    Ok(())
}

fn args_value(value: Option<Value>) -> Result<Vec<Value>, Refusal> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(args)) => Ok(args),
        Some(_) => Err(malformed("the task's args are not a list")),
    }
}

fn kwargs_value(value: Option<Value>) -> Result<Map<String, Value>, Refusal> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(kwargs)) => Ok(kwargs),
        Some(_) => Err(malformed("the task's kwargs are not an object")),
    }
}

/// `timelimit`: `[hard, soft]` in seconds, each a number or null; 0 means
/// none, as in Celery.
fn time_limits(value: Option<&Value>) -> Result<(Option<Duration>, Option<Duration>), Refusal> {
    let limits = match value {
        None | Some(Value::Null) => return Ok((None, None)),
        Some(Value::Array(limits)) if limits.len() == 2 => limits,
        Some(other) => {
            return Err(malformed(format!(
                "timelimit {other} is not [hard, soft] in seconds"
            )));
        }
    };
    let seconds = |value: &Value, which: &str| -> Result<Option<Duration>, Refusal> {
        match value {
            Value::Null => Ok(None),
            Value::Number(n) => {
                let s = n
                    .as_f64()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| {
                        malformed(format!(
                            "the {which} time limit {n} is not a number of seconds ≥ 0"
                        ))
                    })?;
                if s == 0.0 {
                    return Ok(None);
                }
                Duration::try_from_secs_f64(s)
                    .map(Some)
                    .map_err(|_| malformed(format!("the {which} time limit {n} is too large")))
            }
            other => Err(malformed(format!(
                "the {which} time limit {other} is not a number of seconds"
            ))),
        }
    };
    Ok((seconds(&limits[0], "hard")?, seconds(&limits[1], "soft")?))
}

/// An ISO 8601 time (Python's `isoformat()`), with or without an offset (none
/// = UTC), or absent/null.
fn time_field(object: &Map<String, Value>, field: &str) -> Result<Option<OffsetDateTime>, Refusal> {
    let Some(text) = string_field(object, field)? else {
        return Ok(None);
    };
    parse_time(&text)
        .map(Some)
        .ok_or_else(|| malformed(format!("`{field}` {text:?} is not an ISO 8601 time")))
}

/// Parses an ISO 8601 date-time; without an offset it is taken as UTC.
pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    iso8601(text).or_else(|| {
        // Python's `isoformat(sep=' ')` and `str(datetime)` put a space there.
        let (date, rest) = text.split_once(' ')?;
        iso8601(&format!("{date}T{rest}"))
    })
}

fn iso8601(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Iso8601::DEFAULT)
        .or_else(|_| {
            PrimitiveDateTime::parse(text, &Iso8601::DEFAULT).map(PrimitiveDateTime::assume_utc)
        })
        .ok()
}

/// `properties.priority`: 0..=9 (larger numbers are taken as 9, like kombu's
/// last priority step); missing or null = 0.
fn priority(properties: &Map<String, Value>) -> Result<u8, Refusal> {
    match properties.get("priority") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(p) => Ok(p.min(9) as u8),
            None => Err(malformed(format!("priority {n} is not an integer 0..9"))),
        },
        Some(other) => Err(malformed(format!(
            "priority {other} is not an integer 0..9"
        ))),
    }
}

fn retries(object: &Map<String, Value>) -> Result<u32, Refusal> {
    match object.get("retries") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| malformed(format!("retries {n} is not a count"))),
        Some(other) => Err(malformed(format!("retries {other} is not a count"))),
    }
}

fn optional_bool(object: &Map<String, Value>, field: &str) -> Result<bool, Refusal> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(malformed(format!("`{field}` {other} is not true or false"))),
    }
}

/// A string field; absent or null is `None`, another type is malformed.
fn string_field(object: &Map<String, Value>, field: &str) -> Result<Option<String>, Refusal> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(malformed(format!("`{field}` {other} is not a string"))),
    }
}

fn required_string(
    object: &Map<String, Value>,
    field: &str,
    place: &str,
) -> Result<String, Refusal> {
    match string_field(object, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(malformed(format!(
            "{place} have no `{field}`: not a Celery task message"
        ))),
    }
}

fn object_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    place: &str,
) -> Result<Option<&'a Map<String, Value>>, Refusal> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(malformed(format!("`{field}` of {place} is not an object"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A protocol 2 envelope with `headers` merged over a minimal valid set
    /// and `body` base64-encoded.
    fn envelope(headers: Value, body: Value) -> String {
        let mut all =
            json!({"lang": "py", "task": "tasks.add", "id": "id-1", "timelimit": [null, null]});
        all.as_object_mut()
            .unwrap()
            .extend(headers.as_object().unwrap().clone());
        json!({
            "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": all,
            "properties": {"body_encoding": "base64", "priority": 0,
                           "delivery_info": {"exchange": "", "routing_key": "celery"}},
        })
        .to_string()
    }

    fn plain() -> Value {
        json!([[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])
    }

    #[test]
    fn times_with_and_without_offset() {
        let with = parse_time("2030-01-02T03:04:05.678901+02:00").unwrap();
        assert_eq!(with.unix_timestamp(), 1_893_553_445 - 2 * 3600);
        assert_eq!(with.microsecond(), 678_901);
        let naive = parse_time("2030-01-02T03:04:05.678901").unwrap();
        assert_eq!(naive.unix_timestamp(), 1_893_553_445);
        assert_eq!(
            parse_time("2030-01-02T03:04:05Z").unwrap().unix_timestamp(),
            1_893_553_445
        );
        assert_eq!(
            parse_time("2030-01-02 03:04:05+00:00")
                .unwrap()
                .unix_timestamp(),
            1_893_553_445
        );
        assert!(parse_time("tomorrow").is_none());

        let m = parse(&envelope(
            json!({"eta": "2030-01-02T03:04:05", "expires": null}),
            plain(),
        ))
        .unwrap();
        assert_eq!(m.eta.unwrap().unix_timestamp(), 1_893_553_445);
        assert_eq!(m.expires, None);
        let r = parse(&envelope(json!({"eta": "soon"}), plain())).unwrap_err();
        assert_eq!(r.reason, RefusalReason::Malformed);
        assert!(r.detail.contains("`eta`"), "{}", r.detail);
        assert_eq!(r.id.as_deref(), Some("id-1"));
        let r = parse(&envelope(json!({"expires": 60}), plain())).unwrap_err();
        assert_eq!(r.reason, RefusalReason::Malformed);
    }

    #[test]
    fn time_limits_are_checked() {
        let m = parse(&envelope(json!({"timelimit": [30, 2.5]}), plain())).unwrap();
        assert_eq!(m.hard_time_limit, Some(Duration::from_secs(30)));
        assert_eq!(m.soft_time_limit, Some(Duration::from_millis(2500)));
        let m = parse(&envelope(json!({"timelimit": [0, null]}), plain())).unwrap();
        assert_eq!((m.hard_time_limit, m.soft_time_limit), (None, None));
        let m = parse(&envelope(json!({"timelimit": null}), plain())).unwrap();
        assert_eq!((m.hard_time_limit, m.soft_time_limit), (None, None));
        for bad in [
            json!([-1, null]),
            json!([null, -0.5]),
            json!([30]),
            json!("30"),
            json!([1e300, null]),
            json!(["1", null]),
        ] {
            let r = parse(&envelope(json!({"timelimit": bad}), plain())).unwrap_err();
            assert_eq!(r.reason, RefusalReason::Malformed, "{bad}");
            assert_eq!(r.task.as_deref(), Some("tasks.add"));
        }
    }

    #[test]
    fn canvas_and_group() {
        for field in ["callbacks", "errbacks", "chain", "chord"] {
            let mut embed =
                json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null});
            embed[field] = json!([{"task": "tasks.other"}]);
            let r = parse(&envelope(
                json!({"ignore_result": true}),
                json!([[], {}, embed]),
            ))
            .unwrap_err();
            assert_eq!(r.reason, RefusalReason::Canvas, "{field}");
            assert!(r.detail.contains(field), "{}", r.detail);
            assert_eq!((r.id.as_deref(), r.ignore_result), (Some("id-1"), true));
        }
        let r = parse(&envelope(json!({"chord": {"task": "tasks.tsum"}}), plain())).unwrap_err();
        assert_eq!(r.reason, RefusalReason::Canvas);
        // Empty lists are no canvas.
        let m = parse(&envelope(
            json!({}),
            json!([[], {}, {"callbacks": [], "chain": []}]),
        ))
        .unwrap();
        assert_eq!(m.task, "tasks.add");
        let m = parse(&envelope(
            json!({"group": "g-1", "group_index": 1}),
            plain(),
        ))
        .unwrap();
        assert_eq!(m.group.as_deref(), Some("g-1"));
    }

    #[test]
    fn encodings_and_shapes() {
        let r = parse("{not json").unwrap_err();
        assert_eq!((r.reason, r.id.clone()), (RefusalReason::NotJson, None));
        assert_eq!(parse("[1]").unwrap_err().reason, RefusalReason::Malformed);

        let mut e: Value = serde_json::from_str(&envelope(json!({}), plain())).unwrap();
        e["properties"]["body_encoding"] = json!("hex");
        let r = parse(&e.to_string()).unwrap_err();
        assert_eq!(
            (r.reason, r.id.as_deref()),
            (RefusalReason::Encoding, Some("id-1"))
        );

        let mut e: Value = serde_json::from_str(&envelope(json!({}), plain())).unwrap();
        e["body"] = json!("%%%");
        assert_eq!(
            parse(&e.to_string()).unwrap_err().reason,
            RefusalReason::Encoding
        );
        e["body"] = json!(base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe]));
        assert_eq!(
            parse(&e.to_string()).unwrap_err().reason,
            RefusalReason::Encoding
        );
        e["body"] = json!(base64::engine::general_purpose::STANDARD.encode("[1, 2"));
        assert_eq!(
            parse(&e.to_string()).unwrap_err().reason,
            RefusalReason::NotJson
        );
        // Without a body encoding the body is read as is, like kombu does.
        e["properties"]
            .as_object_mut()
            .unwrap()
            .remove("body_encoding");
        e["body"] = json!(plain().to_string());
        assert_eq!(
            parse(&e.to_string()).unwrap().args,
            vec![json!(1), json!(2)]
        );

        for content_type in ["application/x-yaml", "application/x-msgpack", "text/plain"] {
            let mut e: Value = serde_json::from_str(&envelope(json!({}), plain())).unwrap();
            e["content-type"] = json!(content_type);
            let r = parse(&e.to_string()).unwrap_err();
            assert_eq!(r.reason, RefusalReason::ContentType);
            assert!(r.detail.contains(content_type) && r.detail.contains("task_serializer='json'"));
            assert_eq!(r.task.as_deref(), Some("tasks.add"));
        }

        for (headers, body) in [
            (json!({"id": null}), plain()),
            (json!({"task": ""}), plain()),
            (json!({}), json!({"args": []})),
            (json!({}), json!([1, {}, null])),
            (json!({}), json!([[], [], null])),
            (json!({}), json!([[], {}, 3])),
            (json!({}), json!([[]])),
            (json!({"retries": -1}), plain()),
            (json!({"ignore_result": "yes"}), plain()),
        ] {
            let r = parse(&envelope(headers.clone(), body.clone())).unwrap_err();
            assert_eq!(r.reason, RefusalReason::Malformed, "{headers} {body}");
        }
        // Two-element bodies (no embed) are accepted.
        assert!(parse(&envelope(json!({}), json!([[1], {"a": 2}]))).is_ok());
    }

    #[test]
    fn priority_is_read_and_clamped() {
        let with = |p: Value| {
            let mut e: Value = serde_json::from_str(&envelope(json!({}), plain())).unwrap();
            e["properties"]["priority"] = p;
            parse(&e.to_string())
        };
        assert_eq!(with(json!(null)).unwrap().priority, 0);
        assert_eq!(with(json!(6)).unwrap().priority, 6);
        assert_eq!(with(json!(255)).unwrap().priority, 9);
        let r = with(json!(-1)).unwrap_err();
        assert_eq!(
            (r.reason, r.id.as_deref()),
            (RefusalReason::Malformed, Some("id-1"))
        );
        assert_eq!(
            with(json!("high")).unwrap_err().reason,
            RefusalReason::Malformed
        );
    }

    #[test]
    fn unknown_task_refusal_names_the_variable() {
        let r = Refusal::unknown_task("proj.Thing");
        assert_eq!(r.reason, RefusalReason::UnknownTask);
        assert!(r.detail.contains("HOPPER_CELERY_ROUTES=proj.Thing=<task>"));
        assert_eq!(r.task.as_deref(), Some("proj.Thing"));
        assert!(r.to_string().contains("unknown_task"));
    }
}
