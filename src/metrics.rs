//! Every Prometheus metric forkyard exports, built once in one struct.
//!
//! Labels are pool names, slot indexes and small enums, never pids or ports. Every
//! known label combination is created at 0 when the struct is built, so a series
//! exists before its first event. Request-path handles are resolved ahead of time
//! into [`PoolRequestMetrics`], never looked up by label per request.

use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::process::ExitReason;
use crate::supervisor::WorkerState;

/// Latency buckets for proxied requests, in seconds (1 ms .. ~16 s).
const REQUEST_BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// HTTP status classes, indexed by `status / 100 - 1`.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub struct Metrics {
    registry: Registry,
    pub worker_restarts: IntCounterVec,
    pub hook_failures: IntCounterVec,
    pub workers: IntGaugeVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_connect_errors: IntCounterVec,
    pub unrouted_requests: IntCounter,
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

impl Metrics {
    /// Build every metric and create the series of every known label combination.
    pub fn new(pools: &[&str]) -> Metrics {
        let registry = Registry::new();
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
        let workers = IntGaugeVec::new(
            Opts::new("forkyard_workers", "Worker slots by state."),
            &["pool", "state"],
        )
        .expect("static metric definition");
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
            Box::new(worker_restarts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(hook_failures.clone()),
            Box::new(workers.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_connect_errors.clone()),
            Box::new(unrouted_requests.clone()),
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
            for reason in ExitReason::ALL {
                worker_restarts.with_label_values(&[*pool, reason.as_str()]);
            }
            for state in WorkerState::GAUGED {
                workers.with_label_values(&[*pool, state.as_str()]);
            }
            for class in CODE_CLASSES {
                requests.with_label_values(&[*pool, class]);
            }
            request_duration.with_label_values(&[*pool]);
            upstream_connect_errors.with_label_values(&[*pool]);
            retries.with_label_values(&[*pool]);
        }

        Metrics {
            registry,
            worker_restarts,
            hook_failures,
            workers,
            requests,
            request_duration,
            upstream_connect_errors,
            unrouted_requests,
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
        let m = Metrics::new(&["web", "api"]);
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
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn records_by_status_class() {
        let m = Metrics::new(&["web"]);
        let h = m.pool_requests("web");
        h.record(200, 0.01);
        h.record(503, 0.01);
        h.record(0, 0.01);
        assert_eq!(h.by_class[1].get(), 1);
        assert_eq!(h.by_class[4].get(), 2);
        assert_eq!(h.duration.get_sample_count(), 3);
    }
}
