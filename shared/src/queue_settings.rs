//! Per-queue settings found by queue name, for any name.
//!
//! [`crate::Config`] loads them: the built-in kinds' from
//! [`crate::jobs::JobKind::default_settings`] overridden by their
//! `HOPPER_QUEUE_<NAME>_<SETTING>` variables, and those of every other queue
//! named in such a variable from [`QueueSettings::default`]. A variable
//! names a queue by its [`QueueName::env_suffix`] (upper-cased, `.` and `-`
//! as `_`), so `HOPPER_QUEUE_OCR_V2_CONCURRENCY=2` sets `ocr.v2`'s (and
//! `ocr-v2`'s) concurrency. The queue crate asks [`QueueSettingsByName::get`]
//! for a queue's settings; a name nobody configured gets the defaults.
//!
//! A task's own definition (see [`crate::tasks`]) declares its default
//! settings; [`QueueSettingsByName::over`] applies a queue's environment
//! variables on top of them, only those that are set.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    jobs::QueueSettings,
    queue_name::{MAX_QUEUE_NAME_LEN, QueueName},
};

/// The setting suffixes of a `HOPPER_QUEUE_<NAME>_<SETTING>` variable.
pub const QUEUE_SETTING_VARS: [&str; 10] = [
    // Before `CONCURRENCY`, which it ends with: suffixes match in this order.
    "TENANT_CONCURRENCY",
    "CONCURRENCY",
    "MAX_ATTEMPTS",
    "BACKOFF_BASE_MS",
    "BACKOFF_MAX_MS",
    "SOFT_LIMIT_MS",
    "HARD_LIMIT_MS",
    "RETENTION_MS",
    "RATE_LIMIT",
    "PARTITIONS",
];

/// Per-queue settings by queue name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSettingsByName {
    /// The built-in kinds' settings, by name.
    built_in: BTreeMap<QueueName, QueueSettings>,
    /// Other queues' settings from the environment, by env suffix.
    configured: BTreeMap<String, QueueSettings>,
    /// Which of those settings their variables set, by env suffix.
    overrides: BTreeMap<String, SettingsOverride>,
}

/// The settings one queue's `HOPPER_QUEUE_<NAME>_*` variables set (the
/// others are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsOverride {
    /// `CONCURRENCY`.
    pub concurrency: Option<usize>,
    /// `MAX_ATTEMPTS`.
    pub max_attempts: Option<u32>,
    /// `BACKOFF_BASE_MS`.
    pub backoff_base: Option<std::time::Duration>,
    /// `BACKOFF_MAX_MS`.
    pub backoff_max: Option<std::time::Duration>,
    /// `SOFT_LIMIT_MS`.
    pub soft_time_limit: Option<std::time::Duration>,
    /// `HARD_LIMIT_MS`.
    pub hard_time_limit: Option<std::time::Duration>,
    /// `RETENTION_MS`.
    pub retention: Option<std::time::Duration>,
    /// `RATE_LIMIT` (`Some(None)`: `off`, no limit).
    pub rate_limit: Option<Option<crate::rate_limit::RateLimit>>,
    /// `TENANT_CONCURRENCY` (`Some(None)`: `off`, no limit).
    pub tenant_concurrency: Option<Option<u32>>,
    /// `PARTITIONS`.
    pub partitions: Option<u16>,
}

impl SettingsOverride {
    /// The fields of `resolved` whose variable is among `set` (the setting
    /// suffixes of the variables present).
    pub fn from_set(resolved: &QueueSettings, set: &BTreeSet<&str>) -> Self {
        let has = |v: &str| set.contains(v);
        Self {
            concurrency: has("CONCURRENCY").then_some(resolved.concurrency),
            max_attempts: has("MAX_ATTEMPTS").then_some(resolved.max_attempts),
            backoff_base: has("BACKOFF_BASE_MS").then_some(resolved.backoff_base),
            backoff_max: has("BACKOFF_MAX_MS").then_some(resolved.backoff_max),
            soft_time_limit: has("SOFT_LIMIT_MS").then_some(resolved.soft_time_limit),
            hard_time_limit: has("HARD_LIMIT_MS").then_some(resolved.hard_time_limit),
            retention: has("RETENTION_MS").then_some(resolved.retention),
            rate_limit: has("RATE_LIMIT").then_some(resolved.rate_limit),
            tenant_concurrency: has("TENANT_CONCURRENCY").then_some(resolved.tenant_concurrency),
            partitions: has("PARTITIONS").then_some(resolved.partitions),
        }
    }

    /// `base` with these settings applied; a soft limit left above the hard
    /// limit is brought down to it.
    pub fn apply(&self, base: &QueueSettings) -> QueueSettings {
        let mut s = QueueSettings {
            concurrency: self.concurrency.unwrap_or(base.concurrency),
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            backoff_base: self.backoff_base.unwrap_or(base.backoff_base),
            backoff_max: self.backoff_max.unwrap_or(base.backoff_max),
            soft_time_limit: self.soft_time_limit.unwrap_or(base.soft_time_limit),
            hard_time_limit: self.hard_time_limit.unwrap_or(base.hard_time_limit),
            retention: self.retention.unwrap_or(base.retention),
            rate_limit: self.rate_limit.unwrap_or(base.rate_limit),
            tenant_concurrency: self.tenant_concurrency.unwrap_or(base.tenant_concurrency),
            partitions: self.partitions.unwrap_or(base.partitions),
        };
        s.soft_time_limit = s.soft_time_limit.min(s.hard_time_limit);
        s
    }
}

impl QueueSettingsByName {
    /// A table of the built-in queues' settings and other queues' settings
    /// by env suffix.
    pub fn new(
        built_in: BTreeMap<QueueName, QueueSettings>,
        configured: BTreeMap<String, QueueSettings>,
    ) -> Self {
        Self {
            built_in,
            configured,
            overrides: BTreeMap::new(),
        }
    }

    /// The same table, knowing which settings each configured queue's
    /// variables set (for [`Self::over`]).
    pub fn with_overrides(mut self, overrides: BTreeMap<String, SettingsOverride>) -> Self {
        self.overrides = overrides;
        self
    }

    /// Whether `name` is a built-in queue.
    pub fn is_built_in(&self, name: &QueueName) -> bool {
        self.built_in.contains_key(name)
    }

    /// The settings of queue `name` whose task declared `declared`: a
    /// built-in queue's as configured; any other's `declared` with the
    /// queue's environment variables applied on top.
    pub fn over(&self, name: &QueueName, declared: &QueueSettings) -> QueueSettings {
        if let Some(s) = self.built_in.get(name) {
            return s.clone();
        }
        if self.overrides.is_empty() {
            return declared.clone();
        }
        let mut buf = [0u8; MAX_QUEUE_NAME_LEN];
        match self.overrides.get(env_suffix_in(name, &mut buf)) {
            Some(o) => o.apply(declared),
            None => declared.clone(),
        }
    }

    /// The settings of queue `name`: as configured, else the defaults.
    /// No allocation: this runs on every push.
    pub fn get(&self, name: &QueueName) -> QueueSettings {
        self.built_in
            .get(name)
            .or_else(|| {
                if self.configured.is_empty() {
                    return None;
                }
                let mut buf = [0u8; MAX_QUEUE_NAME_LEN];
                self.configured.get(env_suffix_in(name, &mut buf))
            })
            .cloned()
            .unwrap_or_default()
    }

    /// The built-in queues' names, in name order.
    pub fn built_in_names(&self) -> impl Iterator<Item = &QueueName> {
        self.built_in.keys()
    }
}

/// The env suffixes of the queues named in `HOPPER_QUEUE_<NAME>_<SETTING>`
/// variables among `names`, less those in `skip` (the built-in queues').
/// A suffix that no valid queue name could have is left out.
pub fn configured_suffixes<'a>(
    names: impl IntoIterator<Item = &'a str>,
    skip: &BTreeSet<String>,
) -> BTreeSet<String> {
    names
        .into_iter()
        .filter_map(|var| var.strip_prefix("HOPPER_QUEUE_"))
        .filter_map(|rest| {
            QUEUE_SETTING_VARS.iter().find_map(|setting| {
                rest.strip_suffix(setting)?
                    .strip_suffix('_')
                    .filter(|suffix| could_be_a_name(suffix))
            })
        })
        .filter(|suffix| !skip.contains(*suffix))
        .map(str::to_owned)
        .collect()
}

/// [`QueueName::env_suffix`] written into `buf` (a name is ASCII and at
/// most [`MAX_QUEUE_NAME_LEN`] bytes long).
fn env_suffix_in<'b>(name: &QueueName, buf: &'b mut [u8; MAX_QUEUE_NAME_LEN]) -> &'b str {
    let bytes = name.as_str().as_bytes();
    for (slot, &b) in buf.iter_mut().zip(bytes) {
        *slot = match b {
            b'.' | b'-' => b'_',
            b => b.to_ascii_uppercase(),
        };
    }
    std::str::from_utf8(&buf[..bytes.len()]).expect("queue names are ASCII")
}

/// Whether `suffix` is the env suffix of some valid queue name.
fn could_be_a_name(suffix: &str) -> bool {
    let first_ok = suffix
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    first_ok
        && suffix.len() <= crate::queue_name::MAX_QUEUE_NAME_LEN
        && suffix
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_come_from_setting_variables_only() {
        let skip = BTreeSet::from(["ECHO".to_owned()]);
        let found = configured_suffixes(
            [
                "HOPPER_QUEUE_OCR_V2_CONCURRENCY",
                "HOPPER_QUEUE_OCR_V2_BACKOFF_MAX_MS",
                "HOPPER_QUEUE_RERANK_SOFT_LIMIT_MS",
                "HOPPER_QUEUE_ECHO_CONCURRENCY",
                "HOPPER_QUEUE_lower_CONCURRENCY",
                "HOPPER_QUEUE__CONCURRENCY",
                "HOPPER_QUEUE_CONCURRENCY",
                "HOPPER_QUEUE_X_COLOUR",
                "HOPPER_API_ADDR",
            ],
            &skip,
        );
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec!["OCR_V2".to_owned(), "RERANK".to_owned()]
        );
    }

    #[test]
    fn the_suffix_on_the_stack_is_the_env_suffix() {
        let name: QueueName = "ocr.v2-fast_x".parse().unwrap();
        let mut buf = [0u8; MAX_QUEUE_NAME_LEN];
        assert_eq!(env_suffix_in(&name, &mut buf), name.env_suffix());
        let long: QueueName = "a".repeat(63).parse().unwrap();
        assert_eq!(env_suffix_in(&long, &mut buf), "A".repeat(63));
    }

    #[test]
    fn variables_apply_on_top_of_declared_settings() {
        let declared = QueueSettings {
            concurrency: 2,
            soft_time_limit: std::time::Duration::from_secs(1800),
            hard_time_limit: std::time::Duration::from_secs(2000),
            ..QueueSettings::default()
        };
        let from_env = QueueSettings {
            concurrency: 8,
            ..QueueSettings::default()
        };
        let o = SettingsOverride::from_set(&from_env, &BTreeSet::from(["CONCURRENCY"]));
        let table = QueueSettingsByName::new(
            BTreeMap::from([("echo".parse().unwrap(), QueueSettings::default())]),
            BTreeMap::from([("OCR".to_owned(), from_env)]),
        )
        .with_overrides(BTreeMap::from([("OCR".to_owned(), o)]));
        let ocr = table.over(&"ocr".parse().unwrap(), &declared);
        assert_eq!(ocr.concurrency, 8, "the variable set wins");
        assert_eq!(
            ocr.soft_time_limit, declared.soft_time_limit,
            "the rest is declared"
        );
        assert_eq!(table.over(&"other".parse().unwrap(), &declared), declared);
        assert_eq!(
            table.over(&"echo".parse().unwrap(), &declared),
            QueueSettings::default(),
            "built-in queues keep their configured settings"
        );
    }

    #[test]
    fn any_name_gets_its_configured_settings_or_the_defaults() {
        let ocr = QueueSettings {
            concurrency: 2,
            ..QueueSettings::default()
        };
        let table = QueueSettingsByName::new(
            BTreeMap::new(),
            BTreeMap::from([("OCR_V2".to_owned(), ocr.clone())]),
        );
        assert_eq!(table.get(&"ocr.v2".parse().unwrap()), ocr);
        assert_eq!(table.get(&"ocr-v2".parse().unwrap()), ocr);
        assert_eq!(
            table.get(&"other".parse().unwrap()),
            QueueSettings::default()
        );
    }
}
