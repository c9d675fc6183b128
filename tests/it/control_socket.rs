//! The control socket: mode 0600, owned by forkyard's user, so its mode keeps other
//! users out. `forkyard reload`, `scale`, `restart` and `status` find it and work
//! over it, even where the TCP admin listener refuses POSTs. A second forkyard
//! cannot take a live socket, and `admin.socket: false` means none.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::harness::*;

/// A config whose admin listener is on all interfaces (reached on 127.0.0.1), where
/// POSTs without a token answer 403.
fn public_admin(pools: &[String]) -> String {
    config_with(pools, "").replace(
        "  listen: \"{admin}\"",
        "  listen: \"0.0.0.0:{admin_port}\"",
    )
}

/// `extra` added to the `admin:` block of a config.
fn with_admin(pools: &[String], extra: &str) -> String {
    config_with(pools, "").replace(
        "  listen: \"{admin}\"",
        &format!("  listen: \"{{admin}}\"\n  {extra}"),
    )
}

/// The pids of pool `web`'s ready workers.
fn pids(fy: &Forkyard) -> Vec<i64> {
    let status = fy.status();
    let mut pids: Vec<i64> = status["pools"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ready")
        .filter_map(|w| w["pid"].as_i64())
        .collect();
    pids.sort_unstable();
    pids
}

/// The socket forkyard says it serves (its start-up log line).
fn socket_of(fy: &Forkyard) -> PathBuf {
    wait_for_or_log(fy, SHORT, "the control socket's log line", || {
        fy.log().lines().find_map(|l| {
            l.contains("control socket ready")
                .then(|| l.split("path=").nth(1)?.split_whitespace().next())
                .flatten()
                .map(PathBuf::from)
        })
    })
}

fn assert_private_socket(path: &Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(meta.file_type().is_socket(), "{}", path.display());
    assert_eq!(meta.mode() & 0o7777, 0o600, "{}", path.display());
    assert_eq!(
        meta.uid(),
        nix::unistd::geteuid().as_raw(),
        "forkyard's user"
    );
}

#[test]
fn reload_scale_and_restart_over_the_default_socket_change_what_runs() {
    let pool = fixture_pool("web", 3, "    env: { MARK: one }\n");
    let start = pool.replace("workers: 3", "workers: 1");
    let fy = Forkyard::start(&public_admin(&[start]));
    fy.wait_ready();
    let config = fy.dir().join("config.yaml");
    let c = config.to_str().unwrap();
    // The TCP listener refuses POSTs here, so what changes below went over the socket.
    let r = http_post(fy.admin, "/pools/web/scale?workers=3").unwrap();
    assert_eq!(r.status, 403, "{r:?}");

    let socket = socket_of(&fy);
    assert_private_socket(&socket);
    assert_eq!(
        socket.file_name().unwrap().to_string_lossy(),
        format!("forkyard-{}.sock", fy.admin.port()),
        "the default socket is named after the admin port"
    );

    // The commands find the socket from the config file alone.
    let run = forkyard_cli(&["scale", "web", "3", "-c", c]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "pool web: 1 -> 3 workers\n");
    fy.wait_workers_ready("web", 3);

    let before = pids(&fy);
    let run = forkyard_cli(&["restart", "web", "-c", c]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "pool web: every worker replaced\n");
    let restarted = pids(&fy);
    assert_eq!(restarted.len(), 3, "{restarted:?}");
    assert!(
        restarted.iter().all(|p| !before.contains(p)),
        "every worker is new: {before:?} -> {restarted:?}"
    );

    fy.write_config(&public_admin(&[pool.replace("MARK: one", "MARK: two")]));
    let run = forkyard_cli(&["reload", "-c", c]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.starts_with("ok: ") && run.stdout.contains("web: replaced"),
        "{run:?}"
    );
    let reloaded = pids(&fy);
    assert_eq!(reloaded.len(), 3, "{reloaded:?}");
    assert!(reloaded.iter().all(|p| !restarted.contains(p)));
    assert_eq!(fy.get("/info").unwrap().json()["env"]["MARK"], "two");

    let run = forkyard_cli(&["status", "--socket", socket.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("ready; web 3/3 ready"), "{run:?}");

    // Failures exit 1 and print the server's answer.
    let run = forkyard_cli(&["scale", "nope", "2", "-c", c]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("no pool named \"nope\""), "{run:?}");
    let run = forkyard_cli(&["scale", "web", "999", "-c", c]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("can run 1 to 5 workers"), "{run:?}");
    let run = forkyard_cli(&["reload", "--socket", "/nonexistent/forkyard.sock"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("/nonexistent/forkyard.sock"), "{run:?}");
    assert_eq!(pids(&fy), reloaded, "the failed commands changed nothing");

    let mut fy = fy;
    let status = fy.signal_and_wait(Signal::SIGTERM, SHORT);
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[test]
fn another_user_is_refused_by_the_sockets_mode() {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root, to run a command as the user nobody");
    }
    let Some(setpriv) = which("setpriv") else {
        return skip("setpriv (util-linux) is not installed");
    };
    let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
        return skip("this machine has no user nobody");
    };
    let pool = fixture_pool("web", 2, "").replace("workers: 2", "workers: 1");
    let fy = Forkyard::start(&with_admin(&[pool], "socket: \"{dir}/forkyard.sock\""));
    fy.wait_ready();
    let socket = fy.dir().join("forkyard.sock");
    assert_eq!(socket_of(&fy), socket);
    assert_private_socket(&socket);
    // Only the socket's own mode stands in the way: its directory is open to all.
    std::fs::set_permissions(fy.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let s = socket.to_str().unwrap();
    let as_nobody = |args: &[&str]| {
        run_cli(
            Command::new(&setpriv)
                .arg(format!("--reuid={}", nobody.uid))
                .arg(format!("--regid={}", nobody.gid))
                .arg("--clear-groups")
                .arg(forkyard_bin())
                .args(args)
                .current_dir("/"),
        )
    };
    for args in [
        &["scale", "web", "2", "--socket", s][..],
        &["reload", "--socket", s],
        &["restart", "web", "--socket", s],
    ] {
        let run = as_nobody(args);
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("Permission denied"),
            "{args:?}: {run:?}"
        );
    }
    assert_eq!(
        fy.metric(r#"forkyard_config_reloads_total{result="ok"}"#),
        Some(0.0)
    );
    assert_eq!(
        fy.metric(r#"forkyard_workers{pool="web",state="ready"}"#),
        Some(1.0)
    );

    // The control: with the mode opened, the same user gets through, so it was the
    // mode that refused.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = as_nobody(&["scale", "web", "2", "--socket", s]);
    assert_eq!(run.code, Some(0), "{run:?}");
    fy.wait_workers_ready("web", 2);
}

#[test]
fn a_live_socket_keeps_a_second_forkyard_out_and_false_means_no_socket() {
    let fy = Forkyard::start(&with_admin(
        &[fixture_pool("web", 1, "")],
        "socket: \"{dir}/forkyard.sock\"",
    ));
    fy.wait_ready();
    let socket = fy.dir().join("forkyard.sock");
    let taken = format!("socket: \"{}\"", socket.display());
    let mut second = Forkyard::start(&with_admin(&[fixture_pool("web", 1, "")], &taken));
    let status = second.wait_exit(SHORT);
    assert_eq!(status.code(), Some(1), "{}", second.log());
    let log = second.log();
    assert!(
        log.contains(&format!(
            "{} is in use: another forkyard answers on it",
            socket.display()
        )),
        "{log}"
    );
    assert!(
        !log.contains("worker spawned"),
        "nothing was started: {log}"
    );
    // The first one still owns it.
    let run = forkyard_cli(&["status", "--socket", socket.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!("(pid {},", fy.pid())),
        "{run:?}"
    );

    let off = Forkyard::start(&with_admin(&[fixture_pool("web", 1, "")], "socket: false"));
    off.wait_ready();
    assert!(!off.log().contains("control socket ready"), "{}", off.log());
    let config = off.dir().join("config.yaml");
    let run = forkyard_cli(&["reload", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("admin.socket: false"), "{run:?}");
    // `status` falls back to the admin listener.
    let run = forkyard_cli(&["status", "-c", config.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!("(pid {},", off.pid())),
        "{run:?}"
    );
}
