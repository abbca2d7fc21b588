//! The intake pump: turns Celery messages in kombu's lists into Hopper jobs,
//! each message leaving its list in the script that pushes its job
//! (`hopper_queue::intake`: no window where a message is in neither place,
//! never two jobs for one message).
//!
//! Each round it peeks the oldest messages of every configured kombu queue
//! `q` — its four lists in kombu's order (priority steps 0, 3, 6, 9: `q`,
//! `q\x06\x163`, …), at most [`BATCH`] — works out each one's job
//! ([`Submitter::plan`]: the Celery id as the job's id, delay, expiry,
//! limits, where its result goes) and takes them in one script. A message
//! it cannot plan (pickle, an undeclared task, canvas, bad arguments)
//! becomes a job of `celery.intake` instead, whose handler publishes its
//! FAILURE and dead-letters it with the reason.
//!
//! With nothing to take it waits on the queue's bare list with
//! `BLMOVE q q RIGHT RIGHT`, which blocks until a message arrives and then
//! puts it back where it was (a rotation of one element onto the same end),
//! for at most [`IDLE_WAIT`]. While the tasks it feeds hold
//! `HOPPER_CELERY_LOOKAHEAD` waiting jobs it pauses, so under a backlog the
//! messages wait in kombu's lists and kombu's order of urgency decides what
//! runs next.
//!
//! Any number of pumps may run (one per worker with the bridge on): a
//! message another pump took first stops this pump's batch there. Redis
//! errors pause the pump with a capped backoff; the messages stay in
//! kombu's lists meanwhile.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use hopper_queue::{IntakeItem, ListEnd, PushOptions, QueueClient};
use hopper_shared::{
    QueueName, metrics as m,
    retry_policy::{self, Pauses},
};
use tokio_util::sync::CancellationToken;

use crate::{
    INTAKE_TASK,
    config::CeleryConfig,
    idle::{IdleWait, pause},
    submit::{IntakeArgs, Submitter},
};

/// Most messages taken per queue per round.
pub const BATCH: usize = 256;
/// Longest wait on an idle queue's bare list.
pub const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Pause while the tasks fed hold the lookahead.
const FULL_PAUSE: Duration = Duration::from_millis(5);

/// Runs the pump until `stop` fires.
pub async fn run_pump(
    client: QueueClient,
    config: Arc<CeleryConfig>,
    submitter: Submitter,
    stop: CancellationToken,
) {
    let lists: Vec<(String, Vec<String>)> = config
        .queues
        .iter()
        .map(|q| (q.clone(), config.sublists(q).to_vec()))
        .collect();
    tracing::info!(queues = ?config.queues, lookahead = config.lookahead, "Celery intake started");
    let mut fed: BTreeSet<QueueName> = BTreeSet::new();
    let mut idle = IdleWait::default();
    // 50 ms doubling to 5 s, reset after a good round (`retry_policy::redis_reconnect`).
    let mut backoff = Pauses::new(retry_policy::redis_reconnect());
    let mut turn = 0usize;
    while !stop.is_cancelled() {
        let fed_now: Vec<QueueName> = fed.iter().cloned().collect();
        // Take no more than the lookahead leaves room for.
        let room = match client.pending_total(&fed_now).await {
            Ok(waiting) if waiting >= config.lookahead as u64 => {
                pause(&stop, FULL_PAUSE).await;
                continue;
            }
            Ok(waiting) => config.lookahead - waiting as usize,
            Err(_) => config.lookahead,
        };
        let mut taken = 0;
        let mut failed = None;
        for (queue, sublists) in &lists {
            let n = room.saturating_sub(taken).min(BATCH);
            if n == 0 {
                break;
            }
            match take(&client, &submitter, queue, sublists, n, &mut fed).await {
                Ok(n) => taken += n,
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            let wait = backoff.next_pause();
            tracing::warn!("Celery intake failed, retrying in {wait:?}: {e}");
            pause(&stop, wait).await;
            idle.reset();
            continue;
        }
        backoff.reset();
        if taken > 0 {
            metrics::counter!(m::CELERY_MESSAGES_TAKEN).increment(taken as u64);
            continue;
        }
        // Nothing waits: block on one queue's bare list (in turn) until a
        // message arrives there, or for IDLE_WAIT.
        let bare = &lists[turn % lists.len()].1[0];
        turn = turn.wrapping_add(1);
        if let Err(e) = idle
            .until_element(&client, bare, ListEnd::Right, IDLE_WAIT, &stop)
            .await
        {
            let wait = backoff.next_pause();
            tracing::warn!("Celery intake cannot connect, retrying in {wait:?}: {e}");
            pause(&stop, wait).await;
        }
    }
    tracing::info!("Celery intake stopped");
}

/// One round on one kombu queue: peek, plan, take, at most `n` messages.
/// Answers how many were taken; adds the tasks fed to `fed`.
async fn take(
    client: &QueueClient,
    submitter: &Submitter,
    queue: &str,
    sublists: &[String],
    n: usize,
    fed: &mut BTreeSet<QueueName>,
) -> Result<usize, hopper_queue::QueueError> {
    let peeked = client.intake_peek(sublists, n).await?;
    if peeked.is_empty() {
        return Ok(0);
    }
    let mut items = Vec::with_capacity(peeked.len());
    for (list, message) in peeked {
        let item = match submitter.plan(&message).await? {
            Ok(plan) => {
                fed.insert(plan.queue.clone());
                IntakeItem {
                    list,
                    message,
                    queue: plan.queue,
                    args: plan.args,
                    opts: plan.opts,
                }
            }
            // The intake task's handler refuses it again: it publishes the
            // FAILURE and dead-letters it with the reason.
            Err(_) => IntakeItem {
                list,
                queue: INTAKE_TASK,
                args: serde_json::to_value(IntakeArgs {
                    source: queue.to_owned(),
                    message: message.clone(),
                })
                .unwrap_or_default(),
                message,
                opts: PushOptions {
                    tenant: Some(submitter.tenant().to_owned()),
                    ..Default::default()
                },
            },
        };
        items.push(item);
    }
    let pushed = client.intake(sublists, &items).await?;
    for (item, p) in items.iter().zip(&pushed) {
        tracing::debug!(queue, task = %item.queue, job = %p.id, created = p.created,
            "Celery message taken");
    }
    Ok(pushed.len())
}
