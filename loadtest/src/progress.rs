//! Live progress of a run: indicatif bars when stderr is a terminal, one plain line per
//! interval otherwise (CI logs, pipes), so a long run is never silent.
//!
//! Progress only ever goes to stderr; stdout carries the summary table alone.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::stats::Snapshot;

/// The shortest interval rates are computed over.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// How often plain-text mode prints a line.
const PLAIN_EVERY: Duration = Duration::from_secs(2);
/// How often the bars are given a fresh snapshot (they redraw at 4 Hz).
const BARS_EVERY: Duration = Duration::from_millis(250);

/// The live display of one run.
#[derive(Debug)]
pub struct Progress {
    view: View,
    phase: String,
    started: Instant,
    last: Option<(Instant, u64, u64)>,
    /// Connections and messages per second over the last rate window.
    rates: (f64, f64),
    last_plain: Option<Instant>,
    last_update: Option<Instant>,
}

#[derive(Debug)]
enum View {
    Bars {
        _multi: MultiProgress,
        ready: ProgressBar,
        info: ProgressBar,
    },
    Plain,
}

impl Progress {
    /// A display for a run of `connections`; bars only if `bars` and stderr is a terminal.
    pub fn new(connections: u64, bars: bool) -> Progress {
        let view = if bars && crate::host::stderr_is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            let ready = multi.add(ProgressBar::new(connections));
            ready.set_style(style(
                "{prefix:>8.bold} [{elapsed_precise}] [{bar:36.cyan/blue}] {pos}/{len} ready {msg}",
            ));
            let info = multi.add(ProgressBar::new(1));
            info.set_style(style("{prefix:>8} {msg}"));
            View::Bars {
                _multi: multi,
                ready,
                info,
            }
        } else {
            View::Plain
        };
        Progress {
            view,
            phase: String::new(),
            started: Instant::now(),
            last: None,
            rates: (0.0, 0.0),
            last_plain: None,
            last_update: None,
        }
    }

    /// Names the phase shown in front of the bars (`ramp`, `hold`, `publish`, ...).
    pub fn phase(&mut self, phase: &str) {
        self.phase = phase.to_string();
        if let View::Bars { ready, .. } = &self.view {
            ready.set_prefix(phase.to_string());
        }
        if let View::Plain = self.view {
            eprintln!(
                "[{:>7.1}s] phase {phase}",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// Whether an [`update`](Self::update) would show anything now. A full snapshot
    /// merges every latency histogram (about 0.3 ms on the load generator's thread, which
    /// also reads the deliveries), so loops that poll more often than the display
    /// changes ask first: a stall of the generator reads as server latency.
    pub fn due(&self) -> bool {
        let every = match self.view {
            View::Bars { .. } => BARS_EVERY,
            View::Plain => PLAIN_EVERY,
        };
        self.last_update.is_none_or(|at| at.elapsed() >= every)
    }

    /// Shows a fresh snapshot; `extra` is scenario-specific text (publish rate, RSS...).
    pub fn update(&mut self, snap: &Snapshot, extra: &str) {
        let now = Instant::now();
        self.last_update = Some(now);
        let c = &snap.counters;
        // Rates over at least RATE_WINDOW: worker processes report every 500 ms, so rates
        // between two closer updates would mostly read 0.
        match self.last {
            Some((at, ready, msgs)) if now - at >= RATE_WINDOW => {
                let secs = (now - at).as_secs_f64();
                self.rates = (
                    (c.ready.saturating_sub(ready)) as f64 / secs,
                    (c.messages.saturating_sub(msgs)) as f64 / secs,
                );
                self.last = Some((now, c.ready, c.messages));
            }
            Some(_) => {}
            None => self.last = Some((now, c.ready, c.messages)),
        }
        let (conn_rate, msg_rate) = self.rates;
        let p99 = snap.delivery_latency.value_at_quantile(0.99);
        let conns = format!(
            "failed {} dropped {} | {:.0} conn/s",
            snap.failed(),
            c.dropped,
            conn_rate
        );
        let msgs = format!(
            "msgs {} ({:.0}/s) p99 {} | {extra}",
            c.messages,
            msg_rate,
            fmt_micros(p99)
        );
        match &self.view {
            View::Bars { ready, info, .. } => {
                ready.set_position(c.ready);
                ready.set_message(conns);
                info.set_message(msgs);
            }
            View::Plain => {
                if self.last_plain.is_some_and(|t| now - t < PLAIN_EVERY) {
                    return;
                }
                self.last_plain = Some(now);
                let t = self.started.elapsed().as_secs_f64();
                eprintln!(
                    "[{t:>7.1}s] {:<8} ready {} {conns} | {msgs}",
                    self.phase, c.ready
                );
            }
        }
    }

    /// Removes the bars before the summary is printed.
    pub fn finish(&self) {
        if let View::Bars { ready, info, .. } = &self.view {
            ready.finish_and_clear();
            info.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Microseconds in the most readable unit.
pub fn fmt_micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_are_shown_in_a_readable_unit() {
        assert_eq!(fmt_micros(999), "999us");
        assert_eq!(fmt_micros(1_500), "1.50ms");
        assert_eq!(fmt_micros(2_345_678), "2.35s");
    }
}
