//! Active health checks of a ready worker: consecutive results decide when it
//! leaves the load balancer, when it comes back, and when it is restarted.

use std::time::{Duration, Instant};

use crate::config::HealthCheck;

/// What one check result changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    None,
    /// `unhealthy_after` failures in a row: take it out of the load balancer.
    BecameUnhealthy,
    /// `healthy_after` successes in a row while out: put it back.
    BecameHealthy,
    /// Unhealthy for `restart_after`: restart it.
    RestartDue,
}

#[derive(Debug)]
pub struct HealthTracker {
    unhealthy_after: u32,
    healthy_after: u32,
    restart_after: Duration,
    fails: u32,
    passes: u32,
    unhealthy_since: Option<Instant>,
}

impl HealthTracker {
    pub fn new(check: &HealthCheck) -> HealthTracker {
        HealthTracker {
            unhealthy_after: check.unhealthy_after,
            healthy_after: check.healthy_after,
            restart_after: check.restart_after,
            fails: 0,
            passes: 0,
            unhealthy_since: None,
        }
    }

    /// Record one check result taken at `now`.
    pub fn observe(&mut self, passed: bool, now: Instant) -> HealthChange {
        if passed {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            if self.unhealthy_since.is_some() && self.passes >= self.healthy_after {
                self.unhealthy_since = None;
                return HealthChange::BecameHealthy;
            }
            return HealthChange::None;
        }
        self.passes = 0;
        self.fails = self.fails.saturating_add(1);
        match self.unhealthy_since {
            None if self.fails >= self.unhealthy_after => {
                self.unhealthy_since = Some(now);
                if self.restart_after.is_zero() {
                    HealthChange::RestartDue
                } else {
                    HealthChange::BecameUnhealthy
                }
            }
            Some(since) if now.duration_since(since) >= self.restart_after => {
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

    fn tracker() -> HealthTracker {
        HealthTracker::new(&HealthCheck {
            probe: ReadyProbe::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
            restart_after: Duration::from_secs(10),
        })
    }

    #[test]
    fn flaps_only_after_consecutive_results() {
        let mut t = tracker();
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        assert_eq!(t.observe(false, s(0)), HealthChange::None);
        assert_eq!(t.observe(false, s(1)), HealthChange::None);
        assert_eq!(
            t.observe(true, s(2)),
            HealthChange::None,
            "a pass resets the count"
        );
        assert_eq!(t.observe(false, s(3)), HealthChange::None);
        assert_eq!(t.observe(false, s(4)), HealthChange::None);
        assert_eq!(t.observe(false, s(5)), HealthChange::BecameUnhealthy);
        assert_eq!(t.observe(true, s(6)), HealthChange::None);
        assert_eq!(t.observe(true, s(7)), HealthChange::BecameHealthy);
        assert!(t.unhealthy_since.is_none());
    }

    #[test]
    fn restarts_after_staying_unhealthy() {
        let mut t = tracker();
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        for n in 0..2 {
            t.observe(false, s(n));
        }
        assert_eq!(t.observe(false, s(2)), HealthChange::BecameUnhealthy);
        assert_eq!(t.observe(false, s(9)), HealthChange::None);
        assert_eq!(t.observe(false, s(12)), HealthChange::RestartDue);
    }
}
