//! Scenario `idle`: many subscribed connections that do nothing but answer pings, to
//! measure how fast a node accepts connections and how much memory each one costs it.
//!
//! Phases: sample server RSS; ramp N connections (connect + subscribe); let the server
//! settle; sample RSS; hold; sample RSS; stop. RSS per connection is
//! `(RSS at end of hold - RSS before) / ready connections`.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::time::{Instant, sleep};

use crate::cli::{CommonArgs, PerConnectionAt, Ramped};
use crate::context::Handshake;
use crate::fleet::Fleet;
use crate::progress::Progress;
use crate::report::Results;
use crate::results::{ConnectionResults, ServerProcess, Verdict};
use crate::stats::Snapshot;

const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Args, Serialize)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// How long to hold the connections once they are all ready.
    #[arg(long, default_value_t = 20)]
    pub hold_secs: u64,
    /// Pause between the end of the ramp and the first "after" RSS sample.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// How far each connection goes: `upgrade` (WebSocket only; the server closes these
    /// after its connect_timeout, so keep settle + hold below it), `connect`, or `subscribe`.
    /// Comparing them splits the server's memory per connection by stage.
    #[arg(long, value_enum, default_value = "subscribe")]
    pub handshake: Handshake,
    /// Fail the run if server RSS per connection exceeds this many bytes.
    #[arg(long)]
    pub max_rss_per_connection: Option<f64>,
}

impl IdleArgs {
    pub fn deadline(&self) -> Duration {
        let work = Duration::from_secs(self.hold_secs + self.settle_secs + 10);
        self.common.deadline(self.connections, work)
    }
}

/// Runs the scenario and returns its results.
pub async fn run(args: &IdleArgs) -> anyhow::Result<Results> {
    let c = &args.common;
    let targets = c.targets().await?;
    let mut spec = c.fleet_spec(targets, args.connections)?;
    spec.handshake = args.handshake;
    let Ramped {
        fleet,
        at_ramp: ramped,
        ramp_secs,
        started,
        started_unix,
        mut watch,
        mut progress,
    } = Ramped::start(c, spec, args.connections, args.deadline(), POLL).await?;

    progress.phase("settle");
    show(
        &fleet,
        &mut progress,
        Duration::from_secs(args.settle_secs),
        c,
    )
    .await;
    watch.ramp_done();
    watch.start_cpu(&fleet);
    progress.phase("hold");
    show(
        &fleet,
        &mut progress,
        Duration::from_secs(args.hold_secs),
        c,
    )
    .await;
    let ready = fleet.snapshot().counters.ready;
    let watched = watch.finish(&fleet, ready, PerConnectionAt::End);

    progress.phase("stop");
    let snap = fleet.stop(None, Duration::from_secs(5)).await?;
    progress.finish();

    let connections = ConnectionResults::new(args.connections, &ramped, ramp_secs, &snap);
    let verdict = verdict(args, &snap, &watched.servers);
    Ok(Results::new(
        "idle",
        started_unix,
        started,
        serde_json::to_value(args)?,
        connections,
        watched,
        &snap,
        verdict,
    ))
}

/// Keeps the display fresh for `how_long`, showing server RSS as it goes.
async fn show(fleet: &Fleet, progress: &mut Progress, how_long: Duration, c: &CommonArgs) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        let rss: u64 = c.server_memory().iter().flatten().map(|m| m.rss_kib).sum();
        let extra = if c.server_pid.is_empty() {
            String::new()
        } else {
            format!("server rss {rss} KiB")
        };
        progress.update(&fleet.snapshot(), &extra);
        sleep(Duration::from_millis(250).min(until - Instant::now())).await;
    }
}

fn verdict(args: &IdleArgs, snap: &Snapshot, servers: &[ServerProcess]) -> Verdict {
    let mut failures = Vec::new();
    if args.common.require_zero_loss {
        if snap.failed() > 0 {
            failures.push(format!("{} connections failed", snap.failed()));
        }
        if snap.counters.ready < args.connections as u64 {
            failures.push(format!(
                "only {} of {} connections ready",
                snap.counters.ready, args.connections
            ));
        }
        if snap.counters.dropped > 0 {
            failures.push(format!("{} connections dropped", snap.counters.dropped));
        }
    }
    if let Some(max) = args.max_rss_per_connection {
        for m in servers {
            match m.rss_per_connection_bytes {
                Some(bytes) if bytes > max => failures.push(format!(
                    "server {} uses {bytes:.0} B per connection (max {max:.0})",
                    m.pid
                )),
                None => failures.push(format!("server {} memory not measured", m.pid)),
                Some(_) => {}
            }
        }
    }
    Verdict {
        passed: failures.is_empty(),
        failures,
    }
}
