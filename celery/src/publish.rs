//! Writing Celery results where `AsyncResult` looks for them.
//!
//! [`run_results`] reads the outbox `celery.result` — every Celery-sent job
//! appends its outcome there when it finishes (its `notify`, see
//! `hopper_queue::outbox`) — builds each Celery meta ([`crate::result`]),
//! writes it, and only then removes the entries it handled: at least once,
//! and a second write of one result changes nothing a client can see.
//!
//! Celery's Redis result backend stores a task's meta JSON under
//! `<prefix>celery-task-meta-<id>` (`SETEX`, `result_expires`) and publishes
//! the same value on a channel of the same name, which a waiting
//! `AsyncResult.get()` subscribes to. [`ResultStore::publish`] does both in
//! one script, and — as Celery's own backend does — never replaces a
//! stored `SUCCESS`: a job run again after a crash cannot turn a delivered
//! result into another.

use std::time::Duration;

use hopper_queue::{ListEnd, QueueClient};
use hopper_shared::{
    metrics as m,
    retry_policy::{self, Pauses},
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    RESULT_TASK,
    idle::{IdleWait, pause},
    result::ResultData,
};

use redis::{
    Client, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

/// `SET(EX)` + `PUBLISH` of each result, unless its key holds a `SUCCESS`
/// already: a round's results in one call (a script run per result cost
/// about as much Redis time as the whole rest of a Celery task's handling).
/// KEYS: the result keys; ARGV: per key, the meta JSON and the seconds to
/// keep it (0: for ever). Returns how many were written.
const PUBLISH: &str = r#"
local written = 0
for i, key in ipairs(KEYS) do
  local meta, ttl = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local stored = redis.call('GET', key)
  local success = false
  if stored then
    local ok, old = pcall(cjson.decode, stored)
    success = ok and type(old) == 'table' and old.status == 'SUCCESS'
  end
  if not success then
    if ttl > 0 then
      redis.call('SET', key, meta, 'EX', ttl)
    else
      redis.call('SET', key, meta)
    end
    redis.call('PUBLISH', key, meta)
    written = written + 1
  end
end
return written
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
        Ok(self
            .publish_many(&[(key.to_owned(), meta.to_string(), ttl_s)])
            .await?
            == 1)
    }

    /// [`Self::publish`] for many results (key, meta JSON, seconds to keep
    /// it) in one round trip; answers how many were written. The keys must
    /// live on one Redis node (Celery's Redis result backend is one server).
    pub async fn publish_many(
        &self,
        results: &[(String, String, u64)],
    ) -> Result<usize, redis::RedisError> {
        if results.is_empty() {
            return Ok(0);
        }
        let mut inv = self.script.prepare_invoke();
        for (key, meta, ttl_s) in results {
            inv.key(key).arg(meta).arg(ttl_s);
        }
        inv.invoke_async(&mut self.conn.clone()).await
    }
}

/// Entries handled per round.
const BATCH: usize = 256;
/// Longest wait on an empty outbox.
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// One outbox entry: a finished Celery-sent job.
#[derive(Debug, Deserialize)]
struct Finished {
    data: ResultData,
    job: crate::result::FinishedJob,
}

/// Publishes the results the outbox `celery.result` holds, until `stop`
/// fires (see the module docs). Failures pause it with a capped backoff;
/// the entries wait in the outbox meanwhile.
pub async fn run_results(client: QueueClient, store: ResultStore, stop: CancellationToken) {
    let outbox = client.keys(RESULT_TASK).outbox();
    let mut idle = IdleWait::default();
    // 50 ms doubling to 5 s, reset after a good round (`retry_policy::redis_reconnect`).
    let mut backoff = Pauses::new(retry_policy::redis_reconnect());
    while !stop.is_cancelled() {
        let round = publish_round(&client, &store).await;
        match round {
            Ok(0) => {}
            Ok(_) => {
                backoff.reset();
                continue;
            }
            Err(e) => {
                let wait = backoff.next_pause();
                tracing::warn!("publishing Celery results failed, retrying in {wait:?}: {e}");
                pause(&stop, wait).await;
                continue;
            }
        }
        if let Err(e) = idle
            .until_element(&client, &outbox, ListEnd::Left, IDLE_WAIT, &stop)
            .await
        {
            let wait = backoff.next_pause();
            tracing::warn!("Celery results cannot connect, retrying in {wait:?}: {e}");
            pause(&stop, wait).await;
        }
    }
}

/// One round: up to [`BATCH`] results written, then their entries removed.
/// Answers how many entries it handled.
async fn publish_round(client: &QueueClient, store: &ResultStore) -> Result<usize, String> {
    let entries = client
        .outbox_peek(&RESULT_TASK, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    if entries.is_empty() {
        return Ok(0);
    }
    let now = time::OffsetDateTime::now_utc();
    let mut results = Vec::with_capacity(entries.len());
    let mut statuses: Vec<String> = Vec::with_capacity(entries.len());
    for entry in &entries {
        let finished: Finished = match serde_json::from_str(entry) {
            Ok(f) => f,
            Err(e) => {
                // Nothing can ever publish it: say so and let it go.
                tracing::error!("an outbox entry is not a finished Celery job, dropped: {e}");
                continue;
            }
        };
        let meta = crate::result::meta(&finished.job, &finished.data, now);
        statuses.push(meta["status"].as_str().unwrap_or("").to_owned());
        results.push((
            finished.data.result_key,
            meta.to_string(),
            finished.data.result_ttl_s,
        ));
    }
    store
        .publish_many(&results)
        .await
        .map_err(|e| format!("result backend: {e}"))?;
    for status in statuses {
        metrics::counter!(m::CELERY_RESULTS_PUBLISHED, "status" => status).increment(1);
    }
    client
        .outbox_done(&RESULT_TASK, &entries)
        .await
        .map_err(|e| e.to_string())?;
    Ok(entries.len())
}
