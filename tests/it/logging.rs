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
