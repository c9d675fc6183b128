//! Running the hooks of one phase in order, with retries and failure policies.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::action::attempt;
use super::FailureReason;
use crate::config::{Hook, OnFailure, Phase};
use crate::events;
use crate::metrics::Metrics;
use crate::process::{ExitReason, ExitStatus, Reaper};
use crate::status::StatusBoard;

/// How a worker ended, for `on_exit` hooks.
#[derive(Debug, Clone, Copy)]
pub struct WorkerExit {
    pub status: Option<ExitStatus>,
    pub reason: ExitReason,
}

/// Where a phase runs: the pool and worker it is about, and their environment.
#[derive(Debug, Clone)]
pub struct HookContext {
    /// Empty for forkyard-wide phases.
    pub pool: Arc<str>,
    pub worker: Option<usize>,
    pub port: Option<u16>,
    /// `bind: unix`: the worker's socket (then `port` is `None`).
    pub socket: Option<PathBuf>,
    pub phase: Phase,
    pub exit: Option<WorkerExit>,
    /// The pool's own `env` (placeholders filled), or nothing.
    pub pool_env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

impl HookContext {
    /// forkyard-wide phases (`on_start`, `on_shutdown`).
    pub fn global(phase: Phase) -> HookContext {
        HookContext {
            pool: Arc::from(""),
            worker: None,
            port: None,
            socket: None,
            phase,
            exit: None,
            pool_env: Vec::new(),
            cwd: PathBuf::from("."),
        }
    }

    /// The same context for another phase.
    pub fn at(&self, phase: Phase) -> HookContext {
        HookContext {
            phase,
            ..self.clone()
        }
    }

    /// The environment a `run:` hook gets on top of forkyard's.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.pool_env.clone();
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
pub struct HookFailure {
    pub phase: Phase,
    pub hook: String,
    pub reason: FailureReason,
    pub policy: OnFailure,
    pub message: String,
}

/// Runs hooks and records them.
#[derive(Clone)]
pub struct HookRunner {
    pub reaper: Arc<Reaper>,
    pub metrics: Arc<Metrics>,
    /// Where `/status` reads each hook's last result.
    pub board: Arc<StatusBoard>,
}

impl HookRunner {
    /// Run `hooks` in order. Stops at the first hook that fails (after its retries)
    /// with a policy other than `skip`, and returns that failure.
    pub async fn run_phase(&self, hooks: &[Hook], ctx: &HookContext) -> Result<(), HookFailure> {
        for hook in hooks {
            self.run_hook(hook, ctx).await?;
        }
        Ok(())
    }

    async fn run_hook(&self, hook: &Hook, ctx: &HookContext) -> Result<(), HookFailure> {
        let (pool, phase, name) = (&*ctx.pool, ctx.phase, hook.name.as_str());
        let attempts = hook.retries.saturating_add(1);
        for n in 1..=attempts {
            tracing::info!(
                event = events::HOOK_START,
                pool,
                worker = ctx.worker,
                phase = phase.as_str(),
                hook = name,
                attempt = n,
                "hook started"
            );
            let started = Instant::now();
            let result = attempt(hook, ctx, &self.reaper).await;
            let seconds = started.elapsed().as_secs_f64();
            self.metrics.hook_ran(pool, phase, name, seconds);
            let took = started.elapsed();
            let result_label = result
                .as_ref()
                .map_or_else(|e| e.reason.as_str(), |()| "ok");
            self.board
                .hook_finished(pool, phase.as_str(), name, result_label, took);
            let err = match result {
                Ok(()) => {
                    tracing::info!(
                        event = events::HOOK_FINISH,
                        pool,
                        worker = ctx.worker,
                        phase = phase.as_str(),
                        hook = name,
                        duration_s = seconds,
                        "hook finished"
                    );
                    return Ok(());
                }
                Err(e) => e,
            };
            self.metrics.hook_failed(pool, phase, name, err.reason);
            let last = n == attempts;
            tracing::warn!(
                event = events::HOOK_FAIL,
                pool,
                worker = ctx.worker,
                phase = phase.as_str(),
                hook = name,
                attempt = n,
                of = attempts,
                reason = err.reason.as_str(),
                on_failure = hook.on_failure.as_str(),
                "hook failed: {}{}",
                err.message,
                if last { "" } else { " (will retry)" }
            );
            if !last {
                tokio::time::sleep(hook.retry_delay).await;
                continue;
            }
            if hook.on_failure == OnFailure::Skip {
                return Ok(());
            }
            return Err(HookFailure {
                phase,
                hook: name.to_string(),
                reason: err.reason,
                policy: hook.on_failure,
                message: err.message,
            });
        }
        Ok(())
    }
}
