//! Signalling a worker's whole process group.
//!
//! Every worker is the leader of its own process group (pgid = its pid), so a signal
//! to the group also reaches anything the worker forked. forkyard only ever signals
//! the groups it created; it never broadcasts to its own group.

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Send `signal` to the process group led by `pgid`. A group that no longer exists
/// is not an error: the goal (no process left) is already met.
pub(crate) fn signal_group(pgid: i32, signal: Signal) -> Result<(), Errno> {
    if pgid <= 1 {
        // Never signal "every process" or init by accident.
        return Err(Errno::EINVAL);
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Send `signal` to the process `pid` alone (a dump request such as SIGUSR1, which
/// the worker's own children must not get: its default action ends a process).
pub(crate) fn signal_process(pid: i32, signal: Signal) -> Result<(), Errno> {
    if pid <= 1 {
        return Err(Errno::EINVAL);
    }
    kill(Pid::from_raw(pid), signal)
}
