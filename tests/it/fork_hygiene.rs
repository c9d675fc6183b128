//! Fork hygiene, proved with a fixture that reports what it inherited: fds, env,
//! seeds, and the effect of every post_fork built-in.

use std::collections::HashSet;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

/// `/info` from the worker in `slot`.
fn info_of(fy: &Forkyard, slot: &str) -> serde_json::Value {
    wait_for_or_log(fy, SHORT, "an answer from the slot", || {
        let j = http_get(fy.proxy, "/info", &[]).ok()?.json();
        (j["env"]["FORKYARD_WORKER"] == slot).then_some(j)
    })
}

fn fds(info: &serde_json::Value) -> Vec<i64> {
    info["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// forkyard is started with fds 7 and 9 open and inheritable, as a careless parent
/// (a container runtime, a shell) might leave them.
fn leaky_start(extra: &str) -> Forkyard {
    Forkyard::builder(&config_with(&[fixture_pool("web", 1, extra)], ""))
        .shell_prefix("exec 7</dev/null 9</etc/hostname")
        .env("FORKYARD_INTERNAL_SECRET", "must-not-leak")
        .start()
}

#[test]
fn a_worker_sees_only_fds_0_1_2_and_no_internal_env() {
    let fy = leaky_start("");
    fy.wait_ready();
    let info = info_of(&fy, "0");
    assert_eq!(fds(&info), [0, 1, 2], "{info}");
    let env = info["env"].as_object().unwrap();
    let ours: HashSet<&str> = env
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("FORKYARD_"))
        .collect();
    assert_eq!(
        ours,
        HashSet::from(["FORKYARD_POOL", "FORKYARD_WORKER", "FORKYARD_PORT"]),
        "{env:?}"
    );
}

#[test]
fn without_close_fds_the_leak_is_visible() {
    // The same check fails when the built-in is turned off: the test can tell.
    let fy = leaky_start("    hooks:\n      post_fork: [ { close_fds: false } ]\n");
    fy.wait_ready();
    let fds = fds(&info_of(&fy, "0"));
    assert!(fds.contains(&7) && fds.contains(&9), "{fds:?}");
}

#[test]
fn seed_env_differs_between_workers_and_spawns() {
    let pool = fixture_pool(
        "web",
        2,
        "    hooks:\n      post_fork: [ { seed_env: APP_SEED } ]\n",
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let a = info_of(&fy, "0");
    let b = info_of(&fy, "1");
    let seed = |i: &serde_json::Value| i["env"]["APP_SEED"].as_str().unwrap().to_string();
    let (sa, sb) = (seed(&a), seed(&b));
    assert_eq!(sa.len(), 64, "256 bits as hex: {sa}");
    assert!(sa.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(sa, sb, "two workers");
    kill(
        Pid::from_raw(a["pid"].as_i64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let again = wait_for_or_log(&fy, BOOT, "slot 0 respawned", || {
        let i = http_get(fy.proxy, "/info", &[]).ok()?.json();
        (i["env"]["FORKYARD_WORKER"] == "0" && i["pid"] != a["pid"]).then_some(i)
    });
    let sa2 = seed(&again);
    assert_ne!(sa2, sa, "two spawns of the same slot");
    assert_ne!(sa2, sb);
}

#[test]
fn builtins_shape_the_worker_process() {
    let pool = fixture_pool(
        "web",
        1,
        r#"    hooks:
      post_fork:
        - { setsid: true }
        - { umask: "027" }
        - { rlimits: { nofile: 1000, core: 0 } }
        - { nice: 5 }
        - { oom_score_adj: 500 }
        - { name: pdeath, parent_death_signal: SIGTERM }
        - { name: probe, run: ["sh", "-c", "umask > {dir}/hook-umask; ulimit -n >> {dir}/hook-umask"] }
"#,
    );
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let info = info_of(&fy, "0");
    let pid = info["pid"].as_i64().unwrap();
    assert_eq!(info["sid"].as_i64(), Some(pid), "setsid: {info}");
    assert_eq!(info["pgid"].as_i64(), Some(pid));
    assert_eq!(info["umask"], "027");
    assert_eq!(info["nofile"], 1000);
    assert_eq!(info["nice"], 5);
    assert_eq!(info["oom_score_adj"], 500);
    // The run: hook ran inside the worker process, with the worker's limits.
    let hook_view = std::fs::read_to_string(fy.dir().join("hook-umask")).unwrap();
    assert_eq!(
        hook_view.split_whitespace().collect::<Vec<_>>(),
        ["0027", "1000"]
    );
    for name in [
        "post_fork.0",
        "post_fork.1",
        "post_fork.2",
        "post_fork.3",
        "post_fork.4",
        "pdeath",
        "probe",
    ] {
        assert_eq!(
            fy.metric(&format!(
                r#"forkyard_hook_runs_total{{hook="{name}",phase="post_fork",pool="web"}}"#
            )),
            Some(1.0),
            "{name}"
        );
    }
}

#[test]
fn parent_death_signal_reaches_the_worker_when_forkyard_dies() {
    let pool = fixture_pool(
        "web",
        1,
        "    hooks:\n      post_fork: [ { setsid: true }, { parent_death_signal: SIGTERM } ]\n",
    );
    let mut fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let pid = info_of(&fy, "0")["pid"].as_i64().unwrap() as i32;
    // SIGKILL gives forkyard no chance to stop its workers itself.
    fy.signal_and_wait(Signal::SIGKILL, SHORT);
    wait_for(SHORT, "the orphaned worker to get SIGTERM and exit", || {
        process_gone(pid).then_some(())
    });
}

#[test]
fn user_and_group_drop_privileges_when_root() {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (run the suite as root to cover it)");
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    // The system interpreter by absolute path: `nobody` may not be able to search
    // every PATH entry root has (a pyenv shim under /root, say).
    let python = "/usr/bin/python3";
    // `nobody` must be able to reach the interpreter, the fixture and the repo: not
    // so in a chroot whose root directory is private (mode 0700), for example.
    let reachable = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        p.ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
    };
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if !std::path::Path::new(python).exists()
        || !reachable(std::path::Path::new(python))
        || !reachable(&fixture_worker())
        || !reachable(&repo.join("x"))
    {
        return skip(&format!(
            "{python}, the fixture or the repository is not reachable by other users here"
        ));
    }
    let pool = fixture_pool(
        "web",
        1,
        "    hooks:\n      post_fork: [ { user: nobody } ]\n",
    )
    .replace("[\"python3\",", &format!("[\"{python}\","));
    let fy = Forkyard::start(&config_with(&[pool], ""));
    fy.wait_ready();
    let info = info_of(&fy, "0");
    assert_eq!(
        info["uid"].as_u64(),
        Some(u64::from(nobody.uid.as_raw())),
        "{info}"
    );
    assert_eq!(info["gid"].as_u64(), Some(u64::from(nobody.gid.as_raw())));
    assert_eq!(info["env"]["USER"], "nobody");
}
