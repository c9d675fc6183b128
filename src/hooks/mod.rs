//! Lifecycle hooks declared in config.yaml: running them with timeouts, retries and
//! failure policies.
//!
//! One runner ([`HookRunner`]) serves both sides of the fork. Inside forkyard it
//! runs every phase but `post_fork`, as tasks of the control runtime, so a running
//! hook never blocks the supervisor. Inside a new worker process (`forkyard
//! __child`, see `process::child`) the same runner runs the `post_fork` hooks, on a
//! small runtime of that process's own. What differs is only where results go: a
//! [`Recorder`]. forkyard's recorder logs, counts and shows each attempt
//! (`crate::record`); the child's sends it to forkyard as a typed
//! [`PostForkReport`] over a pipe, and forkyard hands it to the same recorder
//! ([`post_fork`]), so a `post_fork` hook is logged and counted exactly like the
//! others.
//!
//! A `run:` hook is started like a worker (fork+exec of an argv, own process group),
//! its exit is observed through the process's one reaper, its output is handed to
//! the recorder line by line, and the last lines are kept for the error message.
//! When it exceeds its timeout, its whole process group is SIGKILLed; after it ends,
//! the group is SIGKILLed again so no grandchild it left behind survives.

mod action;
mod command;
pub(crate) mod post_fork;
mod report;
mod runner;

pub(crate) use action::AttemptError;
pub(crate) use command::run_command;
pub(crate) use report::PostForkReport;
pub(crate) use runner::{
    Attempt, Caller, HookContext, HookFailure, HookRunner, Recorder, WorkerExit,
};

use serde::{Deserialize, Serialize};

/// Why a hook attempt failed: the `reason` label of `forkyard_hook_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailureReason {
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
    /// A `call:` raised an exception (an import error included).
    Exception,
    /// A preload pool's preloader refused to fork: it had threads besides its main
    /// one (the `single_threaded` check of `pre_fork`).
    Threads,
}

impl FailureReason {
    pub(crate) const ALL: [FailureReason; 8] = [
        FailureReason::Exit,
        FailureReason::Signal,
        FailureReason::Timeout,
        FailureReason::SpawnError,
        FailureReason::HttpStatus,
        FailureReason::Connect,
        FailureReason::Exception,
        FailureReason::Threads,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureReason::Exit => "exit",
            FailureReason::Signal => "signal",
            FailureReason::Timeout => "timeout",
            FailureReason::SpawnError => "spawn_error",
            FailureReason::HttpStatus => "http_status",
            FailureReason::Connect => "connect",
            FailureReason::Exception => "exception",
            FailureReason::Threads => "threads",
        }
    }
}
