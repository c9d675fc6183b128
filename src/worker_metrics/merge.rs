//! The merged state of the workers' metrics: for each pool, the last values each
//! worker process reported, and the "retired" part of every summed series: what
//! processes that are gone had reported, and what counters that were reset inside a
//! live process had reached.
//!
//! - **Summed series** (counters; histograms' `_bucket`, `_sum` and `_count`;
//!   summaries' `_sum` and `_count`) are, per label set, retired + the sum over the
//!   pool's processes of their last values. A process is known by its pool member
//!   (one per process, never reused) and is folded into the retired part only once
//!   nothing holds its member any more, so a worker that is out of the load
//!   balancer for a while (unhealthy, draining) is neither lost nor counted twice.
//!   A value below the process's last one is a reset inside the process: the last
//!   one is retired first. A series a live process stops reporting keeps its last
//!   value. So a merged counter never decreases; it misses what a process counted
//!   after its last scrape.
//! - **Per-worker series** (gauges, untyped, gauge histograms, summary quantiles)
//!   are the last values of each current member, labelled with its slot; when a
//!   slot briefly has two (a rolling replacement), the newer one.
//! - **Families** are known by name for the life of forkyard, with the type and
//!   help text they were first seen with (forkyard's own families first). A worker
//!   family with another type is dropped for that worker and counted as a
//!   `conflict`; one with another help text is counted too, and merged under the
//!   first help text. `forkyard_*` names are forkyard's own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};

use super::exposition::{Family, Kind};
use super::Reason;
use crate::pool::Member;
use crate::slot::SlotId;

/// A family's index in [`Merged::families`].
pub(crate) type FamilyId = u32;

/// One series of a pool: its family, sample name and labels (as in `Sample`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    family: FamilyId,
    name: Box<str>,
    labels: Box<str>,
}

#[derive(Debug)]
pub(crate) struct FamilyMeta {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    /// One of forkyard's own families: rendered by forkyard's encoder, with the
    /// workers' series after its own.
    pub own: bool,
}

/// One worker process as the merge knows it.
struct Process {
    member: Weak<Member>,
    slot: SlotId,
    /// The scrape its values come from (a slower, older scrape never overwrites a
    /// newer one).
    seq: u64,
    summed: HashMap<SeriesKey, f64>,
    per_worker: Vec<(SeriesKey, f64)>,
    /// The reason its last scrape failed, if it did (to log changes only).
    failing: Option<Reason>,
}

#[derive(Default)]
struct PoolState {
    /// Every summed series the pool ever had, with its retired part.
    retired: HashMap<SeriesKey, f64>,
    /// By member id.
    processes: HashMap<u64, Process>,
    /// The member ids of the last scrape: the processes whose gauges are shown.
    members: Vec<u64>,
    members_seq: u64,
}

impl PoolState {
    fn per_worker_series(&self, except: u64) -> usize {
        self.processes
            .iter()
            .filter(|(id, _)| **id != except)
            .map(|(_, p)| p.per_worker.len())
            .sum()
    }

    /// The series kept for this pool.
    fn series(&self) -> usize {
        self.retired.len() + self.per_worker_series(u64::MAX)
    }
}

/// What one worker's scrape brought.
pub(crate) struct Scraped {
    pub member: Arc<Member>,
    pub outcome: Result<Vec<Family>, Reason>,
}

/// Everything merged so far.
pub(crate) struct Merged {
    pub(crate) families: Vec<FamilyMeta>,
    by_name: HashMap<String, FamilyId>,
    pools: HashMap<String, PoolState>,
}

/// The labels forkyard adds; a worker's own labels of these names are renamed
/// `exported_<name>`.
pub(crate) const RESERVED_LABELS: [&str; 2] = ["pool", "worker"];

/// Whether a sample of a family of `kind` is summed across the pool's workers.
fn is_summed(kind: Kind, family: &str, sample: &str) -> bool {
    match kind {
        Kind::Counter | Kind::Histogram => true,
        Kind::Summary => sample != family,
        Kind::Gauge | Kind::Untyped | Kind::GaugeHistogram => false,
    }
}

impl Merged {
    /// `own`: forkyard's own families (name, kind, help).
    pub(crate) fn new(own: impl IntoIterator<Item = (String, Kind, Option<String>)>) -> Merged {
        let mut m = Merged {
            families: Vec::new(),
            by_name: HashMap::new(),
            pools: HashMap::new(),
        };
        for (name, kind, help) in own {
            m.by_name.insert(name.clone(), m.families.len() as FamilyId);
            m.families.push(FamilyMeta {
                name,
                kind,
                help,
                own: true,
            });
        }
        m
    }

    /// The id of forkyard's own family `name`.
    pub(crate) fn own_id(&self, name: &str) -> Option<FamilyId> {
        self.by_name
            .get(name)
            .copied()
            .filter(|id| self.families[*id as usize].own)
    }

    /// Forget the pools not in `keep` (their `metrics:` was turned off); returns
    /// their names.
    pub(crate) fn retain_pools(&mut self, keep: &[&str]) -> Vec<String> {
        let gone: Vec<String> = self
            .pools
            .keys()
            .filter(|name| !keep.contains(&name.as_str()))
            .cloned()
            .collect();
        for name in &gone {
            self.pools.remove(name);
        }
        gone
    }

    /// The series kept for `pool`.
    pub(crate) fn series(&self, pool: &str) -> usize {
        self.pools.get(pool).map_or(0, PoolState::series)
    }

    /// The family of `family`'s name, registered if new; `Err` on a conflict
    /// (`Ok(id, true)` when only the help text differs).
    fn family(&mut self, family: &Family) -> Result<(FamilyId, bool), ()> {
        if family.name.starts_with("forkyard_") {
            return Err(());
        }
        let Some(&id) = self.by_name.get(&family.name) else {
            let id = self.families.len() as FamilyId;
            self.by_name.insert(family.name.clone(), id);
            self.families.push(FamilyMeta {
                name: family.name.clone(),
                kind: family.kind,
                help: family.help.clone(),
                own: false,
            });
            return Ok((id, false));
        };
        let meta = &mut self.families[id as usize];
        if meta.kind != family.kind {
            return Err(());
        }
        let help_differs = match (&meta.help, &family.help) {
            (Some(a), Some(b)) => a != b,
            (None, Some(b)) => {
                meta.help = Some(b.clone());
                false
            }
            _ => false,
        };
        Ok((id, help_differs))
    }

    /// Take in one scrape (number `seq`) of `pool`'s members (all of them when
    /// `whole`: they are the ones whose gauges are shown from now on). Every problem
    /// is reported to `error(member id, slot, reason, detail)`.
    pub(crate) fn update(
        &mut self,
        pool: &str,
        max_series: usize,
        seq: u64,
        scraped: Vec<Scraped>,
        whole: bool,
        error: &mut dyn FnMut(u64, SlotId, Reason, &str),
    ) {
        let state = self.pools.entry(pool.to_owned()).or_default();
        // The member list of an older scrape never replaces a newer one's.
        if whole && seq > state.members_seq {
            state.members_seq = seq;
            state.members = scraped.iter().map(|s| s.member.id).collect();
        }
        for s in &scraped {
            state
                .processes
                .entry(s.member.id)
                .or_insert_with(|| Process {
                    member: Arc::downgrade(&s.member),
                    slot: s.member.slot,
                    seq: 0,
                    summed: HashMap::new(),
                    per_worker: Vec::new(),
                    failing: None,
                });
        }
        for s in scraped {
            let slot = s.member.slot;
            let id = s.member.id;
            let families = match s.outcome {
                Ok(f) => f,
                Err(reason) => {
                    error(id, slot, reason, "");
                    continue;
                }
            };
            let mut summed = HashMap::new();
            let mut per_worker = Vec::new();
            for family in &families {
                let (family_id, help_differs) = match self.family(family) {
                    Ok(f) => f,
                    Err(()) => {
                        error(id, slot, Reason::Conflict, &family.name);
                        continue;
                    }
                };
                if help_differs {
                    error(id, slot, Reason::Conflict, &family.name);
                }
                for sample in &family.samples {
                    let key = SeriesKey {
                        family: family_id,
                        name: sample.name.as_str().into(),
                        labels: sample.labels.as_str().into(),
                    };
                    if is_summed(family.kind, &family.name, &sample.name) {
                        summed.insert(key, sample.value);
                    } else {
                        per_worker.push((key, sample.value));
                    }
                }
            }
            let Some(state) = self.pools.get_mut(pool) else {
                continue;
            };
            // The pool's bound: series it keeps already stay; new summed series
            // fit only in the room left by everything kept now (this worker's
            // gauges included), its gauges in what is left after that.
            let mut room = max_series.saturating_sub(state.series());
            let mut over = false;
            let mut added = 0;
            summed.retain(|k, _| {
                if state.retired.contains_key(k) {
                    return true;
                }
                if room == 0 {
                    over = true;
                    return false;
                }
                room -= 1;
                added += 1;
                true
            });
            let room = max_series
                .saturating_sub(state.retired.len() + added + state.per_worker_series(id));
            if per_worker.len() > room {
                per_worker.truncate(room);
                over = true;
            }
            if over {
                error(id, slot, Reason::TooManySeries, "");
            }
            let Some(process) = state.processes.get_mut(&s.member.id) else {
                continue;
            };
            if process.seq >= seq {
                continue;
            }
            process.seq = seq;
            for (key, value) in summed {
                match process.summed.get_mut(&key) {
                    Some(last) => {
                        if value < *last {
                            // A reset inside the process: what it had is retired.
                            *state.retired.entry(key).or_insert(0.0) += *last;
                        }
                        *last = value;
                    }
                    None => {
                        if !state.retired.contains_key(&key) {
                            state.retired.insert(key.clone(), 0.0);
                        }
                        process.summed.insert(key, value);
                    }
                }
            }
            process.per_worker = per_worker;
        }
        self.retire_dead(pool);
    }

    /// Fold the processes whose member is gone into the retired part.
    fn retire_dead(&mut self, pool: &str) {
        let Some(state) = self.pools.get_mut(pool) else {
            return;
        };
        let dead: Vec<u64> = state
            .processes
            .iter()
            .filter(|(_, p)| p.member.strong_count() == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(p) = state.processes.remove(&id) {
                for (key, value) in p.summed {
                    *state.retired.entry(key).or_insert(0.0) += value;
                }
            }
        }
    }

    /// Whether the last scrape of `member` failed for `reason`; records it. `true`
    /// when that is a change (worth a log line).
    pub(crate) fn note_outcome(&mut self, pool: &str, member: u64, reason: Option<Reason>) -> bool {
        let Some(p) = self
            .pools
            .get_mut(pool)
            .and_then(|s| s.processes.get_mut(&member))
        else {
            return reason.is_some();
        };
        let changed = p.failing != reason;
        p.failing = reason;
        changed
    }

    /// The merged sample lines of every family, by family id, for `pools` in this
    /// order.
    pub(crate) fn render(&self, pools: &[&str]) -> BTreeMap<FamilyId, Vec<u8>> {
        let mut out: BTreeMap<FamilyId, Vec<u8>> = BTreeMap::new();
        for pool in pools {
            let Some(state) = self.pools.get(*pool) else {
                continue;
            };
            let mut totals: BTreeMap<&SeriesKey, f64> =
                state.retired.iter().map(|(k, v)| (k, *v)).collect();
            for p in state.processes.values() {
                for (key, value) in &p.summed {
                    if let Some(total) = totals.get_mut(key) {
                        *total += value;
                    }
                }
            }
            for (key, value) in totals {
                let lines = out.entry(key.family).or_default();
                line(lines, &key.name, pool, None, &key.labels, value);
            }
            // The newest current member of each slot.
            let mut shown: BTreeMap<SlotId, (u64, &Process)> = BTreeMap::new();
            for id in &state.members {
                if let Some(p) = state.processes.get(id) {
                    let newer = shown.get(&p.slot).is_none_or(|(other, _)| other < id);
                    if newer {
                        shown.insert(p.slot, (*id, p));
                    }
                }
            }
            let mut gauges: Vec<(&SeriesKey, SlotId, f64)> = shown
                .values()
                .flat_map(|(_, p)| p.per_worker.iter().map(|(k, v)| (k, p.slot, *v)))
                .collect();
            gauges.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
            let mut seen = HashSet::new();
            for (key, slot, value) in gauges {
                if seen.insert((key, slot)) {
                    let lines = out.entry(key.family).or_default();
                    line(lines, &key.name, pool, Some(slot), &key.labels, value);
                }
            }
        }
        out
    }
}

/// `name{pool="p"[,worker="n"][,labels]} value`
fn line(out: &mut Vec<u8>, name: &str, pool: &str, slot: Option<SlotId>, labels: &str, v: f64) {
    use std::io::Write;
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"{pool=\"");
    out.extend_from_slice(pool.as_bytes());
    out.push(b'"');
    if let Some(slot) = slot {
        let _ = write!(out, ",worker=\"{slot}\"");
    }
    if !labels.is_empty() {
        out.push(b',');
        out.extend_from_slice(labels.as_bytes());
    }
    out.extend_from_slice(b"} ");
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker_metrics::exposition::parse;

    fn member(slot: usize) -> Arc<Member> {
        Arc::new(Member::new(
            SlotId(slot),
            "127.0.0.1:1".parse().unwrap(),
            Default::default(),
        ))
    }

    fn ok(m: &Arc<Member>, text: &str) -> Scraped {
        Scraped {
            member: m.clone(),
            outcome: Ok(parse(text, &RESERVED_LABELS).unwrap()),
        }
    }

    struct Run {
        merged: Merged,
        seq: u64,
        errors: Vec<(usize, Reason, String)>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                merged: Merged::new([(
                    "process_cpu_seconds_total".to_owned(),
                    Kind::Counter,
                    Some("Total user and system CPU time spent in seconds.".to_owned()),
                )]),
                seq: 0,
                errors: Vec::new(),
            }
        }

        fn scrape(&mut self, max: usize, scraped: Vec<Scraped>) -> String {
            self.seq += 1;
            let errors = &mut self.errors;
            self.merged
                .update("web", max, self.seq, scraped, true, &mut |_, slot, r, d| {
                    errors.push((slot.index(), r, d.to_owned()))
                });
            self.text()
        }

        fn text(&self) -> String {
            let mut s = String::new();
            for (id, lines) in self.merged.render(&["web"]) {
                s.push_str(&format!("# {}\n", self.merged.families[id as usize].name));
                s.push_str(std::str::from_utf8(&lines).unwrap());
            }
            s
        }
    }

    const C: &str = "# TYPE req_total counter\n";

    #[test]
    fn counters_are_summed_and_never_decrease_across_restarts() {
        let mut r = Run::new();
        let (a, b) = (member(0), member(1));
        let t = r.scrape(
            100,
            vec![
                ok(&a, &format!("{C}req_total{{c=\"1\"}} 5\n")),
                ok(&b, &format!("{C}req_total{{c=\"1\"}} 2\n")),
            ],
        );
        assert!(t.contains("req_total{pool=\"web\",c=\"1\"} 7\n"), "{t}");
        // b is killed: its member dropped; a new process in slot 1 starts from 0.
        drop(b);
        let b2 = member(1);
        let t = r.scrape(
            100,
            vec![
                ok(&a, &format!("{C}req_total{{c=\"1\"}} 6\n")),
                ok(&b2, &format!("{C}req_total{{c=\"1\"}} 1\n")),
            ],
        );
        assert!(t.contains("req_total{pool=\"web\",c=\"1\"} 9\n"), "{t}");
        // A timed-out worker keeps its last values; a reset inside a live process
        // retires what it had.
        let t = r.scrape(
            100,
            vec![
                Scraped {
                    member: a.clone(),
                    outcome: Err(Reason::Timeout),
                },
                ok(&b2, &format!("{C}req_total{{c=\"1\"}} 0\n")),
            ],
        );
        assert!(t.contains("req_total{pool=\"web\",c=\"1\"} 9\n"), "{t}");
        // A series a live worker stops reporting keeps its value; a new label set
        // appears.
        let t = r.scrape(100, vec![ok(&a, &format!("{C}req_total{{c=\"2\"}} 1\n"))]);
        assert!(t.contains("req_total{pool=\"web\",c=\"1\"} 9\n"), "{t}");
        assert!(t.contains("req_total{pool=\"web\",c=\"2\"} 1\n"), "{t}");
        assert_eq!(r.errors, [(0, Reason::Timeout, String::new())]);
    }

    #[test]
    fn an_out_of_balance_worker_is_neither_lost_nor_counted_twice() {
        let mut r = Run::new();
        let a = member(0);
        r.scrape(100, vec![ok(&a, &format!("{C}req_total 4\n"))]);
        // Unhealthy: not scraped, but alive.
        let t = r.scrape(100, vec![]);
        assert!(t.contains("req_total{pool=\"web\"} 4\n"), "{t}");
        let t = r.scrape(100, vec![ok(&a, &format!("{C}req_total 5\n"))]);
        assert!(t.contains("req_total{pool=\"web\"} 5\n"), "{t}");
    }

    #[test]
    fn an_older_scrape_never_overwrites_a_newer_one() {
        let mut r = Run::new();
        let a = member(0);
        r.merged.update(
            "web",
            100,
            2,
            vec![ok(&a, &format!("{C}req_total 8\n"))],
            true,
            &mut |_, _, _, _| {},
        );
        r.merged.update(
            "web",
            100,
            1,
            vec![ok(&a, &format!("{C}req_total 6\n"))],
            true,
            &mut |_, _, _, _| {},
        );
        assert!(
            r.text().contains("req_total{pool=\"web\"} 8\n"),
            "{}",
            r.text()
        );
    }

    #[test]
    fn gauges_are_per_worker_and_histograms_summed() {
        let mut r = Run::new();
        let (a, b) = (member(0), member(1));
        let h = "# TYPE pid gauge\npid 10\n# TYPE lat histogram\nlat_bucket{le=\"0.1\"} 1\nlat_bucket{le=\"+Inf\"} 2\nlat_count 2\nlat_sum 0.5\n# TYPE s summary\ns{quantile=\"0.5\"} 0.2\ns_count 1\ns_sum 0.2\n";
        let t = r.scrape(100, vec![ok(&a, h), ok(&b, &h.replace("pid 10", "pid 11"))]);
        for want in [
            "pid{pool=\"web\",worker=\"0\"} 10\n",
            "pid{pool=\"web\",worker=\"1\"} 11\n",
            "lat_bucket{pool=\"web\",le=\"+Inf\"} 4\n",
            "lat_sum{pool=\"web\"} 1\n",
            "s{pool=\"web\",worker=\"1\",quantile=\"0.5\"} 0.2\n",
            "s_count{pool=\"web\"} 2\n",
        ] {
            assert!(t.contains(want), "{want} in\n{t}");
        }
        // A replacement in slot 1 during a rolling restart: one gauge, the newer.
        let b2 = member(1);
        let t = r.scrape(
            100,
            vec![
                ok(&a, h),
                ok(&b, h),
                ok(&b2, &h.replace("pid 10", "pid 12")),
            ],
        );
        assert!(t.contains("pid{pool=\"web\",worker=\"1\"} 12\n"), "{t}");
        let slot1 = t
            .lines()
            .filter(|l| l.starts_with("pid{pool=\"web\",worker=\"1\"}"));
        assert_eq!(slot1.count(), 1, "{t}");
        // Gone from the members: its gauges go.
        drop(b);
        drop(b2);
        let t = r.scrape(100, vec![ok(&a, h)]);
        assert!(!t.contains("worker=\"1\""), "{t}");
    }

    #[test]
    fn a_farewell_scrape_of_one_worker_keeps_the_others_gauges() {
        let mut r = Run::new();
        let (a, b) = (member(0), member(1));
        let g = |v: u32| format!("# TYPE g gauge\ng {v}\n{C}req_total {v}\n");
        r.scrape(100, vec![ok(&a, &g(1)), ok(&b, &g(2))]);
        r.seq += 1;
        r.merged.update(
            "web",
            100,
            r.seq,
            vec![ok(&b, &g(5))],
            false,
            &mut |_, _, _, _| {},
        );
        let t = r.text();
        assert!(t.contains("g{pool=\"web\",worker=\"0\"} 1\n"), "{t}");
        assert!(t.contains("g{pool=\"web\",worker=\"1\"} 5\n"), "{t}");
        assert!(t.contains("req_total{pool=\"web\"} 6\n"), "{t}");
    }

    #[test]
    fn conflicts_and_forkyards_names_are_refused_and_counted() {
        let mut r = Run::new();
        let (a, b) = (member(0), member(1));
        let t = r.scrape(100, vec![
            ok(&a, "# HELP x An x.\n# TYPE x counter\nx 1\n# TYPE forkyard_workers gauge\nforkyard_workers 3\n# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2\n"),
            ok(&b, "# HELP x Another x.\n# TYPE x counter\nx 1\n# TYPE y gauge\ny 1\n"),
        ]);
        r.scrape(100, vec![ok(&a, "# TYPE y counter\ny 5\n")]);
        assert!(
            t.contains("x{pool=\"web\"} 2\n"),
            "help differs: merged anyway\n{t}"
        );
        assert!(
            t.contains("process_cpu_seconds_total{pool=\"web\"} 2\n"),
            "{t}"
        );
        assert!(!t.contains("forkyard_workers"), "{t}");
        let conflicts: Vec<(usize, &str)> =
            r.errors.iter().map(|(s, _, d)| (*s, d.as_str())).collect();
        assert_eq!(conflicts, [(0, "forkyard_workers"), (1, "x"), (0, "y")]);
        assert!(r.errors.iter().all(|e| e.1 == Reason::Conflict));
        let t = r.text();
        assert!(!t.contains("y{pool=\"web\"}"), "{t}");
    }

    #[test]
    fn the_series_bound_keeps_old_series_and_refuses_new_ones() {
        let mut r = Run::new();
        let a = member(0);
        let t = r.scrape(3, vec![ok(&a, &format!("{C}req_total{{c=\"1\"}} 1\nreq_total{{c=\"2\"}} 1\n# TYPE g gauge\ng{{x=\"1\"}} 1\ng{{x=\"2\"}} 1\n"))]);
        assert_eq!(r.merged.series("web"), 3, "{t}");
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].1, Reason::TooManySeries);
        // The next scrape: the same series fit again, nothing new does.
        let t = r.scrape(3, vec![ok(&a, &format!("{C}req_total{{c=\"1\"}} 2\nreq_total{{c=\"3\"}} 1\n# TYPE g gauge\ng{{x=\"1\"}} 1\n"))]);
        assert!(t.contains("c=\"1\"} 2\n") && !t.contains("c=\"3\""), "{t}");
        assert_eq!(r.merged.series("web"), 3, "{t}");
    }
}
