//! M1 — one-off retention subsidy (留工补助), with the M4 and M5 entitlements of its roster.
//!
//! Source (措施1): "对春节期间留工的外地员工人数 30 人以上的企业,按外地参保员工(外地以身份证前
//! 4 位为准,2023 年 1 月和 2 月参加职工养老保险)每人 500 元的标准发放一次性留工补助。留温时间以
//! 2023 年 1 月 6 日至 2022 年 2 月 5 日未离开温州市为准。企业向属地街镇申报办理。"
//!
//! Reading:
//! - A roster person *qualifies* when non-local (ID not starting 3303), insured for pension
//!   with the applicant in both 2023-01 and 2023-02 (social-insurance check), and did not leave
//!   Wenzhou 2023-01-06 … 2023-02-05 inclusive (presence check). The printed end "2022 年 2 月
//!   5 日" is a typo: a window cannot end before it starts; the city plan runs to 2023-02-05
//!   (the decision says so next to the quotation, ruling 11).
//! - "30 人以上" includes 30 (Civil Code art. 1259): the enterprise needs ≥ `m1.min_retained`.
//! - Award: `m1.per_person` per qualifying person, each netted of what other policies paid that
//!   person (附则2, per person first, ruling 4), then enterprise-level prior payments offset once
//!   across claims (ruling 3). One M1 award per enterprise; a person is counted for one
//!   enterprise only (the first one paid for them).
//! - Counts: the enterprise's award, and each paid person (with the enterprise as `by`).
//! - M4 and M5 are granted from the same roster ([`super::m4`], [`super::m5`], ruling 8).

use super::{m4, m5, Builder, List, Lists, Measure, PersonFacts};
use crate::params::Params;
use crate::terms;
use huiqi_events::checks::Check;
use huiqi_events::history::{Key, Kind};
use huiqi_events::payloads::{InsuredPerson, PresencePerson};
use huiqi_events::Money;
use std::collections::{BTreeMap, BTreeSet};

pub const CODE: &str = "M1";
pub const ITEM: &str = "retention_subsidy";

pub struct M1;

impl Measure for M1 {
    fn code(&self) -> &'static str {
        CODE
    }
    fn lists(&self) -> Lists {
        Lists {
            all_of: &[List::Employees],
            any_of: &[],
            allowed: &[List::Employees],
        }
    }
    fn checks(&self) -> &'static [Check] {
        &[
            Check::Enterprise,
            Check::SocialInsurance,
            Check::Presence,
            Check::ResidencePermit,
            Check::Telecom,
            Check::PriorBenefits,
        ]
    }
    fn decide(&self, b: &mut Builder<'_>) {
        decide(b);
        m4::grant(b);
        m5::grant(b);
    }
}

/// Insured with the applicant in every month the policy names.
pub(crate) fn insured(si: Option<&InsuredPerson>, p: &Params) -> bool {
    si.is_some_and(|s| {
        p.insured_months
            .iter()
            .all(|m| s.pension_months_with_applicant.iter().any(|x| x == m))
    })
}

/// Why a person does not qualify under M1's person conditions, or None when they do.
pub(crate) fn person_condition(
    id: &str,
    si: &BTreeMap<&str, &InsuredPerson>,
    presence: &BTreeMap<&str, &PresencePerson>,
    p: &Params,
) -> Option<String> {
    if !terms::is_non_local(id, p) {
        return Some(format!(
            "local person: the ID number starts with {} (Wenzhou); M1 is for non-local employees",
            p.city_prefix
        ));
    }
    if !insured(si.get(id).copied(), p) {
        let months = si
            .get(id)
            .map(|s| s.pension_months_with_applicant.join(", "))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "none".into());
        return Some(format!(
            "not insured for pension with the applicant in both {} (social-insurance check shows months: {months})",
            p.insured_months.join(" and ")
        ));
    }
    match presence.get(id) {
        None => Some("no presence record for this person (presence check)".into()),
        Some(pr) if !pr.stayed_whole_window => Some(format!(
            "left Wenzhou between {} and {} (presence check)",
            p.stay_window.from, p.stay_window.to
        )),
        Some(_) => None,
    }
}

fn decide(b: &mut Builder<'_>) {
    let p = b.params();
    let app = b.app;
    let uscc = app.applicant.uscc.as_str();
    let PersonFacts {
        insured: si,
        presence,
    } = PersonFacts::of(b.facts);
    let mut seen = BTreeSet::new();
    let mut qualifying = 0usize;
    for e in app.employees.iter().flatten() {
        let id = e.id_number.as_str();
        if !seen.insert(id) {
            b.deny(
                ITEM,
                Some(id),
                "listed more than once in this roster; counted once".into(),
                "M1",
            );
            continue;
        }
        if let Some(why) = person_condition(id, &si, &presence, p) {
            b.deny(ITEM, Some(id), why, "M1");
            continue;
        }
        let person_key = Key::new(CODE, Kind::Person).person(id);
        if let Some(other) = b
            .history
            .get(&person_key)
            .iter()
            .find(|e| &*e.by != uscc)
            .map(|e| e.by.to_string())
        {
            b.rely(&person_key, "the person is counted for another enterprise");
            b.deny(
                ITEM,
                Some(id),
                format!("already counted for M1 by enterprise {other}; a person counts for one enterprise only"),
                "M1",
            );
            continue;
        }
        qualifying += 1;
        b.pay(
            ITEM,
            Some(id),
            p.m1.per_person,
            "qualifies: non-local, insured Jan+Feb 2023, stayed".into(),
            "M1",
        );
    }
    let award_key = Key::new(CODE, Kind::Award).uscc(uscc);
    if b.history.contains(&award_key) {
        let earlier = b.rely(&award_key, "one M1 award per enterprise");
        let claim = earlier
            .first()
            .map(|e| e.claim_id.clone())
            .unwrap_or_default();
        b.deny_all(
            &format!("the enterprise already received its one M1 award (claim {claim})"),
            "M1",
        );
        return;
    }
    if qualifying < p.m1.min_retained {
        b.deny_all(
            &format!(
                "the enterprise has {qualifying} qualifying non-local employees; M1 requires at least {} (30 人以上)",
                p.m1.min_retained
            ),
            "M1",
        );
        return;
    }
    b.net_lines_per_person();
    b.offset_enterprise_prior();
    let paid: Vec<(String, Money)> = b
        .lines()
        .iter()
        .filter(|l| l.paid)
        .filter_map(|l| l.person.clone().map(|p| (p, l.amount)))
        .collect();
    let total: Money = paid.iter().map(|(_, a)| *a).sum();
    for (person, amount) in paid {
        b.count(Key::new(CODE, Kind::Person).person(&person), amount);
    }
    b.count(award_key, total);
}
