//! The `huiqi` binary as an operator uses it: `evaluate` offline, `audit` on a tampered log.

use std::process::Command;

fn huiqi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_huiqi"))
}

/// Runs `cmd`, which must succeed (its stderr is the failure message).
fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const APP: &str = r#"{
  "application_id": "CLI-M9", "measure": "M9", "submitted_at": "2023-04-10T10:00:00+08:00",
  "applicant": { "uscc": "91330302000001086C", "name": "样例", "kind": "enterprise",
                 "street": "南郊街道", "bank_account": "6228000000001080", "dispatch_agreement": null }
}"#;

const FACTS: &str = r#"{
  "enterprise": { "found": true, "registration_district": "330302", "tax_district": "330302",
                  "independent_legal_person": true, "industry": "manufacturing" },
  "statistics": { "above_scale_manufacturing": true, "upgraded_2022": false,
                  "q1_2023_output": "45000000.00", "q1_2022_output": "36000000.00",
                  "y2022_output": "1200000000.00" }
}"#;

#[test]
fn evaluate_prints_the_award_data_and_fails_clearly_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.json");
    let facts = dir.path().join("facts.json");
    std::fs::write(&app, APP).unwrap();
    std::fs::write(&facts, FACTS).unwrap();
    let out = succeeds(
        huiqi()
            .args(["evaluate", "--application"])
            .arg(&app)
            .arg("--facts")
            .arg(&facts),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "approved");
    assert_eq!(v["total"], "550000.00");
    assert_eq!(
        v["policy_version"], "lucheng-2023.1",
        "the one built-in version (ruling 2)"
    );
    // An operator's version from 2023-04-01, loaded with --policy-dir: in force on the April
    // submission date, its file's SHA-256 recorded in the decision.
    let versions = dir.path().join("versions");
    std::fs::create_dir(&versions).unwrap();
    let text = include_str!("../../../shared/policy/versions/lucheng-2023.1.json")
        .replace("\"lucheng-2023.1\"", "\"operator-2023-04\"")
        .replace(
            "\"effective_from\": \"2023-01-05\"",
            "\"effective_from\": \"2023-04-01\"",
        );
    std::fs::write(versions.join("operator.json"), &text).unwrap();
    let op = huiqi()
        .args(["evaluate", "--application"])
        .arg(&app)
        .arg("--facts")
        .arg(&facts)
        .arg("--policy-dir")
        .arg(&versions)
        .output()
        .unwrap();
    assert!(
        op.status.success(),
        "{}",
        String::from_utf8_lossy(&op.stderr)
    );
    let op: serde_json::Value = serde_json::from_slice(&op.stdout).unwrap();
    assert_eq!(op["policy_version"], "operator-2023-04");
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(op["policy_hash"], hash.as_str());
    // A file that overlaps the built-in version in time is refused, naming both.
    std::fs::write(
        versions.join("overlap.json"),
        text.replace("operator-2023-04", "operator-overlap")
            .replace("2023-04-01", "2023-01-05"),
    )
    .unwrap();
    let bad = huiqi()
        .args(["evaluate", "--application"])
        .arg(&app)
        .arg("--facts")
        .arg(&facts)
        .arg("--policy-dir")
        .arg(&versions)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("overlap") && err.contains("operator-overlap"),
        "{err}"
    );
    let v1 = huiqi()
        .args([
            "evaluate",
            "--policy-version",
            "lucheng-2023.1",
            "--application",
        ])
        .arg(&app)
        .arg("--facts")
        .arg(&facts)
        .output()
        .unwrap();
    let v1: serde_json::Value = serde_json::from_slice(&v1.stdout).unwrap();
    assert_eq!(
        (v1["policy_version"].as_str(), v1["total"].as_str()),
        (Some("lucheng-2023.1"), Some("550000.00"))
    );
    assert_eq!(v["lines"][1]["rule"], "M9b");
    let again = huiqi()
        .args(["evaluate", "--application"])
        .arg(&app)
        .arg("--facts")
        .arg(&facts)
        .output()
        .unwrap();
    assert_eq!(out.stdout, again.stdout, "byte-identical output");

    // A rejected decision is still exit 0.
    std::fs::write(
        &facts,
        FACTS.replace("\"330302\", \"tax", "\"330304\", \"tax"),
    )
    .unwrap();
    let out = huiqi()
        .args(["evaluate", "--application"])
        .arg(&app)
        .arg("--facts")
        .arg(&facts)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"rejected\""));

    // Unreadable input: non-zero, naming the file and field.
    std::fs::write(
        &facts,
        r#"{ "statistics": { "above_scale_manufacturing": "yes" } }"#,
    )
    .unwrap();
    let out = huiqi()
        .args(["evaluate", "--application"])
        .arg(&app)
        .arg("--facts")
        .arg(&facts)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("facts.json") && err.contains("statistics.above_scale_manufacturing"),
        "{err}"
    );
    let out = huiqi()
        .args(["evaluate", "--application", "/nonexistent.json", "--facts"])
        .arg(&facts)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.json"));
    std::fs::write(&facts, FACTS).unwrap();
    let out = huiqi()
        .args(["evaluate", "--application"])
        .arg(&app)
        .arg("--facts")
        .arg(&facts)
        .args(["--policy-version", "v9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown policy version `v9`"));
}

#[test]
fn audit_reports_a_tampered_log() {
    let dir = tempfile::tempdir().unwrap();
    let award = dir.path().join("award");
    {
        let log = huiqi_eventlog::EventLog::open(&award).unwrap();
        for i in 0..3 {
            let e = huiqi_events::Envelope::new(
                "t",
                "huiqi.award.decided.v1",
                "C-1",
                &serde_json::json!({ "i": i }),
            )
            .unwrap();
            log.commit(&[huiqi_eventlog::Commit {
                inbox_id: None,
                events: vec![huiqi_eventlog::Pending::local(e)],
            }])
            .unwrap();
        }
    }
    let ok = huiqi()
        .args(["audit", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    {
        let log = huiqi_eventlog::EventLog::open(&award).unwrap();
        let mut raw = log.raw_record(2).unwrap().unwrap();
        let n = raw.len();
        raw[n - 3] ^= 1;
        log.tamper(2, Some(raw)).unwrap();
    }
    let bad = huiqi()
        .args(["audit", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("record 2: content does not match its hash")
    );
}

#[test]
fn missing_directories_and_unreadable_files_exit_non_zero_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    for cmd in ["replay", "audit"] {
        let out = huiqi()
            .arg(cmd)
            .arg("--data-dir")
            .arg(&missing)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{cmd}: not found");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no directory"));
        assert!(
            !missing.exists(),
            "{cmd} created the directory it was asked to read"
        );
    }
    // An empty directory is not a data dir either.
    let out = huiqi()
        .arg("audit")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // submit reads every file before publishing: one bad file, nothing sent (the NATS URL
    // points nowhere, so reaching it would be a different error).
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&good, APP).unwrap();
    std::fs::write(&bad, "{ not json").unwrap();
    let out = huiqi()
        .args(["submit", "--nats-url", "nats://127.0.0.1:1"])
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json"), "{err}");
    assert!(err.contains("nothing was published"), "{err}");
    assert!(
        !err.contains("good.json"),
        "only the bad file is named: {err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    // A cluster of two could not survive losing either node: refused before anything starts.
    let data = dir.path().join("up-data");
    let out = huiqi()
        .args(["up", "--cluster", "2", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cluster") && err.contains("3 or 5"), "{err}");
    assert!(!data.exists(), "nothing was started");
}

#[test]
fn loadgen_settles_every_claim_and_reports_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("figures.json");
    let out = succeeds(
        huiqi()
            .args(["loadgen", "--applications", "30", "--persons", "40"])
            .args(["--timeout-secs", "120", "--json"])
            .arg(&json)
            .arg("--data-dir")
            .arg(dir.path().join("run")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CPU per claim"), "{text}");
    let f: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(f["settled"], 30, "{f}");
    assert_eq!(f["rejected"], 0);
    assert_eq!(f["payment_failed"], 0);
    assert_eq!(f["stream_messages_per_claim"], 9.0);
    assert_eq!(f["per_service"]["award"]["log_records_per_claim"], 5.0);
    let n = |k: &str| f[k].as_f64().unwrap_or_else(|| panic!("{k} in {f}"));
    assert!(n("latency_p50_ms") <= n("latency_p99_ms"));
    assert!(n("latency_p99_ms") <= n("latency_max_ms"));
    // The CPU and memory figures are read from /proc: present and plausible.
    assert!(n("cpu_ms_per_claim_huiqi") > 0.0 && n("cpu_ms_per_claim_nats_server") > 0.0);
    assert!(n("cores_busy") > 0.0 && n("cores_busy") < 64.0);
    assert!(n("rss_mb_at_first_submit") > 0.0);
    assert!(n("peak_rss_mb_setup") >= n("rss_mb_at_first_submit"));
    assert!(n("peak_rss_mb_run") > 0.0);
    assert!(n("peak_rss_mb_huiqi") >= n("peak_rss_mb_run"));
    assert!(n("peak_rss_mb_huiqi") >= n("peak_rss_mb_setup"));
}
