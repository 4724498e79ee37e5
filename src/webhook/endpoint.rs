//! One webhook endpoint: a bounded queue of events and the task that empties it. The task
//! gathers a batch (up to `batch_max_events`, waiting at most `batch_wait_ms` for more),
//! signs the `{"time_ms", "events"}` body and POSTs it, retrying failures with backoff
//! until `retry_max_secs`, through the endpoint's circuit breaker.
//!
//! Architecture Invariant: nothing that emits an event ever waits for an endpoint. A full
//! queue drops the event (counted, logged at most every 10 s), so a slow or dead endpoint
//! costs its own queue's memory and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::WebhooksConfig;
use super::metrics::ProtocolMetrics;
use super::retry::retry_delay;
use super::signer::Signer;
use crate::proxy::breaker::{Admit, Breaker, BreakerSettings, BreakerState};

/// How often a dropping endpoint may log.
const DROP_LOG_INTERVAL_MS: u64 = 10_000;

/// The sending side of one endpoint.
pub struct Endpoint {
    url: Arc<str>,
    /// Event names this endpoint wants; empty: all.
    events: Vec<String>,
    queue: mpsc::Sender<Value>,
    metrics: ProtocolMetrics,
    dropped_since_log: AtomicU64,
    last_drop_log_ms: AtomicU64,
    started: std::time::Instant,
}

/// What a sender task needs.
pub struct Delivery {
    pub url: Arc<str>,
    pub signer: Signer,
    pub settings: WebhooksConfig,
    pub client: reqwest::Client,
    pub metrics: ProtocolMetrics,
}

impl Endpoint {
    /// An endpoint and the receiving end its sender task (`run`) consumes.
    pub fn new(
        url: &str,
        events: Vec<String>,
        capacity: usize,
        metrics: ProtocolMetrics,
    ) -> (Endpoint, mpsc::Receiver<Value>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let endpoint = Endpoint {
            url: url.into(),
            events,
            queue,
            metrics,
            dropped_since_log: AtomicU64::new(0),
            last_drop_log_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
        };
        (endpoint, rx)
    }

    pub fn url(&self) -> &Arc<str> {
        &self.url
    }

    pub fn wants(&self, name: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == name)
    }

    /// Queues `event` without waiting; a full queue drops it.
    pub fn enqueue(&self, event: Value) {
        match self.queue.try_send(event) {
            Ok(()) => self.metrics.queue_depth.inc(),
            Err(_) => self.dropped(),
        }
    }

    fn dropped(&self) {
        self.metrics.count_dropped();
        let dropped = self.dropped_since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= DROP_LOG_INTERVAL_MS;
        if due
            && self
                .last_drop_log_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.dropped_since_log.fetch_sub(dropped, Ordering::Relaxed);
            tracing::warn!(url = %self.url, dropped, "webhook queue full; dropping events");
        }
    }
}

/// The sender task of one endpoint: runs until `stop`.
pub async fn run(delivery: Delivery, mut queue: mpsc::Receiver<Value>, stop: CancellationToken) {
    let settings = &delivery.settings;
    let breaker = Breaker::new(BreakerSettings {
        consecutive_failures: settings.breaker_failures,
        failure_ratio: 0.0,
        window: 1,
        open_for: Duration::from_millis(settings.breaker_open_ms),
    });
    let mut open = false;
    loop {
        let Some(batch) = next_batch(&mut queue, settings, &stop).await else {
            return;
        };
        delivery.metrics.queue_depth.sub(batch.len() as i64);
        let body = body(&batch);
        let sent = tokio::select! {
            _ = stop.cancelled() => return,
            sent = deliver(&delivery, &body, &breaker, &mut open) => sent,
        };
        let n = batch.len() as u64;
        if sent {
            delivery.metrics.count_sent(n);
        } else {
            delivery.metrics.count_failed(n);
        }
    }
}

/// Waits for one event, then gathers more for up to `batch_wait_ms`.
async fn next_batch(
    queue: &mut mpsc::Receiver<Value>,
    settings: &WebhooksConfig,
    stop: &CancellationToken,
) -> Option<Vec<Value>> {
    let first = tokio::select! {
        _ = stop.cancelled() => return None,
        event = queue.recv() => event?,
    };
    let mut batch = vec![first];
    let deadline = Instant::now() + Duration::from_millis(settings.batch_wait_ms);
    while batch.len() < settings.batch_max_events {
        tokio::select! {
            event = queue.recv() => match event {
                Some(event) => batch.push(event),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Some(batch)
}

/// The request body: `{"time_ms": <unix ms>, "events": [...]}`.
fn body(events: &[Value]) -> Vec<u8> {
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let body = serde_json::json!({ "time_ms": time_ms, "events": events });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Posts `body` until it is taken or `retry_max_secs` ran out; true when it was taken.
/// While the breaker is open nothing goes out; the batch waits for the probe.
async fn deliver(delivery: &Delivery, body: &[u8], breaker: &Breaker, open: &mut bool) -> bool {
    let settings = &delivery.settings;
    let give_up = Instant::now() + Duration::from_secs(settings.retry_max_secs);
    let initial = Duration::from_millis(settings.retry_initial_delay_ms);
    let max_delay = Duration::from_millis(settings.retry_max_delay_ms);
    let mut attempt = 0u32;
    loop {
        let admitted = breaker.admit();
        if admitted == Admit::Refused {
            // Open (or another probe out): wait for the end of the open period.
            let ready = Instant::now() + breaker.open_for().max(Duration::from_millis(10));
            if ready > give_up {
                break;
            }
            tokio::time::sleep_until(ready).await;
            continue;
        }
        let result = post(delivery, body).await;
        let state = breaker.record(admitted, result.is_ok());
        track_breaker(delivery, state, open, result.as_ref().err());
        match result {
            Ok(()) => {
                delivery.metrics.requests_ok.inc();
                return true;
            }
            Err(err) => {
                delivery.metrics.requests_error.inc();
                tracing::debug!(url = %delivery.url, error = %err, attempt, "webhook request failed");
            }
        }
        attempt += 1;
        let next = Instant::now() + retry_delay(attempt, initial, max_delay);
        if next > give_up {
            break;
        }
        delivery.metrics.retries.inc();
        tokio::time::sleep_until(next).await;
    }
    tracing::warn!(url = %delivery.url, attempts = attempt, "webhook batch given up after retries");
    false
}

/// Keeps `pushwire_webhook_breakers_open` and the log in step with the breaker.
fn track_breaker(
    delivery: &Delivery,
    state: BreakerState,
    open: &mut bool,
    error: Option<&PostError>,
) {
    let now_open = state != BreakerState::Closed;
    if now_open == *open {
        return;
    }
    *open = now_open;
    if now_open {
        delivery.metrics.breakers_open.inc();
        let error = error.map(ToString::to_string).unwrap_or_default();
        tracing::warn!(url = %delivery.url, error = %error, "webhook endpoint failing; breaker open");
    } else {
        delivery.metrics.breakers_open.dec();
        tracing::info!(url = %delivery.url, "webhook endpoint recovered; breaker closed");
    }
}

/// Why one POST failed.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("endpoint answered {0}")]
    Status(reqwest::StatusCode),
}

async fn post(delivery: &Delivery, body: &[u8]) -> Result<(), PostError> {
    let mut request = delivery
        .client
        .post(&*delivery.url)
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in delivery.signer.headers(body) {
        request = request.header(name, value);
    }
    let response = request.body(body.to_vec()).send().await?;
    let status = response.status();
    // Reading the (small) answer lets the connection be reused.
    let _ = response.bytes().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(PostError::Status(status))
    }
}
