//! Which checks a claim needs, as provider requests: the claim's measure names its checks
//! (`huiqi_policy::Measure::checks`), each check knows what it asks about and how
//! (`huiqi_events::checks::Check`); person and phone lists are cut into chunks so that no
//! request or reply comes near the NATS message size limit.

use huiqi_events::checks::{Check, Input, RequestContext};
use huiqi_events::payloads::Application;
use huiqi_policy::Params;

/// One request to one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub check: Check,
    pub chunk: u32,
    pub chunks: u32,
    pub request: serde_json::Value,
}

/// The calls a claim needs, in the order its measure names the checks. An unknown measure
/// (intake refuses those) needs only the registry check.
pub fn plan(app: &Application, p: &Params, chunk_size: usize) -> Vec<Call> {
    let checks: &[Check] = huiqi_policy::measures::measure(&app.measure)
        .map(|m| m.checks())
        .unwrap_or(&[Check::Enterprise]);
    let ctx = RequestContext {
        uscc: &app.applicant.uscc,
        measure: &app.measure,
        stay_window: (p.stay_window.from, p.stay_window.to),
        policy_period: (p.policy_period.from, p.policy_period.to),
    };
    let persons = app.person_ids();
    let mut phones: Vec<String> = app
        .employees
        .iter()
        .flatten()
        .filter_map(|e| e.phone.clone())
        .collect();
    phones.sort();
    phones.dedup();
    let mut calls = Vec::new();
    for &check in checks {
        let items: &[String] = match check.input() {
            Input::Applicant => {
                calls.push(Call {
                    check,
                    chunk: 0,
                    chunks: 1,
                    request: check.request(&ctx, &[]),
                });
                continue;
            }
            Input::Persons => &persons,
            Input::Phones => &phones,
        };
        let pieces: Vec<&[String]> = if items.is_empty() {
            if check.asked_without_persons() {
                vec![&[][..]]
            } else {
                vec![]
            }
        } else {
            items.chunks(chunk_size.max(1)).collect()
        };
        let n = pieces.len() as u32;
        for (i, piece) in pieces.into_iter().enumerate() {
            calls.push(Call {
                check,
                chunk: i as u32,
                chunks: n,
                request: check.request(&ctx, piece),
            });
        }
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
        let count = |check: Check| calls.iter().filter(|c| c.check == check).count();
        assert_eq!(count(Check::Enterprise), 1);
        for check in [
            Check::SocialInsurance,
            Check::Presence,
            Check::ResidencePermit,
            Check::PriorBenefits,
        ] {
            assert_eq!(count(check), 40, "{check}");
        }
        assert_eq!(count(Check::Telecom), 1, "7 distinct phones, one request");
        let si: Vec<&Call> = calls
            .iter()
            .filter(|c| c.check == Check::SocialInsurance)
            .collect();
        assert!(si
            .iter()
            .all(|c| c.chunks == 40 && c.request["id_numbers"].as_array().unwrap().len() == 500));
        assert_eq!(si[39].chunk, 39);
        let presence = calls.iter().find(|c| c.check == Check::Presence).unwrap();
        assert_eq!(presence.request["from"], "2023-01-06");
        assert_eq!(presence.request["to"], "2023-02-05");
    }

    #[test]
    fn each_measure_asks_only_what_it_uses() {
        let set = huiqi_policy::PolicySet::builtin();
        let p = &set.versions()[0].params;
        let mut app = m1(3);
        app.measure = "M9".into();
        app.employees = None;
        let checks: Vec<Check> = plan(&app, p, 500).iter().map(|c| c.check).collect();
        assert_eq!(
            checks,
            vec![Check::Enterprise, Check::Statistics, Check::PriorBenefits]
        );
    }
}
