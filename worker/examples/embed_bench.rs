//! Throughput benchmark of the embedding engine, driven by `scripts/bench/embed`.
//!
//! Loads one model, embeds every sentence of a JSON array in one `embed`
//! call (the engine batches and length-sorts them), and prints one JSON
//! line: sentences/s, tokens/s, the engine's counters and the process's peak
//! RSS. With `--out`, writes the vectors as raw little-endian f32 for the
//! script's cosine comparison against sentence-transformers.
//!
//! ```text
//! embed_bench --model-dir DIR --input sentences.json [--precision auto|fp32|bf16|fp16]
//!             [--device cpu|cuda|cuda:N|auto] [--threads 2] [--out vectors.f32]
//!             [--streams N] [--linear auto|aten|onednn] [--label NAME]
//!             [--max-tokens N] [--max-batch N] [--repeat N]
//! embed_bench --check [--precision P] [--linear K] [--device D]
//! ```
//!
//! A run that cannot start (bf16 on a CPU without native bf16, a missing
//! model) prints one JSON line with `error` instead, and exits 1.

use std::{io::Write, path::PathBuf, time::Instant};

use anyhow::Context;
use clap::Parser;
use hopper_worker::{
    device::{self, DeviceChoice},
    embed::{BatchOptions, EngineChoice, LinearKernels, ModelRegistry, ModelSpec, PrecisionChoice},
};

#[derive(Parser)]
struct Args {
    /// The sentence-transformers model directory.
    #[arg(long, env = "HOPPER_MODEL_DIR")]
    model_dir: PathBuf,
    /// A JSON array of strings (required unless `--check`).
    #[arg(long)]
    input: Option<PathBuf>,
    /// auto, fp32, bf16 or fp16 (auto: fp16 on CUDA; on a CPU bf16 where
    /// it is native, else fp32). bf16 on a CPU without native bf16 is
    /// refused: the run prints `{"error": …}` and exits non-zero.
    #[arg(long, default_value = "auto")]
    precision: PrecisionChoice,
    /// Print what `--precision` and `--linear` come to on this machine as
    /// one JSON line, and exit (0, or 1 with `error` when refused).
    #[arg(long)]
    check: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Torch intra-op threads in all.
    #[arg(long)]
    threads: Option<usize>,
    /// Forward passes at once, the threads split between them (default:
    /// the engine's choice).
    #[arg(long)]
    streams: Option<usize>,
    /// The linear layers' kernels.
    #[arg(long, default_value = "auto")]
    linear: LinearKernels,
    /// Where to write the vectors (raw little-endian f32, row-major).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Padded tokens per forward pass at most.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Texts per forward pass at most.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Padding allowed per batch, as a fraction of real tokens.
    #[arg(long)]
    max_padding: Option<f64>,
    /// Timed runs over the whole input; the best is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// A name for this configuration in the output (default: the precision).
    #[arg(long)]
    label: Option<String>,
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// A `/proc/self/status` field given in kB, in MB.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    // SAFETY: the first thing main does; no other thread exists yet.
    unsafe { hopper_worker::embed::onednn::bound_primitive_cache() };
    let args = Args::parse();
    if let Err(e) = run(args) {
        // One JSON line with the reason, for scripts/bench/embed.
        println!(
            "{}",
            serde_json::json!({ "engine": "hopper", "error": format!("{e:#}") })
        );
        eprintln!("embed_bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let device = device::resolve(args.device)?;
    let choice = EngineChoice::decide(device, args.precision, args.linear)?;
    if args.check {
        println!("{}", choice.to_json());
        return Ok(());
    }
    let precision = choice.precision;
    let input = args.input.as_ref().context("--input is required")?;
    let texts: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(input)
            .with_context(|| format!("cannot read {}", input.display()))?,
    )?;
    let defaults = BatchOptions::for_device(device);
    let options = BatchOptions {
        threads: args.threads,
        streams: args.streams,
        kernels: args.linear,
        max_tokens_per_batch: args.max_tokens.unwrap_or(defaults.max_tokens_per_batch),
        max_batch_size: args.max_batch.unwrap_or(defaults.max_batch_size),
        max_padding: args.max_padding.unwrap_or(defaults.max_padding),
        ..defaults
    };
    device::describe(device)?; // initialises torch
    let rss_torch = peak_rss_mb();
    let t0 = Instant::now();
    let registry = ModelRegistry::load_with(
        &[ModelSpec::from_dir(&args.model_dir)],
        device,
        precision,
        &options,
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    let rss_after_load = peak_rss_mb();
    let rss_now_after_load = status_mb("VmRSS:");
    let model = registry.resolve(None)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let o = rt.block_on(model.embed(texts.clone()))?;
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(o);
    }
    let out = out.context("no run")?;
    let stats = model.stats();
    let runs = args.repeat.max(1) as f64;
    if let Some(path) = &args.out {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for v in &out.vectors {
            for x in v {
                f.write_all(&x.to_le_bytes())?;
            }
        }
        f.flush()?;
    }
    let n = texts.len() as f64;
    let real_tokens = stats.tokens_real as f64 / runs;
    let line = serde_json::json!({
        "engine": "hopper",
        "device": format!("{device:?}"),
        "precision": precision.as_str(),
        "label": args.label.as_deref().unwrap_or(precision.as_str()),
        "threads": args.threads,
        "streams": model.streams(),
        "threads_per_stream": tch::get_num_threads(),
        "linear": model.kernels().as_str(),
        "precision_asked": choice.asked.to_string(),
        "precision_why": choice.precision_why,
        "cpu_bf16": choice.cpu.as_ref().map(|c| c.native),
        "sentences": texts.len(),
        "seconds": best,
        "sps": n / best,
        "tokens_per_s": real_tokens / best,
        "load_seconds": load_s,
        "forward_passes": stats.forward_passes as f64 / runs,
        "padding_overhead": stats.tokens_padded as f64 / stats.tokens_real.max(1) as f64 - 1.0,
        "mean_batch": stats.texts_embedded as f64 / stats.forward_passes.max(1) as f64,
        "truncated": out.truncated,
        "model_version": out.model_version,
        "dim": model.dim(),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_after_load_mb": rss_after_load,
        "rss_after_load_mb": rss_now_after_load,
        "rss_torch_init_mb": rss_torch,
    });
    println!("{line}");
    Ok(())
}
