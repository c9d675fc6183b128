//! Lifecycle hooks declared in config.yaml: running them with timeouts, retries and
//! failure policies, and counting them in metrics.
//!
//! Hooks of every phase but `post_fork` run here, inside forkyard, as tasks of the
//! control runtime: a running hook never blocks the supervisor (other worker actors,
//! the reaper and signals keep running). `post_fork` hooks run inside the new worker
//! process instead; see `process::child`, which reports their results back over a
//! pipe so they are logged and counted the same way.
//!
//! A `run:` hook is started like a worker (fork+exec of an argv, own process group),
//! its exit is observed through the reaper, its output goes to the log labelled with
//! pool, worker, phase and hook, and the last lines are kept for the error message.
//! When it exceeds its timeout, its whole process group is SIGKILLed; after it ends,
//! the group is SIGKILLed again so no grandchild it left behind survives.

mod action;
pub mod post_fork;
mod runner;

pub use runner::{HookContext, HookFailure, HookRunner, WorkerExit};

/// Why a hook attempt failed: the `reason` label of `forkyard_hook_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// `run:` exited with a non-zero code.
    Exit,
    /// `run:` was killed by a signal.
    Signal,
    /// The attempt ran past its `timeout`.
    Timeout,
    /// The command (or a `post_fork` built-in) could not be started or applied.
    SpawnError,
    /// `http:` answered with an unexpected status.
    HttpStatus,
    /// `http:` or `wait_for:` could not connect.
    Connect,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::Exit,
        FailureReason::Signal,
        FailureReason::Timeout,
        FailureReason::SpawnError,
        FailureReason::HttpStatus,
        FailureReason::Connect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Exit => "exit",
            FailureReason::Signal => "signal",
            FailureReason::Timeout => "timeout",
            FailureReason::SpawnError => "spawn_error",
            FailureReason::HttpStatus => "http_status",
            FailureReason::Connect => "connect",
        }
    }

    pub fn parse(s: &str) -> Option<FailureReason> {
        FailureReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}
