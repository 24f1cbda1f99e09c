//! `huiqi-payout`: runs the payout service alone (`huiqi up` runs everything in one process).
//! Every flag has an environment variable (`--help` lists them); the service needs its signing
//! key and the trust file, and logs in to NATS with the credentials given.

/// mimalloc: glibc malloc was a fifth of all CPU under load (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;

/// Huiqi payout: pays each approved award exactly once.
#[derive(Parser)]
#[command(name = "huiqi-payout", version)]
struct Args {
    #[command(flatten)]
    service: huiqi_bus::cli::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.service.init_telemetry("info")?;
    // One worker per partition this process holds (one for intake or an unsplit deployment).
    let configs = args.service.configs(huiqi_payout::SERVICE)?;
    huiqi_bus::service::run_workers(
        configs,
        huiqi_bus::service::shutdown_signal(),
        |config| async move {
            let partition = config.partition;
            huiqi_payout::build(huiqi_payout::Settings::new(config))
                .await
                .with_context(|| format!("starting payout (partition {partition})"))
        },
        |app, shutdown| async move { app.run(shutdown).await.context("payout stopped") },
    )
    .await
}
