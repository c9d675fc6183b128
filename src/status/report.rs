//! The `/status` document: a snapshot of forkyard, its pools, their workers and the
//! lifecycle hooks. Field names are a public contract (documented in
//! `docs/admin.md`); `forkyard status` reads the same types back.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// forkyard's version.
    pub version: String,
    /// forkyard's own pid.
    pub pid: u32,
    pub uptime_seconds: f64,
    /// What `/readyz` answers: every pool has a ready worker and no shutdown began.
    pub ready: bool,
    /// Why not ready, when not.
    pub not_ready_reason: Option<String>,
    pub pools: Vec<PoolReport>,
    /// Every declared lifecycle hook with its last result; empty when the config
    /// declares no hooks.
    pub hooks: Vec<HookReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolReport {
    pub name: String,
    pub workers_total: usize,
    pub workers_ready: usize,
    /// Sum of the slots' restarts.
    pub restarts: u64,
    /// The crash-loop breaker marked the pool degraded (`restart.crash_loop`).
    pub degraded: bool,
    pub workers: Vec<WorkerReport>,
    /// A preload pool's preloaders: one per live generation (two while a rolling
    /// restart runs); empty for a command pool.
    #[serde(default)]
    pub preloaders: Vec<PreloaderReport>,
    /// The pool's last hung requests (`hang:`), oldest first; at most 5 are kept.
    #[serde(default)]
    pub hangs: Vec<HangReport>,
}

/// One hang: a request that waited `hang.after` for its response head on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HangReport {
    /// When the hang was found (after the dump), Unix time.
    pub at_unix: f64,
    /// The slot of the worker.
    pub worker: usize,
    pub pid: i32,
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    pub request_id: String,
    /// How long the request had waited for its response head.
    pub age_seconds: f64,
    /// The worker's other requests in flight then.
    pub in_flight: Vec<InFlightReport>,
    /// What `hang.dump` produced (the command's output, or the worker's output
    /// after the signal); empty without a dump.
    pub dump: String,
    /// `ok`, `none`, `timeout`, `exit code N`, `error: …`, or `signal SIGUSR1`.
    pub dump_result: String,
    /// The worker was killed (`hang.kill`).
    pub killed: bool,
}

/// A request in flight on a hung worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlightReport {
    pub method: String,
    pub path: String,
    pub request_id: String,
    /// How long it had been in flight.
    pub age_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreloaderReport {
    /// Counts up from 1 per pool: each rolling restart or reload starts a new one.
    pub generation: u64,
    /// The running preloader process, if any.
    pub pid: Option<i32>,
    /// `starting` (importing the app), `ready`, `backoff` or `stopping`.
    pub state: String,
    pub uptime_seconds: Option<f64>,
    /// Times this generation's preloader was started again.
    pub restarts: u64,
    /// How long its last import took.
    pub import_seconds: Option<f64>,
    /// The reason is a `forkyard_preloader_restarts_total` reason (`import_error`,
    /// `exit_code`, `signal`, `oom_killed`, `boot_timeout`, `unresponsive`) or `stop`.
    pub last_exit: Option<ExitReport>,
    /// The last failure, e.g. the tail of an import error's traceback; cleared when
    /// a preloader of this generation becomes ready.
    pub last_error: Option<String>,
    pub rss_bytes: Option<u64>,
    /// Proportional set size: its share of the memory it shares with its workers.
    pub pss_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The slot index, `0..workers`; stable across restarts.
    pub slot: usize,
    /// The slot's port, stable across restarts.
    pub port: u16,
    /// The running process, if any.
    pub pid: Option<i32>,
    /// `starting`, `ready`, `backoff`, `stopping` or `stopped`.
    pub state: String,
    /// Since the current process was spawned.
    pub uptime_seconds: Option<f64>,
    /// Times this slot was restarted.
    pub restarts: u64,
    pub last_exit: Option<ExitReport>,
    /// Requests the current process answered through the proxy.
    pub requests_served: u64,
    /// Resident memory of the current process, read from /proc. Counts every page
    /// it shares (with a preloader and the other workers) in full.
    pub rss_bytes: Option<u64>,
    /// Proportional set size (`/proc/<pid>/smaps_rollup`): each shared page
    /// divided among the processes that share it.
    #[serde(default)]
    pub pss_bytes: Option<u64>,
    /// Unique set size: the pages only this process has (private clean + dirty).
    #[serde(default)]
    pub uss_bytes: Option<u64>,
    /// CPU time of the current process, read from /proc.
    pub cpu_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitReport {
    /// The `reason` label of the metrics: `exit_code`, `signal`, `boot_timeout`,
    /// `hang`, `stop`.
    pub reason: String,
    /// As text: `exit code 3`, `signal SIGKILL`.
    pub status: String,
    pub at_unix: f64,
    pub seconds_ago: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookReport {
    /// Empty for forkyard-wide phases (`on_start`, `on_shutdown`).
    pub pool: String,
    pub phase: String,
    pub hook: String,
    pub runs: u64,
    pub failures: u64,
    /// `ok` or a failure reason; `null` before the first run.
    pub last_result: Option<String>,
    pub last_run_unix: Option<f64>,
    /// How long ago the last run ended, when the report was made.
    pub last_run_seconds_ago: Option<f64>,
    pub last_duration_seconds: Option<f64>,
}
