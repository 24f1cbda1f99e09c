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

/// What an earlier claim of the test enterprise was awarded under `measure` (its cap's use).
fn award_count(measure: &str, amount: &str) -> huiqi_events::history::Count {
    huiqi_events::history::Count {
        key: huiqi_events::history::Key::new(measure, huiqi_events::history::Kind::Award)
            .uscc(USCC),
        amount: m(amount),
    }
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
    // Ruling 2: the built-in set carries only the source's figures: one version, no M19(a).
    assert_eq!(
        set.in_force(d("2023-03-01")).unwrap().version(),
        "lucheng-2023.1"
    );
    assert_eq!(set.versions().len(), 1);
    assert!(set.versions()[0].params.m19.a_per_person.is_none());
    assert!(set.in_force(d("2023-01-04")).is_err());
    let v1 = set.get("lucheng-2023.1").unwrap();
    assert_eq!(v1.hash.len(), 64);
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
    assert_eq!(
        e.decision.facts_digest,
        f.digest(),
        "the facts used, by digest"
    );
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
    h.record(&first);
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
    h.record(&e);
    assert!(
        run_with(&a, &f, &h).entitlements.is_empty(),
        "once per number and per person"
    );
}

// ------------------------------------------------------------------------------------------
// M9
// ------------------------------------------------------------------------------------------

fn m9_facts(q1: &str, prev: &str, y2022: &str, upgraded: bool) -> Facts {
    let mut f = facts();
    f.statistics = Some(StatisticsReply {
        above_scale_manufacturing: true,
        upgraded_2022: upgraded,
        q1_2023_output: Some(m(q1)),
        q1_2022_output: Some(m(prev)),
        y2022_output: Some(m(y2022)),
    });
    f
}

fn m9(q1: &str, prev: &str, y2022: &str, upgraded: bool) -> Evaluation {
    run(&app("M9"), &m9_facts(q1, prev, y2022, upgraded))
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
    h.record(&first);
    let mut f = m9_facts("45000000.00", "36000000.00", "1200000000.00", false);
    let again = run_with(&app("M9"), &f, &h);
    assert_eq!(again.decision.status, AwardStatus::Rejected);
    assert!(reasons(&again).contains("one-off"));
    f.statistics.as_mut().unwrap().above_scale_manufacturing = false;
    let e = run(&app("M9"), &f);
    assert!(reasons(&e).contains("above-designated-size"));
    // Enterprise-level prior payment: 550,000 − 100,000.
    let mut f = m9_facts("45000000.00", "36000000.00", "1200000000.00", false);
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
    h.record(&run(&a3, &f3));
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
    h.record(&first);
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
    h.record(&run(&charter_app, &facts()));
    let (a, f) = m19(vec![(id(1), false)], "2023-01-28");
    assert!(reasons(&run_with(&a, &f, &h)).contains("charter"));
    // Once per person.
    let (a, f) = m19(vec![(id(2), false)], "2023-01-28");
    let mut h = History::default();
    h.record(&run(&a, &f));
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
    // An operator-loaded version that sets the amount from 2023-03-01 (ruling 2).
    let set = operator_set("300.00");
    let mut later = a.clone();
    later.submitted_at = DateTime::parse_from_rfc3339("2023-03-01T09:00:00+08:00").unwrap();
    let policy = set.for_application(&later).unwrap();
    assert_eq!(policy.version(), "operator-m19a");
    let e = evaluate(policy, "C-T", &later, &f, &History::default());
    let line = e
        .decision
        .lines
        .iter()
        .find(|l| l.item == "poverty_transport")
        .unwrap();
    assert!(line.paid, "{}", line.reason);
    assert_eq!(
        total(&e),
        "300.00",
        "the higher of (a) 300 and (b) 200, never both (ruling 1)"
    );
    assert_eq!(e.decision.policy_hash, policy.hash);
}

/// The built-in versions plus an operator's version from 2023-03-01 setting M19(a).
fn operator_set(a_per_person: &str) -> PolicySet {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../versions/lucheng-2023.1.json")).unwrap();
    v["version"] = serde_json::json!("operator-m19a");
    v["effective_from"] = serde_json::json!("2023-03-01");
    v["m19"]["a_per_person"] = serde_json::json!(a_per_person);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m19a.json"),
        serde_json::to_string_pretty(&v).unwrap(),
    )
    .unwrap();
    PolicySet::load(Some(dir.path())).unwrap()
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
    h.add("C-EARLIER", USCC, &[award_count("M21", "99000.00")]);
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
        h.add("C-EARLIER", USCC, &[award_count("M18", &format!("{already}.00"))]);
        let charters = costs.iter().enumerate().map(|(i, c)| charter(&format!("B{i}"), "2023-01-25", "51", &format!("{c}.00"))).collect();
        let e = run_with(&m18(charters), &facts(), &h);
        prop_assert!(e.decision.total + Money::yuan(already as i64) <= m("200000.00") || e.decision.total.is_zero());
        let (a, f) = m21(placed, "2023-03-01");
        prop_assert!(run(&a, &f).decision.total <= m("100000.00"));
    }
}

// ------------------------------------------------------------------------------------------
// Rulings of 2026-11-27 (POLICY.md), each quoted, each with its defect reproduced
// ------------------------------------------------------------------------------------------

/// Decides `claims` one after the other for the test enterprise, each with the history of the
/// ones before (claim ids C-1, C-2, …).
fn run_seq(claims: &[(Application, Facts)]) -> Vec<Evaluation> {
    let policies = PolicySet::builtin();
    let mut h = History::default();
    let mut out = Vec::new();
    for (i, (a, f)) in claims.iter().enumerate() {
        let p = policies.for_application(a).unwrap();
        let e = evaluate(p, &format!("C-{}", i + 1), a, f, &h);
        h.record(&e);
        out.push(e);
    }
    out
}

/// A deterministic shuffle from `seed`.
fn shuffle<T>(v: &mut [T], mut s: u64) {
    for i in (1..v.len()).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (s >> 33) as usize % (i + 1));
    }
}

fn sum(es: &[Evaluation]) -> Money {
    es.iter().map(|e| e.decision.total).sum()
}

fn prior(person: Option<&str>, amount: &str) -> PriorPayment {
    PriorPayment {
        item: "同类补助".into(),
        person: person.map(str::to_string),
        amount: m(amount),
        policy: "温州市其他政策".into(),
    }
}

/// Ruling 1: "M19(a) and M19(b) for the same person are the same return trip: never both. Pay
/// the higher of the two (supplementary rule 2, 不重复享受、就高原则)."
#[test]
fn ruling_1_m19a_and_m19b_are_one_trip_the_higher_is_paid() {
    let set = operator_set("300.00");
    let later = |a: &Application| {
        let mut a = a.clone();
        a.submitted_at = DateTime::parse_from_rfc3339("2023-03-10T09:00:00+08:00").unwrap();
        a
    };
    // Both parts met: (a) 300 > (b) 200 → 300 once, (b) listed as not paid.
    let (a, f) = m19(vec![(id(1), true)], "2023-01-28");
    let a = later(&a);
    let p = set.for_application(&a).unwrap();
    let e = evaluate(p, "C-1", &a, &f, &History::default());
    assert_eq!(total(&e), "300.00");
    let b_line = e
        .decision
        .lines
        .iter()
        .find(|l| l.item == "return_transport")
        .unwrap();
    assert!(
        !b_line.paid && b_line.reason.contains("same return trip"),
        "{}",
        b_line.reason
    );
    // (a) set below (b): (b) is the higher.
    let low = operator_set("100.00");
    let e = evaluate(
        low.for_application(&a).unwrap(),
        "C-1",
        &a,
        &f,
        &History::default(),
    );
    assert_eq!(total(&e), "200.00");
    // Across claims: (b) 200 paid before the amount for (a) was set; (a) at 300 then pays the
    // 100 difference, never 300 more.
    let (early, f) = m19(vec![(id(2), true)], "2023-01-28");
    let first = run(&early, &f);
    assert_eq!(total(&first), "200.00");
    let mut h = History::default();
    h.record(&first);
    let again = later(&early);
    let e = evaluate(set.for_application(&again).unwrap(), "C-2", &again, &f, &h);
    assert_eq!(total(&e), "100.00", "{}", reasons(&e));
    assert!(e.decision.relied_on.iter().any(|r| r.claim_id == "C-test"));
}

/// Ruling 2: "No built-in policy version may set it [the M19(a) amount] (nor any other figure
/// the source does not give) … until one sets it, the M19(a) line is recorded as not paid with
/// reason 'parameter not set'."
#[test]
fn ruling_2_no_invented_amounts_in_the_built_in_versions() {
    for v in PolicySet::builtin().versions() {
        assert!(v.params.m19.a_per_person.is_none(), "{}", v.version());
        assert!(v.origin.starts_with("builtin:"));
    }
    let (mut a, f) = m19(vec![(id(1), true)], "2023-01-28");
    a.submitted_at = DateTime::parse_from_rfc3339("2023-05-01T09:00:00+08:00").unwrap();
    let e = run(&a, &f);
    assert!(reasons(&e).contains("parameter not set"));
    assert_eq!(total(&e), "200.00", "only M19(b)");
}

/// Ruling 3: "An enterprise-level prior payment (same enterprise, same measure item) is offset
/// once across all of this system's claims for that item … Splitting the same items over two
/// claims must never pay more or less than one claim would."
#[test]
fn ruling_3_an_enterprise_level_prior_payment_is_offset_once() {
    let mut f = facts();
    f.prior_benefits = Some(PriorBenefitsReply {
        payments: vec![prior(None, "10000.00")],
    });
    let one = run(
        &m18(vec![
            charter("BUS-1", "2023-01-25", "51", "150000.00"),
            charter("BUS-2", "2023-01-26", "52", "150000.00"),
        ]),
        &f,
    );
    assert_eq!(total(&one), "140000.00");
    let split = run_seq(&[
        (
            m18(vec![charter("BUS-1", "2023-01-25", "51", "150000.00")]),
            f.clone(),
        ),
        (
            m18(vec![charter("BUS-2", "2023-01-26", "52", "150000.00")]),
            f.clone(),
        ),
    ]);
    assert_eq!(
        (total(&split[0]), total(&split[1])),
        ("65000.00".into(), "75000.00".into()),
        "the second claim offsets only what is left (was 65,000: 130,000 in all)"
    );
    assert!(split[1]
        .decision
        .relied_on
        .iter()
        .any(|r| r.key.kind == huiqi_events::history::Kind::PriorOffset && r.claim_id == "C-1"));
}

/// Ruling 4: "Per-person prior payments are netted per person first, then per-measure limits
/// apply … A decision never depends on roster order: the 4 paid M10 travellers are those with
/// the highest net amounts (ties: roster order), and a cap binds on the sum of net amounts."
#[test]
fn ruling_4_persons_are_netted_before_places_and_caps() {
    // M10: 5 travellers, the first already paid 8,000 elsewhere → the other four: 32,000.
    let (a, mut f) = m10_exhibition("JP", "2023-03-01", 5);
    f.prior_benefits = Some(PriorBenefitsReply {
        payments: vec![prior(Some(&id(0)), "8000.00")],
    });
    let e = run(&a, &f);
    assert_eq!(total(&e), "32000.00", "{}", reasons(&e));
    assert!(!e
        .decision
        .lines
        .iter()
        .any(|l| l.paid && l.person.as_deref() == Some(id(0).as_str())));
    // The same wherever that traveller stands.
    let mut moved = a.clone();
    moved.exhibitions.as_mut().unwrap()[0]
        .travellers
        .rotate_left(2);
    assert_eq!(total(&run(&moved, &f)), "32000.00");
    // M21: 201 new employees, one of them paid 500 elsewhere → 100,000 wherever they stand
    // (was 99,500 or 100,000).
    for at in [0u32, 100, 200] {
        let (a, mut f) = m21(201, "2023-03-01");
        f.prior_benefits = Some(PriorBenefitsReply {
            payments: vec![prior(Some(&id(at)), "500.00")],
        });
        assert_eq!(total(&run(&a, &f)), "100000.00", "person at {at}");
    }
}

/// Ruling 5: "M18 and M19(b) exclude each other both ways for a person carried on a charter
/// of the same enterprise: whichever is decided later loses that person's part (an M18 award
/// decided after M19(b) was paid to its passengers deducts those M19(b) amounts)."
#[test]
fn ruling_5_m18_and_m19b_exclude_each_other_both_ways() {
    // M19(b) first: two passengers (200 each) paid; then their charter: 50% of 1,000 − 400.
    let (returned, rf) = m19(vec![(id(0), false), (id(1), false)], "2023-01-28");
    let seq = run_seq(&[
        (returned.clone(), rf.clone()),
        (
            m18(vec![charter("BUS-1", "2023-01-25", "51", "1000.00")]),
            facts(),
        ),
    ]);
    assert_eq!(total(&seq[0]), "400.00");
    assert_eq!(total(&seq[1]), "100.00", "{}", reasons(&seq[1]));
    assert!(reasons(&seq[1]).contains("ruling 5"));
    // M18 first: the passengers' later M19(b) is refused.
    let seq = run_seq(&[
        (
            m18(vec![charter("BUS-1", "2023-01-25", "51", "1000.00")]),
            facts(),
        ),
        (returned, rf),
    ]);
    assert_eq!(total(&seq[0]), "500.00");
    assert_eq!(total(&seq[1]), "0.00");
    assert!(reasons(&seq[1]).contains("charter"));
}

/// Ruling 6: "M21's '5 or more' counts an agency's qualifying persons cumulatively over the
/// policy period, across its claims. Once an agency has reached 5, each further qualifying
/// person pays 500, within the cumulative 100,000 cap."
#[test]
fn ruling_6_m21_counts_an_agencys_new_employees_cumulatively() {
    let placed = |from: u32, n: u32| {
        let (mut a, mut f) = m21(n, "2023-03-01");
        let rename = |i: u32| id(from + i);
        for (i, pl) in a.placements.as_mut().unwrap().iter_mut().enumerate() {
            pl.id_number = rename(i as u32);
        }
        for (i, p) in f
            .social_insurance
            .as_mut()
            .unwrap()
            .persons
            .iter_mut()
            .enumerate()
        {
            p.id_number = rename(i as u32);
        }
        (a, f)
    };
    // Rewarded for 5, then 3 more: 1,500 (was nothing).
    let seq = run_seq(&[placed(0, 5), placed(100, 3)]);
    assert_eq!(
        (total(&seq[0]), total(&seq[1])),
        ("2500.00".into(), "1500.00".into())
    );
    // 3 (below 5: counted, not paid), then 3 more: the second claim pays all 6.
    let seq = run_seq(&[placed(0, 3), placed(100, 3)]);
    assert_eq!(seq[0].decision.status, AwardStatus::Rejected);
    assert!(reasons(&seq[0]).contains("at least 5"));
    assert_eq!(total(&seq[1]), "3000.00", "{}", reasons(&seq[1]));
    // A person counts once, for one agency.
    let seq = run_seq(&[placed(0, 5), placed(0, 5)]);
    assert_eq!(total(&seq[1]), "0.00");
    // The cumulative cap: 199 then 5 → 99,500 then 500.
    let seq = run_seq(&[placed(0, 199), placed(300, 5)]);
    assert_eq!(
        (total(&seq[0]), total(&seq[1])),
        ("99500.00".into(), "500.00".into())
    );
}

/// Ruling 7: "Manufacturing (M18, M9) is the registry category `manufacturing` or any GB/T 4754
/// industry code in section C (`C`, `C34`, `C3411`, …). The M9 fallback for enterprises
/// upgraded to above designated size in 2022 accepts industrial enterprises: sections B, C
/// and D."
#[test]
fn ruling_7_manufacturing_is_registry_section_c() {
    for (code, paid) in [
        ("C3411", true),
        ("C", true),
        ("C34", true),
        ("manufacturing", true),
        ("B0610", false),
        ("F5191", false),
    ] {
        let mut f = facts();
        f.enterprise.as_mut().unwrap().industry = Some(code.into());
        let e = run(
            &m18(vec![charter("BUS-1", "2023-01-25", "51", "1000.00")]),
            &f,
        );
        assert_eq!(total(&e) == "500.00", paid, "M18 {code}: {}", reasons(&e));
    }
    // M9 tiers need a manufacturer; the 2022-upgrade fallback accepts B, C and D.
    let with_industry = |code: &str, upgraded: bool, q1: &str| {
        let mut a = app("M9");
        a.submitted_at = DateTime::parse_from_rfc3339("2023-04-10T10:00:00+08:00").unwrap();
        let mut f = facts();
        f.enterprise.as_mut().unwrap().industry = Some(code.into());
        f.statistics = Some(StatisticsReply {
            above_scale_manufacturing: !upgraded,
            upgraded_2022: upgraded,
            q1_2023_output: Some(m(q1)),
            q1_2022_output: Some(m("1000000.00")),
            y2022_output: Some(m("30000000.00")),
        });
        run(&a, &f)
    };
    assert_eq!(
        total(&with_industry("C3411", false, "45000000.00")),
        "200000.00"
    );
    assert_eq!(total(&with_industry("F5191", false, "45000000.00")), "0.00");
    for code in ["B0610", "C3411", "D4411"] {
        assert_eq!(
            total(&with_industry(code, true, "8000000.00")),
            "50000.00",
            "{code}"
        );
    }
    assert_eq!(total(&with_industry("F5191", true, "8000000.00")), "0.00");
}

/// Ruling 8: "M4/M5 stay as built": see `m4_and_m5_entitlements` (granted below 30 persons).
/// Ruling 9 (intake, an application id names one application) is tested end to end in
/// tests/e2e (`intake_answers_every_message_once_refuses_reused_ids_…`).
///
/// Ruling 10: "M10 exhibitions are identified by host country, start date and the exhibition
/// name with case, spaces and punctuation removed, so retyping a name cannot reset the
/// 4-traveller count."
#[test]
fn ruling_10_a_retyped_exhibition_name_is_the_same_exhibition() {
    let named = |name: &str, from: u32, n: u32| {
        let (mut a, mut f) = m10_exhibition("JP", "2023-03-01", n);
        let x = &mut a.exhibitions.as_mut().unwrap()[0];
        x.name = name.into();
        for (i, t) in x.travellers.iter_mut().enumerate() {
            t.id_number = id(from + i as u32);
        }
        f.exit_entry = Some(ExitEntryReply {
            persons: (0..n)
                .map(|i| abroad(&id(from + i), "2023-01-01", None))
                .collect(),
        });
        (a, f)
    };
    let seq = run_seq(&[
        named("FOODEX JAPAN 2023", 0, 3),
        named("Foodex-Japan, 2023", 100, 3),
    ]);
    assert_eq!(
        total(&seq[1]),
        "8000.00",
        "only one place was left: {}",
        reasons(&seq[1])
    );
    // Another start date is another exhibition.
    let (mut other, f) = named("Foodex-Japan, 2023", 200, 3);
    other.exhibitions.as_mut().unwrap()[0].start_date = d("2023-03-08");
    let seq = run_seq(&[named("FOODEX JAPAN 2023", 0, 3), (other, f)]);
    assert_eq!(total(&seq[1]), "24000.00");
}

/// Ruling 11: "The rule texts quoted in decisions are the source as printed; where the project
/// corrects an evident typo (the M1 window's end year), the decision says so next to the
/// quotation."
#[test]
fn ruling_11_rules_are_quoted_as_printed_with_the_typo_reading_beside() {
    let e = run(&m1(30).0, &m1(30).1);
    let text = &e.decision.rules["M1"];
    assert!(
        text.contains("2023 年 1 月 6 日至 2022 年 2 月 5 日未离开温州市为准"),
        "{text}"
    );
    assert!(
        text.contains("evident typo") && text.contains("2023-02-05"),
        "{text}"
    );
    for (code, quoted) in &e.decision.rules {
        let printed = huiqi_policy::rules::text(code).unwrap();
        assert!(huiqi_policy::rules::SOURCE.contains(printed), "{code}");
        assert!(quoted.starts_with(printed));
    }
}

/// Item 4 of the issue: decisions name the history they relied on.
#[test]
fn decisions_name_the_earlier_awards_and_offsets_they_relied_on() {
    let seq = run_seq(&[
        (
            m18(vec![charter("BUS-1", "2023-01-25", "51", "300000.00")]),
            facts(),
        ),
        (
            m18(vec![charter("BUS-2", "2023-01-26", "52", "240000.00")]),
            facts(),
        ),
    ]);
    assert_eq!(total(&seq[1]), "50000.00");
    let relied = &seq[1].decision.relied_on;
    assert!(
        relied
            .iter()
            .any(|r| r.claim_id == "C-1" && r.amount == m("150000.00") && r.effect.contains("cap")),
        "{relied:?}"
    );
    assert!(seq[1]
        .decision
        .counts
        .iter()
        .any(|c| c.key.kind == huiqi_events::history::Kind::Award && c.amount == m("50000.00")));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Shuffling any roster or list never changes a decision's total or status, with prior
    /// payments present (ruling 4).
    #[test]
    fn shuffling_any_list_never_changes_the_decision(seed in any::<u64>(), priors in proptest::collection::vec((0u32..12, 0u32..20_000), 0..4), enterprise_prior in 0u32..30_000) {
        let with_priors = |mut f: Facts| {
            let mut payments: Vec<PriorPayment> = priors.iter().map(|(who, amt)| prior(Some(&id(*who)), &format!("{amt}.00"))).collect();
            payments.push(prior(None, &format!("{enterprise_prior}.00")));
            f.prior_benefits = Some(PriorBenefitsReply { payments });
            f
        };
        // M1
        let (mut a, f) = m1(32);
        let f = with_priors(f);
        let before = run(&a, &f);
        shuffle(a.employees.as_mut().unwrap(), seed);
        let after = run(&a, &f);
        prop_assert_eq!((before.decision.status, before.decision.total), (after.decision.status, after.decision.total));
        // M10: 7 travellers for 4 places
        let (mut a, f) = m10_exhibition("DE", "2023-02-01", 7);
        let f = with_priors(f);
        let before = run(&a, &f);
        shuffle(&mut a.exhibitions.as_mut().unwrap()[0].travellers, seed);
        let after = run(&a, &f);
        prop_assert_eq!(before.decision.total, after.decision.total);
        // M21 against its cap
        let (mut a, f) = m21(203, "2023-03-01");
        let f = with_priors(f);
        let before = run(&a, &f);
        shuffle(a.placements.as_mut().unwrap(), seed);
        prop_assert_eq!(before.decision.total, run(&a, &f).decision.total);
        // M18 charters against the cap
        let mut charters: Vec<Charter> = (0..4).map(|i| charter(&format!("B{i}"), "2023-01-25", "51", &format!("{}.00", 60_000 + 37_000 * i))).collect();
        let before = run(&m18(charters.clone()), &with_priors(facts()));
        shuffle(&mut charters, seed);
        prop_assert_eq!(before.decision.total, run(&m18(charters), &with_priors(facts())).decision.total);
        // M19 returnees
        let people: Vec<(String, bool)> = (0..6).map(|i| (id_in(["330102", "320102", "510107"][i % 3], i as u32), i % 2 == 0)).collect();
        let (mut a, f) = m19(people, "2023-01-28");
        let f = with_priors(f);
        let before = run(&a, &f);
        shuffle(a.returnees.as_mut().unwrap(), seed);
        prop_assert_eq!(before.decision.total, run(&a, &f).decision.total);
    }

    /// Splitting one enterprise's items over several claims never changes the total paid
    /// (rulings 3, 4, 6), whatever the prior payments, and the caps hold across claims in any
    /// order of decisions.
    #[test]
    fn splitting_items_over_claims_never_changes_the_total(cut in 1usize..6, costs in proptest::collection::vec(0u64..180_000, 2..7), enterprise_prior in 0u64..60_000, placed in 2u32..14, more in 0u32..230, person_prior in 0u32..700, order_seed in any::<u64>()) {
        // M18: charters split at `cut`, an enterprise-level prior, the 200,000 cap.
        let mut f = facts();
        f.prior_benefits = Some(PriorBenefitsReply { payments: vec![prior(None, &format!("{enterprise_prior}.00"))] });
        let charters: Vec<Charter> = costs.iter().enumerate().map(|(i, c)| charter(&format!("B{i}"), "2023-01-25", "51", &format!("{c}.00"))).collect();
        let whole = run(&m18(charters.clone()), &f).decision.total;
        let cut = cut.min(charters.len() - 1).max(1);
        let parts = run_seq(&[(m18(charters[..cut].to_vec()), f.clone()), (m18(charters[cut..].to_vec()), f.clone())]);
        prop_assert_eq!(whole, sum(&parts));
        prop_assert!(sum(&parts) <= m("200000.00"));
        // M21: placements split in two claims, a per-person prior, the threshold and the cap.
        let n = placed + more;
        let (a, mut f) = m21(n, "2023-03-01");
        f.prior_benefits = Some(PriorBenefitsReply { payments: vec![prior(Some(&id(1)), &format!("{person_prior}.00"))] });
        let whole = run(&a, &f).decision.total;
        let split_at = (placed as usize).min(n as usize);
        let mut first = a.clone();
        first.placements.as_mut().unwrap().truncate(split_at);
        let mut second = a.clone();
        second.placements.as_mut().unwrap().drain(..split_at);
        let (x, y) = if order_seed % 2 == 0 { (first, second) } else { (second, first) };
        let parts = run_seq(&[(x, f.clone()), (y, f.clone())]);
        prop_assert_eq!(whole, sum(&parts), "{} | {}", reasons(&parts[0]), reasons(&parts[1]));
        prop_assert!(sum(&parts) <= m("100000.00"));
        // M19: returnees split, with both parts for some.
        let people: Vec<(String, bool)> = (0..5).map(|i| (id_in(["330102", "320102", "510107"][i % 3], 50 + i as u32), i % 2 == 1)).collect();
        let (a, f) = m19(people, "2023-01-28");
        let whole = run(&a, &f).decision.total;
        let mut first = a.clone();
        first.returnees.as_mut().unwrap().truncate(2);
        let mut second = a.clone();
        second.returnees.as_mut().unwrap().drain(..2);
        prop_assert_eq!(whole, sum(&run_seq(&[(first, f.clone()), (second, f.clone())])));
    }
}
