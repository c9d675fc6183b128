//! Starting a child: fork+exec of an argv (never a shell), in its own process group,
//! with stdin closed and stdout/stderr piped back to forkyard.
//!
//! Everything between fork and exec is done by `std::process::Command` itself
//! (`process_group`, `current_dir`, env): forkyard runs no code of its own in the
//! forked copy of its multi-threaded image. A worker is started as `forkyard
//! __child` (see `child.rs`) with a [`ChildSpec`], which does the post-fork work in
//! a fresh single-threaded process and then execs the app.
//!
//! Every spawn happens on the control thread, one at a time: the report pipe's
//! write end is made inheritable just for the one spawn it belongs to.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use tokio::net::unix::pipe;

use super::child_spec::{ChildSpec, SPEC_ENV};

/// Environment variables of forkyard's own that a child must not inherit.
const PRIVATE_ENV_PREFIX: &str = "FORKYARD_";
/// systemd's notification socket is forkyard's: a worker that speaks the protocol
/// must not report the service ready (see `sd_notify`).
const PRIVATE_ENV: [&str; 1] = ["NOTIFY_SOCKET"];

/// What to start.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpawnSpec {
    pub(crate) argv: Vec<String>,
    /// Added to forkyard's environment (minus its own `FORKYARD_*` variables), or
    /// the whole environment with `env_clear`.
    pub(crate) env: Vec<(String, String)>,
    /// Start from an empty environment instead of forkyard's.
    pub(crate) env_clear: bool,
    pub cwd: PathBuf,
    /// Start through `forkyard __child` with this spec (workers), or exec `argv`
    /// directly (hooks).
    pub child: Option<ChildSpec>,
    /// A listening socket the worker inherits as fd 3 (`bind: inherit`); for a
    /// preload pool, the socket its workers are handed.
    pub inherit: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// A descriptor the child keeps under its own number (a preloader's channel
    /// to forkyard); only through `forkyard __child`.
    pub keep: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// A started child. Its exit must be observed through the reaper.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: i32,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// Reports from `forkyard __child`, when started through it.
    pub report: Option<pipe::Receiver>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("empty command")]
    EmptyCommand,
    #[error("could not start {program:?} in {cwd:?}: {source}")]
    Exec {
        program: String,
        cwd: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not prepare the worker process: {0}")]
    Setup(String),
    /// A preload pool's preloader is not running (it failed, or is restarting).
    #[error("the pool's preloader is not running: {0}")]
    Preloader(String),
    /// The preloader refused to fork (a `pre_fork` check failed).
    #[error("the preloader refused to fork: {0}")]
    Refused(String),
}

impl SpawnError {
    /// The exit reason recorded for a spawn that failed this way.
    pub(crate) fn exit_reason(&self) -> super::ExitReason {
        match self {
            SpawnError::Refused(_) => super::ExitReason::HookFailure,
            _ => super::ExitReason::ExitCode,
        }
    }
}

/// Start `spec` in a new process group. Must be called inside a tokio runtime
/// (the pipes register with its reactor).
pub(crate) fn spawn(spec: &SpawnSpec) -> Result<Spawned, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::EmptyCommand)?;
    let mut report_pipe = None;
    let mut cmd = match &spec.child {
        None => {
            let mut cmd = Command::new(program);
            cmd.args(args).process_group(0);
            cmd
        }
        Some(child_spec) => {
            let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| SpawnError::Setup(format!("pipe: {e}")))?;
            fcntl(&write, FcntlArg::F_SETFD(FdFlag::empty()))
                .map_err(|e| SpawnError::Setup(format!("fcntl: {e}")))?;
            let mut child_spec = child_spec.clone();
            child_spec.report_fd = write.as_raw_fd();
            if let Some(listener) = &spec.inherit {
                fcntl(listener.as_ref(), FcntlArg::F_SETFD(FdFlag::empty()))
                    .map_err(|e| SpawnError::Setup(format!("fcntl: {e}")))?;
                child_spec.listen_fd = Some(listener.as_raw_fd());
            }
            if let Some(keep) = &spec.keep {
                fcntl(keep.as_ref(), FcntlArg::F_SETFD(FdFlag::empty()))
                    .map_err(|e| SpawnError::Setup(format!("fcntl: {e}")))?;
                child_spec.keep_fd = Some(keep.as_raw_fd());
            }
            let json = serde_json::to_string(&child_spec)
                .map_err(|e| SpawnError::Setup(format!("spec: {e}")))?;
            let mut cmd = Command::new("/proc/self/exe");
            cmd.arg0("forkyard").arg("__child").env(SPEC_ENV, json);
            if !child_spec.setsid {
                cmd.process_group(0);
            }
            report_pipe = Some((read, write));
            cmd
        }
    };
    cmd.current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if spec.env_clear {
        cmd.env_clear();
    } else {
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if (k.starts_with(PRIVATE_ENV_PREFIX) && k != SPEC_ENV)
                || PRIVATE_ENV.contains(&k.as_ref())
            {
                cmd.env_remove(key);
            }
        }
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    let spawned = cmd.spawn();
    // Only this child inherits the slot's socket; forkyard's other children must not.
    if let Some(listener) = &spec.inherit {
        let _ = fcntl(listener.as_ref(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    if let Some(keep) = &spec.keep {
        let _ = fcntl(keep.as_ref(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    // The child has its copy of the write end (or failed); ours must close so the
    // reader sees EOF when the child is done.
    let report_read = report_pipe.map(|(read, write)| {
        drop(write);
        read
    });
    let mut child = spawned.map_err(|source| SpawnError::Exec {
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
    let report = report_read.and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok());
    Ok(Spawned {
        pid,
        stdout,
        stderr,
        report,
    })
}
