//! Where schedules live in Redis, and the one step that fires a tick.
//!
//! ```text
//! {<prefix>:schedules}                  HASH    schedule id -> its task (the index)
//! {<prefix>:<task>}:schedules           ZSET    schedule id -> next tick (Unix ms); a paused
//!                                               schedule is not there
//! {<prefix>:<task>}:schedule:<id>       STRING  the schedule (JSON, `Schedule`)
//! {<prefix>:<task>}:schedule:<id>:runs  LIST    its last 100 ticks handled, newest first
//! ```
//!
//! A schedule lives in its task's slot, so the script that fires a tick
//! (`fire.lua`) moves the schedule on, pushes the tick's job and records the
//! run in one step, on one Redis Cluster node. Which tick, whether it fires
//! and the tick after it are computed here in Rust (cron and time zones are
//! `hopper_shared::schedules`'); the script commits them only while the
//! schedule's score is still the tick that was read, so of any number of
//! schedulers racing on one tick exactly one handles it, and there is no
//! leader to elect. The tick's job id is derived from the schedule and the
//! tick too ([`Schedule::job_id`]), so even a second push could not make a
//! second job.
//!
//! Who calls [`QueueClient::fire_due_schedules`]: the scheduler loop
//! ([`crate::scheduler`]) in every API and worker process.

use std::collections::{BTreeMap, BTreeSet};

use hopper_shared::{
    QueueName, metrics as m,
    schedules::{RUNS_KEPT, Schedule, ScheduleRun},
};

use crate::{PushOptions, QueueClient, QueueError, scripts::SCRIPTS};

/// Due schedules handled per task per round (the rest wait for the next).
const DUE_PER_ROUND: usize = 100;

/// What one round of [`QueueClient::fire_due_schedules`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FireRound {
    /// Ticks this process fired (their jobs pushed).
    pub fired: usize,
    /// Ticks this process skipped (missed, with `missed: skip`).
    pub skipped: usize,
    /// Ticks another scheduler handled first.
    pub lost_races: usize,
    /// The earliest next tick of any active schedule (Unix ms), if any.
    pub next_due_ms: Option<i64>,
}

impl QueueClient {
    /// The index of every schedule: id → task.
    pub fn schedules_index_key(&self) -> String {
        format!("{{{}:schedules}}", self.prefix())
    }

    fn schedule_keys(&self, task: &QueueName, id: &str) -> [String; 3] {
        let tag = self.keys(task).tag().to_owned();
        [
            format!("{tag}:schedules"),
            format!("{tag}:schedule:{id}"),
            format!("{tag}:schedule:{id}:runs"),
        ]
    }

    /// Stores a new schedule (its spec validated by the caller, which also
    /// fills `created_at_ms`, `tenant` and `paused`) with its first tick.
    /// Answers false when a schedule of that id exists.
    pub async fn create_schedule(&self, schedule: &Schedule) -> Result<bool, QueueError> {
        let id = &schedule.spec.id;
        // The index names the id first; a leftover index entry whose
        // definition is gone (a create that died half-way) is taken over.
        let claimed: bool = redis::cmd("HSETNX")
            .arg(self.schedules_index_key())
            .arg(id)
            .arg(schedule.spec.task.as_str())
            .query_async(&mut self.conn.clone())
            .await?;
        if !claimed {
            if self.schedule(id).await?.is_some() {
                return Ok(false);
            }
            let _: () = redis::cmd("HSET")
                .arg(self.schedules_index_key())
                .arg(id)
                .arg(schedule.spec.task.as_str())
                .query_async(&mut self.conn.clone())
                .await?;
        }
        self.set_schedule(schedule, "create").await
    }

    /// Writes `schedule` in `mode` (`create` or `update`) with its next tick
    /// (none while paused).
    async fn set_schedule(&self, schedule: &Schedule, mode: &str) -> Result<bool, QueueError> {
        let next = if schedule.paused {
            None
        } else {
            next_tick(schedule, self.redis_now_ms())
        };
        let mut stored = schedule.clone();
        stored.next_fire_ms = None;
        let [zset, def, runs] = self.schedule_keys(&schedule.spec.task, &schedule.spec.id);
        let done: i64 = SCRIPTS
            .schedule_set
            .key(zset)
            .key(def)
            .key(runs)
            .arg(&schedule.spec.id)
            .arg(mode)
            .arg(serde_json::to_string(&stored)?)
            .arg(next.map(|n| n.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(done == 1)
    }

    /// The schedule `id`, with its next tick; `None` when there is none.
    pub async fn schedule(&self, id: &str) -> Result<Option<Schedule>, QueueError> {
        let task: Option<String> = redis::cmd("HGET")
            .arg(self.schedules_index_key())
            .arg(id)
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(task) = task.and_then(|t| QueueName::new(&t).ok()) else {
            return Ok(None);
        };
        Ok(self
            .read_schedules(&[(id.to_owned(), task)])
            .await?
            .pop()
            .flatten())
    }

    /// Every schedule, by id.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, QueueError> {
        let index: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.schedules_index_key())
            .query_async(&mut self.conn.clone())
            .await?;
        let wanted: Vec<(String, QueueName)> = index
            .into_iter()
            .filter_map(|(id, task)| QueueName::new(&task).ok().map(|t| (id, t)))
            .collect();
        Ok(self
            .read_schedules(&wanted)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Reads the definitions and next ticks of `wanted` (id, task), in one
    /// pipelined round trip; `None` for one that is gone.
    async fn read_schedules(
        &self,
        wanted: &[(String, QueueName)],
    ) -> Result<Vec<Option<Schedule>>, QueueError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, task) in wanted {
            let [zset, def, _] = self.schedule_keys(task, id);
            pipe.cmd("GET").arg(def).cmd("ZSCORE").arg(zset).arg(id);
        }
        let replies: Vec<(Option<String>, Option<f64>)> = self.conn.query_spread(&pipe).await?;
        replies
            .into_iter()
            .map(|(def, next)| {
                let Some(def) = def else { return Ok(None) };
                let mut schedule: Schedule = serde_json::from_str(&def)?;
                schedule.next_fire_ms = next.map(|n| n as i64);
                Ok(Some(schedule))
            })
            .collect()
    }

    /// Pauses (`true`) or resumes (`false`) the schedule `id`. A resumed
    /// schedule goes on from its next tick after now (ticks missed while
    /// paused are not fired). Answers the schedule as it now is.
    pub async fn pause_schedule(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<Option<Schedule>, QueueError> {
        let Some(mut schedule) = self.schedule(id).await? else {
            return Ok(None);
        };
        if schedule.paused != paused {
            schedule.paused = paused;
            if !self.set_schedule(&schedule, "update").await? {
                return Ok(None);
            }
        }
        self.schedule(id).await
    }

    /// Removes the schedule `id` and its runs (the jobs it submitted stay).
    /// Answers false when there was none.
    pub async fn remove_schedule(&self, id: &str) -> Result<bool, QueueError> {
        let Some(schedule) = self.schedule(id).await? else {
            return Ok(false);
        };
        let [zset, def, runs] = self.schedule_keys(&schedule.spec.task, id);
        let removed: i64 = SCRIPTS
            .schedule_set
            .key(zset)
            .key(def)
            .key(runs)
            .arg(id)
            .arg("remove")
            .arg("")
            .arg("")
            .invoke_async(&mut self.conn.clone())
            .await?;
        let _: () = redis::cmd("HDEL")
            .arg(self.schedules_index_key())
            .arg(id)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(removed == 1)
    }

    /// The last `n` runs of the schedule `id`, newest first; `None` when
    /// there is no such schedule.
    pub async fn schedule_runs(
        &self,
        id: &str,
        n: usize,
    ) -> Result<Option<Vec<ScheduleRun>>, QueueError> {
        let Some(schedule) = self.schedule(id).await? else {
            return Ok(None);
        };
        let [_, _, runs] = self.schedule_keys(&schedule.spec.task, id);
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(runs)
            .arg(0)
            .arg(n.clamp(1, RUNS_KEPT) as i64 - 1)
            .query_async(&mut self.conn.clone())
            .await?;
        raw.iter()
            .map(|r| serde_json::from_str(r).map_err(QueueError::from))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Handles every tick due now, of every schedule: for each, the latest
    /// due tick fires (or is skipped as missed) and the schedule moves on,
    /// exactly once across all the processes doing this (see the module
    /// docs). Answers what this process did and when the next tick falls.
    pub async fn fire_due_schedules(&self) -> Result<FireRound, QueueError> {
        // The tasks that have schedules (the index's values).
        let tasks: Vec<String> = redis::cmd("HVALS")
            .arg(self.schedules_index_key())
            .query_async(&mut self.conn.clone())
            .await?;
        let tasks: BTreeSet<QueueName> = tasks
            .iter()
            .filter_map(|t| QueueName::new(t).ok())
            .collect();
        let mut round = FireRound::default();
        if tasks.is_empty() {
            return Ok(round);
        }
        let now = self.redis_now_ms();
        let mut pipe = redis::pipe();
        for task in &tasks {
            let zset = format!("{}:schedules", self.keys(task).tag());
            pipe.cmd("ZRANGE")
                .arg(&zset)
                .arg("-inf")
                .arg(now)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(DUE_PER_ROUND)
                .arg("WITHSCORES");
            pipe.cmd("ZRANGE")
                .arg(&zset)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        // Two replies per task, read one by one: typed as pairs, a reply of
        // one member (`[id, score]`) would be taken for a pair of replies.
        let replies: Vec<Vec<(String, f64)>> = self.conn.query_spread(&pipe).await?;
        let mut replies = replies.into_iter();
        let mut due = Vec::new();
        for task in &tasks {
            let (Some(due_here), Some(first)) = (replies.next(), replies.next()) else {
                break;
            };
            if let Some((_, at)) = first.first() {
                // Due ones report their next tick once handled; a full page
                // means more are due: come back at once.
                let at = if due_here.len() == DUE_PER_ROUND {
                    now
                } else {
                    *at as i64
                };
                if at > now || due_here.len() == DUE_PER_ROUND {
                    round.next_due_ms = earliest(round.next_due_ms, at);
                }
            }
            for (id, at) in due_here {
                due.push((id, task.clone(), at as i64));
            }
        }
        if due.is_empty() {
            return Ok(round);
        }
        let wanted: Vec<(String, QueueName)> = due
            .iter()
            .map(|(id, t, _)| (id.clone(), t.clone()))
            .collect();
        let schedules = self.read_schedules(&wanted).await?;
        for ((id, task, due_ms), schedule) in due.into_iter().zip(schedules) {
            let Some(schedule) = schedule else { continue };
            match self.fire_one(&schedule, &task, due_ms).await {
                Ok(Handled::Fired(next)) => {
                    round.fired += 1;
                    round.next_due_ms =
                        next.map_or(round.next_due_ms, |n| earliest(round.next_due_ms, n));
                }
                Ok(Handled::Skipped(next)) => {
                    round.skipped += 1;
                    round.next_due_ms =
                        next.map_or(round.next_due_ms, |n| earliest(round.next_due_ms, n));
                }
                Ok(Handled::Lost) => round.lost_races += 1,
                Err(e) => tracing::warn!(schedule = %id, "schedule tick not handled: {e}"),
            }
        }
        Ok(round)
    }

    /// Handles the due tick `due_ms` of one schedule (`fire.lua`).
    async fn fire_one(
        &self,
        schedule: &Schedule,
        task: &QueueName,
        due_ms: i64,
    ) -> Result<Handled, QueueError> {
        let id = &schedule.spec.id;
        let timing = match schedule.spec.validate(schedule.created_at_ms) {
            Ok(t) => t,
            Err(e) => {
                // Stored by an older version with other rules: leave it be.
                tracing::error!(schedule = %id, "stored schedule no longer valid: {e}");
                return Ok(Handled::Lost);
            }
        };
        let now = self.redis_now_ms();
        let decision = schedule.decide(&timing, due_ms, now);
        let job_id = schedule.job_id(self.prefix(), decision.tick_ms);
        let run = ScheduleRun {
            tick_ms: decision.tick_ms,
            handled_at_ms: now,
            job_id: decision.fire.then_some(job_id),
            outcome: if decision.fire { "fired" } else { "skipped" }.into(),
        };
        let opts = PushOptions {
            id: Some(job_id),
            tenant: Some(schedule.tenant.clone()),
            request_id: Some(format!("schedule:{id}:{}", decision.tick_ms)),
            ..Default::default()
        };
        let (push_keys, push_args) =
            self.push_parts(task, &schedule.args_at(decision.tick_ms), &opts)?;
        let [zset, _, runs] = self.schedule_keys(task, id);
        let mut inv = SCRIPTS.fire.prepare_invoke();
        inv.key(zset).key(runs);
        for k in push_keys {
            inv.key(k);
        }
        inv.arg(id)
            .arg(due_ms)
            .arg(decision.next_ms.map(|n| n.to_string()).unwrap_or_default())
            .arg(serde_json::to_string(&run)?)
            .arg(RUNS_KEPT)
            .arg(if decision.fire { "1" } else { "0" });
        for a in push_args {
            inv.arg(a);
        }
        let reply: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
        if reply.first() != Some(&1) {
            return Ok(Handled::Lost);
        }
        let outcome = if decision.fire { "fired" } else { "skipped" };
        metrics::counter!(m::SCHEDULE_TICKS, "outcome" => outcome).increment(1);
        if decision.fire {
            metrics::histogram!(m::SCHEDULE_FIRE_LAG_SECONDS)
                .record((now - decision.tick_ms).max(0) as f64 / 1000.0);
            tracing::info!(schedule = %id, task = %task, tick_ms = decision.tick_ms, job = %job_id, "schedule fired");
            Ok(Handled::Fired(decision.next_ms))
        } else {
            tracing::warn!(schedule = %id, tick_ms = decision.tick_ms, "missed schedule tick skipped");
            Ok(Handled::Skipped(decision.next_ms))
        }
    }
}

/// How one tick went for this process.
enum Handled {
    Fired(Option<i64>),
    Skipped(Option<i64>),
    Lost,
}

fn earliest(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The first tick of `schedule` after `now_ms`.
fn next_tick(schedule: &Schedule, now_ms: i64) -> Option<i64> {
    schedule
        .spec
        .validate(schedule.created_at_ms)
        .ok()
        .and_then(|t| t.next_after(now_ms))
}
