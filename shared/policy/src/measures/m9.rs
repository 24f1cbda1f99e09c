//! M9 — Q1 2023 production awards (开门红).
//!
//! Source (措施9): "对规上制造业企业,2023年第一季度产值超过1000万元、4000万元,且同比增长超过18%的,
//! 分别给予一次性10万元、20万元奖励;在此基础上,2022年度产值10亿元以上的制造业企业,增长超过18%的
//! 部分,按每同比再增加1个百分点予以5万元奖励,每家企业最高奖励80万元。若不满足上述条件,但符合
//! 2022年产值在2000万元以上的规上制造业企业,且2023年第一季度产值同比提升25%以上(含)的,给予5万元
//! 的一次性奖励(2022年度小升规工业企业在2023年第一季度产值达800万元及以上,按5万元奖励)"
//!
//! Reading (figures from the statistics check only, never from the applicant):
//! - g = (q1 − q1_prev) / q1_prev × 100, exact; q1_prev ≤ 0 or missing → g undefined (no tier).
//! - "超过" excludes: tier B q1 > 40 M and g > 18 → 200,000; else tier A q1 > 10 M and g > 18 →
//!   100,000.
//! - "在此基础上" with tier A or B and y2022 ≥ 1 B ("以上" includes): + 50,000 × floor(g − 18);
//!   the M9 total is capped at 800,000 ("最高").
//! - "若不满足上述条件" — only when the tiers give nothing: y2022 ≥ 20 M and g ≥ 25 ("以上(含)")
//!   → 50,000; or an enterprise upgraded to above-scale in 2022 with q1 ≥ 8 M ("及以上") →
//!   50,000. At most one 50,000.
//! - "一次性": one M9 award per enterprise.
//! - Who (ruling 7): tiers and the growth fallback need an above-designated-size manufacturer —
//!   the statistics bureau's above-scale flag and a registry industry that is manufacturing
//!   (`manufacturing` or GB/T 4754 section C); the fallback for enterprises upgraded to above
//!   designated size in 2022 ("小升规工业企业") accepts industrial enterprises (sections B, C, D).
//! - Other policies' payments for the same award are offset once (附则2, ruling 3), then the cap.

use super::{Builder, Lists, Measure};
use crate::terms;
use huiqi_events::checks::Check;
use huiqi_events::history::{Key, Kind};
use huiqi_events::Money;
use rust_decimal::Decimal;

pub const CODE: &str = "M9";

pub struct M9;

impl Measure for M9 {
    fn code(&self) -> &'static str {
        CODE
    }
    fn lists(&self) -> Lists {
        Lists {
            all_of: &[],
            any_of: &[],
            allowed: &[],
        }
    }
    fn checks(&self) -> &'static [Check] {
        &[Check::Enterprise, Check::Statistics, Check::PriorBenefits]
    }
    fn decide(&self, b: &mut Builder<'_>) {
        decide(b)
    }
}

/// Growth in percent, exact; None when the base is missing or not positive.
pub fn growth(q1: Option<Money>, base: Option<Money>) -> Option<Decimal> {
    let (q1, base) = (q1?.0, base?.0);
    if base <= Decimal::ZERO {
        return None;
    }
    Some((q1 - base) / base * Decimal::from(100))
}

fn decide(b: &mut Builder<'_>) {
    let p = &b.params().m9;
    let uscc = b.app.applicant.uscc.as_str();
    let award_key = Key::new(CODE, Kind::Award).uscc(uscc);
    if b.history.contains(&award_key) {
        let prev = b.rely_total(&award_key, "one M9 award per enterprise (一次性)");
        b.deny(
            "q1_award",
            None,
            format!("the enterprise already received its one-off M9 award (¥{prev})"),
            "M9a",
        );
        return;
    }
    let Some(st) = b.facts.statistics.as_ref() else {
        b.deny(
            "q1_award",
            None,
            "no statistics fact: the `statistics` check has not answered".into(),
            "M9a",
        );
        return;
    };
    let industry = b
        .facts
        .enterprise
        .as_ref()
        .and_then(|e| e.industry.as_deref());
    let manufacturing = terms::is_manufacturing(industry);
    let above_scale_manufacturer = st.above_scale_manufacturing && manufacturing;
    let upgraded_industrial = st.upgraded_2022 && terms::is_industrial(industry);
    if !above_scale_manufacturer && !upgraded_industrial {
        let why = if !manufacturing && !terms::is_industrial(industry) {
            format!(
                "not a manufacturing or industrial enterprise per the enterprise registry (industry {}; 制造业 is `manufacturing` or GB/T 4754 section C, 工业 sections B–D)",
                industry.unwrap_or("not stated")
            )
        } else if !st.above_scale_manufacturing && !st.upgraded_2022 {
            "not an above-designated-size manufacturing enterprise (规上制造业) per the statistics bureau".to_string()
        } else {
            format!(
                "not an above-designated-size manufacturing enterprise (规上制造业): registry industry {}",
                industry.unwrap_or("not stated")
            )
        };
        b.deny("q1_award", None, why, "M9a");
        return;
    }
    let q1 = st.q1_2023_output.unwrap_or(Money::ZERO);
    let y2022 = st.y2022_output.unwrap_or(Money::ZERO);
    let g = growth(st.q1_2023_output, st.q1_2022_output);
    let g_text = g
        .map(|g| {
            let shown = g.round_dp(6);
            let approx = if shown == g { "" } else { "≈" };
            format!("{approx}{}%", shown.normalize())
        })
        .unwrap_or_else(|| "undefined (no positive Q1 2022 base)".into());
    let above = above_scale_manufacturer && g.is_some_and(|g| g > p.growth_threshold);
    let tier = if above && q1 > p.tier_b_output {
        Some(("tier_b", p.tier_b_award, p.tier_b_output))
    } else if above && q1 > p.tier_a_output {
        Some(("tier_a", p.tier_a_award, p.tier_a_output))
    } else {
        None
    };
    if let (Some((item, award, floor)), Some(g)) = (tier, g) {
        b.pay(
            item,
            None,
            award,
            format!(
                "Q1 2023 output ¥{q1} > ¥{floor} and growth {g_text} > {}%",
                p.growth_threshold
            ),
            "M9a",
        );
        if y2022 >= p.bonus_y2022_output {
            let points = (g - p.growth_threshold).floor();
            let bonus = Money(p.bonus_per_point.0 * points);
            let reason = format!(
                "2022 output ¥{y2022} ≥ ¥{}: {points} whole percentage point(s) of growth beyond {}% × ¥{}",
                p.bonus_y2022_output, p.growth_threshold, p.bonus_per_point
            );
            if bonus > Money::ZERO {
                b.pay("growth_bonus", None, bonus, reason, "M9b");
            } else {
                b.deny("growth_bonus", None, format!("{reason} = ¥0"), "M9b");
            }
        }
    } else {
        let tier_reason = format!(
            "tiers not met: Q1 2023 output ¥{q1} (needs > ¥{}) and growth {g_text} (needs > {}%)",
            p.tier_a_output, p.growth_threshold
        );
        let by_growth = above_scale_manufacturer
            && y2022 >= p.fallback_y2022_output
            && g.is_some_and(|g| g >= p.fallback_growth);
        let by_upgrade = upgraded_industrial && q1 >= p.fallback_upgraded_q1_output;
        if by_growth {
            b.pay(
                "fallback_award",
                None,
                p.fallback_award,
                format!(
                    "{tier_reason}; 2022 output ¥{y2022} ≥ ¥{} and growth {g_text} ≥ {}%",
                    p.fallback_y2022_output, p.fallback_growth
                ),
                "M9c",
            );
        } else if by_upgrade {
            b.pay(
                "fallback_award",
                None,
                p.fallback_award,
                format!(
                    "{tier_reason}; an industrial enterprise upgraded to above-scale in 2022 (小升规工业企业) and Q1 2023 output ¥{q1} ≥ ¥{}",
                    p.fallback_upgraded_q1_output
                ),
                "M9c",
            );
        } else {
            b.deny(
                "q1_award",
                None,
                format!(
                    "{tier_reason}; fallback not met: needs 2022 output ≥ ¥{} with growth ≥ {}%, or a 2022 upgrade with Q1 output ≥ ¥{}",
                    p.fallback_y2022_output, p.fallback_growth, p.fallback_upgraded_q1_output
                ),
                "M9c",
            );
        }
    }
    b.offset_enterprise_prior();
    b.cap(award_key, p.cap, "the M9 total per enterprise");
}
