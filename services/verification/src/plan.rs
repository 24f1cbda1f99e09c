//! Which checks a measure needs, as provider requests, with person lists cut into chunks so
//! that no request or reply comes near the NATS message size limit.

use huiqi_events::payloads::Application;
use huiqi_policy::Params;
use serde_json::{json, Value};

/// One request to one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub check: &'static str,
    pub chunk: u32,
    pub chunks: u32,
    pub request: Value,
}

/// The checks every measure needs, in the order they are asked.
pub fn plan(app: &Application, p: &Params, chunk_size: usize) -> Vec<Call> {
    let uscc = app.applicant.uscc.as_str();
    let ids = app.person_ids();
    let mut calls = vec![Call {
        check: "enterprise",
        chunk: 0,
        chunks: 1,
        request: json!({ "uscc": uscc }),
    }];
    let mut per_person =
        |check: &'static str, ids: &[String], make: &dyn Fn(&[String]) -> Value, always: bool| {
            let pieces: Vec<&[String]> = if ids.is_empty() {
                if always {
                    vec![&[][..]]
                } else {
                    vec![]
                }
            } else {
                ids.chunks(chunk_size.max(1)).collect()
            };
            let n = pieces.len() as u32;
            for (i, piece) in pieces.into_iter().enumerate() {
                calls.push(Call {
                    check,
                    chunk: i as u32,
                    chunks: n,
                    request: make(piece),
                });
            }
        };
    let stay = p.stay_window;
    let period = p.policy_period;
    let measure = app.measure.clone();
    // Which person checks each measure needs, asked in this order.
    let (insured, presence, permits, telecom, exits) = match app.measure.as_str() {
        "M1" => (true, true, true, true, false),
        "M19" => (true, true, false, false, false),
        "M21" => (true, false, false, false, false),
        "M10" => (false, false, false, false, true),
        _ => (false, false, false, false, false),
    };
    let statistics = app.measure == "M9";
    if insured {
        per_person(
            "social_insurance",
            &ids,
            &|c| json!({ "uscc": uscc, "id_numbers": c }),
            false,
        );
    }
    if presence {
        per_person(
            "presence",
            &ids,
            &|c| json!({ "id_numbers": c, "from": stay.from, "to": stay.to }),
            false,
        );
    }
    if permits {
        per_person(
            "residence_permit",
            &ids,
            &|c| json!({ "id_numbers": c }),
            false,
        );
    }
    if telecom {
        let mut phones: Vec<String> = app
            .employees
            .iter()
            .flatten()
            .filter_map(|e| e.phone.clone())
            .collect();
        phones.sort();
        phones.dedup();
        per_person("telecom", &phones, &|c| json!({ "phones": c }), false);
    }
    if exits {
        per_person(
            "exit_entry",
            &ids,
            &|c| json!({ "id_numbers": c, "from": period.from, "to": period.to }),
            false,
        );
    }
    per_person(
        "prior_benefits",
        &ids,
        &|c| json!({ "uscc": uscc, "measure": measure, "id_numbers": c }),
        true,
    );
    if statistics {
        calls.insert(
            1,
            Call {
                check: "statistics",
                chunk: 0,
                chunks: 1,
                request: json!({ "uscc": uscc }),
            },
        );
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use huiqi_events::payloads::{Applicant, ApplicantKind, Employee};

    fn m1(persons: usize) -> Application {
        Application {
            application_id: "P-1".into(),
            measure: "M1".into(),
            submitted_at: chrono::DateTime::parse_from_rfc3339("2023-02-10T09:30:00+08:00")
                .unwrap(),
            applicant: Applicant {
                uscc: "91330302000001015N".into(),
                name: "x".into(),
                kind: ApplicantKind::Enterprise,
                street: "x".into(),
                bank_account: "62220000".into(),
                dispatch_agreement: None,
            },
            employees: Some(
                (0..persons)
                    .map(|i| Employee {
                        id_number: format!("{i:018}"),
                        name: "x".into(),
                        phone: Some(format!("1{:010}", i % 7)),
                    })
                    .collect(),
            ),
            returnees: None,
            exhibitions: None,
            trips: None,
            charters: None,
            placements: None,
        }
    }

    #[test]
    fn a_20000_person_roster_is_asked_in_chunks_of_500() {
        let set = huiqi_policy::PolicySet::builtin();
        let p = &set.versions()[0].params;
        let calls = plan(&m1(20_000), p, 500);
        let count = |check: &str| calls.iter().filter(|c| c.check == check).count();
        assert_eq!(count("enterprise"), 1);
        for check in [
            "social_insurance",
            "presence",
            "residence_permit",
            "prior_benefits",
        ] {
            assert_eq!(count(check), 40, "{check}");
        }
        assert_eq!(count("telecom"), 1, "7 distinct phones, one request");
        let si: Vec<&Call> = calls
            .iter()
            .filter(|c| c.check == "social_insurance")
            .collect();
        assert!(si
            .iter()
            .all(|c| c.chunks == 40 && c.request["id_numbers"].as_array().unwrap().len() == 500));
        assert_eq!(si[39].chunk, 39);
    }

    #[test]
    fn each_measure_asks_only_what_it_uses() {
        let set = huiqi_policy::PolicySet::builtin();
        let p = &set.versions()[0].params;
        let mut app = m1(3);
        app.measure = "M9".into();
        app.employees = None;
        let checks: Vec<&str> = plan(&app, p, 500).iter().map(|c| c.check).collect();
        assert_eq!(checks, vec!["enterprise", "statistics", "prior_benefits"]);
    }
}
