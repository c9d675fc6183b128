//! Stray processes: what forkyard adopted and nobody stops otherwise.
//!
//! A process that leaves its process group (a daemon started by a hook or a worker:
//! double fork plus `setsid`) escapes every group kill. Because forkyard is a child
//! subreaper (or PID 1), such a process becomes forkyard's child once its parent is
//! gone; the reaper reaps it whenever it exits. At shutdown, after the workers and
//! `on_shutdown` hooks, [`stop_strays`] stops whatever is still a child of
//! forkyard, so forkyard never exits leaving processes behind.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::signal::signal_group;

/// The pids whose parent is `parent`, read from `/proc`.
pub(crate) fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_ppid_pgid(&s))
                .is_some_and(|(ppid, _, state)| ppid == parent && state != 'Z')
        })
        .collect()
}

/// `(ppid, pgid, state)` from a `/proc/<pid>/stat` line; the command name may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn stat_ppid_pgid(stat: &str) -> Option<(i32, i32, char)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    Some((ppid, pgid, state))
}

fn signal_stray(pid: i32, signal: Signal) {
    let leads_group = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_ppid_pgid(&s))
        .is_some_and(|(_, pgid, _)| pgid == pid);
    if leads_group {
        let _ = signal_group(pid, signal);
    } else {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Stop every process still a child of forkyard, except `inherited` (children it
/// had when it started, e.g. a shell's `2> >(logger)` that became forkyard's child
/// through `exec`): SIGTERM (to its group when it leads one), then SIGKILL after
/// `grace`. The reaper, still running, reaps them. Returns how many there were.
pub(crate) async fn stop_strays(grace: Duration, inherited: &[i32]) -> usize {
    let me = std::process::id() as i32;
    let adopted = || {
        let mut c = children_of(me);
        c.retain(|p| !inherited.contains(p));
        c
    };
    let strays = adopted();
    if strays.is_empty() {
        return 0;
    }
    tracing::info!(count = strays.len(), pids = ?strays, "stopping adopted processes left at shutdown");
    for &pid in &strays {
        signal_stray(pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if adopted().is_empty() {
            return strays.len();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in adopted() {
        tracing::warn!(pid, "an adopted process ignored SIGTERM; killing it");
        signal_stray(pid, Signal::SIGKILL);
    }
    strays.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_an_odd_command_name() {
        let line = "4242 (a) b (c) S 17 4242 4242 0 -1 4194560";
        assert_eq!(stat_ppid_pgid(line), Some((17, 4242, 'S')));
    }
}
