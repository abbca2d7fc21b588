//! Every retry and poll delay of Hopper's own loops, in one place, on
//! [`backon`].
//!
//! Each policy is a named [`ExponentialBuilder`] with its numbers written
//! out: the first delay, the factor it grows by, the cap, whether there is
//! jitter and when it stops. Loops that give up (a Postgres write, an LLM
//! call) run their operation with `op.retry(policy).when(..).notify(..)`
//! ([`Retryable`]); loops that never give up (the claim loop's reconnect, a
//! poll with its own deadline) take their delays from [`Pauses`], which is
//! reset after a success.
//!
//! None of these policies has jitter, and none must be mistaken for the
//! delay before a failed *job* runs again: that one is the queue's own
//! formula, with its per-queue base and cap (`hopper-queue`'s `retry.rs`).
//!
//! backon computes a grown delay in `f32` seconds, so a delay after the
//! first may be off by a few nanoseconds from the exact double; the cap and
//! the first delay are exact.

use std::time::Duration;

pub use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};

/// Tries (the first included) of a write that must not be lost but whose
/// error is not a lost connection: a Postgres record ([`record_store`]), or
/// a Redis outcome refused for another reason than an unreachable server
/// ([`redis_record`]).
pub const RECORD_TRIES: usize = 5;

/// Calls (the first included) of the summary LLM per summary ([`llm_call`]).
pub const LLM_TRIES: usize = 3;

/// The claim loop and the scheduler loop reconnecting to Redis: 50 ms,
/// doubling, capped at 5 s, no jitter, never giving up (the loop ends only
/// when its process stops). Reset after a successful round trip.
pub const fn redis_reconnect() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(50))
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
}

/// Recording an attempt's outcome in Redis (ack, fail, callbacks, lease
/// check): 50 ms, doubling, capped at 2 s, no jitter. While Redis is
/// unreachable the outcome is retried for as long as that lasts (it is
/// known and must not be lost); the caller gives up after
/// [`RECORD_TRIES`] failures of any other kind.
pub const fn redis_record() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(50))
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
}

/// Writing job records to Postgres: 50 ms, doubling, no jitter, at most
/// [`RECORD_TRIES`] tries — four pauses, 50, 100, 200 and 400 ms (750 ms in
/// all), so the cap of 400 ms is the last pause.
pub const fn record_store() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(50))
        .with_factor(2.0)
        .with_max_delay(Duration::from_millis(400))
        .with_max_times(RECORD_TRIES - 1)
}

/// Calling the summary LLM after a timeout, a 429 or a 5xx: 200 ms, doubling,
/// no jitter, at most [`LLM_TRIES`] calls — two pauses, 200 and 400 ms.
pub const fn llm_call() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_factor(2.0)
        .with_max_delay(Duration::from_millis(400))
        .with_max_times(LLM_TRIES - 1)
}

/// A Redis Cluster command refused because its slot is moving to another
/// master (`TRYAGAIN`, `ASK`: it did not run), sent again: 20 ms, doubling,
/// capped at 500 ms, no jitter, for [`SLOT_MOVE_PATIENCE`] of delays in all
/// (a slot of many keys takes seconds to move; `hopper-queue`'s
/// `connection.rs`).
pub const fn slot_moving() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(20))
        .with_factor(2.0)
        .with_max_delay(Duration::from_millis(500))
        .without_max_times()
        .with_total_delay(Some(SLOT_MOVE_PATIENCE))
}

/// How long [`slot_moving`] keeps sending a command again.
pub const SLOT_MOVE_PATIENCE: Duration = Duration::from_secs(30);

/// `POST /v1/search` polling the query's embed job: 1 ms, doubling, capped
/// at 20 ms, no jitter, unbounded (the route gives up at its own deadline,
/// 30 s): a query embedded in a few milliseconds is answered at once, a slow
/// one costs Redis at most 50 reads a second.
pub const fn embed_poll() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(1))
        .with_factor(2.0)
        .with_max_delay(Duration::from_millis(20))
        .without_max_times()
}

/// `hopper … --wait` polling a job over HTTP until it is over: 20 ms,
/// doubling, capped at 500 ms, no jitter, unbounded (the command gives up at
/// its `--timeout`).
pub const fn job_wait_poll() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(20))
        .with_factor(2.0)
        .with_max_delay(Duration::from_millis(500))
        .without_max_times()
}

/// A policy's delays one at a time, for a loop that never gives up:
/// [`Pauses::next_pause`] always has one (past a bounded policy's last delay
/// it repeats that delay) and [`Pauses::reset`] starts again from the first
/// after a success.
#[derive(Debug)]
pub struct Pauses {
    policy: ExponentialBuilder,
    delays: ExponentialBackoff,
    last: Duration,
    /// No delay taken since the last build: a reset has nothing to undo
    /// (the claim loop resets after every claim).
    fresh: bool,
}

impl Pauses {
    /// `policy`'s delays from the first.
    pub fn new(policy: ExponentialBuilder) -> Self {
        Self {
            policy,
            delays: policy.build(),
            last: Duration::ZERO,
            fresh: true,
        }
    }

    /// The next delay.
    pub fn next_pause(&mut self) -> Duration {
        self.fresh = false;
        if let Some(d) = self.delays.next() {
            self.last = d;
        }
        self.last
    }

    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        if !self.fresh {
            self.delays = self.policy.build();
            self.fresh = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// backon grows delays in `f32`: allow that much rounding.
    const ROUNDING: Duration = Duration::from_micros(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The first `n` delays of `policy`, or fewer if it stops before.
    fn delays(policy: ExponentialBuilder, n: usize) -> Vec<Duration> {
        policy.build().take(n).collect()
    }

    /// `got` is `want`, delay by delay, to within the rounding.
    fn assert_delays(got: &[Duration], want: &[Duration]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.abs_diff(*w) <= ROUNDING, "{got:?} vs {want:?}");
        }
    }

    /// An unbounded policy starts at `min`, doubles, reaches `max`
    /// exactly and stays there.
    fn assert_unbounded(policy: ExponentialBuilder, min: Duration, max: Duration) {
        let got = delays(policy, 200);
        assert_eq!(got.len(), 200, "an unbounded policy stopped");
        assert_eq!(got[0], min);
        for pair in got.windows(2) {
            assert!(pair[1] >= pair[0], "delays shrink: {got:?}");
            assert!(
                pair[1] <= pair[0] * 2 + ROUNDING,
                "more than doubling: {got:?}"
            );
        }
        assert!(got.iter().all(|d| *d <= max), "{got:?} above {max:?}");
        assert_eq!(*got.last().unwrap(), max);
    }

    #[test]
    fn slot_moving_doubles_from_20_ms_to_500_ms_for_30_s_in_all() {
        let got = delays(slot_moving(), 200);
        assert_delays(&got[..6], &[20, 40, 80, 160, 320, 500].map(ms));
        let total: Duration = got.iter().sum();
        assert!(total <= SLOT_MOVE_PATIENCE, "{total:?}");
        assert!(total > SLOT_MOVE_PATIENCE - ms(500), "{total:?}");
        assert!(got.len() < 200, "it stops");
    }

    #[test]
    fn redis_reconnect_doubles_from_50_ms_to_5_s_and_never_stops() {
        assert_unbounded(redis_reconnect(), ms(50), ms(5_000));
        let got = delays(redis_reconnect(), 8);
        assert_delays(&got, &[50, 100, 200, 400, 800, 1_600, 3_200, 5_000].map(ms));
    }

    #[test]
    fn redis_record_doubles_from_50_ms_to_2_s_and_never_stops() {
        assert_unbounded(redis_record(), ms(50), ms(2_000));
        assert_delays(
            &delays(redis_record(), 7),
            &[50, 100, 200, 400, 800, 1_600, 2_000].map(ms),
        );
    }

    #[test]
    fn record_store_pauses_four_times_for_five_tries() {
        let got = delays(record_store(), 100);
        assert_eq!(got.len(), RECORD_TRIES - 1);
        assert_delays(&got, &[50, 100, 200, 400].map(ms));
    }

    #[test]
    fn llm_call_pauses_twice_for_three_calls() {
        let got = delays(llm_call(), 100);
        assert_eq!(got.len(), LLM_TRIES - 1);
        assert_delays(&got, &[200, 400].map(ms));
    }

    #[test]
    fn embed_poll_doubles_from_1_ms_to_20_ms() {
        assert_unbounded(embed_poll(), ms(1), ms(20));
        assert_delays(&delays(embed_poll(), 6), &[1, 2, 4, 8, 16, 20].map(ms));
    }

    #[test]
    fn job_wait_poll_doubles_from_20_ms_to_500_ms() {
        assert_unbounded(job_wait_poll(), ms(20), ms(500));
        assert_delays(
            &delays(job_wait_poll(), 6),
            &[20, 40, 80, 160, 320, 500].map(ms),
        );
    }

    #[test]
    fn pauses_never_run_out_and_start_again_on_reset() {
        let mut p = Pauses::new(redis_reconnect());
        assert_eq!(p.next_pause(), ms(50));
        assert!(p.next_pause().abs_diff(ms(100)) <= ROUNDING);
        p.reset();
        assert_eq!(p.next_pause(), ms(50));

        // A bounded policy's last delay repeats.
        let mut p = Pauses::new(llm_call());
        let got: Vec<_> = (0..5).map(|_| p.next_pause()).collect();
        assert_delays(&got, &[200, 400, 400, 400, 400].map(ms));
    }

    #[tokio::test]
    async fn retry_stops_after_the_documented_tries() {
        let mut calls = 0;
        let failing = || {
            calls += 1;
            async { Err::<(), _>("down") }
        };
        // A sleeper that only notes the pauses asked for.
        let slept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = slept.clone();
        let result = failing
            .retry(record_store())
            .sleep(move |d| {
                noted.lock().unwrap().push(d);
                std::future::ready(())
            })
            .await;
        assert_eq!(result, Err("down"));
        assert_eq!(calls, RECORD_TRIES);
        assert_delays(&slept.lock().unwrap(), &[50, 100, 200, 400].map(ms));
    }
}
