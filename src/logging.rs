//! Structured logs with tracing: human-readable text (coloured on a terminal), JSON when
//! configured, on stderr (stdout carries only the "listening" line). `RUST_LOG` overrides
//! the level.

use std::io::IsTerminal as _;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{FilterExt as _, FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat};

/// A layer beside the logs (the OpenTelemetry exporter of `crate::telemetry`).
pub type ExtraLayer = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;

/// Installs the global subscriber: logs on stderr, plus `traces` when given; a second
/// call does nothing. The log filters apply to the logs only, so `RUST_LOG=warn` does not
/// silence trace spans, and trace spans (target `crate::telemetry::TARGET`) stay out of
/// the logs.
pub fn init(config: &LogConfig, traces: Option<ExtraLayer>) {
    let level = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let log_records =
        log_level_for(tracing_subscriber::layer::Filter::<Registry>::max_level_hint(&level));
    let not_traces = filter_fn(|meta: &Metadata<'_>| meta.target() != crate::telemetry::TARGET);
    // One filter, not three stacked ones: with stacked per-layer filters the outer
    // ones enable what the level filter refuses (a `debug` span at the default level),
    // so the registry would still create, enter and close it for nobody. Combined, the
    // level filter's "never" for such a call site holds, and it costs nothing.
    let filter = level.and(payload_logging_cap()).and(not_traces);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colors_wanted());
    let logs: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = match config.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(traces)
        .with(logs)
        .try_init();
    if installed.is_ok() {
        // `try_init` forwards `log` records (tungstenite, tokio-tungstenite, hyper's
        // dependencies) from every level, since the per-layer filters give no overall
        // hint; each record then walks the whole subscriber to be dropped, several times
        // per frame. Records above the log filter's own level are cut at their call site.
        log::set_max_level(log_records);
    }
}

/// The `log` facade's level for a log filter whose most verbose level is `hint` (`None`:
/// it may enable anything, for instance per span).
fn log_level_for(hint: Option<tracing::level_filters::LevelFilter>) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter;
    match hint {
        Some(LevelFilter::OFF) => log::LevelFilter::Off,
        Some(LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(LevelFilter::INFO) => log::LevelFilter::Info,
        Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
        Some(_) | None => log::LevelFilter::Trace,
    }
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
    fn log_records_follow_the_log_filters_level() {
        use tracing::level_filters::LevelFilter;
        let hint = |directives: &str| {
            let filter = EnvFilter::new(directives);
            log_level_for(tracing_subscriber::layer::Filter::<Registry>::max_level_hint(&filter))
        };
        assert_eq!(hint("warn"), log::LevelFilter::Warn);
        assert_eq!(hint("info"), log::LevelFilter::Info);
        assert_eq!(hint("info,tungstenite=debug"), log::LevelFilter::Debug);
        assert_eq!(hint("trace"), log::LevelFilter::Trace);
        assert_eq!(hint("off"), log::LevelFilter::Off);
        assert_eq!(log_level_for(None), log::LevelFilter::Trace);
        assert_eq!(
            log_level_for(Some(LevelFilter::ERROR)),
            log::LevelFilter::Error
        );
    }

    #[test]
    fn only_tungstenite_targets_are_capped() {
        assert!(is_payload_logger("tungstenite"));
        assert!(is_payload_logger("tungstenite::protocol"));
        assert!(!is_payload_logger("tungstenite_extra"));
        assert!(!is_payload_logger("tokio_tungstenite"));
        assert!(!is_payload_logger("pushwire::session"));
    }
}
