//! Scenario `channels`: N subscribers spread over C channels (`CHANNEL.0` … `CHANNEL.C-1`,
//! connection `i` on channel `i mod C`), each publication posted to a channel drawn at
//! random. Every subscriber checks what it owes: the publisher counts its seqs per
//! (stream, channel), so a subscriber sees each stream's seqs on its own channel as
//! 0, 1, 2, ... and can tell a loss from a publication that went elsewhere.
//!
//! The phases are `fanout`'s (ramp, publish, drain, stop); only the options and the
//! placement of publications differ.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::cli::CommonArgs;
use crate::fanout::{self, FanoutRun};
use crate::publish_phase::{ApiArgs, Plan};
use crate::report::Results;

#[derive(Debug, Clone, Args, Serialize)]
pub struct ChannelsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub api: ApiArgs,
    /// Subscribers, spread round-robin over the channels.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Channels (`--channel` is their base name).
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Publications per second, all channels together.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Size of each publication's JSON `data`.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// How long to publish.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
}

impl ChannelsArgs {
    pub fn deadline(&self) -> Duration {
        let work = Duration::from_secs(self.duration_secs + self.api.drain_secs + 15);
        self.common.deadline(self.subscribers, work)
    }
}

/// Runs the scenario and returns its results.
pub async fn run(args: &ChannelsArgs) -> anyhow::Result<Results> {
    fanout::run_plan(FanoutRun {
        scenario: "channels",
        common: &args.common,
        api: &args.api,
        subscribers: args.subscribers,
        plan: Plan {
            channel: args.common.channel_or(crate::cli::DEFAULT_CHANNEL),
            channels: args.channels,
            random_channels: true,
            rate: args.rate,
            payload_bytes: args.payload_bytes,
            duration: Duration::from_secs(args.duration_secs),
        },
        slow_fraction: 0.0,
        probe_rate: 0.0,
        deadline: args.deadline(),
        params: serde_json::to_value(args)?,
    })
    .await
}
