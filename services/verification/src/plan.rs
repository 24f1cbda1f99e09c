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
    let mut statistics = false;
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
    match app.measure.as_str() {
        "M1" => {
            per_person(
                "social_insurance",
                &ids,
                &|c| json!({ "uscc": uscc, "id_numbers": c }),
                false,
            );
            per_person(
                "presence",
                &ids,
                &|c| json!({ "id_numbers": c, "from": stay.from, "to": stay.to }),
                false,
            );
            per_person(
                "residence_permit",
                &ids,
                &|c| json!({ "id_numbers": c }),
                false,
            );
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
        "M9" => statistics = true,
        "M10" => {
            per_person(
                "exit_entry",
                &ids,
                &|c| json!({ "id_numbers": c, "from": period.from, "to": period.to }),
                false,
            );
        }
        "M19" => {
            per_person(
                "social_insurance",
                &ids,
                &|c| json!({ "uscc": uscc, "id_numbers": c }),
                false,
            );
            per_person(
                "presence",
                &ids,
                &|c| json!({ "id_numbers": c, "from": stay.from, "to": stay.to }),
                false,
            );
        }
        "M21" => {
            per_person(
                "social_insurance",
                &ids,
                &|c| json!({ "uscc": uscc, "id_numbers": c }),
                false,
            );
        }
        _ => {}
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
