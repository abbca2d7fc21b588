//! The worker's end of the query lane (`hopper_shared::query_lane`): search
//! queries embedded on request, with no job.
//!
//! An embed worker listens on the lane of every model it serves: it blocks
//! on those lists (one dedicated connection), and each request it pops is
//! answered by a task of its own — the text goes into the engine (the API
//! read the embedding cache before it asked; the answer is written there
//! for the next asker), whose inference loop pools it with whatever
//! else waits (other queries, document batches), so concurrent queries
//! share forward passes. At most [`IN_FLIGHT`] requests are being answered
//! at once; past that the worker stops popping and the requests wait in the
//! lane for it or another worker. Every [`LISTENER_RENEW`] the worker renews
//! its place among each lane's listeners, which is how the API knows that a
//! request will be answered; it takes that place back when it stops.
//!
//! A request found past its deadline is dropped (its asker has already
//! asked by an `embed` job); one that does not decode is dropped and
//! logged. Redis errors never end the loop: it reconnects at the pace of
//! `retry_policy::redis_reconnect`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use hopper_queue::{RedisConn, now_ms};
use hopper_shared::{
    metrics as m,
    query_lane::{
        LISTENER_RENEW, LISTENER_TTL, LaneReply, LaneRequest, REPLY_TTL, lane_key, listeners_key,
        reply_key,
    },
    retry_policy::{self, Pauses},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::stages::Pipeline;
use crate::embed::{Embedder, ModelRegistry};

/// Requests answered at once, at most.
pub const IN_FLIGHT: usize = 64;
/// Longest block on the lanes: how late the listener renewal can be.
const BLOCK: Duration = Duration::from_secs(1);

/// Starts listening on the lanes of every model of `models` until `stop`.
pub fn spawn(
    pipeline: Pipeline,
    models: Arc<ModelRegistry>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let prefix = pipeline.queue.prefix().to_owned();
    let lanes: HashMap<String, Embedder> = models
        .models()
        .iter()
        .map(|e| (lane_key(&prefix, e.version()), e.clone()))
        .collect();
    let listeners: Vec<String> = models
        .models()
        .iter()
        .map(|e| listeners_key(&prefix, e.version()))
        .collect();
    let listener = Listener {
        pipeline: Arc::new(pipeline),
        lanes: Arc::new(lanes),
        listeners,
        me: uuid::Uuid::new_v4().to_string(),
        slots: Arc::new(Semaphore::new(IN_FLIGHT)),
    };
    tokio::spawn(async move { listener.run(stop).await })
}

/// One worker's listening, on all its models' lanes.
struct Listener {
    pipeline: Arc<Pipeline>,
    /// Each lane's key and the model that answers it.
    lanes: Arc<HashMap<String, Embedder>>,
    /// The listener sets this worker joins.
    listeners: Vec<String>,
    /// This worker's name in those sets.
    me: String,
    slots: Arc<Semaphore>,
}

impl Listener {
    async fn run(self, stop: CancellationToken) {
        let mut pauses = Pauses::new(retry_policy::redis_reconnect());
        let mut conn: Option<RedisConn> = None;
        let mut renewed: Option<Instant> = None;
        tracing::info!(lanes = ?self.lanes.keys().collect::<Vec<_>>(), "query lane listening");
        let mut blpop = redis::cmd("BLPOP");
        for lane in self.lanes.keys() {
            blpop.arg(lane);
        }
        blpop.arg(BLOCK.as_secs_f64());
        while !stop.is_cancelled() {
            if renewed.is_none_or(|at| at.elapsed() >= LISTENER_RENEW) {
                match self.renew().await {
                    Ok(()) => renewed = Some(Instant::now()),
                    Err(e) => tracing::warn!("query lane: could not renew the listeners: {e}"),
                }
            }
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = stop.cancelled() => break,
            };
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.pipeline.queue.dedicated_connection(BLOCK).await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        tracing::warn!("query lane: no Redis connection: {e}");
                        pause(&mut pauses, &stop).await;
                        continue;
                    }
                },
            };
            let popped = tokio::select! {
                r = blpop.query_async::<Option<(String, Vec<u8>)>>(c) => r,
                _ = stop.cancelled() => break,
            };
            match popped {
                Ok(Some((lane, raw))) => {
                    pauses.reset();
                    self.answer_later(lane, raw, permit);
                }
                Ok(None) => pauses.reset(),
                Err(e) => {
                    tracing::warn!("query lane: {e}");
                    conn = None;
                    pause(&mut pauses, &stop).await;
                }
            }
        }
        if let Err(e) = self.leave().await {
            tracing::warn!("query lane: could not leave the listeners: {e}");
        }
    }

    /// Marks this worker listening for another [`LISTENER_TTL`], and drops
    /// listeners whose time ran out.
    async fn renew(&self) -> redis::RedisResult<()> {
        let now = now_ms();
        let until = now + LISTENER_TTL.as_millis() as i64;
        let mut pipe = redis::pipe();
        for key in &self.listeners {
            pipe.zadd(key, &self.me, until)
                .ignore()
                .zrembyscore(key, "-inf", now)
                .ignore()
                .pexpire(key, 2 * LISTENER_TTL.as_millis() as i64)
                .ignore();
        }
        pipe.query_async(&mut self.pipeline.queue.connection())
            .await
    }

    /// Takes this worker out of the listeners, so that no request waits for
    /// it once it stops.
    async fn leave(&self) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for key in &self.listeners {
            pipe.zrem(key, &self.me).ignore();
        }
        pipe.query_async(&mut self.pipeline.queue.connection())
            .await
    }

    /// Answers one popped request in a task of its own, holding `permit`.
    fn answer_later(&self, lane: String, raw: Vec<u8>, permit: OwnedSemaphorePermit) {
        let (pipeline, lanes) = (self.pipeline.clone(), self.lanes.clone());
        tokio::spawn(async move {
            let outcome = match lanes.get(&lane) {
                Some(embedder) => answer(&pipeline, embedder, &raw).await,
                None => "malformed",
            };
            metrics::counter!(m::QUERY_LANE_REQUESTS, "outcome" => outcome).increment(1);
            drop(permit);
        });
    }
}

/// Embeds one request's text and pushes the reply; the outcome's label.
#[tracing::instrument(name = "query_lane.answer", skip_all, fields(model = embedder.version()))]
async fn answer(pipeline: &Pipeline, embedder: &Embedder, raw: &[u8]) -> &'static str {
    let request = match LaneRequest::decode(raw) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("query lane: dropped {e}");
            return "malformed";
        }
    };
    if request.expired(now_ms()) {
        return "expired";
    }
    let (reply, outcome) = match pipeline.embed_and_cache(embedder, vec![request.text]).await {
        Ok(mut out) if !out.vectors.is_empty() => {
            (LaneReply::Vector(out.vectors.swap_remove(0)), "answered")
        }
        Ok(_) => (
            LaneReply::Failed("the engine returned no vector".into()),
            "failed",
        ),
        Err(e) => (LaneReply::Failed(e.to_string()), "failed"),
    };
    let key = reply_key(pipeline.queue.prefix(), request.id);
    let pushed = redis::pipe()
        .atomic()
        .rpush(&key, reply.encode())
        .ignore()
        .pexpire(&key, REPLY_TTL.as_millis() as i64)
        .ignore()
        .query_async::<()>(&mut pipeline.queue.connection())
        .await;
    if let Err(e) = pushed {
        // Its asker will ask by a job once its wait is over.
        tracing::warn!("query lane: reply not pushed: {e}");
    }
    outcome
}

/// Waits the next reconnect pause, or until `stop`.
async fn pause(pauses: &mut Pauses, stop: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(pauses.next_pause()) => {}
        _ = stop.cancelled() => {}
    }
}
