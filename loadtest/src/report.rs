//! The outcome of a run: one [`Results`] value, shown as a summary table on stdout and
//! written as JSON (`--out`), plus the pass/fail verdict that sets the exit code.
//!
//! Scenarios fill the sections that apply to them (`server_memory` for runs that know the
//! server's pid, `delivery` for runs that publish); empty sections are left out of the JSON.
//! The sections themselves are in `results`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use tokio::time::Instant;

use crate::host::{CpuUse, MachineCpu, Memory};
use crate::results::{
    ChurnResults, ConnectionResults, DeliveryResults, LoadtestProcess, ServerProcess, SlowResults,
    Traffic, Verdict, Watched,
};
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
    pub churn: Option<ChurnResults>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<SlowResults>,
    pub traffic: Traffic,
    /// Close, error, disconnect and failure reasons with their counts.
    pub codes: BTreeMap<String, u64>,
    pub verdict: Verdict,
}

impl Results {
    /// The sections every scenario fills, from the run's start, the server watch and the
    /// final snapshot; the scenario adds `delivery`, `churn` or `slow` where they apply.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: impl Into<String>,
        started_unix: u64,
        started: Instant,
        params: serde_json::Value,
        connections: ConnectionResults,
        watched: Watched,
        end: &Snapshot,
        verdict: Verdict,
    ) -> Results {
        Results {
            scenario: scenario.into(),
            started_unix,
            wall_secs: started.elapsed().as_secs_f64(),
            params,
            connections,
            servers: watched.servers,
            loadtest: watched.loadtest,
            machine: watched.machine,
            delivery: None,
            churn: None,
            slow: None,
            traffic: Traffic::from_snapshot(end),
            codes: end.codes.clone(),
            verdict,
        }
    }

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
            row("  cpu over ramp", cpu(&m.ramp_cpu));
            if let Some(us) = m.cpu_per_connect_us {
                row(
                    "  cpu per connect",
                    format!("{us:.1} µs (connect + subscribe)"),
                );
            }
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
            if let Some(p) = &d.probe {
                row(
                    "probe published",
                    format!(
                        "{} ({} ok, {} failed) to a channel without subscribers",
                        p.published, p.publish_ok, p.publish_failed
                    ),
                );
                row("probe http rtt", p.publish_http_latency.row());
            }
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
