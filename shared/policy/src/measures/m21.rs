//! M21 — HR service agency recruitment reward.
//!
//! Source (措施21): "发挥人力资源服务机构在招工中的作用,对为企业新引进员工 5 名以上的服务机构,可按
//! 每人不低于 500 元的标准给予奖励,最高不超过 10 万元,其中新引进员工以鹿城区首次参加职工养老保险
//! 为准。"
//!
//! Reading: the applicant is an HR service agency (`hr_agency`). A placed person is *new* when
//! the social-insurance check shows their first-ever employee pension enrolment in Lucheng dated
//! inside the policy period, with the enterprise they were placed with. With ≥ `m21.min_new`
//! such persons ("5 名以上" includes 5): `m21.per_person` each ("不低于 500" — the base version
//! pays the floor), at most `m21.cap` per agency across all its claims. A person counts once,
//! for one agency.

use super::{by_id, Builder};
use huiqi_events::payloads::ApplicantKind;
use huiqi_events::Money;

pub const ITEM: &str = "recruitment_reward";

pub fn decide(b: &mut Builder<'_>) {
    let p = b.params();
    let agency = b.app.applicant.uscc.clone();
    let kind_ok = b.app.applicant.kind == ApplicantKind::HrAgency
        && b.facts
            .enterprise
            .as_ref()
            .and_then(|e| e.kind)
            .is_none_or(|k| k == ApplicantKind::HrAgency);
    let si = by_id(
        b.facts
            .social_insurance
            .iter()
            .flat_map(|r| r.persons.iter()),
        |x| x.id_number.as_str(),
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut new_persons = 0usize;
    for pl in b.app.placements.iter().flatten() {
        let id = pl.id_number.as_str();
        let why = if !kind_ok {
            Some("the applicant is not an HR service agency (人力资源服务机构)".to_string())
        } else if !seen.insert(id) {
            Some("listed more than once in this application".into())
        } else if let Some(other) = b.history.m21_persons.get(id) {
            Some(format!("already counted under M21 for agency {other}"))
        } else {
            match si.get(id).and_then(|s| s.first_lucheng_enrolment.as_ref()) {
                None => Some("no first Lucheng pension enrolment on record (social-insurance check)".into()),
                Some(en) if !p.policy_period.contains(en.date) => Some(format!(
                    "first Lucheng pension enrolment on {} — not inside the policy period {} to {}, so not a new employee",
                    en.date, p.policy_period.from, p.policy_period.to
                )),
                Some(en) if en.employer_uscc != pl.employer_uscc => Some(format!(
                    "first Lucheng enrolment was with {}, not with {} where the agency placed them",
                    en.employer_uscc, pl.employer_uscc
                )),
                Some(_) => None,
            }
        };
        match why {
            Some(why) => b.deny(ITEM, Some(id), why, "M21"),
            None => {
                new_persons += 1;
                b.pay(ITEM, Some(id), p.m21.per_person, format!("new employee placed with {}, first Lucheng pension enrolment in the policy period", pl.employer_uscc), "M21");
            }
        }
    }
    if new_persons < p.m21.min_new {
        b.deny_all(
            &format!("the agency placed {new_persons} new employees; M21 requires at least {} (5 名以上)", p.m21.min_new),
            "M21",
        );
        return;
    }
    let already = b.history.m21_paid.get(&agency).copied().unwrap_or_default();
    let mut room = if already >= p.m21.cap {
        Money::ZERO
    } else {
        p.m21.cap - already
    };
    let cap = p.m21.cap;
    for l in b.lines_mut().iter_mut().filter(|l| l.paid) {
        if room.is_zero() {
            l.paid = false;
            l.amount = Money::ZERO.round();
            l.reason = format!(
                "{} — but the agency reached the M21 cap of ¥{cap} (¥{already} awarded before)",
                l.reason
            );
        } else if l.amount > room {
            l.amount = room.round();
            l.reason = format!("{}; capped: at most ¥{cap} per agency", l.reason);
            room = Money::ZERO;
        } else {
            room = room - l.amount;
        }
    }
    b.apply_prior_payments();
}
