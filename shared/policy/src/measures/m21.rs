//! M21 — HR service agency recruitment reward.
//!
//! Source (措施21): "发挥人力资源服务机构在招工中的作用,对为企业新引进员工 5 名以上的服务机构,可按
//! 每人不低于 500 元的标准给予奖励,最高不超过 10 万元,其中新引进员工以鹿城区首次参加职工养老保险
//! 为准。"
//!
//! Reading: the applicant is an HR service agency (`hr_agency`). A placed person is *new* when
//! the social-insurance check shows their first-ever employee pension enrolment in Lucheng dated
//! inside the policy period, with the enterprise they were placed with. A person counts once,
//! for one agency.
//!
//! "5 名以上" counts an agency's new persons cumulatively over the policy period, across its
//! claims (ruling 6): until the agency has `m21.min_new` (5, "以上" includes it), its qualifying
//! persons are counted but not paid; the claim that reaches 5 pays them all (those counted in
//! earlier claims too), and each further qualifying person pays `m21.per_person` (the source's
//! floor "不低于 500"). So splitting one agency's placements over several claims never changes
//! what it is paid. Each person's amount is netted of other policies' payments first; the
//! cumulative cap `m21.cap` per agency binds on the sum of net amounts (ruling 4).

use super::{by_id, Builder, List, Lists, Measure};
use huiqi_events::checks::Check;
use huiqi_events::history::{Key, Kind};
use huiqi_events::payloads::ApplicantKind;
use huiqi_events::Money;

pub const CODE: &str = "M21";
pub const ITEM: &str = "recruitment_reward";

pub struct M21;

impl Measure for M21 {
    fn code(&self) -> &'static str {
        CODE
    }
    fn lists(&self) -> Lists {
        Lists {
            all_of: &[List::Placements],
            any_of: &[],
            allowed: &[List::Placements],
        }
    }
    fn checks(&self) -> &'static [Check] {
        &[
            Check::Enterprise,
            Check::SocialInsurance,
            Check::PriorBenefits,
        ]
    }
    fn decide(&self, b: &mut Builder<'_>) {
        decide(b)
    }
}

/// A person counted by some agency (one agency per person).
fn counted_key(person: &str) -> Key {
    Key::new(CODE, Kind::Qualified).person(person)
}

/// A new employee `agency` counted (paid or not yet).
fn agency_qualified(agency: &str, person: &str) -> Key {
    Key::new(CODE, Kind::Qualified).uscc(agency).person(person)
}

/// What `agency` was paid for a person.
fn agency_paid(agency: &str, person: &str) -> Key {
    Key::new(CODE, Kind::Person).uscc(agency).person(person)
}

fn decide(b: &mut Builder<'_>) {
    let p = b.params();
    let agency = b.uscc();
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
    let mut new_here: Vec<String> = Vec::new();
    for pl in b.app.placements.iter().flatten() {
        let id = pl.id_number.as_str();
        let why = if !kind_ok {
            Some("the applicant is not an HR service agency (人力资源服务机构)".to_string())
        } else if !seen.insert(id) {
            Some("listed more than once in this application".into())
        } else if let Some(e) = b.history.get(&counted_key(id)).first().cloned() {
            b.rely(&counted_key(id), "a person counts once, for one agency");
            Some(if &*e.by == agency {
                format!("already counted for this agency in claim {}", e.claim_id)
            } else {
                format!("already counted under M21 for agency {}", e.by)
            })
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
                new_here.push(id.to_string());
                b.pay(
                    ITEM,
                    Some(id),
                    p.m21.per_person,
                    format!(
                        "new employee placed with {}, first Lucheng pension enrolment in the policy period",
                        pl.employer_uscc
                    ),
                    "M21",
                );
            }
        }
    }
    // Persons this agency counted in earlier claims, and whether they were settled (paid, or
    // decided at zero) once the agency had reached the threshold.
    let earlier: Vec<(String, String, bool)> = b
        .history
        .of(CODE, Kind::Qualified, agency)
        .map(|(k, es)| {
            (
                k.person.clone(),
                es.first()
                    .map(|e| e.claim_id.to_string())
                    .unwrap_or_default(),
                b.history.contains(&agency_paid(agency, &k.person)),
            )
        })
        .collect();
    for (person, _, _) in &earlier {
        b.rely(
            &agency_qualified(agency, person),
            "counts towards the agency's 5 new employees (cumulative, ruling 6)",
        );
    }
    let cumulative = earlier.len() + new_here.len();
    if cumulative < p.m21.min_new {
        let counted_before = if earlier.is_empty() {
            String::new()
        } else {
            format!(" ({} counted in earlier claims)", earlier.len())
        };
        b.deny_all(
            &format!(
                "the agency placed {cumulative} new employees{counted_before}; M21 requires at least {} (5 名以上, counted cumulatively across the agency's claims, ruling 6) — they are counted and paid once the agency reaches it",
                p.m21.min_new
            ),
            "M21",
        );
        for id in &new_here {
            b.count(counted_key(id), Money::ZERO);
            b.count(agency_qualified(agency, id), Money::ZERO);
        }
        return;
    }
    // The threshold is reached: earlier persons not yet paid are paid now, after this claim's.
    for (person, claim, settled) in &earlier {
        if !settled {
            b.pay(
                ITEM,
                Some(person),
                p.m21.per_person,
                format!(
                    "new employee counted in claim {claim}; paid now that the agency has {cumulative} new employees (5 名以上, counted cumulatively, ruling 6)"
                ),
                "M21",
            );
        }
    }
    b.net_lines_per_person();
    b.offset_enterprise_prior();
    b.cap(
        Key::new(CODE, Kind::Award).uscc(agency),
        p.m21.cap,
        "the agency's M21 total across all claims",
    );
    // Every person decided here is settled (paid, or netted to nothing by another policy's
    // payment, or cut by the cap): counted with what was paid, so no later claim pays them.
    let due: Vec<String> = new_here
        .iter()
        .cloned()
        .chain(
            earlier
                .iter()
                .filter(|(_, _, settled)| !settled)
                .map(|(person, _, _)| person.clone()),
        )
        .collect();
    let settled: Vec<(String, Money)> = due
        .into_iter()
        .map(|id| {
            let amount = b
                .lines()
                .iter()
                .rev()
                .find(|l| l.person.as_deref() == Some(id.as_str()))
                .filter(|l| l.paid)
                .map(|l| l.amount)
                .unwrap_or_default();
            (id, amount)
        })
        .collect();
    for id in &new_here {
        b.count(counted_key(id), Money::ZERO);
        b.count(agency_qualified(agency, id), Money::ZERO);
    }
    for (id, amount) in settled {
        b.count(agency_paid(agency, &id), amount);
    }
}
