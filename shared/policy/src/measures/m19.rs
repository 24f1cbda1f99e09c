//! M19 — return-to-work transport subsidy.
//!
//! Source (措施19): "对跨省就业的对口帮扶地区脱贫人口按规定发放一次性交通补助。2023年1月22日至2月2日,
//! 对自行返岗就业外地参保员工(外地以身份证前4位为准,2023年1月和2月参加职工养老保险),给予返岗交通
//! 补贴。通过企业代为办理并向属地街镇申报,补贴标准为市外省内50元/人、华东地区150元/人、华东以外地区
//! 200元/人。"
//!
//! Reading:
//! - (a) Returnees flagged as lifted out of poverty, employed across provinces (ID province ≠
//!   33): "按规定" — the amount is a higher-level rule this policy does not state. The base
//!   version leaves `m19.a_per_person` unset: such lines are recorded and not paid ("parameter
//!   not set") until a policy version sets it. Once per person.
//! - (b) Non-local (ID not 3303) employees insured Jan and Feb 2023 with the applicant who
//!   arrived in Wenzhou on their own 2023-01-22 … 2023-02-02 inclusive (the presence check's
//!   arrival date, not the applicant's statement): by the ID's province — Zhejiang outside
//!   Wenzhou `b_in_province`, rest of East China (31, 32, 34–37) `b_east_china`, elsewhere
//!   (Taiwan 71 included) `b_elsewhere`. Someone who stayed the whole M1 window did not travel;
//!   someone carried on this enterprise's paid M18 charter did not return on their own. Once per
//!   person.

use super::{m1, Builder, PersonFacts};
use crate::terms;

pub fn decide(b: &mut Builder<'_>) {
    let p = b.params();
    let uscc = b.app.applicant.uscc.clone();
    let PersonFacts {
        insured: si,
        presence,
    } = PersonFacts::of(b.facts);
    let mut seen = std::collections::BTreeSet::new();
    for r in b.app.returnees.iter().flatten() {
        let id = r.id_number.as_str();
        if !seen.insert(id) {
            b.deny(
                "return_transport",
                Some(id),
                "listed more than once in this application".into(),
                "M19b",
            );
            continue;
        }
        if r.poverty_alleviated {
            let item = "poverty_transport";
            if terms::province(id) == p.province_prefix {
                b.deny(
                    item,
                    Some(id),
                    "employed within Zhejiang: M19(a) is for cross-province (跨省) employment"
                        .into(),
                    "M19a",
                );
            } else if b.history.m19a_persons.contains(id) {
                b.deny(item, Some(id), "already paid under M19(a)".into(), "M19a");
            } else {
                match p.m19.a_per_person {
                    None => b.deny(
                        item,
                        Some(id),
                        format!(
                            "parameter not set: m19.a_per_person — the amount is fixed by a higher-level rule (按规定) that policy version {} does not state; the claim is recorded",
                            p.version
                        ),
                        "M19a",
                    ),
                    Some(amount) => b.pay(
                        item,
                        Some(id),
                        amount,
                        format!("lifted out of poverty, employed across provinces; amount set by policy version {}", p.version),
                        "M19a",
                    ),
                }
            }
        }
        let item = "return_transport";
        let window = p.m19.window;
        let province = terms::province(id);
        let why_not = if !terms::is_non_local(id, p) {
            Some(format!(
                "local person: the ID number starts with {} (Wenzhou)",
                p.city_prefix
            ))
        } else if !m1::insured(si.get(id).copied(), p) {
            Some(format!(
                "not insured for pension with the applicant in both {} (social-insurance check)",
                p.insured_months.join(" and ")
            ))
        } else if b.history.m18_passengers.contains(&format!("{uscc}|{id}")) {
            Some(
                "carried on this enterprise's paid M18 charter bus: did not return on their own"
                    .into(),
            )
        } else if b.history.m19b_persons.contains(id) {
            Some("already paid under M19(b)".into())
        } else {
            match presence.get(id) {
                None => Some("no presence record (presence check)".into()),
                Some(pr) if pr.stayed_whole_window => Some(
                    "stayed in Wenzhou the whole Spring Festival window: did not travel".into(),
                ),
                Some(pr) => match pr.arrived_on {
                    None => Some("the presence check shows no arrival date".into()),
                    Some(d) if !window.contains(d) => Some(format!(
                        "arrived in Wenzhou on {d} — outside {} to {}",
                        window.from, window.to
                    )),
                    Some(_) => None,
                },
            }
        };
        if let Some(why) = why_not {
            b.deny(item, Some(id), why, "M19b");
            continue;
        }
        let (amount, region) = if province == p.province_prefix {
            (p.m19.b_in_province, "Zhejiang outside Wenzhou (市外省内)")
        } else if p.east_china_provinces.iter().any(|x| x == province) {
            (p.m19.b_east_china, "East China (华东地区)")
        } else {
            (p.m19.b_elsewhere, "outside East China (华东以外地区)")
        };
        let arrived = presence
            .get(id)
            .and_then(|x| x.arrived_on)
            .map(|d| d.to_string())
            .unwrap_or_default();
        b.pay(
            item,
            Some(id),
            amount,
            format!("returned on their own, arrived {arrived}; ID province {province}: {region}"),
            "M19b",
        );
    }
    b.apply_prior_payments();
}
