//! Distributed traces with OpenTelemetry (`[tracing]`, off by default): one publication
//! followed from the API request through the broker, the Redis relay on every node and
//! each fan-out shard, to a sampled subscriber.
//!
//! Trace spans are ordinary `tracing` spans with the target [`TARGET`]; a
//! `tracing-opentelemetry` layer (with a per-layer filter, so log spans such as the
//! session span are not exported) turns them into OTel spans, batched to an OTLP
//! endpoint over HTTP or gRPC. Head sampling is the SDK's parent-based ratio sampler; a
//! W3C `traceparent` on an API request becomes the trace's parent. Across nodes the trace
//! context rides in the Redis envelope as a `traceparent` string.
//!
//! Architecture Invariant: with tracing off, the hot path pays one relaxed atomic load
//! per publication (`enabled()`), never a span, and the envelope carries nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` target of every span that is exported as a trace span.
pub const TARGET: &str = "pushwire::trace";

static ENABLED: AtomicBool = AtomicBool::new(false);
/// `delivery_sample_ratio` scaled to u64::MAX (0: never).
static DELIVERY_THRESHOLD: AtomicU64 = AtomicU64::new(0);

/// `[tracing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    pub enabled: bool,
    /// OTLP endpoint: `http://collector:4318` (HTTP; `/v1/traces` is added when the URL
    /// has no path) or `http://collector:4317` (gRPC).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    /// Share of traces recorded (head sampling; a sampled `traceparent` parent wins).
    pub sample_ratio: f64,
    /// Share of a sampled publication's fan-outs that also record the hand-off to one
    /// subscriber's queue.
    pub delivery_sample_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    Http,
    Grpc,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            endpoint: "http://127.0.0.1:4318".into(),
            protocol: OtlpProtocol::Http,
            service_name: "pushwire".into(),
            sample_ratio: 0.01,
            delivery_sample_ratio: 0.01,
        }
    }
}

impl TracingConfig {
    /// The first invalid key and why, if any.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        for (key, ratio) in [
            ("tracing.sample_ratio", self.sample_ratio),
            ("tracing.delivery_sample_ratio", self.delivery_sample_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Some((key, "must be within 0..=1".into()));
            }
        }
        if self.enabled
            && !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://"))
        {
            return Some((
                "tracing.endpoint",
                "must be an http:// or https:// URL".into(),
            ));
        }
        None
    }

    fn http_endpoint(&self) -> String {
        let rest = self.endpoint.split_once("://").map_or("", |(_, r)| r);
        if rest.contains('/') && !rest.ends_with('/') {
            self.endpoint.clone()
        } else {
            format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
        }
    }
}

/// Why the OTLP exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {source}")]
pub struct TelemetryError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Builds the tracer provider that exports to the configured OTLP endpoint. Must be
/// called inside the tokio runtime (the batch processor runs on it).
pub fn otlp_provider(
    config: &TracingConfig,
    node: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let built = match config.protocol {
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(config.http_endpoint())
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .build(),
    };
    let exporter = built.map_err(|source| TelemetryError {
        endpoint: config.endpoint.clone(),
        source,
    })?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    Ok(provider_builder(config, node)
        .with_span_processor(processor)
        .build())
}

/// A provider builder with this node's resource and sampler (tests add their exporter).
pub fn provider_builder(
    config: &TracingConfig,
    node: &str,
) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            node.to_owned(),
        ))
        .build();
    SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
}

/// The `tracing` layer that exports [`TARGET`] spans through `provider`, and turns the
/// hot-path switch on.
pub fn layer<S>(
    provider: &SdkTracerProvider,
    config: &TracingConfig,
) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let threshold = (config.delivery_sample_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    DELIVERY_THRESHOLD.store(threshold, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("pushwire"))
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() == TARGET
        }))
}

/// Whether trace spans are being recorded at all (one relaxed load).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether this fan-out also records its hand-off to one subscriber.
pub fn sample_delivery() -> bool {
    let threshold = DELIVERY_THRESHOLD.load(Ordering::Relaxed);
    threshold > 0 && rand::random::<u64>() <= threshold
}

/// The current span, when it is a trace span that is recorded (sampled).
pub fn recorded_span() -> Option<tracing::Span> {
    let span = tracing::Span::current();
    let recorded = span.metadata().is_some_and(|meta| meta.target() == TARGET)
        && span.context().span().span_context().is_sampled();
    recorded.then_some(span)
}

/// Makes `span` a child of the W3C `traceparent` in `headers`, if there is one.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The current span's `traceparent`, when it is recorded (sampled); else `None`.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_sampled() {
        return None;
    }
    struct One(Option<String>);
    impl Injector for One {
        fn set(&mut self, key: &str, value: String) {
            if key == "traceparent" {
                self.0 = Some(value);
            }
        }
    }
    let mut out = One(None);
    TraceContextPropagator::new().inject_context(&context, &mut out);
    out.0
}

/// Makes `span` a child of, and linked to, the remote span in `traceparent`.
pub fn continue_from_traceparent(span: &tracing::Span, traceparent: &str) {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    let parent = TraceContextPropagator::new().extract(&One(traceparent));
    let remote = parent.span().span_context().clone();
    if remote.is_valid() {
        let _ = span.set_parent(parent);
        span.add_link(remote);
    }
}

/// The trace spans of sampled sessions, by client; empty while tracing is off.
static SESSIONS: std::sync::LazyLock<dashmap::DashMap<crate::hub::ClientId, tracing::Span>> =
    std::sync::LazyLock::new(dashmap::DashMap::new);

/// Opens a `session` trace span for a new connection, kept only when it is sampled; its
/// lifecycle (connect, subscribe, disconnect) becomes span events.
pub fn session_started(client: &crate::hub::ClientHandle) {
    if !enabled() {
        return;
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "session",
        client_id = %client.id,
        user = %client.user,
    );
    if span.context().span().span_context().is_sampled() {
        tracing::info!(target: TARGET, parent: &span, "connect");
        SESSIONS.insert(client.id, span);
    }
}

/// Records `event` on a sampled session's span.
pub fn session_event(client: crate::hub::ClientId, event: &'static str, channel: &str) {
    if !enabled() {
        return;
    }
    if let Some(span) = SESSIONS.get(&client) {
        tracing::info!(target: TARGET, parent: span.value(), channel, "{event}");
    }
}

/// Ends a sampled session's span with its close code.
pub fn session_ended(client: crate::hub::ClientId, code: &str) {
    if !enabled() {
        return;
    }
    if let Some((_, span)) = SESSIONS.remove(&client) {
        tracing::info!(target: TARGET, parent: &span, code, "disconnect");
    }
}
