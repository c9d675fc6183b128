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

pub(crate) use worker_resources::WorkerResources;

use prometheus::core::Collector;
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Phase;
use crate::hooks::FailureReason;
use crate::process::ExitReason;
use crate::slot::{SlotId, WorkerState};

/// Latency buckets for proxied requests, in seconds (1 ms .. ~16 s).
const REQUEST_BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Worker boot times (spawn to ready), in seconds (50 ms .. 2 min).
const BOOT_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// HTTP status classes, indexed by `status / 100 - 1`.
pub(crate) const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What each kind of metric needs to be built.
trait Build: Sized + Clone + Collector + 'static {
    fn build(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> prometheus::Result<Self>;
}

impl Build for IntCounterVec {
    fn build(name: &str, help: &str, labels: &[&str], _: &[f64]) -> prometheus::Result<Self> {
        IntCounterVec::new(Opts::new(name, help), labels)
    }
}

impl Build for IntGaugeVec {
    fn build(name: &str, help: &str, labels: &[&str], _: &[f64]) -> prometheus::Result<Self> {
        IntGaugeVec::new(Opts::new(name, help), labels)
    }
}

impl Build for GaugeVec {
    fn build(name: &str, help: &str, labels: &[&str], _: &[f64]) -> prometheus::Result<Self> {
        GaugeVec::new(Opts::new(name, help), labels)
    }
}

impl Build for HistogramVec {
    fn build(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> prometheus::Result<Self> {
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
    }
}

impl Build for IntGauge {
    fn build(name: &str, help: &str, _: &[&str], _: &[f64]) -> prometheus::Result<Self> {
        IntGauge::new(name, help)
    }
}

impl Build for IntCounter {
    fn build(name: &str, help: &str, _: &[&str], _: &[f64]) -> prometheus::Result<Self> {
        IntCounter::new(name, help)
    }
}

/// Declares every metric once: its field, kind, labels, name, help and buckets.
/// The struct, its construction, its registration and [`NAMES`] all come from
/// this one list; adding a metric is one entry here (plus its row in
/// `docs/metrics.md`, which a test checks).
macro_rules! metrics {
    (@buckets) => { &[] };
    (@buckets $buckets:expr) => { &$buckets };
    ($(
        $(#[$doc:meta])*
        $field:ident: $kind:ident[$($label:literal),*] = ($name:literal, $help:literal) $(buckets $buckets:expr)?;
    )*) => {
        pub(crate) struct Metrics {
            registry: Registry,
            $( $(#[$doc])* pub(crate) $field: $kind, )*
        }

        /// The name of every metric in [`Metrics`] (the docs test reads it).
        #[cfg(test)]
        pub(crate) const NAMES: &[&str] = &[$($name),*];

        impl Metrics {
            /// Build and register every metric, with no series yet.
            ///
            /// Its `expect`s are the panic policy's allowed kind (docs/reliability.md):
            /// names, help texts and label names are constants, so they can only fail
            /// by a programming error, which the unit tests that call `new` catch;
            /// and this runs once before anything is started, never on the request
            /// path.
            fn declare() -> Metrics {
                let registry = Registry::new();
                $(
                    let buckets: &[f64] = metrics!(@buckets $($buckets)?);
                    let $field = <$kind as Build>::build($name, $help, &[$($label),*], buckets)
                        .expect("static metric definition");
                    registry
                        .register(Box::new($field.clone()))
                        .expect("metric names are unique");
                )*
                Metrics { registry, $($field,)* }
            }
        }
    };
}

metrics! {
    worker_starts: IntCounterVec["pool"] =
        ("forkyard_worker_starts_total", "Worker processes spawned.");
    worker_exits: IntCounterVec["pool", "reason"] =
        ("forkyard_worker_exits_total", "Worker processes that exited, by reason (stop: forkyard stopped it).");
    worker_restarts: IntCounterVec["pool", "reason"] =
        ("forkyard_worker_restarts_total", "Workers restarted after they stopped, by reason.");
    worker_boot: HistogramVec["pool"] =
        ("forkyard_worker_boot_seconds", "Time from spawning a worker to its passing the ready probe.")
        buckets BOOT_BUCKETS;
    worker_hangs: IntCounterVec["pool"] =
        ("forkyard_worker_hangs_total", "Hung requests found (one per hang of a worker process: a request waited hang.after for its response head).");
    worker_start_time: GaugeVec["pool", "worker"] =
        ("forkyard_worker_start_time_seconds", "Unix time when the slot's current process was spawned.");
    hook_failures: IntCounterVec["pool", "phase", "hook", "reason"] =
        ("forkyard_hook_failures_total", "Lifecycle hook runs that failed, by phase, hook and reason.");
    hook_runs: IntCounterVec["pool", "phase", "hook"] =
        ("forkyard_hook_runs_total", "Lifecycle hook attempts (each retry counts), by phase and hook.");
    hook_duration: HistogramVec["pool", "phase", "hook"] =
        ("forkyard_hook_duration_seconds", "How long lifecycle hook attempts took.")
        buckets HOOK_BUCKETS;
    workers: IntGaugeVec["pool", "state"] =
        ("forkyard_workers", "Worker slots by state.");
    pool_degraded: IntGaugeVec["pool"] =
        ("forkyard_pool_degraded", "1 while a pool's workers are in a crash loop (restart.crash_loop).");
    config_reloads: IntCounterVec["result"] =
        ("forkyard_config_reloads_total", "Config reloads (SIGHUP, POST /reload), by result.");
    requests: IntCounterVec["pool", "code_class"] =
        ("forkyard_requests_total", "Requests proxied to a pool, by status class.");
    request_duration: HistogramVec["pool"] =
        ("forkyard_request_duration_seconds", "Time from reading a request's head to the end of its response.")
        buckets REQUEST_BUCKETS;
    upstream_connect_errors: IntCounterVec["pool"] =
        ("forkyard_upstream_connect_errors_total", "Failed connection attempts to a pool's workers.");
    unrouted_requests: IntCounter[] =
        ("forkyard_unrouted_requests_total", "Requests that matched no route and were answered 404.");
    /// Log events dropped because stderr did not keep up (see `logging`).
    log_dropped: IntCounter[] =
        ("forkyard_log_dropped_total", "Log events dropped because stderr was blocked or closed.");
    build_info: IntGaugeVec["version"] =
        ("forkyard_build_info", "Always 1; the version is a label.");
    retries: IntCounterVec["pool"] =
        ("forkyard_retries_total", "Requests sent again to another worker after a failed attempt.");
    worker_ejections: IntCounterVec["pool", "worker"] =
        ("forkyard_worker_ejections_total", "Times a worker was taken out of selection after consecutive failures.");
    worker_in_flight: IntGaugeVec["pool", "worker"] =
        ("forkyard_worker_in_flight_requests", "Requests being proxied to each worker slot.");
    queue_wait: HistogramVec["pool"] =
        ("forkyard_queue_wait_seconds", "Time requests waited in a pool's queue for a worker with room (max_in_flight).")
        buckets REQUEST_BUCKETS;
    queue_depth: IntGaugeVec["pool"] =
        ("forkyard_queue_depth", "Requests waiting in a pool's queue now.");
    queue_rejections: IntCounterVec["pool", "reason"] =
        ("forkyard_queue_rejections_total", "Requests answered 503 because the pool's queue was full or their wait timed out.");
    preloader_starts: IntCounterVec["pool"] =
        ("forkyard_preloader_starts_total", "Preloader processes started (preload pools).");
    preloader_restarts: IntCounterVec["pool", "reason"] =
        ("forkyard_preloader_restarts_total", "Preloaders started again after theirs exited or failed, by reason.");
    preloader_import: GaugeVec["pool"] =
        ("forkyard_preloader_import_seconds", "How long the pool's last preloader took to import the app.");
    events_subscribers: IntGauge[] =
        ("forkyard_events_subscribers", "Clients following the live event stream (GET /events) now.");
    events_subscribers_dropped: IntCounterVec["reason"] =
        ("forkyard_events_subscribers_dropped_total", "Event stream clients cut off: lagged (fell more than 1024 events behind) or stalled (a write waited 5 s).");
    preload_fork: HistogramVec["pool"] =
        ("forkyard_preload_fork_seconds", "Time from a fork request to the preloader's answer with the new worker's pid.")
        buckets FORK_BUCKETS;
    worker_metrics_errors: IntCounterVec["pool", "reason"] =
        ("forkyard_worker_metrics_errors_total", "Problems fetching or merging the workers' own metrics (metrics:), by reason.");
    worker_metrics_scrape: HistogramVec["pool"] =
        ("forkyard_worker_metrics_scrape_seconds", "Time to fetch a pool's worker metrics, per scrape of /metrics.")
        buckets SCRAPE_BUCKETS;
    worker_metrics_series: IntGaugeVec["pool"] =
        ("forkyard_worker_metrics_series", "Series of the workers' own metrics kept for the pool (at most metrics.max_series).");
}

/// Worker metrics fetch times, in seconds (1 ms .. 10 s).
const SCRAPE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Why merging a pool's worker metrics went wrong: the `reason` label of
/// `forkyard_worker_metrics_errors_total`.
pub(crate) const WORKER_METRICS_ERROR_REASONS: [&str; 7] = [
    "timeout",
    "connect",
    "http_status",
    "too_large",
    "parse",
    "conflict",
    "too_many_series",
];

/// Fork times, in seconds (0.5 ms .. 10 s).
const FORK_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Why an event stream client was cut off: the `reason` label of
/// `forkyard_events_subscribers_dropped_total`.
pub(crate) const EVENTS_DROP_REASONS: [&str; 2] = ["lagged", "stalled"];

/// Why a preloader was started again: the `reason` label of
/// `forkyard_preloader_restarts_total`.
pub(crate) const PRELOADER_RESTART_REASONS: [&str; 6] = [
    "import_error",
    "exit_code",
    "signal",
    "oom_killed",
    "boot_timeout",
    "unresponsive",
];

/// Pre-resolved per-pool handles for the request path.
#[derive(Clone)]
pub(crate) struct PoolRequestMetrics {
    pub by_class: [IntCounter; 5],
    pub duration: Histogram,
    pub connect_errors: IntCounter,
    pub retries: IntCounter,
    pub queue_wait: Histogram,
    pub queue_depth: IntGauge,
    /// By reason: `full`, `timeout`.
    pub queue_rejections: [IntCounter; 2],
}

impl PoolRequestMetrics {
    /// Count one finished request with `status` (0 when no response was sent).
    pub(crate) fn record(&self, status: u16, seconds: f64) {
        let idx = match status {
            100..=599 => usize::from(status / 100 - 1),
            // No response at all (client went away): count as a server-side failure.
            _ => 4,
        };
        self.by_class[idx].inc();
        self.duration.observe(seconds);
    }
}

/// Pre-resolved handles for one worker slot, used by its supervisor actor.
#[derive(Clone)]
pub(crate) struct SlotMetrics {
    pub starts: IntCounter,
    /// `forkyard_worker_hangs_total` of the slot's pool.
    pub hangs: IntCounter,
    pub boot: Histogram,
    pub start_time: Gauge,
    exits: IntCounterVec,
    restarts: IntCounterVec,
    pool: String,
}

impl SlotMetrics {
    /// Count an exit of this slot's process for `reason` (an [`ExitReason`] label).
    pub(crate) fn exit(&self, reason: &str) {
        self.exits
            .with_label_values(&[self.pool.as_str(), reason])
            .inc();
    }

    /// Count a restart of this slot for `reason`.
    pub(crate) fn restart(&self, reason: ExitReason) {
        self.restarts
            .with_label_values(&[self.pool.as_str(), reason.as_str()])
            .inc();
    }
}

/// One declared hook: `(pool, phase, name)`, pool empty for forkyard-wide phases.
pub(crate) type HookSeries<'a> = (&'a str, Phase, &'a str);

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
    pub(crate) fn new(pools: &[&str], hooks: &[HookSeries]) -> Metrics {
        let m = Metrics::declare();
        m.registry
            .register(Box::new(ProcessCollector::for_self()))
            .expect("metric names are unique");
        let Metrics {
            worker_starts,
            worker_exits,
            worker_restarts,
            worker_boot,
            worker_hangs,
            workers,
            pool_degraded,
            config_reloads,
            requests,
            request_duration,
            upstream_connect_errors,
            build_info,
            retries,
            ..
        } = &m;
        for result in ["ok", "error", "rolled_back"] {
            config_reloads.with_label_values(&[result]);
        }
        for reason in EVENTS_DROP_REASONS {
            m.events_subscribers_dropped.with_label_values(&[reason]);
        }
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for pool in pools {
            worker_starts.with_label_values(&[*pool]);
            worker_boot.with_label_values(&[*pool]);
            worker_hangs.with_label_values(&[*pool]);
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
            m.pool_requests(pool);
            retries.with_label_values(&[*pool]);
        }

        for (pool, phase, hook) in hooks {
            m.declare_hook(pool, *phase, hook);
        }

        m
    }

    /// The in-flight gauge of one worker slot (created at 0).
    pub(crate) fn worker_in_flight(&self, pool: &str, worker: &str) -> IntGauge {
        self.worker_in_flight.with_label_values(&[pool, worker])
    }

    /// The ejection counter of one worker slot (created at 0).
    pub(crate) fn worker_ejections(&self, pool: &str, worker: &str) -> IntCounter {
        self.worker_ejections.with_label_values(&[pool, worker])
    }

    /// Handles for the request path of `pool`.
    pub(crate) fn pool_requests(&self, pool: &str) -> PoolRequestMetrics {
        PoolRequestMetrics {
            by_class: CODE_CLASSES.map(|c| self.requests.with_label_values(&[pool, c])),
            duration: self.request_duration.with_label_values(&[pool]),
            connect_errors: self.upstream_connect_errors.with_label_values(&[pool]),
            retries: self.retries.with_label_values(&[pool]),
            queue_wait: self.queue_wait.with_label_values(&[pool]),
            queue_depth: self.queue_depth.with_label_values(&[pool]),
            queue_rejections: ["full", "timeout"]
                .map(|r| self.queue_rejections.with_label_values(&[pool, r])),
        }
    }

    /// The gauge of `pool` workers in `state`.
    pub(crate) fn workers_in(&self, pool: &str, state: WorkerState) -> IntGauge {
        self.workers.with_label_values(&[pool, state.as_str()])
    }

    /// Count a restart of a `pool` worker.
    pub(crate) fn restart(&self, pool: &str, reason: ExitReason) {
        self.worker_restarts
            .with_label_values(&[pool, reason.as_str()])
            .inc();
    }

    /// Handles for the supervisor actor of slot `worker` of `pool`.
    pub(crate) fn slot(&self, pool: &str, worker: SlotId) -> SlotMetrics {
        SlotMetrics {
            starts: self.worker_starts.with_label_values(&[pool]),
            hangs: self.worker_hangs.with_label_values(&[pool]),
            boot: self.worker_boot.with_label_values(&[pool]),
            start_time: self
                .worker_start_time
                .with_label_values(&[pool, worker.label().as_str()]),
            exits: self.worker_exits.clone(),
            restarts: self.worker_restarts.clone(),
            pool: pool.to_owned(),
        }
    }

    /// Delete the per-worker series of a slot that no longer exists.
    pub(crate) fn forget_slot(&self, pool: &str, worker: SlotId) {
        let worker = worker.label();
        let labels = [pool, worker.as_str()];
        let _ = self.worker_start_time.remove_label_values(&labels);
        let _ = self.worker_in_flight.remove_label_values(&labels);
        let _ = self.worker_ejections.remove_label_values(&labels);
    }

    /// Create the preloader series of a preload pool at 0 (when its first preloader
    /// starts).
    pub(crate) fn declare_preload(&self, pool: &str) {
        self.preloader_starts.with_label_values(&[pool]);
        self.preloader_import.with_label_values(&[pool]);
        self.preload_fork.with_label_values(&[pool]);
        for reason in PRELOADER_RESTART_REASONS {
            self.preloader_restarts.with_label_values(&[pool, reason]);
        }
    }

    /// Create the worker-metrics series of a pool with `metrics:` at 0.
    pub(crate) fn declare_worker_metrics(&self, pool: &str) {
        self.worker_metrics_scrape.with_label_values(&[pool]);
        self.worker_metrics_series.with_label_values(&[pool]);
        for reason in WORKER_METRICS_ERROR_REASONS {
            self.worker_metrics_errors
                .with_label_values(&[pool, reason]);
        }
    }

    /// Create the series of a hook at 0 (at start, and for hooks a reload adds).
    pub(crate) fn declare_hook(&self, pool: &str, phase: Phase, hook: &str) {
        let labels = [pool, phase.as_str(), hook];
        self.hook_runs.with_label_values(&labels);
        self.hook_duration.with_label_values(&labels);
        for reason in FailureReason::ALL {
            self.hook_failures
                .with_label_values(&[pool, phase.as_str(), hook, reason.as_str()]);
        }
    }

    /// Add a collector to the registry (for example [`WorkerResources`]).
    pub(crate) fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// Count one attempt of a hook and how long it took.
    pub(crate) fn hook_ran(&self, pool: &str, phase: Phase, hook: &str, seconds: f64) {
        let labels = [pool, phase.as_str(), hook];
        self.hook_runs.with_label_values(&labels).inc();
        self.hook_duration
            .with_label_values(&labels)
            .observe(seconds);
    }

    /// Count one failed attempt of a hook.
    pub(crate) fn hook_failed(&self, pool: &str, phase: Phase, hook: &str, reason: FailureReason) {
        self.hook_failures
            .with_label_values(&[pool, phase.as_str(), hook, reason.as_str()])
            .inc();
    }

    /// Every metric family, collected now.
    pub(crate) fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// Append the text exposition of one family to `out`.
    pub(crate) fn encode_family(family: &prometheus::proto::MetricFamily, out: &mut Vec<u8>) {
        if let Err(e) = TextEncoder::new().encode(std::slice::from_ref(family), out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
    }

    /// The Prometheus text exposition of every metric.
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
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
            r#"forkyard_worker_hangs_total{pool="web"} 0"#,
            r#"forkyard_worker_exits_total{pool="web",reason="hang"} 0"#,
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
        let s = m.slot("web", SlotId(1));
        m.worker_in_flight("web", "1").inc();
        m.worker_ejections("web", "1").inc();
        s.start_time.set(1.7e9);
        s.exit("signal");
        s.restart(ExitReason::Signal);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text
            .contains(r#"forkyard_worker_start_time_seconds{pool="web",worker="1"} 1700000000"#));
        assert!(text.contains(r#"forkyard_worker_exits_total{pool="web",reason="signal"} 1"#));
        m.forget_slot("web", SlotId(1));
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(!text.contains(r#"worker="1""#), "{text}");
    }

    #[test]
    fn every_metric_is_in_the_docs() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"),
        )
        .unwrap();
        let collected = NAMES.iter().chain(WorkerResources::NAMES.iter());
        for name in collected {
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "{name} is registered but has no row in docs/metrics.md"
            );
        }
        // And every metric is registered: the registry holds as many families.
        let m = Metrics::new(&["web"], &[("web", Phase::PreFork, "h")]);
        m.declare_preload("web");
        m.declare_worker_metrics("web");
        m.worker_ejections("web", "0");
        m.worker_in_flight("web", "0");
        m.slot("web", SlotId(0));
        let families: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .filter(|n| n.starts_with("forkyard_"))
            .collect();
        for f in &families {
            assert!(
                NAMES.contains(&f.as_str()),
                "{f} is not declared in metrics!"
            );
        }
        assert_eq!(families.len(), NAMES.len(), "{families:?}");
    }
}
