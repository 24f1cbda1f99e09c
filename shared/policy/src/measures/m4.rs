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
use std::collections::BTreeSet;

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
        if b.history.m4_phones.contains(phone) || !granted.insert(phone) {
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
