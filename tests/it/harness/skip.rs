//! Tests that cannot run here: loud outside CI, a failure in CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::repo;

/// Whether this is a CI run (`CI` set, and not to "", "0" or "false").
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Say something in the test output even when the harness captures it (`eprintln!`
/// is captured; a direct write to stderr is not): skips, artifact paths, figures.
pub fn announce(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// The running test cannot run on this machine, for the reason `why` (which should
/// say how to make it run). In CI that fails the test; elsewhere it is announced
/// on the terminal, and the caller returns:
///
/// ```ignore
/// if !nix::unistd::geteuid().is_root() {
///     return skip("needs root for unshare --pid");
/// }
/// ```
#[track_caller]
pub fn skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    assert!(!in_ci(), "{test} cannot run, and CI must run it: {why}");
    announce(&format!("\n*** SKIPPED {test}: {why} ***\n"));
}

/// A command on `PATH`.
pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// A tool the test needs, found in the test virtualenv (`target/pytools/bin`, made
/// by `make test`) or on `PATH`. `None` means the test was [skipped](skip).
pub fn tool(cmd: &str, installed_by: &str) -> Option<PathBuf> {
    let venv = repo().join("target/pytools/bin").join(cmd);
    if venv.is_file() {
        return Some(venv);
    }
    if let Some(p) = which(cmd) {
        return Some(p);
    }
    skip(&format!(
        "{cmd} is not installed; `make test` installs it ({installed_by})"
    ));
    None
}

/// Run `cmd` and return (success, stdout + stderr).
pub fn run_tool(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
