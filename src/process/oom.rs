//! The OOM-kill count of forkyard's memory cgroup, so that a worker killed by the
//! kernel's OOM killer is reported as `oom_killed` rather than plain `signal`.
//!
//! cgroup v2: `oom_kill` in `memory.events` (counted in the cgroup and below it).
//! cgroup v1: `oom_kill` in `memory.oom_control` of the memory controller's cgroup.
//! Workers start in forkyard's cgroup, so a SIGKILL while this count rose is taken
//! as an OOM kill. Where no counter is readable (no cgroup fs, an older kernel),
//! OOM kills stay `signal`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The current OOM-kill count, or `None` when it cannot be read here.
pub(crate) fn kills() -> Option<u64> {
    static COUNTER: OnceLock<Option<PathBuf>> = OnceLock::new();
    let path = COUNTER
        .get_or_init(|| {
            let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
            candidates(&cgroups, Path::new("/sys/fs/cgroup"))
                .into_iter()
                .find(|p| read_count(p).is_some())
        })
        .as_ref()?;
    read_count(path)
}

fn read_count(path: &Path) -> Option<u64> {
    parse_oom_kill(&std::fs::read_to_string(path).ok()?)
}

/// The counter files that may hold this process's OOM-kill count, best first.
fn candidates(proc_cgroup: &str, root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            // v2 unified hierarchy (mounted at the root, or at unified/ in hybrid mode).
            out.push(root.join(rel).join("memory.events"));
            out.push(root.join("unified").join(rel).join("memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            out.push(root.join("memory").join(rel).join("memory.oom_control"));
        }
    }
    out
}

/// The value of the `oom_kill` line (not `oom_group_kill`).
fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1_and_v2_counters() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n"),
            Some(7)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 2\noom 2\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_group_kill 3\n"), None);
    }

    #[test]
    fn finds_the_counter_files_of_both_hierarchies() {
        let root = Path::new("/sys/fs/cgroup");
        let v1 = candidates(
            "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n",
            root,
        );
        assert_eq!(v1[0], root.join("memory/docker/abc/memory.oom_control"));
        assert!(v1.contains(&root.join("memory.events")));
        let v2 = candidates("0::/system.slice/app.service\n", root);
        assert_eq!(v2[0], root.join("system.slice/app.service/memory.events"));
    }
}
