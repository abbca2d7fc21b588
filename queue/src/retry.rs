//! Retry delays: exponential backoff with full jitter, capped.
//!
//! Attempt `n` (1-based) failed → wait a random time in
//! `[base·2^(n-1) / 2, base·2^(n-1)]`, at most `max`. Half of the delay is
//! fixed so delays grow visibly; the other half is jitter so a burst of
//! failures does not retry in lock-step.

use std::time::Duration;

use rand::Rng;

/// The delay before the retry that follows failed attempt `attempt` (1-based).
pub fn retry_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    let half = ceiling / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..100 {
            let d1 = retry_delay(1, base, max);
            assert!(d1 >= Duration::from_millis(50) && d1 <= base, "{d1:?}");
            let d3 = retry_delay(3, base, max);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(retry_delay(30, base, max) <= max);
        }
    }
}
