//! [`QueueClient`]: the handle every queue operation goes through, and what
//! those operations share.
//!
//! The API submits and inspects jobs through it; workers claim, acknowledge,
//! fail, heartbeat and recover through it. It holds a multiplexed,
//! auto-reconnecting connection ([`ConnectionManager`]) that is cheap to
//! clone; blocking claims use a dedicated connection of their own (see
//! [`crate::fetcher`]).
//!
//! This file holds the client itself (connection, Redis' clock, key layout,
//! settings by queue name) and the way its writes reach Redis
//! ([`QueueClient::eval_durably`]). The operations live by concept, each an
//! `impl QueueClient` block of its own, and their types are re-exported
//! here:
//!
//! * submission, one job or a batch, and completion callbacks
//!   ([`crate::submit`]);
//! * the worker's side, all under a lease: register, heartbeat, claim, ack,
//!   fail, release, reconcile, deregister ([`crate::lease`]);
//! * cancellation ([`crate::cancel`]);
//! * reading jobs, depth and workers ([`crate::inspect`]; listings by state
//!   in [`crate::browse`]);
//! * dead-letter administration ([`crate::dead`]);
//! * recovery of dead workers' jobs and retention, next to the loop that
//!   runs them ([`crate::rescuer`]).
//!
//! The durability option (`HOPPER_REDIS_WAIT_REPLICAS` = n > 0): a push
//! (one job or a batch), an ack and a fail are sent with `WAIT n <timeout>`
//! right behind them in one pipeline ([`QueueClient::eval_durably`]), so the
//! `WAIT` runs on the connection and the node that took the write (on a
//! cluster, the master of the queue's slot) and covers it. Fewer replicas
//! than asked: a push answers [`QueueError::NotReplicated`] (the API's 503:
//! the job may exist, resubmit with the same Idempotency-Key); an ack or a
//! fail is kept as written and the shortfall logged and counted
//! (`hopper_redis_wait_shortfall_total`): its record is already in Postgres
//! and the job still in Redis, so a failover that loses it re-runs the job
//! (the worker's reconcile or the rescuer releases it), it never loses it,
//! and retrying could not make the replica catch up sooner.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use hopper_shared::{
    Config, QueueName, config::RedisWait, jobs::QueueSettings, queue_settings::QueueSettingsByName,
};
use uuid::Uuid;

use crate::{
    QueueError, QueueKeys,
    connection::{Redis, RedisConn},
    now_ms,
};
pub use crate::{
    dead::DeadPage,
    inspect::{QueueStats, RECENT_MINUTES, WorkerInfo},
    lease::{Ack, AfterFailure, ClaimBatch, Claimed},
    rescuer::Trimmed,
    submit::{Pushed, WEBHOOK_QUEUE},
};

/// Handle on every queue under one key prefix.
#[derive(Clone)]
pub struct QueueClient {
    redis: Redis,
    pub(crate) conn: RedisConn,
    prefix: Arc<str>,
    settings: Arc<QueueSettingsByName>,
    /// Redis' clock minus ours, in ms (see [`QueueClient::sync_clock`]).
    clock_offset: Arc<AtomicI64>,
    /// High-priority claims in a row before a normal job goes first.
    pub(crate) high_burst: u32,
    /// Dead letters are forgotten this long after they died (zero: never).
    pub(crate) dead_retention: Duration,
    /// Settings declared by the tasks read from the registry.
    pub(crate) declared: Arc<crate::registry::DeclaredSettings>,
    /// The durability option: replicas each push, ack and fail waits for.
    wait: RedisWait,
    /// Partitioned queues' layouts (see [`crate::partitions`]).
    partitions: Arc<crate::partitions::Partitions>,
    /// Finished jobs past their retention, as the last ack of each queue
    /// (by its done set's key) found them: the next ack forgets them
    /// (`ack.lua`).
    pub(crate) to_forget: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>,
    /// Per in-flight set, the jobs the last reconcile found taken by a
    /// claim's first step and not started (`reconcile.lua`).
    pub(crate) not_started: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>,
}

impl std::fmt::Debug for QueueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueClient")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl QueueClient {
    /// Connects to Redis as configured. Fails with a message naming the URL
    /// when Redis cannot be reached.
    pub async fn connect(config: &Config) -> Result<Self, QueueError> {
        let redis = Redis::open(config.redis_url.as_str(), &config.redis_tls)?;
        let conn = redis.shared().await?;
        let mut this = Self {
            redis,
            conn,
            prefix: config.key_prefix.as_str().into(),
            settings: Arc::new(config.queues.clone()),
            clock_offset: Arc::default(),
            high_burst: config.high_priority_burst,
            dead_retention: config.retention.dead_letters,
            declared: Arc::default(),
            wait: config.redis_wait,
            partitions: Arc::default(),
            to_forget: Arc::default(),
            not_started: Arc::default(),
        };
        this.ping().await?;
        this.sync_clock().await?;
        Ok(this)
    }

    /// Measures Redis' clock against ours (`TIME`, half the round trip
    /// allowed for). Every time that matters is taken inside the scripts;
    /// this estimate only picks keys named by time (per-minute counters)
    /// and shows ages, so a worker with a wrong clock still files its
    /// counts under Redis' minute.
    pub async fn sync_clock(&self) -> Result<(), QueueError> {
        let before = now_ms();
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn.clone())
            .await?;
        let after = now_ms();
        let redis_ms = secs * 1000 + micros / 1000;
        self.clock_offset
            .store(redis_ms - (before + after) / 2, Ordering::Relaxed);
        Ok(())
    }

    /// Unix ms on Redis' clock, as last measured by [`Self::sync_clock`].
    pub fn redis_now_ms(&self) -> i64 {
        now_ms() + self.clock_offset.load(Ordering::Relaxed)
    }

    /// Checks that Redis answers.
    pub async fn ping(&mut self) -> Result<(), QueueError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn)
            .await?;
        Ok(())
    }

    /// The shared multiplexed connection (cheap to clone), for handlers
    /// whose effects live in Redis.
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Whether Redis is a cluster (`redis+cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.redis.is_cluster()
    }

    /// A dedicated connection for blocking commands, whose response timeout
    /// allows a block of `block`.
    pub async fn dedicated_connection(&self, block: Duration) -> Result<RedisConn, QueueError> {
        self.redis.dedicated(block).await
    }

    /// The built-in queues' names, in name order.
    pub(crate) fn built_in_names(&self) -> impl Iterator<Item = &QueueName> {
        self.settings.built_in_names()
    }

    /// Partitioned queues' layouts and the round-robin counter.
    pub(crate) fn partitions_state(&self) -> &crate::partitions::Partitions {
        &self.partitions
    }

    /// The key prefix of every queue.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key layout of the queue `queue`.
    pub fn keys(&self, queue: impl Into<QueueName>) -> QueueKeys {
        let queue = queue.into();
        QueueKeys::new(&self.prefix, queue)
    }

    /// The settings of the queue `queue`: a built-in queue's as configured;
    /// a declared task's as declared, with its `HOPPER_QUEUE_<NAME>_*`
    /// variables on top (see [`crate::registry`]); else as configured or
    /// the defaults.
    pub fn settings(&self, queue: impl Into<QueueName>) -> QueueSettings {
        // A partition has its queue's settings.
        let queue = queue.into().logical();
        if !self.settings.is_built_in(&queue)
            && let Ok(declared) = self.declared.read()
            && let Some(d) = declared.get(&queue)
        {
            return self.settings.over(&queue, d);
        }
        self.settings.get(&queue)
    }

    /// Whether the durability option is on (`HOPPER_REDIS_WAIT_REPLICAS`).
    pub(crate) fn is_durable(&self) -> bool {
        self.wait.is_on()
    }

    /// A push's `WAIT` answer (`acked` replicas; `None`: the option is off)
    /// as a result: [`QueueError::NotReplicated`] when short.
    pub(crate) fn push_replicated(
        &self,
        queue: &QueueName,
        acked: Option<u32>,
    ) -> Result<(), QueueError> {
        match acked {
            Some(acked) if acked < self.wait.replicas => {
                metrics::counter!(hopper_shared::metrics::REDIS_WAIT_SHORTFALL,
                    "op" => "push", "queue" => queue.label())
                .increment(1);
                Err(QueueError::NotReplicated {
                    acked,
                    asked: self.wait.replicas,
                    timeout_ms: self.wait.timeout.as_millis() as u64,
                })
            }
            _ => Ok(()),
        }
    }

    /// An ack's or a fail's `WAIT` answer: a shortfall is logged and
    /// counted, not an error (see the module docs).
    pub(crate) fn finish_replicated(
        &self,
        op: &'static str,
        queue: &QueueName,
        acked: Option<u32>,
    ) {
        if let Some(acked) = acked
            && acked < self.wait.replicas
        {
            metrics::counter!(hopper_shared::metrics::REDIS_WAIT_SHORTFALL,
                "op" => op, "queue" => queue.label())
            .increment(1);
            tracing::warn!(
                queue = queue.as_str(),
                acked,
                asked = self.wait.replicas,
                "{op} written to the master but not yet to enough replicas: a failover now \
                 would run these jobs again"
            );
        }
    }

    /// Runs `evals` (`EVALSHA`s of `script`, all on one queue, so one slot)
    /// in one pipeline and, with the durability option on, `WAIT` right
    /// behind them in the same pipeline: the same connection and node took
    /// the writes, so the `WAIT` covers them (a `WAIT` sent alone could land
    /// on another connection or, after a failover, another node, and answer
    /// at once for writes it never saw). A script the server does not know
    /// (a restarted or promoted node) is loaded and the pipeline sent once
    /// more: every `EVALSHA` failed alike, so none ran. Answers the scripts'
    /// replies in order and, when `WAIT` ran, how many replicas acknowledged.
    pub(crate) async fn eval_durably(
        &self,
        script: &redis::Script,
        evals: Vec<redis::Cmd>,
    ) -> Result<(Vec<redis::Value>, Option<u32>), QueueError> {
        let span = tracing::info_span!(
            "redis",
            otel.name = "redis EVALSHA",
            otel.kind = "client",
            db.system = "redis",
            db.operation = "EVALSHA",
            script = script.get_hash(),
            commands = evals.len(),
        );
        tracing::Instrument::instrument(self.eval_pipeline(script, evals), span).await
    }

    /// The body of [`Self::eval_durably`], in its span. On a cluster each
    /// `EVALSHA` is a pipeline of its own (all sent at once): the cluster
    /// client sends a whole pipeline again when one of its commands is
    /// redirected (`ASK`, `TRYAGAIN` while a slot moves), which would run
    /// again the scripts before it that did run — a batch of jobs pushed
    /// twice. Alone in its pipeline, a refused script did not run, and is
    /// sent again while its slot moves ([`crate::connection`]).
    ///
    /// Not with the durability option on: each pipeline would end in a
    /// `WAIT`, and `WAIT`s block the node's connection one after the other
    /// (while a promoted master has no replica yet, each for its whole
    /// timeout: a worker's acks then time out again and again, measured by
    /// `scripts/bench/cluster`'s failover round). There the batch stays one
    /// pipeline with one `WAIT`, and a slot move while it is sent may run a
    /// script twice (README, "Partitioned queues").
    async fn eval_pipeline(
        &self,
        script: &redis::Script,
        evals: Vec<redis::Cmd>,
    ) -> Result<(Vec<redis::Value>, Option<u32>), QueueError> {
        if !self.is_cluster() || evals.len() <= 1 || self.wait.is_on() {
            return self.eval_pipeline_one(script, evals).await;
        }
        let sent = futures::future::try_join_all(
            evals
                .into_iter()
                .map(|eval| self.eval_pipeline_one(script, vec![eval])),
        )
        .await?;
        // No WAIT here (the durability option is off), so no replica count.
        Ok((
            sent.into_iter().flat_map(|(reply, _)| reply).collect(),
            None,
        ))
    }

    /// One pipeline of [`Self::eval_pipeline`]: `evals`, then `WAIT` with
    /// the durability option on.
    async fn eval_pipeline_one(
        &self,
        script: &redis::Script,
        evals: Vec<redis::Cmd>,
    ) -> Result<(Vec<redis::Value>, Option<u32>), QueueError> {
        let mut conn = self.conn.clone();
        let single = evals.len() == 1;
        let mut pipe = redis::pipe();
        for eval in evals {
            pipe.add_command(eval);
        }
        if self.wait.is_on() {
            pipe.cmd("WAIT")
                .arg(self.wait.replicas)
                .arg(self.wait.timeout.as_millis() as u64);
        }
        let mut backoff = crate::connection::SlotMoveBackoff::new();
        let mut loaded = false;
        let mut replies: Vec<redis::Value> = loop {
            match pipe.query_async(&mut conn).await {
                Err(e)
                    if !loaded
                        && e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    script.prepare_invoke().load_async(&mut conn).await?;
                    loaded = true;
                }
                // One script, refused: it did not run (WAIT runs anywhere).
                Err(e) if single && self.is_cluster() && backoff.again(&e).await => continue,
                other => break other?,
            }
        };
        let acked = if self.wait.is_on() {
            let reply = replies.pop().unwrap_or(redis::Value::Nil);
            Some(decode::<u32>(reply)?)
        } else {
            None
        };
        Ok((replies, acked))
    }
}

/// `EVALSHA` of `script` with `keys` and `args`, as a command to pipeline.
pub(crate) fn evalsha(script: &redis::Script, keys: &[String], args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}

/// The one reply of a one-script [`QueueClient::eval_durably`], decoded.
pub(crate) fn single_reply<T: redis::FromRedisValue>(
    replies: Vec<redis::Value>,
) -> Result<T, QueueError> {
    decode(replies.into_iter().next().unwrap_or(redis::Value::Nil))
}

/// A reply decoded as `T`.
pub(crate) fn decode<T: redis::FromRedisValue>(reply: redis::Value) -> Result<T, QueueError> {
    redis::from_redis_value(reply).map_err(|e| QueueError::Redis(e.into()))
}

pub(crate) fn parse_id(s: &str) -> Result<Uuid, QueueError> {
    Uuid::parse_str(s).map_err(|e| QueueError::Corrupt {
        id: s.to_owned(),
        why: e.to_string(),
    })
}
