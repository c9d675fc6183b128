//! The actor's and the supervisor's transitions, driven by a fake child
//! ([`super::fake`]) on tokio's paused clock: no process, no socket, no sleep.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::actor::{self, StopMode, WorkerCtx};
use super::fake::{until, FakeOs, Rig};
use super::{CrashLoop, Rollout, Supervisor};
use crate::process::{ExitReason, ExitStatus};
use crate::slot::{Endpoint, SlotId};

const LIMIT: Duration = Duration::from_secs(60);

fn ctx(
    rig: &Rig,
    os: &Arc<FakeOs>,
    slot: usize,
    recycle: mpsc::UnboundedSender<super::RecycleRequest>,
) -> WorkerCtx {
    let generation = rig.pool.settings();
    let port = generation.ports.start + slot as u16;
    let pool_status = rig.board.add_pool("web");
    WorkerCtx {
        pool: rig.pool.clone(),
        endpoint: Endpoint::of(&generation, port),
        generation,
        slot: SlotId(slot),
        port,
        boot_report: Mutex::new(None),
        recycle,
        listener: None,
        os: os.clone(),
        crash_loop: rig.crash_loop(),
        metrics: rig.metrics.clone(),
        status: pool_status.attach(slot, port),
        pool_status,
    }
}

/// Slot 0's actor, running until told otherwise through the sender.
fn start_actor(rig: &Rig, os: &Arc<FakeOs>) -> (watch::Sender<StopMode>, JoinHandle<()>) {
    let (stop, stop_rx) = watch::channel(StopMode::Run);
    let task = tokio::spawn(actor::run(
        ctx(rig, os, 0, mpsc::unbounded_channel().0),
        stop_rx,
    ));
    (stop, task)
}

/// A supervisor running the rig's pool, and that pool's crash loop.
fn start_supervisor(rig: &Rig, os: &Arc<FakeOs>) -> (Supervisor, Arc<CrashLoop>) {
    let crash_loop = rig.crash_loop();
    let sup = Supervisor::start(
        &[(rig.pool.clone(), crash_loop.clone())],
        os.clone(),
        rig.metrics.clone(),
        rig.board.clone(),
    );
    (sup, crash_loop)
}

const BACKOFF: &str = r#"forkyard_workers{pool="web",state="backoff"}"#;
const READY: &str = r#"forkyard_workers{pool="web",state="ready"}"#;

#[tokio::test(start_paused = true)]
async fn a_crash_while_starting_backs_off_and_spawns_again() {
    let rig = Rig::new("    restart: { backoff_min: 1s, backoff_max: 2s }\n");
    let os = FakeOs::new();
    os.ready_when(|_| false);
    let (stop, task) = start_actor(&rig, &os);
    until(LIMIT, "the first spawn", || os.children().len() == 1).await;
    os.exit(os.children()[0].pid, ExitStatus::Code(3));
    until(LIMIT, "backoff", || rig.metric(BACKOFF) == 1.0).await;
    assert_eq!(
        rig.metric(r#"forkyard_worker_restarts_total{pool="web",reason="exit_code"}"#),
        1.0
    );
    assert_eq!(
        rig.metric(r#"forkyard_worker_exits_total{pool="web",reason="exit_code"}"#),
        1.0
    );
    assert_eq!(os.children().len(), 1, "no spawn during the backoff");
    until(LIMIT, "the second spawn", || os.children().len() == 2).await;
    assert!(
        rig.members.0.lock().is_empty(),
        "never ready, never in the balancer"
    );
    stop.send(StopMode::Graceful(ExitReason::Shutdown)).unwrap();
    task.await.unwrap();
    assert_eq!(os.alive().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_backoff_ends_the_actor_without_a_spawn() {
    let rig = Rig::new("    restart: { backoff_min: 30s, backoff_max: 60s }\n");
    let os = FakeOs::new();
    let (stop, task) = start_actor(&rig, &os);
    until(LIMIT, "ready", || rig.metric(READY) == 1.0).await;
    os.exit(os.children()[0].pid, ExitStatus::Signal(9));
    until(LIMIT, "backoff", || rig.metric(BACKOFF) == 1.0).await;
    let started = tokio::time::Instant::now();
    stop.send(StopMode::Graceful(ExitReason::ScaleDown))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the actor ends at once, not after its 30 s backoff")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(os.children().len(), 1, "no spawn after the stop");
    for state in ["starting", "ready", "backoff", "stopping"] {
        let series = format!(r#"forkyard_workers{{pool="web",state="{state}"}}"#);
        assert_eq!(rig.metric(&series), 0.0, "{series}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_actor_kills_its_group_leaves_the_balancer_and_is_replaced() {
    let rig = Rig::new("    health: { tcp: true, interval: 1s }\n");
    let os = FakeOs::new();
    let (stop, stop_rx) = watch::channel(StopMode::Run);
    let make = {
        let (rig_pool, rig_metrics, rig_board, os) = (
            rig.pool.clone(),
            rig.metrics.clone(),
            rig.board.clone(),
            os.clone(),
        );
        move |_boot| {
            let rig = Rig {
                pool: rig_pool.clone(),
                members: Default::default(),
                metrics: rig_metrics.clone(),
                board: rig_board.clone(),
            };
            ctx(&rig, &os, 0, mpsc::unbounded_channel().0)
        }
    };
    let task = tokio::spawn(actor::run_supervised(make, None, stop_rx));
    until(LIMIT, "in the balancer", || rig.members.0.lock().len() == 1).await;
    let first = os.children()[0].pid;
    os.panic_at_next_probe();
    until(LIMIT, "out of the balancer", || {
        rig.members.0.lock().is_empty()
    })
    .await;
    assert!(
        os.signals().contains(&(first, Signal::SIGKILL)),
        "{:?}",
        os.signals()
    );
    until(LIMIT, "a fresh actor's worker in the balancer", || {
        os.children().len() == 2 && rig.members.0.lock().len() == 1
    })
    .await;
    assert_eq!(os.alive().len(), 1);
    stop.send(StopMode::Graceful(ExitReason::Shutdown)).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_recycled_worker_is_drained_before_it_is_signalled() {
    let rig = Rig::new("    recycle: { max_requests: 1 }\n    stop: { drain: 30s }\n");
    let os = FakeOs::new();
    let (recycle_tx, mut recycle_rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(StopMode::Run);
    let task = tokio::spawn(actor::run(ctx(&rig, &os, 0, recycle_tx), stop_rx));
    until(LIMIT, "in the balancer", || rig.members.0.lock().len() == 1).await;
    let member = rig.members.0.lock()[0].clone();
    let pid = os.children()[0].pid;
    // One request starts and stays in flight; it reaches max_requests.
    member.begin();
    let asked = tokio::time::timeout(LIMIT, recycle_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (asked.slot, asked.reason),
        (SlotId(0), ExitReason::RecycleRequests)
    );
    // The supervisor's replacement is ready: the old worker is told to stop.
    stop.send(StopMode::Graceful(ExitReason::RecycleRequests))
        .unwrap();
    until(LIMIT, "out of the balancer", || {
        rig.members.0.lock().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(os.signals().is_empty(), "signalled during its drain");
    member.end();
    until(LIMIT, "stop signal after the drain", || {
        os.signals().contains(&(pid, Signal::SIGTERM))
    })
    .await;
    task.await.unwrap();
    assert_eq!(
        rig.metric(r#"forkyard_worker_exits_total{pool="web",reason="recycle_requests"}"#),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_ignores_the_stop_signal_is_killed_after_grace() {
    let rig = Rig::new("    stop: { grace: 5s }\n");
    let os = FakeOs::new();
    os.ignore_term();
    let (stop, task) = start_actor(&rig, &os);
    until(LIMIT, "ready", || rig.metric(READY) == 1.0).await;
    let pid = os.children()[0].pid;
    let started = tokio::time::Instant::now();
    stop.send(StopMode::Graceful(ExitReason::Shutdown)).unwrap();
    task.await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(
        os.signals(),
        [
            (pid, Signal::SIGTERM),
            (pid, Signal::SIGKILL),
            (pid, Signal::SIGKILL)
        ],
        "SIGTERM, SIGKILL at grace, and the group cleanup"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollout_that_fails_at_slot_2_rolls_slots_0_and_1_back() {
    let rig = Rig::new("    workers: 3\n    ready: { tcp: true, timeout: 2s }\n");
    let os = FakeOs::new();
    let (mut sup, _) = start_supervisor(&rig, &os);
    until(LIMIT, "3 ready", || rig.members.0.lock().len() == 3).await;
    os.ready_when(|c| !(c.argv.contains("v2") && c.worker == "2"));
    let mut v2 = (*rig.pool.settings()).clone();
    v2.command = vec!["app".into(), "v2".into()];
    let rollout = sup.roll("web", Arc::new(v2)).await.unwrap();
    assert_eq!(rollout, Rollout::RolledBack { slot: SlotId(2) });
    until(LIMIT, "the replaced workers to stop", || {
        os.alive().len() == 3
    })
    .await;
    let alive = os.alive();
    assert!(alive.iter().all(|c| c.argv == "app v1"), "{alive:?}");
    let mut slots: Vec<&str> = alive.iter().map(|c| c.worker.as_str()).collect();
    slots.sort();
    assert_eq!(slots, ["0", "1", "2"]);
    let launched: Vec<(String, String)> = os
        .children()
        .iter()
        .map(|c| (c.argv.clone(), c.worker.clone()))
        .collect();
    let v2_slots: Vec<&str> = launched
        .iter()
        .filter(|(a, _)| a == "app v2")
        .map(|(_, w)| w.as_str())
        .collect();
    assert_eq!(v2_slots, ["0", "1", "2"], "{launched:?}");
    // Slots 0 and 1 got a new old-generation worker; slot 2 kept its first one.
    let v1_slots: Vec<&str> = launched
        .iter()
        .filter(|(a, _)| a == "app v1")
        .map(|(_, w)| w.as_str())
        .collect();
    assert_eq!(v1_slots, ["0", "1", "2", "1", "0"], "{launched:?}");
    assert_eq!(rig.members.0.lock().len(), 3);
    sup.stop().await;
}

#[tokio::test(start_paused = true)]
async fn every_roll_starts_a_new_generation_even_with_the_same_settings() {
    // A preload pool's generation is its preloader: a restart (the same settings
    // rolled again) must get a new one, which imports the code as it is now.
    let rig = Rig::new("    workers: 2\n");
    let os = FakeOs::new();
    let (mut sup, _) = start_supervisor(&rig, &os);
    until(LIMIT, "2 ready", || rig.members.0.lock().len() == 2).await;
    assert_eq!(os.generations().len(), 1);
    let same = sup.generation("web").unwrap();
    assert_eq!(sup.roll("web", same.clone()).await.unwrap(), Rollout::Done);
    let generations = os.generations();
    assert_eq!(generations.len(), 2, "a restart is a new generation");
    assert!(Arc::ptr_eq(&generations[1], &same));
    until(LIMIT, "the old workers to stop", || os.alive().len() == 2).await;
    assert_eq!(os.children().len(), 4, "both slots were replaced");
    assert!(!os.finished());
    sup.stop().await;
    assert!(
        os.finished(),
        "shutdown waits for the launchers (preloaders)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_request_is_dumped_recorded_and_its_worker_killed_and_replaced() {
    let rig = Rig::new(
        "    hang: { after: 10ms, dump: [\"dumper\", \"--pid\", \"{pid}\", \"{worker}\"] }\n",
    );
    let os = FakeOs::new();
    let (stop, task) = start_actor(&rig, &os);
    until(LIMIT, "ready", || rig.metric(READY) == 1.0).await;
    let member = rig.members.0.lock()[0].clone();
    let pid = os.children()[0].pid;
    let stuck = member.pending().begin("GET", "/stuck", "id-1");
    let flowing = member.pending().begin("GET", "/stream", "id-2");
    member.pending().answered(flowing);
    // Waits are measured on the real clock.
    std::thread::sleep(Duration::from_millis(20));
    until(LIMIT, "the hung worker's exit", || {
        rig.metric(r#"forkyard_worker_exits_total{pool="web",reason="hang"}"#) == 1.0
    })
    .await;
    assert!(member.pending().is_hung(stuck));
    assert!(!member.pending().is_hung(flowing), "its head had come");
    let argv: Vec<String> = ["dumper", "--pid", &pid.to_string(), "0"]
        .map(String::from)
        .into();
    assert_eq!(os.commands(), [argv]);
    assert!(os.signals().contains(&(pid, Signal::SIGKILL)));
    assert!(rig.members.0.lock().is_empty(), "out of the balancer");
    assert_eq!(
        rig.metric(r#"forkyard_worker_hangs_total{pool="web"}"#),
        1.0
    );
    let report = rig.board.report(None);
    let hang = &report.pools[0].hangs[0];
    assert_eq!((hang.pid, hang.worker), (pid, 0));
    assert_eq!(
        (hang.method.as_str(), hang.path.as_str()),
        ("GET", "/stuck")
    );
    assert_eq!(hang.request_id, "id-1");
    assert!(hang.killed);
    assert_eq!(hang.dump_result, "ok");
    assert_eq!(hang.dump, format!("dumped by dumper --pid {pid} 0\n"));
    assert_eq!(hang.in_flight.len(), 1);
    assert_eq!(hang.in_flight[0].path, "/stream");
    until(LIMIT, "a new process", || {
        os.alive().len() == 1 && os.children().len() == 2
    })
    .await;
    assert_eq!(
        rig.metric(r#"forkyard_worker_restarts_total{pool="web",reason="hang"}"#),
        1.0
    );
    member.pending().end(stuck);
    member.pending().end(flowing);
    stop.send(StopMode::Graceful(ExitReason::Shutdown)).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_kill_false_a_hang_is_recorded_once_and_the_worker_keeps_serving() {
    let rig = Rig::new("    hang: { after: 10ms, kill: false }\n");
    let os = FakeOs::new();
    let (stop, task) = start_actor(&rig, &os);
    until(LIMIT, "ready", || rig.metric(READY) == 1.0).await;
    let member = rig.members.0.lock()[0].clone();
    let stuck = member.pending().begin("POST", "/slow", "id-1");
    std::thread::sleep(Duration::from_millis(20));
    until(LIMIT, "the hang", || {
        rig.metric(r#"forkyard_worker_hangs_total{pool="web"}"#) == 1.0
    })
    .await;
    // Several checks later: still one hang, the same process, in the balancer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.metric(r#"forkyard_worker_hangs_total{pool="web"}"#),
        1.0
    );
    assert_eq!(os.children().len(), 1);
    assert_eq!(os.alive().len(), 1);
    assert_eq!(rig.members.0.lock().len(), 1);
    assert!(os.commands().is_empty(), "no dump configured");
    let report = rig.board.report(None);
    assert_eq!(report.pools[0].hangs[0].dump_result, "none");
    assert!(!report.pools[0].hangs[0].killed);
    member.pending().end(stuck);
    stop.send(StopMode::Graceful(ExitReason::Shutdown)).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_signal_form_keeps_what_the_worker_writes_after_the_signal() {
    let rig = Rig::new("    hang: { after: 10ms, dump: { signal: SIGUSR1 } }\n");
    let os = FakeOs::new();
    let (stop, task) = start_actor(&rig, &os);
    until(LIMIT, "ready", || rig.metric(READY) == 1.0).await;
    let member = rig.members.0.lock()[0].clone();
    let pid = os.children()[0].pid;
    let stuck = member.pending().begin("GET", "/stuck", "id-1");
    std::thread::sleep(Duration::from_millis(20));
    until(LIMIT, "the hung worker's exit", || {
        rig.metric(r#"forkyard_worker_exits_total{pool="web",reason="hang"}"#) == 1.0
    })
    .await;
    let signals = os.signals();
    let usr1 = signals.iter().position(|s| *s == (pid, Signal::SIGUSR1));
    let kill = signals.iter().position(|s| *s == (pid, Signal::SIGKILL));
    assert!(usr1 < kill && usr1.is_some(), "the dump first: {signals:?}");
    let report = rig.board.report(None);
    let hang = &report.pools[0].hangs[0];
    assert_eq!(hang.dump_result, "signal SIGUSR1");
    assert!(
        hang.dump.contains(&format!("line 3 in stuck_{pid}\n")),
        "{}",
        hang.dump
    );
    member.pending().end(stuck);
    stop.send(StopMode::Graceful(ExitReason::Shutdown)).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_worker_told_to_stop_as_it_crashes_is_no_failure_of_the_pool() {
    // A slot being retired (a rolling reload) whose old process exits on its own
    // at that moment: no restart follows, so the crash loop must not count it.
    let rig = Rig::new(
        "    restart: { crash_loop: { failures: 1, window: 60s } }\n    hooks: { on_exit: [{ run: [\"cleanup\"] }] }\n",
    );
    let os = FakeOs::new();
    let (stop, task) = start_actor(&rig, &os);
    until(LIMIT, "ready", || rig.metric(READY) == 1.0).await;
    os.hold_hooks();
    os.exit(os.children()[0].pid, ExitStatus::Code(3));
    until(LIMIT, "the exit to be recorded", || {
        rig.metric(r#"forkyard_worker_exits_total{pool="web",reason="exit_code"}"#) == 1.0
    })
    .await;
    // The actor is in the worker's on_exit hook when the stop comes.
    stop.send(StopMode::Graceful(ExitReason::Reload)).unwrap();
    os.release_hooks();
    task.await.unwrap();
    assert_eq!(
        rig.metric(r#"forkyard_worker_restarts_total{pool="web",reason="exit_code"}"#),
        0.0
    );
    assert_eq!(rig.metric(r#"forkyard_pool_degraded{pool="web"}"#), 0.0);
    assert_eq!(os.children().len(), 1, "no spawn after the stop");
    for state in ["starting", "ready", "backoff", "stopping"] {
        let series = format!(r#"forkyard_workers{{pool="web",state="{state}"}}"#);
        assert_eq!(rig.metric(&series), 0.0, "{series}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_rollout_out_of_a_crash_loop_leaves_the_pool_healthy() {
    let rig = Rig::new(
        "    workers: 3\n    ready: { tcp: true, timeout: 2s }\n    restart: { backoff_min: 10ms, backoff_max: 50ms, crash_loop: { failures: 3, window: 60s } }\n",
    );
    let os = FakeOs::new();
    os.ready_when(|c| c.argv.contains("v2"));
    let (mut sup, crash_loop) = start_supervisor(&rig, &os);
    until(LIMIT, "the crash loop", || crash_loop.is_degraded()).await;
    let mut v2 = (*rig.pool.settings()).clone();
    v2.command = vec!["app".into(), "v2".into()];
    assert_eq!(sup.roll("web", Arc::new(v2)).await.unwrap(), Rollout::Done);
    assert!(!crash_loop.is_degraded());
    assert_eq!(rig.metric(r#"forkyard_pool_degraded{pool="web"}"#), 0.0);
    until(LIMIT, "only the new workers", || {
        let alive = os.alive();
        alive.len() == 3 && alive.iter().all(|c| c.argv == "app v2")
    })
    .await;
    // The new generation starts with a clean record: its first crash is one
    // failure, not the old generation's failures plus one.
    let restarts = r#"forkyard_worker_restarts_total{pool="web",reason="exit_code"}"#;
    os.exit(os.alive()[0].pid, ExitStatus::Code(3));
    until(LIMIT, "the restart", || rig.metric(restarts) == 1.0).await;
    assert!(!crash_loop.is_degraded());
    sup.stop().await;
}
