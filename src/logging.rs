//! Structured logs with tracing: human-readable text (coloured on a terminal), JSON when
//! configured, on stderr (stdout carries only the "listening" line). `RUST_LOG` overrides
//! the level.

use std::io::IsTerminal as _;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a second call does nothing.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colors_wanted());
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .finish()
            .with(payload_logging_cap())
            .try_init(),
        LogFormat::Text => builder.finish().with(payload_logging_cap()).try_init(),
    };
}

/// Colours only on a terminal, and never when `NO_COLOR` is set (no-color.org): logs
/// redirected to a file or a collector stay free of escape codes.
fn colors_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// tungstenite logs every frame it receives at trace level, tokens included. This filter
/// drops its trace events whatever the level filter asks for (tests/log_secrets.rs
/// checks it), and only drops: it sits beside the level filter, so tungstenite's debug
/// lines appear only when the level filter asks for debug (tests/logs.rs checks that the
/// default level and `RUST_LOG=warn` stay quiet).
fn payload_logging_cap() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    filter_fn(allowed_by_payload_cap as fn(&Metadata<'_>) -> bool)
}

fn allowed_by_payload_cap(meta: &Metadata<'_>) -> bool {
    !(is_payload_logger(meta.target()) && *meta.level() == Level::TRACE)
}

/// `tungstenite` and its modules (not `tokio_tungstenite`, which logs no payloads).
fn is_payload_logger(target: &str) -> bool {
    target
        .strip_prefix("tungstenite")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tungstenite_targets_are_capped() {
        assert!(is_payload_logger("tungstenite"));
        assert!(is_payload_logger("tungstenite::protocol"));
        assert!(!is_payload_logger("tungstenite_extra"));
        assert!(!is_payload_logger("tokio_tungstenite"));
        assert!(!is_payload_logger("pushwire::session"));
    }
}
