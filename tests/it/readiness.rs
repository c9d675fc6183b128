//! Workers get traffic only once ready; with no ready worker the proxy answers 503.

use crate::harness::*;

#[test]
fn a_worker_that_never_becomes_ready_gets_no_traffic() {
    // Slot 1 listens but fails its HTTP ready probe forever.
    let pool = fixture_pool(
        "web",
        2,
        "    env: { FIXTURE_NOT_READY_SLOT: \"1\" }\n    ready: { http: \"/ready\", timeout: \"5m\" }\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    // Slot 1 is up and answering (its probe gets 503), but it must never get a request.
    wait_for_or_log(&fy, SHORT, "slot 1 to be starting", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="starting"}"#) == Some(1.0)).then_some(())
    });
    for _ in 0..30 {
        let r = fy.get("/").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["slot"], "0", "only the ready worker answers");
    }
    assert_eq!(
        fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#),
        Some(1.0)
    );
}

#[test]
fn a_late_worker_joins_once_ready() {
    let pool = fixture_pool(
        "web",
        2,
        "    env: { FIXTURE_READY_DELAY_SLOT: \"1\", FIXTURE_READY_DELAY: \"2\" }\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "the late slot to answer", || {
        let r = fy.get("/").ok()?;
        assert_eq!(r.status, 200, "{r:?}");
        (r.json()["slot"] == "1").then_some(())
    });
}

#[test]
fn no_ready_worker_means_503_with_a_body() {
    let pool = fixture_pool("web", 1, "    env: { FIXTURE_NEVER_READY: \"1\" }\n");
    let fy = Forkyard::start(&config_with(&[pool], ""));
    let r = wait_for_or_log(&fy, BOOT, "the proxy to answer", || fy.get("/").ok());
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("no ready worker"), "{r:?}");
    assert!(r.headers["content-type"].starts_with("text/plain"), "{r:?}");
    let ready = fy.admin_get("/readyz").unwrap();
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("web"), "{ready:?}");
    assert_eq!(fy.admin_get("/healthz").unwrap().status, 200);
}
