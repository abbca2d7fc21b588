//! Where a partitioned queue's partitions live: which Redis Cluster master
//! serves each one, and whether they spread over the masters.
//!
//! Each partition of a queue (see [`crate::partitions`]) has a hash tag of
//! its own, so it lives in the slot of that tag, and the slot's master is
//! whichever master owns it — CRC16 luck, since slot ownership is the
//! operator's, not Hopper's: three partitions may well land on two of three
//! masters. [`QueueClient::placement`] shows it (`GET
//! /v1/queues/{queue}/placement`, `hopper queues placement`): for every
//! partition the queue ever had, its hash tag's slot (Redis' CRC16, the same
//! hash [`crate::partitions::partition_for_key`] routes by) and the master
//! owning that slot (address and node id, from `CLUSTER NODES`), then how
//! many masters the partitions use of how many there are, and `spread`:
//! false when two partitions share a master while another master holds
//! none. `scripts/cluster-spread` moves the slots that are not spread to
//! masters that hold none, with Redis' own live resharding (nothing is lost:
//! while a slot moves, a script touching it is redirected with `ASK` or
//! told `TRYAGAIN`, and the client tries again; see
//! [`crate::connection`]). On one Redis server every partition is on the
//! server, and the placement is trivially spread.
//!
//! The parser of `CLUSTER NODES` lives here ([`parse_cluster_nodes`]) and is
//! shared with the benchmarks, which list a cluster's nodes the same way.

use std::collections::BTreeMap;

use hopper_shared::QueueName;
use serde::Serialize;

use crate::{QueueClient, QueueError, partitions::partition_for_key};

/// Slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16_384;

/// Where one partition lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionPlace {
    /// The partition's number (0 is the queue's own keys).
    pub partition: u16,
    /// The partition's name (`<queue>`, `<queue>~k`).
    pub name: QueueName,
    /// The Redis Cluster slot of its hash tag.
    pub slot: u16,
    /// `host:port` of the master serving the slot (`the server` on one
    /// Redis server; `none` when no master serves it).
    pub master: String,
    /// That master's node id (`null` on one Redis server or when none).
    pub node_id: Option<String>,
}

/// Where every partition of a queue lives, and whether they spread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Placement {
    /// The queue.
    pub queue: QueueName,
    /// Every partition claims and lookups cover, in order.
    pub partitions: Vec<PartitionPlace>,
    /// Masters serving at least one partition.
    pub masters_used: usize,
    /// Masters in the cluster (1 on one Redis server).
    pub masters: usize,
    /// False when partitions share a master while another master serves
    /// none of them (`scripts/cluster-spread` moves them).
    pub spread: bool,
}

/// One node as `CLUSTER NODES` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its node id.
    pub id: String,
    /// `host:port` (the cluster bus port left out).
    pub addr: String,
    /// A master (else a replica).
    pub master: bool,
    /// Marked failed (`fail`, `fail?`) or without an address (`noaddr`).
    pub failed: bool,
    /// The slot ranges it serves (inclusive), masters only.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// Whether it serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
    }
}

/// The nodes of a `CLUSTER NODES` answer, in its order. Slots in migration
/// (`[slot->-node]`, `[slot-<-node]`) are not ranges and are skipped: the
/// slot still belongs to the node that lists it as a plain number or range.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (id, addr, flags) = (f.first()?, f.get(1)?, f.get(2)?);
            let addr = addr.split('@').next().unwrap_or(addr);
            // Redis 7 may append `,hostname` to the address.
            let addr = addr.split(',').next().unwrap_or(addr);
            let master = flags.split(',').any(|x| x == "master");
            let failed = flags
                .split(',')
                .any(|x| x == "fail" || x == "fail?" || x == "noaddr");
            let slots = f
                .iter()
                .skip(8)
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
                    None => r.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(ClusterNode {
                id: (*id).to_owned(),
                addr: addr.to_owned(),
                master,
                failed,
                slots,
            })
        })
        .collect()
}

/// The Redis Cluster slot of `key`: CRC16 of its hash tag (the part between
/// the first `{` and the next `}`, when not empty) or else of the whole key,
/// modulo 16,384 — what `CLUSTER KEYSLOT` answers.
pub fn key_slot(key: &str) -> u16 {
    let tagged = key.find('{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.find('}')?;
        (close > 0).then(|| &rest[..close])
    });
    partition_for_key(tagged.unwrap_or(key), CLUSTER_SLOTS)
}

/// The placement of `partitions` (names, in order, with their hash tags)
/// over `nodes`, the cluster's nodes (`None`: one Redis server).
pub fn place(
    queue: &QueueName,
    partitions: &[(QueueName, String)],
    nodes: Option<&[ClusterNode]>,
) -> Placement {
    let masters: Vec<&ClusterNode> = nodes
        .unwrap_or_default()
        .iter()
        .filter(|n| n.master && !n.failed)
        .collect();
    let mut per_master: BTreeMap<String, usize> = BTreeMap::new();
    let places: Vec<PartitionPlace> = partitions
        .iter()
        .enumerate()
        .map(|(k, (name, tag))| {
            let slot = key_slot(tag);
            let (master, node_id) = match nodes {
                None => ("the server".to_owned(), None),
                Some(_) => match masters.iter().find(|m| m.serves(slot)) {
                    Some(m) => (m.addr.clone(), Some(m.id.clone())),
                    None => ("none".to_owned(), None),
                },
            };
            *per_master.entry(master.clone()).or_default() += 1;
            PartitionPlace {
                partition: k as u16,
                name: name.clone(),
                slot,
                master,
                node_id,
            }
        })
        .collect();
    let (masters_used, masters) = match nodes {
        None => (1, 1),
        Some(_) => (
            places
                .iter()
                .filter(|p| p.node_id.is_some())
                .map(|p| &p.master)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            masters.len(),
        ),
    };
    let shared = per_master.values().any(|&n| n > 1);
    let spread = !(shared && masters_used < masters);
    Placement {
        queue: queue.clone(),
        partitions: places,
        masters_used,
        masters,
        spread,
    }
}

impl QueueClient {
    /// Where every partition of `queue` lives (see the module docs): on a
    /// cluster, the masters' view of slot ownership (`CLUSTER NODES`, asked
    /// of whichever node the connection picks).
    pub async fn placement(&self, queue: &QueueName) -> Result<Placement, QueueError> {
        let queue = queue.logical();
        let parts: Vec<(QueueName, String)> = self
            .partitions(&queue)
            .await?
            .into_iter()
            .map(|p| {
                let tag = self.keys(p.clone()).tag().to_owned();
                (p, tag)
            })
            .collect();
        if !self.is_cluster() {
            return Ok(place(&queue, &parts, None));
        }
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.conn.clone())
            .await?;
        let nodes = parse_cluster_nodes(&text);
        Ok(place(&queue, &parts, Some(&nodes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c3 127.0.0.1:7101@17101 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:7102@17102 master - 0 1 2 connected 5461-10922 [93->-07c3]
292f 127.0.0.1:7103@17103,host-c master - 0 1 3 connected 10923-16383
e7d1 127.0.0.1:7104@17104 slave 07c3 0 1 1 connected
aaaa 127.0.0.1:7105@17105 master,fail - 0 1 4 disconnected
";

    #[test]
    fn cluster_nodes_are_parsed_with_their_slots() {
        let nodes = parse_cluster_nodes(NODES);
        assert_eq!(nodes.len(), 5);
        assert_eq!(nodes[0].addr, "127.0.0.1:7101");
        assert_eq!(nodes[1].slots, [(5461, 10922)]);
        assert_eq!(nodes[2].addr, "127.0.0.1:7103");
        assert!(!nodes[3].master && nodes[3].slots.is_empty());
        assert!(nodes[4].failed);
        assert!(nodes[0].serves(0) && nodes[0].serves(5460) && !nodes[0].serves(5461));
    }

    #[test]
    fn a_slot_is_the_crc16_of_the_hash_tag() {
        // Redis' own examples (CLUSTER KEYSLOT).
        assert_eq!(key_slot("somekey"), 11058);
        assert_eq!(key_slot("foo{hash_tag}"), key_slot("hash_tag"));
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), 8363, "an empty tag: the whole key");
        assert_eq!(key_slot("123456789"), 12739);
    }

    #[test]
    fn partitions_sharing_a_master_while_another_holds_none_are_not_spread() {
        let nodes = parse_cluster_nodes(NODES);
        let q = QueueName::new("q").unwrap();
        let tag_in = |lo: u16, hi: u16| -> String {
            (0..)
                .map(|i| format!("{{x{i}}}"))
                .find(|t| (lo..=hi).contains(&key_slot(t)))
                .unwrap()
        };
        let two_on_one = [
            (q.partition(0), tag_in(0, 5460)),
            (q.partition(1), tag_in(0, 5460)),
            (q.partition(2), tag_in(10923, 16383)),
        ];
        let p = place(&q, &two_on_one, Some(&nodes));
        assert_eq!((p.masters_used, p.masters, p.spread), (2, 3, false));
        assert_eq!(p.partitions[2].master, "127.0.0.1:7103");
        assert_eq!(p.partitions[0].node_id.as_deref(), Some("07c3"));
        let spread = [
            (q.partition(0), tag_in(0, 5460)),
            (q.partition(1), tag_in(5461, 10922)),
            (q.partition(2), tag_in(10923, 16383)),
        ];
        let p = place(&q, &spread, Some(&nodes));
        assert_eq!((p.masters_used, p.masters, p.spread), (3, 3, true));
        // One server: everything on it.
        let p = place(&q, &two_on_one, None);
        assert_eq!((p.masters_used, p.masters, p.spread), (1, 1, true));
        assert_eq!(p.partitions[1].master, "the server");
    }
}
