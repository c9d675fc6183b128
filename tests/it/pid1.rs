//! forkyard as PID 1 of a PID namespace (as in a container): every orphan is reaped,
//! and SIGTERM leads to exit 0 after forkyard itself stopped and reaped every
//! worker. Needs root for `unshare`; skipped otherwise, which fails in CI.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

fn children_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((parent, _)) = stat(pid) {
            if parent == ppid {
                out.push(pid);
            }
        }
    }
    out
}

/// (ppid, state) from /proc/<pid>/stat.
fn stat(pid: i32) -> Option<(i32, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut it = s.rsplit_once(')')?.1.split_whitespace();
    let state = it.next()?.to_string();
    Some((it.next()?.parse().ok()?, state))
}

/// Every process below `root`, with its state.
fn descendants(root: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            if let Some((_, state)) = stat(c) {
                out.push((c, state));
            }
            todo.push(c);
        }
    }
    out
}

#[test]
fn as_pid_1_orphans_are_reaped_and_sigterm_exits_cleanly() {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root for unshare --pid");
    }
    // A chroot without its own mount cannot give a new /proc (`--mount-proc`).
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        return skip(&format!(
            "unshare --pid --fork --mount-proc does not work here: {probe:?}"
        ));
    }
    // Each worker leaves an orphan that exits one second later.
    let pool = fixture_pool("web", 2, "    env: { FIXTURE_ORPHAN: \"1\" }\n");
    let mut fy = Forkyard::builder(&config_with(&[pool], ""))
        .wrapper(&["unshare", "--pid", "--fork", "--mount-proc"])
        .start();
    fy.wait_workers_ready("web", 2);
    let unshare = fy.pid();
    let pid1 = wait_for_or_log(&fy, SHORT, "forkyard inside the namespace", || {
        children_of(unshare).first().copied()
    });
    let ns_pid = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap();
    assert!(
        ns_pid
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "forkyard is PID 1 there: {ns_pid}"
    );
    // Kill the workers so their orphans get re-parented to PID 1 (forkyard), twice.
    for round in 1..=2 {
        for (pid, _) in workers(&fy, pid1) {
            kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        }
        wait_for_or_log(&fy, BOOT, "both workers back", || {
            (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="signal"}"#)?
                >= f64::from(2 * round)
                && fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 2.0)
                .then_some(())
        });
    }
    // The orphans sleep 1 s and exit; a few seconds later none is left as a zombie.
    wait_for_or_log(&fy, SHORT, "no zombie in the namespace", || {
        let zombies: Vec<_> = descendants(pid1)
            .into_iter()
            .filter(|(_, s)| s == "Z")
            .collect();
        let orphans_alive = children_of(pid1).len() > 2;
        (zombies.is_empty() && !orphans_alive).then_some(())
    });
    // SIGTERM to PID 1. The kernel kills whatever is left in the namespace when its
    // PID 1 exits, so "nothing left" afterwards would prove nothing: instead,
    // forkyard itself must have stopped each worker (which exits 0 on SIGTERM) and
    // reaped it before it completed its shutdown.
    let workers: Vec<i32> = workers(&fy, pid1).into_iter().map(|(_, ns)| ns).collect();
    let status = fy.signal_pid_and_wait(pid1, Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0), "{}", fy.log());
    let log = fy.log();
    let lines: Vec<&str> = log.lines().collect();
    let complete = lines
        .iter()
        .position(|l| l.contains(r#"event="shutdown_complete""#))
        .unwrap_or_else(|| panic!("no shutdown_complete in the log:\n{log}"));
    for pid in workers {
        let pid_field = format!("pid={pid}");
        let stopped = lines.iter().position(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.contains(&r#"event="exit""#)
                && fields.contains(&pid_field.as_str())
                && fields.contains(&r#"reason="shutdown""#)
                && fields.contains(&"exit_code=0")
        });
        assert!(
            stopped.is_some_and(|i| i < complete),
            "worker {pid} (namespace pid) was not stopped and reaped by forkyard before its shutdown completed:\n{log}"
        );
    }
}

/// The two workers forkyard reports in `/status` (by their pids in its namespace),
/// as (pid here, pid in the namespace); not the orphans, which run worker.py too.
fn workers(fy: &Forkyard, pid1: i32) -> Vec<(i32, i32)> {
    let reported: Vec<i64> = fy.status()["pools"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["pid"].as_i64())
        .collect();
    let found: Vec<(i32, i32)> = children_of(pid1)
        .into_iter()
        .filter_map(|p| Some((p, namespace_pid(p)?)))
        .filter(|(_, ns)| reported.contains(&i64::from(*ns)))
        .collect();
    assert_eq!(found.len(), 2, "{reported:?} in /status, found {found:?}");
    found
}

/// A process's pid inside its own (innermost) PID namespace.
fn namespace_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}
