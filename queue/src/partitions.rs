//! Partitioned queues: one hot queue spread over a Redis Cluster's masters.
//!
//! Every key of a queue carries one hash tag, so each script runs on one
//! node — and a queue can never outgrow that node. A queue split into P
//! partitions (`HOPPER_QUEUE_<NAME>_PARTITIONS`, default 1) is P queues to
//! Redis: partition 0 is the queue's own name (so P = 1 is the plain queue,
//! key for key), partition k the name `<queue>~k` with a hash tag of its own
//! ([`QueueName::partition`]). Every per-queue script — push, claim, ack,
//! fail, recovery, fencing — works on one partition exactly as on a queue,
//! so none of their guarantees changes; what this module adds is which
//! partition a job goes to and how the partitions are seen as one.
//!
//! - **Push** picks a partition ([`QueueClient::route`]): by a key where one
//!   must hold — the job's own id (a given id names one job), its tenant when
//!   the queue limits how many of a tenant's jobs run at once (the running
//!   count is kept within one partition, so all of a tenant's jobs share one
//!   and the limit stays exact), its partition key
//!   (`partition_key`: jobs of one key keep their order), its idempotency key
//!   or unique key (a repeat meets the first job) — else round robin. A key
//!   maps to `CRC16(key) mod P`, Redis' own slot hash. Two pushes happen
//!   inside another script and so stay in partition 0, the queue's own
//!   slot: a schedule's fired job (`fire.lua` runs in the slot of the
//!   task's schedules) and the Celery bridge's intake (one server only).
//! - **Claims**: a Rust worker runs one claim loop per partition (each blocks
//!   on its own partition's wake list, on the node that owns it) sharing one
//!   set of slots, handed out first come first served, so no partition
//!   starves; the API's work protocol claims across partitions in rotating
//!   order like across queues.
//! - **As one**: stats, workers, dead letters, lookups by id and
//!   cancellation cover every partition (the API, the dashboard, the CLI and
//!   KEDA's metrics name only the queue); metric labels name the queue.
//! - **Priorities** hold within a partition; across partitions a
//!   high-priority job waits at most one round of the rotation.
//! - **Rate limits** split evenly: each partition's bucket gets 1/P of the
//!   queue's rate.
//! - **A tenant's cap** of unfinished jobs (`max_unfinished`) splits evenly
//!   too: each partition admits ⌈cap/P⌉ of the tenant's jobs. Round robin
//!   fills the partitions evenly, so the queue-wide cap holds to within P
//!   jobs; a tenant may be refused a little before it (the cap protects the
//!   queue, it is no quota).
//!
//! # The count in force, and changing it
//!
//! Redis records each partitioned queue's count (`{<prefix>:partitions}`,
//! HASH queue → `<current>,<high>`): `current` is what pushes spread over,
//! `high` the most partitions the queue ever had — claims and lookups cover
//! all `high`, so jobs left in a partition a smaller count no longer
//! pushes to are still run. A process whose configured count differs from
//! the record is refused at start with both values named
//! ([`QueueError::PartitionsDiffer`]). To change P on a live queue:
//! `hopper queues partitions <queue> <P>` (the record's `current` becomes
//! P), then roll the new `HOPPER_QUEUE_<NAME>_PARTITIONS` out. Processes
//! started before keep their count until restarted; both counts' partitions
//! are claimed meanwhile, so nothing is lost either way.

use std::{
    collections::HashMap,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use hopper_shared::{QueueName, jobs::DEFAULT_TENANT, queue_name::MAX_PARTITIONS};

use crate::{PushOptions, QueueClient, QueueError, scripts::SCRIPTS};

/// How a queue is partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionLayout {
    /// Partitions new jobs spread over (the count in force).
    pub current: u16,
    /// Partitions claims and lookups cover: the most the queue ever had.
    pub high: u16,
}

impl PartitionLayout {
    /// A queue that is not split.
    pub const SINGLE: Self = Self {
        current: 1,
        high: 1,
    };
}

/// The layouts this process has checked, and the round-robin counter.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    layouts: RwLock<HashMap<QueueName, PartitionLayout>>,
    next: AtomicU64,
}

/// The partition of `n` a routing key maps to: CRC16 (XMODEM, Redis' slot
/// hash) of the key, modulo `n`.
pub fn partition_for_key(key: &str, n: u16) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(key.as_bytes()) % n.max(1)
}

impl QueueClient {
    /// The record of every partitioned queue's count.
    fn partition_record(&self) -> String {
        format!("{{{}:partitions}}", self.prefix())
    }

    /// The layout of `queue` (of a partition's queue, for a partition's
    /// name): the record in Redis, checked once per process and then
    /// cached. A queue first used with a count above 1 is recorded with it.
    /// A count that differs from the record is logged and the record
    /// followed (start-up refuses it: [`Self::check_partitions`]).
    pub async fn partition_layout(&self, queue: &QueueName) -> Result<PartitionLayout, QueueError> {
        let queue = queue.logical();
        if let Some(layout) = self.read_layout(&queue) {
            return Ok(layout);
        }
        let configured = self.settings(&queue).partitions;
        let layout = self.run_record(&queue, configured, "check").await?;
        if layout.current != configured {
            tracing::warn!(
                queue = %queue, configured, in_force = layout.current,
                "this process is configured with another partition count than the one in force; \
                 following the one in force until it restarts"
            );
        }
        self.store_layout(&queue, layout);
        Ok(layout)
    }

    /// Checks every queue the record names (and `queues`, e.g. those a
    /// worker serves) against this process's configured counts: what a
    /// process runs at start. [`QueueError::PartitionsDiffer`] names both
    /// counts of the first queue that differs.
    pub async fn check_partitions(&self, queues: &[QueueName]) -> Result<(), QueueError> {
        let recorded: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.partition_record())
            .query_async(&mut self.conn.clone())
            .await?;
        let mut names: Vec<QueueName> = recorded
            .keys()
            .filter_map(|q| QueueName::new(q).ok())
            .collect();
        names.extend(queues.iter().map(QueueName::logical));
        names.sort();
        names.dedup();
        for queue in names {
            let configured = self.settings(&queue).partitions;
            let layout = self.run_record(&queue, configured, "check").await?;
            if layout.current != configured {
                return Err(QueueError::PartitionsDiffer {
                    env: queue.env_suffix(),
                    queue: queue.as_str().into(),
                    configured,
                    recorded: layout.current,
                });
            }
            self.store_layout(&queue, layout);
        }
        Ok(())
    }

    /// The operator's change of a queue's count (1 to 64): new pushes
    /// spread over `count` partitions; claims and lookups keep covering
    /// every partition it ever had. Answers the new layout.
    pub async fn set_partitions(
        &self,
        queue: &QueueName,
        count: u16,
    ) -> Result<PartitionLayout, QueueError> {
        let queue = queue.logical();
        if !(1..=MAX_PARTITIONS).contains(&count) {
            return Err(QueueError::Config(format!(
                "a queue has 1 to {MAX_PARTITIONS} partitions, not {count}"
            )));
        }
        let layout = self.run_record(&queue, count, "set").await?;
        self.store_layout(&queue, layout);
        Ok(layout)
    }

    /// The names of every partition of `queue` that claims and lookups
    /// cover (just the queue when it is not split).
    pub async fn partitions(&self, queue: &QueueName) -> Result<Vec<QueueName>, QueueError> {
        let layout = self.partition_layout(queue).await?;
        let queue = queue.logical();
        Ok((0..layout.high).map(|k| queue.partition(k)).collect())
    }

    /// [`Self::partitions`] without a round trip: the layout checked before
    /// ([`Self::check_partitions`] at start), else the configured count.
    pub fn partitions_cached(&self, queue: &QueueName) -> Vec<QueueName> {
        let queue = queue.logical();
        let high = self
            .read_layout(&queue)
            .map_or_else(|| self.settings(&queue).partitions, |l| l.high);
        (0..high.max(1)).map(|k| queue.partition(k)).collect()
    }

    /// The partition a new job of `queue` goes to (see the module docs).
    pub(crate) async fn route(
        &self,
        queue: &QueueName,
        args: &serde_json::Value,
        opts: &PushOptions,
    ) -> Result<QueueName, QueueError> {
        let layout = self.partition_layout(queue).await?;
        Ok(self.route_in(queue, layout, args, opts))
    }

    /// [`Self::route`] under a known layout.
    pub(crate) fn route_in(
        &self,
        queue: &QueueName,
        layout: PartitionLayout,
        args: &serde_json::Value,
        opts: &PushOptions,
    ) -> QueueName {
        let n = layout.current;
        if n <= 1 {
            return queue.logical();
        }
        let k = match routing_key(self, queue, args, opts) {
            Some(key) => partition_for_key(&key, n),
            None => {
                (self.partitions_state().next.fetch_add(1, Ordering::Relaxed) % u64::from(n)) as u16
            }
        };
        queue.partition(k)
    }

    /// The cached layout of `queue` (a queue's name, not a partition's).
    pub(crate) fn read_layout(&self, queue: &QueueName) -> Option<PartitionLayout> {
        let layouts = self.partitions_state().layouts.read().ok()?;
        layouts.get(queue).copied()
    }

    /// A tenant cap of `queue`'s as each of its partitions applies it.
    pub(crate) fn partition_cap(&self, queue: &QueueName, cap: u64) -> u64 {
        let n = self
            .read_layout(&queue.logical())
            .map_or(1, |l| u64::from(l.current.max(1)));
        cap.div_ceil(n)
    }

    fn store_layout(&self, queue: &QueueName, layout: PartitionLayout) {
        if let Ok(mut layouts) = self.partitions_state().layouts.write() {
            layouts.insert(queue.clone(), layout);
        }
    }

    async fn run_record(
        &self,
        queue: &QueueName,
        count: u16,
        mode: &str,
    ) -> Result<PartitionLayout, QueueError> {
        let (current, high): (u16, u16) = SCRIPTS
            .partitions
            .key(self.partition_record())
            .arg(queue.as_str())
            .arg(count)
            .arg(mode)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(PartitionLayout {
            current: current.clamp(1, MAX_PARTITIONS),
            high: high.clamp(current.max(1), MAX_PARTITIONS),
        })
    }
}

/// The key a job's partition must follow, if any (see the module docs).
fn routing_key(
    client: &QueueClient,
    queue: &QueueName,
    args: &serde_json::Value,
    opts: &PushOptions,
) -> Option<String> {
    if let Some(id) = opts.id {
        return Some(format!("id:{id}"));
    }
    let tenant = opts.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    if client.settings(queue).tenant_concurrency.is_some() {
        return Some(format!("tenant:{tenant}"));
    }
    if let Some(key) = &opts.partition_key {
        return Some(format!("key:{tenant}:{key}"));
    }
    if let Some(key) = &opts.idempotency_key {
        return Some(format!("idem:{key}"));
    }
    opts.unique.as_ref().map(|u| match &u.key {
        Some(k) => format!("unique:{tenant}:{k}"),
        None => format!(
            "unique:{tenant}:{}",
            hopper_shared::tasks::canonical_digest(args)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_maps_to_the_same_partition_and_keys_spread() {
        assert_eq!(
            partition_for_key("tenant:acme", 3),
            partition_for_key("tenant:acme", 3)
        );
        assert_eq!(partition_for_key("anything", 1), 0);
        let mut seen = [0u32; 4];
        for i in 0..4000 {
            seen[partition_for_key(&format!("key:t:{i}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
