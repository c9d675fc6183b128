//! One pool as the proxy sees it: its current settings and its ready worker
//! processes, compiled into a [`Table`] that each request reads without a lock.
//!
//! The pool ([`crate::pool::Pool`]) owns the settings and decides who is in; on
//! every change it calls [`Upstream::update`] ([`Balance`]) with the whole new
//! picture, and the table is rebuilt and swapped in whole: the selector (with its
//! round-robin schedule from `weights`), the peers (with the `timeouts`), the
//! ejection limit. A request loads the current table at each attempt, so a reload
//! that changes `lb`, `weights`, `retries`, `retry_on`, `eject` or `timeouts`
//! applies to the next request.
//!
//! An entry's weight and hash identity are those of its *slot*, so a worker that
//! was restarted, recycled or replaced on another port keeps both. Per-slot metric
//! handles (`worker` = the slot) are resolved when a worker is admitted, never per
//! request.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use prometheus::{IntCounter, IntGauge};

use super::eject::{max_out, EjectClock, EjectState, Ejector, Outcome};
use super::selection::{Selector, View};
use crate::config::{PoolConfig, UpstreamPolicy};
use crate::metrics::{Metrics, PoolRequestMetrics};
use crate::pool::{Balance, Member};
use crate::slot::Endpoint;

/// One ready worker process, as requests use it.
pub(crate) struct Entry {
    pub member: Arc<Member>,
    peer: HttpPeer,
    weight: u32,
    hash_id: u64,
    eject: Arc<EjectState>,
    /// `forkyard_worker_in_flight_requests{pool,worker}` of the entry's slot.
    in_flight: IntGauge,
    ejections: IntCounter,
}

impl Entry {
    /// The Pingora peer to connect to this worker.
    pub(crate) fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.peer.clone())
    }
}

/// The pool's settings and ready workers, as of the last change.
pub(crate) struct Table {
    pub settings: Arc<PoolConfig>,
    pub entries: Box<[Arc<Entry>]>,
    selector: Selector,
    max_out: usize,
}

impl Table {
    pub(crate) fn upstream(&self) -> &UpstreamPolicy {
        &self.settings.upstream
    }
}

pub(crate) struct Upstream {
    pub name: Arc<str>,
    table: ArcSwap<Table>,
    eject: EjectClock,
    /// Wakes requests waiting for room (`max_in_flight`) when a request ends.
    room: Arc<tokio::sync::Notify>,
    /// Requests waiting now.
    waiting: std::sync::atomic::AtomicUsize,
    metrics: Arc<Metrics>,
    /// Pre-resolved request metrics of the pool.
    pub requests: PoolRequestMetrics,
}

/// A request in progress on one entry: the entry's counters stay up by one until
/// it is dropped, on any path; then a request waiting for room is woken. In a pool
/// with `hang:` it is also listed in the member's requests in flight (`watch`)
/// until then.
pub(crate) struct Lease(
    Arc<Entry>,
    Option<Arc<tokio::sync::Notify>>,
    /// Its key in the member's `pending` list, when watched.
    Option<usize>,
);

impl Lease {
    pub(crate) fn entry(&self) -> &Arc<Entry> {
        &self.0
    }

    /// The request is on its way to the worker: from now on it waits for its
    /// response head, and the worker's supervisor may count it as hung.
    pub(crate) fn watch(&mut self, method: &str, path: &str, request_id: &str) {
        if self.2.is_none() {
            self.2 = Some(self.0.member.pending().begin(method, path, request_id));
        }
    }

    /// A piece of its body went to the worker: its wait starts over.
    pub(crate) fn progress(&self) {
        if let Some(key) = self.2 {
            self.0.member.pending().progress(key);
        }
    }

    /// Its response head arrived (or the connection was upgraded): never a hang.
    pub(crate) fn answered(&self) {
        if let Some(key) = self.2 {
            self.0.member.pending().answered(key);
        }
    }

    /// It was counted as hung: a failed attempt is answered 504, never retried.
    pub(crate) fn hung(&self) -> bool {
        self.2
            .is_some_and(|key| self.0.member.pending().is_hung(key))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(key) = self.2 {
            self.0.member.pending().end(key);
        }
        self.0.member.end();
        self.0.in_flight.dec();
        if let Some(room) = &self.1 {
            room.notify_one();
        }
    }
}

/// Why no worker could be had for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No worker is ready (503).
    NoWorker,
    /// Every ready worker was already tried (502).
    NoOther,
    /// Every worker is at `max_in_flight` and the queue is full (503).
    QueueFull,
    /// The request waited `queue.timeout` for room (503).
    QueueTimeout,
}

impl Refusal {
    pub(crate) fn status(self) -> u16 {
        match self {
            Refusal::NoOther => 502,
            Refusal::NoWorker | Refusal::QueueFull | Refusal::QueueTimeout => 503,
        }
    }

    /// Whether the answer says when to come back (`Retry-After`).
    pub(crate) fn retry_after(self) -> bool {
        matches!(self, Refusal::QueueFull | Refusal::QueueTimeout)
    }
}

/// A pool's entries as seen by one request: `tried` members are left out.
#[derive(Clone, Copy)]
struct RequestView<'a> {
    entries: &'a [Arc<Entry>],
    tried: &'a [u64],
    ejection: Option<&'a EjectClock>,
    /// `max_in_flight`: workers without room are left out.
    room: Option<u32>,
}

impl View for RequestView<'_> {
    fn slots(&self) -> usize {
        self.entries.len()
    }
    fn available(&self, i: usize) -> bool {
        let e = &self.entries[i];
        !self.tried.contains(&e.member.id)
            && self
                .room
                .is_none_or(|max| e.member.in_flight() < max as usize)
            && !self
                .ejection
                .is_some_and(|c| c.any_out() && c.is_out(&e.eject))
    }
    fn in_flight(&self, i: usize) -> i64 {
        self.entries[i].member.in_flight() as i64
    }
    fn weight(&self, i: usize) -> u32 {
        self.entries[i].weight
    }
    fn hash_id(&self, i: usize) -> u64 {
        self.entries[i].hash_id
    }
}

/// The Pingora peer for `endpoint` with `policy`'s timeouts.
fn peer(endpoint: &Endpoint, policy: &UpstreamPolicy) -> HttpPeer {
    // `HttpPeer::new` would panic on a Unix address (its `ToSocketAddrs` fails),
    // so the address is set directly.
    let mut peer = HttpPeer::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        false,
        String::new(),
    );
    peer._address = match endpoint {
        Endpoint::Tcp(a) => PingoraAddr::Inet(*a),
        Endpoint::Unix(p) => match std::os::unix::net::SocketAddr::from_pathname(p) {
            Ok(a) => PingoraAddr::Unix(a),
            // Too long for sun_path: validated earlier; keep the placeholder, which
            // refuses connections and is retried elsewhere.
            Err(_) => peer._address.clone(),
        },
    };
    peer.options.connection_timeout = Some(policy.connect_timeout);
    peer.options.read_timeout = Some(policy.response_header_timeout);
    peer.options.write_timeout = Some(policy.response_header_timeout);
    peer.options.idle_timeout = Some(policy.idle_timeout);
    peer
}

impl Upstream {
    /// The proxy's side of the pool `settings` names, with no worker yet.
    pub(crate) fn new(settings: &PoolConfig, metrics: Arc<Metrics>) -> Arc<Upstream> {
        let name = settings.name.as_str();
        let settings = Arc::new(settings.clone());
        Arc::new(Upstream {
            name: Arc::from(name),
            table: ArcSwap::from_pointee(Table {
                selector: Selector::new(&settings.upstream.lb, &[]),
                settings,
                entries: Box::new([]),
                max_out: 0,
            }),
            eject: EjectClock::default(),
            room: Arc::new(tokio::sync::Notify::new()),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            requests: metrics.pool_requests(name),
            metrics,
        })
    }

    /// The current table (cheap: no lock, no allocation).
    pub(crate) fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// How many workers take traffic now.
    #[cfg(test)]
    pub(crate) fn ready(&self) -> usize {
        self.table.load().entries.len()
    }

    /// The worker for the next attempt, never one in `tried` (member ids), and
    /// with room under `max_in_flight`. Ejected workers are left out unless nothing
    /// else is left. `None` when no worker can take it now.
    pub(crate) fn select(&self, tried: &[u64], key: Option<u64>) -> Option<Lease> {
        let table = self.table.load();
        let room = table.upstream().max_in_flight;
        let view = RequestView {
            entries: &table.entries,
            tried,
            ejection: Some(&self.eject),
            room,
        };
        // A worker picked with room may lose it to another thread first; then the
        // view sees it full and picks again.
        for _ in 0..=table.entries.len() {
            let i = table.selector.pick(&view, key).or_else(|| {
                if !self.eject.any_out() {
                    return None;
                }
                let all = RequestView {
                    ejection: None,
                    ..view
                };
                table.selector.pick(&all, key)
            })?;
            let entry = &table.entries[i];
            if entry.member.try_begin(room) {
                entry.in_flight.inc();
                return Some(Lease(entry.clone(), room.map(|_| self.room.clone()), None));
            }
        }
        None
    }

    /// The worker for the next attempt as `select`, or, when every worker that
    /// could take it is at `max_in_flight`, after waiting in the pool's queue.
    pub(crate) async fn admit(&self, tried: &[u64], key: Option<u64>) -> Result<Lease, Refusal> {
        if let Some(lease) = self.select(tried, key) {
            return Ok(lease);
        }
        let table = self.table.load_full();
        if table.entries.is_empty() {
            return Err(Refusal::NoWorker);
        }
        let untried = table.entries.iter().any(|e| !tried.contains(&e.member.id));
        if table.upstream().max_in_flight.is_none() || !untried {
            return Err(if tried.is_empty() {
                Refusal::NoWorker
            } else {
                Refusal::NoOther
            });
        }
        let queue = table.upstream().queue;
        drop(table);
        use std::sync::atomic::Ordering::Relaxed;
        let full = self
            .waiting
            .fetch_update(Relaxed, Relaxed, |n| (n < queue.max).then_some(n + 1))
            .is_err();
        if full {
            self.requests.queue_rejections[0].inc();
            return Err(Refusal::QueueFull);
        }
        self.requests.queue_depth.inc();
        let started = tokio::time::Instant::now();
        let deadline = started + queue.timeout;
        let outcome = loop {
            let notified = self.room.notified();
            if let Some(lease) = self.select(tried, key) {
                break Ok(lease);
            }
            if self.table.load().entries.is_empty() {
                break Err(Refusal::NoWorker);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break self.select(tried, key).ok_or(Refusal::QueueTimeout);
            }
        };
        self.waiting.fetch_sub(1, Relaxed);
        self.requests.queue_depth.dec();
        self.requests
            .queue_wait
            .observe(started.elapsed().as_secs_f64());
        match &outcome {
            // Another request may be waiting for room this one did not take.
            Ok(_) => self.room.notify_one(),
            Err(Refusal::QueueTimeout) => self.requests.queue_rejections[1].inc(),
            Err(_) => {}
        }
        outcome
    }

    /// Record an attempt's result on `entry` for outlier ejection.
    pub(crate) fn record(&self, entry: &Entry, failed: bool) {
        let table = self.table.load();
        let ejector = Ejector {
            policy: table.upstream().eject,
            clock: &self.eject,
            max_out: table.max_out,
        };
        if let Outcome::Ejected(d) = ejector.record(&entry.eject, failed) {
            entry.ejections.inc();
            tracing::warn!(
                event = crate::events::EJECTION,
                pool = %self.name,
                worker = entry.member.slot.index(),
                endpoint = %entry.member.endpoint,
                duration_ms = d.as_millis() as u64,
                "worker ejected after consecutive failures"
            );
        }
    }
}

impl Balance for Upstream {
    fn update(&self, settings: &Arc<PoolConfig>, members: &[Arc<Member>]) {
        let old = self.table.load();
        let policy = &settings.upstream;
        let same_policy = *policy == old.settings.upstream;
        let entries: Box<[Arc<Entry>]> = members
            .iter()
            .map(|m| {
                let kept = old.entries.iter().find(|e| e.member.id == m.id);
                match kept {
                    Some(e) if same_policy => e.clone(),
                    _ => {
                        let worker = m.slot.label();
                        Arc::new(Entry {
                            member: m.clone(),
                            peer: peer(&m.endpoint, policy),
                            weight: policy.weights.get(m.slot.index()).copied().unwrap_or(1),
                            hash_id: m.slot.hash_id(),
                            eject: kept.map_or_else(Default::default, |e| e.eject.clone()),
                            in_flight: self.metrics.worker_in_flight(&self.name, &worker),
                            ejections: self.metrics.worker_ejections(&self.name, &worker),
                        })
                    }
                }
            })
            .collect();
        // A worker that left while ejected gives its place back.
        for gone in old
            .entries
            .iter()
            .filter(|e| !members.iter().any(|m| m.id == e.member.id))
        {
            self.eject.release(&gone.eject);
        }
        let weights: Vec<u32> = entries.iter().map(|e| e.weight).collect();
        self.table.store(Arc::new(Table {
            selector: Selector::new(&policy.lb, &weights),
            max_out: max_out(policy.eject, entries.len()),
            settings: settings.clone(),
            entries,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EjectPolicy, HashKey, LbPolicy};
    use crate::pool::Pool;
    use crate::slot::SlotId;
    use std::time::Duration;

    fn member(slot: usize, endpoint: &str) -> Arc<Member> {
        Arc::new(Member::new(
            SlotId(slot),
            endpoint.parse().unwrap(),
            Default::default(),
        ))
    }

    fn pool(policy: impl FnOnce(&mut UpstreamPolicy)) -> (Arc<Pool>, Arc<Upstream>) {
        let metrics = Arc::new(Metrics::new(&["web"], &[]));
        let mut config = crate::config::test_pool("web");
        policy(&mut config.upstream);
        let up = Upstream::new(&config, metrics);
        (Pool::new(config, up.clone()), up)
    }

    fn pick(up: &Upstream, tried: &[u64], key: Option<u64>) -> Option<usize> {
        up.select(tried, key).map(|l| l.entry().member.slot.index())
    }

    #[test]
    fn selects_only_admitted_workers_and_never_a_tried_one() {
        let (pool, up) = pool(|_| {});
        assert_eq!(pick(&up, &[], None), None);
        let (a, b) = (member(0, "127.0.0.1:9001"), member(1, "unix:/tmp/w1.sock"));
        pool.admit(a.clone());
        pool.admit(b.clone());
        assert_eq!(up.ready(), 2);
        let picks: Vec<_> = (0..10).map(|_| pick(&up, &[], None).unwrap()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 5, "{picks:?}");
        assert_eq!(pick(&up, &[a.id], None), Some(1));
        assert_eq!(pick(&up, &[a.id, b.id], None), None);
        pool.withdraw(&a);
        assert_eq!(up.ready(), 1);
        assert!((0..5).all(|_| pick(&up, &[], None) == Some(1)));
    }

    #[test]
    fn a_lease_counts_in_flight_and_sent_until_dropped() {
        let (pool, up) = pool(|_| {});
        let a = member(0, "127.0.0.1:9001");
        pool.admit(a.clone());
        let lease = up.select(&[], None).unwrap();
        assert_eq!((a.in_flight(), a.sent()), (1, 1));
        assert_eq!(lease.entry().in_flight.get(), 1);
        drop(lease);
        assert_eq!((a.in_flight(), a.sent()), (0, 1));
    }

    #[test]
    fn weights_and_hash_keys_follow_the_slot_not_the_endpoint() {
        let (pool, up) = pool(|p| {
            p.lb = LbPolicy::Hash(HashKey::ClientIp);
            p.weights = vec![1, 1, 1];
        });
        let ms: Vec<_> = (0..3)
            .map(|i| member(i, &format!("127.0.0.1:{}", 9001 + i)))
            .collect();
        for m in &ms {
            pool.admit(m.clone());
        }
        let keys: Vec<u64> = (0..200).map(crate::slot::mix).collect();
        let before: Vec<_> = keys.iter().map(|k| pick(&up, &[], Some(*k))).collect();
        // Slot 1 is replaced by a process on a spare port: its keys stay with slot 1.
        let replacement = member(1, "127.0.0.1:9009");
        pool.admit(replacement.clone());
        pool.withdraw(&ms[1]);
        let after: Vec<_> = keys.iter().map(|k| pick(&up, &[], Some(*k))).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn a_new_policy_applies_to_the_next_request() {
        let (pool, up) = pool(|_| {});
        for i in 0..3 {
            pool.admit(member(i, &format!("127.0.0.1:{}", 9001 + i)));
        }
        let rotates = |up: &Upstream| {
            let picks: Vec<_> = (0..6).map(|_| pick(up, &[], Some(42)).unwrap()).collect();
            picks.iter().collect::<std::collections::HashSet<_>>().len() > 1
        };
        assert!(rotates(&up), "round robin ignores the key");
        let mut next = (*pool.settings()).clone();
        next.upstream.lb = LbPolicy::Hash(HashKey::Header("x-k".into()));
        next.upstream.retries = 0;
        pool.replace(Arc::new(next));
        assert!(!rotates(&up), "hash sticks");
        assert_eq!(up.table().upstream().retries, 0);
    }

    #[test]
    fn ejected_workers_are_skipped_unless_nothing_else_is_left() {
        let (pool, up) = pool(|p| {
            p.eject = Some(EjectPolicy {
                consecutive_failures: 2,
                base_time: Duration::from_secs(60),
                max_time: Duration::from_secs(60),
                max_percent: 100,
            });
        });
        let (a, b) = (member(0, "127.0.0.1:9001"), member(1, "127.0.0.1:9002"));
        pool.admit(a.clone());
        pool.admit(b.clone());
        let entry = up.table().entries[0].clone();
        up.record(&entry, true);
        up.record(&entry, true);
        assert_eq!(entry.ejections.get(), 1);
        assert!((0..6).all(|_| pick(&up, &[], None) == Some(1)));
        assert_eq!(pick(&up, &[b.id], None), Some(0), "ejected beats nothing");
        // The ejected process leaves; its replacement starts clean.
        pool.withdraw(&a);
        assert!(!up.eject.any_out());
        pool.admit(member(0, "127.0.0.1:9003"));
        assert!((0..6).any(|_| pick(&up, &[], None) == Some(0)));
    }
}
