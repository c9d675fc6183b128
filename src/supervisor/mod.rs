//! The supervisor: one actor task per worker slot of every pool (see `worker.rs`),
//! each with its own stop channel, through which scaling down and forkyard's
//! shutdown reach them.

mod backoff;
mod crash_loop;
mod health;
mod lifecycle;
mod readiness;
mod state;
mod worker;

pub use backoff::Backoff;
pub use crash_loop::CrashLoop;
pub use readiness::probe_once;
pub use state::{WorkerEvent, WorkerState};
pub use worker::{RecycleRequest, StopMode};

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{Bind, PoolConfig};
use crate::hooks::HookRunner;
use crate::process::ExitReason;
use crate::proxy::upstreams::PoolUpstreams;
use crate::status::StatusBoard;

/// A running pool: its config and the proxy's view of its ready workers.
#[derive(Clone)]
pub struct PoolHandle {
    pub config: Arc<PoolConfig>,
    pub upstreams: Arc<PoolUpstreams>,
    pub crash_loop: Arc<CrashLoop>,
}

/// One slot: its stop channel (the actor's only source of stop requests) and port.
struct Slot {
    stop: watch::Sender<StopMode>,
    port: u16,
}

/// `bind: inherit`: forkyard's own listening socket for a slot's port. Held by the
/// actor for its whole life, so connections wait in the backlog while the worker
/// restarts.
fn slot_listener(config: &PoolConfig, port: u16) -> Option<Arc<std::net::TcpListener>> {
    if config.bind != Bind::Inherit {
        return None;
    }
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            tracing::error!(pool = %config.name, port, error = %e, "cannot bind the slot's socket for bind: inherit");
            None
        }
    }
}

/// Why a scale request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("no pool named {0:?}")]
    UnknownPool(String),
    #[error("pool {pool:?} can run 1 to {max} workers (its port range has {max} ports); asked for {asked}")]
    OutOfRange {
        pool: String,
        asked: usize,
        max: usize,
    },
}

/// How a rolling replacement of one pool ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// Every slot runs the new config.
    Done,
    /// A new worker failed to become ready: the new generation was removed and the
    /// old one keeps serving.
    RolledBack,
}

struct PoolSlots {
    handle: PoolHandle,
    slots: Vec<Slot>,
    /// Slots told to stop; their ports stay taken until their actor ends.
    retiring: Vec<Slot>,
}

impl PoolSlots {
    /// A port of the pool's range not used by a live or still-running slot.
    fn free_port(&mut self, config: &PoolConfig) -> Option<u16> {
        self.retiring.retain(|s| !s.stop.is_closed());
        let used: Vec<u16> = self
            .slots
            .iter()
            .chain(&self.retiring)
            .map(|s| s.port)
            .collect();
        (config.ports.start..=config.ports.end).find(|p| !used.contains(p))
    }
}

pub struct Supervisor {
    hooks: HookRunner,
    /// Each actor has its entry here while it runs (see `lifecycle`).
    board: Arc<StatusBoard>,
    pools: Vec<PoolSlots>,
    /// Every actor task, live or retiring, so shutdown waits for all of them.
    tasks: JoinSet<()>,
    /// Every stop channel ever handed out; shutdown and kill reach them all.
    all_stops: Arc<Mutex<Vec<watch::Sender<StopMode>>>>,
    /// Workers ask here to be replaced (recycling); the server loop reads it.
    recycle_tx: mpsc::UnboundedSender<RecycleRequest>,
    recycle_rx: Option<mpsc::UnboundedReceiver<RecycleRequest>>,
}

impl Supervisor {
    /// Start every slot of every pool. Must run inside the control runtime.
    pub fn start(pools: &[PoolHandle], hooks: HookRunner, board: &Arc<StatusBoard>) -> Supervisor {
        let (recycle_tx, recycle_rx) = mpsc::unbounded_channel();
        let mut sup = Supervisor {
            recycle_tx,
            recycle_rx: Some(recycle_rx),
            hooks,
            board: board.clone(),
            pools: pools
                .iter()
                .map(|p| PoolSlots {
                    handle: p.clone(),
                    slots: Vec::new(),
                    retiring: Vec::new(),
                })
                .collect(),
            tasks: JoinSet::new(),
            all_stops: Arc::new(Mutex::new(Vec::new())),
        };
        for i in 0..sup.pools.len() {
            let n = sup.pools[i].handle.config.workers.get();
            sup.grow(i, n);
        }
        sup
    }

    /// Start an actor for `slot` of pool `i` with `config` on `port`.
    fn spawn_slot(
        &mut self,
        i: usize,
        slot: usize,
        config: Arc<PoolConfig>,
        port: u16,
        boot_report: Option<oneshot::Sender<bool>>,
    ) -> Slot {
        // Forget actors that have ended.
        while self.tasks.try_join_next().is_some() {}
        self.all_stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !s.is_closed());
        let handle = &self.pools[i].handle;
        let (stop, rx) = watch::channel(StopMode::Run);
        let listener = slot_listener(&config, port);
        let pool_status = self.board.add_pool(&handle.config.name);
        let (upstreams, crash_loop) = (handle.upstreams.clone(), handle.crash_loop.clone());
        let (recycle, hooks) = (self.recycle_tx.clone(), self.hooks.clone());
        let make = move |boot_report| worker::WorkerCtx {
            listener: listener.clone(),
            status: pool_status.attach(slot, port),
            pool_status: pool_status.clone(),
            addr: crate::proxy::WorkerAddr::of_slot(&config, port),
            pool: config.clone(),
            slot,
            port,
            boot_report: Mutex::new(boot_report),
            recycle: recycle.clone(),
            upstreams: upstreams.clone(),
            crash_loop: crash_loop.clone(),
            metrics: hooks.metrics.clone(),
            hooks: hooks.clone(),
        };
        self.tasks
            .spawn(worker::run_supervised(make, boot_report, rx));
        self.all_stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stop.clone());
        Slot { stop, port }
    }

    /// Start slots until pool `i` has `n`.
    fn grow(&mut self, i: usize, n: usize) {
        let config = self.pools[i].handle.config.clone();
        while self.pools[i].slots.len() < n {
            let slot = self.pools[i].slots.len();
            let Some(port) = self.pools[i].free_port(&config) else {
                tracing::error!(pool = %config.name, "no free port left in the pool's range");
                return;
            };
            let s = self.spawn_slot(i, slot, config.clone(), port, None);
            self.pools[i].slots.push(s);
        }
    }

    /// Tell `slot` to stop gracefully (recorded as `reason`) and keep its port
    /// reserved until it has.
    fn retire(&mut self, i: usize, slot: Slot, reason: ExitReason) {
        let _ = slot.stop.send(StopMode::Graceful(reason));
        self.pools[i].retiring.push(slot);
    }

    fn index(&self, pool: &str) -> Result<usize, ScaleError> {
        self.pools
            .iter()
            .position(|p| p.handle.config.name == pool)
            .ok_or_else(|| ScaleError::UnknownPool(pool.to_string()))
    }

    /// The worker counts of every pool, in config order.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.pools
            .iter()
            .map(|p| (p.handle.config.name.clone(), p.slots.len()))
            .collect()
    }

    /// Run `workers` workers in `pool`: new slots start at once; removed slots (the
    /// highest) leave the load balancer and stop gracefully in the background.
    pub fn scale(&mut self, pool: &str, workers: usize) -> Result<(usize, usize), ScaleError> {
        let i = self.index(pool)?;
        let max = self.pools[i].handle.config.ports.len();
        if workers == 0 || workers > max {
            return Err(ScaleError::OutOfRange {
                pool: pool.to_string(),
                asked: workers,
                max,
            });
        }
        let before = self.pools[i].slots.len();
        if workers > before {
            self.grow(i, workers);
        } else {
            let removed: Vec<Slot> = self.pools[i].slots.drain(workers..).collect();
            for slot in removed {
                self.retire(i, slot, ExitReason::ScaleDown);
            }
        }
        tracing::info!(pool, from = before, to = workers, "pool scaled");
        Ok((before, workers))
    }

    /// One worker more (`delta` 1) or less (-1) in every pool, within bounds.
    pub fn scale_all(&mut self, delta: isize) {
        for (name, n) in self.sizes() {
            let target = n.saturating_add_signed(delta);
            if let Err(e) = self.scale(&name, target) {
                tracing::warn!(error = %e, "scale request ignored");
            }
        }
    }

    /// The config pool `pool` currently runs.
    pub fn pool_config(&self, pool: &str) -> Option<Arc<PoolConfig>> {
        let i = self.index(pool).ok()?;
        Some(self.pools[i].handle.config.clone())
    }

    /// Replace every worker of `pool` by one running `new`, one at a time: each new
    /// worker must become ready (and pass `post_spawn`) before the old one of its
    /// slot is drained and stopped. If a new worker fails, the slots already
    /// replaced are rolled back the same way and the old config stays.
    pub async fn roll(&mut self, pool: &str, new: Arc<PoolConfig>) -> Rollout {
        let Ok(i) = self.index(pool) else {
            return Rollout::RolledBack;
        };
        let old = self.pools[i].handle.config.clone();
        let n = self.pools[i].slots.len().min(new.workers.get());
        for k in 0..n {
            if !self
                .replace_slot(i, k, new.clone(), ExitReason::Reload)
                .await
            {
                tracing::warn!(
                    pool,
                    slot = k,
                    "new worker failed to become ready; rolling back"
                );
                for j in (0..k).rev() {
                    if !self
                        .replace_slot(i, j, old.clone(), ExitReason::Reload)
                        .await
                    {
                        tracing::error!(pool, slot = j, "rollback of this slot failed too; it keeps restarting with the old config");
                    }
                }
                return Rollout::RolledBack;
            }
        }
        self.pools[i].handle.config = new.clone();
        // A changed worker count is applied after the replacement.
        let _ = self.scale(pool, new.workers.get().min(new.ports.len()));
        Rollout::Done
    }

    /// Start a worker for slot `k` with `config` on a spare port; once it is ready,
    /// retire the old one (recorded as `reason`). `false` (and the new one removed,
    /// as `reload`) if it never got ready.
    async fn replace_slot(
        &mut self,
        i: usize,
        k: usize,
        config: Arc<PoolConfig>,
        reason: ExitReason,
    ) -> bool {
        let Some(port) = self.pools[i].free_port(&config) else {
            tracing::error!(pool = %config.name, "no spare port in the pool's range for a rolling replacement");
            return false;
        };
        let (tx, rx) = oneshot::channel();
        let fresh = self.spawn_slot(i, k, config, port, Some(tx));
        if rx.await.unwrap_or(false) {
            let old = std::mem::replace(&mut self.pools[i].slots[k], fresh);
            self.retire(i, old, reason);
            true
        } else {
            self.retire(i, fresh, ExitReason::Reload);
            false
        }
    }

    /// The stream of recycle requests (taken once by the server loop).
    pub fn take_recycle_requests(&mut self) -> mpsc::UnboundedReceiver<RecycleRequest> {
        self.recycle_rx
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1)
    }

    /// Replace one worker that asked for it: its replacement starts first and must
    /// be ready before it is drained and stopped.
    pub async fn recycle(&mut self, req: RecycleRequest) {
        let Ok(i) = self.index(&req.pool) else { return };
        // The slot may have been replaced or removed since it asked.
        if self.pools[i].slots.get(req.slot).map(|s| s.port) != Some(req.port) {
            return;
        }
        let config = self.pools[i].handle.config.clone();
        if self.replace_slot(i, req.slot, config, req.reason).await {
            self.hooks.metrics.restart(&req.pool, req.reason);
            tracing::info!(pool = %req.pool, worker = req.slot, reason = req.reason.as_str(), "worker recycled");
        } else {
            tracing::warn!(pool = %req.pool, worker = req.slot, "the replacement did not become ready; the worker keeps serving");
        }
    }

    /// A handle that can escalate a running stop to SIGKILL.
    pub fn killer(&self) -> impl Fn() + Send + 'static {
        let stops = self.all_stops.clone();
        move || {
            for stop in stops.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = stop.send(StopMode::Kill);
            }
        }
    }

    /// Stop every worker (signal, grace, SIGKILL) and wait until all have exited.
    pub async fn stop(mut self) {
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
    }
}
