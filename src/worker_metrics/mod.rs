//! Merged worker metrics (`metrics:` of a pool): when forkyard's `/metrics` is
//! scraped, every ready worker of such a pool is asked for its own Prometheus text
//! at `metrics.path`, over its own port or Unix socket, all at once and each within
//! the pool's `metrics.timeout`. The answers are parsed (`exposition`) and merged
//! (`merge`) into what forkyard serves after its own metrics: counters and
//! histograms summed per pool, so they survive restarts; gauges per worker.
//!
//! A worker that is stopped on purpose (recycled, replaced, scaled down) is
//! scraped once more after it was drained and before it is signalled
//! ([`Farewell`]), so what it served since the last scrape of `/metrics` is not
//! lost.
//!
//! A worker that is slow, broken or gone costs at most the timeout and never fails
//! the scrape: it keeps its last values and the problem is counted in
//! `forkyard_worker_metrics_errors_total{pool,reason}` (and logged when a worker's
//! outcome changes).

mod exposition;
mod merge;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use parking_lot::Mutex;
use prometheus::proto::{MetricFamily, MetricType};

use crate::config::WorkerMetrics as Settings;
use crate::events;
use crate::metrics::Metrics;
use crate::pool::{Farewell, Member, Pool};
use crate::probe::{self, ProbeError, Target};
use crate::slot::Endpoint;
use exposition::Kind;
use merge::{Merged, Scraped, RESERVED_LABELS};

/// What forkyard asks a worker for: the text format every client library speaks.
const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// The largest metrics text taken from one worker.
const MAX_BODY: usize = 16 << 20;

/// Why a worker's metrics were not (all) merged: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No answer within `metrics.timeout`.
    Timeout,
    /// The connection failed (refused, reset).
    Connect,
    /// An answer other than 200, or not HTTP.
    HttpStatus,
    /// More than 16 MiB.
    TooLarge,
    /// Not valid Prometheus text.
    Parse,
    /// A family with another type (or help text) than it has elsewhere, or with
    /// one of forkyard's own names.
    Conflict,
    /// The pool's `metrics.max_series` was reached: new series were dropped.
    TooManySeries,
}

impl Reason {
    #[cfg(test)]
    pub(crate) const ALL: [Reason; 7] = [
        Reason::Timeout,
        Reason::Connect,
        Reason::HttpStatus,
        Reason::TooLarge,
        Reason::Parse,
        Reason::Conflict,
        Reason::TooManySeries,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Connect => "connect",
            Reason::HttpStatus => "http_status",
            Reason::TooLarge => "too_large",
            Reason::Parse => "parse",
            Reason::Conflict => "conflict",
            Reason::TooManySeries => "too_many_series",
        }
    }
}

/// The merger: the pools, forkyard's metrics, and the merged state.
pub(crate) struct WorkerMetrics {
    pools: Vec<Arc<Pool>>,
    metrics: Arc<Metrics>,
    merged: Mutex<Merged>,
    /// Numbers scrapes, so that of two concurrent scrapes the older answers never
    /// overwrite the newer ones.
    seq: AtomicU64,
}

/// A family of forkyard's own, as the merge sees it.
fn own_family(f: &MetricFamily) -> (String, Kind, Option<String>) {
    let kind = match f.get_field_type() {
        MetricType::COUNTER => Kind::Counter,
        MetricType::GAUGE => Kind::Gauge,
        MetricType::HISTOGRAM => Kind::Histogram,
        MetricType::SUMMARY => Kind::Summary,
        MetricType::UNTYPED => Kind::Untyped,
    };
    (f.name().to_owned(), kind, Some(escape_help(f.help())))
}

/// A help text as the text format writes it.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

impl WorkerMetrics {
    /// The merger of `pools`, each of which hands it its drained workers before
    /// they are stopped on purpose.
    pub(crate) fn start(pools: Vec<Arc<Pool>>, metrics: Arc<Metrics>) -> Arc<WorkerMetrics> {
        let merger = Arc::new(WorkerMetrics::new(pools, metrics));
        let weak: std::sync::Weak<WorkerMetrics> = Arc::downgrade(&merger);
        for pool in &merger.pools {
            pool.set_farewell(weak.clone());
        }
        merger
    }

    /// forkyard's own metrics, which the merged output starts with.
    pub(crate) fn own(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn new(pools: Vec<Arc<Pool>>, metrics: Arc<Metrics>) -> WorkerMetrics {
        let own: Vec<_> = metrics
            .gather()
            .iter()
            .filter(|f| !f.name().starts_with("forkyard_"))
            .map(own_family)
            .collect();
        for pool in &pools {
            if pool.settings().metrics.is_some() {
                metrics.declare_worker_metrics(&pool.name);
            }
        }
        WorkerMetrics {
            pools,
            metrics,
            merged: Mutex::new(Merged::new(own)),
            seq: AtomicU64::new(0),
        }
    }

    /// forkyard's own metrics, then the merged ones of every pool with `metrics:`,
    /// as one Prometheus text.
    pub(crate) async fn exposition(&self) -> Vec<u8> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let pools: Vec<(&Arc<Pool>, Settings)> = self
            .pools
            .iter()
            .filter_map(|p| Some((p, p.settings().metrics.clone()?)))
            .collect();
        let scrapes = join_all(pools.iter().map(|(pool, settings)| async move {
            let started = Instant::now();
            let scraped = scrape(pool, settings).await;
            (scraped, started.elapsed())
        }))
        .await;
        let names: Vec<&str> = pools.iter().map(|(p, _)| &*p.name).collect();
        {
            let mut merged = self.merged.lock();
            for gone in merged.retain_pools(&names) {
                self.metrics
                    .worker_metrics_series
                    .with_label_values(&[&gone])
                    .set(0);
            }
            for ((pool, settings), (scraped, took)) in pools.iter().zip(scrapes) {
                self.take_in(&mut merged, pool, settings, seq, scraped, true);
                self.metrics
                    .worker_metrics_scrape
                    .with_label_values(&[&*pool.name])
                    .observe(took.as_secs_f64());
            }
        }
        self.render(&names)
    }

    /// Merge one pool's scrape (of all its members when `whole`); count and log
    /// its problems.
    fn take_in(
        &self,
        merged: &mut Merged,
        pool: &Pool,
        settings: &Settings,
        seq: u64,
        scraped: Vec<Scraped>,
        whole: bool,
    ) {
        let name = &*pool.name;
        self.metrics.declare_worker_metrics(name);
        let ids: Vec<(u64, usize)> = scraped
            .iter()
            .map(|s| (s.member.id, s.member.slot.index()))
            .collect();
        let mut failed: Vec<(u64, Reason)> = Vec::new();
        merged.update(
            name,
            settings.max_series,
            seq,
            scraped,
            whole,
            &mut |id, slot, reason, detail| {
                self.metrics
                    .worker_metrics_errors
                    .with_label_values(&[name, reason.as_str()])
                    .inc();
                failed.push((id, reason));
                if !detail.is_empty() {
                    tracing::debug!(
                        pool = name,
                        worker = slot.index(),
                        reason = reason.as_str(),
                        family = detail,
                        "worker metrics: family refused"
                    );
                }
            },
        );
        for (id, slot) in ids {
            let reason = failed.iter().find(|(i, _)| *i == id).map(|(_, r)| *r);
            if merged.note_outcome(name, id, reason) {
                match reason {
                    Some(reason) => tracing::warn!(
                        event = events::WORKER_METRICS_ERROR,
                        pool = name,
                        worker = slot,
                        reason = reason.as_str(),
                        path = %settings.path,
                        "worker metrics not merged ({}): the worker keeps its last values; see forkyard_worker_metrics_errors_total",
                        reason.as_str()
                    ),
                    None => tracing::info!(
                        event = events::WORKER_METRICS_OK,
                        pool = name,
                        worker = slot,
                        path = %settings.path,
                        "worker metrics merged again"
                    ),
                }
            }
        }
        self.metrics
            .worker_metrics_series
            .with_label_values(&[name])
            .set(merged.series(name) as i64);
    }

    /// forkyard's families (with the workers' series of the same names after their
    /// own), then the workers' other families, by name.
    fn render(&self, pools: &[&str]) -> Vec<u8> {
        let own = self.metrics.gather();
        let merged = self.merged.lock();
        let mut lines = merged.render(pools);
        let mut out = Vec::with_capacity(64 * 1024);
        for family in &own {
            Metrics::encode_family(family, &mut out);
            if let Some(extra) = merged
                .own_id(family.name())
                .and_then(|id| lines.remove(&id))
            {
                out.extend_from_slice(&extra);
            }
        }
        let mut rest: Vec<(&merge::FamilyMeta, Vec<u8>)> = lines
            .into_iter()
            .map(|(id, l)| (&merged.families[id as usize], l))
            .filter(|(f, _)| !f.own)
            .collect();
        rest.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        for (family, body) in rest {
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(family.name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(family.help.as_deref().unwrap_or("").as_bytes());
            out.extend_from_slice(b"\n# TYPE ");
            out.extend_from_slice(family.name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(family.kind.type_text().as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&body);
        }
        out
    }
}

impl Farewell for WorkerMetrics {
    /// Scrape a drained worker one last time (within the pool's timeout) and merge
    /// what it says, leaving the other workers as the last scrape saw them.
    fn last_call<'a>(
        &'a self,
        pool: &'a Pool,
        member: &'a Arc<Member>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Some(settings) = pool.settings().metrics.clone() else {
                return;
            };
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let scraped = scrape_one(member.clone(), &settings).await;
            let mut merged = self.merged.lock();
            self.take_in(&mut merged, pool, &settings, seq, vec![scraped], false);
        })
    }
}

/// Ask every ready worker of `pool` for its metrics, at once, each within the
/// pool's timeout.
async fn scrape(pool: &Pool, settings: &Settings) -> Vec<Scraped> {
    let members = pool.members();
    join_all(members.into_iter().map(|m| scrape_one(m, settings))).await
}

/// Ask one worker, within the pool's timeout.
async fn scrape_one(member: Arc<Member>, settings: &Settings) -> Scraped {
    let fetched = tokio::time::timeout(settings.timeout, fetch(&member, &settings.path)).await;
    let outcome = fetched.unwrap_or(Err(Reason::Timeout));
    Scraped { member, outcome }
}

/// One worker's metrics, parsed.
async fn fetch(member: &Member, path: &str) -> Result<Vec<exposition::Family>, Reason> {
    let target = match &member.endpoint {
        Endpoint::Tcp(addr) => Target::Tcp(*addr),
        Endpoint::Unix(socket) => Target::Unix(socket),
    };
    let answer = probe::fetch(target, path, ACCEPT, MAX_BODY)
        .await
        .map_err(|e| match e {
            ProbeError::Connect { .. } | ProbeError::Io { .. } => Reason::Connect,
            ProbeError::BadResponse { .. } => Reason::HttpStatus,
            ProbeError::TooLarge { .. } => Reason::TooLarge,
        })?;
    if answer.status != 200 {
        return Err(Reason::HttpStatus);
    }
    let text = std::str::from_utf8(&answer.body).map_err(|_| Reason::Parse)?;
    exposition::parse(text, &RESERVED_LABELS).map_err(|e| {
        tracing::debug!(worker = member.slot.index(), error = %e, "worker metrics: not Prometheus text");
        Reason::Parse
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_declared_in_the_metrics() {
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, crate::metrics::WORKER_METRICS_ERROR_REASONS);
    }

    #[test]
    fn forkyards_own_families_are_known_with_their_help() {
        let m = Metrics::new(&["web"], &[]);
        let own: Vec<_> = m.gather().iter().map(own_family).collect();
        let cpu = own
            .iter()
            .find(|(n, _, _)| n == "process_cpu_seconds_total")
            .expect("the process collector");
        assert_eq!(cpu.1, Kind::Counter);
        // What Python's prometheus_client writes for its own process collector.
        assert_eq!(
            cpu.2.as_deref(),
            Some("Total user and system CPU time spent in seconds.")
        );
    }
}
