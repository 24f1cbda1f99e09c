//! M4 — 20 GB local data package (non-cash, by the telecom carriers).
//!
//! Source (措施4): "鼓励在温通信运营商为外地留温员工(手机号码归属地为温州)免费赠送 20G 可在春节
//! 期间使用的本地流量。"
//!
//! Reading: every M1 roster person who meets M1's person conditions (non-local, insured Jan and
//! Feb 2023 with the applicant, stayed in Wenzhou) — whether or not the enterprise reached 30 —
//! whose number the telecom check attributes to Wenzhou (`m4.city_code`, 0577) gets
//! `m4.gigabytes` from the carrier that owns the number; once per number.

use super::{by_id, m1, Builder, PersonFacts};
use crate::Entitlement;
use huiqi_events::history::{Count, Key, Kind};
use huiqi_events::Money;
use std::collections::BTreeSet;

pub const CODE: &str = "M4";

/// The history key of a number that received its data package.
pub fn key(phone: &str) -> Key {
    Key::new(CODE, Kind::Grant).item(phone)
}

/// What granting a package to `phone` counts.
pub fn granted(phone: &str) -> Count {
    Count {
        key: key(phone),
        amount: Money::ZERO.round(),
    }
}

pub fn grant(b: &mut Builder<'_>) {
    let p = b.params();
    let PersonFacts {
        insured: si,
        presence,
    } = PersonFacts::of(b.facts);
    let numbers = by_id(b.facts.telecom.iter().flat_map(|r| r.numbers.iter()), |x| {
        x.phone.as_str()
    });
    let mut granted = BTreeSet::new();
    let mut out = Vec::new();
    for e in b.app.employees.iter().flatten() {
        let Some(phone) = e.phone.as_deref() else {
            continue;
        };
        if m1::person_condition(&e.id_number, &si, &presence, p).is_some() {
            continue;
        }
        let Some(n) = numbers.get(phone) else {
            continue;
        };
        if n.city_code != p.m4.city_code || !p.m4.carriers.contains(&n.carrier) {
            continue;
        }
        if b.history.contains(&key(phone)) || !granted.insert(phone) {
            continue;
        }
        out.push(Entitlement::DataPackage {
            person: e.id_number.clone(),
            phone: phone.to_string(),
            carrier: n.carrier.clone(),
            gigabytes: p.m4.gigabytes,
        });
    }
    b.entitlements.extend(out);
}
