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
//!   TW; RU and EG are not Asia), else `m10.other_per_person`.
//! - An exhibition is identified by host country, start date and its name with case, spaces
//!   and punctuation removed (ruling 10), so a retyped name is the same exhibition; entries of
//!   one application naming the same exhibition are taken together.
//! - At most `m10.max_travellers` per exhibition per enterprise, across claims ("不超过4人次"
//!   includes 4). Each traveller's amount is first netted of what other policies paid that
//!   person (ruling 4); the places go to the highest net amounts (ties: roster order); a
//!   traveller whose net is zero takes no place; the rest are listed as not paid.
//! - (b) Business trips (not exhibitions) by a foreign-trade enterprise (registry check) to
//!   another RCEP member (`m10.rcep`) departing in the policy period: `m10.airfare_share` of
//!   the airfare paid, per traveller, netted the same way; a trip (country and departure date)
//!   is paid once per traveller.
//! - Both: the exit-entry check must show each traveller outside the mainland on the
//!   exhibition's or trip's first day (exit on or before it, no entry before it).
//! - Enterprise-level prior payments are offset once across claims (ruling 3).

use super::{best_places, by_id, Builder, List, Lists, Measure};
use chrono::NaiveDate;
use huiqi_events::checks::Check;
use huiqi_events::history::{Key, Kind};
use huiqi_events::payloads::TravellerRecord;
use huiqi_events::Money;
use std::collections::{BTreeMap, BTreeSet};

pub const CODE: &str = "M10";

pub struct M10;

impl Measure for M10 {
    fn code(&self) -> &'static str {
        CODE
    }
    fn lists(&self) -> Lists {
        Lists {
            all_of: &[],
            any_of: &[List::Exhibitions, List::Trips],
            allowed: &[List::Exhibitions, List::Trips],
        }
    }
    fn checks(&self) -> &'static [Check] {
        &[Check::Enterprise, Check::ExitEntry, Check::PriorBenefits]
    }
    fn decide(&self, b: &mut Builder<'_>) {
        decide(b)
    }
}

/// Outside the mainland on `day`: some trip exited on or before it and had not re-entered
/// before it.
pub fn abroad_on(rec: Option<&&TravellerRecord>, day: NaiveDate) -> bool {
    rec.is_some_and(|r| {
        r.trips
            .iter()
            .any(|t| t.exit_date <= day && t.entry_date.is_none_or(|e| e >= day))
    })
}

/// An exhibition's name with case, spaces and punctuation removed (ruling 10).
pub fn normalized_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The identity of an exhibition: host country, start date, normalized name.
pub fn exhibition_key(country: &str, start: NaiveDate, name: &str) -> String {
    format!(
        "{}|{start}|{}",
        country.to_uppercase(),
        normalized_name(name)
    )
}

/// The identity of a business trip: destination and departure date.
pub fn trip_key(country: &str, departure: NaiveDate) -> String {
    format!("{}|{departure}", country.to_uppercase())
}

struct Candidate<'a> {
    id: &'a str,
    first_day: NaiveDate,
}

fn decide(b: &mut Builder<'_>) {
    let p = &b.params().m10;
    let uscc = b.uscc();
    let records: BTreeMap<&str, &TravellerRecord> = by_id(
        b.facts.exit_entry.iter().flat_map(|r| r.persons.iter()),
        |x| x.id_number.as_str(),
    );
    // Exhibitions, taken together by identity, in the order they first appear.
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&huiqi_events::payloads::Exhibition>> = BTreeMap::new();
    for x in b.app.exhibitions.iter().flatten() {
        let key = exhibition_key(&x.country, x.start_date, &x.name);
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(x);
    }
    for key in order {
        let entries = &groups[&key];
        let first = entries[0];
        let item = format!("exhibition:{}", first.name);
        let country = first.country.to_uppercase();
        let window_ok = p.exhibition_window.contains(first.start_date);
        let abroad_ok = country != "CN";
        let (rate, region) = if p.asia.contains(&country) {
            (p.asia_per_person, "Asia")
        } else {
            (p.other_per_person, "outside Asia")
        };
        let paid_before: Vec<String> = b
            .history
            .of_item(CODE, Kind::ItemPerson, uscc, &key)
            .map(|(k, _)| k.person.clone())
            .collect();
        let mut places = p.max_travellers.saturating_sub(paid_before.len());
        if !paid_before.is_empty() {
            for person in &paid_before {
                let k = Key::new(CODE, Kind::ItemPerson)
                    .uscc(uscc)
                    .item(&key)
                    .person(person);
                b.rely(
                    &k,
                    "a traveller already paid for this exhibition takes one of its places",
                );
            }
        }
        let mut seen = BTreeSet::new();
        let mut candidates: Vec<Candidate> = Vec::new();
        for t in entries.iter().flat_map(|x| x.travellers.iter()) {
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
                        first.start_date, p.exhibition_window.from, p.exhibition_window.to
                    ),
                    "M10a",
                );
            } else if paid_before.iter().any(|x| x == id) {
                b.deny(
                    &item,
                    Some(id),
                    "already paid for this exhibition in an earlier claim".into(),
                    "M10a",
                );
            } else if !abroad_on(records.get(id), first.start_date) {
                b.deny(
                    &item,
                    Some(id),
                    format!(
                        "exit-entry records do not show this traveller outside the mainland on {}",
                        first.start_date
                    ),
                    "M10a",
                );
            } else {
                candidates.push(Candidate {
                    id,
                    first_day: first.start_date,
                });
            }
        }
        // Net each candidate first, then give the places to the highest net amounts.
        let nets: Vec<Money> = candidates
            .iter()
            .map(|c| super::sub(rate, b.person_prior_left(c.id).0))
            .collect();
        let chosen = best_places(&nets, places);
        for (i, c) in candidates.iter().enumerate() {
            if chosen[i] {
                places -= 1;
                let (amount, why) = b.net_for_person(rate, c.id);
                let mut reason = format!(
                    "exhibition in {country} ({region}), abroad on its first day {}",
                    c.first_day
                );
                if let Some(why) = why {
                    reason = format!("{reason}; {why}");
                }
                b.pay(&item, Some(c.id), amount, reason, "M10a");
                // The traveller takes a place of this exhibition (by its identity).
                let k = Key::new(CODE, Kind::ItemPerson)
                    .uscc(uscc)
                    .item(&key)
                    .person(c.id);
                b.count(k, amount);
            } else if nets[i].is_zero() {
                let (_, named) = b.person_prior_left(c.id);
                b.deny(
                    &item,
                    Some(c.id),
                    format!("already paid at least ¥{rate} for this by another policy: {named} (不重复享受、就高原则, 附则2); takes no place"),
                    "M10a",
                );
                b.rule("SR2");
            } else {
                b.deny(
                    &item,
                    Some(c.id),
                    format!(
                        "at most {} travellers per exhibition per enterprise (单个展会每家企业最高不超过4人次); the places went to the highest net amounts",
                        p.max_travellers
                    ),
                    "M10a",
                );
            }
        }
    }
    trips(b);
    b.offset_enterprise_prior();
}

fn trips(b: &mut Builder<'_>) {
    let p = &b.params().m10;
    let period = b.params().policy_period;
    let uscc = b.uscc();
    let records: BTreeMap<&str, &TravellerRecord> = by_id(
        b.facts.exit_entry.iter().flat_map(|r| r.persons.iter()),
        |x| x.id_number.as_str(),
    );
    let foreign_trade = b.facts.enterprise.as_ref().and_then(|e| e.foreign_trade) == Some(true);
    let mut seen = BTreeSet::new();
    for trip in b.app.trips.iter().flatten() {
        let country = trip.country.to_uppercase();
        let key = trip_key(&country, trip.departure_date);
        let item = format!("rcep_trip:{key}");
        for t in &trip.travellers {
            let id = t.id_number.as_str();
            let paid_key = Key::new(CODE, Kind::ItemPerson)
                .uscc(uscc)
                .item(&format!("trip|{key}"))
                .person(id);
            if !seen.insert((key.clone(), id)) {
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
            } else if b.history.contains(&paid_key) {
                b.rely(&paid_key, "the trip was already paid for this traveller");
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
                let ours = Money(t.airfare.0 * p.airfare_share);
                let (amount, why) = b.net_for_person(ours, id);
                let mut reason = format!(
                    "{}% of airfare ¥{} for a business trip to {country}",
                    (p.airfare_share * rust_decimal::Decimal::from(100)).normalize(),
                    t.airfare
                );
                if let Some(why) = why {
                    reason = format!("{reason}; {why}");
                }
                b.pay(&item, Some(id), amount, reason, "M10b");
                b.count(paid_key, amount);
            }
        }
    }
}
