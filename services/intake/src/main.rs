//! `huiqi-intake`: runs the intake service alone (`huiqi up` runs everything in one process).
//! Configured by `NATS_URL`, `HUIQI_DATA_DIR` and `RUST_LOG`.

use anyhow::Context;
use huiqi_bus::service::BinaryEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = BinaryEnv::read(huiqi_intake::SERVICE);
    let settings = huiqi_intake::Settings::new(&env.nats_url, env.data_dir);
    let app = huiqi_intake::build(settings)
        .await
        .context("starting intake")?;
    app.run(BinaryEnv::shutdown_signal())
        .await
        .context("intake stopped")?;
    Ok(())
}
