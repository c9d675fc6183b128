//! A fake child for the supervisor's unit tests: [`FakeOs`] implements the
//! actor's seam ([`Processes`]) with no process at all. A "process" is a pid and an
//! exit channel; signals end it (SIGKILL always, the stop signal unless told to
//! ignore it); probes answer what the test decided for the generation and slot it
//! was launched with. Time is tokio's paused clock.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::launch::{Launched, Processes, Ran};
use crate::config::{Hook, PoolConfig, ReadyProbe};
use crate::hooks::{HookContext, HookFailure};
use crate::metrics::Metrics;
use crate::pool::{Balance, Member, Pool};
use crate::process::{ExitStatus, SpawnError, SpawnSpec};
use crate::slot::Endpoint;
use crate::status::StatusBoard;

/// One launched fake process.
#[derive(Debug, Clone)]
pub(crate) struct FakeChild {
    pub(crate) pid: i32,
    /// The app's argv, joined.
    pub(crate) argv: String,
    pub(crate) worker: String,
    pub(crate) endpoint: String,
    pub(crate) alive: bool,
}

type ReadyRule = Box<dyn Fn(&FakeChild) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    next_pid: i32,
    children: Vec<FakeChild>,
    exits: HashMap<i32, oneshot::Sender<ExitStatus>>,
    signals: Vec<(i32, Signal)>,
    ignore_term: bool,
    /// The next health or ready probe panics (a forkyard bug, simulated).
    panic_on_probe: bool,
    /// The argv of every command run (`hang.dump`).
    commands: Vec<Vec<String>>,
    /// Each launched process's output tap, by pid.
    taps: HashMap<i32, crate::process::output::Tap>,
}

pub(crate) struct FakeOs {
    state: Mutex<State>,
    ready: Mutex<ReadyRule>,
    /// The settings of every generation asked for (`Processes::generation`).
    generations: Mutex<Vec<Arc<PoolConfig>>>,
    finished: std::sync::atomic::AtomicBool,
    /// While `false`, every hook run waits (see [`FakeOs::hold_hooks`]).
    hooks_open: tokio::sync::watch::Sender<bool>,
}

impl FakeOs {
    /// Every process becomes ready at its first probe.
    pub(crate) fn new() -> Arc<FakeOs> {
        Arc::new(FakeOs {
            state: Mutex::new(State {
                next_pid: 1000,
                ..State::default()
            }),
            ready: Mutex::new(Box::new(|_| true)),
            generations: Mutex::new(Vec::new()),
            finished: Default::default(),
            hooks_open: tokio::sync::watch::Sender::new(true),
        })
    }

    /// The settings of every generation the supervisor made, in order.
    pub(crate) fn generations(&self) -> Vec<Arc<PoolConfig>> {
        self.generations.lock().clone()
    }

    /// Whether the supervisor waited for the launchers at its end.
    pub(crate) fn finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Which processes pass their probes.
    pub(crate) fn ready_when(&self, rule: impl Fn(&FakeChild) -> bool + Send + Sync + 'static) {
        *self.ready.lock() = Box::new(rule);
    }

    /// Hooks run from now on wait until [`FakeOs::release_hooks`]: a test can act
    /// while an actor is inside a hook.
    pub(crate) fn hold_hooks(&self) {
        self.hooks_open.send_replace(false);
    }

    pub(crate) fn release_hooks(&self) {
        self.hooks_open.send_replace(true);
    }

    pub(crate) fn ignore_term(&self) {
        self.state.lock().ignore_term = true;
    }

    pub(crate) fn panic_at_next_probe(&self) {
        self.state.lock().panic_on_probe = true;
    }

    /// The argv of every command run so far.
    pub(crate) fn commands(&self) -> Vec<Vec<String>> {
        self.state.lock().commands.clone()
    }

    pub(crate) fn children(&self) -> Vec<FakeChild> {
        self.state.lock().children.clone()
    }

    pub(crate) fn alive(&self) -> Vec<FakeChild> {
        self.children().into_iter().filter(|c| c.alive).collect()
    }

    pub(crate) fn signals(&self) -> Vec<(i32, Signal)> {
        self.state.lock().signals.clone()
    }

    /// `pid` ends by itself with `status`.
    pub(crate) fn exit(&self, pid: i32, status: ExitStatus) {
        let mut s = self.state.lock();
        if let Some(tx) = s.exits.remove(&pid) {
            let _ = tx.send(status);
        }
        if let Some(c) = s.children.iter_mut().find(|c| c.pid == pid) {
            c.alive = false;
        }
    }
}

fn env<'a>(spec: &'a SpawnSpec, key: &str) -> &'a str {
    spec.env
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

#[async_trait]
impl Processes for FakeOs {
    async fn launch(&self, spec: &SpawnSpec, _: &HookContext) -> Result<Launched, SpawnError> {
        let mut s = self.state.lock();
        s.next_pid += 1;
        let pid = s.next_pid;
        let (tx, exit) = oneshot::channel();
        s.exits.insert(pid, tx);
        s.children.push(FakeChild {
            pid,
            argv: spec.argv.join(" "),
            worker: env(spec, "FORKYARD_WORKER").to_string(),
            endpoint: format!("127.0.0.1:{}", env(spec, "FORKYARD_PORT")),
            alive: true,
        });
        let output = crate::process::output::Tap::default();
        s.taps.insert(pid, output.clone());
        Ok(Launched {
            pid,
            exit,
            post_fork: None,
            output,
        })
    }

    /// Recorded; SIGUSR1 makes the process write a stack to its output, as
    /// `faulthandler.register(SIGUSR1)` does.
    fn signal_one(&self, pid: i32, signal: Signal) {
        let mut s = self.state.lock();
        s.signals.push((pid, signal));
        if let (Signal::SIGUSR1, Some(tap)) = (signal, s.taps.get(&pid)) {
            tap.feed("Thread 0x1 (most recent call first):");
            tap.feed(&format!("  File \"app.py\", line 3 in stuck_{pid}"));
        }
    }

    async fn run_command(&self, spec: &SpawnSpec, _: std::time::Duration) -> Ran {
        self.state.lock().commands.push(spec.argv.clone());
        Ran {
            status: Ok(Some(ExitStatus::Code(0))),
            output: format!("dumped by {}\n", spec.argv.join(" ")),
            truncated: false,
        }
    }

    fn signal(&self, pid: i32, signal: Signal) {
        let ends = {
            let mut s = self.state.lock();
            s.signals.push((pid, signal));
            signal == Signal::SIGKILL || !s.ignore_term
        };
        if ends {
            self.exit(pid, ExitStatus::Signal(signal as i32));
        }
    }

    async fn probe(&self, endpoint: &Endpoint, _: &ReadyProbe) -> bool {
        let child = {
            let mut s = self.state.lock();
            if std::mem::take(&mut s.panic_on_probe) {
                drop(s);
                panic!("fake: a probe panicked");
            }
            let at = endpoint.to_string();
            s.children
                .iter()
                .rev()
                .find(|c| c.alive && c.endpoint == at)
                .cloned()
        };
        child.is_some_and(|c| (self.ready.lock())(&c))
    }

    async fn run_hooks(&self, _: &[Hook], _: &HookContext) -> Result<(), HookFailure> {
        let _ = self.hooks_open.subscribe().wait_for(|open| *open).await;
        Ok(())
    }

    fn generation(self: Arc<Self>, config: &Arc<PoolConfig>) -> super::launch::Os {
        self.generations.lock().push(config.clone());
        self
    }

    async fn finish(&self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Records the members of the last update (the proxy's view).
#[derive(Default)]
pub(crate) struct Members(pub(crate) Mutex<Vec<Arc<Member>>>);

impl Balance for Members {
    fn update(&self, _: &Arc<PoolConfig>, members: &[Arc<Member>]) {
        *self.0.lock() = members.to_vec();
    }
}

/// A pool for the tests, its members, metrics and status board.
pub(crate) struct Rig {
    pub(crate) pool: Arc<Pool>,
    pub(crate) members: Arc<Members>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) board: Arc<StatusBoard>,
}

impl Rig {
    /// Pool "web" from `extra` YAML under its key (indented by four spaces).
    pub(crate) fn new(extra: &str) -> Rig {
        let text = format!(
            "pools:\n  web:\n    command: [\"app\", \"v1\"]\n    ports: \"9001-9020\"\n{extra}"
        );
        let config = crate::config::load_from_str(&text, std::path::Path::new("t.yaml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let members = Arc::new(Members::default());
        let pool = Pool::new(config.pools[0].clone(), members.clone());
        Rig {
            pool,
            members,
            metrics: Arc::new(Metrics::new(&["web"], &[])),
            board: StatusBoard::new(["web"]),
        }
    }

    /// A crash-loop breaker for the pool, on the rig's gauge.
    pub(crate) fn crash_loop(&self) -> Arc<super::CrashLoop> {
        Arc::new(super::CrashLoop::new(
            "web",
            self.metrics.pool_degraded.with_label_values(&["web"]),
        ))
    }

    pub(crate) fn metric(&self, series: &str) -> f64 {
        let text = String::from_utf8(self.metrics.encode()).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Let the paused clock run until `f` holds, at most `limit` of virtual time.
pub(crate) async fn until(limit: std::time::Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
