//! Processes: spawning workers, observing their exits, classifying them, signalling
//! their process groups and forwarding their output into the log. (The program a
//! worker process runs first, `forkyard __child`, is `crate::child`.)
//!
//! forkyard observes child exits through exactly one path: [`reaper::Reaper`], which
//! calls `waitpid(-1)` on every SIGCHLD and routes each `(pid, status)` to whoever
//! asked to watch that pid. Nothing else in the process may wait for children
//! (no `std::process::Child::wait`, no `tokio::process`). Because the reaper waits
//! for *any* child, it also reaps orphans re-parented to forkyard when it runs as
//! PID 1 or as a child subreaper.

pub(crate) mod child_spec;
pub(crate) mod exit;
pub(crate) mod oom;
pub(crate) mod output;
pub(crate) mod reaper;
pub(crate) mod signal;
pub(crate) mod spawn;
pub(crate) mod strays;
pub(crate) mod usage;

pub(crate) use exit::{ExitReason, ExitStatus};
pub(crate) use reaper::Reaper;
pub(crate) use spawn::{spawn, SpawnError, SpawnSpec};
