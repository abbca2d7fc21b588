//! The query lane: a search's query embedded by a worker without a job.
//!
//! A vector search cannot ask Postgres before its query has a vector, and
//! someone is waiting for the answer. A durable `embed` job is the wrong
//! tool for that: its push, two claim scripts, ack, job record (a Postgres
//! commit) and the API's polling of the job cost more than the model's
//! forward pass on one short text. The lane is the request/reply path
//! instead, over Redis alone, in the shape of Celery's RPC results:
//!
//! 1. the API pushes a [`LaneRequest`] on the lane of the model it needs
//!    (`name@version`), unless no worker listens there;
//! 2. a worker serving that model pops it (blocking,
//!    `worker/src/pipeline/query_lane.rs`), embeds the text in the engine's
//!    next forward pass — beside whatever else it embeds, through the same
//!    embedding cache — and pushes a [`LaneReply`] on the request's reply
//!    list;
//! 3. the API waits on that list (blocking, `api/src/query_lane.rs`).
//!
//! Nothing here is durable, and nothing needs to be: a request lost with a
//! worker is asked again as an `embed` job once the API has waited
//! [`LANE_WAIT`]; a worker drops a request found after its deadline
//! unanswered (its asker has given up on it); a reply nobody reads expires.
//!
//! Keys share one hash tag, so on a cluster the lane lives in one slot; the
//! `~` keeps that tag apart from every queue's (no queue name has one):
//! - `{<prefix>:~lane}:<model@version>` — LIST of requests, oldest first;
//! - `{<prefix>:~lane}:listeners:<model@version>` — ZSET of the workers
//!   listening on the lane, each scored by when its listening ends (unix
//!   ms): [`LISTENER_TTL`] after its last renewal, or at once when it stops;
//! - `{<prefix>:~lane}:reply:<request id>` — LIST of the one reply,
//!   expiring [`REPLY_TTL`] after it is pushed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::embeddings::{vector_from_bytes, vector_to_bytes};

/// How long the API waits on the lane before it asks by an `embed` job.
pub const LANE_WAIT: Duration = Duration::from_secs(5);
/// A listener counts this long after its last renewal.
pub const LISTENER_TTL: Duration = Duration::from_secs(5);
/// How often a listening worker renews its place among the listeners.
pub const LISTENER_RENEW: Duration = Duration::from_secs(1);
/// A reply nobody read is gone after this.
pub const REPLY_TTL: Duration = Duration::from_secs(30);
/// A lane nobody pushes to expires this long after its last request, so a
/// lane without listeners does not keep what was pushed while one was
/// thought alive.
pub const LANE_TTL: Duration = Duration::from_secs(60);

/// The hash tag every lane key carries.
fn tag(prefix: &str) -> String {
    format!("{{{prefix}:~lane}}")
}

/// The list of requests for `model` (`name@version`).
pub fn lane_key(prefix: &str, model: &str) -> String {
    format!("{}:{model}", tag(prefix))
}

/// The workers listening on `model`'s lane, by when they stop counting.
pub fn listeners_key(prefix: &str, model: &str) -> String {
    format!("{}:listeners:{model}", tag(prefix))
}

/// Where the reply to request `id` goes.
pub fn reply_key(prefix: &str, id: Uuid) -> String {
    format!("{}:reply:{id}", tag(prefix))
}

/// One query to embed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneRequest {
    /// Names the reply list ([`reply_key`]).
    pub id: Uuid,
    /// The query, as the search got it.
    pub text: String,
    /// Unix milliseconds after which nobody waits for the answer.
    pub deadline_ms: i64,
}

impl LaneRequest {
    /// The request as pushed on the lane.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a request always serialises")
    }

    /// A request popped from the lane; what no API wrote is an error.
    pub fn decode(raw: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(raw).map_err(|e| format!("not a lane request: {e}"))
    }

    /// Whether its asker has stopped waiting at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms > self.deadline_ms
    }
}

/// What a worker answers: the vector, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum LaneReply {
    /// The query's vector.
    Vector(Vec<f32>),
    /// The engine refused the text or failed; the message says why.
    Failed(String),
}

/// First byte of an encoded [`LaneReply::Vector`]; the f32s follow,
/// little-endian (as in the embedding cache).
const VECTOR: u8 = 0;
/// First byte of an encoded [`LaneReply::Failed`]; UTF-8 follows.
const FAILED: u8 = 1;

impl LaneReply {
    /// The reply as pushed on the reply list.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            LaneReply::Vector(v) => {
                let mut out = Vec::with_capacity(1 + v.len() * 4);
                out.push(VECTOR);
                out.extend(vector_to_bytes(v));
                out
            }
            LaneReply::Failed(message) => {
                let mut out = vec![FAILED];
                out.extend_from_slice(message.as_bytes());
                out
            }
        }
    }

    /// A reply read back; what no worker wrote is an error.
    pub fn decode(raw: &[u8]) -> Result<Self, String> {
        match raw.split_first() {
            Some((&VECTOR, rest)) if rest.len() % 4 == 0 => {
                Ok(LaneReply::Vector(vector_from_bytes(rest)))
            }
            Some((&FAILED, rest)) => Ok(LaneReply::Failed(String::from_utf8_lossy(rest).into())),
            _ => Err(format!("not a lane reply ({} bytes)", raw.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_tag_that_no_queue_can_have() {
        let id = Uuid::nil();
        assert_eq!(lane_key("hopper", "mini@abc"), "{hopper:~lane}:mini@abc");
        assert_eq!(
            listeners_key("hopper", "mini@abc"),
            "{hopper:~lane}:listeners:mini@abc"
        );
        assert_eq!(
            reply_key("hopper", id),
            "{hopper:~lane}:reply:00000000-0000-0000-0000-000000000000"
        );
        assert!(crate::QueueName::new("~lane").is_err());
    }

    #[test]
    fn requests_and_replies_read_back_as_written() {
        let r = LaneRequest {
            id: Uuid::new_v4(),
            text: "what is a glacier — ünïcode".into(),
            deadline_ms: 1_700_000_000_123,
        };
        assert_eq!(LaneRequest::decode(r.encode().as_bytes()).unwrap(), r);
        assert!(!r.expired(r.deadline_ms));
        assert!(r.expired(r.deadline_ms + 1));
        for reply in [
            LaneReply::Vector(vec![0.25, -1.5, 3.0]),
            LaneReply::Vector(Vec::new()),
            LaneReply::Failed("the model is gone".into()),
        ] {
            assert_eq!(LaneReply::decode(&reply.encode()).unwrap(), reply);
        }
    }

    #[test]
    fn what_no_peer_wrote_is_refused() {
        assert!(LaneRequest::decode(b"{\"text\": 1}").is_err());
        assert!(LaneReply::decode(b"").is_err());
        assert!(LaneReply::decode(&[VECTOR, 1, 2, 3]).is_err());
        assert!(LaneReply::decode(&[7, 1]).is_err());
    }
}
