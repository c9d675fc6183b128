//! `forkyard_worker_resident_memory_bytes{pool,worker}`,
//! `forkyard_worker_pss_bytes{pool,worker}`, `forkyard_worker_uss_bytes{pool,worker}`
//! and `forkyard_worker_cpu_seconds_total{pool,worker}`, and
//! `forkyard_preloader_pss_bytes{pool}`: read from `/proc` at scrape time for every
//! live worker (and preloader) on the status board. RSS counts every shared page in
//! every worker; PSS divides each shared page among the processes that share it,
//! so the PSS of a preload pool's workers and preloader adds up to what it costs.
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
    families: Mutex<Families>,
}

struct Families {
    rss: GaugeVec,
    cpu: CounterVec,
    pss: GaugeVec,
    uss: GaugeVec,
    preloader_pss: GaugeVec,
}

impl WorkerResources {
    /// The metrics this collector reports.
    pub(crate) const NAMES: [&'static str; 5] = [
        "forkyard_worker_resident_memory_bytes",
        "forkyard_worker_cpu_seconds_total",
        "forkyard_worker_pss_bytes",
        "forkyard_worker_uss_bytes",
        "forkyard_preloader_pss_bytes",
    ];
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
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
        let f = Families {
            rss: rss_vec(),
            cpu: cpu_vec(),
            pss: gauge(
                Self::NAMES[2],
                "Proportional set size of each live worker process (shared pages divided among their sharers), from /proc/<pid>/smaps_rollup.",
                &["pool", "worker"],
            ),
            uss: gauge(
                Self::NAMES[3],
                "Unique set size of each live worker process (its private pages), from /proc/<pid>/smaps_rollup.",
                &["pool", "worker"],
            ),
            preloader_pss: gauge(
                Self::NAMES[4],
                "Proportional set size of a preload pool's preloader processes, from /proc/<pid>/smaps_rollup.",
                &["pool"],
            ),
        };
        let descs = [
            &f.rss.desc(),
            &f.cpu.desc(),
            &f.pss.desc(),
            &f.uss.desc(),
            &f.preloader_pss.desc(),
        ]
        .into_iter()
        .flatten()
        .map(|d| (*d).clone())
        .collect();
        WorkerResources {
            board,
            descs,
            families: Mutex::new(f),
        }
    }
}

impl Collector for WorkerResources {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = self.families.lock();
        f.rss.reset();
        f.cpu.reset();
        f.pss.reset();
        f.uss.reset();
        f.preloader_pss.reset();
        for pool in self.board.pools() {
            for slot in pool.slots() {
                let Some(pid) = slot.pid() else { continue };
                let Some(u) = usage::read(pid) else { continue };
                let worker = slot.slot.to_string();
                let labels = [&*pool.name, worker.as_str()];
                f.rss.with_label_values(&labels).set(u.rss_bytes as f64);
                f.cpu.with_label_values(&labels).inc_by(u.cpu_seconds);
                if let Some(m) = usage::memory(pid) {
                    f.pss.with_label_values(&labels).set(m.pss_bytes as f64);
                    f.uss.with_label_values(&labels).set(m.uss_bytes as f64);
                }
            }
            let preloaders = pool.preloaders();
            let pss: Vec<u64> = preloaders
                .iter()
                .filter_map(|p| p.pid().and_then(usage::memory))
                .map(|m| m.pss_bytes)
                .collect();
            if !pss.is_empty() {
                f.preloader_pss
                    .with_label_values(&[&*pool.name])
                    .set(pss.iter().sum::<u64>() as f64);
            }
        }
        let mut out = f.rss.collect();
        out.extend(f.cpu.collect());
        out.extend(f.pss.collect());
        out.extend(f.uss.collect());
        out.extend(f.preloader_pss.collect());
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
