//! Every Prometheus metric forkyard exports, built once in one struct.
//!
//! Labels are pool names, slot indexes and small enums, never pids or ports. Every
//! known label combination is created at 0 when the struct is built, so a series
//! exists before its first event. Request-path handles are resolved ahead of time
//! into [`PoolRequestMetrics`], never looked up by label per request; the
//! supervisor's per-slot handles are resolved once per slot ([`SlotMetrics`]).
//! Per-worker series (`{pool,worker}`) are deleted when their slot goes away
//! ([`Metrics::forget_slot`]); the per-worker RSS and CPU come from a collector that
//! reads `/proc` at scrape time for live workers only ([`WorkerResources`]).
//!
//! Every metric is listed with its meaning in `docs/metrics.md`.

mod worker_resources;

pub use worker_resources::WorkerResources;

use prometheus::core::Collector;
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Phase;
use crate::hooks::FailureReason;
use crate::process::ExitReason;
use crate::supervisor::WorkerState;

/// Latency buckets for proxied requests, in seconds (1 ms .. ~16 s).
const REQUEST_BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Worker boot times (spawn to ready), in seconds (50 ms .. 2 min).
const BOOT_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// HTTP status classes, indexed by `status / 100 - 1`.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub struct Metrics {
    registry: Registry,
    pub worker_starts: IntCounterVec,
    pub worker_exits: IntCounterVec,
    pub worker_restarts: IntCounterVec,
    pub worker_boot: HistogramVec,
    pub worker_start_time: GaugeVec,
    pub hook_failures: IntCounterVec,
    pub hook_runs: IntCounterVec,
    pub hook_duration: HistogramVec,
    pub workers: IntGaugeVec,
    pub pool_degraded: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_connect_errors: IntCounterVec,
    pub unrouted_requests: IntCounter,
    /// Log events dropped because stderr did not keep up (see `logging`).
    pub log_dropped: IntCounter,
    pub build_info: IntGaugeVec,
    pub retries: IntCounterVec,
    pub worker_ejections: IntCounterVec,
    pub worker_in_flight: IntGaugeVec,
}

/// Pre-resolved per-pool handles for the request path.
#[derive(Clone)]
pub struct PoolRequestMetrics {
    pub by_class: [IntCounter; 5],
    pub duration: Histogram,
    pub connect_errors: IntCounter,
    pub retries: IntCounter,
}

impl PoolRequestMetrics {
    /// Count one finished request with `status` (0 when no response was sent).
    pub fn record(&self, status: u16, seconds: f64) {
        let idx = match status {
            100..=599 => usize::from(status / 100 - 1),
            // No response at all (client went away): count as a server-side failure.
            _ => 4,
        };
        self.by_class[idx].inc();
        self.duration.observe(seconds);
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

/// Pre-resolved handles for one worker slot, used by its supervisor actor.
#[derive(Clone)]
pub struct SlotMetrics {
    pub starts: IntCounter,
    pub boot: Histogram,
    pub start_time: Gauge,
    exits: IntCounterVec,
    restarts: IntCounterVec,
    pool: String,
}

impl SlotMetrics {
    /// Count an exit of this slot's process for `reason` (an [`ExitReason`] label).
    pub fn exit(&self, reason: &str) {
        self.exits
            .with_label_values(&[self.pool.as_str(), reason])
            .inc();
    }

    /// Count a restart of this slot for `reason`.
    pub fn restart(&self, reason: ExitReason) {
        self.restarts
            .with_label_values(&[self.pool.as_str(), reason.as_str()])
            .inc();
    }
}

/// One declared hook: `(pool, phase, name)`, pool empty for forkyard-wide phases.
pub type HookSeries<'a> = (&'a str, Phase, &'a str);

/// Hook durations, in seconds (10 ms .. 10 min).
const HOOK_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
];

impl Metrics {
    /// Build every metric and create the series of every known label combination.
    ///
    /// Its `expect`s are the panic policy's allowed kind (docs/reliability.md): the
    /// names, help texts and label names are constants, so they can only fail by a
    /// programming error, which the unit tests that call `new` catch; and this runs
    /// once before anything is started, never on the request path.
    pub fn new(pools: &[&str], hooks: &[HookSeries]) -> Metrics {
        let registry = Registry::new();
        let worker_starts = counter_vec(
            "forkyard_worker_starts_total",
            "Worker processes spawned.",
            &["pool"],
        );
        let worker_exits = counter_vec(
            "forkyard_worker_exits_total",
            "Worker processes that exited, by reason (stop: forkyard stopped it).",
            &["pool", "reason"],
        );
        let worker_boot = HistogramVec::new(
            HistogramOpts::new(
                "forkyard_worker_boot_seconds",
                "Time from spawning a worker to its passing the ready probe.",
            )
            .buckets(BOOT_BUCKETS.to_vec()),
            &["pool"],
        )
        .expect("static metric definition");
        let worker_start_time = GaugeVec::new(
            Opts::new(
                "forkyard_worker_start_time_seconds",
                "Unix time when the slot's current process was spawned.",
            ),
            &["pool", "worker"],
        )
        .expect("static metric definition");
        let worker_restarts = counter_vec(
            "forkyard_worker_restarts_total",
            "Workers restarted after they stopped, by reason.",
            &["pool", "reason"],
        );
        let hook_failures = counter_vec(
            "forkyard_hook_failures_total",
            "Lifecycle hook runs that failed, by phase, hook and reason.",
            &["pool", "phase", "hook", "reason"],
        );
        let hook_runs = counter_vec(
            "forkyard_hook_runs_total",
            "Lifecycle hook attempts (each retry counts), by phase and hook.",
            &["pool", "phase", "hook"],
        );
        let hook_duration = HistogramVec::new(
            HistogramOpts::new(
                "forkyard_hook_duration_seconds",
                "How long lifecycle hook attempts took.",
            )
            .buckets(HOOK_BUCKETS.to_vec()),
            &["pool", "phase", "hook"],
        )
        .expect("static metric definition");
        let workers = IntGaugeVec::new(
            Opts::new("forkyard_workers", "Worker slots by state."),
            &["pool", "state"],
        )
        .expect("static metric definition");
        let pool_degraded = IntGaugeVec::new(
            Opts::new(
                "forkyard_pool_degraded",
                "1 while a pool's workers are in a crash loop (restart.crash_loop).",
            ),
            &["pool"],
        )
        .expect("static metric definition");
        let config_reloads = counter_vec(
            "forkyard_config_reloads_total",
            "Config reloads (SIGHUP, POST /reload), by result.",
            &["result"],
        );
        for result in ["ok", "error", "rolled_back"] {
            config_reloads.with_label_values(&[result]);
        }
        let requests = counter_vec(
            "forkyard_requests_total",
            "Requests proxied to a pool, by status class.",
            &["pool", "code_class"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "forkyard_request_duration_seconds",
                "Time from reading a request's head to the end of its response.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["pool"],
        )
        .expect("static metric definition");
        let upstream_connect_errors = counter_vec(
            "forkyard_upstream_connect_errors_total",
            "Failed connection attempts to a pool's workers.",
            &["pool"],
        );
        let unrouted_requests = IntCounter::new(
            "forkyard_unrouted_requests_total",
            "Requests that matched no route and were answered 404.",
        )
        .expect("static metric definition");
        let log_dropped = IntCounter::new(
            "forkyard_log_dropped_total",
            "Log events dropped because stderr was blocked or closed.",
        )
        .expect("static metric definition");
        let retries = counter_vec(
            "forkyard_retries_total",
            "Requests sent again to another worker after a failed attempt.",
            &["pool"],
        );
        let worker_ejections = counter_vec(
            "forkyard_worker_ejections_total",
            "Times a worker was taken out of selection after consecutive failures.",
            &["pool", "worker"],
        );
        let worker_in_flight = IntGaugeVec::new(
            Opts::new(
                "forkyard_worker_in_flight_requests",
                "Requests being proxied to each worker slot.",
            ),
            &["pool", "worker"],
        )
        .expect("static metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new("forkyard_build_info", "Always 1; the version is a label."),
            &["version"],
        )
        .expect("static metric definition");

        for c in [
            Box::new(worker_starts.clone()) as Box<dyn Collector>,
            Box::new(worker_exits.clone()),
            Box::new(worker_boot.clone()),
            Box::new(worker_start_time.clone()),
            Box::new(worker_restarts.clone()),
            Box::new(hook_failures.clone()),
            Box::new(hook_runs.clone()),
            Box::new(hook_duration.clone()),
            Box::new(workers.clone()),
            Box::new(pool_degraded.clone()),
            Box::new(config_reloads.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_connect_errors.clone()),
            Box::new(unrouted_requests.clone()),
            Box::new(log_dropped.clone()),
            Box::new(build_info.clone()),
            Box::new(retries.clone()),
            Box::new(worker_ejections.clone()),
            Box::new(worker_in_flight.clone()),
            Box::new(ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("metric names are unique");
        }

        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for pool in pools {
            worker_starts.with_label_values(&[*pool]);
            worker_boot.with_label_values(&[*pool]);
            for reason in ExitReason::restarts() {
                worker_restarts.with_label_values(&[*pool, reason.as_str()]);
            }
            for reason in ExitReason::ALL {
                worker_exits.with_label_values(&[*pool, reason.as_str()]);
            }
            for state in WorkerState::GAUGED {
                workers.with_label_values(&[*pool, state.as_str()]);
            }
            for class in CODE_CLASSES {
                requests.with_label_values(&[*pool, class]);
            }
            request_duration.with_label_values(&[*pool]);
            pool_degraded.with_label_values(&[*pool]);
            upstream_connect_errors.with_label_values(&[*pool]);
            retries.with_label_values(&[*pool]);
        }

        for (pool, phase, hook) in hooks {
            let labels = [*pool, phase.as_str(), *hook];
            hook_runs.with_label_values(&labels);
            hook_duration.with_label_values(&labels);
            for reason in FailureReason::ALL {
                hook_failures.with_label_values(&[*pool, phase.as_str(), *hook, reason.as_str()]);
            }
        }

        Metrics {
            registry,
            worker_starts,
            worker_exits,
            worker_boot,
            worker_start_time,
            worker_restarts,
            hook_failures,
            hook_runs,
            hook_duration,
            workers,
            pool_degraded,
            config_reloads,
            requests,
            request_duration,
            upstream_connect_errors,
            unrouted_requests,
            log_dropped,
            build_info,
            retries,
            worker_ejections,
            worker_in_flight,
        }
    }

    /// The in-flight gauge of one worker slot (created at 0).
    pub fn worker_in_flight(&self, pool: &str, worker: &str) -> IntGauge {
        self.worker_in_flight.with_label_values(&[pool, worker])
    }

    /// The ejection counter of one worker slot (created at 0).
    pub fn worker_ejections(&self, pool: &str, worker: &str) -> IntCounter {
        self.worker_ejections.with_label_values(&[pool, worker])
    }

    /// Handles for the request path of `pool`.
    pub fn pool_requests(&self, pool: &str) -> PoolRequestMetrics {
        PoolRequestMetrics {
            by_class: CODE_CLASSES.map(|c| self.requests.with_label_values(&[pool, c])),
            duration: self.request_duration.with_label_values(&[pool]),
            connect_errors: self.upstream_connect_errors.with_label_values(&[pool]),
            retries: self.retries.with_label_values(&[pool]),
        }
    }

    /// The gauge of `pool` workers in `state`.
    pub fn workers_in(&self, pool: &str, state: WorkerState) -> IntGauge {
        self.workers.with_label_values(&[pool, state.as_str()])
    }

    /// Count a restart of a `pool` worker.
    pub fn restart(&self, pool: &str, reason: ExitReason) {
        self.worker_restarts
            .with_label_values(&[pool, reason.as_str()])
            .inc();
    }

    /// Handles for the supervisor actor of slot `worker` of `pool`.
    pub fn slot(&self, pool: &str, worker: usize) -> SlotMetrics {
        SlotMetrics {
            starts: self.worker_starts.with_label_values(&[pool]),
            boot: self.worker_boot.with_label_values(&[pool]),
            start_time: self
                .worker_start_time
                .with_label_values(&[pool, worker.to_string().as_str()]),
            exits: self.worker_exits.clone(),
            restarts: self.worker_restarts.clone(),
            pool: pool.to_owned(),
        }
    }

    /// Delete the per-worker series of a slot that no longer exists.
    pub fn forget_slot(&self, pool: &str, worker: usize) {
        let _ = self
            .worker_start_time
            .remove_label_values(&[pool, worker.to_string().as_str()]);
    }

    /// Delete every series of a pool that a new config no longer has; `slots` are
    /// its slot numbers.
    pub fn forget_pool(&self, pool: &str, slots: impl IntoIterator<Item = usize>) {
        for slot in slots {
            self.forget_slot(pool, slot);
            let worker = slot.to_string();
            let _ = self
                .worker_in_flight
                .remove_label_values(&[pool, worker.as_str()]);
            let _ = self
                .worker_ejections
                .remove_label_values(&[pool, worker.as_str()]);
        }
        let _ = self.retries.remove_label_values(&[pool]);
        let _ = self.worker_starts.remove_label_values(&[pool]);
        let _ = self.worker_boot.remove_label_values(&[pool]);
        let _ = self.request_duration.remove_label_values(&[pool]);
        let _ = self.upstream_connect_errors.remove_label_values(&[pool]);
        for reason in ExitReason::ALL.map(ExitReason::as_str) {
            let _ = self.worker_exits.remove_label_values(&[pool, reason]);
            let _ = self.worker_restarts.remove_label_values(&[pool, reason]);
        }
        for state in WorkerState::GAUGED {
            let _ = self.workers.remove_label_values(&[pool, state.as_str()]);
        }
        let _ = self.pool_degraded.remove_label_values(&[pool]);
        for class in CODE_CLASSES {
            let _ = self.requests.remove_label_values(&[pool, class]);
        }
    }

    /// Add a collector to the registry (for example [`WorkerResources`]).
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// Count one attempt of a hook and how long it took.
    pub fn hook_ran(&self, pool: &str, phase: Phase, hook: &str, seconds: f64) {
        let labels = [pool, phase.as_str(), hook];
        self.hook_runs.with_label_values(&labels).inc();
        self.hook_duration
            .with_label_values(&labels)
            .observe(seconds);
    }

    /// Count one failed attempt of a hook.
    pub fn hook_failed(&self, pool: &str, phase: Phase, hook: &str, reason: FailureReason) {
        self.hook_failures
            .with_label_values(&[pool, phase.as_str(), hook, reason.as_str()])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exist_at_zero_before_any_event() {
        let m = Metrics::new(
            &["web", "api"],
            &[
                ("web", Phase::PostFork, "seed"),
                ("", Phase::OnStart, "migrate"),
            ],
        );
        let text = String::from_utf8(m.encode()).unwrap();
        for needle in [
            r#"forkyard_worker_restarts_total{pool="web",reason="exit_code"} 0"#,
            r#"forkyard_worker_restarts_total{pool="api",reason="signal"} 0"#,
            r#"forkyard_workers{pool="web",state="backoff"} 0"#,
            r#"forkyard_requests_total{code_class="5xx",pool="api"} 0"#,
            r#"forkyard_upstream_connect_errors_total{pool="web"} 0"#,
            r#"forkyard_request_duration_seconds_count{pool="web"} 0"#,
            r#"forkyard_retries_total{pool="api"} 0"#,
            "forkyard_build_info{version=",
            "process_resident_memory_bytes",
            r#"forkyard_worker_starts_total{pool="api"} 0"#,
            r#"forkyard_worker_exits_total{pool="web",reason="shutdown"} 0"#,
            r#"forkyard_worker_exits_total{pool="web",reason="boot_timeout"} 0"#,
            r#"forkyard_worker_boot_seconds_count{pool="web"} 0"#,
            r#"forkyard_config_reloads_total{result="rolled_back"} 0"#,
            r#"forkyard_hook_runs_total{hook="seed",phase="post_fork",pool="web"} 0"#,
            r#"forkyard_hook_failures_total{hook="migrate",phase="on_start",pool="",reason="timeout"} 0"#,
            r#"forkyard_hook_duration_seconds_count{hook="migrate",phase="on_start",pool=""} 0"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn records_by_status_class() {
        let m = Metrics::new(&["web"], &[]);
        let h = m.pool_requests("web");
        h.record(200, 0.01);
        h.record(503, 0.01);
        h.record(0, 0.01);
        assert_eq!(h.by_class[1].get(), 1);
        assert_eq!(h.by_class[4].get(), 2);
        assert_eq!(h.duration.get_sample_count(), 3);
    }

    #[test]
    fn slot_series_are_deleted_with_the_slot() {
        let m = Metrics::new(&["web"], &[]);
        let s = m.slot("web", 1);
        s.start_time.set(1.7e9);
        s.exit("signal");
        s.restart(ExitReason::Signal);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text
            .contains(r#"forkyard_worker_start_time_seconds{pool="web",worker="1"} 1700000000"#));
        assert!(text.contains(r#"forkyard_worker_exits_total{pool="web",reason="signal"} 1"#));
        m.forget_slot("web", 1);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            !text.contains("forkyard_worker_start_time_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn a_removed_pool_leaves_no_series() {
        let m = Metrics::new(&["web", "api"], &[]);
        m.slot("api", 0).start_time.set(1.0);
        m.pool_requests("api").record(200, 0.1);
        m.forget_pool("api", [0]);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(!text.contains(r#"pool="api""#), "{text}");
        assert!(text.contains(r#"pool="web""#));
    }
}
