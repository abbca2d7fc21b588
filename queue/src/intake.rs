//! Intake: jobs made from messages that another system's producers left in
//! Redis lists (a Celery producer's kombu lists), each message leaving its
//! list in the very script that pushes its job.
//!
//! A reader [`QueueClient::intake_peek`]s the oldest messages of the lists
//! (most urgent list first, each oldest first; nothing is taken), works out
//! each message's job — its queue, arguments and options, which may be the
//! queue of a reader that dead-letters what it cannot run — and hands them
//! to [`QueueClient::intake`]: `intake.lua` pops each message from its
//! list's old end and, when it is the message peeked, pushes its job
//! (`push_job`, the body of `push.lua`), in order; at the first message
//! another reader took meanwhile it puts back what it popped instead and
//! stops. Wake tokens and tenants' counts are added once per queue per
//! batch. So a message is never in neither place, never
//! makes two jobs, and any number of readers may run.
//!
//! The foreign lists are not under a queue's hash tag: intake needs them on
//! the same Redis (not a Redis Cluster) as the queues.

use hopper_shared::QueueName;

use crate::{
    PushOptions, QueueClient, QueueError,
    client::{Pushed, parse_id},
    scripts::SCRIPTS,
};

/// One peeked message and the job it becomes.
#[derive(Debug, Clone)]
pub struct IntakeItem {
    /// Which of the lists it was peeked from (an index into them).
    pub list: usize,
    /// The message, as peeked.
    pub message: String,
    /// The queue of its job.
    pub queue: QueueName,
    /// The job's arguments.
    pub args: serde_json::Value,
    /// The job's options.
    pub opts: PushOptions,
}

impl QueueClient {
    /// The oldest messages of `lists`, at most `n` in all: the first list's
    /// oldest first, then the next list's, … (list index, message). Nothing
    /// is taken.
    pub async fn intake_peek(
        &self,
        lists: &[String],
        n: usize,
    ) -> Result<Vec<(usize, String)>, QueueError> {
        if n == 0 || lists.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for list in lists {
            pipe.cmd("LRANGE").arg(list).arg(-(n as i64)).arg(-1);
        }
        let all: Vec<Vec<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        let mut out = Vec::new();
        for (i, mut messages) in all.into_iter().enumerate() {
            // LPUSHed: the oldest is at the right end.
            messages.reverse();
            for m in messages {
                if out.len() == n {
                    return Ok(out);
                }
                out.push((i, m));
            }
        }
        Ok(out)
    }

    /// Jobs waiting (pending, either priority) in `queues`, in all.
    pub async fn pending_total(&self, queues: &[QueueName]) -> Result<u64, QueueError> {
        if queues.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for q in queues {
            let keys = self.keys(q);
            pipe.cmd("LLEN").arg(keys.pending(crate::Priority::Normal));
            pipe.cmd("LLEN").arg(keys.pending(crate::Priority::High));
        }
        let lens: Vec<u64> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(lens.iter().sum())
    }

    /// Takes `items` (peeked from `lists`, in the order peeked) and pushes
    /// their jobs, atomically, stopping at the first message no longer at
    /// its list's old end. Answers the jobs pushed, one per message taken, in
    /// order (`created` false: the job existed already, as for an
    /// idempotency key).
    pub async fn intake(
        &self,
        lists: &[String],
        items: &[IntakeItem],
    ) -> Result<Vec<Pushed>, QueueError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut parts = items
            .iter()
            .map(|item| self.push_parts(&item.queue, &item.args, &item.opts))
            .collect::<Result<Vec<_>, _>>()?;
        // Every key intake.lua touches is declared: the holders of unique
        // keys held until their job finishes are read first (push_job in
        // prelude.lua checks them; one changed meanwhile stops the batch).
        let held_until_finished: Vec<usize> = (0..parts.len())
            .filter(|&i| parts[i].1[19] == "finished")
            .collect();
        if !held_until_finished.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &held_until_finished {
                pipe.cmd("GET").arg(&parts[i].0[6]);
            }
            let holders: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
            for (&i, holder) in held_until_finished.iter().zip(holders) {
                if let Some(holder) = holder {
                    let (keys, argv) = &mut parts[i];
                    self.with_unique_holder(&items[i].queue, keys, argv, &holder);
                }
            }
        }
        let mut inv = SCRIPTS.intake.prepare_invoke();
        for list in lists {
            inv.key(list);
        }
        inv.arg(lists.len());
        for (item, (keys, argv)) in items.iter().zip(parts) {
            for k in keys {
                inv.key(k);
            }
            inv.arg(item.list + 1).arg(&item.message);
            for a in argv {
                inv.arg(a);
            }
        }
        let reply: Vec<redis::Value> = inv.invoke_async(&mut self.conn.clone()).await?;
        let corrupt = |why: &str| QueueError::Corrupt {
            id: "<intake>".into(),
            why: why.into(),
        };
        let mut pushed = Vec::new();
        for pair in reply.get(1..).unwrap_or_default().chunks(2) {
            let [id, created] = pair else {
                return Err(corrupt("truncated reply"));
            };
            let id: String =
                redis::from_redis_value_ref(id).map_err(|e| corrupt(&e.to_string()))?;
            let created: i64 =
                redis::from_redis_value_ref(created).map_err(|e| corrupt(&e.to_string()))?;
            pushed.push(Pushed {
                id: parse_id(&id)?,
                created: created == 1,
            });
        }
        Ok(pushed)
    }
}
