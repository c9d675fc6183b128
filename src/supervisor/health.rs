//! Active health checks of a ready worker: consecutive results decide when it
//! leaves the load balancer, when it comes back, and when it is restarted.

use std::time::Instant;

use crate::config::HealthCheck;

/// What one check result changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HealthChange {
    None,
    /// `unhealthy_after` failures in a row: take it out of the load balancer.
    BecameUnhealthy,
    /// `healthy_after` successes in a row while out: put it back.
    BecameHealthy,
    /// Unhealthy for `restart_after`: restart it.
    RestartDue,
}

/// The consecutive results of one worker process. The thresholds are read from
/// the pool's current `health` settings at each result, so a reload applies to the
/// next check.
#[derive(Debug, Default)]
pub(crate) struct HealthTracker {
    fails: u32,
    passes: u32,
    unhealthy_since: Option<Instant>,
}

impl HealthTracker {
    /// Record one check result taken at `now`, judged by `check`.
    pub(crate) fn observe(
        &mut self,
        check: &HealthCheck,
        passed: bool,
        now: Instant,
    ) -> HealthChange {
        if passed {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            if self.unhealthy_since.is_some() && self.passes >= check.healthy_after {
                self.unhealthy_since = None;
                return HealthChange::BecameHealthy;
            }
            return HealthChange::None;
        }
        self.passes = 0;
        self.fails = self.fails.saturating_add(1);
        match self.unhealthy_since {
            None if self.fails >= check.unhealthy_after => {
                self.unhealthy_since = Some(now);
                if check.restart_after.is_zero() {
                    HealthChange::RestartDue
                } else {
                    HealthChange::BecameUnhealthy
                }
            }
            Some(since) if now.duration_since(since) >= check.restart_after => {
                HealthChange::RestartDue
            }
            _ => HealthChange::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReadyProbe;
    use std::time::Duration;

    fn check() -> HealthCheck {
        HealthCheck {
            probe: ReadyProbe::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
            restart_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn flaps_only_after_consecutive_results() {
        let (mut t, c) = (HealthTracker::default(), check());
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        assert_eq!(t.observe(&c, false, s(0)), HealthChange::None);
        assert_eq!(t.observe(&c, false, s(1)), HealthChange::None);
        assert_eq!(
            t.observe(&c, true, s(2)),
            HealthChange::None,
            "a pass resets the count"
        );
        assert_eq!(t.observe(&c, false, s(3)), HealthChange::None);
        assert_eq!(t.observe(&c, false, s(4)), HealthChange::None);
        assert_eq!(t.observe(&c, false, s(5)), HealthChange::BecameUnhealthy);
        assert_eq!(t.observe(&c, true, s(6)), HealthChange::None);
        assert_eq!(t.observe(&c, true, s(7)), HealthChange::BecameHealthy);
        assert!(t.unhealthy_since.is_none());
    }

    #[test]
    fn restarts_after_staying_unhealthy() {
        let (mut t, c) = (HealthTracker::default(), check());
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        for n in 0..2 {
            t.observe(&c, false, s(n));
        }
        assert_eq!(t.observe(&c, false, s(2)), HealthChange::BecameUnhealthy);
        assert_eq!(t.observe(&c, false, s(9)), HealthChange::None);
        assert_eq!(t.observe(&c, false, s(12)), HealthChange::RestartDue);
    }
}
