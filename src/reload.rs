//! Applying an edited config.yaml to a running forkyard (SIGHUP, `POST /reload`).
//!
//! The reload is transactional: the file is read and validated in full first; an
//! invalid file changes nothing (the errors are logged with their locations and
//! `forkyard_config_reloads_total{result="error"}` counts it). A valid file is
//! diffed against the running config: unchanged pools are not touched, a pool whose
//! only change is `workers` is scaled, and any other changed pool is replaced by a
//! rolling, readiness-gated rollout (see `Supervisor::roll`) that rolls back if a
//! new worker never becomes ready (`result="rolled_back"`).
//!
//! Changed `routes` are swapped in at once (the next request on every connection
//! uses them). Not applied without a restart (the reload is refused, result
//! `error`, and the log says so): adding or removing pools, and changing a pool's
//! `ports` or `bind`. Changes to `proxy`, `admin.listen` and `log` are ignored with
//! a warning that they need a restart. The admin token is applied: `admin.token`,
//! or `admin.token_file`, which is read again, so a rotated token file takes effect
//! at the next reload.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::admin::AdminAuth;
use crate::config::{self, Config, PoolConfig};
use crate::events;
use crate::metrics::Metrics;
use crate::proxy::Router;
use crate::supervisor::{Rollout, Supervisor};

/// What a reload did, as the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Ok,
    Error,
    RolledBack,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Error => "error",
            ReloadResult::RolledBack => "rolled_back",
        }
    }
}

/// `a` and `b` equal apart from `workers`.
fn same_but_workers(a: &PoolConfig, b: &PoolConfig) -> bool {
    let mut b = b.clone();
    b.workers = a.workers;
    *a == b
}

/// Re-read `current.source` and apply it. Returns the result and a one-line summary.
pub async fn reload(
    current: &mut Config,
    supervisor: &mut Supervisor,
    metrics: &Metrics,
    router: &ArcSwap<Router>,
    auth: &AdminAuth,
) -> (ReloadResult, String) {
    tracing::info!(event = events::RELOAD_START, file = %current.source.display(), "reload started");
    let started = std::time::Instant::now();
    let (result, summary) = apply(current, supervisor, router).await;
    auth.set(current.admin.token.clone());
    let duration_ms = started.elapsed().as_millis() as u64;
    metrics
        .config_reloads
        .with_label_values(&[result.as_str()])
        .inc();
    match result {
        ReloadResult::Ok => tracing::info!(
            event = events::RELOAD_FINISH,
            result = result.as_str(),
            duration_ms,
            "reload finished: {summary}"
        ),
        _ => tracing::warn!(
            event = events::RELOAD_FINISH,
            result = result.as_str(),
            duration_ms,
            "reload finished: {summary}"
        ),
    }
    (result, summary)
}

async fn apply(
    current: &mut Config,
    supervisor: &mut Supervisor,
    router: &ArcSwap<Router>,
) -> (ReloadResult, String) {
    let new = match config::load(&current.source) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors.0.iter() {
                tracing::error!("reload: {e}");
            }
            return (
                ReloadResult::Error,
                format!(
                    "{} problem(s) in {}; the running config is unchanged",
                    errors.0.len(),
                    current.source.display()
                ),
            );
        }
    };
    let names = |c: &Config| c.pools.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    if names(&new) != names(current) {
        return (
            ReloadResult::Error,
            format!(
                "adding, removing or reordering pools needs a restart (running: {:?}, file: {:?}); nothing changed",
                names(current),
                names(&new)
            ),
        );
    }
    let addressing = |c: &Config| {
        c.pools
            .iter()
            .map(|p| (p.ports, p.bind))
            .collect::<Vec<_>>()
    };
    if addressing(&new) != addressing(current) {
        return (
            ReloadResult::Error,
            "changing a pool's ports or bind needs a restart (the proxy's worker addresses are fixed at start); nothing changed".into(),
        );
    }
    if new.proxy != current.proxy
        || new.admin.listen != current.admin.listen
        || new.log != current.log
    {
        tracing::warn!(
            "reload: changes to proxy, admin.listen or log need a restart and are not applied"
        );
    }
    let token_changed = new.admin.token != current.admin.token;
    current.admin.token = new.admin.token.clone();
    current.admin.token_file = new.admin.token_file.clone();

    let mut changed = Vec::new();
    let mut rolled_back = Vec::new();
    // New routes (over the same pools) take effect at once, for the next request
    // on every connection; no connection is dropped.
    if new.routes != current.routes {
        router.store(Arc::new(Router::for_config(&new)));
        current.routes = new.routes.clone();
        changed.push("routes replaced".to_string());
    }
    for (old, fresh) in current.pools.iter_mut().zip(&new.pools) {
        if old == fresh {
            continue;
        }
        if same_but_workers(old, fresh) {
            match supervisor.scale(&fresh.name, fresh.workers.get()) {
                Ok(_) => {
                    *old = fresh.clone();
                    changed.push(format!("{}: scaled to {}", fresh.name, fresh.workers));
                }
                Err(e) => rolled_back.push(format!("{}: {e}", fresh.name)),
            }
            continue;
        }
        match supervisor.roll(&fresh.name, Arc::new(fresh.clone())).await {
            Rollout::Done => {
                *old = fresh.clone();
                changed.push(format!("{}: replaced", fresh.name));
            }
            Rollout::RolledBack => rolled_back.push(format!("{}: rolled back", fresh.name)),
        }
    }
    current.shutdown = new.shutdown.clone();
    current.hooks = new.hooks.clone();
    if !rolled_back.is_empty() {
        changed.extend(rolled_back);
        return (ReloadResult::RolledBack, changed.join("; "));
    }
    if token_changed {
        changed.push("admin token replaced".into());
    }
    if changed.is_empty() {
        changed.push("no pool changed".into());
    }
    (ReloadResult::Ok, changed.join("; "))
}
