//! Log output for every Huiqi binary: one line per event on stderr, the filter from `RUST_LOG`.
//!
//! Why a formatter of our own for field values: values come from outside (application ids,
//! subjects, provider texts), and a newline in one would start a forged log line, an ANSI
//! escape would drive the operator's terminal. Every field value is written with its control
//! characters escaped ([`huiqi_events::escape_control`]); colours are used only when stderr is
//! a terminal.

use std::fmt::Write as _;
use std::io::IsTerminal;
use tracing_subscriber::field::MakeExt;

/// Installs the subscriber (once per process; later calls are ignored). `HUIQI_LOG_FORMAT=json`
/// writes one JSON object per line instead (fields such as `claim_id`, `application_id`,
/// `service` and `stream_seq` as JSON fields; JSON escaping covers control characters).
pub fn init(default_filter: &str) {
    let json = std::env::var("HUIQI_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    init_with(default_filter, json)
}

/// [`init`] with the format chosen by the caller.
pub fn init_with(default_filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return;
    }
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        let text = huiqi_events::escape_control(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .fmt_fields(fields)
        .try_init();
}
