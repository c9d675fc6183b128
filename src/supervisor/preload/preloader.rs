//! One preloader process per generation of a preload pool, supervised by a task
//! of its own: start it (through `forkyard __child`, so it sees only its channel
//! and fds 0–2), wait until it has imported the app, hand it fork and call
//! requests, and when it exits start it again after a backoff, while the workers
//! it forked keep serving (they are forkyard's children, not its own).
//!
//! Every way its life ends is recorded once: the log (`preloader_exit`,
//! `preloader_restart`), `forkyard_preloader_restarts_total{reason}` and its entry
//! on the status board. While it is down, requests fail at once with the reason,
//! so the pool's workers back off (and the crash-loop breaker can trip) instead of
//! waiting.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, timeout};

use super::channel::Channel;
use super::protocol::{Reply, Request, Spec};
use crate::config::PoolConfig;
use crate::events;
use crate::hooks::{AttemptError, FailureReason};
use crate::metrics::Metrics;
use crate::process::child_spec::ChildSpec;
use crate::process::output::forward_lines;
use crate::process::signal::signal_group;
use crate::process::{oom, spawn, ExitReason, ExitStatus, Reaper, SpawnSpec};
use crate::status::{PoolStatus, PreloaderStatus};
use crate::supervisor::backoff::Backoff;

/// The preloader module, shipped inside the binary.
pub(crate) const SOURCE: &str = include_str!("preloader.py");
/// What `python -c` runs: the module, from the environment, with its name.
const BOOTSTRAP: &str = "import os;s=os.environ.pop('FORKYARD_PRELOADER_SOURCE');exec(compile(s,'forkyard-preloader.py','exec'),{'__name__':'__forkyard_preloader__','__source__':s})";
/// How long a preloader that was told to stop (its channel closed) may take.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Added to a `call:` hook's timeout before forkyard gives up on the preloader
/// (which interrupts the call itself at the timeout).
const CALL_GRACE: Duration = Duration::from_secs(2);

/// Where a preloader is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Importing the app.
    Starting,
    Ready,
    /// Down until its backoff ends: why.
    Down(String),
    Stopped,
}

/// What a request came to.
#[derive(Debug)]
pub(crate) enum Answer {
    Forked(i32),
    Refused {
        reason: FailureReason,
        message: String,
    },
    Called(Option<AttemptError>),
    /// No answer: the preloader is down or went away meanwhile.
    Lost(String),
}

/// A request waiting for the preloader.
pub(crate) struct Pending {
    /// The message, given its id.
    pub(crate) make: Box<dyn FnOnce(u64) -> Request + Send>,
    /// Passed with the message; closed on our side once sent.
    pub(crate) fds: Vec<OwnedFd>,
    /// How long an answer may take before the preloader counts as unresponsive.
    pub(crate) limit: Duration,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// The handle: requests go in, the state can be watched. Dropping the last clone
/// of the handle's owner stops the preloader.
pub(crate) struct Preloader {
    state: watch::Receiver<State>,
    requests: mpsc::UnboundedSender<Pending>,
    _stop: watch::Sender<()>,
}

/// What the task needs from forkyard.
pub(crate) struct Deps {
    pub(crate) reaper: Arc<Reaper>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) pool_status: Arc<PoolStatus>,
}

impl Preloader {
    /// Start the preloader of generation `generation` of `config`'s pool.
    pub(crate) fn start(
        config: Arc<PoolConfig>,
        generation: u64,
        deps: Deps,
    ) -> (Preloader, tokio::task::JoinHandle<()>) {
        let (state_tx, state) = watch::channel(State::Starting);
        let (requests, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(());
        deps.metrics.declare_preload(&config.name);
        let status = deps.pool_status.attach_preloader(generation);
        let task = Task {
            config,
            generation,
            deps,
            status,
            state: state_tx,
            requests: rx,
            stop: stop_rx,
        };
        let handle = tokio::spawn(task.run());
        (
            Preloader {
                state,
                requests,
                _stop: stop,
            },
            handle,
        )
    }

    /// Wait until the preloader has imported the app (`Ok`) or is down (`Err`
    /// with why).
    pub(crate) async fn up(&self) -> Result<(), String> {
        let mut state = self.state.clone();
        let s = state
            .wait_for(|s| *s != State::Starting)
            .await
            .map(|s| s.clone())
            .unwrap_or(State::Stopped);
        match s {
            State::Ready => Ok(()),
            State::Down(why) => Err(why),
            State::Stopped => Err("the preloader has stopped".into()),
            State::Starting => Err("the preloader is starting".into()),
        }
    }

    /// Send a request and wait for its answer.
    pub(crate) async fn ask(
        &self,
        pending: impl FnOnce(oneshot::Sender<Answer>) -> Pending,
    ) -> Answer {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(pending(tx)).is_err() {
            return Answer::Lost("the preloader has stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Answer::Lost("the preloader has stopped".into()))
    }
}

/// How one life of the preloader process ended.
enum End {
    /// Told to stop.
    Stopped,
    /// It exited or was killed; it starts again after a backoff.
    Failed {
        reason: &'static str,
        status: Option<ExitStatus>,
        error: String,
    },
}

struct Task {
    config: Arc<PoolConfig>,
    generation: u64,
    deps: Deps,
    status: Arc<PreloaderStatus>,
    state: watch::Sender<State>,
    requests: mpsc::UnboundedReceiver<Pending>,
    stop: watch::Receiver<()>,
}

/// The label of an unplanned exit.
fn reason_of(status: ExitStatus, oom_before: Option<u64>) -> &'static str {
    match ExitReason::of_unplanned_oom(status, oom_before, oom::kills()) {
        ExitReason::OomKilled => "oom_killed",
        ExitReason::Signal => "signal",
        _ => "exit_code",
    }
}

/// The interpreter to run: a name is looked up on `PATH`; a relative path is
/// relative to forkyard's own directory (the pool's `cwd` is the app's).
fn interpreter(python: &str) -> String {
    if python.contains('/') && !python.starts_with('/') {
        if let Ok(dir) = std::env::current_dir() {
            return dir.join(python).to_string_lossy().into_owned();
        }
    }
    python.to_string()
}

impl Task {
    async fn run(mut self) {
        let restart = self.config.restart.clone();
        let mut backoff = Backoff::new(restart.backoff_min, restart.backoff_max);
        let mut restarts = 0u64;
        loop {
            let started = Instant::now();
            let end = self.life().await;
            let End::Failed {
                reason,
                status,
                error,
            } = end
            else {
                break;
            };
            restarts += 1;
            self.deps
                .metrics
                .preloader_restarts
                .with_label_values(&[&self.config.name, reason])
                .inc();
            let shown = status.map_or_else(|| "not started".to_string(), |s| s.to_string());
            self.status.exited(reason, shown, "backoff");
            self.status.restarting();
            let _ = self.state.send(State::Down(error));
            if started.elapsed() >= restart.reset_after {
                backoff.reset();
            }
            let delay = backoff.next_delay(&mut rand::rng());
            tracing::info!(
                event = events::PRELOADER_RESTART,
                pool = %self.config.name,
                generation = self.generation,
                reason,
                delay_ms = delay.as_millis() as u64,
                restarts,
                "preloader will restart"
            );
            let wait = sleep(delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    Some(p) = self.requests.recv() => {
                        let why = match &*self.state.borrow() {
                            State::Down(why) => why.clone(),
                            _ => "the preloader is restarting".into(),
                        };
                        let _ = p.reply.send(Answer::Lost(why));
                    }
                    _ = self.stop.changed() => {
                        self.finish();
                        return;
                    }
                }
            }
            let _ = self.state.send(State::Starting);
        }
        self.finish();
    }

    fn finish(&mut self) {
        let _ = self.state.send(State::Stopped);
        self.requests.close();
        while let Ok(p) = self.requests.try_recv() {
            let _ = p
                .reply
                .send(Answer::Lost("the preloader has stopped".into()));
        }
        self.deps.pool_status.detach_preloader(&self.status);
    }

    /// Kill the preloader (its group: it and any intermediate process) and wait.
    async fn kill(&self, pid: i32, exit: &mut oneshot::Receiver<ExitStatus>) -> Option<ExitStatus> {
        let _ = signal_group(pid, Signal::SIGKILL);
        exit.await.ok()
    }

    fn failed(reason: &'static str, status: Option<ExitStatus>, error: impl Into<String>) -> End {
        End::Failed {
            reason,
            status,
            error: error.into(),
        }
    }

    /// Start the process and run it until it ends.
    async fn life(&mut self) -> End {
        let name = self.config.name.clone();
        let Some(spec) = Spec::of(&self.config, self.generation) else {
            return End::Stopped;
        };
        let (chan, theirs) = match Channel::pair() {
            Ok(p) => p,
            Err(e) => {
                return Self::failed(
                    "exit_code",
                    None,
                    format!("cannot create the preloader's channel: {e}"),
                )
            }
        };
        let python = interpreter(
            self.config
                .preload
                .as_ref()
                .map_or("python3", |p| p.python.as_str()),
        );
        let argv = vec![python, "-c".to_string(), BOOTSTRAP.to_string()];
        let mut env: Vec<(String, String)> = self
            .config
            .env
            .iter()
            // Values with a worker's placeholders are set in each worker.
            .filter(|(_, v)| self.config.fill(v, 0, self.config.ports.start) == *v)
            .cloned()
            .collect();
        env.push(("FORKYARD_POOL".into(), name.clone()));
        env.push(("FORKYARD_PRELOAD_FD".into(), theirs.as_raw_fd().to_string()));
        env.push((
            "FORKYARD_PRELOAD_SPEC".into(),
            serde_json::to_string(&spec).unwrap_or_default(),
        ));
        env.push(("FORKYARD_PRELOADER_SOURCE".into(), SOURCE.to_string()));
        let spawn_spec = SpawnSpec {
            argv: argv.clone(),
            env,
            cwd: self.config.cwd.clone(),
            child: Some(ChildSpec {
                argv,
                close_fds: true,
                pool: name.clone(),
                cwd: self.config.cwd.clone(),
                listen_name: name.clone(),
                ..ChildSpec::default()
            }),
            keep: Some(Arc::new(theirs)),
            ..SpawnSpec::default()
        };
        let spawned = spawn(&spawn_spec);
        drop(spawn_spec); // our copy of the preloader's end: EOF must be theirs alone
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(event = events::PRELOADER_FAILED, pool = %name, generation = self.generation, error = %e, "preloader could not be started");
                self.status.failed(&e.to_string());
                return Self::failed(
                    "exit_code",
                    None,
                    format!("the preloader could not be started: {e}"),
                );
            }
        };
        let pid = child.pid;
        let oom_before = oom::kills();
        let mut exit = self.deps.reaper.watch(pid);
        for (pipe, stream) in [(child.stdout, "stdout"), (child.stderr, "stderr")] {
            if let Some(pipe) = pipe {
                let (pool, generation) = (name.clone(), self.generation);
                tokio::spawn(async move {
                    forward_lines(pipe, |text, truncated| {
                        tracing::info!(target: "forkyard::preloader", pool = %pool, generation, stream, truncated, "{text}")
                    })
                    .await
                });
            }
        }
        drop(child.report);
        self.deps
            .metrics
            .preloader_starts
            .with_label_values(&[&name])
            .inc();
        self.status.spawned(pid);
        tracing::info!(event = events::PRELOADER_SPAWN, pool = %name, generation = self.generation, pid, "preloader started; importing the app");

        // Until it has imported the app.
        let limit = self.config.ready.timeout;
        let first = tokio::select! {
            r = chan.recv() => r,
            s = &mut exit => {
                let status = s.ok();
                let reason = status.map_or("signal", |s| reason_of(s, oom_before));
                tracing::warn!(event = events::PRELOADER_EXIT, pool = %name, generation = self.generation, pid, reason, status = ?status, "preloader exited before it had imported the app");
                return Self::failed(reason, status, "the preloader exited before it had imported the app (see its output in the log)");
            }
            _ = sleep(limit) => {
                tracing::warn!(event = events::PRELOADER_EXIT, pool = %name, generation = self.generation, pid, reason = "boot_timeout", timeout_ms = limit.as_millis() as u64, "preloader still importing after ready.timeout; killing it");
                let status = self.kill(pid, &mut exit).await;
                return Self::failed("boot_timeout", status, format!("the preloader did not import the app within ready.timeout ({limit:?})"));
            }
            _ = self.stop.changed() => {
                let status = self.kill(pid, &mut exit).await;
                self.status.exited("stop", status.map_or("killed".into(), |s| s.to_string()), "stopped");
                return End::Stopped;
            }
        };
        let reply = first
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .and_then(|bytes| serde_json::from_slice::<Reply>(bytes).ok());
        match reply {
            Some(Reply::Ready {
                protocol,
                python,
                import_seconds,
                ..
            }) => {
                self.status.ready(import_seconds);
                self.deps
                    .metrics
                    .preloader_import
                    .with_label_values(&[&name])
                    .set(import_seconds);
                tracing::info!(event = events::PRELOADER_READY, pool = %name, generation = self.generation, pid, import_ms = (import_seconds * 1000.0) as u64, python, protocol, "preloader ready: the app is imported");
            }
            Some(Reply::Failed {
                stage,
                error,
                traceback,
            }) => {
                let message = format!("{stage} failed: {error}\n{traceback}");
                tracing::error!(event = events::PRELOADER_FAILED, pool = %name, generation = self.generation, pid, error = %error, "preloader could not import the app: {message}");
                self.status.failed(&message);
                let status = match timeout(STOP_GRACE, &mut exit).await {
                    Ok(s) => s.ok(),
                    Err(_) => self.kill(pid, &mut exit).await,
                };
                return Self::failed(
                    "import_error",
                    status,
                    format!("the preloader could not import the app: {error}"),
                );
            }
            None if !matches!(first, Ok(Some(_))) => {
                // The channel closed without a word: the process is ending (a
                // crash while importing, or an interpreter that could not start).
                let status = match timeout(STOP_GRACE, &mut exit).await {
                    Ok(s) => s.ok(),
                    Err(_) => self.kill(pid, &mut exit).await,
                };
                let reason = status.map_or("signal", |s| reason_of(s, oom_before));
                tracing::warn!(event = events::PRELOADER_EXIT, pool = %name, generation = self.generation, pid, reason, status = ?status, "preloader exited before it had imported the app (its output is in the log)");
                return Self::failed(reason, status, "the preloader exited before it had imported the app (its output is in the log)");
            }
            other => {
                tracing::warn!(pool = %name, generation = self.generation, pid, reply = ?other, "the preloader's first message is not ready/failed; killing it");
                let status = self.kill(pid, &mut exit).await;
                return Self::failed("unresponsive", status, "the preloader broke the protocol");
            }
        }
        let _ = self.state.send(State::Ready);

        // Serving requests.
        let mut pending: HashMap<u64, (oneshot::Sender<Answer>, Instant)> = HashMap::new();
        let mut next_id = 1u64;
        let mut open = true;
        let lost = |pending: &mut HashMap<u64, (oneshot::Sender<Answer>, Instant)>, why: &str| {
            for (_, (tx, _)) in pending.drain() {
                let _ = tx.send(Answer::Lost(why.to_string()));
            }
        };
        loop {
            let deadline = pending.values().map(|(_, d)| *d).min();
            tokio::select! {
                Some(p) = self.requests.recv() => {
                    let id = next_id;
                    next_id += 1;
                    let message = serde_json::to_vec(&(p.make)(id)).unwrap_or_default();
                    let fds: Vec<RawFd> = p.fds.iter().map(|f| f.as_raw_fd()).collect();
                    match chan.send(&message, &fds).await {
                        Ok(()) => {
                            pending.insert(id, (p.reply, Instant::now() + p.limit));
                        }
                        Err(e) => {
                            let _ = p.reply.send(Answer::Lost(format!("cannot reach the preloader: {e}")));
                        }
                    }
                    // Our copies of the descriptors close here; the preloader has its own.
                    drop(p.fds);
                }
                msg = chan.recv(), if open => {
                    let reply = match msg {
                        Ok(Some(bytes)) => serde_json::from_slice::<Reply>(&bytes),
                        _ => {
                            open = false;
                            continue;
                        }
                    };
                    let (id, answer) = match reply {
                        Ok(Reply::Forked { id, pid }) => (id, Answer::Forked(pid)),
                        Ok(Reply::Refused { id, reason, message }) => (id, Answer::Refused { reason, message }),
                        Ok(Reply::Called { id, error }) => (id, Answer::Called(error)),
                        Ok(other) => {
                            tracing::warn!(pool = %name, generation = self.generation, reply = ?other, "unexpected message from the preloader");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(pool = %name, generation = self.generation, error = %e, "unreadable message from the preloader");
                            continue;
                        }
                    };
                    if let Some((tx, _)) = pending.remove(&id) {
                        let _ = tx.send(answer);
                    }
                }
                s = &mut exit => {
                    let status = s.ok();
                    let reason = status.map_or("signal", |s| reason_of(s, oom_before));
                    tracing::warn!(event = events::PRELOADER_EXIT, pool = %name, generation = self.generation, pid, reason, status = ?status, "preloader exited; its workers keep serving");
                    lost(&mut pending, "the preloader exited");
                    return Self::failed(reason, status, format!("the preloader exited ({})", status.map_or("killed".into(), |s| s.to_string())));
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    tracing::warn!(event = events::PRELOADER_EXIT, pool = %name, generation = self.generation, pid, reason = "unresponsive", "the preloader did not answer a request in time; killing it");
                    let status = self.kill(pid, &mut exit).await;
                    lost(&mut pending, "the preloader did not answer in time");
                    return Self::failed("unresponsive", status, "the preloader did not answer a request in time");
                }
                _ = self.stop.changed() => {
                    self.status.set_state("stopping");
                    drop(chan);
                    let status = match timeout(STOP_GRACE, &mut exit).await {
                        Ok(s) => s.ok(),
                        Err(_) => self.kill(pid, &mut exit).await,
                    };
                    lost(&mut pending, "the preloader has stopped");
                    tracing::info!(event = events::PRELOADER_EXIT, pool = %name, generation = self.generation, pid, reason = "stop", status = ?status, "preloader stopped: its generation has no worker left");
                    self.status.exited("stop", status.map_or("killed".into(), |s| s.to_string()), "stopped");
                    return End::Stopped;
                }
            }
        }
    }
}

/// How long a `call:` hook may take before forkyard gives up on the preloader.
pub(crate) fn call_limit(hook_timeout: Duration) -> Duration {
    hook_timeout + CALL_GRACE
}
