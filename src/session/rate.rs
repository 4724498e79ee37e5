//! Per-connection inbound rate limit: a token bucket refilled at `rate_limit_per_sec` up to
//! `rate_limit_burst`. A request over the limit gets error 110; a client that keeps
//! pushing (`rate_limit_strikes` refusals in a row) is closed with 4009.

use std::time::Instant;

use crate::config::ClientConfig;

/// The verdict on one inbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    Refuse,
    Disconnect,
}

pub(crate) struct RateLimiter {
    per_sec: f64,
    burst: f64,
    strikes_allowed: u32,
    tokens: f64,
    strikes: u32,
    last: Instant,
}

impl RateLimiter {
    pub(super) fn new(config: &ClientConfig) -> Self {
        RateLimiter {
            per_sec: f64::from(config.rate_limit_per_sec),
            burst: f64::from(config.rate_limit_burst.max(1)),
            strikes_allowed: config.rate_limit_strikes.max(1),
            tokens: f64::from(config.rate_limit_burst.max(1)),
            strikes: 0,
            last: Instant::now(),
        }
    }

    /// A plain limit of `per_sec` a second (bursts of as many) that refuses and never
    /// disconnects: the Pusher client-event limit.
    pub(crate) fn per_second(per_sec: u32) -> Self {
        RateLimiter {
            per_sec: f64::from(per_sec),
            burst: f64::from(per_sec.max(1)),
            strikes_allowed: u32::MAX,
            tokens: f64::from(per_sec.max(1)),
            strikes: 0,
            last: Instant::now(),
        }
    }

    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        if self.per_sec == 0.0 {
            return Verdict::Allow;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            return Verdict::Allow;
        }
        self.strikes += 1;
        if self.strikes >= self.strikes_allowed {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(per_sec: u32, burst: u32, strikes: u32) -> RateLimiter {
        let config = ClientConfig {
            rate_limit_per_sec: per_sec,
            rate_limit_burst: burst,
            rate_limit_strikes: strikes,
            ..ClientConfig::default()
        };
        RateLimiter::new(&config)
    }

    #[test]
    fn burst_then_refuse_then_disconnect() {
        let mut rl = limiter(10, 3, 2);
        let t = Instant::now();
        assert_eq!(rl.check(t), Verdict::Allow);
        assert_eq!(rl.check(t), Verdict::Allow);
        assert_eq!(rl.check(t), Verdict::Allow);
        assert_eq!(rl.check(t), Verdict::Refuse);
        assert_eq!(rl.check(t), Verdict::Disconnect);
    }

    #[test]
    fn refills_over_time() {
        let mut rl = limiter(10, 1, 5);
        let t = Instant::now();
        assert_eq!(rl.check(t), Verdict::Allow);
        assert_eq!(rl.check(t), Verdict::Refuse);
        assert_eq!(rl.check(t + Duration::from_millis(150)), Verdict::Allow);
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let mut rl = limiter(0, 1, 1);
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(rl.check(t), Verdict::Allow);
        }
    }
}
