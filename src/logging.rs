//! Structured logs with tracing: human-readable text (coloured on a terminal), JSON when
//! configured, on stderr (stdout carries only the "listening" line). `RUST_LOG` overrides
//! the level.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a second call does nothing.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = cap_payload_logging(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colors_wanted());
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Colours only on a terminal, and never when `NO_COLOR` is set (no-color.org): logs
/// redirected to a file or a collector stay free of escape codes.
fn colors_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// tungstenite logs every frame it receives at trace level, tokens included; capping it
/// at debug keeps credentials out of the log whatever the filter asks for
/// (tests/log_secrets.rs checks it).
fn cap_payload_logging(filter: EnvFilter) -> EnvFilter {
    match "tungstenite=debug".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}
