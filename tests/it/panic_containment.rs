//! A panic inside one proxy request task loses that connection only: forkyard keeps
//! running, other requests keep working, the in-flight count is released, and a
//! later shutdown is clean. Needs the binary built with `--features
//! fault-injection` (as `make test` does); skipped otherwise, which fails in CI.

use std::time::Duration;

use crate::harness::*;

const PANIC: (&str, &str) = ("X-Forkyard-Test-Panic", "1");

fn feature_on() -> bool {
    if cfg!(feature = "fault-injection") {
        return true;
    }
    skip("built without the fault-injection feature; run `make test` or `cargo test --features fault-injection`");
    false
}

fn panics_are_contained(threads: u16) {
    let cfg = config_with(&[fixture_pool("web", 2, "")], "")
        .replace("proxy:\n", &format!("proxy:\n  threads: {threads}\n"));
    let mut fy = Forkyard::start(&cfg);
    fy.wait_workers_ready("web", 2);
    assert_eq!(fy.get("/").unwrap().status, 200);

    for _ in 0..5 {
        // The connection is dropped without an answer; never a 2xx.
        if let Ok(r) = http_get(fy.proxy, "/", &[PANIC]) {
            assert!(r.status >= 500, "a panicking request answered {r:?}");
        }
        // A request in flight on another connection at the same time is unaffected.
        assert_eq!(fy.get("/").unwrap().status, 200);
    }
    for _ in 0..20 {
        let r = fy.get("/").expect("forkyard still proxies");
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(fy.admin_get("/healthz").unwrap().status, 200);
    assert_eq!(fy.admin_get("/readyz").unwrap().status, 200);
    let log = fy.log();
    assert!(
        log.contains("fault injection"),
        "the panic is logged: {log}"
    );
    assert!(log.contains("panic"), "{log}");
    // No worker was harmed: both still ready, none restarted.
    assert_eq!(
        fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#),
        Some(2.0)
    );

    // The panicked requests released their in-flight count: the drain is immediate.
    let status = fy.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", fy.log());
    let log = fy.log();
    assert!(
        log.contains("shutdown: in-flight requests drained"),
        "in-flight count leaked by the panics: {log}"
    );
}

#[test]
fn a_panicking_request_does_not_take_forkyard_down() {
    if feature_on() {
        panics_are_contained(1);
    }
}

#[test]
fn a_panicking_request_on_the_multi_threaded_proxy() {
    if feature_on() {
        panics_are_contained(2);
    }
}

#[test]
fn a_panicking_worker_actor_is_replaced_and_its_worker_killed() {
    if !feature_on() {
        return;
    }
    // The first worker of this pool to become ready has its supervising task panic.
    let extra = "    env: { FORKYARD_TEST_ACTOR_PANIC: \"1\" }\n";
    let mut fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, extra)], ""));
    wait_for_or_log(&fy, BOOT, "the actor's panic", || {
        fy.log().contains("supervising task panicked").then_some(())
    });
    // The worker that actor supervised is killed, and a new actor starts a new one.
    let first_pid: i32 = {
        let log = fy.log();
        let spawn = log
            .lines()
            .find(|l| l.contains("worker spawned"))
            .expect("a spawn event")
            .to_string();
        spawn
            .split("pid=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("a pid in the spawn event")
    };
    wait_for_or_log(&fy, SHORT, "the orphaned worker killed", || {
        process_gone(first_pid).then_some(())
    });
    fy.wait_workers_ready("web", 1);
    let r = fy.get("/").expect("forkyard still proxies");
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(r.json()["pid"].as_i64(), Some(i64::from(first_pid)));
    let status = fy.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", fy.log());
}
