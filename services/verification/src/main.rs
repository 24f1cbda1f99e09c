//! `huiqi-verification`: runs the verification service alone (`huiqi up` runs everything in one process).
//! Configured by `NATS_URL`, `HUIQI_DATA_DIR` and `RUST_LOG`.

use anyhow::Context;
use huiqi_bus::service::BinaryEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = BinaryEnv::read(huiqi_verification::SERVICE);
    let settings = huiqi_verification::Settings::new(&env.nats_url, env.data_dir);
    let app = huiqi_verification::build(settings)
        .await
        .context("starting verification")?;
    app.run(BinaryEnv::shutdown_signal())
        .await
        .context("verification stopped")?;
    Ok(())
}
