//! Restart delays: exponential growth from `backoff_min` to `backoff_max`, with
//! jitter so that workers that crashed together do not restart in lockstep.
//!
//! Attempt n has the ceiling `min(backoff_max, backoff_min * 2^n)`; the delay is drawn
//! uniformly from `[max(backoff_min, ceiling/2), ceiling]` ("equal jitter"), so it
//! always lies within `[backoff_min, backoff_max]` and still grows visibly.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// New bounds (a reload changed `restart`); the count of failures stays.
    pub(crate) fn set_bounds(&mut self, min: Duration, max: Duration) {
        self.min = min;
        self.max = max.max(min);
    }

    /// Forget past failures (the worker stayed up for `reset_after`).
    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The ceiling of the next delay.
    pub(super) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The next delay, and count one more failure.
    pub(super) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        let floor = (ceiling / 2).max(self.min);
        self.attempt = self.attempt.saturating_add(1);
        if floor >= ceiling {
            return ceiling;
        }
        let span = (ceiling - floor).as_nanos() as u64;
        floor + Duration::from_nanos(rng.random_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    proptest! {
        #[test]
        fn delays_stay_within_bounds(
            min_ms in 1u64..5_000,
            extra_ms in 0u64..600_000,
            steps in 1usize..80,
            seed in any::<u64>(),
        ) {
            let min = Duration::from_millis(min_ms);
            let max = Duration::from_millis(min_ms + extra_ms);
            let mut b = Backoff::new(min, max);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for _ in 0..steps {
                let ceiling = b.ceiling();
                let d = b.next_delay(&mut rng);
                prop_assert!(d >= min, "{d:?} < {min:?}");
                prop_assert!(d <= max, "{d:?} > {max:?}");
                prop_assert!(d <= ceiling);
            }
        }

        #[test]
        fn ceiling_never_shrinks_until_reset(min_ms in 1u64..1000, steps in 1usize..50) {
            let mut b = Backoff::new(Duration::from_millis(min_ms), Duration::from_secs(30));
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let mut last = Duration::ZERO;
            for _ in 0..steps {
                let c = b.ceiling();
                prop_assert!(c >= last);
                last = c;
                b.next_delay(&mut rng);
            }
            b.reset();
            prop_assert_eq!(b.ceiling(), Duration::from_millis(min_ms));
        }
    }

    #[test]
    fn reaches_the_maximum() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..10 {
            b.next_delay(&mut rng);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(2));
        let d = b.next_delay(&mut rng);
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
    }
}
