//! Integration tests: the real forkyard binary, real worker processes, loopback only.
//! One file per behaviour; `harness/` starts forkyard, polls with deadlines, sends
//! requests and load, and skips loudly (see its module doc).

mod bad_http;
mod balancing;
mod check_program;
mod config_errors;
mod control_socket;
mod dashboard;
mod data_path;
mod deploy;
mod drain;
mod ejection;
mod examples;
mod faults;
mod fork_hygiene;
mod getting_started;
mod golden;
mod harness;
mod health;
mod hooks;
mod limits;
mod logging;
mod metrics;
mod notify;
mod oom;
mod panic_containment;
mod pid1;
mod preload;
mod preload_hazards;
mod proxying;
mod readiness;
mod recycle;
mod reload;
mod reload_keys;
mod restarts;
mod retries;
mod scaling;
mod schema;
mod security;
mod shutdown;
mod socket_passing;
mod status;
mod status_page;
mod streaming;
mod under_load;
mod unix_bind;
