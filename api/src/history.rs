//! Queue depth over time, for the dashboard's chart.
//!
//! Redis keeps each queue's current depth and per-minute outcome counts, but
//! not depth history. [`DepthHistory`] samples every queue's stats every
//! [`SAMPLE_EVERY`] into a bounded ring ([`KEEP`] samples: an hour), so a
//! dashboard opened now shows the last hour at once. Every queue is
//! sampled: the built-in kinds and every declared task (the registry is
//! read with each sample); handlers show a caller its own tasks only. Each
//! API replica samples on its own; the samples are cheap (one Lua call per
//! queue, O(workers)). Prometheus remains the long-term store.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use hopper_queue::QueueClient;
use hopper_shared::QueueName;
use serde::Serialize;

use crate::tasks::TaskCache;

/// Time between samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept (one hour at [`SAMPLE_EVERY`]).
pub const KEEP: usize = 1_800;

/// One queue's depth at one instant.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Depth {
    /// Waiting to be claimed.
    pub pending: u64,
    /// Waiting for a run-at time or a retry.
    pub scheduled: u64,
    /// Claimed by workers.
    pub running: u64,
    /// In the dead letters.
    pub dead: u64,
}

/// Every queue's depth at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Unix ms.
    pub at_ms: i64,
    /// Depth per queue: the built-in kinds, then the declared tasks.
    pub queues: Vec<(QueueName, Depth)>,
}

/// The ring of samples, shared by the sampler and the handlers.
#[derive(Debug, Default, Clone)]
pub struct DepthHistory {
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

impl DepthHistory {
    /// Samples taken in the last `since_ms` milliseconds, oldest first.
    pub fn since(&self, since_ms: i64) -> Vec<Sample> {
        self.since_at(hopper_queue::now_ms(), since_ms)
    }

    /// Samples taken within `since_ms` before `now_ms`, oldest first.
    fn since_at(&self, now_ms: i64, since_ms: i64) -> Vec<Sample> {
        let cutoff = now_ms - since_ms;
        let samples = self.samples.lock().expect("history lock");
        samples
            .iter()
            .filter(|s| s.at_ms >= cutoff)
            .cloned()
            .collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().expect("history lock");
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples every queue until the process ends. A failed sample (Redis
    /// away) is skipped; the chart shows the gap.
    pub fn spawn_sampler(&self, queue: QueueClient, tasks: TaskCache) {
        let history = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let names = match tasks.all_names(&queue).await {
                    Ok(names) => names,
                    Err(e) => {
                        tracing::debug!(error = ?e, "queue depth sample skipped");
                        continue;
                    }
                };
                match sample(&queue, names).await {
                    Ok(queues) => history.push(Sample {
                        at_ms: hopper_queue::now_ms(),
                        queues,
                    }),
                    Err(e) => tracing::debug!(error = %e, "queue depth sample skipped"),
                }
            }
        });
    }
}

/// The depth of the queues `names` (every built-in and declared task, from
/// the API's registry cache) now.
async fn sample(
    queue: &QueueClient,
    names: Vec<QueueName>,
) -> Result<Vec<(QueueName, Depth)>, hopper_queue::QueueError> {
    let mut queues = Vec::with_capacity(names.len());
    for name in names {
        let s = queue.stats(&name).await?;
        queues.push((
            name,
            Depth {
                pending: s.pending,
                scheduled: s.scheduled,
                running: s.running,
                dead: s.dead,
            },
        ));
    }
    Ok(queues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_samples() {
        let h = DepthHistory::default();
        let now = hopper_queue::now_ms();
        for i in 0..(KEEP + 5) {
            h.push(Sample {
                at_ms: now - (KEEP + 5 - i) as i64,
                queues: Vec::new(),
            });
        }
        let all = h.since(i64::MAX / 2);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all.first().unwrap().at_ms, now - KEEP as i64);
        // Against the clock the samples were stamped with (a millisecond may
        // have passed since).
        assert_eq!(h.since_at(now, 3).len(), 3);
    }
}
