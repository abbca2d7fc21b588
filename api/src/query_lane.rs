//! The API's end of the query lane (`hopper_shared::query_lane`): a vector
//! search's query embedded by a worker on request, with no job.
//!
//! [`QueryLane::ask`] pushes the request on its model's lane — in one
//! script with the check that some worker listens there, so a request is
//! only ever pushed where it will be popped — then blocks on the request's
//! reply list for up to [`LANE_WAIT`]. Blocking needs a connection of its
//! own (a shared, multiplexed one would hold every other command behind
//! it), so waits take one from a pool of dedicated connections
//! (`deadpool`), created as needed and kept for the next search.
//!
//! Whatever goes wrong, the search does not fail here: with no listener, no
//! answer in time or Redis failing, [`Asked::NotAnswered`] sends the caller
//! to the durable path (an `embed` job), which is also where the tenant's
//! caps and the 30-second limit apply. Each outcome is counted in
//! `hopper_search_query_lane_total`.

use hopper_queue::{QueueClient, QueueError, RedisConn, now_ms};
use hopper_shared::{
    metrics as m,
    query_lane::{LANE_TTL, LANE_WAIT, LaneReply, LaneRequest, lane_key, listeners_key, reply_key},
};
use redis::Script;

/// Pushes the request (ARGV[2]) on the lane (KEYS[2], expiring after
/// ARGV[3] ms) if a listener (KEYS[1]) counts at ARGV[1]; 1 if pushed.
const PUSH_IF_LISTENED: &str = r"
if redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf') == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// Dedicated connections for blocking on replies.
struct Blocking {
    queue: QueueClient,
}

impl deadpool::managed::Manager for Blocking {
    type Type = RedisConn;
    type Error = QueueError;

    async fn create(&self) -> Result<RedisConn, QueueError> {
        self.queue.dedicated_connection(LANE_WAIT).await
    }

    async fn recycle(
        &self,
        _: &mut RedisConn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<QueueError> {
        // A connection that failed is never given back (see `wait`).
        Ok(())
    }
}

/// What the lane gave for one query.
#[derive(Debug, PartialEq)]
pub enum Asked {
    /// A worker's vector.
    Answered(Vec<f32>),
    /// A worker's engine refused the text; the message says why.
    Failed(String),
    /// No answer: ask by an `embed` job.
    NotAnswered,
}

/// The lane client; cheap to clone.
#[derive(Clone)]
pub struct QueryLane {
    queue: QueueClient,
    blocking: deadpool::managed::Pool<Blocking>,
    push: Script,
    enabled: bool,
}

/// Replies waited for at once on one API replica, at most; more searches
/// wait for a connection (within their [`LANE_WAIT`]).
const MAX_WAITING: usize = 256;

impl QueryLane {
    /// A client on `queue`'s Redis; `enabled: false` answers
    /// [`Asked::NotAnswered`] to every query (`HOPPER_SEARCH_QUERY_LANE`).
    pub fn new(queue: QueueClient, enabled: bool) -> Self {
        let blocking = deadpool::managed::Pool::builder(Blocking {
            queue: queue.clone(),
        })
        .max_size(MAX_WAITING)
        .build()
        .expect("a pool without timeouts needs no runtime");
        Self {
            queue,
            blocking,
            push: Script::new(PUSH_IF_LISTENED),
            enabled,
        }
    }

    /// Asks a worker serving `model` (`name@version`) for `text`'s vector.
    #[tracing::instrument(name = "query_lane.ask", skip_all, fields(model))]
    pub async fn ask(&self, model: &str, text: &str) -> Asked {
        if !self.enabled {
            return Asked::NotAnswered;
        }
        let (asked, outcome) = match self.try_ask(model, text).await {
            Ok(Some(LaneReply::Vector(v))) => (Asked::Answered(v), "answered"),
            Ok(Some(LaneReply::Failed(e))) => (Asked::Failed(e), "failed"),
            Ok(None) => (Asked::NotAnswered, "timeout"),
            Err(Unanswered::NoListener) => (Asked::NotAnswered, "no_listener"),
            Err(Unanswered::Redis(e)) => {
                tracing::warn!("query lane unavailable, asking by a job: {e}");
                (Asked::NotAnswered, "error")
            }
        };
        metrics::counter!(m::SEARCH_QUERY_LANE, "outcome" => outcome).increment(1);
        asked
    }

    /// The reply, or `None` when none came within [`LANE_WAIT`].
    async fn try_ask(&self, model: &str, text: &str) -> Result<Option<LaneReply>, Unanswered> {
        let prefix = self.queue.prefix();
        let now = now_ms();
        let request = LaneRequest {
            id: uuid::Uuid::new_v4(),
            text: text.to_owned(),
            deadline_ms: now + LANE_WAIT.as_millis() as i64,
        };
        let pushed: i64 = self
            .push
            .key(listeners_key(prefix, model))
            .key(lane_key(prefix, model))
            .arg(now)
            .arg(request.encode())
            .arg(LANE_TTL.as_millis() as i64)
            .invoke_async(&mut self.queue.connection())
            .await
            .map_err(|e| Unanswered::Redis(e.to_string()))?;
        if pushed == 0 {
            return Err(Unanswered::NoListener);
        }
        self.wait(&reply_key(prefix, request.id)).await
    }

    /// Blocks on `reply` for up to [`LANE_WAIT`] on a pooled connection.
    async fn wait(&self, reply: &str) -> Result<Option<LaneReply>, Unanswered> {
        let mut conn = self
            .blocking
            .get()
            .await
            .map_err(|e| Unanswered::Redis(e.to_string()))?;
        let popped = redis::cmd("BLPOP")
            .arg(reply)
            .arg(LANE_WAIT.as_secs_f64())
            .query_async::<Option<(String, Vec<u8>)>>(&mut *conn)
            .await;
        match popped {
            Ok(None) => Ok(None),
            Ok(Some((_, raw))) => LaneReply::decode(&raw).map(Some).map_err(Unanswered::Redis),
            Err(e) => {
                // Not given back: its state after an error is unknown.
                let _ = deadpool::managed::Object::take(conn);
                Err(Unanswered::Redis(e.to_string()))
            }
        }
    }
}

/// Why a query went unanswered before its wait began.
enum Unanswered {
    NoListener,
    Redis(String),
}
