//! The embedding cache: vectors in Redis keyed by (model version, sha256 of
//! the normalised text), so a text seen before — a repeated search query, a
//! re-ingested paragraph — skips the model.
//!
//! Entries expire after a TTL, and an index (a sorted set by insertion
//! time) bounds their number: past the bound the oldest are dropped. All
//! keys share one hash tag, so the put script runs on one Cluster node.

use std::time::Duration;

use hopper_queue::RedisConn;
use hopper_shared::embeddings::{vector_from_bytes, vector_to_bytes};
use redis::Script;

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long an entry lives.
    pub ttl: Duration,
    /// At most this many entries.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(7 * 24 * 3600),
            max_entries: 200_000,
        }
    }
}

/// A handle on the cache; cheap to clone.
#[derive(Clone)]
pub struct EmbedCache {
    conn: RedisConn,
    tag: String,
    prefix: String,
    config: CacheConfig,
}

/// put: SET each entry with a TTL, index it, drop the oldest past the bound.
/// KEYS[1] index zset; ARGV: 1 now ms, 2 ttl s, 3 max entries, then (key, value) pairs.
const PUT: &str = r#"
local now, ttl, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', ttl)
  redis.call('ZADD', KEYS[1], now, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl * 1000)
local over = redis.call('ZCARD', KEYS[1]) - max
if over > 0 then
  for _, k in ipairs(redis.call('ZPOPMIN', KEYS[1], over)) do
    if k:sub(1, 1) == '{' then redis.call('DEL', k) end
  end
end
return 1
"#;

impl EmbedCache {
    /// The cache under key prefix `prefix`.
    pub fn new(conn: RedisConn, prefix: &str, config: CacheConfig) -> Self {
        Self {
            conn,
            tag: format!("{{{prefix}:embcache}}"),
            prefix: prefix.to_owned(),
            config,
        }
    }

    /// The key of `text` under `model_version`
    /// ([`hopper_shared::embeddings::cache_key`], which the API reads too).
    fn key(&self, model_version: &str, text: &str) -> String {
        hopper_shared::embeddings::cache_key(&self.prefix, model_version, text)
    }

    /// The cached vector of each text, if any.
    pub async fn get(
        &self,
        model_version: &str,
        texts: &[String],
    ) -> redis::RedisResult<Vec<Option<Vec<f32>>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = texts.iter().map(|t| self.key(model_version, t)).collect();
        let raw: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(raw
            .into_iter()
            .map(|r| r.map(|b| vector_from_bytes(&b)))
            .collect())
    }

    /// Stores vectors for texts.
    pub async fn put(
        &self,
        model_version: &str,
        entries: &[(&String, &Vec<f32>)],
    ) -> redis::RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let script = Script::new(PUT);
        let mut inv = script.prepare_invoke();
        inv.key(format!("{}:index", self.tag))
            .arg(hopper_queue::now_ms())
            .arg(self.config.ttl.as_secs())
            .arg(self.config.max_entries);
        for (text, v) in entries {
            inv.arg(self.key(model_version, text))
                .arg(vector_to_bytes(v));
        }
        inv.invoke_async::<i64>(&mut self.conn.clone()).await?;
        Ok(())
    }
}
