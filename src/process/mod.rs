//! Processes: spawning workers, observing their exits, classifying them, signalling
//! their process groups and forwarding their output into the log.
//!
//! forkyard observes child exits through exactly one path: [`reaper::Reaper`], which
//! calls `waitpid(-1)` on every SIGCHLD and routes each `(pid, status)` to whoever
//! asked to watch that pid. Nothing else in the process may wait for children
//! (no `std::process::Child::wait`, no `tokio::process`). Because the reaper waits
//! for *any* child, it also reaps orphans re-parented to forkyard when it runs as
//! PID 1 or as a child subreaper.

pub mod account;
pub mod child;
pub mod child_spec;
pub mod exit;
pub mod oom;
pub mod output;
pub mod reaper;
pub mod signal;
pub mod spawn;
pub mod strays;
pub mod usage;

pub use exit::{ExitReason, ExitStatus};
pub use reaper::Reaper;
pub use spawn::{spawn, SpawnError, SpawnSpec, Spawned};
