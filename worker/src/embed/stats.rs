//! Counters of the inference loop, for metrics and tests.
//!
//! The inference thread bumps atomics after every forward pass; anyone may
//! take an [`EmbedStats`] snapshot at any time. Padded minus real tokens is
//! the work wasted on padding. Callers count the texts they hold room for
//! and the texts waiting for it, with their high-water marks: the embed
//! queue's admission gate is right when the first never exceeds the
//! capacity and the second stays small. The worker's `/metrics` publishes
//! them under the names below.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The engine's bound on texts held at once (gauge).
pub const METRIC_CAPACITY: &str = "hopper_embed_capacity_texts";
/// The most texts held by the engine at once so far (gauge).
pub const METRIC_ADMITTED_MAX: &str = "hopper_embed_admitted_texts_max";
/// Texts waiting for room in the engine now (gauge).
pub const METRIC_WAITING: &str = "hopper_embed_waiting_texts";
/// The most texts that waited for room at once so far (gauge).
pub const METRIC_WAITING_MAX: &str = "hopper_embed_waiting_texts_max";

/// Upper bounds of the batch-size histogram buckets; one more bucket
/// counts larger batches.
pub const BATCH_SIZE_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Live counters, shared by the inference thread and its callers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) forward_passes: AtomicU64,
    pub(crate) texts_embedded: AtomicU64,
    pub(crate) tokens_real: AtomicU64,
    pub(crate) tokens_padded: AtomicU64,
    pub(crate) truncated_texts: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    pub(crate) cancelled_texts: AtomicU64,
    pub(crate) max_batch_size: AtomicU64,
    pub(crate) forward_micros: AtomicU64,
    pub(crate) batch_sizes: [AtomicU64; BATCH_SIZE_BUCKETS.len() + 1],
    /// Texts holding room in the engine now, counted apart from the
    /// semaphore that grants it (so a broken gate shows).
    pub(crate) admitted_texts: AtomicU64,
    pub(crate) admitted_texts_max: AtomicU64,
    /// Texts of calls waiting for room now.
    pub(crate) waiting_texts: AtomicU64,
    pub(crate) waiting_texts_max: AtomicU64,
}

/// Adds `n` to a current count and raises its high-water mark; takes it
/// off again when dropped.
pub(crate) struct Held {
    counters: std::sync::Arc<Counters>,
    n: u64,
    waiting: bool,
}

impl Held {
    /// `n` texts waiting for room.
    pub(crate) fn waiting(counters: &std::sync::Arc<Counters>, n: usize) -> Self {
        Self::new(counters, n, true)
    }

    /// `n` texts admitted to the engine.
    pub(crate) fn admitted(counters: &std::sync::Arc<Counters>, n: usize) -> Self {
        Self::new(counters, n, false)
    }

    fn new(counters: &std::sync::Arc<Counters>, n: usize, waiting: bool) -> Self {
        let n = n as u64;
        let (now, max) = counters.pair(waiting);
        let after = now.fetch_add(n, Relaxed) + n;
        max.fetch_max(after, Relaxed);
        Self {
            counters: counters.clone(),
            n,
            waiting,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counters
            .pair(self.waiting)
            .0
            .fetch_sub(self.n, Relaxed);
    }
}

impl Counters {
    fn pair(&self, waiting: bool) -> (&AtomicU64, &AtomicU64) {
        if waiting {
            (&self.waiting_texts, &self.waiting_texts_max)
        } else {
            (&self.admitted_texts, &self.admitted_texts_max)
        }
    }

    /// Records one successful forward pass.
    pub(crate) fn record_batch(&self, size: usize, real: usize, padded: usize, micros: u64) {
        let size = size as u64;
        self.forward_passes.fetch_add(1, Relaxed);
        self.texts_embedded.fetch_add(size, Relaxed);
        self.tokens_real.fetch_add(real as u64, Relaxed);
        self.tokens_padded.fetch_add(padded as u64, Relaxed);
        self.forward_micros.fetch_add(micros, Relaxed);
        self.max_batch_size.fetch_max(size, Relaxed);
        let bucket = BATCH_SIZE_BUCKETS
            .iter()
            .position(|&b| size <= b)
            .unwrap_or(BATCH_SIZE_BUCKETS.len());
        self.batch_sizes[bucket].fetch_add(1, Relaxed);
    }

    /// A snapshot; `queued_texts` and `capacity` come from the engine.
    pub(crate) fn snapshot(&self, queued_texts: usize, capacity: usize) -> EmbedStats {
        let get = |a: &AtomicU64| a.load(Relaxed);
        EmbedStats {
            requests: get(&self.requests),
            forward_passes: get(&self.forward_passes),
            texts_embedded: get(&self.texts_embedded),
            tokens_real: get(&self.tokens_real),
            tokens_padded: get(&self.tokens_padded),
            truncated_texts: get(&self.truncated_texts),
            failed_batches: get(&self.failed_batches),
            cancelled_texts: get(&self.cancelled_texts),
            max_batch_size: get(&self.max_batch_size),
            forward_seconds: get(&self.forward_micros) as f64 / 1e6,
            batch_sizes: self.batch_sizes.iter().map(get).collect(),
            queued_texts: queued_texts as u64,
            capacity: capacity as u64,
            admitted_texts_max: get(&self.admitted_texts_max),
            waiting_texts: get(&self.waiting_texts),
            waiting_texts_max: get(&self.waiting_texts_max),
        }
    }
}

/// A snapshot of the engine's counters (totals since start).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EmbedStats {
    /// Embed requests received (a large call counts once per chunk).
    pub requests: u64,
    /// Forward passes run.
    pub forward_passes: u64,
    /// Texts embedded (the sum of all batch sizes).
    pub texts_embedded: u64,
    /// Real tokens fed to the model.
    pub tokens_real: u64,
    /// Tokens fed including padding (batch size × longest text, summed).
    pub tokens_padded: u64,
    /// Texts cut to the model's maximum length.
    pub truncated_texts: u64,
    /// Forward passes that failed (their texts got an error).
    pub failed_batches: u64,
    /// Texts dropped because their caller went away before they ran.
    pub cancelled_texts: u64,
    /// The largest batch so far.
    pub max_batch_size: u64,
    /// Time spent in forward passes.
    pub forward_seconds: f64,
    /// Forward passes per batch-size bucket ([`BATCH_SIZE_BUCKETS`], then
    /// one bucket for larger batches).
    pub batch_sizes: Vec<u64>,
    /// Texts accepted and not yet answered (tokenising, queued or running).
    pub queued_texts: u64,
    /// The most texts that may be queued at once.
    pub capacity: u64,
    /// The most texts ever admitted at once (counted apart from the
    /// semaphore that bounds them by `capacity`).
    pub admitted_texts_max: u64,
    /// Texts of calls waiting for room now.
    pub waiting_texts: u64,
    /// The most texts that ever waited for room at once: what the embed
    /// queue claimed beyond the engine's room.
    pub waiting_texts_max: u64,
}
