//! Lifecycle hooks: every phase with its failure modes, timeouts, grandchildren, the
//! order of phases, and the metrics they feed.

use nix::sys::signal::Signal;

use crate::harness::*;

fn series(fy: &Forkyard, s: &str) -> f64 {
    fy.metric(s)
        .unwrap_or_else(|| panic!("no series {s}\n{}", fy.metrics()))
}

/// The wall clock, in seconds since 1970 (as `date +%s.%N` prints it).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn phases_run_in_order() {
    let order = "{dir}/order.log";
    let append =
        |what: &str| format!(r#"{{ name: {what}, run: ["sh", "-c", "echo {what} >> {order}"] }}"#);
    let pool = fixture_pool(
        "web",
        1,
        &format!(
            "    env: {{ FIXTURE_ORDER_FILE: \"{order}\" }}\n    hooks:\n      pre_fork: [{}]\n      post_fork: [{}]\n      post_spawn: [{}]\n",
            append("pre_fork"),
            append("post_fork"),
            append("post_spawn")
        ),
    );
    let cfg = config_with(&[pool], "") + &format!("hooks:\n  on_start: [{}]\n", append("on_start"));
    let fy = Forkyard::start(&cfg);
    fy.wait_ready();
    assert_eq!(fy.get("/").unwrap().status, 200);
    let log = read(&fy.dir().join("order.log"));
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "on_start",
            "pre_fork",
            "post_fork",
            "listening",
            "post_spawn",
            "request"
        ],
        "forkyard log:\n{}",
        fy.log()
    );
    for (phase, hook) in [
        ("on_start", "on_start"),
        ("pre_fork", "pre_fork"),
        ("post_fork", "post_fork"),
        ("post_spawn", "post_spawn"),
    ] {
        let pool = if phase == "on_start" { "" } else { "web" };
        assert_eq!(
            series(
                &fy,
                &format!(
                    r#"forkyard_hook_runs_total{{hook="{hook}",phase="{phase}",pool="{pool}"}}"#
                )
            ),
            1.0
        );
        assert_eq!(
            series(
                &fy,
                &format!(
                    r#"forkyard_hook_failures_total{{hook="{hook}",phase="{phase}",pool="{pool}",reason="exit"}}"#
                )
            ),
            0.0
        );
    }
}

#[test]
fn failing_on_start_aborts_before_anything_is_spawned() {
    let pool = fixture_pool(
        "web",
        1,
        "    env: { FIXTURE_ORDER_FILE: \"{dir}/order.log\" }\n",
    );
    let cfg = config_with(&[pool], "")
        + r#"hooks:
  on_start:
    - { name: migrate, run: ["sh", "-c", "echo applying 0001; echo 'relation users already exists' >&2; exit 3"] }
"#;
    let mut fy = Forkyard::start(&cfg);
    let status = fy.wait_exit(SHORT);
    assert_eq!(status.code(), Some(1), "{}", fy.log());
    let log = fy.log();
    assert!(
        log.contains("on_start hook \"migrate\" failed (exit)"),
        "{log}"
    );
    assert!(
        log.contains("relation users already exists"),
        "the output tail is in the error: {log}"
    );
    assert!(
        !fy.dir().join("order.log").exists(),
        "no worker was started"
    );
}

#[test]
fn skipped_on_start_failure_is_counted_and_forkyard_runs() {
    let cfg = config_with(&[fixture_pool("web", 1, "")], "")
        + "hooks:\n  on_start:\n    - { name: check, run: [\"false\"], on_failure: skip, retries: 1, retry_delay: \"10ms\" }\n";
    let fy = Forkyard::start(&cfg);
    fy.wait_ready();
    assert_eq!(
        series(
            &fy,
            r#"forkyard_hook_failures_total{hook="check",phase="on_start",pool="",reason="exit"}"#
        ),
        2.0
    );
    assert_eq!(
        series(
            &fy,
            r#"forkyard_hook_runs_total{hook="check",phase="on_start",pool="",reason="exit"}"#
                .replace(",reason=\"exit\"", "")
                .as_str()
        ),
        2.0
    );
    assert_eq!(fy.get("/").unwrap().status, 200);
}

#[test]
fn pre_fork_failure_fails_the_spawn_and_spares_other_pools() {
    let bad = fixture_pool(
        "bad",
        1,
        "    env: { FIXTURE_ORDER_FILE: \"{dir}/bad.log\" }\n    hooks:\n      pre_fork: [ { name: db-up, wait_for: { tcp: \"127.0.0.1:1\" }, timeout: \"300ms\" } ]\n",
    );
    let good = fixture_pool("good", 1, "");
    let routes = "routes:\n  - { path_prefix: \"/bad\", pool: bad }\n  - { pool: good }\n";
    let fy = Forkyard::start(&config_with(&[bad, good], routes));
    wait_for_or_log(&fy, BOOT, "pre_fork failures and restarts", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="bad",reason="hook_failure"}"#)? >= 2.0)
            .then_some(())
    });
    assert!(
        series(
            &fy,
            r#"forkyard_hook_failures_total{hook="db-up",phase="pre_fork",pool="bad",reason="timeout"}"#
        ) >= 2.0
    );
    assert!(
        !fy.dir().join("bad.log").exists(),
        "the bad pool's worker never started"
    );
    wait_for_or_log(&fy, BOOT, "the good pool to serve", || {
        (fy.get("/").ok()?.status == 200).then_some(())
    });
    assert_eq!(fy.get("/bad").unwrap().status, 503);
    assert_eq!(fy.admin_get("/healthz").unwrap().status, 200);
}

#[test]
fn post_fork_failure_fails_the_spawn_before_the_app_starts() {
    let pool = fixture_pool(
        "web",
        1,
        "    env: { FIXTURE_ORDER_FILE: \"{dir}/app.log\" }\n    hooks:\n      post_fork: [ { name: prep, run: [\"sh\", \"-c\", \"echo cannot prepare >&2; exit 4\"] } ]\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    wait_for_or_log(&fy, BOOT, "post_fork failures", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="hook_failure"}"#)? >= 2.0)
            .then_some(())
    });
    assert!(
        series(
            &fy,
            r#"forkyard_hook_failures_total{hook="prep",phase="post_fork",pool="web",reason="exit"}"#
        ) >= 2.0
    );
    assert!(!fy.dir().join("app.log").exists(), "the app never ran");
    let log = fy.log();
    assert!(
        log.contains("cannot prepare"),
        "hook output is logged: {log}"
    );
    assert_eq!(fy.get("/").unwrap().status, 503);
}

#[test]
fn post_spawn_failure_keeps_the_worker_out_of_traffic() {
    // Warm-up expects 418; the fixture answers 200, so post_spawn always fails.
    let pool = fixture_pool(
        "web",
        1,
        "    hooks:\n      post_spawn: [ { name: warm, http: { path: \"/\", expect_status: 418 }, timeout: \"5s\" } ]\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    wait_for_or_log(&fy, BOOT, "post_spawn kills", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="hook_failure"}"#)? >= 2.0)
            .then_some(())
    });
    assert!(
        series(
            &fy,
            r#"forkyard_hook_failures_total{hook="warm",phase="post_spawn",pool="web",reason="http_status"}"#
        ) >= 2.0
    );
    for _ in 0..5 {
        assert_eq!(
            fy.get("/").unwrap().status,
            503,
            "the worker never gets traffic"
        );
    }
    assert_eq!(
        fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#),
        Some(0.0)
    );
}

#[test]
fn post_spawn_failure_with_skip_uses_the_worker_anyway() {
    let pool = fixture_pool(
        "web",
        1,
        "    hooks:\n      post_spawn: [ { name: warm, http: { path: \"/\", expect_status: 418 }, on_failure: skip } ]\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    assert_eq!(fy.get("/").unwrap().status, 200);
    assert_eq!(
        series(
            &fy,
            r#"forkyard_hook_failures_total{hook="warm",phase="post_spawn",pool="web",reason="http_status"}"#
        ),
        1.0
    );
    assert_eq!(
        series(
            &fy,
            r#"forkyard_worker_restarts_total{pool="web",reason="hook_failure"}"#
        ),
        0.0
    );
}

#[test]
fn stop_hooks_run_with_exit_details_and_their_failures_do_not_block_stopping() {
    let pool = fixture_pool(
        "web",
        1,
        r#"    hooks:
      pre_stop: [ { name: deregister, run: ["sh", "-c", "echo pre_stop $FORKYARD_WORKER >> {dir}/stop.log; exit 1"] } ]
      on_exit: [ { name: cleanup, run: ["sh", "-c", "echo on_exit code=$FORKYARD_EXIT_CODE signal=$FORKYARD_EXIT_SIGNAL reason=$FORKYARD_EXIT_REASON >> {dir}/stop.log"] } ]
"#,
    );
    let cfg = config_with(&[pool], "")
        + "hooks:\n  on_shutdown: [ { name: bye, run: [\"sh\", \"-c\", \"echo on_shutdown phase=$FORKYARD_PHASE >> {dir}/stop.log\"] } ]\n";
    let mut fy = Forkyard::start(&cfg);
    fy.wait_ready();
    // A crash first: on_exit sees the signal.
    let pid = fy.get("/").unwrap().json()["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let dir = fy.dir().to_path_buf();
    wait_for_or_log(&fy, BOOT, "on_exit after the crash", || {
        read(&dir.join("stop.log"))
            .contains("on_exit code= signal=SIGKILL reason=signal")
            .then_some(())
    });
    wait_for_or_log(&fy, BOOT, "the worker back", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 1.0).then_some(())
    });
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(
        status.code(),
        Some(0),
        "a failing pre_stop does not block the stop"
    );
    let log = read(&dir.join("stop.log"));
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "on_exit code= signal=SIGKILL reason=signal",
            "pre_stop 0",
            "on_exit code=0 signal= reason=shutdown",
            "on_shutdown phase=on_shutdown"
        ],
        "{}",
        fy.log()
    );
    assert!(
        fy.log().contains("pre_stop hook \"deregister\" failed")
            || fy.log().contains("hook failed"),
        "{}",
        fy.log()
    );
}

#[test]
fn a_hung_hook_is_killed_on_time_while_forkyard_keeps_serving() {
    // The hook writes its pid and its start time (wall clock), then hangs.
    let slow = fixture_pool(
        "slow",
        1,
        "    hooks:\n      pre_fork: [ { name: hang, run: [\"sh\", \"-c\", \"echo $$ $(date +%s.%N) > {dir}/hang.tmp; mv {dir}/hang.tmp {dir}/hang.start; exec sleep 1000\"], timeout: \"3s\" } ]\n",
    );
    let web = fixture_pool("web", 1, "");
    let routes = "routes:\n  - { path_prefix: \"/slow\", pool: slow }\n  - { pool: web }\n";
    let fy = Forkyard::start(&config_with(&[slow, web], routes));
    let marker = fy.dir().join("hang.start");
    let (hang_pid, started): (i32, f64) =
        wait_for_or_log(&fy, BOOT, "the hung hook to start", || {
            let text = read(&marker);
            let mut fields = text.split_whitespace();
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        });
    // Watch for its end on a thread of its own, every 10 ms.
    let killed_at = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + BOOT;
        while std::time::Instant::now() < deadline {
            if process_gone(hang_pid) {
                return Some(unix_now());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        None
    });
    // While the hook hangs, the other pool is served and forkyard answers.
    wait_for_or_log(&fy, BOOT, "the web pool to serve", || {
        (fy.get("/").ok()?.status == 200).then_some(())
    });
    assert_eq!(fy.admin_get("/metrics").unwrap().status, 200);
    // Its process is killed 3 s after it started: not before, and not much later.
    let killed_at = killed_at
        .join()
        .unwrap()
        .unwrap_or_else(|| panic!("the hung hook {hang_pid} is still running"));
    let took = killed_at - started;
    assert!(
        (2.75..4.5).contains(&took),
        "the 3 s hook was killed {took:.2} s after it started"
    );
    wait_for_or_log(&fy, SHORT, "the timeout to be counted", || {
        (fy.metric(r#"forkyard_hook_failures_total{hook="hang",phase="pre_fork",pool="slow",reason="timeout"}"#)? >= 1.0).then_some(())
    });
}

#[test]
fn a_hook_leaves_no_grandchild_behind() {
    let pool = fixture_pool(
        "web",
        1,
        "    hooks:\n      pre_fork: [ { name: spawner, run: [\"sh\", \"-c\", \"sleep 1000 & echo $! > {dir}/gc.pid\"] } ]\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let gc: i32 = read(&fy.dir().join("gc.pid"))
        .trim()
        .parse()
        .expect("grandchild pid");
    wait_for_or_log(&fy, SHORT, "the grandchild to be gone", || {
        process_gone(gc).then_some(())
    });
    assert_eq!(
        series(
            &fy,
            r#"forkyard_hook_failures_total{hook="spawner",phase="pre_fork",pool="web",reason="exit"}"#
        ),
        0.0
    );
}

#[test]
fn check_rejects_bad_hooks_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        r#"hooks:
  on_start:
    - { name: x, run: ["true"], wait_for: { tcp: "db:5432" } }
pools:
  web:
    command: ["python3", "app.py"]
    ports: "9101-9110"
    hooks:
      pre_fork: [ { seed_env: APP_SEED } ]
      pre_stop: [ { run: ["true"], on_failure: abort } ]
      post_fork: [ { run: ["true"], timout: "5s" } ]
"#,
    )
    .unwrap();
    let CheckRun { code, stderr, .. } = forkyard_check(&path, &[]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("config.yaml:3:7: hooks.on_start[0]: a hook has exactly one action"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pools.web.hooks.pre_fork[0].seed_env: seed_env is a post_fork built-in"),
        "{stderr}"
    );
    assert!(stderr.contains("pools.web.hooks.pre_stop[0].on_failure: on_failure \"abort\" is not allowed in pre_stop"), "{stderr}");
    assert!(
        stderr.contains("pools.web.hooks.post_fork[0].timout: unknown key \"timout\""),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean \"timeout\""), "{stderr}");
}

#[test]
fn skipped_pre_fork_and_post_fork_failures_still_start_the_app() {
    let pool = fixture_pool(
        "web",
        1,
        r#"    hooks:
      pre_fork: [ { name: optional-dep, wait_for: { http: "http://127.0.0.1:1/" }, timeout: "300ms", on_failure: skip } ]
      post_fork: [ { name: best-effort, run: ["sh", "-c", "kill -9 $$"], on_failure: skip } ]
"#,
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    assert_eq!(fy.get("/").unwrap().status, 200);
    assert_eq!(
        series(
            &fy,
            r#"forkyard_hook_failures_total{hook="optional-dep",phase="pre_fork",pool="web",reason="timeout"}"#
        ),
        1.0
    );
    wait_for_or_log(&fy, SHORT, "the post_fork failure to be counted", || {
        (fy.metric(r#"forkyard_hook_failures_total{hook="best-effort",phase="post_fork",pool="web",reason="signal"}"#)? == 1.0).then_some(())
    });
    assert_eq!(
        series(
            &fy,
            r#"forkyard_worker_restarts_total{pool="web",reason="hook_failure"}"#
        ),
        0.0
    );
}
