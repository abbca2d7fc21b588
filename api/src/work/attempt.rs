//! The attempt a lease token names, read back from its job's hash: what
//! recording its outcome needs ([`hopper_queue::Attempt`]), and whether it
//! still holds the job.
//!
//! The read is a hint that saves work, one pipelined round trip for a whole
//! batch; the fence that counts is inside the queue's scripts, which check
//! the lease again when they write.

use std::{collections::HashMap, time::Duration};

use hopper_queue::{Attempt, Priority};
use hopper_shared::jobs::Notify;
use uuid::Uuid;

use super::token::{LeaseToken, worker_tenant};
use crate::{AppState, auth::Caller, error::ApiError};

/// The job fields read, in order.
const FIELDS: [&str; 15] = [
    "state",
    "lease",
    "worker",
    "attempts",
    "max_attempts",
    "enqueued_at",
    "started_at",
    "args",
    "priority",
    "request_id",
    "tenant",
    "callback",
    "notify",
    "hard_ms",
    "backoff",
];

/// What a token names now.
#[derive(Debug)]
pub(crate) enum Found {
    /// Its attempt runs and holds the job.
    Held(Box<HeldAttempt>),
    /// Its attempt already succeeded (a repeated complete).
    Succeeded,
    /// Its attempt lost the job: recovered, past its hard limit,
    /// cancelled, finished, or claimed again since.
    Stale,
    /// Not a token of the caller's tenant, or no such job.
    Unknown,
}

/// A running attempt, as its job's hash describes it.
#[derive(Debug)]
pub(crate) struct HeldAttempt {
    pub token: LeaseToken,
    args: String,
    attempt: u32,
    max_attempts: u32,
    enqueued_at_ms: i64,
    /// Unix ms (Redis' clock): the claim.
    pub started_at_ms: i64,
    priority: Priority,
    request_id: Option<String>,
    tenant: String,
    callback_url: Option<String>,
    notify: Option<Notify>,
    /// Its own hard time limit (given at submission), if any.
    pub hard_time_limit: Option<Duration>,
    /// A client asked for its cancellation.
    pub cancel_requested: bool,
    /// Its own retry backoff (given at submission), if any.
    backoff: Option<hopper_queue::JobBackoff>,
}

impl HeldAttempt {
    /// The view the outcome recorder takes.
    pub fn attempt(&self) -> Attempt<'_> {
        Attempt {
            id: self.token.id,
            queue: &self.token.queue,
            worker: &self.token.worker,
            lease: self.token.lease,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            enqueued_at_ms: self.enqueued_at_ms,
            started_at_ms: self.started_at_ms,
            args_json: &self.args,
            priority: self.priority,
            request_id: self.request_id.as_deref(),
            tenant: &self.tenant,
            callback_url: self.callback_url.as_deref(),
            notify: self.notify.as_ref(),
            cancel_requested: self.cancel_requested,
            backoff: self.backoff,
        }
    }
}

/// Parses `text` as a token the caller may use: of a worker of its tenant,
/// on a queue its key may serve (`None` otherwise).
pub(crate) fn parse(text: &str, caller: &Caller) -> Option<LeaseToken> {
    LeaseToken::decode(text).filter(|t| {
        worker_tenant(t.worker.as_str()) == Some(&*caller.tenant)
            && caller.may_serve(&t.queue.logical())
    })
}

/// Reads what each token names, in order, in one round trip.
pub(crate) async fn read(
    state: &AppState,
    tokens: &[Option<LeaseToken>],
) -> Result<Vec<Found>, ApiError> {
    let mut pipe = redis::pipe();
    let mut asked = 0;
    for token in tokens.iter().flatten() {
        let keys = state.queue.keys(&token.queue);
        pipe.cmd("HMGET").arg(keys.job(&token.id)).arg(&FIELDS[..]);
        pipe.cmd("SISMEMBER")
            .arg(keys.cancel_requests())
            .arg(token.id.to_string());
        asked += 1;
    }
    let replies: Vec<(Vec<Option<String>>, bool)> = if asked == 0 {
        Vec::new()
    } else {
        let raw: Vec<redis::Value> = state
            .queue
            .connection()
            .query_spread(&pipe)
            .await
            .map_err(ApiError::unavailable)?;
        raw.chunks(2)
            .map(|pair| {
                let fields = redis::from_redis_value_ref(&pair[0]).unwrap_or_default();
                let cancel = redis::from_redis_value_ref(&pair[1]).unwrap_or(false);
                (fields, cancel)
            })
            .collect()
    };
    let mut replies = replies.into_iter();
    Ok(tokens
        .iter()
        .map(|token| {
            let Some(token) = token else {
                return Found::Unknown;
            };
            let Some((fields, cancel)) = replies.next() else {
                return Found::Unknown;
            };
            classify(token, &fields, cancel)
        })
        .collect())
}

fn classify(token: &LeaseToken, f: &[Option<String>], cancel_requested: bool) -> Found {
    let get = |i: usize| f.get(i).and_then(|v| v.as_deref());
    let int = |i: usize| get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let Some(job_state) = get(0) else {
        return Found::Unknown;
    };
    let same_attempt =
        get(1) == Some(token.lease.to_string().as_str()) && get(2) == Some(token.worker.as_str());
    match job_state {
        "running" if same_attempt => Found::Held(Box::new(HeldAttempt {
            token: token.clone(),
            args: get(7).unwrap_or("null").to_owned(),
            attempt: int(3) as u32,
            max_attempts: int(4) as u32,
            enqueued_at_ms: int(5),
            started_at_ms: int(6),
            priority: if get(8) == Some("high") {
                Priority::High
            } else {
                Priority::Normal
            },
            request_id: get(9).filter(|r| !r.is_empty()).map(str::to_owned),
            tenant: get(10)
                .unwrap_or(hopper_shared::jobs::DEFAULT_TENANT)
                .to_owned(),
            callback_url: get(11).filter(|c| !c.is_empty()).map(str::to_owned),
            notify: get(12).and_then(|n| serde_json::from_str(n).ok()),
            hard_time_limit: (int(13) > 0).then(|| Duration::from_millis(int(13) as u64)),
            backoff: get(14).and_then(hopper_queue::JobBackoff::decode),
            cancel_requested,
        })),
        "succeeded" if same_attempt => Found::Succeeded,
        _ => Found::Stale,
    }
}

/// The ids of the tokens' jobs, for per-item answers (`None` for a text
/// that is no token of the caller's).
pub(crate) fn ids(tokens: &[Option<LeaseToken>]) -> Vec<Option<Uuid>> {
    tokens.iter().map(|t| t.as_ref().map(|t| t.id)).collect()
}

/// Groups indexes by a key, keeping first-seen order.
pub(crate) fn group<K: std::hash::Hash + Eq + Clone>(
    keys: impl IntoIterator<Item = K>,
) -> Vec<(K, Vec<usize>)> {
    let mut order: Vec<(K, Vec<usize>)> = Vec::new();
    let mut at: HashMap<K, usize> = HashMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        match at.get(&k) {
            Some(&slot) => order[slot].1.push(i),
            None => {
                at.insert(k.clone(), order.len());
                order.push((k, vec![i]));
            }
        }
    }
    order
}
