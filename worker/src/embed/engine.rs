//! The [`Embedder`] API and the one inference thread per device behind it.
//!
//! A caller's texts are tokenised on a blocking-pool thread (so tokenising
//! overlaps the running forward pass), then sent over a channel to the
//! device's inference thread. That thread pools the texts of every caller,
//! forms length-sorted, token-budgeted batches ([`super::batcher`]), runs
//! them, and answers each caller with exactly its own vectors, in order.
//!
//! Backpressure: at most [`BatchOptions::queue_capacity`] texts are accepted
//! and unanswered at once (a semaphore counted in texts; a larger call is cut
//! into chunks that queue in turn). [`Embedder::available_capacity`] tells a
//! worker whether to claim more jobs.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc,
    },
    time::{Duration, Instant},
};

use hopper_shared::metrics as m;
use tch::Device;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::{
    EmbedError,
    batcher::{Item, Pool},
    model::{Encoder, Precision},
    stats::{Counters, EmbedStats},
    tokenize::{TextTokenizer, Tokens},
};

/// Texts one request carries at most; larger calls are cut into chunks.
const CHUNK_TEXTS: usize = 256;

/// How the inference thread batches.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Padded tokens per forward pass at most (batch size × longest text).
    /// At least the model's maximum length; one overlong text still runs.
    pub max_tokens_per_batch: usize,
    /// Texts per forward pass at most.
    pub max_batch_size: usize,
    /// Padding allowed in a batch, as a fraction of its real tokens: a text
    /// that would add more starts a later batch instead (padding is wasted
    /// compute; on a CPU a smaller batch costs next to nothing).
    pub max_padding: f64,
    /// How long an idle inference thread waits after the first text arrives
    /// for more to share the pass.
    pub max_wait: Duration,
    /// Texts accepted and unanswered at most (the backpressure bound).
    pub queue_capacity: usize,
    /// Torch intra-op threads; `None` keeps torch's default (one per core).
    pub threads: Option<usize>,
    /// Run one small forward pass per model at load time.
    pub warmup: bool,
}

impl Default for BatchOptions {
    /// The CPU defaults (see [`BatchOptions::for_device`]).
    fn default() -> Self {
        Self {
            max_tokens_per_batch: 2048,
            max_batch_size: 64,
            max_padding: 0.25,
            max_wait: Duration::from_millis(5),
            queue_capacity: 4096,
            threads: None,
            warmup: true,
        }
    }
}

impl BatchOptions {
    /// Defaults tuned for `device`: on a CPU, ~2k-token batches (measured
    /// fastest here: they stay in cache, and padding is wasted work); on a
    /// GPU, large batches to fill it.
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cpu => Self::default(),
            _ => Self {
                max_tokens_per_batch: 32_768,
                max_batch_size: 512,
                max_padding: 1.0,
                ..Self::default()
            },
        }
    }

    /// Checks the options against the longest input of the loaded models.
    pub(crate) fn validate(&self, max_seq_length: usize) -> Result<(), EmbedError> {
        let bad = |m: String| Err(EmbedError::BadOptions(m));
        if self.max_batch_size == 0 {
            return bad("max_batch_size must be at least 1".into());
        }
        if self.max_tokens_per_batch < max_seq_length {
            return bad(format!(
                "max_tokens_per_batch {} is below the model's max_seq_length {max_seq_length}",
                self.max_tokens_per_batch
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > Semaphore::MAX_PERMITS {
            return bad(format!(
                "queue_capacity {} is out of range",
                self.queue_capacity
            ));
        }
        if self.max_padding.is_nan() || self.max_padding < 0.0 {
            return bad(format!(
                "max_padding {} is not a fraction ≥ 0",
                self.max_padding
            ));
        }
        if self.threads == Some(0) {
            return bad("threads must be at least 1".into());
        }
        Ok(())
    }
}

/// What one [`Embedder::embed`] call returns.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOutput {
    /// One vector per input text, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// How many texts were cut to the model's maximum length.
    pub truncated: usize,
    /// `name@version` of the model that made the vectors.
    pub model_version: String,
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>;

/// One chunk of one caller's texts, on its way to the inference thread.
struct Request {
    id: u64,
    model: usize,
    tokens: Vec<Tokens>,
    reply: Reply,
    permit: OwnedSemaphorePermit,
}

/// The inference thread of one device, as its callers see it.
pub(crate) struct Engine {
    tx: mpsc::Sender<Request>,
    sem: Arc<Semaphore>,
    counters: Arc<Counters>,
    capacity: usize,
    next_id: AtomicU64,
    device: Device,
    precision: Precision,
}

impl Engine {
    /// Starts the inference thread, which owns `encoders` (all on one device).
    pub(crate) fn start(
        encoders: Vec<Encoder>,
        device: Device,
        precision: Precision,
        options: &BatchOptions,
    ) -> Result<Self, EmbedError> {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let mut worker = InferenceLoop {
            rx,
            pools: encoders.iter().map(|_| Pool::default()).collect(),
            encoders,
            pending: HashMap::new(),
            counters: counters.clone(),
            options: options.clone(),
            device_label: match device {
                Device::Cuda(n) => format!("cuda{n}"),
                _ => "cpu".to_owned(),
            },
        };
        let name = match device {
            Device::Cuda(n) => format!("embed-cuda{n}"),
            _ => "embed-cpu".to_string(),
        };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run())
            .map_err(|e| {
                EmbedError::Inference(format!("cannot start the inference thread: {e}"))
            })?;
        Ok(Self {
            tx,
            sem: Arc::new(Semaphore::new(options.queue_capacity)),
            counters,
            capacity: options.queue_capacity,
            next_id: AtomicU64::new(0),
            device,
            precision,
        })
    }

    pub(crate) fn available_capacity(&self) -> usize {
        self.sem.available_permits()
    }

    pub(crate) fn stats(&self) -> EmbedStats {
        let queued = self.capacity - self.sem.available_permits().min(self.capacity);
        self.counters.snapshot(queued, self.capacity)
    }

    pub(crate) fn device(&self) -> Device {
        self.device
    }

    pub(crate) fn precision(&self) -> Precision {
        self.precision
    }
}

/// A loaded model's identity and tokenizer.
pub(crate) struct ModelEntry {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) dim: usize,
    pub(crate) max_seq_length: usize,
    pub(crate) index: usize,
    pub(crate) tokenizer: Arc<TextTokenizer>,
}

/// A handle to one loaded model; cheap to clone, shareable across tasks.
#[derive(Clone)]
pub struct Embedder {
    pub(crate) model: Arc<ModelEntry>,
    pub(crate) engine: Arc<Engine>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.model.version)
            .field("device", &self.engine.device)
            .finish()
    }
}

impl Embedder {
    /// Embeds `texts`; vectors come back in input order. Texts longer than
    /// the model's maximum are truncated and counted in
    /// [`EmbedOutput::truncated`]. Waits while the engine's queue is full.
    pub async fn embed(&self, texts: Vec<String>) -> Result<EmbedOutput, EmbedError> {
        let mut texts = texts;
        let chunk = CHUNK_TEXTS.min(self.engine.capacity).max(1);
        let mut chunks = Vec::with_capacity(texts.len().div_ceil(chunk));
        while texts.len() > chunk {
            let rest = texts.split_off(chunk);
            chunks.push(std::mem::replace(&mut texts, rest));
        }
        if !texts.is_empty() {
            chunks.push(texts);
        }
        let parts =
            futures::future::try_join_all(chunks.into_iter().map(|c| self.embed_chunk(c))).await?;
        let mut out = EmbedOutput {
            vectors: Vec::new(),
            truncated: 0,
            model_version: self.model.version.clone(),
        };
        for (vectors, truncated) in parts {
            out.vectors.extend(vectors);
            out.truncated += truncated;
        }
        Ok(out)
    }

    /// One chunk (≤ the queue capacity): wait for room, tokenise, queue, await.
    async fn embed_chunk(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let n = texts.len();
        let permit = self
            .engine
            .sem
            .clone()
            .acquire_many_owned(n as u32)
            .await
            .map_err(|_| EmbedError::EngineStopped)?;
        let tokenizer = self.model.tokenizer.clone();
        let tokens = tokio::task::spawn_blocking(move || tokenizer.encode(&texts))
            .await
            .map_err(|e| EmbedError::Inference(format!("tokeniser task failed: {e}")))??;
        let truncated = tokens.iter().filter(|t| t.truncated).count();
        let counters = &self.engine.counters;
        counters.requests.fetch_add(1, Relaxed);
        counters
            .truncated_texts
            .fetch_add(truncated as u64, Relaxed);
        let (reply, rx) = oneshot::channel();
        let request = Request {
            id: self.engine.next_id.fetch_add(1, Relaxed),
            model: self.model.index,
            tokens,
            reply,
            permit,
        };
        self.engine
            .tx
            .send(request)
            .map_err(|_| EmbedError::EngineStopped)?;
        let vectors = rx.await.map_err(|_| EmbedError::EngineStopped)??;
        Ok((vectors, truncated))
    }

    /// The model's name (its directory name unless configured otherwise).
    pub fn name(&self) -> &str {
        &self.model.name
    }

    /// `name@<first 12 hex of sha256(model.safetensors)>`.
    pub fn version(&self) -> &str {
        &self.model.version
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.model.dim
    }

    /// Longest input in tokens; longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.model.max_seq_length
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.engine.device()
    }

    /// The precision the model runs in.
    pub fn precision(&self) -> Precision {
        self.engine.precision()
    }

    /// Texts the engine (shared by every model on this device) can still
    /// accept without waiting.
    pub fn available_capacity(&self) -> usize {
        self.engine.available_capacity()
    }

    /// The engine's counters (shared by every model on this device).
    pub fn stats(&self) -> EmbedStats {
        self.engine.stats()
    }
}

/// A request being served: its vectors so far.
struct Pending {
    out: Vec<Vec<f32>>,
    remaining: usize,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// The state of the inference thread.
struct InferenceLoop {
    rx: mpsc::Receiver<Request>,
    encoders: Vec<Encoder>,
    pools: Vec<Pool>,
    pending: HashMap<u64, Pending>,
    counters: Arc<Counters>,
    options: BatchOptions,
    /// `cpu` or `cudaN`, the `device` label of the batch histograms.
    device_label: String,
}

impl InferenceLoop {
    fn run(&mut self) {
        let _no_grad = tch::no_grad_guard();
        if let Some(n) = self.options.threads {
            tch::set_num_threads(n as i32);
        }
        loop {
            if self.pending.is_empty() {
                // Idle: hand freed activation memory back to the OS (glibc
                // keeps it in its arenas otherwise), block for work, then
                // give others `max_wait` to join.
                release_free_memory();
                match self.rx.recv() {
                    Ok(r) => self.admit(r),
                    Err(_) => return,
                }
                let deadline = Instant::now() + self.options.max_wait;
                while self.waiting_tokens() < self.options.max_tokens_per_batch {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(left) {
                        Ok(r) => self.admit(r),
                        Err(_) => break,
                    }
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                self.admit(r);
            }
            self.drop_cancelled();
            self.run_one_batch();
        }
    }

    fn waiting_tokens(&self) -> usize {
        self.pools.iter().map(Pool::tokens).sum()
    }

    fn admit(&mut self, r: Request) {
        let n = r.tokens.len();
        if n == 0 {
            let _ = r.reply.send(Ok(Vec::new()));
            return;
        }
        let Some(pool) = self.pools.get_mut(r.model) else {
            let _ = r
                .reply
                .send(Err(EmbedError::Inference(format!("no model #{}", r.model))));
            return;
        };
        pool.add(
            r.tokens
                .into_iter()
                .enumerate()
                .map(|(index, tokens)| Item {
                    req: r.id,
                    index,
                    tokens,
                }),
        );
        self.pending.insert(
            r.id,
            Pending {
                out: vec![Vec::new(); n],
                remaining: n,
                reply: r.reply,
                _permit: r.permit,
            },
        );
    }

    /// Forgets requests whose callers went away (their texts never run).
    fn drop_cancelled(&mut self) {
        let gone: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            return;
        }
        for pool in &mut self.pools {
            let n = pool.remove_requests(|r| gone.contains(&r));
            self.counters.cancelled_texts.fetch_add(n as u64, Relaxed);
        }
        for id in gone {
            self.pending.remove(&id);
        }
    }

    /// Runs the batch of the model whose pool holds the oldest request.
    fn run_one_batch(&mut self) {
        let Some(model) = (0..self.pools.len())
            .filter_map(|m| self.pools[m].oldest().map(|o| (o, m)))
            .min()
            .map(|(_, m)| m)
        else {
            return;
        };
        let batch = self.pools[model].next_batch(
            self.options.max_tokens_per_batch,
            self.options.max_batch_size,
            self.options.max_padding,
        );
        if batch.is_empty() {
            return;
        }
        let refs: Vec<&Tokens> = batch.iter().map(|i| &i.tokens).collect();
        let real: usize = refs.iter().map(|t| t.len()).sum();
        let padded = refs.len() * refs.iter().map(|t| t.len()).max().unwrap_or(0);
        let encoder = &self.encoders[model];
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| encoder.embed(&refs)))
            .unwrap_or_else(|_| Err(EmbedError::Inference("the forward pass panicked".into())));
        match result {
            Ok(vectors) if vectors.len() == batch.len() => {
                let micros = started.elapsed().as_micros() as u64;
                self.counters
                    .record_batch(batch.len(), real, padded, micros);
                let device = self.device_label.clone();
                metrics::histogram!(m::EMBED_BATCH_SIZE, "device" => device.clone())
                    .record(batch.len() as f64);
                metrics::histogram!(m::EMBED_BATCH_TOKENS, "device" => device)
                    .record(padded as f64);
                for (item, v) in batch.into_iter().zip(vectors) {
                    self.deliver(item, v);
                }
            }
            Ok(_) => self.fail(
                batch,
                "the forward pass returned the wrong number of vectors",
            ),
            Err(e) => self.fail(batch, &e.to_string()),
        }
    }

    fn deliver(&mut self, item: Item, vector: Vec<f32>) {
        let Some(p) = self.pending.get_mut(&item.req) else {
            return;
        };
        if let Some(slot) = p.out.get_mut(item.index) {
            *slot = vector;
        }
        p.remaining -= 1;
        if p.remaining == 0
            && let Some(Pending {
                out,
                reply,
                _permit,
                ..
            }) = self.pending.remove(&item.req)
        {
            // Free the queue slots before answering, so a caller that sees
            // its vectors also sees the capacity back.
            drop(_permit);
            let _ = reply.send(Ok(out));
        }
    }

    /// Answers every request with a text in `batch` with an error and drops
    /// the rest of their texts.
    fn fail(&mut self, batch: Vec<Item>, reason: &str) {
        self.counters.failed_batches.fetch_add(1, Relaxed);
        let mut reqs: Vec<u64> = batch.iter().map(|i| i.req).collect();
        reqs.sort_unstable();
        reqs.dedup();
        for pool in &mut self.pools {
            pool.remove_requests(|r| reqs.contains(&r));
        }
        for id in reqs {
            if let Some(Pending { reply, _permit, .. }) = self.pending.remove(&id) {
                drop(_permit);
                let _ = reply.send(Err(EmbedError::Inference(reason.to_string())));
            }
        }
    }
}

/// Returns the free pages of every malloc arena to the OS.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; no pointers are passed.
    unsafe {
        libc::malloc_trim(0);
    }
}
