//! What an operator watches: the Prometheus endpoint's counters move when a claim goes
//! through, and `huiqi status` names a provider outage while it lasts (on the private,
//! authenticated server, with the operator's login).

use huiqi::gen::{self, Fixtures};
use huiqi_e2e::{observe_with, Rig};
use huiqi_events::{types, Envelope};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .expect("scrape in time")
        .unwrap();
    body
}

/// The sum of a metric's samples whose labels contain every `labels` pair.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            (rest.starts_with('{') || rest.starts_with(' ')) && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_when_a_claim_goes_through_and_status_shows_a_provider_outage() {
    // The recorder is process-wide: this is the only test that installs it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    huiqi_bus::health::serve_metrics(addr).unwrap();
    let before = scrape(addr).await;

    let mut fx = Fixtures::default();
    let app = gen::m1_application(&mut fx, "OBS-1", &gen::uscc(31), 0, 30, 2);
    let rig = Rig::new(None, &fx);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe_with(&pipeline.admin()).await;
    let env = Envelope::new("obs", types::APPLICATION_SUBMITTED, "OBS-1", &app).unwrap();
    huiqi::watch::publish_all(&js, &[env], 1).await.unwrap();
    assert!(
        w.until(Duration::from_secs(60), |w| w
            .by_application
            .get("OBS-1")
            .is_some_and(|o| !o.settled.is_empty()))
            .await
    );
    let operator = pipeline
        .options("operator")
        .connect("obs-op")
        .await
        .unwrap();
    let healthy = huiqi::commands::service_health(&operator).await;
    pipeline.stop().await.unwrap();
    let after = scrape(addr).await;
    let moved =
        |name: &str, labels: &[&str]| value(&after, name, labels) - value(&before, name, labels);
    assert!(
        moved(
            "huiqi_awards_decided_total",
            &["measure=\"M1\"", "status=\"approved\""]
        ) >= 1.0,
        "{after}"
    );
    assert!(
        moved("huiqi_payouts_total", &["outcome=\"settled\""]) >= 1.0,
        "{after}"
    );
    assert!(
        moved(
            "huiqi_applications_answered_total",
            &["outcome=\"accepted\""]
        ) >= 1.0
    );
    assert!(moved("huiqi_messages_received_total", &["service=\"award\""]) >= 1.0);
    assert!(
        moved(
            "huiqi_provider_requests_total",
            &[
                "subject=\"huiqi.checks.social_insurance\"",
                "outcome=\"ok\""
            ]
        ) >= 1.0
    );
    assert!(
        after.contains("huiqi_provider_request_seconds"),
        "provider latency"
    );
    assert!(after.contains("huiqi_consumer_pending"), "consumer lag");
    for svc in ["intake", "verification", "award", "payout"] {
        assert!(
            healthy.contains(&format!("  {svc:<13} ok")),
            "{svc} healthy:\n{healthy}"
        );
    }

    // No provider at all: verification keeps retrying, and status says so.
    let mut fx = Fixtures::default();
    let app = gen::m1_application(&mut fx, "OBS-2", &gen::uscc(32), 100, 30, 2);
    let mut rig = Rig::new(None, &fx);
    rig.settings.fixtures_dir = None;
    let pipeline = rig.start().await;
    let (_c, js, _w) = observe_with(&pipeline.admin()).await;
    let env = Envelope::new("obs", types::APPLICATION_SUBMITTED, "OBS-2", &app).unwrap();
    huiqi::watch::publish_all(&js, &[env], 1).await.unwrap();
    let operator = pipeline
        .options("operator")
        .connect("obs-op")
        .await
        .unwrap();
    let mut report = String::new();
    for _ in 0..40 {
        report = huiqi::commands::service_health(&operator).await;
        if report.contains("FAILING") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pipeline.stop().await.unwrap();
    assert!(report.contains("verification  degraded"), "{report}");
    assert!(report.contains("huiqi.checks."), "{report}");
    assert!(report.contains("FAILING for"), "{report}");
    assert!(report.contains("award         ok"), "{report}");
}
