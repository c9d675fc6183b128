//! The control object: the one place that changes what runs. It owns the running
//! config and the supervisor, and handles the events that change them — reload
//! (SIGHUP, `POST /reload`, a watched file), scale (`POST /pools/<name>/scale`,
//! SIGTTIN/SIGTTOU), restart (`POST /pools/<name>/restart`), recycle requests —
//! each with a typed reply that `admin` renders.
//!
//! # Reload
//!
//! A reload is transactional. The file is read and validated in full first; an
//! invalid file changes nothing. A valid one is compared key by key with the
//! running config ([`plan`]): if any changed key needs a restart, the reload is
//! refused and names the keys, and nothing changes. Otherwise every change is
//! applied, each by its one owner: the pools' settings ([`Pool::replace`]), the
//! proxy settings, the router, the admin token, the access log, the file watch.
//! Pools whose process-defining keys changed are replaced worker by worker
//! ([`Supervisor::roll`]); if a new worker never becomes ready the pool is rolled
//! back, settings included (`result="rolled_back"`). Every reload rolls each preload
//! pool onto a new preloader, changed or not, so the code on disk goes live.

pub(crate) mod plan;

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::oneshot;

use crate::auth::AdminAuth;
use crate::config::{self, Config, LogFormat, Phase};
use crate::events;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::access_log::AccessLog;
use crate::proxy::{ProxySettings, Router};
use crate::status::StatusBoard;
use crate::supervisor::{PoolError, RecycleRequest, Rollout, Scaled, Supervisor};
use crate::watch::ConfigWatch;
use plan::Class;

/// A request that changes something, from the admin listener.
pub(crate) enum Command {
    /// Re-read config.yaml and apply it (as SIGHUP does).
    Reload {
        reply: oneshot::Sender<ReloadReport>,
    },
    Scale {
        pool: String,
        workers: usize,
        reply: oneshot::Sender<Result<Scaled, PoolError>>,
    },
    /// Replace every worker of a pool, one at a time.
    Restart {
        pool: String,
        reply: oneshot::Sender<Result<Rollout, PoolError>>,
    },
}

/// How a reload ended: the `result` label, and what `POST /reload` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadResult {
    /// Every change was applied.
    Applied,
    /// The file has problems; nothing changed.
    Invalid,
    /// A changed key needs a restart; nothing changed.
    Refused,
    /// A new worker did not become ready; its pool was rolled back.
    RolledBack,
}

impl ReloadResult {
    /// The `result` label of `forkyard_config_reloads_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ReloadResult::Applied => "ok",
            ReloadResult::Invalid | ReloadResult::Refused => "error",
            ReloadResult::RolledBack => "rolled_back",
        }
    }
}

/// What a reload did, item by item.
#[derive(Debug, Clone)]
pub(crate) struct ReloadReport {
    pub(crate) result: ReloadResult,
    pub(crate) items: Vec<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.result.label(), self.items.join("; "))
    }
}

pub(crate) struct Control {
    pub(crate) config: Config,
    pub(crate) supervisor: Supervisor,
    pub(crate) pools: Vec<Arc<Pool>>,
    pub(crate) router: Arc<ArcSwap<Router>>,
    pub(crate) proxy_settings: Arc<ArcSwap<ProxySettings>>,
    pub(crate) access_log: Arc<ArcSwapOption<AccessLog>>,
    pub(crate) auth: Arc<AdminAuth>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) board: Arc<StatusBoard>,
    /// Set while `reload.watch` (or `run --watch`) is on.
    pub(crate) watch: Option<ConfigWatch>,
    /// `run --watch` was given: the file is watched whatever it says.
    pub(crate) cli_watch: bool,
}

impl Control {
    /// Carry out one admin command and answer it.
    pub(crate) async fn handle(&mut self, command: Command) {
        match command {
            Command::Reload { reply } => {
                let _ = reply.send(self.reload().await);
            }
            Command::Scale {
                pool,
                workers,
                reply,
            } => {
                let _ = reply.send(self.supervisor.scale(&pool, workers));
            }
            Command::Restart { pool, reply } => {
                let _ = reply.send(self.restart(&pool).await);
            }
        }
    }

    /// Replace every worker of `pool` with a new one of the same settings (for a
    /// preload pool, forked from a new preloader that imports the code as it is now).
    pub(crate) async fn restart(&mut self, pool: &str) -> Result<Rollout, PoolError> {
        let generation = self.supervisor.generation(pool)?;
        tracing::info!(pool, "rolling restart");
        let rollout = self.supervisor.roll(pool, generation).await?;
        tracing::info!(pool, ?rollout, "rolling restart finished");
        Ok(rollout)
    }

    /// A worker asked to be recycled.
    pub(crate) async fn recycle(&mut self, request: RecycleRequest) {
        self.supervisor.recycle(request).await
    }

    /// Start or stop watching the config file, as `reload.watch` says.
    pub(crate) fn set_watch(&mut self, on: bool) {
        if !on {
            self.watch = None;
            return;
        }
        if self.watch.is_some() {
            return;
        }
        match ConfigWatch::start(&self.config.source) {
            Ok(w) => {
                tracing::info!(file = %self.config.source.display(), "watching the config file for changes");
                self.watch = Some(w);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP instead")
            }
        }
    }

    /// Re-read the config file and apply it.
    pub(crate) async fn reload(&mut self) -> ReloadReport {
        tracing::info!(event = events::RELOAD_START, file = %self.config.source.display(), "reload started");
        let started = std::time::Instant::now();
        let report = self.apply().await;
        let duration_ms = started.elapsed().as_millis() as u64;
        self.metrics
            .config_reloads
            .with_label_values(&[report.result.label()])
            .inc();
        let summary = report.items.join("; ");
        match report.result {
            ReloadResult::Applied => tracing::info!(
                event = events::RELOAD_FINISH,
                result = report.result.label(),
                duration_ms,
                "reload finished: {summary}"
            ),
            _ => tracing::warn!(
                event = events::RELOAD_FINISH,
                result = report.result.label(),
                duration_ms,
                "reload finished: {summary}"
            ),
        }
        report
    }

    async fn apply(&mut self) -> ReloadReport {
        let report = |result, items| ReloadReport { result, items };
        let mut new = match config::load(&self.config.source) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors.0.iter() {
                    tracing::error!("reload: {e}");
                }
                return report(
                    ReloadResult::Invalid,
                    vec![format!(
                        "{} problem(s) in {}; the running config is unchanged",
                        errors.0.len(),
                        self.config.source.display()
                    )],
                );
            }
        };
        // `run --watch` holds whatever the file says.
        new.watch |= self.cli_watch;
        let plan = plan::plan(&self.config, &new);
        let refused: Vec<String> = plan
            .refused()
            .map(|c| format!("{}: changing it needs a restart of forkyard", c.key))
            .collect();
        if !refused.is_empty() {
            let mut items = refused;
            items.push("nothing changed".into());
            return report(ReloadResult::Refused, items);
        }
        // A preload pool is rolled onto a new preloader by every reload, changed or
        // not: that is how new code goes live.
        let preload = |c: &Config| c.pools.iter().any(|p| p.preload.is_some());
        if plan.changes.is_empty() && !preload(&new) {
            return report(ReloadResult::Applied, vec!["no change".into()]);
        }
        let mut items = Vec::new();
        let mut rolled_back = false;
        for change in &plan.changes {
            if change.class == Class::AtOnce
                && !change.key.starts_with("pools.")
                && !self.apply_global(&change.key, &new)
            {
                items.push(format!("{} applied", change.key));
            }
        }
        if new.routes != self.config.routes {
            items.push("routes replaced".into());
        }
        if new.admin.token != self.config.admin.token {
            items.push("admin token replaced".into());
        }
        self.declare_hooks(&new);

        for i in 0..self.pools.len() {
            let (old, fresh) = (self.config.pools[i].clone(), new.pools[i].clone());
            let preloaded = fresh.preload.is_some();
            if old == fresh && !preloaded {
                continue;
            }
            let (pool, name) = (self.pools[i].clone(), fresh.name.clone());
            let fresh = Arc::new(fresh);
            pool.replace(fresh.clone());
            let workers = fresh.workers.get();
            if plan.rolls(&name) || preloaded {
                let current = self.supervisor.sizes()[i].1;
                if workers < current {
                    let _ = self.supervisor.scale(&name, workers);
                }
                match self.supervisor.roll(&name, fresh.clone()).await {
                    Ok(Rollout::Done) if preloaded => {
                        items.push(format!("{name}: replaced from a new preloader"))
                    }
                    Ok(Rollout::Done) => items.push(format!("{name}: replaced")),
                    Ok(Rollout::RolledBack { slot }) => {
                        pool.replace(Arc::new(old.clone()));
                        new.pools[i] = old;
                        rolled_back = true;
                        items.push(format!(
                            "{name}: rolled back (the new worker of slot {slot} did not become ready); the old workers keep serving"
                        ));
                        continue;
                    }
                    Err(e) => {
                        items.push(format!("{name}: {e}"));
                        continue;
                    }
                }
            } else {
                for change in plan
                    .changes
                    .iter()
                    .filter(|c| c.key.starts_with(&format!("pools.{name}.")))
                    .filter(|c| !c.key.ends_with(".workers"))
                {
                    items.push(format!("{} applied", change.key));
                }
            }
            if let Ok(s) = self.supervisor.scale(&name, workers) {
                if s.from != s.to {
                    items.push(format!("{name}: scaled to {}", s.to));
                }
            }
        }
        self.config = new;
        if rolled_back {
            return report(ReloadResult::RolledBack, items);
        }
        report(ReloadResult::Applied, items)
    }

    /// Apply one changed forkyard-wide key; `true` when it is reported by a more
    /// specific line (routes, token).
    fn apply_global(&mut self, key: &str, new: &Config) -> bool {
        match key {
            "proxy.client_header_timeout"
            | "proxy.client_timeout"
            | "proxy.idle_timeout"
            | "proxy.max_header_size"
            | "proxy.max_body" => {
                self.proxy_settings
                    .store(Arc::new(ProxySettings::of(&new.proxy)));
                false
            }
            "admin.token" | "admin.token_file" => {
                self.auth.set(new.admin.token.clone());
                true
            }
            "log.access" => {
                let log = if new.log.access {
                    match AccessLog::start(new.log.format == LogFormat::Json) {
                        Ok(log) => Some(Arc::new(log)),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start the access log");
                            None
                        }
                    }
                } else {
                    None
                };
                self.access_log.store(log);
                false
            }
            "log.level" => match crate::logging::set_level(new.log.level) {
                crate::logging::LevelChange::Applied => false,
                crate::logging::LevelChange::KeptRustLog => {
                    tracing::warn!("reload: log.level changed, but RUST_LOG was set at start and stays in force");
                    false
                }
                crate::logging::LevelChange::NotInstalled => false,
            },
            "reload.watch" => {
                self.set_watch(new.watch);
                false
            }
            "routes" => {
                self.router.store(Arc::new(Router::for_config(new)));
                true
            }
            // Read where they are used (at shutdown, at the next start).
            "shutdown.timeout" | "shutdown.delay" | "hooks.on_start" | "hooks.on_shutdown" => false,
            _ => false,
        }
    }

    /// Make hooks a reload added known to the metrics and the status board.
    fn declare_hooks(&self, new: &Config) {
        for phase in Phase::ALL {
            for h in new.hooks.phase(phase) {
                self.metrics.declare_hook("", phase, &h.name);
                self.board.declare_hook("", phase.as_str(), &h.name);
            }
            for pool in &new.pools {
                for h in pool.hooks.phase(phase) {
                    self.metrics.declare_hook(&pool.name, phase, &h.name);
                    self.board.declare_hook(&pool.name, phase.as_str(), &h.name);
                }
            }
        }
    }
}
