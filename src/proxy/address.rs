//! Where a worker listens: a TCP address or a Unix socket path.
//!
//! This is the one type the proxy uses for worker addresses, so that a pool whose
//! workers bind Unix sockets works with every balancing algorithm (hashing included)
//! and with retries and ejection, exactly like a TCP pool.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkerAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for WorkerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerAddr::Tcp(a) => a.fmt(f),
            WorkerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<SocketAddr> for WorkerAddr {
    fn from(a: SocketAddr) -> Self {
        WorkerAddr::Tcp(a)
    }
}

impl std::str::FromStr for WorkerAddr {
    type Err = String;

    /// `127.0.0.1:9001`, `[::1]:9001` or `unix:/run/app/w0.sock`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?}: empty unix socket path"));
            }
            return Ok(WorkerAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(WorkerAddr::Tcp)
            .map_err(|_| format!("{s:?}: expected IP:port or unix:/path"))
    }
}

/// Per-connection settings every peer of a pool shares.
#[derive(Debug, Clone, Copy)]
pub struct PeerSettings {
    pub connect_timeout: Duration,
    /// Bound on waiting for the response head and on each later read or write.
    pub io_timeout: Duration,
    pub idle_timeout: Duration,
}

impl WorkerAddr {
    /// Where the worker of the slot with (internal) port `port` of `pool` listens:
    /// `127.0.0.1:<port>`, or its Unix socket for `bind: unix`.
    pub fn of_slot(pool: &crate::config::PoolConfig, port: u16) -> WorkerAddr {
        match pool.socket_path(port) {
            Some(path) => WorkerAddr::Unix(path),
            None => WorkerAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
        }
    }

    /// A stable 64-bit identity for hashing: the same address always gives the same
    /// value, across restarts of the worker and of forkyard.
    pub fn hash_id(&self) -> u64 {
        fnv1a(self.to_string().as_bytes())
    }

    /// The Pingora peer for this address. Built once per slot, cloned per request.
    pub fn peer(&self, settings: PeerSettings) -> HttpPeer {
        // `HttpPeer::new` would panic on a Unix address (its `ToSocketAddrs` fails),
        // so the address is set directly.
        let mut peer = HttpPeer::new(SocketAddr::from(([127, 0, 0, 1], 0)), false, String::new());
        peer._address = match self {
            WorkerAddr::Tcp(a) => PingoraAddr::Inet(*a),
            WorkerAddr::Unix(p) => match std::os::unix::net::SocketAddr::from_pathname(p) {
                Ok(a) => PingoraAddr::Unix(a),
                // Too long for sun_path: validated earlier; keep the placeholder, which
                // refuses connections and is retried elsewhere.
                Err(_) => peer._address.clone(),
            },
        };
        peer.options.connection_timeout = Some(settings.connect_timeout);
        peer.options.read_timeout = Some(settings.io_timeout);
        peer.options.write_timeout = Some(settings.io_timeout);
        peer.options.idle_timeout = Some(settings.idle_timeout);
        peer
    }
}

/// FNV-1a: a small, fixed (seedless) hash, so keys map to the same worker in every run.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_builds_peers() {
        let tcp: WorkerAddr = "127.0.0.1:9001".parse().unwrap();
        let uds: WorkerAddr = "unix:/tmp/w0.sock".parse().unwrap();
        assert!("unix:".parse::<WorkerAddr>().is_err());
        assert!("localhost:80".parse::<WorkerAddr>().is_err());
        assert_eq!(uds.to_string(), "unix:/tmp/w0.sock");
        let s = PeerSettings {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
        };
        assert!(matches!(tcp.peer(s)._address, PingoraAddr::Inet(_)));
        let p = uds.peer(s);
        assert!(
            matches!(p._address, PingoraAddr::Unix(_)),
            "{:?}",
            p._address
        );
        assert_eq!(p.options.read_timeout, Some(Duration::from_secs(2)));
        assert_ne!(tcp.hash_id(), uds.hash_id());
    }
}
