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
//!   of child exits, exit classification, group signalling, output forwarding.
//! - [`supervisor`]: one actor per worker slot, its state machine, restart backoff
//!   and readiness probes.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation, routing, the per-pool worker
//!   slots and balancing algorithms, retries, outlier ejection, the client
//!   connection guard (request-head deadline and size), the access log, in-flight
//!   request tracking, and the proxy's runtime.
//! - [`metrics`]: one struct that owns every Prometheus metric.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`signals`]: the one owner of process signals.
//! - [`server`]: wiring and the shutdown order.
//! - [`logging`], [`plan`]: log setup and the `check` command's output.
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
//! Child exits are observed through exactly one path: [`process::Reaper`] calls
//! `waitpid(-1)` on SIGCHLD and routes each status by pid to the actor that watches
//! it. Nothing else waits for children. Because the reaper waits for any child, and
//! forkyard registers as a child subreaper when it is not PID 1, orphans left by
//! workers are reaped too.
//!
//! Code between fork and exec is only what `std::process::Command` does itself
//! (process group, working directory, environment); forkyard runs no code of its
//! own in the forked child.
//!
//! Signals have one owner, [`signals`]. On SIGTERM or SIGINT, [`server`] turns
//! `/readyz` to 503, stops accepting, waits for in-flight requests (at most
//! `shutdown.timeout`), closes the proxy, stops every worker (`stop.signal`, then
//! `stop.grace`, then SIGKILL to the process group) and exits 0. A second signal
//! skips the waiting.

#![deny(unsafe_code)]

pub mod admin;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod plan;
pub mod process;
pub mod proxy;
pub mod server;
pub mod signals;
pub mod supervisor;
