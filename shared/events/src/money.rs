//! CNY amounts: exact decimals that serialize as strings with two decimals ("500.00").

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// An amount of money in yuan. Arithmetic is exact; [`Money::round`] rounds half-up to the fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(pub Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    pub fn yuan(v: i64) -> Money {
        Money(Decimal::from(v))
    }

    /// Rounds half away from zero to 0.01 (the "half-up" of POLICY.md for non-negative amounts).
    pub fn round(self) -> Money {
        let mut d = self
            .0
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        d.rescale(2);
        Money(d)
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

/// On the wire a money amount is a string with two decimals (CONTRACT.md).
impl schemars::JsonSchema for Money {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^-?[0-9]+\\.[0-9]{2}$",
            "description": "CNY amount, a string with exactly two decimals, e.g. \"500.00\""
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = self
            .0
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        d.rescale(2);
        write!(f, "{d}")
    }
}

/// Why a money string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("not a decimal number: {0:?}")]
    NotDecimal(String),
    #[error("more than two decimals: {0:?}")]
    TooPrecise(String),
    #[error("negative amount: {0:?}")]
    Negative(String),
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = Decimal::from_str(s.trim()).map_err(|_| MoneyError::NotDecimal(s.to_string()))?;
        if d.scale() > 2 {
            return Err(MoneyError::TooPrecise(s.to_string()));
        }
        if d.is_sign_negative() && !d.is_zero() {
            return Err(MoneyError::Negative(s.to_string()));
        }
        Ok(Money(d))
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Money::from_str(&s).map_err(serde::de::Error::custom)
    }
}

impl std::ops::Add for Money {
    type Output = Money;
    fn add(self, o: Money) -> Money {
        Money(self.0 + o.0)
    }
}

impl std::ops::Sub for Money {
    type Output = Money;
    fn sub(self, o: Money) -> Money {
        Money(self.0 - o.0)
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_decimals_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&Money::yuan(500)).unwrap(),
            "\"500.00\""
        );
        let m: Money = serde_json::from_str("\"4200.5\"").unwrap();
        assert_eq!(m.to_string(), "4200.50");
    }

    #[test]
    fn rounds_half_up_once() {
        let m = Money(Decimal::from_str("1260.005").unwrap());
        assert_eq!(m.round().to_string(), "1260.01");
        let m = Money(Decimal::from_str("1260.004").unwrap());
        assert_eq!(m.round().to_string(), "1260.00");
    }

    #[test]
    fn refuses_bad_strings() {
        assert!(matches!(
            "12.345".parse::<Money>(),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            "-1".parse::<Money>(),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            "abc".parse::<Money>(),
            Err(MoneyError::NotDecimal(_))
        ));
    }
}
