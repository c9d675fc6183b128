//! The ready workers of one pool, as the proxy sees them.
//!
//! The supervisor is the only writer: it adds a worker once it is ready and removes
//! it before it is stopped or as soon as it has exited. The proxy reads through
//! Pingora's `LoadBalancer`, whose selector is rebuilt (off the request path) on each
//! change from a [`ServiceDiscovery`] that returns the current member set.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;

/// Tries of the selector per pick before giving up.
const MAX_SELECT_ITERATIONS: usize = 256;

type Members = Arc<RwLock<BTreeSet<Backend>>>;

struct MemberDiscovery(Members);

#[async_trait]
impl ServiceDiscovery for MemberDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let members = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        Ok((members, HashMap::new()))
    }
}

/// The ready set of one pool plus its round-robin selector.
pub struct PoolUpstreams {
    members: Members,
    lb: LoadBalancer<RoundRobin>,
    /// Serialises selector rebuilds: Pingora forbids overlapping `update` calls.
    update: tokio::sync::Mutex<()>,
    /// Per worker address: requests in progress (so a leaving worker can be
    /// drained) and requests sent (for recycling).
    counters: RwLock<HashMap<SocketAddr, Arc<WorkerCounters>>>,
}

#[derive(Default)]
struct WorkerCounters {
    in_flight: AtomicUsize,
    sent: AtomicU64,
}

/// Held by a request while it is being proxied to one worker.
pub struct WorkerGuard(Arc<WorkerCounters>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Attached to a worker's `Backend` (in its `ext`): counts the requests the worker
/// answered, for the status board. `ext` is ignored by `Backend`'s equality.
#[derive(Clone)]
pub struct ServedCounter(pub Arc<AtomicU64>);

impl ServedCounter {
    /// Count one answered request on `backend`, if it carries a counter.
    pub fn count(backend: &Backend) {
        if let Some(c) = backend.ext.get::<ServedCounter>() {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Build the `Backend` for a worker address.
pub fn backend_for(addr: SocketAddr) -> Backend {
    Backend {
        addr: PingoraAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    }
}

impl PoolUpstreams {
    pub fn new() -> Arc<PoolUpstreams> {
        let members: Members = Arc::new(RwLock::new(BTreeSet::new()));
        let lb =
            LoadBalancer::from_backends(Backends::new(Box::new(MemberDiscovery(members.clone()))));
        Arc::new(PoolUpstreams {
            members,
            lb,
            update: tokio::sync::Mutex::new(()),
            counters: RwLock::new(HashMap::new()),
        })
    }

    /// Count a request to `addr` until the guard is dropped.
    pub fn enter(&self, addr: SocketAddr) -> Option<WorkerGuard> {
        let counters = self
            .counters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)?
            .clone();
        counters.in_flight.fetch_add(1, Ordering::AcqRel);
        counters.sent.fetch_add(1, Ordering::Relaxed);
        Some(WorkerGuard(counters))
    }

    fn counters(&self, addr: SocketAddr) -> Option<Arc<WorkerCounters>> {
        self.counters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .cloned()
    }

    /// Requests in progress at `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.counters(addr)
            .map_or(0, |c| c.in_flight.load(Ordering::Acquire))
    }

    /// Requests ever sent to `addr` (whatever process listened there).
    pub fn sent(&self, addr: SocketAddr) -> u64 {
        self.counters(addr)
            .map_or(0, |c| c.sent.load(Ordering::Relaxed))
    }

    /// Wait until `addr` (already out of the balancer) has no request in progress,
    /// at most `limit`. Returns how many were still running when it gave up.
    pub async fn drain(&self, addr: SocketAddr, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = self.in_flight(addr);
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Start sending traffic to `addr`.
    pub async fn add(&self, addr: SocketAddr) {
        self.add_backend(addr, backend_for(addr)).await
    }

    /// Start sending traffic to `addr`, counting its answered requests in `served`.
    pub async fn add_counted(&self, addr: SocketAddr, served: Arc<AtomicU64>) {
        let mut backend = backend_for(addr);
        backend.ext.insert(ServedCounter(served));
        self.add_backend(addr, backend).await
    }

    async fn add_backend(&self, addr: SocketAddr, backend: Backend) {
        self.counters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_default();
        self.change(|m| {
            m.replace(backend);
        })
        .await
    }

    /// Stop sending new traffic to `addr`.
    pub async fn remove(&self, addr: SocketAddr) {
        self.change(|m| {
            m.remove(&backend_for(addr));
        })
        .await
    }

    async fn change(&self, edit: impl FnOnce(&mut BTreeSet<Backend>)) {
        let _serial = self.update.lock().await;
        edit(&mut self.members.write().unwrap_or_else(|e| e.into_inner()));
        if let Err(e) = self.lb.update().await {
            // Discovery here cannot fail; keep going with the previous selector.
            tracing::error!(error = %e, "rebuilding the worker selector failed");
        }
    }

    /// How many workers currently take traffic.
    pub fn ready_count(&self) -> usize {
        self.members.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Next worker in round-robin order that is not in `tried`.
    pub fn select(&self, tried: &[Backend]) -> Option<Backend> {
        self.lb
            .select_with(b"", MAX_SELECT_ITERATIONS, |b, _| !tried.contains(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn selects_only_members_round_robin() {
        let ups = PoolUpstreams::new();
        assert!(ups.select(&[]).is_none());
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9002".parse().unwrap();
        ups.add(a).await;
        ups.add(b).await;
        assert_eq!(ups.ready_count(), 2);
        let picks: Vec<_> = (0..10).map(|_| ups.select(&[]).unwrap()).collect();
        let na = picks.iter().filter(|p| **p == backend_for(a)).count();
        assert_eq!(na, 5, "round robin over two members is even: {picks:?}");
        // Excluding one leaves the other.
        assert_eq!(ups.select(&[backend_for(a)]), Some(backend_for(b)));
        assert_eq!(ups.select(&[backend_for(a), backend_for(b)]), None);
        ups.remove(a).await;
        for _ in 0..5 {
            assert_eq!(ups.select(&[]), Some(backend_for(b)));
        }
    }

    #[tokio::test]
    async fn selected_backends_carry_their_served_counter() {
        let ups = PoolUpstreams::new();
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        ups.add_counted(a, served.clone()).await;
        for _ in 0..3 {
            ServedCounter::count(&ups.select(&[]).unwrap());
        }
        assert_eq!(served.load(Ordering::Relaxed), 3);
    }
}
