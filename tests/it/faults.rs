//! Fault injection with real worker processes: a worker dying mid-response, a hung
//! worker, a stdout flood, forkyard's own stderr blocked or closed, a daemon left
//! by a hook, EMFILE on accept, and a worker that silently stops listening.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

fn restarts(fy: &Forkyard, reason: &str) -> f64 {
    fy.metric(&format!(
        r#"forkyard_worker_restarts_total{{pool="web",reason="{reason}"}}"#
    ))
    .unwrap_or(-1.0)
}

/// The direct address of slot `slot` of a fixture pool.
fn slot_addr(pool_yaml: &str, slot: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], first_port(pool_yaml) + slot))
}

fn pid_at(addr: SocketAddr) -> Option<i32> {
    http_get(addr, "/", &[]).ok()?.json()["pid"]
        .as_i64()
        .map(|p| p as i32)
}

/// A process's state letter (`R`, `S`, `T`, `Z`…).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(14) + n(15)
}

#[test]
fn faults_a_worker_killed_mid_response_gives_a_clean_error_and_is_restarted() {
    let pool = fixture_pool("web", 2, "");
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 2);
    // Headers and 1000 of 100000 bytes, then the worker is SIGKILLed: the client
    // sees the 200 and a body cut short by a close, within a bound.
    let started = Instant::now();
    let mut s = TcpStream::connect(fy.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /die-mid-body HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(status_of(&raw), Some(200), "{text}");
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    assert!((1..100_000).contains(&body), "body of {body} bytes");
    assert!(started.elapsed() < Duration::from_secs(20));
    wait_for_or_log(&fy, BOOT, "a restart by signal", || {
        (restarts(&fy, "signal") == 1.0).then_some(())
    });
    // Before any header: a POST (never retried once sent) gets 502.
    let r = http_request(fy.proxy, "POST", "/crash", &[], b"x").unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    wait_for_or_log(&fy, BOOT, "a restart by exit code", || {
        (restarts(&fy, "exit_code") == 1.0).then_some(())
    });
    // Nothing else was affected: every request succeeds, both slots serve again.
    fy.wait_workers_ready("web", 2);
    for _ in 0..20 {
        assert_eq!(fy.get("/").unwrap().status, 200);
    }
}

#[test]
fn faults_a_hung_worker_times_out_with_504_and_is_restarted_by_health_checks() {
    let pool = fixture_pool(
        "web",
        2,
        "    retries: 0\n    timeouts: { response_header: \"1s\" }\n    health: { http: \"/\", interval: \"1s\", timeout: \"1s\", unhealthy_after: 4, healthy_after: 1, restart_after: \"1s\" }\n",
    )
    .replace("grace: \"5s\"", "grace: \"1s\"");
    let slot0 = slot_addr(&pool, 0);
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 2);
    let pid0 = pid_at(slot0).unwrap();
    // The worker answers, then SIGSTOPs itself: connects still succeed (the kernel
    // completes them), nothing ever answers.
    assert_eq!(http_get(slot0, "/freeze", &[]).unwrap().status, 200);
    wait_for_or_log(&fy, SHORT, "the worker to be stopped", || {
        (proc_state(pid0) == Some('T')).then_some(())
    });
    let mut codes = Vec::new();
    let started = Instant::now();
    while codes.len() < 4 && !codes.contains(&504) {
        codes.push(fy.get("/").unwrap().status);
    }
    assert!(codes.contains(&504), "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 504), "{codes:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    wait_for_or_log(&fy, BOOT, "a health restart", || {
        (restarts(&fy, "health") >= 1.0).then_some(())
    });
    wait_for_or_log(&fy, BOOT, "slot 0 back with a new process", || {
        pid_at(slot0).filter(|p| *p != pid0)
    });
    wait_for_or_log(&fy, SHORT, "the hung process to be gone", || {
        process_gone(pid0).then_some(())
    });
    fy.wait_workers_ready("web", 2);
}

#[test]
fn faults_a_stdout_flood_never_blocks_forkyard_and_long_lines_are_cut_at_16_kib() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("stop-flood");
    let long = dir.path().join("long.log");
    let pool = fixture_pool(
        "web",
        1,
        &format!("    env: {{ FIXTURE_FLOOD: \"{}\" }}\n", gate.display()),
    );
    // forkyard's log goes through grep, which keeps only the cut lines: the flood
    // itself would fill the test's memory.
    let fy = Forkyard::builder(&config_with(&[pool], ""))
        .shell_prefix(format!(
            "exec 2> >(grep --line-buffered -a 'truncated=true' > {})",
            long.display()
        ))
        .start();
    fy.wait_ready();
    // (A complete line: grep may write a long one in pieces.)
    wait_for_or_log(&fy, SHORT, "a cut line in the log", || {
        std::fs::read_to_string(&long)
            .ok()
            .filter(|t| t.contains('\n'))
    });
    // While the worker floods, the proxy and the admin listener answer promptly.
    for _ in 0..20 {
        let t = Instant::now();
        let r = fy.get("/").unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(fy.admin_get("/metrics").unwrap().status, 200);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
    std::fs::write(&gate, "").unwrap();
    let text = std::fs::read_to_string(&long).unwrap();
    let line = text.lines().next().unwrap();
    let kept = line.chars().filter(|c| *c == 'L').count();
    assert_eq!(kept, 16 * 1024, "a 40 KiB line is cut at 16 KiB");
}

/// A FIFO for forkyard's stderr, and its read end (opened first, so forkyard's
/// open does not block), which the test never reads.
fn stderr_fifo(dir: &Path) -> (std::path::PathBuf, std::fs::File) {
    let fifo = dir.join("stderr.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    (fifo, reader)
}

/// With forkyard's stderr broken by `break_it`, a worker killed with SIGKILL is
/// still restarted and forkyard still serves.
fn supervision_survives_lost_log_output(close_reader: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, reader) = stderr_fifo(dir.path());
    let gate = dir.path().join("stop-flood");
    // A noisy pool fills the pipe (64 KiB) at once.
    let noisy = fixture_pool(
        "noisy",
        1,
        &format!("    env: {{ FIXTURE_FLOOD: \"{}\" }}\n", gate.display()),
    );
    let web = fixture_pool("web", 1, "");
    let routes = "routes:\n  - { path_prefix: \"/noisy\", pool: noisy }\n  - { pool: web }\n";
    let fy = Forkyard::builder(&config_with(&[noisy, web], routes))
        .shell_prefix(format!("exec 2>{}", fifo.display()))
        .start();
    fy.wait_workers_ready("web", 1);
    fy.wait_workers_ready("noisy", 1);
    if close_reader {
        drop(reader);
    } else {
        std::mem::forget(reader);
    }
    wait_for_or_log(&fy, SHORT, "log lines to be dropped", || {
        (fy.metric("forkyard_log_dropped_total")? > 0.0).then_some(())
    });
    let first = fy.get("/").unwrap();
    assert_eq!(first.status, 200, "{first:?}\n{}", fy.status());
    let old = first.json()["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
    wait_for_or_log(&fy, SHORT, "the worker to be restarted", || {
        (restarts(&fy, "signal") == 1.0).then_some(())
    });
    wait_for_or_log(&fy, SHORT, "a new worker to serve", || {
        let r = fy.get("/").ok().filter(|r| r.status == 200)?;
        let pid = r.json()["pid"].as_i64()? as i32;
        (pid != old).then_some(())
    });
    assert_eq!(fy.admin_get("/healthz").unwrap().status, 200);
    std::fs::write(&gate, "").unwrap();
}

#[test]
fn faults_a_blocked_stderr_never_stops_supervision() {
    supervision_survives_lost_log_output(false);
}

#[test]
fn faults_a_closed_stderr_never_stops_supervision() {
    supervision_survives_lost_log_output(true);
}

#[test]
fn faults_a_daemon_started_by_a_hook_is_stopped_when_forkyard_exits() {
    // Double fork and setsid: the daemon leaves the hook's process group, so the
    // group kill at the hook's end misses it. It keeps the hook's stdout open.
    let daemon = "import os, time\nif os.fork():\n    while not os.path.exists('{dir}/daemon.pid'): time.sleep(0.01)\n    os._exit(0)\nos.setsid()\nif os.fork(): os._exit(0)\nopen('{dir}/daemon.pid.tmp', 'w').write(str(os.getpid()))\nos.rename('{dir}/daemon.pid.tmp', '{dir}/daemon.pid')\ntime.sleep(600)\n";
    let pool = fixture_pool(
        "web",
        1,
        &format!(
            "    hooks:\n      pre_fork: [ {{ name: daemonize, run: [\"python3\", \"-c\", {daemon:?}], timeout: \"20s\" }} ]\n"
        ),
    );
    let mut fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let pid: i32 = std::fs::read_to_string(fy.dir().join("daemon.pid"))
        .unwrap()
        .parse()
        .unwrap();
    // The hook finished on time although its daemon holds its stdout.
    assert_eq!(
        fy.metric(r#"forkyard_hook_failures_total{hook="daemonize",phase="pre_fork",pool="web",reason="timeout"}"#),
        Some(0.0)
    );
    // forkyard (a child subreaper) adopted the daemon...
    wait_for_or_log(&fy, SHORT, "the daemon to be adopted", || {
        (ppid(pid) == Some(fy.pid())).then_some(())
    });
    // ...and stops it on the way out.
    let status = fy.signal_and_wait(Signal::SIGTERM, BOOT);
    assert_eq!(status.code(), Some(0), "{}", fy.log());
    assert!(process_gone(pid), "the daemon outlived forkyard");
    assert!(fy
        .log()
        .contains("stopping adopted processes left at shutdown"));
}

#[test]
fn faults_emfile_on_accept_backs_off_instead_of_spinning_and_recovers() {
    let pool = fixture_pool("web", 1, "");
    let cfg = config_with(&[pool], "").replacen(
        "proxy:\n",
        "proxy:\n  client_header_timeout: \"60s\"\n",
        1,
    );
    let fy = Forkyard::builder(&cfg)
        .shell_prefix("ulimit -n 128")
        .start();
    fy.wait_ready();
    assert_eq!(fy.get("/").unwrap().status, 200);
    let mut conns = Vec::new();
    for _ in 0..200 {
        conns.push(TcpStream::connect(fy.proxy).unwrap());
    }
    wait_for_or_log(&fy, SHORT, "accept to fail with EMFILE", || {
        fy.log().contains("Too many open files").then_some(())
    });
    // Saturated for 3 seconds: a spinning accept loop would burn a whole core.
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let (t0, c0) = (Instant::now(), cpu_ticks(fy.pid()));
    wait_for_or_log(&fy, SHORT, "3 seconds of saturation", || {
        (t0.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    let used = (cpu_ticks(fy.pid()) - c0) as f64 / ticks_per_s as f64;
    let window = t0.elapsed().as_secs_f64();
    assert!(
        used < window * 0.3,
        "forkyard used {used:.2}s of CPU in {window:.1}s while out of fds"
    );
    drop(conns);
    wait_for_or_log(&fy, SHORT, "requests to succeed again", || {
        (fy.get("/").ok()?.status == 200).then_some(())
    });
    assert_eq!(fy.admin_get("/healthz").unwrap().status, 200);
}

#[test]
fn faults_a_worker_that_closes_its_listener_is_caught_by_health_checks() {
    let pool = fixture_pool(
        "web",
        2,
        "    health: { http: \"/\", interval: \"200ms\", timeout: \"1s\", unhealthy_after: 2, healthy_after: 1, restart_after: \"1s\" }\n",
    );
    let slot0 = slot_addr(&pool, 0);
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_workers_ready("web", 2);
    let pid0 = pid_at(slot0).unwrap();
    assert_eq!(http_get(slot0, "/close-listener", &[]).unwrap().status, 200);
    // Alive, but refusing connections: clients never notice (connect failures are
    // retried), health checks take it out and restart it.
    let load = Load::to(fy.proxy).start();
    wait_for_or_log(&fy, BOOT, "a health restart", || {
        (restarts(&fy, "health") >= 1.0).then_some(())
    });
    load.finish().assert_no_failures();
    wait_for_or_log(&fy, BOOT, "slot 0 back with a new process", || {
        pid_at(slot0).filter(|p| *p != pid0)
    });
    fy.wait_workers_ready("web", 2);
}
