//! Recycling: a worker that reached a `recycle` limit asks the supervisor for a
//! replacement, which starts first and must be ready before the old worker is
//! drained and stopped.

use std::time::{Duration, Instant};

use crate::config::Recycle;
use crate::process::ExitReason;
use crate::slot::SlotId;

/// A worker asks to be replaced.
#[derive(Debug, Clone)]
pub(crate) struct RecycleRequest {
    pub(crate) pool: String,
    pub(crate) slot: SlotId,
    /// The asking worker's endpoint number (the slot may have moved on since).
    pub(crate) port: u16,
    pub(crate) reason: ExitReason,
}

/// How often recycling limits are checked.
pub(crate) const RECYCLE_CHECK: Duration = Duration::from_millis(250);
/// How long to wait before asking again if a replacement did not happen.
pub(crate) const RECYCLE_RETRY: Duration = Duration::from_secs(30);

/// Which recycling limit, if any, a worker spawned at `started` that was sent
/// `sent` requests has reached; `threshold` is `max_requests` plus its jitter.
pub(crate) fn recycle_due(
    r: &Recycle,
    pid: i32,
    started: Instant,
    sent: u64,
    threshold: Option<u64>,
) -> Option<ExitReason> {
    if threshold.is_some_and(|t| sent >= t) {
        return Some(ExitReason::RecycleRequests);
    }
    if r.max_lifetime.is_some_and(|l| started.elapsed() >= l) {
        return Some(ExitReason::RecycleLifetime);
    }
    if let Some(max) = r.max_rss {
        if crate::process::usage::read(pid).is_some_and(|u| u.rss_bytes >= max) {
            return Some(ExitReason::RecycleMemory);
        }
    }
    if let Some(max) = r.max_uss {
        if crate::process::usage::memory(pid).is_some_and(|m| m.uss_bytes >= max) {
            return Some(ExitReason::RecycleMemory);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_named() {
        let none = Recycle::default();
        let now = Instant::now();
        let me = std::process::id() as i32;
        assert_eq!(recycle_due(&none, me, now, 1_000_000, None), None);
        assert_eq!(
            recycle_due(&none, me, now, 10, Some(10)),
            Some(ExitReason::RecycleRequests)
        );
        let lifetime = Recycle {
            max_lifetime: Some(Duration::ZERO),
            ..Recycle::default()
        };
        assert_eq!(
            recycle_due(&lifetime, me, now, 0, None),
            Some(ExitReason::RecycleLifetime)
        );
        let memory = Recycle {
            max_rss: Some(1),
            ..Recycle::default()
        };
        assert_eq!(
            recycle_due(&memory, me, now, 0, None),
            Some(ExitReason::RecycleMemory)
        );
        let unique = Recycle {
            max_uss: Some(1),
            ..Recycle::default()
        };
        assert_eq!(
            recycle_due(&unique, me, now, 0, None),
            Some(ExitReason::RecycleMemory)
        );
        let roomy = Recycle {
            max_uss: Some(u64::MAX),
            ..Recycle::default()
        };
        assert_eq!(recycle_due(&roomy, me, now, 0, None), None);
    }
}
