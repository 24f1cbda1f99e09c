//! A bureau system's consumer, as docs/BUREAUS.md describes: pull approved and rejected awards
//! from the durable consumer `bureau-awards`, verify each signature against the deployment's
//! published trust file, skip events before a point in time, and ack.
//!
//! ```text
//! NATS_URL=nats://host:4222 NATS_NKEY=keys/nats/bureau.seed NATS_INBOX_PREFIX=_INBOX_bureau \
//!   cargo run -p huiqi --example bureau -- keys/trust.json [2023-03-01T00:00:00+08:00]
//! ```

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let trust_file = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bureau TRUST.json [SINCE]"))?;
    let since = args
        .next()
        .map(|s| chrono::DateTime::parse_from_rfc3339(&s))
        .transpose()?;
    let trust = huiqi_bus::trust::TrustStore::from_file(std::path::Path::new(&trust_file))?;
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut options = huiqi_bus::NatsOptions::new(&url)
        .with_inbox_prefix(&huiqi_bus::access::inbox_prefix("bureau"));
    if let Ok(seed_file) = std::env::var("NATS_NKEY") {
        options = options.with_nkey(std::fs::read_to_string(seed_file)?.trim());
    }
    let client = options.connect("example-bureau").await?;
    loop {
        let batch = huiqi::clients::bureau_pull(
            client.clone(),
            "bureau-awards",
            &trust,
            since,
            100,
            Duration::from_secs(2),
        )
        .await?;
        for (seq, why) in &batch.refused {
            eprintln!("stream #{seq}: REFUSED, not acted on: {why}");
        }
        for e in &batch.events {
            let d = e.envelope.data.value();
            println!(
                "#{} {} claim {} {} total {} (signed by {})",
                e.stream_sequence, e.subject, d["claim_id"], d["status"], d["total"], e.signed_by
            );
        }
        if batch.events.is_empty() && batch.refused.is_empty() && batch.skipped == 0 {
            return Ok(());
        }
    }
}
