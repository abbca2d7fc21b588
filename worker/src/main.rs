//! `hopper-worker`: runs jobs from the queues named by `--queues`.

use anyhow::Context;
use clap::Parser;
use hopper_shared::{Config, jobs::JobKind, telemetry};
use hopper_worker::{
    WorkerOptions,
    device::{self, DeviceChoice},
    embed::{LinearKernels, ModelSpec, Precision},
};

/// Runs Hopper jobs from Redis queues, acknowledging each only after its
/// result is committed in Postgres.
#[derive(Debug, Parser)]
#[command(name = "hopper-worker", version)]
struct Args {
    /// Comma-separated queues to serve (echo, ingest, embed, summarize).
    #[arg(long, env = "HOPPER_QUEUES", value_delimiter = ',', required = true)]
    queues: Vec<String>,
    /// Torch device: auto, cpu, cuda or cuda:N.
    #[arg(long, env = "HOPPER_DEVICE", default_value = "auto")]
    device: DeviceChoice,
    /// Inference precision: fp32 (CPU default), bf16, fp16 (CUDA default).
    #[arg(long, env = "HOPPER_PRECISION")]
    precision: Option<Precision>,
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
    if let Err(e) = result {
        eprintln!("hopper-worker: {e:#}");
        std::process::exit(1);
    }
}

async fn start(args: Args) -> anyhow::Result<()> {
    let shutdown = hopper_worker::shutdown_signal()?;
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    let queues = args
        .queues
        .iter()
        .map(|q| {
            q.trim()
                .parse::<JobKind>()
                .with_context(|| format!("known kinds: {}", JobKind::names().join(", ")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let device = device::resolve(args.device)?;
    let described = device::describe(device)?;
    tracing::info!("{described}");
    let opts = WorkerOptions {
        queues,
        device,
        device_description: described,
        precision: args
            .precision
            .unwrap_or_else(|| Precision::default_for(device)),
        models: args.models,
        embed_queue_texts: args.embed_queue_texts,
        embed_threads: args.embed_threads,
        embed_streams: args.embed_streams,
        embed_linear: args.embed_linear,
    };
    hopper_worker::run(config, opts, shutdown).await
}
