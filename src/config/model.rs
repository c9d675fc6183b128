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
use serde::{Deserialize, Serialize};

pub use super::secret::Secret;

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
    /// `on_start` and `on_shutdown` hooks.
    pub hooks: GlobalHooks,
    /// Reload the file when it changes on disk (`reload.watch`, or `run --watch`).
    pub watch: bool,
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
    /// The bearer token of the POST endpoints (`admin.token`, or the trimmed content
    /// of `admin.token_file`). Default: none.
    pub token: Option<Secret>,
    /// Where the token was read from, when it came from `admin.token_file`.
    pub token_file: Option<PathBuf>,
    /// The control socket (`admin.socket`). Default: [`ControlSocket::Default`].
    pub socket: ControlSocket,
}

/// `admin.socket`: the unix socket that carries the control endpoints for local
/// users (`forkyard reload`, `scale`, `restart`, `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSocket {
    /// `forkyard-<admin port>.sock` in the first usable runtime directory (see
    /// `sockets::control`).
    Default,
    /// An absolute path.
    Path(PathBuf),
    /// `admin.socket: false`: no control socket.
    Off,
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
    /// How long to keep serving after `/readyz` turns 503 and before the proxy stops
    /// accepting, so a load balancer in front can notice. Default 0.
    pub delay: Duration,
}

/// How a worker gets its listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bind {
    /// The worker binds `127.0.0.1:<port>` itself.
    #[default]
    Port,
    /// forkyard binds the slot's socket, keeps it across restarts, and passes it as
    /// fd 3 with `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`.
    Inherit,
    /// The worker listens on a Unix socket whose path forkyard picks (`{socket}`),
    /// in a private runtime directory; the proxy connects over it.
    Unix,
}

/// A `bind: unix` pool has no ports; its slots are numbered `1..=N` internally, and
/// it can be scaled up to N = 4 × `workers` (at least 8) workers.
pub fn unix_slots(workers: NonZeroUsize) -> PortRange {
    let n = (workers.get() * 4).clamp(8, 1024) as u16;
    PortRange { start: 1, end: n }
}

/// The socket file of slot `slot` of a `bind: unix` pool, inside its directory.
pub fn socket_file_name(slot: usize) -> String {
    format!("{slot}.sock")
}

/// Longest Unix socket path (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

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

/// Limits after which a worker is replaced: the replacement starts first and must be
/// ready before the old worker is drained.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recycle {
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    pub max_lifetime: Option<Duration>,
    /// Bytes.
    pub max_rss: Option<u64>,
    /// Bytes of unique memory (USS: private pages, from `/proc/<pid>/smaps_rollup`).
    pub max_uss: Option<u64>,
}

impl Recycle {
    pub fn is_set(&self) -> bool {
        self.max_requests.is_some()
            || self.max_lifetime.is_some()
            || self.max_rss.is_some()
            || self.max_uss.is_some()
    }
}

/// Active health checks of a ready worker.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub probe: ReadyProbe,
    /// Default 5s.
    pub interval: Duration,
    /// Bound on one check. Default 1s.
    pub timeout: Duration,
    /// Consecutive failures that take the worker out of the load balancer. Default 3.
    pub unhealthy_after: u32,
    /// Consecutive successes that bring it back. Default 2.
    pub healthy_after: u32,
    /// Unhealthy this long, the worker is restarted (`reason="health"`). Default 30s.
    pub restart_after: Duration,
}

/// What forkyard does when a request has waited `after` for its response head on
/// one worker (`hang:`).
#[derive(Debug, Clone, PartialEq)]
pub struct HangPolicy {
    /// Required; greater than 0 and shorter than `timeouts.response_header`.
    pub after: Duration,
    /// How the worker's stacks are dumped before anything else; none by default.
    pub dump: Option<HangDump>,
    /// Bound on the dump (a command is killed with its group then). Default 10s.
    pub dump_timeout: Duration,
    /// Kill the worker (exit reason `hang`) after the dump. Default true.
    pub kill: bool,
}

/// How a hung worker's stacks are dumped.
#[derive(Debug, Clone, PartialEq)]
pub enum HangDump {
    /// Run this argv (placeholders `{pid}`, `{pool}`, `{worker}`, `{port}` or
    /// `{socket}` filled) and keep its output, e.g. `py-spy dump --pid {pid}`.
    Command(Vec<String>),
    /// Send this signal to the worker process alone (e.g. SIGUSR1 for an app that
    /// registered `faulthandler`) and keep what it writes next.
    Signal(Signal),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Default 100ms.
    pub backoff_min: Duration,
    /// Default 30s.
    pub backoff_max: Duration,
    /// Default 60s.
    pub reset_after: Duration,
    /// This many restarts of a pool's workers within `crash_loop_window` mark the
    /// pool degraded. Default 5.
    pub crash_loop_failures: usize,
    /// Default 60s.
    pub crash_loop_window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StopPolicy {
    /// Default SIGTERM.
    pub signal: Signal,
    /// Default 30s.
    pub grace: Duration,
    /// Bound on draining a worker's in-flight requests before it is signalled.
    /// Default 30s.
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// `[a-z0-9_-]+`.
    pub name: String,
    /// argv template; non-empty; may contain `{port}`, `{worker}`, `{pool}`. Empty
    /// for a preload pool.
    pub command: Vec<String>,
    /// A preload pool: forkyard's preloader imports the app once and forks the
    /// workers from it. `None` for a command pool.
    pub preload: Option<Preload>,
    /// Default 1.
    pub workers: NonZeroUsize,
    /// Slot i uses `ports.start + i`. Required; at least `workers` ports.
    pub ports: PortRange,
    /// Extra environment, in file order (values may also use the placeholders).
    pub env: Vec<(String, String)>,
    /// Default: the directory forkyard was started in (`.`).
    pub cwd: PathBuf,
    /// Default `Port`.
    pub bind: Bind,
    /// `bind: unix`: the directory of this pool's worker sockets.
    pub socket_dir: Option<PathBuf>,
    pub ready: ReadyCheck,
    /// Active health checks of ready workers; none by default.
    pub health: Option<HealthCheck>,
    /// Hung-request forensics: dump and (by default) kill a worker with a request
    /// waiting this long for its response head. Off by default.
    pub hang: Option<HangPolicy>,
    /// When to replace a worker; never by default.
    pub recycle: Recycle,
    pub restart: RestartPolicy,
    pub stop: StopPolicy,
    /// The per-worker lifecycle hooks.
    pub hooks: PoolHooks,
    pub upstream: UpstreamPolicy,
    /// The workers' own metrics, merged into forkyard's `/metrics`; off by default.
    pub metrics: Option<WorkerMetrics>,
}

/// `metrics:` of a pool: where each worker serves its Prometheus text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerMetrics {
    /// Starts with `/`.
    pub path: String,
    /// Bound on one scrape of the pool's workers. Default 2s, at most 10s.
    pub timeout: Duration,
    /// Most series kept for the pool. Default 10000.
    pub max_series: usize,
}

/// Longest `metrics.timeout`: Prometheus' default `scrape_timeout`. A longer wait
/// would fail Prometheus' whole scrape of forkyard, its own metrics with it.
pub const MAX_WORKER_METRICS_TIMEOUT: Duration = Duration::from_secs(10);

/// A Python object named `module:attribute` (the attribute may be dotted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyTarget {
    pub module: String,
    pub attribute: String,
}

impl std::fmt::Display for PyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.module, self.attribute)
    }
}

/// How each preloaded worker serves the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreloadServer {
    Waitress,
    Wsgiref,
    /// An ASGI app.
    Uvicorn,
    /// `function(app, sock, **server_options)`.
    Custom(PyTarget),
}

impl PreloadServer {
    /// The built-in servers by name.
    pub const NAMED: [(&'static str, PreloadServer); 3] = [
        ("waitress", PreloadServer::Waitress),
        ("wsgiref", PreloadServer::Wsgiref),
        ("uvicorn", PreloadServer::Uvicorn),
    ];

    /// As the preloader protocol and `check` write it.
    pub fn name(&self) -> String {
        match self {
            PreloadServer::Waitress => "waitress".into(),
            PreloadServer::Wsgiref => "wsgiref".into(),
            PreloadServer::Uvicorn => "uvicorn".into(),
            PreloadServer::Custom(t) => t.to_string(),
        }
    }
}

/// `preload:`: what the pool's preloader imports and how its workers serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct Preload {
    /// The WSGI (or, with uvicorn, ASGI) app.
    pub app: PyTarget,
    /// The interpreter. Default `python3` (on `PATH`); a relative path is relative to
    /// the directory forkyard runs in.
    pub python: String,
    /// Default waitress.
    pub server: PreloadServer,
    /// Keyword arguments for the server, in file order.
    pub server_options: Vec<(String, serde_json::Value)>,
    /// Modules imported before the app, in order.
    pub imports: Vec<String>,
    /// `gc.freeze()` before each fork, gc on again in the worker. Default true.
    pub gc_freeze: bool,
}

/// How a request picks a worker. To add an algorithm: a variant here (with its
/// name in [`LbPolicy::NAMED`] when it takes no argument), its code in
/// `proxy::selection` (which matches every variant, so a missing one does not
/// compile), and its row in docs/configuration.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequests,
    Random,
    /// Consistent (rendezvous) hashing on a request attribute.
    Hash(HashKey),
}

impl LbPolicy {
    /// The algorithms written as a plain name in config.yaml (`lb: random`); the
    /// config parser, its error messages and the JSON schema take them from here.
    pub const NAMED: [(&'static str, LbPolicy); 3] = [
        ("round_robin", LbPolicy::RoundRobin),
        ("least_requests", LbPolicy::LeastRequests),
        ("random", LbPolicy::Random),
    ];

    /// The name `check` and the status page show.
    pub fn as_str(&self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::LeastRequests => "least_requests",
            LbPolicy::Random => "random",
            LbPolicy::Hash(_) => "hash",
        }
    }
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
    /// Idle keep-alive connections per worker, per proxy thread. Default 32.
    pub keepalive: usize,
    pub buffer: Buffering,
    /// Requests one worker gets at a time. Default: no limit.
    pub max_in_flight: Option<u32>,
    pub queue: QueuePolicy,
}

/// What the proxy reads whole before passing it on, in bytes (`0`: nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// Request bodies up to this are read before a worker is chosen. Default 1 MiB.
    pub request: u64,
    /// Responses with a `Content-Length` up to this are read before their head is
    /// sent. Default 64 KiB.
    pub response: u64,
}

/// The queue of requests waiting for a worker with room (`max_in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Default 1000.
    pub max: usize,
    /// Default 30s.
    pub timeout: Duration,
}

impl PoolConfig {
    /// The port of slot `slot`.
    pub fn slot_port(&self, slot: usize) -> u16 {
        self.ports.start + slot as u16
    }

    /// Fill `{port}`, `{worker}`, `{pool}` and (for `bind: unix`) `{socket}` for the
    /// worker numbered `worker` on (internal) port `port`.
    pub fn fill(&self, template: &str, worker: usize, port: u16) -> String {
        let socket = self.socket_path(port);
        super::Placeholders {
            pool: &self.name,
            worker,
            port: socket.is_none().then_some(port),
            socket: socket.as_deref(),
            pid: None,
        }
        .fill(template)
    }

    /// The `user:` and `group:` its `post_fork` built-ins drop to, if any.
    pub fn post_fork_account(&self) -> (Option<&str>, Option<&str>) {
        let (mut user, mut group) = (None, None);
        for hook in &self.hooks.post_fork {
            match &hook.action {
                HookAction::Builtin(Builtin::User(name)) => user = Some(name.as_str()),
                HookAction::Builtin(Builtin::Group(name)) => group = Some(name.as_str()),
                _ => {}
            }
        }
        (user, group)
    }

    /// `bind: unix`: the socket path of the slot whose (internal) port is `port`.
    pub fn socket_path(&self, port: u16) -> Option<PathBuf> {
        let slot = usize::from(port.checked_sub(self.ports.start)?);
        Some(self.socket_dir.as_ref()?.join(socket_file_name(slot)))
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

/// A lifecycle phase at which hooks run. The names are a public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// In forkyard, once, before any worker is spawned.
    OnStart,
    /// In forkyard, before each spawn of a worker.
    PreFork,
    /// In the new worker process, after fork, before the app's program starts.
    PostFork,
    /// In forkyard, after the worker is ready and before it gets traffic.
    PostSpawn,
    /// In forkyard, before a worker is signalled to stop.
    PreStop,
    /// In forkyard, after a worker has exited.
    OnExit,
    /// In forkyard, once, when forkyard stops.
    OnShutdown,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::OnStart,
        Phase::PreFork,
        Phase::PostFork,
        Phase::PostSpawn,
        Phase::PreStop,
        Phase::OnExit,
        Phase::OnShutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::OnStart => "on_start",
            Phase::PreFork => "pre_fork",
            Phase::PostFork => "post_fork",
            Phase::PostSpawn => "post_spawn",
            Phase::PreStop => "pre_stop",
            Phase::OnExit => "on_exit",
            Phase::OnShutdown => "on_shutdown",
        }
    }

    /// What a failure does when the hook does not say.
    pub fn default_on_failure(self) -> OnFailure {
        match self {
            Phase::OnStart | Phase::PreFork | Phase::PostFork => OnFailure::Abort,
            Phase::PostSpawn => OnFailure::KillWorker,
            Phase::PreStop | Phase::OnExit | Phase::OnShutdown => OnFailure::Skip,
        }
    }

    /// Whether the phase belongs to one worker (rather than to forkyard as a whole).
    pub fn is_per_worker(self) -> bool {
        !matches!(self, Phase::OnStart | Phase::OnShutdown)
    }
}

/// What a failed hook (after its retries) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// `on_start`: forkyard exits before spawning anything. Per-worker phases: this
    /// spawn attempt fails and counts toward the worker's backoff.
    Abort,
    /// Log and count the failure, then carry on.
    Skip,
    /// The worker is killed (and restarted with backoff).
    KillWorker,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Abort => "abort",
            OnFailure::Skip => "skip",
            OnFailure::KillWorker => "kill_worker",
        }
    }
}

/// One declared hook item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    /// The `name` key, or `<phase>.<index>` when it has none.
    pub name: String,
    pub action: HookAction,
    /// Default 30s; never infinite.
    pub timeout: Duration,
    pub on_failure: OnFailure,
    /// Extra attempts after a failure. Default 0.
    pub retries: u32,
    /// Pause between attempts. Default 1s.
    pub retry_delay: Duration,
    /// Extra environment for `run:`, in file order.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HookAction {
    /// An argv (no shell); may use `{port}`, `{worker}`, `{pool}`.
    Run(Vec<String>),
    /// One HTTP request that must answer `expect_status` (any 2xx when unset).
    Http {
        target: HttpTarget,
        method: String,
        expect_status: Option<u16>,
    },
    /// Poll until the target answers or the timeout expires.
    WaitFor(WaitTarget),
    /// A `post_fork` built-in, applied in the worker process before the app starts.
    Builtin(Builtin),
    /// Call a Python function with no arguments, in a preload pool's preloader
    /// (`pre_fork`) or in its new worker (`post_fork`).
    Call(PyTarget),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HttpTarget {
    /// A path on the worker's own address (`post_spawn`, `pre_stop`).
    WorkerPath(String),
    /// `http://host:port/path`.
    Url(HttpUrl),
}

/// A validated `http://` URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WaitTarget {
    /// `host:port` accepting TCP connections.
    Tcp { host: String, port: u16 },
    /// A URL answering 2xx.
    Http(HttpUrl),
}

/// The `post_fork` built-ins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Builtin {
    CloseFds(bool),
    SeedEnv(String),
    Setsid(bool),
    Umask(u32),
    Rlimits(Vec<(Rlimit, Option<u64>)>),
    User(String),
    Group(String),
    Nice(i32),
    OomScoreAdj(i32),
    ParentDeathSignal(#[serde(with = "signal_number")] Signal),
}

/// A signal as its number, for the spec a new worker process reads.
mod signal_number {
    use nix::sys::signal::Signal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(s: &Signal, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_i32(*s as i32)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Signal, D::Error> {
        let n = i32::deserialize(de)?;
        Signal::try_from(n).map_err(serde::de::Error::custom)
    }
}

impl Builtin {
    /// Its key in config.yaml.
    pub fn kind(&self) -> &'static str {
        match self {
            Builtin::CloseFds(_) => "close_fds",
            Builtin::SeedEnv(_) => "seed_env",
            Builtin::Setsid(_) => "setsid",
            Builtin::Umask(_) => "umask",
            Builtin::Rlimits(_) => "rlimits",
            Builtin::User(_) => "user",
            Builtin::Group(_) => "group",
            Builtin::Nice(_) => "nice",
            Builtin::OomScoreAdj(_) => "oom_score_adj",
            Builtin::ParentDeathSignal(_) => "parent_death_signal",
        }
    }
}

/// A resource limit name (`None` value in `Builtin::Rlimits` means unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rlimit {
    Nofile,
    Core,
    Nproc,
    As,
    Fsize,
    Memlock,
    Stack,
    Cpu,
    Data,
}

impl Rlimit {
    /// The name in config.yaml.
    pub fn name(self) -> &'static str {
        match self {
            Rlimit::Nofile => "nofile",
            Rlimit::Core => "core",
            Rlimit::Nproc => "nproc",
            Rlimit::As => "as",
            Rlimit::Fsize => "fsize",
            Rlimit::Memlock => "memlock",
            Rlimit::Stack => "stack",
            Rlimit::Cpu => "cpu",
            Rlimit::Data => "data",
        }
    }

    pub const ALL: [(&'static str, Rlimit); 9] = [
        ("nofile", Rlimit::Nofile),
        ("core", Rlimit::Core),
        ("nproc", Rlimit::Nproc),
        ("as", Rlimit::As),
        ("fsize", Rlimit::Fsize),
        ("memlock", Rlimit::Memlock),
        ("stack", Rlimit::Stack),
        ("cpu", Rlimit::Cpu),
        ("data", Rlimit::Data),
    ];
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GlobalHooks {
    pub on_start: Vec<Hook>,
    pub on_shutdown: Vec<Hook>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolHooks {
    pub pre_fork: Vec<Hook>,
    pub post_fork: Vec<Hook>,
    pub post_spawn: Vec<Hook>,
    pub pre_stop: Vec<Hook>,
    pub on_exit: Vec<Hook>,
}

impl PoolHooks {
    pub fn phase(&self, phase: Phase) -> &[Hook] {
        match phase {
            Phase::PreFork => &self.pre_fork,
            Phase::PostFork => &self.post_fork,
            Phase::PostSpawn => &self.post_spawn,
            Phase::PreStop => &self.pre_stop,
            Phase::OnExit => &self.on_exit,
            Phase::OnStart | Phase::OnShutdown => &[],
        }
    }
}

impl GlobalHooks {
    pub fn phase(&self, phase: Phase) -> &[Hook] {
        match phase {
            Phase::OnStart => &self.on_start,
            Phase::OnShutdown => &self.on_shutdown,
            _ => &[],
        }
    }
}
