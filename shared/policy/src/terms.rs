//! Terms shared by several measures, and the supplementary rules (附则).

use crate::params::Params;
use chrono::{DateTime, FixedOffset, NaiveDate};
use huiqi_events::payloads::{ApplicantKind, Application, EnterpriseReply, Facts};
use huiqi_events::Money;

/// The calendar date of a timestamp in Asia/Shanghai (UTC+08:00), whatever offset it came with.
pub fn shanghai_date(t: &DateTime<FixedOffset>) -> NaiveDate {
    let shanghai = FixedOffset::east_opt(8 * 3600).expect("valid offset");
    t.with_timezone(&shanghai).date_naive()
}

/// "外地以身份证前 4 位为准": non-local when the first four ID digits are not Wenzhou's (3303).
pub fn is_non_local(id_number: &str, p: &Params) -> bool {
    !id_number.starts_with(&p.city_prefix)
}

/// The province code (first two digits) of an ID number.
pub fn province(id_number: &str) -> &str {
    id_number.get(..2).unwrap_or("")
}

/// Whether a registry industry is in one of the GB/T 4754 `sections`: the section letter
/// alone (`C`) or followed by its division, group or class digits (`C34`, `C3411`).
fn in_sections(industry: Option<&str>, sections: &[char]) -> bool {
    let Some(code) = industry.map(str::trim) else {
        return false;
    };
    let mut chars = code.chars();
    match chars.next() {
        Some(c) if sections.contains(&c) => {
            let digits = chars.as_str();
            digits.len() <= 4 && digits.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// Manufacturing (制造业, M18 and M9; ruling 7): the registry category `manufacturing` or any
/// GB/T 4754 code in section C (`C`, `C34`, `C3411`, …).
pub fn is_manufacturing(industry: Option<&str>) -> bool {
    industry.map(str::trim) == Some("manufacturing") || in_sections(industry, &['C'])
}

/// Industrial (工业, the M9 fallback for enterprises upgraded to above designated size in 2022;
/// ruling 7): mining (B), manufacturing (C) or utilities (D).
pub fn is_industrial(industry: Option<&str>) -> bool {
    is_manufacturing(industry) || in_sections(industry, &['B', 'C', 'D'])
}

/// 附则 3: "本政策自印发之日起施行,有效期至2023年6月30日" — submitted 2023-01-05 00:00 to
/// 2023-06-30 24:00 Asia/Shanghai, both days included.
pub fn in_policy_period(app: &Application, p: &Params) -> bool {
    p.policy_period.contains(shanghai_date(&app.submitted_at))
}

/// 附则 1 (适用对象): "申报时注册地和财政收入在鹿城区范围内具有独立法人资格的企业 … 民办非企业、
/// 社会组织等视同企业享受政策。劳务派遣企业申领补贴需与用工企业达成协议。"
///
/// Read as: the registry check finds the applicant, registered in Lucheng (330302), paying its
/// taxes in Lucheng (330302), an independent legal person. Every applicant kind counts as an
/// enterprise; a labour-dispatch company must carry its agreement with the user enterprise.
/// Returns the reason when not eligible.
pub fn eligible_applicant(app: &Application, facts: &Facts, p: &Params) -> Result<(), String> {
    let Some(ent) = facts.enterprise.as_ref() else {
        return Err("no enterprise-registry fact: the `enterprise` check has not answered".into());
    };
    eligible_enterprise(app, ent, p)
}

fn eligible_enterprise(app: &Application, ent: &EnterpriseReply, p: &Params) -> Result<(), String> {
    if !ent.found {
        return Err(format!(
            "enterprise {} is not in the enterprise registry",
            app.applicant.uscc
        ));
    }
    let district = &p.district_code;
    match ent.registration_district.as_deref() {
        Some(d) if d == district => {}
        other => {
            return Err(format!(
                "registered in district {} — only enterprises registered in Lucheng ({district}) are eligible (附则1)",
                other.unwrap_or("unknown")
            ))
        }
    }
    match ent.tax_district.as_deref() {
        Some(d) if d == district => {}
        other => {
            return Err(format!(
                "fiscal revenue (taxes) paid in district {} — must be paid in Lucheng ({district}) (附则1)",
                other.unwrap_or("unknown")
            ))
        }
    }
    if ent.independent_legal_person != Some(true) {
        return Err(
            "not an independent legal person (具有独立法人资格) per the enterprise registry (附则1)"
                .into(),
        );
    }
    if app.applicant.kind == ApplicantKind::LaborDispatch
        && app
            .applicant
            .dispatch_agreement
            .as_deref()
            .is_none_or(|a| a.trim().is_empty())
    {
        return Err(
            "labour-dispatch company without an agreement with the user enterprise (劳务派遣企业申领补贴需与用工企业达成协议, 附则1): set applicant.dispatch_agreement"
                .into(),
        );
    }
    Ok(())
}

/// 附则 2 "不重复享受、就高原则": what other policies already paid for the same item.
/// `person` Some: payments for that person; None: enterprise-level payments (person null).
/// Returns the total and a description naming each payment.
pub fn prior_paid(facts: &Facts, person: Option<&str>) -> (Money, Vec<String>) {
    let mut total = Money::ZERO;
    let mut named = Vec::new();
    for pay in facts
        .prior_benefits
        .iter()
        .flat_map(|r| r.payments.iter())
        .filter(|pay| pay.person.as_deref() == person)
    {
        total = total + pay.amount;
        named.push(format!("{} ¥{} under {}", pay.item, pay.amount, pay.policy));
    }
    (total, named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manufacturing_and_industrial_by_registry_code() {
        for (code, m, i) in [
            ("manufacturing", true, true),
            ("C", true, true),
            ("C34", true, true),
            ("C3411", true, true),
            ("C34111", false, false),
            ("CX", false, false),
            ("B0610", false, true),
            ("D4411", false, true),
            ("F5191", false, false),
            ("retail", false, false),
        ] {
            assert_eq!(is_manufacturing(Some(code)), m, "{code}");
            assert_eq!(is_industrial(Some(code)), i, "{code}");
        }
        assert!(!is_manufacturing(None));
    }

    #[test]
    fn shanghai_dates_cross_midnight() {
        let t = DateTime::parse_from_rfc3339("2023-06-30T16:30:00Z").unwrap();
        assert_eq!(
            shanghai_date(&t),
            NaiveDate::from_ymd_opt(2023, 7, 1).unwrap()
        );
        let t = DateTime::parse_from_rfc3339("2023-06-30T23:59:59+08:00").unwrap();
        assert_eq!(
            shanghai_date(&t),
            NaiveDate::from_ymd_opt(2023, 6, 30).unwrap()
        );
    }
}
