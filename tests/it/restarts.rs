//! A worker that dies comes back on its slot, is counted, and the proxy keeps
//! answering while it is gone.

use std::collections::HashSet;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

fn pid_of_slot(fy: &Forkyard, slot: &str) -> i64 {
    wait_for_or_log(fy, SHORT, "an answer from the slot", || {
        let j = fy.get("/").ok()?.json();
        (j["slot"] == slot).then(|| j["pid"].as_i64().unwrap())
    })
}

#[test]
fn kill_9_restarts_the_slot_and_requests_keep_succeeding() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 3, "")], ""));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "3 ready workers", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#) == Some(3.0)).then_some(())
    });
    let before = fy
        .metric(r#"forkyard_worker_restarts_total{pool="web",reason="signal"}"#)
        .unwrap();
    assert_eq!(before, 0.0);
    let old_pid = pid_of_slot(&fy, "0");

    // A client keeps sending requests the whole time.
    let load = Load::to(fy.proxy).start();

    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).unwrap();
    let new_pid = wait_for_or_log(&fy, BOOT, "slot 0 to come back with a new pid", || {
        let j = fy.get("/").ok()?.json();
        (j["slot"] == "0" && j["pid"].as_i64() != Some(old_pid)).then(|| j["pid"].as_i64().unwrap())
    });
    // Keep the load on a little longer after the restart.
    load.wait_for_more(&fy, 50);
    load.finish().assert_no_failures();
    assert_ne!(new_pid, old_pid);
    let after = fy
        .metric(r#"forkyard_worker_restarts_total{pool="web",reason="signal"}"#)
        .unwrap();
    assert_eq!(after, 1.0, "one restart by signal");
    // Every slot kept its port.
    let ports: HashSet<_> = (0..30)
        .map(|_| fy.get("/").unwrap().json()["port"].clone())
        .collect();
    assert_eq!(ports.len(), 3, "{ports:?}");
}

#[test]
fn a_crashing_worker_is_restarted_with_reason_exit_code() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 2, "")], ""));
    fy.wait_ready();
    // Whichever worker gets /crash exits(3) without answering.
    let _ = fy.get("/crash");
    wait_for_or_log(&fy, BOOT, "a restart with reason exit_code", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="exit_code"}"#) >= Some(1.0))
            .then_some(())
    });
    wait_for_or_log(&fy, BOOT, "both workers ready again", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#) == Some(2.0)).then_some(())
    });
    assert!(fy.log().contains("exit code 3"), "{}", fy.log());
}

#[test]
fn a_worker_that_exits_at_start_backs_off_and_keeps_retrying() {
    let pool = fixture_pool("web", 1, "    env: { FIXTURE_EXIT_AT_START: \"7\" }\n");
    let fy = Forkyard::start(&config_with(&[pool], ""));
    wait_for_or_log(&fy, BOOT, "several restarts", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="exit_code"}"#) >= Some(3.0))
            .then_some(())
    });
    // forkyard itself stays up and answers.
    assert_eq!(fy.admin_get("/healthz").unwrap().status, 200);
    assert_eq!(fy.get("/").unwrap().status, 503);
}

#[test]
fn orphans_of_a_dead_worker_are_adopted_and_reaped() {
    // The worker forks a grandchild in its own session (so the group kill misses it)
    // that outlives the worker by a few seconds, then exits.
    let pool = fixture_pool("web", 1, "    env: { FIXTURE_ORPHAN: \"3\" }\n");
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let orphan: i32 = wait_for_or_log(&fy, SHORT, "the orphan's pid", || {
        let log = fy.log();
        let at = log.find("orphan pid=")?;
        log[at + 11..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    let worker = pid_of_slot(&fy, "0");
    kill(Pid::from_raw(worker as i32), Signal::SIGKILL).unwrap();
    // forkyard is a child subreaper, so the orphan becomes its child...
    wait_for_or_log(
        &fy,
        SHORT,
        "the orphan to be re-parented to forkyard",
        || (ppid(orphan) == Some(fy.pid())).then_some(()),
    );
    // ...and once it exits, forkyard reaps it: no zombie is left behind.
    wait_for_or_log(&fy, SHORT, "the orphan to be reaped", || {
        (!std::path::Path::new(&format!("/proc/{orphan}")).exists()).then_some(())
    });
}

/// The `delay_ms` of each "worker will restart" event of `pool`, in order.
fn restart_delays(log: &str, pool: &str) -> Vec<u64> {
    let tag = format!(" pool={pool} ");
    log.lines()
        .filter(|l| l.contains("worker will restart") && l.contains(&tag))
        .filter_map(|l| {
            let at = l.find("delay_ms=")? + "delay_ms=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_crash_loop_degrades_the_pool_backs_off_to_the_maximum_and_recovers() {
    let bad = fixture_pool(
        "bad",
        1,
        "    env: { FIXTURE_CRASH_TIMES: \"7\", FIXTURE_COUNT_FILE: \"{dir}/count\" }\n",
    )
    .replace(
        "restart: { backoff_min: \"50ms\", backoff_max: \"500ms\" }",
        "restart: { backoff_min: \"50ms\", backoff_max: \"1s\", crash_loop: { failures: 4, window: \"60s\" } }",
    );
    let good = fixture_pool("good", 1, "");
    let routes = "routes:\n  - { path_prefix: \"/bad\", pool: bad }\n  - { pool: good }\n";
    let fy = Forkyard::start(&config_with(&[bad, good], routes));
    wait_for_or_log(&fy, BOOT, "the bad pool to be degraded", || {
        (fy.metric(r#"forkyard_pool_degraded{pool="bad"}"#)? == 1.0).then_some(())
    });
    // forkyard keeps serving the other pool and says why it is not ready.
    assert_eq!(fy.get("/").unwrap().status, 200);
    let readyz = fy.admin_get("/readyz").unwrap();
    assert!(
        readyz.body.contains("degraded (crash loop): bad"),
        "{readyz:?}"
    );
    // After 7 crashes the command works: the pool recovers.
    wait_for_or_log(&fy, BOOT, "the bad pool to recover", || {
        (fy.metric(r#"forkyard_pool_degraded{pool="bad"}"#)? == 0.0
            && fy.get("/bad").ok()?.status == 200)
            .then_some(())
    });
    // Delays grow from backoff_min (50, then up to 100, then up to 200 ms) and, once
    // the 4th failure trips the breaker, stay at backoff_max.
    let delays = restart_delays(&fy.log(), "bad");
    assert_eq!(delays.len(), 7, "{delays:?}\n{}", fy.log());
    assert_eq!(delays[0], 50, "{delays:?}");
    assert!(
        (50..=100).contains(&delays[1]) && (100..=200).contains(&delays[2]),
        "{delays:?}"
    );
    assert!(delays[3..].iter().all(|d| *d == 1000), "{delays:?}");
    assert!(fy.log().contains("pool degraded"), "logged");
    assert_eq!(
        fy.metric(r#"forkyard_worker_restarts_total{pool="bad",reason="exit_code"}"#),
        Some(7.0)
    );
}
