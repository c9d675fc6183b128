//! The live status of every worker slot, and its three renderings: the `/status`
//! JSON, the `/` HTML page and the terminal table of `forkyard status`.
//!
//! - [`board`]: the [`StatusBoard`]. The supervisor's worker actors are its only
//!   writers, one slot each, on lifecycle events; never per request. The one
//!   per-request number, requests served, is an atomic counter that the proxy bumps
//!   through a handle attached to the worker's load-balancer entry.
//! - [`report`]: a serializable snapshot ([`StatusReport`]), the `/status` contract.
//! - [`table`]: the same rows as text (terminal) and HTML (the admin page).
//!
//! Readers are the admin endpoints, the per-worker resource metrics
//! (`metrics::worker_resources`) and the systemd readiness notice (`sd_notify`), which
//! waits on the board's change signal instead of polling.

pub(crate) mod board;
pub(crate) mod report;
pub(crate) mod table;

pub(crate) use board::{PoolStatus, PreloaderStatus, SlotStatus, StatusBoard};
pub use report::StatusReport;
