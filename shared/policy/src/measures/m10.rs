//! M10 — overseas exhibitions (a) and RCEP business travel (b).
//!
//! Source (措施10): "鼓励企业一季度赴境外参展拓市场,对企业的出境人员费用提高补助,其中境外展会举办
//! 地为亚洲区域的,每人给予8000元人员费补助,亚洲地区以外的,每人给予1.5万元人员费补助,单个展会
//! 每家企业最高不超过4人次。加大RCEP合作交流支持,引导外贸企业积极赴RCEP其他成员国开展重要商务活动
//! (参展除外),对企业出入境机票费用给予30%的补助。"
//!
//! Reading:
//! - (a) Exhibitions abroad (境外: outside the mainland, so HK, MO and TW count; CN does not)
//!   starting in Q1 2023 (`m10.exhibition_window`, both days included): per traveller
//!   `m10.asia_per_person` when the host country is in `m10.asia` (UN M49 Asia plus HK, MO,
//!   TW; RU and EG are not Asia), else `m10.other_per_person`; at most `m10.max_travellers`
//!   per exhibition per enterprise, across claims ("不超过4人次" includes 4); extra travellers are
//!   listed as not paid.
//! - (b) Business trips (not exhibitions) by a foreign-trade enterprise (registry check) to
//!   another RCEP member (`m10.rcep`) departing in the policy period: `m10.airfare_share` of
//!   the airfare paid, per traveller.
//! - Both: the exit-entry check must show each traveller outside the mainland on the
//!   exhibition's or trip's first day (exit on or before it, no entry before it).

use super::{by_id, Builder};
use chrono::NaiveDate;
use huiqi_events::payloads::TravellerRecord;
use huiqi_events::Money;
use std::collections::{BTreeMap, BTreeSet};

/// Outside the mainland on `day`: some trip exited on or before it and had not re-entered
/// before it.
pub fn abroad_on(rec: Option<&&TravellerRecord>, day: NaiveDate) -> bool {
    rec.is_some_and(|r| {
        r.trips
            .iter()
            .any(|t| t.exit_date <= day && t.entry_date.is_none_or(|e| e >= day))
    })
}

pub fn decide(b: &mut Builder<'_>) {
    let p = &b.params().m10;
    let period = b.params().policy_period;
    let uscc = b.app.applicant.uscc.clone();
    let records: BTreeMap<&str, &TravellerRecord> = by_id(
        b.facts.exit_entry.iter().flat_map(|r| r.persons.iter()),
        |x| x.id_number.as_str(),
    );
    for x in b.app.exhibitions.iter().flatten() {
        let item = format!("exhibition:{}", x.name);
        let country = x.country.to_uppercase();
        let window_ok = p.exhibition_window.contains(x.start_date);
        let abroad_ok = country != "CN";
        let rate = if p.asia.contains(&country) {
            p.asia_per_person
        } else {
            p.other_per_person
        };
        let region = if p.asia.contains(&country) {
            "Asia"
        } else {
            "outside Asia"
        };
        let already: BTreeSet<String> = b
            .history
            .m10_exhibition_travellers
            .get(&format!("{uscc}|{}", x.name))
            .cloned()
            .unwrap_or_default();
        let mut used = already.len();
        let mut seen = BTreeSet::new();
        for t in &x.travellers {
            let id = t.id_number.as_str();
            if !seen.insert(id) {
                b.deny(
                    &item,
                    Some(id),
                    "listed more than once for this exhibition".into(),
                    "M10a",
                );
            } else if !abroad_ok {
                b.deny(
                    &item,
                    Some(id),
                    "held in mainland China: M10(a) is for exhibitions abroad (境外)".into(),
                    "M10a",
                );
            } else if !window_ok {
                b.deny(
                    &item,
                    Some(id),
                    format!(
                        "exhibition starts {} — outside Q1 2023 ({} to {})",
                        x.start_date, p.exhibition_window.from, p.exhibition_window.to
                    ),
                    "M10a",
                );
            } else if already.contains(id) {
                b.deny(
                    &item,
                    Some(id),
                    "already paid for this exhibition in an earlier claim".into(),
                    "M10a",
                );
            } else if !abroad_on(records.get(id), x.start_date) {
                b.deny(
                    &item,
                    Some(id),
                    format!(
                        "exit-entry records do not show this traveller outside the mainland on {}",
                        x.start_date
                    ),
                    "M10a",
                );
            } else if used >= p.max_travellers {
                b.deny(
                    &item,
                    Some(id),
                    format!("at most {} travellers per exhibition per enterprise (单个展会每家企业最高不超过4人次)", p.max_travellers),
                    "M10a",
                );
            } else {
                used += 1;
                b.pay(
                    &item,
                    Some(id),
                    rate,
                    format!("exhibition in {country} ({region}), abroad on its first day"),
                    "M10a",
                );
            }
        }
    }
    let foreign_trade = b.facts.enterprise.as_ref().and_then(|e| e.foreign_trade) == Some(true);
    for trip in b.app.trips.iter().flatten() {
        let country = trip.country.to_uppercase();
        let key = format!("{country}|{}", trip.departure_date);
        let item = format!("rcep_trip:{key}");
        let mut seen = BTreeSet::new();
        for t in &trip.travellers {
            let id = t.id_number.as_str();
            if !seen.insert(id) {
                b.deny(
                    &item,
                    Some(id),
                    "listed more than once for this trip".into(),
                    "M10b",
                );
            } else if !foreign_trade {
                b.deny(
                    &item,
                    Some(id),
                    "not a foreign-trade enterprise per the enterprise registry (外贸企业)".into(),
                    "M10b",
                );
            } else if !p.rcep.contains(&country) {
                b.deny(
                    &item,
                    Some(id),
                    format!("{country} is not another RCEP member state"),
                    "M10b",
                );
            } else if !period.contains(trip.departure_date) {
                b.deny(
                    &item,
                    Some(id),
                    format!(
                        "departure {} outside the policy period {} to {}",
                        trip.departure_date, period.from, period.to
                    ),
                    "M10b",
                );
            } else if b
                .history
                .m10_trip_travellers
                .contains(&format!("{uscc}|{key}|{id}"))
            {
                b.deny(
                    &item,
                    Some(id),
                    "this trip was already paid for this traveller".into(),
                    "M10b",
                );
            } else if !abroad_on(records.get(id), trip.departure_date) {
                b.deny(
                    &item,
                    Some(id),
                    format!(
                        "exit-entry records do not show this traveller outside the mainland on {}",
                        trip.departure_date
                    ),
                    "M10b",
                );
            } else {
                let amount = Money(t.airfare.0 * p.airfare_share);
                b.pay(
                    &item,
                    Some(id),
                    amount,
                    format!(
                        "{}% of airfare ¥{} for a business trip to {country}",
                        (p.airfare_share * rust_decimal::Decimal::from(100)).normalize(),
                        t.airfare
                    ),
                    "M10b",
                );
            }
        }
    }
    b.apply_prior_payments();
}
