//! Generators of valid synthetic data: ID numbers and USCCs with correct check characters,
//! M1 applications and the provider fixtures that make them qualify (or not). Used by
//! `huiqi loadgen`, the sample data and the tests.

use huiqi_events::payloads::{Applicant, ApplicantKind, Application, Employee};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// A GB 11643 ID number: 6-digit area, birth date derived from `n`, sequence, check char.
pub fn id_number(area: &str, n: u64) -> String {
    let base = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("date");
    let birth = base + chrono::Duration::days((n / 1000 % 12_000) as i64);
    let body = format!("{area}{}{:03}", birth.format("%Y%m%d"), n % 1000);
    let check = huiqi_intake::validate::id_check_char(body.as_bytes());
    format!("{body}{}", check as char)
}

/// A GB 32100 USCC for a Lucheng enterprise number `n` (area 330302), check chars computed.
pub fn uscc(n: u64) -> String {
    uscc_in("330302", n)
}

pub fn uscc_in(area: &str, n: u64) -> String {
    use huiqi_intake::validate::{org_code_check_char, uscc_check_char};
    let org: Vec<char> = format!("{:08}", n % 100_000_000).chars().collect();
    let ocheck = org_code_check_char(&org);
    let body: String = format!("91{area}{}{ocheck}", org.iter().collect::<String>());
    let chars: Vec<char> = body.chars().collect();
    let check = uscc_check_char(&chars).expect("digits and area are in the set");
    format!("{body}{check}")
}

pub fn phone(n: u64) -> String {
    format!("139{:08}", n % 100_000_000)
}

/// Non-local areas cycled through for generated persons (Sichuan, Henan, Anhui, Jiangxi).
const AREAS: [&str; 4] = ["510107", "410102", "340102", "360102"];

pub fn non_local_id(n: u64) -> String {
    id_number(AREAS[(n % 4) as usize], n)
}

/// Provider fixture lines, per check, written as `<check>.jsonl` (kept as JSON text: a
/// loadgen's million persons stay compact).
#[derive(Default)]
pub struct Fixtures {
    pub lines: BTreeMap<&'static str, Vec<String>>,
}

impl Fixtures {
    pub fn add(&mut self, check: &'static str, line: Value) {
        self.lines.entry(check).or_default().push(line.to_string());
    }

    /// Changes the fixture lines of `check` that `matches`, with `edit`.
    pub fn edit(
        &mut self,
        check: &'static str,
        matches: impl Fn(&Value) -> bool,
        edit: impl Fn(&mut Value),
    ) {
        for line in self.lines.get_mut(check).into_iter().flatten() {
            let mut v: Value = serde_json::from_str(line).expect("a fixture line is JSON");
            if matches(&v) {
                edit(&mut v);
                *line = v.to_string();
            }
        }
    }

    /// An eligible Lucheng manufacturing enterprise.
    pub fn lucheng_enterprise(&mut self, uscc: &str, name: &str) {
        self.add("enterprise", json!({
            "uscc": uscc, "found": true, "name": name, "registration_district": "330302",
            "tax_district": "330302", "independent_legal_person": true, "industry": "manufacturing",
            "foreign_trade": true, "kind": "enterprise"
        }));
    }

    /// A person who meets every M1 condition for `uscc`, with a Wenzhou phone and permit.
    pub fn qualifying_person(&mut self, uscc: &str, id: &str, phone: &str) {
        self.add("social_insurance", json!({
            "uscc": uscc, "id_number": id,
            "pension_months_with_applicant": ["2023-01", "2023-02"], "first_lucheng_enrolment": null
        }));
        self.add(
            "presence",
            json!({ "id_number": id, "stayed_whole_window": true, "arrived_on": null }),
        );
        self.add(
            "telecom",
            json!({ "phone": phone, "carrier": "mobile", "city_code": "0577" }),
        );
        self.add("residence_permit", json!({
            "id_number": id, "permit": { "issuer_code": "330302", "valid_from": "2022-06-01", "valid_to": "2024-05-31" }
        }));
    }

    /// A person insured with `uscc` who left Wenzhou during the window (does not qualify).
    pub fn travelling_person(&mut self, uscc: &str, id: &str) {
        self.add("social_insurance", json!({
            "uscc": uscc, "id_number": id,
            "pension_months_with_applicant": ["2023-01", "2023-02"], "first_lucheng_enrolment": null
        }));
        self.add(
            "presence",
            json!({ "id_number": id, "stayed_whole_window": false, "arrived_on": "2023-01-29" }),
        );
    }

    pub fn refuse_account(&mut self, account: &str, reason: &str) {
        self.add(
            "treasury_refusals",
            json!({ "bank_account": account, "reason": reason }),
        );
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(dir)?;
        for (check, lines) in &self.lines {
            let mut f =
                std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{check}.jsonl")))?);
            for l in lines {
                f.write_all(l.as_bytes())?;
                f.write_all(b"\n")?;
            }
            f.flush()?;
        }
        Ok(())
    }
}

/// An M1 application from enterprise `uscc` with `qualifying` qualifying persons and
/// `travelling` who left Wenzhou; person numbers start at `first_person`. Fixtures are added.
pub fn m1_application(
    fx: &mut Fixtures,
    application_id: &str,
    uscc: &str,
    first_person: u64,
    qualifying: usize,
    travelling: usize,
) -> Application {
    fx.lucheng_enterprise(uscc, &format!("测试制造企业{uscc}"));
    let mut employees = Vec::with_capacity(qualifying + travelling);
    for k in 0..(qualifying + travelling) as u64 {
        let n = first_person + k;
        let id = non_local_id(n);
        let ph = phone(n);
        if (k as usize) < qualifying {
            fx.qualifying_person(uscc, &id, &ph);
        } else {
            fx.travelling_person(uscc, &id);
        }
        employees.push(Employee {
            id_number: id,
            name: format!("员工{n}"),
            phone: Some(ph),
        });
    }
    Application {
        application_id: application_id.to_string(),
        measure: "M1".into(),
        submitted_at: chrono::DateTime::parse_from_rfc3339("2023-02-10T09:30:00+08:00")
            .expect("time"),
        applicant: Applicant {
            uscc: uscc.to_string(),
            name: format!("测试制造企业{uscc}"),
            kind: ApplicantKind::Enterprise,
            street: "五马街道".into(),
            bank_account: format!("62220{:014}", first_person),
            dispatch_agreement: None,
        },
        employees: Some(employees),
        returnees: None,
        exhibitions: None,
        trips: None,
        charters: None,
        placements: None,
    }
}

/// Writes the sample fixtures and applications used by `huiqi demo` (deploy/sample).
pub fn write_sample(dir: &Path) -> std::io::Result<()> {
    let mut fx = Fixtures::default();
    let apps_dir = dir.join("applications");
    std::fs::create_dir_all(&apps_dir)?;
    let write_app = |name: &str, v: &Value| -> std::io::Result<()> {
        std::fs::write(apps_dir.join(name), serde_json::to_string_pretty(v)? + "\n")
    };
    // 1. 35 qualifying + 3 who left Wenzhou: approved, 35 × 500.
    let a = m1_application(&mut fx, "P-2023-000101", &uscc(101), 1_000, 35, 3);
    write_app("01-m1-approved.json", &serde_json::to_value(&a)?)?;
    // 2. 29 qualifying: rejected, one short of 30.
    let a = m1_application(&mut fx, "P-2023-000102", &uscc(102), 2_000, 29, 0);
    write_app("02-m1-29-persons.json", &serde_json::to_value(&a)?)?;
    // 3. Exactly 30, but the treasury refuses the account: approved, payout failed.
    let a = m1_application(&mut fx, "P-2023-000103", &uscc(103), 3_000, 30, 0);
    fx.refuse_account(&a.applicant.bank_account, "account frozen by the bank");
    write_app("03-m1-account-refused.json", &serde_json::to_value(&a)?)?;
    // 4. Registered outside Lucheng: rejected as an ineligible applicant.
    let u = uscc_in("330304", 104);
    let a = m1_application(&mut fx, "P-2023-000104", &u, 4_000, 31, 0);
    fx.edit(
        "enterprise",
        |l| l["uscc"] == u.as_str(),
        |line| {
            line["registration_district"] = json!("330304");
            line["tax_district"] = json!("330304");
        },
    );
    write_app(
        "04-m1-registered-elsewhere.json",
        &serde_json::to_value(&a)?,
    )?;
    // 5. A wrong ID check digit: rejected at intake with the field named.
    let mut a = serde_json::to_value(m1_application(
        &mut fx,
        "P-2023-000105",
        &uscc(105),
        5_000,
        30,
        0,
    ))?;
    let id = a["employees"][3]["id_number"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let last = if id.ends_with('0') { "1" } else { "0" };
    a["employees"][3]["id_number"] = json!(format!("{}{last}", &id[..17]));
    write_app("05-intake-bad-id.json", &a)?;
    // 6. Submitted after the policy period.
    let mut a = serde_json::to_value(m1_application(
        &mut fx,
        "P-2023-000106",
        &uscc(106),
        6_000,
        30,
        0,
    ))?;
    a["submitted_at"] = json!("2023-07-01T00:00:01+08:00");
    write_app("06-intake-late.json", &a)?;
    // 8–12. One application for each other claimable measure.
    let base = |id: &str, measure: &str, u: &str, kind: &str| -> Value {
        json!({
            "application_id": id, "measure": measure, "submitted_at": "2023-04-10T10:00:00+08:00",
            "applicant": { "uscc": u, "name": format!("样例企业{id}"), "kind": kind, "street": "南郊街道",
                           "bank_account": format!("6228{:012}", u.len() * 1000 + id.len()), "dispatch_agreement": null }
        })
    };
    // M9: the POLICY.md worked example (45 M, +25 %, 2022 output 1.2 B) → 550,000.
    let u = uscc(108);
    fx.lucheng_enterprise(&u, "样例制造(M9)");
    fx.add("statistics", json!({ "uscc": u, "above_scale_manufacturing": true, "upgraded_2022": false,
        "q1_2023_output": "45000000.00", "q1_2022_output": "36000000.00", "y2022_output": "1200000000.00" }));
    let mut a = base("P-2023-000108", "M9", &u, "enterprise");
    a["applicant"]["bank_account"] = json!("6228000000001080");
    write_app("08-m9-q1-award.json", &a)?;
    // M10: an exhibition in Japan with 5 travellers (4 paid) and a business trip to Thailand.
    let u = uscc(109);
    fx.lucheng_enterprise(&u, "样例外贸(M10)");
    let travellers: Vec<String> = (0..5).map(|k| non_local_id(9_000 + k)).collect();
    for t in &travellers {
        fx.add("exit_entry", json!({ "id_number": t, "trips": [ { "exit_date": "2023-02-27", "entry_date": "2023-03-06" },
                                                                { "exit_date": "2023-04-01", "entry_date": "2023-04-09" } ] }));
    }
    let mut a = base("P-2023-000109", "M10", &u, "enterprise");
    a["applicant"]["bank_account"] = json!("6228000000001090");
    a["exhibitions"] = json!([{ "name": "FOODEX JAPAN 2023", "country": "JP", "start_date": "2023-03-01",
        "travellers": travellers.iter().map(|t| json!({ "id_number": t, "name": "参展人员" })).collect::<Vec<_>>() }]);
    a["trips"] = json!([{ "country": "TH", "purpose": "客户洽谈", "departure_date": "2023-04-02",
        "travellers": [ { "id_number": travellers[0], "airfare": "4200.00" } ] }]);
    write_app("09-m10-exhibition-and-trip.json", &a)?;
    // M18: a charter from Sichuan on 2023-01-25, the applicant's share 36,000 → 18,000.
    let u = uscc(110);
    fx.lucheng_enterprise(&u, "样例制造(M18)");
    let mut a = base("P-2023-000110", "M18", &u, "enterprise");
    a["applicant"]["bank_account"] = json!("6228000000001100");
    a["charters"] = json!([{ "contract_no": "BUS-2023-0125-01", "departure_date": "2023-01-25", "origin_province": "51",
        "applicant_cost": "36000.00", "passengers": [non_local_id(9_100), non_local_id(9_101)] }]);
    write_app("10-m18-charter.json", &a)?;
    // M19: returnees from Zhejiang (50), Jiangsu (150), Sichuan (200), and one lifted out of
    // poverty (M19(a) amount not set in the base policy version).
    let u = uscc(111);
    fx.lucheng_enterprise(&u, "样例制造(M19)");
    let returnees = [
        id_number("330102", 9_200),
        id_number("320102", 9_201),
        id_number("510107", 9_202),
        id_number("522601", 9_203),
    ];
    for r in &returnees {
        fx.add("social_insurance", json!({ "uscc": u, "id_number": r, "pension_months_with_applicant": ["2023-01", "2023-02"], "first_lucheng_enrolment": null }));
        fx.add(
            "presence",
            json!({ "id_number": r, "stayed_whole_window": false, "arrived_on": "2023-01-28" }),
        );
    }
    let mut a = base("P-2023-000111", "M19", &u, "enterprise");
    a["submitted_at"] = json!("2023-02-20T10:00:00+08:00");
    a["applicant"]["bank_account"] = json!("6228000000001110");
    a["returnees"] = json!(returnees.iter().enumerate().map(|(k, r)| json!({ "id_number": r, "name": "返岗员工", "return_date": "2023-01-28", "poverty_alleviated": k == 3 })).collect::<Vec<_>>());
    write_app("11-m19-return-transport.json", &a)?;
    // M21: an HR agency that placed 6 new employees (first Lucheng enrolment in the period).
    let u = uscc(112);
    let employer = uscc(113);
    fx.add("enterprise", json!({ "uscc": u, "found": true, "name": "样例人力资源服务", "registration_district": "330302",
        "tax_district": "330302", "independent_legal_person": true, "industry": "L7262", "foreign_trade": false, "kind": "hr_agency" }));
    let placed: Vec<String> = (0..6).map(|k| non_local_id(9_300 + k)).collect();
    for p in &placed {
        fx.add(
            "social_insurance",
            json!({ "uscc": u, "id_number": p, "pension_months_with_applicant": [],
            "first_lucheng_enrolment": { "date": "2023-02-15", "employer_uscc": employer } }),
        );
    }
    let mut a = base("P-2023-000112", "M21", &u, "hr_agency");
    a["applicant"]["bank_account"] = json!("6228000000001120");
    a["placements"] = json!(placed
        .iter()
        .map(|p| json!({ "id_number": p, "name": "新员工", "employer_uscc": employer }))
        .collect::<Vec<_>>());
    write_app("12-m21-recruitment.json", &a)?;
    // 7. Not JSON at all, as a broken portal might send.
    std::fs::write(
        apps_dir.join("07-malformed.json"),
        "{\"application_id\": \"P-2023-000107\", \"measure\": \"M1\",\n",
    )?;
    fx.write(&dir.join("fixtures"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identifiers_pass_the_intake_validators() {
        for n in [0u64, 1, 999, 1000, 123_456, 399_999] {
            let id = non_local_id(n);
            assert!(huiqi_intake::validate::check_id_number(&id).is_ok(), "{id}");
            let u = uscc(n);
            assert!(
                huiqi_intake::validate::check_uscc(&u).is_ok(),
                "{u}: {:?}",
                huiqi_intake::validate::check_uscc(&u)
            );
        }
        assert_ne!(non_local_id(1), non_local_id(1001));
    }
}
