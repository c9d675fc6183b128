//! How a child ended, and the reason label forkyard records for it.

use std::fmt;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

/// The final status of a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    /// Exited by itself with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Convert a terminal `WaitStatus`; `None` for stops and continues.
    pub(crate) fn from_wait(status: WaitStatus) -> Option<(nix::unistd::Pid, ExitStatus)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((pid, ExitStatus::Code(code))),
            WaitStatus::Signaled(pid, sig, _) => Some((pid, ExitStatus::Signal(sig as i32))),
            _ => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(n) => match Signal::try_from(*n) {
                Ok(s) => write!(f, "signal {}", s.as_str()),
                Err(_) => write!(f, "signal {n}"),
            },
        }
    }
}

/// Why a worker stopped running: the `reason` label of the worker metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ExitReason {
    /// It exited by itself (or could not be executed).
    ExitCode,
    /// It was killed by a signal forkyard did not send as part of a planned stop.
    Signal,
    /// It did not become ready within `ready.timeout` and was killed.
    BootTimeout,
    /// A `pre_fork`, `post_fork` or `post_spawn` hook failed for this spawn.
    HookFailure,
    /// It stayed unhealthy for `health.restart_after`.
    Health,
    /// A request hung on it for `hang.after` and `hang.kill` is set: killed.
    Hang,
    /// Replaced after `recycle.max_requests`.
    RecycleRequests,
    /// Replaced after `recycle.max_lifetime`.
    RecycleLifetime,
    /// Replaced after exceeding `recycle.max_rss` or `recycle.max_uss`.
    RecycleMemory,
    /// Killed by SIGKILL while the cgroup's OOM-kill count rose (where readable).
    OomKilled,
    /// Stopped on purpose: the old worker of a rolling reload (or a new one rolled
    /// back).
    Reload,
    /// Stopped on purpose: the pool was scaled down.
    ScaleDown,
    /// Stopped on purpose: forkyard is shutting down.
    Shutdown,
}

impl ExitReason {
    /// Every reason, for pre-initialising the exit series; the first ten are the
    /// ones a slot is restarted or replaced for ([`ExitReason::restarts`]).
    pub(crate) const ALL: [ExitReason; 13] = [
        ExitReason::ExitCode,
        ExitReason::Signal,
        ExitReason::OomKilled,
        ExitReason::BootTimeout,
        ExitReason::HookFailure,
        ExitReason::Health,
        ExitReason::Hang,
        ExitReason::RecycleRequests,
        ExitReason::RecycleLifetime,
        ExitReason::RecycleMemory,
        ExitReason::Reload,
        ExitReason::ScaleDown,
        ExitReason::Shutdown,
    ];

    /// The reasons a worker is restarted or replaced, for pre-initialising the
    /// restart series: all but the planned stops.
    pub(crate) fn restarts() -> &'static [ExitReason] {
        &Self::ALL[..10]
    }

    /// A stop forkyard asked for (not a failure).
    pub(crate) fn is_planned(self) -> bool {
        matches!(
            self,
            ExitReason::RecycleRequests
                | ExitReason::RecycleLifetime
                | ExitReason::RecycleMemory
                | ExitReason::Reload
                | ExitReason::ScaleDown
                | ExitReason::Shutdown
        )
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExitReason::ExitCode => "exit_code",
            ExitReason::Signal => "signal",
            ExitReason::BootTimeout => "boot_timeout",
            ExitReason::HookFailure => "hook_failure",
            ExitReason::Health => "health",
            ExitReason::Hang => "hang",
            ExitReason::RecycleRequests => "recycle_requests",
            ExitReason::RecycleLifetime => "recycle_lifetime",
            ExitReason::RecycleMemory => "recycle_memory",
            ExitReason::OomKilled => "oom_killed",
            ExitReason::Reload => "reload",
            ExitReason::ScaleDown => "scale_down",
            ExitReason::Shutdown => "shutdown",
        }
    }

    /// The reason for an exit forkyard did not cause.
    pub(crate) fn of_unplanned(status: ExitStatus) -> ExitReason {
        match status {
            ExitStatus::Code(_) => ExitReason::ExitCode,
            ExitStatus::Signal(_) => ExitReason::Signal,
        }
    }

    /// Like `of_unplanned`, given the cgroup's OOM-kill count when the process
    /// started (`before`) and now: a SIGKILL while it rose is `oom_killed`.
    pub(crate) fn of_unplanned_oom(
        status: ExitStatus,
        before: Option<u64>,
        now: Option<u64>,
    ) -> ExitReason {
        let sigkill = status == ExitStatus::Signal(Signal::SIGKILL as i32);
        match (before, now) {
            (Some(b), Some(n)) if sigkill && n > b => ExitReason::OomKilled,
            _ => ExitReason::of_unplanned(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    #[test]
    fn classifies_wait_statuses() {
        let pid = Pid::from_raw(42);
        assert_eq!(
            ExitStatus::from_wait(WaitStatus::Exited(pid, 3)),
            Some((pid, ExitStatus::Code(3)))
        );
        let (_, s) =
            ExitStatus::from_wait(WaitStatus::Signaled(pid, Signal::SIGKILL, false)).unwrap();
        assert_eq!(s, ExitStatus::Signal(9));
        assert_eq!(s.to_string(), "signal SIGKILL");
        assert_eq!(ExitReason::of_unplanned(s), ExitReason::Signal);
        assert_eq!(
            ExitReason::of_unplanned(ExitStatus::Code(0)),
            ExitReason::ExitCode
        );
        assert_eq!(
            ExitStatus::from_wait(WaitStatus::Stopped(pid, Signal::SIGSTOP)),
            None
        );
    }

    #[test]
    fn restart_reasons_are_the_unplanned_and_recycles() {
        let restarts = ExitReason::restarts();
        assert!(restarts
            .iter()
            .all(|r| !r.is_planned() || r.as_str().starts_with("recycle_")));
        let rest = &ExitReason::ALL[restarts.len()..];
        assert_eq!(
            rest,
            [
                ExitReason::Reload,
                ExitReason::ScaleDown,
                ExitReason::Shutdown
            ]
        );
    }

    #[test]
    fn a_sigkill_while_the_oom_count_rose_is_oom_killed() {
        let kill = ExitStatus::Signal(9);
        let oom = ExitReason::of_unplanned_oom;
        assert_eq!(oom(kill, Some(3), Some(4)), ExitReason::OomKilled);
        assert_eq!(oom(kill, Some(3), Some(3)), ExitReason::Signal);
        assert_eq!(oom(kill, None, Some(4)), ExitReason::Signal, "unreadable");
        assert_eq!(
            oom(ExitStatus::Signal(15), Some(3), Some(4)),
            ExitReason::Signal
        );
        assert_eq!(
            oom(ExitStatus::Code(1), Some(3), Some(4)),
            ExitReason::ExitCode
        );
    }
}
