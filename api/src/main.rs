//! `hopper-api`: Hopper's HTTP API. Settings come from the environment (see
//! `hopper_shared::Config`); a missing service stops it with one clear line.

use hopper_shared::{Config, telemetry};

#[tokio::main]
async fn main() {
    let result = async {
        let config = Config::from_env()?;
        telemetry::init(config.log_format);
        hopper_api::serve(config).await
    }
    .await;
    if let Err(e) = result {
        eprintln!("hopper-api: {e:#}");
        std::process::exit(1);
    }
}
