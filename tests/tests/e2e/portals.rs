//! Portal replies: each named portal reads exactly its own answers, durably, matched by
//! application id and by the submitted event id (also for unreadable input), and a bureau
//! reads signed awards. On the private, authenticated server `huiqi up` runs.

use huiqi::clients::{bureau_pull, Portal};
use huiqi::gen::{self, Fixtures};
use huiqi_e2e::Rig;
use huiqi_events::{types, Envelope};
use std::time::Duration;

fn event(app: &huiqi_events::payloads::Application, source: &str) -> Envelope {
    Envelope::new(
        source,
        types::APPLICATION_SUBMITTED,
        &app.application_id,
        app,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_portals_each_see_only_their_own_answers_also_after_reconnecting() {
    let mut fx = Fixtures::default();
    let a1 = gen::m1_application(&mut fx, "ALPHA-1", &gen::uscc(11), 0, 30, 2);
    let a2 = gen::m1_application(&mut fx, "ALPHA-2", &gen::uscc(12), 100, 30, 2);
    let b1 = gen::m1_application(&mut fx, "BETA-1", &gen::uscc(13), 200, 29, 2);
    let mut rig = Rig::new(None, &fx);
    rig.settings.portals = vec!["alpha".into(), "beta".into()];
    let pipeline = rig.start().await;
    let connect = |user: &'static str| {
        let o = pipeline.options(user);
        async move { o.connect(user).await.expect("portal login") }
    };
    let alpha = Portal::new(connect("portal-alpha").await, "alpha");
    let beta = Portal::new(connect("portal-beta").await, "beta");

    let e_a1 = event(&a1, "portal/alpha");
    alpha.submit(std::slice::from_ref(&e_a1)).await.unwrap();
    alpha
        .submit_raw("alpha-broken-1", b"{\"application_id\": ".to_vec())
        .await
        .unwrap();
    let e_b1 = event(&b1, "portal/beta");
    beta.submit(std::slice::from_ref(&e_b1)).await.unwrap();

    // Alpha may not publish as beta, nor read beta's answers.
    let beta_subject = huiqi_events::subjects::portal_submit_subject("beta");
    let js = async_nats::jetstream::new(connect("portal-alpha").await);
    let forged = tokio::time::timeout(Duration::from_secs(5), async {
        js.publish(beta_subject, "{}".into()).await?.await
    })
    .await;
    assert!(
        !matches!(forged, Ok(Ok(_))),
        "alpha's login published on beta's subject"
    );
    assert!(
        js.get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "portal-beta",
            huiqi_bus::setup::STREAM
        )
        .await
        .is_err(),
        "alpha read beta's consumer"
    );

    // Alpha reads one answer, then goes away; the other waits for it.
    let first = alpha.answers(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(first.len(), 1);
    drop(alpha);
    let alpha = Portal::new(connect("portal-alpha").await, "alpha");
    alpha.submit(&[event(&a2, "portal/alpha")]).await.unwrap();
    let mut answers = first;
    answers.extend(alpha.answers(2, Duration::from_secs(30)).await.unwrap());
    // Nothing more for alpha (and never beta's).
    assert!(alpha
        .answers(1, Duration::from_millis(800))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers.iter().all(|a| a.subject.ends_with(".alpha")));
    let by_app = |id: &str| answers.iter().find(|a| a.application_id == id);
    let acc = by_app("ALPHA-1").expect("ALPHA-1 answered");
    assert_eq!(acc.outcome, "accepted");
    assert_eq!(acc.answers_event.as_deref(), Some(e_a1.id.as_str()));
    assert!(acc.claim_id.is_some());
    assert_eq!(
        by_app("ALPHA-2").expect("ALPHA-2 answered").outcome,
        "accepted"
    );
    let broken = answers
        .iter()
        .find(|a| a.outcome == "rejected")
        .expect("the unreadable submission is answered");
    assert_eq!(broken.answers_event.as_deref(), Some("alpha-broken-1"));
    assert_eq!(broken.errors[0].1, "malformed", "{:?}", broken.errors);

    let beta_answers = beta.answers(5, Duration::from_secs(2)).await.unwrap();
    assert_eq!(beta_answers.len(), 1, "{beta_answers:?}");
    assert_eq!(beta_answers[0].application_id, "BETA-1");
    assert_eq!(
        beta_answers[0].answers_event.as_deref(),
        Some(e_b1.id.as_str())
    );

    // A bureau reads the awards, each verified against the trust file.
    let trust = huiqi_bus::trust::TrustStore::from_file(&huiqi_bus::trust::KeySet::trust_path(
        &rig.settings.keys_dir(),
    ))
    .unwrap();
    let bureau = connect("bureau").await;
    let mut seen = Vec::new();
    for _ in 0..30 {
        let b = bureau_pull(
            bureau.clone(),
            "bureau-awards",
            &trust,
            None,
            10,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert!(b.refused.is_empty(), "{:?}", b.refused);
        seen.extend(b.events);
        if seen.len() >= 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "one award per claim");
    assert!(seen.iter().all(|e| e.signed_by == "award"));
    pipeline.stop().await.unwrap();
}
