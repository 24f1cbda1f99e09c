//! `huiqi-payout`: runs the payout service alone (`huiqi up` runs everything in one process).
//! Configured by `NATS_URL`, `HUIQI_DATA_DIR` and `RUST_LOG`.

use anyhow::Context;
use huiqi_bus::service::BinaryEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = BinaryEnv::read(huiqi_payout::SERVICE);
    let settings = huiqi_payout::Settings::new(&env.nats_url, env.data_dir);
    let app = huiqi_payout::build(settings)
        .await
        .context("starting payout")?;
    app.run(BinaryEnv::shutdown_signal())
        .await
        .context("payout stopped")?;
    Ok(())
}
