//! One actor per worker slot: spawn, wait for ready, serve, and on exit back off and
//! spawn again, until told to stop. The slot's hooks run at their phases:
//!
//! ```text
//! pre_fork → spawn (post_fork runs in the new process) → ready → post_spawn
//!   → in the load balancer … → pre_stop → stop signal → exit → on_exit → backoff
//! ```
//!
//! The actor owns its slot's process and its place in the load balancer. It learns
//! about its process's exit only from the reaper, and about stopping only from the
//! supervisor's stop channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, timeout};

use super::backoff::Backoff;
use super::crash_loop::CrashLoop;
use super::health::{HealthChange, HealthTracker};
use super::lifecycle::SlotRecord;
use super::readiness::{probe_once, wait_ready};
use super::state::{StateCell, WorkerEvent, WorkerState};
use crate::config::{OnFailure, Phase, PoolConfig};
use crate::events;
use crate::hooks::post_fork::{self, PostForkOutcome};
use crate::hooks::{HookContext, HookRunner, WorkerExit};
use crate::metrics::Metrics;
use crate::process::child_spec::ChildSpec;
use crate::process::output::{forward_lines, OutputLabel};
use crate::process::signal::signal_group;
use crate::process::{spawn, ExitReason, ExitStatus, SpawnSpec};
use crate::proxy::upstreams::PoolUpstreams;
use crate::proxy::WorkerAddr;
use crate::status::{PoolStatus, SlotStatus};

/// What the supervisor wants from its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Keep running.
    Run,
    /// Stop: `pre_stop` hooks, `stop.signal`, then `grace`, then SIGKILL. The reason
    /// is why (`reload`, `scale_down`, `shutdown`, or a recycle), as recorded.
    Graceful(ExitReason),
    /// Stop now with SIGKILL, skipping hooks (a second shutdown signal).
    Kill,
}

impl StopMode {
    /// The exit reason recorded for a worker stopped this way.
    pub fn cause(self) -> ExitReason {
        match self {
            StopMode::Graceful(reason) => reason,
            StopMode::Run | StopMode::Kill => ExitReason::Shutdown,
        }
    }
}

/// Everything a worker actor needs.
pub struct WorkerCtx {
    pub pool: Arc<PoolConfig>,
    pub slot: usize,
    /// The slot's port (for `bind: unix`, a slot number); kept across restarts.
    pub port: u16,
    /// Where the slot's worker listens.
    pub addr: WorkerAddr,
    /// Told once whether the first spawn became ready (rolling reloads wait on it).
    pub boot_report: std::sync::Mutex<Option<oneshot::Sender<bool>>>,
    /// Where to ask for this worker to be replaced (recycling).
    pub recycle: mpsc::UnboundedSender<RecycleRequest>,
    /// `bind: inherit`: the slot's socket, held by forkyard across restarts.
    pub listener: Option<Arc<std::net::TcpListener>>,
    pub hooks: HookRunner,
    pub upstreams: Arc<PoolUpstreams>,
    pub crash_loop: Arc<CrashLoop>,
    pub metrics: Arc<Metrics>,
    /// This actor's entry on the status board, and the pool's (to leave it).
    pub status: Arc<SlotStatus>,
    pub pool_status: Arc<PoolStatus>,
}

impl WorkerCtx {
    fn port(&self) -> u16 {
        self.port
    }

    fn report_boot(&self, ready: bool) {
        let tx = self
            .boot_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(ready);
        }
    }

    fn addr(&self) -> &WorkerAddr {
        &self.addr
    }

    fn fill(&self, s: &str) -> String {
        self.pool.fill(s, self.slot, self.port())
    }

    /// `bind: unix`: the pool's socket directory exists and no stale socket is left
    /// where the new worker will listen.
    fn prepare_socket(&self) -> std::io::Result<()> {
        match &self.addr {
            WorkerAddr::Unix(path) => {
                crate::sockets::prepare(&self.pool)?;
                crate::sockets::clear_stale(path)
            }
            WorkerAddr::Tcp(_) => Ok(()),
        }
    }

    fn pool_env(&self) -> Vec<(String, String)> {
        self.pool
            .env
            .iter()
            .map(|(k, v)| (k.clone(), self.fill(v)))
            .collect()
    }

    fn hook_context(&self, phase: Phase) -> HookContext {
        HookContext {
            pool: Arc::from(self.pool.name.as_str()),
            worker: Some(self.slot),
            port: self.pool.socket_dir.is_none().then(|| self.port()),
            socket: self.pool.socket_path(self.port()),
            phase,
            exit: None,
            pool_env: self.pool_env(),
            cwd: self.pool.cwd.clone(),
        }
    }

    fn spawn_spec(&self) -> SpawnSpec {
        let mut env = self.pool_env();
        env.push(("FORKYARD_POOL".into(), self.pool.name.clone()));
        env.push(("FORKYARD_WORKER".into(), self.slot.to_string()));
        match self.pool.socket_path(self.port()) {
            Some(path) => env.push(("FORKYARD_SOCKET".into(), path.to_string_lossy().into())),
            None => env.push(("FORKYARD_PORT".into(), self.port().to_string())),
        }
        let argv: Vec<String> = self.pool.command.iter().map(|a| self.fill(a)).collect();
        SpawnSpec {
            child: Some(ChildSpec::for_pool(&self.pool, argv.clone(), |s| {
                self.fill(s)
            })),
            argv,
            env,
            cwd: self.pool.cwd.clone(),
            inherit: self.listener.clone(),
        }
    }

    /// Run the hooks of `phase`; `true` if the worker may go on.
    async fn run_hooks(&self, phase: Phase, exit: Option<WorkerExit>) -> bool {
        let hooks = self.pool.hooks.phase(phase);
        if hooks.is_empty() {
            return true;
        }
        let mut ctx = self.hook_context(phase);
        ctx.exit = exit;
        match self.hooks.run_phase(hooks, &ctx).await {
            Ok(()) => true,
            Err(failure) => {
                tracing::warn!(pool = %self.pool.name, worker = self.slot, "{failure}");
                false
            }
        }
    }
}

/// A worker asks to be replaced: the supervisor starts its replacement first.
#[derive(Debug, Clone)]
pub struct RecycleRequest {
    pub pool: String,
    pub slot: usize,
    pub port: u16,
    pub reason: ExitReason,
}

/// How often recycling limits are checked.
const RECYCLE_CHECK: Duration = Duration::from_millis(250);
/// How long to wait before asking again if a replacement did not happen.
const RECYCLE_RETRY: Duration = Duration::from_secs(30);

/// Which recycling limit, if any, this worker has reached.
fn recycle_due(
    ctx: &WorkerCtx,
    pid: i32,
    started: Instant,
    sent: u64,
    threshold: Option<u64>,
) -> Option<ExitReason> {
    let r = &ctx.pool.recycle;
    if threshold.is_some_and(|t| sent >= t) {
        return Some(ExitReason::RecycleRequests);
    }
    if r.max_lifetime.is_some_and(|l| started.elapsed() >= l) {
        return Some(ExitReason::RecycleLifetime);
    }
    if let (Some(max), Some(rss)) = (
        r.max_rss,
        r.max_rss
            .and(crate::process::usage::read(pid).map(|u| u.rss_bytes)),
    ) {
        if rss >= max {
            return Some(ExitReason::RecycleMemory);
        }
    }
    None
}

/// Kills a worker's process group if the future supervising it is dropped before
/// the process was seen to exit: the actor panicked (a bug) or was cancelled. No
/// worker is ever left running unsupervised.
/// The slot also leaves the load balancer.
struct GroupGuard<'a> {
    pid: Option<i32>,
    ctx: &'a WorkerCtx,
}

impl GroupGuard<'_> {
    fn disarm(mut self) {
        self.pid = None;
    }
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            self.ctx.upstreams.set_ready(self.ctx.addr(), false);
            let _ = signal_group(pid, Signal::SIGKILL);
        }
    }
}

/// How one run of the process ended.
enum RunEnd {
    /// The process ended by itself (or was killed by forkyard): restart it.
    Restart(ExitReason, Option<ExitStatus>),
    /// The supervisor asked us to stop and the process is gone.
    Stopped(Option<ExitStatus>),
}

/// Run the slot's actor until the supervisor says stop. If the actor panics (a
/// bug), its process group is killed (see `GroupGuard`), the slot leaves the
/// balancer, and a fresh actor (from `make`) takes the slot over a second later,
/// so a slot is never left unsupervised and forkyard keeps running.
pub async fn run_supervised(
    make: impl Fn(Option<oneshot::Sender<bool>>) -> WorkerCtx + Send + 'static,
    boot_report: Option<oneshot::Sender<bool>>,
    stop: watch::Receiver<StopMode>,
) {
    let mut boot_report = boot_report;
    loop {
        let ctx = make(boot_report.take());
        let (pool, slot) = (ctx.pool.name.clone(), ctx.slot);
        match tokio::spawn(run(ctx, stop.clone())).await {
            Err(e) if e.is_panic() => {
                tracing::error!(
                    event = events::PANIC,
                    pool,
                    worker = slot,
                    "the worker's supervising task panicked (a forkyard bug): its process group was killed; the slot starts again"
                );
                if *stop.borrow() != StopMode::Run {
                    return;
                }
                let mut stop = stop.clone();
                tokio::select! {
                    _ = sleep(Duration::from_secs(1)) => {}
                    _ = stopping(&mut stop) => return,
                }
            }
            _ => return,
        }
    }
}

/// Run the slot until the supervisor says stop.
pub async fn run(ctx: WorkerCtx, mut stop: watch::Receiver<StopMode>) {
    let pool_name = ctx.pool.name.clone();
    let gauges = WorkerState::GAUGED.map(|s| ctx.metrics.workers_in(&pool_name, s));
    let mut state = StateCell::new(gauges).reporting_to(ctx.status.clone());
    let restart = &ctx.pool.restart;
    let mut backoff = Backoff::new(restart.backoff_min, restart.backoff_max);
    let label: Arc<str> = Arc::from(pool_name.as_str());
    // Leaves the status board (and the slot's per-worker series) when the actor ends.
    let mut record = SlotRecord::new(
        label.clone(),
        ctx.slot,
        ctx.port(),
        ctx.metrics.clone(),
        ctx.status.clone(),
        ctx.pool_status.clone(),
    );

    loop {
        let mode = *stop.borrow();
        if mode != StopMode::Run {
            state.apply(WorkerEvent::StopRequested);
            return;
        }
        let started = Instant::now();
        let end = if !ctx.run_hooks(Phase::PreFork, None).await {
            state.apply(WorkerEvent::SpawnFailed);
            RunEnd::Restart(ExitReason::HookFailure, None)
        } else if let Err(e) = ctx.prepare_socket() {
            state.apply(WorkerEvent::SpawnFailed);
            record.spawn_failed(&e);
            RunEnd::Restart(ExitReason::ExitCode, None)
        } else {
            match spawn(&ctx.spawn_spec()) {
                Ok(child) => {
                    state.apply(WorkerEvent::Spawned);
                    record.spawned(child.pid);
                    for (pipe, stream) in [(child.stdout, "stdout"), (child.stderr, "stderr")] {
                        if let Some(pipe) = pipe {
                            let label = OutputLabel {
                                pool: label.clone(),
                                worker: Some(ctx.slot),
                                stream,
                                hook: None,
                                tail: None,
                            };
                            tokio::spawn(forward_lines(pipe, label));
                        }
                    }
                    let post_fork = child.report.map(|r| {
                        post_fork::watch(
                            r,
                            label.clone(),
                            ctx.slot,
                            ctx.metrics.clone(),
                            ctx.hooks.board.clone(),
                        )
                    });
                    let exit = ctx.hooks.reaper.watch(child.pid);
                    let guard = GroupGuard {
                        pid: Some(child.pid),
                        ctx: &ctx,
                    };
                    let end = supervise_process(
                        &ctx,
                        child.pid,
                        exit,
                        post_fork,
                        &mut state,
                        &mut record,
                        &mut stop,
                    )
                    .await;
                    guard.disarm();
                    end
                }
                Err(e) => {
                    state.apply(WorkerEvent::SpawnFailed);
                    record.spawn_failed(&e);
                    RunEnd::Restart(ExitReason::ExitCode, None)
                }
            }
        };
        let (reason, status) = match end {
            RunEnd::Stopped(status) => {
                ctx.report_boot(false);
                if *stop.borrow() != StopMode::Kill {
                    let reason = stop.borrow().cause();
                    ctx.run_hooks(Phase::OnExit, Some(WorkerExit { status, reason }))
                        .await;
                }
                return;
            }
            RunEnd::Restart(reason, status) => (reason, status),
        };
        ctx.report_boot(false);
        if status.is_some() {
            ctx.run_hooks(Phase::OnExit, Some(WorkerExit { status, reason }))
                .await;
        }
        if started.elapsed() >= restart.reset_after {
            backoff.reset();
        }
        let jittered = backoff.next_delay(&mut rand::rng());
        let delay = if ctx.crash_loop.record_failure() {
            restart.backoff_max
        } else {
            jittered
        };
        record.restarting(reason, delay);
        tokio::select! {
            _ = sleep(delay) => { state.apply(WorkerEvent::BackoffElapsed); }
            _ = stopping(&mut stop) => {}
        }
    }
}

/// The reason for an exit during boot: a post_fork abort, or `plain` (the exit's
/// own reason).
async fn boot_exit_reason(
    plain: ExitReason,
    post_fork: Option<oneshot::Receiver<PostForkOutcome>>,
) -> ExitReason {
    let Some(rx) = post_fork else {
        return plain;
    };
    // The report pipe closes when the process exits; the outcome follows quickly.
    match timeout(std::time::Duration::from_secs(2), rx).await {
        Ok(Ok(PostForkOutcome::Exec)) => plain,
        Ok(Ok(PostForkOutcome::Aborted { .. })) => ExitReason::HookFailure,
        _ => ExitReason::HookFailure,
    }
}

/// Watch one running process through boot, post_spawn, service and stop.
async fn supervise_process(
    ctx: &WorkerCtx,
    pid: i32,
    mut exit: oneshot::Receiver<ExitStatus>,
    post_fork: Option<oneshot::Receiver<PostForkOutcome>>,
    state: &mut StateCell,
    record: &mut SlotRecord,
    stop: &mut watch::Receiver<StopMode>,
) -> RunEnd {
    let pool = ctx.pool.name.as_str();
    let ready = &ctx.pool.ready;
    let started = Instant::now();

    // Boot: until ready, exit, stop, or the boot timeout.
    let booted = tokio::select! {
        status = &mut exit => {
            let status = status_or_lost(status);
            state.apply(WorkerEvent::Exited);
            cleanup_group(pid);
            let reason = boot_exit_reason(record.unplanned(status), post_fork).await;
            record.exited(status, reason, "worker exited before it became ready");
            return RunEnd::Restart(reason, Some(status));
        }
        _ = stopping(stop) => false,
        r = timeout(ready.timeout, wait_ready(ctx.addr(), &ready.probe, ready.interval)) => {
            if r.is_err() {
                state.apply(WorkerEvent::BootTimedOut);
                tracing::warn!(pool, worker = ctx.slot, pid, timeout_ms = ready.timeout.as_millis() as u64, "worker not ready within ready.timeout; killing it");
                let _ = signal_group(pid, Signal::SIGKILL);
                let status = status_or_lost((&mut exit).await);
                record.exited(status, ExitReason::BootTimeout, "worker killed: not ready within ready.timeout");
                cleanup_group(pid);
                return RunEnd::Restart(ExitReason::BootTimeout, Some(status));
            }
            true
        }
    };

    if booted && !ctx.pool.hooks.post_spawn.is_empty() {
        // Warm-up: the worker is up but gets no traffic until post_spawn passes.
        let passed = tokio::select! {
            ok = ctx.run_hooks(Phase::PostSpawn, None) => Some(ok),
            status = &mut exit => {
                let status = status_or_lost(status);
                state.apply(WorkerEvent::Exited);
                cleanup_group(pid);
                let reason = record.unplanned(status);
                record.exited(status, reason, "worker exited during post_spawn");
                return RunEnd::Restart(reason, Some(status));
            }
            _ = stopping(stop) => None,
        };
        if passed == Some(false) {
            state.apply(WorkerEvent::BootTimedOut);
            let policy = ctx
                .pool
                .hooks
                .post_spawn
                .iter()
                .map(|h| h.on_failure)
                .find(|p| *p != OnFailure::Skip);
            tracing::warn!(
                pool,
                worker = ctx.slot,
                pid,
                policy = policy.map(|p| p.as_str()),
                "post_spawn failed; killing the worker before it gets traffic"
            );
            let _ = signal_group(pid, Signal::SIGKILL);
            let status = status_or_lost((&mut exit).await);
            record.exited(
                status,
                ExitReason::HookFailure,
                "worker killed: post_spawn failed",
            );
            cleanup_group(pid);
            return RunEnd::Restart(ExitReason::HookFailure, Some(status));
        }
    }

    let booted = booted && *stop.borrow() == StopMode::Run;
    // Set when this worker asked to be recycled: its coming stop is that recycle.
    let mut recycled: Option<ExitReason> = None;
    if booted {
        ctx.upstreams
            .add_counted(ctx.addr(), ctx.status.served_counter())
            .await;
        state.apply(WorkerEvent::BecameReady);
        ctx.crash_loop.on_ready();
        ctx.report_boot(true);
        record.ready();
        #[cfg(feature = "fault-injection")]
        crate::proxy::fault::maybe_panic_actor(&ctx.pool);
        let mut health = ctx.pool.health.as_ref().map(|h| (h, HealthTracker::new(h)));
        let mut next_check = Instant::now();
        let recycling = ctx.pool.recycle.is_set();
        let sent_at_ready = ctx.upstreams.sent(ctx.addr());
        let threshold = ctx.pool.recycle.max_requests.map(|n| {
            n + rand::Rng::random_range(&mut rand::rng(), 0..=ctx.pool.recycle.max_requests_jitter)
        });
        let mut next_recycle_check = Instant::now() + RECYCLE_CHECK;
        let mut recycle_asked: Option<Instant> = None;
        loop {
            if let Some((h, _)) = &health {
                next_check += h.interval;
            }
            tokio::select! {
                status = &mut exit => {
                    let status = status_or_lost(status);
                    ctx.upstreams.remove(ctx.addr()).await;
                    state.apply(WorkerEvent::Exited);
                    let reason = record.unplanned(status);
                    record.exited(status, reason, "worker exited");
                    cleanup_group(pid);
                    return RunEnd::Restart(reason, Some(status));
                }
                _ = stopping(stop) => {
                    ctx.upstreams.remove(ctx.addr()).await;
                    break;
                }
                _ = sleep_until(next_recycle_check.into()), if recycling => {
                    next_recycle_check += RECYCLE_CHECK;
                    let sent = ctx.upstreams.sent(ctx.addr()).saturating_sub(sent_at_ready);
                    let again = recycle_asked.is_none_or(|t| t.elapsed() >= RECYCLE_RETRY);
                    if let (true, Some(reason)) = (again, recycle_due(ctx, pid, started, sent, threshold)) {
                        tracing::info!(pool, worker = ctx.slot, pid, reason = reason.as_str(), requests = sent, "worker due for recycling; asking for a replacement");
                        recycle_asked = Some(Instant::now());
                        recycled = Some(reason);
                        let _ = ctx.recycle.send(RecycleRequest {
                            pool: ctx.pool.name.clone(),
                            slot: ctx.slot,
                            port: ctx.port,
                            reason,
                        });
                    }
                }
                _ = sleep_until(next_check.into()), if health.is_some() => {
                    let Some((check, tracker)) = health.as_mut() else { continue };
                    let passed = timeout(check.timeout, probe_once(ctx.addr(), &check.probe))
                        .await
                        .unwrap_or(false);
                    match tracker.observe(passed, Instant::now()) {
                        HealthChange::None => {}
                        HealthChange::BecameUnhealthy => {
                            ctx.upstreams.remove(ctx.addr()).await;
                            state.apply(WorkerEvent::HealthFailed);
                            tracing::warn!(pool, worker = ctx.slot, pid, fails = check.unhealthy_after, "worker unhealthy; out of the load balancer");
                        }
                        HealthChange::BecameHealthy => {
                            ctx.upstreams
                                .add_counted(ctx.addr(), ctx.status.served_counter())
                                .await;
                            state.apply(WorkerEvent::HealthRecovered);
                            tracing::info!(pool, worker = ctx.slot, pid, "worker healthy again; back in the load balancer");
                        }
                        HealthChange::RestartDue => {
                            ctx.upstreams.remove(ctx.addr()).await;
                            tracing::warn!(pool, worker = ctx.slot, pid, restart_after_ms = check.restart_after.as_millis() as u64, "worker unhealthy for health.restart_after; restarting it");
                            state.apply(WorkerEvent::StopRequested);
                            drain(ctx, pid, stop).await;
                            ctx.run_hooks(Phase::PreStop, None).await;
                            let status = stop_process(ctx, pid, exit, stop).await;
                            state.apply(WorkerEvent::Exited);
                            record.exited(status, ExitReason::Health, "worker stopped: unhealthy for health.restart_after");
                            // Stopping → Stopped; the slot goes on in backoff.
                            state.apply(WorkerEvent::Respawn);
                            return RunEnd::Restart(ExitReason::Health, Some(status));
                        }
                    }
                }
            }
        }
    }

    state.apply(WorkerEvent::StopRequested);
    let mode = *stop.borrow();
    if booted && matches!(mode, StopMode::Graceful(_)) {
        drain(ctx, pid, stop).await;
        ctx.run_hooks(Phase::PreStop, None).await;
    }
    let status = stop_process(ctx, pid, exit, stop).await;
    state.apply(WorkerEvent::Exited);
    match recycled {
        Some(reason) => record.exited(status, reason, "worker stopped: recycled"),
        None => record.exited(status, mode.cause(), "worker stopped"),
    }
    RunEnd::Stopped(Some(status))
}

/// After the worker left the load balancer: wait for its in-flight requests, at
/// most `stop.drain` (a kill request cuts it short).
async fn drain(ctx: &WorkerCtx, pid: i32, stop: &mut watch::Receiver<StopMode>) {
    let limit = ctx.pool.stop.drain;
    if ctx.upstreams.in_flight(ctx.addr()) == 0 {
        return;
    }
    tracing::info!(
        event = events::DRAIN_START,
        pool = %ctx.pool.name,
        worker = ctx.slot,
        pid,
        in_flight = ctx.upstreams.in_flight(ctx.addr()),
        timeout_ms = limit.as_millis() as u64,
        "draining worker"
    );
    let started = Instant::now();
    let duration_ms = || started.elapsed().as_millis() as u64;
    tokio::select! {
        left = ctx.upstreams.drain(ctx.addr(), limit) => {
            if left > 0 {
                tracing::warn!(event = events::DRAIN_FINISH, result = "timeout", pool = %ctx.pool.name, worker = ctx.slot, pid, in_flight = left, duration_ms = duration_ms(), drain_ms = limit.as_millis() as u64, "stop.drain passed with requests still in flight");
            } else {
                tracing::info!(event = events::DRAIN_FINISH, result = "drained", pool = %ctx.pool.name, worker = ctx.slot, pid, in_flight = 0u64, duration_ms = duration_ms(), "worker drained");
            }
        }
        _ = killing(stop) => {
            tracing::warn!(event = events::DRAIN_FINISH, result = "interrupted", pool = %ctx.pool.name, worker = ctx.slot, pid, in_flight = ctx.upstreams.in_flight(ctx.addr()), duration_ms = duration_ms(), "draining worker cut short");
        }
    }
}

/// `stop.signal` to the group, wait `grace`, then SIGKILL; returns the exit status.
async fn stop_process(
    ctx: &WorkerCtx,
    pid: i32,
    mut exit: oneshot::Receiver<ExitStatus>,
    stop: &mut watch::Receiver<StopMode>,
) -> ExitStatus {
    let policy = &ctx.pool.stop;
    let mode = *stop.borrow();
    let first = if mode == StopMode::Kill {
        Signal::SIGKILL
    } else {
        policy.signal
    };
    if let Err(e) = signal_group(pid, first) {
        tracing::warn!(pool = %ctx.pool.name, worker = ctx.slot, pid, error = %e, "signalling worker failed");
    }
    let status = tokio::select! {
        s = &mut exit => status_or_lost(s),
        _ = sleep(policy.grace) => {
            tracing::warn!(pool = %ctx.pool.name, worker = ctx.slot, pid, grace_ms = policy.grace.as_millis() as u64, "worker still running after stop.grace; sending SIGKILL");
            let _ = signal_group(pid, Signal::SIGKILL);
            status_or_lost(exit.await)
        }
        _ = killing(stop) => {
            let _ = signal_group(pid, Signal::SIGKILL);
            status_or_lost(exit.await)
        }
    };
    cleanup_group(pid);
    status
}

/// Kill whatever the worker left running in its process group.
fn cleanup_group(pid: i32) {
    let _ = signal_group(pid, Signal::SIGKILL);
}

/// The reaper never drops a watcher; if it somehow did, treat the process as killed.
fn status_or_lost(r: Result<ExitStatus, oneshot::error::RecvError>) -> ExitStatus {
    r.unwrap_or(ExitStatus::Signal(Signal::SIGKILL as i32))
}

/// Resolves once the supervisor asks for a stop of any kind.
async fn stopping(stop: &mut watch::Receiver<StopMode>) {
    // The borrow guard is dropped here, before any other await of the caller.
    let _ = stop.wait_for(|m| *m != StopMode::Run).await.map(|_| ());
}

/// Resolves once the supervisor asks for an immediate kill.
async fn killing(stop: &mut watch::Receiver<StopMode>) {
    let _ = stop.wait_for(|m| *m == StopMode::Kill).await.map(|_| ());
}
