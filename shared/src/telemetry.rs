//! Logs as JSON lines on stdout, which CloudWatch Logs and Cloud Logging both parse; or as
//! plain text for a person at a terminal (`FLUXGATE_LOG_FORMAT=text`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; `RUST_LOG` picks the level (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let text = std::env::var("FLUXGATE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    // `try_init` fails only when a subscriber is already set (tests); that one is kept.
    let _ = if text {
        // Colours only for a terminal: a log file or a pipe gets plain text, not escape codes.
        builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
}
