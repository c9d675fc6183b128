//! Preload pools: forkyard's preloader imports a Python app once and forks each
//! worker from it; this module is that preloader's side in forkyard, behind the
//! actor's seam ([`Processes`]), so a preload pool's worker actors run exactly the
//! state machine of a command pool's (backoff, health, recycling, draining, hooks,
//! exit classification).
//!
//! - [`Preloaded`]: the launcher of one generation of a pool. Its `launch` asks the
//!   generation's preloader for a fork, handing over the worker's listening socket
//!   (forkyard holds one per slot), its report, stdout and stderr pipes and a "go"
//!   pipe; `run_hooks` runs `pre_fork` `call:` hooks in the preloader.
//! - [`preloader`]: the task that supervises one preloader process.
//! - [`protocol`], [`channel`]: the messages and the `SOCK_SEQPACKET` channel that
//!   carries them (docs/preload.md).
//!
//! # Processes and exits
//!
//! ```text
//! forkyard ──spawn──▶ forkyard __child ──exec──▶ python (preloader)
//!                                                  └─fork─▶ intermediate ─fork─▶ worker
//!                                                             (exits at once: the worker
//!                                                              is re-parented to forkyard)
//! ```
//!
//! The worker is forkyard's child (forkyard is PID 1 or a child subreaper), so its
//! exit reaches the one reaper like any worker's. It waits on its "go" pipe until
//! forkyard watches its pid, and exits if forkyard never says go (the request was
//! abandoned), so no worker runs unsupervised.

mod channel;
pub(crate) mod preloader;
mod protocol;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use super::launch::{run_captured, Launched, Os, Processes, Ran};
use super::readiness::probe_once;
use crate::config::{Hook, PoolConfig, ReadyProbe};
use crate::hooks::post_fork;
use crate::hooks::{
    Attempt, AttemptError, Caller, FailureReason, HookContext, HookFailure, HookRunner,
};
use crate::metrics::Metrics;
use crate::probe;
use crate::process::output::forward_worker_output;
use crate::process::signal::signal_group;
use crate::process::{SpawnError, SpawnSpec};
use crate::slot::Endpoint;
use crate::status::StatusBoard;
use preloader::{Answer, Deps, Pending, Preloader};
use protocol::{Item, Request};

/// The `pre_fork` check every fork of a preload pool passes: the preloader has no
/// thread besides its main one. Its failures have the reason `threads`.
pub(crate) const THREAD_CHECK: &str = "single_threaded";

/// Every preloader task, so shutdown can wait for them, and each pool's
/// generation count.
#[derive(Default)]
pub(crate) struct Preloaders {
    tasks: Mutex<Vec<JoinHandle<()>>>,
    generations: Mutex<HashMap<String, u64>>,
}

impl Preloaders {
    fn next_generation(&self, pool: &str) -> u64 {
        let mut g = self.generations.lock();
        let n = g.entry(pool.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// Wait for every preloader task to end (they end once their generation's
    /// last worker is gone).
    pub(crate) async fn wait(&self) {
        loop {
            let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }
}

/// The launcher of one generation of a preload pool.
pub(crate) struct Preloaded {
    preloader: Arc<Preloader>,
    hooks: HookRunner,
    config: Arc<PoolConfig>,
    metrics: Arc<Metrics>,
}

/// Runs `call:` hooks in the preloader.
struct PreloadCaller(Arc<Preloader>);

#[async_trait]
impl Caller for PreloadCaller {
    async fn call(&self, hook: &Hook, _: &HookContext) -> Result<(), AttemptError> {
        let Some(item) = Item::of(hook) else {
            return Ok(());
        };
        if let Err(why) = self.0.up().await {
            return Err(AttemptError {
                reason: FailureReason::SpawnError,
                message: why,
            });
        }
        let answer = self
            .0
            .ask(|reply| Pending {
                make: Box::new(move |id| Request::Call { id, hook: item }),
                fds: Vec::new(),
                limit: preloader::call_limit(hook.timeout),
                reply,
            })
            .await;
        match answer {
            Answer::Called(None) => Ok(()),
            Answer::Called(Some(e)) => Err(e),
            Answer::Lost(why) => Err(AttemptError {
                reason: FailureReason::Timeout,
                message: why,
            }),
            other => Err(AttemptError {
                reason: FailureReason::SpawnError,
                message: format!("unexpected answer {other:?}"),
            }),
        }
    }
}

impl Preloaded {
    /// Start a new generation of `config`'s pool: its preloader starts importing
    /// the app now.
    pub(crate) fn start(
        config: Arc<PoolConfig>,
        hooks: HookRunner,
        metrics: Arc<Metrics>,
        board: Arc<StatusBoard>,
        registry: &Preloaders,
    ) -> Preloaded {
        let generation = registry.next_generation(&config.name);
        let (preloader, task) = Preloader::start(
            config.clone(),
            generation,
            Deps {
                reaper: hooks.reaper.clone(),
                metrics: metrics.clone(),
                pool_status: board.add_pool(&config.name),
            },
        );
        registry.tasks.lock().push(task);
        metrics.declare_hook(&config.name, crate::config::Phase::PreFork, THREAD_CHECK);
        board.declare_hook(&config.name, "pre_fork", THREAD_CHECK);
        let preloader = Arc::new(preloader);
        let hooks = HookRunner {
            caller: Some(Arc::new(PreloadCaller(preloader.clone()))),
            ..hooks
        };
        Preloaded {
            preloader,
            hooks,
            config,
            metrics,
        }
    }

    /// Record the thread check of one fork as a `pre_fork` attempt.
    fn thread_check(
        &self,
        ctx: &HookContext,
        took: std::time::Duration,
        result: &Result<(), AttemptError>,
    ) {
        let mut ctx = ctx.clone();
        ctx.phase = crate::config::Phase::PreFork;
        self.hooks.recorder.finished(
            &ctx,
            &Attempt {
                hook: THREAD_CHECK,
                builtin: Some(THREAD_CHECK),
                number: 1,
                of: 1,
                on_failure: crate::config::OnFailure::Abort,
                took,
                result,
            },
        );
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe_pair() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Setup(format!("pipe: {e}")))
}

fn receiver(fd: OwnedFd) -> Option<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd).ok()
}

#[async_trait]
impl Processes for Preloaded {
    async fn launch(&self, spec: &SpawnSpec, ctx: &HookContext) -> Result<Launched, SpawnError> {
        let (Some(child), Some(socket)) = (&spec.child, &spec.inherit) else {
            return Err(SpawnError::Setup(
                "the slot's socket could not be bound (see the error before this one)".into(),
            ));
        };
        self.preloader.up().await.map_err(SpawnError::Preloader)?;
        let socket = socket
            .try_clone()
            .map_err(|e| SpawnError::Setup(format!("dup the slot's socket: {e}")))?;
        let (report_r, report_w) = pipe_pair()?;
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        let (go_r, go_w) = pipe_pair()?;
        let (child, env) = (child.clone(), spec.env.clone());
        let asked = Instant::now();
        let limit = self.config.ready.timeout;
        let answer = self
            .preloader
            .ask(|reply| Pending {
                make: Box::new(move |id| Request::fork(id, &child, &env)),
                fds: vec![socket, report_w, out_w, err_w, go_r],
                limit,
                reply,
            })
            .await;
        let took = asked.elapsed();
        let pid = match answer {
            Answer::Forked(pid) => pid,
            Answer::Refused { reason, message } => {
                let result = Err(AttemptError {
                    reason,
                    message: message.clone(),
                });
                if reason == FailureReason::Threads {
                    self.thread_check(ctx, took, &result);
                }
                return Err(if reason == FailureReason::Threads {
                    SpawnError::Refused(message)
                } else {
                    SpawnError::Setup(message)
                });
            }
            Answer::Lost(why) => return Err(SpawnError::Preloader(why)),
            Answer::Called(_) => return Err(SpawnError::Setup("unexpected answer".into())),
        };
        self.thread_check(ctx, took, &Ok(()));
        self.metrics
            .preload_fork
            .with_label_values(&[&self.config.name])
            .observe(took.as_secs_f64());
        // Watch first, then let the worker go: its exit cannot be missed.
        let exit = self.hooks.reaper.watch(pid);
        if let Err(e) = nix::unistd::write(&go_w, b"g") {
            tracing::warn!(pool = %ctx.pool, pid, error = %e, "cannot tell the new worker to go");
        }
        drop(go_w);
        let output = forward_worker_output(
            receiver(out_r),
            receiver(err_r),
            &ctx.pool,
            ctx.worker.unwrap_or_default(),
        );
        let post_fork = receiver(report_r)
            .map(|r| post_fork::watch(r, ctx.clone(), self.hooks.recorder.clone()));
        Ok(Launched {
            pid,
            exit,
            post_fork,
            output,
        })
    }

    async fn run_command(&self, spec: &SpawnSpec, limit: std::time::Duration) -> Ran {
        run_captured(&self.hooks.reaper, spec, limit).await
    }

    fn signal(&self, pid: i32, signal: Signal) {
        if let Err(e) = signal_group(pid, signal) {
            tracing::warn!(pid, signal = signal.as_str(), error = %e, "signalling a worker failed");
        }
    }

    /// forkyard holds each worker's socket, so a TCP connect always succeeds: a
    /// preload worker is up once it answers HTTP at all (any status).
    async fn probe(&self, endpoint: &Endpoint, check: &ReadyProbe) -> bool {
        if *check != ReadyProbe::Tcp {
            return probe_once(endpoint, check).await;
        }
        let attempt = async {
            match endpoint {
                Endpoint::Tcp(a) => probe::http_status(&a.ip().to_string(), a.port(), "GET", "/")
                    .await
                    .is_ok(),
                Endpoint::Unix(p) => probe::http_status_unix(p, "GET", "/").await.is_ok(),
            }
        };
        tokio::time::timeout(probe::ATTEMPT_TIMEOUT, attempt)
            .await
            .unwrap_or(false)
    }

    async fn run_hooks(&self, hooks: &[Hook], ctx: &HookContext) -> Result<(), HookFailure> {
        self.hooks.run_phase(hooks, ctx).await
    }

    fn generation(self: Arc<Self>, _: &Arc<PoolConfig>) -> Os {
        // Only the supervisor's own launcher makes generations.
        self
    }
}
