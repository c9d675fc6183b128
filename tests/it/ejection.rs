//! Outlier ejection: a worker that keeps failing is left out for its ejection time,
//! then comes back.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn a_failing_worker_is_ejected_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("fail");
    std::fs::write(&gate, "").unwrap();
    let extra = format!(
        "    eject: {{ consecutive_failures: 2, base_time: \"6s\", max_time: \"6s\", max_percent: 50 }}\n    env: {{ FIXTURE_FAIL_SLOT: \"1\", FIXTURE_FAIL_FILE: \"{}\" }}\n",
        gate.display()
    );
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 2, &extra)], ""));
    fy.wait_workers_ready("web", 2);
    let ejections = r#"forkyard_worker_ejections_total{pool="web",worker="1"}"#;
    wait_for_or_log(&fy, SHORT, "slot 1 to be ejected", || {
        let _ = fy.get("/flaky");
        (fy.metric(ejections) == Some(1.0)).then_some(())
    });
    let ejected_at = Instant::now();
    std::fs::remove_file(&gate).unwrap();
    // While ejected, everything goes to slot 0: every request of a window of 4 s,
    // well inside the 6 s (slot 1 is healthy again, and round robin would give it
    // every other request).
    let mut checked = 0;
    while ejected_at.elapsed() < Duration::from_secs(4) {
        let slot = fy.slot_of("/", &[]);
        assert_eq!(
            slot, 0,
            "ejected slot 1 got request {checked} of the window"
        );
        checked += 1;
    }
    assert!(
        checked >= 30,
        "only {checked} requests fitted in the 4 s window: not a sustained check"
    );
    let back = wait_for_or_log(&fy, SHORT, "slot 1 to come back", || {
        (fy.slot_of("/", &[]) == 1).then(|| ejected_at.elapsed())
    });
    assert!(back >= Duration::from_secs(3), "came back after {back:?}");
    assert_eq!(fy.metric(ejections), Some(1.0));
}
