//! Writing Celery results where `AsyncResult` looks for them.
//!
//! Celery's Redis result backend stores a task's meta JSON under
//! `<prefix>celery-task-meta-<id>` (`SETEX`, `result_expires`) and publishes
//! the same value on a channel of the same name, which a waiting
//! `AsyncResult.get()` subscribes to. [`ResultStore::publish`] does both in
//! one script, and — as Celery's own backend does — never replaces a
//! stored `SUCCESS`: a job run again after a crash cannot turn a delivered
//! result into another.

use std::time::Duration;

use redis::{
    Client, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

/// `SET(EX)` + `PUBLISH`, unless the key holds a `SUCCESS` already.
/// KEYS[1] the result key; ARGV: 1 the meta JSON, 2 seconds to keep it (0: for ever).
/// Returns 1 when written, 0 when a success was there.
const PUBLISH: &str = r#"
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, meta = pcall(cjson.decode, stored)
  if ok and type(meta) == 'table' and meta.status == 'SUCCESS' then return 0 end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"#;

/// The Celery result backend (a Redis, maybe another database or server
/// than Hopper's).
#[derive(Clone)]
pub struct ResultStore {
    conn: ConnectionManager,
    script: Script,
}

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStore").finish_non_exhaustive()
    }
}

impl ResultStore {
    /// Connects to the result backend at `url` (a `redis://` URL, database
    /// included).
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3);
        let conn = Client::open(url)?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(Self {
            conn,
            script: Script::new(PUBLISH),
        })
    }

    /// Stores `meta` (Celery's result JSON) under `key` for `ttl_s` seconds
    /// (0: for ever) and publishes it, unless a success is stored there.
    /// Answers whether it was written.
    pub async fn publish(
        &self,
        key: &str,
        meta: &serde_json::Value,
        ttl_s: u64,
    ) -> Result<bool, redis::RedisError> {
        let written: i64 = self
            .script
            .key(key)
            .arg(meta.to_string())
            .arg(ttl_s)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(written == 1)
    }
}
