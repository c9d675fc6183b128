//! Configs for the fixture worker, free loopback ports, and `forkyard check`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The forkyard binary under test.
pub fn forkyard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_forkyard")
}

/// The fixture worker every test pool runs (see its docstring for its switches).
pub fn fixture_worker() -> PathBuf {
    repo().join("tests/fixtures/worker.py")
}

/// Where tests leave files for people to look at (screenshots).
pub fn artifacts_dir() -> PathBuf {
    let dir = repo().join("target/artifacts");
    std::fs::create_dir_all(&dir).expect("create target/artifacts");
    dir
}

/// Test ports come from 10000-20000: above the well-known services, below the
/// kernel's ephemeral range (from 32768), so no outgoing connection (there are
/// thousands during a run) takes one between the check and its use. The range is
/// cut in lanes, and each test run locks one (`flock` on a file in the temporary
/// directory, released when the run exits), so two runs on one machine (two
/// worktrees) never hand out the same port.
const PORTS: (u16, u16) = (10_000, 20_000);
const LANE: u16 = 2_500;

/// The first port of this run's lane.
fn lane() -> u16 {
    static LANE_START: OnceLock<(u16, Option<Flock<File>>)> = OnceLock::new();
    LANE_START
        .get_or_init(|| {
            let lanes = (PORTS.1 - PORTS.0) / LANE;
            let first = (std::process::id() % u32::from(lanes)) as u16;
            let dir = std::env::temp_dir().join("forkyard-test-ports");
            let _ = std::fs::create_dir_all(&dir);
            for i in 0..lanes {
                let lane = (first + i) % lanes;
                let Ok(file) = File::create(dir.join(format!("lane-{lane}.lock"))) else {
                    continue;
                };
                if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    return (PORTS.0 + lane * LANE, Some(lock));
                }
            }
            // Every lane is taken: share one; the bind check below still guards.
            (PORTS.0 + first * LANE, None)
        })
        .0
}

/// A block of `n` consecutive free loopback ports, unique within this test run
/// (and, through its lane, among concurrent runs).
pub fn free_ports(n: u16) -> u16 {
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let start_of_lane = lane();
    for _ in 0..LANE / n {
        // Round the lane: ports of tests that have finished are free again.
        let offset = (TAKEN.fetch_add(u32::from(n), Ordering::SeqCst) % u32::from(LANE)) as u16;
        if offset + n > LANE {
            continue;
        }
        let start = start_of_lane + offset;
        if (start..start + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return start;
        }
    }
    panic!(
        "no {n} consecutive free ports in {start_of_lane}..{}",
        start_of_lane + LANE
    );
}

/// A pool block for the fixture worker: `workers` slots on free ports (with two
/// spare ports for rolling replacements), fast restarts, then `extra` (more keys of
/// the pool, each line indented by four spaces).
pub fn fixture_pool(name: &str, workers: u16, extra: &str) -> String {
    let port = free_ports(workers + 2);
    format!(
        r#"  {name}:
    command: ["python3", "{worker}"]
    workers: {workers}
    ports: "{port}-{end}"
    restart: {{ backoff_min: "50ms", backoff_max: "500ms" }}
    stop: {{ grace: "5s" }}
{extra}"#,
        worker = fixture_worker().display(),
        end = port + workers + 1,
    )
}

/// The first port of a `fixture_pool` block: slot i listens on it plus i.
pub fn first_port(pool_yaml: &str) -> u16 {
    pool_yaml
        .split("ports: \"")
        .nth(1)
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse().ok())
        .expect("a fixture pool with ports")
}

/// A config with the proxy/admin placeholders and the given pools (and routes).
pub fn config_with(pools: &[String], routes: &str) -> String {
    format!(
        "proxy:\n  listen: \"{{proxy}}\"\nadmin:\n  listen: \"{{admin}}\"\nshutdown:\n  timeout: \"10s\"\npools:\n{}\n{}",
        pools.join("\n"),
        routes
    )
}

/// What `forkyard check -c <path>` (or another forkyard command) printed and how
/// it exited.
#[derive(Debug)]
pub struct CheckRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `forkyard check -c path`, without the environment variables in `env_remove`.
pub fn forkyard_check(path: &Path, env_remove: &[&str]) -> CheckRun {
    let mut cmd = Command::new(forkyard_bin());
    cmd.args(["check", "-c"]).arg(path);
    for name in env_remove {
        cmd.env_remove(name);
    }
    run_cli(&mut cmd)
}

/// Run `forkyard <args>` (a client command: `reload`, `status`, `check --strict`…)
/// with the test's environment.
pub fn forkyard_cli(args: &[&str]) -> CheckRun {
    run_cli(Command::new(forkyard_bin()).args(args))
}

/// Run `cmd` to its end: how it exited and what it printed.
pub fn run_cli(cmd: &mut Command) -> CheckRun {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    CheckRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
