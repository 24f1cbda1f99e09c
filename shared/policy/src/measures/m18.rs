//! M18 — charter buses for returning workers.
//!
//! Source (措施18): "2023年1月22日至2月2日,制造业企业租用(含合租)大巴车跨省"点对点"组织外地员工
//! 返岗,给予包车费用50%补贴,每家企业最高不超过20万元。"
//!
//! Reading: a manufacturing enterprise (registry industry `manufacturing` or any GB/T 4754
//! section C code, ruling 7); per charter contract departing 2023-01-22 … 2023-02-02 inclusive
//! (`m18.window`) from another province (`origin_province` ≠ 33): `m18.share` of the
//! applicant's own share of the cost (a shared charter counts only the applicant's share). A
//! charter is paid once.
//!
//! M18 and M19(b) exclude each other both ways for a person carried on a charter of the same
//! enterprise (ruling 5): an M19(b) claim decided later loses that person; a charter decided
//! after M19(b) was paid to its passengers deducts those M19(b) amounts. Enterprise-level
//! payments of other policies are offset once across claims (ruling 3), and then all M18 awards
//! of one enterprise together are capped at `m18.cap` on the sum of the net amounts ("不超过"
//! includes the cap; ruling 4).
//!
//! Counts: each paid charter, each passenger of a paid charter (`covered`), the enterprise's
//! award total under the cap.

use super::{Builder, List, Lists, Measure};
use crate::terms;
use huiqi_events::checks::Check;
use huiqi_events::history::{Key, Kind};
use huiqi_events::Money;
use std::collections::BTreeSet;

pub const CODE: &str = "M18";

pub struct M18;

impl Measure for M18 {
    fn code(&self) -> &'static str {
        CODE
    }
    fn lists(&self) -> Lists {
        Lists {
            all_of: &[List::Charters],
            any_of: &[],
            allowed: &[List::Charters],
        }
    }
    fn checks(&self) -> &'static [Check] {
        &[Check::Enterprise, Check::PriorBenefits]
    }
    fn decide(&self, b: &mut Builder<'_>) {
        decide(b)
    }
}

/// The history key of a person carried on a paid charter of `uscc` (read by M19(b)).
pub fn covered(uscc: &str, person: &str) -> Key {
    Key::new(CODE, Kind::Covered).uscc(uscc).person(person)
}

fn decide(b: &mut Builder<'_>) {
    let p = &b.params().m18;
    let province = b.params().province_prefix.clone();
    let uscc = b.uscc();
    let industry = b
        .facts
        .enterprise
        .as_ref()
        .and_then(|e| e.industry.as_deref());
    let manufacturing = terms::is_manufacturing(industry);
    let mut seen = BTreeSet::new();
    let mut paid_charters = Vec::new();
    for c in b.app.charters.iter().flatten() {
        let item = format!("charter:{}", c.contract_no);
        let charter_key = Key::new(CODE, Kind::Item).uscc(uscc).item(&c.contract_no);
        if !seen.insert(c.contract_no.as_str()) {
            b.deny(
                &item,
                None,
                "the same charter contract is listed twice".into(),
                "M18",
            );
        } else if !manufacturing {
            b.deny(
                &item,
                None,
                format!(
                    "not a manufacturing enterprise per the enterprise registry (制造业企业: `manufacturing` or GB/T 4754 section C; registry says {})",
                    industry.unwrap_or("nothing")
                ),
                "M18",
            );
        } else if c.origin_province == province {
            b.deny(
                &item,
                None,
                format!(
                    "origin province {} is Zhejiang: M18 pays cross-province (跨省) charters",
                    c.origin_province
                ),
                "M18",
            );
        } else if !p.window.contains(c.departure_date) {
            b.deny(
                &item,
                None,
                format!(
                    "departed {} — outside {} to {}",
                    c.departure_date, p.window.from, p.window.to
                ),
                "M18",
            );
        } else if b.history.contains(&charter_key) {
            b.rely(&charter_key, "the charter was already paid");
            b.deny(
                &item,
                None,
                "this charter was already paid in an earlier claim".into(),
                "M18",
            );
        } else {
            let full = Money(c.applicant_cost.0 * p.share).round();
            let mut reason = format!(
                "{}% of the applicant's charter cost ¥{} (departed {} from province {})",
                (p.share * rust_decimal::Decimal::from(100)).normalize(),
                c.applicant_cost,
                c.departure_date,
                c.origin_province
            );
            // Ruling 5: passengers already paid M19(b) through this enterprise.
            let mut deducted = Money::ZERO;
            let mut named = Vec::new();
            let mut passengers = BTreeSet::new();
            for person in &c.passengers {
                if !passengers.insert(person.as_str()) {
                    continue;
                }
                let k = super::m19::returned_on_own(uscc, person);
                let amount =
                    b.rely_total(&k, "M19(b) paid to a passenger of this charter is deducted");
                if !amount.is_zero() {
                    deducted = deducted + amount;
                    named.push(format!(
                        "{} ¥{}",
                        huiqi_events::mask(person),
                        amount.round()
                    ));
                }
            }
            let amount = super::sub(full, deducted);
            if !deducted.is_zero() {
                reason.push_str(&format!(
                    "; less M19(b) return-transport subsidies already paid through this enterprise to its passengers ({}): a person carried on the charter did not return on their own (ruling 5)",
                    named.join(", ")
                ));
            }
            b.pay(&item, None, amount, reason, "M18");
            paid_charters.push((charter_key, c));
        }
    }
    b.offset_enterprise_prior();
    b.cap(
        Key::new(CODE, Kind::Award).uscc(uscc),
        p.cap,
        "the enterprise's M18 total across all claims",
    );
    // Counted: each charter still paid, and its passengers (for M19(b)).
    let still_paid: BTreeSet<String> = b
        .lines()
        .iter()
        .filter(|l| l.paid)
        .map(|l| l.item.clone())
        .collect();
    for (key, c) in paid_charters {
        if !still_paid.contains(&format!("charter:{}", c.contract_no)) {
            continue;
        }
        let amount = b
            .lines()
            .iter()
            .find(|l| l.item == format!("charter:{}", c.contract_no))
            .map(|l| l.amount)
            .unwrap_or_default();
        b.count(key, amount);
        let mut passengers = BTreeSet::new();
        for person in &c.passengers {
            if passengers.insert(person.as_str()) {
                b.count(covered(uscc, person), Money::ZERO);
            }
        }
    }
}
