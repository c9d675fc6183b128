//! The shutdown order: readiness off → (shutdown.delay) → stop accepting → drain
//! in-flight requests (bounded by `shutdown.timeout`) → close the proxy → stop the
//! workers → `on_shutdown` → stop adopted processes → exit 0. A second SIGTERM or
//! SIGINT skips the waiting: workers get SIGKILL and forkyard exits 128+N.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::wiring::Running;
use crate::config::Phase;
use crate::events;
use crate::hooks::HookContext;
use crate::sd_notify::Notifier;
use crate::signals::ControlEvent;
use crate::slot::WorkerState;
use crate::status::StatusBoard;

/// How long adopted processes get between SIGTERM and SIGKILL at shutdown.
const STRAY_GRACE: Duration = Duration::from_secs(2);

/// The next SIGTERM or SIGINT; other signals are ignored while stopping.
pub(super) async fn next_stop_signal(
    signals: &mut mpsc::UnboundedReceiver<ControlEvent>,
) -> Option<ControlEvent> {
    loop {
        match signals.recv().await? {
            e @ (ControlEvent::Terminate | ControlEvent::Interrupt) => return Some(e),
            other => tracing::info!(signal = ?other, "ignored while shutting down"),
        }
    }
}

impl Running {
    /// Shut down after `first` (the stop signal); returns the exit code.
    pub(super) async fn shut_down(self, first: Option<ControlEvent>) -> i32 {
        let Running {
            control,
            mut signals,
            readiness,
            notifier,
            proxy,
            hooks,
            inherited_children,
            admin,
            ..
        } = self;
        let config = control.config.clone();
        let inflight = proxy.inflight.clone();
        let mut forced: Option<i32> = None;
        let shutdown_started = Instant::now();
        let signal = match first {
            Some(ControlEvent::Terminate) => "SIGTERM",
            Some(ControlEvent::Interrupt) => "SIGINT",
            _ => "none",
        };

        // 1. Readiness off; keep serving for shutdown.delay (SIGINT skips the delay).
        tracing::info!(
            event = events::SHUTDOWN,
            signal,
            in_flight = inflight.current(),
            "shutdown: readiness off"
        );
        readiness.begin_shutdown();
        if let Some(n) = &notifier {
            if let Err(e) = n.notify("STOPPING=1") {
                tracing::warn!(error = %e, "could not tell systemd that forkyard is stopping");
            }
        }
        if first == Some(ControlEvent::Terminate) && !config.shutdown.delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(config.shutdown.delay) => {}
                e = next_stop_signal(&mut signals) => forced = e.map(ControlEvent::signal_number),
            }
        }

        // 2. Stop accepting. The service returns once every accept loop has stopped.
        tracing::info!(
            event = events::DRAIN_START,
            in_flight = inflight.current(),
            timeout_ms = config.shutdown.timeout.as_millis() as u64,
            "shutdown: no longer accepting connections"
        );
        let mut threads = proxy.threads;
        if tokio::time::timeout(Duration::from_secs(5), threads.stop_accepting())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: the proxy's accept loops did not stop within 5s");
        }

        // 3. Drain in-flight requests, bounded; a second signal cuts it short.
        let drain_started = Instant::now();
        let drain_ms = || drain_started.elapsed().as_millis() as u64;
        let interrupted = |in_flight: usize, duration_ms: u64| {
            tracing::warn!(
                event = events::DRAIN_FINISH,
                result = "interrupted",
                in_flight,
                duration_ms,
                "shutdown: second signal; not waiting for in-flight requests"
            )
        };
        if forced.is_none() {
            tokio::select! {
                _ = inflight.wait_idle() => tracing::info!(
                    event = events::DRAIN_FINISH,
                    result = "drained",
                    in_flight = 0u64,
                    duration_ms = drain_ms(),
                    "shutdown: in-flight requests drained"
                ),
                _ = tokio::time::sleep(config.shutdown.timeout) => tracing::warn!(
                    event = events::DRAIN_FINISH,
                    result = "timeout",
                    in_flight = inflight.current(),
                    duration_ms = drain_ms(),
                    timeout_ms = config.shutdown.timeout.as_millis() as u64,
                    "shutdown: drain timed out; closing remaining connections"
                ),
                e = next_stop_signal(&mut signals) => {
                    forced = e.map(ControlEvent::signal_number);
                    interrupted(inflight.current(), drain_ms());
                }
            }
        } else {
            interrupted(inflight.current(), 0);
        }
        // 4. Close every proxy connection.
        threads.close();

        // 5. Stop the workers; a(nother) signal escalates to SIGKILL.
        let kill = control.supervisor.killer();
        if forced.is_some() {
            kill();
        }
        let stopping = control.supervisor.stop();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = &mut stopping => break,
                Some(event) = next_stop_signal(&mut signals) => {
                    tracing::warn!(?event, "shutdown: another signal; killing workers now");
                    forced = Some(event.signal_number());
                    kill();
                }
            }
        }
        // The workers are gone: remove their Unix sockets and directories.
        crate::sockets::remove_all(config.pools.iter().filter_map(|p| p.socket_dir.as_deref()));
        // on_shutdown: failures are logged and counted; the exit goes on.
        if forced.is_none() {
            let _ = hooks
                .run_phase(
                    &config.hooks.on_shutdown,
                    &HookContext::global(Phase::OnShutdown),
                )
                .await;
        }
        // Daemons that escaped their process group were adopted by forkyard; they
        // must not outlive it.
        let grace = if forced.is_some() {
            Duration::ZERO
        } else {
            STRAY_GRACE
        };
        crate::process::strays::stop_strays(grace, &inherited_children).await;
        let code = forced.map_or(0, |n| 128 + n);
        tracing::info!(
            event = events::SHUTDOWN_COMPLETE,
            exit_code = code,
            duration_ms = shutdown_started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
        // Last, the admin listeners: probes saw readiness off until now, and the
        // event streams carry `shutdown_complete` before they end. The control
        // socket's file goes with them.
        admin.stop(Duration::from_secs(1)).await;
        code
    }
}

/// Log once every pool has a ready worker, and tell systemd (`READY=1`).
/// Waits on the status board's change signal; nothing is polled.
pub(super) async fn announce_ready(board: Arc<StatusBoard>, notifier: Option<Arc<Notifier>>) {
    let mut changes = board.subscribe();
    loop {
        if board.all_pools_ready() {
            break;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
    let pools = board.pools();
    let ready: Vec<String> = pools
        .iter()
        .map(|p| {
            format!(
                "{} {}/{}",
                p.name,
                p.count(WorkerState::Ready),
                p.slots().len()
            )
        })
        .collect();
    let status = format!("ready: {}", ready.join(", "));
    tracing::info!(
        event = events::POOLS_READY,
        pools = pools.len(),
        workers_ready = %ready.join(", "),
        "every pool has a ready worker"
    );
    if let Some(n) = notifier {
        match n.notify(&format!("READY=1\nSTATUS={status}")) {
            Ok(()) => tracing::info!("told systemd: READY=1"),
            Err(e) => tracing::warn!(error = %e, "could not tell systemd that forkyard is ready"),
        }
    }
}
