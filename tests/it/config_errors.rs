//! A broken config is reported with line:column and exit code 78, and nothing starts.

use std::process::Command;

use crate::harness::*;

#[test]
fn broken_config_exits_78_with_locations_before_binding_anything() {
    let port = free_ports(5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "proxy:\n  listen: \"127.0.0.1:{port}\"\npools:\n  web:\n    command: [\"python3\", \"x.py\"]\n    wrokers: 2\n    ports: \"{}-{}\"\n    restart: {{ backoff_max: \"5 sec\" }}\nadmin:\n  listen: \"127.0.0.1:{}\"\n",
            port + 1,
            port + 3,
            port + 4
        ),
    )
    .unwrap();
    // The test holds the proxy and admin addresses: a forkyard that bound them
    // before it validated the file would fail with "cannot listen" and exit 1.
    let _held = [port, port + 4].map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).unwrap());
    for sub in ["run", "check"] {
        let out = Command::new(env!("CARGO_BIN_EXE_forkyard"))
            .args([sub, "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{sub}: {stderr}");
        assert!(!stderr.contains("cannot listen"), "{sub}: {stderr}");
        assert!(
            stderr.contains("config.yaml:6:5"),
            "{sub}: unknown key located: {stderr}"
        );
        assert!(stderr.contains("wrokers"), "{stderr}");
        assert!(
            stderr.contains("config.yaml:8:"),
            "{sub}: bad duration located: {stderr}"
        );
        assert!(stderr.contains("pools.web.restart.backoff_max"), "{stderr}");
        assert!(stderr.contains("5 sec"), "{stderr}");
    }
}

#[test]
fn check_prints_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "pools:\n  web:\n    command: [\"python3\", \"app.py\", \"--port\", \"{port}\"]\n    workers: 2\n    ports: \"9101-9110\"\n",
    )
    .unwrap();
    let CheckRun {
        code,
        stdout,
        stderr,
    } = forkyard_check(&path, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("slot 0: 127.0.0.1:9101"), "{stdout}");
    assert!(stdout.contains("slot 1: 127.0.0.1:9102"), "{stdout}");
    assert!(stdout.contains("\"9102\""), "placeholders filled: {stdout}");
    assert!(
        stdout.contains("0.0.0.0:8080"),
        "default listener: {stdout}"
    );
    assert!(stdout.contains("-> pool web"), "{stdout}");
}

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_forkyard"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_busy_proxy_port_is_a_clear_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = config_with(&[fixture_pool("web", 1, "")], "").replace("{proxy}", &addr.to_string());
    let mut fy = Forkyard::start(&cfg);
    let status = fy.wait_exit(SHORT);
    assert_eq!(status.code(), Some(1));
    assert!(
        fy.log().contains(&format!("cannot listen on {addr}")),
        "{}",
        fy.log()
    );
}
