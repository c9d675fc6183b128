//! The one owner of child exits.
//!
//! On every SIGCHLD the reaper calls `waitpid(-1, WNOHANG)` until no exited child
//! is left, and hands each status to the task that called [`Reaper::watch`] for that
//! pid. A status that arrives before anyone watches its pid (a child can exit before
//! `spawn` returns to its caller) is kept briefly, so `watch` still sees it. Statuses
//! nobody claims are orphans re-parented to forkyard; they are reaped and dropped,
//! which is what makes forkyard a correct PID 1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use super::exit::ExitStatus;

/// How long an unclaimed status is kept for a late `watch`.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
    unclaimed: HashMap<i32, (ExitStatus, Instant)>,
}

/// Routes child exit statuses to their watchers.
pub(crate) struct Reaper {
    table: Mutex<Table>,
}

impl Reaper {
    /// Install the SIGCHLD handler and start reaping on the current tokio runtime.
    /// Call this before spawning any child.
    pub(crate) fn start() -> std::io::Result<Arc<Reaper>> {
        let reaper = Arc::new(Reaper {
            table: Mutex::new(Table::default()),
        });
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// A receiver that resolves with `pid`'s exit status.
    pub(crate) fn watch(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((status, _)) = table.unclaimed.remove(&pid) {
            let _ = tx.send(status);
        } else {
            table.waiting.insert(pid, tx);
        }
        rx
    }

    /// Reap every child that has exited and route its status.
    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(ws) => {
                    if let Some((pid, status)) = ExitStatus::from_wait(ws) {
                        self.route(pid.as_raw(), status);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid failed");
                    break;
                }
            }
        }
    }

    fn route(&self, pid: i32, status: ExitStatus) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = table.waiting.remove(&pid) {
            let _ = tx.send(status);
            return;
        }
        let now = Instant::now();
        table
            .unclaimed
            .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
        tracing::debug!(pid, %status, "reaped a process nobody was watching (orphan or early exit)");
        table.unclaimed.insert(pid, (status, now));
    }
}
