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

/// The flat wire shape of [`Count`] and [`Relied`] (a key's fields beside the rest): what they
/// are read as.
#[derive(Deserialize)]
struct FlatWire {
    measure: String,
    kind: Kind,
    #[serde(default)]
    uscc: String,
    #[serde(default)]
    item: String,
    #[serde(default)]
    person: String,
    amount: Money,
    #[serde(default)]
    claim_id: Option<String>,
    #[serde(default)]
    effect: Option<String>,
}

impl FlatWire {
    fn key(&mut self) -> Key {
        Key {
            measure: std::mem::take(&mut self.measure),
            kind: self.kind,
            uscc: std::mem::take(&mut self.uscc),
            item: std::mem::take(&mut self.item),
            person: std::mem::take(&mut self.person),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut w = FlatWire::deserialize(d)?;
        Ok(Count {
            key: w.key(),
            amount: w.amount,
        })
    }
}

impl<'de> Deserialize<'de> for Relied {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut w = FlatWire::deserialize(d)?;
        Ok(Relied {
            key: w.key(),
            claim_id: w
                .claim_id
                .ok_or_else(|| D::Error::missing_field("claim_id"))?,
            amount: w.amount,
            effect: w.effect.ok_or_else(|| D::Error::missing_field("effect"))?,
        })
    }
}

/// One thing a decision adds to the history.
// Its key's fields sit beside `amount` on the wire; it is read through a flat twin
// (`FlatWire`) because serde's derive for a flattened field buffers the whole object first
// (decisions carry one count per person). Not in the doc comment: that is the schema's text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct Count {
    #[serde(flatten)]
    pub key: Key,
    pub amount: Money,
}

/// An earlier count a decision relied on: which claim counted it, how much, and what it did
/// to this decision.
// Read through the flat twin (`FlatWire`), as `Count`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct Relied {
    #[serde(flatten)]
    pub key: Key,
    pub claim_id: String,
    pub amount: Money,
    pub effect: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_relied_keep_their_flat_wire_shape() {
        let count = Count {
            key: Key::new("M1", Kind::Person).uscc("9133").person("330302"),
            amount: "500".parse().unwrap(),
        };
        let v = serde_json::to_value(&count).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"measure":"M1","kind":"person","uscc":"9133","person":"330302","amount":"500.00"})
        );
        assert_eq!(serde_json::from_value::<Count>(v).unwrap(), count);
        let relied = Relied {
            key: Key::new("M2", Kind::Award).uscc("9133"),
            claim_id: "C-1".into(),
            amount: "20".parse().unwrap(),
            effect: "cap".into(),
        };
        let text = serde_json::to_string(&relied).unwrap();
        assert_eq!(serde_json::from_str::<Relied>(&text).unwrap(), relied);
        // Fields a later version adds are ignored; a missing one is named.
        let extra = r#"{"measure":"M1","kind":"person","person":"1","amount":"1.00","note":"x"}"#;
        assert_eq!(
            serde_json::from_str::<Count>(extra).unwrap().key.person,
            "1"
        );
        let missing = serde_json::from_str::<Relied>(
            r#"{"measure":"M1","kind":"award","amount":"1.00","effect":"x"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("missing field `claim_id`"), "{missing}");
    }
}
