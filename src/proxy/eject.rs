//! Outlier ejection: a worker that fails `consecutive_failures` times in a row
//! (connect errors, response-head timeouts or 5xx answers) is left out of selection
//! for `base_time` × the number of times it has been ejected, at most `max_time`.
//! No more than `max_percent` of a pool's workers are out at once.
//!
//! State is a few atomics per worker process ([`EjectState`], which a new process
//! of the slot starts afresh) plus the pool's count of ejected workers
//! ([`EjectClock`]), written only on failures and on the first success after a
//! failure, so the common path costs one relaxed load. The policy is read from the
//! pool's current settings at each call, so a reload that changes `eject` applies
//! to the next request.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::EjectPolicy;

/// One worker process's ejection state.
#[derive(Debug, Default)]
pub(crate) struct EjectState {
    failures: AtomicU32,
    /// How many times this worker has been ejected.
    times: AtomicU32,
    /// Milliseconds since the pool's epoch until which the worker is out; 0 when in.
    until_ms: AtomicU64,
}

/// The pool-wide side that outlives any one settings or membership change: the
/// clock and how many workers are out.
#[derive(Debug)]
pub(crate) struct EjectClock {
    epoch: Instant,
    out: AtomicUsize,
}

impl Default for EjectClock {
    fn default() -> Self {
        EjectClock {
            epoch: Instant::now(),
            out: AtomicUsize::new(0),
        }
    }
}

/// The policy applied to one pool's workers at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ejector<'a> {
    pub policy: Option<EjectPolicy>,
    pub clock: &'a EjectClock,
    /// Most workers that may be out at once.
    pub max_out: usize,
}

/// What `record` did, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Nothing,
    Ejected(Duration),
}

/// How many of `workers` may be out at once under `policy`.
pub(crate) fn max_out(policy: Option<EjectPolicy>, workers: usize) -> usize {
    policy.map_or(0, |p| workers * p.max_percent as usize / 100)
}

impl EjectClock {
    fn now_ms(&self) -> u64 {
        // +1 so that 0 always means "not ejected".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether any worker may be out; when false, `is_out` need not be asked.
    pub(crate) fn any_out(&self) -> bool {
        self.out.load(Relaxed) > 0
    }

    /// Whether `s` is ejected now; an expired ejection is cleared on the way.
    pub(crate) fn is_out(&self, s: &EjectState) -> bool {
        let until = s.until_ms.load(Relaxed);
        if until == 0 {
            return false;
        }
        if self.now_ms() < until {
            return true;
        }
        self.release(s);
        false
    }

    /// The worker behind `s` left the pool (or its ejection expired): give back
    /// its place among the ejected.
    pub(crate) fn release(&self, s: &EjectState) {
        let until = s.until_ms.load(Relaxed);
        if until != 0
            && s.until_ms
                .compare_exchange(until, 0, Relaxed, Relaxed)
                .is_ok()
        {
            self.out.fetch_sub(1, Relaxed);
        }
    }
}

impl Ejector<'_> {
    /// Record one attempt's result on worker `s`.
    pub(crate) fn record(&self, s: &EjectState, failed: bool) -> Outcome {
        let Some(policy) = self.policy else {
            return Outcome::Nothing;
        };
        if !failed {
            if s.failures.load(Relaxed) != 0 {
                s.failures.store(0, Relaxed);
            }
            return Outcome::Nothing;
        }
        let n = s.failures.fetch_add(1, Relaxed) + 1;
        if n < policy.consecutive_failures || self.clock.is_out(s) {
            return Outcome::Nothing;
        }
        // Claim one of the allowed ejection places.
        let claimed = self
            .clock
            .out
            .fetch_update(Relaxed, Relaxed, |out| {
                (out < self.max_out).then_some(out + 1)
            })
            .is_ok();
        if !claimed {
            return Outcome::Nothing;
        }
        let times = s.times.fetch_add(1, Relaxed) + 1;
        let d = policy.base_time.saturating_mul(times).min(policy.max_time);
        s.failures.store(0, Relaxed);
        s.until_ms
            .store(self.clock.now_ms() + d.as_millis() as u64, Relaxed);
        Outcome::Ejected(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base_ms: u64, max_ms: u64, max_percent: u32) -> Option<EjectPolicy> {
        Some(EjectPolicy {
            consecutive_failures: 3,
            base_time: Duration::from_millis(base_ms),
            max_time: Duration::from_millis(max_ms),
            max_percent,
        })
    }

    fn ejector(clock: &EjectClock, p: Option<EjectPolicy>, workers: usize) -> Ejector<'_> {
        Ejector {
            policy: p,
            clock,
            max_out: max_out(p, workers),
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_grows() {
        let clock = EjectClock::default();
        let e = ejector(&clock, policy(10_000, 25_000, 50), 4);
        let s = EjectState::default();
        assert_eq!(e.record(&s, true), Outcome::Nothing);
        assert_eq!(
            e.record(&s, false),
            Outcome::Nothing,
            "a success resets the run"
        );
        e.record(&s, true);
        e.record(&s, true);
        assert_eq!(
            e.record(&s, true),
            Outcome::Ejected(Duration::from_secs(10))
        );
        assert!(clock.is_out(&s) && clock.any_out());
        // Expire it by hand and fail again: the second ejection lasts twice as long,
        // the third is capped at max_time.
        s.until_ms.store(1, Relaxed);
        assert!(!clock.is_out(&s) && !clock.any_out());
        for _ in 0..2 {
            e.record(&s, true);
        }
        assert_eq!(
            e.record(&s, true),
            Outcome::Ejected(Duration::from_secs(20))
        );
        s.until_ms.store(1, Relaxed);
        clock.is_out(&s);
        for _ in 0..2 {
            e.record(&s, true);
        }
        assert_eq!(
            e.record(&s, true),
            Outcome::Ejected(Duration::from_secs(25))
        );
        clock.release(&s);
        assert!(!clock.is_out(&s) && !clock.any_out());
        clock.release(&s);
        assert!(!clock.any_out(), "a second release gives back nothing");
    }

    #[test]
    fn max_percent_caps_how_many_are_out() {
        let clock = EjectClock::default();
        let e = ejector(&clock, policy(10_000, 10_000, 50), 4);
        let workers: Vec<EjectState> = (0..4).map(|_| EjectState::default()).collect();
        let ejected = workers
            .iter()
            .filter(|s| {
                (0..3)
                    .map(|_| e.record(s, true))
                    .any(|o| matches!(o, Outcome::Ejected(_)))
            })
            .count();
        assert_eq!(ejected, 2, "50% of 4");
        // A single-worker pool never ejects its only worker.
        let clock = EjectClock::default();
        let one = ejector(&clock, policy(10_000, 10_000, 50), 1);
        let s = EjectState::default();
        assert!((0..10).all(|_| one.record(&s, true) == Outcome::Nothing));
    }

    #[test]
    fn disabled_does_nothing() {
        let clock = EjectClock::default();
        let e = ejector(&clock, None, 4);
        let s = EjectState::default();
        assert!((0..10).all(|_| e.record(&s, true) == Outcome::Nothing));
    }
}
