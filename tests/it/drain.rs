//! Replacing or removing workers under load fails no request and never leaves the
//! pool short: a rolling reload, recycling after `max_requests`, and a scale-down,
//! each under keep-alive GETs, POSTs with a body and slow POSTs, with `retries: 0`,
//! so that no retry can hide a request sent to a worker on its way out.
//!
//! Before each change, one request is parked on every worker (`POST
//! /sleep?until=<gate>`). A worker that goes away must first leave the load
//! balancer, then wait for its parked request (`stop.drain`, logged as
//! `drain_start`) while still running; only then does the gate open, and every
//! parked request must be answered 200. Meanwhile:
//! - no request sent after a worker was reported `stopping` reaches it;
//! - in a rolling replacement (reload, recycle) the count of ready workers never
//!   drops below the pool's size: each new worker is ready before the one it
//!   replaces leaves;
//! - the load runs until the last old worker has exited.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::harness::*;

const WORKERS: u16 = 3;

/// Pool `web`: no retries, a drain longer than the test, and room in the port
/// range for every old worker to drain while replacements run.
fn config(port: u16, gen: &str, extra: &str) -> String {
    config_with(
        &[format!(
            "  web:\n    command: [\"python3\", \"{}\"]\n    workers: {WORKERS}\n    ports: \"{port}-{}\"\n    env: {{ GEN: \"{gen}\" }}\n    retries: 0\n    restart: {{ backoff_min: \"50ms\", backoff_max: \"500ms\" }}\n    stop: {{ grace: \"5s\", drain: \"60s\" }}\n{extra}",
            fixture_worker().display(),
            port + 4 * WORKERS + 1,
        )],
        "",
    )
}

/// What happens to the pool while the load runs.
#[derive(Clone, Copy, PartialEq)]
enum Change {
    /// `POST /reload` with a changed `env`: every worker is replaced, slot by slot.
    Reload,
    /// `recycle: { max_requests }`: the load wears every worker out.
    Recycle,
    /// `POST /pools/web/scale?workers=1`: slots 1 and 2 go.
    ScaleDown,
}

/// Requests parked on the workers until a gate file exists.
struct Parked {
    gate: PathBuf,
    requests: Vec<JoinHandle<std::io::Result<Response>>>,
}

impl Parked {
    /// One `POST /sleep?until=<gate>` on every worker of pool `web`, sent one at a
    /// time (before any other traffic) until each slot has one in flight.
    fn on_every_worker(fy: &Forkyard) -> Parked {
        let gate = fy.dir().join("gate");
        let path = format!("/sleep?until={}", gate.display());
        let in_flight = |slot: u16| {
            fy.metric(&format!(
                r#"forkyard_worker_in_flight_requests{{pool="web",worker="{slot}"}}"#
            ))
            .unwrap_or(0.0)
        };
        let mut requests = Vec::new();
        while (0..WORKERS).any(|s| in_flight(s) < 1.0) {
            assert!(
                requests.len() < 3 * usize::from(WORKERS),
                "{} requests parked and a slot still has none",
                requests.len()
            );
            let (proxy, path) = (fy.proxy, path.clone());
            requests.push(std::thread::spawn(move || {
                let mut c = Conn::open(proxy)?;
                c.set_read_timeout(BOOT)?;
                c.request("POST", &path, &[], b"parked")
            }));
            let n = requests.len() as f64;
            wait_for_or_log(fy, SHORT, "the parked request to reach a worker", || {
                ((0..WORKERS).map(in_flight).sum::<f64>() >= n).then_some(())
            });
        }
        Parked { gate, requests }
    }

    /// Open the gate: every parked request must be answered 200. Returns the pids
    /// that answered.
    fn release(self) -> HashSet<i64> {
        std::fs::write(&self.gate, "").unwrap();
        self.requests
            .into_iter()
            .map(|t| {
                let r = t
                    .join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("a parked request got no answer: {e}"));
                assert_eq!(r.status, 200, "a parked request: {r:?}");
                r.json()["pid"].as_i64().unwrap()
            })
            .collect()
    }
}

/// (pid, state) of every worker process in `/status`.
fn states(admin: SocketAddr) -> Option<Vec<(i64, String)>> {
    let status = http_get(admin, "/status", &[]).ok()?.json();
    Some(
        status["pools"][0]["workers"]
            .as_array()?
            .iter()
            .filter_map(|w| Some((w["pid"].as_i64()?, w["state"].as_str()?.to_string())))
            .collect(),
    )
}

/// Whether forkyard logged that `pid` left the balancer and waits for requests.
fn draining(log: &str, pid: i64) -> bool {
    let pid = format!("pid={pid}");
    log.lines()
        .any(|l| l.contains(r#"event="drain_start""#) && l.split_whitespace().any(|w| w == pid))
}

fn no_request_fails_while(change: Change) {
    let port = free_ports(4 * WORKERS + 2);
    let recycle = match change {
        Change::Recycle => "    recycle: { max_requests: 150 }\n",
        _ => "",
    };
    let mut fy = Forkyard::start(&config(port, "1", recycle));
    fy.wait_workers_ready("web", WORKERS.into());
    let old: BTreeMap<u64, i64> = fy.slot_pids(0).into_iter().collect();
    assert_eq!(old.len(), usize::from(WORKERS), "{old:?}");
    let parked = Parked::on_every_worker(&fy);

    let admin = fy.admin;
    let seen = Sampler::start(move || states(admin));
    let ready = fy.sample_ready("web");
    let gets = Load::to(fy.proxy).clients(2).keep_alive().answers().start();
    let posts = Load::to(fy.proxy)
        .post("/upload", &[b'p'; 4096])
        .header("Content-Type", "application/octet-stream")
        .answers()
        .start();
    let slow = Load::to(fy.proxy)
        .clients(2)
        .post("/sleep?s=0.5", b"slow")
        .latencies()
        .answers()
        .start();
    gets.wait_for_more(&fy, 50);
    slow.wait_for_more(&fy, 2);

    let (going, reason): (Vec<i64>, &str) = match change {
        Change::Reload => {
            let text = config(port, "2", "")
                .replace("{proxy}", &fy.proxy.to_string())
                .replace("{admin}", &fy.admin.to_string());
            std::fs::write(fy.dir().join("config.yaml"), text).unwrap();
            let r = http_post(fy.admin, "/reload").unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            (old.values().copied().collect(), "reload")
        }
        Change::Recycle => (old.values().copied().collect(), "recycle_requests"),
        Change::ScaleDown => {
            let r = http_post(fy.admin, "/pools/web/scale?workers=1").unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            (vec![old[&1], old[&2]], "scale_down")
        }
    };
    // Each worker that goes leaves the balancer, then waits for its parked request,
    // still running (or, without a drain, is stopped at once).
    wait_for_or_log(&fy, BOOT, "every old worker to drain or exit", || {
        let log = fy.log();
        going
            .iter()
            .all(|pid| draining(&log, *pid) || process_gone(*pid as i32))
            .then_some(())
    });
    for pid in &going {
        assert!(
            !process_gone(*pid as i32),
            "worker {pid} was stopped with a request in flight"
        );
    }
    let answered = parked.release();
    assert_eq!(
        answered,
        old.values().copied().collect::<HashSet<_>>(),
        "each parked request was answered by the worker it was parked on"
    );
    // The load goes on until the last old worker has exited, and a little after.
    let exits = format!(r#"forkyard_worker_exits_total{{pool="web",reason="{reason}"}}"#);
    wait_for_or_log(&fy, BOOT, "the old workers to exit", || {
        (going.iter().all(|pid| process_gone(*pid as i32))
            && fy.metric(&exits)? >= going.len() as f64)
            .then_some(())
    });
    gets.wait_for_more(&fy, 50);
    let loads = [gets.finish(), posts.finish(), slow.finish()];
    let seen = seen.finish();
    let ready = ready.finish();

    for report in &loads {
        report.assert_no_failures();
    }
    // No request asked after a worker was reported stopping reached it: it left the
    // load balancer first.
    for pid in &going {
        let stopping: Instant = seen
            .iter()
            .find(|(_, ws)| ws.iter().any(|(p, s)| p == pid && s == "stopping"))
            .map(|(at, _)| *at)
            .unwrap_or_else(|| panic!("worker {pid} was never seen stopping"));
        let late = loads
            .iter()
            .flat_map(|r| &r.answers)
            .filter(|a| a.sent > stopping && a.response.json()["pid"].as_i64() == Some(*pid))
            .count();
        assert_eq!(late, 0, "worker {pid} got requests after it began to stop");
    }
    let floor = ready.iter().map(|(_, n)| *n).fold(f64::MAX, f64::min);
    if change != Change::ScaleDown {
        assert!(ready.len() >= 10, "{} samples", ready.len());
        assert!(
            floor >= f64::from(WORKERS),
            "ready workers dropped to {floor} during the rolling replacement"
        );
    }
    let slow_ms: Vec<u128> = {
        let mut l: Vec<u128> = loads[2].latencies.iter().map(|d| d.as_millis()).collect();
        l.sort_unstable();
        l
    };
    announce(&format!(
        "drain ({reason}): {} GETs, {} POSTs, {} slow POSTs (median {} ms) in {:.1} s, 0 failed; \
         {} old workers drained a parked request; ready workers never below {floor}",
        loads[0].ok,
        loads[1].ok,
        loads[2].ok,
        slow_ms.get(slow_ms.len() / 2).copied().unwrap_or(0),
        loads[0].elapsed.as_secs_f64(),
        going.len(),
    ));
    assert_eq!(
        fy.signal_and_wait(nix::sys::signal::Signal::SIGTERM, SHORT)
            .code(),
        Some(0)
    );
}

#[test]
fn a_rolling_reload_fails_no_request_and_keeps_every_slot_ready() {
    no_request_fails_while(Change::Reload);
}

#[test]
fn recycling_fails_no_request_and_keeps_every_slot_ready() {
    no_request_fails_while(Change::Recycle);
}

#[test]
fn scaling_down_fails_no_request_and_drains_the_removed_workers() {
    no_request_fails_while(Change::ScaleDown);
}
