//! The whole pipeline in-process against a throwaway nats-server: what a portal sends, what
//! bureaus see.

use huiqi::gen::{self, Fixtures};
use huiqi::watch::{publish_all, publish_raw};
use huiqi_e2e::{observe, observe_with, stream_events, Rig};
use huiqi_events::payloads::AwardStatus;
use huiqi_events::{subjects, types, Envelope, Money};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn event(app: &huiqi_events::payloads::Application) -> Envelope {
    Envelope::new(
        "e2e-portal",
        types::APPLICATION_SUBMITTED,
        &app.application_id,
        app,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_qualifying_persons_are_approved_and_paid_once() {
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let app = gen::m1_application(&mut fx, "E2E-30", &gen::uscc(1), 0, 30, 2);
    let rig = Rig::new(Some(nats.url()), &fx);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe(nats.url()).await;
    publish_all(&js, &[event(&app)], 10).await.unwrap();
    assert!(
        w.until(WAIT, |w| w
            .by_application
            .get("E2E-30")
            .is_some_and(|o| o.is_final()))
            .await
    );
    w.until(Duration::from_secs(1), |_| false).await;
    pipeline.stop().await.unwrap();

    let o = &w.by_application["E2E-30"];
    assert_eq!(o.decisions.len(), 1);
    let d = &o.decisions[0];
    assert_eq!(d.status, AwardStatus::Approved);
    assert_eq!(d.total.to_string(), "15000.00");
    assert_eq!(d.lines.iter().filter(|l| l.paid).count(), 30);
    assert!(d
        .lines
        .iter()
        .filter(|l| !l.paid)
        .all(|l| l.reason.contains("left Wenzhou")));
    assert_eq!(o.settled.len(), 1, "exactly one settlement event");
    assert_eq!(o.settled[0].amount, d.total);
    // 30 data packages + 30 resident points.
    assert_eq!(o.entitlements, 60);
    let ledger = huiqi_providers::read_ledger(&rig.ledger());
    assert_eq!(
        ledger.len(),
        1,
        "exactly one payment instruction reached the treasury"
    );
    assert_eq!(ledger[0].amount, Money::yuan(15_000));
    let (report, clean) = huiqi::commands::audit(rig.data_dir()).unwrap();
    assert!(clean, "{report}");
    let (replay, same) = huiqi::commands::replay(rig.data_dir(), None).unwrap();
    assert!(same, "{replay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nine_is_rejected_with_the_reason_and_nothing_is_paid() {
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let app = gen::m1_application(&mut fx, "E2E-29", &gen::uscc(2), 0, 29, 0);
    let rig = Rig::new(Some(nats.url()), &fx);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe(nats.url()).await;
    publish_all(&js, &[event(&app)], 10).await.unwrap();
    assert!(
        w.until(WAIT, |w| w
            .by_application
            .get("E2E-29")
            .is_some_and(|o| o.is_final()))
            .await
    );
    pipeline.stop().await.unwrap();
    let d = &w.by_application["E2E-29"].decisions[0];
    assert_eq!(d.status, AwardStatus::Rejected);
    assert_eq!(d.total, Money::ZERO);
    assert!(d.lines.iter().all(|l| !l.paid));
    assert!(
        d.lines[0].reason.contains("29 qualifying") && d.lines[0].reason.contains("at least 30"),
        "{}",
        d.lines[0].reason
    );
    let rejected = stream_events(&js, "huiqi.awards.rejected.M1").await;
    assert_eq!(rejected.len(), 1);
    assert!(huiqi_providers::read_ledger(&rig.ledger()).is_empty());
    assert!(stream_events(&js, subjects::PAYMENT_ORDERED)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_application_gets_the_same_claim_and_one_decision() {
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let app = gen::m1_application(&mut fx, "E2E-RESEND", &gen::uscc(3), 0, 31, 0);
    let rig = Rig::new(Some(nats.url()), &fx);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe(nats.url()).await;
    let first = event(&app);
    let second = event(&app); // same application, new event id
    assert_ne!(first.id, second.id);
    publish_all(&js, std::slice::from_ref(&first), 10)
        .await
        .unwrap();
    assert!(
        w.until(WAIT, |w| w
            .by_application
            .get("E2E-RESEND")
            .is_some_and(|o| o.is_final()))
            .await
    );
    publish_all(&js, &[second], 10).await.unwrap();
    // The same event id again, after JetStream's window would have let it through.
    publish_raw(&js, &format!("{}-again", first.id), first.encode())
        .await
        .unwrap();
    assert!(
        w.until(WAIT, |w| w.by_application["E2E-RESEND"].accepted.len() >= 3)
            .await
    );
    w.until(Duration::from_secs(2), |_| false).await;
    pipeline.stop().await.unwrap();
    let o = &w.by_application["E2E-RESEND"];
    let claims: std::collections::BTreeSet<&str> =
        o.accepted.iter().map(|a| a.claim_id.as_str()).collect();
    assert_eq!(claims.len(), 1, "one claim id for every answer: {claims:?}");
    assert_eq!(o.decisions.len(), 1);
    assert_eq!(o.settled.len(), 1);
    assert_eq!(
        stream_events(&js, subjects::CLAIM_OPENED).await.len(),
        1,
        "one claim opened"
    );
    assert_eq!(stream_events(&js, "huiqi.awards.>").await.len(), 1);
    assert_eq!(huiqi_providers::read_ledger(&rig.ledger()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_rejected_and_the_next_message_is_served() {
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let good = gen::m1_application(&mut fx, "E2E-AFTER-BAD", &gen::uscc(4), 0, 30, 0);
    let rig = Rig::new(Some(nats.url()), &fx);
    let pipeline = rig.start().await;
    let (client, js, mut w) = observe(nats.url()).await;
    publish_raw(
        &js,
        "garbage-1",
        b"{\"application_id\": \"E2E-BAD\", not json".to_vec(),
    )
    .await
    .unwrap();
    let mut wrong_schema = serde_json::to_value(event(&good)).unwrap();
    wrong_schema["data"]["application_id"] = serde_json::json!("E2E-SCHEMA");
    wrong_schema["data"]["employees"][2]["id_number"] = serde_json::json!(12345);
    publish_raw(&js, "schema-1", serde_json::to_vec(&wrong_schema).unwrap())
        .await
        .unwrap();
    // A poison message on an internal subject must be parked, not block verification.
    let mut parked = client.subscribe("huiqi.parked.>").await.unwrap();
    client.flush().await.unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "poison-1");
    js.publish_with_headers(subjects::CLAIM_OPENED, h, "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish_all(&js, &[event(&good)], 10).await.unwrap();
    assert!(
        w.until(WAIT, |w| w
            .by_application
            .get("E2E-AFTER-BAD")
            .is_some_and(|o| o.is_final()))
            .await
    );
    pipeline.stop().await.unwrap();

    // Unreadable JSON has no application id to reply under: the rejection says why.
    let malformed: Vec<_> = w
        .orphans
        .iter()
        .filter(|e| e.ty == types::INTAKE_REJECTED)
        .collect();
    assert_eq!(
        malformed.len(),
        1,
        "the malformed message got exactly one rejection"
    );
    assert_eq!(malformed[0].data.value()["errors"][0]["code"], "malformed");
    let schema = &w.by_application["E2E-SCHEMA"].rejected[0].errors[0];
    assert_eq!(schema.field, "employees[2].id_number");
    assert_eq!(schema.code, "schema");
    assert_eq!(
        w.by_application["E2E-AFTER-BAD"].decisions[0].status,
        AwardStatus::Approved
    );
    let p = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut parked),
    )
    .await;
    let p = Envelope::decode(&p.expect("a parked record").unwrap().payload).unwrap();
    assert_eq!(p.data.value()["service"], "verification");
    assert_eq!(p.data.value()["payload"], "not an event");
    assert!(
        p.data.value()["reason"]
            .as_str()
            .unwrap()
            .contains("unsigned event"),
        "{}",
        p.data.value()["reason"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_between_submission_and_decision_it_decides_once_after_restart() {
    let mut fx = Fixtures::default();
    let app = gen::m1_application(&mut fx, "E2E-RESTART", &gen::uscc(5), 0, 40, 0);
    // A private nats-server under the data dir, as `huiqi up` runs without --nats-url.
    let mut rig = Rig::new(None, &fx);
    rig.settings.provider_latency = Duration::from_millis(400);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe_with(&pipeline.admin()).await;
    publish_all(&js, &[event(&app)], 10).await.unwrap();
    assert!(
        w.until(WAIT, |w| w
            .by_application
            .get("E2E-RESTART")
            .is_some_and(|o| !o.accepted.is_empty()))
            .await
    );
    assert!(
        w.by_application["E2E-RESTART"].decisions.is_empty(),
        "stopped before the decision"
    );
    pipeline.stop().await.unwrap();
    drop(w);
    assert!(huiqi_providers::read_ledger(&rig.ledger()).is_empty());

    rig.settings.provider_latency = Duration::ZERO;
    let pipeline = rig.start().await;
    let client = pipeline.admin().connect("e2e-2").await.unwrap();
    let js = async_nats::jetstream::new(client);
    for _ in 0..120 {
        if !stream_events(&js, subjects::PAYOUTS_SETTLED)
            .await
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let awards = stream_events(&js, "huiqi.awards.>").await;
    let settled_again = stream_events(&js, subjects::PAYOUTS_SETTLED).await;
    pipeline.stop().await.unwrap();
    assert_eq!(awards.len(), 1, "exactly one decision across the restart");
    assert_eq!(awards[0].1.data.value()["total"], "20000.00");
    assert_eq!(settled_again.len(), 1, "exactly one settlement");
    assert_eq!(
        huiqi_providers::read_ledger(&rig.ledger()).len(),
        1,
        "one payment"
    );
    let (report, clean) = huiqi::commands::audit(rig.data_dir()).unwrap();
    assert!(clean, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_providers_are_retried_until_they_answer() {
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let apps: Vec<_> = (0..5)
        .map(|i| {
            gen::m1_application(
                &mut fx,
                &format!("E2E-FLAKY-{i}"),
                &gen::uscc(50 + i),
                i * 100,
                30,
                0,
            )
        })
        .collect();
    let mut rig = Rig::new(Some(nats.url()), &fx);
    rig.settings.provider_error_every = 3;
    rig.settings.provider_drop_every = 7;
    rig.settings.request_timeout = Duration::from_millis(200);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe(nats.url()).await;
    publish_all(&js, &apps.iter().map(event).collect::<Vec<_>>(), 10)
        .await
        .unwrap();
    let ok = w
        .until(WAIT, |w| {
            (0..5).all(|i| {
                w.by_application
                    .get(&format!("E2E-FLAKY-{i}"))
                    .is_some_and(|o| o.is_final())
            })
        })
        .await;
    pipeline.stop().await.unwrap();
    assert!(
        ok,
        "every claim decided despite errors and dropped requests"
    );
    for i in 0..5 {
        let o = &w.by_application[&format!("E2E-FLAKY-{i}")];
        assert_eq!(o.decisions[0].total.to_string(), "15000.00");
        assert_eq!(o.settled.len(), 1);
    }
    // Small rosters' check records travel inside the verified claim.
    let verified = stream_events(&js, subjects::CLAIM_VERIFIED).await;
    assert!(
        verified.iter().any(|(_, e)| e.data.value()["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"]["attempts"].as_u64().unwrap() > 1)),
        "some checks needed retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_of_20000_goes_through_and_20001_is_refused() {
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let big = gen::m1_application(&mut fx, "E2E-20000", &gen::uscc(6), 0, 20_000, 0);
    let too_big = gen::m1_application(&mut fx, "E2E-20001", &gen::uscc(7), 100_000, 20_001, 0);
    let rig = Rig::new(Some(nats.url()), &fx);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = observe(nats.url()).await;
    publish_all(&js, &[event(&too_big), event(&big)], 10)
        .await
        .unwrap();
    let ok = w
        .until(Duration::from_secs(240), |w| {
            ["E2E-20000", "E2E-20001"]
                .iter()
                .all(|id| w.by_application.get(*id).is_some_and(|o| o.is_final()))
        })
        .await;
    pipeline.stop().await.unwrap();
    assert!(ok, "both answered");
    let refused = &w.by_application["E2E-20001"].rejected[0].errors[0];
    assert_eq!(
        (refused.field.as_str(), refused.code.as_str()),
        ("employees", "too_many_persons")
    );
    assert!(
        refused.message.contains("20001") && refused.message.contains("20000"),
        "{}",
        refused.message
    );
    let o = &w.by_application["E2E-20000"];
    assert_eq!(o.decisions[0].total.to_string(), "10000000.00");
    assert_eq!(o.settled.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_to_publish_is_recorded_and_the_relay_moves_on() {
    use huiqi_eventlog::{Commit, EventLog, Pending};
    let nats = huiqi_testkit::nats();
    let client = huiqi_bus::connect(nats.url(), "relay-test").await.unwrap();
    let js = async_nats::jetstream::new(client);
    huiqi_bus::setup::provision(&js, &Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(EventLog::open(dir.path()).unwrap());
    let event = |n: &str, size: usize| {
        Pending::publish(
            Envelope::derived(
                "payout",
                types::PAYOUT_FAILED,
                &format!("C-{n}"),
                &serde_json::json!({ "pad": "x".repeat(size) }),
                n,
                "0",
            )
            .unwrap(),
            subjects::PAYOUTS_FAILED,
        )
    };
    log.commit(&[Commit {
        inbox_id: None,
        events: vec![
            event("before", 10),
            event("huge", 9 * 1024 * 1024),
            event("after", 10),
        ],
    }])
    .unwrap();
    let keys = huiqi_bus::trust::KeySet::generate();
    let relay = huiqi_bus::Relay::new(
        "payout",
        log.clone(),
        js.clone(),
        keys.key("payout").unwrap(),
    );
    // Two rounds: the first publishes what fits and records the oversized one, the second
    // publishes that record.
    for _ in 0..2 {
        relay
            .publish_pending()
            .await
            .expect("the relay is not stuck");
    }
    assert_eq!(log.outbox_cursor().unwrap(), log.head().unwrap().0);
    let failed = stream_events(&js, subjects::PAYOUTS_FAILED).await;
    let subjects_seen: Vec<&str> = failed.iter().map(|(_, e)| e.subject.as_str()).collect();
    assert_eq!(
        subjects_seen,
        vec!["C-before", "C-after"],
        "the events around it were published"
    );
    let parked = stream_events(&js, "huiqi.parked.payout").await;
    assert_eq!(parked.len(), 1);
    let u: huiqi_events::payloads::EventUnpublishable = parked[0].1.data_as().unwrap();
    assert_eq!((u.subject.as_str(), u.limit), ("C-huge", 8 * 1024 * 1024));
    assert!(u.bytes > u.limit, "{u:?}");
    assert_eq!(u.log_sequence, 2);
    // What the relay published carries a signature the trust file accepts.
    let consumer = huiqi_bus::setup::ordered_reader(&js, subjects::PAYOUTS_FAILED)
        .await
        .unwrap();
    let mut msgs = futures_util::StreamExt::take(consumer.messages().await.unwrap(), 1);
    let m = futures_util::StreamExt::next(&mut msgs)
        .await
        .unwrap()
        .unwrap();
    let sig = m
        .headers
        .as_ref()
        .and_then(|h| h.get(huiqi_bus::trust::SIGNATURE_HEADER))
        .unwrap();
    let who = keys
        .trust_store()
        .verify(Some(sig.as_str()), &m.payload, huiqi_bus::trust::Mode::Live)
        .unwrap();
    assert_eq!(who.service, "payout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_claim_whose_check_reply_comes_later_is_decided_when_it_arrives() {
    // After a restart, JetStream redelivers un-acked check replies only after `ack_wait`, so
    // award may see a claim's verified marker before one of its replies. It must wait for the
    // reply, however long, not give up.
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let app = gen::m1_application(&mut fx, "E2E-LATE", &gen::uscc(60), 0, 30, 0);
    let rig = Rig::new(Some(nats.url()), &fx);
    let pipeline = rig.start().await;
    let (_c, js, _w) = observe(nats.url()).await;
    let key = pipeline.keys().key("verification").unwrap();
    let claim = huiqi_intake::claim_id_for("E2E-LATE");
    let ids = app.person_ids();
    let record = |check: &str, reply: serde_json::Value| huiqi_events::payloads::CheckRecorded {
        claim_id: claim.clone(),
        chunk: 0,
        chunks: 1,
        attempts: 1,
        reply: huiqi_events::checks::Check::from_name(check)
            .unwrap()
            .read_reply(&serde_json::to_vec(&reply).unwrap())
            .unwrap(),
    };
    let records = [
        record(
            "enterprise",
            serde_json::json!({ "found": true, "registration_district": "330302", "tax_district": "330302", "independent_legal_person": true, "industry": "manufacturing", "kind": "enterprise" }),
        ),
        record(
            "social_insurance",
            serde_json::json!({ "persons": ids.iter().map(|id| serde_json::json!({ "id_number": id, "pension_months_with_applicant": ["2023-01", "2023-02"] })).collect::<Vec<_>>() }),
        ),
        record(
            "presence",
            serde_json::json!({ "persons": ids.iter().map(|id| serde_json::json!({ "id_number": id, "stayed_whole_window": true })).collect::<Vec<_>>() }),
        ),
    ];
    let verified = huiqi_events::payloads::ClaimVerified {
        claim_id: claim.clone(),
        application: app.clone(),
        checks: records.iter().map(|r| (r.check(), 1)).collect(),
        records: vec![],
    };
    let publish = |subject: &'static str, env: Envelope| {
        let js = js.clone();
        let key = key.clone();
        async move {
            let bytes = env.encode();
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", env.id.as_str());
            h.insert(
                huiqi_bus::trust::SIGNATURE_HEADER,
                key.sign(&bytes).as_str(),
            );
            js.publish_with_headers(subject, h, bytes.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let env = |ty: &str, data: &dyn erased::Data| {
        Envelope::new("verification", ty, &claim, &data.value()).unwrap()
    };
    publish(
        subjects::FACTS_RECORDED,
        env(types::CHECK_RECORDED, &records[0]),
    )
    .await;
    publish(
        subjects::FACTS_RECORDED,
        env(types::CHECK_RECORDED, &records[1]),
    )
    .await;
    publish(
        subjects::CLAIM_VERIFIED,
        env(types::CLAIM_VERIFIED, &verified),
    )
    .await;
    // Longer than award's old retry budget (5 deliveries 2 s apart).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        stream_events(&js, "huiqi.awards.>").await.is_empty(),
        "not decided without the reply"
    );
    assert!(
        stream_events(&js, "huiqi.parked.>").await.is_empty(),
        "and not given up either"
    );
    publish(
        subjects::FACTS_RECORDED,
        env(types::CHECK_RECORDED, &records[2]),
    )
    .await;
    let mut decided = Vec::new();
    for _ in 0..100 {
        decided = stream_events(&js, "huiqi.awards.>").await;
        if !decided.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.stop().await.unwrap();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].1.data.value()["total"], "15000.00");
    let (replay, same) = huiqi::commands::replay(rig.data_dir(), None).unwrap();
    assert!(same, "{replay}");
}

mod erased {
    /// Any serializable payload, as a JSON value (lets one closure build every test event).
    pub trait Data {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Data for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}
