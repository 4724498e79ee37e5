//! Webhook metrics, registered on the node's registry. Labels are closed: `protocol`
//! (`native`, `pusher`), `outcome` and `result`; never an endpoint URL or a channel. A
//! Pusher app's endpoints also count per app in the node's
//! `pushwire_pusher_webhook_events_total` (`crate::metrics`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::metrics::Metrics;

/// Protocols as labelled in the webhook metrics.
pub const PROTOCOLS: [&str; 2] = ["native", "pusher"];
/// What became of webhook events, as labelled in `pushwire_webhook_events_total`.
pub const OUTCOMES: [&str; 4] = ["sent", "failed", "dropped", "cancelled"];

/// Every webhook metric family.
#[derive(Clone)]
pub struct WebhookMetrics {
    pub events: IntCounterVec,
    pub requests: IntCounterVec,
    pub retries: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub breakers_open: IntGaugeVec,
}

/// The metric handles of one protocol, resolved once.
#[derive(Clone)]
pub struct ProtocolMetrics {
    pub sent: IntCounter,
    pub failed: IntCounter,
    pub dropped: IntCounter,
    pub cancelled: IntCounter,
    pub requests_ok: IntCounter,
    pub requests_error: IntCounter,
    pub retries: IntCounter,
    pub queue_depth: IntGauge,
    pub breakers_open: IntGauge,
    /// A Pusher app's endpoint also counts in `pushwire_pusher_webhook_events_total`.
    pub app: Option<AppWebhookMetrics>,
}

/// The per-app webhook counters of a Pusher app's endpoint.
#[derive(Clone)]
pub struct AppWebhookMetrics {
    pub sent: IntCounter,
    pub failed: IntCounter,
    pub dropped: IntCounter,
}

impl ProtocolMetrics {
    /// The same handles, also counting the events of Pusher app `app_id`.
    pub fn for_app(mut self, node: &Metrics, app_id: &str) -> Self {
        let outcome = |o: &str| node.pusher_webhook_events.with_label_values(&[app_id, o]);
        self.app = Some(AppWebhookMetrics {
            sent: outcome("sent"),
            failed: outcome("failed"),
            dropped: outcome("dropped"),
        });
        self
    }

    /// `n` events sent in a batch the endpoint took.
    pub fn count_sent(&self, n: u64) {
        self.sent.inc_by(n);
        if let Some(app) = &self.app {
            app.sent.inc_by(n);
        }
    }

    /// `n` events whose retries ran out.
    pub fn count_failed(&self, n: u64) {
        self.failed.inc_by(n);
        if let Some(app) = &self.app {
            app.failed.inc_by(n);
        }
    }

    /// One event dropped by a full queue.
    pub fn count_dropped(&self) {
        self.dropped.inc();
        if let Some(app) = &self.app {
            app.dropped.inc();
        }
    }
}

impl WebhookMetrics {
    /// Creates the families and registers them on `metrics`' registry.
    pub fn register(metrics: &Metrics) -> Self {
        let m = WebhookMetrics {
            events: IntCounterVec::new(
                Opts::new(
                    "pushwire_webhook_events_total",
                    "Webhook events by outcome: sent (in a 2xx batch), failed (retries ran out), dropped (endpoint queue full), cancelled (a held vacated/leave undone by a return).",
                ),
                &["protocol", "outcome"],
            )
            .expect("valid metric"),
            requests: IntCounterVec::new(
                Opts::new(
                    "pushwire_webhook_requests_total",
                    "Webhook POSTs by result: ok (2xx) or error (other status, timeout, connection).",
                ),
                &["protocol", "result"],
            )
            .expect("valid metric"),
            retries: IntCounterVec::new(
                Opts::new(
                    "pushwire_webhook_retries_total",
                    "Webhook batches scheduled for another attempt after a failure.",
                ),
                &["protocol"],
            )
            .expect("valid metric"),
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "pushwire_webhook_queue_depth_events",
                    "Webhook events waiting in endpoint queues.",
                ),
                &["protocol"],
            )
            .expect("valid metric"),
            breakers_open: IntGaugeVec::new(
                Opts::new(
                    "pushwire_webhook_breakers_open",
                    "Webhook endpoints whose circuit breaker is open or half-open.",
                ),
                &["protocol"],
            )
            .expect("valid metric"),
        };
        let registry = metrics.registry();
        for collector in [
            Box::new(m.events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.requests.clone()),
            Box::new(m.retries.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.breakers_open.clone()),
        ] {
            // Registered once per node; a second registration would be a programming error.
            let _ = registry.register(collector);
        }
        for protocol in PROTOCOLS {
            let _ = m.protocol(protocol);
        }
        m
    }

    /// The handles of `protocol`, every label value created.
    pub fn protocol(&self, protocol: &str) -> ProtocolMetrics {
        let event = |outcome: &str| self.events.with_label_values(&[protocol, outcome]);
        let request = |result: &str| self.requests.with_label_values(&[protocol, result]);
        ProtocolMetrics {
            sent: event("sent"),
            failed: event("failed"),
            dropped: event("dropped"),
            cancelled: event("cancelled"),
            requests_ok: request("ok"),
            requests_error: request("error"),
            retries: self.retries.with_label_values(&[protocol]),
            queue_depth: self.queue_depth.with_label_values(&[protocol]),
            breakers_open: self.breakers_open.with_label_values(&[protocol]),
            app: None,
        }
    }
}
