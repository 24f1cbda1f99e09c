//! The event vocabulary every Huiqi service speaks.
//!
//! Why one crate: the services only meet through events, so the envelope, the payloads, the
//! subject names and the schema versions must be defined exactly once. Outside systems see the
//! CloudEvents envelope and the payloads named in CONTRACT.md; internal events (claim opened,
//! check recorded, claim verified, payment ordered) live here too so that a replay of any
//! service's log decodes with the same types.
//!
//! Money is [`Money`]: a `rust_decimal` value that always travels as a two-decimal string.

pub mod envelope;
pub mod money;
pub mod payloads;
pub mod subjects;
pub mod types;

pub use envelope::{Envelope, EnvelopeError};
pub use money::Money;

/// Masks an identifier for logs and errors: keeps the first four and last four characters.
///
/// `330302199001011234` becomes `3303**********1234`. Short values are fully starred.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 8))
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_id_numbers_phones_and_accounts() {
        assert_eq!(mask("330302199001011234"), "3303**********1234");
        assert_eq!(mask("13912345678"), "1391***5678");
        assert_eq!(mask("1234"), "****");
    }
}
