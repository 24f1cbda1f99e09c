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
    let healthy = huiqi::status::health_reports(&operator).await;
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
    assert_eq!(healthy.len(), 4);
    for s in &healthy {
        let r = s.report.as_ref().expect("every service answers");
        assert_eq!(r.status, "ok", "{}: {r:?}", s.service);
        assert!(r.received >= 1, "{} received the claim", s.service);
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
    let mut reports = Vec::new();
    for _ in 0..40 {
        reports = huiqi::status::health_reports(&operator).await;
        if reports
            .iter()
            .any(|s| s.report.as_ref().is_some_and(|r| r.status == "degraded"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pipeline.stop().await.unwrap();
    let by = |name: &str| {
        reports
            .iter()
            .find(|s| s.service == name)
            .and_then(|s| s.report.clone())
            .expect("answered")
    };
    let v = by("verification");
    assert_eq!(v.status, "degraded", "{v:?}");
    assert!(v.providers.iter().any(|p| p["subject"]
        .as_str()
        .unwrap()
        .starts_with("huiqi.checks.")
        && p["failing_for_attempts"].as_u64().unwrap() > 0));
    assert_eq!(by("award").status, "ok");
    let text = huiqi::status::render_services(&reports);
    assert!(text.contains("FAILING for"), "{text}");
    assert!(text.contains("degraded"), "{text}");
}

/// `huiqi` as an operator's scripts use it: JSON where the output is data, exit code 3 for what
/// does not exist, against a running pipeline and then its stopped logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_json_and_exits_3_for_what_does_not_exist() {
    let mut fx = Fixtures::default();
    let app = gen::m1_application(&mut fx, "CLI-1", &gen::uscc(41), 0, 30, 2);
    let rig = Rig::new(None, &fx);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe_with(&pipeline.admin()).await;
    let env = Envelope::new("cli", types::APPLICATION_SUBMITTED, "CLI-1", &app).unwrap();
    huiqi::watch::publish_all(&js, &[env], 1).await.unwrap();
    assert!(
        w.until(Duration::from_secs(60), |w| w
            .by_application
            .get("CLI-1")
            .is_some_and(|o| !o.settled.is_empty()))
            .await
    );
    let keys = rig.settings.keys_dir();
    let url = pipeline.url().to_string();
    let huiqi = |user: &str, args: &[&str]| {
        let out = std::process::Command::new(huiqi_e2e::procs::binary("huiqi"))
            .args(args)
            .env("NATS_URL", &url)
            .env(
                "NATS_NKEY",
                huiqi_bus::access::NatsUsers::seed_path(&keys, user),
            )
            .env("NATS_INBOX_PREFIX", huiqi_bus::access::inbox_prefix(user))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = huiqi("operator", &["status", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["services"].as_array().unwrap().len(), 4);
    assert_eq!(status["consumers"][2]["name"], "award");
    assert!(status["stream"]["messages"].as_u64().unwrap() >= 5);
    let (code, out, err) = huiqi("operator", &["health", "--service", "award", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"],
        "ok"
    );
    let (code, _, err) = huiqi("operator", &["query", "--claim-id", "C-no-such-claim"]);
    assert_eq!(code, Some(3), "unknown claim: {err}");
    let (code, out, _) = huiqi("operator", &["query", "--application-id", "CLI-1"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["state"],
        "settled"
    );
    let (code, out, err) = huiqi("admin", &["parked", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );
    let (code, _, err) = huiqi("admin", &["parked", "--republish", "999"]);
    assert_eq!(code, Some(3), "unknown parked sequence: {err}");
    // Audit while running: each service recomputes its own chain.
    let (code, out, err) = huiqi("operator", &["audit", "--live", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let live: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(live.as_array().unwrap().len(), 4);
    for r in live.as_array().unwrap() {
        assert!(r["audit"]["records"].as_u64().unwrap() >= 1, "{r}");
        assert_eq!(r["audit"]["problems"], serde_json::json!([]), "{r}");
    }
    pipeline.stop().await.unwrap();

    let data = rig.data_dir().to_str().unwrap().to_string();
    let (code, out, err) = huiqi("operator", &["audit", "--json", "--data-dir", &data]);
    assert_eq!(code, Some(0), "{err}");
    let audit: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(audit.as_array().unwrap().len(), 4);
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["problems"] == serde_json::json!([])));
    let (code, out, err) = huiqi("operator", &["replay", "--json", "--data-dir", &data]);
    assert_eq!(code, Some(0), "{err}");
    let replay: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (replay["decisions"].as_u64(), replay["identical"].as_u64()),
        (Some(1), Some(1))
    );
}
