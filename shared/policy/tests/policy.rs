//! The policy read straight from POLICY.md: every worked example and every boundary, then
//! properties that must hold for any input.

use chrono::{DateTime, NaiveDate};
use huiqi_events::payloads::*;
use huiqi_events::Money;
use huiqi_policy::{evaluate, Entitlement, Evaluation, History, PolicySet};
use proptest::prelude::*;
use std::str::FromStr;

// ------------------------------------------------------------------------------------------
// Builders
// ------------------------------------------------------------------------------------------

const USCC: &str = "91330302000001015N";

fn m(s: &str) -> Money {
    Money::from_str(s).unwrap()
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A non-local ID number (Sichuan) for person `n`; `area` overrides the first six digits.
fn id_in(area: &str, n: u32) -> String {
    format!(
        "{area}1990{:02}{:02}{:03}X",
        1 + n / 28 % 12,
        1 + n % 28,
        n % 1000
    )
}

fn id(n: u32) -> String {
    id_in("510107", n)
}

fn app(measure: &str) -> Application {
    Application {
        application_id: format!("T-{measure}"),
        measure: measure.into(),
        submitted_at: DateTime::parse_from_rfc3339("2023-02-10T09:30:00+08:00").unwrap(),
        applicant: Applicant {
            uscc: USCC.into(),
            name: "测试".into(),
            kind: ApplicantKind::Enterprise,
            street: "五马街道".into(),
            bank_account: "6222000011112222".into(),
            dispatch_agreement: None,
        },
        employees: None,
        returnees: None,
        exhibitions: None,
        trips: None,
        charters: None,
        placements: None,
    }
}

fn enterprise() -> EnterpriseReply {
    EnterpriseReply {
        found: true,
        name: Some("测试".into()),
        registration_district: Some("330302".into()),
        tax_district: Some("330302".into()),
        independent_legal_person: Some(true),
        industry: Some("manufacturing".into()),
        foreign_trade: Some(true),
        kind: Some(ApplicantKind::Enterprise),
    }
}

fn facts() -> Facts {
    Facts {
        enterprise: Some(enterprise()),
        ..Default::default()
    }
}

fn insured(id: &str) -> InsuredPerson {
    InsuredPerson {
        id_number: id.into(),
        pension_months_with_applicant: vec!["2023-01".into(), "2023-02".into()],
        first_lucheng_enrolment: None,
    }
}

fn stayed(id: &str, whole: bool, arrived: Option<&str>) -> PresencePerson {
    PresencePerson {
        id_number: id.into(),
        stayed_whole_window: whole,
        arrived_on: arrived.map(d),
    }
}

/// An M1 application with `n` persons who all qualify, and their facts.
fn m1(n: u32) -> (Application, Facts) {
    let mut a = app("M1");
    let ids: Vec<String> = (0..n).map(id).collect();
    a.employees = Some(
        ids.iter()
            .enumerate()
            .map(|(i, x)| Employee {
                id_number: x.clone(),
                name: "员工".into(),
                phone: Some(format!("139{i:08}")),
            })
            .collect(),
    );
    let mut f = facts();
    f.social_insurance = Some(SocialInsuranceReply {
        persons: ids.iter().map(|x| insured(x)).collect(),
    });
    f.presence = Some(PresenceReply {
        persons: ids.iter().map(|x| stayed(x, true, None)).collect(),
    });
    (a, f)
}

fn run(a: &Application, f: &Facts) -> Evaluation {
    run_with(a, f, &History::default())
}

fn run_with(a: &Application, f: &Facts, h: &History) -> Evaluation {
    let policies = PolicySet::builtin();
    let p = policies
        .for_application(a)
        .unwrap_or_else(|_| &policies.versions()[0]);
    evaluate(p, "C-test", a, f, h)
}

fn total(e: &Evaluation) -> String {
    e.decision.total.to_string()
}

fn paid_lines(e: &Evaluation) -> usize {
    e.decision.lines.iter().filter(|l| l.paid).count()
}

fn reasons(e: &Evaluation) -> String {
    e.decision
        .lines
        .iter()
        .map(|l| l.reason.as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

// ------------------------------------------------------------------------------------------
// Parameters and versions
// ------------------------------------------------------------------------------------------

#[test]
fn parameter_files_are_strict_and_versions_are_dated() {
    let set = PolicySet::builtin();
    assert_eq!(
        set.in_force(d("2023-01-05")).unwrap().version(),
        "lucheng-2023.1"
    );
    assert_eq!(
        set.in_force(d("2023-02-28")).unwrap().version(),
        "lucheng-2023.1"
    );
    assert_eq!(
        set.in_force(d("2023-03-01")).unwrap().version(),
        "lucheng-2023.2"
    );
    assert!(set.in_force(d("2023-01-04")).is_err());
    let v1 = set.get("lucheng-2023.1").unwrap();
    assert_eq!(v1.hash.len(), 64);
    assert_ne!(v1.hash, set.get("lucheng-2023.2").unwrap().hash);
    let text = include_str!("../versions/lucheng-2023.1.json");
    let typo = text.replacen("\"min_retained\"", "\"min_retaind\"", 1);
    let err = huiqi_policy::Policy::from_json("typo.json", &typo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_retaind"), "{err}");
    let extra = text.replacen("\"m1\": {", "\"m1\": { \"bonus\": 1,", 1);
    assert!(huiqi_policy::Policy::from_json("extra.json", &extra).is_err());
}

#[test]
fn decisions_name_the_policy_version_hash_and_rules() {
    let (a, f) = m1(30);
    let e = run(&a, &f);
    assert_eq!(e.decision.policy_version, "lucheng-2023.1");
    assert_eq!(
        e.decision.policy_hash,
        PolicySet::builtin().get("lucheng-2023.1").unwrap().hash
    );
    assert!(e.decision.rules["M1"].contains("30 人以上"));
    assert!(e.decision.lines.iter().all(|l| l.rule == "M1"));
    assert!(e.decision.facts.social_insurance.is_some());
}

// ------------------------------------------------------------------------------------------
// Supplementary rules: period, eligible applicant, take the highest
// ------------------------------------------------------------------------------------------

#[test]
fn policy_period_edges_in_shanghai_time() {
    let cases = [
        ("2023-01-04T23:59:59+08:00", false),
        ("2023-01-05T00:00:00+08:00", true),
        ("2023-01-04T16:00:00Z", true), // = 2023-01-05 00:00 in Shanghai
        ("2023-06-30T23:59:59+08:00", true),
        ("2023-07-01T00:00:00+08:00", false),
        ("2023-06-30T16:30:00Z", false), // = 2023-07-01 00:30 in Shanghai
    ];
    for (t, ok) in cases {
        let (mut a, f) = m1(30);
        a.submitted_at = DateTime::parse_from_rfc3339(t).unwrap();
        let e = run(&a, &f);
        assert_eq!(
            e.decision.status == AwardStatus::Approved,
            ok,
            "{t}: {}",
            reasons(&e)
        );
        if !ok {
            assert!(reasons(&e).contains("outside the policy period"), "{t}");
        }
    }
}

/// A change to the application and the registry reply.
type Change = Box<dyn Fn(&mut Application, &mut EnterpriseReply)>;

#[test]
fn eligible_applicant_rules() {
    let cases: Vec<(&str, Change, bool)> = vec![
        ("eligible", Box::new(|_, _| {}), true),
        ("not found", Box::new(|_, e| e.found = false), false),
        (
            "registered in Ouhai",
            Box::new(|_, e| e.registration_district = Some("330304".into())),
            false,
        ),
        (
            "taxed in Ouhai",
            Box::new(|_, e| e.tax_district = Some("330304".into())),
            false,
        ),
        (
            "not a legal person",
            Box::new(|_, e| e.independent_legal_person = Some(false)),
            false,
        ),
        (
            "social organisation",
            Box::new(|a, e| {
                a.applicant.kind = ApplicantKind::SocialOrg;
                e.kind = Some(ApplicantKind::SocialOrg)
            }),
            true,
        ),
        (
            "private non-enterprise",
            Box::new(|a, _| a.applicant.kind = ApplicantKind::PrivateNonEnterprise),
            true,
        ),
        (
            "dispatch without agreement",
            Box::new(|a, _| a.applicant.kind = ApplicantKind::LaborDispatch),
            false,
        ),
        (
            "dispatch with agreement",
            Box::new(|a, _| {
                a.applicant.kind = ApplicantKind::LaborDispatch;
                a.applicant.dispatch_agreement = Some("LD-2023-01".into())
            }),
            true,
        ),
    ];
    for (name, change, ok) in cases {
        let (mut a, mut f) = m1(30);
        let mut ent = enterprise();
        change(&mut a, &mut ent);
        f.enterprise = Some(ent);
        let e = run(&a, &f);
        assert_eq!(
            e.decision.status == AwardStatus::Approved,
            ok,
            "{name}: {}",
            reasons(&e)
        );
        if !ok {
            assert!(e.decision.rules.contains_key("SR1"), "{name}");
        }
    }
    let (a, mut f) = m1(30);
    f.enterprise = None;
    assert!(reasons(&run(&a, &f)).contains("`enterprise` check has not answered"));
}

#[test]
fn take_the_highest_below_equal_and_above_ours() {
    for (prior, line, paid) in [
        ("200.00", "300.00", true),
        ("500.00", "0.00", false),
        ("600.00", "0.00", false),
    ] {
        let (a, mut f) = m1(30);
        f.prior_benefits = Some(PriorBenefitsReply {
            payments: vec![PriorPayment {
                item: "留工补助".into(),
                person: Some(id(0)),
                amount: m(prior),
                policy: "温州市留工补助".into(),
            }],
        });
        let e = run(&a, &f);
        let l = e
            .decision
            .lines
            .iter()
            .find(|l| l.person.as_deref() == Some(id(0).as_str()))
            .unwrap();
        assert_eq!(
            (l.amount.to_string().as_str(), l.paid),
            (line, paid),
            "prior {prior}"
        );
        assert!(
            l.reason.contains("温州市留工补助"),
            "the prior payment is named: {}",
            l.reason
        );
        assert!(e.decision.rules.contains_key("SR2"));
        let expected = Money::yuan(29 * 500) + m(line);
        assert_eq!(e.decision.total, expected.round(), "prior {prior}");
    }
}

// ------------------------------------------------------------------------------------------
// M1, M4, M5
// ------------------------------------------------------------------------------------------

#[test]
fn m1_thirty_is_enough_twenty_nine_is_not() {
    let e = run(&m1(30).0, &m1(30).1);
    assert_eq!(
        (e.decision.status, total(&e)),
        (AwardStatus::Approved, "15000.00".into())
    );
    let e = run(&m1(29).0, &m1(29).1);
    assert_eq!(
        (e.decision.status, total(&e)),
        (AwardStatus::Rejected, "0.00".into())
    );
    assert!(reasons(&e).contains("29 qualifying") && reasons(&e).contains("at least 30"));
}

#[test]
fn m1_person_conditions() {
    let (mut a, mut f) = m1(33);
    let emp = a.employees.as_mut().unwrap();
    emp[0].id_number = id_in("330302", 900); // local (Lucheng)
    emp[1].id_number = id_in("330327", 901); // local (Cangnan, still Wenzhou 3303)
    f.social_insurance.as_mut().unwrap().persons[2].pension_months_with_applicant =
        vec!["2023-01".into()];
    f.presence.as_mut().unwrap().persons[3].stayed_whole_window = false;
    emp.push(emp[4].clone()); // listed twice
    let e = run(&a, &f);
    let line = |i: usize| &e.decision.lines[i];
    assert!(line(0).reason.contains("local person"));
    assert!(line(1).reason.contains("local person"));
    assert!(line(2).reason.contains("not insured") && line(2).reason.contains("2023-01"));
    assert!(line(3).reason.contains("left Wenzhou"));
    assert!(line(33).reason.contains("more than once"));
    assert_eq!(
        e.decision
            .lines
            .iter()
            .filter(|l| l.reason.starts_with("qualifies"))
            .count(),
        29
    );
    assert_eq!(
        e.decision.status,
        AwardStatus::Rejected,
        "29 left after the exclusions"
    );
    assert!(reasons(&e).contains("29 qualifying"));
}

#[test]
fn m1_one_award_per_enterprise_and_a_person_for_one_enterprise() {
    let (a, f) = m1(35);
    let first = run(&a, &f);
    let mut h = History::default();
    h.record(&a, &first);
    let second = run_with(&a, &f, &h);
    assert_eq!(second.decision.status, AwardStatus::Rejected);
    assert!(reasons(&second).contains("already received its one M1 award"));
    // Another enterprise listing 6 of the same persons: they do not count twice.
    let (mut b, mut g) = m1(36);
    b.applicant.uscc = "91330302000002018Y".into();
    for (i, e) in b.employees.as_mut().unwrap().iter_mut().enumerate().skip(6) {
        e.id_number = id(1000 + i as u32);
    }
    let ids: Vec<String> = b
        .employees
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.id_number.clone())
        .collect();
    g.social_insurance = Some(SocialInsuranceReply {
        persons: ids.iter().map(|x| insured(x)).collect(),
    });
    g.presence = Some(PresenceReply {
        persons: ids.iter().map(|x| stayed(x, true, None)).collect(),
    });
    let e = run_with(&b, &g, &h);
    assert_eq!(paid_lines(&e), 30);
    assert_eq!(total(&e), "15000.00");
    assert!(reasons(&e).contains("already counted for M1 by enterprise"));
}

#[test]
fn m4_and_m5_entitlements() {
    let (a, mut f) = m1(29); // below 30: no money, but M4/M5 still apply
    let emp = a.employees.as_ref().unwrap();
    f.telecom = Some(TelecomReply {
        numbers: vec![
            TelecomNumber {
                phone: emp[0].phone.clone().unwrap(),
                carrier: "unicom".into(),
                city_code: "0577".into(),
            },
            TelecomNumber {
                phone: emp[1].phone.clone().unwrap(),
                carrier: "mobile".into(),
                city_code: "0571".into(),
            },
        ],
    });
    let permit = |id: &str, issuer: &str, from: &str, to: &str| PermitPerson {
        id_number: id.into(),
        permit: Some(Permit {
            issuer_code: issuer.into(),
            valid_from: d(from),
            valid_to: d(to),
        }),
    };
    f.residence_permit = Some(ResidencePermitReply {
        persons: vec![
            permit(&id(0), "330302", "2023-01-22", "2023-12-31"),
            permit(&id(1), "330302", "2022-01-01", "2023-01-22"),
            permit(&id(2), "330302", "2022-01-01", "2023-01-21"),
            permit(&id(3), "330303", "2022-01-01", "2024-01-01"),
        ],
    });
    let e = run(&a, &f);
    assert_eq!(e.decision.status, AwardStatus::Rejected);
    assert_eq!(
        e.entitlements,
        vec![
            Entitlement::DataPackage {
                person: id(0),
                phone: emp[0].phone.clone().unwrap(),
                carrier: "unicom".into(),
                gigabytes: 20
            },
            Entitlement::ResidentPoints {
                person: id(0),
                points: 5
            },
            Entitlement::ResidentPoints {
                person: id(1),
                points: 5
            },
        ]
    );
    let mut h = History::default();
    h.record(&a, &e);
    assert!(
        run_with(&a, &f, &h).entitlements.is_empty(),
        "once per number and per person"
    );
}

// ------------------------------------------------------------------------------------------
// M9
// ------------------------------------------------------------------------------------------

fn m9(q1: &str, prev: &str, y2022: &str, upgraded: bool) -> Evaluation {
    let a = app("M9");
    let mut f = facts();
    f.statistics = Some(StatisticsReply {
        above_scale_manufacturing: true,
        upgraded_2022: upgraded,
        q1_2023_output: Some(m(q1)),
        q1_2022_output: Some(m(prev)),
        y2022_output: Some(m(y2022)),
    });
    run(&a, &f)
}

#[test]
fn m9_worked_examples_and_boundaries() {
    // (q1, q1_prev, y2022, upgraded, expected total)
    let table = [
        // POLICY.md worked example: g = 25.0, y2022 1.2 B → 200,000 + 7 × 50,000.
        (
            "45000000.00",
            "36000000.00",
            "1200000000.00",
            false,
            "550000.00",
        ),
        // Worked example "q1 = 45 M, g = 18.0 exactly": 45 M cannot give exactly 18 % over a
        // base in fen, so the same case with q1 = 47.2 M over 40 M: tiers fail (not > 18),
        // y2022 = 30 M → the fallback needs g ≥ 25 → 0.
        ("47200000.00", "40000000.00", "30000000.00", false, "0.00"),
        (
            "45000000.00",
            "38135593.22",
            "30000000.00",
            false,
            "200000.00",
        ), // g ≈ 18.0000000139 > 18
        ("11800000.00", "10000000.00", "30000000.00", false, "0.00"), // g = 18.0 exactly, q1 > 10 M
        (
            "11800001.00",
            "10000000.00",
            "30000000.00",
            false,
            "100000.00",
        ), // g just over 18
        (
            "10000000.00",
            "8000000.00",
            "30000000.00",
            false,
            "50000.00",
        ), // q1 exactly 10 M: not > 10 M; g = 25 → fallback
        (
            "10000000.01",
            "8000000.00",
            "30000000.00",
            false,
            "100000.00",
        ),
        (
            "40000000.00",
            "30000000.00",
            "30000000.00",
            false,
            "100000.00",
        ), // exactly 40 M: tier A
        (
            "40000000.01",
            "30000000.00",
            "30000000.00",
            false,
            "200000.00",
        ),
        ("5000000.00", "4000000.00", "20000000.00", false, "50000.00"), // g = 25, y2022 exactly 20 M
        ("5000000.00", "4000000.00", "19999999.99", false, "0.00"),
        ("5000000.00", "4000001.00", "20000000.00", false, "0.00"), // g just under 25
        ("8000000.00", "8000000.00", "9000000.00", true, "50000.00"), // upgraded, q1 exactly 8 M
        ("7999999.99", "8000000.00", "9000000.00", true, "0.00"),
        (
            "45000000.00",
            "36000000.00",
            "1000000000.00",
            false,
            "550000.00",
        ), // y2022 exactly 1 B
        (
            "45000000.00",
            "36000000.00",
            "999999999.99",
            false,
            "200000.00",
        ),
        (
            "45000000.00",
            "37500000.00",
            "1200000000.00",
            false,
            "300000.00",
        ), // g = 20 exactly: 200k + 2 × 50k
        (
            "70000000.00",
            "50000000.00",
            "1200000000.00",
            false,
            "800000.00",
        ), // g = 40 → 200k + 22 × 50k, capped
        ("45000000.00", "0.00", "1200000000.00", false, "0.00"), // base 0: growth undefined
        (
            "45000000.00",
            "36450000.00",
            "1200000000.00",
            false,
            "450000.00",
        ), // g ≈ 23.457: floor → 5 points
        (
            "45000000.00",
            "38125000.00",
            "1200000000.00",
            false,
            "200000.00",
        ), // g ≈ 18.03: floor → 0 points
    ];
    for (q1, prev, y, up, want) in table {
        let e = m9(q1, prev, y, up);
        assert_eq!(
            total(&e),
            want,
            "q1 {q1} prev {prev} y2022 {y} upgraded {up}: {}",
            reasons(&e)
        );
        assert!(e.decision.total <= m("800000.00"));
    }
    let capped = m9("70000000.00", "50000000.00", "1200000000.00", false);
    assert!(reasons(&capped).contains("capped"));
}

#[test]
fn m9_is_one_off_and_needs_above_scale_manufacturing() {
    let first = m9("45000000.00", "36000000.00", "1200000000.00", false);
    let mut h = History::default();
    h.record(&app("M9"), &first);
    let mut f = facts();
    f.statistics = first.decision.facts.statistics.clone();
    let again = run_with(&app("M9"), &f, &h);
    assert_eq!(again.decision.status, AwardStatus::Rejected);
    assert!(reasons(&again).contains("one-off"));
    f.statistics.as_mut().unwrap().above_scale_manufacturing = false;
    let e = run(&app("M9"), &f);
    assert!(reasons(&e).contains("above-designated-size"));
    // Enterprise-level prior payment: 550,000 − 100,000.
    let mut f = first.decision.facts.clone();
    f.prior_benefits = Some(PriorBenefitsReply {
        payments: vec![PriorPayment {
            item: "开门红".into(),
            person: None,
            amount: m("100000.00"),
            policy: "市级开门红奖励".into(),
        }],
    });
    assert_eq!(total(&run(&app("M9"), &f)), "450000.00");
}

// ------------------------------------------------------------------------------------------
// M10
// ------------------------------------------------------------------------------------------

fn abroad(id: &str, exit: &str, entry: Option<&str>) -> TravellerRecord {
    TravellerRecord {
        id_number: id.into(),
        trips: vec![Crossing {
            exit_date: d(exit),
            entry_date: entry.map(d),
        }],
    }
}

fn m10_exhibition(country: &str, start: &str, travellers: u32) -> (Application, Facts) {
    let mut a = app("M10");
    a.exhibitions = Some(vec![Exhibition {
        name: format!("Expo {country}"),
        country: country.into(),
        start_date: d(start),
        travellers: (0..travellers)
            .map(|i| Traveller {
                id_number: id(i),
                name: "x".into(),
            })
            .collect(),
    }]);
    let mut f = facts();
    f.exit_entry = Some(ExitEntryReply {
        persons: (0..travellers)
            .map(|i| abroad(&id(i), "2023-01-01", None))
            .collect(),
    });
    (a, f)
}

#[test]
fn m10_exhibitions_by_region_window_and_four_travellers() {
    for (country, per) in [
        ("JP", "8000.00"),
        ("HK", "8000.00"),
        ("MO", "8000.00"),
        ("TW", "8000.00"),
        ("TR", "8000.00"),
        ("AE", "8000.00"),
        ("DE", "15000.00"),
        ("RU", "15000.00"),
        ("EG", "15000.00"),
        ("US", "15000.00"),
    ] {
        let (a, f) = m10_exhibition(country, "2023-03-01", 1);
        assert_eq!(total(&run(&a, &f)), per, "{country}");
    }
    let (a, f) = m10_exhibition("CN", "2023-03-01", 1);
    assert!(reasons(&run(&a, &f)).contains("mainland China"));
    for (start, ok) in [
        ("2022-12-31", false),
        ("2023-01-01", true),
        ("2023-03-31", true),
        ("2023-04-01", false),
    ] {
        let (a, f) = m10_exhibition("JP", start, 1);
        assert_eq!(paid_lines(&run(&a, &f)) == 1, ok, "{start}");
    }
    let (a, f) = m10_exhibition("JP", "2023-03-01", 4);
    assert_eq!(total(&run(&a, &f)), "32000.00");
    let (a, f) = m10_exhibition("JP", "2023-03-01", 5);
    let e = run(&a, &f);
    assert_eq!((total(&e), paid_lines(&e)), ("32000.00".into(), 4));
    assert!(e.decision.lines[4].reason.contains("at most 4 travellers"));
    // Across two claims: 3 paid before, so only 1 more now.
    let (a3, f3) = m10_exhibition("JP", "2023-03-01", 3);
    let mut h = History::default();
    h.record(&a3, &run(&a3, &f3));
    let mut a5 = a.clone();
    for (i, t) in a5.exhibitions.as_mut().unwrap()[0]
        .travellers
        .iter_mut()
        .enumerate()
    {
        t.id_number = id(100 + i as u32);
    }
    let mut f5 = facts();
    f5.exit_entry = Some(ExitEntryReply {
        persons: (0..5)
            .map(|i| abroad(&id(100 + i), "2023-01-01", None))
            .collect(),
    });
    assert_eq!(total(&run_with(&a5, &f5, &h)), "8000.00");
    // Not abroad on the first day.
    let (a, mut f) = m10_exhibition("JP", "2023-03-01", 1);
    f.exit_entry = Some(ExitEntryReply {
        persons: vec![abroad(&id(0), "2023-03-02", None)],
    });
    assert!(reasons(&run(&a, &f)).contains("exit-entry"));
}

#[test]
fn m10_rcep_trips() {
    let trip = |country: &str, date: &str, fare: &str| {
        let mut a = app("M10");
        a.trips = Some(vec![Trip {
            country: country.into(),
            purpose: "洽谈".into(),
            departure_date: d(date),
            travellers: vec![TripTraveller {
                id_number: id(0),
                airfare: m(fare),
            }],
        }]);
        let mut f = facts();
        f.exit_entry = Some(ExitEntryReply {
            persons: vec![abroad(&id(0), date, Some("2023-07-15"))],
        });
        (a, f)
    };
    let (a, f) = trip("TH", "2023-04-02", "4200.00");
    assert_eq!(total(&run(&a, &f)), "1260.00");
    let (a, f) = trip("TH", "2023-04-02", "4200.05"); // 1260.015 → half-up once
    assert_eq!(total(&run(&a, &f)), "1260.02");
    let (a, f) = trip("US", "2023-04-02", "4200.00");
    assert!(reasons(&run(&a, &f)).contains("not another RCEP member"));
    let (a, f) = trip("JP", "2023-06-30", "1000.00");
    assert_eq!(total(&run(&a, &f)), "300.00");
    let (a, f) = trip("JP", "2023-07-01", "1000.00");
    assert_eq!(total(&run(&a, &f)), "0.00");
    let (a, mut f) = trip("JP", "2023-04-02", "1000.00");
    f.enterprise.as_mut().unwrap().foreign_trade = Some(false);
    assert!(reasons(&run(&a, &f)).contains("foreign-trade"));
}

// ------------------------------------------------------------------------------------------
// M18
// ------------------------------------------------------------------------------------------

fn charter(no: &str, date: &str, origin: &str, cost: &str) -> Charter {
    Charter {
        contract_no: no.into(),
        departure_date: d(date),
        origin_province: origin.into(),
        applicant_cost: m(cost),
        passengers: vec![id(0), id(1)],
    }
}

fn m18(charters: Vec<Charter>) -> Application {
    let mut a = app("M18");
    a.charters = Some(charters);
    a
}

#[test]
fn m18_window_origin_share_and_cap_across_claims() {
    for (date, ok) in [
        ("2023-01-21", false),
        ("2023-01-22", true),
        ("2023-02-02", true),
        ("2023-02-03", false),
    ] {
        let e = run(
            &m18(vec![charter("BUS-1", date, "51", "36000.00")]),
            &facts(),
        );
        assert_eq!(total(&e), if ok { "18000.00" } else { "0.00" }, "{date}");
    }
    let e = run(
        &m18(vec![charter("BUS-1", "2023-01-25", "33", "36000.00")]),
        &facts(),
    );
    assert!(reasons(&e).contains("cross-province"));
    let e = run(
        &m18(vec![charter("BUS-1", "2023-01-25", "51", "500000.00")]),
        &facts(),
    );
    assert_eq!(total(&e), "200000.00");
    // Two claims: 150,000 then a 240,000 charter → only the 50,000 left under the cap.
    let first_app = m18(vec![charter("BUS-1", "2023-01-25", "51", "300000.00")]);
    let first = run(&first_app, &facts());
    assert_eq!(total(&first), "150000.00");
    let mut h = History::default();
    h.record(&first_app, &first);
    let second = run_with(
        &m18(vec![
            charter("BUS-2", "2023-01-26", "52", "240000.00"),
            charter("BUS-1", "2023-01-25", "51", "300000.00"),
        ]),
        &facts(),
        &h,
    );
    assert_eq!(total(&second), "50000.00");
    assert!(
        reasons(&second).contains("already paid"),
        "the same charter is not paid twice"
    );
    let mut f = facts();
    f.enterprise.as_mut().unwrap().industry = Some("retail".into());
    assert!(reasons(&run(
        &m18(vec![charter("BUS-1", "2023-01-25", "51", "1000.00")]),
        &f
    ))
    .contains("manufacturing"));
}

// ------------------------------------------------------------------------------------------
// M19
// ------------------------------------------------------------------------------------------

fn m19(returnees: Vec<(String, bool)>, arrived: &str) -> (Application, Facts) {
    let mut a = app("M19");
    a.returnees = Some(
        returnees
            .iter()
            .map(|(x, poor)| Returnee {
                id_number: x.clone(),
                name: "x".into(),
                return_date: d(arrived),
                poverty_alleviated: *poor,
            })
            .collect(),
    );
    let mut f = facts();
    f.social_insurance = Some(SocialInsuranceReply {
        persons: returnees.iter().map(|(x, _)| insured(x)).collect(),
    });
    f.presence = Some(PresenceReply {
        persons: returnees
            .iter()
            .map(|(x, _)| stayed(x, false, Some(arrived)))
            .collect(),
    });
    (a, f)
}

#[test]
fn m19b_by_province_and_arrival_window() {
    for (area, amount) in [
        ("330102", "50.00"),
        ("310101", "150.00"),
        ("320102", "150.00"),
        ("340102", "150.00"),
        ("350102", "150.00"),
        ("360102", "150.00"),
        ("370102", "150.00"),
        ("510107", "200.00"),
        ("440103", "200.00"),
        ("710101", "200.00"),
    ] {
        let (a, f) = m19(vec![(id_in(area, 1), false)], "2023-01-28");
        assert_eq!(total(&run(&a, &f)), amount, "{area}");
    }
    let (a, f) = m19(vec![(id_in("330302", 1), false)], "2023-01-28");
    assert!(reasons(&run(&a, &f)).contains("local person"));
    for (date, ok) in [
        ("2023-01-21", false),
        ("2023-01-22", true),
        ("2023-02-02", true),
        ("2023-02-03", false),
    ] {
        let (a, f) = m19(vec![(id(1), false)], date);
        assert_eq!(paid_lines(&run(&a, &f)) == 1, ok, "{date}");
    }
    let (a, mut f) = m19(vec![(id(1), false)], "2023-01-28");
    f.presence.as_mut().unwrap().persons[0].stayed_whole_window = true;
    assert!(reasons(&run(&a, &f)).contains("did not travel"));
    // A passenger of this enterprise's paid M18 charter.
    let charter_app = m18(vec![charter("BUS-1", "2023-01-25", "51", "1000.00")]);
    let mut h = History::default();
    h.record(&charter_app, &run(&charter_app, &facts()));
    let (a, f) = m19(vec![(id(1), false)], "2023-01-28");
    assert!(reasons(&run_with(&a, &f, &h)).contains("charter"));
    // Once per person.
    let (a, f) = m19(vec![(id(2), false)], "2023-01-28");
    let mut h = History::default();
    h.record(&a, &run(&a, &f));
    assert!(reasons(&run_with(&a, &f, &h)).contains("already paid under M19(b)"));
}

#[test]
fn m19a_waits_for_a_policy_version_that_sets_the_amount() {
    let (a, f) = m19(vec![(id(1), true)], "2023-01-28");
    let e = run(&a, &f);
    let line = e
        .decision
        .lines
        .iter()
        .find(|l| l.item == "poverty_transport")
        .unwrap();
    assert!(
        !line.paid && line.reason.contains("parameter not set"),
        "{}",
        line.reason
    );
    assert_eq!(total(&e), "200.00", "M19(b) still pays");
    let mut later = a.clone();
    later.submitted_at = DateTime::parse_from_rfc3339("2023-03-01T09:00:00+08:00").unwrap();
    let e = run(&later, &f);
    assert_eq!(e.decision.policy_version, "lucheng-2023.2");
    let line = e
        .decision
        .lines
        .iter()
        .find(|l| l.item == "poverty_transport")
        .unwrap();
    assert!(line.paid);
    assert_eq!(total(&e), "500.00");
}

// ------------------------------------------------------------------------------------------
// M21
// ------------------------------------------------------------------------------------------

fn m21(n: u32, enrol: &str) -> (Application, Facts) {
    let mut a = app("M21");
    a.applicant.kind = ApplicantKind::HrAgency;
    let employer = "91330302000003010R";
    a.placements = Some(
        (0..n)
            .map(|i| Placement {
                id_number: id(i),
                name: "x".into(),
                employer_uscc: employer.into(),
            })
            .collect(),
    );
    let mut f = facts();
    f.enterprise.as_mut().unwrap().kind = Some(ApplicantKind::HrAgency);
    f.social_insurance = Some(SocialInsuranceReply {
        persons: (0..n)
            .map(|i| InsuredPerson {
                id_number: id(i),
                pension_months_with_applicant: vec![],
                first_lucheng_enrolment: Some(Enrolment {
                    date: d(enrol),
                    employer_uscc: employer.into(),
                }),
            })
            .collect(),
    });
    (a, f)
}

#[test]
fn m21_five_new_employees_and_the_cap() {
    assert_eq!(
        total(&run(&m21(5, "2023-03-01").0, &m21(5, "2023-03-01").1)),
        "2500.00"
    );
    let e = run(&m21(4, "2023-03-01").0, &m21(4, "2023-03-01").1);
    assert!(reasons(&e).contains("at least 5"));
    for (date, ok) in [
        ("2023-01-04", false),
        ("2023-01-05", true),
        ("2023-06-30", true),
        ("2023-07-01", false),
    ] {
        let (a, f) = m21(5, date);
        assert_eq!(total(&run(&a, &f)) == "2500.00", ok, "{date}");
    }
    let (a, f) = m21(250, "2023-03-01");
    assert_eq!(total(&run(&a, &f)), "100000.00");
    // Across claims: 99,000 already → 1,000 left.
    let mut h = History::default();
    h.m21_paid.insert(USCC.into(), m("99000.00"));
    let (mut a, mut f) = m21(5, "2023-03-01");
    a.placements
        .as_mut()
        .unwrap()
        .iter_mut()
        .for_each(|p| p.id_number = p.id_number.replace("510107", "410102"));
    for p in f.social_insurance.as_mut().unwrap().persons.iter_mut() {
        p.id_number = p.id_number.replace("510107", "410102");
    }
    let e = run_with(&a, &f, &h);
    assert_eq!((total(&e), paid_lines(&e)), ("1000.00".into(), 2));
    let (mut a, f) = m21(5, "2023-03-01");
    a.applicant.kind = ApplicantKind::Enterprise;
    assert!(reasons(&run(&a, &f)).contains("HR service agency"));
}

// ------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn roster_order_does_not_matter_and_evaluation_is_byte_identical(n in 25u32..40, seed in any::<u64>(), drop in proptest::collection::vec(0usize..40, 0..6)) {
        let (mut a, mut f) = m1(n);
        for i in drop {
            if let Some(p) = f.presence.as_mut().unwrap().persons.get_mut(i) {
                p.stayed_whole_window = false;
            }
        }
        let e1 = run(&a, &f);
        let bytes1 = serde_json::to_vec(&e1).unwrap();
        prop_assert_eq!(&bytes1, &serde_json::to_vec(&run(&a, &f)).unwrap());
        // Shuffle deterministically from the seed.
        let emp = a.employees.as_mut().unwrap();
        let len = emp.len();
        let mut s = seed;
        for i in (1..len).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            emp.swap(i, (s >> 33) as usize % (i + 1));
        }
        let e2 = run(&a, &f);
        prop_assert_eq!(e1.decision.status, e2.decision.status);
        prop_assert_eq!(e1.decision.total, e2.decision.total);
        let mut l1: Vec<_> = e1.decision.lines.iter().map(|l| (l.person.clone(), l.paid, l.amount)).collect();
        let mut l2: Vec<_> = e2.decision.lines.iter().map(|l| (l.person.clone(), l.paid, l.amount)).collect();
        l1.sort();
        l2.sort();
        prop_assert_eq!(l1, l2);
    }

    #[test]
    fn adding_a_qualifying_person_never_lowers_m1(n in 0u32..45) {
        let before = run(&m1(n).0, &m1(n).1).decision.total;
        let after = run(&m1(n + 1).0, &m1(n + 1).1).decision.total;
        prop_assert!(after >= before);
    }

    #[test]
    fn no_award_exceeds_its_cap(q1 in 0u64..200_000_000, prev in 1u64..200_000_000, y in 0u64..3_000_000_000, costs in proptest::collection::vec(0u64..300_000, 1..4), already in 0u64..250_000, placed in 0u32..260) {
        let e = m9(&format!("{q1}.00"), &format!("{prev}.00"), &format!("{y}.00"), false);
        prop_assert!(e.decision.total <= m("800000.00"));
        let mut h = History::default();
        h.m18_paid.insert(USCC.into(), Money::yuan(already as i64));
        let charters = costs.iter().enumerate().map(|(i, c)| charter(&format!("B{i}"), "2023-01-25", "51", &format!("{c}.00"))).collect();
        let e = run_with(&m18(charters), &facts(), &h);
        prop_assert!(e.decision.total + Money::yuan(already as i64) <= m("200000.00") || e.decision.total.is_zero());
        let (a, f) = m21(placed, "2023-03-01");
        prop_assert!(run(&a, &f).decision.total <= m("100000.00"));
    }
}
