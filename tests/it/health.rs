//! Active health checks: an unhealthy worker leaves the load balancer at once, comes
//! back when healthy, and is restarted if it stays unhealthy.

use std::net::SocketAddr;

use crate::harness::*;

const HEALTH: &str = "    health: { http: \"/healthz\", interval: \"200ms\", timeout: \"1s\", unhealthy_after: 2, healthy_after: 2, restart_after: \"RESTART\" }\n";

/// The direct address and pid of the worker in `slot`.
fn worker(fy: &Forkyard, slot: &str) -> (SocketAddr, i64) {
    wait_for_or_log(fy, SHORT, "an answer from the slot", || {
        let j = fy.get("/info").ok()?.json();
        (j["env"]["FORKYARD_WORKER"] == slot).then(|| {
            let port: u16 = j["env"]["FORKYARD_PORT"].as_str().unwrap().parse().unwrap();
            (
                SocketAddr::from(([127, 0, 0, 1], port)),
                j["pid"].as_i64().unwrap(),
            )
        })
    })
}

fn state(fy: &Forkyard, state: &str) -> Option<f64> {
    fy.metric(&format!(
        r#"forkyard_workers{{pool="web",state="{state}"}}"#
    ))
}

#[test]
fn an_unhealthy_worker_leaves_the_balancer_and_returns_when_healthy() {
    let pool = fixture_pool("web", 2, &HEALTH.replace("RESTART", "5m"));
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "2 ready", || {
        (state(&fy, "ready")? == 2.0).then_some(())
    });
    let (addr0, _) = worker(&fy, "0");
    http_get(addr0, "/sick", &[]).unwrap();
    wait_for_or_log(&fy, SHORT, "slot 0 unhealthy", || {
        (state(&fy, "unhealthy")? == 1.0).then_some(())
    });
    for _ in 0..20 {
        let r = fy.get("/").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["slot"], "1", "an unhealthy worker gets no traffic");
    }
    http_get(addr0, "/heal", &[]).unwrap();
    wait_for_or_log(&fy, SHORT, "slot 0 healthy again", || {
        (state(&fy, "ready")? == 2.0).then_some(())
    });
    wait_for_or_log(&fy, SHORT, "slot 0 to get traffic again", || {
        (fy.get("/").ok()?.json()["slot"] == "0").then_some(())
    });
    assert_eq!(
        fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="health"}"#),
        Some(0.0)
    );
}

#[test]
fn a_worker_unhealthy_for_restart_after_is_restarted() {
    let pool = fixture_pool("web", 2, &HEALTH.replace("RESTART", "1s"));
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "2 ready", || {
        (state(&fy, "ready")? == 2.0).then_some(())
    });
    let (addr0, pid0) = worker(&fy, "0");
    http_get(addr0, "/sick", &[]).unwrap();
    wait_for_or_log(&fy, BOOT, "a health restart", || {
        (fy.metric(r#"forkyard_worker_restarts_total{pool="web",reason="health"}"#)? == 1.0)
            .then_some(())
    });
    wait_for_or_log(&fy, BOOT, "slot 0 back with a new process", || {
        let (_, pid) = worker(&fy, "0");
        (pid != pid0 && state(&fy, "ready")? == 2.0).then_some(())
    });
}
