//! The publishing phase that `fanout`, `channels`, `churn` and `slow` share: the API
//! options, starting the publisher and following it, the drain that waits for deliveries
//! still in flight, and the delivery section of the results.
//!
//! Each scenario drives the loop itself (`while !publishing.is_finished()`), because each
//! does something of its own on the way: `churn` kills a node, `slow` tells clients to stop
//! reading.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::cli::CommonArgs;
use crate::cluster::{LocalCluster, SPAWNED_API_KEY};
use crate::fleet::Fleet;
use crate::progress::Progress;
use crate::publisher::{self, PublisherSpec, PublisherStats};
use crate::results::{DeliveryResults, LatencySummary};
use crate::stats::{CounterSnapshot, Snapshot};

/// How often the phases refresh the display and check their conditions.
pub const POLL: Duration = Duration::from_millis(100);
/// Streams a subscriber keeps trackers for (see `session`).
pub const MAX_STREAMS: usize = 256;
/// Drain ends once deliveries have not grown for this long.
const QUIET: Duration = Duration::from_secs(2);

/// Where and how the publisher posts, for every publishing scenario.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ApiArgs {
    /// Base URL of the HTTP API (default: derived from the first --url; with
    /// --spawn-nodes, the first node's).
    #[arg(long)]
    pub api_url: Option<String>,
    /// API key for `Authorization: Bearer`. The variable deliberately lacks the
    /// `PUSHWIRE_` prefix: the server refuses to start on unknown `PUSHWIRE_*` variables.
    /// Default with --spawn-nodes: the spawned nodes' key.
    #[arg(long, env = "LOADTEST_API_KEY", default_value = "")]
    #[serde(skip)]
    pub api_key: String,
    /// Independent publisher streams, each strictly sequential (default: one per 25/s of
    /// rate, so a stream has 40 ms per request).
    #[arg(long)]
    pub publish_streams: Option<usize>,
    /// Longest wait for in-flight deliveries after the last publication.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
}

impl ApiArgs {
    /// With a spawned cluster: publish to its first node, with its key, unless told otherwise.
    pub fn use_cluster(&mut self, cluster: &LocalCluster) {
        if let Some(first) = cluster.api_urls.first() {
            self.api_url.get_or_insert_with(|| first.clone());
        }
        if self.api_key.is_empty() {
            self.api_key = SPAWNED_API_KEY.to_string();
        }
    }

    /// Publisher streams for `rate`, at least `min`.
    pub fn streams(&self, rate: f64, min: usize) -> usize {
        let auto = (rate / 25.0).ceil() as usize;
        self.publish_streams
            .unwrap_or(auto)
            .max(min)
            .clamp(1, MAX_STREAMS)
    }

    /// `--api-url`, or `http://` plus the authority of the first `--url`.
    pub fn base_url(&self, common: &CommonArgs) -> anyhow::Result<String> {
        if let Some(url) = &self.api_url {
            return Ok(url.trim_end_matches('/').to_string());
        }
        let ws = common.url.first().map(String::as_str).unwrap_or_default();
        let rest = ws
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow::anyhow!("cannot derive --api-url from {ws:?}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        Ok(format!("http://{authority}"))
    }
}

/// What one publishing phase publishes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub channel: String,
    pub channels: usize,
    pub random_channels: bool,
    pub rate: f64,
    pub payload_bytes: usize,
    pub duration: Duration,
}

/// A publisher at work.
#[derive(Debug)]
pub struct Publishing {
    pub stats: Arc<PublisherStats>,
    pub started: Instant,
    pub streams: usize,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Publishing {
    /// Starts publishing `plan` through the API `api` names.
    pub fn start(api: &ApiArgs, common: &CommonArgs, plan: &Plan) -> anyhow::Result<Publishing> {
        anyhow::ensure!(
            plan.rate > 0.0 && api.publish_streams != Some(0),
            "--rate and --publish-streams must be positive"
        );
        let min_streams = if plan.random_channels {
            1
        } else {
            plan.channels
        };
        Publishing::start_streams(api, common, plan, api.streams(plan.rate, min_streams))
    }

    /// A probe beside the main publisher: `rate` publications/s to `CHANNEL-probe`, which
    /// nobody subscribes to, one stream per 25/s. Its HTTP round trip shows whether the
    /// main publisher's fan-out delays an unrelated publish.
    pub fn start_probe(
        api: &ApiArgs,
        common: &CommonArgs,
        main: &Plan,
        rate: f64,
    ) -> anyhow::Result<Publishing> {
        let plan = Plan {
            channel: format!("{}-probe", main.channel),
            channels: 1,
            random_channels: false,
            rate,
            ..main.clone()
        };
        let streams = ((rate / 25.0).ceil() as usize).clamp(1, MAX_STREAMS);
        Publishing::start_streams(api, common, &plan, streams)
    }

    fn start_streams(
        api: &ApiArgs,
        common: &CommonArgs,
        plan: &Plan,
        streams: usize,
    ) -> anyhow::Result<Publishing> {
        let slots = if plan.random_channels {
            plan.channels
        } else {
            1
        };
        let spec = PublisherSpec {
            api_url: api.base_url(common)?,
            api_key: api.api_key.clone(),
            channel: plan.channel.clone(),
            channels: plan.channels,
            random_channels: plan.random_channels,
            rate: plan.rate,
            streams,
            payload_bytes: plan.payload_bytes,
            duration: plan.duration,
            request_timeout: Duration::from_secs(5),
            max_retries: 5,
            pusher: (common.encoding == crate::codec::Encoding::Pusher)
                .then(|| common.pusher_app.clone())
                .flatten(),
        };
        let stats = Arc::new(PublisherStats::new(streams, slots));
        let task = tokio::spawn(publisher::run(
            spec,
            Arc::clone(&stats),
            CancellationToken::new(),
        ));
        Ok(Publishing {
            stats,
            started: Instant::now(),
            streams,
            task,
        })
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// "published N (R/s)" for the progress line.
    pub fn status(&self) -> String {
        let ok = self.stats.ok.load(Ordering::Relaxed);
        let rate = ok as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        format!("published {ok} ({rate:.0}/s)")
    }

    /// Waits for the publisher to end; how long it published, in seconds.
    pub async fn finish(self) -> anyhow::Result<Published> {
        self.task.await??;
        Ok(Published {
            secs: self.started.elapsed().as_secs_f64(),
            stats: self.stats,
            started: self.started,
            streams: self.streams,
        })
    }
}

/// A finished publishing phase.
#[derive(Debug)]
pub struct Published {
    pub stats: Arc<PublisherStats>,
    pub started: Instant,
    pub secs: f64,
    pub streams: usize,
}

impl Published {
    pub fn counts(&self) -> Vec<u64> {
        self.stats.published()
    }

    /// The probe section of the results, when this was a probe publisher.
    pub fn probe(&self) -> crate::results::ProbeResults {
        let p = &self.stats;
        crate::results::ProbeResults {
            published: p.total_published(),
            publish_ok: p.ok.load(Ordering::Relaxed),
            publish_failed: p.failed.load(Ordering::Relaxed),
            publish_http_latency: LatencySummary::of(&p.http_latency()),
        }
    }

    /// The delivery section of the results, from the final snapshot.
    pub fn delivery(
        &self,
        snap: &Snapshot,
        expected: u64,
        last_delivery: Instant,
    ) -> DeliveryResults {
        let p = &self.stats;
        let delivering_secs = (last_delivery - self.started)
            .as_secs_f64()
            .max(self.secs.min(1.0));
        DeliveryResults {
            publish_streams: self.streams,
            published: p.total_published(),
            publish_ok: p.ok.load(Ordering::Relaxed),
            publish_failed: p.failed.load(Ordering::Relaxed),
            publish_retries: p.retries.load(Ordering::Relaxed),
            publish_rate_per_sec: p.total_published() as f64 / self.secs.max(1e-9),
            publish_http_latency: LatencySummary::of(&p.http_latency()),
            probe: None,
            publish_errors: p.errors(),
            expected,
            delivered: snap.seq.received,
            deliveries_per_sec: snap.seq.received as f64 / delivering_secs,
            latency: LatencySummary::of(&snap.delivery_latency),
            lost: snap.seq.lost,
            duplicates: snap.seq.duplicates,
            reordered: snap.seq.reordered,
        }
    }
}

/// Waits until `expected` first receipts (`fresh`) arrived or they stopped growing for a
/// while, in both cases only once `settled` holds; or until `limit` passed. Returns when
/// the last delivery was seen.
pub async fn drain(
    fleet: &Fleet,
    progress: &mut Progress,
    expected: u64,
    limit: Duration,
    settled: impl Fn(&CounterSnapshot) -> bool,
) -> Instant {
    let start = Instant::now();
    let mut last_count = fleet.counters().fresh;
    let mut last_change = start;
    loop {
        let counters = fleet.counters();
        let fresh = counters.fresh;
        if progress.due() {
            let status = format!("draining, {fresh} of {expected} delivered");
            progress.update(&fleet.snapshot(), &status);
        }
        let now = Instant::now();
        if fresh != last_count {
            (last_count, last_change) = (fresh, now);
        }
        let done = last_count >= expected || now - last_change >= QUIET;
        if (done && settled(&counters)) || now - start >= limit {
            return last_change;
        }
        sleep(POLL).await;
    }
}
