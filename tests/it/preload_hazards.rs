//! The fork hazards of a preloaded app, each shown failing without the declared
//! action and passing with it, against real processes. (The database connection
//! opened at import, with SQLAlchemy's `Engine.dispose`, is in `examples.rs`: it
//! needs the example's virtualenv.)

use std::collections::{HashMap, HashSet};

use crate::harness::*;
use crate::preload::{preload_pool, preload_pool_env};

/// The random value each worker (by pid) answered, for `n` requests to `path`.
fn randoms(fy: &Forkyard, path: &str, n: usize) -> HashMap<i64, Vec<f64>> {
    let mut by_pid: HashMap<i64, Vec<f64>> = HashMap::new();
    for _ in 0..n {
        let r = fy.get(path).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.json();
        by_pid
            .entry(j["pid"].as_i64().unwrap())
            .or_default()
            .push(j["random"].as_f64().unwrap());
    }
    by_pid
}

/// How many numbers were answered by more than one worker.
fn shared_values(by_pid: &HashMap<i64, Vec<f64>>) -> usize {
    let mut seen: HashMap<u64, HashSet<i64>> = HashMap::new();
    for (pid, values) in by_pid {
        for v in values {
            seen.entry(v.to_bits()).or_default().insert(*pid);
        }
    }
    seen.values().filter(|pids| pids.len() > 1).count()
}

#[test]
fn a_generator_made_at_import_repeats_in_every_worker_unless_reseeded_in_post_fork() {
    let dir = tempfile::tempdir().unwrap();
    let same = preload_pool("same", 3, dir.path(), "");
    let reseeded = preload_pool(
        "reseeded",
        3,
        dir.path(),
        "    hooks:\n      post_fork: [ { call: \"preload_app:reseed\" } ]\n",
    );
    let yaml = config_with(
        &[same, reseeded],
        "routes:\n  - { path_prefix: /same, pool: same }\n  - { path_prefix: /reseeded, pool: reseeded }\n",
    );
    let fy = Forkyard::start(&yaml);
    fy.wait_workers_ready("same", 3);
    fy.wait_workers_ready("reseeded", 3);

    // Without the call: the workers draw the preloader's numbers, so the same
    // number comes from different workers (each drew one for its ready probe,
    // maybe two if a probe was retried: compare values, not positions).
    let same = randoms(&fy, "/same", 15);
    assert_eq!(same.len(), 3, "three workers answered: {same:?}");
    assert!(
        shared_values(&same) >= 2,
        "the workers' numbers repeat each other (module-level random.Random()): {same:?}"
    );

    // With `post_fork: [{ call: "preload_app:reseed" }]`: no number is drawn twice.
    let reseeded = randoms(&fy, "/reseeded", 15);
    assert_eq!(reseeded.len(), 3, "{reseeded:?}");
    assert_eq!(
        shared_values(&reseeded),
        0,
        "reseeded streams differ: {reseeded:?}"
    );
    assert!(
        fy.metric(
            r#"forkyard_hook_runs_total{hook="post_fork.0",phase="post_fork",pool="reseeded"}"#
        )
        .unwrap()
            >= 3.0
    );
}

#[test]
fn a_thread_started_at_import_makes_the_preloader_refuse_to_fork_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let threaded = preload_pool_env(
        "threaded",
        2,
        dir.path(),
        ", PRELOAD_THREAD: \"cache-warmer\"",
        "",
    );
    // The control: the same app without the thread forks and serves.
    let clean = preload_pool("clean", 1, dir.path(), "");
    let yaml = config_with(
        &[threaded, clean],
        "routes:\n  - { path_prefix: /clean, pool: clean }\n  - { pool: threaded }\n",
    );
    let fy = Forkyard::start(&yaml);
    fy.wait_workers_ready("clean", 1);
    assert_eq!(fy.get("/clean").unwrap().status, 200);
    wait_for_or_log(&fy, BOOT, "forks refused for threads", || {
        (fy.metric(
            r#"forkyard_hook_failures_total{hook="single_threaded",phase="pre_fork",pool="threaded",reason="threads"}"#,
        )? >= 2.0)
            .then_some(())
    });
    assert_eq!(
        fy.metric(
            r#"forkyard_hook_failures_total{hook="single_threaded",phase="pre_fork",pool="clean",reason="threads"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        fy.metric(r#"forkyard_worker_starts_total{pool="threaded"}"#),
        Some(0.0),
        "no worker was forked from the threaded preloader"
    );
    assert!(
        fy.metric(r#"forkyard_worker_restarts_total{pool="threaded",reason="hook_failure"}"#)
            .unwrap()
            >= 1.0
    );
    let log = fy.log();
    assert!(
        log.contains("'cache-warmer' (Python thread, daemon"),
        "the refusal names the thread"
    );
    let hook = fy.status()["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["pool"] == "threaded" && h["hook"] == "single_threaded")
        .cloned()
        .unwrap();
    assert_eq!(hook["last_result"], "threads", "{hook}");
}
