//! forkyard: one binary that reads `config.yaml`, spawns and supervises pools of app
//! worker processes, load-balances HTTP to the ready ones through a Pingora proxy,
//! and serves Prometheus metrics.
//!
//! # Layers
//!
//! Modules depend only on the layers below them, top to bottom (a unit test,
//! `layers`, checks every `crate::…` path in every file against this drawing):
//!
//! ```text
//!  server                                   wiring, the control loop, shutdown
//!  admin                                    the admin endpoints
//!  control                                  reload (every key's class), scale, restart
//!  supervisor · proxy · worker_metrics      side by side; none uses another
//!  record · pool · auth · history           hook records; each pool's settings and members; the token; the charts' samples
//!  metrics
//!  child · status                           `forkyard __child`; the status board
//!  hooks                                    the hook runner (both sides of the fork)
//!  fault · logging · security · plan · program · slot · process
//!  config
//!  sockets
//!  account · events · signals · probe · client · watch · sd_notify
//! ```
//!
//! - [`config`]: the raw serde mirror of `config.yaml`, its validation into the
//!   domain types of `config::model`, durations, `${VAR}` substitution, and errors
//!   with `file:line:column`. Nothing else ever sees the raw file.
//! - `process`: spawning (fork+exec, own process group), the one reaper of child
//!   exits, exit classification, group signalling, output forwarding, adopted
//!   processes at shutdown. `child` is `forkyard __child`, the fresh process image
//!   that runs `post_fork` in a worker before it execs the app.
//! - `slot`: `SlotId`, `Endpoint` and `WorkerState`: a slot's identity is its
//!   number, never its port.
//! - `hooks`: running hooks with timeouts, retries and failure policies, in
//!   forkyard and in a new worker process alike; results go to a `Recorder`
//!   (forkyard's is `record`).
//! - `pool`: one pool at run time — the one owner of its settings, and the members
//!   (ready worker processes) the supervisor admits and the proxy uses.
//! - `metrics`, `status`: every Prometheus metric, declared in one list; the
//!   status board.
//! - `supervisor`: one actor per worker slot (its state machine, backoff, health,
//!   recycling, crash loop), behind a seam (`supervisor::launch`) for its
//!   processes; `supervisor::preload` is a preload pool's launcher: its preloader
//!   (a Python module shipped in the binary) and the protocol it speaks.
//! - `proxy`: the Pingora `ProxyHttp` implementation, routing, balancing, retries,
//!   outlier ejection, the client connection guard, the access log.
//! - `worker_metrics`: the workers' own Prometheus metrics (`metrics:` of a pool),
//!   fetched from every ready worker when `/metrics` is scraped and merged into
//!   forkyard's: counters summed per pool across restarts, gauges per worker. A
//!   worker stopped on purpose is scraped once more after its drain, through the
//!   pool's `Farewell` (so the supervisor does not depend on it).
//! - `control`: the one place that changes what runs — reload (with the class of
//!   every config key), scale, restart, recycle — with typed replies.
//! - `admin`: `/metrics`, `/healthz`, `/readyz`, `/status`, `/` and the POST
//!   endpoints, rendering `control`'s replies; `auth` owns their token. `/events`
//!   streams the lifecycle events (Server-Sent Events) that `events::capture`
//!   copies from the log into `events::hub`; `/status/history` serves the last 15
//!   minutes that `history` samples every 5 s for the page's charts.
//! - [`server`]: building and connecting the parts, the control loop, and the
//!   shutdown order.
//! - `signals` (the one owner of process signals), `sockets` (the runtime
//!   directory of `bind: unix` sockets, and the control socket), `security`
//!   (start-up warnings),
//!   `sd_notify`, [`logging`], `plan` (`forkyard check`'s output), `program`
//!   (`check`'s look for each pool's program), [`client`] (the tiny HTTP client of
//!   `forkyard status`, `probe` and the control commands), `watch` (the config file
//!   watch), `fault` (test-only fault injection).
//!
//! # Theory of operation
//!
//! `main` parses the CLI and loads the config; a config with any problem is reported
//! in full and forkyard exits 78 before starting anything. [`server::run`] binds the
//! proxy and admin sockets itself, then starts two tokio runtimes: a multi-threaded
//! one for the proxy and a single-threaded *control* runtime on the main thread for
//! everything else.
//!
//! Each worker slot is an actor task (`supervisor`). It spawns its process with
//! `FORKYARD_POOL`, `FORKYARD_WORKER` and `FORKYARD_PORT` set, probes it until
//! ready, then admits it to its pool. The pool hands every change of its settings
//! or its members to the proxy's balancer, which swaps in a new table whole; each
//! request picks a worker with the pool's algorithm, skipping ejected ones, and a
//! failed connection is retried on another worker. When the process exits, the
//! actor withdraws it, records the reason, waits an exponential backoff with jitter
//! and spawns it again in the same slot.
//!
//! Each step of a slot's life (spawn, ready, exit with its reason, restart) is
//! recorded by one call in three places that therefore agree: one structured log
//! event (names in `events`), the metrics, and the slot's entry on the status
//! board. The log event is also published, as its JSON object, to the live event
//! stream (`/events`, through a tracing layer that never waits for a reader). The
//! board is what `/status`, the `/` page and the per-worker RSS/CPU
//! metrics read; its change signal wakes the task that tells systemd `READY=1` once
//! every pool has a ready worker.
//!
//! In a pool with `hang:`, the proxy lists each request in flight with its worker
//! process (`pool::pending`) until its response head arrives; that worker's actor
//! checks the list, and when a request has waited `hang.after` it dumps the
//! worker's stacks, records one `hang` event and kills the process itself, so a
//! worker is still signalled only by its own actor.
//!
//! Child exits are observed through exactly one path: the reaper calls
//! `waitpid(-1)` on SIGCHLD and routes each status by pid to the actor that watches
//! it. Nothing else waits for children. Because the reaper waits for any child, and
//! forkyard registers as a child subreaper when it is not PID 1, orphans left by
//! workers are reaped too.
//!
//! Code between fork and exec is only what `std::process::Command` does itself
//! (process group, working directory, environment); forkyard runs no code of its
//! own in the forked child. A worker is exec'd first as `forkyard __child`: a fresh
//! single-threaded image with the worker's pid that applies the `post_fork`
//! built-ins (limits, user, seed, …), closes inherited fds, runs the `post_fork`
//! `run:` hooks with the same hook runner forkyard uses, reports each result as a
//! typed message over a close-on-exec pipe, and then execs the app.
//!
//! A preload pool's workers are not exec'd: its preloader, a Python process
//! started like any child (through `forkyard __child`), imports the app once and
//! forks each worker on request, twice, so that the worker is re-parented to
//! forkyard and its exit reaches the same reaper. forkyard hands the worker its
//! slot's socket (forkyard holds one per slot), its output and report pipes over a
//! `SOCK_SEQPACKET` channel, and tells it to go only once it watches its pid. The
//! worker reports its `post_fork` steps on the same kind of pipe, in the same
//! typed messages, as `forkyard __child` does. Each pool generation (a rolling
//! reload or restart) has its own preloader, which lives as long as its workers.
//!
//! Hooks of the other phases run inside forkyard as tasks of the control runtime,
//! so a slow hook delays only its own worker slot: `on_start` before any worker,
//! `pre_fork` before each spawn, `post_spawn` between the ready probe and the first
//! request, `pre_stop` before the stop signal, `on_exit` after each exit,
//! `on_shutdown` after the last worker stopped.
//!
//! Signals have one owner, `signals`. On SIGTERM or SIGINT, `server` turns `/readyz`
//! to 503, stops accepting, waits for in-flight requests (at most
//! `shutdown.timeout`), closes the proxy, stops every worker (`stop.signal`, then
//! `stop.grace`, then SIGKILL to the process group) and exits 0. A second signal
//! skips the waiting.

#![deny(unsafe_code)]
#![deny(unreachable_pub)]

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod child;
pub mod client;
pub mod config;
pub(crate) mod control;
pub(crate) mod events;
#[cfg(feature = "fault-injection")]
pub(crate) mod fault;
pub(crate) mod history;
pub(crate) mod hooks;
#[cfg(test)]
mod layers;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod plan;
pub(crate) mod pool;
pub(crate) mod probe;
pub(crate) mod process;
pub(crate) mod program;
pub(crate) mod proxy;
pub(crate) mod record;
pub(crate) mod sd_notify;
pub(crate) mod security;
pub mod server;
pub(crate) mod signals;
pub(crate) mod slot;
pub(crate) mod sockets;
pub(crate) mod status;
pub(crate) mod supervisor;
pub(crate) mod watch;
pub(crate) mod worker_metrics;

// What the `forkyard` command uses besides `config`, `server`, `logging` and
// `client`.
pub use child::main as child_main;
pub use plan::describe as describe_plan;
pub use program::{findings as program_findings, Finding as ProgramFinding};
pub use security::warnings as security_warnings;
pub use sockets::control::{find as find_control_socket, find_any as find_any_control_socket};
pub use status::table::text as status_table;
pub use status::StatusReport;
