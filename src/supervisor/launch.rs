//! Everything a worker actor does to the world outside it — start a process,
//! signal its group, probe its endpoint, run hooks — behind one seam
//! ([`Processes`]), so the actor's state machine can be driven in unit tests by a
//! fake child (`actor::tests`), and the real processes are tested without guessing
//! at states (tests/it).

use std::sync::Arc;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::sync::oneshot;

use super::preload::{Preloaded, Preloaders};
use super::readiness::probe_once;
use crate::config::{Hook, PoolConfig, ReadyProbe};
use crate::hooks::post_fork::{self, PostForkOutcome};
use crate::hooks::{HookContext, HookFailure, HookRunner};
use crate::metrics::Metrics;
use crate::process::output::log_worker_output;
use crate::process::signal::signal_group;
use crate::process::{spawn, ExitStatus, SpawnError, SpawnSpec};
use crate::slot::Endpoint;
use crate::status::StatusBoard;

/// A started worker process.
pub(crate) struct Launched {
    pub(crate) pid: i32,
    /// Resolves with the process's exit status (from the one reaper).
    pub(crate) exit: oneshot::Receiver<ExitStatus>,
    /// Resolves with how its `post_fork` stage ended, when it has one.
    pub(crate) post_fork: Option<oneshot::Receiver<PostForkOutcome>>,
}

#[async_trait]
pub(crate) trait Processes: Send + Sync + 'static {
    /// Start `spec`. `ctx` names the worker (for its output and `post_fork`).
    async fn launch(&self, spec: &SpawnSpec, ctx: &HookContext) -> Result<Launched, SpawnError>;
    /// Send `signal` to the process group led by `pid`.
    fn signal(&self, pid: i32, signal: Signal);
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
        let worker = ctx.worker.unwrap_or_default();
        for (pipe, stream) in [(child.stdout, "stdout"), (child.stderr, "stderr")] {
            if let Some(pipe) = pipe {
                tokio::spawn(log_worker_output(pipe, ctx.pool.clone(), worker, stream));
            }
        }
        let post_fork = child
            .report
            .map(|r| post_fork::watch(r, ctx.clone(), self.hooks.recorder.clone()));
        Ok(Launched {
            pid: child.pid,
            exit: self.hooks.reaper.watch(child.pid),
            post_fork,
        })
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
