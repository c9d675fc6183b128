//! The status board: one [`SlotStatus`] per worker slot, grouped by pool, plus the
//! last result of every lifecycle hook.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::report::{
    ExitReport, HangReport, HookReport, PoolReport, PreloaderReport, StatusReport, WorkerReport,
};
use crate::process::usage;
use crate::slot::WorkerState;

pub(crate) struct StatusBoard {
    started: Instant,
    /// In config order. Pools come and go only with a config reload.
    pools: RwLock<Vec<Arc<PoolStatus>>>,
    hooks: Mutex<Vec<HookReport>>,
    /// Bumped on every state change, so waiters need not poll.
    changes: Arc<watch::Sender<u64>>,
}

pub(crate) struct PoolStatus {
    pub name: Arc<str>,
    slots: RwLock<Vec<Arc<SlotStatus>>>,
    /// A preload pool's live preloaders (two while a rolling restart runs).
    preloaders: RwLock<Vec<Arc<PreloaderStatus>>>,
    /// The last [`HANGS_KEPT`] hangs, oldest first.
    hangs: Mutex<std::collections::VecDeque<HangReport>>,
    changes: Arc<watch::Sender<u64>>,
}

/// How many hang records a pool keeps for `/status`.
pub(crate) const HANGS_KEPT: usize = 5;

/// One preloader (one generation of a preload pool) as the board knows it.
pub(crate) struct PreloaderStatus {
    pub generation: u64,
    inner: Mutex<PreloaderInner>,
    changes: Arc<watch::Sender<u64>>,
}

#[derive(Debug, Clone, Default)]
struct PreloaderInner {
    state: &'static str,
    pid: Option<i32>,
    spawned_at: Option<Instant>,
    restarts: u64,
    import_seconds: Option<f64>,
    last_exit: Option<LastExit>,
    last_error: Option<String>,
}

/// One worker slot as the board knows it.
pub(crate) struct SlotStatus {
    pub slot: usize,
    pub port: u16,
    inner: Mutex<SlotInner>,
    /// Requests the current process answered; reset at each spawn.
    served: Arc<AtomicU64>,
    changes: Arc<watch::Sender<u64>>,
}

#[derive(Debug, Clone)]
struct SlotInner {
    state: WorkerState,
    pid: Option<i32>,
    spawned_at: Option<Instant>,
    restarts: u64,
    last_exit: Option<LastExit>,
}

/// How a slot's or a preloader's last process ended: `reason` is the metrics'
/// reason label, `status` the exit as text ("exit code 3", "signal SIGKILL").
#[derive(Debug, Clone)]
struct LastExit {
    reason: &'static str,
    status: String,
    at: SystemTime,
}

impl LastExit {
    fn now(reason: &'static str, status: String) -> LastExit {
        LastExit {
            reason,
            status,
            at: SystemTime::now(),
        }
    }

    fn report(self) -> ExitReport {
        ExitReport {
            reason: self.reason.to_owned(),
            status: self.status,
            at_unix: unix_seconds(self.at),
            seconds_ago: SystemTime::now()
                .duration_since(self.at)
                .unwrap_or_default()
                .as_secs_f64(),
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

impl StatusBoard {
    /// A board for `pools`, in config order, with no workers yet: each worker actor
    /// attaches its own entry while it runs.
    pub(crate) fn new<'a>(pools: impl IntoIterator<Item = &'a str>) -> Arc<StatusBoard> {
        let changes = Arc::new(watch::channel(0u64).0);
        let board = Arc::new(StatusBoard {
            started: Instant::now(),
            pools: RwLock::new(Vec::new()),
            hooks: Mutex::new(Vec::new()),
            changes,
        });
        for name in pools {
            board.add_pool(name);
        }
        board
    }

    pub(crate) fn pools(&self) -> Vec<Arc<PoolStatus>> {
        self.pools.read().clone()
    }

    #[cfg(test)]
    pub(crate) fn pool(&self, name: &str) -> Option<Arc<PoolStatus>> {
        self.pools.read().iter().find(|p| &*p.name == name).cloned()
    }

    /// The pool `name`, added (with no slots) at the end if new.
    pub(crate) fn add_pool(&self, name: &str) -> Arc<PoolStatus> {
        let mut pools = self.pools.write();
        if let Some(p) = pools.iter().find(|p| &*p.name == name) {
            return p.clone();
        }
        let pool = Arc::new(PoolStatus {
            name: Arc::from(name),
            slots: RwLock::new(Vec::new()),
            preloaders: RwLock::new(Vec::new()),
            hangs: Mutex::new(std::collections::VecDeque::new()),
            changes: self.changes.clone(),
        });
        pools.push(pool.clone());
        self.changes.send_modify(|v| *v += 1);
        pool
    }

    /// A receiver that sees a new value after every change on the board.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether every pool has at least one ready worker.
    pub(crate) fn all_pools_ready(&self) -> bool {
        self.pools
            .read()
            .iter()
            .all(|p| p.count(WorkerState::Ready) > 0)
    }

    /// Make a lifecycle hook known before it first runs (`last_result: null`).
    pub(crate) fn declare_hook(&self, pool: &str, phase: &str, hook: &str) {
        self.hook_entry(pool, phase, hook, |_| {});
    }

    /// Record that a hook run ended with `result` (`ok`, or a failure reason).
    pub(crate) fn hook_finished(
        &self,
        pool: &str,
        phase: &str,
        hook: &str,
        result: &str,
        took: Duration,
    ) {
        let now = unix_seconds(SystemTime::now());
        self.hook_entry(pool, phase, hook, |h| {
            h.runs += 1;
            if result != "ok" {
                h.failures += 1;
            }
            h.last_result = Some(result.to_owned());
            h.last_run_unix = Some(now);
            h.last_duration_seconds = Some(took.as_secs_f64());
        });
        self.changes.send_modify(|v| *v += 1);
    }

    fn hook_entry(&self, pool: &str, phase: &str, hook: &str, f: impl FnOnce(&mut HookReport)) {
        let mut hooks = self.hooks.lock();
        let idx = match hooks
            .iter()
            .position(|h| h.pool == pool && h.phase == phase && h.hook == hook)
        {
            Some(i) => i,
            None => {
                hooks.push(HookReport {
                    pool: pool.to_owned(),
                    phase: phase.to_owned(),
                    hook: hook.to_owned(),
                    runs: 0,
                    failures: 0,
                    last_result: None,
                    last_run_unix: None,
                    last_run_seconds_ago: None,
                    last_duration_seconds: None,
                });
                hooks.len() - 1
            }
        };
        f(&mut hooks[idx]);
    }

    /// A snapshot of everything, with each live worker's RSS and CPU read now.
    pub(crate) fn report(&self, not_ready: Option<String>) -> StatusReport {
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ready: not_ready.is_none(),
            not_ready_reason: not_ready,
            pools: self.pools().iter().map(|p| p.report()).collect(),
            hooks: {
                let now = unix_seconds(SystemTime::now());
                let mut hooks = self.hooks.lock().clone();
                for h in &mut hooks {
                    h.last_run_seconds_ago = h.last_run_unix.map(|t| (now - t).max(0.0));
                }
                hooks
            },
        }
    }
}

impl PoolStatus {
    /// A new entry for a worker actor of `slot` on `port` (state `backoff`, nothing
    /// running). During a rolling replacement a slot has two: the old worker and
    /// the new one.
    pub(crate) fn attach(&self, slot: usize, port: u16) -> Arc<SlotStatus> {
        let mut slots = self.slots.write();
        let s = Arc::new(SlotStatus {
            slot,
            port,
            inner: Mutex::new(SlotInner {
                state: WorkerState::Backoff,
                pid: None,
                spawned_at: None,
                restarts: 0,
                last_exit: None,
            }),
            served: Arc::new(AtomicU64::new(0)),
            changes: self.changes.clone(),
        });
        slots.push(s.clone());
        // Stable: an older worker of the same slot stays first.
        slots.sort_by_key(|s| s.slot);
        drop(slots);
        self.changes.send_modify(|v| *v += 1);
        s
    }

    /// Remove an actor's entry when the actor ends. `true` if another entry for the
    /// same slot remains (a replacement is running).
    pub(crate) fn detach(&self, entry: &Arc<SlotStatus>) -> bool {
        let mut slots = self.slots.write();
        slots.retain(|s| !Arc::ptr_eq(s, entry));
        let others = slots.iter().any(|s| s.slot == entry.slot);
        drop(slots);
        self.changes.send_modify(|v| *v += 1);
        others
    }

    pub(crate) fn slots(&self) -> Vec<Arc<SlotStatus>> {
        self.slots.read().clone()
    }

    /// A new entry for the preloader of generation `generation` (state `starting`).
    pub(crate) fn attach_preloader(&self, generation: u64) -> Arc<PreloaderStatus> {
        let p = Arc::new(PreloaderStatus {
            generation,
            inner: Mutex::new(PreloaderInner {
                state: "starting",
                ..PreloaderInner::default()
            }),
            changes: self.changes.clone(),
        });
        self.preloaders.write().push(p.clone());
        self.changes.send_modify(|v| *v += 1);
        p
    }

    /// Remove a preloader's entry when it has stopped for good.
    pub(crate) fn detach_preloader(&self, entry: &Arc<PreloaderStatus>) {
        self.preloaders.write().retain(|p| !Arc::ptr_eq(p, entry));
        self.changes.send_modify(|v| *v += 1);
    }

    pub(crate) fn preloaders(&self) -> Vec<Arc<PreloaderStatus>> {
        self.preloaders.read().clone()
    }

    /// Keep a hang record (the oldest goes beyond [`HANGS_KEPT`]).
    pub(crate) fn hang(&self, report: HangReport) {
        let mut hangs = self.hangs.lock();
        if hangs.len() == HANGS_KEPT {
            hangs.pop_front();
        }
        hangs.push_back(report);
        drop(hangs);
        self.changes.send_modify(|v| *v += 1);
    }

    pub(crate) fn count(&self, state: WorkerState) -> usize {
        self.slots
            .read()
            .iter()
            .filter(|s| s.state() == state)
            .count()
    }

    fn report(&self) -> PoolReport {
        let workers: Vec<WorkerReport> = self.slots().iter().map(|s| s.report()).collect();
        PoolReport {
            name: self.name.to_string(),
            workers_total: workers.len(),
            workers_ready: workers
                .iter()
                .filter(|w| w.state == WorkerState::Ready.as_str())
                .count(),
            restarts: workers.iter().map(|w| w.restarts).sum(),
            degraded: false,
            workers,
            preloaders: self.preloaders().iter().map(|p| p.report()).collect(),
            hangs: self.hangs.lock().iter().cloned().collect(),
        }
    }
}

impl PreloaderStatus {
    fn update(&self, f: impl FnOnce(&mut PreloaderInner)) {
        f(&mut self.inner.lock());
        self.changes.send_modify(|v| *v += 1);
    }

    pub(crate) fn pid(&self) -> Option<i32> {
        self.inner.lock().pid
    }

    /// A new preloader process `pid` is importing the app.
    pub(crate) fn spawned(&self, pid: i32) {
        self.update(|i| {
            i.state = "starting";
            i.pid = Some(pid);
            i.spawned_at = Some(Instant::now());
        });
    }

    /// It imported the app in `seconds` and forks on request.
    pub(crate) fn ready(&self, seconds: f64) {
        self.update(|i| {
            i.state = "ready";
            i.import_seconds = Some(seconds);
            i.last_error = None;
        });
    }

    /// It could not import the app (the traceback's tail), or failed otherwise.
    pub(crate) fn failed(&self, error: &str) {
        self.update(|i| i.last_error = Some(error.to_owned()));
    }

    /// Its process is gone: `reason` is the restart reason label, `status` the
    /// exit as text; `state` is what comes next (`backoff` or `stopped`).
    pub(crate) fn exited(&self, reason: &'static str, status: String, state: &'static str) {
        self.update(|i| {
            i.state = state;
            i.pid = None;
            i.spawned_at = None;
            i.last_exit = Some(LastExit::now(reason, status));
        });
    }

    pub(crate) fn restarting(&self) {
        self.update(|i| i.restarts += 1);
    }

    pub(crate) fn set_state(&self, state: &'static str) {
        self.update(|i| i.state = state);
    }

    fn report(&self) -> PreloaderReport {
        let i = self.inner.lock().clone();
        let memory = i.pid.and_then(usage::memory);
        PreloaderReport {
            generation: self.generation,
            pid: i.pid,
            state: i.state.to_owned(),
            uptime_seconds: i.spawned_at.map(|t| t.elapsed().as_secs_f64()),
            restarts: i.restarts,
            import_seconds: i.import_seconds,
            last_exit: i.last_exit.map(LastExit::report),
            last_error: i.last_error,
            rss_bytes: i.pid.and_then(usage::read).map(|u| u.rss_bytes),
            pss_bytes: memory.map(|m| m.pss_bytes),
        }
    }
}

impl SlotStatus {
    pub(crate) fn state(&self) -> WorkerState {
        self.inner.lock().state
    }

    pub(crate) fn pid(&self) -> Option<i32> {
        self.inner.lock().pid
    }

    /// The counter the proxy bumps for each request this slot's process answers.
    pub(crate) fn served_counter(&self) -> Arc<AtomicU64> {
        self.served.clone()
    }

    fn update(&self, f: impl FnOnce(&mut SlotInner)) {
        f(&mut self.inner.lock());
        self.changes.send_modify(|v| *v += 1);
    }

    pub(crate) fn set_state(&self, state: WorkerState) {
        self.update(|i| i.state = state);
    }

    /// A new process `pid` runs in this slot.
    pub(crate) fn spawned(&self, pid: i32) {
        self.served.store(0, Ordering::Relaxed);
        self.update(|i| {
            i.pid = Some(pid);
            i.spawned_at = Some(Instant::now());
        });
    }

    /// The slot's process is gone: `reason` is the metrics' reason label, `status`
    /// the exit as text ("exit code 3", "signal SIGKILL").
    pub(crate) fn exited(&self, reason: &'static str, status: String) {
        self.update(|i| {
            i.pid = None;
            i.spawned_at = None;
            i.last_exit = Some(LastExit::now(reason, status));
        });
    }

    /// The slot will be started again.
    pub(crate) fn restarting(&self) {
        self.update(|i| i.restarts += 1);
    }

    fn report(&self) -> WorkerReport {
        let i = self.inner.lock().clone();
        let usage = i.pid.and_then(usage::read);
        let memory = i.pid.and_then(usage::memory);
        WorkerReport {
            slot: self.slot,
            port: self.port,
            pid: i.pid,
            state: i.state.as_str().to_owned(),
            uptime_seconds: i.spawned_at.map(|t| t.elapsed().as_secs_f64()),
            restarts: i.restarts,
            last_exit: i.last_exit.map(LastExit::report),
            requests_served: self.served.load(Ordering::Relaxed),
            rss_bytes: usage.map(|u| u.rss_bytes),
            pss_bytes: memory.map(|m| m.pss_bytes),
            uss_bytes: memory.map(|m| m.uss_bytes),
            cpu_seconds: usage.map(|u| u.cpu_seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_life_shows_in_the_report() {
        let board = StatusBoard::new(["web", "api"]);
        let mut changes = board.subscribe();
        let web = board.pool("web").unwrap();
        let s0 = web.attach(0, 9001);
        let s1 = web.attach(1, 9002);
        assert!(!board.all_pools_ready());
        s0.set_state(WorkerState::Starting);
        s0.spawned(std::process::id() as i32);
        s0.set_state(WorkerState::Ready);
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        s0.served_counter().fetch_add(3, Ordering::Relaxed);

        let r = board.report(None);
        assert!(r.ready);
        let w = &r.pools[0].workers[0];
        assert_eq!((w.slot, w.port, w.state.as_str()), (0, 9001, "ready"));
        assert_eq!(w.requests_served, 3);
        assert!(w.rss_bytes.unwrap() > 0, "our own pid has an RSS");
        assert_eq!(r.pools[0].workers_ready, 1);
        assert_eq!(r.pools[0].workers_total, 2);

        s0.exited("signal", "signal SIGKILL".into());
        s0.restarting();
        s0.set_state(WorkerState::Backoff);
        let w = &board.report(None).pools[0].workers[0];
        assert_eq!(w.pid, None);
        assert_eq!(w.rss_bytes, None);
        assert_eq!(w.restarts, 1);
        assert_eq!(w.last_exit.as_ref().unwrap().reason, "signal");

        // A rolling replacement: a second entry for slot 1, then the old one leaves.
        let s1_new = web.attach(1, 9003);
        assert_eq!(board.report(None).pools[0].workers_total, 3);
        assert!(web.detach(&s1), "the new worker of slot 1 remains");
        assert!(!web.detach(&s1_new), "now slot 1 is gone");
        assert_eq!(board.report(None).pools[0].workers_total, 1);

        s0.set_state(WorkerState::Ready);
        assert!(!board.all_pools_ready(), "api has no ready worker");
        board
            .pool("api")
            .unwrap()
            .attach(0, 9100)
            .set_state(WorkerState::Ready);
        assert!(board.all_pools_ready());
    }

    #[test]
    fn hooks_are_listed_with_their_last_result() {
        let board = StatusBoard::new(["web"]);
        assert!(board.report(None).hooks.is_empty());
        board.declare_hook("web", "post_spawn", "warm");
        assert_eq!(board.report(None).hooks[0].last_result, None);
        board.hook_finished(
            "web",
            "post_spawn",
            "warm",
            "timeout",
            Duration::from_secs(5),
        );
        board.hook_finished("web", "post_spawn", "warm", "ok", Duration::from_millis(5));
        let h = &board.report(None).hooks[0];
        assert_eq!((h.runs, h.failures), (2, 1));
        assert_eq!(h.last_result.as_deref(), Some("ok"));
    }
}
