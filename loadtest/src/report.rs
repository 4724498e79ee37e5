//! The outcome of a run: one [`Results`] value, shown as a summary table on stdout and
//! written as JSON (`--out`), plus the pass/fail verdict that sets the exit code.
//!
//! Scenarios fill the sections that apply to them (`server_memory` for runs that know the
//! server's pid, `delivery` for runs that publish); empty sections are left out of the JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::host::{CpuUse, MachineCpu, Memory};
use crate::progress::fmt_micros;
use crate::stats::Snapshot;

/// Everything a run reports.
#[derive(Debug, Serialize)]
pub struct Results {
    pub scenario: String,
    pub started_unix: u64,
    pub wall_secs: f64,
    /// The command-line parameters of the run.
    pub params: serde_json::Value,
    pub connections: ConnectionResults,
    /// The `--server-pid` processes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerProcess>,
    /// The load generator's own processes (coordinator and workers).
    pub loadtest: LoadtestProcess,
    /// The whole machine during the measured phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineCpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryResults>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<crate::churn::ChurnResults>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<crate::slow::SlowResults>,
    pub traffic: Traffic,
    /// Close, error, disconnect and failure reasons with their counts.
    pub codes: BTreeMap<String, u64>,
    pub verdict: Verdict,
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

impl Results {
    /// Writes the JSON results file.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Machine CPU, with what the measured processes explain of it: on a shared machine
    /// the rest is other people's work competing with the run.
    fn machine_row(&self, m: &MachineCpu) -> String {
        let servers: f64 = self
            .servers
            .iter()
            .filter_map(|s| s.cpu)
            .map(|c| c.cores)
            .sum();
        let ours = servers + self.loadtest.cpu.map_or(0.0, |c| c.cores);
        let other = (m.busy_cores - m.softirq_cores - ours).max(0.0);
        format!(
            "{:.2} of {:.2} cores busy: servers+loadtest {ours:.2}, softirq {:.2}, other processes {other:.2}",
            m.busy_cores, m.cores, m.softirq_cores
        )
    }

    /// The human summary, one `name  value` row per line, grouped by section.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        let c = &self.connections;
        row(
            "scenario",
            format!("{} ({:.1}s wall)", self.scenario, self.wall_secs),
        );
        row(
            "connections",
            format!(
                "{} ready of {}, {} failed, {} dropped, {} dead, {} slow (not reading)",
                c.ready, c.target, c.failed, c.dropped, c.dead, c.slow
            ),
        );
        row(
            "connect rate",
            format!("{:.0}/s over {:.2}s", c.connect_rate_per_sec, c.ramp_secs),
        );
        row("connect latency", c.connect_latency.row());
        let cpu = |c: &Option<CpuUse>| {
            c.map_or("?".into(), |c| {
                format!("{:.1} s ({:.2} cores)", c.cpu_secs, c.cores)
            })
        };
        for m in &self.servers {
            let kib = |m: &Option<Memory>| m.map_or("?".into(), |m| format!("{} KiB", m.rss_kib));
            row("server pid", m.pid.to_string());
            row("  rss before", kib(&m.before));
            row("  rss after ramp", kib(&m.after_ramp));
            row(
                "  rss end",
                format!(
                    "{} (peak {} KiB)",
                    kib(&m.end),
                    m.end.map_or(0, |e| e.hwm_kib)
                ),
            );
            let per = m
                .rss_per_connection_bytes
                .map_or("?".into(), |b| format!("{b:.0} B ({:.2} KiB)", b / 1024.0));
            row("  rss per connection", per);
            row("  cpu", cpu(&m.cpu));
            if let Some(us) = m.cpu_per_connection_us_per_sec {
                row("  cpu per connection", format!("{us:.3} µs per second"));
            }
        }
        let l = &self.loadtest;
        row(
            "loadtest",
            format!(
                "{} process(es), rss {} KiB, cpu {}",
                l.processes,
                l.rss_kib,
                cpu(&l.cpu)
            ),
        );
        if let Some(m) = &self.machine {
            row("machine cpu", self.machine_row(m));
        }
        if let Some(d) = &self.delivery {
            row(
                "published",
                format!(
                    "{} ({} ok, {} failed, {} retries) at {:.1}/s over {} streams",
                    d.published,
                    d.publish_ok,
                    d.publish_failed,
                    d.publish_retries,
                    d.publish_rate_per_sec,
                    d.publish_streams
                ),
            );
            row("publish http rtt", d.publish_http_latency.row());
            row(
                "delivered",
                format!(
                    "{} of {} expected, {:.0}/s",
                    d.delivered, d.expected, d.deliveries_per_sec
                ),
            );
            row("delivery latency", d.latency.row());
            row(
                "lost / dup / reordered",
                format!("{} / {} / {}", d.lost, d.duplicates, d.reordered),
            );
            for (reason, n) in &d.publish_errors {
                row("  publish error", format!("{reason} x{n}"));
            }
        }
        if let Some(churn) = &self.churn {
            churn.rows(&mut row);
        }
        if let Some(slow) = &self.slow {
            slow.rows(&mut row);
        }
        let t = &self.traffic;
        row(
            "frames",
            format!(
                "{} frames, {} messages ({:.2}/frame), {} bytes",
                t.frames, t.messages, t.messages_per_frame, t.frame_bytes
            ),
        );
        row(
            "control",
            format!(
                "{} pings, {} pongs, {} errors, {} disconnects, {} undecodable",
                t.pings, t.pongs, t.errors, t.disconnects, t.decode_errors
            ),
        );
        for (code, n) in &self.codes {
            row("  code", format!("{code} x{n}"));
        }
        let verdict = if self.verdict.passed {
            "PASS".to_string()
        } else {
            format!("FAIL: {}", self.verdict.failures.join("; "))
        };
        row("verdict", verdict);
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
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
