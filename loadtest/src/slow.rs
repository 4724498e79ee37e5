//! Scenario `slow`: does a share of clients that stop reading disturb everyone else?
//!
//! Phases: ramp N subscribers (the slow-designated ones, `--slow-fraction` of them spread
//! evenly, with a small `SO_RCVBUF` so the kernel cannot absorb much for them); publish
//! for two phases of `--phase-secs` each. Phase 1 is the baseline: everyone reads. At the
//! start of phase 2 the run marks the time and the slow clients stop reading; the server's
//! bounded queue for each of them should overflow and evict it (close 4008). Then drain,
//! and stop: the slow clients read again, without decoding, to see how they were ended.
//!
//! Healthy latency is split by publication time (before or after the mark), so the two
//! phases compare the same healthy clients; slow clients' deliveries are never measured.
//! Evictions come from the nodes' `pushwire_slow_consumer_evictions_total` (before and
//! after), and from what the slow clients found (close 4008, or a connection cut without
//! it). The verdict (whether or not `--require-zero-loss` is given) fails if a healthy
//! client lost, duplicated or reordered anything, was dropped, or if healthy p99 in phase 2 rose more than `--max-p99-increase-ms` above
//! phase 1's.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::time::sleep;

use crate::cli::{CommonArgs, PerConnectionAt, Ramped};
use crate::context::{SlowMode, is_slow};
use crate::fanout;
use crate::publish_phase::{self, ApiArgs, POLL, Plan, Publishing};
use crate::report::Results;
use crate::results::{ConnectionResults, LatencySummary, SlowResults};
use crate::scrape::{self, EVICTIONS, LIMIT_TRIPS};
use crate::wire::unix_micros;

#[derive(Debug, Clone, Args, Serialize)]
pub struct SlowArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub api: ApiArgs,
    /// Subscribers on the channel, slow ones included.
    #[arg(long, default_value_t = 500)]
    pub subscribers: usize,
    /// Share of subscribers (0 to 1) that stop reading in phase 2.
    #[arg(long, default_value_t = 0.1)]
    pub slow_fraction: f64,
    /// Length of each phase: baseline (all read), then with the slow clients not reading.
    #[arg(long, default_value_t = 20)]
    pub phase_secs: u64,
    /// Publications per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Size of each publication's JSON `data`. Before a node evicts a client that stopped
    /// reading, the node's kernel send buffer for it fills (autotuned up to
    /// `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default) and then its queue
    /// (`client.queue_max_bytes`, 1 MiB by default): at rate × payload bytes per second,
    /// that takes about 5 MiB / (rate × payload) seconds, which should be well under
    /// --phase-secs.
    #[arg(long, default_value_t = 24_000)]
    pub payload_bytes: usize,
    /// `SO_RCVBUF` of the slow clients' sockets, set before connecting (0: system default).
    #[arg(long, default_value_t = 4096)]
    pub slow_recv_buffer_bytes: usize,
    /// Fail when healthy p99 in phase 2 is more than this above phase 1's.
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_increase_ms: f64,
    /// Prometheus endpoints of the nodes (default: `/metrics` on each --url's host).
    #[arg(long, value_delimiter = ',')]
    pub metrics_url: Vec<String>,
}

impl SlowArgs {
    pub fn deadline(&self) -> Duration {
        let work = Duration::from_secs(2 * self.phase_secs + self.api.drain_secs + 25);
        self.common.deadline(self.subscribers, work)
    }
}

/// Runs the scenario and returns its results.
pub async fn run(args: &SlowArgs) -> anyhow::Result<Results> {
    anyhow::ensure!(
        args.slow_fraction > 0.0 && args.slow_fraction < 1.0,
        "--slow-fraction must be above 0 and below 1"
    );
    anyhow::ensure!(args.phase_secs > 0, "--phase-secs must be positive");
    let c = &args.common;
    let mut spec = c.fleet_spec(c.targets().await?, args.subscribers)?;
    spec.slow_fraction = args.slow_fraction;
    spec.slow_mode = SlowMode::OnSignal;
    spec.slow_recv_buffer = args.slow_recv_buffer_bytes;
    let channel = spec.channel.clone();
    let metrics = if args.metrics_url.is_empty() {
        scrape::metrics_urls(&c.url)
    } else {
        args.metrics_url.clone()
    };
    let http = reqwest::Client::new();
    let Ramped {
        mut fleet,
        at_ramp,
        ramp_secs,
        started,
        started_unix,
        mut watch,
        mut progress,
    } = Ramped::start(c, spec, args.subscribers, args.deadline(), POLL).await?;
    watch.ramp_done();
    watch.start_cpu(&fleet);
    let before = Counters::read(&http, &metrics).await;

    progress.phase("baseline");
    let plan = Plan {
        channel,
        channels: 1,
        random_channels: false,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        duration: Duration::from_secs(2 * args.phase_secs),
    };
    let publishing = Publishing::start(&args.api, c, &plan)?;
    let mut slowed = false;
    while !publishing.is_finished() {
        if !slowed && publishing.started.elapsed() >= Duration::from_secs(args.phase_secs) {
            fleet.slow_down(unix_micros()).await?;
            progress.phase("slow");
            slowed = true;
        }
        if progress.due() {
            progress.update(&fleet.snapshot(), &publishing.status());
        }
        sleep(POLL).await;
    }
    let published = publishing.finish().await?;

    progress.phase("drain");
    let stopped_reading = fleet.snapshot().counters.slow;
    let healthy = at_ramp.counters.ready.saturating_sub(stopped_reading);
    let expected = published.stats.total_published() * healthy;
    let limit = Duration::from_secs(args.api.drain_secs);
    let last = publish_phase::drain(&fleet, &mut progress, expected, limit, |_| true).await;
    let after = Counters::read(&http, &metrics).await;
    let watched = watch.finish(&fleet, at_ramp.counters.ready, PerConnectionAt::AfterRamp);
    progress.phase("stop");
    let snap = fleet
        .stop(Some(published.counts()), Duration::from_secs(10))
        .await?;
    progress.finish();

    let delivery = published.delivery(&snap, expected, last);
    let (baseline, slowed) = (
        LatencySummary::of(&snap.unmarked_latency()),
        LatencySummary::of(&snap.marked_latency),
    );
    let change = |a: u64, b: u64| b as i64 - a as i64;
    let slow = SlowResults {
        phase_secs: args.phase_secs,
        slow_designated: (0..args.subscribers)
            .filter(|&i| is_slow(i, args.slow_fraction))
            .count() as u64,
        slow_stopped_reading: stopped_reading,
        slow_recv_buffer_bytes: args.slow_recv_buffer_bytes,
        p50_change_us: change(baseline.p50_us, slowed.p50_us),
        p99_change_us: change(baseline.p99_us, slowed.p99_us),
        max_change_us: change(baseline.max_us, slowed.max_us),
        baseline,
        slowed,
        max_p99_increase_ms: args.max_p99_increase_ms,
        evictions_metric: Counters::growth(&before, &after, |c| c.evictions),
        write_timeouts_metric: Counters::growth(&before, &after, |c| c.write_timeouts),
        slow_found_4008: snap.counters.slow_evicted,
        slow_found_cut: snap.counters.slow_cut,
    };
    // Healthy clients must lose nothing, with or without --require-zero-loss.
    let mut verdict = fanout::verdict(true, args.subscribers as u64, &snap, &delivery);
    slow.judge(&mut verdict);
    let mut results = Results::new(
        "slow",
        started_unix,
        started,
        serde_json::to_value(args)?,
        ConnectionResults::new(args.subscribers, &at_ramp, ramp_secs, &snap),
        watched,
        &snap,
        verdict,
    );
    results.delivery = Some(delivery);
    results.slow = Some(slow);
    Ok(results)
}

/// The server counters this scenario reads, summed over the nodes.
#[derive(Debug, Clone, Copy)]
struct Counters {
    evictions: f64,
    write_timeouts: f64,
}

impl Counters {
    async fn read(http: &reqwest::Client, urls: &[String]) -> Option<Counters> {
        Some(Counters {
            evictions: scrape::sum(http, urls, EVICTIONS, "").await?,
            write_timeouts: scrape::sum(http, urls, LIMIT_TRIPS, "kind=\"write_timeout\"").await?,
        })
    }

    fn growth(
        before: &Option<Counters>,
        after: &Option<Counters>,
        field: impl Fn(&Counters) -> f64,
    ) -> Option<u64> {
        let (before, after) = (before.as_ref()?, after.as_ref()?);
        Some((field(after) - field(before)).max(0.0) as u64)
    }
}
