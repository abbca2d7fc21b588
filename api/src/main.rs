//! `hopper-api`: Hopper's HTTP API. Settings come from the environment (see
//! `hopper_shared::Config`); a missing service stops it with one clear line.

use hopper_shared::{Config, telemetry};

// mimalloc, not glibc's malloc: a worker's hot path is many small short-lived allocations
// (JSON values, job records, Redis commands), and glibc's malloc/free took a quarter of a
// bridge worker's CPU under load (perf, scripts/bench/celery).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let result = async {
        let config = Config::from_env()?;
        telemetry::init(config.log_format, config.otlp_endpoint.as_ref());
        hopper_api::serve(config).await
    }
    .await;
    // The spans still batched for OTLP go out before the process ends.
    telemetry::shutdown();
    if let Err(e) = result {
        eprintln!("hopper-api: {e:#}");
        std::process::exit(1);
    }
}
