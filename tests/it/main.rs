//! Integration tests: the real forkyard binary, real worker processes, loopback only.
//! One file per behaviour; `harness.rs` starts forkyard and polls with deadlines.

mod bad_http;
mod balancing;
mod config_errors;
mod dashboard;
mod deploy;
mod ejection;
mod examples;
mod faults;
mod fork_hygiene;
mod getting_started;
mod harness;
mod health;
mod hooks;
mod limits;
mod logging;
mod metrics;
mod notify;
mod pid1;
mod proxying;
mod readiness;
mod recycle;
mod reload;
mod restarts;
mod retries;
mod scaling;
mod schema;
mod shutdown;
mod socket_passing;
mod status;
mod status_page;
mod streaming;
mod unix_upstream;
