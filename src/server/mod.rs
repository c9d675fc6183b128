//! Running forkyard: build, start, serve control events, shut down.
//!
//! Two tokio runtimes run side by side. The *control* runtime is single-threaded and
//! lives on the main thread: signals, the reaper, the supervisor's worker actors,
//! output forwarding, the control object and the admin listener. Every child is
//! therefore forked from the main thread, which lives as long as the process. The
//! *proxy* runtime has `proxy.threads` worker threads and runs only the Pingora
//! proxy service.
//!
//! Pingora's `Server::run` is not used: it installs its own signal handlers and
//! sleeps a fixed grace period on shutdown. forkyard binds the listening sockets
//! itself (so a busy port is a clear start-up error, not a retry loop), hands them to
//! Pingora's listening services as inherited fds, and drives their shutdown watch.
//!
//! - `wiring`: the listeners, metrics, pools and the proxy (`build`), then, on
//!   the control runtime, signals, the reaper, the admin listener, `on_start`, the
//!   supervisor and the control object (`Built::start`).
//! - `admin_listeners`: the admin app on `admin.listen` and on the control socket.
//! - this file: the control loop, which hands each event to the control object.
//! - `shutdown`: the shutdown order.

mod admin_listeners;
mod shutdown;
mod wiring;

use crate::config::Config;
use crate::signals::ControlEvent;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr} ({what}): {source}; is another process using it?")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// An `on_start` hook failed with `abort` (its message).
    #[error("{0}; nothing was started")]
    OnStart(String),
    #[error("cannot serve the control socket (admin.socket): {source}")]
    ControlSocket {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Run forkyard with a validated config until shutdown. `cli_watch` is `run
/// --watch`. Returns the exit code.
pub fn run(config: Config, cli_watch: bool) -> Result<i32, RunError> {
    let built = wiring::build(config)?;
    let control_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RunError::Io {
            what: "start the control runtime",
            source,
        })?;
    control_rt.block_on(async move {
        let mut running = built.start(cli_watch).await?;
        let first = running.serve().await;
        Ok(running.shut_down(first).await)
    })
}

impl wiring::Running {
    /// Hand every control event to the control object until SIGTERM or SIGINT. A
    /// stop signal during a long event (a rolling replacement) cancels it; shutdown
    /// then stops every worker, old and new.
    async fn serve(&mut self) -> Option<ControlEvent> {
        let control = &mut self.control;
        let signals = &mut self.signals;
        loop {
            tokio::select! {
                event = signals.recv() => match event {
                    Some(e @ (ControlEvent::Terminate | ControlEvent::Interrupt)) => return Some(e),
                    None => return None,
                    Some(ControlEvent::AddWorker) => control.supervisor.scale_all(1),
                    Some(ControlEvent::RemoveWorker) => control.supervisor.scale_all(-1),
                    Some(ControlEvent::Reload) => {
                        tokio::select! {
                            _ = control.reload() => {}
                            e = shutdown::next_stop_signal(signals) => return e,
                        }
                    }
                },
                _ = crate::watch::changed(&mut control.watch) => {
                    tracing::info!("config file changed");
                    tokio::select! {
                        _ = control.reload() => {}
                        e = shutdown::next_stop_signal(signals) => return e,
                    }
                }
                Some(request) = self.recycle.recv() => {
                    tokio::select! {
                        _ = control.recycle(request) => {}
                        e = shutdown::next_stop_signal(signals) => return e,
                    }
                }
                Some(command) = self.commands.recv() => {
                    tokio::select! {
                        _ = control.handle(command) => {}
                        e = shutdown::next_stop_signal(signals) => return e,
                    }
                }
            }
        }
    }
}
