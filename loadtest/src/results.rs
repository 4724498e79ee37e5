//! The sections of a run's [`Results`](crate::report::Results): connections, processes,
//! delivery, traffic, latency summaries, the verdict, and the sections only the `churn` and
//! `slow` scenarios fill. Data only (plus each section's summary rows and checks), so the
//! scenarios and the report both build on it without knowing each other.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::host::{CpuUse, MachineCpu, Memory};
use crate::progress::fmt_micros;
use crate::scrape::EVICTIONS;
use crate::stats::Snapshot;

/// What the run saw of the server processes, its own processes and the machine (see
/// `cli::ProcessWatch`).
#[derive(Debug)]
pub struct Watched {
    pub servers: Vec<ServerProcess>,
    pub loadtest: LoadtestProcess,
    pub machine: Option<MachineCpu>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionResults {
    pub target: u64,
    pub ready: u64,
    pub failed: u64,
    /// Ready connections that ended before the run did.
    pub dropped: u64,
    pub dead: u64,
    /// Ready connections that stopped reading on purpose (`--slow-fraction`).
    #[serde(default)]
    pub slow: u64,
    /// From the first attempt until the last connection was ready.
    pub ramp_secs: f64,
    /// Ready connections per second over the ramp.
    pub connect_rate_per_sec: f64,
    /// Dial start to ready (`subscribed`, or `connected` with `--no-subscribe`).
    pub connect_latency: LatencySummary,
}

impl ConnectionResults {
    /// From the snapshot when the ramp settled and the final one.
    pub fn new(
        target: usize,
        at_ramp: &Snapshot,
        ramp_secs: f64,
        end: &Snapshot,
    ) -> ConnectionResults {
        ConnectionResults {
            target: target as u64,
            ready: at_ramp.counters.ready,
            failed: end.failed(),
            dropped: end.counters.dropped,
            dead: end.counters.dead,
            slow: end.counters.slow,
            ramp_secs,
            connect_rate_per_sec: at_ramp.counters.ready as f64 / ramp_secs.max(1e-9),
            connect_latency: LatencySummary::of(&end.connect_latency),
        }
    }
}

/// One server process over the run.
#[derive(Debug, Serialize)]
pub struct ServerProcess {
    pub pid: u32,
    /// CPU used during the measured phase (hold, or publish + drain).
    pub cpu: Option<CpuUse>,
    /// CPU used from the first connect until the ramp settled.
    pub ramp_cpu: Option<CpuUse>,
    /// `ramp_cpu` per ready connection on this server, microseconds: the server's cost to
    /// accept, upgrade, connect and subscribe one client (`/proc` counts in 10 ms ticks:
    /// ramp thousands of connections).
    pub cpu_per_connect_us: Option<f64>,
    pub before: Option<Memory>,
    pub after_ramp: Option<Memory>,
    pub end: Option<Memory>,
    /// (RSS at end - RSS before) / ready connections on this server, bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU time per connection per second of the measured phase, in microseconds
    /// (`/proc` counts in 10 ms ticks: measure over a long hold).
    pub cpu_per_connection_us_per_sec: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct LoadtestProcess {
    pub processes: usize,
    pub rss_kib: u64,
    /// CPU used during the measured phase, all processes together.
    pub cpu: Option<CpuUse>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryResults {
    pub publish_streams: usize,
    pub published: u64,
    pub publish_ok: u64,
    pub publish_failed: u64,
    pub publish_retries: u64,
    pub publish_rate_per_sec: f64,
    pub publish_http_latency: LatencySummary,
    /// The probe publisher (`fanout --probe-rate`), publishing beside the fan-out to a
    /// channel without subscribers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeResults>,
    pub publish_errors: BTreeMap<String, u64>,
    /// Ready subscribers x publications.
    pub expected: u64,
    /// Distinct (subscriber, publication) pairs received.
    pub delivered: u64,
    /// Delivered messages per second from the first publication to the end of the drain.
    pub deliveries_per_sec: f64,
    pub latency: LatencySummary,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
}

/// What the probe publisher saw.
#[derive(Debug, Serialize)]
pub struct ProbeResults {
    pub published: u64,
    pub publish_ok: u64,
    pub publish_failed: u64,
    pub publish_http_latency: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct Traffic {
    pub frames: u64,
    pub frame_bytes: u64,
    pub messages: u64,
    /// Messages per frame, on average: how much the server batches.
    pub messages_per_frame: f64,
    pub pings: u64,
    pub pongs: u64,
    pub errors: u64,
    pub disconnects: u64,
    pub decode_errors: u64,
    pub foreign_messages: u64,
}

impl Traffic {
    pub fn from_snapshot(snap: &Snapshot) -> Traffic {
        let c = &snap.counters;
        Traffic {
            frames: c.frames,
            frame_bytes: c.frame_bytes,
            messages: c.messages,
            messages_per_frame: if c.frames == 0 {
                0.0
            } else {
                c.messages as f64 / c.frames as f64
            },
            pings: c.pings,
            pongs: c.pongs,
            errors: c.errors,
            disconnects: c.disconnects,
            decode_errors: c.decode_errors,
            foreign_messages: c.foreign_messages,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub failures: Vec<String>,
}

/// Percentiles of a microsecond histogram.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        let q = |q| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        LatencySummary {
            count: h.len(),
            min_us: if h.is_empty() { 0 } else { h.min() },
            mean_us: if h.is_empty() {
                0.0
            } else {
                (h.mean() * 10.0).round() / 10.0
            },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }

    pub fn row(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            fmt_micros(self.p50_us),
            fmt_micros(self.p90_us),
            fmt_micros(self.p99_us),
            fmt_micros(self.p999_us),
            fmt_micros(self.max_us),
            self.count
        )
    }
}

/// What the churn did and how the clients came through it.
#[derive(Debug, Serialize)]
pub struct ChurnResults {
    pub channel: String,
    pub churn_rate_asked_per_sec: f64,
    /// Sessions the clients closed on purpose.
    pub churn_closes: u64,
    /// Sessions ended by the server or the network (node killed, 4008, ...).
    pub interrupted: u64,
    pub reconnects: u64,
    pub reconnect_failures: u64,
    /// Recovering `subscribe`s answered `recovered: true` / `false`.
    pub recoveries: u64,
    pub recovery_failed: u64,
    /// Messages the recovering `subscribed` replies said the clients had missed.
    pub recovered_messages: u64,
    /// From losing a session to having caught up to the announced offset.
    pub recovery_time: LatencySummary,
    pub offset_gaps: u64,
    pub offset_repeats: u64,
    pub epoch_changes: u64,
    /// Ready clients not connected when the drain ended.
    pub disconnected_at_end: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed_node: Option<KilledNode>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KilledNode {
    pub node: usize,
    pub pid: u32,
    /// Seconds after publishing started.
    pub at_secs: f64,
    pub restarted_pid: Option<u32>,
    pub restarted_at_secs: Option<f64>,
}

impl ChurnResults {
    /// Adds the churn checks to a fan-out verdict.
    pub fn judge(&self, verdict: &mut Verdict, zero_loss: bool, kill_asked: bool) {
        if kill_asked && self.killed_node.is_none() {
            verdict.failures.push("the node was not killed".into());
        }
        if zero_loss {
            let checks = [
                (self.recovery_failed, "recoveries answered recovered:false"),
                (self.offset_gaps, "offsets skipped"),
                (self.epoch_changes, "epoch changes"),
                (self.disconnected_at_end, "clients disconnected at the end"),
            ];
            verdict.failures.extend(
                checks
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!("{n} {what}")),
            );
        }
        verdict.passed = verdict.failures.is_empty();
    }

    /// Summary table rows.
    pub fn rows(&self, row: &mut impl FnMut(&str, String)) {
        row(
            "churn",
            format!(
                "{} closed by clients (asked {}/s), {} cut by server/network, on {}",
                self.churn_closes, self.churn_rate_asked_per_sec, self.interrupted, self.channel
            ),
        );
        if let Some(k) = &self.killed_node {
            let restarted = match (k.restarted_pid, k.restarted_at_secs) {
                (Some(pid), Some(at)) => format!(", restarted at {at:.1}s as pid {pid}"),
                _ => String::new(),
            };
            row(
                "killed node",
                format!(
                    "node {} (pid {}) SIGKILLed {:.1}s into publishing{restarted}",
                    k.node, k.pid, k.at_secs
                ),
            );
        }
        row(
            "reconnects",
            format!(
                "{} ({} failed attempts), {} disconnected at the end",
                self.reconnects, self.reconnect_failures, self.disconnected_at_end
            ),
        );
        row(
            "recoveries",
            format!(
                "{} recovered:true ({} messages), {} recovered:false",
                self.recoveries, self.recovered_messages, self.recovery_failed
            ),
        );
        row("recovery time", self.recovery_time.row());
        row(
            "offsets",
            format!(
                "{} skipped, {} repeated, {} epoch changes",
                self.offset_gaps, self.offset_repeats, self.epoch_changes
            ),
        );
    }
}

/// Healthy latency before and after the slow clients stopped reading, and what became of
/// the slow clients.
#[derive(Debug, Serialize)]
pub struct SlowResults {
    pub phase_secs: u64,
    /// Designated slow, and how many of them were still connected when told to stop.
    pub slow_designated: u64,
    pub slow_stopped_reading: u64,
    pub slow_recv_buffer_bytes: usize,
    /// Healthy clients' delivery latency for publications of phase 1 and of phase 2.
    pub baseline: LatencySummary,
    pub slowed: LatencySummary,
    pub p50_change_us: i64,
    pub p99_change_us: i64,
    pub max_change_us: i64,
    pub max_p99_increase_ms: f64,
    /// Growth of the nodes' eviction counter over the run (None: not readable).
    pub evictions_metric: Option<u64>,
    /// Growth of `pushwire_limit_trips_total{kind="write_timeout"}`.
    pub write_timeouts_metric: Option<u64>,
    /// What the slow clients found when they read again at the end.
    pub slow_found_4008: u64,
    pub slow_found_cut: u64,
}

impl SlowResults {
    /// Adds the latency checks to a fan-out verdict (whose loss checks cover the healthy
    /// clients only: slow ones report no sequence outcome).
    pub fn judge(&self, verdict: &mut Verdict) {
        if self.slowed.count == 0 {
            verdict
                .failures
                .push("no healthy deliveries measured in phase 2".into());
        }
        let increase_ms = self.p99_change_us as f64 / 1000.0;
        if increase_ms > self.max_p99_increase_ms {
            verdict.failures.push(format!(
                "healthy p99 rose by {increase_ms:.1} ms in phase 2 (bound {} ms)",
                self.max_p99_increase_ms
            ));
        }
        verdict.passed = verdict.failures.is_empty();
    }

    /// Summary table rows.
    pub fn rows(&self, row: &mut impl FnMut(&str, String)) {
        row(
            "slow clients",
            format!(
                "{} designated, {} stopped reading after {}s (SO_RCVBUF {} B)",
                self.slow_designated,
                self.slow_stopped_reading,
                self.phase_secs,
                self.slow_recv_buffer_bytes
            ),
        );
        row("healthy, phase 1", self.baseline.row());
        row("healthy, phase 2", self.slowed.row());
        let ms = |us: i64| format!("{:+.2} ms", us as f64 / 1000.0);
        row(
            "phase 2 change",
            format!(
                "p50 {}  p99 {} (bound +{} ms)  max {}",
                ms(self.p50_change_us),
                ms(self.p99_change_us),
                self.max_p99_increase_ms,
                ms(self.max_change_us)
            ),
        );
        let metric = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        row(
            "evictions",
            format!(
                "{} by the nodes' {EVICTIONS}, {} write timeouts; slow clients found 4008: {}, cut otherwise: {}",
                metric(self.evictions_metric),
                metric(self.write_timeouts_metric),
                self.slow_found_4008,
                self.slow_found_cut
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn latency_summary_of_empty_and_full_histograms() {
        let empty = LatencySummary::of(&new_histogram());
        assert_eq!((empty.count, empty.p99_us, empty.max_us), (0, 0, 0));
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.max_us, 1000);
    }
}
