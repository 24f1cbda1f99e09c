//! The event vocabulary every Huiqi service speaks.
//!
//! Why one crate: the services only meet through events, so the envelope, the payloads, the
//! subject names and the schema versions must be defined exactly once. Outside systems see the
//! CloudEvents envelope and the payloads named in CONTRACT.md; internal events (claim opened,
//! check recorded, claim verified, payment ordered) live here too so that a replay of any
//! service's log decodes with the same types.
//!
//! Money is [`Money`]: a `rust_decimal` value that always travels as a two-decimal string.

pub mod checks;
pub mod envelope;
pub mod history;
pub mod money;
pub mod partition;
pub mod payloads;
pub mod schema;
pub mod subjects;
pub mod types;

pub use envelope::{derived_id, Data, Envelope, EnvelopeError};
pub use money::Money;
pub use partition::Partition;

/// Escapes control characters (newlines, carriage returns, ANSI escapes, …) so that a value
/// taken from the outside can never start a forged log line or drive a terminal. Printable
/// text, Chinese included, is left as it is.
pub fn escape_control(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

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

/// Masks every run of 8 or more digits (an `X` may end it, as in ID numbers) in free text,
/// such as a parser's error message that quotes the offending value. Shorter numbers (line,
/// column, counts) stay readable.
pub fn mask_digit_runs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 8 {
            out.push_str(&mask(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() || ((c == 'X' || c == 'x') && !run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::{escape_control, mask, mask_digit_runs};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("P-1"), "P-1");
        assert_eq!(escape_control("惠企 P-1"), "惠企 P-1");
        assert_eq!(
            escape_control("P-1\n2026-11-27 INFO forged"),
            "P-1\\n2026-11-27 INFO forged"
        );
        assert_eq!(escape_control("a\u{1b}[31mb\r"), "a\\u{1b}[31mb\\r");
    }

    #[test]
    fn masks_digit_runs_in_free_text() {
        assert_eq!(
            mask_digit_runs("invalid value: 330302199001011234, expected x"),
            "invalid value: 3303**********1234, expected x"
        );
        assert_eq!(
            mask_digit_runs("id 11010519491231002X at line 3 column 17"),
            "id 1101**********002X at line 3 column 17"
        );
    }

    #[test]
    fn masks_id_numbers_phones_and_accounts() {
        assert_eq!(mask("330302199001011234"), "3303**********1234");
        assert_eq!(mask("13912345678"), "1391***5678");
        assert_eq!(mask("1234"), "****");
    }
}
