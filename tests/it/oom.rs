//! A worker killed by the kernel's OOM killer is reported as `oom_killed`: forkyard
//! runs in a memory cgroup of its own with a small limit, and the worker allocates
//! past it. Needs root and a writable memory cgroup (v1 or v2); without them it is
//! skipped, which fails in CI.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::harness::*;

/// A child memory cgroup with a limit, removed on drop (once it is empty).
struct MemoryCgroup(PathBuf);

impl MemoryCgroup {
    fn create(limit_bytes: u64) -> Result<MemoryCgroup, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root to create a memory cgroup".into());
        }
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let name = format!("forkyard-oom-test-{}", std::process::id());
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            let (parent, limit_file) = if controllers.split(',').any(|c| c == "memory") {
                (
                    Path::new("/sys/fs/cgroup/memory").join(rel),
                    "memory.limit_in_bytes",
                )
            } else if controllers.is_empty() {
                let parent = Path::new("/sys/fs/cgroup").join(rel);
                // v2: the memory controller must be enabled for the children.
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
                (parent, "memory.max")
            } else {
                continue;
            };
            let dir = parent.join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let cg = MemoryCgroup(dir);
            if std::fs::write(cg.0.join(limit_file), limit_bytes.to_string()).is_ok() {
                return Ok(cg);
            }
        }
        Err("no writable memory cgroup (v1 memory controller or v2 with +memory)".into())
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The processes are gone once forkyard has exited; the kernel may take a
        // moment to let the cgroup go.
        let _ = wait_for_quietly(|| std::fs::remove_dir(&self.0).is_ok());
    }
}

fn wait_for_quietly(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + SHORT;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn an_oom_killed_worker_is_reported_as_oom_killed() {
    let cg = match MemoryCgroup::create(192 << 20) {
        Ok(cg) => cg,
        Err(why) => return skip(&why),
    };
    // Slot 0 serves; slot 1 writes 1 GiB (every page touched) and is OOM-killed.
    let port = free_ports(2);
    let pool = format!(
        "  web:\n    command: [\"python3\", \"{}\"]\n    workers: 2\n    ports: \"{port}-{}\"\n    env: {{ HOG: \"{{worker}}\" }}\n    restart: {{ backoff_min: \"1s\", backoff_max: \"2s\" }}\n",
        hog_script().display(),
        port + 1,
    );
    let mut fy = Forkyard::builder(&config_with(&[pool], ""))
        .shell_prefix(format!("echo $$ > {}/cgroup.procs", cg.0.display()))
        .start();
    wait_for_or_log(&fy, BOOT, "an oom_killed exit", || {
        (fy.metric(r#"forkyard_worker_exits_total{pool="web",reason="oom_killed"}"#)? >= 1.0)
            .then_some(())
    });
    assert!(
        fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="oom_killed"}"#)
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        fy.metric(r#"forkyard_worker_exits_total{pool="web",reason="signal"}"#),
        Some(0.0),
        "the OOM kill is not reported as a plain signal"
    );
    assert!(fy.log().contains(r#"reason="oom_killed""#), "{}", fy.log());
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0), "forkyard survived: {}", fy.log());
}

/// A worker: slot 0 serves HTTP; slot 1 allocates until the kernel kills it.
fn hog_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hog.py")
}
