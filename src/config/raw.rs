//! The raw serde mirror of `config.yaml`: its shape, and nothing else.
//!
//! Every struct denies unknown keys and every field is optional, so that a key with a
//! bad value can be removed and deserialization retried (see `config::load_from_str`).
//! Values that need checking (addresses, durations, port ranges, names) are kept as
//! text here and checked in `validate`, which is where defaults are applied. The `///`
//! comments state each default; they become the descriptions of the JSON Schema that
//! `schema` derives from these types (`forkyard schema`), so editors show them.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::duration::DURATION_HINT;
use super::error::with_suggestion;
use super::location::KeyPath;
use super::size::SIZE_HINT;

/// forkyard's config.yaml: pools of worker processes behind an HTTP proxy.
/// Every key is documented in docs/configuration.md.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "forkyard config.yaml")]
pub(super) struct RawConfig {
    /// The HTTP reverse proxy. Default: listen on `0.0.0.0:8080` with 1 thread.
    pub proxy: Option<RawProxy>,
    /// The admin endpoints (/metrics, /healthz, /readyz, /status). Default: `127.0.0.1:9090`.
    pub admin: Option<RawAdmin>,
    /// Logging. Default: level `info`, format `text`.
    pub log: Option<RawLog>,
    /// Shutdown. Default: drain for up to `30s`.
    pub shutdown: Option<RawShutdown>,
    /// Required. Worker pools by name (`[a-z0-9_-]+`), in file order; at least one.
    #[schemars(required)]
    pub pools: Option<RawPools>,
    /// Optional with one pool (then one catch-all route to it); required with more.
    /// First match wins.
    pub routes: Option<Vec<RawRoute>>,
    /// forkyard-wide hooks: `on_start` and `on_shutdown`. Default: none.
    pub hooks: Option<RawGlobalHooks>,
    /// Config reloads. Default `{ watch: false }`.
    pub reload: Option<RawReload>,
}

/// `reload:`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Reload")]
pub(super) struct RawReload {
    /// Reload when the config file changes on disk. Default false.
    #[schemars(with = "Option<super::schema::Flag>")]
    pub watch: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Proxy")]
pub(super) struct RawProxy {
    /// One `IP:port` or a list of them. Default `"0.0.0.0:8080"`.
    pub listen: Option<RawListen>,
    /// Proxy worker threads, 1 to 1024. Default 1.
    #[schemars(with = "Option<super::schema::Count>")]
    pub threads: Option<usize>,
    /// Time a client has to send a whole request head. Default `"10s"`.
    pub client_header_timeout: Option<RawDuration>,
    /// Bound on each read of a request body and each write of a response to the
    /// client. Default `"60s"`.
    pub client_timeout: Option<RawDuration>,
    /// How long an idle client keep-alive connection is kept open. Default `"60s"`.
    pub idle_timeout: Option<RawDuration>,
    /// Largest request head (request line and headers). Default `"32KiB"`.
    pub max_header_size: Option<RawSize>,
    /// Largest request body. Default `"100MiB"`.
    pub max_body: Option<RawSize>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Admin")]
pub(super) struct RawAdmin {
    /// One `IP:port`. Default `"127.0.0.1:9090"`.
    #[schemars(with = "Option<super::schema::Address>")]
    pub listen: Option<Scalar>,
    /// Bearer token required by the POST endpoints (`/reload`,
    /// `/pools/<name>/scale`, `/pools/<name>/restart`) on `listen`: at least 16
    /// visible ASCII characters, e.g. `"${FORKYARD_ADMIN_TOKEN}"`. Not with
    /// `token_file`. Default: none (then the POST endpoints answer on a loopback
    /// `listen` only, and 403 elsewhere).
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace is trimmed), read at
    /// start-up and at each reload. Not with `token`. Default: none.
    pub token_file: Option<String>,
    /// The control socket: an absolute path, or `false` for none. It carries the
    /// same endpoints as `listen`, POSTs included, without a token; its mode is 0600.
    /// Default: `forkyard-<admin port>.sock` in `$RUNTIME_DIRECTORY`,
    /// `$XDG_RUNTIME_DIR/forkyard`, `/run/forkyard` or `/tmp/forkyard-<uid>`,
    /// whichever is usable first.
    #[schemars(with = "Option<super::schema::SocketPath>")]
    pub socket: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Log")]
pub(super) struct RawLog {
    /// `error`, `warn`, `info`, `debug` or `trace`. Default `info`.
    #[schemars(with = "Option<super::schema::LogLevel>")]
    pub level: Option<Scalar>,
    /// `text` or `json`. Default `text`.
    #[schemars(with = "Option<super::schema::LogFormat>")]
    pub format: Option<Scalar>,
    /// One line per proxied request, in common log format (`format: text`) or JSON
    /// (`format: json`). Default `false`.
    pub access: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Shutdown")]
pub(super) struct RawShutdown {
    /// How long in-flight requests may take to finish after SIGTERM. Default `"30s"`.
    pub timeout: Option<RawDuration>,
    /// Time between /readyz turning 503 and the proxy closing its listeners. Default `"0s"`.
    pub delay: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Pool")]
pub(super) struct RawPool {
    /// Required unless `preload` is given (never both). argv, non-empty; may use
    /// `{port}` (`{socket}` for `bind: unix`), `{worker}` and `{pool}`.
    pub command: Option<RawCommand>,
    /// Instead of `command`: import a Python app once in forkyard's preloader and
    /// fork each worker from it. Default: none.
    pub preload: Option<RawPreload>,
    /// Number of worker processes, 1 to 65535. Default 1.
    #[schemars(with = "Option<super::schema::Count>")]
    pub workers: Option<usize>,
    /// Required unless `bind: unix`. `"A-B"` (inclusive) or a single port; at least
    /// `workers` ports.
    #[schemars(with = "Option<super::schema::PortRange>")]
    pub ports: Option<Scalar>,
    /// Extra environment variables, in file order. Default: none.
    pub env: Option<RawEnv>,
    /// Working directory of the workers. Default `"."`.
    pub cwd: Option<String>,
    /// How a worker gets its socket: `port` (it binds its slot's port itself),
    /// `inherit` (forkyard passes it as fd 3, systemd style) or `unix` (it listens on
    /// the Unix socket `{socket}` that forkyard picks). Default `port`.
    #[schemars(with = "Option<super::schema::BindMode>")]
    pub bind: Option<Scalar>,
    /// Readiness probe. Default `{ tcp: true, timeout: "30s", interval: "100ms" }`.
    pub ready: Option<RawReady>,
    /// Active health checks of ready workers. Default: none.
    pub health: Option<RawHealth>,
    /// Hung requests: after a request has waited `after` for its response head on
    /// one worker, dump the worker's stacks (`dump`), log a `hang` event and kill
    /// the worker (`kill`). Default: none.
    pub hang: Option<RawHang>,
    /// Replace workers after some requests, age or memory. Default: never.
    pub recycle: Option<RawRecycle>,
    /// Restart backoff. Default `{ backoff_min: "100ms", backoff_max: "30s", reset_after: "60s" }`.
    pub restart: Option<RawRestart>,
    /// How workers are stopped. Default `{ signal: SIGTERM, grace: "30s" }`.
    pub stop: Option<RawStop>,
    /// Per-worker hooks: `pre_fork`, `post_fork`, `post_spawn`, `pre_stop`, `on_exit`.
    /// Default: none (but `post_fork` always closes inherited fds unless told not to).
    pub hooks: Option<RawPoolHooks>,
    /// Load-balancing algorithm: `round_robin`, `least_requests`, `random`, or
    /// `{ hash: { header: NAME } | { cookie: NAME } | { client_ip: true } }`.
    /// Default `round_robin`.
    pub lb: Option<RawLb>,
    /// One weight (at least 1) per worker slot. Default: 1 for every slot.
    pub weights: Option<Vec<u32>>,
    /// Extra attempts on other workers after a failure. Default 2.
    pub retries: Option<u32>,
    /// Responses retried on another worker (idempotent requests only): 5xx status
    /// codes and `timeout`. Default: none.
    pub retry_on: Option<Vec<Scalar>>,
    /// Outlier ejection. Default `{ consecutive_failures: 5, base_time: "10s",
    /// max_time: "5m", max_percent: 50 }`.
    pub eject: Option<RawEject>,
    /// Upstream timeouts. Default `{ connect: "5s", response_header: "60s", idle: "60s" }`.
    pub timeouts: Option<RawUpstreamTimeouts>,
    /// Idle keep-alive connections kept per worker (by each proxy thread). Default 32.
    pub keepalive: Option<usize>,
    /// What forkyard reads whole before passing it on: a request body up to
    /// `request` before a worker is chosen, a response with a `Content-Length` up
    /// to `response` before its head goes to the client. `0` turns one off.
    /// Default `{ request: "1MiB", response: "64KiB" }`.
    pub buffer: Option<RawBuffer>,
    /// Requests one worker gets at a time; more wait in the pool's queue. `1` suits
    /// synchronous workers. Default: no limit.
    pub max_in_flight: Option<u32>,
    /// Requests waiting for a worker with room (`max_in_flight`): at most `max`,
    /// each at most `timeout`; then 503 with `Retry-After`. Default `{ max: 1000,
    /// timeout: "30s" }`.
    pub queue: Option<RawQueue>,
    /// Merge the workers' own Prometheus metrics into forkyard's `/metrics`: each
    /// ready worker serves its metrics at `path`, fetched at every scrape. Default:
    /// off.
    pub metrics: Option<RawWorkerMetrics>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkerMetrics {
    /// Required. Where each worker serves its Prometheus text, e.g. `"/metrics"`.
    pub path: Option<String>,
    /// How long one scrape waits for the workers, at most `"10s"`. Default `"2s"`.
    pub timeout: Option<RawDuration>,
    /// Most series kept for the pool (merged series plus per-worker ones), 1 to
    /// 1000000. Default 10000.
    pub max_series: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBuffer {
    /// Largest request body read whole before a worker is chosen. Default `"1MiB"`.
    pub request: Option<RawSize>,
    /// Largest response (by `Content-Length`) read whole before it is sent on.
    /// Default `"64KiB"`.
    pub response: Option<RawSize>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    /// Requests that may wait. Default 1000.
    pub max: Option<usize>,
    /// How long one may wait. Default `"30s"`.
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEject {
    /// Connect errors or 5xx answers in a row that eject a worker; 0 turns ejection
    /// off. Default 5.
    pub consecutive_failures: Option<u32>,
    /// First ejection time; the n-th ejection lasts n times this. Default `"10s"`.
    pub base_time: Option<RawDuration>,
    /// Longest ejection. Default `"5m"`.
    pub max_time: Option<RawDuration>,
    /// Most of the pool's workers (percent) ejected at once. Default 50.
    pub max_percent: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTimeouts {
    /// Connecting to a worker. Default `"5s"`.
    pub connect: Option<RawDuration>,
    /// Waiting for the response head, and for each further read. Default `"60s"`.
    pub response_header: Option<RawDuration>,
    /// How long an unused keep-alive connection to a worker is kept. Default `"60s"`.
    pub idle: Option<RawDuration>,
}

/// `lb`: an algorithm name, or a mapping for hashing.
#[derive(Debug, Clone)]
pub(super) enum RawLb {
    Name(String),
    Map(RawLbMap),
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLbMap {
    /// Consistent hashing on one request attribute.
    pub hash: Option<RawHash>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHash {
    /// Hash on this request header's value.
    pub header: Option<String>,
    /// Hash on this cookie's value.
    pub cookie: Option<String>,
    /// Hash on the client's IP address; only `true` is meaningful.
    pub client_ip: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ready")]
pub(super) struct RawReady {
    /// Probe by TCP connect; only `true` is meaningful. Default: the probe when
    /// `ready` is not given.
    #[schemars(with = "Option<super::schema::Flag>")]
    pub tcp: Option<bool>,
    /// Probe by `GET <path>` expecting 2xx; the path starts with `/`. No default.
    pub http: Option<String>,
    /// A worker not ready by then is killed and restarted. Default `"30s"`.
    pub timeout: Option<RawDuration>,
    /// Time between probes. Default `"100ms"`.
    pub interval: Option<RawDuration>,
}

/// `recycle:` limits after which a worker is replaced (replacement first).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Recycle")]
pub(super) struct RawRecycle {
    /// Requests served by one worker. Default: no limit.
    #[schemars(with = "Option<super::schema::Integer>")]
    pub max_requests: Option<u64>,
    /// A random 0..=jitter added per worker to `max_requests`. Default 0.
    #[schemars(with = "Option<super::schema::Integer>")]
    pub max_requests_jitter: Option<u64>,
    /// Age of a worker. Default: no limit.
    pub max_lifetime: Option<RawDuration>,
    /// Resident memory of a worker, e.g. `"512MiB"`. Default: no limit.
    pub max_rss: Option<Scalar>,
    /// Unique memory (USS) of a worker, e.g. `"256MiB"`. Default: no limit.
    pub max_uss: Option<Scalar>,
}

/// `preload:` of a pool.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Preload")]
pub(super) struct RawPreload {
    /// Required. The app, `module:attribute` (the attribute may be dotted), e.g.
    /// `"myapp.wsgi:application"`.
    #[schemars(required)]
    pub app: Option<String>,
    /// The Python interpreter. Default `python3` on `PATH`; a relative path is
    /// relative to the directory forkyard runs in.
    pub python: Option<String>,
    /// How each worker serves the app: `waitress`, `wsgiref`, `uvicorn` (ASGI) or
    /// `"module:function"`, called as `function(app, sock, **server_options)`.
    /// Default `waitress`.
    pub server: Option<String>,
    /// Keyword arguments for the server, e.g. `{ threads: 4 }`. Default: none.
    pub server_options: Option<serde_json::Map<String, serde_json::Value>>,
    /// More modules imported, in order, before the app. Default: none.
    pub imports: Option<Vec<String>>,
    /// `gc.freeze()` before each fork and the garbage collector on again in the
    /// worker, so collections do not copy the shared pages. Default true.
    #[schemars(with = "Option<super::schema::Flag>")]
    pub gc_freeze: Option<bool>,
}

/// `health:` active checks.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Health")]
pub(super) struct RawHealth {
    /// Probe by TCP connect (`true`).
    #[schemars(with = "Option<super::schema::Flag>")]
    pub tcp: Option<bool>,
    /// Probe by `GET <path>` expecting 2xx.
    pub http: Option<String>,
    /// Time between checks. Default `"5s"`.
    pub interval: Option<RawDuration>,
    /// Bound on one check. Default `"1s"`.
    pub timeout: Option<RawDuration>,
    /// Consecutive failures that take a worker out of the load balancer. Default 3.
    #[schemars(with = "Option<super::schema::Count>")]
    pub unhealthy_after: Option<u32>,
    /// Consecutive successes that bring it back. Default 2.
    #[schemars(with = "Option<super::schema::Count>")]
    pub healthy_after: Option<u32>,
    /// Unhealthy this long, the worker is restarted. Default `"30s"`.
    pub restart_after: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Hang")]
pub(super) struct RawHang {
    /// Required. A request that has waited this long for its response head counts
    /// as hung; shorter than `timeouts.response_header`.
    pub after: Option<RawDuration>,
    /// How to dump the hung worker's stacks first: an argv (`{pid}` is the worker's
    /// process, e.g. `["py-spy", "dump", "--pid", "{pid}"]`) or `{ signal: SIGUSR1 }`
    /// (for an app that registered `faulthandler`). Default: no dump.
    pub dump: Option<RawDump>,
    /// Bound on the dump: the command is killed, or the worker's output after the
    /// signal stops being collected. Default `"10s"`.
    pub dump_timeout: Option<RawDuration>,
    /// Kill the hung worker after the dump (it is replaced; its hung requests get
    /// 504). Default true.
    pub kill: Option<bool>,
}

/// `hang.dump`: an argv, or a mapping with a signal.
#[derive(Debug, Clone)]
pub(super) enum RawDump {
    Command(RawCommand),
    Map(RawDumpMap),
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDumpMap {
    /// Send this signal (a name such as `SIGUSR1`) to the worker process alone.
    #[schemars(with = "Option<super::schema::SignalName>")]
    pub signal: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Restart")]
pub(super) struct RawRestart {
    /// First restart delay, greater than 0. Default `"100ms"`.
    pub backoff_min: Option<RawDuration>,
    /// Largest restart delay, at least `backoff_min`. Default `"30s"`.
    pub backoff_max: Option<RawDuration>,
    /// Up this long, a worker's backoff starts over. Default `"60s"`.
    pub reset_after: Option<RawDuration>,
    /// Crash-loop breaker. Default `{ failures: 5, window: "60s" }`.
    pub crash_loop: Option<RawCrashLoop>,
}

/// `restart.crash_loop`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CrashLoop")]
pub(super) struct RawCrashLoop {
    /// Restarts within `window` that mark the pool degraded, at least 1. Default 5.
    #[schemars(with = "Option<super::schema::Count>")]
    pub failures: Option<usize>,
    /// The sliding window. Default `"60s"`.
    pub window: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stop")]
pub(super) struct RawStop {
    /// Signal name such as `SIGTERM` or `TERM`. Default `SIGTERM`.
    #[schemars(with = "Option<super::schema::SignalName>")]
    pub signal: Option<Scalar>,
    /// Time between the signal and SIGKILL. Default `"30s"`.
    pub grace: Option<RawDuration>,
    /// Bound on waiting for a worker's in-flight requests after it left the load
    /// balancer and before it is signalled. Default `"30s"`.
    pub drain: Option<RawDuration>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Route")]
pub(super) struct RawRoute {
    /// Exact host, case-insensitive, without a port. Default: any host.
    pub host: Option<String>,
    /// Path prefix starting with `/`, matched on segment boundaries. Default: any path.
    pub path_prefix: Option<String>,
    /// Required. The pool that serves matching requests.
    #[schemars(required)]
    pub pool: Option<String>,
}

/// Top-level `hooks:`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GlobalHooks")]
pub(super) struct RawGlobalHooks {
    /// Run once before any worker is spawned. Default: none.
    pub on_start: Option<Vec<RawHook>>,
    /// Run once when forkyard stops, after the workers. Default: none.
    pub on_shutdown: Option<Vec<RawHook>>,
}

/// `pools.<name>.hooks:`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PoolHooks")]
pub(super) struct RawPoolHooks {
    /// In forkyard, before each spawn. Default: none.
    pub pre_fork: Option<Vec<RawHook>>,
    /// In the new worker process, before the app starts. Default: none.
    pub post_fork: Option<Vec<RawHook>>,
    /// After the worker is ready, before it gets traffic. Default: none.
    pub post_spawn: Option<Vec<RawHook>>,
    /// Before a worker is signalled to stop. Default: none.
    pub pre_stop: Option<Vec<RawHook>>,
    /// After a worker has exited. Default: none.
    pub on_exit: Option<Vec<RawHook>>,
}

/// One hook item: exactly one action key plus the common keys.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Hook")]
pub(super) struct RawHook {
    /// Label in logs and metrics. Default `<phase>.<index>`.
    pub name: Option<String>,
    /// Bound on one attempt. Default `"30s"`.
    pub timeout: Option<RawDuration>,
    /// `abort`, `skip` or `kill_worker`. Default depends on the phase.
    #[schemars(with = "Option<super::schema::FailurePolicy>")]
    pub on_failure: Option<Scalar>,
    /// Extra attempts after a failure. Default 0.
    #[schemars(with = "Option<super::schema::Integer>")]
    pub retries: Option<u32>,
    /// Pause between attempts. Default `"1s"`.
    pub retry_delay: Option<RawDuration>,
    /// Extra environment for `run`. Default: none.
    pub env: Option<RawEnv>,
    /// Action: an argv to run (no shell).
    pub run: Option<RawCommand>,
    /// Action: one HTTP request.
    pub http: Option<RawHttpAction>,
    /// Action: poll a TCP or HTTP target until it answers.
    pub wait_for: Option<RawWaitFor>,
    /// Action (preload pools, `pre_fork` and `post_fork` only): call the Python
    /// function `module:attribute` with no arguments, in the preloader before the
    /// fork or in the new worker after it.
    pub call: Option<String>,
    /// post_fork built-in: close inherited fds other than 0-2. Default true.
    #[schemars(with = "Option<super::schema::Flag>")]
    pub close_fds: Option<bool>,
    /// post_fork built-in: set this env var to a fresh random 256-bit hex value.
    pub seed_env: Option<String>,
    /// post_fork built-in: start a new session.
    #[schemars(with = "Option<super::schema::Flag>")]
    pub setsid: Option<bool>,
    /// post_fork built-in: octal umask such as `"022"`.
    pub umask: Option<Scalar>,
    /// post_fork built-in: resource limits, e.g. `{ nofile: 65536, core: 0 }`.
    pub rlimits: Option<RawEnv>,
    /// post_fork built-in: run as this user (when forkyard is root).
    pub user: Option<Scalar>,
    /// post_fork built-in: run as this group (when forkyard is root).
    pub group: Option<Scalar>,
    /// post_fork built-in: scheduling niceness, -20..19.
    #[schemars(with = "Option<super::schema::Integer>")]
    pub nice: Option<i32>,
    /// post_fork built-in: OOM killer adjustment, -1000..1000.
    #[schemars(with = "Option<super::schema::Integer>")]
    pub oom_score_adj: Option<i32>,
    /// post_fork built-in: signal the worker gets when forkyard dies.
    #[schemars(with = "Option<super::schema::SignalName>")]
    pub parent_death_signal: Option<Scalar>,
}

/// `http:` action.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpAction")]
pub(super) struct RawHttpAction {
    /// A path on the worker's address (post_spawn, pre_stop).
    pub path: Option<String>,
    /// Or any `http://host:port/path` URL.
    pub url: Option<String>,
    /// Request method. Default `GET`.
    pub method: Option<String>,
    /// Status that counts as success. Default: any 2xx.
    #[schemars(with = "Option<super::schema::Integer>")]
    pub expect_status: Option<u16>,
}

/// `wait_for:` action.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WaitFor")]
pub(super) struct RawWaitFor {
    /// `host:port` that must accept a TCP connection.
    pub tcp: Option<Scalar>,
    /// `http://` URL that must answer 2xx.
    pub http: Option<String>,
}

/// A string, or a number or boolean written where a string is expected.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scalar {
    pub text: String,
    /// True when YAML typed it as a number or boolean; its text is then
    /// serde_yaml's rendering (`3.1` for `3.10`) and the source text is better.
    pub typed: bool,
}

/// `proxy.listen`: one address or a list of them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RawListen {
    One(Scalar),
    Many(Vec<Scalar>),
}

/// A pool's argv.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RawCommand(pub Vec<Scalar>);

/// Pools in file order.
#[derive(Debug, Clone, Default)]
pub(super) struct RawPools(pub Vec<(Scalar, RawPool)>);

/// Environment variables in file order.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RawEnv(pub Vec<(Scalar, Scalar)>);

/// A duration string, parsed by `validate`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RawDuration(pub String);

/// A size string such as `"32KiB"`, parsed by `validate`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RawSize(pub String);

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar {
            text: v.to_owned(),
            typed: false,
        })
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(typed(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(typed(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(typed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(typed(serde_yaml::Number::from(v)))
    }
}

fn typed(v: impl fmt::Display) -> Scalar {
    Scalar {
        text: v.to_string(),
        typed: true,
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawListen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"an address like "0.0.0.0:8080" or a list of them"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawListen, E> {
                ScalarVisitor.visit_str(v).map(RawListen::One)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawListen, E> {
                ScalarVisitor.visit_i64(v).map(RawListen::One)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawListen, E> {
                ScalarVisitor.visit_u64(v).map(RawListen::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawListen, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Scalar>()? {
                    items.push(item);
                }
                Ok(RawListen::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a list of strings like ["python3", "app.py", "--port", "{port}"]"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Err(E::custom(format!(
                    "expected a list of strings (argv), found string {v:?}; write each argument separately, e.g. {}",
                    argv_example(v)
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Scalar>()? {
                    items.push(item);
                }
                Ok(RawCommand(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"python3 app.py"` → `["python3", "app.py"]`, to show what was meant.
fn argv_example(command: &str) -> String {
    let words: Vec<String> = command
        .split_whitespace()
        .take(8)
        .map(|w| format!("{w:?}"))
        .collect();
    format!("[{}]", words.join(", "))
}

impl<'de> Deserialize<'de> for RawPools {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPools;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from pool names to pools")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPools, A::Error> {
                let mut pools = Vec::new();
                while let Some(name) = map.next_key::<Scalar>()? {
                    // A pool written as `web:` with nothing under it is an empty pool.
                    let pool = map.next_value::<Option<RawPool>>()?.unwrap_or_default();
                    pools.push((name, pool));
                }
                Ok(RawPools(pools))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawEnv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEnv;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from variable names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnv, A::Error> {
                let mut vars = Vec::new();
                while let Some(name) = map.next_key::<Scalar>()? {
                    vars.push((name, map.next_value::<Scalar>()?));
                }
                Ok(RawEnv(vars))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn bare_number<E: de::Error>(n: impl fmt::Display) -> Result<RawDuration, E> {
                Err(E::custom(format!("invalid duration {n} ({DURATION_HINT})")))
            }
        }
        impl<'de> Visitor<'de> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a duration string ({DURATION_HINT})")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                V::bare_number(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                V::bare_number(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                V::bare_number(serde_yaml::Number::from(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn bare_number<E: de::Error>(n: impl fmt::Display) -> Result<RawSize, E> {
                Err(E::custom(format!("invalid size {n} ({SIZE_HINT})")))
            }
        }
        impl<'de> Visitor<'de> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a size string ({SIZE_HINT})")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                // Zero needs no unit: `buffer: { response: 0 }` turns buffering off.
                if v == 0 {
                    return Ok(RawSize("0".into()));
                }
                V::bare_number(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                if v == 0 {
                    return Ok(RawSize("0".into()));
                }
                V::bare_number(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawSize, E> {
                V::bare_number(serde_yaml::Number::from(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawLb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawLb;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("round_robin, least_requests, random or { hash: { header: NAME } }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawLb, E> {
                Ok(RawLb::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawLb, A::Error> {
                RawLbMap::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawLb::Map)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawDump {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDump;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a list of strings like ["py-spy", "dump", "--pid", "{pid}"] or { signal: SIGUSR1 }"#)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawDump, A::Error> {
                RawCommand::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(RawDump::Command)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDump, A::Error> {
                RawDumpMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawDump::Map)
            }
        }
        d.deserialize_any(V)
    }
}

/// Reword a serde error at `path` for people: which key is unknown and what would be
/// valid, or what type was expected and what was found. Returns the message and
/// whether it is about the key rather than the value.
pub(super) fn describe_serde_error(message: &str, path: &KeyPath) -> (String, bool) {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = match path.last_key() {
            Some(k) => k.to_owned(),
            None => rest.split('`').next().unwrap_or_default().to_owned(),
        };
        return (unknown_key(&key, rest), true);
    }
    let body = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some((found, expected)) = body.and_then(|b| b.rsplit_once(", expected ")) {
        return (
            format!(
                "expected {}, found {}",
                expected_words(expected),
                found_words(found)
            ),
            false,
        );
    }
    (message.to_owned(), false)
}

/// `rest` is serde's text after "unknown field `": "x`, expected one of `a`, `b`",
/// "x`, expected `a` or `b`" or "x`, there are no fields".
fn unknown_key(key: &str, rest: &str) -> String {
    let expected: Vec<&str> = match rest.split_once(", expected ") {
        Some((_, list)) => list.split('`').skip(1).step_by(2).collect(),
        None => Vec::new(),
    };
    let message = if expected.is_empty() {
        format!("unknown key {key:?} (this section takes no keys)")
    } else {
        format!(
            "unknown key {key:?} (expected one of: {})",
            expected.join(", ")
        )
    };
    if key == "<<" {
        return format!(
            "{message}; YAML merge keys are not supported, use an alias instead (e.g. `restart: *defaults`)"
        );
    }
    with_suggestion(message, key, &expected)
}

fn expected_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        e if e.starts_with("struct ") => "a mapping".to_owned(),
        e => e.to_owned(),
    }
}

fn found_words(found: &str) -> String {
    let backticked = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('`'))
            .and_then(|r| r.strip_suffix('`'))
            .map(str::to_owned)
    };
    if let Some(n) = backticked("integer ").or_else(|| backticked("floating point ")) {
        return format!("number {n}");
    }
    if let Some(b) = backticked("boolean ") {
        return b;
    }
    match found {
        "map" => "a mapping".to_owned(),
        "sequence" => "a list".to_owned(),
        "unit value" => "an empty value".to_owned(),
        "enum" => "a tagged value".to_owned(),
        f => f.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> KeyPath {
        keys.iter().fold(KeyPath::root(), |p, k| p.key(*k))
    }

    #[test]
    fn unknown_field_messages() {
        let (m, at_key) = describe_serde_error(
            "unknown field `wrokers`, expected one of `command`, `workers`, `ports`",
            &path(&["pools", "web", "wrokers"]),
        );
        assert!(at_key);
        assert_eq!(
            m,
            r#"unknown key "wrokers" (expected one of: command, workers, ports); did you mean "workers"?"#
        );
        let (m, _) = describe_serde_error(
            "unknown field `x`, expected `timeout`",
            &path(&["shutdown", "x"]),
        );
        assert_eq!(m, r#"unknown key "x" (expected one of: timeout)"#);
    }

    #[test]
    fn type_messages() {
        let p = path(&["a"]);
        let cases = [
            (
                "invalid type: string \"four\", expected usize",
                "expected a whole number, found string \"four\"",
            ),
            (
                "invalid value: integer `-1`, expected usize",
                "expected a whole number, found number -1",
            ),
            (
                "invalid type: map, expected a string",
                "expected a string, found a mapping",
            ),
            (
                "invalid type: sequence, expected struct RawPool",
                "expected a mapping, found a list",
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                "expected true or false, found string \"yes\"",
            ),
            (
                "invalid type: string \"a, expected b\", expected usize",
                "expected a whole number, found string \"a, expected b\"",
            ),
            ("something else", "something else"),
        ];
        for (serde, ours) in cases {
            assert_eq!(describe_serde_error(serde, &p).0, ours);
        }
    }

    #[test]
    fn argv_example_splits_words() {
        assert_eq!(argv_example("python3 app.py"), r#"["python3", "app.py"]"#);
    }
}
