//! Lease tokens: the opaque string a claim hands a remote worker for each
//! job, and that its heartbeat, progress, complete and fail calls present.
//!
//! A token names everything the server needs to find and fence the
//! attempt: the queue, the worker id the job was claimed under, the job id
//! and the claim number (the lease the queue's scripts check). It is the
//! base64url (no padding) of `queue \n worker \n id \n lease`. It carries no
//! secret: knowing one lets a caller act only through a work key of the
//! worker's own tenant (the worker id names it, see [`worker_tenant`]), and
//! only while that attempt still holds the job.

use hopper_queue::WorkerId;
use hopper_shared::QueueName;
use uuid::Uuid;

/// One attempt of a job claimed by a remote worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    /// The job's queue.
    pub queue: QueueName,
    /// The worker id it was claimed under.
    pub worker: WorkerId,
    /// The job.
    pub id: Uuid,
    /// The claim number.
    pub lease: u64,
}

impl LeaseToken {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        let raw = format!(
            "{}\n{}\n{}\n{}",
            self.queue,
            self.worker.as_str(),
            self.id,
            self.lease
        );
        b64::encode(raw.as_bytes())
    }

    /// Reads a token; `None` for anything that is not one.
    pub fn decode(token: &str) -> Option<Self> {
        if token.len() > 1024 {
            return None;
        }
        let raw = String::from_utf8(b64::decode(token)?).ok()?;
        let mut parts = raw.split('\n');
        let queue = QueueName::parse_partition(parts.next()?).ok()?;
        let worker = parts.next().filter(|w| !w.is_empty())?;
        let id = Uuid::parse_str(parts.next()?).ok()?;
        let lease = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            queue,
            worker: WorkerId::from_raw(worker),
            id,
            lease,
        })
    }
}

/// Length of the random part that ends a remote worker id.
const SUFFIX_LEN: usize = 12;

/// A fresh remote worker id for `tenant`: `http-<tenant>-<12 hex>`.
pub fn new_worker(tenant: &str) -> WorkerId {
    let suffix = &Uuid::new_v4().simple().to_string()[..SUFFIX_LEN];
    WorkerId::from_raw(&format!("http-{tenant}-{suffix}"))
}

/// The tenant a remote worker id belongs to (`None`: not a remote worker's
/// id). Tenant names may hold `-`, so the tenant is what lies between the
/// `http-` prefix and the fixed-length random suffix.
pub fn worker_tenant(worker: &str) -> Option<&str> {
    let rest = worker.strip_prefix("http-")?;
    let cut = rest.len().checked_sub(SUFFIX_LEN + 1)?;
    let (tenant, suffix) = rest.split_at(cut);
    let hex = suffix.strip_prefix('-')?;
    (!tenant.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(tenant)
}

/// Base64url without padding (RFC 4648 §5), the token's outer form.
mod b64 {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    pub fn encode(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_anything_else() {
        let t = LeaseToken {
            queue: QueueName::new("resize").unwrap(),
            worker: new_worker("acme-eu"),
            id: Uuid::now_v7(),
            lease: 7,
        };
        let text = t.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(LeaseToken::decode(&text), Some(t));
        for bad in ["", "x", "!!!!", "aGVsbG8", &"A".repeat(2000)] {
            assert_eq!(LeaseToken::decode(bad), None, "{bad}");
        }
        let extra = b64::encode(b"q\nw\n00000000-0000-0000-0000-000000000000\n1\nmore");
        assert_eq!(LeaseToken::decode(&extra), None);
    }

    #[test]
    fn worker_ids_name_their_tenant() {
        let w = new_worker("a-b.c");
        assert_eq!(worker_tenant(w.as_str()), Some("a-b.c"));
        assert_eq!(worker_tenant("host-1-abcdef01"), None);
        assert_eq!(worker_tenant("http--0123456789ab"), None);
        assert_eq!(worker_tenant("http-t-0123456789zz"), None);
    }
}
