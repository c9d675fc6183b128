//! Recycling: a worker past a limit is replaced, replacement first, so no request
//! fails while it happens (drain.rs proves it with `retries: 0`, slow requests and
//! POSTs).

use crate::harness::*;

fn restarts(fy: &Forkyard, reason: &str) -> Option<f64> {
    fy.metric(&format!(
        r#"forkyard_worker_restarts_total{{pool="web",reason="{reason}"}}"#
    ))
}

#[test]
fn workers_are_recycled_after_max_requests_without_failed_requests() {
    let pool = fixture_pool(
        "web",
        2,
        "    recycle: { max_requests: 40, max_requests_jitter: 10 }\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let first: Vec<i64> = (0..2)
        .map(|_| fy.get("/").unwrap().json()["pid"].as_i64().unwrap())
        .collect();
    let load = Load::to(fy.proxy).start();
    wait_for_or_log(&fy, BOOT, "two recycles under load", || {
        (restarts(&fy, "recycle_requests")? >= 2.0).then_some(())
    });
    load.finish().assert_no_failures();
    let now: Vec<i64> = (0..4)
        .map(|_| fy.get("/").unwrap().json()["pid"].as_i64().unwrap())
        .collect();
    assert!(
        first.iter().any(|p| !now.contains(p)),
        "recycled workers were replaced: {first:?} -> {now:?}"
    );
    assert_eq!(restarts(&fy, "exit_code"), Some(0.0));
    assert_eq!(restarts(&fy, "signal"), Some(0.0));
}

#[test]
fn lifetime_and_memory_limits_recycle() {
    let pool = fixture_pool("web", 1, "    recycle: { max_lifetime: \"1s\" }\n");
    let other = fixture_pool("mem", 1, "    recycle: { max_rss: \"1MiB\" }\n");
    let routes = "routes:\n  - { path_prefix: \"/mem\", pool: mem }\n  - { pool: web }\n";
    let fy = Forkyard::start(&config_with(&[pool, other], routes));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "a lifetime recycle", || {
        (restarts(&fy, "recycle_lifetime")? >= 1.0).then_some(())
    });
    wait_for_or_log(&fy, BOOT, "a memory recycle", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="mem",reason="recycle_memory"}"#)? >= 1.0)
            .then_some(())
    });
    assert_eq!(fy.get("/").unwrap().status, 200);
}
