//! Building forkyard's parts from a validated config and connecting them.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use pingora::proxy::http_proxy;
use pingora::server::configuration::ServerConf;
use tokio::sync::mpsc;

use super::admin_listeners;
use super::RunError;
use crate::admin::{AdminApp, Readiness};
use crate::auth::AdminAuth;
use crate::config::{Config, LogFormat, Phase};
use crate::control::{Command, Control};
use crate::events;
use crate::history::History;
use crate::hooks::{HookContext, HookRunner};
use crate::metrics::{HookSeries, Metrics, WorkerResources};
use crate::pool::Pool;
use crate::process::Reaper;
use crate::proxy::access_log::AccessLog;
use crate::proxy::conn::Front;
use crate::proxy::front::FrontApp;
use crate::proxy::listen::{self, Threads};
use crate::proxy::{ForkyardProxy, InFlight, ProxySettings, Router, Shared, Upstream};
use crate::record::HookLog;
use crate::sd_notify::Notifier;
use crate::signals::{self, ControlEvent};
use crate::status::StatusBoard;
use crate::supervisor::launch::System;
use crate::supervisor::{CrashLoop, RecycleRequest, Supervisor};
use crate::worker_metrics::WorkerMetrics;

fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    let l = TcpListener::bind(addr).map_err(|source| RunError::Bind { what, addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| RunError::Bind { what, addr, source })?;
    Ok(l)
}

/// Hand pre-bound listeners to a Pingora listening service as "inherited" fds.
/// Make orphans of our workers our children, so the reaper can reap them.
fn become_subreaper() {
    if std::process::id() == 1 {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "could not become a child subreaper; orphans of workers will be reaped by init");
    }
}

/// The proxy, running on its own threads.
pub(super) struct ProxyParts {
    pub(super) threads: Threads,
    pub(super) inflight: Arc<InFlight>,
}

/// Everything built before the control runtime starts.
pub(super) struct Built {
    config: Config,
    admin_listener: TcpListener,
    control_socket: Option<crate::sockets::control::Bound>,
    inherited_children: Vec<i32>,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    pools: Vec<(Arc<Pool>, Arc<CrashLoop>)>,
    router: Arc<ArcSwap<Router>>,
    proxy_settings: Arc<ArcSwap<ProxySettings>>,
    access_log: Arc<ArcSwapOption<AccessLog>>,
    proxy: ProxyParts,
}

/// forkyard running: what the control loop and the shutdown need.
pub(super) struct Running {
    pub(super) control: Control,
    pub(super) signals: mpsc::UnboundedReceiver<ControlEvent>,
    pub(super) recycle: mpsc::UnboundedReceiver<RecycleRequest>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) readiness: Arc<Readiness>,
    pub(super) notifier: Option<Arc<Notifier>>,
    pub(super) proxy: ProxyParts,
    pub(super) hooks: HookRunner,
    /// Children forkyard had before it started anything (a wrapper's).
    pub(super) inherited_children: Vec<i32>,
    /// The admin listeners (TCP and the control socket), serving until the very
    /// end of a shutdown.
    pub(super) admin: admin_listeners::AdminServing,
}

/// Every declared hook: `(pool, phase, name)`.
fn hook_series(config: &Config) -> Vec<HookSeries<'_>> {
    let mut series: Vec<HookSeries> = Vec::new();
    for phase in Phase::ALL {
        series.extend(
            config
                .hooks
                .phase(phase)
                .iter()
                .map(|h| ("", phase, h.name.as_str())),
        );
        for pool in &config.pools {
            series.extend(
                pool.hooks
                    .phase(phase)
                    .iter()
                    .map(|h| (pool.name.as_str(), phase, h.name.as_str())),
            );
        }
    }
    series
}

/// Bind the listeners, build the metrics, the status board and the pools, and start
/// the proxy on its own runtime. Nothing is spawned yet.
pub(super) fn build(config: Config) -> Result<Built, RunError> {
    become_subreaper();
    let inherited_children = crate::process::strays::children_of(std::process::id() as i32);
    let proxy_sockets = listen::bind_all(&config.proxy.listen, config.proxy.threads.get())
        .map_err(|(addr, source)| RunError::Bind {
            what: "proxy.listen",
            addr,
            source,
        })?;
    let admin_listener = bind("admin.listen", config.admin.listen)?;
    let control_socket = admin_listeners::bind_control_socket(&config.admin)?;

    let pool_names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    let hook_series = hook_series(&config);
    let metrics = Arc::new(Metrics::new(&pool_names, &hook_series));
    crate::logging::count_dropped_in(metrics.log_dropped.clone());
    let board = StatusBoard::new(pool_names.iter().copied());
    for (pool, phase, hook) in &hook_series {
        board.declare_hook(pool, phase.as_str(), hook);
    }
    if let Err(e) = metrics.register(Box::new(WorkerResources::new(board.clone()))) {
        tracing::error!(error = %e, "per-worker resource metrics unavailable");
    }

    let mut upstreams = Vec::new();
    let pools = config
        .pools
        .iter()
        .map(|p| {
            let upstream = Upstream::new(p, metrics.clone());
            upstreams.push(upstream.clone());
            let degraded = metrics.pool_degraded.with_label_values(&[p.name.as_str()]);
            (
                Pool::new(p.clone(), upstream),
                Arc::new(CrashLoop::new(&p.name, degraded)),
            )
        })
        .collect();

    // Pingora's upstream connection pool is one LRU for all peers: size it for
    // every worker's idle keep-alive connections.
    let keepalive_total: usize = config
        .pools
        .iter()
        .map(|p| p.workers.get() * p.upstream.keepalive)
        .sum();
    let server_conf = Arc::new(ServerConf {
        threads: config.proxy.threads.get(),
        upstream_keepalive_pool_size: keepalive_total.max(1),
        ..Default::default()
    });
    let access_log = Arc::new(ArcSwapOption::from(if config.log.access {
        let json = config.log.format == LogFormat::Json;
        Some(Arc::new(AccessLog::start(json).map_err(|source| {
            RunError::Io {
                what: "start the access log writer",
                source,
            }
        })?))
    } else {
        None
    }));
    let router = Arc::new(ArcSwap::from_pointee(Router::for_config(&config)));
    let proxy_settings = Arc::new(ArcSwap::from_pointee(ProxySettings::of(&config.proxy)));
    let inflight = InFlight::new();
    let shared = Arc::new(Shared {
        pools: upstreams,
        router: router.clone(),
        settings: proxy_settings.clone(),
        inflight: inflight.clone(),
        unrouted: metrics.unrouted_requests.clone(),
        access_log: access_log.clone(),
    });
    let fallback = Arc::new(FrontApp {
        inner: Arc::new(http_proxy(
            &server_conf,
            ForkyardProxy {
                shared: shared.clone(),
            },
        )),
        settings: proxy_settings.clone(),
    });
    let threads =
        Threads::start(proxy_sockets, Arc::new(Front { shared, fallback })).map_err(|source| {
            RunError::Io {
                what: "start the proxy threads",
                source,
            }
        })?;
    Ok(Built {
        config,
        admin_listener,
        control_socket,
        inherited_children,
        metrics,
        board,
        pools,
        router,
        proxy_settings,
        access_log,
        proxy: ProxyParts { threads, inflight },
    })
}

impl Built {
    /// On the control runtime: install the signal handlers and the reaper, serve the
    /// admin listener, run `on_start`, start every worker, and hand the config and
    /// the supervisor to the control object.
    pub(super) async fn start(self, cli_watch: bool) -> Result<Running, RunError> {
        let Built {
            config,
            admin_listener,
            control_socket,
            inherited_children,
            metrics,
            board,
            pools,
            router,
            proxy_settings,
            access_log,
            proxy,
        } = self;
        let signals = signals::listen().map_err(|source| RunError::Io {
            what: "install signal handlers",
            source,
        })?;
        let reaper = Reaper::start().map_err(|source| RunError::Io {
            what: "install the SIGCHLD handler",
            source,
        })?;
        let notifier = Notifier::from_env().map(Arc::new);
        let readiness = Readiness::new(pools.clone());

        let (commands_tx, commands) = mpsc::unbounded_channel();
        let auth = AdminAuth::new(config.admin.token.clone());
        let history = History::new();
        tokio::spawn(crate::history::run(
            history.clone(),
            metrics.clone(),
            board.clone(),
        ));
        let admin = admin_listeners::serve(
            AdminApp {
                metrics: WorkerMetrics::start(
                    pools.iter().map(|(p, _)| p.clone()).collect(),
                    metrics.clone(),
                ),
                readiness: readiness.clone(),
                board: board.clone(),
                commands: commands_tx,
                auth: auth.clone(),
                hub: crate::events::hub::global(),
                history,
                streams: tokio::sync::watch::channel(0).0,
            },
            (config.admin.listen, admin_listener),
            control_socket,
        );

        tracing::info!(
            event = events::START,
            version = env!("CARGO_PKG_VERSION"),
            proxy = ?config.proxy.listen,
            admin = %config.admin.listen,
            pools = pools.len(),
            "forkyard started"
        );
        crate::security::log_warnings(&config);
        #[cfg(feature = "fault-injection")]
        tracing::warn!(
            "built with the fault-injection feature: a request with {}: 1 panics on purpose; not for production",
            crate::fault::PANIC_HEADER
        );
        let hooks = HookRunner {
            reaper,
            recorder: Arc::new(HookLog {
                metrics: metrics.clone(),
                board: board.clone(),
            }),
            caller: None,
        };
        // on_start runs before any worker exists; an aborting failure ends forkyard.
        if let Err(failure) = hooks
            .run_phase(&config.hooks.on_start, &HookContext::global(Phase::OnStart))
            .await
        {
            proxy.threads.close();
            return Err(RunError::OnStart(failure.to_string()));
        }
        let os = Arc::new(System {
            hooks: hooks.clone(),
            metrics: metrics.clone(),
            board: board.clone(),
            preloaders: Default::default(),
        });
        let mut supervisor = Supervisor::start(&pools, os, metrics.clone(), board.clone());
        tokio::spawn(super::shutdown::announce_ready(
            board.clone(),
            notifier.clone(),
        ));
        let recycle = supervisor.take_recycle_requests();
        let mut config = config;
        config.watch |= cli_watch;
        let watch_file = config.watch;
        let mut control = Control {
            config,
            supervisor,
            pools: pools.iter().map(|(p, _)| p.clone()).collect(),
            router,
            proxy_settings,
            access_log,
            auth,
            metrics,
            board,
            watch: None,
            cli_watch,
        };
        control.set_watch(watch_file);
        Ok(Running {
            control,
            signals,
            recycle,
            commands,
            readiness,
            notifier,
            proxy,
            hooks,
            inherited_children,
            admin,
        })
    }
}
