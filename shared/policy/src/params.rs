//! The policy parameters as data. Parsed strictly: an unknown or missing key is an error, so a
//! typo in a new version can never silently fall back to a default.

use chrono::NaiveDate;
use huiqi_events::Money;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A closed date window "A 至 B": both days included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Window {
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from <= d && d <= self.to
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub version: String,
    /// The first submission date (Asia/Shanghai) this version decides.
    pub effective_from: NaiveDate,
    /// The last such date, when the version ends before the next one begins (inclusive).
    #[serde(default)]
    pub effective_to: Option<NaiveDate>,
    /// Versions this one replaces for new decisions (an operator's version restating a
    /// built-in one with a figure the source leaves to a higher-level rule). The replaced
    /// version stays known, so decisions made under it still replay.
    #[serde(default)]
    pub supersedes: Vec<String>,
    pub title: String,
    pub district_code: String,
    pub city_prefix: String,
    pub province_prefix: String,
    pub policy_period: Window,
    pub stay_window: Window,
    pub insured_months: Vec<String>,
    pub east_china_provinces: Vec<String>,
    pub m1: M1,
    pub m4: M4,
    pub m5: M5,
    pub m9: M9,
    pub m10: M10,
    pub m18: M18,
    pub m19: M19,
    pub m21: M21,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M1 {
    pub min_retained: usize,
    pub per_person: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M4 {
    pub gigabytes: u32,
    pub city_code: String,
    pub carriers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M5 {
    pub points: u32,
    pub permit_date: NaiveDate,
    pub issuer_code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M9 {
    pub tier_a_output: Money,
    pub tier_a_award: Money,
    pub tier_b_output: Money,
    pub tier_b_award: Money,
    #[serde(with = "rust_decimal::serde::str")]
    pub growth_threshold: Decimal,
    pub bonus_y2022_output: Money,
    pub bonus_per_point: Money,
    pub cap: Money,
    pub fallback_y2022_output: Money,
    #[serde(with = "rust_decimal::serde::str")]
    pub fallback_growth: Decimal,
    pub fallback_upgraded_q1_output: Money,
    pub fallback_award: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M10 {
    pub exhibition_window: Window,
    pub asia_per_person: Money,
    pub other_per_person: Money,
    pub max_travellers: usize,
    #[serde(with = "rust_decimal::serde::str")]
    pub airfare_share: Decimal,
    pub asia: Vec<String>,
    pub rcep: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M18 {
    pub window: Window,
    #[serde(with = "rust_decimal::serde::str")]
    pub share: Decimal,
    pub cap: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M19 {
    pub window: Window,
    /// Unset (null) in the base version: the amount comes from a higher-level rule.
    pub a_per_person: Option<Money>,
    pub b_in_province: Money,
    pub b_east_china: Money,
    pub b_elsewhere: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M21 {
    pub min_new: usize,
    pub per_person: Money,
    pub cap: Money,
}
