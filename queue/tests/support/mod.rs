//! What the queue's integration tests share (`queue.rs`, and those added
//! for the Celery bridge: `intake.rs`, `job_options.rs`, `outbox.rs`): a key
//! prefix per test on the real Redis at `REDIS_URL`, removed when the test
//! ends, claims, a claimed job's attempt as a `Recorder` takes it, and small
//! waits.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hopper_queue::{Attempt, QueueClient, WorkerId, client::Claimed};
use hopper_shared::{Config, QueueName};

/// A test's configuration under a key prefix of its own; dropping it
/// deletes every key under that prefix (`{<prefix>:*`).
pub struct TestQueue {
    pub config: Config,
}

impl TestQueue {
    /// A fresh prefix on the Redis at `REDIS_URL`.
    pub fn new() -> Self {
        Self::with(&[])
    }

    /// A fresh prefix on the Redis at `REDIS_URL`, with these variables set.
    pub fn with(extra: &[(&str, &str)]) -> Self {
        let prefix = format!("qt-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let mut env: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("HOPPER_KEY_PREFIX".into(), prefix);
        if let Ok(url) = std::env::var("REDIS_URL") {
            env.insert("REDIS_URL".into(), url);
        }
        Self {
            config: Config::from_vars(env).unwrap(),
        }
    }

    /// A key outside the queue's keys but under this test's prefix (so it
    /// is removed with them): `{<prefix>:}<name>`.
    pub fn foreign_key(&self, name: &str) -> String {
        format!("{{{}:}}{name}", self.config.key_prefix)
    }

    /// A client on this prefix.
    pub async fn client(&self) -> QueueClient {
        QueueClient::connect(&self.config)
            .await
            .expect("Redis is running (scripts/setup)")
    }
}

impl std::ops::Deref for TestQueue {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let pattern = format!("{{{}:*", self.config.key_prefix);
        for url in node_urls(&self.config.redis_url) {
            delete_matching(&url, &pattern);
        }
    }
}

/// The servers holding keys: the one of `url`, or every master of the
/// cluster it names.
fn node_urls(url: &str) -> Vec<String> {
    if !hopper_queue::connection::is_cluster_url(url) {
        return vec![url.to_owned()];
    }
    let Ok(seeds) = hopper_queue::connection::cluster_nodes(url) else {
        return Vec::new();
    };
    let Some(nodes) = seeds.iter().find_map(|seed| {
        let mut conn = redis::Client::open(seed.as_str())
            .and_then(|c| c.get_connection())
            .ok()?;
        redis::cmd("CLUSTER")
            .arg("NODES")
            .query::<String>(&mut conn)
            .ok()
    }) else {
        return Vec::new();
    };
    let scheme = if url.starts_with("rediss") {
        "rediss"
    } else {
        "redis"
    };
    nodes
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let addr = f.get(1)?.split('@').next()?;
            (f.get(2)?.contains("master") && !f.get(2)?.contains("fail"))
                .then(|| format!("{scheme}://{addr}"))
        })
        .collect()
}

/// Deletes the keys matching `pattern` on the server at `url`, one key
/// per command (a cluster node refuses a DEL across slots).
fn delete_matching(url: &str, pattern: &str) {
    use redis::Commands;
    let Ok(mut conn) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    let keys: Vec<String> = conn
        .scan_match::<_, String>(pattern)
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default();
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("UNLINK").arg(key).ignore();
        }
        let _: Result<(), _> = pipe.query(&mut conn);
    }
}

/// A connection of its own (claims run on one).
pub async fn conn(q: &QueueClient) -> hopper_queue::RedisConn {
    q.dedicated_connection(Duration::from_secs(1))
        .await
        .unwrap()
}

/// A registered worker id on `queue`.
pub async fn registered(q: &QueueClient, queue: &QueueName) -> WorkerId {
    let w = WorkerId::generate();
    q.register(queue.clone(), &w).await.unwrap();
    w
}

/// Claims up to `n` jobs of `queue` for `w` with a long lease.
pub async fn claim(
    q: &QueueClient,
    queue: &QueueName,
    w: &WorkerId,
    n: usize,
) -> hopper_queue::client::ClaimBatch {
    q.claim(
        &mut conn(q).await,
        queue.clone(),
        w,
        n,
        Duration::from_secs(60),
    )
    .await
    .unwrap()
}

/// Polls `probe` every 10 ms until it answers `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Unix ms on this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The attempt of `claimed` (by `w`, in `queue`) as `Recorder::finish`
/// takes it, started now.
pub fn attempt<'a>(claimed: &'a Claimed, queue: &'a QueueName, w: &'a WorkerId) -> Attempt<'a> {
    Attempt {
        id: claimed.id,
        queue,
        worker: w,
        lease: claimed.lease,
        attempt: claimed.attempt,
        max_attempts: claimed.max_attempts,
        enqueued_at_ms: claimed.enqueued_at_ms,
        started_at_ms: now_ms(),
        args_json: &claimed.args,
        priority: claimed.priority,
        request_id: claimed.request_id.as_deref(),
        tenant: &claimed.tenant,
        callback_url: claimed.callback_url.as_deref(),
        notify: claimed.notify.as_ref(),
        cancel_requested: false,
        backoff: claimed.backoff,
    }
}
