//! Past one machine: the built binaries as separate processes on a 3-node NATS cluster on
//! loopback (the stream at R3), two instances of each service (one holding the lease and
//! working, one standing by), about 1,000 mixed applications, the stream leader's node
//! SIGKILLed mid-run, the working award and payout instances SIGKILLed (their standbys take
//! the leases over, rebuild the logs from the stream and carry on; the dead ones come back as
//! standbys), then a second node killed for 5 s (no quorum: the stream takes no writes) while
//! applications keep arriving. Judged from outside as the single-server chaos run is: nothing
//! lost, nothing decided or paid twice, sums reconcile with the treasury.

use super::processes::{chaos_inputs, ends_and_judge, publish_malformed, tail, Mix};
use huiqi::gen::Fixtures;
use huiqi_bus::NatsCluster;
use huiqi_e2e::procs::{submit, Deployment};
use std::time::Duration;

/// Submits the first wave and waits until work is in flight everywhere: some payouts
/// settled, most not yet.
async fn submit_until_paying(
    d: &Deployment,
    portal: &async_nats::jetstream::Context,
    wave: &[huiqi_events::Envelope],
) {
    submit(portal, wave).await;
    let started = d
        .wait_until(Duration::from_secs(120), || async {
            d.count("huiqi.payouts.>").await >= 20
        })
        .await;
    assert!(started, "no payouts within two minutes");
}

/// The stream's leader and its replicas as (name, current) — read with a fresh admin login.
async fn placement(d: &Deployment) -> Option<(String, Vec<(String, bool)>)> {
    let client = d.options("admin").connect("test-placement").await.ok()?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(huiqi_bus::setup::STREAM).await.ok()?;
    let info = stream.info().await.ok()?;
    let cluster = info.cluster.clone()?;
    let replicas = cluster
        .replicas
        .iter()
        .map(|r| (r.name.clone(), r.current))
        .collect();
    Some((cluster.leader?, replicas))
}

/// What both instances of `service` logged about its lease, for a failure message: a lease
/// that moved when it should not have is explained by these lines and nothing else.
fn lease_story(d: &Deployment, service: &str) -> String {
    [service.to_string(), format!("{service}-standby")]
        .iter()
        .map(|name| {
            let log = std::fs::read_to_string(d.log_file(name)).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("lease")
                        || l.contains("took over")
                        || l.contains("standing by")
                        || l.contains("ERROR")
                })
                .collect();
            format!(
                "--- {name}:\n{}\n  (last lines:)\n{}",
                lines.join("\n"),
                tail(d, name)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_loses_its_stream_leader_and_working_instances_and_pays_each_award_once() {
    let mix = Mix::CHAOS;
    let mut fx = Fixtures::default();
    let (events, malformed) = chaos_inputs(&mut fx, &mix);
    let mut d = Deployment::on_nodes(&fx, true, 3).await;
    let (leader, replicas) = placement(&d).await.expect("the stream has a leader");
    assert_eq!(replicas.len(), 2, "R3: a leader and two replicas");
    d.start_all();
    // The first instance of each service takes its lease; then a second instance of each
    // starts and stands by.
    let held = d
        .wait_until(Duration::from_secs(60), || {
            d.held_by(huiqi::commands::SERVICES, 0, 1)
        })
        .await;
    assert!(held, "the first instances did not all take their leases");
    for s in huiqi::commands::SERVICES {
        d.start_standby(s);
    }
    let portal = d.js("portal").await;
    publish_malformed(&portal, malformed).await;
    let waves: Vec<_> = events.chunks(events.len().div_ceil(3)).collect();
    submit_until_paying(&d, &portal, waves[0]).await;

    // The node leading the stream dies (SIGKILL) mid-run; the other two elect a new leader.
    let (leader_now, _) = placement(&d).await.expect("placement");
    let victim = NatsCluster::index_of(&leader_now).expect("a node of this cluster");
    eprintln!("stream leader at start {leader}, killed {leader_now}");
    d.server.cluster().node(victim).kill();
    submit(&portal, waves[1]).await;

    // The working award and payout instances die (SIGKILL) while the node is still down. Their
    // standbys take the leases over once they lapse, rebuild the logs from the stream
    // (signatures checked; neither ever held these logs) and carry on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.kill("award");
    tokio::time::sleep(Duration::from_millis(700)).await;
    d.kill("payout");
    let taken = d
        .wait_until(Duration::from_secs(120), || async {
            d.lease_holder("award").await.as_deref() == Some("award-2")
                && d.lease_holder("payout").await.as_deref() == Some("payout-2")
        })
        .await;
    assert!(
        taken,
        "the standbys did not take over; award-standby log:\n{}\npayout-standby log:\n{}",
        tail(&d, "award-standby"),
        tail(&d, "payout-standby")
    );
    // The dead instances come back and stand by.
    d.start("award");
    d.start("payout");
    // Quorum lost for a while: a second node dies, one of three is left, the stream cannot
    // take writes. The last wave is sent meanwhile (its publishes are refused and resent);
    // the node comes back after 5 s and the flow resumes with two of three.
    let second = (0..3).find(|i| *i != victim).expect("another node");
    d.server.cluster().node(second).kill();
    let last_wave = waves[2].to_vec();
    let sending = tokio::spawn(async move { submit(&portal, &last_wave).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    d.server
        .cluster()
        .node(second)
        .restart()
        .expect("the second node restarts");
    sending
        .await
        .expect("the last wave is acked once quorum is back");

    let paid = ends_and_judge(&mut d, &mix, &events, "a node down").await;

    // The takeovers were rebuilds, the restarted instances stand by, the standbys still work.
    for s in ["award", "payout"] {
        let log = std::fs::read_to_string(d.log_file(&format!("{s}-standby"))).unwrap();
        assert!(
            log.contains("took over: log rebuilt from the stream"),
            "{s}-standby:\n{}",
            tail(&d, &format!("{s}-standby"))
        );
        let log = std::fs::read_to_string(d.log_file(s)).unwrap();
        assert!(
            log.contains("standing by"),
            "{s} restarted:\n{}",
            tail(&d, s)
        );
        assert_eq!(
            d.lease_holder(s).await.as_deref(),
            Some(&*format!("{s}-2")),
            "{}",
            lease_story(&d, s)
        );
        assert!(d.running(&format!("{s}-standby")), "{s}-standby exited");
    }
    for s in ["intake", "verification"] {
        assert_eq!(
            d.lease_holder(s).await.as_deref(),
            Some(&*format!("{s}-1")),
            "{}",
            lease_story(&d, s)
        );
        assert!(d.running(&format!("{s}-standby")), "{s}-standby exited");
    }

    // The operator sees the dead node in `huiqi status`: not current behind the new leader. A
    // leader that was itself restarted while the node was down has never heard its name and
    // lists it by peer id (seen in CI: the second node killed above became the leader).
    let victim_name = NatsCluster::node_name(victim);
    let victim_peer = NatsCluster::peer_id(victim);
    let (ok, json, err) = d.huiqi(&["status", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cluster = &status["stream"]["cluster"];
    assert_ne!(cluster["leader"], victim_name.as_str(), "{cluster}");
    let dead = cluster["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == victim_name.as_str() || r["peer"] == victim_peer.as_str())
        .unwrap_or_else(|| panic!("{victim_name} (peer {victim_peer}) listed: {cluster}"));
    assert_eq!(dead["current"], false, "{cluster}");

    // The dead node comes back and catches up with the stream.
    d.server
        .cluster()
        .node(victim)
        .restart()
        .expect("the node restarts");
    let caught_up = d
        .wait_until(Duration::from_secs(60), || async {
            placement(&d)
                .await
                .is_some_and(|(_, r)| r.len() == 2 && r.iter().all(|(_, current)| *current))
        })
        .await;
    assert!(
        caught_up,
        "the restarted node did not catch up: {:?}",
        placement(&d).await
    );
    let (_, text, _) = d.huiqi(&["status"]);
    assert!(
        text.contains("award held by award-2 (renewed")
            && text.contains("payout held by payout-2 (renewed")
            && text.contains("intake held by intake-1 (renewed"),
        "the operator sees which instance works: {text}"
    );
    assert!(
        text.contains("replicated on cluster huiqi: leader huiqi-")
            && text.matches(" current").count() == 2,
        "{text}"
    );
    eprintln!(
        "cluster run: paid ¥{paid}; {leader_now} killed and restarted, award and payout taken over"
    );
    d.stop_all();
}

/// Provisioning (`huiqi setup`, `huiqi up`) on a cluster whose third node is not there yet:
/// the meta leader exists but a stream of three replicas has no place; it waits for the node
/// (seen in a full-suite run, where the third node joined late) instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_waits_for_the_node_a_three_replica_stream_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path(), 3, None, None).unwrap();
    cluster.node(2).kill();
    let url = cluster.url();
    let provisioning = tokio::spawn(async move {
        let client = huiqi_bus::NatsOptions::new(&url)
            .connect("test-setup")
            .await
            .unwrap();
        let settings = huiqi_bus::setup::StreamSettings {
            replicas: 3,
            ..Default::default()
        };
        huiqi_bus::setup::provision(&async_nats::jetstream::new(client), &settings)
            .await
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !provisioning.is_finished(),
        "it cannot have placed three replicas on two nodes"
    );
    cluster.node(2).restart().unwrap();
    provisioning
        .await
        .unwrap()
        .expect("provisioned once the third node is back");
}

/// Partitions past one machine: the same cluster and mix, split in two. Instance 1 of each
/// split service works partition 0 only (`--partition 0`); instance 2 works partition 1 and
/// stands by for partition 0. Mid-run the stream leader's node and payout's instance 1 die:
/// payout's instance 2 takes partition 0 over (rebuilding it from the stream alone) and works
/// both. Judged from outside: nothing lost, decided or paid twice, sums reconcile. (Award's
/// instance killed while claims race for shared persons: takeover.rs, on one node — on this
/// loopback cluster its takeover and rebuild can outlast the 60 s another partition's award
/// waits for a count the dead one left pending; README, "Partitions".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_work_a_partition_each_and_one_takes_the_others_over() {
    let mix = Mix::CHAOS;
    let mut fx = Fixtures::default();
    let (events, malformed) = chaos_inputs(&mut fx, &mix);
    let mut d = Deployment::split(&fx, true, 3, 2).await;
    d.first_instances_work("0");
    d.start_all();
    // Instance 1 takes its partition 0 first; then instance 2 of each starts.
    let first = d
        .wait_until(Duration::from_secs(60), || {
            d.held_by(huiqi::commands::SERVICES, 0, 1)
        })
        .await;
    assert!(first, "{}", lease_story(&d, "award"));
    for s in huiqi::commands::SERVICES {
        d.start_standby(s);
    }
    // Each split service: partition 0 worked by instance 1, partition 1 by instance 2.
    let split = Deployment::split_services();
    let working = d
        .wait_until(Duration::from_secs(60), || async {
            d.held_by(&split, 0, 1).await && d.held_by(&split, 1, 2).await
        })
        .await;
    assert!(working, "{}", lease_story(&d, "award"));
    let portal = d.js("portal").await;
    publish_malformed(&portal, malformed).await;
    let waves: Vec<_> = events.chunks(events.len().div_ceil(2)).collect();
    submit_until_paying(&d, &portal, waves[0]).await;
    let (leader, _) = placement(&d).await.expect("placement");
    let victim = NatsCluster::index_of(&leader).expect("a node of this cluster");
    d.server.cluster().node(victim).kill();
    submit(&portal, waves[1]).await;
    d.kill("payout");
    let taken = d
        .wait_until(Duration::from_secs(120), || async {
            d.lease_holder_of("payout", 0).await.as_deref() == Some("payout-2")
        })
        .await;
    assert!(taken, "payout-standby:\n{}", tail(&d, "payout-standby"));
    // The dead instance comes back and stands by for its partition.
    d.start("payout");
    let paid = ends_and_judge(&mut d, &mix, &events, "split, a node and an instance down").await;
    let log = std::fs::read_to_string(d.log_file("payout-standby")).unwrap();
    assert!(
        log.contains("took over: log rebuilt from the stream"),
        "{}",
        tail(&d, "payout-standby")
    );
    // Instance 2 now works both partitions; the others kept theirs.
    assert_eq!(
        d.lease_holder_of("payout", 1).await.as_deref(),
        Some("payout-2")
    );
    assert_eq!(
        d.lease_holder_of("award", 0).await.as_deref(),
        Some("award-1")
    );
    d.server
        .cluster()
        .node(victim)
        .restart()
        .expect("the node restarts");
    eprintln!("split cluster run: paid ¥{paid}; {leader} killed, payout partition 0 taken over");
    d.stop_all();
}
