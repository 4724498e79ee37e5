//! A circuit breaker for calls to a backend that can fail: it opens after
//! `consecutive_failures` failures in a row, or when at least `failure_ratio` of the last
//! `window` calls failed; while open every call is refused at once; after `open_for` one
//! probe call is let through (half-open) and its outcome closes or reopens the breaker.
//!
//! It is a few atomics-free fields under one short `parking_lot` lock: a call takes the
//! lock twice (admit, record), never across an await.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// When a breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Failures in a row that open the breaker (0: never by count).
    pub consecutive_failures: u32,
    /// Share of failures among the last `window` calls that opens it (0: never by ratio).
    pub failure_ratio: f64,
    /// Calls the ratio looks at; the ratio applies only once the window is full.
    pub window: u32,
    /// How long the breaker stays open before a probe.
    pub open_for: Duration,
}

/// The state a breaker reports (metrics use `as_gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// Whether a call may go out, and what to report afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Call,
    /// Go ahead: this is the half-open probe.
    Probe,
    /// Refused: the breaker is open.
    Refused,
}

#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    opened_at: Instant,
    in_a_row: u32,
    /// Outcomes of the last calls, newest last (true: failed).
    recent: std::collections::VecDeque<bool>,
    probe_out: bool,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                opened_at: Instant::now(),
                in_a_row: 0,
                recent: std::collections::VecDeque::new(),
                probe_out: false,
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    /// How long the breaker stays open from now (zero when a call or probe may go out):
    /// lets a caller that queues its work (webhooks) sleep instead of asking again.
    pub fn open_for(&self) -> std::time::Duration {
        let inner = self.inner.lock();
        match inner.state {
            BreakerState::Open => self
                .settings
                .open_for
                .saturating_sub(inner.opened_at.elapsed()),
            _ => std::time::Duration::ZERO,
        }
    }

    /// Asks to make a call now.
    pub fn admit(&self) -> Admit {
        let mut inner = self.inner.lock();
        match inner.state {
            BreakerState::Closed => Admit::Call,
            BreakerState::Open if inner.opened_at.elapsed() >= self.settings.open_for => {
                inner.state = BreakerState::HalfOpen;
                inner.probe_out = true;
                Admit::Probe
            }
            BreakerState::Open => Admit::Refused,
            BreakerState::HalfOpen if !inner.probe_out => {
                inner.probe_out = true;
                Admit::Probe
            }
            BreakerState::HalfOpen => Admit::Refused,
        }
    }

    /// Admits a call (`None` when the breaker refuses it) as a `Pending` that records its
    /// outcome. A `Pending` dropped without an outcome (the caller's future was
    /// cancelled: its client went away, a timeout around it) frees the half-open probe
    /// slot; else a probe that never reports would keep the breaker refusing every call.
    pub fn start(&self) -> Option<Pending<'_>> {
        match self.admit() {
            Admit::Refused => None,
            admitted => Some(Pending {
                breaker: self,
                admitted,
                recorded: false,
            }),
        }
    }

    /// Records the outcome of an admitted call; returns the state after it.
    pub fn record(&self, admitted: Admit, ok: bool) -> BreakerState {
        let mut inner = self.inner.lock();
        if admitted == Admit::Probe {
            inner.probe_out = false;
            if ok {
                inner.state = BreakerState::Closed;
                inner.in_a_row = 0;
                inner.recent.clear();
            } else {
                inner.state = BreakerState::Open;
                inner.opened_at = Instant::now();
            }
            return inner.state;
        }
        if inner.state != BreakerState::Closed {
            return inner.state;
        }
        inner.in_a_row = if ok {
            0
        } else {
            inner.in_a_row.saturating_add(1)
        };
        let window = self.settings.window.max(1) as usize;
        inner.recent.push_back(!ok);
        while inner.recent.len() > window {
            inner.recent.pop_front();
        }
        let by_count = self.settings.consecutive_failures > 0
            && inner.in_a_row >= self.settings.consecutive_failures;
        let failed = inner.recent.iter().filter(|f| **f).count();
        let by_ratio = self.settings.failure_ratio > 0.0
            && inner.recent.len() == window
            && failed as f64 >= self.settings.failure_ratio * window as f64;
        if by_count || by_ratio {
            inner.state = BreakerState::Open;
            inner.opened_at = Instant::now();
        }
        inner.state
    }
}

/// A call the breaker admitted, until its outcome is recorded (`Breaker::start`).
#[derive(Debug)]
pub struct Pending<'a> {
    breaker: &'a Breaker,
    admitted: Admit,
    recorded: bool,
}

impl Pending<'_> {
    /// Records the call's outcome; returns the breaker's state after it.
    pub fn finish(mut self, ok: bool) -> BreakerState {
        self.recorded = true;
        self.breaker.record(self.admitted, ok)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.recorded && self.admitted == Admit::Probe {
            self.breaker.inner.lock().probe_out = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(n: u32, ratio: f64, window: u32, open_ms: u64) -> Breaker {
        Breaker::new(BreakerSettings {
            consecutive_failures: n,
            failure_ratio: ratio,
            window,
            open_for: Duration::from_millis(open_ms),
        })
    }

    fn call(b: &Breaker, ok: bool) -> Admit {
        let admitted = b.admit();
        if admitted != Admit::Refused {
            b.record(admitted, ok);
        }
        admitted
    }

    #[test]
    fn opens_after_consecutive_failures_and_refuses() {
        let b = breaker(3, 0.0, 10, 60_000);
        call(&b, false);
        call(&b, true);
        call(&b, false);
        call(&b, false);
        assert_eq!(b.state(), BreakerState::Closed);
        call(&b, false);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admit::Refused);
    }

    #[test]
    fn opens_on_failure_ratio_once_the_window_is_full() {
        let b = breaker(0, 0.5, 4, 60_000);
        for ok in [false, true, false] {
            call(&b, ok);
        }
        assert_eq!(b.state(), BreakerState::Closed, "window not full yet");
        call(&b, true);
        assert_eq!(b.state(), BreakerState::Open, "2 of 4 failed");
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let b = breaker(1, 0.0, 10, 0);
        call(&b, false);
        assert_eq!(b.state(), BreakerState::Open);
        let probe = b.admit();
        assert_eq!(probe, Admit::Probe);
        assert_eq!(b.admit(), Admit::Refused, "one probe at a time");
        assert_eq!(b.record(probe, true), BreakerState::Closed);
        assert_eq!(b.admit(), Admit::Call);
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = breaker(1, 0.0, 10, 0);
        call(&b, false);
        let probe = b.admit();
        assert_eq!(b.record(probe, false), BreakerState::Open);
    }

    #[test]
    fn a_probe_dropped_without_an_outcome_frees_the_probe_slot() {
        let b = breaker(1, 0.0, 10, 0);
        call(&b, false);
        let probe = b.start();
        assert!(probe.is_some());
        assert!(b.start().is_none(), "one probe at a time");
        drop(probe);
        let next = b.start();
        assert!(next.is_some(), "the abandoned probe no longer blocks");
        assert_eq!(next.map(|p| p.finish(true)), Some(BreakerState::Closed));
    }
}
