//! Starting a child: fork+exec of an argv (never a shell), in its own process group,
//! with stdin closed and stdout/stderr piped back to forkyard.
//!
//! Everything between fork and exec is done by `std::process::Command` itself
//! (`process_group`, `current_dir`, env): forkyard runs no code of its own in the
//! forked copy of its multi-threaded image.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tokio::net::unix::pipe;

/// Environment variables of forkyard's own that a child must not inherit.
const PRIVATE_ENV_PREFIX: &str = "FORKYARD_";
/// systemd's notification socket is forkyard's: a worker that speaks the protocol
/// must not report the service ready (see `notify`).
const PRIVATE_ENV: [&str; 1] = ["NOTIFY_SOCKET"];

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub argv: Vec<String>,
    /// Added to forkyard's environment (minus its own `FORKYARD_*` variables).
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// A started child. Its exit must be observed through the reaper.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    EmptyCommand,
    #[error("could not start {program:?} in {cwd:?}: {source}")]
    Exec {
        program: String,
        cwd: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Start `spec` in a new process group. Must be called inside a tokio runtime
/// (the output pipes register with its reactor).
pub fn spawn(spec: &SpawnSpec) -> Result<Spawned, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::EmptyCommand)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&spec.cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with(PRIVATE_ENV_PREFIX) || PRIVATE_ENV.contains(&key_text.as_ref()) {
            cmd.env_remove(key);
        }
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: program.clone(),
        cwd: spec.cwd.clone(),
        source,
    })?;
    let pid = child.id() as i32;
    // The `Child` handle is dropped without waiting: the reaper owns the exit.
    let stdout = child
        .stdout
        .take()
        .and_then(|s| pipe::Receiver::from_owned_fd(s.into()).ok());
    let stderr = child
        .stderr
        .take()
        .and_then(|s| pipe::Receiver::from_owned_fd(s.into()).ok());
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}
