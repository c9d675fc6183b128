//! Logs: one stream, JSON lines with `log.format: json`, worker output labelled with
//! pool and worker, and Pingora's own records in the same stream.

use nix::sys::signal::Signal;

use crate::harness::*;

#[test]
fn json_logs_carry_worker_output_and_pingora_records() {
    let cfg =
        config_with(&[fixture_pool("web", 2, "")], "") + "log:\n  level: info\n  format: json\n";
    let mut fy = Forkyard::start(&cfg);
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "both workers' start lines", || {
        (fy.log().matches("fixture worker pid=").count() == 2).then_some(())
    });
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0));
    let log = fy.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let worker_line = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("fixture worker pid="))
                && e["worker"] == 1
        })
        .unwrap_or_else(|| panic!("no labelled worker line in\n{log}"));
    assert_eq!(worker_line["pool"], "web");
    assert_eq!(worker_line["stream"], "stdout");
    assert_eq!(worker_line["target"], "forkyard::worker");
    assert!(
        events.iter().any(|e| e["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("pingora"))),
        "Pingora's log records are in the same stream:\n{log}"
    );
    assert!(events
        .iter()
        .any(|e| e["message"] == "worker ready" && e["pool"] == "web"));
}

/// Every lifecycle step is one JSON event with a stable `event` name and fields.
#[test]
fn lifecycle_events_have_stable_names_and_fields() {
    let web = fixture_pool(
        "web",
        2,
        "    hooks:\n      post_spawn: [{ name: warm, http: { path: \"/\", expect_status: 204 }, on_failure: skip }]\n",
    );
    let cfg = config_with(&[web], "")
        + "log:\n  level: info\n  format: json\nhooks:\n  on_start: [{ name: check, run: [\"true\"] }]\n";
    let mut fy = Forkyard::start(&cfg);
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "2 ready workers", || {
        (fy.status()["pools"][0]["workers_ready"] == 2).then_some(())
    });
    let pid = fy.status()["pools"][0]["workers"][0]["pid"]
        .as_i64()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_for_or_log(&fy, BOOT, "slot 0 back", || {
        let w = &fy.status()["pools"][0]["workers"][0];
        (w["state"] == "ready" && w["pid"].as_i64() != Some(pid)).then_some(())
    });
    assert_eq!(fy.signal_and_wait(Signal::SIGTERM, SHORT).code(), Some(0));
    let log = fy.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"].is_string())
        .collect();
    let find = |name: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .find(|e| e["event"] == name && pred(e))
            .unwrap_or_else(|| panic!("no {name} event in\n{log}"))
            .clone()
    };
    let any = |_: &serde_json::Value| true;
    let start = find("start", &any);
    assert!(start["version"].is_string() && start["pools"] == 1);
    let spawn = find("spawn", &|e| e["worker"] == 0);
    assert_eq!(spawn["pool"], "web");
    assert!(spawn["pid"].is_i64() && spawn["port"].is_u64());
    let ready = find("ready", &|e| e["worker"] == 0);
    assert!(ready["boot_ms"].is_u64() && ready["pid"] == spawn["pid"]);
    find("pools_ready", &any);
    let exit = find("exit", &|e| e["pid"] == pid);
    assert_eq!(exit["reason"], "signal");
    assert_eq!(exit["signal"], "SIGKILL");
    assert_eq!(exit["status"], "signal SIGKILL");
    assert_eq!(exit["level"], "WARN");
    assert!(exit["uptime_ms"].is_u64());
    let restart = find("restart", &any);
    assert_eq!(restart["reason"], "signal");
    assert_eq!(restart["restarts"], 1);
    assert!(restart["delay_ms"].is_u64());
    assert_eq!(find("shutdown", &any)["signal"], "SIGTERM");
    assert!(find("drain_start", &any)["timeout_ms"].is_u64());
    assert_eq!(find("drain_finish", &any)["result"], "drained");
    let stopped = find("exit", &|e| e["reason"] == "shutdown");
    assert_eq!(stopped["exit_code"], 0);
    assert_eq!(stopped["level"], "INFO");
    assert_eq!(find("shutdown_complete", &any)["exit_code"], 0);
    let hook = find("hook_start", &|e| e["hook"] == "check");
    assert_eq!(
        (hook["pool"].as_str(), hook["phase"].as_str()),
        (Some(""), Some("on_start"))
    );
    assert_eq!(hook["attempt"], 1);
    assert!(find("hook_finish", &|e| e["hook"] == "check")["duration_s"].is_f64());
    let fail = find("hook_fail", &|e| e["hook"] == "warm");
    assert_eq!(
        (fail["pool"].as_str(), fail["phase"].as_str()),
        (Some("web"), Some("post_spawn"))
    );
    assert_eq!(fail["reason"], "http_status");
    assert_eq!(fail["on_failure"], "skip");
    // Messages kept their wording.
    assert_eq!(spawn["message"], "worker spawned");
    assert_eq!(exit["message"], "worker exited");
}

#[test]
fn post_fork_built_ins_are_one_line_per_spawn_and_their_details_are_debug() {
    let builtins = "    hooks:\n      post_fork:\n        - { seed_env: APP_SEED }\n        - { rlimits: { core: 0 } }\n        - { umask: \"022\" }\n        - { parent_death_signal: SIGTERM }\n";
    let cfg = config_with(&[fixture_pool("web", 4, builtins)], "");
    let fy = Forkyard::start(&cfg);
    fy.wait_workers_ready("web", 4);
    let log = fy.log();
    let done: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=\"post_fork_done\""))
        .collect();
    assert_eq!(done.len(), 4, "one line per spawn:\n{log}");
    assert!(
        done.iter()
            .all(|l| l.contains("builtins=umask, rlimits, parent_death_signal, seed_env")),
        "{done:#?}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("phase=\"post_fork\"") && l.contains("event=\"hook_finish\"")),
        "no per-built-in line at info:\n{log}"
    );
    // At debug, each built-in's own result is there.
    let debug = Forkyard::builder(&cfg).env("RUST_LOG", "debug").start();
    debug.wait_workers_ready("web", 4);
    wait_for_or_log(&debug, SHORT, "a debug line per built-in", || {
        (debug
            .log()
            .lines()
            .filter(|l| l.contains("phase=\"post_fork\"") && l.contains("event=\"hook_finish\""))
            .count()
            >= 16)
            .then_some(())
    });
}
