//! `huiqi-award`: runs the award service alone (see the `huiqi` binary for all-in-one).

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let dir = std::env::var("HUIQI_DATA_DIR").unwrap_or_else(|_| "huiqi-data".into());
    let settings = huiqi_award::Settings::new(&url, std::path::Path::new(&dir).join("award"));
    let app = huiqi_award::build(settings)
        .await
        .context("starting award")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    app.run(shutdown).await.context("award stopped")?;
    Ok(())
}
