//! Integration tests: the real forkyard binary, real worker processes, loopback only.
//! One file per behaviour; `harness.rs` starts forkyard and polls with deadlines.

mod balancing;
mod config_errors;
mod ejection;
mod harness;
mod limits;
mod logging;
mod metrics;
mod proxying;
mod readiness;
mod restarts;
mod retries;
mod shutdown;
mod streaming;
mod unix_upstream;
