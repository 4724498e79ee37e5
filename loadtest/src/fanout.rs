//! Scenario `fanout`: N subscribers on one channel (or spread over C channels with
//! `--channels`, stream `s` publishing to channel `s mod C`), a publisher posting to the
//! HTTP API at a fixed rate, and every delivery checked for latency, loss, duplication and
//! order. The `channels` scenario runs the same phases with publications to random
//! channels (see `channels`).
//!
//! Phases: ramp the subscribers (publishing starts only once all are ready or failed, so
//! every ready subscriber should get every publication); publish for the duration; drain
//! until deliveries stop growing (or reach the expected total); stop the subscribers with
//! the per-stream publication counts so each can count what it lost.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::time::sleep;

use crate::cli::{CommonArgs, PerConnectionAt, Ramped};
use crate::publish_phase::{self, ApiArgs, MAX_STREAMS, POLL, Plan, Publishing};
use crate::report::Results;
use crate::results::{ConnectionResults, DeliveryResults, Verdict};
use crate::stats::Snapshot;

/// Bound on `channels --channels`: the publisher's counts (streams × channels) travel to
/// every worker process with the stop command.
const MAX_RANDOM_CHANNELS: usize = 10_000;

#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub api: ApiArgs,
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
    /// Spread the subscribers over this many channels (`CHANNEL.0`, `CHANNEL.1`, ...,
    /// connection `i` on `i % N`); publisher stream `s` publishes to channel `s % N`, so
    /// there are at least this many streams (at most 256). The `channels` scenario
    /// publishes to random channels instead.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Share of subscribers (0 to 1) that never read once subscribed. They are left out of
    /// latency, loss and expected deliveries. The `slow` scenario compares healthy
    /// latency before and after clients stop reading, in one run.
    #[arg(long, default_value_t = 0.0)]
    pub slow_fraction: f64,
    /// Also publish this many publications/s to `CHANNEL-probe`, which nobody subscribes
    /// to, and report their HTTP round trip apart: whether the fan-out delays an unrelated
    /// publish on the same node.
    #[arg(long, default_value_t = 0.0)]
    pub probe_rate: f64,
}

impl FanoutArgs {
    pub fn deadline(&self) -> Duration {
        let work = Duration::from_secs(self.duration_secs + self.api.drain_secs + 15);
        self.common.deadline(self.subscribers, work)
    }
}

/// What a fan-out run does; `fanout` and `channels` fill it from their options.
#[derive(Debug)]
pub struct FanoutRun<'a> {
    pub scenario: &'static str,
    pub common: &'a CommonArgs,
    pub api: &'a ApiArgs,
    pub subscribers: usize,
    pub plan: Plan,
    pub slow_fraction: f64,
    /// Publications/s of the probe publisher (0: none).
    pub probe_rate: f64,
    pub deadline: Duration,
    pub params: serde_json::Value,
}

/// Runs the `fanout` scenario and returns its results.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<Results> {
    run_plan(FanoutRun {
        scenario: "fanout",
        common: &args.common,
        api: &args.api,
        subscribers: args.subscribers,
        plan: Plan {
            channel: args.common.channel_or(crate::cli::DEFAULT_CHANNEL),
            channels: args.channels,
            random_channels: false,
            rate: args.rate,
            payload_bytes: args.payload_bytes,
            duration: Duration::from_secs(args.duration_secs),
        },
        slow_fraction: args.slow_fraction,
        probe_rate: args.probe_rate,
        deadline: args.deadline(),
        params: serde_json::to_value(args)?,
    })
    .await
}

/// Runs a fan-out: ramp, publish, drain, stop.
pub async fn run_plan(run: FanoutRun<'_>) -> anyhow::Result<Results> {
    let plan = &run.plan;
    let max_channels = if plan.random_channels {
        MAX_RANDOM_CHANNELS
    } else {
        MAX_STREAMS
    };
    anyhow::ensure!(
        (1..=max_channels).contains(&plan.channels),
        "--channels must be between 1 and {max_channels}"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&run.slow_fraction),
        "--slow-fraction must be at least 0 and below 1"
    );
    let c = run.common;
    let targets = c.targets().await?;
    let mut spec = c.fleet_spec(targets, run.subscribers)?;
    spec.channels = plan.channels;
    spec.random_channels = plan.random_channels;
    spec.slow_fraction = run.slow_fraction;
    let Ramped {
        fleet,
        at_ramp: ramped,
        ramp_secs,
        started,
        started_unix,
        mut watch,
        mut progress,
    } = Ramped::start(c, spec, run.subscribers, run.deadline, POLL).await?;
    watch.ramp_done();
    watch.start_cpu(&fleet);

    progress.phase("publish");
    let publishing = Publishing::start(run.api, c, plan)?;
    let probing = (run.probe_rate > 0.0)
        .then(|| Publishing::start_probe(run.api, c, plan, run.probe_rate))
        .transpose()?;
    while !publishing.is_finished() {
        if progress.due() {
            progress.update(&fleet.snapshot(), &publishing.status());
        }
        sleep(POLL).await;
    }
    let published = publishing.finish().await?;
    let probe = match probing {
        Some(p) => Some(p.finish().await?.probe()),
        None => None,
    };

    progress.phase("drain");
    let expected = expected_deliveries(
        &published.counts(),
        plan.channels,
        plan.random_channels,
        run.subscribers,
        ramped.counters.ready,
    );
    // Slow subscribers owe nothing; with one channel that is exact, over several close.
    let healthy = ramped.counters.ready.saturating_sub(ramped.counters.slow);
    let expected =
        (expected as f64 * healthy as f64 / ramped.counters.ready.max(1) as f64).round() as u64;
    let drain_limit = Duration::from_secs(run.api.drain_secs);
    let last_delivery =
        publish_phase::drain(&fleet, &mut progress, expected, drain_limit, |_| true).await;
    let watched = watch.finish(&fleet, ramped.counters.ready, PerConnectionAt::AfterRamp);
    progress.phase("stop");
    let snap = fleet
        .stop(Some(published.counts()), Duration::from_secs(10))
        .await?;
    progress.finish();

    let mut delivery = published.delivery(&snap, expected, last_delivery);
    delivery.probe = probe;
    let connections = ConnectionResults::new(run.subscribers, &ramped, ramp_secs, &snap);
    let verdict = verdict(
        c.require_zero_loss,
        run.subscribers as u64,
        &snap,
        &delivery,
    );
    let mut results = Results::new(
        run.scenario,
        started_unix,
        started,
        run.params,
        connections,
        watched,
        &snap,
        verdict,
    );
    results.delivery = Some(delivery);
    Ok(results)
}

/// Deliveries owed: each publication times the subscribers of its channel. `published`
/// holds one count per stream (stream `s` on channel `s mod channels`), or with
/// `random_channels` one per (stream, channel), stream-major. Subscribers are counted per
/// channel from the round-robin placement, scaled by the share that became ready.
pub fn expected_deliveries(
    published: &[u64],
    channels: usize,
    random_channels: bool,
    subscribers: usize,
    ready: u64,
) -> u64 {
    let channels = channels.max(1);
    let on_channel =
        |c: usize| (subscribers / channels + usize::from(c < subscribers % channels)) as u64;
    let full: u64 = published
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let channel = if random_channels { k % channels } else { k };
            n * on_channel(channel % channels)
        })
        .sum();
    if ready >= subscribers as u64 || subscribers == 0 {
        full
    } else {
        (full as f64 * ready as f64 / subscribers as f64).round() as u64
    }
}

/// The zero-loss checks every fan-out run makes.
pub fn verdict(zero_loss: bool, target: u64, snap: &Snapshot, d: &DeliveryResults) -> Verdict {
    let mut failures = Vec::new();
    if zero_loss {
        let checks = [
            (
                target - snap.counters.ready.min(target),
                "subscribers not ready",
            ),
            (snap.counters.dropped, "subscribers dropped"),
            (d.publish_failed, "publications failed"),
            (
                d.probe.as_ref().map_or(0, |p| p.publish_failed),
                "probe publications failed",
            ),
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
        assert_eq!(expected_deliveries(&[3, 4], 1, false, 10, 10), 70);
        // 10 subscribers over 3 channels: 4, 3, 3; streams 0..4 go to channels 0, 1, 2, 0.
        assert_eq!(
            expected_deliveries(&[1, 1, 1, 1], 3, false, 10, 10),
            4 + 3 + 3 + 4
        );
        // Half ready: half the deliveries.
        assert_eq!(expected_deliveries(&[2], 1, false, 10, 5), 10);
        // Random channels: counts per (stream, channel); 2 streams over 3 channels.
        assert_eq!(
            expected_deliveries(&[1, 0, 2, 0, 1, 0], 3, true, 10, 10),
            4 + 2 * 3 + 3
        );
    }
}
