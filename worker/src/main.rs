//! `hopper-worker`: serves the built-in tasks named by `--queues` (custom
//! tasks run in a binary of their own built on the library, see
//! `examples/custom-task`).
//!
//! A worker that serves the embed queue decides its precision and kernels
//! before it connects to anything ([`EngineChoice::decide`]): bf16 only where
//! the CPU runs it natively. An impossible choice exits at once, non-zero,
//! with a one-line reason on stderr; the choice made is logged once.

use clap::Parser;

// mimalloc, not glibc's malloc: a worker's hot path is many small short-lived allocations
// (JSON values, job records, Redis commands), and glibc's malloc/free took a quarter of a
// bridge worker's CPU under load (perf, scripts/bench/celery).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use hopper_shared::{Config, jobs::JobKind, telemetry};
use hopper_worker::{
    WorkerOptions,
    device::{self, DeviceChoice},
    embed::{EngineChoice, LinearKernels, ModelSpec, PrecisionChoice},
};

/// Runs Hopper jobs from Redis queues, acknowledging each only after its
/// result is committed in Postgres.
#[derive(Debug, Parser)]
#[command(name = "hopper-worker", version)]
struct Args {
    /// Comma-separated built-in tasks to serve (echo, noop, ingest, embed,
    /// summarize, webhook). May be empty when the Celery bridge is on
    /// (`HOPPER_CELERY_QUEUES`).
    #[arg(long, env = "HOPPER_QUEUES", value_delimiter = ',')]
    queues: Vec<String>,
    /// Torch device: auto, cpu, cuda or cuda:N.
    #[arg(long, env = "HOPPER_DEVICE", default_value = "auto")]
    device: DeviceChoice,
    /// Inference precision: auto (fp16 on CUDA; on a CPU bf16 where it is
    /// native, else fp32), fp32, bf16 (refused on a CPU without native
    /// bf16) or fp16 (CUDA only). `HOPPER_CPU_BF16=0|1` overrides the CPU's
    /// detection.
    #[arg(long, env = "HOPPER_PRECISION", default_value = "auto")]
    precision: PrecisionChoice,
    /// Embedding models, `DIR` or `NAME=DIR`, comma-separated; the first is
    /// the default (and its tokenizer chunks documents).
    #[arg(long = "model", env = "HOPPER_MODEL_DIR", value_delimiter = ',')]
    models: Vec<ModelSpec>,
    /// Texts the embedding engine holds unanswered at most; the embed queue
    /// claims new jobs only while it has room (default 4096).
    #[arg(long, env = "HOPPER_EMBED_QUEUE_TEXTS")]
    embed_queue_texts: Option<usize>,
    /// Torch intra-op threads for embedding, in all (default: one per core).
    #[arg(long, env = "HOPPER_EMBED_THREADS")]
    embed_threads: Option<usize>,
    /// Forward passes run at once, the threads split between them (default:
    /// one on CUDA; on a CPU one per thread, at most 4).
    #[arg(long, env = "HOPPER_EMBED_STREAMS")]
    embed_streams: Option<usize>,
    /// Linear-layer kernels: auto (oneDNN with packed weights on CPU), aten
    /// or onednn.
    #[arg(long, env = "HOPPER_EMBED_LINEAR", default_value = "auto")]
    embed_linear: LinearKernels,
}

fn main() {
    // SAFETY: the first thing main does; no other thread exists yet.
    unsafe { hopper_worker::embed::onednn::bound_primitive_cache() };
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(start(args)));
    // The spans still batched for OTLP go out before the process ends.
    telemetry::shutdown();
    if let Err(e) = result {
        eprintln!("hopper-worker: {e:#}");
        std::process::exit(1);
    }
}

async fn start(args: Args) -> anyhow::Result<()> {
    let shutdown = hopper_worker::shutdown_signal()?;
    let config = Config::from_env()?;
    telemetry::init(config.log_format, config.otlp_endpoint.as_ref());
    let named: Vec<String> = args
        .queues
        .into_iter()
        .filter(|q| !q.trim().is_empty())
        .collect();
    let queues = hopper_worker::builtin::parse(&named)?;
    let celery = hopper_celery::config::CeleryConfig::from_lookup(|k| std::env::var(k).ok())?;
    let celery = celery.enabled().then_some(celery);
    let device = device::resolve(args.device)?;
    let described = device::describe(device)?;
    tracing::info!("{described}");
    let embedding = if queues.contains(&JobKind::Embed) {
        let choice = EngineChoice::decide(device, args.precision, args.embed_linear)?;
        tracing::info!(
            precision = %choice.precision,
            kernels = %choice.kernels,
            cpu_bf16 = ?choice.cpu.as_ref().map(|c| c.native),
            "embedding in {choice}"
        );
        Some(choice)
    } else {
        None
    };
    let opts = WorkerOptions {
        queues,
        device,
        device_description: described,
        embedding,
        models: args.models,
        embed_queue_texts: args.embed_queue_texts,
        embed_threads: args.embed_threads,
        embed_streams: args.embed_streams,
        celery,
    };
    hopper_worker::run(config, opts, shutdown).await
}
