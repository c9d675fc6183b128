//! Integration tests: the real forkyard binary, real worker processes, loopback only.
//! One file per behaviour; `harness.rs` starts forkyard and polls with deadlines.

mod config_errors;
mod dashboard;
mod deploy;
mod examples;
mod fork_hygiene;
mod getting_started;
mod harness;
mod health;
mod hooks;
mod logging;
mod metrics;
mod notify;
mod pid1;
mod proxying;
mod readiness;
mod recycle;
mod reload;
mod restarts;
mod scaling;
mod schema;
mod shutdown;
mod socket_passing;
mod status;
mod status_page;
