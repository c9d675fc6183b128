//! Scaling at runtime: `POST /pools/<name>/scale?workers=N` and SIGTTIN/SIGTTOU.

use std::collections::HashSet;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

fn ready(fy: &Forkyard, pool: &str) -> Option<f64> {
    fy.metric(&format!(
        r#"forkyard_workers{{pool="{pool}",state="ready"}}"#
    ))
}

fn slots_answering(fy: &Forkyard) -> HashSet<String> {
    (0..24)
        .filter_map(|_| Some(fy.get("/").ok()?.json()["slot"].as_str()?.to_string()))
        .collect()
}

#[test]
fn scale_endpoint_adds_and_drains_workers() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let r = http_post(fy.admin, "/pools/web/scale?workers=3").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("1 -> 3"), "{r:?}");
    wait_for_or_log(&fy, BOOT, "3 ready workers", || {
        (ready(&fy, "web")? == 3.0).then_some(())
    });
    assert_eq!(
        slots_answering(&fy),
        HashSet::from(["0".into(), "1".into(), "2".into()])
    );
    let pids: HashSet<i64> = (0..12)
        .map(|_| fy.get("/").unwrap().json()["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(
        http_post(fy.admin, "/pools/web/scale?workers=1")
            .unwrap()
            .status,
        200
    );
    wait_for_or_log(&fy, BOOT, "1 worker left", || {
        (ready(&fy, "web")? == 1.0
            && fy.metric(r#"forkyard_workers{pool="web",state="stopping"}"#)? == 0.0)
            .then_some(())
    });
    assert_eq!(slots_answering(&fy), HashSet::from(["0".into()]));
    let gone = pids.iter().filter(|p| process_gone(**p as i32)).count();
    assert_eq!(gone, 2, "the two removed workers exited");
    // Bad requests are refused with a reason.
    let too_many = http_post(fy.admin, "/pools/web/scale?workers=500").unwrap();
    assert_eq!(too_many.status, 400, "{too_many:?}");
    assert!(too_many.body.contains("port range"), "{too_many:?}");
    assert_eq!(
        http_post(fy.admin, "/pools/nope/scale?workers=2")
            .unwrap()
            .status,
        404
    );
    assert_eq!(http_post(fy.admin, "/pools/web/scale").unwrap().status, 400);
    assert_eq!(
        fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="exit_code"}"#),
        Some(0.0),
        "a drain is not a crash"
    );
}

#[test]
fn sigttin_and_sigttou_add_and_remove_one_worker_per_pool() {
    let fy = Forkyard::start(&config_with(&[fixture_pool("web", 1, "")], ""));
    fy.wait_ready();
    let pid = Pid::from_raw(fy.pid());
    kill(pid, Signal::SIGTTIN).unwrap();
    wait_for_or_log(&fy, BOOT, "2 workers", || {
        (ready(&fy, "web")? == 2.0).then_some(())
    });
    kill(pid, Signal::SIGTTOU).unwrap();
    wait_for_or_log(&fy, BOOT, "back to 1 worker", || {
        (ready(&fy, "web")? == 1.0
            && fy.metric(r#"forkyard_workers{pool="web",state="stopping"}"#)? == 0.0)
            .then_some(())
    });
    // Never below one worker.
    kill(pid, Signal::SIGTTOU).unwrap();
    wait_for_or_log(&fy, SHORT, "the refusal in the log", || {
        fy.log().contains("scale request ignored").then_some(())
    });
    assert_eq!(ready(&fy, "web"), Some(1.0));
}
