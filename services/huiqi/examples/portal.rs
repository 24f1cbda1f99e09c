//! A portal's client, as docs/PORTALS.md describes: submit application files as portal `P`,
//! then read this portal's answers (durably: answers not yet read wait for the next run).
//!
//! ```text
//! NATS_URL=nats://host:4222 NATS_NKEY=keys/nats/portal-p.seed NATS_INBOX_PREFIX=_INBOX_portal-p \
//!   cargo run -p huiqi --example portal -- p app1.json app2.json
//! ```

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let portal = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: portal NAME [APPLICATION.json …]"))?;
    let files: Vec<std::path::PathBuf> = args.map(Into::into).collect();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut options = huiqi_bus::NatsOptions::new(&url);
    if let Ok(seed_file) = std::env::var("NATS_NKEY") {
        options = options.with_nkey(std::fs::read_to_string(seed_file)?.trim());
    }
    options = options.with_inbox_prefix(
        &std::env::var("NATS_INBOX_PREFIX")
            .unwrap_or_else(|_| huiqi_bus::access::inbox_prefix(&format!("portal-{portal}"))),
    );
    let client = options.connect("example-portal").await?;
    let portal = huiqi::clients::Portal::new(client, &portal);
    let mut events = Vec::new();
    for f in &files {
        // Every file is read before anything is sent: one bad file sends nothing.
        let (app, env) = huiqi::commands::read_application(f)?;
        println!(
            "{}: application {} as event {}",
            f.display(),
            app.application_id,
            env.id
        );
        events.push(env);
    }
    portal.submit(&events).await?;
    for a in portal.answers(usize::MAX, Duration::from_secs(5)).await? {
        match a.claim_id {
            Some(claim) => println!(
                "{} accepted: claim {claim} (answers event {:?})",
                a.application_id, a.answers_event
            ),
            None => println!(
                "{} rejected (answers event {:?}): {:?}",
                a.application_id, a.answers_event, a.errors
            ),
        }
    }
    Ok(())
}
