//! systemd `Type=notify`: forkyard sends `READY=1` to `$NOTIFY_SOCKET` once every pool
//! has a ready worker (not before), `STOPPING=1` at shutdown, and keeps the socket
//! from its workers. Checked with a real unix datagram socket, by path and in the
//! abstract namespace.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

/// Receive one datagram within `timeout`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Two pools, one of which becomes ready 2 s late: READY=1 must wait for it.
fn config() -> String {
    let web = fixture_pool("web", 2, "");
    // `sh` reports whether the worker inherited NOTIFY_SOCKET, then runs the fixture.
    let late = fixture_pool("late", 1, "    env: { FIXTURE_READY_DELAY: \"2\" }\n").replace(
        &format!("command: [\"python3\", \"{}\"]", fixture_worker().display()),
        &format!(
            "command: [\"sh\", \"-c\", \"echo worker sees NOTIFY_SOCKET=$${{NOTIFY_SOCKET:-unset}}; exec python3 {}\"]",
            fixture_worker().display()
        ),
    );
    assert!(late.contains("sh\", \"-c\""), "{late}");
    config_with(
        &[web, late],
        "routes:\n  - { path_prefix: \"/late\", pool: late }\n  - { pool: web }\n",
    )
}

fn ready_then_stopping(sock: UnixDatagram, socket_env: &str) {
    let mut fy = Forkyard::builder(&config())
        .env("NOTIFY_SOCKET", socket_env)
        .start();
    let started = Instant::now();
    let ready =
        recv(&sock, BOOT).unwrap_or_else(|| panic!("no READY=1 within {BOOT:?}\n{}", fy.log()));
    // Received first, checked second: had forkyard sent it early, /readyz would
    // still be 503 here (the late pool needs 2 s).
    let readyz = fy.admin_get("/readyz").unwrap();
    assert_eq!(
        readyz.status, 200,
        "READY=1 came before readiness: {}",
        readyz.body
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut lines = ready.lines();
    assert_eq!(lines.next(), Some("READY=1"), "{ready}");
    let status = lines.next().unwrap_or_default();
    assert!(status.starts_with("STATUS=ready: web "), "{ready}");
    assert!(status.contains("late 1/1"), "{ready}");
    assert!(
        recv(&sock, Duration::from_millis(300)).is_none(),
        "READY=1 is sent once"
    );

    let exit = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(exit.code(), Some(0));
    assert_eq!(recv(&sock, SHORT).as_deref(), Some("STOPPING=1"));
    let log = fy.log();
    assert!(log.contains("worker sees NOTIFY_SOCKET=unset"), "{log}");
    assert!(log.contains("event=\"pools_ready\""), "{log}");
}

#[test]
fn ready_1_over_a_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    ready_then_stopping(sock, path.to_str().unwrap());
}

#[test]
fn ready_1_over_an_abstract_socket() {
    let name = format!("forkyard-it-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    ready_then_stopping(sock, &format!("@{name}"));
}
