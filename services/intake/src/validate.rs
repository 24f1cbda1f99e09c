//! Field-level validation of an application: national check digits, the measure's lists, the
//! policy period, roster size, and bounded, printable text. Every problem names its field and
//! rule; messages never carry a full ID number, phone or account (they are masked).
//!
//! Why text is bounded: every event derived from an accepted application (the claim, the
//! verified claim, the decision) must fit one NATS message, and no value may carry a control
//! character into a log line or a bureau's screen.

use huiqi_events::mask;
use huiqi_events::payloads::{Application, FieldError};
use huiqi_policy::PolicySet;

/// Most errors listed for one application; the rest are summarised in one final entry.
pub const MAX_ERRORS: usize = 200;

/// The GB 11643 (ISO 7064 MOD 11-2) check character of an ID number's 17 leading digits.
pub fn id_check_char(body: &[u8]) -> u8 {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const C: &[u8; 11] = b"10X98765432";
    let sum: u32 = body
        .iter()
        .zip(W)
        .map(|(d, w)| u32::from(d.wrapping_sub(b'0')) * w)
        .sum();
    C[(sum % 11) as usize]
}

/// The GB 32100 character set, in value order.
const USCC_SET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// The GB 11714 check character of an organisation code's 8 body characters
/// (weights 3 7 9 10 5 8 4 2; check = 11 − sum mod 11, 10 → X, 11 → 0).
pub fn org_code_check_char(body: &[char]) -> char {
    const OW: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let value = |c: char| -> u32 {
        if c.is_ascii_digit() {
            c as u32 - '0' as u32
        } else {
            c as u32 - 'A' as u32 + 10
        }
    };
    let sum: u32 = body.iter().zip(OW).map(|(c, w)| value(*c) * w).sum();
    match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        n => char::from_digit(n, 10).expect("digit"),
    }
}

/// The GB 32100 MOD 31 check character of a USCC's 17 leading characters; None when one of
/// them is outside the character set.
pub fn uscc_check_char(body: &[char]) -> Option<char> {
    const W: [u32; 17] = [
        1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
    ];
    let mut sum = 0u32;
    for (c, w) in body.iter().zip(W) {
        sum += USCC_SET.find(*c)? as u32 * w;
    }
    USCC_SET.chars().nth(((31 - sum % 31) % 31) as usize)
}

/// GB 11643-1999 resident ID: 17 digits + ISO 7064 MOD 11-2 check character (0-9 or X),
/// with a real birth date in positions 7–14.
pub fn check_id_number(id: &str) -> Result<(), (&'static str, String)> {
    let b = id.as_bytes();
    if b.len() != 18 {
        return Err((
            "id_format",
            format!("must be 18 characters, got {}", b.len()),
        ));
    }
    if !b[..17].iter().all(u8::is_ascii_digit) {
        return Err(("id_format", "the first 17 characters must be digits".into()));
    }
    let birth = &id[6..14];
    if chrono::NaiveDate::parse_from_str(birth, "%Y%m%d").is_err() {
        return Err((
            "id_birth_date",
            "positions 7–14 are not a valid birth date".into(),
        ));
    }
    let expected = id_check_char(&b[..17]);
    let got = b[17].to_ascii_uppercase();
    if got != expected {
        return Err((
            "id_checksum",
            format!("check character does not match (ID {})", mask(id)),
        ));
    }
    Ok(())
}

/// GB 32100-2015 unified social credit code: 18 characters from the 31-character set, a
/// MOD 31 check character, and positions 9–17 an organisation code whose 9th character is its
/// GB 11714 MOD 11 check character.
pub fn check_uscc(code: &str) -> Result<(), (&'static str, String)> {
    let chars: Vec<char> = code.chars().collect();
    if chars.len() != 18 {
        return Err((
            "uscc_format",
            format!("must be 18 characters, got {}", chars.len()),
        ));
    }
    for (i, c) in chars.iter().enumerate() {
        match USCC_SET.find(*c) {
            Some(_) => {}
            None => {
                return Err((
                    "uscc_format",
                    format!(
                        "character {} ({c:?}) is not in the GB 32100 character set",
                        i + 1
                    ),
                ))
            }
        }
    }
    if !chars[2..8].iter().all(char::is_ascii_digit) {
        return Err((
            "uscc_format",
            "positions 3–8 must be the six-digit area code".into(),
        ));
    }
    let ocheck = org_code_check_char(&chars[8..16]);
    if chars[16] != ocheck {
        return Err((
            "uscc_org_checksum",
            "the embedded organisation code's check character (position 17) does not match (GB 11714)".into(),
        ));
    }
    let check = uscc_check_char(&chars[..17]).expect("characters checked above");
    if chars[17] != check {
        return Err((
            "uscc_checksum",
            "the check character (position 18) does not match (GB 32100)".into(),
        ));
    }
    Ok(())
}

/// Longest free-text values, in characters.
pub const ORG_NAME_MAX: usize = 200;
pub const PERSON_NAME_MAX: usize = 64;
pub const STREET_MAX: usize = 100;
pub const REFERENCE_MAX: usize = 128;
pub const EXHIBITION_NAME_MAX: usize = 200;
pub const PURPOSE_MAX: usize = 500;
pub const CONTRACT_NO_MAX: usize = 64;

/// An application id: 1–128 printable ASCII characters without spaces. It names the claim,
/// the subject of the portal's reply and log lines, so nothing else is allowed in it.
pub fn check_application_id(id: &str) -> Result<(), (&'static str, String)> {
    if id.is_empty() || id.len() > 128 {
        return Err((
            "application_id_format",
            format!("must be 1–128 characters, got {}", id.chars().count()),
        ));
    }
    if let Some((i, c)) = id
        .char_indices()
        .find(|(_, c)| !('\x21'..='\x7e').contains(c))
    {
        return Err((
            "application_id_format",
            format!(
                "only printable ASCII without spaces is allowed; character {} is {:?}",
                id[..i].chars().count() + 1,
                huiqi_events::escape_control(&c.to_string())
            ),
        ));
    }
    Ok(())
}

/// Free text: not longer than `max` characters, no control characters, and not blank when
/// `required`.
pub fn check_text(value: &str, max: usize, required: bool) -> Result<(), (&'static str, String)> {
    if required && value.trim().is_empty() {
        return Err(("required", "must not be empty".into()));
    }
    let n = value.chars().count();
    if n > max {
        return Err(("too_long", format!("{n} characters; at most {max}")));
    }
    if let Some(i) = value.chars().position(char::is_control) {
        return Err((
            "control_character",
            format!(
                "character {} is a control character (newline, tab, escape, …)",
                i + 1
            ),
        ));
    }
    Ok(())
}

/// Mainland mobile numbers: 11 digits starting with 1.
pub fn check_phone(phone: &str) -> Result<(), (&'static str, String)> {
    if phone.len() == 11 && phone.starts_with('1') && phone.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err((
            "phone_format",
            format!("not an 11-digit mobile number ({})", mask(phone)),
        ))
    }
}

struct Errors(Vec<FieldError>, usize);

impl Errors {
    fn push(&mut self, field: String, code: &str, message: String) {
        self.1 += 1;
        if self.0.len() < MAX_ERRORS {
            self.0.push(FieldError::new(field, code, message));
        }
    }
    fn check(&mut self, field: String, r: Result<(), (&'static str, String)>) {
        if let Err((code, msg)) = r {
            self.push(field, code, msg);
        }
    }
}

/// All problems with a well-formed application; empty when it may open a claim.
pub fn validate(app: &Application, policies: &PolicySet, max_persons: usize) -> Vec<FieldError> {
    let mut e = Errors(Vec::new(), 0);
    e.check(
        "application_id".into(),
        check_application_id(&app.application_id),
    );
    // The lists the measure reads (its `Measure::lists`), present, non-empty, and no other.
    use huiqi_policy::measures::{List, MEASURES};
    match huiqi_policy::measures::measure(&app.measure) {
        None => e.push(
            "measure".into(),
            "unknown_measure",
            format!(
                "`{}` is not a claimable measure (one of {})",
                huiqi_events::escape_control(&app.measure),
                MEASURES
                    .iter()
                    .map(|m| m.code())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(measure) => {
            let m = measure.code();
            let lists = measure.lists();
            for r in lists.all_of {
                match r.len(app) {
                    None => e.push(
                        r.name().into(),
                        "required",
                        format!("{m} needs `{}`", r.name()),
                    ),
                    Some(0) => e.push(
                        r.name().into(),
                        "empty",
                        format!("{m} needs at least one entry in `{}`", r.name()),
                    ),
                    Some(_) => {}
                }
            }
            if !lists.any_of.is_empty() && !lists.any_of.iter().any(|l| l.len(app).unwrap_or(0) > 0)
            {
                let names: Vec<String> = lists
                    .any_of
                    .iter()
                    .map(|l| format!("`{}`", l.name()))
                    .collect();
                e.push(
                    lists.any_of[0].name().into(),
                    "required",
                    format!("{m} needs {}", names.join(" or ")),
                );
            }
            for l in List::ALL {
                if l.len(app).is_some() && !lists.allowed.contains(l) {
                    e.push(
                        l.name().into(),
                        "not_used_by_measure",
                        format!("{m} does not use `{}`; leave it out", l.name()),
                    );
                }
            }
        }
    }
    let date = huiqi_policy::terms::shanghai_date(&app.submitted_at);
    let in_period = policies
        .in_force(date)
        .map(|p| p.params.policy_period.contains(date))
        .unwrap_or(false);
    if !in_period {
        let w = policies.first().params.policy_period;
        e.push(
            "submitted_at".into(),
            "outside_policy_period",
            format!("submitted on {date} (Asia/Shanghai); the policy takes applications {} to {} (附则3)", w.from, w.to),
        );
    }
    let a = &app.applicant;
    e.check("applicant.uscc".into(), check_uscc(&a.uscc));
    e.check(
        "applicant.name".into(),
        check_text(&a.name, ORG_NAME_MAX, true),
    );
    e.check(
        "applicant.street".into(),
        check_text(&a.street, STREET_MAX, true)
            .map_err(|(c, m)| (c, format!("the street/town office (属地街镇): {m}"))),
    );
    if let Some(agreement) = &a.dispatch_agreement {
        e.check(
            "applicant.dispatch_agreement".into(),
            check_text(agreement, REFERENCE_MAX, true),
        );
    }
    let acct_ok = (8..=34).contains(&a.bank_account.len())
        && a.bank_account.bytes().all(|b| b.is_ascii_digit());
    if !acct_ok {
        e.push(
            "applicant.bank_account".into(),
            "bank_account_format",
            format!("must be 8–34 digits ({})", mask(&a.bank_account)),
        );
    }
    let persons = app.person_ids().len();
    if persons > max_persons {
        let list = huiqi_policy::measures::List::ALL
            .iter()
            .find(|l| l.len(app).is_some())
            .map(|l| l.name())
            .unwrap_or("employees");
        e.push(
            list.into(),
            "too_many_persons",
            format!("{persons} persons in one application; at most {max_persons} — split it into several applications"),
        );
        // Do not spend time validating every entry of an oversize roster.
        return finish(e);
    }
    for (i, x) in app.employees.iter().flatten().enumerate() {
        e.check(
            format!("employees[{i}].id_number"),
            check_id_number(&x.id_number),
        );
        e.check(
            format!("employees[{i}].name"),
            check_text(&x.name, PERSON_NAME_MAX, true),
        );
        if let Some(p) = &x.phone {
            e.check(format!("employees[{i}].phone"), check_phone(p));
        }
    }
    for (i, x) in app.returnees.iter().flatten().enumerate() {
        e.check(
            format!("returnees[{i}].id_number"),
            check_id_number(&x.id_number),
        );
        e.check(
            format!("returnees[{i}].name"),
            check_text(&x.name, PERSON_NAME_MAX, true),
        );
    }
    for (i, x) in app.exhibitions.iter().flatten().enumerate() {
        e.check(
            format!("exhibitions[{i}].name"),
            check_text(&x.name, EXHIBITION_NAME_MAX, true),
        );
        if x.country.len() != 2 || !x.country.bytes().all(|b| b.is_ascii_uppercase()) {
            e.push(
                format!("exhibitions[{i}].country"),
                "country_code",
                "must be an ISO 3166-1 alpha-2 code, e.g. JP".into(),
            );
        }
        if x.travellers.is_empty() {
            e.push(
                format!("exhibitions[{i}].travellers"),
                "empty",
                "at least one traveller".into(),
            );
        }
        for (j, t) in x.travellers.iter().enumerate() {
            e.check(
                format!("exhibitions[{i}].travellers[{j}].id_number"),
                check_id_number(&t.id_number),
            );
            e.check(
                format!("exhibitions[{i}].travellers[{j}].name"),
                check_text(&t.name, PERSON_NAME_MAX, true),
            );
        }
    }
    for (i, x) in app.trips.iter().flatten().enumerate() {
        e.check(
            format!("trips[{i}].purpose"),
            check_text(&x.purpose, PURPOSE_MAX, true),
        );
        if x.country.len() != 2 || !x.country.bytes().all(|b| b.is_ascii_uppercase()) {
            e.push(
                format!("trips[{i}].country"),
                "country_code",
                "must be an ISO 3166-1 alpha-2 code, e.g. TH".into(),
            );
        }
        for (j, t) in x.travellers.iter().enumerate() {
            e.check(
                format!("trips[{i}].travellers[{j}].id_number"),
                check_id_number(&t.id_number),
            );
        }
    }
    for (i, x) in app.charters.iter().flatten().enumerate() {
        e.check(
            format!("charters[{i}].contract_no"),
            check_text(&x.contract_no, CONTRACT_NO_MAX, true),
        );
        if x.origin_province.len() != 2 || !x.origin_province.bytes().all(|b| b.is_ascii_digit()) {
            e.push(
                format!("charters[{i}].origin_province"),
                "province_code",
                "must be a two-digit province code, e.g. 51".into(),
            );
        }
        for (j, p) in x.passengers.iter().enumerate() {
            e.check(format!("charters[{i}].passengers[{j}]"), check_id_number(p));
        }
    }
    for (i, x) in app.placements.iter().flatten().enumerate() {
        e.check(
            format!("placements[{i}].id_number"),
            check_id_number(&x.id_number),
        );
        e.check(
            format!("placements[{i}].name"),
            check_text(&x.name, PERSON_NAME_MAX, true),
        );
        e.check(
            format!("placements[{i}].employer_uscc"),
            check_uscc(&x.employer_uscc),
        );
    }
    finish(e)
}

fn finish(e: Errors) -> Vec<FieldError> {
    let Errors(mut list, total) = e;
    if total > list.len() {
        let more = total - list.len();
        list.push(FieldError::new(
            "$",
            "more_errors",
            format!("{more} more errors not listed"),
        ));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_numbers() {
        // 11010519491231002X is the GB 11643 standard's own example.
        assert!(check_id_number("11010519491231002X").is_ok());
        assert!(check_id_number("11010519491231002x").is_ok());
        assert_eq!(
            check_id_number("110105194912310021").unwrap_err().0,
            "id_checksum"
        );
        assert_eq!(
            check_id_number("1101051949123100").unwrap_err().0,
            "id_format"
        );
        assert_eq!(
            check_id_number("110105194913310021").unwrap_err().0,
            "id_birth_date"
        );
        // The message never carries the full number.
        assert!(!check_id_number("110105194912310021")
            .unwrap_err()
            .1
            .contains("110105194912310021"));
    }

    #[test]
    fn usccs() {
        // A published code: 91350100M000100Y43 (GB 32100 example family).
        assert!(
            check_uscc("91350100M000100Y43").is_ok(),
            "{:?}",
            check_uscc("91350100M000100Y43")
        );
        assert_eq!(
            check_uscc("91350100M000100Y44").unwrap_err().0,
            "uscc_checksum"
        );
        assert_eq!(
            check_uscc("91350100M000100Z43").unwrap_err().0,
            "uscc_format"
        );
        assert_eq!(
            check_uscc("91330302MA2XXXXXXX").unwrap_err().0,
            "uscc_org_checksum"
        );
    }

    #[test]
    fn application_ids_and_text_are_bounded_and_printable() {
        assert!(check_application_id("P-2023-000123").is_ok());
        assert_eq!(
            check_application_id("P-1\n2026 INFO forged").unwrap_err().0,
            "application_id_format"
        );
        assert_eq!(
            check_application_id("P 1").unwrap_err().0,
            "application_id_format"
        );
        assert_eq!(
            check_application_id(&"x".repeat(129)).unwrap_err().0,
            "application_id_format"
        );
        assert!(check_text("温州市鹿城区某某有限公司", ORG_NAME_MAX, true).is_ok());
        assert_eq!(
            check_text(&"名".repeat(65), PERSON_NAME_MAX, true)
                .unwrap_err()
                .0,
            "too_long"
        );
        assert_eq!(
            check_text("a\u{1b}[2J", 10, true).unwrap_err().0,
            "control_character"
        );
        assert_eq!(check_text("  ", 10, true).unwrap_err().0, "required");
    }

    #[test]
    fn phones() {
        assert!(check_phone("13912345678").is_ok());
        assert_eq!(check_phone("2391234567").unwrap_err().0, "phone_format");
    }
}
