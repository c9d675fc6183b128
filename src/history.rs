//! The last 15 minutes of every pool, for the charts of the status page
//! (`GET /status/history`): a sampler task reads the metrics and the status board
//! every [`INTERVAL`] and keeps [`KEEP`] samples per pool in a ring.
//!
//! A sample covers the interval since the one before it: requests and 5xx answers
//! per second (from `forkyard_requests_total`), the median and 99th percentile of
//! the request latency (from the buckets of `forkyard_request_duration_seconds`
//! that filled in the interval, interpolated as Prometheus' `histogram_quantile`
//! does), restarts by reason (`forkyard_worker_restarts_total`), and at its end
//! the requests in flight and each worker's (and preloader's) memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus::core::{Collector, Metric as _};
use serde::Serialize;

use crate::metrics::{Metrics, CODE_CLASSES};
use crate::process::ExitReason;
use crate::status::StatusBoard;

/// How often each pool is sampled.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept per pool: 15 minutes.
pub(crate) const KEEP: usize = 180;

/// One interval of one pool.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// The end of the interval, as Unix time; the same for every pool's sample of
    /// one round.
    pub(crate) at_unix: f64,
    pub(crate) requests_per_second: f64,
    /// Answers of class 5xx per second (forkyard's own 502/503 included).
    pub(crate) errors_per_second: f64,
    /// `null` when no request finished in the interval.
    pub(crate) p50_seconds: Option<f64>,
    pub(crate) p99_seconds: Option<f64>,
    /// Requests being proxied to the pool's workers at the end of the interval.
    pub(crate) in_flight: i64,
    /// Restarts in the interval by reason (only reasons that happened).
    pub(crate) restarts: BTreeMap<&'static str, u64>,
    pub(crate) workers: Vec<WorkerMemory>,
    pub(crate) preloaders: Vec<PreloaderMemory>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerMemory {
    pub(crate) slot: usize,
    pub(crate) pid: Option<i32>,
    pub(crate) rss_bytes: Option<u64>,
    pub(crate) pss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PreloaderMemory {
    pub(crate) generation: u64,
    pub(crate) pid: Option<i32>,
    pub(crate) rss_bytes: Option<u64>,
    pub(crate) pss_bytes: Option<u64>,
}

/// The `GET /status/history` document.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryReport {
    pub(crate) interval_seconds: f64,
    pub(crate) keep: usize,
    pub(crate) pools: Vec<PoolHistory>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PoolHistory {
    pub(crate) name: String,
    /// Oldest first.
    pub(crate) samples: Vec<Sample>,
}

/// The counters of one pool at one moment, to take differences from.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    requests: u64,
    errors: u64,
    /// Cumulative counts of the latency buckets, and the total count.
    buckets: Vec<(f64, u64)>,
    count: u64,
    /// By [`ExitReason::restarts`].
    restarts: Vec<u64>,
}

struct Series {
    name: String,
    samples: VecDeque<Sample>,
    last: Option<Reading>,
}

/// Every pool's samples; the sampler writes, `GET /status/history` reads.
pub(crate) struct History {
    pools: Mutex<Vec<Series>>,
}

/// The `q` quantile of the observations between two readings of a histogram's
/// cumulative buckets (`histogram_quantile`'s linear interpolation; the highest
/// finite bound for observations above it). `None` without observations.
fn quantile(q: f64, before: &[(f64, u64)], after: &[(f64, u64)], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut lower = (0.0, 0u64);
    for (i, (bound, cumulative)) in after.iter().enumerate() {
        let delta = cumulative.saturating_sub(before.get(i).map_or(0, |b| b.1));
        if delta as f64 >= rank {
            let (low_bound, low_count) = lower;
            let share = if delta == low_count {
                1.0
            } else {
                (rank - low_count as f64) / (delta - low_count) as f64
            };
            return Some(low_bound + (bound - low_bound) * share);
        }
        lower = (*bound, delta);
    }
    after.last().map(|b| b.0)
}

fn read(metrics: &Metrics, pool: &str) -> Reading {
    let by_class: Vec<u64> = CODE_CLASSES
        .iter()
        .map(|c| metrics.requests.with_label_values(&[pool, c]).get())
        .collect();
    let histogram = metrics.request_duration.with_label_values(&[pool]).metric();
    let histogram = histogram.get_histogram();
    Reading {
        at: Instant::now(),
        requests: by_class.iter().sum(),
        errors: by_class[4],
        buckets: histogram
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect(),
        count: histogram.get_sample_count(),
        restarts: ExitReason::restarts()
            .iter()
            .map(|r| {
                metrics
                    .worker_restarts
                    .with_label_values(&[pool, r.as_str()])
                    .get()
            })
            .collect(),
    }
}

/// Requests in flight per pool: the sum of its slots' gauges.
fn in_flight(metrics: &Metrics) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for family in metrics.worker_in_flight.collect() {
        for m in family.get_metric() {
            if let Some(pool) = m.get_label().iter().find(|l| l.name() == "pool") {
                *out.entry(pool.value().to_owned()).or_default() +=
                    m.get_gauge().get_value() as i64;
            }
        }
    }
    out
}

impl History {
    pub(crate) fn new() -> Arc<History> {
        Arc::new(History {
            pools: Mutex::new(Vec::new()),
        })
    }

    /// Every pool's samples after `since` (Unix time), or all.
    pub(crate) fn report(&self, since: Option<f64>) -> HistoryReport {
        let pools = self.pools.lock();
        HistoryReport {
            interval_seconds: INTERVAL.as_secs_f64(),
            keep: KEEP,
            pools: pools
                .iter()
                .map(|s| PoolHistory {
                    name: s.name.clone(),
                    samples: s
                        .samples
                        .iter()
                        .filter(|x| since.is_none_or(|t| x.at_unix > t))
                        .cloned()
                        .collect(),
                })
                .collect(),
        }
    }

    /// One round: a sample of every pool on the board (the first round of a pool
    /// only takes its reading). Pools a reload removed are forgotten.
    pub(crate) fn sample(&self, metrics: &Metrics, board: &StatusBoard) {
        let report = board.report(None);
        let at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let in_flight = in_flight(metrics);
        let mut pools = self.pools.lock();
        pools.retain(|s| report.pools.iter().any(|p| p.name == s.name));
        for pool in &report.pools {
            let idx = match pools.iter().position(|s| s.name == pool.name) {
                Some(i) => i,
                None => {
                    pools.push(Series {
                        name: pool.name.clone(),
                        samples: VecDeque::with_capacity(KEEP),
                        last: None,
                    });
                    pools.len() - 1
                }
            };
            let series = &mut pools[idx];
            let now = read(metrics, &pool.name);
            let Some(before) = series.last.replace(now.clone()) else {
                continue;
            };
            let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
            let count = now.count.saturating_sub(before.count);
            let sample = Sample {
                at_unix,
                requests_per_second: now.requests.saturating_sub(before.requests) as f64 / seconds,
                errors_per_second: now.errors.saturating_sub(before.errors) as f64 / seconds,
                p50_seconds: quantile(0.5, &before.buckets, &now.buckets, count),
                p99_seconds: quantile(0.99, &before.buckets, &now.buckets, count),
                in_flight: in_flight.get(&pool.name).copied().unwrap_or(0),
                restarts: ExitReason::restarts()
                    .iter()
                    .zip(now.restarts.iter().zip(&before.restarts))
                    .filter(|(_, (n, b))| n > b)
                    .map(|(r, (n, b))| (r.as_str(), n - b))
                    .collect(),
                workers: pool
                    .workers
                    .iter()
                    .map(|w| WorkerMemory {
                        slot: w.slot,
                        pid: w.pid,
                        rss_bytes: w.rss_bytes,
                        pss_bytes: w.pss_bytes,
                    })
                    .collect(),
                preloaders: pool
                    .preloaders
                    .iter()
                    .map(|p| PreloaderMemory {
                        generation: p.generation,
                        pid: p.pid,
                        rss_bytes: p.rss_bytes,
                        pss_bytes: p.pss_bytes,
                    })
                    .collect(),
            };
            if series.samples.len() == KEEP {
                series.samples.pop_front();
            }
            series.samples.push_back(sample);
        }
    }
}

/// Sample every [`INTERVAL`] until the control runtime ends.
pub(crate) async fn run(history: Arc<History>, metrics: Arc<Metrics>, board: Arc<StatusBoard>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        history.sample(&metrics, &board);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::SlotId;

    #[test]
    fn quantiles_interpolate_within_the_buckets_that_filled() {
        let before = [(0.01, 10), (0.1, 10), (1.0, 10)];
        // 100 new observations: 50 up to 10 ms, 40 more up to 100 ms, 10 more up to 1 s.
        let after = [(0.01, 60), (0.1, 100), (1.0, 110)];
        let p50 = quantile(0.5, &before, &after, 100).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p99 = quantile(0.99, &before, &after, 100).unwrap();
        assert!((p99 - 0.91).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &before, &before, 0), None);
        // Above every bound: the highest one.
        assert_eq!(quantile(0.99, &before, &before, 5), Some(1.0));
    }

    #[test]
    fn samples_are_rates_over_the_interval_and_restarts_by_reason() {
        let metrics = Metrics::new(&["web"], &[]);
        let board = StatusBoard::new(["web"]);
        let history = History::new();
        history.sample(&metrics, &board);
        assert!(
            history.report(None).pools[0].samples.is_empty(),
            "a baseline only"
        );
        let requests = metrics.pool_requests("web");
        for _ in 0..30 {
            requests.record(200, 0.004);
        }
        requests.record(503, 0.2);
        metrics.slot("web", SlotId(0)).restart(ExitReason::Signal);
        metrics.worker_in_flight("web", "0").set(3);
        history.sample(&metrics, &board);
        let report = history.report(None);
        let s = &report.pools[0].samples[0];
        assert!(
            s.requests_per_second > 0.0 && s.errors_per_second > 0.0,
            "{s:?}"
        );
        assert!(
            (s.requests_per_second / s.errors_per_second - 31.0).abs() < 1e-6,
            "{s:?}"
        );
        let p50 = s.p50_seconds.unwrap();
        assert!((0.002..=0.005).contains(&p50), "{s:?}");
        assert!(s.p99_seconds.unwrap() > 0.1, "{s:?}");
        assert_eq!(s.restarts.get("signal"), Some(&1));
        assert_eq!(s.restarts.len(), 1);
        assert_eq!(s.in_flight, 3);
        // Later samples only; a quiet interval has no latency.
        let at = s.at_unix;
        assert!(history.report(Some(at)).pools[0].samples.is_empty());
        history.sample(&metrics, &board);
        let report = history.report(Some(at));
        assert_eq!(report.pools[0].samples.len(), 1);
        assert_eq!(report.pools[0].samples[0].p50_seconds, None);
        assert!(report.pools[0].samples[0].restarts.is_empty());
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes() {
        let metrics = Metrics::new(&["web"], &[]);
        let board = StatusBoard::new(["web"]);
        let history = History::new();
        for _ in 0..KEEP + 5 {
            history.sample(&metrics, &board);
        }
        assert_eq!(history.report(None).pools[0].samples.len(), KEEP);
        assert_eq!(KEEP as u64 * INTERVAL.as_secs(), 15 * 60);
    }
}
