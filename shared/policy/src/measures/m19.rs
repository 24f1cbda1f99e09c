//! M19 — return-to-work transport subsidy.
//!
//! Source (措施19): "对跨省就业的对口帮扶地区脱贫人口按规定发放一次性交通补助。2023年1月22日至2月2日,
//! 对自行返岗就业外地参保员工(外地以身份证前4位为准,2023年1月和2月参加职工养老保险),给予返岗交通
//! 补贴。通过企业代为办理并向属地街镇申报,补贴标准为市外省内50元/人、华东地区150元/人、华东以外
//! 地区200元/人。"
//!
//! Reading:
//! - (a) Returnees flagged as lifted out of poverty, employed across provinces (ID province ≠
//!   33): "按规定" — the amount is a higher-level rule this policy does not state. No built-in
//!   version sets `m19.a_per_person` (ruling 2): such lines are recorded and not paid
//!   ("parameter not set") until an operator-loaded version sets it.
//! - (b) Non-local (ID not 3303) employees insured Jan and Feb 2023 with the applicant who
//!   arrived in Wenzhou on their own 2023-01-22 … 2023-02-02 inclusive (the presence check's
//!   arrival date, not the applicant's statement): by the ID's province — Zhejiang outside
//!   Wenzhou `b_in_province`, rest of East China (31, 32, 34–37) `b_east_china`, elsewhere
//!   (Taiwan 71 included) `b_elsewhere`. Someone who stayed the whole M1 window did not travel;
//!   someone carried on this enterprise's paid M18 charter did not return on their own (ruling
//!   5, the other direction is in M18).
//! - (a) and (b) are the same return trip (ruling 1): never both; the person gets the higher
//!   of the two, less what M19 already paid them in any claim (不重复享受、就高原则). Netted of
//!   other policies' payments per person, then enterprise-level ones offset once (ruling 3).
//! - Counts: what each person was paid under M19 (read by later M19 claims) and, for (b), the
//!   enterprise it was paid through (read by M18).

use super::{m1, Builder, List, Lists, Measure, PersonFacts};
use crate::terms;
use huiqi_events::checks::Check;
use huiqi_events::history::{Key, Kind};
use huiqi_events::Money;

pub const CODE: &str = "M19";
pub const ITEM_A: &str = "poverty_transport";
pub const ITEM_B: &str = "return_transport";

pub struct M19;

impl Measure for M19 {
    fn code(&self) -> &'static str {
        CODE
    }
    fn lists(&self) -> Lists {
        Lists {
            all_of: &[List::Returnees],
            any_of: &[],
            allowed: &[List::Returnees],
        }
    }
    fn checks(&self) -> &'static [Check] {
        &[
            Check::Enterprise,
            Check::SocialInsurance,
            Check::Presence,
            Check::PriorBenefits,
        ]
    }
    fn decide(&self, b: &mut Builder<'_>) {
        decide(b)
    }
}

/// What M19 paid a person, in any claim (read by later M19 claims).
pub fn person_key(person: &str) -> Key {
    Key::new(CODE, Kind::Person).person(person)
}

/// M19(b) paid to `person` through enterprise `uscc` (read by M18, ruling 5).
pub fn returned_on_own(uscc: &str, person: &str) -> Key {
    Key::new(CODE, Kind::ItemPerson)
        .uscc(uscc)
        .item(ITEM_B)
        .person(person)
}

/// One part's outcome for a person: the amount it would pay, or why not.
type Part = Result<(Money, String), String>;

fn decide(b: &mut Builder<'_>) {
    let p = b.params();
    let uscc = b.uscc();
    let PersonFacts {
        insured: si,
        presence,
    } = PersonFacts::of(b.facts);
    let mut seen = std::collections::BTreeSet::new();
    let mut counts = Vec::new();
    for r in b.app.returnees.iter().flatten() {
        let id = r.id_number.as_str();
        if !seen.insert(id) {
            b.deny(
                ITEM_B,
                Some(id),
                "listed more than once in this application".into(),
                "M19b",
            );
            continue;
        }
        let province = terms::province(id);
        // (a)
        let a: Option<Part> = r.poverty_alleviated.then(|| {
            if province == p.province_prefix {
                Err("employed within Zhejiang: M19(a) is for cross-province (跨省) employment".into())
            } else {
                match p.m19.a_per_person {
                    None => Err(format!(
                        "parameter not set: m19.a_per_person — the amount is fixed by a higher-level rule (按规定) that policy version {} does not state; the claim is recorded",
                        p.version
                    )),
                    Some(amount) => Ok((
                        amount,
                        format!("lifted out of poverty, employed across provinces; amount set by policy version {}", p.version),
                    )),
                }
            }
        });
        // (b)
        let window = p.m19.window;
        let b_part: Part = if !terms::is_non_local(id, p) {
            Err(format!(
                "local person: the ID number starts with {} (Wenzhou)",
                p.city_prefix
            ))
        } else if !m1::insured(si.get(id).copied(), p) {
            Err(format!(
                "not insured for pension with the applicant in both {} (social-insurance check)",
                p.insured_months.join(" and ")
            ))
        } else if b.history.contains(&super::m18::covered(uscc, id)) {
            b.rely(
                &super::m18::covered(uscc, id),
                "carried on this enterprise's paid M18 charter",
            );
            Err("carried on this enterprise's paid M18 charter bus: did not return on their own (ruling 5)".into())
        } else {
            match presence.get(id) {
                None => Err("no presence record (presence check)".into()),
                Some(pr) if pr.stayed_whole_window => {
                    Err("stayed in Wenzhou the whole Spring Festival window: did not travel".into())
                }
                Some(pr) => match pr.arrived_on {
                    None => Err("the presence check shows no arrival date".into()),
                    Some(d) if !window.contains(d) => Err(format!(
                        "arrived in Wenzhou on {d} — outside {} to {}",
                        window.from, window.to
                    )),
                    Some(d) => {
                        let (amount, region) = if province == p.province_prefix {
                            (p.m19.b_in_province, "Zhejiang outside Wenzhou (市外省内)")
                        } else if p.east_china_provinces.iter().any(|x| x == province) {
                            (p.m19.b_east_china, "East China (华东地区)")
                        } else {
                            (p.m19.b_elsewhere, "outside East China (华东以外地区)")
                        };
                        Ok((
                            amount,
                            format!("returned on their own, arrived {d}; ID province {province}: {region}"),
                        ))
                    }
                },
            }
        };
        // Ruling 1: the higher of the two, never both; less what M19 paid them before.
        let a_amount = a.as_ref().and_then(|x| x.as_ref().ok()).map(|x| x.0);
        let b_amount = b_part.as_ref().ok().map(|x| x.0);
        let pick_a = match (a_amount, b_amount) {
            (Some(x), Some(y)) => x > y,
            (Some(_), None) => true,
            _ => false,
        };
        let before = b.rely_total(
            &person_key(id),
            "M19 already paid to this person (one return trip)",
        );
        let mut place = |b: &mut Builder<'_>,
                         item: &str,
                         rule: &'static str,
                         part: Part,
                         chosen: bool,
                         other: Option<Money>| {
            match part {
                Err(why) => b.deny(item, Some(id), why, rule),
                Ok((amount, reason)) if !chosen => b.deny(
                    item,
                    Some(id),
                    format!(
                        "{reason} — but M19(a) and M19(b) are the same return trip: only the higher, ¥{}, is paid (不重复享受、就高原则, ruling 1)",
                        other.unwrap_or(amount).round()
                    ),
                    rule,
                ),
                Ok((amount, mut reason)) => {
                    let mut due = super::sub(amount, before);
                    if !before.is_zero() {
                        reason = format!(
                            "{reason}; M19 already paid ¥{} to this person in an earlier claim: pays only the difference up to ¥{} (ruling 1)",
                            before.round(),
                            amount.round()
                        );
                        if due.is_zero() {
                            let which = if item == ITEM_A { "M19(a)" } else { "M19(b)" };
                            b.deny(item, Some(id), format!("{reason} — already paid under {which} or the other part"), rule);
                            return;
                        }
                    }
                    let (net, why) = b.net_for_person(due, id);
                    if let Some(why) = why {
                        reason = format!("{reason}; {why}");
                    }
                    due = net;
                    b.pay(item, Some(id), due, reason, rule);
                    counts.push((id.to_string(), item == ITEM_B, due));
                }
            }
        };
        if let Some(a) = a {
            place(b, ITEM_A, "M19a", a, pick_a, b_amount);
        }
        place(b, ITEM_B, "M19b", b_part, !pick_a, a_amount);
    }
    b.offset_enterprise_prior();
    for (person, via_b, amount) in counts {
        b.count(person_key(&person), amount);
        if via_b {
            b.count(returned_on_own(uscc, &person), amount);
        }
    }
}
