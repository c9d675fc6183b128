//! The identity of a worker slot, where its current process listens, and the state
//! it is in: the small types every layer above `config` and `process` shares.
//!
//! A pool runs `workers` slots, numbered `0..workers` ([`SlotId`]). A slot keeps its
//! number across every restart, recycle and rolling replacement, whatever port or
//! socket its current process uses ([`Endpoint`]): a replacement starts on a spare
//! endpoint while the old process still serves on its own. The `worker` label of
//! every metric, the `FORKYARD_WORKER` variable, `{worker}`, weights and hash keys
//! all mean the slot; only the proxy's connections care about the endpoint.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A worker slot of a pool: `0..workers`, stable for the life of the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotId(pub usize);

impl SlotId {
    pub(crate) fn index(self) -> usize {
        self.0
    }

    /// The value of the `worker` label.
    pub(crate) fn label(self) -> String {
        self.0.to_string()
    }

    /// A stable 64-bit identity for rendezvous hashing: keys follow the slot, not
    /// the port its current process happens to use.
    pub(crate) fn hash_id(self) -> u64 {
        mix(self.0 as u64 ^ 0x5157_0000_0000_0000)
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where one worker process listens: a TCP address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => a.fmt(f),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Endpoint::Tcp(a)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    /// `127.0.0.1:9001`, `[::1]:9001` or `unix:/run/app/w0.sock`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?}: empty unix socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Endpoint::Tcp)
            .map_err(|_| format!("{s:?}: expected IP:port or unix:/path"))
    }
}

impl Endpoint {
    /// Where the worker on endpoint number `port` of `pool` listens:
    /// `127.0.0.1:<port>`, or its Unix socket for `bind: unix` (there the number
    /// only names the socket file).
    pub(crate) fn of(pool: &crate::config::PoolConfig, port: u16) -> Endpoint {
        match pool.socket_path(port) {
            Some(path) => Endpoint::Unix(path),
            None => Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
        }
    }
}

/// The state of one worker slot's current process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WorkerState {
    /// Spawned, not yet ready: gets no traffic.
    Starting,
    /// Passed its ready probe: in the load balancer.
    Ready,
    /// Ready, but failing its health checks: out of the load balancer.
    Unhealthy,
    /// Exited (or failed to start); waiting before the next spawn.
    Backoff,
    /// Out of the load balancer, being signalled to stop.
    Stopping,
    /// Stopped for good.
    Stopped,
}

impl WorkerState {
    /// States exported by the `forkyard_workers` gauge.
    pub(crate) const GAUGED: [WorkerState; 5] = [
        WorkerState::Starting,
        WorkerState::Ready,
        WorkerState::Unhealthy,
        WorkerState::Backoff,
        WorkerState::Stopping,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Unhealthy => "unhealthy",
            WorkerState::Backoff => "backoff",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// splitmix64's finaliser: spreads any 64-bit input over all 64 bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        let tcp: Endpoint = "127.0.0.1:9001".parse().unwrap();
        let uds: Endpoint = "unix:/tmp/w0.sock".parse().unwrap();
        assert!("unix:".parse::<Endpoint>().is_err());
        assert!("localhost:80".parse::<Endpoint>().is_err());
        assert_eq!(uds.to_string(), "unix:/tmp/w0.sock");
        assert_eq!(tcp.to_string(), "127.0.0.1:9001");
    }

    #[test]
    fn slot_hash_ids_are_distinct_and_stable() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|s| SlotId(s).hash_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert_eq!(SlotId(3).hash_id(), SlotId(3).hash_id());
    }
}
