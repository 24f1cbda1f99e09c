//! The auditor's tools on a real run of the sample data: the reconciliation (and a tampered
//! treasury ledger it catches), one claim's story (masked unless revealed), what-if under a
//! version that sets the M19(a) amount (and one that changes nothing), and a log written with
//! v1 entitlement events replayed to identical decisions and the same history.

use huiqi::UpSettings;
use huiqi_eventlog::{Commit, EventLog, Pending};
use huiqi_events::{types, Envelope};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn sample_run(dir: &Path) -> PathBuf {
    let sample = repo().join("deploy/sample");
    let settings = UpSettings::new(&dir.join("data"), Some(&sample.join("fixtures")));
    let pipeline = huiqi::Pipeline::start(&settings).await.unwrap();
    let run = huiqi::commands::run_sample(&pipeline, &sample, Duration::from_secs(90))
        .await
        .unwrap();
    assert!(run.done);
    pipeline.stop().await.unwrap();
    settings.data_dir
}

/// The M19(a) amount set by an operator's version file (ruling 2: never built in).
fn m19a_version(dir: &Path) -> PathBuf {
    let versions = dir.join("versions");
    std::fs::create_dir_all(&versions).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(include_str!(
        "../../../shared/policy/versions/lucheng-2023.1.json"
    ))
    .unwrap();
    v["version"] = "operator-m19a-300".into();
    v["effective_from"] = "2023-06-01".into();
    v["m19"]["a_per_person"] = "300.00".into();
    std::fs::write(versions.join("m19a.json"), v.to_string()).unwrap();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_claim_whatif_and_v1_replay_on_the_sample_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_run(dir.path()).await;

    // Reconciliation: everything agrees.
    let r = huiqi::audit::report(&data, None).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!((r.awards_approved, r.payment_orders), (7, 7));
    assert_eq!((r.settlements, r.failures, r.treasury_entries), (6, 1, 7));
    let m1 = &r.by_measure["M1"];
    assert_eq!(
        (
            m1.committed.to_string(),
            m1.settled.to_string(),
            m1.failed.to_string()
        ),
        ("32500.00".into(), "17500.00".into(), "15000.00".into())
    );
    assert!(r.csv().starts_with("measure,decisions,"));
    // A tampered ledger: one settlement removed, another duplicated.
    let ledger = std::fs::read_to_string(data.join("treasury-ledger.jsonl")).unwrap();
    let lines: Vec<&str> = ledger.lines().collect();
    let settled: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("\"settled\""))
        .collect();
    let mut tampered: Vec<&str> = lines.iter().copied().filter(|l| *l != settled[0]).collect();
    tampered.push(settled[1]);
    let bad = dir.path().join("tampered-ledger.jsonl");
    std::fs::write(&bad, tampered.join("\n") + "\n").unwrap();
    let r = huiqi::audit::report(&data, Some(&bad)).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("the treasury ledger does not show")),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems.iter().any(|p| p.contains("settled it 2 times")),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems.iter().any(|p| p.starts_with("sums:")),
        "{:?}",
        r.problems
    );

    // One claim's story: every service's events once, identity numbers masked.
    let story = huiqi::audit::claim_story(&data, "P-2023-000111", false).unwrap();
    let kinds: Vec<&str> = story.iter().map(|e| e.ty.as_str()).collect();
    for ty in [
        types::INTAKE_ACCEPTED,
        types::CLAIM_OPENED,
        types::CLAIM_VERIFIED,
        types::AWARD_DECIDED,
        types::PAYMENT_ORDERED,
        types::PAYOUT_SETTLED,
    ] {
        assert_eq!(
            kinds.iter().filter(|k| **k == ty).count(),
            1,
            "{ty}: {kinds:?}"
        );
    }
    let text = serde_json::to_string(&story).unwrap();
    let full_id = regex_free_find_id(&text);
    assert!(full_id.is_none(), "an unmasked ID number: {full_id:?}");
    let table = huiqi::audit::render_story(&story);
    assert!(table.contains("rules quoted"), "{table}");
    assert!(table.contains("M19b:"), "{table}");
    let revealed =
        serde_json::to_string(&huiqi::audit::claim_story(&data, "P-2023-000111", true).unwrap())
            .unwrap();
    assert!(
        regex_free_find_id(&revealed).is_some(),
        "--reveal shows the numbers"
    );
    assert!(matches!(
        huiqi::audit::claim_story(&data, "NO-SUCH-APP", false),
        Err(huiqi::HuiqiError::NotFound(_))
    ));

    // What-if: the M19(a) amount set changes one M19 claim by +100.00 (ruling 1: the higher of
    // a and b per person); the built-in version changes nothing.
    let versions = m19a_version(dir.path());
    let w = huiqi::commands::whatif(&data, Some(&versions), "operator-m19a-300").unwrap();
    assert_eq!(w.decisions, 9);
    assert_eq!(w.changed.len(), 1, "{:?}", w.changed);
    assert_eq!(w.changed[0].measure, "M19");
    assert_eq!(w.changed[0].delta.to_string(), "100.00");
    assert_eq!(w.by_measure["M19"].delta.to_string(), "100.00");
    let same = huiqi::commands::whatif(&data, None, "lucheng-2023.1").unwrap();
    assert!(same.changed.is_empty(), "{:?}", same.changed);

    // Upcasting: the award log rewritten with v1 entitlement events (one per grant) replays to
    // the same decisions and folds to the same history.
    let v2 = EventLog::open(&data.join("award")).unwrap();
    let v1_dir = dir.path().join("v1-award");
    let v1 = EventLog::open(&v1_dir).unwrap();
    let mut v1_events = 0;
    for rec in v2.records_from(1) {
        let env = rec.unwrap().envelope;
        let mut out = Vec::new();
        match env.ty.as_str() {
            types::ENTITLEMENT_DATA_PACKAGE | types::ENTITLEMENT_RESIDENT_POINTS => {
                let d = env.data.value();
                let v1_type = if env.ty == types::ENTITLEMENT_DATA_PACKAGE {
                    "huiqi.entitlement.data_package.v1"
                } else {
                    "huiqi.entitlement.resident_points.v1"
                };
                for g in d["grants"].as_array().unwrap() {
                    let mut data = g.clone();
                    data["claim_id"] = d["claim_id"].clone();
                    out.push(Envelope::new("award", v1_type, &env.subject, &data).unwrap());
                    v1_events += 1;
                }
            }
            _ => out.push(env),
        }
        v1.commit(&[Commit {
            inbox_id: None,
            events: out.into_iter().map(Pending::local).collect(),
        }])
        .unwrap();
    }
    assert!(v1_events > 100, "{v1_events} v1 entitlement events written");
    let policies = huiqi_policy::PolicySet::builtin();
    let a = huiqi_award::replay(&v2, &policies).unwrap();
    let b = huiqi_award::replay(&v1, &policies).unwrap();
    assert_eq!((b.decisions, b.identical), (a.decisions, a.decisions));
    assert!(b.differences.is_empty());
    // The v1 events have other ids than the batched events a decision derives today; their
    // grants are there all the same, so nothing counts as missing (a rebuilt v1 log must not
    // have its entitlements published a second time in v2 form).
    assert_eq!(
        (a.missing_entitlement_events, b.missing_entitlement_events),
        (0, 0)
    );
    let fold = |log: &EventLog| {
        let mut s = huiqi_award::State::default();
        for rec in log.records_from(1) {
            s.apply(&rec.unwrap().envelope).unwrap();
        }
        serde_json::to_value(&s.history).unwrap()
    };
    let (h2, h1) = (fold(&v2), fold(&v1));
    assert!(
        h2.as_array().unwrap().len() > 100,
        "entitlements are in the history"
    );
    assert_eq!(h1, h2, "v1 entitlements fold to the same history as v2");
    drop((v1, v2));

    // One data directory per service (as in docker-compose.yml): the award log elsewhere,
    // named with --log-dir, for the CLI's replay, report and what-if.
    let elsewhere = dir.path().join("award-volume");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::rename(data.join("award"), elsewhere.join("award")).unwrap();
    let moved = format!("award={}", elsewhere.join("award").display());
    let cli = |args: &[&str]| {
        std::process::Command::new(huiqi_e2e::procs::binary("huiqi"))
            .args(args)
            .output()
            .unwrap()
    };
    let data_s = data.to_str().unwrap();
    let out = cli(&[
        "replay",
        "--data-dir",
        data_s,
        "--log-dir",
        &moved,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(replay["identical"], 9);
    let out = cli(&["audit", "report", "--data-dir", data_s, "--log-dir", &moved]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = cli(&["replay", "--data-dir", data_s]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "without --log-dir the award log is not there"
    );
    let out = cli(&[
        "audit",
        "claim",
        "P-2023-000111",
        "--data-dir",
        data_s,
        "--log-dir",
        &moved,
        "--json",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("huiqi.award.decided.v1"));
}

/// An 18-character mainland ID number (17 digits and a digit or X) anywhere in `text`.
fn regex_free_find_id(text: &str) -> Option<String> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(17)).find_map(|i| {
        let w = &b[i..i + 18];
        let ok = w[..17].iter().all(u8::is_ascii_digit)
            && (w[17].is_ascii_digit() || w[17] == b'X')
            && (i == 0 || !b[i - 1].is_ascii_digit())
            && b.get(i + 18).is_none_or(|c| !c.is_ascii_digit());
        ok.then(|| String::from_utf8_lossy(w).into_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_rewritten_with_its_chain_recomputed_no_longer_matches_its_anchored_heads() {
    use huiqi::gen::{self, Fixtures};
    let nats = huiqi_testkit::nats();
    let mut fx = Fixtures::default();
    let apps = [
        gen::m1_application(&mut fx, "HEAD-1", &gen::uscc(51), 0, 30, 2),
        gen::m1_application(&mut fx, "HEAD-2", &gen::uscc(52), 100, 29, 2),
    ];
    let mut rig = huiqi_e2e::Rig::new(Some(nats.url()), &fx);
    rig.settings.anchor_every = Duration::from_millis(100);
    let pipeline = rig.start().await;
    let (_c, js, mut w) = huiqi_e2e::observe(nats.url()).await;
    let events: Vec<Envelope> = apps
        .iter()
        .map(|a| {
            Envelope::new("heads", types::APPLICATION_SUBMITTED, &a.application_id, a).unwrap()
        })
        .collect();
    huiqi::watch::publish_all(&js, &events, 10).await.unwrap();
    assert!(
        w.until(Duration::from_secs(60), |w| ["HEAD-1", "HEAD-2"]
            .iter()
            .all(|id| w
                .by_application
                .get(*id)
                .is_some_and(|o| o.is_final())))
            .await
    );
    pipeline.stop().await.unwrap();
    let trust = huiqi_bus::trust::TrustStore::from_file(&huiqi_bus::trust::KeySet::trust_path(
        &rig.settings.keys_dir(),
    ))
    .unwrap();
    let options = huiqi_bus::NatsOptions::new(nats.url());
    let data = rig.data_dir().to_path_buf();
    let checks = huiqi::audit::check_heads(&options, &data, &trust)
        .await
        .unwrap();
    for c in &checks {
        assert!(c.anchors >= 1, "{c:?}");
        assert!(c.mismatches.is_empty() && c.refused.is_empty(), "{c:?}");
        assert_eq!(
            c.latest_anchored, c.local_head,
            "the stop anchored the final head: {c:?}"
        );
    }

    // Rewrite the award log on "its disk": the approved decision's total raised, every record
    // re-committed so the hash chain is intact again.
    let copy = tempfile::tempdir().unwrap();
    let original = EventLog::open(&data.join("award")).unwrap();
    let forged = EventLog::open(&copy.path().join("award")).unwrap();
    for rec in original.records_from(1) {
        let mut env = rec.unwrap().envelope;
        if env.ty == types::AWARD_DECIDED {
            let mut d = env.data.value();
            if d["status"] == "approved" {
                d["total"] = "99999.00".into();
                env.data = huiqi_events::Data::from_value(&d).unwrap();
            }
        }
        forged
            .commit(&[Commit {
                inbox_id: None,
                events: vec![Pending::local(env)],
            }])
            .unwrap();
    }
    assert!(
        forged.audit().unwrap().is_clean(),
        "the chain alone cannot tell"
    );
    drop((original, forged));
    let checks = huiqi::audit::check_heads(&options, copy.path(), &trust)
        .await
        .unwrap();
    let award = checks.iter().find(|c| c.service == "award").unwrap();
    assert!(
        award.mismatches.iter().any(|m| m.contains("rewritten")),
        "{award:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplement_under_a_new_version_is_confirmed_published_and_paid_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_run(dir.path()).await;
    let versions = m19a_version(dir.path());
    let version = "operator-m19a-300";
    // The plan: one M19 claim, +100.00; nothing written without the digest.
    let plan = huiqi::commands::supplement(&data, Some(&versions), version, None).unwrap();
    assert_eq!(plan.plan.len(), 1, "{plan:?}");
    assert_eq!(plan.plan[0].amount.to_string(), "100.00");
    assert_eq!(plan.written, 0);
    assert!(huiqi::commands::supplement(&data, Some(&versions), version, Some("0000")).is_err());
    let done =
        huiqi::commands::supplement(&data, Some(&versions), version, Some(&plan.digest)).unwrap();
    assert_eq!(done.written, 1);
    let again = huiqi::commands::supplement(&data, Some(&versions), version, None).unwrap();
    assert!(
        again.plan.is_empty(),
        "a claim gets one supplement: {again:?}"
    );
    assert!(again.not_supplemented[0].1.contains("already"));

    // Award publishes it when it starts; payout pays it once, even across another restart.
    let sample = repo().join("deploy/sample");
    let settings = UpSettings::new(&data, Some(&sample.join("fixtures")));
    let supplement_id = plan.plan[0].award_id.clone();
    let ledger = settings.ledger_path();
    let paid = |ledger: &Path| {
        huiqi_providers::read_ledger(ledger)
            .into_iter()
            .filter(|e| e.award_id == supplement_id)
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        let pipeline = huiqi::Pipeline::start(&settings).await.unwrap();
        for _ in 0..150 {
            if !paid(&ledger).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        pipeline.stop().await.unwrap();
    }
    let entries = paid(&ledger);
    assert_eq!(entries.len(), 1, "paid exactly once");
    assert_eq!(entries[0].amount.to_string(), "100.00");
    let r = huiqi::audit::report(&data, None).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.by_measure["M19"].supplements, 1);
    assert_eq!(r.by_measure["M19"].settled.to_string(), "700.00");
    let (replay, same) = huiqi::commands::replay(&data, None).unwrap();
    assert!(same, "{replay}");
    let story = huiqi::audit::claim_story(&data, "P-2023-000111", false).unwrap();
    assert!(story.iter().any(|e| e.ty == types::AWARD_SUPPLEMENTED));
    assert_eq!(
        story
            .iter()
            .filter(|e| e.ty == types::PAYOUT_SETTLED)
            .count(),
        2,
        "the award and its supplement"
    );
}
