//! [`QueueClient`]: every queue operation, as one async call each.
//!
//! The API submits and inspects jobs through it; workers claim, acknowledge,
//! fail, heartbeat and recover through it. It holds a multiplexed,
//! auto-reconnecting connection ([`ConnectionManager`]) that is cheap to
//! clone; blocking claims use a dedicated connection of their own (see
//! [`crate::fetcher`]).
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
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use hopper_shared::{
    Config, QueueName,
    config::RedisWait,
    jobs::{JobRecord, JobState, QueueSettings},
    queue_settings::QueueSettingsByName,
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    QueueError, QueueKeys,
    connection::{Redis, RedisConn},
    job::{MAX_DELAY, PushOptions, WorkerId},
    now_ms,
    scripts::SCRIPTS,
};

/// Idempotency keys are remembered this long.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// At most this many wake tokens are kept per queue.
pub(crate) const WAKE_CAP: i64 = 10_000;
/// Due scheduled jobs promoted per claim, at most.
const PROMOTE_LIMIT: usize = 200;
/// Jobs one `push_batch.lua` call creates at most (a script blocks its
/// node while it runs: ~2 ms at this size).
const PUSH_BATCH: usize = 500;
/// Per-minute outcome counters are kept this long.
const STATS_TTL_S: i64 = 2 * 3600;
/// Window of the recent-outcome counts in [`QueueStats`].
pub const RECENT_MINUTES: i64 = 5;

/// A job handed to a worker by a claim.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job's id.
    pub id: Uuid,
    /// The stored arguments.
    pub args: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Unix ms: submitted.
    pub enqueued_at_ms: i64,
    /// Its priority.
    pub priority: crate::Priority,
    /// The id of the HTTP request that submitted it.
    pub request_id: Option<String>,
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its completion callback, if any.
    pub callback_url: Option<String>,
    /// The claim's lease token (the job's claim number): only an attempt
    /// holding it may acknowledge, fail or release the job.
    pub lease: u64,
    /// Its own hard time limit (submitted with the job), if any.
    pub hard_time_limit: Option<Duration>,
    /// Its own soft time limit, if any.
    pub soft_time_limit: Option<Duration>,
    /// The task told when it finishes, if any.
    pub notify: Option<hopper_shared::jobs::Notify>,
    /// Its own retry backoff, if any.
    pub backoff: Option<crate::job::JobBackoff>,
}

/// A successful attempt, as acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The job.
    pub id: Uuid,
    /// Its result, as JSON text.
    pub result: String,
    /// The worker id it was claimed under.
    pub worker: WorkerId,
    /// The claim's lease token.
    pub lease: u64,
}

/// Result of a claim: the jobs, and when the next scheduled job is due.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// Claimed jobs, now in the worker's in-flight set.
    pub jobs: Vec<Claimed>,
    /// Jobs found past their expiry time on the way: finished as cancelled
    /// by the claim; their records and callbacks are the claimant's to write
    /// ([`crate::outcome::record_finished_job`]).
    pub expired: Vec<Uuid>,
    /// How long until the earliest scheduled job falls due (Redis' clock).
    pub next_due_in: Option<Duration>,
    /// The queue's rate limit allowed no start: how long until it allows
    /// one (the claimer sleeps; the jobs stay queued).
    pub throttled_for: Option<Duration>,
}

/// The outcome of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pushed {
    /// The job's id (the existing one when the idempotency key was seen).
    pub id: Uuid,
    /// False when an idempotency key matched an earlier submission.
    pub created: bool,
}

/// Depth of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueStats {
    /// The queue.
    pub queue: QueueName,
    /// Waiting to be claimed.
    pub pending: u64,
    /// Waiting for a run-at time or a retry.
    pub scheduled: u64,
    /// Claimed by live or not-yet-recovered workers.
    pub running: u64,
    /// In the dead letters.
    pub dead: u64,
    /// Workers registered on the queue.
    pub workers: u64,
    /// Age of the oldest pending job, in ms.
    pub oldest_pending_age_ms: Option<u64>,
    /// The window of the `*_recent` counts, in minutes (the current minute
    /// included).
    pub recent_minutes: i64,
    /// Jobs that succeeded within the window.
    pub succeeded_recent: u64,
    /// Failed attempts within the window (retried or not).
    pub failed_recent: u64,
    /// Failed attempts scheduled for a retry within the window.
    pub retried_recent: u64,
    /// Jobs dead-lettered within the window.
    pub dead_lettered_recent: u64,
}

/// A worker on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    /// Its id (host-pid-random).
    pub worker: String,
    /// The queue.
    pub queue: QueueName,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Ids of the jobs it holds.
    pub running: Vec<String>,
}

/// One page of dead letters.
#[derive(Debug, Clone, Serialize)]
pub struct DeadPage {
    /// Dead letters in the queue.
    pub total: u64,
    /// This page, newest first.
    pub jobs: Vec<JobRecord>,
}

/// What one [`QueueClient::trim`] call forgot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Dead letters past the dead-letter retention.
    pub dead_letters: u64,
    /// Succeeded and cancelled jobs past the queue's retention.
    pub finished: u64,
}

/// What follows an attempt that did not succeed.
#[derive(Debug, Clone, Copy)]
pub enum AfterFailure<'a> {
    /// Run again after this long (on Redis' clock).
    RetryIn(Duration),
    /// Dead-letter it, for this reason (`attempts`, `poison`, …).
    Dead(&'a str),
    /// Its cancellation was asked for: finish it as cancelled.
    Cancelled,
}

/// The queue of signed completion callbacks (the built-in `webhook` task).
pub const WEBHOOK_QUEUE: QueueName = QueueName::from_static("webhook");

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
    high_burst: u32,
    /// Dead letters are forgotten this long after they died (zero: never).
    dead_retention: Duration,
    /// Settings declared by the tasks read from the registry.
    pub(crate) declared: Arc<crate::registry::DeclaredSettings>,
    /// The durability option: replicas each push, ack and fail waits for.
    wait: RedisWait,
    /// Partitioned queues' layouts (see [`crate::partitions`]).
    partitions: Arc<crate::partitions::Partitions>,
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

    /// Enqueues one job. `args` must already be validated for `queue`.
    pub async fn push(
        &self,
        queue: impl Into<QueueName>,
        args: &serde_json::Value,
        opts: &PushOptions,
    ) -> Result<Pushed, QueueError> {
        let queue = queue.into();
        let partition = self.route(&queue, args, opts).await?;
        let (keys, argv) = self.push_parts(&partition, args, opts)?;
        let (replies, acked) = self
            .eval_durably(&SCRIPTS.push, vec![evalsha(&SCRIPTS.push, &keys, &argv)])
            .await?;
        let (id, created): (String, i64) = single_reply(replies)?;
        if created < 0 {
            return Err(QueueError::TenantFull {
                tenant: opts
                    .tenant
                    .clone()
                    .unwrap_or_else(|| hopper_shared::jobs::DEFAULT_TENANT.into()),
                queue: queue.as_str().into(),
                load: created.unsigned_abs(),
                high_priority: id == "high",
            });
        }
        self.push_replicated(&queue, acked)?;
        Ok(Pushed {
            id: parse_id(&id)?,
            created: created == 1,
        })
    }

    /// A push's `WAIT` answer (`acked` replicas; `None`: the option is off)
    /// as a result: [`QueueError::NotReplicated`] when short.
    fn push_replicated(&self, queue: &QueueName, acked: Option<u32>) -> Result<(), QueueError> {
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
    fn finish_replicated(&self, op: &'static str, queue: &QueueName, acked: Option<u32>) {
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
    async fn eval_durably(
        &self,
        script: &redis::Script,
        evals: Vec<redis::Cmd>,
    ) -> Result<(Vec<redis::Value>, Option<u32>), QueueError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for eval in evals {
            pipe.add_command(eval);
        }
        if self.wait.is_on() {
            pipe.cmd("WAIT")
                .arg(self.wait.replicas)
                .arg(self.wait.timeout.as_millis() as u64);
        }
        let mut replies: Vec<redis::Value> = match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.prepare_invoke().load_async(&mut conn).await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        let acked = if self.wait.is_on() {
            let reply = replies.pop().unwrap_or(redis::Value::Nil);
            Some(decode::<u32>(reply)?)
        } else {
            None
        };
        Ok((replies, acked))
    }

    /// Enqueues many jobs of one queue in one pipelined round trip (no
    /// idempotency keys). Returns their ids in order. A cap
    /// (`max_unfinished`) is checked once for the whole batch, before
    /// anything is queued: all are accepted or none.
    pub async fn push_many(
        &self,
        queue: impl Into<QueueName>,
        batch: &[serde_json::Value],
        opts: &PushOptions,
    ) -> Result<Vec<Uuid>, QueueError> {
        let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
        self.push_many_with(queue.into(), batch, &ids, false, opts)
            .await
    }

    /// [`Self::push_many`] under given ids, one per job (`ids[i]` for
    /// `batch[i]`; `opts.id` is not used): the API records a job's own
    /// retention in Postgres under its id before the job exists.
    pub async fn push_many_as(
        &self,
        queue: impl Into<QueueName>,
        batch: &[serde_json::Value],
        ids: &[Uuid],
        opts: &PushOptions,
    ) -> Result<Vec<Uuid>, QueueError> {
        self.push_many_with(queue.into(), batch, ids, true, opts)
            .await
    }

    /// [`Self::push_many_as`]; `given_ids`: the ids may exist already (one
    /// that does is skipped), else they are fresh.
    async fn push_many_with(
        &self,
        queue: QueueName,
        batch: &[serde_json::Value],
        ids: &[Uuid],
        given_ids: bool,
        opts: &PushOptions,
    ) -> Result<Vec<Uuid>, QueueError> {
        assert_eq!(batch.len(), ids.len(), "one id per job");
        let layout = self.partition_layout(&queue).await?;
        let parts: Vec<QueueName> = batch
            .iter()
            .map(|args| self.route_in(&queue, layout, args, opts))
            .collect();
        let tenant = opts
            .tenant
            .as_deref()
            .unwrap_or(hopper_shared::jobs::DEFAULT_TENANT);
        let high = (opts.priority == crate::Priority::High)
            .then_some(opts.max_high_unfinished)
            .flatten();
        // Each partition the batch goes to checks its share of the cap.
        let mut counts: Vec<(&QueueName, u64)> = Vec::new();
        for part in &parts {
            match counts.iter_mut().find(|(p, _)| *p == part) {
                Some((_, n)) => *n += 1,
                None => counts.push((part, 1)),
            }
        }
        for (cap, field, high_priority) in [
            (opts.max_unfinished, tenant.to_owned(), false),
            (high, format!("{tenant}:high"), true),
        ] {
            let Some(cap) = cap else { continue };
            for (part, n) in &counts {
                let load: Option<u64> = redis::cmd("HGET")
                    .arg(self.keys(*part).tenant_load())
                    .arg(&field)
                    .query_async(&mut self.conn.clone())
                    .await?;
                let load = load.unwrap_or(0);
                if load + n > self.partition_cap(&queue, cap) {
                    return Err(QueueError::TenantFull {
                        tenant: tenant.into(),
                        queue: queue.as_str().into(),
                        load,
                        high_priority,
                    });
                }
            }
        }
        let opts = PushOptions {
            idempotency_key: None,
            max_unfinished: None,
            max_high_unfinished: None,
            ..opts.clone()
        };
        // Per partition (one slot each), `push_batch.lua` calls of at most
        // PUSH_BATCH jobs in one pipeline; the partitions side by side.
        // Unique jobs go one by one (`push.lua`: each holds its own key).
        let mut groups: Vec<(&QueueName, Vec<(&serde_json::Value, Uuid)>)> = Vec::new();
        for ((args, id), part) in batch.iter().zip(ids).zip(&parts) {
            match groups.iter_mut().find(|(p, _)| *p == part) {
                Some((_, jobs)) => jobs.push((args, *id)),
                None => groups.push((part, vec![(args, *id)])),
            }
        }
        let mut pipelines = Vec::with_capacity(groups.len());
        for (part, jobs) in &groups {
            let mut evals = Vec::new();
            if opts.unique.is_some() {
                for (args, id) in jobs {
                    let (keys, argv) = self.push_parts_as(part, *id, given_ids, args, &opts)?;
                    evals.push(evalsha(&SCRIPTS.push, &keys, &argv));
                }
                pipelines.push((&SCRIPTS.push, evals));
                continue;
            }
            for chunk in jobs.chunks(PUSH_BATCH) {
                let (args0, id0) = chunk[0];
                let (keys, mut argv) = self.push_parts_as(part, id0, given_ids, args0, &opts)?;
                // push.lua's keys [job, pending, scheduled, wake, idem, tenants, unique]
                // become [pending, scheduled, wake, tenants, jobs…].
                let mut batch_keys = vec![
                    keys[1].clone(),
                    keys[2].clone(),
                    keys[3].clone(),
                    keys[5].clone(),
                ];
                let job_keys = self.keys(*part);
                for (args, id) in chunk {
                    batch_keys.push(job_keys.job(id));
                    argv.push(id.to_string());
                    argv.push(serde_json::to_string(args)?);
                }
                evals.push(evalsha(&SCRIPTS.push_batch, &batch_keys, &argv));
            }
            pipelines.push((&SCRIPTS.push_batch, evals));
        }
        let sent = futures::future::try_join_all(
            pipelines
                .into_iter()
                .map(|(script, evals)| self.eval_durably(script, evals)),
        )
        .await?;
        for (_, acked) in sent {
            self.push_replicated(&queue, acked)?;
        }
        Ok(ids.to_vec())
    }

    /// Keys and arguments of `push.lua` for one job, under `opts.id` or a
    /// fresh id.
    pub(crate) fn push_parts(
        &self,
        queue: &QueueName,
        args: &serde_json::Value,
        opts: &PushOptions,
    ) -> Result<(Vec<String>, Vec<String>), QueueError> {
        let id = opts.id.unwrap_or_else(Uuid::now_v7);
        self.push_parts_as(queue, id, opts.id.is_some(), args, opts)
    }

    /// Keys and arguments of `push.lua` for one job under the id `id`
    /// (`given_id`: the caller's, which may exist already; else fresh).
    fn push_parts_as(
        &self,
        queue: &QueueName,
        id: Uuid,
        given_id: bool,
        args: &serde_json::Value,
        opts: &PushOptions,
    ) -> Result<(Vec<String>, Vec<String>), QueueError> {
        let keys = self.keys(queue);
        let delay = opts.delay.unwrap_or_default();
        if delay > MAX_DELAY {
            return Err(QueueError::DelayTooLong {
                delay_ms: delay.as_millis(),
                max_ms: MAX_DELAY.as_millis(),
            });
        }
        let delay_ms = delay.as_millis() as i64;
        let max_attempts = opts
            .max_attempts
            .unwrap_or_else(|| self.settings(queue).max_attempts);
        let idem = opts.idempotency_key.as_deref();
        let tenant = opts
            .tenant
            .as_deref()
            .unwrap_or(hopper_shared::jobs::DEFAULT_TENANT);
        let (unique_key, unique_mode, unique_ms) = match &opts.unique {
            None => (String::new(), "", 0),
            Some(u) => {
                let key = match &u.key {
                    Some(k) => format!("{tenant}:key:{k}"),
                    None => format!(
                        "{tenant}:args:{}",
                        hopper_shared::tasks::canonical_digest(args)
                    ),
                };
                let (mode, hold) = match u.scope {
                    crate::job::UniqueScope::Window(d) => ("window", d.min(crate::job::UNIQUE_MAX)),
                    crate::job::UniqueScope::UntilFinished => ("finished", crate::job::UNIQUE_MAX),
                };
                (key, mode, hold.as_millis().max(1) as u64)
            }
        };
        Ok((
            vec![
                keys.job(&id),
                keys.pending(opts.priority),
                keys.scheduled(),
                keys.wake(),
                keys.idempotency(idem.unwrap_or("")),
                keys.tenant_load(),
                keys.unique(&unique_key),
            ],
            vec![
                id.to_string(),
                serde_json::to_string(args)?,
                queue.logical().as_str().to_owned(),
                max_attempts.to_string(),
                // The id was given: it may exist already (push.lua checks).
                if given_id { "1" } else { "0" }.to_owned(),
                delay_ms.to_string(),
                IDEMPOTENCY_TTL.as_secs().to_string(),
                if idem.is_some() { "1" } else { "0" }.to_owned(),
                opts.priority.as_str().to_owned(),
                WAKE_CAP.to_string(),
                opts.request_id.clone().unwrap_or_default(),
                tenant.to_owned(),
                opts.callback_url.clone().unwrap_or_default(),
                opts.max_unfinished
                    .map_or(0, |c| self.partition_cap(queue, c))
                    .to_string(),
                opts.max_high_unfinished
                    .map_or(0, |c| self.partition_cap(queue, c))
                    .to_string(),
                opts.expires_at_ms.unwrap_or(0).max(0).to_string(),
                limit_ms(opts.hard_time_limit).to_string(),
                limit_ms(opts.soft_time_limit).to_string(),
                match &opts.notify {
                    Some(n) => serde_json::to_string(n)?,
                    None => String::new(),
                },
                unique_mode.to_owned(),
                unique_ms.to_string(),
                opts.backoff.map(|b| b.encode()).unwrap_or_default(),
                match opts.retention {
                    // Its done-set score moves by the difference (done_score in prelude.lua).
                    Some(own) => {
                        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128 / 2) as i64;
                        (ms(own) - ms(self.settings(queue).retention)).to_string()
                    }
                    None => "0".to_owned(),
                },
            ],
        ))
    }

    /// Reads a job of `queue` from Redis.
    pub async fn job(
        &self,
        queue: impl Into<QueueName>,
        id: Uuid,
    ) -> Result<Option<JobRecord>, QueueError> {
        let queue = queue.into();
        if queue.partition_index() == 0 {
            let partitions = self.partitions(&queue).await?;
            if partitions.len() > 1 {
                return self.find_in(id, &partitions).await;
            }
        }
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys(&queue).job(&id))
            .query_async(&mut self.conn.clone())
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        record_from_hash(&queue, id, &fields).map(Some)
    }

    /// The partition of `queue` that holds the job `id` (the queue itself
    /// when it is not split), if any holds it.
    pub async fn partition_of(
        &self,
        queue: &QueueName,
        id: Uuid,
    ) -> Result<Option<QueueName>, QueueError> {
        let partitions = self.partitions(queue).await?;
        if partitions.len() == 1 {
            return Ok(partitions.into_iter().next());
        }
        let mut pipe = redis::pipe();
        for p in &partitions {
            pipe.cmd("EXISTS").arg(self.keys(p).job(&id));
        }
        let found: Vec<bool> = self.conn.query_spread(&pipe).await?;
        Ok(partitions
            .into_iter()
            .zip(found)
            .find(|(_, f)| *f)
            .map(|(p, _)| p))
    }

    /// Finds a job by id in any built-in queue or declared task's queue
    /// (one HGETALL per queue, pipelined).
    pub async fn find_job(&self, id: Uuid) -> Result<Option<JobRecord>, QueueError> {
        let queues = self.task_names().await?;
        self.find_job_in(id, &queues).await
    }

    /// Finds a job by id in one of `queues` (one HGETALL per queue,
    /// pipelined): for callers that already know the task names (the API's
    /// registry cache), without reading the registry.
    pub async fn find_job_in(
        &self,
        id: Uuid,
        queues: &[QueueName],
    ) -> Result<Option<JobRecord>, QueueError> {
        let mut all = Vec::with_capacity(queues.len());
        for queue in queues {
            if queue.partition_index() == 0 {
                all.extend(self.partitions(queue).await?);
            } else {
                all.push(queue.clone());
            }
        }
        self.find_in(id, &all).await
    }

    /// The job `id` in one of these queues or partitions, as named (one
    /// HGETALL each, pipelined).
    async fn find_in(
        &self,
        id: Uuid,
        queues: &[QueueName],
    ) -> Result<Option<JobRecord>, QueueError> {
        let mut pipe = redis::pipe();
        for queue in queues {
            pipe.cmd("HGETALL").arg(self.keys(queue).job(&id));
        }
        let all: Vec<HashMap<String, String>> = self.conn.query_spread(&pipe).await?;
        for (queue, fields) in queues.iter().zip(all) {
            if !fields.is_empty() {
                return record_from_hash(queue, id, &fields).map(Some);
            }
        }
        Ok(None)
    }

    /// Queues the callbacks of a finished job: its signed completion
    /// webhook, if it asked for one (keyed by job, final state and attempt
    /// count, so a re-run after a crash queues it once), and its outcome
    /// `{"data": …, "job": <its record>}` appended to the outbox its
    /// `notify` names, if any ([`crate::outbox`]; read at least once) — or,
    /// for a workflow's member, its outcome recorded in its workflow and the
    /// nodes it made ready pushed ([`crate::workflow`]).
    pub async fn push_callbacks(&self, job: &JobRecord) -> Result<(), QueueError> {
        let mut public = job.clone();
        public.callback_url = None;
        public.notify = None;
        if let Some(url) = &job.callback_url {
            let once = format!("{}:{}:{}", job.id, job.state.as_str(), job.history.len());
            let body = serde_json::json!({ "event": "job.finished", "job": public });
            self.push_callback(
                url,
                "job.finished",
                body,
                &job.tenant,
                format!("webhook:{once}"),
            )
            .await?;
        }
        if let Some(member) = job.notify.as_ref().and_then(crate::workflow::member_of) {
            return self.workflow_member_finished(&member, job).await;
        }
        if let Some(notify) = &job.notify {
            // Written straight to JSON: building a `Value` of the record first
            // cost a bridge worker ~5 % of its CPU.
            #[derive(serde::Serialize)]
            struct Entry<'a> {
                data: &'a serde_json::Value,
                job: &'a JobRecord,
            }
            let entry = Entry {
                data: &notify.data,
                job: &public,
            };
            self.tell(&notify.task, &entry).await?;
        }
        Ok(())
    }

    /// Queues one signed callback of `event` with `body` to `url` (already
    /// checked against the webhook rules), once per idempotency `key`.
    pub async fn push_callback(
        &self,
        url: &str,
        event: &str,
        body: serde_json::Value,
        tenant: &str,
        key: String,
    ) -> Result<(), QueueError> {
        let args = serde_json::json!({ "url": url, "event": event, "body": body });
        let opts = PushOptions {
            idempotency_key: Some(key),
            tenant: Some(tenant.to_owned()),
            ..Default::default()
        };
        self.push(WEBHOOK_QUEUE, &args, &opts).await.map(|_| ())
    }

    /// Depth of the queue `queue`: of all its partitions together, when it
    /// is split (workers: the most on any one partition, as every worker
    /// serves them all; the oldest pending job: of any).
    pub async fn stats(&self, queue: impl Into<QueueName>) -> Result<QueueStats, QueueError> {
        let queue = queue.into();
        let partitions = self.partitions(&queue).await?;
        if partitions.len() == 1 {
            return self.partition_stats(&queue).await;
        }
        let all = futures::future::try_join_all(partitions.iter().map(|p| self.partition_stats(p)))
            .await?;
        let mut total = QueueStats {
            queue: queue.logical(),
            pending: 0,
            scheduled: 0,
            running: 0,
            dead: 0,
            workers: 0,
            oldest_pending_age_ms: None,
            recent_minutes: RECENT_MINUTES,
            succeeded_recent: 0,
            failed_recent: 0,
            retried_recent: 0,
            dead_lettered_recent: 0,
        };
        for s in all {
            total.pending += s.pending;
            total.scheduled += s.scheduled;
            total.running += s.running;
            total.dead += s.dead;
            total.workers = total.workers.max(s.workers);
            total.oldest_pending_age_ms = total.oldest_pending_age_ms.max(s.oldest_pending_age_ms);
            total.succeeded_recent += s.succeeded_recent;
            total.failed_recent += s.failed_recent;
            total.retried_recent += s.retried_recent;
            total.dead_lettered_recent += s.dead_lettered_recent;
        }
        Ok(total)
    }

    /// Depth of one partition (or of a queue that is not split).
    async fn partition_stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        let keys = self.keys(queue);
        let v: Vec<i64> = SCRIPTS
            .stats
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.scheduled())
            .key(keys.dead())
            .key(keys.workers())
            .key(keys.parked())
            .arg(keys.tag())
            .arg(keys.job_prefix())
            .arg("")
            .arg(RECENT_MINUTES)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let get = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(QueueStats {
            queue: queue.logical(),
            pending: get(0),
            scheduled: get(1),
            running: get(2),
            dead: get(3),
            workers: get(4),
            oldest_pending_age_ms: v.get(5).and_then(|&a| (a >= 0).then_some(a as u64)),
            recent_minutes: RECENT_MINUTES,
            succeeded_recent: get(6),
            failed_recent: get(7),
            retried_recent: get(8),
            dead_lettered_recent: get(9),
        })
    }

    /// Workers registered on the queue `queue` (on each of its partitions,
    /// when it is split): their last heartbeat and the jobs they hold.
    /// O(workers + their in-flight jobs).
    pub async fn workers(
        &self,
        queue: impl Into<QueueName>,
    ) -> Result<Vec<WorkerInfo>, QueueError> {
        let queue = queue.into();
        let mut all = Vec::new();
        for partition in self.partitions(&queue).await? {
            all.extend(self.partition_workers(&partition).await?);
        }
        Ok(all)
    }

    pub(crate) async fn partition_workers(
        &self,
        queue: &QueueName,
    ) -> Result<Vec<WorkerInfo>, QueueError> {
        let keys = self.keys(queue);
        let beats: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys.workers())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        let mut pipe = redis::pipe();
        for (w, _) in &beats {
            pipe.cmd("SMEMBERS")
                .arg(keys.inflight(&WorkerId::from_raw(w)));
        }
        let held: Vec<Vec<String>> = if beats.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut self.conn.clone()).await?
        };
        let now = self.redis_now_ms();
        Ok(beats
            .into_iter()
            .zip(held)
            .map(|((worker, beat), mut running)| {
                running.sort();
                WorkerInfo {
                    worker,
                    queue: queue.logical(),
                    heartbeat_age_ms: (now - beat as i64).max(0) as u64,
                    running,
                }
            })
            .collect())
    }

    /// Claims up to `n` jobs for `worker` (never blocks) on `conn`.
    /// [`QueueError::Evicted`] when `worker` is not registered or its last
    /// heartbeat is older than `lease`: it must renew or register afresh.
    pub async fn claim(
        &self,
        conn: &mut RedisConn,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        n: usize,
        lease: Duration,
    ) -> Result<ClaimBatch, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let settings = self.settings(&queue);
        // A split queue's rate is shared evenly by its partitions' buckets.
        let share = match settings.rate_limit {
            Some(_) => self.partition_layout(&queue).await?.high,
            None => 1,
        };
        let rate = settings.rate_limit.map(|r| r.split(share));
        let raw: Vec<redis::Value> = SCRIPTS
            .claim
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.scheduled())
            .key(keys.inflight(worker))
            .key(keys.wake())
            .key(keys.workers())
            .key(keys.high_streak())
            .key(keys.done())
            .key(keys.tenant_load())
            .key(keys.rate())
            .key(keys.tenant_running())
            .key(keys.parked())
            .arg(keys.job_prefix())
            .arg(n)
            .arg(worker.as_str())
            .arg(PROMOTE_LIMIT)
            .arg(lease.as_millis() as i64)
            .arg(self.high_burst)
            .arg(rate.map_or(0, |r| r.tokens))
            .arg(rate.map_or(0, |r| r.per_ms()))
            .arg(settings.tenant_concurrency.unwrap_or(0))
            .invoke_async(conn)
            .await?;
        parse_claim(&raw).map_err(|e| match e {
            ClaimError::Evicted => QueueError::Evicted {
                worker: worker.to_string(),
                queue: queue.as_str().into(),
            },
            ClaimError::Queue(e) => e,
        })
    }

    /// Records the success of many jobs in one call per worker id among
    /// them. Fenced: a job is acknowledged only while its attempt still
    /// holds it (see `ack.lua`). Returns the ids whose lease was lost.
    pub async fn ack_many(
        &self,
        queue: impl Into<QueueName>,
        acks: &[Ack],
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let retention = self.settings(&queue).retention.as_millis() as i64;
        let mut lost = Vec::new();
        let mut workers: Vec<&WorkerId> = acks.iter().map(|a| &a.worker).collect();
        workers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        workers.dedup();
        // One ack.lua per worker id, all in one pipeline (one queue, one slot).
        let evals = workers
            .into_iter()
            .map(|worker| {
                let mut eval = redis::cmd("EVALSHA");
                eval.arg(SCRIPTS.ack.get_hash())
                    .arg(5)
                    .arg(keys.inflight(worker))
                    .arg(keys.done())
                    .arg(keys.stats_minute(self.redis_now_ms()))
                    .arg(keys.cancel_requests())
                    .arg(keys.tenant_load())
                    .arg(retention)
                    .arg(keys.job_prefix())
                    .arg(STATS_TTL_S)
                    .arg(worker.as_str());
                for a in acks.iter().filter(|a| &a.worker == worker) {
                    eval.arg(a.id.to_string()).arg(&a.result).arg(a.lease);
                }
                eval
            })
            .collect();
        let (replies, acked) = self.eval_durably(&SCRIPTS.ack, evals).await?;
        self.finish_replicated("ack", &queue, acked);
        for reply in replies {
            let ids: Vec<String> = decode(reply)?;
            for id in ids {
                lost.push(parse_id(&id)?);
            }
        }
        Ok(lost)
    }

    /// Which of these attempts (job, the worker id it was claimed under,
    /// lease) still hold their jobs; in order.
    pub async fn still_held(
        &self,
        queue: impl Into<QueueName>,
        attempts: &[(Uuid, &WorkerId, u64)],
    ) -> Result<Vec<bool>, QueueError> {
        let queue = queue.into();
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(&queue);
        let mut inv = SCRIPTS.held.prepare_invoke();
        for (id, worker, lease) in attempts {
            inv.key(keys.job(id)).key(keys.inflight(worker));
            inv.arg(id.to_string()).arg(*lease);
        }
        let held: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    /// Records an attempt that did not succeed, and what follows it.
    /// Fenced like [`Self::ack_many`]: false (and nothing changed) when the
    /// attempt under `lease` no longer holds the job.
    pub async fn fail(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        id: Uuid,
        lease: u64,
        error: &str,
        next: AfterFailure<'_>,
    ) -> Result<bool, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let now = self.redis_now_ms();
        let (retry_in, final_state, reason) = match next {
            AfterFailure::RetryIn(d) => (d.min(MAX_DELAY).as_millis() as i64, "", ""),
            AfterFailure::Dead(reason) => (-1, "dead", reason),
            AfterFailure::Cancelled => (-1, "cancelled", ""),
        };
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(SCRIPTS.fail.get_hash())
            .arg(9)
            .arg(keys.job(&id))
            .arg(keys.inflight(worker))
            .arg(keys.scheduled())
            .arg(keys.dead())
            .arg(keys.stats_minute(now))
            .arg(keys.wake())
            .arg(keys.cancel_requests())
            .arg(keys.tenant_load())
            .arg(keys.done())
            .arg(id.to_string())
            .arg(error)
            .arg(retry_in)
            .arg(final_state)
            .arg(reason)
            .arg(STATS_TTL_S)
            .arg(lease);
        let (replies, acked) = self.eval_durably(&SCRIPTS.fail, vec![eval]).await?;
        self.finish_replicated("fail", &queue, acked);
        let ok: i64 = single_reply(replies)?;
        Ok(ok == 1)
    }

    /// Cancels a job: a waiting one at once, a running one cooperatively
    /// (its worker fires the job's cancellation token at its next
    /// heartbeat). Returns the job's state after the call, `None` when
    /// there is no such job in Redis.
    pub async fn cancel(&self, id: Uuid) -> Result<Option<(QueueName, String)>, QueueError> {
        let Some(job) = self.find_job(id).await? else {
            return Ok(None);
        };
        self.cancel_in(job.kind, id).await
    }

    /// [`Self::cancel`] for a job known to be in the queue `queue`.
    pub async fn cancel_in(
        &self,
        queue: impl Into<QueueName>,
        id: Uuid,
    ) -> Result<Option<(QueueName, String)>, QueueError> {
        let queue = queue.into();
        let Some(partition) = self.partition_of(&queue, id).await? else {
            return Ok(None);
        };
        let keys = self.keys(&partition);
        let state: String = SCRIPTS
            .cancel
            .key(keys.job(&id))
            .key(keys.scheduled())
            .key(keys.cancel_requests())
            .key(keys.done())
            .key(keys.tenant_load())
            .arg(id.to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((!state.is_empty()).then_some((queue.logical(), state)))
    }

    /// Ids of running jobs whose cancellation was requested.
    pub async fn cancel_requests(
        &self,
        queue: impl Into<QueueName>,
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys(&queue).cancel_requests())
            .query_async(&mut self.conn.clone())
            .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }

    /// A page of dead letters, newest first; of one tenant when given (then
    /// `total` counts that tenant's among the newest
    /// [`crate::browse::MAX_SCAN`] dead letters of the queue).
    pub async fn dead_letters(
        &self,
        queue: impl Into<QueueName>,
        tenant: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<DeadPage, QueueError> {
        let queue = queue.into();
        let partitions = self.partitions(&queue).await?;
        if partitions.len() > 1 {
            return self
                .split_dead_letters(&partitions, tenant, offset, limit)
                .await;
        }
        let keys = self.keys(&queue);
        if let Some(tenant) = tenant {
            let ids: Vec<String> = redis::cmd("ZREVRANGE")
                .arg(keys.dead())
                .arg(0)
                .arg(crate::browse::MAX_SCAN as i64 - 1)
                .query_async(&mut self.conn.clone())
                .await?;
            let ids = ids
                .iter()
                .map(|s| parse_id(s))
                .collect::<Result<Vec<_>, _>>()?;
            let owned = self.owned(&queue, tenant, &ids).await?;
            let mut jobs = Vec::new();
            for id in owned.iter().skip(offset).take(limit) {
                if let Some(job) = self.job(&queue, *id).await? {
                    jobs.push(job);
                }
            }
            return Ok(DeadPage {
                total: owned.len() as u64,
                jobs,
            });
        }
        let (ids, total): (Vec<String>, u64) = redis::pipe()
            .cmd("ZREVRANGE")
            .arg(keys.dead())
            .arg(offset)
            .arg((offset + limit).saturating_sub(1) as i64)
            .cmd("ZCARD")
            .arg(keys.dead())
            .query_async(&mut self.conn.clone())
            .await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.job(&queue, parse_id(&id)?).await? {
                jobs.push(job);
            }
        }
        Ok(DeadPage { total, jobs })
    }

    /// [`Self::dead_letters`] of a split queue: each partition's newest
    /// (`offset + limit`, or [`crate::browse::MAX_SCAN`] for one tenant),
    /// merged newest first.
    async fn split_dead_letters(
        &self,
        partitions: &[QueueName],
        tenant: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<DeadPage, QueueError> {
        let want = match tenant {
            Some(_) => crate::browse::MAX_SCAN,
            None => offset + limit,
        };
        let mut newest: Vec<(f64, &QueueName, Uuid)> = Vec::new();
        let mut total = 0u64;
        for partition in partitions {
            let dead = self.keys(partition).dead();
            let (ids, count): (Vec<(String, f64)>, u64) = redis::pipe()
                .cmd("ZREVRANGE")
                .arg(&dead)
                .arg(0)
                .arg(want.saturating_sub(1) as i64)
                .arg("WITHSCORES")
                .cmd("ZCARD")
                .arg(&dead)
                .query_async(&mut self.conn.clone())
                .await?;
            let mut scored = Vec::with_capacity(ids.len());
            for (id, at) in ids {
                scored.push((at, partition, parse_id(&id)?));
            }
            if let Some(tenant) = tenant {
                let ids: Vec<Uuid> = scored.iter().map(|(_, _, id)| *id).collect();
                let owned = self.owned(partition, tenant, &ids).await?;
                scored.retain(|(_, _, id)| owned.contains(id));
                total += scored.len() as u64;
            } else {
                total += count;
            }
            newest.extend(scored);
        }
        newest.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut jobs = Vec::new();
        for (_, partition, id) in newest.into_iter().skip(offset).take(limit) {
            if let Some(job) = self.job(partition, id).await? {
                jobs.push(job);
            }
        }
        Ok(DeadPage { total, jobs })
    }

    /// Retries dead letters: back to the front of the queue with a fresh
    /// attempt budget. Returns how many of `ids` were dead letters.
    pub async fn retry_dead(
        &self,
        queue: impl Into<QueueName>,
        ids: &[Uuid],
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        self.dead_action(&queue, "retry", ids).await
    }

    /// Forgets dead letters (their Postgres records stay).
    pub async fn purge_dead(
        &self,
        queue: impl Into<QueueName>,
        ids: &[Uuid],
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        self.dead_action(&queue, "purge", ids).await
    }

    /// Retries (`retry`) or purges (`purge`) every dead letter of `queue`
    /// (of `tenant`, when given), 500 per script call so no call is long.
    pub async fn all_dead(
        &self,
        queue: impl Into<QueueName>,
        action: &str,
        tenant: Option<&str>,
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        let mut total = 0;
        for partition in self.partitions(&queue).await? {
            total += self.partition_all_dead(&partition, action, tenant).await?;
        }
        Ok(total)
    }

    async fn partition_all_dead(
        &self,
        queue: &QueueName,
        action: &str,
        tenant: Option<&str>,
    ) -> Result<usize, QueueError> {
        let mut total = 0;
        // Dead letters of other tenants stay; step over them.
        let mut skipped = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.keys(queue).dead())
                .arg(skipped)
                .arg(skipped + 499)
                .query_async(&mut self.conn.clone())
                .await?;
            if ids.is_empty() {
                return Ok(total);
            }
            let ids = ids
                .iter()
                .map(|s| parse_id(s))
                .collect::<Result<Vec<_>, _>>()?;
            let owned = match tenant {
                Some(t) => self.owned(queue, t, &ids).await?,
                None => ids.clone(),
            };
            skipped += ids.len() - owned.len();
            total += self.partition_dead_action(queue, action, &owned).await?;
        }
    }

    /// Those of `ids` whose job in the queue `queue` belongs to `tenant`.
    pub async fn owned(
        &self,
        queue: impl Into<QueueName>,
        tenant: &str,
        ids: &[Uuid],
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A split queue's jobs may be in any partition (a partition's name
        // names just that one).
        let partitions = match queue.partition_index() {
            0 => self.partitions(&queue).await?,
            _ => vec![queue],
        };
        let mut pipe = redis::pipe();
        for partition in &partitions {
            let keys = self.keys(partition);
            for id in ids {
                pipe.cmd("HGET").arg(keys.job(id)).arg("tenant");
            }
        }
        let tenants: Vec<Option<String>> = self.conn.query_spread(&pipe).await?;
        let default = hopper_shared::jobs::DEFAULT_TENANT;
        let of = |i: usize| {
            // One answer per partition; a job lives in one (a hash without a
            // tenant is the default tenant's).
            let mut answers = tenants.iter().skip(i).step_by(ids.len());
            match partitions.len() {
                1 => answers.any(|t| t.as_deref().unwrap_or(default) == tenant),
                _ => answers.any(|t| t.as_deref() == Some(tenant)),
            }
        };
        Ok(ids
            .iter()
            .enumerate()
            .filter(|(i, _)| of(*i))
            .map(|(_, id)| *id)
            .collect())
    }

    /// Retries or purges those of `ids` that are dead letters of `queue`
    /// (of any of its partitions).
    async fn dead_action(
        &self,
        queue: &QueueName,
        action: &str,
        ids: &[Uuid],
    ) -> Result<usize, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        if queue.partition_index() > 0 {
            return self.partition_dead_action(queue, action, ids).await;
        }
        let mut n = 0;
        for partition in self.partitions(queue).await? {
            n += self.partition_dead_action(&partition, action, ids).await?;
        }
        Ok(n)
    }

    async fn partition_dead_action(
        &self,
        queue: &QueueName,
        action: &str,
        ids: &[Uuid],
    ) -> Result<usize, QueueError> {
        let keys = self.keys(queue);
        let mut inv = SCRIPTS.dead.prepare_invoke();
        inv.key(keys.dead())
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .key(keys.tenant_load())
            .arg(keys.job_prefix())
            .arg(action);
        for id in ids {
            inv.arg(id.to_string());
        }
        let n: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(n as usize)
    }

    /// Registers a fresh `worker` id on the queue `queue`.
    pub async fn register(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
    ) -> Result<(), QueueError> {
        let queue = queue.into();
        self.beat(&queue, worker, true).await.map(|_| ())
    }

    /// Renews `worker`'s lease on the queue `queue`. False when it is no
    /// longer registered: it was presumed dead and its jobs were recovered,
    /// so it must stop what it runs and register under a new id.
    pub async fn heartbeat(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
    ) -> Result<bool, QueueError> {
        let queue = queue.into();
        self.beat(&queue, worker, false).await
    }

    async fn beat(
        &self,
        queue: &QueueName,
        worker: &WorkerId,
        fresh: bool,
    ) -> Result<bool, QueueError> {
        let alive: i64 = SCRIPTS
            .heartbeat
            .key(self.keys(queue).workers())
            .arg(worker.as_str())
            .arg(if fresh { "1" } else { "0" })
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(alive == 1)
    }

    /// Re-queues the jobs of workers silent for longer than `lease`;
    /// returns the ids this finished: dead-lettered (out of attempts) or
    /// cancelled (their cancellation had been asked for).
    pub async fn recover(
        &self,
        queue: impl Into<QueueName>,
        lease: Duration,
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let dead: Vec<String> = SCRIPTS
            .recover
            .key(keys.workers())
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.dead())
            .key(keys.wake())
            .key(keys.tenant_load())
            .key(keys.cancel_requests())
            .key(keys.done())
            .arg(keys.tag())
            .arg(lease.as_millis() as i64)
            .arg(16)
            .invoke_async(&mut self.conn.clone())
            .await?;
        dead.iter().map(|s| parse_id(s)).collect()
    }

    /// Forgets, on Redis' clock, dead letters older than the dead-letter
    /// retention and finished (succeeded or cancelled) jobs older than the
    /// queue's retention: out of their sets, their hashes deleted (Postgres
    /// keeps the records). At most `limit` of each per call.
    pub async fn trim(
        &self,
        queue: impl Into<QueueName>,
        limit: usize,
    ) -> Result<Trimmed, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        let (dead_letters, finished): (u64, u64) = SCRIPTS
            .trim
            .key(keys.dead())
            .key(keys.done())
            .arg(keys.job_prefix())
            .arg(if self.dead_retention.is_zero() {
                -1
            } else {
                ms(self.dead_retention)
            })
            .arg(ms(self.settings(&queue).retention))
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Trimmed {
            dead_letters,
            finished,
        })
    }

    /// Gives jobs claimed by `worker` back to the front of the queue: each
    /// `(id, lease)` only while that claim still holds it. `uncount`: their
    /// attempt never started, so it is not counted.
    pub async fn release(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        jobs: &[(Uuid, u64)],
        uncount: bool,
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        if jobs.is_empty() {
            return Ok(0);
        }
        let keys = self.keys(&queue);
        let mut inv = SCRIPTS.release.prepare_invoke();
        inv.key(keys.inflight(worker))
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .arg(keys.job_prefix())
            .arg(if uncount { "1" } else { "0" });
        for (id, lease) in jobs {
            inv.arg(id.to_string()).arg(*lease);
        }
        let n: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(n as usize)
    }

    /// Releases the strays in `worker`'s in-flight set: jobs it does not
    /// hold (`held`) whose claim is older than `min_age` (a younger one may
    /// still be on its way to the worker). Their attempt stays counted and
    /// their history says why. Returns their ids.
    pub async fn reconcile(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        held: &[Uuid],
        min_age: Duration,
    ) -> Result<Vec<Uuid>, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let mut inv = SCRIPTS.reconcile.prepare_invoke();
        inv.key(keys.inflight(worker))
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .arg(keys.job_prefix())
            .arg(worker.as_str())
            .arg(min_age.as_millis() as i64);
        for id in held {
            inv.arg(id.to_string());
        }
        let strays: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        strays.iter().map(|s| parse_id(s)).collect()
    }

    /// Removes `worker` from the queue `queue` and hands back whatever it
    /// still holds (attempts counted: they did start), in one script.
    /// `why` goes into each handed-back job's history. Returns how many.
    pub async fn deregister(
        &self,
        queue: impl Into<QueueName>,
        worker: &WorkerId,
        why: &str,
    ) -> Result<usize, QueueError> {
        let queue = queue.into();
        let keys = self.keys(&queue);
        let n: i64 = SCRIPTS
            .deregister
            .key(keys.workers())
            .key(keys.inflight(worker))
            .key(keys.pending(crate::Priority::High))
            .key(keys.pending(crate::Priority::Normal))
            .key(keys.wake())
            .arg(keys.job_prefix())
            .arg(worker.as_str())
            .arg(why)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(n as usize)
    }
}

/// `EVALSHA` of `script` with `keys` and `args`, as a command to pipeline.
fn evalsha(script: &redis::Script, keys: &[String], args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}

/// The one reply of a one-script [`QueueClient::eval_durably`], decoded.
fn single_reply<T: redis::FromRedisValue>(replies: Vec<redis::Value>) -> Result<T, QueueError> {
    decode(replies.into_iter().next().unwrap_or(redis::Value::Nil))
}

/// A reply decoded as `T`.
fn decode<T: redis::FromRedisValue>(reply: redis::Value) -> Result<T, QueueError> {
    redis::from_redis_value(reply).map_err(|e| QueueError::Redis(e.into()))
}

pub(crate) fn parse_id(s: &str) -> Result<Uuid, QueueError> {
    Uuid::parse_str(s).map_err(|e| QueueError::Corrupt {
        id: s.to_owned(),
        why: e.to_string(),
    })
}

/// Why a claim's reply is not a batch.
enum ClaimError {
    /// The worker must renew or register afresh.
    Evicted,
    Queue(QueueError),
}

impl From<QueueError> for ClaimError {
    fn from(e: QueueError) -> Self {
        ClaimError::Queue(e)
    }
}

fn parse_claim(raw: &[redis::Value]) -> Result<ClaimBatch, ClaimError> {
    let corrupt = |why: &str| QueueError::Corrupt {
        id: "<claim>".into(),
        why: why.into(),
    };
    let int = |v: &redis::Value| -> Result<i64, QueueError> {
        redis::from_redis_value_ref::<i64>(v).map_err(|e| corrupt(&e.to_string()))
    };
    let text = |v: &redis::Value| -> Result<String, QueueError> {
        redis::from_redis_value_ref::<String>(v).map_err(|e| corrupt(&e.to_string()))
    };
    let (first, rest) = raw.split_first().ok_or_else(|| corrupt("empty reply"))?;
    let next_due = int(first)?;
    if next_due == -2 {
        return Err(ClaimError::Evicted);
    }
    let (throttled, rest) = rest.split_first().ok_or_else(|| corrupt("no throttle"))?;
    let throttled = int(throttled)?;
    let (count, rest) = rest
        .split_first()
        .ok_or_else(|| corrupt("no expired count"))?;
    let count = int(count)?.max(0) as usize;
    if rest.len() < count {
        return Err(corrupt("truncated reply").into());
    }
    let (expired, rest) = rest.split_at(count);
    let expired = expired
        .iter()
        .map(|v| parse_id(&text(v)?))
        .collect::<Result<Vec<_>, _>>()?;
    let limit = |v: &redis::Value| -> Result<Option<Duration>, QueueError> {
        let ms = int(v)?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    };
    let mut jobs = Vec::with_capacity(rest.len() / CLAIMED_FIELDS);
    for c in rest.chunks(CLAIMED_FIELDS) {
        let [
            id,
            args,
            attempt,
            max,
            enq,
            priority,
            request_id,
            tenant,
            callback,
            lease,
            hard,
            soft,
            notify,
            backoff,
        ] = c
        else {
            return Err(corrupt("truncated reply").into());
        };
        let notify = text(notify)?;
        jobs.push(Claimed {
            id: parse_id(&text(id)?)?,
            args: text(args)?,
            attempt: int(attempt)? as u32,
            max_attempts: int(max)? as u32,
            enqueued_at_ms: int(enq)?,
            priority: if text(priority)? == "high" {
                crate::Priority::High
            } else {
                crate::Priority::Normal
            },
            request_id: Some(text(request_id)?).filter(|r| !r.is_empty()),
            tenant: text(tenant)?,
            callback_url: Some(text(callback)?).filter(|c| !c.is_empty()),
            lease: int(lease)? as u64,
            hard_time_limit: limit(hard)?,
            soft_time_limit: limit(soft)?,
            notify: if notify.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&notify).map_err(|e| corrupt(&format!("notify: {e}")))?)
            },
            backoff: crate::job::JobBackoff::decode(&text(backoff)?),
        });
    }
    Ok(ClaimBatch {
        jobs,
        expired,
        next_due_in: (next_due >= 0).then(|| Duration::from_millis(next_due as u64)),
        throttled_for: (throttled >= 0).then(|| Duration::from_millis(throttled as u64)),
    })
}

/// Fields per job in `claim.lua`'s reply.
const CLAIMED_FIELDS: usize = 14;

/// A per-job time limit as `push.lua` takes it: ms, at least 1; 0 for none.
fn limit_ms(limit: Option<Duration>) -> u64 {
    limit.map_or(0, |d| (d.as_millis() as u64).max(1))
}

pub(crate) fn record_from_hash(
    queue: &QueueName,
    id: Uuid,
    f: &HashMap<String, String>,
) -> Result<JobRecord, QueueError> {
    let corrupt = |why: String| QueueError::Corrupt {
        id: id.to_string(),
        why,
    };
    let int = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
    let state = f
        .get("state")
        .ok_or_else(|| corrupt("no state".into()))?
        .parse::<JobState>()
        .map_err(corrupt)?;
    let json = |k: &str| -> Result<Option<serde_json::Value>, QueueError> {
        f.get(k)
            .map(|v| serde_json::from_str(v))
            .transpose()
            .map_err(|e| corrupt(format!("{k}: {e}")))
    };
    let mut record = JobRecord {
        id,
        kind: queue.logical(),
        state,
        attempts: int("attempts").unwrap_or(0) as u32,
        max_attempts: int("max_attempts").unwrap_or(0) as u32,
        args: json("args")?.unwrap_or(serde_json::Value::Null),
        result: json("result")?,
        error: f.get("error").cloned(),
        worker: f.get("worker").cloned(),
        enqueued_at_ms: int("enqueued_at").unwrap_or(0),
        started_at_ms: int("started_at"),
        finished_at_ms: int("finished_at"),
        priority: f.get("priority").cloned(),
        request_id: f.get("request_id").cloned(),
        run_at_ms: int("run_at").filter(|&t| t > 0),
        lease: int("lease").unwrap_or(0) as u64,
        callback_url: f.get("callback").cloned(),
        // A report that does not parse is not worth failing the read for.
        progress: f.get("progress").and_then(|p| serde_json::from_str(p).ok()),
        notify: f.get("notify").and_then(|n| serde_json::from_str(n).ok()),
        tenant: f
            .get("tenant")
            .cloned()
            .unwrap_or_else(|| hopper_shared::jobs::DEFAULT_TENANT.to_owned()),
        history: match f.get("history") {
            // cjson encodes an empty table as an object.
            Some(h) if h != "{}" => {
                serde_json::from_str(h).map_err(|e| corrupt(format!("history: {e}")))?
            }
            _ => Vec::new(),
        },
    };
    // `ack.lua` leaves the successful attempt's entry to the reader: every
    // field of it is on the hash (older jobs carry it in their history).
    if record.state == JobState::Succeeded
        && record
            .history
            .last()
            .is_none_or(|h| h.outcome != JobState::Succeeded.as_str())
    {
        record.history.push(hopper_shared::jobs::AttemptRecord {
            attempt: record.attempts,
            worker: record.worker.clone(),
            started_at_ms: record.started_at_ms,
            finished_at_ms: record.finished_at_ms.unwrap_or(0),
            outcome: JobState::Succeeded.as_str().to_owned(),
            error: None,
        });
        let over = record.history.len().saturating_sub(HISTORY_KEPT);
        record.history.drain(..over);
    }
    Ok(record)
}

/// Attempts a job's history keeps (the newest; `history_with` in
/// `prelude.lua` keeps as many).
const HISTORY_KEPT: usize = 20;
