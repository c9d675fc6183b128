//! `forkyard_worker_resident_memory_bytes{pool,worker}` and
//! `forkyard_worker_cpu_seconds_total{pool,worker}`: read from `/proc` at scrape
//! time for every live worker on the status board.
//!
//! Nothing is stored between scrapes, so a slot with no process (backoff, stopped,
//! removed) simply has no series: removed workers leave no stale values behind. The
//! CPU counter restarts from 0 with each new process of a slot, which Prometheus'
//! `rate()` treats as a counter reset.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, GaugeVec, Opts};

use crate::process::usage;
use crate::status::StatusBoard;

pub(crate) struct WorkerResources {
    board: Arc<StatusBoard>,
    descs: Vec<Desc>,
    /// Refilled from scratch at each scrape, one scrape at a time.
    families: Mutex<(GaugeVec, CounterVec)>,
}

impl WorkerResources {
    /// The metrics this collector reports.
    pub(crate) const NAMES: [&'static str; 2] = [
        "forkyard_worker_resident_memory_bytes",
        "forkyard_worker_cpu_seconds_total",
    ];
}

// The `expect`s below are infallible in practice: constant names and labels,
// built once at start-up and exercised by the unit tests (see `Metrics::new`).
fn rss_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            WorkerResources::NAMES[0],
            "Resident memory of each live worker process, from /proc.",
        ),
        &["pool", "worker"],
    )
    .expect("static metric definition")
}

fn cpu_vec() -> CounterVec {
    CounterVec::new(
        Opts::new(
            WorkerResources::NAMES[1],
            "User and system CPU time of each live worker process, from /proc.",
        ),
        &["pool", "worker"],
    )
    .expect("static metric definition")
}

impl WorkerResources {
    pub(crate) fn new(board: Arc<StatusBoard>) -> WorkerResources {
        let (rss, cpu) = (rss_vec(), cpu_vec());
        let descs = rss.desc().into_iter().chain(cpu.desc()).cloned().collect();
        WorkerResources {
            board,
            descs,
            families: Mutex::new((rss, cpu)),
        }
    }
}

impl Collector for WorkerResources {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let families = self.families.lock();
        let (rss, cpu) = &*families;
        rss.reset();
        cpu.reset();
        for pool in self.board.pools() {
            for slot in pool.slots() {
                let Some(u) = slot.pid().and_then(usage::read) else {
                    continue;
                };
                let worker = slot.slot.to_string();
                let labels = [&*pool.name, worker.as_str()];
                rss.with_label_values(&labels).set(u.rss_bytes as f64);
                cpu.with_label_values(&labels).inc_by(u.cpu_seconds);
            }
        }
        let mut out = rss.collect();
        out.extend(cpu.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn only_live_workers_have_series() {
        let board = StatusBoard::new(["web"]);
        let m = Metrics::new(&["web"], &[]);
        m.register(Box::new(WorkerResources::new(board.clone())))
            .unwrap();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            !text.contains("forkyard_worker_resident_memory_bytes{"),
            "{text}"
        );

        let web = board.pool("web").unwrap();
        web.attach(0, 9001);
        let slot = web.attach(1, 9002);
        slot.spawned(std::process::id() as i32);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            text.contains(r#"forkyard_worker_resident_memory_bytes{pool="web",worker="1"} "#),
            "{text}"
        );
        assert!(text.contains("# TYPE forkyard_worker_cpu_seconds_total counter"));
        assert!(!text.contains(r#"worker="0""#));

        slot.exited("signal", "signal SIGKILL".into());
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            !text.contains("forkyard_worker_cpu_seconds_total{"),
            "{text}"
        );
    }
}
