//! Integration tests: the real forkyard binary, real worker processes, loopback only.
//! One file per behaviour; `harness.rs` starts forkyard and polls with deadlines.

mod config_errors;
mod harness;
mod logging;
mod metrics;
mod proxying;
mod readiness;
mod restarts;
mod shutdown;
