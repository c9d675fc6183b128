//! forkyard: one binary that reads `config.yaml`, spawns and supervises pools of app
//! worker processes, load-balances HTTP to the ready ones through a Pingora proxy,
//! and serves Prometheus metrics.
//!
//! # Layout
//!
//! - [`config`]: the raw serde mirror of `config.yaml`, its validation into the
//!   domain types of `config::model`, durations, `${VAR}` substitution, and errors
//!   with `file:line:column`.
//! - [`process`]: spawning a worker (fork+exec, own process group), the one reaper
//!   of child exits, exit classification, group signalling, output forwarding, and
//!   `forkyard __child`, the fresh process image that runs `post_fork` in a worker,
//!   and stopping adopted processes (daemons that left their group) at shutdown.
//! - [`hooks`]: lifecycle hooks (`on_start` … `on_shutdown`): actions, timeouts,
//!   retries, failure policies, and the forkyard side of `post_fork` reports.
//! - [`supervisor`]: one actor per worker slot, its state machine, restart backoff
//!   and readiness probes.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation, routing, the per-pool worker
//!   slots and balancing algorithms, retries, outlier ejection, the client
//!   connection guard (request-head deadline and size), the access log, in-flight
//!   request tracking, and the proxy's runtime.
//! - [`metrics`]: one struct that owns every Prometheus metric, plus the collector
//!   of per-worker RSS and CPU.
//! - [`status`]: the live status board of every worker slot and its renderings
//!   (`/status` JSON, the HTML page, the `forkyard status` table).
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/status` and `/`.
//! - [`signals`]: the one owner of process signals.
//! - [`sockets`]: the private runtime directory of `bind: unix` workers' sockets.
//! - [`sd_notify`]: systemd's `READY=1` over `NOTIFY_SOCKET`.
//! - [`security`]: start-up warnings about risky settings (open admin, workers as
//!   root, writable config files).
//! - [`server`]: wiring and the shutdown order.
//! - [`events`]: the stable names of the lifecycle log events.
//! - [`logging`], [`plan`]: log setup (a writer thread behind a bounded queue, so a
//!   blocked stderr drops lines instead of stalling forkyard) and the `check`
//!   command's output.
//! - [`client`]: the tiny HTTP client of `forkyard status` and `forkyard probe`.
//!
//! # Theory of operation
//!
//! `main` parses the CLI and loads the config; a config with any problem is reported
//! in full and forkyard exits 78 before starting anything. [`server::run`] binds the
//! proxy and admin sockets itself, then starts two tokio runtimes: a multi-threaded
//! one for the proxy and a single-threaded *control* runtime on the main thread for
//! everything else.
//!
//! Each worker slot is an actor task ([`supervisor`]). It spawns its process with
//! `FORKYARD_POOL`, `FORKYARD_WORKER` and `FORKYARD_PORT` set, probes it until
//! ready, then marks its slot (`127.0.0.1:<port>`) ready in its pool's
//! [`proxy::upstreams`]. Only ready slots are selected, so a starting or restarting
//! worker never gets traffic. Each request picks a slot with the pool's algorithm
//! ([`proxy::selection`]), skipping ejected ones; a failed connection is retried on
//! another slot. When the process exits, the actor removes it, records the reason,
//! waits an exponential backoff with jitter and spawns it again on the same slot and
//! port.
//!
//! Each step of a slot's life (spawn, ready, exit with its reason, restart) is
//! recorded by one call in three places that therefore agree: one structured log
//! event (names in [`events`]), the metrics, and the slot's entry on the
//! [`status::StatusBoard`]. The board is what `/status`, the `/` page and the
//! per-worker RSS/CPU metrics read; its change signal wakes the task that tells
//! systemd `READY=1` ([`sd_notify`]) once every pool has a ready worker.
//!
//! Child exits are observed through exactly one path: [`process::Reaper`] calls
//! `waitpid(-1)` on SIGCHLD and routes each status by pid to the actor that watches
//! it. Nothing else waits for children. Because the reaper waits for any child, and
//! forkyard registers as a child subreaper when it is not PID 1, orphans left by
//! workers are reaped too.
//!
//! Code between fork and exec is only what `std::process::Command` does itself
//! (process group, working directory, environment); forkyard runs no code of its
//! own in the forked child. A worker is exec'd first as `forkyard __child`
//! ([`process::child`]): a fresh single-threaded image with the worker's pid that
//! applies the `post_fork` built-ins (limits, user, seed, …), closes inherited fds,
//! runs the `post_fork` `run:` hooks, reports each result over a close-on-exec pipe,
//! and then execs the app.
//!
//! Hooks of the other phases run inside forkyard as tasks of the control runtime
//! ([`hooks`]), so a slow hook delays only its own worker slot: `on_start` before
//! any worker, `pre_fork` before each spawn, `post_spawn` between the ready probe
//! and the first request, `pre_stop` before the stop signal, `on_exit` after each
//! exit, `on_shutdown` after the last worker stopped. Each `run:` hook is a process
//! group of its own, killed whole at its timeout and cleaned up after it ends.
//!
//! Signals have one owner, [`signals`]. On SIGTERM or SIGINT, [`server`] turns
//! `/readyz` to 503, stops accepting, waits for in-flight requests (at most
//! `shutdown.timeout`), closes the proxy, stops every worker (`stop.signal`, then
//! `stop.grace`, then SIGKILL to the process group) and exits 0. A second signal
//! skips the waiting.

#![deny(unsafe_code)]

pub mod admin;
pub mod client;
pub mod config;
pub mod events;
pub mod hooks;
pub mod logging;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod reload;
pub mod sd_notify;
pub mod security;
pub mod server;
pub mod signals;
pub mod sockets;
pub mod status;
pub mod supervisor;
pub mod watch;
