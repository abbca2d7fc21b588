//! A circuit breaker for a flaky dependency (the summary LLM endpoint):
//! closed, it lets every call through and counts failures in a row; after
//! `trip_after` of them it opens and refuses calls for `open_for`; then it is
//! half-open: exactly one probe call goes through (the others are refused as
//! if open), and the probe's outcome closes it again or re-opens it for
//! another `open_for`.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through; this many failed in a row.
    Closed { failures: u32 },
    /// Calls are refused until then.
    Open { until: Instant },
    /// One probe is in flight (`probing`) or may start.
    HalfOpen { probing: bool },
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Call; report the outcome with [`Breaker::record`].
    Call,
    /// Call as the half-open probe; report the outcome.
    Probe,
    /// Do not call.
    Refused,
}

/// A circuit breaker (see the module docs). Cheap to share behind `&`.
#[derive(Debug)]
pub struct Breaker {
    trip_after: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker that opens after `trip_after` failures in a row, for
    /// `open_for`.
    pub fn new(trip_after: u32, open_for: Duration) -> Self {
        Self {
            trip_after: trip_after.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// The state now (an open breaker whose time is up reads half-open).
    pub fn state(&self, now: Instant) -> State {
        let mut s = self.state.lock().expect("breaker lock");
        if let State::Open { until } = *s
            && now >= until
        {
            *s = State::HalfOpen { probing: false };
        }
        *s
    }

    /// Whether a call may start now.
    pub fn permit(&self, now: Instant) -> Permit {
        self.state(now);
        let mut s = self.state.lock().expect("breaker lock");
        match *s {
            State::Closed { .. } => Permit::Call,
            State::Open { .. } | State::HalfOpen { probing: true } => Permit::Refused,
            State::HalfOpen { probing: false } => {
                *s = State::HalfOpen { probing: true };
                Permit::Probe
            }
        }
    }

    /// The outcome of a permitted call. Answers whether it opened the
    /// breaker.
    pub fn record(&self, permit: Permit, ok: bool, now: Instant) -> bool {
        let mut s = self.state.lock().expect("breaker lock");
        let open = State::Open {
            until: now + self.open_for,
        };
        match (permit, *s, ok) {
            (Permit::Refused, _, _) => false,
            (_, _, true) => {
                *s = State::Closed { failures: 0 };
                false
            }
            (Permit::Probe, _, false) => {
                *s = open;
                true
            }
            (Permit::Call, State::Closed { failures }, false) => {
                if failures + 1 >= self.trip_after {
                    *s = open;
                    true
                } else {
                    *s = State::Closed {
                        failures: failures + 1,
                    };
                    false
                }
            }
            // A call that started while closed and ended after the breaker
            // opened (another call tripped it) changes nothing more.
            (Permit::Call, _, false) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_failures_in_a_row_then_probes_once_then_closes() {
        let b = Breaker::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.permit(t0), Permit::Call);
            assert!(!b.record(Permit::Call, false, t0));
        }
        // A success in between resets the count.
        assert!(!b.record(Permit::Call, true, t0));
        for i in 0..3 {
            assert_eq!(b.permit(t0), Permit::Call);
            assert_eq!(b.record(Permit::Call, false, t0), i == 2, "failure {i}");
        }
        assert!(matches!(b.state(t0), State::Open { .. }));
        assert_eq!(b.permit(t0 + Duration::from_secs(29)), Permit::Refused);

        // Time is up: half-open, one probe at a time.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(b.state(later), State::HalfOpen { probing: false });
        assert_eq!(b.permit(later), Permit::Probe);
        assert_eq!(b.permit(later), Permit::Refused, "one probe only");
        assert!(!b.record(Permit::Probe, true, later));
        assert_eq!(b.state(later), State::Closed { failures: 0 });
        assert_eq!(b.permit(later), Permit::Call);
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_the_full_time() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(b.record(b.permit(t0), false, t0));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.permit(t1), Permit::Probe);
        assert!(b.record(Permit::Probe, false, t1));
        assert_eq!(b.permit(t1 + Duration::from_secs(9)), Permit::Refused);
        assert_eq!(b.permit(t1 + Duration::from_secs(10)), Permit::Probe);
    }
}
