//! `bind: inherit`: forkyard binds each slot's socket, keeps it across restarts,
//! and passes it as fd 3 (systemd socket activation). Connections that arrive
//! while the worker restarts wait in the kernel backlog instead of being refused.

use std::net::SocketAddr;
use std::path::Path;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::examples::venv;
use crate::harness::*;

/// Kill the worker behind `slot_addr` (its whole process group) and, once it is
/// gone and before it is back (the restart backoff is 1 s), fire requests at the
/// slot's socket directly: every one must be answered by the restarted worker.
fn queued_requests_survive_a_restart(fy: &Forkyard, slot_addr: SocketAddr, pid: i32) {
    nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_for_or_log(fy, SHORT, "the worker to be gone", || {
        process_gone(pid).then_some(())
    });
    let clients: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http_get(slot_addr, "/", &[])))
        .collect();
    for c in clients {
        let r = c
            .join()
            .unwrap()
            .expect("queued request answered, not refused");
        assert_eq!(r.status, 200, "{r:?}");
        assert_ne!(
            r.json()["pid"].as_i64(),
            Some(i64::from(pid)),
            "served by the new worker"
        );
    }
    wait_for_or_log(fy, BOOT, "the worker back in the balancer", || {
        (fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#)? == 1.0).then_some(())
    });
    assert_eq!(fy.get("/").unwrap().status, 200);
}

fn slot0(port_base: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port_base))
}

#[test]
fn the_fixture_gets_fd_3_with_the_systemd_variables() {
    let port = free_ports(4);
    let pool = format!(
        "  web:\n    command: [\"python3\", \"{}\"]\n    ports: \"{port}-{}\"\n    bind: inherit\n    ready: {{ http: \"/ready\" }}\n    restart: {{ backoff_min: \"1s\", backoff_max: \"1s\" }}\n",
        fixture_worker().display(),
        port + 3
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let info = fy.get("/info").unwrap().json();
    assert_eq!(info["env"]["LISTEN_FDS"], "1");
    assert_eq!(info["env"]["LISTEN_PID"], info["pid"].to_string());
    assert_eq!(info["env"]["LISTEN_FDNAMES"], "web");
    let fds: Vec<i64> = info["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(fds, [0, 1, 2, 3], "exactly the passed socket besides stdio");
    queued_requests_survive_a_restart(&fy, slot0(port), info["pid"].as_i64().unwrap() as i32);
}

fn real_server(command: &str) {
    let Some(venv) = venv() else { return };
    let apps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps");
    let port = free_ports(4);
    let pool = format!(
        "  web:\n    command: {command}\n    cwd: \"{}\"\n    ports: \"{port}-{}\"\n    bind: inherit\n    ready: {{ http: \"/\", timeout: \"60s\" }}\n    restart: {{ backoff_min: \"1s\", backoff_max: \"1s\" }}\n    stop: {{ grace: \"5s\" }}\n",
        apps.display(),
        port + 3
    )
    .replace("VENV", &venv.display().to_string());
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let first = fy.get("/").unwrap().json();
    let mut pid = first["pid"].as_i64().unwrap() as i32;
    // gunicorn answers from a worker it forked; forkyard's worker is its master.
    if first["server"] == "gunicorn" {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        pid = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
    }
    let restarts = r#"forkyard_worker_restarts_total{pool="web",reason="signal"}"#;
    assert_eq!(fy.metric(restarts), Some(0.0));
    queued_requests_survive_a_restart(&fy, slot0(port), pid);
    assert_eq!(
        fy.metric(restarts),
        Some(1.0),
        "forkyard restarted the app server"
    );
}

#[test]
fn gunicorn_serves_from_fd_3_and_queued_requests_survive_its_restart() {
    // gunicorn's master is the worker process forkyard starts; its own worker answers.
    // gunicorn reads LISTEN_FDS itself; adding `--bind fd://3` on top makes gunicorn
    // 27 take fd 3 twice and fail with EBADF, so the flag is left out.
    real_server(r#"["VENV/bin/gunicorn", "--workers", "1", "wsgi:app"]"#);
}

#[test]
fn uvicorn_serves_from_fd_3_and_queued_requests_survive_its_restart() {
    real_server(r#"["VENV/bin/uvicorn", "--fd", "3", "asgi:app"]"#);
}
