//! Everything a worker actor does to the world outside it — start a process,
//! signal its group, probe its endpoint, run hooks — behind one seam
//! ([`Processes`]), so the actor's state machine can be driven in unit tests by a
//! fake child (`actor::tests`), and the real processes are tested without guessing
//! at states (tests/it).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::sync::oneshot;

use super::preload::{Preloaded, Preloaders};
use super::readiness::probe_once;
use crate::config::{Hook, PoolConfig, ReadyProbe};
use crate::hooks::post_fork::{self, PostForkOutcome};
use crate::hooks::{HookContext, HookFailure, HookRunner};
use crate::metrics::Metrics;
use crate::process::output::{forward_worker_output, Tap, TAP_LIMIT};
use crate::process::signal::{signal_group, signal_process};
use crate::process::{spawn, ExitStatus, Reaper, SpawnError, SpawnSpec};
use crate::slot::Endpoint;
use crate::status::StatusBoard;

/// A started worker process.
pub(crate) struct Launched {
    pub(crate) pid: i32,
    /// Resolves with the process's exit status (from the one reaper).
    pub(crate) exit: oneshot::Receiver<ExitStatus>,
    /// Resolves with how its `post_fork` stage ended, when it has one.
    pub(crate) post_fork: Option<oneshot::Receiver<PostForkOutcome>>,
    /// Copies its output lines while armed (`hang.dump: { signal }`).
    pub(crate) output: Tap,
}

/// How a command run through [`Processes::run_command`] ended, and what it wrote.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ran {
    /// `Ok(None)`: killed at its time limit; `Err`: it could not be started.
    pub(crate) status: Result<Option<ExitStatus>, String>,
    /// stdout and stderr lines in arrival order, at most [`TAP_LIMIT`] bytes.
    pub(crate) output: String,
    /// Lines past the limit were dropped.
    pub(crate) truncated: bool,
}

/// Run `spec` with the hooks' command runner, keeping its output.
pub(crate) async fn run_captured(reaper: &Reaper, spec: &SpawnSpec, limit: Duration) -> Ran {
    let kept = parking_lot::Mutex::new((String::new(), false));
    let sink = |line: &str, _: &'static str| {
        let mut kept = kept.lock();
        if kept.0.len() + line.len() + 1 > TAP_LIMIT {
            kept.1 = true;
        } else {
            kept.0.push_str(line);
            kept.0.push('\n');
        }
    };
    let status = crate::hooks::run_command(spec, limit, reaper, &sink)
        .await
        .map_err(|e| e.to_string());
    let (output, truncated) = kept.into_inner();
    Ran {
        status,
        output,
        truncated,
    }
}

#[async_trait]
pub(crate) trait Processes: Send + Sync + 'static {
    /// Start `spec`. `ctx` names the worker (for its output and `post_fork`).
    async fn launch(&self, spec: &SpawnSpec, ctx: &HookContext) -> Result<Launched, SpawnError>;
    /// Send `signal` to the process group led by `pid`.
    fn signal(&self, pid: i32, signal: Signal);
    /// Send `signal` to the process `pid` alone (not its group).
    fn signal_one(&self, pid: i32, signal: Signal) {
        if let Err(e) = signal_process(pid, signal) {
            tracing::warn!(pid, signal = signal.as_str(), error = %e, "signalling a worker failed");
        }
    }
    /// Run a command (`hang.dump`) for at most `limit`, keeping its output.
    async fn run_command(&self, spec: &SpawnSpec, limit: Duration) -> Ran;
    /// One readiness or health check of `endpoint`.
    async fn probe(&self, endpoint: &Endpoint, probe: &ReadyProbe) -> bool;
    /// Run `hooks` in order (see `HookRunner::run_phase`).
    async fn run_hooks(&self, hooks: &[Hook], ctx: &HookContext) -> Result<(), HookFailure>;
    /// The launcher of the workers of a new generation of a pool: the same one for
    /// a command pool; a new preloader, which imports the code as it is now, for a
    /// preload pool. It lives as long as the workers that hold it.
    fn generation(self: Arc<Self>, config: &Arc<PoolConfig>) -> Os;
    /// Wait until everything this launcher started besides workers (preloaders)
    /// has exited; called at shutdown, after every worker is gone.
    async fn finish(&self) {}
}

/// The real world: processes started through `process::spawn`, observed through
/// the reaper, hooks run by the hook runner; preload pools' workers forked by their
/// preloaders ([`super::preload`]).
pub(crate) struct System {
    pub(crate) hooks: HookRunner,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) preloaders: Arc<Preloaders>,
}

#[async_trait]
impl Processes for System {
    async fn launch(&self, spec: &SpawnSpec, ctx: &HookContext) -> Result<Launched, SpawnError> {
        let child = spawn(spec)?;
        let output = forward_worker_output(
            child.stdout,
            child.stderr,
            &ctx.pool,
            ctx.worker.unwrap_or_default(),
        );
        let post_fork = child
            .report
            .map(|r| post_fork::watch(r, ctx.clone(), self.hooks.recorder.clone()));
        Ok(Launched {
            pid: child.pid,
            exit: self.hooks.reaper.watch(child.pid),
            post_fork,
            output,
        })
    }

    async fn run_command(&self, spec: &SpawnSpec, limit: Duration) -> Ran {
        run_captured(&self.hooks.reaper, spec, limit).await
    }

    fn signal(&self, pid: i32, signal: Signal) {
        if let Err(e) = signal_group(pid, signal) {
            tracing::warn!(pid, signal = signal.as_str(), error = %e, "signalling a worker failed");
        }
    }

    async fn probe(&self, endpoint: &Endpoint, probe: &ReadyProbe) -> bool {
        probe_once(endpoint, probe).await
    }

    async fn run_hooks(&self, hooks: &[Hook], ctx: &HookContext) -> Result<(), HookFailure> {
        self.hooks.run_phase(hooks, ctx).await
    }

    fn generation(self: Arc<Self>, config: &Arc<PoolConfig>) -> Os {
        if config.preload.is_none() {
            return self;
        }
        Arc::new(Preloaded::start(
            config.clone(),
            self.hooks.clone(),
            self.metrics.clone(),
            self.board.clone(),
            &self.preloaders,
        ))
    }

    async fn finish(&self) {
        self.preloaders.wait().await;
    }
}

/// The shared handle actors hold.
pub(crate) type Os = Arc<dyn Processes>;
