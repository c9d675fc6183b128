//! The validated configuration: the only config types the rest of forkyard sees.
//!
//! Every value here has been checked: durations are `Duration`, addresses are
//! `SocketAddr`, signals are `Signal`, and cross-references (a route's pool) are known
//! to resolve. Built from the raw serde mirror by `config::validate`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

/// The whole validated config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this config was read from (for messages and reloads).
    pub source: PathBuf,
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    /// Pools in file order.
    pub pools: Vec<PoolConfig>,
    /// Routes in file order; when the file has none and there is a single pool,
    /// this holds one catch-all route to it.
    pub routes: Vec<Route>,
}

impl Config {
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Default `["0.0.0.0:8080"]`.
    pub listen: Vec<SocketAddr>,
    /// Default 1.
    pub threads: NonZeroUsize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9090`.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Default `info`.
    pub level: LogLevel,
    /// Default `text`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    /// How long in-flight requests may take to finish after SIGTERM. Default 30s.
    pub timeout: Duration,
}

/// An inclusive port range, `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn len(&self) -> usize {
        usize::from(self.end - self.start) + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReadyProbe {
    /// Ready once a TCP connect to the slot's port succeeds.
    Tcp,
    /// Ready once `GET <path>` on the slot's port answers 2xx.
    Http { path: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadyCheck {
    /// Default `Tcp`.
    pub probe: ReadyProbe,
    /// Boot timeout: a worker not ready by then is killed and restarted. Default 30s.
    pub timeout: Duration,
    /// How often readiness is probed. Default 100ms.
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Default 100ms.
    pub backoff_min: Duration,
    /// Default 30s.
    pub backoff_max: Duration,
    /// Default 60s.
    pub reset_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StopPolicy {
    /// Default SIGTERM.
    pub signal: Signal,
    /// Default 30s.
    pub grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// `[a-z0-9_-]+`.
    pub name: String,
    /// argv template; non-empty; may contain `{port}`, `{worker}`, `{pool}`.
    pub command: Vec<String>,
    /// Default 1.
    pub workers: NonZeroUsize,
    /// Slot i uses `ports.start + i`. Required; at least `workers` ports.
    pub ports: PortRange,
    /// Extra environment, in file order (values may also use the placeholders).
    pub env: Vec<(String, String)>,
    /// Default: the directory forkyard was started in (`.`).
    pub cwd: PathBuf,
    pub ready: ReadyCheck,
    pub restart: RestartPolicy,
    pub stop: StopPolicy,
}

impl PoolConfig {
    /// The port of slot `slot`.
    pub fn slot_port(&self, slot: usize) -> u16 {
        self.ports.start + slot as u16
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Matched case-insensitively against the request's Host, port stripped.
    pub host: Option<String>,
    /// Matched against the path on segment boundaries: `/api` matches `/api` and
    /// `/api/x`, not `/apix`. A prefix ending in `/` matches plain string prefix.
    pub path_prefix: Option<String>,
    /// Name of an existing pool.
    pub pool: String,
}

/// Fill `{port}`, `{worker}` and `{pool}` in one template string.
pub fn fill_placeholders(template: &str, pool: &str, worker: usize, port: u16) -> String {
    template
        .replace("{port}", &port.to_string())
        .replace("{worker}", &worker.to_string())
        .replace("{pool}", pool)
}
