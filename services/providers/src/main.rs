//! `huiqi-providers`: runs the check-provider and treasury simulator alone. Every flag has an
//! environment variable (`--help` lists them).

/// mimalloc: glibc malloc was a fifth of all CPU under load (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// Huiqi's stand-in for the bureau check providers and the treasury, answering from fixtures.
#[derive(Parser)]
#[command(name = "huiqi-providers", version)]
struct Args {
    #[command(flatten)]
    nats: huiqi_bus::NatsArgs,
    /// Folder of `<check>.jsonl` fixture files.
    #[arg(long, env = "HUIQI_FIXTURES", default_value = "deploy/sample/fixtures")]
    fixtures: PathBuf,
    /// The treasury's ledger (JSON Lines); without it the ledger lives in memory only.
    #[arg(long, env = "HUIQI_LEDGER")]
    ledger: Option<PathBuf>,
    /// Added to every check reply, in milliseconds (for drills: a slow bureau).
    #[arg(long, env = "HUIQI_PROVIDER_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// How long to keep trying the first NATS connection, seconds.
    #[arg(long, env = "HUIQI_CONNECT_RETRY_SECS", default_value_t = 120)]
    connect_retry_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    huiqi_bus::telemetry::init("info");
    let mut nats = args.nats.options();
    if nats.inbox_prefix.is_none() {
        nats.inbox_prefix = Some(huiqi_bus::access::inbox_prefix("simulator"));
    }
    nats.connect_retry = std::time::Duration::from_secs(args.connect_retry_secs);
    let mut settings = huiqi_providers::Settings::new(nats, args.fixtures);
    settings.ledger_path = args.ledger;
    settings.latency = std::time::Duration::from_millis(args.latency_ms);
    let app = huiqi_providers::build(settings)
        .await
        .context("starting providers")?;
    app.run(huiqi_bus::service::shutdown_signal())
        .await
        .context("providers stopped")?;
    Ok(())
}
