//! The supervisor: one actor task per worker slot of every pool (see `worker.rs`),
//! each with its own stop channel, through which scaling down and forkyard's
//! shutdown reach them.

mod backoff;
mod crash_loop;
mod health;
mod readiness;
mod state;
mod worker;

pub use backoff::Backoff;
pub use crash_loop::CrashLoop;
pub use readiness::probe_once;
pub use state::{WorkerEvent, WorkerState};
pub use worker::StopMode;

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::PoolConfig;
use crate::hooks::HookRunner;
use crate::proxy::upstreams::PoolUpstreams;

/// A running pool: its config and the proxy's view of its ready workers.
#[derive(Clone)]
pub struct PoolHandle {
    pub config: Arc<PoolConfig>,
    pub upstreams: Arc<PoolUpstreams>,
    pub crash_loop: Arc<CrashLoop>,
}

/// One live slot: its stop channel (the actor's only source of stop requests).
struct Slot {
    stop: watch::Sender<StopMode>,
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

pub struct Supervisor {
    hooks: HookRunner,
    pools: Vec<(PoolHandle, Vec<Slot>)>,
    /// Every actor task, live or retiring, so shutdown waits for all of them.
    tasks: JoinSet<()>,
    /// Every stop channel ever handed out; shutdown and kill reach them all.
    all_stops: Arc<Mutex<Vec<watch::Sender<StopMode>>>>,
}

impl Supervisor {
    /// Start every slot of every pool. Must run inside the control runtime.
    pub fn start(pools: &[PoolHandle], hooks: HookRunner) -> Supervisor {
        let mut sup = Supervisor {
            hooks,
            pools: pools.iter().map(|p| (p.clone(), Vec::new())).collect(),
            tasks: JoinSet::new(),
            all_stops: Arc::new(Mutex::new(Vec::new())),
        };
        for i in 0..sup.pools.len() {
            let n = sup.pools[i].0.config.workers.get();
            sup.grow(i, n);
        }
        sup
    }

    /// Start slots until pool `i` has `n`.
    fn grow(&mut self, i: usize, n: usize) {
        let (pool, slots) = &mut self.pools[i];
        while slots.len() < n {
            let (stop, rx) = watch::channel(StopMode::Run);
            let ctx = worker::WorkerCtx {
                pool: pool.config.clone(),
                slot: slots.len(),
                upstreams: pool.upstreams.clone(),
                crash_loop: pool.crash_loop.clone(),
                metrics: self.hooks.metrics.clone(),
                hooks: self.hooks.clone(),
            };
            self.tasks.spawn(worker::run(ctx, rx));
            self.all_stops
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(stop.clone());
            slots.push(Slot { stop });
        }
    }

    /// The worker counts of every pool, in config order.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        self.pools
            .iter()
            .map(|(p, slots)| (p.config.name.clone(), slots.len()))
            .collect()
    }

    /// Run `workers` workers in `pool`: new slots start at once; removed slots (the
    /// highest) leave the load balancer and stop gracefully in the background.
    pub fn scale(&mut self, pool: &str, workers: usize) -> Result<(usize, usize), ScaleError> {
        let i = self
            .pools
            .iter()
            .position(|(p, _)| p.config.name == pool)
            .ok_or_else(|| ScaleError::UnknownPool(pool.to_string()))?;
        let max = self.pools[i].0.config.ports.len();
        if workers == 0 || workers > max {
            return Err(ScaleError::OutOfRange {
                pool: pool.to_string(),
                asked: workers,
                max,
            });
        }
        let before = self.pools[i].1.len();
        if workers > before {
            self.grow(i, workers);
        } else {
            for slot in self.pools[i].1.drain(workers..) {
                let _ = slot.stop.send(StopMode::Graceful);
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
                    *m = StopMode::Graceful;
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
