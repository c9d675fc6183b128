//! The supervisor: one actor task per worker slot of every pool (see `actor.rs`),
//! each with its own stop channel, through which scaling down, rolling
//! replacements and forkyard's shutdown reach them.
//!
//! - [`actor`]: one slot's life (spawn, ready, serve, stop, restart) and its one
//!   exit path; [`launch`] is the seam through which it touches processes.
//! - [`preload`]: a preload pool's launcher, behind the same seam: the pool's
//!   preloader imports the app once and forks the workers.
//! - [`state`], [`lifecycle`]: the slot's state machine, and the one call per step
//!   that records it in the log, the metrics and the status board.
//! - [`backoff`], [`crash_loop`], [`health`], [`recycle`], [`readiness`],
//!   [`hang`]: the policies, each reading the pool's current settings when it
//!   decides.
//!
//! Each pool has a *generation*: the settings new workers start with and the
//! launcher that starts them ([`launch::Processes::generation`]). A rolling reload
//! or restart makes a new one; for a preload pool that is a new preloader, which
//! lives as long as the actors that hold it.
//!
//! A slot ([`SlotId`]) keeps its number for its whole life. A rolling replacement
//! or a recycle starts the slot's new worker on a spare endpoint of the pool's
//! range, waits until it is ready, then retires the old one, so for a moment the
//! slot has two workers; both carry the slot's number, weight and hash identity.

mod actor;
pub(crate) mod backoff;
mod crash_loop;
#[cfg(test)]
mod fake;
mod hang;
mod health;
pub(crate) mod launch;
mod lifecycle;
pub(crate) mod preload;
mod readiness;
mod recycle;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use crash_loop::CrashLoop;
pub(crate) use recycle::RecycleRequest;

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use actor::StopMode;
use launch::Os;

use crate::config::{Bind, PoolConfig};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::process::ExitReason;
use crate::slot::{Endpoint, SlotId};
use crate::status::StatusBoard;

/// One running slot: its number, its stop channel (the actor's only source of stop
/// requests), its endpoint number and the generation it runs.
struct Slot {
    id: SlotId,
    stop: watch::Sender<StopMode>,
    port: u16,
}

/// `bind: inherit`, and every preload pool: forkyard's own listening socket for an
/// endpoint (TCP, or for a `bind: unix` preload pool a Unix socket at the slot's
/// path). Held by the actor for its whole life, so connections wait in the backlog
/// while the worker restarts.
fn slot_listener(config: &PoolConfig, port: u16) -> Option<Arc<std::os::fd::OwnedFd>> {
    let preload = config.preload.is_some();
    if config.bind != Bind::Inherit && !preload {
        return None;
    }
    let bound = match config.socket_path(port) {
        Some(path) if preload => {
            let (user, group) = config.post_fork_account();
            config
                .socket_dir
                .as_deref()
                .map_or(Ok(()), |dir| crate::sockets::prepare(dir, user, group))
                .and_then(|()| crate::sockets::clear_stale(&path))
                .and_then(|()| std::os::unix::net::UnixListener::bind(&path))
                .map(std::os::fd::OwnedFd::from)
        }
        _ => std::net::TcpListener::bind(("127.0.0.1", port)).map(std::os::fd::OwnedFd::from),
    };
    match bound {
        Ok(fd) => Some(Arc::new(fd)),
        Err(e) => {
            tracing::error!(pool = %config.name, port, error = %e, "cannot bind the slot's socket (bind: inherit, or a preload pool)");
            None
        }
    }
}

/// What new workers of a pool start with: its settings, and the launcher that
/// starts them (for a preload pool, the generation's own preloader).
#[derive(Clone)]
struct Generation {
    config: Arc<PoolConfig>,
    os: Os,
}

/// Why a request about a pool was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("no pool named {0:?}")]
    UnknownPool(String),
    #[error("pool {pool:?} can run 1 to {max} workers (its port range has {max} ports); asked for {asked}")]
    OutOfRange {
        pool: String,
        asked: usize,
        max: usize,
    },
}

/// A pool's worker count before and after a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scaled {
    pub(crate) from: usize,
    pub(crate) to: usize,
}

/// How a rolling replacement of one pool ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rollout {
    /// Every slot runs the new generation.
    Done,
    /// A new worker failed to become ready (in this slot): the slots already
    /// replaced were rolled back and the old generation keeps serving.
    RolledBack { slot: SlotId },
}

struct PoolSlots {
    pool: Arc<Pool>,
    crash_loop: Arc<CrashLoop>,
    /// The generation new slots start with.
    generation: Generation,
    slots: Vec<Slot>,
    /// Slots told to stop; their endpoints stay taken until their actor ends.
    retiring: Vec<Slot>,
}

impl PoolSlots {
    /// An endpoint of the pool's range not used by a live or still-running slot.
    fn free_port(&mut self) -> Option<u16> {
        self.retiring.retain(|s| !s.stop.is_closed());
        let used: Vec<u16> = self
            .slots
            .iter()
            .chain(&self.retiring)
            .map(|s| s.port)
            .collect();
        let ports = self.generation.config.ports;
        (ports.start..=ports.end).find(|p| !used.contains(p))
    }
}

pub(crate) struct Supervisor {
    os: Os,
    metrics: Arc<Metrics>,
    /// Each actor has its entry here while it runs (see `lifecycle`).
    board: Arc<StatusBoard>,
    pools: Vec<PoolSlots>,
    /// Every actor task, live or retiring, so shutdown waits for all of them.
    tasks: JoinSet<()>,
    /// Every stop channel ever handed out; shutdown and kill reach them all.
    all_stops: Arc<Mutex<Vec<watch::Sender<StopMode>>>>,
    /// Workers ask here to be replaced (recycling); the control loop reads it.
    recycle_tx: mpsc::UnboundedSender<RecycleRequest>,
    recycle_rx: Option<mpsc::UnboundedReceiver<RecycleRequest>>,
}

impl Supervisor {
    /// Start every slot of every pool. Must run inside the control runtime.
    pub(crate) fn start(
        pools: &[(Arc<Pool>, Arc<CrashLoop>)],
        os: Os,
        metrics: Arc<Metrics>,
        board: Arc<StatusBoard>,
    ) -> Supervisor {
        let (recycle_tx, recycle_rx) = mpsc::unbounded_channel();
        let launchers: Vec<Os> = pools
            .iter()
            .map(|(pool, _)| os.clone().generation(&pool.settings()))
            .collect();
        let mut sup = Supervisor {
            os,
            metrics,
            recycle_tx,
            recycle_rx: Some(recycle_rx),
            board,
            pools: pools
                .iter()
                .zip(launchers)
                .map(|((pool, crash_loop), os)| PoolSlots {
                    generation: Generation {
                        config: pool.settings(),
                        os,
                    },
                    pool: pool.clone(),
                    crash_loop: crash_loop.clone(),
                    slots: Vec::new(),
                    retiring: Vec::new(),
                })
                .collect(),
            tasks: JoinSet::new(),
            all_stops: Arc::new(Mutex::new(Vec::new())),
        };
        for i in 0..sup.pools.len() {
            let n = sup.pools[i].generation.config.workers.get();
            sup.grow(i, n);
        }
        sup
    }

    /// Start an actor for slot `id` of pool `i` running `generation` on endpoint
    /// number `port`.
    fn spawn_slot(
        &mut self,
        i: usize,
        id: SlotId,
        generation: Generation,
        port: u16,
        boot_report: Option<oneshot::Sender<bool>>,
    ) -> Slot {
        let Generation {
            config: generation,
            os,
        } = generation;
        // Forget actors that have ended.
        while self.tasks.try_join_next().is_some() {}
        self.all_stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !s.is_closed());
        let p = &self.pools[i];
        let (stop, rx) = watch::channel(StopMode::Run);
        let listener = slot_listener(&generation, port);
        let pool_status = self.board.add_pool(&p.pool.name);
        let (pool, crash_loop) = (p.pool.clone(), p.crash_loop.clone());
        let (recycle, metrics) = (self.recycle_tx.clone(), self.metrics.clone());
        let endpoint = Endpoint::of(&generation, port);
        let make = move |boot_report| actor::WorkerCtx {
            listener: listener.clone(),
            status: pool_status.attach(id.index(), port),
            pool_status: pool_status.clone(),
            endpoint: endpoint.clone(),
            pool: pool.clone(),
            generation: generation.clone(),
            slot: id,
            port,
            boot_report: Mutex::new(boot_report),
            recycle: recycle.clone(),
            os: os.clone(),
            crash_loop: crash_loop.clone(),
            metrics: metrics.clone(),
        };
        self.tasks
            .spawn(actor::run_supervised(make, boot_report, rx));
        self.all_stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stop.clone());
        Slot { id, stop, port }
    }

    /// Start slots until pool `i` has `n`.
    fn grow(&mut self, i: usize, n: usize) {
        while self.pools[i].slots.len() < n {
            let id = SlotId(self.pools[i].slots.len());
            let Some(port) = self.pools[i].free_port() else {
                tracing::error!(pool = %self.pools[i].pool.name, "no free port left in the pool's range");
                return;
            };
            let generation = self.pools[i].generation.clone();
            let s = self.spawn_slot(i, id, generation, port, None);
            self.pools[i].slots.push(s);
        }
    }

    /// Tell `slot` to stop gracefully (recorded as `reason`) and keep its endpoint
    /// reserved until it has.
    fn retire(&mut self, i: usize, slot: Slot, reason: ExitReason) {
        let _ = slot.stop.send(StopMode::Graceful(reason));
        self.pools[i].retiring.push(slot);
    }

    fn index(&self, pool: &str) -> Result<usize, PoolError> {
        self.pools
            .iter()
            .position(|p| &*p.pool.name == pool)
            .ok_or_else(|| PoolError::UnknownPool(pool.to_string()))
    }

    /// The worker counts of every pool, in config order.
    pub(crate) fn sizes(&self) -> Vec<(String, usize)> {
        self.pools
            .iter()
            .map(|p| (p.pool.name.to_string(), p.slots.len()))
            .collect()
    }

    /// Run `workers` workers in `pool`: new slots start at once; removed slots (the
    /// highest) leave the load balancer and stop gracefully in the background.
    pub(crate) fn scale(&mut self, pool: &str, workers: usize) -> Result<Scaled, PoolError> {
        let i = self.index(pool)?;
        let max = self.pools[i].generation.config.ports.len();
        if workers == 0 || workers > max {
            return Err(PoolError::OutOfRange {
                pool: pool.to_string(),
                asked: workers,
                max,
            });
        }
        let from = self.pools[i].slots.len();
        if workers > from {
            self.grow(i, workers);
        } else {
            let removed: Vec<Slot> = self.pools[i].slots.drain(workers..).collect();
            for slot in removed {
                self.retire(i, slot, ExitReason::ScaleDown);
            }
        }
        if workers != from {
            tracing::info!(pool, from, to = workers, "pool scaled");
        }
        Ok(Scaled { from, to: workers })
    }

    /// One worker more (`delta` 1) or less (-1) in every pool, within bounds.
    pub(crate) fn scale_all(&mut self, delta: isize) {
        for (name, n) in self.sizes() {
            let target = n.saturating_add_signed(delta);
            if let Err(e) = self.scale(&name, target) {
                tracing::warn!(error = %e, "scale request ignored");
            }
        }
    }

    /// The settings `pool` starts its workers with.
    pub(crate) fn generation(&self, pool: &str) -> Result<Arc<PoolConfig>, PoolError> {
        Ok(self.pools[self.index(pool)?].generation.config.clone())
    }

    /// Replace every worker of `pool` by one of a new generation with settings
    /// `new`, one slot at a time: each new worker must become ready (and pass
    /// `post_spawn`) before the old one of its slot is drained and stopped. If a new
    /// worker fails, the slots already replaced are rolled back the same way and
    /// the old generation stays. A preload pool's new generation has a new
    /// preloader (even when `new` is the same settings: a restart), which imports
    /// the code as it is now; the old preloader stops when its last worker has.
    pub(crate) async fn roll(
        &mut self,
        pool: &str,
        new: Arc<PoolConfig>,
    ) -> Result<Rollout, PoolError> {
        let i = self.index(pool)?;
        let old = self.pools[i].generation.clone();
        let new = Generation {
            os: self.os.clone().generation(&new),
            config: new,
        };
        for k in 0..self.pools[i].slots.len() {
            if !self
                .replace_slot(i, k, new.clone(), ExitReason::Reload)
                .await
            {
                tracing::warn!(
                    pool,
                    worker = k,
                    "new worker failed to become ready; rolling back"
                );
                for j in (0..k).rev() {
                    if !self
                        .replace_slot(i, j, old.clone(), ExitReason::Reload)
                        .await
                    {
                        tracing::error!(pool, worker = j, "rollback of this slot failed too; it keeps restarting with the old config");
                    }
                }
                return Ok(Rollout::RolledBack { slot: SlotId(k) });
            }
        }
        self.pools[i].generation = new;
        // The failures on record were the old generation's: every slot now runs a
        // ready worker of the new one. (An old worker that fails after this was
        // already told to stop, and an actor told to stop records no failure.)
        self.pools[i].crash_loop.reset();
        Ok(Rollout::Done)
    }

    /// Start a worker for slot `k` with `generation` on a spare endpoint; once it is
    /// ready, retire the old one (recorded as `reason`). `false` (and the new one
    /// removed, as `reload`) if it never got ready.
    async fn replace_slot(
        &mut self,
        i: usize,
        k: usize,
        generation: Generation,
        reason: ExitReason,
    ) -> bool {
        let Some(port) = self.pools[i].free_port() else {
            tracing::error!(pool = %self.pools[i].pool.name, "no spare port in the pool's range for a rolling replacement");
            return false;
        };
        let (tx, rx) = oneshot::channel();
        let id = self.pools[i].slots[k].id;
        let fresh = self.spawn_slot(i, id, generation, port, Some(tx));
        if rx.await.unwrap_or(false) {
            let old = std::mem::replace(&mut self.pools[i].slots[k], fresh);
            self.retire(i, old, reason);
            true
        } else {
            self.retire(i, fresh, ExitReason::Reload);
            false
        }
    }

    /// The stream of recycle requests (taken once by the control loop).
    pub(crate) fn take_recycle_requests(&mut self) -> mpsc::UnboundedReceiver<RecycleRequest> {
        self.recycle_rx
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1)
    }

    /// Replace one worker that asked for it: its replacement starts first and must
    /// be ready before it is drained and stopped.
    pub(crate) async fn recycle(&mut self, req: RecycleRequest) {
        let Ok(i) = self.index(&req.pool) else { return };
        let k = req.slot.index();
        // The slot may have been replaced or removed since it asked.
        if self.pools[i].slots.get(k).map(|s| s.port) != Some(req.port) {
            return;
        }
        let generation = self.pools[i].generation.clone();
        if self.replace_slot(i, k, generation, req.reason).await {
            self.metrics.restart(&req.pool, req.reason);
            tracing::info!(pool = %req.pool, worker = k, reason = req.reason.as_str(), "worker recycled");
        } else {
            tracing::warn!(pool = %req.pool, worker = k, "the replacement did not become ready; the worker keeps serving");
        }
    }

    /// A handle that can escalate a running stop to SIGKILL.
    pub(crate) fn killer(&self) -> impl Fn() + Send + 'static {
        let stops = self.all_stops.clone();
        move || {
            for stop in stops.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = stop.send(StopMode::Kill);
            }
        }
    }

    /// Stop every worker (signal, grace, SIGKILL) and wait until all have exited.
    pub(crate) async fn stop(mut self) {
        for stop in self
            .all_stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // A slot already told to Kill keeps that.
            stop.send_if_modified(|m| {
                if *m == StopMode::Run {
                    *m = StopMode::Graceful(ExitReason::Shutdown);
                    true
                } else {
                    false
                }
            });
        }
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "a worker task failed");
            }
        }
        // The generations' launchers go with the pools; then their preloaders stop.
        self.pools.clear();
        self.os.finish().await;
    }
}
