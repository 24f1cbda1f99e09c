//! M5 — 5 new-resident points (non-cash, New Resident Service Center).
//!
//! Source (措施5): "对持有鹿城区公安分局签发的有效期内的《浙江省居住证》且留温过年的外地员工,给予
//! 5 分的新居民积分奖励。"
//!
//! Reading: every non-local M1 roster person who stayed in Wenzhou over the Spring Festival (the
//! M1 window) and held, on Lunar New Year's Day 2023-01-22 (`m5.permit_date`), a Zhejiang
//! Residence Permit issued by the Lucheng sub-bureau (`m5.issuer_code`, 330302) valid that day
//! (valid_from ≤ day ≤ valid_to): `m5.points`, once per person. Insurance is not a condition.

use super::{by_id, Builder, PersonFacts};
use crate::{terms, Entitlement};
use huiqi_events::history::{Count, Key, Kind};
use huiqi_events::Money;
use std::collections::BTreeSet;

pub const CODE: &str = "M5";

/// The history key of a person who received their points.
pub fn key(person: &str) -> Key {
    Key::new(CODE, Kind::Grant).person(person)
}

/// What granting points to `person` counts.
pub fn granted(person: &str) -> Count {
    Count {
        key: key(person),
        amount: Money::ZERO.round(),
    }
}

pub fn grant(b: &mut Builder<'_>) {
    let p = b.params();
    let presence = PersonFacts::of(b.facts).presence;
    let permits = by_id(
        b.facts
            .residence_permit
            .iter()
            .flat_map(|r| r.persons.iter()),
        |x| x.id_number.as_str(),
    );
    let day = p.m5.permit_date;
    let mut granted = BTreeSet::new();
    let mut out = Vec::new();
    for e in b.app.employees.iter().flatten() {
        let id = e.id_number.as_str();
        if !terms::is_non_local(id, p) || !presence.get(id).is_some_and(|x| x.stayed_whole_window) {
            continue;
        }
        let valid = permits
            .get(id)
            .and_then(|x| x.permit.as_ref())
            .is_some_and(|pm| {
                pm.issuer_code == p.m5.issuer_code && pm.valid_from <= day && day <= pm.valid_to
            });
        if !valid || b.history.contains(&key(id)) || !granted.insert(id) {
            continue;
        }
        out.push(Entitlement::ResidentPoints {
            person: id.to_string(),
            points: p.m5.points,
        });
    }
    b.entitlements.extend(out);
}
