//! Counters of the inference loop, for metrics and tests.
//!
//! The inference thread bumps atomics after every forward pass; anyone may
//! take an [`EmbedStats`] snapshot at any time. Padded minus real tokens is
//! the work wasted on padding.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
}

impl Counters {
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
}
