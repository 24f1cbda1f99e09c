//! Progress on long work (loadgen, replay, restore, audit), drawn on stderr only when it is a
//! terminal (indicatif hides it otherwise), so scripts and logs stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` steps with a message, on stderr.
pub fn bar(total: u64, message: &str) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_message(message.to_string());
    b
}

/// A spinner with a message, ticking on its own, on stderr.
pub fn spinner(message: &str) -> ProgressBar {
    let s = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    s.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    s.set_message(message.to_string());
    s.enable_steady_tick(std::time::Duration::from_millis(120));
    s
}
