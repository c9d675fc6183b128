//! The names of forkyard's lifecycle log events: the `event` field of a log line.
//!
//! Each lifecycle step is logged as exactly one event with a stable `event` name and
//! stable field names, so log pipelines can match on `event` instead of on message
//! text (which stays human and may be reworded). `docs/logging.md` lists every event
//! with its fields; keep the two in step. Events that belong to features of later
//! issues (hooks, reloads, ejection) are named here already, so every emitter uses
//! the same spelling.
//!
//! The same events are also a live feed (`GET /events`): [`capture`] is the tracing
//! layer that copies each one, as its JSON log object, into the [`hub`].

pub(crate) mod capture;
pub(crate) mod hub;

/// forkyard bound its listeners and is starting the pools. Fields: `version`,
/// `proxy`, `admin`, `pools`.
pub(crate) const START: &str = "start";
/// A thread panicked (a bug). In a proxy request task only that connection is
/// lost; see docs/reliability.md. Fields: `thread`, `location`.
pub(crate) const PANIC: &str = "panic";
/// A risky setting was found at start-up (see `security`). Fields: `check`
/// (`workers_as_root`, `file_permissions`).
pub(crate) const SECURITY_WARNING: &str = "security_warning";
/// A worker process was spawned. Fields: `pool`, `worker`, `pid`, `port`.
pub(crate) const SPAWN: &str = "spawn";
/// A worker process could not be spawned. Fields: `pool`, `worker`, `error`.
pub(crate) const SPAWN_FAILED: &str = "spawn_failed";
/// A worker passed its ready probe and takes traffic. Fields: `pool`, `worker`,
/// `pid`, `boot_ms`.
pub(crate) const READY: &str = "ready";
/// Every pool has a ready worker for the first time (systemd gets `READY=1`).
/// Fields: `pools`, `workers_ready`.
pub(crate) const POOLS_READY: &str = "pools_ready";
/// A worker process is gone. Fields: `pool`, `worker`, `pid`, `reason`, `status`,
/// `exit_code` or `signal`, `uptime_ms`.
pub(crate) const EXIT: &str = "exit";
/// A request waited `hang.after` for its response head on one worker: the
/// worker's stacks were dumped (`hang.dump`) and, with `hang.kill`, it is killed
/// next. Fields: `pool`, `worker`, `pid`, `method`, `path`, `request_id`,
/// `age_ms`, `in_flight` (the worker's other requests, JSON), `dump`,
/// `dump_result`, `dump_ms`, `kill`.
pub(crate) const HANG: &str = "hang";
/// A slot will be started again after a delay. Fields: `pool`, `worker`, `reason`,
/// `delay_ms`, `restarts`.
pub(crate) const RESTART: &str = "restart";
/// A worker was taken out of load balancing after failures (outlier ejection).
/// Fields: `pool`, `worker`, `failures`, `duration_ms`.
pub(crate) const EJECTION: &str = "ejection";
/// A new worker process applied its `post_fork` built-ins (one line per spawn;
/// each built-in's own result is logged at debug). Fields: `pool`, `worker`,
/// `builtins`.
pub(crate) const POST_FORK_DONE: &str = "post_fork_done";
/// A lifecycle hook attempt started. Fields: `pool`, `worker`, `phase`, `hook`,
/// `attempt`.
pub(crate) const HOOK_START: &str = "hook_start";
/// A lifecycle hook attempt succeeded. Fields: `pool`, `worker`, `phase`, `hook`,
/// `duration_s`.
pub(crate) const HOOK_FINISH: &str = "hook_finish";
/// A lifecycle hook attempt failed. Fields: `pool`, `worker`, `phase`, `hook`,
/// `attempt`, `reason`, and `of`, `on_failure` for hooks forkyard runs itself.
pub(crate) const HOOK_FAIL: &str = "hook_fail";
/// A config reload began (SIGHUP or `POST /reload`). Fields: `file`.
pub(crate) const RELOAD_START: &str = "reload_start";
/// A config reload ended. Fields: `result` (`ok`, `error`, `rolled_back`),
/// `duration_ms`.
pub(crate) const RELOAD_FINISH: &str = "reload_finish";
/// The proxy stopped accepting and waits for in-flight requests (or, with `pool`
/// and `worker`, one worker leaving the load balancer drains). Fields: `in_flight`,
/// `timeout_ms`.
pub(crate) const DRAIN_START: &str = "drain_start";
/// Draining ended. Fields: `result` (`drained`, `timeout`, `interrupted`),
/// `in_flight`, `duration_ms`.
pub(crate) const DRAIN_FINISH: &str = "drain_finish";
/// A shutdown signal arrived; readiness is off. Fields: `signal`, `in_flight`.
pub(crate) const SHUTDOWN: &str = "shutdown";
/// Every worker is stopped; forkyard exits. Fields: `exit_code`, `duration_ms`.
pub(crate) const SHUTDOWN_COMPLETE: &str = "shutdown_complete";
/// A preload pool's preloader process was started; it imports the app next.
/// Fields: `pool`, `generation`, `pid`.
pub(crate) const PRELOADER_SPAWN: &str = "preloader_spawn";
/// A preloader imported the app and forks workers on request. Fields: `pool`,
/// `generation`, `pid`, `import_ms`, `python`.
pub(crate) const PRELOADER_READY: &str = "preloader_ready";
/// A preloader could not import the app (the message ends with the traceback's
/// tail). Fields: `pool`, `generation`, `pid`, `error`.
pub(crate) const PRELOADER_FAILED: &str = "preloader_failed";
/// A preloader process is gone. Fields: `pool`, `generation`, `pid`, `reason`,
/// `status`.
pub(crate) const PRELOADER_EXIT: &str = "preloader_exit";
/// A preloader will be started again after a delay. Fields: `pool`, `generation`,
/// `reason`, `delay_ms`, `restarts`.
pub(crate) const PRELOADER_RESTART: &str = "preloader_restart";
/// A worker's own metrics (`metrics:`) could not be merged, where its last scrape
/// could: it keeps its last values. Logged when a worker's outcome changes, not at
/// every scrape. Fields: `pool`, `worker`, `reason` (as in
/// `forkyard_worker_metrics_errors_total`), `path`.
pub(crate) const WORKER_METRICS_ERROR: &str = "worker_metrics_error";
/// A worker's own metrics are merged again after an error. Fields: `pool`,
/// `worker`, `path`.
pub(crate) const WORKER_METRICS_OK: &str = "worker_metrics_ok";
