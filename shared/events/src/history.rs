//! What a decision counts against later claims, and what earlier counts it relied on.
//!
//! Why typed and carried in the decision: caps across claims, "a person once", cumulative
//! thresholds and prior payments offset once (POLICY.md rulings 3–6) all depend on what earlier
//! decisions counted. Each decision lists its [`Count`]s, so every fold of the award log — live,
//! at start-up, in a replay, after a restore — adds exactly the same typed items, and nothing
//! parses a line's item text. Each decision also lists the earlier counts it relied on
//! ([`Relied`]), so an auditor sees why a line was reduced or refused.

use crate::money::Money;
use serde::{Deserialize, Serialize};

/// What a count is about. The measure gives each kind its meaning; the kinds are few and
/// generic so that a new measure rarely needs a new one.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An amount awarded to the applicant under the measure (a cap's use, a one-off award).
    Award,
    /// A person paid under the measure.
    Person,
    /// A person who qualified but was not paid (yet): a cumulative threshold not reached.
    Qualified,
    /// An item the applicant was paid for (a charter contract).
    Item,
    /// A person paid for an item (an exhibition's or a trip's traveller).
    ItemPerson,
    /// A person covered by a paid item (a charter's passenger).
    Covered,
    /// Enterprise-level payments of other policies already offset (附则2, ruling 3).
    PriorOffset,
    /// A non-cash grant (a data package to a number, points to a person).
    Grant,
}

/// The key of a count: the measure and kind, and the applicant, item and person it is about
/// (empty where the count is not per applicant, item or person).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Key {
    pub measure: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uscc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub item: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub person: String,
}

impl Key {
    pub fn new(measure: &str, kind: Kind) -> Key {
        Key {
            measure: measure.to_string(),
            kind,
            uscc: String::new(),
            item: String::new(),
            person: String::new(),
        }
    }
    pub fn uscc(mut self, uscc: &str) -> Key {
        self.uscc = uscc.to_string();
        self
    }
    pub fn item(mut self, item: &str) -> Key {
        self.item = item.to_string();
        self
    }
    pub fn person(mut self, person: &str) -> Key {
        self.person = person.to_string();
        self
    }
}

/// One thing a decision adds to the history.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Count {
    #[serde(flatten)]
    pub key: Key,
    pub amount: Money,
}

/// An earlier count a decision relied on: which claim counted it, how much, and what it did
/// to this decision.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Relied {
    #[serde(flatten)]
    pub key: Key,
    pub claim_id: String,
    pub amount: Money,
    pub effect: String,
}
