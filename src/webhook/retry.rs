//! The delays between attempts of a failed webhook batch: exponential backoff with
//! jitter. (The endpoint's circuit breaker is the backend proxy's, `proxy::breaker`.)

use std::time::Duration;

/// The delay before retry number `attempt` (1-based): `initial * 2^(attempt-1)` capped at
/// `max`, then "equal jitter": half of it fixed, half random, so endpoints that failed
/// together do not retry in lockstep.
pub fn retry_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max);
    let half = capped / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stay_within_the_cap() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..40 {
            let delay = retry_delay(attempt, initial, max);
            let full = (initial * 2u32.pow(attempt.min(21) - 1)).min(max);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
    }
}
