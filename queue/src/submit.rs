//! Submission: putting jobs into a queue, one at a time or in batches, and
//! queueing a finished job's callbacks (its signed webhook, its outbox entry
//! or its workflow's next step).
//!
//! A push picks the job's partition ([`crate::partitions`]) and runs
//! `push.lua` (one job: idempotency and unique keys, the tenant's caps) or
//! `push_batch.lua` (many jobs under the same options, the caps checked for
//! the whole batch first), through [`QueueClient::eval_durably`] so the
//! durability option covers it. [`QueueClient::push_parts`] builds
//! `push.lua`'s keys and arguments for the other scripts that push a job
//! inside their own step (`intake.lua`, `fire.lua`, workflows).

use std::time::Duration;

use hopper_shared::{QueueName, jobs::JobRecord};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    QueueClient, QueueError,
    client::{decode, evalsha, parse_id, single_reply},
    job::{MAX_DELAY, PushOptions},
    scripts::SCRIPTS,
};

/// Idempotency keys are remembered this long.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// At most this many wake tokens are kept per queue.
pub(crate) const WAKE_CAP: i64 = 10_000;
/// Jobs one `push_batch.lua` call creates at most (a script blocks its
/// node while it runs: ~2 ms at this size).
const PUSH_BATCH: usize = 500;
/// Where `push.lua`'s keys and arguments name the unique key's holder read
/// by the caller (KEYS[8], ARGV[25]).
pub(crate) const PUSH_HOLDER_KEY: usize = 7;
pub(crate) const PUSH_HOLDER_ARG: usize = 24;
/// Pushes of one unique job, at most, each naming the holder the previous
/// one answered (the holder changes only when a holder finishes and a new
/// job takes the key meanwhile).
const HOLDER_TRIES: usize = 5;

/// The outcome of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pushed {
    /// The job's id (the existing one when the idempotency key was seen).
    pub id: Uuid,
    /// False when an idempotency key matched an earlier submission.
    pub created: bool,
}

/// The queue of signed completion callbacks (the built-in `webhook` task).
pub const WEBHOOK_QUEUE: QueueName = QueueName::from_static("webhook");

impl QueueClient {
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
        let ((id, created), acked) = self.push_naming_holder(&partition, keys, argv).await?;
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
        // Unique jobs pushed one by one: their parts, in the order of the
        // pipelines' replies, for those asked again naming their holder.
        let mut unique_parts = Vec::new();
        for (part, jobs) in &groups {
            let mut evals = Vec::new();
            if opts.unique.is_some() {
                for (args, id) in jobs {
                    let (keys, argv) = self.push_parts_as(part, *id, given_ids, args, &opts)?;
                    evals.push(evalsha(&SCRIPTS.push, &keys, &argv));
                    unique_parts.push((*part, keys, argv));
                }
                pipelines.push((&SCRIPTS.push, evals));
                continue;
            }
            for chunk in jobs.chunks(PUSH_BATCH) {
                let (args0, id0) = chunk[0];
                let (keys, mut argv) = self.push_parts_as(part, id0, given_ids, args0, &opts)?;
                // push_batch.lua takes push.lua's first 24 arguments, then the jobs.
                argv.truncate(PUSH_HOLDER_ARG);
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
        let mut unique_replies = Vec::new();
        for (replies, acked) in sent {
            self.push_replicated(&queue, acked)?;
            if opts.unique.is_some() {
                unique_replies.extend(replies);
            }
        }
        for (reply, (part, keys, argv)) in unique_replies.into_iter().zip(unique_parts) {
            let (holder, created): (String, i64) = decode(reply)?;
            if created == 2 {
                let (mut keys, mut argv) = (keys, argv);
                self.with_unique_holder(part, &mut keys, &mut argv, &holder);
                let (_, acked) = self.push_naming_holder(part, keys, argv).await?;
                self.push_replicated(&queue, acked)?;
            }
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
                // The unique key's holder's hash, once read (see
                // `with_unique_holder`); until then the job's own, unused.
                keys.job(&id),
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
                opts.traceparent.clone().unwrap_or_default(),
                // The unique key's holder as read ('': not read).
                String::new(),
            ],
        ))
    }

    /// `push.lua`'s keys and arguments (of `push_parts`) naming `holder` as
    /// the unique key's holder read by the caller: its hash declared as
    /// KEYS[8] (a unique job held until finished checks its state).
    pub(crate) fn with_unique_holder(
        &self,
        queue: &QueueName,
        keys: &mut [String],
        argv: &mut [String],
        holder: &str,
    ) {
        keys[PUSH_HOLDER_KEY] = format!("{}{holder}", self.keys(queue).job_prefix());
        argv[PUSH_HOLDER_ARG] = holder.to_owned();
    }

    /// Runs `push.lua` with these keys and arguments; when a unique job's
    /// holder is not the one they name (created 2), again naming the holder
    /// it answered. The reply `(id, created)`.
    async fn push_naming_holder(
        &self,
        queue: &QueueName,
        mut keys: Vec<String>,
        mut argv: Vec<String>,
    ) -> Result<((String, i64), Option<u32>), QueueError> {
        for _ in 0..HOLDER_TRIES {
            let (replies, acked) = self
                .eval_durably(&SCRIPTS.push, vec![evalsha(&SCRIPTS.push, &keys, &argv)])
                .await?;
            let (id, created): (String, i64) = single_reply(replies)?;
            if created != 2 {
                return Ok(((id, created), acked));
            }
            self.with_unique_holder(queue, &mut keys, &mut argv, &id);
        }
        Err(QueueError::Corrupt {
            id: argv[0].clone(),
            why: format!("its unique key changed holder {HOLDER_TRIES} times while pushing"),
        })
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
}

/// A per-job time limit as `push.lua` takes it: ms, at least 1; 0 for none.
fn limit_ms(limit: Option<Duration>) -> u64 {
    limit.map_or(0, |d| (d.as_millis() as u64).max(1))
}
