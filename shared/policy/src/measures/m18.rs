//! M18 — charter buses for returning workers.
//!
//! Source (措施18): "2023年1月22日至2月2日,制造业企业租用(含合租)大巴车跨省“点对点”组织外地员工
//! 返岗,给予包车费用50%补贴,每家企业最高不超过20万元。"
//!
//! Reading: a manufacturing enterprise (registry `industry` is `manufacturing` or GB/T 4754
//! section `C`); per charter contract departing 2023-01-22 … 2023-02-02 inclusive
//! (`m18.window`) from another province (`origin_province` ≠ 33): `m18.share` of the
//! applicant's own share of the cost (a shared charter counts only the applicant's share). All
//! M18 awards of one enterprise together at most `m18.cap` ("不超过" includes the cap). A charter
//! is paid once. Its passengers cannot also get M19(b) through the same enterprise.

use super::Builder;
use huiqi_events::Money;
use std::collections::BTreeSet;

/// Whether the registry's industry is manufacturing.
pub fn is_manufacturing(industry: Option<&str>) -> bool {
    matches!(industry, Some("manufacturing") | Some("C"))
}

pub fn decide(b: &mut Builder<'_>) {
    let p = &b.params().m18;
    let province = b.params().province_prefix.clone();
    let uscc = b.app.applicant.uscc.clone();
    let manufacturing = is_manufacturing(
        b.facts
            .enterprise
            .as_ref()
            .and_then(|e| e.industry.as_deref()),
    );
    let already = b.history.m18_paid.get(&uscc).copied().unwrap_or_default();
    let mut room = if already >= p.cap {
        Money::ZERO
    } else {
        p.cap - already
    };
    let mut seen = BTreeSet::new();
    for c in b.app.charters.iter().flatten() {
        let item = format!("charter:{}", c.contract_no);
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
                "not a manufacturing enterprise per the enterprise registry (制造业企业)".into(),
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
        } else if b
            .history
            .m18_charters
            .contains(&format!("{uscc}|{}", c.contract_no))
        {
            b.deny(
                &item,
                None,
                "this charter was already paid in an earlier claim".into(),
                "M18",
            );
        } else if room.is_zero() {
            b.deny(
                &item,
                None,
                format!(
                    "the enterprise reached the M18 cap of ¥{} (¥{already} already awarded)",
                    p.cap
                ),
                "M18",
            );
        } else {
            let full = Money(c.applicant_cost.0 * p.share).round();
            let amount = if full > room { room } else { full };
            room = room - amount;
            let mut reason = format!(
                "{}% of the applicant's charter cost ¥{} (departed {} from province {})",
                (p.share * rust_decimal::Decimal::from(100)).normalize(),
                c.applicant_cost,
                c.departure_date,
                c.origin_province
            );
            if amount < full {
                reason.push_str(&format!(
                    "; capped at ¥{} per enterprise across all M18 claims",
                    p.cap
                ));
            }
            b.pay(&item, None, amount, reason, "M18");
        }
    }
    b.apply_prior_payments();
}
