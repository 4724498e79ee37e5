//! Scenario `churn`: durable subscribers (see `durable`) on a history channel while
//! connections come and go, and whether every client still gets every publication exactly
//! once, in order.
//!
//! Phases: ramp N durable clients (each first `subscribe` notes the channel's offset and
//! epoch); publish through the API for the duration while the churn ticker closes
//! `--churn-rate` random clients per second (each reconnects to the next node and
//! recovers), and, with `--spawn-nodes` and `--kill-node-at-secs T`, SIGKILL one node T
//! seconds into publishing (its clients reconnect to the others and recover), optionally
//! starting it again; stop churning; drain until every client is connected again and has
//! everything; stop with the publisher's counts.
//!
//! The node serving the publisher (node 0) is never the one killed. The verdict with
//! `--require-zero-loss` adds to `fanout`'s checks: no `recovered: false`, no offset gap
//! or epoch change, and every client connected at the end of the drain.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::time::sleep;

use crate::cli::{CommonArgs, PerConnectionAt, Ramped};
use crate::cluster::LocalCluster;
use crate::fanout;
use crate::publish_phase::{self, ApiArgs, POLL, Plan, Publishing};
use crate::report::Results;
use crate::results::{ChurnResults, ConnectionResults, KilledNode, LatencySummary};
use crate::stats::{CounterSnapshot, Snapshot};

/// The default channel: spawned nodes keep history for the `hist` namespace.
const HISTORY_CHANNEL: &str = "hist:bench";

#[derive(Debug, Clone, Args, Serialize)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub api: ApiArgs,
    /// Durable subscribers on the channel.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Publications per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Size of each publication's JSON `data`.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// How long to publish (and churn).
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Connections per second the clients close themselves while publishing; each
    /// reconnects at once to the next node and recovers.
    #[arg(long, default_value_t = 10.0)]
    pub churn_rate: f64,
    /// SIGKILL one spawned node this many seconds after publishing starts (needs
    /// --spawn-nodes 2 or more).
    #[arg(long)]
    pub kill_node_at_secs: Option<f64>,
    /// Which spawned node to kill, 1 to N-1 (default: the last; node 0 serves the publisher).
    #[arg(long)]
    pub kill_node: Option<usize>,
    /// Start the killed node again, on its address, --restart-after-secs after the kill.
    #[arg(long)]
    pub restart_killed_node: bool,
    #[arg(long, default_value_t = 2.0)]
    pub restart_after_secs: f64,
}

impl ChurnArgs {
    pub fn deadline(&self) -> Duration {
        let work = Duration::from_secs(self.duration_secs + self.api.drain_secs + 40);
        self.common.deadline(self.subscribers, work)
    }
}

/// Runs the scenario; `cluster` is the spawned cluster, if any (for the node kill).
pub async fn run(args: &ChurnArgs, cluster: Option<&mut LocalCluster>) -> anyhow::Result<Results> {
    let c = &args.common;
    anyhow::ensure!(args.churn_rate >= 0.0, "--churn-rate must not be negative");
    let mut kill = NodeKill::new(args, cluster)?;
    let channel = c.channel_or(HISTORY_CHANNEL);
    let mut spec = c.fleet_spec(c.targets().await?, args.subscribers)?;
    spec.channel = channel.clone();
    spec.durable = true;
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

    progress.phase("publish");
    let plan = Plan {
        channel: channel.clone(),
        channels: 1,
        random_channels: false,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        duration: Duration::from_secs(args.duration_secs),
    };
    fleet.set_churn(args.churn_rate).await?;
    let publishing = Publishing::start(&args.api, c, &plan)?;
    while !publishing.is_finished() {
        if progress.due() {
            let snap = fleet.snapshot();
            let status = format!("{} | {}", publishing.status(), churn_status(&snap));
            progress.update(&snap, &status);
        }
        kill.poll(publishing.started.elapsed().as_secs_f64())
            .await?;
        sleep(POLL).await;
    }
    let published = publishing.finish().await?;
    fleet.set_churn(0.0).await?;
    kill.finish(published.started.elapsed().as_secs_f64())
        .await?;

    progress.phase("drain");
    let expected = published.stats.total_published() * at_ramp.counters.ready;
    let limit = Duration::from_secs(args.api.drain_secs);
    let all_up = |c: &CounterSnapshot| c.up >= c.ready;
    let last_delivery = publish_phase::drain(&fleet, &mut progress, expected, limit, all_up).await;
    let at_end = fleet.snapshot();
    let watched = watch.finish(&fleet, at_ramp.counters.ready, PerConnectionAt::AfterRamp);
    progress.phase("stop");
    let snap = fleet
        .stop(Some(published.counts()), Duration::from_secs(10))
        .await?;
    progress.finish();

    let delivery = published.delivery(&snap, expected, last_delivery);
    let churn = churn_results(args, channel, &snap, &at_end, kill.done.clone());
    let mut verdict = fanout::verdict(
        c.require_zero_loss,
        args.subscribers as u64,
        &snap,
        &delivery,
    );
    churn.judge(&mut verdict, c.require_zero_loss, kill.asked());
    let mut results = Results::new(
        "churn",
        started_unix,
        started,
        serde_json::to_value(args)?,
        ConnectionResults::new(args.subscribers, &at_ramp, ramp_secs, &snap),
        watched,
        &snap,
        verdict,
    );
    results.delivery = Some(delivery);
    results.churn = Some(churn);
    Ok(results)
}

fn churn_status(snap: &Snapshot) -> String {
    let c = &snap.counters;
    format!(
        "up {} churned {} cut {} reconnects {} recovered {}",
        c.up, c.churn_closes, c.interrupted, c.reconnects, c.recoveries
    )
}

/// The churn section of the results, from the final snapshot and the one at the end of
/// the drain.
fn churn_results(
    args: &ChurnArgs,
    channel: String,
    snap: &Snapshot,
    at_end: &Snapshot,
    killed_node: Option<KilledNode>,
) -> ChurnResults {
    let c = &snap.counters;
    ChurnResults {
        channel,
        churn_rate_asked_per_sec: args.churn_rate,
        churn_closes: c.churn_closes,
        interrupted: c.interrupted,
        reconnects: c.reconnects,
        reconnect_failures: c.reconnect_failures,
        recoveries: c.recoveries,
        recovery_failed: c.recovery_failed,
        recovered_messages: c.recovered_messages,
        recovery_time: LatencySummary::of(&snap.recovery_latency),
        offset_gaps: c.offset_gaps,
        offset_repeats: c.offset_repeats,
        epoch_changes: c.epoch_changes,
        disconnected_at_end: at_end.counters.ready.saturating_sub(at_end.counters.up),
        killed_node,
    }
}

/// The planned node kill (and restart) and what came of it.
struct NodeKill<'a> {
    cluster: Option<&'a mut LocalCluster>,
    node: usize,
    at_secs: Option<f64>,
    restart_after: Option<f64>,
    done: Option<KilledNode>,
}

impl<'a> NodeKill<'a> {
    fn new(args: &ChurnArgs, cluster: Option<&'a mut LocalCluster>) -> anyhow::Result<Self> {
        let nodes = cluster.as_ref().map_or(0, |c| c.api_urls.len());
        let node = args.kill_node.unwrap_or(nodes.saturating_sub(1));
        if let Some(at) = args.kill_node_at_secs {
            anyhow::ensure!(
                nodes >= 2,
                "--kill-node-at-secs needs --spawn-nodes 2 or more"
            );
            anyhow::ensure!(
                (1..nodes).contains(&node),
                "--kill-node must be between 1 and {} (node 0 serves the publisher)",
                nodes - 1
            );
            anyhow::ensure!(
                at >= 0.0 && at < args.duration_secs as f64,
                "--kill-node-at-secs must fall within --duration-secs"
            );
        }
        Ok(NodeKill {
            cluster,
            node,
            at_secs: args.kill_node_at_secs,
            restart_after: args
                .restart_killed_node
                .then_some(args.restart_after_secs.max(0.0)),
            done: None,
        })
    }

    fn asked(&self) -> bool {
        self.at_secs.is_some()
    }

    /// Kills or restarts the node when its time (`elapsed` seconds of publishing) came.
    async fn poll(&mut self, elapsed: f64) -> anyhow::Result<()> {
        let Some(cluster) = self.cluster.as_deref_mut() else {
            return Ok(());
        };
        match (&mut self.done, self.at_secs) {
            (None, Some(at)) if elapsed >= at => {
                let pid = cluster.kill_node(self.node).await?;
                eprintln!("killed node {} (pid {pid}) with SIGKILL", self.node);
                self.done = Some(KilledNode {
                    node: self.node,
                    pid,
                    at_secs: elapsed,
                    restarted_pid: None,
                    restarted_at_secs: None,
                });
            }
            (Some(killed), _) if killed.restarted_pid.is_none() => {
                let due = self.restart_after.map(|r| killed.at_secs + r);
                if due.is_some_and(|due| elapsed >= due) {
                    let pid = cluster.restart_node(self.node).await?;
                    eprintln!("restarted node {} as pid {pid}", self.node);
                    killed.restarted_pid = Some(pid);
                    killed.restarted_at_secs = Some(elapsed);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Publishing is over: a restart still due happens now.
    async fn finish(&mut self, elapsed: f64) -> anyhow::Result<()> {
        if let Some(after) = self.restart_after.as_mut() {
            *after = 0.0;
        }
        self.poll(elapsed.max(self.at_secs.unwrap_or(0.0))).await
    }
}
