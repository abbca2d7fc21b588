//! The [`Embedder`] API and the one inference loop per device behind it.
//!
//! A caller's texts are tokenised on a blocking-pool thread (so tokenising
//! overlaps the running forward pass), then sent over a channel to the
//! device's inference loop. That thread pools the texts of every caller,
//! forms length-sorted, token-budgeted batches ([`super::batcher`]), hands
//! each to a free *stream* — a thread that runs forward passes — and answers
//! each caller with exactly its own vectors, in order.
//!
//! Streams: a GPU has one. A CPU has several (by default one per intra-op
//! thread, at most [`MAX_AUTO_STREAMS`], the threads split between them):
//! on 2 cores two single-threaded passes side by side beat one pass on two
//! threads (no fork/join per operator, and the attention kernel does not
//! scale with threads; measured by `scripts/bench/embed --streams`). All
//! streams read the same weights.
//!
//! Memory: streams return freed activation memory to the OS when glibc
//! holds more than 256 MB of it, and the loop returns all of it after a second idle.
//!
//! Backpressure: at most [`BatchOptions::queue_capacity`] texts are accepted
//! and unanswered at once (a semaphore counted in texts; a larger call is cut
//! into chunks that queue in turn). [`Embedder::available_capacity`] tells a
//! worker whether to claim more jobs: the free room less the texts already
//! waiting for it. The texts held and waiting are counted apart from the
//! semaphore, with high-water marks ([`super::stats`]), so that a test can
//! check the gate's invariant rather than sample it.

use std::{
    cell::RefCell,
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
    model::{Encoder, LinearKernels, Precision},
    stats::{Counters, EmbedStats, Held},
    tokenize::{TextTokenizer, Tokens},
};

tokio::task_local! {
    /// Texts a job announced ([`Embedder::announced`]) that have not yet
    /// reached the engine.
    static ANNOUNCED: RefCell<Option<Held>>;
}

/// How long the inference loop is idle before it returns freed memory.
const RELEASE_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Texts one request carries at most; larger calls are cut into chunks.
const CHUNK_TEXTS: usize = 256;

/// CPU streams chosen automatically at most (more threads are split
/// between them).
pub const MAX_AUTO_STREAMS: usize = 4;

/// Free memory the allocator may keep after a forward pass; above it the
/// stream hands it back to the OS. Batch shapes vary, so freed activations
/// fragment glibc's arenas. A safety net, set above what 1,024-token batches
/// leave free on 2 streams: trimming after every pass (a 64 MB bound) cut the
/// peak from ~600 to ~420 MB but cost ~10 % of throughput, since the next
/// pass faults its pages back in.
const TRIM_ABOVE_BYTES: usize = 256 << 20;

/// How the engine runs: batching, streams, threads and kernels.
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
    /// for more to share the pass. None on a CPU: its several streams take
    /// work as it comes, and texts arriving while they are busy share the
    /// next pass anyway, so a wait only delays a lone request (a search
    /// query paid all of it). 5 ms on a GPU, whose one stream a pass should
    /// fill.
    pub max_wait: Duration,
    /// Texts accepted and unanswered at most (the backpressure bound).
    pub queue_capacity: usize,
    /// Torch intra-op threads in all; `None` keeps torch's default (one
    /// per core).
    pub threads: Option<usize>,
    /// Forward passes that run at once, each on `threads / streams`
    /// threads; `None`: one on CUDA, on a CPU one per thread up to
    /// [`MAX_AUTO_STREAMS`].
    pub streams: Option<usize>,
    /// The linear layers' kernels (oneDNN with packed weights on CPU by
    /// default).
    pub kernels: LinearKernels,
    /// Run one small forward pass per model at load time.
    pub warmup: bool,
}

impl Default for BatchOptions {
    /// The CPU defaults (see [`BatchOptions::for_device`]).
    fn default() -> Self {
        Self {
            max_tokens_per_batch: 1024,
            max_batch_size: 64,
            max_padding: 0.25,
            max_wait: Duration::ZERO,
            queue_capacity: 4096,
            threads: None,
            streams: None,
            kernels: LinearKernels::Auto,
            warmup: true,
        }
    }
}

impl BatchOptions {
    /// Defaults tuned for `device`: on a CPU, 1,024-token batches per
    /// (single-threaded) stream — as fast here as 2,048 on two streams and
    /// ~100 MB lighter (`scripts/bench/embed --max-tokens`), padding being
    /// wasted work; on a GPU, large batches to fill it.
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cpu => Self::default(),
            _ => Self {
                max_tokens_per_batch: 32_768,
                max_batch_size: 512,
                max_padding: 1.0,
                max_wait: Duration::from_millis(5),
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
        if self.streams == Some(0) {
            return bad("streams must be at least 1".into());
        }
        Ok(())
    }

    /// `(streams, threads per stream)` on `device`, given torch's default
    /// thread count: the threads are split evenly between the streams, at
    /// least one each; a GPU has one stream.
    pub fn layout(&self, device: Device, default_threads: usize) -> (usize, usize) {
        let threads = self.threads.unwrap_or(default_threads).max(1);
        let streams = match (device, self.streams) {
            (Device::Cpu, Some(n)) => n.clamp(1, threads),
            (Device::Cpu, None) => threads.min(MAX_AUTO_STREAMS),
            _ => 1,
        };
        (streams, (threads / streams).max(1))
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

/// Room in the engine for one chunk's texts: the semaphore's permits, and
/// the count kept apart from them; both given back when dropped.
struct Room {
    // Fields drop in order: the count goes down before the permit is given
    // back, so the next holder's count never overlaps this one's.
    _held: Held,
    _permit: OwnedSemaphorePermit,
}

/// One chunk of one caller's texts, on its way to the inference thread.
struct Request {
    id: u64,
    model: usize,
    tokens: Vec<Tokens>,
    reply: Reply,
    permit: Room,
}

/// A batch on its way to a stream.
struct Batch {
    model: usize,
    items: Vec<Item>,
}

/// A batch a stream has run.
struct Done {
    stream: usize,
    batch: Batch,
    result: Result<Vec<Vec<f32>>, EmbedError>,
    micros: u64,
}

/// What the inference loop waits for.
enum Event {
    /// A caller's texts.
    Request(Request),
    /// A stream finished a batch and is free again.
    Done(Done),
    /// The engine is gone: no caller is left.
    Stop,
}

/// The inference loop of one device, as its callers see it.
pub(crate) struct Engine {
    tx: mpsc::Sender<Event>,
    sem: Arc<Semaphore>,
    counters: Arc<Counters>,
    capacity: usize,
    next_id: AtomicU64,
    device: Device,
    precision: Precision,
    kernels: LinearKernels,
    streams: usize,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.tx.send(Event::Stop);
    }
}

/// The encoders, shared read-only by every stream of a device.
struct SharedEncoders(Vec<Encoder>);

// SAFETY: a forward pass only reads the weights (every in-place operation is
// on its own activations), and libtorch tensors may be read from several
// threads at once; autograd is off in every stream thread.
unsafe impl Sync for SharedEncoders {}

impl Engine {
    /// Starts the inference loop and `streams` stream threads (each on
    /// `threads_per_stream` intra-op threads) for `encoders`, all on one
    /// device.
    pub(crate) fn start(
        encoders: Vec<Encoder>,
        device: Device,
        precision: Precision,
        options: &BatchOptions,
        (streams, threads_per_stream): (usize, usize),
    ) -> Result<Self, EmbedError> {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let label = match device {
            Device::Cuda(n) => format!("cuda{n}"),
            _ => "cpu".to_owned(),
        };
        let models = encoders.len();
        let kernels = encoders
            .first()
            .map_or(LinearKernels::Aten, Encoder::kernels);
        let encoders = Arc::new(SharedEncoders(encoders));
        let spawn_err =
            |e: std::io::Error| EmbedError::Inference(format!("cannot start a thread: {e}"));
        let mut stream_tx = Vec::with_capacity(streams);
        for index in 0..streams {
            let (batch_tx, batch_rx) = mpsc::channel();
            let (encoders, events) = (encoders.clone(), tx.clone());
            std::thread::Builder::new()
                .name(format!("embed-{label}-{index}"))
                .spawn(move || run_stream(index, &encoders, batch_rx, events, threads_per_stream))
                .map_err(spawn_err)?;
            stream_tx.push(batch_tx);
        }
        let mut worker = InferenceLoop {
            rx,
            pools: (0..models).map(|_| Pool::default()).collect(),
            pending: HashMap::new(),
            free: (0..streams).rev().collect(),
            streams: stream_tx,
            counters: counters.clone(),
            options: options.clone(),
            device_label: label.clone(),
        };
        std::thread::Builder::new()
            .name(format!("embed-{label}"))
            .spawn(move || worker.run())
            .map_err(spawn_err)?;
        Ok(Self {
            tx,
            sem: Arc::new(Semaphore::new(options.queue_capacity)),
            counters,
            capacity: options.queue_capacity,
            next_id: AtomicU64::new(0),
            device,
            precision,
            kernels,
            streams,
        })
    }

    /// Free room, less the texts already waiting for room.
    pub(crate) fn available_capacity(&self) -> usize {
        let waiting = self.counters.waiting_texts.load(Relaxed) as usize;
        self.sem.available_permits().saturating_sub(waiting)
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

    pub(crate) fn streams(&self) -> usize {
        self.streams
    }

    pub(crate) fn kernels(&self) -> LinearKernels {
        self.kernels
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
        // The job's announcement (if any) becomes this chunk's wait.
        let announced = ANNOUNCED.try_with(|a| a.borrow_mut().take()).ok().flatten();
        let waiting = announced.unwrap_or_else(|| Held::waiting(&self.engine.counters, n));
        let permit = self
            .engine
            .sem
            .clone()
            .acquire_many_owned(n as u32)
            .await
            .map_err(|_| EmbedError::EngineStopped)?;
        drop(waiting);
        let permit = Room {
            _held: Held::admitted(&self.engine.counters, n),
            _permit: permit,
        };
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
            .send(Event::Request(request))
            .map_err(|_| EmbedError::EngineStopped)?;
        let vectors = rx.await.map_err(|_| EmbedError::EngineStopped)??;
        Ok((vectors, truncated))
    }

    /// Runs `job` with `texts` counted as waiting for room in the engine
    /// from now until its first [`Self::embed`] call has room (or it ends),
    /// so that the embed queue's admission gate sees a job's texts as soon
    /// as the job starts, not only once its cache lookup is done.
    pub async fn announced<F: std::future::Future>(&self, texts: usize, job: F) -> F::Output {
        let held = Held::waiting(&self.engine.counters, texts);
        ANNOUNCED.scope(RefCell::new(Some(held)), job).await
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
    /// accept without waiting, less those other calls already wait to put
    /// in (what the embed queue's admission gate reads).
    pub fn available_capacity(&self) -> usize {
        self.engine.available_capacity()
    }

    /// The engine's counters (shared by every model on this device).
    pub fn stats(&self) -> EmbedStats {
        self.engine.stats()
    }

    /// Forward passes the device runs at once.
    pub fn streams(&self) -> usize {
        self.engine.streams()
    }

    /// The linear layers' kernels (`aten` or `onednn`).
    pub fn kernels(&self) -> LinearKernels {
        self.engine.kernels()
    }
}

/// A request being served: its vectors so far.
struct Pending {
    out: Vec<Vec<f32>>,
    remaining: usize,
    reply: Reply,
    _permit: Room,
}

/// The state of the inference loop.
struct InferenceLoop {
    rx: mpsc::Receiver<Event>,
    pools: Vec<Pool>,
    pending: HashMap<u64, Pending>,
    /// Streams without a batch (popped from the back).
    free: Vec<usize>,
    /// Each stream's batch channel.
    streams: Vec<mpsc::Sender<Batch>>,
    counters: Arc<Counters>,
    options: BatchOptions,
    /// `cpu` or `cudaN`, the `device` label of the batch histograms.
    device_label: String,
}

/// A stream: runs the batches it is sent, reports each back as an event.
fn run_stream(
    index: usize,
    encoders: &SharedEncoders,
    batches: mpsc::Receiver<Batch>,
    events: mpsc::Sender<Event>,
    threads: usize,
) {
    let _no_grad = tch::no_grad_guard();
    // Per thread: OpenMP, MKL and oneDNN size their teams from the caller's.
    tch::set_num_threads(threads as i32);
    while let Ok(batch) = batches.recv() {
        let started = Instant::now();
        let result = match encoders.0.get(batch.model) {
            Some(encoder) => {
                let refs: Vec<&Tokens> = batch.items.iter().map(|i| &i.tokens).collect();
                std::panic::catch_unwind(AssertUnwindSafe(|| encoder.embed(&refs))).unwrap_or_else(
                    |_| Err(EmbedError::Inference("the forward pass panicked".into())),
                )
            }
            None => Err(EmbedError::Inference(format!("no model #{}", batch.model))),
        };
        release_free_memory_above(TRIM_ABOVE_BYTES);
        let done = Done {
            stream: index,
            batch,
            result,
            micros: started.elapsed().as_micros() as u64,
        };
        if events.send(Event::Done(done)).is_err() {
            return;
        }
    }
}

impl InferenceLoop {
    fn run(&mut self) {
        loop {
            let idle = self.pending.is_empty();
            if self.free.is_empty() || self.waiting_tokens() == 0 {
                let event = if idle && self.free.len() == self.streams.len() {
                    // Idle: after a quiet second, hand freed activation
                    // memory back to the OS (glibc keeps it in its arenas
                    // otherwise). Not at once: the next pass would fault
                    // those pages in again, and a lone request pays that.
                    match self.rx.recv_timeout(RELEASE_WHEN_IDLE_FOR) {
                        Ok(event) => event,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            release_free_memory();
                            let Ok(event) = self.rx.recv() else { return };
                            event
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                } else {
                    let Ok(event) = self.rx.recv() else { return };
                    event
                };
                if !self.handle(event) {
                    return;
                }
                if idle && !self.pending.is_empty() {
                    // The first work after a quiet spell: give others
                    // `max_wait` to join its pass.
                    let deadline = Instant::now() + self.options.max_wait;
                    while self.waiting_tokens() < self.options.max_tokens_per_batch {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let Ok(event) = self.rx.recv_timeout(left) else {
                            break;
                        };
                        if !self.handle(event) {
                            return;
                        }
                    }
                }
            }
            while let Ok(event) = self.rx.try_recv() {
                if !self.handle(event) {
                    return;
                }
            }
            self.drop_cancelled();
            self.start_batches();
        }
    }

    /// Takes in one event; false on [`Event::Stop`].
    fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Request(r) => self.admit(r),
            Event::Done(done) => self.finish(done),
            Event::Stop => return false,
        }
        true
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

    /// Gives every free stream a batch while texts wait: each time the
    /// batch of the model whose pool holds the oldest request.
    fn start_batches(&mut self) {
        while let Some(&stream) = self.free.last() {
            let Some(model) = (0..self.pools.len())
                .filter_map(|m| self.pools[m].oldest().map(|o| (o, m)))
                .min()
                .map(|(_, m)| m)
            else {
                return;
            };
            let items = self.pools[model].next_batch(
                self.options.max_tokens_per_batch,
                self.options.max_batch_size,
                self.options.max_padding,
            );
            if items.is_empty() {
                return;
            }
            self.free.pop();
            if let Err(mpsc::SendError(batch)) = self.streams[stream].send(Batch { model, items }) {
                // The stream's thread is gone; it stays out of `free`.
                self.fail(batch.items, "an inference stream stopped");
            }
        }
    }

    /// Takes back a stream's batch: records it and answers its callers.
    fn finish(&mut self, done: Done) {
        self.free.push(done.stream);
        let items = done.batch.items;
        match done.result {
            Ok(vectors) if vectors.len() == items.len() => {
                let real: usize = items.iter().map(|i| i.tokens.len()).sum();
                let longest = items.iter().map(|i| i.tokens.len()).max().unwrap_or(0);
                let padded = items.len() * longest;
                self.counters
                    .record_batch(items.len(), real, padded, done.micros);
                let device = self.device_label.clone();
                metrics::histogram!(m::EMBED_BATCH_SIZE, "device" => device.clone())
                    .record(items.len() as f64);
                metrics::histogram!(m::EMBED_BATCH_TOKENS, "device" => device)
                    .record(padded as f64);
                for (item, v) in items.into_iter().zip(vectors) {
                    self.deliver(item, v);
                }
            }
            Ok(_) => self.fail(
                items,
                "the forward pass returned the wrong number of vectors",
            ),
            Err(e) => self.fail(items, &e.to_string()),
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

/// [`release_free_memory`] when the malloc arenas hold more than `limit`
/// bytes of free chunks.
fn release_free_memory_above(limit: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads glibc's own bookkeeping.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free > limit {
            release_free_memory();
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = limit;
}

/// Returns the free pages of every malloc arena to the OS.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; no pointers are passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(threads: Option<usize>, streams: Option<usize>) -> BatchOptions {
        BatchOptions {
            threads,
            streams,
            ..BatchOptions::default()
        }
    }

    #[test]
    fn cpu_threads_are_split_between_streams() {
        let cpu = Device::Cpu;
        // Automatic: one stream per thread, at most MAX_AUTO_STREAMS.
        assert_eq!(with(None, None).layout(cpu, 2), (2, 1));
        assert_eq!(with(None, None).layout(cpu, 1), (1, 1));
        assert_eq!(with(Some(16), None).layout(cpu, 2), (4, 4));
        assert_eq!(with(Some(6), None).layout(cpu, 2), (4, 1));
        // Asked for: never more streams than threads.
        assert_eq!(with(Some(8), Some(2)).layout(cpu, 2), (2, 4));
        assert_eq!(with(Some(2), Some(8)).layout(cpu, 2), (2, 1));
        assert_eq!(with(None, Some(1)).layout(cpu, 2), (1, 2));
    }

    #[test]
    fn a_gpu_has_one_stream() {
        assert_eq!(with(None, Some(4)).layout(Device::Cuda(0), 16), (1, 16));
        assert_eq!(with(Some(2), None).layout(Device::Cuda(1), 16), (1, 2));
    }

    #[test]
    fn zero_streams_is_refused() {
        assert!(with(None, Some(0)).validate(256).is_err());
        assert!(with(None, Some(1)).validate(256).is_ok());
    }
}
