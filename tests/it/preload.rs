//! Preload pools: the app imported once by forkyard's preloader, each worker forked
//! from it and reaped by forkyard; the preloader failing (killed, or an import
//! error); a reload that imports changed code under load. The fixture app is
//! `tests/fixtures/preload_app.py`, served by the standard library's wsgiref so
//! these tests need no virtualenv.

use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

/// A preload pool of the fixture app on free ports, its cwd `cwd` (where
/// `answer.py` is read from), then `extra` (more keys, indented by four spaces).
pub fn preload_pool(name: &str, workers: u16, cwd: &Path, extra: &str) -> String {
    preload_pool_env(name, workers, cwd, "", extra)
}

/// `preload_pool` with more environment (`, NAME: "value"` items).
pub fn preload_pool_env(name: &str, workers: u16, cwd: &Path, env: &str, extra: &str) -> String {
    let port = free_ports(workers + 2);
    let restart = if extra.contains("restart:") {
        ""
    } else {
        "    restart: { backoff_min: \"50ms\", backoff_max: \"500ms\" }\n"
    };
    format!(
        r#"  {name}:
    preload:
      app: "preload_app:app"
      server: wsgiref
    cwd: "{cwd}"
    env: {{ PYTHONPATH: "{fixtures}", PYTHONDONTWRITEBYTECODE: "1"{env} }}
    workers: {workers}
    ports: "{port}-{end}"
    stop: {{ grace: "5s" }}
{restart}{extra}"#,
        cwd = cwd.display(),
        fixtures = repo().join("tests/fixtures").display(),
        end = port + workers + 1,
    )
}

/// The `n`-th preloader of the first pool in `/status`.
fn preloader(fy: &Forkyard, pool: usize) -> serde_json::Value {
    fy.status()["pools"][pool]["preloaders"][0].clone()
}

fn ready_preloader_pid(fy: &Forkyard, pool: usize) -> i32 {
    wait_for_or_log(fy, BOOT, "a ready preloader", || {
        let p = preloader(fy, pool);
        (p["state"] == "ready").then(|| p["pid"].as_i64()).flatten()
    }) as i32
}

#[test]
fn workers_are_forked_from_one_preloader_and_are_forkyards_children() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_with(
        &[preload_pool(
            "web",
            2,
            dir.path(),
            "    hooks:\n      pre_fork: [ { name: tidy, call: \"preload_app:reseed\" } ]\n      post_fork: [ { name: reseed, call: \"preload_app:reseed\" }, { seed_env: APP_SEED } ]\n",
        )],
        "",
    );
    let fy = Forkyard::start(&yaml);
    fy.wait_workers_ready("web", 2);
    let preloader_pid = ready_preloader_pid(&fy, 0);
    let mut pids = std::collections::HashSet::new();
    for _ in 0..10 {
        let j = fy.get("/").unwrap().json();
        // Re-parented to forkyard by the double fork: forkyard reaps them.
        assert_eq!(j["ppid"], fy.pid(), "{j}");
        assert_ne!(j["pid"], preloader_pid);
        // gc_freeze (the default): the worker holds the preloader's frozen objects.
        assert!(j["frozen"].as_u64().unwrap() > 1000, "{j}");
        pids.insert(j["pid"].as_i64().unwrap());
    }
    assert_eq!(pids.len(), 2, "both workers answered: {pids:?}");
    for (series, at_least) in [
        (r#"forkyard_preloader_starts_total{pool="web"}"#, 1.0),
        (r#"forkyard_preload_fork_seconds_count{pool="web"}"#, 2.0),
        (
            r#"forkyard_hook_runs_total{hook="tidy",phase="pre_fork",pool="web"}"#,
            2.0,
        ),
        (
            r#"forkyard_hook_runs_total{hook="reseed",phase="post_fork",pool="web"}"#,
            2.0,
        ),
        (
            r#"forkyard_hook_runs_total{hook="single_threaded",phase="pre_fork",pool="web"}"#,
            2.0,
        ),
    ] {
        assert!(fy.metric(series).unwrap_or(0.0) >= at_least, "{series}");
    }
    let metrics = fy.metrics();
    for needle in [
        r#"forkyard_worker_pss_bytes{pool="web",worker="0"}"#,
        r#"forkyard_worker_uss_bytes{pool="web",worker="1"}"#,
        r#"forkyard_preloader_pss_bytes{pool="web"}"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing");
    }
    let w = &fy.status()["pools"][0]["workers"][0];
    let (rss, pss, uss) = (
        w["rss_bytes"].as_u64().unwrap(),
        w["pss_bytes"].as_u64().unwrap(),
        w["uss_bytes"].as_u64().unwrap(),
    );
    assert!(uss < pss && pss < rss, "a forked worker shares pages: {w}");

    // A worker killed with SIGKILL is reaped and classified by forkyard, and
    // forked again.
    let victim = fy.status()["pools"][0]["workers"][0]["pid"]
        .as_i64()
        .unwrap() as i32;
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    wait_for_or_log(&fy, BOOT, "the killed worker counted as signal", || {
        (fy.metric(r#"forkyard_worker_exits_total{pool="web",reason="signal"}"#)? == 1.0)
            .then_some(())
    });
    fy.wait_workers_ready("web", 2);
    assert!(
        fy.metric(r#"forkyard_preload_fork_seconds_count{pool="web"}"#)
            .unwrap()
            >= 3.0
    );
    assert_eq!(
        ready_preloader_pid(&fy, 0),
        preloader_pid,
        "one preloader all along"
    );
}

#[test]
fn without_gc_freeze_the_workers_hold_no_frozen_objects() {
    let dir = tempfile::tempdir().unwrap();
    let pool = preload_pool("web", 1, dir.path(), "").replace(
        "      server: wsgiref\n",
        "      server: wsgiref\n      gc_freeze: false\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 1);
    let j = fy.get("/").unwrap().json();
    assert_eq!(j["frozen"], 0, "{j}");
}

#[test]
fn a_preloader_killed_under_load_is_restarted_while_its_workers_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_with(
        &[preload_pool("web", 2, dir.path(), "    retries: 0\n")],
        "",
    );
    let fy = Forkyard::start(&yaml);
    fy.wait_workers_ready("web", 2);
    let first = ready_preloader_pid(&fy, 0);
    let workers = |fy: &Forkyard| -> Vec<i64> {
        fy.status()["pools"][0]["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w["pid"].as_i64())
            .collect()
    };
    let before = workers(&fy);
    let load = Load::to(fy.proxy).clients(4).keep_alive().start();
    load.wait_for_more(&fy, 200);
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    wait_for_or_log(
        &fy,
        BOOT,
        "the preloader's restart counted as signal",
        || {
            (fy.metric(r#"forkyard_preloader_restarts_total{pool="web",reason="signal"}"#)? == 1.0)
                .then_some(())
        },
    );
    let second = ready_preloader_pid(&fy, 0);
    assert_ne!(first, second);
    let p = preloader(&fy, 0);
    assert_eq!(p["restarts"], 1, "{p}");
    assert_eq!(p["last_exit"]["reason"], "signal", "{p}");
    load.wait_for_more(&fy, 200);
    assert_eq!(workers(&fy), before, "the workers kept running");
    load.finish().assert_no_failures();
    assert!(fy
        .log()
        .contains("preloader exited; its workers keep serving"));
    // A worker that dies now (no load: with retries 0 its in-flight requests
    // would fail, as any crash's do) is forked by the new preloader.
    kill(Pid::from_raw(before[0] as i32), Signal::SIGKILL).unwrap();
    wait_for_or_log(&fy, BOOT, "the worker replaced", || {
        let now = workers(&fy);
        (now.len() == 2 && !now.contains(&before[0])).then_some(())
    });
    fy.wait_workers_ready("web", 2);
    for _ in 0..4 {
        assert_eq!(fy.get("/").unwrap().status, 200);
    }
}

#[test]
fn an_import_error_degrades_the_pool_with_its_traceback_and_forkyard_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let broken = preload_pool_env(
        "web",
        2,
        dir.path(),
        ", PRELOAD_FAIL: \"the database is not configured\"",
        "    restart: { backoff_min: 50ms, backoff_max: 200ms, crash_loop: { failures: 3, window: 60s } }\n",
    );
    let healthy = fixture_pool("ok", 1, "");
    let yaml = config_with(
        &[broken, healthy],
        "routes:\n  - { path_prefix: /ok, pool: ok }\n  - { pool: web }\n",
    );
    let fy = Forkyard::start(&yaml);
    wait_for_or_log(&fy, BOOT, "the pool degraded", || {
        (fy.metric(r#"forkyard_pool_degraded{pool="web"}"#)? == 1.0).then_some(())
    });
    wait_for_or_log(&fy, BOOT, "import errors counted", || {
        (fy.metric(r#"forkyard_preloader_restarts_total{pool="web",reason="import_error"}"#)?
            >= 2.0)
            .then_some(())
    });
    let p = preloader(&fy, 0);
    let error = p["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("ImportError: the database is not configured")
            && error.contains("Traceback")
            && error.contains("preload_app.py"),
        "the traceback's tail on /status: {p}"
    );
    let log = fy.log();
    assert!(
        log.contains("preloader could not import the app")
            && log.contains("ImportError: the database is not configured"),
        "the log says why"
    );
    assert_eq!(
        fy.metric(r#"forkyard_worker_starts_total{pool="web"}"#),
        Some(0.0),
        "no worker without an app"
    );
    // forkyard and its other pool are fine.
    assert_eq!(fy.admin_get("/healthz").unwrap().status, 200);
    fy.wait_workers_ready("ok", 1);
    assert_eq!(fy.get("/ok").unwrap().status, 200);
    assert_eq!(fy.get("/").unwrap().status, 503, "no ready worker in web");
    let text = std::process::Command::new(forkyard_bin())
        .args(["status", "--admin", &fy.admin.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("PRELOADER") && text.contains("ImportError: the database is not configured"),
        "forkyard status lists the preloader and its error:\n{text}"
    );
}

#[test]
fn a_reload_under_load_imports_the_changed_source_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("answer.py"), "ANSWER = \"v1\"\n").unwrap();
    let yaml = config_with(
        &[preload_pool("web", 2, dir.path(), "    retries: 0\n")],
        "",
    );
    let fy = Forkyard::start(&yaml);
    fy.wait_workers_ready("web", 2);
    assert_eq!(fy.get("/").unwrap().json()["answer"], "v1");
    let load = Load::to(fy.proxy)
        .clients(4)
        .keep_alive()
        .get("/sleep?ms=20")
        .answers()
        .start();
    load.wait_for_more(&fy, 100);
    // New code on disk; config.yaml unchanged.
    std::fs::write(dir.path().join("answer.py"), "ANSWER = \"version 2\"\n").unwrap();
    let r = http_post(fy.admin, "/reload").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("web: replaced from a new preloader"),
        "{}",
        r.body
    );
    load.wait_for_more(&fy, 100);
    let report = load.finish();
    report.assert_no_failures();
    let last: Vec<serde_json::Value> = report
        .answers
        .iter()
        .rev()
        .take(20)
        .map(|a| a.response.json()["answer"].clone())
        .collect();
    assert!(
        last.iter().all(|a| *a == "version 2"),
        "after the reload: {last:?}"
    );
    assert!(report
        .answers
        .iter()
        .any(|a| a.response.json()["answer"] == "v1"));
    wait_for_or_log(&fy, BOOT, "the old preloader gone", || {
        let ps = fy.status()["pools"][0]["preloaders"].clone();
        let ps = ps.as_array()?;
        (ps.len() == 1 && ps[0]["generation"] == 2).then_some(())
    });

    // POST /pools/web/restart: a third generation, again from the file as it is now.
    std::fs::write(dir.path().join("answer.py"), "ANSWER = \"third\"\n").unwrap();
    let r = http_post(fy.admin, "/pools/web/restart").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_for_or_log(&fy, SHORT, "the restart's answer", || {
        (fy.get("/").ok()?.json()["answer"] == "third").then_some(())
    });
    wait_for_or_log(&fy, BOOT, "only the third preloader left", || {
        let ps = fy.status()["pools"][0]["preloaders"].clone();
        (ps.as_array()?.len() == 1 && ps[0]["generation"] == 3).then_some(())
    });
    assert_eq!(
        fy.metric(r#"forkyard_preloader_restarts_total{pool="web",reason="signal"}"#),
        Some(0.0),
        "old preloaders are stopped, not counted as failures"
    );
}

#[test]
fn a_reload_whose_new_preloader_cannot_import_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("answer.py"), "ANSWER = \"v1\"\n").unwrap();
    let yaml = config_with(&[preload_pool("web", 2, dir.path(), "")], "");
    let fy = Forkyard::start(&yaml);
    fy.wait_workers_ready("web", 2);
    std::fs::write(dir.path().join("answer.py"), "ANSWER = (\n").unwrap();
    let r = http_post(fy.admin, "/reload").unwrap();
    assert!(r.body.contains("rolled back"), "{r:?}");
    assert_eq!(
        fy.get("/").unwrap().json()["answer"],
        "v1",
        "the old generation serves"
    );
    wait_for_or_log(&fy, BOOT, "the failed generation's preloader gone", || {
        let ps = fy.status()["pools"][0]["preloaders"].clone();
        (ps.as_array()?.len() == 1 && ps[0]["generation"] == 1).then_some(())
    });
}

#[test]
fn the_post_fork_built_ins_apply_in_each_preloaded_worker() {
    let dir = tempfile::tempdir().unwrap();
    let root = nix::unistd::geteuid().is_root();
    let user = if root {
        "        - { user: nobody }\n"
    } else {
        ""
    };
    let yaml = config_with(
        &[preload_pool(
            "web",
            2,
            dir.path(),
            &format!("    hooks:\n      post_fork:\n        - {{ seed_env: APP_SEED }}\n        - {{ umask: \"027\" }}\n        - {{ rlimits: {{ nofile: 1000 }} }}\n        - {{ nice: 5 }}\n{user}"),
        )],
        "",
    );
    let fy = Forkyard::start(&yaml);
    fy.wait_workers_ready("web", 2);
    let mut seeds = std::collections::HashSet::new();
    for _ in 0..4 {
        let j = fy.get("/process").unwrap().json();
        assert_eq!(j["umask"], "027", "{j}");
        assert_eq!(j["nofile"], 1000, "{j}");
        assert_eq!(j["nice"], 5, "{j}");
        assert_eq!(
            j["pgid"], j["pid"],
            "each worker leads its own process group: {j}"
        );
        let seed = j["seed"].as_str().unwrap().to_string();
        assert_eq!(seed.len(), 64, "{j}");
        seeds.insert((j["pid"].clone(), seed));
        if root {
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            assert_eq!(
                j["uid"],
                nobody.uid.as_raw(),
                "the worker dropped to nobody: {j}"
            );
        }
        // The worker has its socket and fds 0-2, and the app's own: not the
        // preloader's channel to forkyard.
        let fds: Vec<u64> = j["fds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_u64().unwrap())
            .collect();
        assert!(fds.len() <= 6, "few descriptors: {fds:?}");
    }
    assert_eq!(
        seeds
            .iter()
            .map(|(p, _)| p.to_string())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        seeds.len(),
        "one seed per worker, each different: {seeds:?}"
    );
    assert!(
        fy.log().contains("builtins=umask, rlimits, nice,"),
        "one post_fork_done line per spawn lists the built-ins in the order applied"
    );
}

#[test]
fn shutdown_stops_the_workers_then_the_preloader_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut fy = Forkyard::start(&config_with(&[preload_pool("web", 2, dir.path(), "")], ""));
    fy.wait_workers_ready("web", 2);
    let preloader = ready_preloader_pid(&fy, 0);
    let status = fy.signal_and_wait(Signal::SIGTERM, BOOT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let log = fy.log();
    let stopped = log
        .find("preloader stopped")
        .expect("the preloader was stopped");
    let done = log
        .find("event=\"shutdown_complete\"")
        .expect("shutdown completed");
    assert!(
        stopped < done,
        "the preloader stopped before forkyard exited"
    );
    assert!(
        kill(Pid::from_raw(preloader), None).is_err(),
        "no preloader left behind"
    );
}

#[test]
fn a_missing_interpreter_is_an_exit_code_restart_with_the_reason_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let pool = preload_pool("web", 1, dir.path(), "").replace(
        "      server: wsgiref\n",
        "      server: wsgiref\n      python: /nonexistent/python3\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    wait_for_or_log(&fy, BOOT, "the preloader's exits counted", || {
        (fy.metric(r#"forkyard_preloader_restarts_total{pool="web",reason="exit_code"}"#)? >= 2.0)
            .then_some(())
    });
    let log = fy.log();
    assert!(
        log.contains("/nonexistent/python3")
            && log.contains("preloader exited before it had imported the app"),
        "the log says which interpreter could not start"
    );
    assert_eq!(preloader(&fy, 0)["last_exit"]["status"], "exit code 127");
}

#[test]
fn recycle_max_uss_replaces_a_worker_whose_own_memory_passed_it() {
    let dir = tempfile::tempdir().unwrap();
    // A preloaded worker's USS is a few MiB, far below its RSS; 1 KiB is passed at
    // once, 1 GiB never (the control).
    let tight = preload_pool(
        "tight",
        1,
        dir.path(),
        "    recycle: { max_uss: \"1KiB\" }\n",
    );
    let roomy = preload_pool(
        "roomy",
        1,
        dir.path(),
        "    recycle: { max_uss: \"1GiB\" }\n",
    );
    let fy = Forkyard::start(&config_with(
        &[tight, roomy],
        "routes:\n  - { path_prefix: /roomy, pool: roomy }\n  - { pool: tight }\n",
    ));
    wait_for_or_log(&fy, BOOT, "a recycle for memory", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="tight",reason="recycle_memory"}"#)?
            >= 1.0)
            .then_some(())
    });
    fy.wait_workers_ready("roomy", 1);
    std::thread::sleep(std::time::Duration::from_millis(600)); // two recycle checks
    assert_eq!(
        fy.metric(r#"forkyard_worker_restarts_total{pool="roomy",reason="recycle_memory"}"#),
        Some(0.0)
    );
}
