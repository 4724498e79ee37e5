//! Command-line options every scenario shares, and the helpers that turn them into a fleet
//! (started and ramped: [`Ramped`]), a worker count, server memory samples and the end of a
//! run (table, JSON, exit code).

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::ensure;
use clap::Args;
use serde::Serialize;

use crate::addrs::{SourceSpec, Target, resolve_targets};
use crate::cluster::{self, ClusterSpec, LocalCluster};
use crate::codec::Encoding;
use crate::context::{Handshake, SlowMode};
use crate::fleet::Fleet;
use crate::host::{self, CpuMeter, CpuUse, MachineMeter, Memory};
use crate::local_fleet::FleetSpec;
use crate::report::Results;
use crate::results::{LoadtestProcess, ServerProcess, Watched};
use crate::stats::Snapshot;

/// Options of every scenario.
#[derive(Debug, Clone, Args, Serialize)]
pub struct CommonArgs {
    /// WebSocket URL(s) of the node(s), comma-separated or repeated; used round-robin.
    /// Required unless --spawn-nodes starts the nodes.
    #[arg(long, value_delimiter = ',')]
    pub url: Vec<String>,
    /// Start a redis-server and this many pushwire nodes (Redis broker) on loopback, target
    /// them round-robin, sample their RSS/CPU, and stop them at the end.
    #[arg(long, default_value_t = 0)]
    pub spawn_nodes: usize,
    /// The pushwire binary for --spawn-nodes (default: `pushwire` next to this executable).
    #[arg(long)]
    pub pushwire_bin: Option<PathBuf>,
    /// The redis-server binary for --spawn-nodes.
    #[arg(long, default_value = "redis-server")]
    pub redis_bin: String,
    /// `history_size` of the spawned nodes' `hist` namespace (channels `hist:...`).
    #[arg(long, default_value_t = 1000)]
    pub spawn_history_size: usize,
    /// Wire encoding (subprotocol pushwire.v1.json or pushwire.v1.msgpack), or `pusher`:
    /// the Pusher protocol on `/app/{key}`, publishing through the Pusher HTTP API (needs
    /// --pusher-app).
    #[arg(long, value_enum, default_value = "json")]
    pub encoding: Encoding,
    /// The Pusher app as ID:KEY:SECRET, for `--encoding pusher` (spawned nodes get it).
    #[arg(long)]
    pub pusher_app: Option<crate::pusher::PusherApp>,
    /// Channel the connections subscribe to (default: `bench`; `hist:bench` for `churn`,
    /// which needs history).
    #[arg(long)]
    pub channel: Option<String>,
    /// Source addresses to bind before connecting: `A-B` range, a count (127.0.0.2 and up),
    /// a comma list, `auto` (loopback pool for loopback targets) or `none`.
    #[arg(long, default_value = "auto")]
    pub source_ips: String,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Handshakes in flight at once, all processes together. Keep it below the server's
    /// listen backlog (`ss -ltn` shows it as Send-Q; 128 for tokio/std listeners), or the
    /// accept queue overflows and those connects wait for a 1 s SYN retransmit.
    #[arg(long, default_value_t = 64)]
    pub max_pending: usize,
    /// Bound on dial + upgrade + connect + subscribe of one connection.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// Worker processes; 0 runs every connection in this process. Default: 0 when the
    /// connections fit under the per-process socket limit, else as many as needed.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Server process id(s) whose RSS is sampled (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// WebSocket read buffer per connection, allocated up front; a larger frame grows it.
    #[arg(long, default_value_t = 1024)]
    pub read_buffer_bytes: usize,
    /// Has no effect: every message is written at once (as it was when tungstenite wrote
    /// them, since each send flushed). Kept so older command lines still parse.
    #[arg(long, default_value_t = 0)]
    pub write_buffer_bytes: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 2 unless every connection stayed up and (when publishing) every ready subscriber
    /// got every publication exactly once, in order.
    #[arg(long)]
    pub require_zero_loss: bool,
    /// Hard bound on the whole run in seconds (default: derived from the other options).
    #[arg(long)]
    pub deadline_secs: Option<u64>,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    pub no_bars: bool,
}

/// The channel of scenarios that need no history.
pub const DEFAULT_CHANNEL: &str = "bench";

impl CommonArgs {
    /// `--channel`, or `default`.
    pub fn channel_or(&self, default: &str) -> String {
        self.channel.clone().unwrap_or_else(|| default.to_string())
    }

    pub async fn targets(&self) -> anyhow::Result<Vec<Target>> {
        ensure!(
            !self.url.is_empty(),
            "give the nodes with --url, or start some with --spawn-nodes N"
        );
        let mut targets = resolve_targets(&self.url).await?;
        if self.encoding == Encoding::Pusher {
            let app = self.pusher_app.as_ref().ok_or_else(|| {
                anyhow::anyhow!("--encoding pusher needs --pusher-app ID:KEY:SECRET")
            })?;
            for target in &mut targets {
                target.url = crate::pusher::app_url(&target.url, &app.key);
            }
        }
        Ok(targets)
    }

    /// With `--spawn-nodes`, starts the cluster and points `--url` and `--server-pid` at
    /// its nodes. The caller owns the cluster and shuts it down after the run.
    pub async fn spawn_cluster(&mut self) -> anyhow::Result<Option<LocalCluster>> {
        if self.spawn_nodes == 0 {
            return Ok(None);
        }
        ensure!(
            self.url.is_empty() && self.server_pid.is_empty(),
            "--spawn-nodes picks the nodes itself; drop --url and --server-pid"
        );
        let spec = ClusterSpec {
            nodes: self.spawn_nodes,
            pushwire_bin: self
                .pushwire_bin
                .clone()
                .unwrap_or_else(cluster::default_pushwire_bin),
            redis_bin: self.redis_bin.clone(),
            history_size: self.spawn_history_size,
            pusher_app: self.pusher_app.clone(),
        };
        let cluster = LocalCluster::start(&spec).await?;
        eprintln!(
            "spawned redis-server (pid {:?}) and {} nodes: {}",
            cluster.redis_pid,
            cluster.ws_urls.len(),
            cluster.ws_urls.join(", ")
        );
        self.url = cluster.ws_urls.clone();
        self.server_pid = cluster.node_pids.clone();
        Ok(Some(cluster))
    }

    /// The fleet of `connections` these options describe.
    pub fn fleet_spec(
        &self,
        targets: Vec<Target>,
        connections: usize,
    ) -> anyhow::Result<FleetSpec> {
        ensure!(self.connect_rate > 0.0, "--connect-rate must be positive");
        ensure!(
            self.read_buffer_bytes >= 256,
            "--read-buffer-bytes must be at least 256"
        );
        let sources = self.source_ips.parse::<SourceSpec>()?.resolve(&targets)?;
        Ok(FleetSpec {
            targets,
            sources,
            encoding: self.encoding,
            channel: self.channel_or(DEFAULT_CHANNEL),
            channels: 1,
            random_channels: false,
            slow_fraction: 0.0,
            slow_mode: SlowMode::FromStart,
            slow_recv_buffer: 0,
            durable: false,
            handshake: Handshake::Subscribe,
            first_index: 0,
            connections,
            connect_rate: self.connect_rate,
            max_pending: self.max_pending.max(1),
            connect_timeout_ms: self.connect_timeout_secs * 1000,
            read_buffer_bytes: self.read_buffer_bytes,
            write_buffer_bytes: self.write_buffer_bytes,
        })
    }

    /// Worker processes for `connections`: as asked, or the fewest that keep each process
    /// under its socket limit (0, in-process, when one process suffices).
    pub fn workers(&self, connections: usize) -> anyhow::Result<usize> {
        let per_process = host::sockets_per_process();
        let needed = connections.div_ceil(per_process);
        match self.workers {
            Some(w) if w == 0 && needed > 1 => {
                anyhow::bail!(
                    "{connections} connections exceed {per_process} sockets per process; use --workers {needed} or more"
                )
            }
            Some(w) if w > 0 && connections.div_ceil(w) > per_process => {
                anyhow::bail!(
                    "{w} workers would each hold more than {per_process} sockets; use --workers {needed} or more"
                )
            }
            Some(w) => Ok(w),
            None if needed <= 1 => Ok(0),
            None => Ok(needed),
        }
    }

    /// How long the ramp of `connections` may take before the run moves on regardless.
    pub fn ramp_limit(&self, connections: usize) -> Duration {
        let ramp = connections as f64 / self.connect_rate.max(0.001);
        Duration::from_secs_f64(ramp * 2.0) + Duration::from_secs(self.connect_timeout_secs + 5)
    }

    /// The hard deadline: `--deadline-secs`, or `work` plus the ramp limit and a margin.
    pub fn deadline(&self, connections: usize, work: Duration) -> Duration {
        match self.deadline_secs {
            Some(secs) => Duration::from_secs(secs),
            None => self.ramp_limit(connections) + work + Duration::from_secs(60),
        }
    }

    /// Samples the memory of every `--server-pid`.
    pub fn server_memory(&self) -> Vec<Option<Memory>> {
        self.server_pid
            .iter()
            .map(|&pid| host::memory(pid))
            .collect()
    }

    /// Starts watching the `--server-pid` processes (takes the "before" sample).
    pub fn watch_servers(&self) -> ProcessWatch {
        ProcessWatch {
            pids: self.server_pid.clone(),
            before: self.server_memory(),
            ramp_meter: CpuMeter::start(&self.server_pid),
            ramp_cpu: Vec::new(),
            after_ramp: Vec::new(),
            server_cpu: None,
            own_cpu: None,
            machine_cpu: None,
        }
    }

    /// Prints the summary, writes the JSON file, and returns the process exit code.
    pub fn finish(&self, results: &Results) -> anyhow::Result<i32> {
        print!("{}", results.table());
        if let Some(path) = &self.out {
            results.write_json(path)?;
            eprintln!("results written to {}", path.display());
        }
        Ok(if results.verdict.passed { 0 } else { 2 })
    }
}

/// A fleet started and ramped, with the clock, progress display and server watch the
/// scenarios go on with.
pub struct Ramped {
    pub fleet: Fleet,
    /// The snapshot when the ramp settled (or its time limit ran out).
    pub at_ramp: Snapshot,
    pub ramp_secs: f64,
    /// When the fleet was started (the run's wall clock).
    pub started: Instant,
    pub started_unix: u64,
    pub watch: ProcessWatch,
    pub progress: crate::progress::Progress,
}

impl Ramped {
    /// Starts `spec` (`connections` of them) and waits for it to settle, showing progress
    /// every `poll`.
    pub async fn start(
        common: &CommonArgs,
        spec: FleetSpec,
        connections: usize,
        deadline: Duration,
        poll: Duration,
    ) -> anyhow::Result<Ramped> {
        let workers = common.workers(connections)?;
        let total = connections as u64;
        let started_unix = crate::host::unix_secs();
        let mut watch = common.watch_servers();
        let mut progress = crate::progress::Progress::new(total, !common.no_bars);
        progress.phase("ramp");
        let started = Instant::now();
        let fleet = Fleet::start(spec, workers, deadline).await?;
        let at_ramp = fleet
            .wait_settled(total, common.ramp_limit(connections), poll, |s| {
                progress.update(s, "")
            })
            .await;
        let ramp_secs = started.elapsed().as_secs_f64();
        watch.ramp_settled();
        Ok(Ramped {
            fleet,
            at_ramp,
            ramp_secs,
            started,
            started_unix,
            watch,
            progress,
        })
    }
}

/// Memory and CPU samples of the servers and of the load generator over a run.
#[derive(Debug)]
pub struct ProcessWatch {
    pids: Vec<u32>,
    before: Vec<Option<Memory>>,
    /// The servers' CPU from the first connect until the ramp settled.
    ramp_meter: CpuMeter,
    ramp_cpu: Vec<Option<CpuUse>>,
    after_ramp: Vec<Option<Memory>>,
    server_cpu: Option<CpuMeter>,
    own_cpu: Option<CpuMeter>,
    machine_cpu: Option<MachineMeter>,
}

/// Which sample RSS per connection is measured at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerConnectionAt {
    /// Right after the ramp (before traffic fills queues).
    AfterRamp,
    /// At the end of the run.
    End,
}

impl ProcessWatch {
    /// Reads the servers' CPU over the ramp (connect and subscribe); call once the ramp
    /// settled, before anything else loads the servers.
    pub fn ramp_settled(&mut self) {
        self.ramp_cpu = self.ramp_meter.read();
    }

    /// Takes the "after ramp" sample.
    pub fn ramp_done(&mut self) {
        self.after_ramp = self.pids.iter().map(|&pid| host::memory(pid)).collect();
    }

    /// Starts measuring CPU: the servers' and the load generator's (`fleet`'s processes).
    pub fn start_cpu(&mut self, fleet: &Fleet) {
        self.server_cpu = Some(CpuMeter::start(&self.pids));
        self.own_cpu = Some(CpuMeter::start(&fleet.pids()));
        self.machine_cpu = Some(MachineMeter::start());
    }

    /// Takes the "end" sample; call while the fleet is still up.
    pub fn finish(self, fleet: &Fleet, ready: u64, at: PerConnectionAt) -> Watched {
        let cpu = self.server_cpu.map(|m| m.read()).unwrap_or_default();
        let servers = self.pids.len();
        let processes = self
            .pids
            .iter()
            .enumerate()
            .map(|(i, &pid)| {
                let (before, after_ramp, end) = (
                    self.before[i],
                    self.after_ramp.get(i).copied().flatten(),
                    host::memory(pid),
                );
                let measured = if at == PerConnectionAt::AfterRamp {
                    after_ramp
                } else {
                    end
                };
                let cpu = cpu.get(i).copied().flatten();
                let ramp_cpu = self.ramp_cpu.get(i).copied().flatten();
                ServerProcess {
                    pid,
                    cpu,
                    ramp_cpu,
                    cpu_per_connect_us: cpu_per_connect(ramp_cpu, ready, servers),
                    before,
                    after_ramp,
                    end,
                    rss_per_connection_bytes: rss_per_connection(before, measured, ready, servers),
                    cpu_per_connection_us_per_sec: cpu_per_connection(cpu, ready, servers),
                }
            })
            .collect();
        let pids = fleet.pids();
        let own = LoadtestProcess {
            processes: pids.len(),
            rss_kib: pids
                .iter()
                .filter_map(|&p| host::memory(p))
                .map(|m| m.rss_kib)
                .sum(),
            cpu: self.own_cpu.and_then(|m| m.total()),
        };
        Watched {
            servers: processes,
            loadtest: own,
            machine: self.machine_cpu.and_then(|m| m.read()),
        }
    }
}

/// Per-connection server RSS: growth between two samples divided over the ready
/// connections, shared equally between the sampled servers.
pub fn rss_per_connection(
    before: Option<Memory>,
    end: Option<Memory>,
    ready: u64,
    servers: usize,
) -> Option<f64> {
    let (before, end) = (before?, end?);
    let per_server = ready as f64 / servers.max(1) as f64;
    (per_server >= 1.0).then(|| (end.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / per_server)
}

/// Server CPU microseconds per connection set up (dial, upgrade, connect, subscribe): the
/// server's CPU over the ramp divided by its share of the ready connections.
pub fn cpu_per_connect(ramp_cpu: Option<CpuUse>, ready: u64, servers: usize) -> Option<f64> {
    let per_server = ready as f64 / servers.max(1) as f64;
    (per_server >= 1.0).then_some(ramp_cpu?.cpu_secs / per_server * 1e6)
}

/// CPU microseconds per connection per second: the server's CPU over the interval, divided
/// by its share of the ready connections.
pub fn cpu_per_connection(cpu: Option<CpuUse>, ready: u64, servers: usize) -> Option<f64> {
    let cpu = cpu?;
    let per_server = ready as f64 / servers.max(1) as f64;
    (per_server >= 1.0 && cpu.secs > 0.0).then(|| cpu.cpu_secs / cpu.secs / per_server * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_growth_is_spread_over_ready_connections() {
        let m = |rss_kib| {
            Some(Memory {
                rss_kib,
                hwm_kib: 0,
            })
        };
        assert_eq!(rss_per_connection(m(1000), m(1040), 10, 1), Some(4096.0));
        assert_eq!(rss_per_connection(m(1000), m(1040), 20, 2), Some(4096.0));
        assert_eq!(rss_per_connection(m(1000), None, 10, 1), None);
        assert_eq!(rss_per_connection(m(1000), m(2000), 0, 1), None);
    }

    #[test]
    fn ramp_cpu_is_spread_over_ready_connections() {
        let cpu = Some(CpuUse {
            cpu_secs: 0.64,
            cores: 0.5,
            secs: 1.28,
        });
        // 640 ms of server CPU to set up 10,000 connections: 64 µs each.
        assert_eq!(cpu_per_connect(cpu, 10_000, 1), Some(64.0));
        assert_eq!(cpu_per_connect(cpu, 20_000, 2), Some(64.0));
        assert_eq!(cpu_per_connect(cpu, 0, 1), None);
        assert_eq!(cpu_per_connect(None, 10_000, 1), None);
    }

    #[test]
    fn cpu_is_spread_over_ready_connections_and_seconds() {
        let cpu = |cpu_secs, secs| {
            Some(CpuUse {
                cpu_secs,
                cores: 0.0,
                secs,
            })
        };
        // 0.5 CPU-s over 10 s for 10,000 connections: 5 µs per connection per second.
        assert_eq!(cpu_per_connection(cpu(0.5, 10.0), 10_000, 1), Some(5.0));
        assert_eq!(cpu_per_connection(cpu(0.5, 10.0), 20_000, 2), Some(5.0));
        assert_eq!(cpu_per_connection(cpu(0.5, 0.0), 10_000, 1), None);
        assert_eq!(cpu_per_connection(None, 10_000, 1), None);
    }
}
