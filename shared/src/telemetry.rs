//! Logs as JSON lines on stdout, which CloudWatch Logs and Cloud Logging both parse; or as
//! plain text for a person at a terminal (`FLUXGATE_LOG_FORMAT=text`).

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

/// The level when `RUST_LOG` is unset or unreadable.
const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// Installs the global subscriber once; `RUST_LOG` picks the level (default `info`).
pub fn init() {
    let (filter, unreadable) = filter_from(std::env::var("RUST_LOG").ok().as_deref());
    let text = std::env::var("FLUXGATE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init` fails only when a subscriber is already set (tests); that one is kept.
    let _ = if text {
        // Colours only for a terminal: a log file or a pipe gets plain text, not escape codes.
        registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stdout)
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stdout),
            )
            .try_init()
    };
    if let Some(error) = unreadable {
        tracing::warn!(%error, "RUST_LOG is not `level` or `target=level,...`; logging at info");
    }
}

/// `RUST_LOG` as comma-separated `level` and `target=level` directives
/// (`info,fluxgate=debug,sqlx=warn`), the forms docs/CONFIGURATION.md documents. Read with
/// tracing-subscriber's `Targets` rather than its `EnvFilter`: the same directives without
/// span and field matching, and without the regular-expression engine `EnvFilter` links into
/// every binary. Unset or empty: `info`; unreadable: `info` and the parse error.
fn filter_from(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let default = || Targets::new().with_default(DEFAULT_LEVEL);
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (default(), None),
        Some(directives) => match directives.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (default(), Some(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_sets_a_default_and_per_target_levels() {
        let (filter, error) = filter_from(Some("warn,fluxgate=debug"));
        assert_eq!(error, None);
        assert!(filter.would_enable("fluxgate::store", &Level::DEBUG));
        assert!(!filter.would_enable("sqlx::query", &Level::INFO));
        assert!(filter.would_enable("sqlx::query", &Level::WARN));
    }

    #[test]
    fn unset_or_unreadable_means_info() {
        for rust_log in [None, Some(""), Some("fluxgate=loud")] {
            let (filter, error) = filter_from(rust_log);
            assert!(
                filter.would_enable("fluxgate", &Level::INFO),
                "{rust_log:?}"
            );
            assert!(
                !filter.would_enable("fluxgate", &Level::DEBUG),
                "{rust_log:?}"
            );
            assert_eq!(error.is_some(), rust_log == Some("fluxgate=loud"));
        }
    }
}
