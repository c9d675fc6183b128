//! What happens to a worker slot, recorded in three places by one call: one
//! structured log event (named in [`crate::events`]), the slot's metrics and its
//! entry on the status board. The worker actor calls these at each step, so the
//! three can never disagree.
//!
//! A [`SlotRecord`] lives as long as its actor. When it is dropped the actor's entry
//! leaves the status board, and the slot's per-worker series are deleted unless
//! another actor runs the same slot (a rolling replacement starts the new worker of
//! a slot before the old one stops).

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::hang::Dump;
use crate::events;
use crate::metrics::{Metrics, SlotMetrics};
use crate::pool::pending::Hang;
use crate::process::{oom, ExitReason, ExitStatus};
use crate::slot::{Endpoint, SlotId};
use crate::status::report::{HangReport, InFlightReport};
use crate::status::{PoolStatus, SlotStatus};

pub(crate) struct SlotRecord {
    pool: Arc<str>,
    slot: usize,
    endpoint: Endpoint,
    metrics: SlotMetrics,
    all_metrics: Arc<Metrics>,
    status: Arc<SlotStatus>,
    pool_status: Arc<PoolStatus>,
    /// The current process and when it was spawned.
    current: Option<(i32, Instant)>,
    /// The cgroup's OOM-kill count when the current process was spawned.
    oom_before: Option<u64>,
    restarts: u64,
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl SlotRecord {
    pub(crate) fn new(
        pool: Arc<str>,
        slot: SlotId,
        endpoint: Endpoint,
        metrics: Arc<Metrics>,
        status: Arc<SlotStatus>,
        pool_status: Arc<PoolStatus>,
    ) -> SlotRecord {
        SlotRecord {
            metrics: metrics.slot(&pool, slot),
            all_metrics: metrics,
            pool,
            slot: slot.index(),
            endpoint,
            status,
            pool_status,
            current: None,
            oom_before: None,
            restarts: 0,
        }
    }

    pub(crate) fn spawned(&mut self, pid: i32) {
        self.current = Some((pid, Instant::now()));
        self.oom_before = oom::kills();
        self.metrics.starts.inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.metrics.start_time.set(now.as_secs_f64());
        self.status.spawned(pid);
        tracing::info!(
            event = events::SPAWN,
            pool = %self.pool,
            worker = self.slot,
            pid,
            port = match &self.endpoint {
                Endpoint::Tcp(a) => Some(a.port()),
                Endpoint::Unix(_) => None,
            },
            endpoint = %self.endpoint,
            "worker spawned"
        );
    }

    pub(crate) fn spawn_failed(&mut self, error: &dyn Display) {
        tracing::error!(
            event = events::SPAWN_FAILED,
            pool = %self.pool,
            worker = self.slot,
            error = %error,
            "worker could not be started"
        );
    }

    pub(crate) fn ready(&mut self) {
        let Some((pid, spawned)) = self.current else {
            return;
        };
        let boot = spawned.elapsed();
        self.metrics.boot.observe(boot.as_secs_f64());
        tracing::info!(
            event = events::READY,
            pool = %self.pool,
            worker = self.slot,
            pid,
            boot_ms = millis(boot),
            "worker ready"
        );
    }

    /// The reason for an exit of the current process that forkyard did not cause:
    /// `exit_code`, `signal`, or `oom_killed` (a SIGKILL while the cgroup's OOM-kill
    /// count rose).
    pub(crate) fn unplanned(&self, status: ExitStatus) -> ExitReason {
        ExitReason::of_unplanned_oom(status, self.oom_before, oom::kills())
    }

    /// The process ended, for `reason`.
    pub(crate) fn exited(&mut self, status: ExitStatus, reason: ExitReason, message: &str) {
        let (pid, uptime) = match self.current.take() {
            Some((pid, t)) => (Some(pid), Some(millis(t.elapsed()))),
            None => (None, None),
        };
        let reason_label = reason.as_str();
        self.metrics.exit(reason_label);
        self.status.exited(reason_label, status.to_string());
        let (exit_code, signal) = match status {
            ExitStatus::Code(c) => (Some(c), None),
            ExitStatus::Signal(_) => (
                None,
                status
                    .to_string()
                    .strip_prefix("signal ")
                    .map(str::to_owned),
            ),
        };
        macro_rules! exit_event {
            ($level:ident) => {
                tracing::$level!(
                    event = events::EXIT,
                    pool = %self.pool,
                    worker = self.slot,
                    pid,
                    reason = reason_label,
                    %status,
                    exit_code,
                    signal,
                    uptime_ms = uptime,
                    "{message}"
                )
            };
        }
        // Stops forkyard planned (shutdown, scaling, replacement, recycling) are news,
        // not trouble.
        if reason.is_planned() {
            exit_event!(info);
        } else {
            exit_event!(warn);
        }
    }

    /// A request hung on process `pid` (`found`), whose stacks were dumped
    /// (`dump`); it is killed next when `kill`.
    pub(crate) fn hang(&mut self, pid: i32, found: &Hang, dump: &Dump, kill: bool) {
        self.metrics.hangs.inc();
        let in_flight: Vec<InFlightReport> = found
            .others
            .iter()
            .map(|r| InFlightReport {
                method: r.method.clone(),
                path: r.path.clone(),
                request_id: r.request_id.clone(),
                age_seconds: r.age.as_secs_f64(),
            })
            .collect();
        let in_flight_json = serde_json::to_string(&in_flight).unwrap_or_default();
        let r = &found.request;
        tracing::warn!(
            event = events::HANG,
            pool = %self.pool,
            worker = self.slot,
            pid,
            method = %r.method,
            path = %r.path,
            request_id = %r.request_id,
            age_ms = millis(r.age),
            in_flight = %in_flight_json,
            dump = %dump.output,
            dump_result = %dump.result,
            dump_ms = millis(dump.took),
            kill,
            "a request hung on this worker{}",
            if kill { "; killing it" } else { "" }
        );
        self.pool_status.hang(HangReport {
            at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            worker: self.slot,
            pid,
            method: r.method.clone(),
            path: r.path.clone(),
            request_id: r.request_id.clone(),
            age_seconds: r.age.as_secs_f64(),
            in_flight,
            dump: dump.output.clone(),
            dump_result: dump.result.clone(),
            killed: kill,
        });
    }

    /// The slot will be started again after `delay`.
    pub(crate) fn restarting(&mut self, reason: ExitReason, delay: Duration) {
        self.restarts += 1;
        self.metrics.restart(reason);
        self.status.restarting();
        tracing::info!(
            event = events::RESTART,
            pool = %self.pool,
            worker = self.slot,
            reason = reason.as_str(),
            delay_ms = millis(delay),
            restarts = self.restarts,
            "worker will restart"
        );
    }
}

impl Drop for SlotRecord {
    fn drop(&mut self) {
        if !self.pool_status.detach(&self.status) {
            self.all_metrics.forget_slot(&self.pool, SlotId(self.slot));
        }
    }
}
