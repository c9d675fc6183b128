//! The crash-loop breaker of one pool: too many restarts within a window mark the
//! pool degraded (`forkyard_pool_degraded{pool} 1`, shown on `/readyz` and in the
//! log); its workers then retry at `backoff_max` until one becomes ready again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// The thresholds come from the pool's current `restart.crash_loop` settings at
/// each failure, so a reload applies to the next one.
pub(crate) struct CrashLoop {
    pool: String,
    recent: Mutex<VecDeque<Instant>>,
    degraded: AtomicBool,
    gauge: IntGauge,
}

impl CrashLoop {
    pub(crate) fn new(pool: &str, gauge: IntGauge) -> CrashLoop {
        gauge.set(0);
        CrashLoop {
            pool: pool.to_string(),
            recent: Mutex::new(VecDeque::new()),
            degraded: AtomicBool::new(false),
            gauge,
        }
    }

    fn count_recent(&self, now: Instant, window: Duration) -> usize {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            recent.pop_front();
        }
        recent.len()
    }

    /// Record one unplanned restart; returns whether the pool is now degraded
    /// (`failures` restarts within `window`).
    pub(crate) fn record_failure(&self, failures: usize, window: Duration) -> bool {
        self.record_failure_at(Instant::now(), failures, window)
    }

    fn record_failure_at(&self, now: Instant, failures: usize, window: Duration) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(now);
        if self.count_recent(now, window) >= failures && !self.degraded.swap(true, Ordering::AcqRel)
        {
            self.gauge.set(1);
            tracing::error!(
                pool = %self.pool,
                failures,
                window_ms = window.as_millis() as u64,
                "pool degraded: workers keep failing; retrying at backoff_max"
            );
        }
        self.is_degraded()
    }

    /// A worker of the pool became ready: its command works again, so leave the
    /// degraded state (a new run of failures trips it again).
    pub(crate) fn on_ready(&self) {
        if self.is_degraded() {
            self.degraded.store(false, Ordering::Release);
            self.gauge.set(0);
            tracing::info!(pool = %self.pool, "pool recovered from its crash loop");
        }
    }

    /// A new generation replaced every worker: forget the old one's failures and
    /// leave the degraded state.
    pub(crate) fn reset(&self) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.on_ready();
    }

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_spread_wider_than_the_window_never_trip() {
        let g = IntGauge::new("g", "h").unwrap();
        let c = CrashLoop::new("web", g);
        let w = Duration::from_secs(10);
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(!c.record_failure_at(t0 + Duration::from_secs(6 * i), 3, w));
        }
    }

    #[test]
    fn trips_at_the_threshold_and_recovers_when_a_worker_is_ready() {
        let g = IntGauge::new("g", "h").unwrap();
        let c = CrashLoop::new("web", g.clone());
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        assert!(!c.record_failure_at(t0, 3, w));
        assert!(!c.record_failure_at(t0 + Duration::from_secs(1), 3, w));
        assert!(c.record_failure_at(t0 + Duration::from_secs(2), 3, w));
        assert_eq!(g.get(), 1);
        c.on_ready();
        assert!(!c.is_degraded());
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn a_reset_forgets_the_failures_a_ready_worker_only_leaves_the_state() {
        let g = IntGauge::new("g", "h").unwrap();
        let c = CrashLoop::new("web", g.clone());
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        for i in 0..3 {
            c.record_failure_at(t0 + Duration::from_secs(i), 3, w);
        }
        c.on_ready();
        // Still three in the window: the next failure trips it again.
        assert!(c.record_failure_at(t0 + Duration::from_secs(3), 3, w));
        c.reset();
        assert_eq!(g.get(), 0);
        assert!(!c.record_failure_at(t0 + Duration::from_secs(4), 3, w));
    }
}
