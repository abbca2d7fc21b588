//! The task registry: which tasks exist, as their workers declared them.
//!
//! One Redis hash, `{<prefix>:tasks}`, maps a task name to its
//! [`TaskDefinition`] as JSON. A worker declares the tasks it serves when it
//! starts ([`QueueClient::declare`]; `declare.lua` refuses, atomically, a
//! second schema under one version and a name owned by someone else). The
//! API reads it to accept or refuse submissions and to show the tasks; a
//! definition stays after its workers stop (jobs wait for the next one)
//! until an operator removes it ([`QueueClient::remove_task`]).
//!
//! Settings: the definitions a process has read are remembered
//! ([`QueueClient::remember_settings`]), so [`QueueClient::settings`] answers
//! a task's declared settings (with its `HOPPER_QUEUE_<NAME>_*` variables
//! on top) without a round trip.

use std::collections::HashMap;

use hopper_shared::{QueueName, jobs::QueueSettings, tasks::TaskDefinition};

use crate::{QueueClient, QueueError, scripts::SCRIPTS};

/// How a declaration went.
#[derive(Debug, Clone, PartialEq)]
pub enum Declared {
    /// Stored: the definition is in force.
    InForce(Box<TaskDefinition>),
    /// A newer version (this one) is in force and stays.
    Older(u32),
}

/// The settings each task read from the registry declares, by name.
pub(crate) type DeclaredSettings = std::sync::RwLock<HashMap<QueueName, QueueSettings>>;

impl QueueClient {
    /// The registry hash.
    pub fn registry_key(&self) -> String {
        format!("{{{}:tasks}}", self.prefix())
    }

    /// Declares `def` (its `declared_at_ms` and `schema_digest` are set
    /// here). Refused with [`QueueError::SchemaConflict`] when its version
    /// is in force with another schema, and [`QueueError::TaskOwned`] when
    /// the name belongs to another tenant (or to every tenant).
    pub async fn declare(&self, def: &TaskDefinition) -> Result<Declared, QueueError> {
        let mut def = def.clone();
        def.schema_digest = def.schema_digest();
        def.declared_at_ms = self.redis_now_ms();
        let json = serde_json::to_string(&def)?;
        let (outcome, detail): (String, String) = SCRIPTS
            .declare
            .key(self.registry_key())
            .arg(def.name.as_str())
            .arg(&json)
            .arg(def.version)
            .arg(&def.schema_digest)
            .arg(def.tenant.as_deref().unwrap_or(""))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let none = |d: &str| {
            if d.is_empty() {
                "none".to_owned()
            } else {
                d.to_owned()
            }
        };
        match outcome.as_str() {
            "declared" => {
                self.remember_settings(std::slice::from_ref(&def));
                Ok(Declared::InForce(Box::new(def)))
            }
            "older" => Ok(Declared::Older(detail.parse().unwrap_or_default())),
            "conflict" => Err(QueueError::SchemaConflict {
                task: def.name.to_string(),
                version: def.version,
                in_force: none(&detail),
                declared: none(&def.schema_digest),
            }),
            "owned" => Err(QueueError::TaskOwned {
                task: def.name.to_string(),
                owner: if detail.is_empty() {
                    "a Rust worker, for every tenant".into()
                } else {
                    "another tenant".into()
                },
            }),
            other => Err(QueueError::Corrupt {
                id: def.name.to_string(),
                why: format!("declare.lua answered `{other}`"),
            }),
        }
    }

    /// The definition of task `name`, if declared.
    pub async fn task(&self, name: &QueueName) -> Result<Option<TaskDefinition>, QueueError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.registry_key())
            .arg(name.as_str())
            .query_async(&mut self.conn.clone())
            .await?;
        let def = raw.map(|r| parse(name.as_str(), &r)).transpose()?;
        if let Some(def) = &def {
            self.remember_settings(std::slice::from_ref(def));
        }
        Ok(def)
    }

    /// Every declared task, by name.
    pub async fn tasks(&self) -> Result<Vec<TaskDefinition>, QueueError> {
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.registry_key())
            .query_async(&mut self.conn.clone())
            .await?;
        let mut defs = raw
            .iter()
            .map(|(name, r)| parse(name, r))
            .collect::<Result<Vec<_>, _>>()?;
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        self.remember_settings(&defs);
        Ok(defs)
    }

    /// Forgets task `name` (its queue and jobs stay; a worker that serves
    /// it declares it again when it starts). False when it was not declared.
    pub async fn remove_task(&self, name: &QueueName) -> Result<bool, QueueError> {
        let n: i64 = redis::cmd("HDEL")
            .arg(self.registry_key())
            .arg(name.as_str())
            .query_async(&mut self.conn.clone())
            .await?;
        if let Ok(mut map) = self.declared.write() {
            map.remove(name);
        }
        Ok(n == 1)
    }

    /// Remembers the settings `defs` declare: [`QueueClient::settings`]
    /// answers them from now on (built-in queues keep their configured
    /// settings; `HOPPER_QUEUE_<NAME>_*` variables apply on top).
    pub fn remember_settings(&self, defs: &[TaskDefinition]) {
        let Ok(mut map) = self.declared.write() else {
            return;
        };
        for def in defs {
            map.insert(def.name.clone(), def.queue_settings());
        }
    }

    /// Every task's name: the built-in queues' and the declared tasks', in
    /// name order (registry read now).
    pub async fn task_names(&self) -> Result<Vec<QueueName>, QueueError> {
        let mut names: Vec<QueueName> = self.built_in_names().cloned().collect();
        names.extend(self.tasks().await?.into_iter().map(|d| d.name));
        names.sort();
        names.dedup();
        Ok(names)
    }
}

fn parse(name: &str, raw: &str) -> Result<TaskDefinition, QueueError> {
    serde_json::from_str(raw).map_err(|e| QueueError::Corrupt {
        id: format!("task {name}"),
        why: e.to_string(),
    })
}
