//! The integration-test harness: the real forkyard binary, real worker processes,
//! loopback only. Nothing here knows forkyard's internals; it drives the binary the
//! way an operator would (a config file, signals, HTTP) and reads what it exposes
//! (its log, `/metrics`, `/status`).
//!
//! - [`Forkyard`]: `Forkyard::start(yaml)`, or `Forkyard::builder(yaml)` for extra
//!   environment, a working directory, a wrapper command (`unshare ...`) or a shell
//!   prefix run before exec. `{proxy}`, `{admin}` and `{dir}` in the YAML become
//!   fresh loopback addresses and a temporary directory (`{admin_port}`: the admin
//!   address's port, for an admin listener on all interfaces). Its output is collected;
//!   when a test panics while it runs, its last [`TAIL_LINES`] log lines are printed.
//! - [`wait_for_or_log`]: poll with a deadline (never a fixed sleep); on failure,
//!   say what was awaited and print forkyard's last log lines. If forkyard exits
//!   meanwhile, fail within 2 s instead of waiting out the deadline.
//! - [`Load`]: N client threads sending requests (keep-alive or not, any method,
//!   body and headers) until stopped; every failure is recorded with what it was.
//!   [`Sampler`] polls a value (a metric, `/status`) on a thread and keeps every
//!   sample.
//! - [`http_request`], [`http_get`], [`Conn`] (keep-alive) and [`raw_exchange`]: a
//!   small HTTP/1.1 client.
//! - [`fixture_pool`] and [`config_with`]: configs for the fixture worker
//!   (`tests/fixtures/worker.py`, whose docstring lists its switches and endpoints);
//!   [`free_ports`] hands out ports from a lane this test run locks, so runs in two
//!   worktrees on one machine do not collide.
//! - [`skip`]: a test that cannot run here says so on the terminal, and fails in CI.

mod config;
mod forkyard;
mod http;
mod load;
mod process;
mod sampler;
mod skip;
mod wait;

use std::time::Duration;

pub use self::forkyard::*; // the harness module, not the crate
pub use config::*;
pub use http::*;
pub use load::*;
pub use process::*;
pub use sampler::*;
pub use skip::*;
pub use wait::*;

/// Generous deadlines: CI is a loaded 2-core machine.
pub const BOOT: Duration = Duration::from_secs(60);
pub const SHORT: Duration = Duration::from_secs(30);
