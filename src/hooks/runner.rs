//! Running the hooks of one phase in order, with retries and failure policies. The
//! same code runs inside forkyard and inside a new worker process; a [`Recorder`]
//! says where the results go.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::action::{attempt, AttemptError};
use super::FailureReason;
use crate::config::{Hook, OnFailure, Phase};
use crate::process::{ExitReason, ExitStatus, Reaper};

/// How a worker ended, for `on_exit` hooks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerExit {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) reason: ExitReason,
}

/// Where a phase runs: the pool and worker it is about, and their environment.
#[derive(Debug, Clone)]
pub(crate) struct HookContext {
    /// Empty for forkyard-wide phases.
    pub(crate) pool: Arc<str>,
    pub(crate) worker: Option<usize>,
    pub(crate) port: Option<u16>,
    /// `bind: unix`: the worker's socket (then `port` is `None`).
    pub(crate) socket: Option<PathBuf>,
    pub(crate) phase: Phase,
    pub(crate) exit: Option<WorkerExit>,
    /// The pool's own `env` (placeholders filled), or nothing.
    pub(crate) pool_env: Vec<(String, String)>,
    pub(crate) cwd: PathBuf,
    /// The whole environment `run:` hooks start from, instead of forkyard's own
    /// (minus its private variables): set in a new worker process, where the
    /// `post_fork` built-ins have shaped it (`seed_env`, `user`).
    pub(crate) base_env: Option<Vec<(String, String)>>,
}

impl HookContext {
    /// forkyard-wide phases (`on_start`, `on_shutdown`).
    pub(crate) fn global(phase: Phase) -> HookContext {
        HookContext {
            pool: Arc::from(""),
            worker: None,
            port: None,
            socket: None,
            phase,
            exit: None,
            pool_env: Vec::new(),
            cwd: PathBuf::from("."),
            base_env: None,
        }
    }

    /// The environment a `run:` hook gets on top of forkyard's.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut env = self.base_env.clone().unwrap_or_default();
        env.extend(self.pool_env.iter().cloned());
        if !self.pool.is_empty() {
            env.push(("FORKYARD_POOL".into(), self.pool.to_string()));
        }
        if let Some(w) = self.worker {
            env.push(("FORKYARD_WORKER".into(), w.to_string()));
        }
        if let Some(p) = self.port {
            env.push(("FORKYARD_PORT".into(), p.to_string()));
        }
        if let Some(s) = &self.socket {
            env.push(("FORKYARD_SOCKET".into(), s.to_string_lossy().into()));
        }
        env.push(("FORKYARD_PHASE".into(), self.phase.as_str().into()));
        if let Some(exit) = self.exit {
            let (code, signal) = match exit.status {
                Some(ExitStatus::Code(c)) => (c.to_string(), String::new()),
                Some(ExitStatus::Signal(n)) => (
                    String::new(),
                    Signal::try_from(n).map_or(n.to_string(), |s| s.as_str().to_string()),
                ),
                None => (String::new(), String::new()),
            };
            env.push(("FORKYARD_EXIT_CODE".into(), code));
            env.push(("FORKYARD_EXIT_SIGNAL".into(), signal));
            env.push(("FORKYARD_EXIT_REASON".into(), exit.reason.as_str().into()));
        }
        env
    }
}

/// A hook that failed (after its retries) with a policy other than `skip`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{phase} hook {hook:?} failed ({reason}): {message}", phase = phase.as_str(), reason = reason.as_str())]
pub(crate) struct HookFailure {
    pub(crate) phase: Phase,
    pub(crate) hook: String,
    pub(crate) reason: FailureReason,
    pub(crate) policy: OnFailure,
    pub(crate) message: String,
}

/// One finished attempt of one hook.
#[derive(Debug, Clone)]
pub(crate) struct Attempt<'a> {
    pub(crate) hook: &'a str,
    /// The kind of a `post_fork` built-in (`rlimits`, `user`…), logged at debug:
    /// one line per spawn lists them.
    pub(crate) builtin: Option<&'a str>,
    /// 1-based.
    pub(crate) number: u32,
    pub(crate) of: u32,
    pub(crate) on_failure: OnFailure,
    pub(crate) took: Duration,
    pub(crate) result: &'a Result<(), AttemptError>,
}

/// Where a runner's results go.
pub(crate) trait Recorder: Send + Sync {
    /// An attempt starts.
    fn started(&self, ctx: &HookContext, hook: &str, number: u32);
    /// An attempt ended.
    fn finished(&self, ctx: &HookContext, attempt: &Attempt<'_>);
    /// A line a `run:` hook wrote on `stream` (`stdout` or `stderr`).
    fn output(&self, ctx: &HookContext, hook: &str, stream: &str, line: &str);
}

/// What runs a `call:` hook: a preload pool's preloader. One attempt, bounded by
/// the hook's timeout.
#[async_trait::async_trait]
pub(crate) trait Caller: Send + Sync {
    async fn call(&self, hook: &Hook, ctx: &HookContext) -> Result<(), AttemptError>;
}

/// Runs hooks and hands each result to its recorder.
#[derive(Clone)]
pub(crate) struct HookRunner {
    pub(crate) reaper: Arc<Reaper>,
    pub(crate) recorder: Arc<dyn Recorder>,
    /// Runs `call:` hooks; set only for a preload pool's hooks.
    pub(crate) caller: Option<Arc<dyn Caller>>,
}

impl HookRunner {
    /// Run `hooks` in order. Stops at the first hook that fails (after its retries)
    /// with a policy other than `skip`, and returns that failure.
    pub(crate) async fn run_phase(
        &self,
        hooks: &[Hook],
        ctx: &HookContext,
    ) -> Result<(), HookFailure> {
        for hook in hooks {
            self.run_hook(hook, ctx).await?;
        }
        Ok(())
    }

    async fn run_hook(&self, hook: &Hook, ctx: &HookContext) -> Result<(), HookFailure> {
        let attempts = hook.retries.saturating_add(1);
        for n in 1..=attempts {
            self.recorder.started(ctx, &hook.name, n);
            let started = Instant::now();
            let result = attempt(
                hook,
                ctx,
                &self.reaper,
                &*self.recorder,
                self.caller.as_deref(),
            )
            .await;
            self.recorder.finished(
                ctx,
                &Attempt {
                    hook: &hook.name,
                    builtin: None,
                    number: n,
                    of: attempts,
                    on_failure: hook.on_failure,
                    took: started.elapsed(),
                    result: &result,
                },
            );
            let Err(err) = result else {
                return Ok(());
            };
            if n < attempts {
                tokio::time::sleep(hook.retry_delay).await;
                continue;
            }
            if hook.on_failure == OnFailure::Skip {
                return Ok(());
            }
            return Err(HookFailure {
                phase: ctx.phase,
                hook: hook.name.clone(),
                reason: err.reason,
                policy: hook.on_failure,
                message: err.message,
            });
        }
        Ok(())
    }
}
