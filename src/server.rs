//! Wiring and the shutdown order: config → listeners, metrics, supervisor, proxy and
//! admin services; then, on SIGTERM or SIGINT, readiness off → stop accepting →
//! drain in-flight requests (bounded by `shutdown.timeout`) → close the proxy →
//! stop the workers → exit 0.
//!
//! Two tokio runtimes run side by side. The *control* runtime is single-threaded and
//! lives on the main thread: signals, the reaper, the supervisor's worker actors,
//! output forwarding and the admin listener. Every child is therefore forked from
//! the main thread, which lives as long as the process. The *proxy* runtime has
//! `proxy.threads` worker threads and runs only the Pingora proxy service.
//!
//! Pingora's `Server::run` is not used: it installs its own signal handlers and
//! sleeps a fixed grace period on shutdown. forkyard binds the listening sockets
//! itself (so a busy port is a clear start-up error, not a retry loop), hands them to
//! Pingora's listening services as inherited fds, and drives their shutdown watch.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::proxy::http_proxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{Fds, ListenFds};
use pingora::services::listening::Service as ListeningService;
use pingora::services::Service as _;
use tokio::sync::watch;

use crate::admin::{AdminApp, AdminAuth, AdminCommand, Readiness};
use crate::config::{Config, Phase};
use crate::events;
use crate::hooks::{HookContext, HookRunner};
use crate::metrics::{HookSeries, Metrics, WorkerResources};
use crate::process::Reaper;
use crate::proxy::access_log::AccessLog;
use crate::proxy::front::{FrontApp, HeadLimits};
use crate::proxy::runtime::ProxyRuntime;
use crate::proxy::upstreams::PoolUpstreams;
use crate::proxy::{ClientLimits, ForkyardProxy, InFlight, ProxyPool, Router};
use crate::reload::{self, ReloadResult};
use crate::sd_notify::Notifier;
use crate::signals::{self, ControlEvent};
use crate::status::StatusBoard;
use crate::supervisor::{CrashLoop, PoolHandle, Supervisor};
use crate::watch::{self as file_watch, ConfigWatch};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr} ({what}): {source}; is another process using it?")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}; nothing was started")]
    OnStart(#[source] crate::hooks::HookFailure),
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    let l = TcpListener::bind(addr).map_err(|source| RunError::Bind { what, addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| RunError::Bind { what, addr, source })?;
    Ok(l)
}

/// Hand pre-bound listeners to a Pingora listening service as "inherited" fds.
fn attach_listeners<A>(
    svc: &mut ListeningService<A>,
    listeners: Vec<(SocketAddr, TcpListener)>,
) -> ListenFds {
    let mut fds = Fds::new();
    for (addr, l) in listeners {
        let key = addr.to_string();
        svc.add_tcp(&key);
        fds.add(key, l.into_raw_fd());
    }
    Arc::new(parking_lot::Mutex::new(fds))
}

/// How long adopted processes get between SIGTERM and SIGKILL at shutdown.
const STRAY_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Make orphans of our workers our children, so the reaper can reap them.
fn become_subreaper() {
    if std::process::id() == 1 {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "could not become a child subreaper; orphans of workers will be reaped by init");
    }
}

/// The next SIGTERM or SIGINT; other signals are ignored while stopping.
async fn next_stop_signal(
    signals: &mut tokio::sync::mpsc::UnboundedReceiver<ControlEvent>,
) -> Option<ControlEvent> {
    loop {
        match signals.recv().await? {
            e @ (ControlEvent::Terminate | ControlEvent::Interrupt) => return Some(e),
            other => tracing::info!(signal = ?other, "ignored while shutting down"),
        }
    }
}

/// Run forkyard with a validated config until shutdown. Returns the exit code.
pub fn run(config: Config) -> Result<i32, RunError> {
    become_subreaper();
    let inherited_children = crate::process::strays::children_of(std::process::id() as i32);

    let proxy_listeners = config
        .proxy
        .listen
        .iter()
        .map(|a| bind("proxy.listen", *a).map(|l| (*a, l)))
        .collect::<Result<Vec<_>, _>>()?;
    let admin_listener = bind("admin.listen", config.admin.listen)?;

    let pool_names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    let mut hook_series: Vec<HookSeries> = Vec::new();
    for phase in Phase::ALL {
        hook_series.extend(
            config
                .hooks
                .phase(phase)
                .iter()
                .map(|h| ("", phase, h.name.as_str())),
        );
        for pool in &config.pools {
            hook_series.extend(
                pool.hooks
                    .phase(phase)
                    .iter()
                    .map(|h| (pool.name.as_str(), phase, h.name.as_str())),
            );
        }
    }
    let metrics = Arc::new(Metrics::new(&pool_names, &hook_series));
    crate::logging::count_dropped_in(metrics.log_dropped.clone());
    let board = StatusBoard::new(config.pools.iter().map(|p| p.name.as_str()));
    for (pool, phase, hook) in &hook_series {
        board.declare_hook(pool, phase.as_str(), hook);
    }
    if let Err(e) = metrics.register(Box::new(WorkerResources::new(board.clone()))) {
        tracing::error!(error = %e, "per-worker resource metrics unavailable");
    }
    let notifier = Notifier::from_env().map(Arc::new);
    let pools: Vec<PoolHandle> = config
        .pools
        .iter()
        .map(|p| PoolHandle {
            config: Arc::new(p.clone()),
            upstreams: PoolUpstreams::new(p, &metrics),
            crash_loop: Arc::new(CrashLoop::new(
                &p.name,
                p.restart.crash_loop_failures,
                p.restart.crash_loop_window,
                metrics.pool_degraded.with_label_values(&[p.name.as_str()]),
            )),
        })
        .collect();
    let readiness = Readiness::new(pools.clone());
    let inflight = InFlight::new();

    // The proxy, on its own runtime.
    let proxy_rt = ProxyRuntime::new(config.proxy.threads).map_err(|source| RunError::Io {
        what: "start the proxy runtime",
        source,
    })?;
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
    let access_log = if config.log.access {
        let json = config.log.format == crate::config::LogFormat::Json;
        Some(AccessLog::start(json).map_err(|source| RunError::Io {
            what: "start the access log writer",
            source,
        })?)
    } else {
        None
    };
    let proxy_conf = &config.proxy;
    let router = Arc::new(arc_swap::ArcSwap::from_pointee(Router::for_config(&config)));
    let proxy = ForkyardProxy {
        pools: pools
            .iter()
            .map(|p| ProxyPool {
                name: Arc::from(p.config.name.as_str()),
                upstreams: p.upstreams.clone(),
                metrics: metrics.pool_requests(&p.config.name),
                retries: p.config.upstream.retries,
                retry_on: p.config.upstream.retry_on,
                hash: match &p.config.upstream.lb {
                    crate::config::LbPolicy::Hash(k) => Some(k.clone()),
                    _ => None,
                },
            })
            .collect(),
        router: router.clone(),
        inflight: inflight.clone(),
        unrouted: metrics.unrouted_requests.clone(),
        limits: ClientLimits {
            io_timeout: proxy_conf.client_timeout,
            idle_secs: proxy_conf.idle_timeout.as_secs().max(1),
            max_header_size: proxy_conf.max_header_size,
            max_body: proxy_conf.max_body,
        },
        access_log,
    };
    let front = FrontApp {
        inner: Arc::new(http_proxy(&server_conf, proxy)),
        limits: HeadLimits {
            timeout: proxy_conf.client_header_timeout,
            max_size: proxy_conf.max_header_size,
        },
    };
    let mut proxy_svc = ListeningService::new("forkyard proxy".to_string(), front);
    let proxy_fds = attach_listeners(&mut proxy_svc, proxy_listeners);
    let (proxy_stop_tx, proxy_stop_rx) = watch::channel(false);
    let proxy_accepting = proxy_rt.spawn(async move {
        proxy_svc
            .start_service(Some(proxy_fds), proxy_stop_rx, 1)
            .await;
    });

    let control_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RunError::Io {
            what: "start the control runtime",
            source,
        })?;
    control_rt.block_on(async move {
        let mut config = config;
        let mut signals = signals::listen().map_err(|source| RunError::Io {
            what: "install signal handlers",
            source,
        })?;
        let reaper = Reaper::start().map_err(|source| RunError::Io {
            what: "install the SIGCHLD handler",
            source,
        })?;

        let (admin_tx, mut admin_rx) = tokio::sync::mpsc::unbounded_channel();
        let admin_auth = AdminAuth::new(config.admin.token.clone());
        let mut admin_svc = ListeningService::new(
            "forkyard admin".to_string(),
            HttpServer::new_app(AdminApp {
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                board: board.clone(),
                commands: admin_tx,
                auth: admin_auth.clone(),
            }),
        );
        let admin_fds =
            attach_listeners(&mut admin_svc, vec![(config.admin.listen, admin_listener)]);
        let (_admin_stop_tx, admin_stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            admin_svc
                .start_service(Some(admin_fds), admin_stop_rx, 1)
                .await;
        });

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
            crate::proxy::fault::PANIC_HEADER
        );
        let hooks = HookRunner {
            reaper,
            metrics: metrics.clone(),
            board: board.clone(),
        };
        // on_start runs before any worker exists; an aborting failure ends forkyard.
        if let Err(failure) = hooks
            .run_phase(&config.hooks.on_start, &HookContext::global(Phase::OnStart))
            .await
        {
            // Runtimes must not be dropped inside this async context.
            proxy_rt.shutdown();
            return Err(RunError::OnStart(failure));
        }
        let mut supervisor = Supervisor::start(&pools, hooks.clone(), &board);
        tokio::spawn(announce_ready(board.clone(), notifier.clone()));
        let mut recycle_rx = supervisor.take_recycle_requests();
        let mut config_watch = if config.watch {
            match ConfigWatch::start(&config.source) {
                Ok(w) => {
                    tracing::info!(file = %config.source.display(), "watching the config file for changes");
                    Some(w)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP instead");
                    None
                }
            }
        } else {
            None
        };

        // Run until SIGTERM/SIGINT; meanwhile serve scale requests from signals and
        // from the admin listener.
        let first = loop {
            tokio::select! {
                event = signals.recv() => match event {
                    Some(e @ (ControlEvent::Terminate | ControlEvent::Interrupt)) => break Some(e),
                    None => break None,
                    Some(ControlEvent::AddWorker) => supervisor.scale_all(1),
                    Some(ControlEvent::RemoveWorker) => supervisor.scale_all(-1),
                    Some(ControlEvent::Reload) => {
                        // A stop signal during a rollout cancels it; shutdown then
                        // stops every worker, old and new.
                        tokio::select! {
                            _ = reload::reload(&mut config, &mut supervisor, &metrics, &router, &admin_auth) => {}
                            e = next_stop_signal(&mut signals) => break e,
                        }
                    }
                },
                _ = file_watch::changed(&mut config_watch) => {
                    tracing::info!("config file changed");
                    tokio::select! {
                        _ = reload::reload(&mut config, &mut supervisor, &metrics, &router, &admin_auth) => {}
                        e = next_stop_signal(&mut signals) => break e,
                    }
                }
                Some(request) = recycle_rx.recv() => {
                    tokio::select! {
                        _ = supervisor.recycle(request) => {}
                        e = next_stop_signal(&mut signals) => break e,
                    }
                }
                Some(command) = admin_rx.recv() => match command {
                    AdminCommand::Scale { pool, workers, reply } => {
                        let result = supervisor
                            .scale(&pool, workers)
                            .map(|(from, to)| format!("pool {pool}: {from} -> {to} workers\n"))
                            .map_err(|e| e.to_string());
                        let _ = reply.send(result);
                    }
                    AdminCommand::Reload { reply } => {
                        tokio::select! {
                            (result, summary) = reload::reload(&mut config, &mut supervisor, &metrics, &router, &admin_auth) => {
                                let _ = reply.send(match result {
                                    ReloadResult::Ok => Ok(format!("ok: {summary}\n")),
                                    other => Err(format!("{}: {summary}", other.as_str())),
                                });
                            }
                            e = next_stop_signal(&mut signals) => break e,
                        }
                    }
                },
            }
        };
        // A second SIGTERM/SIGINT while stopping forces the exit: workers get SIGKILL
        // and forkyard exits 128+N.
        let mut forced: Option<i32> = None;

        let shutdown_started = std::time::Instant::now();
        let signal = match first {
            Some(ControlEvent::Terminate) => "SIGTERM",
            Some(ControlEvent::Interrupt) => "SIGINT",
            _ => "none",
        };

        // 1. Readiness off; keep serving for shutdown.delay (SIGINT skips the delay).
        tracing::info!(
            event = events::SHUTDOWN,
            signal,
            in_flight = inflight.current(),
            "shutdown: readiness off"
        );
        readiness.begin_shutdown();
        if let Some(n) = &notifier {
            if let Err(e) = n.notify("STOPPING=1") {
                tracing::warn!(error = %e, "could not tell systemd that forkyard is stopping");
            }
        }
        if first == Some(ControlEvent::Terminate) && !config.shutdown.delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(config.shutdown.delay) => {}
                e = next_stop_signal(&mut signals) => forced = e.map(ControlEvent::signal_number),
            }
        }

        // 2. Stop accepting. The service returns once every accept loop has stopped.
        tracing::info!(
            event = events::DRAIN_START,
            in_flight = inflight.current(),
            timeout_ms = config.shutdown.timeout.as_millis() as u64,
            "shutdown: no longer accepting connections"
        );
        let _ = proxy_stop_tx.send(true);
        if tokio::time::timeout(std::time::Duration::from_secs(5), proxy_accepting)
            .await
            .is_err()
        {
            tracing::warn!("shutdown: the proxy's accept loops did not stop within 5s");
        }

        // 3. Drain in-flight requests, bounded; a second signal cuts it short.
        let drain_started = std::time::Instant::now();
        let drain_ms = || drain_started.elapsed().as_millis() as u64;
        if forced.is_none() {
            tokio::select! {
                _ = inflight.wait_idle() => tracing::info!(
                    event = events::DRAIN_FINISH,
                    result = "drained",
                    in_flight = 0u64,
                    duration_ms = drain_ms(),
                    "shutdown: in-flight requests drained"
                ),
                _ = tokio::time::sleep(config.shutdown.timeout) => tracing::warn!(
                    event = events::DRAIN_FINISH,
                    result = "timeout",
                    in_flight = inflight.current(),
                    duration_ms = drain_ms(),
                    timeout_ms = config.shutdown.timeout.as_millis() as u64,
                    "shutdown: drain timed out; closing remaining connections"
                ),
                e = next_stop_signal(&mut signals) => {
                    forced = e.map(ControlEvent::signal_number);
                    tracing::warn!(
                        event = events::DRAIN_FINISH,
                        result = "interrupted",
                        in_flight = inflight.current(),
                        duration_ms = drain_ms(),
                        "shutdown: second signal; not waiting for in-flight requests"
                    );
                }
            }
        } else {
            tracing::warn!(
                event = events::DRAIN_FINISH,
                result = "interrupted",
                in_flight = inflight.current(),
                duration_ms = 0u64,
                "shutdown: second signal; not waiting for in-flight requests"
            );
        }
        // 4. Close every proxy connection.
        proxy_rt.shutdown();

        // 5. Stop the workers; a(nother) signal escalates to SIGKILL.
        let kill = supervisor.killer();
        if forced.is_some() {
            kill();
        }
        let stopping = supervisor.stop();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = &mut stopping => break,
                Some(event) = next_stop_signal(&mut signals) => {
                    tracing::warn!(?event, "shutdown: another signal; killing workers now");
                    forced = Some(event.signal_number());
                    kill();
                }
            }
        }
        // The workers are gone: remove their Unix sockets and directories.
        crate::sockets::remove_all(&config.pools.iter().collect::<Vec<_>>());
        // on_shutdown: failures are logged and counted; the exit goes on.
        if forced.is_none() {
            let _ = hooks
                .run_phase(
                    &config.hooks.on_shutdown,
                    &HookContext::global(Phase::OnShutdown),
                )
                .await;
        }
        // Daemons that escaped their process group were adopted by forkyard; they
        // must not outlive it.
        let grace = if forced.is_some() {
            std::time::Duration::ZERO
        } else {
            STRAY_GRACE
        };
        crate::process::strays::stop_strays(grace, &inherited_children).await;
        let code = forced.map_or(0, |n| 128 + n);
        tracing::info!(
            event = events::SHUTDOWN_COMPLETE,
            exit_code = code,
            duration_ms = shutdown_started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
        Ok(code)
    })
}

/// Log once every pool has a ready worker, and tell systemd (`READY=1`).
/// Waits on the status board's change signal; nothing is polled.
async fn announce_ready(board: Arc<StatusBoard>, notifier: Option<Arc<Notifier>>) {
    let mut changes = board.subscribe();
    loop {
        if board.all_pools_ready() {
            break;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
    let pools = board.pools();
    let ready: Vec<String> = pools
        .iter()
        .map(|p| {
            format!(
                "{} {}/{}",
                p.name,
                p.count(crate::supervisor::WorkerState::Ready),
                p.slots().len()
            )
        })
        .collect();
    let status = format!("ready: {}", ready.join(", "));
    tracing::info!(
        event = events::POOLS_READY,
        pools = pools.len(),
        workers_ready = %ready.join(", "),
        "every pool has a ready worker"
    );
    if let Some(n) = notifier {
        match n.notify(&format!("READY=1\nSTATUS={status}")) {
            Ok(()) => tracing::info!("told systemd: READY=1"),
            Err(e) => tracing::warn!(error = %e, "could not tell systemd that forkyard is ready"),
        }
    }
}
