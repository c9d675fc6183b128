//! The admin app on its two listeners: `admin.listen` (TCP) and the control socket
//! (`admin.socket`). Each is a Pingora listening service around the same
//! `AdminApp`, with its own rule for the POST endpoints (`admin::Access`).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::Fds;
use pingora::services::listening::Service as ListeningService;
use pingora::services::Service as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::RunError;
use crate::admin::{Access, AdminApp, AdminListener};
use crate::config::{AdminConfig, ControlSocket};
use crate::sockets::control::{self, Bound, DefaultError, Remover};

/// Bind the control socket that `admin.socket` asks for. `Ok(None)` when it is
/// off, or when no directory can hold the default one (logged: forkyard runs on
/// without it). A socket that cannot be bound where it belongs is an error.
pub(super) fn bind_control_socket(admin: &AdminConfig) -> Result<Option<Bound>, RunError> {
    let error = |source| RunError::ControlSocket { source };
    match &admin.socket {
        ControlSocket::Off => Ok(None),
        ControlSocket::Path(path) => control::bind(path).map(Some).map_err(error),
        ControlSocket::Default => match control::bind_default(admin.listen.port()) {
            Ok(bound) => Ok(Some(bound)),
            Err(DefaultError::Bind(source)) => Err(error(source)),
            Err(e @ DefaultError::NoDirectory(_)) => {
                tracing::warn!(
                    "{e}; running without one: `forkyard reload`, `scale` and `restart` will not reach this forkyard (set admin.socket to a writable path)"
                );
                Ok(None)
            }
        },
    }
}

/// The admin listeners while they serve: stopped at the very end of a shutdown, so
/// `/status`, `/metrics` and the commands answer while the pools drain.
pub(super) struct AdminServing {
    app: Arc<AdminApp>,
    stop: watch::Sender<bool>,
    serving: Vec<JoinHandle<()>>,
    /// Deletes the control socket's file when dropped.
    _socket: Option<Remover>,
}

impl AdminServing {
    /// Stop both listeners and wait (at most `within`) for them to finish, and for
    /// the open event streams to send their end.
    pub(super) async fn stop(self, within: Duration) {
        let _ = self.stop.send(true);
        let mut streams = self.app.streams.subscribe();
        let all = async {
            for serving in self.serving {
                let _ = serving.await;
            }
            let _ = streams.wait_for(|open| *open == 0).await;
        };
        let _ = tokio::time::timeout(within, all).await;
    }
}

/// Serve `app` on the TCP admin listener and on the control socket, if any, until
/// [`AdminServing::stop`].
pub(super) fn serve(
    app: AdminApp,
    tcp: (SocketAddr, TcpListener),
    socket: Option<Bound>,
) -> AdminServing {
    let app = Arc::new(app);
    let (stop, stop_rx) = watch::channel(false);
    let (addr, listener) = tcp;
    let key = addr.to_string();
    let mut svc = service("forkyard admin", app.clone(), Access::Tcp(addr));
    svc.add_tcp(&key);
    let mut serving = vec![spawn(svc, key, listener.into_raw_fd(), stop_rx.clone())];
    if !addr.ip().is_loopback() && !app.auth.is_set() {
        tracing::info!(
            admin = %addr,
            "POST endpoints on admin.listen answer 403: it is not a loopback address and no admin.token is set (use the control socket, or set a token)"
        );
    }
    let Some(Bound {
        listener,
        path,
        remover,
    }) = socket
    else {
        return AdminServing {
            app,
            stop,
            serving,
            _socket: None,
        };
    };
    let key = path.to_string_lossy().into_owned();
    let mut svc = service("forkyard control socket", app.clone(), Access::Socket);
    svc.add_uds(&key, Some(std::fs::Permissions::from_mode(control::MODE)));
    serving.push(spawn(svc, key, listener.into_raw_fd(), stop_rx));
    tracing::info!(
        path = %path.display(),
        "control socket ready: forkyard reload, scale, restart and status use it"
    );
    AdminServing {
        app,
        stop,
        serving,
        _socket: Some(remover),
    }
}

fn service(name: &str, app: Arc<AdminApp>, access: Access) -> ListeningService<AdminListener> {
    ListeningService::new(name.to_string(), AdminListener { app, access })
}

/// Run `svc` on the listening socket `fd` (registered under `key`) until `stop`.
fn spawn(
    mut svc: ListeningService<AdminListener>,
    key: String,
    fd: i32,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut fds = Fds::new();
    fds.add(key, fd);
    let fds = Arc::new(parking_lot::Mutex::new(fds));
    tokio::spawn(async move {
        svc.start_service(Some(fds), stop, 1).await;
    })
}
