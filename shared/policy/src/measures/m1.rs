//! M1 — one-off retention subsidy (留工补助).
//!
//! Source (措施1): "对春节期间留工的外地员工人数 30 人以上的企业,按外地参保员工(外地以身份证前
//! 4 位为准,2023 年 1 月和 2 月参加职工养老保险)每人 500 元的标准发放一次性留工补助。留温时间以
//! 2023 年 1 月 6 日至 2022 年 2 月 5 日未离开温州市为准。企业向属地街镇申报办理。"
//!
//! Reading:
//! - A roster person *qualifies* when non-local (ID not starting 3303), insured for pension
//!   with the applicant in both 2023-01 and 2023-02 (social-insurance check), and did not leave
//!   Wenzhou 2023-01-06 … 2023-02-05 inclusive (presence check). The printed end "2022 年 2 月
//!   5 日" is a typo: a window cannot end before it starts; the city plan runs to 2023-02-05.
//! - "30 人以上" includes 30 (Civil Code art. 1259): the enterprise needs ≥ `m1.min_retained`.
//! - Award: `m1.per_person` per qualifying person. One M1 award per enterprise; a person is
//!   counted for one enterprise only (the first one paid for them).
//! - Facts come from the checks, never from the applicant's own statement.

use super::{Builder, PersonFacts};
use crate::params::Params;
use crate::terms;
use huiqi_events::payloads::{InsuredPerson, PresencePerson};
use std::collections::{BTreeMap, BTreeSet};

pub const ITEM: &str = "retention_subsidy";

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

pub fn decide(b: &mut Builder<'_>) {
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
        if let Some(other) = b.history.m1_persons.get(id).filter(|o| o.as_str() != uscc) {
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
    if let Some(claim) = b.history.m1_enterprises.get(uscc) {
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
    b.apply_prior_payments();
}
