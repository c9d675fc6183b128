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
    /// Time a client has to send a whole request head; then 408 (or a close when it
    /// sent nothing). Default 10s.
    pub client_header_timeout: Duration,
    /// Bound on each read of a request body and each write to the client. Default 60s.
    pub client_timeout: Duration,
    /// How long an idle client keep-alive connection stays open. Default 60s.
    pub idle_timeout: Duration,
    /// Largest request head in bytes; larger gets 431. Default 32 KiB.
    pub max_header_size: usize,
    /// Largest request body in bytes; larger gets 413. Default 100 MiB.
    pub max_body: u64,
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
    /// Access log, one line per request (common log format, or JSON with
    /// `format: json`). Default false.
    pub access: bool,
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
    pub upstream: UpstreamPolicy,
}

/// How a request picks a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequests,
    Random,
    /// Consistent (rendezvous) hashing on a request attribute.
    Hash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header, lower-cased.
    Header(String),
    Cookie(String),
    ClientIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectPolicy {
    /// Failures in a row that eject a worker.
    pub consecutive_failures: u32,
    pub base_time: Duration,
    pub max_time: Duration,
    /// 0..=100.
    pub max_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// 5xx statuses to retry, as a bit set indexed by `status - 500`.
    pub statuses: u128,
    /// Retry when the response head did not arrive within `response_header`.
    pub timeout: bool,
}

impl RetryOn {
    pub fn status(&self, status: u16) -> bool {
        (500..628).contains(&status) && self.statuses & (1u128 << (status - 500)) != 0
    }
}

/// Everything about proxying to one pool's workers.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamPolicy {
    /// Default round robin.
    pub lb: LbPolicy,
    /// One per slot; default all 1.
    pub weights: Vec<u32>,
    /// Extra attempts on other workers. Default 2.
    pub retries: u32,
    /// Default: nothing.
    pub retry_on: RetryOn,
    /// `None` when turned off. Default `{5, 10s, 5m, 50}`.
    pub eject: Option<EjectPolicy>,
    /// Default 5s.
    pub connect_timeout: Duration,
    /// Default 60s.
    pub response_header_timeout: Duration,
    /// Default 60s.
    pub idle_timeout: Duration,
    /// Idle keep-alive connections per worker. Default 32.
    pub keepalive: usize,
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
