//! `huiqi-intake`: runs the intake service alone (`huiqi up` runs everything in one process).
//! Every flag has an environment variable (`--help` lists them); the service needs its signing
//! key and the trust file, and logs in to NATS with the credentials given.

/// mimalloc: glibc malloc was a fifth of all CPU under load (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;

/// Huiqi intake: answers every portal application once and opens claims.
#[derive(Parser)]
#[command(name = "huiqi-intake", version)]
struct Args {
    #[command(flatten)]
    service: huiqi_bus::cli::ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.service.init_telemetry("info")?;
    // One worker per partition this process holds (one for intake or an unsplit deployment).
    let configs = args.service.configs(huiqi_intake::SERVICE)?;
    huiqi_bus::service::run_workers(
        configs,
        huiqi_bus::service::shutdown_signal(),
        |config| async move {
            let partition = config.partition;
            huiqi_intake::build(huiqi_intake::Settings::new(config))
                .await
                .with_context(|| format!("starting intake (partition {partition})"))
        },
        |app, shutdown| async move { app.run(shutdown).await.context("intake stopped") },
    )
    .await
}
