//! `huiqi-providers`: runs the check-provider and treasury simulator alone.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let fixtures =
        std::env::var("HUIQI_FIXTURES").unwrap_or_else(|_| "deploy/sample/fixtures".into());
    let mut settings = huiqi_providers::Settings::new(&url, fixtures.into());
    settings.ledger_path = std::env::var("HUIQI_LEDGER").ok().map(Into::into);
    let app = huiqi_providers::build(settings)
        .await
        .context("starting providers")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    app.run(shutdown).await.context("providers stopped")?;
    Ok(())
}
