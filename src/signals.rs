//! The one owner of process signals: turns them into [`ControlEvent`]s.
//!
//! Nothing else in forkyard installs a signal handler (Pingora's own handling is not
//! used: forkyard drives its services' shutdown itself), so the shutdown order is
//! decided in one place, `server.rs`.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlEvent {
    /// SIGTERM: graceful shutdown.
    Terminate,
    /// SIGINT: shutdown (Ctrl-C).
    Interrupt,
    /// SIGHUP: reload the config.
    Reload,
    /// SIGTTIN: one more worker per pool.
    AddWorker,
    /// SIGTTOU: one worker less per pool.
    RemoveWorker,
}

impl ControlEvent {
    /// The signal number behind the event.
    pub(crate) fn signal_number(self) -> i32 {
        match self {
            ControlEvent::Terminate => libc::SIGTERM,
            ControlEvent::Interrupt => libc::SIGINT,
            ControlEvent::Reload => libc::SIGHUP,
            ControlEvent::AddWorker => libc::SIGTTIN,
            ControlEvent::RemoveWorker => libc::SIGTTOU,
        }
    }
}

/// Install the handlers and return the event stream. Call inside a tokio runtime.
pub(crate) fn listen() -> std::io::Result<mpsc::UnboundedReceiver<ControlEvent>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (kind, event) in [
        (SignalKind::terminate(), ControlEvent::Terminate),
        (SignalKind::interrupt(), ControlEvent::Interrupt),
        (SignalKind::hangup(), ControlEvent::Reload),
        (SignalKind::from_raw(libc::SIGTTIN), ControlEvent::AddWorker),
        (
            SignalKind::from_raw(libc::SIGTTOU),
            ControlEvent::RemoveWorker,
        ),
    ] {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}
