//! SIGTERM: forkyard drains, stops every worker (SIGKILL after grace for those that
//! ignore SIGTERM) and exits 0 with no worker left.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

fn worker_pids(fy: &Forkyard, n: usize) -> HashSet<i32> {
    let mut pids = HashSet::new();
    wait_for_or_log(fy, SHORT, "answers from every worker", || {
        let j = fy.get("/").ok()?.json();
        pids.insert(j["pid"].as_i64().unwrap() as i32);
        (pids.len() == n).then_some(())
    });
    pids
}

#[test]
fn sigterm_stops_every_worker_and_exits_0() {
    let fy_cfg = config_with(&[fixture_pool("web", 3, "")], "");
    let mut fy = Forkyard::start(&fy_cfg);
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "3 ready workers", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#) == Some(3.0)).then_some(())
    });
    let pids = worker_pids(&fy, 3);
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0), "log:\n{}", fy.log());
    for pid in &pids {
        wait_for(SHORT, "worker to be gone", || {
            process_gone(*pid).then_some(())
        });
    }
    assert!(fy.get("/").is_err(), "the proxy no longer accepts");
}

#[test]
fn a_worker_ignoring_sigterm_is_killed_after_grace() {
    let pool = fixture_pool("web", 2, "    env: { FIXTURE_IGNORE_TERM: \"1\" }\n")
        .replace("stop: { grace: \"5s\" }", "stop: { grace: \"1s\" }");
    let mut fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let pids = worker_pids(&fy, 2);
    let t0 = Instant::now();
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", fy.log());
    assert!(
        took >= Duration::from_millis(900),
        "waited for grace: {took:?}"
    );
    for pid in &pids {
        wait_for(SHORT, "worker to be gone", || {
            process_gone(*pid).then_some(())
        });
    }
    assert!(fy.log().contains("sending SIGKILL"), "{}", fy.log());
}

#[test]
fn in_flight_requests_finish_before_workers_stop() {
    let mut fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let proxy = fy.proxy;
    let slow = std::thread::spawn(move || http_get(proxy, "/sleep?s=2", &[]));
    // The fixture prints a line when the slow request reaches it; forkyard logs it.
    wait_for_or_log(&fy, SHORT, "the slow request to reach the worker", || {
        fy.log().contains("sleep request started").then_some(())
    });
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0));
    let r = slow
        .join()
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn readiness_turns_off_first_and_the_proxy_serves_through_shutdown_delay() {
    let cfg = config_with(&[fixture_pool("web", 1, "")], "").replace(
        "  timeout: \"10s\"\n",
        "  timeout: \"10s\"\n  delay: \"4s\"\n",
    );
    let mut fy = Forkyard::start(&cfg);
    fy.wait_ready();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(fy.pid()), Signal::SIGTERM).unwrap();
    wait_for_or_log(&fy, SHORT, "/readyz to turn 503", || {
        (fy.admin_get("/readyz").ok()?.status == 503).then_some(())
    });
    // Still inside shutdown.delay: a load balancer that has not noticed yet is served.
    assert_eq!(fy.get("/").unwrap().status, 200);
    let status = fy.wait_exit(SHORT);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_second_signal_forces_the_exit_with_128_plus_n() {
    let mut fy = Forkyard::start(
        &config_with(&[fixture_pool("web", 1, "")], "")
            .replace("timeout: \"10s\"", "timeout: \"60s\""),
    );
    fy.wait_ready();
    let proxy = fy.proxy;
    let _slow = std::thread::spawn(move || http_get(proxy, "/sleep?s=30", &[]));
    wait_for_or_log(&fy, SHORT, "the slow request to reach the worker", || {
        fy.log().contains("sleep request started").then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(fy.pid());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    wait_for_or_log(&fy, SHORT, "the drain to start", || {
        fy.log().contains("no longer accepting").then_some(())
    });
    let t0 = Instant::now();
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(128 + 15), "{}", fy.log());
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "did not wait for the 30 s request"
    );
}
