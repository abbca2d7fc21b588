//! Retry delays of failed jobs: capped exponential backoff with *equal*
//! jitter (not full jitter).
//!
//! Attempt `n` (1-based) failed → the ceiling is `c = min(base·2^(n-1), max)`
//! and the job waits `c/2` plus a uniformly random `[0, c/2]` (drawn in whole
//! milliseconds): a delay in `[c/2, c]`, never above `max`. Full jitter would
//! draw from all of `[0, c]`; equal jitter keeps half of the delay fixed so
//! delays grow visibly from attempt to attempt and a failing job never comes
//! back almost at once, while the random half still spreads a burst of
//! failures so they do not retry in lock-step.
//!
//! This formula, with each queue's own `base` and `max`, is the queue's; the
//! delays of Hopper's own retry and poll loops are in
//! `hopper_shared::retry_policy`.

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
