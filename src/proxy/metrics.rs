//! The backend proxy's metrics, registered into the node's registry (with every label
//! value at zero, proxy configured or not): calls by kind and outcome, call latency, and
//! breaker state.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::BreakerState;

/// The `kind` label's values.
pub const KINDS: [&str; 4] = ["connect", "subscribe", "publish", "refresh"];
/// The `outcome` label's values.
pub const OUTCOMES: [&str; 5] = ["granted", "refused", "failed", "busy", "breaker_open"];

pub struct ProxyMetrics {
    calls: IntCounterVec,
    seconds: HistogramVec,
    breaker: IntGaugeVec,
}

impl ProxyMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let metrics = ProxyMetrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "pushwire_proxy_calls_total",
                    "Backend proxy calls by kind (connect, subscribe, publish, refresh) and outcome (granted, refused, failed, busy, breaker_open).",
                ),
                &["kind", "outcome"],
            )
            .expect("valid metric"),
            seconds: HistogramVec::new(
                HistogramOpts::new(
                    "pushwire_proxy_call_seconds",
                    "Latency of backend proxy calls that were sent, by kind.",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                &["kind"],
            )
            .expect("valid metric"),
            breaker: IntGaugeVec::new(
                Opts::new(
                    "pushwire_proxy_breaker_state",
                    "Circuit breaker of each backend proxy kind: 0 closed, 1 open, 2 half-open.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.seconds.clone()),
            Box::new(metrics.breaker.clone()),
        ] {
            // Each node has its own registry and builds its proxy once.
            let _ = registry.register(collector);
        }
        for kind in KINDS {
            for outcome in OUTCOMES {
                metrics.calls.with_label_values(&[kind, outcome]);
            }
            metrics.seconds.with_label_values(&[kind]);
            metrics.breaker.with_label_values(&[kind]);
        }
        metrics
    }

    pub(super) fn outcome(&self, kind: &'static str, outcome: &'static str) {
        self.calls.with_label_values(&[kind, outcome]).inc();
    }

    pub(super) fn observe(&self, kind: &'static str, took: Duration) {
        self.seconds
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
    }

    pub(super) fn breaker(&self, kind: &'static str, state: BreakerState) {
        self.breaker
            .with_label_values(&[kind])
            .set(state.as_gauge());
    }
}
