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

use crate::admin::{AdminApp, Readiness};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::process::Reaper;
use crate::proxy::access_log::AccessLog;
use crate::proxy::front::{FrontApp, HeadLimits};
use crate::proxy::runtime::ProxyRuntime;
use crate::proxy::upstreams::PoolUpstreams;
use crate::proxy::{ClientLimits, ForkyardProxy, InFlight, ProxyPool, Router};
use crate::signals::{self, ControlEvent};
use crate::supervisor::{PoolHandle, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr} ({what}): {source}; is another process using it?")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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

/// Make orphans of our workers our children, so the reaper can reap them.
fn become_subreaper() {
    if std::process::id() == 1 {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "could not become a child subreaper; orphans of workers will be reaped by init");
    }
}

/// Run forkyard with a validated config until shutdown. Returns the exit code.
pub fn run(config: Config) -> Result<i32, RunError> {
    become_subreaper();

    let proxy_listeners = config
        .proxy
        .listen
        .iter()
        .map(|a| bind("proxy.listen", *a).map(|l| (*a, l)))
        .collect::<Result<Vec<_>, _>>()?;
    let admin_listener = bind("admin.listen", config.admin.listen)?;

    let pool_names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    let metrics = Arc::new(Metrics::new(&pool_names));
    let pools: Vec<PoolHandle> = config
        .pools
        .iter()
        .map(|p| PoolHandle {
            config: Arc::new(p.clone()),
            upstreams: PoolUpstreams::new(p, &metrics),
        })
        .collect();
    let readiness = Readiness::new(
        pools
            .iter()
            .map(|p| (Arc::from(p.config.name.as_str()), p.upstreams.clone()))
            .collect(),
    );
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
        router: Router::new(&config.routes, |name| {
            config.pools.iter().position(|p| p.name == name)
        }),
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
        let mut signals = signals::listen().map_err(|source| RunError::Io {
            what: "install signal handlers",
            source,
        })?;
        let reaper = Reaper::start().map_err(|source| RunError::Io {
            what: "install the SIGCHLD handler",
            source,
        })?;

        let mut admin_svc = ListeningService::new(
            "forkyard admin".to_string(),
            HttpServer::new_app(AdminApp {
                metrics: metrics.clone(),
                readiness: readiness.clone(),
            }),
        );
        let admin_fds = attach_listeners(&mut admin_svc, vec![(config.admin.listen, admin_listener)]);
        let (_admin_stop_tx, admin_stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            admin_svc.start_service(Some(admin_fds), admin_stop_rx, 1).await;
        });

        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            proxy = ?config.proxy.listen,
            admin = %config.admin.listen,
            pools = pools.len(),
            "forkyard started"
        );
        let supervisor = Supervisor::start(&pools, reaper, metrics.clone());

        loop {
            match signals.recv().await {
                Some(ControlEvent::Terminate) | Some(ControlEvent::Interrupt) | None => break,
                Some(other) => {
                    tracing::warn!(event = ?other, "signal not supported yet; ignored")
                }
            }
        }

        // 1. Readiness off, stop accepting.
        tracing::info!(in_flight = inflight.current(), "shutdown: no longer accepting connections");
        readiness.begin_shutdown();
        let _ = proxy_stop_tx.send(true);
        // The service returns once every accept loop has stopped.
        if tokio::time::timeout(std::time::Duration::from_secs(5), proxy_accepting).await.is_err() {
            tracing::warn!("shutdown: the proxy's accept loops did not stop within 5s");
        }

        // 2. Drain in-flight requests, bounded; a second signal cuts it short.
        let mut hurry = false;
        tokio::select! {
            _ = inflight.wait_idle() => tracing::info!("shutdown: in-flight requests drained"),
            _ = tokio::time::sleep(config.shutdown.timeout) => tracing::warn!(
                in_flight = inflight.current(),
                timeout_ms = config.shutdown.timeout.as_millis() as u64,
                "shutdown: drain timed out; closing remaining connections"
            ),
            _ = signals.recv() => { hurry = true; tracing::warn!("shutdown: second signal; not waiting for in-flight requests"); }
        }
        // 3. Close every proxy connection.
        proxy_rt.shutdown();

        // 4. Stop the workers; a(nother) signal escalates to SIGKILL.
        let kill = supervisor.killer();
        if hurry {
            kill();
        }
        let stopping = supervisor.stop();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = &mut stopping => break,
                Some(event) = signals.recv() => {
                    tracing::warn!(?event, "shutdown: another signal; killing workers now");
                    kill();
                }
            }
        }
        tracing::info!("shutdown complete");
        Ok(0)
    })
}
