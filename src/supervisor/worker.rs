//! One actor per worker slot: spawn, wait for ready, serve, and on exit back off and
//! spawn again, until told to stop.
//!
//! The actor owns its slot's process and its place in the load balancer. It learns
//! about its process's exit only from the reaper, and about stopping only from the
//! supervisor's stop channel.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep, timeout};

use super::backoff::Backoff;
use super::lifecycle::SlotRecord;
use super::readiness::wait_ready;
use super::state::{StateCell, WorkerEvent, WorkerState};
use crate::config::{fill_placeholders, PoolConfig};
use crate::metrics::Metrics;
use crate::process::output::{forward_lines, OutputLabel};
use crate::process::signal::signal_group;
use crate::process::{spawn, ExitReason, ExitStatus, Reaper, SpawnSpec};
use crate::proxy::upstreams::PoolUpstreams;
use crate::status::SlotStatus;

/// What the supervisor wants from its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Keep running.
    Run,
    /// Stop: `stop.signal`, then `grace`, then SIGKILL.
    Graceful,
    /// Stop now with SIGKILL (a second shutdown signal).
    Kill,
}

/// Everything a worker actor needs.
pub struct WorkerCtx {
    pub pool: Arc<PoolConfig>,
    pub slot: usize,
    pub reaper: Arc<Reaper>,
    pub upstreams: Arc<PoolUpstreams>,
    pub metrics: Arc<Metrics>,
    /// This slot's entry on the status board.
    pub status: Arc<SlotStatus>,
}

impl WorkerCtx {
    fn port(&self) -> u16 {
        self.pool.slot_port(self.slot)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()))
    }

    fn spawn_spec(&self) -> SpawnSpec {
        let (pool, slot, port) = (self.pool.name.as_str(), self.slot, self.port());
        let fill = |s: &String| fill_placeholders(s, pool, slot, port);
        let mut env: Vec<(String, String)> = self
            .pool
            .env
            .iter()
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect();
        env.push(("FORKYARD_POOL".into(), pool.into()));
        env.push(("FORKYARD_WORKER".into(), slot.to_string()));
        env.push(("FORKYARD_PORT".into(), port.to_string()));
        SpawnSpec {
            argv: self.pool.command.iter().map(fill).collect(),
            env,
            cwd: self.pool.cwd.clone(),
        }
    }
}

/// How one run of the process ended.
enum RunEnd {
    /// The process ended by itself (or was killed for a boot timeout): restart it.
    Restart(ExitReason),
    /// The supervisor asked us to stop and the process is gone.
    Stopped,
}

/// Run the slot until the supervisor says stop.
pub async fn run(ctx: WorkerCtx, mut stop: watch::Receiver<StopMode>) {
    let pool_name = ctx.pool.name.clone();
    let gauges = WorkerState::GAUGED.map(|s| ctx.metrics.workers_in(&pool_name, s));
    let mut state = StateCell::new(gauges).reporting_to(ctx.status.clone());
    let restart = &ctx.pool.restart;
    let mut backoff = Backoff::new(restart.backoff_min, restart.backoff_max);
    let label: Arc<str> = Arc::from(pool_name.as_str());
    let mut record = SlotRecord::new(
        label.clone(),
        ctx.slot,
        ctx.port(),
        ctx.metrics.slot(&pool_name, ctx.slot),
        ctx.status.clone(),
    );

    loop {
        let mode = *stop.borrow();
        if mode != StopMode::Run {
            state.apply(WorkerEvent::StopRequested);
            return;
        }
        let started = Instant::now();
        let end = match spawn(&ctx.spawn_spec()) {
            Ok(child) => {
                state.apply(WorkerEvent::Spawned);
                record.spawned(child.pid);
                for (pipe, stream) in [(child.stdout, "stdout"), (child.stderr, "stderr")] {
                    if let Some(pipe) = pipe {
                        let label = OutputLabel {
                            pool: label.clone(),
                            worker: ctx.slot,
                            stream,
                        };
                        tokio::spawn(forward_lines(pipe, label));
                    }
                }
                let exit = ctx.reaper.watch(child.pid);
                supervise_process(&ctx, child.pid, exit, &mut state, &mut record, &mut stop).await
            }
            Err(e) => {
                state.apply(WorkerEvent::SpawnFailed);
                record.spawn_failed(&e);
                RunEnd::Restart(ExitReason::ExitCode)
            }
        };
        let reason = match end {
            RunEnd::Stopped => return,
            RunEnd::Restart(reason) => reason,
        };
        if started.elapsed() >= restart.reset_after {
            backoff.reset();
        }
        let delay = backoff.next_delay(&mut rand::rng());
        record.restarting(reason, delay);
        tokio::select! {
            _ = sleep(delay) => { state.apply(WorkerEvent::BackoffElapsed); }
            _ = stopping(&mut stop) => {}
        }
    }
}

/// Watch one running process through boot, service and stop.
async fn supervise_process(
    ctx: &WorkerCtx,
    pid: i32,
    mut exit: oneshot::Receiver<ExitStatus>,
    state: &mut StateCell,
    record: &mut SlotRecord,
    stop: &mut watch::Receiver<StopMode>,
) -> RunEnd {
    let pool = ctx.pool.name.as_str();
    let ready = &ctx.pool.ready;

    // Boot: until ready, exit, stop, or the boot timeout.
    let booted = tokio::select! {
        status = &mut exit => {
            let status = status_or_lost(status);
            state.apply(WorkerEvent::Exited);
            let reason = ExitReason::of_unplanned(status);
            record.exited(status, Some(reason), "worker exited before it became ready");
            cleanup_group(pid);
            return RunEnd::Restart(reason);
        }
        _ = stopping(stop) => false,
        r = timeout(ready.timeout, wait_ready(ctx.addr(), &ready.probe, ready.interval)) => {
            if r.is_err() {
                state.apply(WorkerEvent::BootTimedOut);
                tracing::warn!(pool, worker = ctx.slot, pid, timeout_ms = ready.timeout.as_millis() as u64, "worker not ready within ready.timeout; killing it");
                let _ = signal_group(pid, Signal::SIGKILL);
                let status = status_or_lost((&mut exit).await);
                record.exited(status, Some(ExitReason::BootTimeout), "worker killed: not ready within ready.timeout");
                cleanup_group(pid);
                return RunEnd::Restart(ExitReason::BootTimeout);
            }
            true
        }
    };

    if booted {
        ctx.upstreams
            .add_counted(ctx.addr(), ctx.status.served_counter())
            .await;
        state.apply(WorkerEvent::BecameReady);
        record.ready();
        tokio::select! {
            status = &mut exit => {
                let status = status_or_lost(status);
                ctx.upstreams.remove(ctx.addr()).await;
                state.apply(WorkerEvent::Exited);
                let reason = ExitReason::of_unplanned(status);
                record.exited(status, Some(reason), "worker exited");
                cleanup_group(pid);
                return RunEnd::Restart(reason);
            }
            _ = stopping(stop) => {
                ctx.upstreams.remove(ctx.addr()).await;
            }
        }
    }

    state.apply(WorkerEvent::StopRequested);
    let status = stop_process(ctx, pid, exit, stop).await;
    state.apply(WorkerEvent::Exited);
    record.exited(status, None, "worker stopped");
    RunEnd::Stopped
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
