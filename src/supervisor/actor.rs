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
//! supervisor's stop channel. It reads the pool's settings from the pool each time
//! it needs one, except the keys that define the process (`command`, `env`, `cwd`,
//! `pre_fork`, `post_fork`), which come from the generation it was started with.
//!
//! Every way a process's life can end — it exited while starting or serving, it
//! was killed at the boot timeout or after a failed `post_spawn`, it was restarted
//! for health, it was killed because a request hung on it (`hang`), it was
//! stopped — produces one [`Ended`] value, and one function
//! ([`Actor::finish`]) records it: the state, the group cleanup, the exit event,
//! `on_exit`. Everything outside the actor goes through [`Processes`], which the
//! unit tests below replace by a fake child.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, timeout};

use super::backoff::Backoff;
use super::crash_loop::CrashLoop;
use super::hang;
use super::health::{HealthChange, HealthTracker};
use super::launch::{Launched, Os};
use super::lifecycle::SlotRecord;
use super::recycle::{recycle_due, RecycleRequest, RECYCLE_CHECK, RECYCLE_RETRY};
use super::state::{StateCell, WorkerEvent};
use crate::config::{HangDump, HangPolicy, OnFailure, Phase, Placeholders, PoolConfig, ReadyProbe};
use crate::events;
use crate::hooks::post_fork::PostForkOutcome;
use crate::hooks::{HookContext, WorkerExit};
use crate::metrics::Metrics;
use crate::pool::pending::Hang;
use crate::pool::{Member, Pool};
use crate::process::child_spec::ChildSpec;
use crate::process::output::Tap;
use crate::process::{ExitReason, ExitStatus, SpawnSpec};
use crate::slot::{Endpoint, SlotId, WorkerState};
use crate::status::{PoolStatus, SlotStatus};

/// What the supervisor wants from its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
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
    pub(crate) fn cause(self) -> ExitReason {
        match self {
            StopMode::Graceful(reason) => reason,
            StopMode::Run | StopMode::Kill => ExitReason::Shutdown,
        }
    }
}

/// Everything a worker actor needs.
pub(crate) struct WorkerCtx {
    /// The pool's current settings, and its load balancer.
    pub(crate) pool: Arc<Pool>,
    /// The settings this actor's processes are started with (`command`, `env`,
    /// `cwd`, `pre_fork`, `post_fork`); replaced only by a new actor.
    pub(crate) generation: Arc<PoolConfig>,
    pub(crate) slot: SlotId,
    /// The actor's endpoint number: its port, or its socket number for `bind: unix`.
    pub(crate) port: u16,
    pub(crate) endpoint: Endpoint,
    /// Told once whether the first spawn became ready (rolling replacements wait).
    pub(crate) boot_report: Mutex<Option<oneshot::Sender<bool>>>,
    /// Where to ask for this worker to be replaced (recycling).
    pub(crate) recycle: mpsc::UnboundedSender<RecycleRequest>,
    /// `bind: inherit`, and every preload pool: the endpoint's socket, held by
    /// forkyard across restarts.
    pub(crate) listener: Option<Arc<std::os::fd::OwnedFd>>,
    pub(crate) os: Os,
    pub(crate) crash_loop: Arc<CrashLoop>,
    pub(crate) metrics: Arc<Metrics>,
    /// This actor's entry on the status board, and the pool's (to leave it).
    pub(crate) status: Arc<SlotStatus>,
    pub(crate) pool_status: Arc<PoolStatus>,
}

impl WorkerCtx {
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

    fn fill(&self, s: &str) -> String {
        self.generation.fill(s, self.slot.index(), self.port)
    }

    /// `bind: unix`: the pool's socket directory exists and no stale socket is left
    /// where the new worker will listen.
    fn prepare_socket(&self) -> std::io::Result<()> {
        if self.listener.is_some() {
            // forkyard holds (and bound) this endpoint's socket itself.
            return Ok(());
        }
        match &self.endpoint {
            Endpoint::Unix(path) => {
                if let Some(dir) = &self.generation.socket_dir {
                    let (user, group) = self.generation.post_fork_account();
                    crate::sockets::prepare(dir, user, group)?;
                }
                crate::sockets::clear_stale(path)
            }
            Endpoint::Tcp(_) => Ok(()),
        }
    }

    fn pool_env(&self) -> Vec<(String, String)> {
        self.generation
            .env
            .iter()
            .map(|(k, v)| (k.clone(), self.fill(v)))
            .collect()
    }

    fn hook_context(&self, phase: Phase) -> HookContext {
        HookContext {
            pool: self.pool.name.clone(),
            worker: Some(self.slot.index()),
            port: self.generation.socket_dir.is_none().then_some(self.port),
            socket: self.generation.socket_path(self.port),
            phase,
            exit: None,
            pool_env: self.pool_env(),
            cwd: self.generation.cwd.clone(),
            base_env: None,
        }
    }

    /// `hang.dump`'s command for the worker process `pid`, its placeholders filled
    /// (`{pid}` too), with the worker's pool environment.
    fn dump_spec(&self, argv: &[String], pid: i32) -> SpawnSpec {
        let socket = self.generation.socket_path(self.port);
        let values = Placeholders {
            pool: &self.generation.name,
            worker: self.slot.index(),
            port: socket.is_none().then_some(self.port),
            socket: socket.as_deref(),
            pid: Some(pid),
        };
        let mut env = self.pool_env();
        env.push(("FORKYARD_POOL".into(), self.generation.name.clone()));
        env.push(("FORKYARD_WORKER".into(), self.slot.label()));
        env.push(("FORKYARD_PID".into(), pid.to_string()));
        SpawnSpec {
            argv: argv.iter().map(|a| values.fill(a)).collect(),
            env,
            cwd: self.generation.cwd.clone(),
            ..SpawnSpec::default()
        }
    }

    fn spawn_spec(&self) -> SpawnSpec {
        let mut env = self.pool_env();
        env.push(("FORKYARD_POOL".into(), self.generation.name.clone()));
        env.push(("FORKYARD_WORKER".into(), self.slot.label()));
        match self.generation.socket_path(self.port) {
            Some(path) => env.push(("FORKYARD_SOCKET".into(), path.to_string_lossy().into())),
            None => env.push(("FORKYARD_PORT".into(), self.port.to_string())),
        }
        let argv: Vec<String> = self
            .generation
            .command
            .iter()
            .map(|a| self.fill(a))
            .collect();
        SpawnSpec {
            child: Some(ChildSpec::for_pool(
                &self.generation,
                self.slot.index(),
                self.port,
                argv.clone(),
                |s| self.fill(s),
            )),
            argv,
            env,
            cwd: self.generation.cwd.clone(),
            inherit: self.listener.clone(),
            ..SpawnSpec::default()
        }
    }
}

/// How one process's life ended (or why none was started).
#[derive(Debug)]
struct Ended {
    /// The process, if one was started.
    pid: Option<i32>,
    status: Option<ExitStatus>,
    reason: ExitReason,
    message: &'static str,
    /// The state event the end is: `Exited`, or `BootTimedOut` when forkyard
    /// killed a worker that never became ready for traffic.
    event: WorkerEvent,
    /// The supervisor asked for this stop: the actor ends.
    stopped: bool,
}

impl Ended {
    /// No process was started (a `pre_fork` hook or the spawn failed).
    fn not_started(reason: ExitReason) -> Ended {
        Ended {
            pid: None,
            status: None,
            reason,
            message: "",
            event: WorkerEvent::SpawnFailed,
            stopped: false,
        }
    }

    /// The process ended for `reason`; the slot goes on.
    fn exited(pid: i32, status: ExitStatus, reason: ExitReason, message: &'static str) -> Ended {
        Ended {
            pid: Some(pid),
            status: Some(status),
            reason,
            message,
            event: WorkerEvent::Exited,
            stopped: false,
        }
    }
}

/// Kills a worker's process group if the future supervising it is dropped before
/// the process was seen to exit: the actor panicked (a bug) or was cancelled. No
/// worker is ever left running unsupervised, and it leaves the load balancer.
struct GroupGuard {
    armed: bool,
    pid: i32,
    os: Os,
    pool: Arc<Pool>,
    member: Arc<Member>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.pool.withdraw(&self.member);
            self.os.signal(self.pid, Signal::SIGKILL);
        }
    }
}

/// How serving ended.
enum Serving {
    /// The process ended (or was restarted for health).
    Ended(Ended),
    /// The supervisor asked for a stop; `recycled` when this worker had asked to be
    /// recycled (its stop is that recycle).
    Stop { recycled: Option<ExitReason> },
}

struct Actor {
    ctx: WorkerCtx,
    stop: watch::Receiver<StopMode>,
    state: StateCell,
    record: SlotRecord,
}

/// Run the slot's actor until the supervisor says stop. If the actor panics (a
/// bug), its process group is killed (see `GroupGuard`), the slot leaves the
/// balancer, and a fresh actor (from `make`) takes the slot over a second later,
/// so a slot is never left unsupervised and forkyard keeps running.
pub(crate) async fn run_supervised(
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
                    pool = %pool,
                    worker = slot.index(),
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
pub(crate) async fn run(ctx: WorkerCtx, stop: watch::Receiver<StopMode>) {
    let gauges = WorkerState::GAUGED.map(|s| ctx.metrics.workers_in(&ctx.pool.name, s));
    let state = StateCell::new(gauges).reporting_to(ctx.status.clone());
    let record = SlotRecord::new(
        ctx.pool.name.clone(),
        ctx.slot,
        ctx.endpoint.clone(),
        ctx.metrics.clone(),
        ctx.status.clone(),
        ctx.pool_status.clone(),
    );
    let restart = ctx.pool.settings().restart.clone();
    let mut backoff = Backoff::new(restart.backoff_min, restart.backoff_max);
    let mut actor = Actor {
        ctx,
        stop,
        state,
        record,
    };
    loop {
        if actor.told_to_stop() {
            return;
        }
        let started = Instant::now();
        let ended = actor.life().await;
        actor.finish(&ended).await;
        // Told to stop while its process was exiting on its own: no restart
        // follows, so it is no failure of the pool's (a retired worker of an old
        // generation must not trip the new one's crash loop).
        if ended.stopped || actor.told_to_stop() {
            return;
        }
        let restart = actor.ctx.pool.settings().restart.clone();
        backoff.set_bounds(restart.backoff_min, restart.backoff_max);
        if started.elapsed() >= restart.reset_after {
            backoff.reset();
        }
        let jittered = backoff.next_delay(&mut rand::rng());
        let degraded = actor
            .ctx
            .crash_loop
            .record_failure(restart.crash_loop_failures, restart.crash_loop_window);
        let delay = if degraded {
            restart.backoff_max
        } else {
            jittered
        };
        actor.record.restarting(ended.reason, delay);
        tokio::select! {
            _ = sleep(delay) => { actor.state.apply(WorkerEvent::BackoffElapsed); }
            _ = stopping(&mut actor.stop) => {}
        }
    }
}

impl Actor {
    /// Whether the supervisor asked this slot to stop (then the state says so).
    fn told_to_stop(&mut self) -> bool {
        let told = *self.stop.borrow() != StopMode::Run;
        if told {
            self.state.apply(WorkerEvent::StopRequested);
        }
        told
    }

    /// Run the hooks of `phase`; `true` if the worker may go on. `pre_fork` hooks
    /// are the generation's; the others are the pool's current ones.
    async fn run_hooks(&self, phase: Phase, exit: Option<WorkerExit>) -> bool {
        let source = match phase {
            Phase::PreFork | Phase::PostFork => self.ctx.generation.clone(),
            _ => self.ctx.pool.settings(),
        };
        let hooks = source.hooks.phase(phase);
        if hooks.is_empty() {
            return true;
        }
        let mut ctx = self.ctx.hook_context(phase);
        ctx.exit = exit;
        match self.ctx.os.run_hooks(hooks, &ctx).await {
            Ok(()) => true,
            Err(failure) => {
                tracing::warn!(pool = %self.ctx.pool.name, worker = self.ctx.slot.index(), "{failure}");
                false
            }
        }
    }

    /// One process's life, from `pre_fork` to its end.
    async fn life(&mut self) -> Ended {
        if !self.run_hooks(Phase::PreFork, None).await {
            return Ended::not_started(ExitReason::HookFailure);
        }
        if let Err(e) = self.ctx.prepare_socket() {
            self.record.spawn_failed(&e);
            return Ended::not_started(ExitReason::ExitCode);
        }
        let launched = match self
            .ctx
            .os
            .launch(
                &self.ctx.spawn_spec(),
                &self.ctx.hook_context(Phase::PostFork),
            )
            .await
        {
            Ok(l) => l,
            Err(e) => {
                self.record.spawn_failed(&e);
                return Ended::not_started(e.exit_reason());
            }
        };
        self.state.apply(WorkerEvent::Spawned);
        self.record.spawned(launched.pid);
        let member = Arc::new(Member::new(
            self.ctx.slot,
            self.ctx.endpoint.clone(),
            self.ctx.status.served_counter(),
        ));
        let mut guard = GroupGuard {
            armed: true,
            pid: launched.pid,
            os: self.ctx.os.clone(),
            pool: self.ctx.pool.clone(),
            member: member.clone(),
        };
        let ended = self.supervise(launched, &member).await;
        guard.armed = false;
        ended
    }

    /// The one exit path: record how the life ended.
    async fn finish(&mut self, ended: &Ended) {
        self.ctx.report_boot(false);
        let (Some(pid), Some(status)) = (ended.pid, ended.status) else {
            self.state.apply(ended.event);
            return;
        };
        self.state.apply(ended.event);
        // Kill whatever the worker left running in its process group.
        self.ctx.os.signal(pid, Signal::SIGKILL);
        self.record.exited(status, ended.reason, ended.message);
        if *self.stop.borrow() != StopMode::Kill {
            self.run_hooks(
                Phase::OnExit,
                Some(WorkerExit {
                    status: Some(status),
                    reason: if ended.stopped {
                        self.stop.borrow().cause()
                    } else {
                        ended.reason
                    },
                }),
            )
            .await;
        }
        if !ended.stopped && self.state.state() == WorkerState::Stopped {
            // A planned stop that the slot goes on from (health restart).
            self.state.apply(WorkerEvent::Respawn);
        }
    }

    /// SIGKILL the group and wait for the exit.
    async fn kill(&self, pid: i32, exit: &mut oneshot::Receiver<ExitStatus>) -> ExitStatus {
        self.ctx.os.signal(pid, Signal::SIGKILL);
        status_or_lost(exit.await)
    }

    /// Watch one running process through boot, post_spawn, service and stop.
    async fn supervise(&mut self, child: Launched, member: &Arc<Member>) -> Ended {
        let Launched {
            pid,
            mut exit,
            post_fork,
            output,
        } = child;
        let settings = self.ctx.pool.settings();
        let ready = &settings.ready;
        let spawned = Instant::now();
        let mut stop = self.stop.clone();

        // Boot: until ready, exit, stop, or the boot timeout.
        let probing = wait_ready(
            &self.ctx.os,
            &self.ctx.endpoint,
            &ready.probe,
            ready.interval,
        );
        let booted = tokio::select! {
            status = &mut exit => {
                let status = status_or_lost(status);
                let reason = boot_exit_reason(self.record.unplanned(status), post_fork).await;
                return Ended::exited(pid, status, reason, "worker exited before it became ready");
            }
            _ = stopping(&mut stop) => false,
            r = timeout(ready.timeout, probing) => {
                if r.is_err() {
                    tracing::warn!(pool = %self.ctx.pool.name, worker = self.ctx.slot.index(), pid, timeout_ms = ready.timeout.as_millis() as u64, "worker not ready within ready.timeout; killing it");
                    let status = self.kill(pid, &mut exit).await;
                    return Ended {
                        event: WorkerEvent::BootTimedOut,
                        ..Ended::exited(pid, status, ExitReason::BootTimeout, "worker killed: not ready within ready.timeout")
                    };
                }
                true
            }
        };

        if booted && !settings.hooks.post_spawn.is_empty() {
            // Warm-up: the worker is up but gets no traffic until post_spawn passes.
            let passed = tokio::select! {
                ok = self.run_hooks(Phase::PostSpawn, None) => Some(ok),
                status = &mut exit => {
                    let status = status_or_lost(status);
                    let reason = self.record.unplanned(status);
                    return Ended::exited(pid, status, reason, "worker exited during post_spawn");
                }
                _ = stopping(&mut stop) => None,
            };
            if passed == Some(false) {
                let policy = settings
                    .hooks
                    .post_spawn
                    .iter()
                    .map(|h| h.on_failure)
                    .find(|p| *p != OnFailure::Skip);
                tracing::warn!(
                    pool = %self.ctx.pool.name,
                    worker = self.ctx.slot.index(),
                    pid,
                    policy = policy.map(|p| p.as_str()),
                    "post_spawn failed; killing the worker before it gets traffic"
                );
                let status = self.kill(pid, &mut exit).await;
                return Ended {
                    event: WorkerEvent::BootTimedOut,
                    ..Ended::exited(
                        pid,
                        status,
                        ExitReason::HookFailure,
                        "worker killed: post_spawn failed",
                    )
                };
            }
        }

        let booted = booted && *self.stop.borrow() == StopMode::Run;
        let mut recycled = None;
        if booted {
            match self.serve(pid, spawned, &mut exit, member, &output).await {
                Serving::Ended(ended) => return ended,
                Serving::Stop { recycled: r } => recycled = r,
            }
        }

        self.state.apply(WorkerEvent::StopRequested);
        let mode = *self.stop.borrow();
        if booted && matches!(mode, StopMode::Graceful(_)) {
            self.drain(pid, member).await;
            // Its last counts (merged worker metrics); pointless at shutdown.
            if mode.cause() != ExitReason::Shutdown {
                self.ctx.pool.farewell(member).await;
            }
            self.run_hooks(Phase::PreStop, None).await;
        }
        let status = self.stop_process(pid, &mut exit).await;
        let (reason, message) = match recycled {
            Some(reason) => (reason, "worker stopped: recycled"),
            None => (mode.cause(), "worker stopped"),
        };
        Ended {
            stopped: true,
            ..Ended::exited(pid, status, reason, message)
        }
    }

    /// In the load balancer until the process exits, the supervisor asks for a
    /// stop, or health checks restart it; meanwhile check recycling limits.
    async fn serve(
        &mut self,
        pid: i32,
        spawned: Instant,
        exit: &mut oneshot::Receiver<ExitStatus>,
        member: &Arc<Member>,
        output: &Tap,
    ) -> Serving {
        let pool = self.ctx.pool.clone();
        let name = pool.name.clone();
        let worker = self.ctx.slot.index();
        pool.admit(member.clone());
        self.state.apply(WorkerEvent::BecameReady);
        self.ctx.crash_loop.on_ready();
        self.ctx.report_boot(true);
        self.record.ready();
        #[cfg(feature = "fault-injection")]
        crate::fault::maybe_panic_actor(&self.ctx.generation);
        let mut changes = pool.subscribe();
        let mut tracker = HealthTracker::default();
        let mut next_check = Instant::now();
        // Drawn once, so a reload that changes max_requests keeps each worker's
        // place in the spread.
        let jitter = rand::Rng::random_range(
            &mut rand::rng(),
            0..=pool.settings().recycle.max_requests_jitter,
        );
        let mut next_recycle_check = Instant::now() + RECYCLE_CHECK;
        let mut recycle_asked: Option<Instant> = None;
        let mut recycled: Option<ExitReason> = None;
        let mut next_hang_check = tokio::time::Instant::now();
        let mut stop = self.stop.clone();
        loop {
            let settings = pool.settings();
            let health = settings.health.as_ref();
            tokio::select! {
                status = &mut *exit => {
                    pool.withdraw(member);
                    let status = status_or_lost(status);
                    let reason = self.record.unplanned(status);
                    return Serving::Ended(Ended::exited(pid, status, reason, "worker exited"));
                }
                _ = stopping(&mut stop) => {
                    pool.withdraw(member);
                    return Serving::Stop { recycled };
                }
                // New settings: look at them again. A worker left out by health
                // checks that are now off comes back.
                _ = changes.changed() => {
                    if pool.settings().health.is_none() && self.state.state() == WorkerState::Unhealthy {
                        tracker = HealthTracker::default();
                        pool.admit(member.clone());
                        self.state.apply(WorkerEvent::HealthRecovered);
                        tracing::info!(pool = %name, worker, pid, "health checks turned off; back in the load balancer");
                    }
                }
                _ = sleep_until(next_hang_check), if settings.hang.is_some() => {
                    let Some(policy) = settings.hang.clone() else { continue };
                    next_hang_check = tokio::time::Instant::now() + hang::check_every(policy.after);
                    let Some(found) = member.pending().check(policy.after, Instant::now()) else {
                        continue;
                    };
                    if let Some(ended) = self.hung(pid, &policy, &found, exit, member, output).await {
                        return Serving::Ended(ended);
                    }
                }
                _ = sleep_until(next_recycle_check.into()), if settings.recycle.is_set() => {
                    next_recycle_check = Instant::now() + RECYCLE_CHECK;
                    let again = recycle_asked.is_none_or(|t| t.elapsed() >= RECYCLE_RETRY);
                    let threshold = settings.recycle.max_requests.map(|n| n + jitter);
                    if let (true, Some(reason)) = (again, recycle_due(&settings.recycle, pid, spawned, member.sent(), threshold)) {
                        tracing::info!(pool = %name, worker, pid, reason = reason.as_str(), requests = member.sent(), "worker due for recycling; asking for a replacement");
                        recycle_asked = Some(Instant::now());
                        recycled = Some(reason);
                        let _ = self.ctx.recycle.send(RecycleRequest {
                            pool: name.to_string(),
                            slot: self.ctx.slot,
                            port: self.ctx.port,
                            reason,
                        });
                    }
                }
                _ = sleep_until(next_check.into()), if health.is_some() => {
                    let Some(check) = health else { continue };
                    next_check = Instant::now() + check.interval;
                    let passed = timeout(check.timeout, self.ctx.os.probe(&self.ctx.endpoint, &check.probe))
                        .await
                        .unwrap_or(false);
                    match tracker.observe(check, passed, Instant::now()) {
                        HealthChange::None => {}
                        HealthChange::BecameUnhealthy => {
                            pool.withdraw(member);
                            self.state.apply(WorkerEvent::HealthFailed);
                            tracing::warn!(pool = %name, worker, pid, fails = check.unhealthy_after, "worker unhealthy; out of the load balancer");
                        }
                        HealthChange::BecameHealthy => {
                            pool.admit(member.clone());
                            self.state.apply(WorkerEvent::HealthRecovered);
                            tracing::info!(pool = %name, worker, pid, "worker healthy again; back in the load balancer");
                        }
                        HealthChange::RestartDue => {
                            pool.withdraw(member);
                            tracing::warn!(pool = %name, worker, pid, restart_after_ms = check.restart_after.as_millis() as u64, "worker unhealthy for health.restart_after; restarting it");
                            self.state.apply(WorkerEvent::StopRequested);
                            self.drain(pid, member).await;
                            self.run_hooks(Phase::PreStop, None).await;
                            let status = self.stop_process(pid, exit).await;
                            return Serving::Ended(Ended::exited(
                                pid,
                                status,
                                ExitReason::Health,
                                "worker stopped: unhealthy for health.restart_after",
                            ));
                        }
                    }
                }
            }
        }
    }

    /// A request hung on this worker (`found`): leave the load balancer if it is to
    /// be killed, dump its stacks (bounded by `dump_timeout`; its exit meanwhile is
    /// still seen), record the hang, then kill it with `hang.kill`. `None`: it keeps
    /// serving.
    async fn hung(
        &mut self,
        pid: i32,
        policy: &HangPolicy,
        found: &Hang,
        exit: &mut oneshot::Receiver<ExitStatus>,
        member: &Arc<Member>,
        output: &Tap,
    ) -> Option<Ended> {
        if policy.kill {
            // No new request goes to a worker that is about to be killed; it shows
            // as stopping while its stacks are dumped.
            self.ctx.pool.withdraw(member);
            self.state.apply(WorkerEvent::StopRequested);
        }
        let spec = match &policy.dump {
            Some(HangDump::Command(argv)) => Some(self.ctx.dump_spec(argv, pid)),
            _ => None,
        };
        let mut exited = None;
        let dump = {
            let dumping = hang::dump(&self.ctx.os, policy, pid, spec, output);
            tokio::pin!(dumping);
            loop {
                tokio::select! {
                    d = &mut dumping => break d,
                    s = &mut *exit, if exited.is_none() => exited = Some(status_or_lost(s)),
                }
            }
        };
        let kill = policy.kill && exited.is_none();
        self.record.hang(pid, found, &dump, kill);
        if let Some(status) = exited {
            self.ctx.pool.withdraw(member);
            let reason = self.record.unplanned(status);
            return Some(Ended::exited(
                pid,
                status,
                reason,
                "worker exited while its stacks were dumped",
            ));
        }
        if !kill {
            return None;
        }
        let status = self.kill(pid, exit).await;
        Some(Ended::exited(
            pid,
            status,
            ExitReason::Hang,
            "worker killed: a request hung (hang.after)",
        ))
    }

    /// After the worker left the load balancer: wait for its in-flight requests, at
    /// most `stop.drain` (a kill request cuts it short).
    async fn drain(&self, pid: i32, member: &Member) {
        let limit = self.ctx.pool.settings().stop.drain;
        let (pool, worker) = (self.ctx.pool.name.clone(), self.ctx.slot.index());
        if member.in_flight() == 0 {
            return;
        }
        tracing::info!(
            event = events::DRAIN_START,
            pool = %pool,
            worker,
            pid,
            in_flight = member.in_flight(),
            timeout_ms = limit.as_millis() as u64,
            "draining worker"
        );
        let started = Instant::now();
        let duration_ms = || started.elapsed().as_millis() as u64;
        let mut stop = self.stop.clone();
        tokio::select! {
            left = member.drain(limit) => {
                if left > 0 {
                    tracing::warn!(event = events::DRAIN_FINISH, result = "timeout", pool = %pool, worker, pid, in_flight = left, duration_ms = duration_ms(), drain_ms = limit.as_millis() as u64, "stop.drain passed with requests still in flight");
                } else {
                    tracing::info!(event = events::DRAIN_FINISH, result = "drained", pool = %pool, worker, pid, in_flight = 0u64, duration_ms = duration_ms(), "worker drained");
                }
            }
            _ = killing(&mut stop) => {
                tracing::warn!(event = events::DRAIN_FINISH, result = "interrupted", pool = %pool, worker, pid, in_flight = member.in_flight(), duration_ms = duration_ms(), "draining worker cut short");
            }
        }
    }

    /// `stop.signal` to the group, wait `grace`, then SIGKILL; returns the exit status.
    async fn stop_process(&self, pid: i32, exit: &mut oneshot::Receiver<ExitStatus>) -> ExitStatus {
        let policy = self.ctx.pool.settings().stop.clone();
        let first = if *self.stop.borrow() == StopMode::Kill {
            Signal::SIGKILL
        } else {
            policy.signal
        };
        self.ctx.os.signal(pid, first);
        let mut stop = self.stop.clone();
        tokio::select! {
            s = &mut *exit => status_or_lost(s),
            _ = sleep(policy.grace) => {
                tracing::warn!(pool = %self.ctx.pool.name, worker = self.ctx.slot.index(), pid, grace_ms = policy.grace.as_millis() as u64, "worker still running after stop.grace; sending SIGKILL");
                self.kill(pid, exit).await
            }
            _ = killing(&mut stop) => self.kill(pid, exit).await,
        }
    }
}

/// Probe `endpoint` every `interval` until it passes; the caller bounds it.
async fn wait_ready(os: &Os, endpoint: &Endpoint, probe: &ReadyProbe, interval: Duration) {
    while !os.probe(endpoint, probe).await {
        sleep(interval).await;
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
    match timeout(Duration::from_secs(2), rx).await {
        Ok(Ok(PostForkOutcome::Exec)) => plain,
        _ => ExitReason::HookFailure,
    }
}

/// The reaper never drops a watcher; if it somehow did, treat the process as killed.
fn status_or_lost(r: Result<ExitStatus, oneshot::error::RecvError>) -> ExitStatus {
    r.unwrap_or(ExitStatus::Signal(Signal::SIGKILL as i32))
}

/// Resolves once the supervisor asks for a stop of any kind.
pub(crate) async fn stopping(stop: &mut watch::Receiver<StopMode>) {
    // The borrow guard is dropped here, before any other await of the caller.
    let _ = stop.wait_for(|m| *m != StopMode::Run).await.map(|_| ());
}

/// Resolves once the supervisor asks for an immediate kill.
async fn killing(stop: &mut watch::Receiver<StopMode>) {
    let _ = stop.wait_for(|m| *m == StopMode::Kill).await.map(|_| ());
}
