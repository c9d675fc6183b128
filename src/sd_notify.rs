//! systemd's readiness protocol (`sd_notify`), without libsystemd.
//!
//! Under a unit with `Type=notify`, systemd passes the path of a datagram socket in
//! `NOTIFY_SOCKET` and considers the service started only when it receives
//! `READY=1` there. forkyard sends it once every pool has a ready worker, and
//! `STOPPING=1` when a shutdown begins. A path starting with `@` names a socket in
//! the abstract namespace (Linux). Without `NOTIFY_SOCKET` nothing is sent.
//! Workers never inherit `NOTIFY_SOCKET` (see `process::spawn`), so an app that
//! speaks the protocol itself cannot report forkyard ready early.
//!
//! Not the `sd-notify` crate (0.5): it sends only to a filesystem path (`@name`
//! fails with ENOENT, checked against an abstract socket) and reads `NOTIFY_SOCKET`
//! again on every call, while forkyard resolves the socket once at start.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

#[derive(Debug)]
pub(crate) struct Notifier {
    addr: SocketAddr,
    display: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot notify systemd at {socket}: {source}")]
pub(crate) struct NotifyError {
    socket: String,
    #[source]
    source: std::io::Error,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, if it is set to something usable.
    pub(crate) fn from_env() -> Option<Notifier> {
        let value = std::env::var_os(NOTIFY_SOCKET)?;
        match Notifier::new(&value.to_string_lossy()) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring NOTIFY_SOCKET");
                None
            }
        }
    }

    /// A notifier for a socket path, or `@name` for the abstract namespace.
    pub(crate) fn new(socket: &str) -> Result<Notifier, NotifyError> {
        let fail = |source| NotifyError {
            socket: socket.to_owned(),
            source,
        };
        let addr = match socket.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None if socket.starts_with('/') => SocketAddr::from_pathname(socket),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "expected an absolute path or @name",
            )),
        }
        .map_err(fail)?;
        Ok(Notifier {
            addr,
            display: socket.to_owned(),
        })
    }

    /// Send one notification, e.g. `"READY=1\nSTATUS=4/4 workers ready"`.
    pub(crate) fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let fail = |source| NotifyError {
            socket: self.display.clone(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(fail)?;
        sock.send_to_addr(state.as_bytes(), &self.addr)
            .map_err(fail)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .notify("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("forkyard-unit-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .notify("STOPPING=1")
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn rejects_relative_paths() {
        assert!(Notifier::new("relative.sock").is_err());
    }
}
