//! The publisher: `POST /api/publish` at a target rate, each publication carrying its send
//! time and sequence number for the subscribers to check.
//!
//! The rate is split over `streams` independent tasks. Within a stream, requests are strictly
//! sequential (the next starts once the previous one answered), so the server has a defined
//! order per stream and any reordering a subscriber sees is the server's doing. A failed
//! request (transport error, 429, 5xx) is retried with the same `idempotency_key`, so a retry
//! can never publish twice; after `max_retries` the seq is given up and counted as failed
//! (subscribers will then report it lost too). The `ts` of a publication is taken at its
//! first attempt, so latency includes retries.
//!
//! Channels: stream `s` publishes to channel `s mod C`, or, with `random_channels`, each
//! publication to a channel drawn at random. Then seqs are counted per (stream, channel),
//! so a subscriber of one channel still sees each stream's seqs as 0, 1, 2, ... with no
//! gaps, and [`PublisherStats::published`] holds one count per pair, stream-major.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep};
use tokio_util::sync::CancellationToken;

use crate::rng::Rng;
use crate::stats::new_histogram;
use crate::wire::{bench_data, channel_for, publish_body, unix_micros};

/// What to publish, where, and how fast.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    /// Base URL of the HTTP API, e.g. `http://127.0.0.1:8080`.
    pub api_url: String,
    pub api_key: String,
    pub channel: String,
    /// Stream `s` publishes to `channel_for(channel, channels, s)`.
    pub channels: usize,
    /// Each publication goes to a random one of the `channels` instead.
    pub random_channels: bool,
    /// Publications per second, all streams together.
    pub rate: f64,
    pub streams: usize,
    pub payload_bytes: usize,
    pub duration: Duration,
    pub request_timeout: Duration,
    pub max_retries: u32,
    /// Publish through this app's Pusher HTTP API (`/apps/{id}/events`, signed).
    pub pusher: Option<crate::pusher::PusherApp>,
}

/// Live publisher counters.
#[derive(Debug)]
pub struct PublisherStats {
    /// Seqs issued per stream, or per (stream, channel) with random channels: counter `k`
    /// published seqs `0..attempted[k]`.
    attempted: Vec<AtomicU64>,
    /// Counters per stream: the number of channels with random channels, else 1.
    slots: usize,
    pub ok: AtomicU64,
    pub retries: AtomicU64,
    pub failed: AtomicU64,
    /// Request round trip of successful publishes, microseconds.
    http_latency: Mutex<Histogram<u64>>,
    /// Failure reasons, e.g. `status:503` or `transport:...`.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl PublisherStats {
    /// Stats for `streams` streams with `slots` counters each (see `attempted`).
    pub fn new(streams: usize, slots: usize) -> PublisherStats {
        let slots = slots.max(1);
        PublisherStats {
            attempted: (0..streams * slots).map(|_| AtomicU64::new(0)).collect(),
            slots,
            ok: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            http_latency: Mutex::new(new_histogram()),
            errors: Mutex::default(),
        }
    }

    /// Seqs issued per counter (stream, or stream × channel), what subscribers should each
    /// have received.
    pub fn published(&self) -> Vec<u64> {
        self.attempted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    pub fn total_published(&self) -> u64 {
        self.published().iter().sum()
    }

    pub fn http_latency(&self) -> Histogram<u64> {
        self.http_latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| new_histogram())
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn error(&self, reason: String) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(reason).or_default() += 1;
        }
    }
}

/// Publishes until `spec.duration` has passed or `stop` is cancelled.
pub async fn run(
    spec: PublisherSpec,
    stats: std::sync::Arc<PublisherStats>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(spec.request_timeout)
        .pool_max_idle_per_host(spec.streams)
        .tcp_nodelay(true)
        .build()?;
    let base = spec.api_url.trim_end_matches('/');
    let url = match &spec.pusher {
        Some(app) => format!("{base}/apps/{}/events", app.id),
        None => format!("{base}/api/publish"),
    };
    let auth = format!("Bearer {}", spec.api_key);
    let period = Duration::from_secs_f64(spec.streams as f64 / spec.rate.max(0.001));
    let end = Instant::now() + spec.duration;
    let mut set = JoinSet::new();
    for stream in 0..spec.streams {
        let job = Stream {
            index: stream,
            client: client.clone(),
            url: url.clone(),
            auth: auth.clone(),
            spec: spec.clone(),
            stats: std::sync::Arc::clone(&stats),
        };
        // Streams start staggered across one period so publications are evenly spaced.
        let offset = period.mul_f64(stream as f64 / spec.streams as f64);
        set.spawn(job.run(Instant::now() + offset, period, end, stop.clone()));
    }
    while set.join_next().await.is_some() {}
    Ok(())
}

struct Stream {
    index: usize,
    client: reqwest::Client,
    url: String,
    auth: String,
    spec: PublisherSpec,
    stats: std::sync::Arc<PublisherStats>,
}

impl Stream {
    async fn run(self, first: Instant, period: Duration, end: Instant, stop: CancellationToken) {
        let mut tick = interval_at(first, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut rng = Rng::from_clock(self.index as u64);
        let channels = self.spec.channels.max(1);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            if Instant::now() >= end || stop.is_cancelled() {
                return;
            }
            let (channel, counter) = if self.spec.random_channels {
                let c = rng.below(channels as u64) as usize;
                (c, self.index * self.stats.slots + c)
            } else {
                (self.index, self.index)
            };
            let seq = self.stats.attempted[counter].fetch_add(1, Ordering::Relaxed);
            self.publish(seq, channel).await;
        }
    }

    /// One publication to channel number `channel` (see `channel_for`), with its retries.
    async fn publish(&self, seq: u64, channel: usize) {
        let ts = unix_micros();
        let data = bench_data(ts, seq, self.index as u32, self.spec.payload_bytes);
        let channel = channel_for(&self.spec.channel, self.spec.channels, channel);
        let body = match &self.spec.pusher {
            Some(_) => crate::pusher::event_body(&channel, &data),
            None => publish_body(&channel, &data, &format!("lt-{ts}-{}-{seq}", self.index)),
        };
        let Ok(body) = body else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        for attempt in 0..=self.spec.max_retries {
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                sleep(Duration::from_millis(20 << attempt.min(6))).await;
            }
            let sent = Instant::now();
            let request = match &self.spec.pusher {
                Some(app) => {
                    let path = self.url.split_once("/apps/").map_or("", |(_, p)| p);
                    let query = crate::pusher::signed_query(app, &format!("/apps/{path}"), &body);
                    self.client.post(format!("{}?{query}", self.url))
                }
                None => self
                    .client
                    .post(&self.url)
                    .header("authorization", &self.auth),
            };
            let response = request
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let status = match response {
                Ok(r) => r.status(),
                Err(err) => {
                    self.stats.error(format!("transport:{}", short(&err)));
                    continue;
                }
            };
            if status.is_success() {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut h) = self.stats.http_latency.lock() {
                    h.saturating_record(sent.elapsed().as_micros() as u64);
                }
                return;
            }
            self.stats.error(format!("status:{}", status.as_u16()));
            if !(status.is_server_error() || status.as_u16() == 429) {
                break; // 4xx: retrying cannot help
            }
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
    }
}

fn short(err: &reqwest::Error) -> String {
    let text = if err.is_timeout() {
        "timeout".to_string()
    } else {
        err.to_string()
    };
    text.chars().take(80).collect()
}
