//! Task definitions: what a worker declares about each task it serves.
//!
//! A task is a queue ([`QueueName`]): its jobs wait in that queue and any
//! worker that declared the task may run them. A worker declares its tasks
//! in the registry (a Redis hash, see `hopper_queue::registry`) when it
//! starts: name, version, the JSON Schema of the arguments (optional), the
//! default settings, who serves it (a Rust worker or a remote worker over
//! the HTTP protocol) and, for a task declared over HTTP, the tenant that
//! owns it. The API reads the registry to refuse unknown tasks (404 listing
//! the known ones) and arguments that break the declared schema (422 naming
//! the JSON path). Definitions stay after their workers stop: jobs queue
//! and wait, as with Celery.
//!
//! The six built-in kinds are declared the same way, by the worker that
//! serves them ([`TaskDefinition::built_in`], their schemas generated from
//! their argument types).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    QueueName,
    jobs::{JobKind, QueueSettings},
};

/// Who runs a task's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Runtime {
    /// A Rust worker process (`hopper-worker` or a binary built on the
    /// `hopper-worker` library).
    Rust,
    /// A remote worker speaking the HTTP worker protocol (`/v1/work/…`),
    /// such as the Python SDK's.
    Http,
}

impl Runtime {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Rust => "rust",
            Runtime::Http => "http",
        }
    }
}

/// A task's default queue settings, in milliseconds, as declared (and as
/// shown by the API). `HOPPER_QUEUE_<NAME>_*` variables still override them
/// per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSettings {
    /// Jobs one worker process runs at once.
    pub concurrency: usize,
    /// Attempts before the dead letters (the first run included).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Upper bound of the retry delay.
    pub backoff_max_ms: u64,
    /// The attempt is asked to stop (its cancellation fires) after this long.
    pub soft_limit_ms: u64,
    /// The attempt is abandoned and counted as failed after this long.
    pub hard_limit_ms: u64,
    /// How long a finished job stays in Redis (Postgres keeps its record).
    pub retention_ms: u64,
    /// At most this many job starts per period across every worker
    /// (`20/s`, `600/m`, `1000/h`); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "20/s"))]
    pub rate_limit: Option<crate::rate_limit::RateLimit>,
    /// At most this many jobs of one tenant running at once across every
    /// worker; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_concurrency: Option<u32>,
}

impl From<&QueueSettings> for TaskSettings {
    fn from(s: &QueueSettings) -> Self {
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        Self {
            concurrency: s.concurrency,
            max_attempts: s.max_attempts,
            backoff_base_ms: ms(s.backoff_base),
            backoff_max_ms: ms(s.backoff_max),
            soft_limit_ms: ms(s.soft_time_limit),
            hard_limit_ms: ms(s.hard_time_limit),
            retention_ms: ms(s.retention),
            rate_limit: s.rate_limit,
            tenant_concurrency: s.tenant_concurrency,
        }
    }
}

impl From<&TaskSettings> for QueueSettings {
    fn from(s: &TaskSettings) -> Self {
        Self {
            concurrency: s.concurrency,
            max_attempts: s.max_attempts,
            backoff_base: Duration::from_millis(s.backoff_base_ms),
            backoff_max: Duration::from_millis(s.backoff_max_ms),
            soft_time_limit: Duration::from_millis(s.soft_limit_ms),
            hard_time_limit: Duration::from_millis(s.hard_limit_ms),
            retention: Duration::from_millis(s.retention_ms),
            rate_limit: s.rate_limit,
            tenant_concurrency: s.tenant_concurrency,
            // A deployment's choice (its environment), never a task's.
            partitions: 1,
        }
    }
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self::from(&QueueSettings::default())
    }
}

impl TaskSettings {
    /// Checks the settings make sense; the message names the field.
    pub fn check(&self) -> Result<(), InvalidTask> {
        let bad = |field: &'static str, message: String| {
            Err(InvalidTask {
                field: Some(format!("settings.{field}")),
                message,
            })
        };
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return bad("concurrency", "must be 1 to 10000".into());
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return bad("max_attempts", "must be 1 to 100".into());
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return bad("backoff_base_ms", "must not exceed backoff_max_ms".into());
        }
        if self.hard_limit_ms == 0 || self.hard_limit_ms > MAX_HARD_LIMIT_MS {
            return bad(
                "hard_limit_ms",
                format!("must be 1 to {MAX_HARD_LIMIT_MS} (one day)"),
            );
        }
        if self.soft_limit_ms > self.hard_limit_ms {
            return bad("soft_limit_ms", "must not exceed hard_limit_ms".into());
        }
        Ok(())
    }
}

/// The longest hard limit a task may declare: one day.
pub const MAX_HARD_LIMIT_MS: u64 = 24 * 3600 * 1000;

/// Most positional parameter names a task may declare.
pub const MAX_PARAMS: usize = 64;

/// Largest argument schema a task may declare, serialised.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// What a worker declares about one task it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDefinition {
    /// The task's (and its queue's) name.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_.-]{0,62}$"))]
    pub name: QueueName,
    /// Its version, from 1. Two workers may not declare different schemas
    /// under one version; the highest version declared is the one in force.
    pub version: u32,
    /// JSON Schema of the arguments; none: any JSON object is accepted.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub schema: Option<serde_json::Value>,
    /// Default queue settings.
    pub settings: TaskSettings,
    /// Who serves it.
    pub runtime: Runtime,
    /// Only Hopper itself queues it (clients may not submit it).
    #[serde(default)]
    pub internal: bool,
    /// The tenant that owns it (declared over HTTP with that tenant's key):
    /// only that tenant may submit or serve it. None: any tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// What it does, for listings.
    #[serde(default)]
    pub description: Option<String>,
    /// The names of its arguments in positional order, for callers that pass
    /// them by position (a Celery producer's `add.delay(2, 3)` becomes
    /// `{"a": 2, "b": 3}` when the params are `["a", "b"]`). None: a Celery
    /// message's arguments arrive as `{"args": [...], "kwargs": {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<String>>,
    /// Unix ms: when it was declared (by the declaration in force).
    #[serde(default)]
    pub declared_at_ms: i64,
    /// [`TaskDefinition::schema_digest`] of its schema, set when declared.
    #[serde(default)]
    pub schema_digest: String,
}

/// A definition that cannot be declared; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidTask {
    /// The offending field (`settings.concurrency`, `schema`), when one
    /// can be named.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl TaskDefinition {
    /// A definition with the default settings, no schema, served by a Rust
    /// worker and open to every tenant.
    pub fn new(name: QueueName) -> Self {
        Self {
            name,
            version: 1,
            schema: None,
            settings: TaskSettings::default(),
            runtime: Runtime::Rust,
            internal: false,
            tenant: None,
            description: None,
            params: None,
            declared_at_ms: 0,
            schema_digest: String::new(),
        }
    }

    /// The version every built-in kind is declared with: raised whenever a
    /// built-in argument type changes (2: `echo` took `fail_attempts`,
    /// `input`, `progress_steps`; `noop` took `input`; 3: `summarize` took
    /// `version` and `input`, as the body of a document's workflow), so a
    /// worker of this release replaces the older definitions in a Redis
    /// that holds them instead of refusing to start on a schema conflict.
    pub const BUILT_IN_VERSION: u32 = 3;

    /// The definition of a built-in kind: its settings, its argument
    /// schema (generated from the argument type) and whether it is
    /// internal.
    pub fn built_in(kind: JobKind) -> Self {
        let schema = match kind {
            JobKind::Echo => schemars::schema_for!(crate::jobs::EchoArgs),
            JobKind::Noop => schemars::schema_for!(crate::jobs::NoopArgs),
            JobKind::Ingest => schemars::schema_for!(crate::jobs::IngestArgs),
            JobKind::Embed => schemars::schema_for!(crate::jobs::EmbedArgs),
            JobKind::Summarize => schemars::schema_for!(crate::jobs::SummarizeArgs),
            JobKind::Webhook => schemars::schema_for!(crate::jobs::WebhookArgs),
        };
        let schema = schema.to_value();
        // Built-ins are called by keyword; a positional Celery call follows
        // the schema's order of properties.
        let params = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect());
        Self {
            schema: Some(schema),
            params,
            settings: TaskSettings::from(&kind.default_settings()),
            internal: kind.is_internal(),
            description: Some(kind.description().to_owned()),
            version: Self::BUILT_IN_VERSION,
            ..Self::new(kind.into())
        }
    }

    /// Checks version, settings and schema size (the API also compiles the
    /// schema; see `jsonschema`).
    pub fn check(&self) -> Result<(), InvalidTask> {
        if self.version == 0 {
            return Err(InvalidTask {
                field: Some("version".into()),
                message: "versions start at 1".into(),
            });
        }
        self.settings.check()?;
        if let Some(schema) = &self.schema {
            if !(schema.is_object() || schema.is_boolean()) {
                return Err(InvalidTask {
                    field: Some("schema".into()),
                    message: "a JSON Schema is an object (or true/false)".into(),
                });
            }
            let size = serde_json::to_vec(schema).map(|v| v.len()).unwrap_or(0);
            if size > MAX_SCHEMA_BYTES {
                return Err(InvalidTask {
                    field: Some("schema".into()),
                    message: format!("{size} bytes; a schema may hold {MAX_SCHEMA_BYTES}"),
                });
            }
        }
        if let Some(d) = &self.description
            && d.chars().count() > 1000
        {
            return Err(InvalidTask {
                field: Some("description".into()),
                message: "at most 1000 characters".into(),
            });
        }
        if let Some(params) = &self.params {
            let bad = |message: String| {
                Err(InvalidTask {
                    field: Some("params".into()),
                    message,
                })
            };
            if params.len() > MAX_PARAMS {
                return bad(format!("at most {MAX_PARAMS} names"));
            }
            for (i, p) in params.iter().enumerate() {
                if p.is_empty() || p.len() > 64 || p.chars().any(|c| c.is_control()) {
                    return bad(format!(
                        "name {i} must be 1 to 64 characters, no control characters"
                    ));
                }
                if params[..i].contains(p) {
                    return bad(format!("`{p}` is given twice"));
                }
            }
        }
        Ok(())
    }

    /// SHA-256 (hex) of the schema in canonical form (object keys sorted,
    /// no spaces), `""` without a schema: two declarations of one version
    /// must agree on it.
    pub fn schema_digest(&self) -> String {
        match &self.schema {
            None => String::new(),
            Some(schema) => canonical_digest(schema),
        }
    }

    /// Its queue settings.
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings::from(&self.settings)
    }

    /// Whether `tenant` may submit to it (and, over HTTP, serve it).
    pub fn open_to(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

/// SHA-256 (hex) of `v` in canonical form (object keys sorted, no spaces):
/// equal for equal JSON values however their keys were ordered.
pub fn canonical_digest(v: &serde_json::Value) -> String {
    let mut canonical = String::new();
    write_canonical(v, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// `v` as JSON with object keys in byte order, whatever map type serde_json
/// was built with.
fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_digest_ignores_key_order_and_spacing() {
        let mut a = TaskDefinition::new("resize".parse().unwrap());
        a.schema = Some(
            json!({"type": "object", "properties": {"w": {"type": "integer"}, "h": {"type": "integer"}}}),
        );
        let mut b = a.clone();
        b.schema = serde_json::from_str(
            r#"{ "properties": { "h": {"type":"integer"}, "w": {"type":"integer"} }, "type": "object" }"#,
        )
        .ok();
        assert_eq!(a.schema_digest(), b.schema_digest());
        b.schema = Some(json!({"type": "object"}));
        assert_ne!(a.schema_digest(), b.schema_digest());
        assert_eq!(
            TaskDefinition::new("x".parse().unwrap()).schema_digest(),
            ""
        );
    }

    #[test]
    fn built_in_definitions_carry_schemas_and_settings() {
        for kind in JobKind::ALL {
            let def = TaskDefinition::built_in(kind);
            def.check().unwrap();
            assert_eq!(def.name.as_str(), kind.as_str());
            assert_eq!(def.queue_settings(), kind.default_settings());
            assert_eq!(def.internal, kind.is_internal());
            assert!(def.schema.as_ref().unwrap().is_object());
        }
        let echo = TaskDefinition::built_in(JobKind::Echo).schema.unwrap();
        assert_eq!(echo["required"], json!(["message"]));
        assert_eq!(echo["additionalProperties"], json!(false));
    }

    #[test]
    fn settings_are_checked_field_by_field() {
        let mut def = TaskDefinition::new("ocr".parse().unwrap());
        def.settings.soft_limit_ms = def.settings.hard_limit_ms + 1;
        assert_eq!(
            def.check().unwrap_err().field.as_deref(),
            Some("settings.soft_limit_ms")
        );
        def.settings = TaskSettings {
            concurrency: 0,
            ..TaskSettings::default()
        };
        assert_eq!(
            def.check().unwrap_err().field.as_deref(),
            Some("settings.concurrency")
        );
        def.settings = TaskSettings::default();
        def.version = 0;
        assert_eq!(def.check().unwrap_err().field.as_deref(), Some("version"));
    }

    #[test]
    fn a_definition_round_trips_as_json() {
        let mut def = TaskDefinition::built_in(JobKind::Embed);
        def.tenant = Some("acme".into());
        let text = serde_json::to_string(&def).unwrap();
        let back: TaskDefinition = serde_json::from_str(&text).unwrap();
        assert_eq!(back, def);
        assert!(back.open_to("acme") && !back.open_to("other"));
    }
}
