//! `huiqi-providers`: runs the check-provider and treasury simulator alone.
//! Configured by `NATS_URL`, `HUIQI_FIXTURES`, `HUIQI_LEDGER` and `RUST_LOG`.

use anyhow::Context;
use huiqi_bus::service::BinaryEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = BinaryEnv::read(huiqi_providers::SERVICE);
    let fixtures =
        std::env::var("HUIQI_FIXTURES").unwrap_or_else(|_| "deploy/sample/fixtures".into());
    let mut settings = huiqi_providers::Settings::new(&env.nats_url, fixtures.into());
    settings.ledger_path = std::env::var("HUIQI_LEDGER").ok().map(Into::into);
    let app = huiqi_providers::build(settings)
        .await
        .context("starting providers")?;
    app.run(BinaryEnv::shutdown_signal())
        .await
        .context("providers stopped")?;
    Ok(())
}
