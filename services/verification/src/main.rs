//! `huiqi-verification`: runs the verification service alone (`huiqi up` runs everything in one process).
//! Every flag has an environment variable (`--help` lists them); the service needs its signing
//! key and the trust file, and logs in to NATS with the credentials given.

/// mimalloc: glibc malloc was a fifth of all CPU under load (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;

/// Huiqi verification: runs each claim's checks against the bureau providers.
#[derive(Parser)]
#[command(name = "huiqi-verification", version)]
struct Args {
    #[command(flatten)]
    service: huiqi_bus::cli::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.service.init_telemetry("info")?;
    let config = args.service.config(huiqi_verification::SERVICE)?;
    let app = huiqi_verification::build(huiqi_verification::Settings::new(config))
        .await
        .context("starting verification")?;
    app.run(huiqi_bus::service::shutdown_signal())
        .await
        .context("verification stopped")?;
    Ok(())
}
