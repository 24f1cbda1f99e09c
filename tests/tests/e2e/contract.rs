//! The published contract cannot drift from the code: `docs/contract` is exactly what the
//! types render, and the sample applications and every event of a real run of the sample data
//! validate against those schemas (envelope and data, by type).

use huiqi::UpSettings;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schemas() -> BTreeMap<String, jsonschema::Validator> {
    huiqi_events::schema::schema_files()
        .into_iter()
        .map(|(name, v)| {
            let validator = jsonschema::validator_for(&v)
                .unwrap_or_else(|e| panic!("{name} is not a valid JSON Schema: {e}"));
            (name.trim_end_matches(".json").to_string(), validator)
        })
        .collect()
}

fn check(validators: &BTreeMap<String, jsonschema::Validator>, name: &str, what: &str, v: &Value) {
    let validator = validators
        .get(name)
        .unwrap_or_else(|| panic!("{what}: no schema {name}"));
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{what} does not fit {name}: {errors:?}");
}

#[test]
fn the_committed_contract_is_what_the_types_render() {
    let dir = repo().join("docs/contract");
    for (rel, text) in huiqi::commands::contract_files() {
        let path = dir.join(&rel);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `huiqi contract`)", path.display()));
        assert_eq!(
            committed,
            text,
            "{} differs from the types: run `huiqi contract` and commit",
            path.display()
        );
    }
    let api: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("asyncapi.json")).unwrap()).unwrap();
    assert_eq!(api["asyncapi"], "3.0.0");
    // Every $ref of the AsyncAPI document points at a file or component that exists.
    let text = api.to_string();
    for r in text.split("\"$ref\":\"").skip(1) {
        let r = &r[..r.find('"').unwrap()];
        if let Some(file) = r.strip_prefix("schemas/") {
            assert!(dir.join("schemas").join(file).exists(), "{r}");
        } else {
            let pointer = r.trim_start_matches('#');
            assert!(api.pointer(pointer).is_some(), "{r}");
        }
    }
}

#[test]
fn a_schema_refuses_what_the_contract_refuses() {
    let v = schemas();
    let good = serde_json::json!({ "claim_id": "C-1", "award_id": "A-1", "amount": "500.00",
        "bank_reference": "T-1", "settled_at": "2023-03-01T10:00:00+08:00" });
    check(&v, "huiqi.payout.settled.v1", "a settlement", &good);
    let mut bad = good.clone();
    bad["amount"] = serde_json::json!(500);
    assert!(
        !v["huiqi.payout.settled.v1"].is_valid(&bad),
        "money as a number"
    );
    let mut bad = good;
    bad.as_object_mut().unwrap().remove("bank_reference");
    assert!(
        !v["huiqi.payout.settled.v1"].is_valid(&bad),
        "a missing field"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_data_and_every_event_of_a_real_run_fit_the_schemas() {
    let validators = schemas();
    let sample = repo().join("deploy/sample");
    let mut readable = 0;
    for f in huiqi::commands::application_files(&sample.join("applications")).unwrap() {
        let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(&f).unwrap()) else {
            continue; // the deliberately malformed sample
        };
        let data = if v.get("specversion").is_some() {
            check(&validators, "envelope", &f.display().to_string(), &v);
            v["data"].clone()
        } else {
            v
        };
        // Samples that intake must refuse may break the schema too; the rest must fit it.
        if huiqi::commands::read_application(&f).is_ok() {
            check(
                &validators,
                huiqi_events::types::APPLICATION_SUBMITTED,
                &f.display().to_string(),
                &data,
            );
            readable += 1;
        }
    }
    assert!(readable >= 8, "{readable} readable sample applications");

    let dir = tempfile::tempdir().unwrap();
    let settings = UpSettings::new(&dir.path().join("data"), Some(&sample.join("fixtures")));
    let pipeline = huiqi::Pipeline::start(&settings).await.unwrap();
    let run = huiqi::commands::run_sample(&pipeline, &sample, Duration::from_secs(90))
        .await
        .unwrap();
    assert!(run.done, "every sample application reached its outcome");
    let client = pipeline.admin().connect("contract").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let messages = huiqi_e2e::read_stream(&js, "huiqi.>").await;
    pipeline.stop().await.unwrap();
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for m in &messages {
        let v: Value = match serde_json::from_slice(&m.payload) {
            Ok(v) => v,
            Err(_) => continue, // the malformed sample, as the portal sent it
        };
        let what = format!("{} on {}", v["type"], m.subject);
        check(&validators, "envelope", &what, &v);
        let ty = v["type"].as_str().unwrap().to_string();
        check(&validators, &ty, &what, &v["data"]);
        *by_type.entry(ty).or_default() += 1;
    }
    for ty in [
        huiqi_events::types::APPLICATION_SUBMITTED,
        huiqi_events::types::INTAKE_ACCEPTED,
        huiqi_events::types::INTAKE_REJECTED,
        huiqi_events::types::CLAIM_OPENED,
        // Check records of small claims travel inside claim.verified (and validate there).
        huiqi_events::types::CLAIM_VERIFIED,
        huiqi_events::types::AWARD_DECIDED,
        huiqi_events::types::PAYMENT_ORDERED,
        huiqi_events::types::PAYOUT_SETTLED,
        huiqi_events::types::PAYOUT_FAILED,
        huiqi_events::types::ENTITLEMENT_DATA_PACKAGE,
        huiqi_events::types::ENTITLEMENT_RESIDENT_POINTS,
    ] {
        assert!(
            by_type.contains_key(ty),
            "the run produced no {ty}: {by_type:?}"
        );
    }
}
