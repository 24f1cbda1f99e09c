//! The shipped `deploy/nats-server.conf`, run by a real nats-server, against a table of what
//! every user may and may not do. Also: the shipped file is exactly what `huiqi nats-config`
//! renders from `huiqi_bus::access`, and `nats-server -t` accepts it.

use async_nats::jetstream;
use huiqi_bus::access::{self, NatsUsers, USERS};
use huiqi_bus::NatsServer;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats-server.conf")
}

#[test]
fn the_shipped_configuration_is_the_rendered_one_and_valid() {
    let text = std::fs::read_to_string(shipped()).expect("deploy/nats-server.conf");
    assert_eq!(
        text,
        access::shipped_config(),
        "deploy/nats-server.conf drifted from huiqi_bus::access: regenerate it with `huiqi nats-config > deploy/nats-server.conf`"
    );
    let users = NatsUsers::generate();
    let out = std::process::Command::new(
        std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into()),
    )
    .args(["-t", "-c"])
    .arg(shipped())
    .envs(env_of(&users))
    .output()
    .expect("run nats-server -t");
    assert!(
        out.status.success(),
        "nats-server -t refused the shipped config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_cluster_configuration_is_the_rendered_one_and_valid() {
    let path = shipped().with_file_name("nats-cluster.conf");
    let text = std::fs::read_to_string(&path).expect("deploy/nats-cluster.conf");
    assert_eq!(
        text,
        access::shipped_cluster_config(),
        "deploy/nats-cluster.conf drifted from huiqi_bus::access: regenerate it with `huiqi nats-config --cluster > deploy/nats-cluster.conf`"
    );
    // The same users and permissions as the single server, plus the cluster block.
    assert!(text.contains(
        access::shipped_config()
            .split("\naccounts {")
            .nth(1)
            .unwrap()
    ));
    let mut env = env_of(&NatsUsers::generate());
    env.push(("HUIQI_NATS_SERVER_NAME".into(), "nats-1".into()));
    env.extend(access::cluster_env().lines().filter_map(|l| {
        l.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
    }));
    assert_eq!(
        env.iter()
            .filter(|(k, _)| k.starts_with("HUIQI_NATS_ROUTE_"))
            .count(),
        3
    );
    let out = std::process::Command::new(
        std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into()),
    )
    .args(["-t", "-c"])
    .arg(&path)
    .envs(env)
    .output()
    .expect("run nats-server -t");
    assert!(
        out.status.success(),
        "nats-server -t refused the shipped cluster config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped cluster file run as three nodes on loopback (route listeners moved with
/// `--cluster`, routes pointed at them through the same variables compose sets): the routes
/// log in with the password, JetStream forms, the admin provisions the stream at R3, and a
/// service user publishes through one node and is read back through another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_cluster_configuration_forms_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let path = shipped().with_file_name("nats-cluster.conf");
    let users = NatsUsers::generate();
    let password = "a-route-password-for-this-test-only";
    let route_ports: Vec<u16> = (0..3)
        .map(|_| huiqi_bus::server::free_port().unwrap())
        .collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut env = env_of(&users);
        env.push(("HUIQI_NATS_SERVER_NAME".into(), format!("nats-{}", i + 1)));
        env.push(("HUIQI_ROUTE_PASSWORD".into(), password.into()));
        for (j, port) in route_ports.iter().enumerate() {
            env.push((
                format!("HUIQI_NATS_ROUTE_{}", j + 1),
                format!(
                    "nats-route://{}:{password}@127.0.0.1:{port}",
                    access::ROUTE_USER
                ),
            ));
        }
        nodes.push(
            NatsServer::start_with_config_file_and_args(
                &dir.path().join(format!("nats-{}", i + 1)),
                &path,
                env,
                vec![
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", route_ports[i]),
                ],
                None,
            )
            .expect("start a node"),
        );
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url().to_string()).collect();
    let admin = users
        .options("admin", &urls.join(","))
        .connect("admin")
        .await
        .unwrap();
    let js = jetstream::new(admin);
    let settings = huiqi_bus::setup::StreamSettings {
        replicas: 3,
        ..Default::default()
    };
    huiqi_bus::setup::provision(&js, &settings)
        .await
        .expect("the admin provisions the stream at R3 on the shipped cluster");
    let info = js
        .get_stream(huiqi_bus::setup::STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    let cluster = info.cluster.expect("a clustered stream");
    assert!(cluster.leader.is_some());
    assert_eq!(cluster.replicas.len(), 2, "{cluster:?}");
    // A portal publishes through the first node; the admin reads it back through the last.
    let portal = users
        .options("portal", &urls[0])
        .connect("portal")
        .await
        .unwrap();
    jetstream::new(portal)
        .publish(huiqi_events::subjects::APPLICATIONS_SUBMITTED, "{}".into())
        .await
        .unwrap()
        .await
        .expect("acked by the R3 stream");
    let reader = users
        .options("admin", &urls[2])
        .connect("reader")
        .await
        .unwrap();
    let seen = huiqi_bus::setup::read_all(
        &jetstream::new(reader),
        huiqi_events::subjects::APPLICATIONS_SUBMITTED,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 1);
}

fn env_of(users: &NatsUsers) -> Vec<(String, String)> {
    USERS
        .iter()
        .map(|u| (access::nkey_variable(u), users.public_key(u).unwrap()))
        .collect()
}

/// One action a user might try.
#[derive(Clone, Copy)]
enum Act {
    Publish(&'static str),
    Subscribe(&'static str),
}

struct Probe {
    client: async_nats::Client,
    errors: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Probe {
    async fn connect(url: &str, users: &NatsUsers, user: &str) -> Probe {
        let (tx, errors) = tokio::sync::mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .nkey(users.seed(user).unwrap().to_string())
            .custom_inbox_prefix(access::inbox_prefix(user))
            .event_callback(move |e| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = e {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
        Probe { client, errors }
    }

    /// Whether the server refused the action (a permissions violation arrives before the
    /// PONG of the flush that follows it).
    async fn allowed(&mut self, act: Act) -> bool {
        while self.errors.try_recv().is_ok() {}
        match act {
            Act::Publish(subject) => self.publish_allowed(subject, "{}").await,
            Act::Subscribe(subject) => {
                // Kept alive until the verdict is in; unsubscribed on drop.
                let sub = self.client.subscribe(subject).await.expect("subscribe");
                self.client.flush().await.expect("flush");
                let denied = self.denied().await;
                drop(sub);
                !denied
            }
        }
    }

    /// Whether the server let `body` be published on `subject` (a reply subject, say).
    async fn publish_allowed(&mut self, subject: &str, body: &'static str) -> bool {
        while self.errors.try_recv().is_ok() {}
        let _ = self.client.publish(subject.to_string(), body.into()).await;
        self.client.flush().await.expect("flush");
        !self.denied().await
    }

    async fn denied(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        loop {
            match tokio::time::timeout_at(deadline, self.errors.recv()).await {
                Ok(Some(e)) if e.to_lowercase().contains("permissions violation") => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_may_do_only_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let users = NatsUsers::generate();
    let server =
        NatsServer::start_with_config_file(dir.path(), &shipped(), env_of(&users)).expect("start");
    let url = server.url().to_string();

    // An anonymous client is refused outright.
    assert!(
        huiqi_bus::connect(&url, "anonymous").await.is_err(),
        "the shipped configuration lets nobody in without a key"
    );

    // The admin provisions the stream and consumers, plus a scratch stream and consumer its
    // own destructive rights are tried on (so HUIQI stays for the other rows).
    let admin = users.options("admin", &url).connect("admin").await.unwrap();
    let js = jetstream::new(admin);
    huiqi_bus::setup::provision(&js, &Default::default())
        .await
        .expect("admin provisions");

    use Act::*;
    // (what, action, the users allowed besides admin)
    let table: Vec<(&str, Act, &[&str])> = vec![
        (
            "publish an application",
            Publish("huiqi.applications.submitted"),
            &["portal"],
        ),
        (
            "publish an intake reply",
            Publish("huiqi.intake.accepted"),
            &["intake"],
        ),
        (
            "publish a claim opened",
            Publish("huiqi.internal.claims.opened"),
            &["intake"],
        ),
        (
            "publish a check record",
            Publish("huiqi.internal.verification.facts"),
            &["verification"],
        ),
        (
            "publish a verified claim",
            Publish("huiqi.internal.verification.verified"),
            &["verification"],
        ),
        (
            "publish an award decision",
            Publish("huiqi.awards.approved.M1"),
            &["award"],
        ),
        (
            "publish a payment order",
            Publish("huiqi.internal.payments.ordered"),
            &["award"],
        ),
        (
            "publish an entitlement",
            Publish("huiqi.entitlements.data_package"),
            &["award"],
        ),
        (
            "publish a settlement",
            Publish("huiqi.payouts.settled"),
            &["payout"],
        ),
        (
            "publish another's parked record",
            Publish("huiqi.parked.payout"),
            &["payout"],
        ),
        (
            "ask a check provider",
            Publish("huiqi.checks.social_insurance"),
            &["verification"],
        ),
        (
            "instruct the treasury",
            Publish("huiqi.treasury.pay"),
            &["payout"],
        ),
        ("query a claim", Publish("huiqi.query.claim"), &["operator"]),
        (
            "read the stream's info",
            Publish("$JS.API.STREAM.INFO.HUIQI"),
            &[
                "operator",
                "portal",
                "bureau",
                "intake",
                "verification",
                "award",
                "payout",
                "recovery",
            ],
        ),
        (
            "create a stream",
            Publish("$JS.API.STREAM.CREATE.OTHER"),
            &[],
        ),
        (
            "update the stream",
            Publish("$JS.API.STREAM.UPDATE.HUIQI"),
            &[],
        ),
        (
            "purge the stream",
            Publish("$JS.API.STREAM.PURGE.HUIQI"),
            &[],
        ),
        (
            "delete the stream",
            Publish("$JS.API.STREAM.DELETE.HUIQI"),
            &[],
        ),
        (
            "read a stream message by sequence",
            Publish("$JS.API.STREAM.MSG.GET.HUIQI"),
            &[],
        ),
        (
            "read a stream message directly",
            Publish("$JS.API.DIRECT.GET.HUIQI"),
            &[],
        ),
        (
            "delete a stream message",
            Publish("$JS.API.STREAM.MSG.DELETE.HUIQI"),
            &[],
        ),
        (
            "create an ephemeral consumer",
            Publish("$JS.API.CONSUMER.CREATE.HUIQI"),
            &["recovery"],
        ),
        (
            "create a named consumer",
            Publish("$JS.API.CONSUMER.CREATE.HUIQI.spy.huiqi.internal.>"),
            &["recovery"],
        ),
        (
            "create a durable (old API)",
            Publish("$JS.API.CONSUMER.DURABLE.CREATE.HUIQI.spy"),
            &[],
        ),
        (
            "delete payout's consumer",
            Publish("$JS.API.CONSUMER.DELETE.HUIQI.payout"),
            &["recovery"],
        ),
        (
            "pull from payout's consumer",
            Publish("$JS.API.CONSUMER.MSG.NEXT.HUIQI.payout"),
            &["payout", "recovery"],
        ),
        (
            "ack for payout's consumer",
            Publish("$JS.ACK.HUIQI.payout.1.1.1.1.1"),
            &["payout"],
        ),
        (
            "pull from award's consumer",
            Publish("$JS.API.CONSUMER.MSG.NEXT.HUIQI.award"),
            &["award", "recovery"],
        ),
        (
            "pull from bureau-awards",
            Publish("$JS.API.CONSUMER.MSG.NEXT.HUIQI.bureau-awards"),
            &["bureau", "recovery"],
        ),
        (
            "ack on bureau-awards",
            Publish("$JS.ACK.HUIQI.bureau-awards.1.1.1.1.1"),
            &["bureau"],
        ),
        (
            "read payout's consumer info",
            Publish("$JS.API.CONSUMER.INFO.HUIQI.payout"),
            &["payout", "operator", "recovery"],
        ),
        (
            "take award's lease",
            Publish("$KV.huiqi-leases.award.0"),
            &["award"],
        ),
        (
            "take payout's lease",
            Publish("$KV.huiqi-leases.payout.0"),
            &["payout"],
        ),
        (
            "read a lease from the bucket's leader",
            Publish("$JS.API.STREAM.MSG.GET.KV_huiqi-leases"),
            &["intake", "verification", "award", "payout", "operator"],
        ),
        (
            "read a lease directly (any replica may answer, maybe stale)",
            Publish("$JS.API.DIRECT.GET.KV_huiqi-leases.$KV.huiqi-leases.award.0"),
            &[],
        ),
        (
            "read the lease bucket's info",
            Publish("$JS.API.STREAM.INFO.KV_huiqi-leases"),
            &["intake", "verification", "award", "payout", "operator"],
        ),
        (
            "delete the lease bucket",
            Publish("$JS.API.STREAM.DELETE.KV_huiqi-leases"),
            &[],
        ),
        (
            "subscribe to internal subjects",
            Subscribe("huiqi.internal.>"),
            &[],
        ),
        (
            "subscribe to payment orders",
            Subscribe("huiqi.internal.payments.ordered"),
            &[],
        ),
        ("subscribe to everything", Subscribe(">"), &[]),
        (
            "subscribe to applications",
            Subscribe("huiqi.applications.submitted"),
            &[],
        ),
        (
            "subscribe to awards",
            Subscribe("huiqi.awards.>"),
            &["bureau"],
        ),
        (
            "subscribe to intake replies",
            Subscribe("huiqi.intake.accepted"),
            &["portal"],
        ),
        (
            "subscribe to payout's replies",
            Subscribe("_INBOX_payout.>"),
            &["payout"],
        ),
        (
            "subscribe to verification's replies",
            Subscribe("_INBOX_verification.>"),
            &["verification"],
        ),
        ("subscribe to the default inbox", Subscribe("_INBOX.>"), &[]),
        (
            "serve check requests",
            Subscribe("huiqi.checks.*"),
            &["simulator"],
        ),
        (
            "serve the treasury",
            Subscribe("huiqi.treasury.pay"),
            &["simulator"],
        ),
        (
            "serve claim queries",
            Subscribe("huiqi.query.claim"),
            &["query"],
        ),
        (
            "read the JetStream API's replies of all",
            Subscribe("$JS.API.>"),
            &[],
        ),
    ];
    let mut probes = Vec::new();
    for user in USERS.iter().filter(|u| **u != "admin") {
        probes.push((*user, Probe::connect(&url, &users, user).await));
    }
    let mut wrong = Vec::new();
    for (what, act, allowed) in &table {
        for (user, probe) in probes.iter_mut() {
            let expected = allowed.contains(user);
            let got = probe.allowed(*act).await;
            if got != expected {
                wrong.push(format!(
                    "{user}: {what}: {} but should be {}",
                    if got { "ALLOWED" } else { "denied" },
                    if expected { "allowed" } else { "denied" }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "permission table violated:\n{}",
        wrong.join("\n")
    );

    // The admin really can do the destructive things (on a scratch stream).
    let scratch = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "SCRATCH".into(),
            subjects: vec!["scratch.>".into()],
            ..Default::default()
        })
        .await
        .expect("admin creates a stream");
    scratch
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("c".into()),
            ..Default::default()
        })
        .await
        .expect("admin creates a consumer");
    js.get_stream("SCRATCH")
        .await
        .unwrap()
        .delete_consumer("c")
        .await
        .expect("admin deletes a consumer");
    js.get_stream("SCRATCH")
        .await
        .unwrap()
        .purge()
        .await
        .expect("admin purges");
    js.delete_stream("SCRATCH")
        .await
        .expect("admin deletes a stream");
    // And HUIQI survived every attempt of the others.
    let info = js
        .get_stream("HUIQI")
        .await
        .expect("HUIQI still there")
        .info()
        .await
        .unwrap()
        .clone();
    let consumers: BTreeSet<String> = {
        use futures_util::StreamExt;
        let s = js.get_stream("HUIQI").await.unwrap();
        let names: Vec<_> = s.consumer_names().collect().await;
        names.into_iter().map(Result::unwrap).collect()
    };
    // `recovery` may rewind (delete and recreate) the four services' consumers, and the probe
    // above really deleted payout's; every other one survived.
    assert!(
        !consumers.contains("payout"),
        "recovery's delete took effect"
    );
    for c in huiqi_bus::topology::all_consumers(1) {
        if c.durable == "payout" {
            continue;
        }
        assert!(
            consumers.contains(&c.durable),
            "consumer {} survived",
            c.durable
        );
    }
    assert_eq!(info.config.name, "HUIQI");
    drop(server);
}

/// The reply subject of the next request `requests` receives.
async fn next_reply(requests: &mut async_nats::Subscriber) -> String {
    use futures_util::StreamExt;
    let req = tokio::time::timeout(Duration::from_secs(10), requests.next())
        .await
        .expect("the request arrives")
        .unwrap();
    req.reply
        .expect("a request has a reply subject")
        .to_string()
}

/// Every user that may answer requests may answer each one once and only within a bounded
/// window: nats-server remembers the reply subject of every message it delivers to such a user
/// (JetStream deliveries included) for the window, and with its default of two minutes the
/// remembered set of a busy service made nats-server walk tens of thousands of entries per
/// delivery (the steady-load stall, README "Performance"). Shown on a real server: award answers
/// a health request at once, and its answer to a second one, sent after the window, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_answers_a_request_only_within_its_answer_window() {
    for user in USERS {
        if let Some(r) = access::permissions(user, 1).unwrap().allow_responses {
            assert_eq!(r.max, 1, "{user} answers each request once");
            assert!(
                r.expires <= access::QUERY_ANSWER_WINDOW,
                "{user}'s answer window is bounded"
            );
        }
    }
    let services_window = access::permissions("award", 1)
        .unwrap()
        .allow_responses
        .expect("a service answers health requests")
        .expires;
    assert_eq!(services_window, access::SERVICE_ANSWER_WINDOW);

    let dir = tempfile::tempdir().unwrap();
    let users = NatsUsers::generate();
    let server =
        NatsServer::start_with_config_file(dir.path(), &shipped(), env_of(&users)).expect("start");
    let url = server.url().to_string();
    let mut award = Probe::connect(&url, &users, "award").await;
    let operator = Probe::connect(&url, &users, "operator").await;
    let subject = huiqi_bus::health::health_subject("award");
    let mut requests = award.client.subscribe(subject.clone()).await.unwrap();
    award.client.flush().await.unwrap();

    let ask = |client: async_nats::Client, subject: String| async move {
        client
            .send_request(
                subject,
                async_nats::Request::new()
                    .payload("{}".into())
                    .timeout(Some(access::SERVICE_ANSWER_WINDOW * 3)),
            )
            .await
    };

    // Answered at once: delivered.
    let asked = tokio::spawn(ask(operator.client.clone(), subject.clone()));
    let reply_to = next_reply(&mut requests).await;
    assert!(
        award.publish_allowed(&reply_to, "now").await,
        "an answer at once is allowed"
    );
    let reply = asked.await.unwrap().expect("the prompt answer arrives");
    assert_eq!(&reply.payload[..], b"now");

    // A second answer to the same request is refused (once each).
    assert!(
        !award.publish_allowed(&reply_to, "again").await,
        "a request is answered once"
    );

    // Answered after the window: refused, and the asker never hears it.
    let asked = tokio::spawn(ask(operator.client.clone(), subject.clone()));
    let reply_to = next_reply(&mut requests).await;
    tokio::time::sleep(access::SERVICE_ANSWER_WINDOW + Duration::from_millis(500)).await;
    assert!(
        !award.publish_allowed(&reply_to, "late").await,
        "an answer after the window is refused"
    );
    assert!(
        asked.await.unwrap().is_err(),
        "the asker does not get the late answer"
    );
}
