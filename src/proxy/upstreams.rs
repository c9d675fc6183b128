//! The worker slots of one pool as the proxy sees them: address, readiness, weight,
//! in-flight count and ejection state, plus the pool's selector.
//!
//! The slot set is fixed when forkyard starts (one per configured worker), so the
//! request path reads plain atomics and never takes a lock. The supervisor is the
//! only writer of readiness: it marks a worker ready once its probe passes and
//! unready before it is stopped or as soon as it has exited.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use pingora::prelude::HttpPeer;
use prometheus::{IntCounter, IntGauge};

use super::address::{PeerSettings, WorkerAddr};
use super::eject::{EjectState, Ejector, Outcome};
use super::selection::{Algorithm, Selector, View};
use crate::config::{LbPolicy, PoolConfig, UpstreamPolicy};
use crate::metrics::Metrics;

/// One worker slot.
pub struct Slot {
    pub addr: WorkerAddr,
    peer: HttpPeer,
    weight: u32,
    hash_id: u64,
    ready: AtomicBool,
    /// Requests being proxied to this slot right now (also the exported gauge).
    pub in_flight: IntGauge,
    /// Requests ever sent to this slot, whatever process listened there (for
    /// recycling after `max_requests`).
    pub sent: AtomicU64,
    /// The status board's "requests served" counter of the worker now here.
    served: std::sync::RwLock<Option<Arc<AtomicU64>>>,
    eject: EjectState,
    ejections: IntCounter,
}

impl Slot {
    /// The Pingora peer to connect to this worker.
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.peer.clone())
    }
}

pub struct PoolUpstreams {
    pub name: Arc<str>,
    slots: Box<[Slot]>,
    selector: Selector,
    ejector: Ejector,
    ready: AtomicUsize,
}

/// A pool's slots as seen by one request: `tried` slots are left out.
struct RequestView<'a> {
    pool: &'a PoolUpstreams,
    tried: &'a [usize],
    honour_ejection: bool,
}

impl View for RequestView<'_> {
    fn slots(&self) -> usize {
        self.pool.slots.len()
    }
    fn available(&self, s: usize) -> bool {
        let slot = &self.pool.slots[s];
        slot.ready.load(Relaxed)
            && !self.tried.contains(&s)
            && !(self.honour_ejection
                && self.pool.ejector.any_out()
                && self.pool.ejector.is_out(&slot.eject))
    }
    fn in_flight(&self, s: usize) -> i64 {
        self.pool.slots[s].in_flight.get()
    }
    fn weight(&self, s: usize) -> u32 {
        self.pool.slots[s].weight
    }
    fn hash_id(&self, s: usize) -> u64 {
        self.pool.slots[s].hash_id
    }
}

impl PoolUpstreams {
    /// One slot per port of `pool`'s range (127.0.0.1:<port>), so scaling, rolling
    /// reloads and recycling can start workers on spare ports; unused slots are
    /// simply never ready.
    pub fn new(pool: &PoolConfig, metrics: &Metrics) -> Arc<PoolUpstreams> {
        let addrs = (0..pool.ports.len())
            .map(|i| WorkerAddr::of_slot(pool, pool.slot_port(i)))
            .collect();
        Self::with_addrs(&pool.name, addrs, &pool.upstream, metrics)
    }

    /// Slots at the given addresses, in slot order.
    pub fn with_addrs(
        name: &str,
        addrs: Vec<WorkerAddr>,
        policy: &UpstreamPolicy,
        metrics: &Metrics,
    ) -> Arc<PoolUpstreams> {
        let settings = PeerSettings {
            connect_timeout: policy.connect_timeout,
            io_timeout: policy.response_header_timeout,
            idle_timeout: policy.idle_timeout,
        };
        let weights: Vec<u32> = (0..addrs.len())
            .map(|i| policy.weights.get(i).copied().unwrap_or(1))
            .collect();
        let slots = addrs
            .into_iter()
            .enumerate()
            .map(|(i, addr)| {
                let worker = i.to_string();
                Slot {
                    peer: addr.peer(settings),
                    hash_id: addr.hash_id(),
                    addr,
                    weight: weights[i],
                    ready: AtomicBool::new(false),
                    in_flight: metrics.worker_in_flight(name, &worker),
                    sent: AtomicU64::new(0),
                    served: std::sync::RwLock::new(None),
                    eject: EjectState::default(),
                    ejections: metrics.worker_ejections(name, &worker),
                }
            })
            .collect::<Box<[Slot]>>();
        let algorithm = match policy.lb {
            LbPolicy::RoundRobin => Algorithm::RoundRobin,
            LbPolicy::LeastRequests => Algorithm::LeastRequests,
            LbPolicy::Random => Algorithm::Random,
            LbPolicy::Hash(_) => Algorithm::Hash,
        };
        Arc::new(PoolUpstreams {
            name: Arc::from(name),
            ejector: Ejector::new(policy.eject, slots.len()),
            selector: Selector::new(algorithm, &weights),
            slots,
            ready: AtomicUsize::new(0),
        })
    }

    /// Start sending traffic to the worker at `addr` (a new process: its ejection
    /// history is forgotten).
    pub async fn add(&self, addr: &WorkerAddr) {
        self.set_ready(addr, true);
    }

    /// Like `add`, counting the worker's answered requests in `served`.
    pub async fn add_counted(&self, addr: &WorkerAddr, served: Arc<AtomicU64>) {
        if let Some(slot) = self.slot_at(addr) {
            *slot.served.write().unwrap_or_else(|e| e.into_inner()) = Some(served);
        }
        self.add(addr).await
    }

    /// Count one answered request of the worker in slot `s`.
    pub fn count_served(&self, s: usize) {
        if let Some(slot) = self.slots.get(s) {
            if let Some(c) = slot
                .served
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    /// Stop sending new traffic to the worker at `addr`.
    pub async fn remove(&self, addr: &WorkerAddr) {
        self.set_ready(addr, false);
    }

    /// Mark the slot at `addr` ready or not; false when no slot has that address.
    pub fn set_ready(&self, addr: &WorkerAddr, ready: bool) -> bool {
        let Some(slot) = self.slots.iter().find(|s| s.addr == *addr) else {
            tracing::error!(pool = %self.name, %addr, "no worker slot has this address");
            return false;
        };
        if ready {
            self.ejector.reset(&slot.eject);
        }
        if slot.ready.swap(ready, Relaxed) != ready {
            if ready {
                self.ready.fetch_add(1, Relaxed);
            } else {
                self.ready.fetch_sub(1, Relaxed);
            }
        }
        true
    }

    fn slot_at(&self, addr: &WorkerAddr) -> Option<&Slot> {
        self.slots.iter().find(|s| s.addr == *addr)
    }

    /// Requests in progress at `addr`.
    pub fn in_flight(&self, addr: &WorkerAddr) -> usize {
        self.slot_at(addr)
            .map_or(0, |s| s.in_flight.get().max(0) as usize)
    }

    /// Requests ever sent to `addr`.
    pub fn sent(&self, addr: &WorkerAddr) -> u64 {
        self.slot_at(addr).map_or(0, |s| s.sent.load(Relaxed))
    }

    /// Wait until `addr` (already marked unready) has no request in progress, at
    /// most `limit`. Returns how many were still running when it gave up.
    pub async fn drain(&self, addr: &WorkerAddr, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = self.in_flight(addr);
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many workers currently take traffic.
    pub fn ready_count(&self) -> usize {
        self.ready.load(Relaxed)
    }

    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots[i]
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot for the next attempt, never one in `tried`. Ejected workers are left
    /// out unless nothing else is left.
    pub fn select(&self, tried: &[usize], key: Option<u64>) -> Option<usize> {
        let view = RequestView {
            pool: self,
            tried,
            honour_ejection: true,
        };
        self.selector.pick(&view, key).or_else(|| {
            if !self.ejector.any_out() {
                return None;
            }
            let view = RequestView {
                honour_ejection: false,
                ..view
            };
            self.selector.pick(&view, key)
        })
    }

    /// Record an attempt's result on `slot` for outlier ejection.
    pub fn record(&self, slot: usize, failed: bool) {
        let s = &self.slots[slot];
        if let Outcome::Ejected(d) = self.ejector.record(&s.eject, failed) {
            s.ejections.inc();
            tracing::warn!(
                event = crate::events::EJECTION,
                pool = %self.name,
                worker = slot,
                addr = %s.addr,
                duration_ms = d.as_millis() as u64,
                "worker ejected after consecutive failures"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryOn;

    pub fn policy(lb: LbPolicy) -> UpstreamPolicy {
        UpstreamPolicy {
            lb,
            weights: vec![],
            retries: 2,
            retry_on: RetryOn::default(),
            eject: None,
            connect_timeout: Duration::from_secs(1),
            response_header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            keepalive: 8,
        }
    }

    #[tokio::test]
    async fn selects_only_ready_slots_and_never_a_tried_one() {
        let m = Metrics::new(&["web"], &[]);
        let addrs: Vec<WorkerAddr> = vec![
            "127.0.0.1:9001".parse().unwrap(),
            "unix:/tmp/forkyard-test-w1.sock".parse().unwrap(),
        ];
        let ups =
            PoolUpstreams::with_addrs("web", addrs.clone(), &policy(LbPolicy::RoundRobin), &m);
        assert_eq!(ups.select(&[], None), None);
        ups.add(&addrs[0]).await;
        assert!(ups.set_ready(&addrs[1], true));
        assert_eq!(ups.ready_count(), 2);
        let picks: Vec<_> = (0..10).map(|_| ups.select(&[], None).unwrap()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 5, "{picks:?}");
        assert_eq!(ups.select(&[0], None), Some(1));
        assert_eq!(ups.select(&[0, 1], None), None);
        ups.remove(&addrs[0]).await;
        assert_eq!(ups.ready_count(), 1);
        assert!((0..5).all(|_| ups.select(&[], None) == Some(1)));
        assert!(!ups.set_ready(&"127.0.0.1:1".parse().unwrap(), true));
    }

    #[tokio::test]
    async fn counts_and_drains_per_address() {
        let m = Metrics::new(&["web"], &[]);
        let a: WorkerAddr = "127.0.0.1:9301".parse().unwrap();
        let ups =
            PoolUpstreams::with_addrs("web", vec![a.clone()], &policy(LbPolicy::RoundRobin), &m);
        ups.add(&a).await;
        let s = ups.slot(0);
        s.in_flight.inc();
        s.sent.fetch_add(1, Relaxed);
        assert_eq!((ups.in_flight(&a), ups.sent(&a)), (1, 1));
        assert_eq!(
            ups.drain(&a, Duration::from_millis(30)).await,
            1,
            "gives up"
        );
        s.in_flight.dec();
        assert_eq!(ups.drain(&a, Duration::from_secs(5)).await, 0);
        assert_eq!(ups.in_flight(&"127.0.0.1:1".parse().unwrap()), 0);
    }

    #[tokio::test]
    async fn hash_works_with_unix_socket_workers() {
        let m = Metrics::new(&["web"], &[]);
        let addrs: Vec<WorkerAddr> = (0..3)
            .map(|i| format!("unix:/tmp/forkyard-w{i}.sock").parse().unwrap())
            .collect();
        let p = policy(LbPolicy::Hash(crate::config::HashKey::ClientIp));
        let ups = PoolUpstreams::with_addrs("web", addrs.clone(), &p, &m);
        for a in &addrs {
            ups.set_ready(a, true);
        }
        let key = Some(12345);
        let first = ups.select(&[], key).unwrap();
        assert!((0..10).all(|_| ups.select(&[], key) == Some(first)));
        let other = (first + 1) % 3;
        ups.set_ready(&addrs[other], false);
        assert_eq!(ups.select(&[], key), Some(first));
    }

    #[tokio::test]
    async fn ejected_slots_are_skipped_unless_nothing_else_is_left() {
        let m = Metrics::new(&["web"], &[]);
        let addrs: Vec<WorkerAddr> = (0..2)
            .map(|i| format!("127.0.0.1:{}", 9100 + i).parse().unwrap())
            .collect();
        let mut p = policy(LbPolicy::RoundRobin);
        p.eject = Some(crate::config::EjectPolicy {
            consecutive_failures: 2,
            base_time: Duration::from_secs(60),
            max_time: Duration::from_secs(60),
            max_percent: 100,
        });
        let ups = PoolUpstreams::with_addrs("web", addrs.clone(), &p, &m);
        for a in &addrs {
            ups.set_ready(a, true);
        }
        ups.record(0, true);
        ups.record(0, true);
        assert_eq!(ups.slot(0).ejections.get(), 1);
        assert!((0..6).all(|_| ups.select(&[], None) == Some(1)));
        assert_eq!(ups.select(&[1], None), Some(0), "ejected beats nothing");
        // A restart (ready again) brings it back.
        ups.set_ready(&addrs[0], false);
        ups.set_ready(&addrs[0], true);
        assert!((0..6).any(|_| ups.select(&[], None) == Some(0)));
    }
}
