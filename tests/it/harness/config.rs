//! Configs for the fixture worker, free loopback ports, and `forkyard check`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

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

/// Where test ports come from: above the well-known services and below the
/// kernel's ephemeral range, so no outgoing connection (there are thousands during
/// a run) takes a port between the check here and its use, and no check fails
/// because one happens to be in use.
fn port_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768u16);
    (10_000, ephemeral_low.max(20_000))
}

/// A block of `n` consecutive free loopback ports, unique within this test run.
/// Concurrent runs (another worktree) start in different places, by pid.
pub fn free_ports(n: u16) -> u16 {
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let (low, high) = port_range();
    let span = u32::from(high - low);
    let first = std::process::id() % (span / 2000) * 2000;
    for _ in 0..span / u32::from(n) {
        let offset = (first + TAKEN.fetch_add(u32::from(n), Ordering::SeqCst)) % span;
        let start = low + offset as u16;
        if start.checked_add(n).is_none_or(|end| end > high) {
            continue; // the block would cross the end of the range
        }
        if (start..start + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return start;
        }
    }
    panic!("no {n} consecutive free ports between {low} and {high}");
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

/// What `forkyard check -c <path>` printed and how it exited.
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
    let out = cmd.output().expect("run forkyard check");
    CheckRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
