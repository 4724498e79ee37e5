//! The Prometheus registry of one node and the metric handles the other modules use.
//!
//! Architecture Invariant: the per-delivery hot path pays at most one atomic add; counts
//! are added per publication or per flushed batch wherever possible. Label sets are
//! closed (close codes, routes, encodings, and the configured Pusher app ids), never
//! client- or channel-derived.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::protocol::{CloseCode, Encoding};

/// Every metric of one node. Cheap to share behind an `Arc`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub connections: IntGaugeVec,
    pub connects: IntCounter,
    pub disconnects: IntCounterVec,
    pub subscriptions: IntGauge,
    pub channels: IntGauge,
    pub publications: IntCounterVec,
    pub deliveries: IntCounter,
    pub bytes_sent: IntCounter,
    pub frames_sent: IntCounter,
    pub slow_consumer_evictions: IntCounter,
    pub queue_depth: Histogram,
    pub publish_enqueue_seconds: Histogram,
    pub api_requests: IntCounterVec,
    pub api_request_seconds: HistogramVec,
    pub limit_trips: IntCounterVec,
    pub client_requests: IntCounterVec,
    /// Tasks alive on the runtime, sampled when the metrics are rendered (a leak shows as
    /// a count that does not come back down).
    pub runtime_tasks: IntGauge,
    pub relay_messages: IntCounterVec,
    pub relay_latency_seconds: Histogram,
    pub relay_dropped: IntCounter,
    pub redis_errors: IntCounterVec,
    pub redis_reconnects: IntCounter,
    pub redis_stream_rollbacks: IntCounter,
    pub redis_resubscribe_seconds: Histogram,
    pub redis_up: IntGauge,
    pub cluster_nodes: IntGauge,
    /// Per Pusher app (label `app`, the configured app id: bounded by the configuration).
    pub pusher_connections: IntGaugeVec,
    pub pusher_messages: IntCounterVec,
    pub pusher_api_requests: IntCounterVec,
    pub pusher_webhook_events: IntCounterVec,
    /// Pre-resolved label values for counters touched per publication.
    pub published_api: IntCounter,
    pub published_client: IntCounter,
    pub published_relay: IntCounter,
    pub relay_in: IntCounter,
    pub relay_out: IntCounter,
}

/// Redis operations as labelled in `pushwire_redis_errors_total`.
pub const REDIS_OPS: [&str; 7] = [
    "publish",
    "subscribe",
    "pubsub",
    "history",
    "presence",
    "control",
    "occupancy",
];

/// Routes as labelled in `pushwire_api_requests_total`.
pub const API_ROUTES: [&str; 23] = [
    "publish",
    "broadcast",
    "disconnect",
    "subscribe",
    "unsubscribe",
    "history_remove",
    "batch",
    "channels",
    "presence",
    "presence_stats",
    "history",
    "info",
    "client",
    "health",
    "ready",
    "metrics",
    "pusher_events",
    "pusher_batch_events",
    "pusher_channels",
    "pusher_channel",
    "pusher_users",
    "pusher_terminate",
    "other",
];

/// Outcomes as labelled in `pushwire_pusher_webhook_events_total`.
pub const PUSHER_WEBHOOK_OUTCOMES: [&str; 3] = ["sent", "failed", "dropped"];

/// Kinds of limit as labelled in `pushwire_limit_trips_total`.
pub const LIMIT_KINDS: [&str; 26] = [
    "queue_overflow",
    "frame_size",
    "channels_per_connection",
    "message_size",
    "publish_body_size",
    "connections_per_node",
    "connect_timeout",
    "pong_timeout",
    "write_timeout",
    "rate_limit",
    "connections_per_ip",
    "connections_per_user",
    "pending_connections",
    "pending_connections_per_ip",
    "handshake_timeout",
    "api_publish_rate",
    "proxy_renewals",
    "pusher_event_bytes",
    "relay_handoff",
    "relay_gap_fill",
    "join_leave_rate",
    "presence_reply_size",
    "pusher_app_connections",
    "pusher_client_events",
    "recover_bytes",
    "api_batch_parallelism",
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let publications = IntCounterVec::new(
            Opts::new(
                "pushwire_publications_total",
                "Publications handed to the hub, by source.",
            ),
            &["source"],
        )
        .expect("valid metric");
        let relay_messages = IntCounterVec::new(
                Opts::new("pushwire_relay_messages_total", "Messages relayed through Redis, by direction (out: published by this node, in: received)."),
                &["direction"],
            )
            .expect("valid metric");
        let m = Metrics {
            connections: IntGaugeVec::new(
                Opts::new("pushwire_connections", "Open client connections that completed connect, by encoding."),
                &["encoding"],
            )
            .expect("valid metric"),
            connects: IntCounter::new("pushwire_connects_total", "Connections that completed connect.")
                .expect("valid metric"),
            disconnects: IntCounterVec::new(
                Opts::new("pushwire_disconnects_total", "Connections ended, by close code."),
                &["code"],
            )
            .expect("valid metric"),
            subscriptions: IntGauge::new("pushwire_subscriptions", "Channel subscriptions of local clients.")
                .expect("valid metric"),
            channels: IntGauge::new("pushwire_channels", "Channels with at least one local subscriber.")
                .expect("valid metric"),
            publications: publications.clone(),
            deliveries: IntCounter::new("pushwire_deliveries_total", "Messages enqueued to local subscribers.")
                .expect("valid metric"),
            bytes_sent: IntCounter::new("pushwire_sent_bytes_total", "Bytes of WebSocket payload written to clients.")
                .expect("valid metric"),
            frames_sent: IntCounter::new("pushwire_frames_sent_total", "WebSocket frames written to clients (a frame may batch several messages).")
                .expect("valid metric"),
            slow_consumer_evictions: IntCounter::new(
                "pushwire_slow_consumer_evictions_total",
                "Clients closed with 4008 because their outbound queue overflowed.",
            )
            .expect("valid metric"),
            queue_depth: Histogram::with_opts(
                HistogramOpts::new("pushwire_client_queue_depth_messages", "Client queue depth, sampled once per ping round per client.")
                    .buckets(vec![0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
            )
            .expect("valid metric"),
            publish_enqueue_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "pushwire_publish_enqueue_seconds",
                    "Time from a publication reaching the hub to its last enqueue, per publication.",
                )
                .buckets(vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            )
            .expect("valid metric"),
            api_requests: IntCounterVec::new(
                Opts::new("pushwire_api_requests_total", "HTTP API requests, by route and status."),
                &["route", "status"],
            )
            .expect("valid metric"),
            api_request_seconds: HistogramVec::new(
                HistogramOpts::new("pushwire_api_request_duration_seconds", "HTTP API request latency, by route.")
                    .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0]),
                &["route"],
            )
            .expect("valid metric"),
            limit_trips: IntCounterVec::new(
                Opts::new("pushwire_limit_trips_total", "Times a configured limit was hit, by kind."),
                &["kind"],
            )
            .expect("valid metric"),
            client_requests: IntCounterVec::new(
                Opts::new("pushwire_client_requests_total", "Requests received from WebSocket clients, by op and result."),
                &["op", "result"],
            )
            .expect("valid metric"),
            relay_messages: relay_messages.clone(),
            relay_latency_seconds: Histogram::with_opts(
                HistogramOpts::new("pushwire_relay_latency_seconds", "From publish on the origin node to receipt from Redis on this node.")
                    .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            )
            .expect("valid metric"),
            relay_dropped: IntCounter::new(
                "pushwire_relay_dropped_total",
                "Relayed messages dropped because the hand-off buffer between the Redis reader and the hub was full (should stay 0).",
            )
            .expect("valid metric"),
            redis_errors: IntCounterVec::new(
                Opts::new("pushwire_redis_errors_total", "Failed Redis operations, by operation."),
                &["op"],
            )
            .expect("valid metric"),
            redis_reconnects: IntCounter::new("pushwire_redis_reconnects_total", "Redis pub/sub connections re-established after a loss.")
                .expect("valid metric"),
            redis_stream_rollbacks: IntCounter::new(
                "pushwire_redis_stream_rollbacks_total",
                "History streams found gone back in time in Redis (offsets handed out again); each moved to a new epoch.",
            )
            .expect("valid metric"),
            redis_resubscribe_seconds: Histogram::with_opts(
                HistogramOpts::new("pushwire_redis_resubscribe_seconds", "Time to resubscribe every channel of a pub/sub connection after it reconnected.")
                    .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            )
            .expect("valid metric"),
            redis_up: IntGauge::new("pushwire_redis_up", "1 while every Redis connection of this node works, else 0 (always 1 on the memory broker).")
                .expect("valid metric"),
            cluster_nodes: IntGauge::new("pushwire_cluster_nodes", "Nodes this node sees, itself included (heartbeats on the control topic).")
                .expect("valid metric"),
            runtime_tasks: IntGauge::new("pushwire_runtime_tasks", "Tokio tasks alive in this process, sampled at each scrape.")
                .expect("valid metric"),
            pusher_connections: IntGaugeVec::new(
                Opts::new("pushwire_pusher_connections", "Open Pusher connections, by app id."),
                &["app"],
            )
            .expect("valid metric"),
            pusher_messages: IntCounterVec::new(
                Opts::new(
                    "pushwire_pusher_messages_total",
                    "Pusher messages by app id and direction (in: frames received from the app's clients, out: messages queued to them).",
                ),
                &["app", "direction"],
            )
            .expect("valid metric"),
            pusher_api_requests: IntCounterVec::new(
                Opts::new("pushwire_pusher_api_requests_total", "Pusher HTTP API requests naming a configured app, by app id."),
                &["app"],
            )
            .expect("valid metric"),
            pusher_webhook_events: IntCounterVec::new(
                Opts::new(
                    "pushwire_pusher_webhook_events_total",
                    "Pusher webhook events by app id and outcome (sent, failed, dropped).",
                ),
                &["app", "outcome"],
            )
            .expect("valid metric"),
            published_api: publications.with_label_values(&["api"]),
            published_client: publications.with_label_values(&["client"]),
            published_relay: publications.with_label_values(&["relay"]),
            relay_in: relay_messages.with_label_values(&["in"]),
            relay_out: relay_messages.with_label_values(&["out"]),
            registry,
        };
        m.register_all();
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.connections.clone()),
            Box::new(self.connects.clone()),
            Box::new(self.disconnects.clone()),
            Box::new(self.subscriptions.clone()),
            Box::new(self.channels.clone()),
            Box::new(self.publications.clone()),
            Box::new(self.deliveries.clone()),
            Box::new(self.bytes_sent.clone()),
            Box::new(self.frames_sent.clone()),
            Box::new(self.slow_consumer_evictions.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.publish_enqueue_seconds.clone()),
            Box::new(self.api_requests.clone()),
            Box::new(self.api_request_seconds.clone()),
            Box::new(self.limit_trips.clone()),
            Box::new(self.client_requests.clone()),
            Box::new(self.runtime_tasks.clone()),
            Box::new(self.relay_messages.clone()),
            Box::new(self.relay_latency_seconds.clone()),
            Box::new(self.relay_dropped.clone()),
            Box::new(self.redis_errors.clone()),
            Box::new(self.redis_reconnects.clone()),
            Box::new(self.redis_stream_rollbacks.clone()),
            Box::new(self.redis_resubscribe_seconds.clone()),
            Box::new(self.redis_up.clone()),
            Box::new(self.cluster_nodes.clone()),
            Box::new(self.pusher_connections.clone()),
            Box::new(self.pusher_messages.clone()),
            Box::new(self.pusher_api_requests.clone()),
            Box::new(self.pusher_webhook_events.clone()),
        ];
        for collector in collectors {
            // Names are unique by construction; a failure here is a programming error.
            self.registry
                .register(collector)
                .expect("metric registered once");
        }
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            let _ = self.registry.register(Box::new(process));
        }
        // Make every closed label value visible from the start, so dashboards have series.
        for encoding in Encoding::ALL {
            self.connections.with_label_values(&[encoding.label()]);
        }
        for code in CloseCode::ALL {
            self.disconnects.with_label_values(&[code.label()]);
        }
        for label in ["1006", "other"] {
            self.disconnects.with_label_values(&[label]);
        }
        for source in ["api", "client", "relay"] {
            self.publications.with_label_values(&[source]);
        }
        for direction in ["in", "out"] {
            self.relay_messages.with_label_values(&[direction]);
        }
        for op in REDIS_OPS {
            self.redis_errors.with_label_values(&[op]);
        }
        self.redis_up.set(1);
        self.cluster_nodes.set(1);
        for kind in LIMIT_KINDS {
            self.limit_trips.with_label_values(&[kind]);
        }
    }

    /// Creates the per-app series of the configured Pusher apps, so they are exported
    /// (at 0) from the start. Only configured app ids ever become `app` labels.
    pub fn init_pusher_apps<'a>(&self, app_ids: impl Iterator<Item = &'a str>) {
        for app in app_ids {
            self.pusher_connections.with_label_values(&[app]);
            for direction in ["in", "out"] {
                self.pusher_messages.with_label_values(&[app, direction]);
            }
            self.pusher_api_requests.with_label_values(&[app]);
            for outcome in PUSHER_WEBHOOK_OUTCOMES {
                self.pusher_webhook_events
                    .with_label_values(&[app, outcome]);
            }
        }
    }

    /// Counts `n` messages queued to the subscribers of `hub_channel`, if it is a Pusher
    /// app's channel (one check per fan-out job, not per recipient).
    pub fn pusher_delivered(&self, hub_channel: &str, n: u64) {
        if let Some(app) = crate::pusher::channel::app_of(hub_channel) {
            self.pusher_messages
                .with_label_values(&[app, "out"])
                .inc_by(n);
        }
    }

    /// Adds a sub-registry's collectors (used by brokers that own metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts clients evicted as slow consumers (4008).
    pub fn evicted(&self, n: u64) {
        self.slow_consumer_evictions.inc_by(n);
        self.limit_trips
            .with_label_values(&["queue_overflow"])
            .inc_by(n);
    }

    pub fn limit_tripped(&self, kind: &'static str) {
        self.limit_trips.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.deliveries.inc_by(3);
        let text = metrics.render();
        assert!(text.contains("pushwire_deliveries_total 3"));
        assert!(text.contains("pushwire_disconnects_total{code=\"4008\"} 0"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap_or_default();
            assert!(
                name.starts_with("pushwire_") || name.starts_with("process_"),
                "{name}"
            );
        }
    }
}
