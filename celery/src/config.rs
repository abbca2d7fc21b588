//! The Celery bridge's settings (`HOPPER_CELERY_*`) and the Redis key names
//! they imply.
//!
//! The bridge is on when `HOPPER_CELERY_QUEUES` names at least one kombu
//! queue. Where Celery has a matching setting the variable says which, so a
//! deployment copies its Celery configuration over:
//!
//! | variable | default | Celery / kombu equivalent |
//! | --- | --- | --- |
//! | `HOPPER_CELERY_QUEUES` | none (bridge off) | the queues a `celery worker -Q` consumes |
//! | `HOPPER_CELERY_ROUTES` | none | — (`celery.name=hopper-task,…`, see [`Routes`]) |
//! | `HOPPER_CELERY_TENANT` | `default` | — (the tenant of the jobs) |
//! | `HOPPER_CELERY_BROKER_PREFIX` | `''` | `broker_transport_options['global_keyprefix']` |
//! | `HOPPER_CELERY_RESULT_URL` | `REDIS_URL` | `result_backend` |
//! | `HOPPER_CELERY_RESULT_PREFIX` | `''` | `result_backend_transport_options['global_keyprefix']` |
//! | `HOPPER_CELERY_RESULT_EXPIRES_S` | 86400 (0 = never) | `result_expires` |
//! | `HOPPER_CELERY_DEFAULT_PRIORITY` | none | `task_default_priority` |
//! | `HOPPER_CELERY_LOOKAHEAD` | 512 | — (pending jobs of the tasks the intake feeds, at most: beyond, messages wait in kombu's lists, in kombu's order) |

use hopper_shared::config::DEFAULT_REDIS_URL;
use hopper_shared::jobs::DEFAULT_TENANT;

use crate::route::{ROUTES_VAR, Routes};

/// kombu's separator between a queue's name and its priority step.
pub const PRIORITY_SEPARATOR: &str = "\x06\x16";

/// kombu's priority steps, in the order its Redis transport reads them.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// Celery's key prefix of task results.
pub const TASK_META_PREFIX: &str = "celery-task-meta-";

/// The Celery bridge's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeleryConfig {
    /// kombu queue names to take messages from; empty = the bridge is off.
    pub queues: Vec<String>,
    /// Celery task names mapped to Hopper tasks.
    pub routes: Routes,
    /// The tenant of the jobs made from Celery messages.
    pub tenant: String,
    /// kombu's `global_keyprefix` (put before every broker key as is).
    pub broker_prefix: String,
    /// The Celery result backend's Redis.
    pub result_url: String,
    /// The result keys' prefix, with the `_` Celery adds (see
    /// [`CeleryConfig::result_key`]).
    pub result_prefix: String,
    /// How long results are kept, in seconds; 0 = for ever (like Celery's
    /// `result_expires=None`).
    pub result_expires_s: u64,
    /// Celery's `task_default_priority`: messages with a lower number (more
    /// urgent on Redis) become Hopper `high` jobs; `None`: all are normal.
    pub default_priority: Option<u8>,
    /// Pending jobs of the tasks the intake feeds, at most: beyond it the
    /// messages wait in kombu's lists, where kombu's priority order holds.
    pub lookahead: usize,
}

/// Invalid `HOPPER_CELERY_*` settings, every one named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Celery bridge configuration: {}", problems.join("; "))]
pub struct ConfigError {
    /// One line per problem, each naming its variable.
    pub problems: Vec<String>,
}

impl CeleryConfig {
    /// Reads the configuration through `get` (the environment, or a map in
    /// tests); empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &str| get(var).filter(|v| !v.trim().is_empty());
        let mut problems = Vec::new();

        let mut queues: Vec<String> = Vec::new();
        if let Some(raw) = get("HOPPER_CELERY_QUEUES") {
            for queue in raw.split(',').map(str::trim) {
                if queue.is_empty() {
                    problems.push(format!(
                        "HOPPER_CELERY_QUEUES={raw:?} has an empty queue name"
                    ));
                } else if queue.contains(PRIORITY_SEPARATOR) {
                    problems.push(format!(
                        "HOPPER_CELERY_QUEUES={raw:?}: {queue:?} holds kombu's priority separator"
                    ));
                } else if queues.iter().any(|q| q == queue) {
                    problems.push(format!(
                        "HOPPER_CELERY_QUEUES={raw:?} names {queue:?} twice"
                    ));
                } else {
                    queues.push(queue.to_owned());
                }
            }
        }

        let routes = match get(ROUTES_VAR) {
            None => Routes::default(),
            Some(raw) => Routes::parse(&raw).unwrap_or_else(|e| {
                problems.push(e.to_string());
                Routes::default()
            }),
        };

        let tenant = get("HOPPER_CELERY_TENANT")
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_TENANT.to_owned());
        if !hopper_shared::keys::valid_tenant(&tenant) {
            problems.push(format!(
                "HOPPER_CELERY_TENANT={tenant:?} is not a tenant name (1–64 of [A-Za-z0-9_.-])"
            ));
        }

        let broker_prefix = get("HOPPER_CELERY_BROKER_PREFIX").unwrap_or_default();

        let (result_var, result_url) = match get("HOPPER_CELERY_RESULT_URL") {
            Some(url) => ("HOPPER_CELERY_RESULT_URL", url.trim().to_owned()),
            None => (
                "REDIS_URL",
                get("REDIS_URL").unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned()),
            ),
        };
        // Checked only where it is used: with the bridge off, `REDIS_URL` may
        // name a Redis Cluster (`redis+cluster://`), which the bridge refuses.
        let used = !queues.is_empty() || result_var == "HOPPER_CELERY_RESULT_URL";
        if used && !result_url.starts_with("redis://") && !result_url.starts_with("rediss://") {
            problems.push(format!(
                "{result_var}={result_url:?} must start with redis:// or rediss:// \
                 (the Celery result backend must be Redis)"
            ));
        }

        let mut result_prefix = get("HOPPER_CELERY_RESULT_PREFIX").unwrap_or_default();
        if !result_prefix.is_empty() && !result_prefix.ends_with([':', '_', '-', '.']) {
            // What celery.backends.base does with the same setting.
            result_prefix.push('_');
        }

        let result_expires_s = number(
            &get,
            "HOPPER_CELERY_RESULT_EXPIRES_S",
            86_400,
            &mut problems,
        );
        let default_priority =
            get("HOPPER_CELERY_DEFAULT_PRIORITY").and_then(|raw| match raw.trim().parse::<u8>() {
                Ok(p) if p <= 9 => Some(p),
                _ => {
                    problems.push(format!(
                        "HOPPER_CELERY_DEFAULT_PRIORITY={raw:?} is not a priority 0..9"
                    ));
                    None
                }
            });
        let lookahead = number(&get, "HOPPER_CELERY_LOOKAHEAD", 512, &mut problems);
        if lookahead == 0 {
            problems.push("HOPPER_CELERY_LOOKAHEAD=\"0\" must be at least 1".to_owned());
        }

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Self {
            queues,
            routes,
            tenant,
            broker_prefix,
            result_url,
            result_prefix,
            result_expires_s,
            default_priority,
            lookahead: lookahead as usize,
        })
    }

    /// Whether the bridge is on (some queue is configured).
    pub fn enabled(&self) -> bool {
        !self.queues.is_empty()
    }

    /// The Redis lists of kombu queue `queue`, in the order kombu reads them
    /// (priority 0, the bare name, first; then 3, 6, 9), broker prefix
    /// included.
    pub fn sublists(&self, queue: &str) -> [String; 4] {
        PRIORITY_STEPS.map(|step| match step {
            0 => format!("{}{queue}", self.broker_prefix),
            _ => format!("{}{queue}{PRIORITY_SEPARATOR}{step}", self.broker_prefix),
        })
    }

    /// The result backend key of Celery task `task_id`.
    pub fn result_key(&self, task_id: &str) -> String {
        format!("{}{TASK_META_PREFIX}{task_id}", self.result_prefix)
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: u64,
    problems: &mut Vec<String>,
) -> u64 {
    match get(var) {
        None => default,
        Some(raw) => raw.trim().parse().unwrap_or_else(|_| {
            problems.push(format!("{var}={raw:?} is not a whole number ≥ 0"));
            default
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<CeleryConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CeleryConfig::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert!(!c.enabled());
        assert!(c.routes.is_empty());
        assert_eq!(c.tenant, "default");
        assert_eq!(c.broker_prefix, "");
        assert_eq!(c.result_url, DEFAULT_REDIS_URL);
        assert_eq!(c.result_prefix, "");
        assert_eq!(c.result_expires_s, 86_400);
        assert_eq!(c.default_priority, None);
        assert_eq!(c.lookahead, 512);
        assert_eq!(
            config(&[("HOPPER_CELERY_QUEUES", " ")]).unwrap().queues,
            Vec::<String>::new()
        );
        assert_eq!(
            config(&[("REDIS_URL", "redis://r:6379/2")])
                .unwrap()
                .result_url,
            "redis://r:6379/2"
        );
    }

    #[test]
    fn every_variable_is_read() {
        let c = config(&[
            ("HOPPER_CELERY_QUEUES", "celery, reports"),
            ("HOPPER_CELERY_ROUTES", "proj.Add=add"),
            ("HOPPER_CELERY_TENANT", "acme"),
            ("HOPPER_CELERY_BROKER_PREFIX", "app:"),
            ("HOPPER_CELERY_RESULT_URL", "redis://results:6379/1"),
            ("HOPPER_CELERY_RESULT_PREFIX", "app"),
            ("HOPPER_CELERY_RESULT_EXPIRES_S", "0"),
            ("HOPPER_CELERY_DEFAULT_PRIORITY", "5"),
            ("HOPPER_CELERY_LOOKAHEAD", "64"),
        ])
        .unwrap();
        assert!(c.enabled());
        assert_eq!(c.queues, ["celery", "reports"]);
        assert_eq!(c.routes.task_for("proj.Add").unwrap(), "add");
        assert_eq!(c.tenant, "acme");
        assert_eq!(c.result_url, "redis://results:6379/1");
        assert_eq!(c.result_prefix, "app_");
        assert_eq!(c.result_expires_s, 0);
        assert_eq!(c.default_priority, Some(5));
        assert_eq!(c.lookahead, 64);
        assert_eq!(
            c.sublists("celery"),
            [
                "app:celery",
                "app:celery\x06\x163",
                "app:celery\x06\x166",
                "app:celery\x06\x169"
            ]
        );
        assert_eq!(c.result_key("abc"), "app_celery-task-meta-abc");
    }

    #[test]
    fn result_prefix_like_celery() {
        for (given, used) in [
            ("p:", "p:"),
            ("p_", "p_"),
            ("p-", "p-"),
            ("p.", "p."),
            ("p", "p_"),
        ] {
            let c = config(&[("HOPPER_CELERY_RESULT_PREFIX", given)]).unwrap();
            assert_eq!(c.result_prefix, used);
        }
        let c = config(&[]).unwrap();
        assert_eq!(c.result_key("id"), "celery-task-meta-id");
        assert_eq!(c.sublists("q")[0], "q");
    }

    #[test]
    fn errors_name_every_variable() {
        let e = config(&[
            ("HOPPER_CELERY_QUEUES", "a,,a"),
            ("HOPPER_CELERY_ROUTES", "x"),
            ("HOPPER_CELERY_TENANT", "a b"),
            ("HOPPER_CELERY_RESULT_URL", "http://x"),
            ("HOPPER_CELERY_RESULT_EXPIRES_S", "-1"),
            ("HOPPER_CELERY_DEFAULT_PRIORITY", "10"),
            ("HOPPER_CELERY_LOOKAHEAD", "0"),
        ])
        .unwrap_err();
        let text = e.to_string();
        for var in [
            "HOPPER_CELERY_QUEUES=\"a,,a\" has an empty",
            "names \"a\" twice",
            "HOPPER_CELERY_ROUTES: entry \"x\"",
            "HOPPER_CELERY_TENANT",
            "HOPPER_CELERY_RESULT_URL",
            "HOPPER_CELERY_RESULT_EXPIRES_S",
            "HOPPER_CELERY_DEFAULT_PRIORITY",
            "HOPPER_CELERY_LOOKAHEAD",
        ] {
            assert!(text.contains(var), "{var} missing from {text}");
        }
        assert_eq!(e.problems.len(), 8, "{text}");
        let e = config(&[
            ("HOPPER_CELERY_QUEUES", "celery"),
            ("REDIS_URL", "nope"),
            ("HOPPER_CELERY_LOOKAHEAD", "many"),
        ])
        .unwrap_err();
        assert!(e.problems[0].starts_with("REDIS_URL=\"nope\""), "{e}");
        assert!(
            e.problems[1].starts_with("HOPPER_CELERY_LOOKAHEAD=\"many\""),
            "{e}"
        );
        // With the bridge off, REDIS_URL is no result backend: a cluster's
        // URL is fine.
        let cluster = "redis+cluster://a:1,b:2";
        assert!(!config(&[("REDIS_URL", cluster)]).unwrap().enabled());
    }
}
