//! The pipeline split into partitions (huiqi_events::partition): two workers of verification,
//! award and payout in one process, on an authenticated private server whose permissions name
//! each partition's consumer. Each applicant's claims stay in its partition from intake to
//! payment, each partition's log holds only its own claims, everything is paid once; and the
//! rules that cross applicants (a person once per measure) hold across partitions.

use huiqi::gen::{self, Fixtures};
use huiqi_e2e::{observe_with, read_stream, Rig};
use huiqi_eventlog::EventLog;
use huiqi_events::payloads::{AwardStatus, ClaimVerified};
use huiqi_events::{subjects, types, Envelope, Partition};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const CLAIMS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_partitions_keep_each_applicant_in_one_and_pay_every_claim_once() {
    let mut fx = Fixtures::default();
    // Distinct applicants and persons: nothing here relies on a cross-partition rule.
    let apps: Vec<_> = (0..CLAIMS)
        .map(|i| {
            gen::m1_application(
                &mut fx,
                &format!("PART-{i}"),
                &gen::uscc(700 + i),
                i * 30,
                30,
                0,
            )
        })
        .collect();
    let partition_of: BTreeMap<String, Partition> = apps
        .iter()
        .map(|a| {
            (
                a.application_id.clone(),
                Partition::of_applicant(&a.applicant.uscc, 2),
            )
        })
        .collect();
    let used: BTreeSet<u16> = partition_of.values().map(|p| p.index()).collect();
    assert_eq!(used.len(), 2, "the applicants fall in both partitions");

    let mut rig = Rig::new(None, &fx);
    rig.settings.stream.partitions = 2;
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe_with(&pipeline.admin()).await;
    submit_and_wait(&js, &mut w, &apps).await;
    // Each partition's worker answers its own health subject (the operator may ask it).
    let operator = pipeline
        .options("operator")
        .connect("e2e-operator")
        .await
        .unwrap();
    for p in 0..2 {
        let reply = operator
            .request(format!("huiqi.health.award.{p}"), "".into())
            .await
            .unwrap_or_else(|e| panic!("award partition {p} answers its health subject: {e}"));
        let r: huiqi_bus::health::Report = serde_json::from_slice(&reply.payload).unwrap();
        assert!(r.log_records > 0, "partition {p}: {r:?}");
    }
    // `huiqi status` (the operator's login) lists each partition's consumer, lease and health.
    let status = huiqi::status::status(&pipeline.options("operator"))
        .await
        .unwrap();
    let names = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    let expected = names(
        [
            "intake",
            "verification-p0",
            "verification-p1",
            "award-p0",
            "award-p1",
            "payout-p0",
            "payout-p1",
        ]
        .map(String::from)
        .to_vec(),
    );
    assert_eq!(
        names(status.consumers.iter().map(|c| c.name.clone()).collect()),
        expected
    );
    for c in &status.consumers {
        assert!(c.error.is_none() && c.pending == Some(0), "{c:?}");
    }
    assert_eq!(
        names(status.leases.iter().map(|l| l.service.clone()).collect()),
        expected
    );
    assert!(
        status
            .leases
            .iter()
            .all(|l| l.state.as_deref() == Some("held")),
        "{:?}",
        status.leases
    );
    assert_eq!(
        names(status.services.iter().map(|s| s.service.clone()).collect()),
        expected
    );
    for s in &status.services {
        let r = s
            .report
            .as_ref()
            .unwrap_or_else(|| panic!("{} answers: {:?}", s.service, s.error));
        // Its own log's figures (the message counters are the process's, per service).
        assert!(r.log_records > 0, "{}: {r:?}", s.service);
    }
    // Split, `huiqi setup` provisioned the counts bucket; award may take counts in it,
    // verification may not even open it.
    let count = huiqi_events::history::Key::new("M1", huiqi_events::history::Kind::Person)
        .person("330302199001010000");
    let as_user = |user: &str| {
        let options = pipeline.options(user);
        async move { async_nats::jetstream::new(options.connect("e2e-counts").await.unwrap()) }
    };
    let award_kv = huiqi_bus::reserve::open_bucket(&as_user("award").await)
        .await
        .unwrap();
    let me = huiqi_bus::reserve::Holder {
        claim_id: "C-E2E".into(),
        uscc: "U".into(),
        amount: huiqi_events::Money::yuan(500),
        state: huiqi_bus::reserve::HoldState::Pending,
    };
    huiqi_bus::reserve::reserve(&award_kv, &count, &me, Duration::from_secs(5))
        .await
        .expect("award takes a count");
    huiqi_bus::reserve::release(&award_kv, &count, "C-E2E")
        .await
        .unwrap();
    assert!(
        huiqi_bus::reserve::open_bucket(&as_user("verification").await)
            .await
            .is_err(),
        "only award uses the counts bucket"
    );
    // Split consumers exist and each delivered work; the unsplit ones were never created.
    let stream = js.get_stream("HUIQI").await.unwrap();
    for service in ["verification", "award", "payout"] {
        assert!(stream.consumer_info(service).await.is_err(), "{service}");
        for p in 0..2 {
            let name = format!("{service}-p{p}");
            let mut c: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer(&name).await.unwrap();
            let info = c.info().await.unwrap();
            assert!(
                info.delivered.stream_sequence > 0,
                "{name} delivered nothing"
            );
            assert_eq!(info.num_pending, 0, "{name}");
        }
    }
    w.until(Duration::from_secs(1), |_| false).await;
    // The private server stops with the pipeline: read the stream first.
    let internal_messages = read_stream(&js, "huiqi.internal.>").await;
    pipeline.stop().await.unwrap();

    for a in &apps {
        let o = &w.by_application[&a.application_id];
        assert_eq!(o.decisions.len(), 1, "{}", a.application_id);
        assert_eq!(o.decisions[0].status, AwardStatus::Approved);
        assert_eq!(o.settled.len(), 1, "{} settled once", a.application_id);
    }
    let ledger = huiqi_providers::read_ledger(&rig.ledger());
    assert_eq!(
        ledger.len(),
        CLAIMS as usize,
        "one treasury payment per claim"
    );

    // Every internal event of a claim travelled on its applicant's partition's subject.
    let claim_partition: BTreeMap<String, Partition> = apps
        .iter()
        .map(|a| {
            (
                huiqi_intake::claim_id_for(&a.application_id),
                partition_of[&a.application_id],
            )
        })
        .collect();
    let mut internal = 0;
    for m in internal_messages {
        let env = Envelope::decode(&m.payload).unwrap();
        let p = claim_partition[&env.subject];
        let base = m.subject.rsplit_once('.').unwrap().0;
        assert_eq!(m.subject.as_str(), p.subject(base), "{}", env.ty);
        assert!(
            [
                subjects::CLAIM_OPENED,
                subjects::FACTS_RECORDED,
                subjects::CLAIM_VERIFIED,
                subjects::PAYMENT_ORDERED
            ]
            .contains(&base),
            "{}",
            m.subject
        );
        internal += 1;
    }
    // Opened, verified and ordered for each claim at least.
    assert!(internal >= 3 * CLAIMS as usize, "{internal}");

    // Each partition's award log decided exactly its own applicants' claims.
    let mut decided = 0;
    for p in Partition::all(2) {
        let dir = p.dir(&rig.data_dir().join("award"));
        let log = EventLog::open(&dir).unwrap();
        for r in log.records_from(1) {
            let r = r.unwrap();
            if r.envelope.ty == types::CLAIM_VERIFIED {
                let v: ClaimVerified = r.envelope.data_as().unwrap();
                assert_eq!(
                    Partition::of_applicant(&v.application.applicant.uscc, 2),
                    p,
                    "{} decided in partition {p}",
                    v.claim_id
                );
                decided += 1;
            }
        }
        drop(log);
        // The offline tools read one partition's log at a time, never the parent directory.
        assert!(huiqi::commands::open_log(&dir).is_ok());
    }
    assert_eq!(decided, CLAIMS);
    // `huiqi audit` checks each partition's chain, a line each.
    let audited = huiqi::commands::audit_logs(rig.data_dir()).unwrap();
    let names: Vec<&str> = audited.iter().map(|a| a.service.as_str()).collect();
    assert_eq!(
        names,
        [
            "intake",
            "verification-p0",
            "verification-p1",
            "award-p0",
            "award-p1",
            "payout-p0",
            "payout-p1"
        ]
    );
    assert!(
        audited
            .iter()
            .all(|a| a.present && a.records > 0 && a.problems.is_empty()),
        "{audited:?}"
    );
    // `huiqi audit report` reconciles every partition's awards and payouts with the ledger.
    let rec = huiqi::audit::report(rig.data_dir(), Some(&rig.ledger())).unwrap();
    assert!(rec.problems.is_empty(), "{:?}", rec.problems);
    assert_eq!(
        (rec.awards_approved, rec.payment_orders, rec.settlements),
        (CLAIMS, CLAIMS, CLAIMS)
    );
    assert_eq!(rec.treasury_entries, CLAIMS);
    // `huiqi audit claim` finds a claim's story in its partition's logs.
    let story = huiqi::audit::claim_story(rig.data_dir(), &apps[0].application_id, false).unwrap();
    for ty in [
        types::CLAIM_OPENED,
        types::CLAIM_VERIFIED,
        types::AWARD_DECIDED,
        types::PAYOUT_SETTLED,
    ] {
        assert!(story.iter().any(|e| e.ty == ty), "{ty} in the story");
    }
    // `huiqi replay` replays each partition's log on its own thread and adds them up.
    let replay = huiqi::commands::replay_report(rig.data_dir(), None).unwrap();
    assert_eq!((replay.decisions, replay.identical), (CLAIMS, CLAIMS));
    assert!(replay.differences.is_empty());
    assert_eq!(
        replay.approved_total["M1"].to_string(),
        (15000 * CLAIMS).to_string() + ".00"
    );
    let refused = huiqi::commands::open_log(&rig.data_dir().join("award"))
        .err()
        .expect("the parent of split logs is refused")
        .to_string();
    assert!(refused.contains("--log-dir"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprises_in_two_partitions_sharing_persons_pay_each_person_once() {
    let mut fx = Fixtures::default();
    let apps = chain(&mut fx, 4, "RACE");
    // And one enterprise sending two M1 applications at once (other persons): one M1 per
    // enterprise holds because both land in its one partition, whatever races elsewhere.
    let mut apps = apps;
    for (k, first) in [(0, 1000u64), (1, 1100)] {
        apps.push(gen::m1_application(
            &mut fx,
            &format!("ONCE-{k}"),
            &gen::uscc(950),
            first,
            35,
            0,
        ));
    }
    let mut rig = Rig::new(None, &fx);
    rig.settings.stream.partitions = 2;
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe_with(&pipeline.admin()).await;
    submit_and_wait(&js, &mut w, &apps).await;
    w.until(Duration::from_secs(1), |_| false).await;
    let counted = read_stream(&js, "huiqi.internal.award.counted.>").await;
    pipeline.stop().await.unwrap();

    let mut paid: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &apps {
        let o = &w.by_application[&a.application_id];
        assert_eq!(o.decisions.len(), 1);
        for l in o.decisions[0].lines.iter().filter(|l| l.paid) {
            paid.entry(l.person.clone().unwrap())
                .or_default()
                .push(a.application_id.clone());
        }
    }
    // A person once per measure, across partitions.
    let twice: Vec<&Vec<String>> = paid.values().filter(|by| by.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} persons paid twice, by {:?}",
        twice.len(),
        twice.first()
    );
    assert!(!paid.is_empty());
    let once: Vec<_> = ["ONCE-0", "ONCE-1"]
        .iter()
        .filter(|id| w.by_application[**id].decisions[0].status == AwardStatus::Approved)
        .collect();
    assert_eq!(once.len(), 1, "one M1 per enterprise: {once:?}");
    // The later of each crossing pair met the other's counts, logged before its decision.
    assert!(
        !counted.is_empty(),
        "a claim met another partition's counts"
    );
    for m in &counted {
        let e = Envelope::decode(&m.payload).unwrap();
        let c: huiqi_events::payloads::CountedElsewhere = e.data_as().unwrap();
        assert!(!c.counts.is_empty() && c.counts.iter().all(|f| f.claim_id != c.claim_id));
    }
    // Sums reconcile and every decision replays identically, counted-elsewhere events folded.
    let rec = huiqi::audit::report(rig.data_dir(), Some(&rig.ledger())).unwrap();
    assert!(rec.problems.is_empty(), "{:?}", rec.problems);
    let replay = huiqi::commands::replay_report(rig.data_dir(), None).unwrap();
    assert_eq!(
        (replay.decisions, replay.identical),
        (6, 6),
        "{:?}",
        replay.differences
    );
}

/// `n` M1 applications of distinct enterprises alternating between 2 partitions, enterprise
/// e employing persons 20e .. 20e+40: each shares 20 persons with the next, across partitions.
pub(crate) fn chain(
    fx: &mut Fixtures,
    n: usize,
    prefix: &str,
) -> Vec<huiqi_events::payloads::Application> {
    let mut by: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for u in 900..2000u64 {
        let p = Partition::of_applicant(&gen::uscc(u), 2).index() as usize;
        if by[p].len() < n.div_ceil(2) {
            by[p].push(u);
        }
    }
    (0..n)
        .map(|e| {
            let u = by[e % 2][e / 2];
            gen::m1_application(
                fx,
                &format!("{prefix}-{e}"),
                &gen::uscc(u),
                20 * e as u64,
                40,
                0,
            )
        })
        .collect()
}

/// Submits `apps` (all at once: the partitions decide concurrently) and waits, up to 90 s,
/// until every one has its final outcome.
async fn submit_and_wait(
    js: &async_nats::jetstream::Context,
    w: &mut huiqi::watch::Watcher,
    apps: &[huiqi_events::payloads::Application],
) {
    let events: Vec<Envelope> = apps
        .iter()
        .map(|a| Envelope::new("e2e", types::APPLICATION_SUBMITTED, &a.application_id, a).unwrap())
        .collect();
    huiqi::watch::publish_all(js, &events, 10).await.unwrap();
    assert!(
        w.until(Duration::from_secs(90), |w| apps.iter().all(|a| w
            .by_application
            .get(&a.application_id)
            .is_some_and(|o| o.is_final())))
            .await,
        "every claim reaches its outcome"
    );
}

/// Applicants 0..n from `first`, each of 30 qualifying persons of its own.
fn applications(fx: &mut Fixtures, first: u64, n: u64) -> Vec<huiqi_events::payloads::Application> {
    (first..first + n)
        .map(|i| gen::m1_application(fx, &format!("PART-{i}"), &gen::uscc(700 + i), i * 30, 30, 0))
        .collect()
}

/// The claims an award log decided (by its recorded verified claims).
fn decided_in(dir: &std::path::Path) -> BTreeSet<String> {
    let log = EventLog::open(dir).unwrap();
    log.records_from(1)
        .map(Result::unwrap)
        .filter(|r| r.envelope.ty == types::AWARD_DECIDED)
        .map(|r| r.envelope.subject.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_directory_is_lost_is_rebuilt_from_the_stream_alone() {
    let mut fx = Fixtures::default();
    let first = applications(&mut fx, 0, 8);
    let second = applications(&mut fx, 8, 8);
    let claim_of =
        |a: &huiqi_events::payloads::Application| huiqi_intake::claim_id_for(&a.application_id);
    let in_p1: BTreeSet<String> = first
        .iter()
        .chain(&second)
        .filter(|a| Partition::of_applicant(&a.applicant.uscc, 2).index() == 1)
        .map(claim_of)
        .collect();
    assert!(
        !in_p1.is_empty() && in_p1.len() < 16,
        "both partitions get claims"
    );
    let mut rig = Rig::new(None, &fx);
    rig.settings.stream.partitions = 2;
    let submit = async |apps: &[huiqi_events::payloads::Application], expected: usize| {
        let pipeline = rig.start().await;
        let (_c, js, _w) = observe_with(&pipeline.admin()).await;
        let events: Vec<Envelope> = apps
            .iter()
            .map(|a| {
                Envelope::new("e2e", types::APPLICATION_SUBMITTED, &a.application_id, a).unwrap()
            })
            .collect();
        huiqi::watch::publish_all(&js, &events, 10).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::time::Instant::now() < deadline
            && read_stream(&js, subjects::PAYOUTS_SETTLED).await.len() < expected
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A moment for anything paid twice to show.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let settled = read_stream(&js, subjects::PAYOUTS_SETTLED).await;
        let approved = read_stream(&js, "huiqi.awards.approved.>").await;
        pipeline.stop().await.unwrap();
        (settled, approved)
    };
    let (settled, _) = submit(&first, 8).await;
    assert_eq!(settled.len(), 8);
    let p1 = Partition::new(1, 2)
        .unwrap()
        .dir(&rig.data_dir().join("award"));
    let before = decided_in(&p1);
    assert!(!before.is_empty() && before.is_subset(&in_p1), "{before:?}");

    // Partition 1's disk is lost; partition 0's stays.
    std::fs::remove_dir_all(&p1).unwrap();
    let (settled, approved) = submit(&second, 16).await;
    assert_eq!(settled.len(), 16, "every claim settled, once");
    assert_eq!(approved.len(), 16, "every claim decided once");
    let ids: BTreeSet<_> = settled
        .iter()
        .map(|m| Envelope::decode(&m.payload).unwrap().subject)
        .collect();
    assert_eq!(ids.len(), 16, "no claim paid twice");
    assert_eq!(huiqi_providers::read_ledger(&rig.ledger()).len(), 16);
    // The rebuilt log holds partition 1's decisions from before the loss and after, and
    // nothing of partition 0's.
    let after = decided_in(&p1);
    assert!(before.is_subset(&after), "{before:?} ⊄ {after:?}");
    assert_eq!(after, in_p1);
    let moved_aside = std::fs::read_dir(rig.data_dir().join("award"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("p1.replaced-"))
        .count();
    // The directory was gone, not moved aside: nothing of an older log was kept.
    assert_eq!(moved_aside, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partitions_log_is_checked_against_the_heads_it_anchored() {
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let apps = applications(&mut fx, 40, 6);
    let mut rig = Rig::new(Some(nats.url()), &fx);
    rig.settings.stream.partitions = 2;
    let pipeline = rig.start().await;
    let (_c, js, mut w) = huiqi_e2e::observe(nats.url()).await;
    submit_and_wait(&js, &mut w, &apps).await;
    pipeline.stop().await.unwrap();
    let trust = huiqi_bus::trust::TrustStore::from_file(&huiqi_bus::trust::KeySet::trust_path(
        &rig.settings.keys_dir(),
    ))
    .unwrap();
    let options = huiqi_bus::NatsOptions::new(nats.url());
    let checks = huiqi::audit::check_heads(&options, rig.data_dir(), &trust)
        .await
        .unwrap();
    let names: BTreeSet<&str> = checks.iter().map(|c| c.service.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "intake",
            "verification-p0",
            "verification-p1",
            "award-p0",
            "award-p1",
            "payout-p0",
            "payout-p1"
        ]),
    );
    for c in &checks {
        // Each partition's stop anchored its own final head, on its own subject.
        assert!(c.anchors >= 1, "{c:?}");
        assert!(c.mismatches.is_empty() && c.refused.is_empty(), "{c:?}");
        assert_eq!(c.latest_anchored, c.local_head, "{c:?}");
    }
}

mod reservations {
    //! The cross-partition counts' building block (huiqi_bus::reserve) against a real server.
    use huiqi_bus::reserve::{self, HoldState, Holder, Reserved};
    use huiqi_events::history::{Key, Kind};
    use huiqi_events::Money;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn person(id: usize) -> Key {
        Key::new("M1", Kind::Person).person(&format!("330302199001{id:06}"))
    }

    fn holder(claim: &str) -> Holder {
        Holder {
            claim_id: claim.to_string(),
            uscc: format!("USCC-{claim}"),
            amount: Money::yuan(500),
            state: HoldState::Pending,
        }
    }

    async fn bucket(url: &str) -> async_nats::jetstream::kv::Store {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        reserve::ensure_bucket(&js, 1).await.unwrap();
        reserve::open_bucket(&js).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_racing_for_shared_persons_each_person_counts_once_and_none_is_lost() {
        let nats = huiqi_testkit::nats();
        let kv = bucket(nats.url()).await;
        // Four claims over 120 persons, overlapping: claim c takes persons 30c .. 30c+60.
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..4usize {
            let kv = kv.clone();
            tasks.spawn(async move {
                let me = holder(&format!("C-{c}"));
                let mut keys: Vec<Key> = (30 * c..30 * c + 60).map(person).collect();
                // Sorted by bucket key: the order that makes waiting deadlock-free.
                keys.sort_by_key(reserve::key_name);
                let mut won = Vec::new();
                for k in &keys {
                    match reserve::reserve(&kv, k, &me, Duration::from_secs(20))
                        .await
                        .unwrap()
                    {
                        Reserved::Ours { .. } => won.push(k.clone()),
                        Reserved::Counted(h) => assert_ne!(h.claim_id, me.claim_id),
                    }
                }
                for k in &won {
                    reserve::confirm(&kv, k, &me).await.unwrap();
                }
                (me.claim_id, won)
            });
        }
        let mut by_person: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let all = tokio::time::timeout(Duration::from_secs(60), async {
            let mut out = Vec::new();
            while let Some(r) = tasks.join_next().await {
                out.push(r.unwrap());
            }
            out
        })
        .await
        .expect("no claim waits for ever (sorted keys: no deadlock)");
        for (claim, won) in all {
            for k in won {
                by_person.entry(k.person).or_default().push(claim.clone());
            }
        }
        // Every person of the union counted, each by exactly one claim.
        assert_eq!(by_person.len(), 150);
        assert!(by_person.values().all(|c| c.len() == 1), "{by_person:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pending_count_is_waited_for_until_released_or_confirmed() {
        let nats = huiqi_testkit::nats();
        let kv = bucket(nats.url()).await;
        let (a, b) = (holder("C-A"), holder("C-B"));
        let (k1, k2) = (person(1), person(2));
        assert!(matches!(
            reserve::reserve(&kv, &k1, &a, Duration::from_secs(1))
                .await
                .unwrap(),
            Reserved::Ours {
                state: HoldState::Pending,
                ..
            }
        ));
        // Asking again for the same claim (a decision taken again) finds it its own.
        assert!(matches!(
            reserve::reserve(&kv, &k1, &a, Duration::from_secs(1))
                .await
                .unwrap(),
            Reserved::Ours { .. }
        ));
        // B waits while A's decision is pending; A released it: B's.
        let waiting = {
            let (kv, k1, b) = (kv.clone(), k1.clone(), b.clone());
            tokio::spawn(
                async move { reserve::reserve(&kv, &k1, &b, Duration::from_secs(20)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        if waiting.is_finished() {
            panic!("B waits for A's pending count: {:?}", waiting.await);
        }
        reserve::release(&kv, &k1, "C-A").await.unwrap();
        assert!(matches!(
            waiting.await.unwrap().unwrap(),
            Reserved::Ours { .. }
        ));
        // Confirmed instead: B learns it is A's, with what A counts.
        reserve::reserve(&kv, &k2, &a, Duration::from_secs(1))
            .await
            .unwrap();
        let waiting = {
            let (kv, k2, b) = (kv.clone(), k2.clone(), b.clone());
            tokio::spawn(
                async move { reserve::reserve(&kv, &k2, &b, Duration::from_secs(20)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        reserve::confirm(&kv, &k2, &a).await.unwrap();
        match waiting.await.unwrap().unwrap() {
            Reserved::Counted(h) => {
                assert_eq!(
                    (h.claim_id.as_str(), h.state),
                    ("C-A", HoldState::Confirmed)
                );
                assert_eq!(h.amount.to_string(), "500.00");
            }
            other => panic!("{other:?}"),
        }
        // A confirmed count is never released; B may not confirm A's key.
        reserve::release(&kv, &k2, "C-A").await.unwrap();
        assert!(matches!(
            reserve::reserve(&kv, &k2, &b, Duration::from_secs(1))
                .await
                .unwrap(),
            Reserved::Counted(_)
        ));
        assert!(reserve::confirm(&kv, &k2, &b).await.is_err());
        // A worker that never comes back: the waiter gives up after its patience, naming it.
        let k3 = person(3);
        reserve::reserve(&kv, &k3, &a, Duration::from_secs(1))
            .await
            .unwrap();
        let e = reserve::reserve(&kv, &k3, &b, Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("C-A"), "{e}");
        // One list confirms a claim's counts; a count it left pending but does not list (a
        // round that did not end) is free.
        let (k4, k5) = (person(4), person(5));
        for k in [&k4, &k5] {
            reserve::reserve(&kv, k, &a, Duration::from_secs(1))
                .await
                .unwrap();
        }
        reserve::finalize(&kv, "C-A", &[&k4]).await.unwrap();
        match reserve::reserve(&kv, &k4, &b, Duration::from_secs(1))
            .await
            .unwrap()
        {
            Reserved::Counted(h) => assert_eq!(h.claim_id, "C-A"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reserve::reserve(&kv, &k5, &b, Duration::from_secs(1))
                .await
                .unwrap(),
            Reserved::Ours { .. }
        ));
        // But a count the claim takes *after* its list (decided again after a restart, the
        // new list not written yet) is waited for, not taken.
        let k6 = person(6);
        reserve::reserve(&kv, &k6, &a, Duration::from_secs(1))
            .await
            .unwrap();
        let e = reserve::reserve(&kv, &k6, &b, Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("C-A"), "{e}");
        reserve::finalize(&kv, "C-A", &[&k4, &k6]).await.unwrap();
        assert!(matches!(
            reserve::reserve(&kv, &k6, &b, Duration::from_secs(1))
                .await
                .unwrap(),
            Reserved::Counted(_)
        ));
        // The bucket holds no ID number: keys are hashes.
        let name = reserve::key_name(&k3);
        assert!(name.starts_with("c.") && !name.contains("330302"), "{name}");
    }
}
