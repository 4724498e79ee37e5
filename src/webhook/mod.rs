//! Webhooks: one machinery for the native protocol's `[webhooks]` and the Pusher apps'
//! `[[pusher.apps.webhooks]]`. Whoever notices something (a broker: a channel occupied
//! or vacated cluster-wide, a presence join or leave; a session: a client publish or
//! client event) calls `Webhooks::emit(target, event)`; it never waits.
//!
//! - `event`: the events and the target (native, or a Pusher app) they are for;
//! - `hold`: vacated / leave / member_removed wait `hold_ms` and are dropped if the
//!   channel or user comes back meanwhile;
//! - `endpoint`: per endpoint, a bounded queue and a task that batches, signs, POSTs and
//!   retries with backoff (`retry`) through a circuit breaker (the backend proxy's
//!   `proxy::breaker`, one breaker policy for every backend call);
//! - `signer`: Pusher's `X-Pusher-Key`/`X-Pusher-Signature`, or the native HMAC header;
//! - `settings`: the `[webhooks]` configuration; `metrics`: the webhook metric families.
//!
//! Architecture Invariant: `emit` takes no lock shared with delivery and never awaits;
//! a dead endpoint costs its own bounded queue and nothing else.

mod endpoint;
mod event;
mod hold;
mod metrics;
mod retry;
mod settings;
mod signer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use event::{Target, WebhookEvent};
pub use metrics::{OUTCOMES, PROTOCOLS, WebhookMetrics};
pub use retry::retry_delay;
pub use settings::{NATIVE_EVENTS, WebhooksConfig, check_url};
pub use signer::Signer;

use crate::pusher::apps::AppSecret;
use endpoint::{Delivery, Endpoint};
use hold::{HoldTable, Offer};

/// One endpoint to start: where events of `target` go.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub target: Target,
    pub url: String,
    pub signer: Signer,
    /// Event names to send; empty: all.
    pub events: Vec<String>,
}

/// Webhooks that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook endpoint {url}: {message}")]
    BadEndpoint { url: String, message: String },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Handle to the webhook machinery of one node; clones share it.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
}

struct Shared {
    endpoints: HashMap<Target, Vec<Endpoint>>,
    hold: HoldTable,
    metrics: Option<WebhookMetrics>,
}

impl Webhooks {
    /// No endpoints: every `emit` returns at once.
    pub fn disabled() -> Webhooks {
        Webhooks {
            shared: Arc::new(Shared {
                endpoints: HashMap::new(),
                hold: HoldTable::new(Duration::ZERO, 0),
                metrics: None,
            }),
        }
    }

    /// The native endpoints of `[webhooks]`.
    pub fn native_endpoints(config: &WebhooksConfig) -> Vec<EndpointSpec> {
        let header = http::HeaderName::from_bytes(config.signature_header.as_bytes())
            .unwrap_or(http::HeaderName::from_static("x-pushwire-signature"));
        config
            .urls
            .iter()
            .map(|url| EndpointSpec {
                target: Target::Native,
                url: url.clone(),
                signer: Signer::Native {
                    header: header.clone(),
                    secret: AppSecret::new(config.secret.clone()),
                },
                events: config.events.clone(),
            })
            .collect()
    }

    /// The endpoints of every Pusher app's `[[pusher.apps.webhooks]]`.
    pub fn pusher_endpoints(config: &crate::pusher::PusherConfig) -> Vec<EndpointSpec> {
        config
            .apps
            .iter()
            .flat_map(|app| {
                app.webhooks.iter().map(|hook| EndpointSpec {
                    target: Target::Pusher(app.id.as_str().into()),
                    url: hook.url.clone(),
                    signer: Signer::Pusher {
                        key: app.key.clone(),
                        secret: AppSecret::new(app.secret.clone()),
                    },
                    events: hook.events.clone(),
                })
            })
            .collect()
    }

    /// Starts a sender task per endpoint and the hold sweeper on `tracker`, all stopping
    /// on `stop`. Registers the webhook metrics on `node_metrics`.
    pub fn start(
        settings: &WebhooksConfig,
        specs: Vec<EndpointSpec>,
        node_metrics: &crate::metrics::Metrics,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Webhooks, WebhookError> {
        let metrics = WebhookMetrics::register(node_metrics);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.request_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(WebhookError::Client)?;
        let mut endpoints: HashMap<Target, Vec<Endpoint>> = HashMap::new();
        for spec in specs {
            check_url(&spec.url).map_err(|message| WebhookError::BadEndpoint {
                url: spec.url.clone(),
                message,
            })?;
            let protocol = match &spec.target {
                Target::Pusher(app) => metrics
                    .protocol(spec.signer.protocol())
                    .for_app(node_metrics, app),
                Target::Native => metrics.protocol(spec.signer.protocol()),
            };
            let (endpoint, queue) = Endpoint::new(
                &spec.url,
                spec.events,
                settings.queue_max_events,
                protocol.clone(),
            );
            let delivery = Delivery {
                url: endpoint.url().clone(),
                signer: spec.signer,
                settings: settings.clone(),
                client: client.clone(),
                metrics: protocol,
            };
            tracker.spawn(endpoint::run(delivery, queue, stop.clone()));
            endpoints.entry(spec.target).or_default().push(endpoint);
        }
        let webhooks = Webhooks {
            shared: Arc::new(Shared {
                endpoints,
                hold: HoldTable::new(
                    Duration::from_millis(settings.hold_ms),
                    settings.queue_max_events,
                ),
                metrics: Some(metrics),
            }),
        };
        if !webhooks.shared.endpoints.is_empty() {
            tracker.spawn(sweep_held(webhooks.clone(), stop));
        }
        Ok(webhooks)
    }

    /// Whether some endpoint of `target` wants events named `name`.
    pub fn wants(&self, target: &Target, name: &str) -> bool {
        self.shared
            .endpoints
            .get(target)
            .is_some_and(|eps| eps.iter().any(|e| e.wants(name)))
    }

    /// Whether any endpoint is configured at all.
    pub fn enabled(&self) -> bool {
        !self.shared.endpoints.is_empty()
    }

    /// How long releases are held (`webhooks.hold_ms`).
    pub fn hold(&self) -> Duration {
        self.shared.hold.hold()
    }

    /// Sends `event` to the endpoints of `target` that want it, holding releases (see
    /// `hold`). Never waits.
    pub fn emit(&self, target: &Target, event: WebhookEvent) {
        let Some(endpoints) = self.shared.endpoints.get(target) else {
            return;
        };
        if !hold::involves(endpoints, event.name(), |e, n| e.wants(n)) {
            return;
        }
        match self
            .shared
            .hold
            .offer(target, event, tokio::time::Instant::now())
        {
            Offer::Held => {}
            Offer::Cancelled => self.count_cancelled(target, 2),
            Offer::SendNow(event) => self.emit_unheld(target, event),
        }
    }

    /// Sends `event` at once, without the hold (the caller decided it cluster-wide).
    pub fn emit_unheld(&self, target: &Target, event: WebhookEvent) {
        let Some(endpoints) = self.shared.endpoints.get(target) else {
            return;
        };
        let wanting: Vec<&Endpoint> = endpoints.iter().filter(|e| e.wants(event.name())).collect();
        let Some((last, others)) = wanting.split_last() else {
            return;
        };
        for endpoint in others {
            endpoint.enqueue(event.to_json());
        }
        last.enqueue(event.into_json());
    }

    /// Counts releases (with their arrivals) that a return cancelled.
    pub fn count_cancelled(&self, target: &Target, n: u64) {
        if let Some(metrics) = &self.shared.metrics {
            metrics
                .events
                .with_label_values(&[target.protocol(), "cancelled"])
                .inc_by(n);
        }
    }

    /// The target and the channel name its endpoints know, for a hub channel: an app's
    /// channel (`pusher~{app}~{name}`) goes to that app's endpoints as `name`.
    pub fn target_of(&self, channel: &crate::protocol::ChannelName) -> (Target, String) {
        match crate::pusher::channel::split(channel) {
            Some((app, name)) => (Target::Pusher(app.into()), name.to_owned()),
            None => (Target::Native, channel.as_str().to_owned()),
        }
    }
}

/// Sends held events whose time is up, every tenth of the hold time (10-100 ms).
async fn sweep_held(webhooks: Webhooks, stop: CancellationToken) {
    let every = (webhooks.hold() / 10).clamp(Duration::from_millis(10), Duration::from_millis(100));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        for (target, event) in webhooks.shared.hold.due(tokio::time::Instant::now()) {
            webhooks.emit_unheld(&target, event);
        }
    }
}
