//! Scenario `fanout` (and the `channels` variant, `--channels C`): N subscribers on one
//! channel or spread over C channels, a publisher posting to the HTTP API at
//! a fixed rate, and every delivery checked for latency, loss, duplication and order.
//!
//! Phases: ramp the subscribers (publishing starts only once all are ready or failed, so
//! every ready subscriber should get every publication); publish for the duration; drain
//! until deliveries stop growing (or reach the expected total); stop the subscribers with
//! the per-stream publication counts so each can count what it lost.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::cli::{CommonArgs, PerConnectionAt};
use crate::fleet::{Fleet, Ramped};
use crate::progress::Progress;
use crate::publisher::{self, PublisherSpec, PublisherStats};
use crate::report::{
    ConnectionResults, DeliveryResults, LatencySummary, Results, Traffic, Verdict,
};
use crate::stats::Snapshot;

/// Streams a subscriber keeps trackers for (see `conn`).
const MAX_STREAMS: usize = 256;
const POLL: Duration = Duration::from_millis(100);
/// Drain ends once deliveries have not grown for this long.
const QUIET: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Base URL of the HTTP API (default: derived from the first --url).
    #[arg(long)]
    pub api_url: Option<String>,
    /// API key for `Authorization: Bearer`. The variable deliberately lacks the
    /// `PUSHWIRE_` prefix: the server refuses to start on unknown `PUSHWIRE_*` variables.
    /// Default with --spawn-nodes: the spawned nodes' key.
    #[arg(long, env = "LOADTEST_API_KEY", default_value = "")]
    #[serde(skip)]
    pub api_key: String,
    /// Subscribers on the channel.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Publications per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Size of each publication's JSON `data`.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// How long to publish.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Independent publisher streams, each strictly sequential (default: one per 25/s of
    /// rate, so a stream has 40 ms per request).
    #[arg(long)]
    pub publish_streams: Option<usize>,
    /// Spread the subscribers over this many channels (`CHANNEL.0`, `CHANNEL.1`, ...,
    /// connection `i` on `i % N`); publisher stream `s` publishes to channel `s % N`, so
    /// there are at least this many streams (at most 256).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Share of subscribers (0 to 1) that stop reading once subscribed (the `slow`
    /// scenario). They are left out of latency, loss and expected deliveries: compare the
    /// healthy subscribers' latency with a run without them.
    #[arg(long, default_value_t = 0.0)]
    pub slow_fraction: f64,
    /// Longest wait for in-flight deliveries after the last publication.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
}

impl FanoutArgs {
    pub fn deadline(&self) -> Duration {
        let work = Duration::from_secs(self.duration_secs + self.drain_secs + 15);
        self.common.deadline(self.subscribers, work)
    }

    fn streams(&self) -> usize {
        let auto = (self.rate / 25.0).ceil() as usize;
        self.publish_streams
            .unwrap_or(auto)
            .max(self.channels)
            .clamp(1, MAX_STREAMS)
    }

    fn api_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.api_url {
            return Ok(url.trim_end_matches('/').to_string());
        }
        let ws = self
            .common
            .url
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        let rest = ws
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow::anyhow!("cannot derive --api-url from {ws:?}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        Ok(format!("http://{authority}"))
    }
}

/// Runs the scenario and returns its results.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<Results> {
    anyhow::ensure!(
        args.rate > 0.0 && args.publish_streams != Some(0),
        "--rate and --publish-streams must be positive"
    );
    anyhow::ensure!(
        (1..=MAX_STREAMS).contains(&args.channels),
        "--channels must be between 1 and {MAX_STREAMS}"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&args.slow_fraction),
        "--slow-fraction must be at least 0 and below 1"
    );
    let c = &args.common;
    let targets = c.targets().await?;
    let mut spec = c.fleet_spec(targets, args.subscribers)?;
    spec.channels = args.channels;
    spec.slow_fraction = args.slow_fraction;
    let total = args.subscribers as u64;
    let Ramped {
        fleet,
        at_ramp: ramped,
        ramp_secs,
        started,
        started_unix,
        mut watch,
        mut progress,
    } = Ramped::start(c, spec, args.subscribers, args.deadline(), POLL).await?;
    watch.ramp_done();
    watch.start_cpu(&fleet);

    progress.phase("publish");
    let pstats = Arc::new(PublisherStats::new(args.streams()));
    let publish_started = Instant::now();
    let publisher = tokio::spawn(publisher::run(
        publisher_spec(args)?,
        Arc::clone(&pstats),
        CancellationToken::new(),
    ));
    while !publisher.is_finished() {
        let ok = pstats.ok.load(std::sync::atomic::Ordering::Relaxed);
        let rate = ok as f64 / publish_started.elapsed().as_secs_f64().max(1e-3);
        progress.update(&fleet.snapshot(), &format!("published {ok} ({rate:.0}/s)"));
        sleep(POLL).await;
    }
    publisher.await??;
    let publish_secs = publish_started.elapsed().as_secs_f64();

    progress.phase("drain");
    let expected = expected_deliveries(
        &pstats.published(),
        args.channels,
        args.subscribers,
        ramped.counters.ready,
    );
    // Slow subscribers owe nothing; with one channel that is exact, over several close.
    let healthy = ramped.counters.ready.saturating_sub(ramped.counters.slow);
    let expected =
        (expected as f64 * healthy as f64 / ramped.counters.ready.max(1) as f64).round() as u64;
    let last_delivery = drain(
        &fleet,
        &mut progress,
        expected,
        Duration::from_secs(args.drain_secs),
    )
    .await;
    let watched = watch.finish(&fleet, ramped.counters.ready, PerConnectionAt::AfterRamp);
    progress.phase("stop");
    let snap = fleet
        .stop(Some(pstats.published()), Duration::from_secs(10))
        .await?;
    progress.finish();

    let delivering_secs = (last_delivery - publish_started)
        .as_secs_f64()
        .max(publish_secs.min(1.0));
    let delivery = DeliveryResults {
        publish_streams: args.streams(),
        published: pstats.total_published(),
        publish_ok: pstats.ok.load(std::sync::atomic::Ordering::Relaxed),
        publish_failed: pstats.failed.load(std::sync::atomic::Ordering::Relaxed),
        publish_retries: pstats.retries.load(std::sync::atomic::Ordering::Relaxed),
        publish_rate_per_sec: pstats.total_published() as f64 / publish_secs.max(1e-9),
        publish_http_latency: LatencySummary::of(&pstats.http_latency()),
        publish_errors: pstats.errors(),
        expected,
        delivered: snap.seq.received,
        deliveries_per_sec: snap.seq.received as f64 / delivering_secs,
        latency: LatencySummary::of(&snap.delivery_latency),
        lost: snap.seq.lost,
        duplicates: snap.seq.duplicates,
        reordered: snap.seq.reordered,
    };
    let connections = ConnectionResults {
        target: total,
        ready: ramped.counters.ready,
        failed: snap.failed(),
        dropped: snap.counters.dropped,
        dead: snap.counters.dead,
        slow: snap.counters.slow,
        ramp_secs,
        connect_rate_per_sec: ramped.counters.ready as f64 / ramp_secs.max(1e-9),
        connect_latency: LatencySummary::of(&snap.connect_latency),
    };
    let verdict = verdict(
        c.require_zero_loss,
        args.subscribers as u64,
        &snap,
        &delivery,
    );
    Ok(Results {
        scenario: "fanout".into(),
        started_unix,
        wall_secs: started.elapsed().as_secs_f64(),
        params: serde_json::to_value(args)?,
        connections,
        servers: watched.servers,
        loadtest: watched.loadtest,
        machine: watched.machine,
        delivery: Some(delivery),
        traffic: Traffic::from_snapshot(&snap),
        codes: snap.codes.clone(),
        verdict,
    })
}

fn publisher_spec(args: &FanoutArgs) -> anyhow::Result<PublisherSpec> {
    Ok(PublisherSpec {
        api_url: args.api_url()?,
        api_key: args.api_key.clone(),
        channel: args.common.channel.clone(),
        channels: args.channels,
        rate: args.rate,
        streams: args.streams(),
        payload_bytes: args.payload_bytes,
        duration: Duration::from_secs(args.duration_secs),
        request_timeout: Duration::from_secs(5),
        max_retries: 5,
    })
}

/// Deliveries owed: each stream's publications times the subscribers of its channel. With
/// one channel that is `ready × published`; over several, subscribers are counted per
/// channel from the round-robin placement, scaled by the share that became ready.
pub fn expected_deliveries(
    published: &[u64],
    channels: usize,
    subscribers: usize,
    ready: u64,
) -> u64 {
    let channels = channels.max(1);
    let on_channel =
        |c: usize| (subscribers / channels + usize::from(c < subscribers % channels)) as u64;
    let full: u64 = published
        .iter()
        .enumerate()
        .map(|(s, &n)| n * on_channel(s % channels))
        .sum();
    if ready >= subscribers as u64 || subscribers == 0 {
        full
    } else {
        (full as f64 * ready as f64 / subscribers as f64).round() as u64
    }
}

/// Waits until `expected` messages arrived, deliveries went quiet, or `limit` passed.
/// Returns when the last delivery was seen.
async fn drain(fleet: &Fleet, progress: &mut Progress, expected: u64, limit: Duration) -> Instant {
    let start = Instant::now();
    let mut last_count = fleet.snapshot().counters.messages;
    let mut last_change = start;
    loop {
        let snap = fleet.snapshot();
        progress.update(
            &snap,
            &format!(
                "draining, {} of {expected} delivered",
                snap.counters.messages
            ),
        );
        let now = Instant::now();
        if snap.counters.messages != last_count {
            (last_count, last_change) = (snap.counters.messages, now);
        }
        if last_count >= expected || now - last_change >= QUIET || now - start >= limit {
            return last_change;
        }
        sleep(POLL).await;
    }
}

fn verdict(zero_loss: bool, target: u64, snap: &Snapshot, d: &DeliveryResults) -> Verdict {
    let mut failures = Vec::new();
    if zero_loss {
        let checks = [
            (
                target - snap.counters.ready.min(target),
                "subscribers not ready",
            ),
            (snap.counters.dropped, "subscribers dropped"),
            (d.publish_failed, "publications failed"),
            (d.lost, "messages lost"),
            (d.duplicates, "messages duplicated"),
            (d.reordered, "messages reordered"),
        ];
        failures.extend(
            checks
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}")),
        );
    }
    Verdict {
        passed: failures.is_empty(),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_deliveries_follow_each_streams_channel() {
        // One channel: every ready subscriber gets every publication.
        assert_eq!(expected_deliveries(&[3, 4], 1, 10, 10), 70);
        // 10 subscribers over 3 channels: 4, 3, 3; streams 0..4 go to channels 0, 1, 2, 0.
        assert_eq!(expected_deliveries(&[1, 1, 1, 1], 3, 10, 10), 4 + 3 + 3 + 4);
        // Half ready: half the deliveries.
        assert_eq!(expected_deliveries(&[2], 1, 10, 5), 10);
    }
}
