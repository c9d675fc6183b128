//! The supervisor: one actor task per worker slot of every pool (see `worker.rs`),
//! and the stop channel through which forkyard's shutdown reaches them all.

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
pub use worker::StopMode;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::PoolConfig;
use crate::hooks::HookRunner;
use crate::proxy::upstreams::PoolUpstreams;
use crate::status::StatusBoard;

/// A running pool: its config and the proxy's view of its ready workers.
#[derive(Clone)]
pub struct PoolHandle {
    pub config: Arc<PoolConfig>,
    pub upstreams: Arc<PoolUpstreams>,
    pub crash_loop: Arc<CrashLoop>,
}

pub struct Supervisor {
    stop: watch::Sender<StopMode>,
    tasks: JoinSet<()>,
}

impl Supervisor {
    /// Start every slot of every pool. Must run inside the control runtime.
    pub fn start(pools: &[PoolHandle], hooks: HookRunner, board: &StatusBoard) -> Supervisor {
        let (stop, _) = watch::channel(StopMode::Run);
        let mut tasks = JoinSet::new();
        for pool in pools {
            let Some(pool_status) = board.pool(&pool.config.name) else {
                tracing::error!(pool = %pool.config.name, "pool missing from the status board; not started");
                continue;
            };
            for slot in 0..pool.config.workers.get() {
                let ctx = worker::WorkerCtx {
                    pool: pool.config.clone(),
                    slot,
                    upstreams: pool.upstreams.clone(),
                    crash_loop: pool.crash_loop.clone(),
                    metrics: hooks.metrics.clone(),
                    hooks: hooks.clone(),
                    status: pool_status.slot(slot, pool.config.slot_port(slot)),
                };
                tasks.spawn(worker::run(ctx, stop.subscribe()));
            }
        }
        Supervisor { stop, tasks }
    }

    /// A handle that can escalate a running stop to SIGKILL.
    pub fn killer(&self) -> impl Fn() + Send + 'static {
        let stop = self.stop.clone();
        move || {
            let _ = stop.send(StopMode::Kill);
        }
    }

    /// Stop every worker (signal, grace, SIGKILL) and wait until all have exited.
    pub async fn stop(mut self) {
        let _ = self.stop.send(StopMode::Graceful);
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "a worker task failed");
            }
        }
    }
}
