//! One pool at run time: the one owner of its settings, and the meeting point of
//! the supervisor, which decides which worker processes take traffic, and the proxy,
//! which sends them requests.
//!
//! - **Settings.** A [`Pool`] holds the pool's current [`PoolConfig`] behind an
//!   `ArcSwap`. A reload replaces it whole ([`Pool::replace`]); every reader asks
//!   the pool for the current value when it needs one and never keeps a copy, so a
//!   reload cannot be half applied. The keys that define a worker process
//!   (`command`, `env`, `cwd`, `pre_fork`/`post_fork` hooks) are the one exception:
//!   a running process keeps the generation it was started with until a rolling
//!   replacement gives its slot a new one (see `control::plan`).
//! - **Members.** A [`Member`] is one ready worker process: its slot, its endpoint,
//!   and the counters the proxy keeps for it. The supervisor admits a member when
//!   its process is ready and withdraws it before stopping it or as soon as it
//!   exited.
//! - **Requests in flight.** With `hang:` set, each member also lists the
//!   requests in flight on its process ([`pending`]): the proxy writes it, the
//!   supervisor reads it to find hung requests.
//! - **Balance.** Each change (settings or members) hands the whole new picture to
//!   the pool's [`Balance`] (the proxy's balancer), which rebuilds what it derives
//!   from it (selection schedule, peers) and swaps that in whole too, the way
//!   Pingora's `LoadBalancer::update` rebuilds its selector. The supervisor depends
//!   on this trait, not on the proxy.
//! - **Farewell.** Before a worker that was drained is stopped on purpose (a
//!   recycle, a rolling replacement, a scale-down), the supervisor calls
//!   [`Pool::farewell`]: the last moment to read what the idle worker served
//!   (`worker_metrics` scrapes it then, so its counts since the last scrape of
//!   `/metrics` are not lost). The supervisor depends on the [`Farewell`] trait,
//!   not on `worker_metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::PoolConfig;
use crate::slot::{Endpoint, SlotId};

pub(crate) mod pending;

use pending::Pending;

/// One ready worker process as the proxy uses it.
#[derive(Debug)]
pub(crate) struct Member {
    /// Unique for the life of forkyard (a new process of a slot is a new member).
    pub id: u64,
    pub slot: SlotId,
    pub endpoint: Endpoint,
    /// Requests being proxied to this process now.
    in_flight: AtomicI64,
    /// Requests ever sent to this process (for `recycle.max_requests`).
    sent: AtomicU64,
    /// The status board's "requests served" counter of this process.
    served: Arc<AtomicU64>,
    /// Its requests in flight, for `hang:` (empty when the pool has none).
    pending: Pending,
}

impl Member {
    pub(crate) fn new(slot: SlotId, endpoint: Endpoint, served: Arc<AtomicU64>) -> Member {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Member {
            id: NEXT.fetch_add(1, Relaxed),
            slot,
            endpoint,
            in_flight: AtomicI64::new(0),
            sent: AtomicU64::new(0),
            served,
            pending: Pending::default(),
        }
    }

    /// Its requests in flight (filled only while the pool has `hang:`).
    pub(crate) fn pending(&self) -> &Pending {
        &self.pending
    }

    /// A request starts on this process, if it has room under `max` requests in
    /// flight (no limit when `None`).
    pub(crate) fn try_begin(&self, max: Option<u32>) -> bool {
        let room = match max {
            None => {
                self.in_flight.fetch_add(1, Relaxed);
                true
            }
            Some(max) => self
                .in_flight
                .fetch_update(Relaxed, Relaxed, |n| (n < i64::from(max)).then_some(n + 1))
                .is_ok(),
        };
        if room {
            self.sent.fetch_add(1, Relaxed);
        }
        room
    }

    /// A request starts on this process.
    #[cfg(test)]
    pub(crate) fn begin(&self) {
        self.try_begin(None);
    }

    /// A request on this process ended (answered or not).
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// One request was answered by this process.
    pub(crate) fn served(&self) {
        self.served.fetch_add(1, Relaxed);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed).max(0) as usize
    }

    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Wait until no request is in progress (the member was withdrawn first), at
    /// most `limit`. Returns how many were still running when it gave up.
    pub(crate) async fn drain(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = self.in_flight();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What a pool tells its balancer after every change.
pub(crate) trait Balance: Send + Sync {
    /// The pool now runs `settings`, and `members` take traffic (in admission order).
    fn update(&self, settings: &Arc<PoolConfig>, members: &[Arc<Member>]);
}

/// What is done with a drained worker just before it is stopped on purpose.
pub(crate) trait Farewell: Send + Sync {
    /// Bounded in time by the implementation.
    fn last_call<'a>(
        &'a self,
        pool: &'a Pool,
        member: &'a Arc<Member>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

pub(crate) struct Pool {
    pub name: Arc<str>,
    settings: ArcSwap<PoolConfig>,
    /// Writers serialise here; the balancer gets each new picture in order.
    members: Mutex<Vec<Arc<Member>>>,
    ready: AtomicUsize,
    balance: Arc<dyn Balance>,
    /// Bumped by every `replace`, so a worker actor that is waiting re-reads the
    /// settings (a health check turned on, say) without polling.
    changes: tokio::sync::watch::Sender<u64>,
    farewell: OnceLock<Weak<dyn Farewell>>,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig, balance: Arc<dyn Balance>) -> Arc<Pool> {
        let settings = Arc::new(config);
        balance.update(&settings, &[]);
        Arc::new(Pool {
            name: Arc::from(settings.name.as_str()),
            settings: ArcSwap::new(settings),
            members: Mutex::new(Vec::new()),
            ready: AtomicUsize::new(0),
            balance,
            changes: tokio::sync::watch::channel(0).0,
            farewell: OnceLock::new(),
        })
    }

    /// The settings the pool runs now.
    pub(crate) fn settings(&self) -> Arc<PoolConfig> {
        self.settings.load_full()
    }

    /// Run `config` from now on (a reload).
    pub(crate) fn replace(&self, config: Arc<PoolConfig>) {
        let members = self.members.lock();
        self.settings.store(config.clone());
        self.balance.update(&config, &members);
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that sees a new value after every `replace`.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// `member` takes traffic from now on.
    pub(crate) fn admit(&self, member: Arc<Member>) {
        let mut members = self.members.lock();
        if members.iter().any(|m| m.id == member.id) {
            return;
        }
        members.push(member);
        self.ready.store(members.len(), Relaxed);
        self.balance.update(&self.settings.load_full(), &members);
    }

    /// `member` gets no new request from now on (requests in flight go on).
    pub(crate) fn withdraw(&self, member: &Member) {
        let mut members = self.members.lock();
        let before = members.len();
        members.retain(|m| m.id != member.id);
        if members.len() != before {
            self.ready.store(members.len(), Relaxed);
            self.balance.update(&self.settings.load_full(), &members);
        }
    }

    /// Who sees drained workers before they are stopped on purpose (set once).
    pub(crate) fn set_farewell(&self, farewell: Weak<dyn Farewell>) {
        let _ = self.farewell.set(farewell);
    }

    /// `member` was withdrawn and drained, and is about to be stopped on purpose.
    pub(crate) async fn farewell(&self, member: &Arc<Member>) {
        if let Some(f) = self.farewell.get().and_then(Weak::upgrade) {
            f.last_call(self, member).await;
        }
    }

    /// The worker processes that take traffic now.
    pub(crate) fn members(&self) -> Vec<Arc<Member>> {
        self.members.lock().clone()
    }

    /// How many worker processes take traffic.
    pub(crate) fn ready(&self) -> usize {
        self.ready.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Seen(Mutex<Vec<(String, Vec<usize>)>>);

    impl Balance for Seen {
        fn update(&self, settings: &Arc<PoolConfig>, members: &[Arc<Member>]) {
            self.0.lock().push((
                settings.command.join(" "),
                members.iter().map(|m| m.slot.index()).collect(),
            ));
        }
    }

    #[test]
    fn every_change_reaches_the_balancer_whole() {
        let config = crate::config::test_pool("web");
        let seen = Arc::new(Seen(Mutex::new(Vec::new())));
        let pool = Pool::new(config.clone(), seen.clone());
        let a = Arc::new(Member::new(
            SlotId(0),
            "127.0.0.1:9001".parse().unwrap(),
            Default::default(),
        ));
        let b = Arc::new(Member::new(
            SlotId(1),
            "127.0.0.1:9002".parse().unwrap(),
            Default::default(),
        ));
        pool.admit(a.clone());
        pool.admit(b.clone());
        pool.admit(a.clone());
        assert_eq!(pool.ready(), 2);
        let mut next = config.clone();
        next.command = vec!["new".into()];
        pool.replace(Arc::new(next));
        assert_eq!(pool.settings().command, ["new"]);
        pool.withdraw(&a);
        pool.withdraw(&a);
        assert_eq!(pool.ready(), 1);
        let seen: Vec<_> = seen
            .0
            .lock()
            .iter()
            .map(|(c, m)| (c.clone(), m.clone()))
            .collect();
        let old = config.command.join(" ");
        assert_eq!(
            seen,
            [
                (old.clone(), vec![]),
                (old.clone(), vec![0]),
                (old, vec![0, 1]),
                ("new".into(), vec![0, 1]),
                ("new".into(), vec![1]),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_requests_in_flight() {
        let m = Member::new(
            SlotId(0),
            "127.0.0.1:1".parse().unwrap(),
            Default::default(),
        );
        m.begin();
        assert_eq!(m.drain(Duration::from_millis(30)).await, 1, "gives up");
        m.end();
        assert_eq!(m.drain(Duration::from_secs(5)).await, 0);
        assert_eq!(m.sent(), 1);
    }
}
