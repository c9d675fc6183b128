//! Unix-socket workers: the proxy side in-process (the supervisor does not bind
//! workers to Unix sockets yet), with real fixture workers on Unix sockets, hash
//! balancing, and a retry when one of them goes away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use forkyard::config::{HashKey, LbPolicy, RetryOn, UpstreamPolicy};
use forkyard::metrics::Metrics;
use forkyard::proxy::front::{FrontApp, HeadLimits};
use forkyard::proxy::upstreams::PoolUpstreams;
use forkyard::proxy::{ClientLimits, ForkyardProxy, InFlight, ProxyPool, Router, WorkerAddr};
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;
use pingora::services::Service as _;

use crate::harness::*;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unix_worker(path: &std::path::Path, slot: usize) -> Worker {
    Worker(
        Command::new("python3")
            .arg(proxy_fixture_worker())
            .env("FIXTURE_UNIX", path)
            .env("FORKYARD_WORKER", slot.to_string())
            .env("FORKYARD_POOL", "web")
            .stdout(Stdio::null())
            .spawn()
            .expect("start a fixture worker"),
    )
}

#[test]
fn hashing_and_retries_work_with_unix_socket_workers() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("w{i}.sock")))
        .collect();
    let mut workers: Vec<Option<Worker>> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| Some(unix_worker(p, i)))
        .collect();
    wait_for(BOOT, "the unix-socket workers to listen", || {
        paths
            .iter()
            .all(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
            .then_some(())
    });

    let metrics = Metrics::new(&["web"], &[]);
    let policy = UpstreamPolicy {
        lb: LbPolicy::Hash(HashKey::Header("x-user".into())),
        weights: vec![1, 1, 1],
        retries: 2,
        retry_on: RetryOn::default(),
        eject: None,
        connect_timeout: Duration::from_secs(2),
        response_header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        keepalive: 4,
    };
    let addrs: Vec<WorkerAddr> = paths
        .iter()
        .map(|p| format!("unix:{}", p.display()).parse().unwrap())
        .collect();
    let upstreams = PoolUpstreams::with_addrs("web", addrs.clone(), &policy, &metrics);
    for a in &addrs {
        assert!(upstreams.set_ready(a, true));
    }
    let proxy = ForkyardProxy {
        pools: vec![ProxyPool {
            name: Arc::from("web"),
            upstreams: upstreams.clone(),
            metrics: metrics.pool_requests("web"),
            retries: 2,
            retry_on: RetryOn::default(),
            hash: Some(HashKey::Header("x-user".into())),
        }],
        router: Arc::new(arc_swap::ArcSwap::from_pointee(Router::new(
            &[forkyard::config::Route {
                host: None,
                path_prefix: None,
                pool: "web".into(),
            }],
            |_| Some(0),
        ))),
        inflight: InFlight::new(),
        unrouted: metrics.unrouted_requests.clone(),
        limits: ClientLimits {
            io_timeout: Duration::from_secs(10),
            idle_secs: 10,
            max_header_size: 32 << 10,
            max_body: 1 << 20,
        },
        access_log: None,
    };
    let conf = Arc::new(ServerConf::default());
    let front = FrontApp {
        inner: Arc::new(pingora::proxy::http_proxy(&conf, proxy)),
        limits: HeadLimits {
            timeout: Duration::from_secs(10),
            max_size: 32 << 10,
        },
    };
    let port = free_ports(1);
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut svc = Service::new("test proxy".to_string(), front);
    svc.add_tcp(&listen.to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    rt.spawn(async move { svc.start_service(None, stop_rx, 1).await });
    wait_for(BOOT, "the in-process proxy to listen", || {
        std::net::TcpStream::connect(listen).is_ok().then_some(())
    });

    let slot_for = |user: &str| -> usize {
        let r = http_get(listen, "/", &[("X-User", user)]).expect("request");
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["slot"].as_str().unwrap().parse().unwrap()
    };
    let users: Vec<String> = (0..24).map(|i| format!("u{i}")).collect();
    let before: HashMap<&String, usize> = users.iter().map(|u| (u, slot_for(u))).collect();
    assert!(
        users.iter().all(|u| slot_for(u) == before[u]),
        "hashing is stable"
    );
    assert_eq!(
        before
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3,
        "keys spread over the three unix-socket workers"
    );

    // One worker dies but is still marked ready: its requests are retried on
    // another worker, and everyone else's keys stay put.
    let victim = before[&users[0]];
    workers[victim] = None;
    let _ = std::fs::remove_file(&paths[victim]);
    for u in &users {
        let now = slot_for(u);
        if before[u] == victim {
            assert_ne!(now, victim);
        } else {
            assert_eq!(now, before[u], "{u} moved");
        }
    }
    assert!(metrics.retries.with_label_values(&["web"]).get() >= 1);
    rt.shutdown_background();
}
