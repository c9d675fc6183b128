//! `forkyard check` looks for each pool's program as its worker would: in the
//! pool's `cwd`, on the workers' `PATH`, with execute permission for the worker's
//! user. What it finds is a warning with the program's `file:line:column`, and
//! `--strict` turns every warning (risky settings too) into an error, exit 78.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::*;

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `forkyard check [--strict] -c path`.
fn check(path: &Path, strict: bool) -> CheckRun {
    let p = path.to_str().unwrap();
    if strict {
        forkyard_cli(&["check", "--strict", "-c", p])
    } else {
        forkyard_cli(&["check", "-c", p])
    }
}

/// A pool `web` that runs `command` with `extra` pool keys, as a user that can
/// run a world-executable program, so root's `workers_as_root` warning stays out.
fn config(command: &str, extra: &str) -> String {
    format!(
        "pools:\n  web:\n    command: {command}\n    ports: 9001-9010\n{extra}    hooks:\n      post_fork: [ {{ user: nobody }} ]\n"
    )
}

#[test]
fn a_missing_program_is_a_warning_and_strict_makes_it_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    write(
        &path,
        &config("[\"/nonexistent/bin/app\", \"{port}\"]", ""),
        0o644,
    );
    let run = check(&path, false);
    assert_eq!(run.code, Some(0), "a warning only: {run:?}");
    assert!(
        run.stdout.contains("pool web:"),
        "the plan is printed: {run:?}"
    );
    let expected = format!(
        "warning: {}:3:15: pools.web.command[0]: program \"/nonexistent/bin/app\" not found",
        path.display()
    );
    assert!(run.stderr.contains(&expected), "{run:?}");

    let run = check(&path, true);
    assert_eq!(run.code, Some(78), "{run:?}");
    assert!(
        run.stderr.contains(&expected.replace("warning:", "error:")),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("1 warning(s)") && run.stderr.contains("--strict makes errors"),
        "{run:?}"
    );

    // The control: a program that exists passes, even with --strict.
    write(&path, &config("[\"/bin/sh\", \"-c\", \"true\"]", ""), 0o644);
    let run = check(&path, true);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");

    // --strict covers the risky settings too: a config others can write.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = check(&path, true);
    assert_eq!(run.code, Some(78), "{run:?}");
    assert!(
        run.stderr.contains("error: config file") && run.stderr.contains("(mode 666)"),
        "{run:?}"
    );
}

#[test]
fn a_program_that_is_not_executable_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = dir.path().join("app");
    write(&app, "#!/bin/sh\nexit 0\n", 0o644);
    let path = dir.path().join("config.yaml");
    write(
        &path,
        &config(&format!("[\"{}\"]", app.display()), ""),
        0o644,
    );
    let run = check(&path, false);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "pools.web.command[0]: program \"{}\" ({}) is not a file executable by",
            app.display(),
            app.display()
        )),
        "{run:?}"
    );
    assert_eq!(check(&path, true).code, Some(78));

    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = check(&path, true);
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[test]
fn the_program_is_resolved_as_the_worker_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    write(&bin.join("myapp"), "#!/bin/sh\nexit 0\n", 0o755);
    let path = dir.path().join("config.yaml");
    let warned = |yaml: &str| {
        write(&path, yaml, 0o644);
        let run = check(&path, false);
        assert_eq!(run.code, Some(0), "{run:?}");
        run.stderr.contains("pools.web.command[0]")
    };

    // A bare name: on the PATH the pool's env sets, not on forkyard's.
    let on_path = format!("    env: {{ PATH: \"/nonexistent:{}\" }}\n", bin.display());
    assert!(!warned(&config("[myapp]", &on_path)));
    assert!(warned(&config("[myapp]", "")), "not on forkyard's PATH");
    assert!(warned(&config(
        "[sh]",
        &format!("    env: {{ PATH: \"{}\" }}\n", bin.display())
    )));

    // A relative path: from the pool's cwd, not from where check runs.
    let cwd = format!("    cwd: \"{}\"\n", dir.path().display());
    assert!(!warned(&config("[\"./bin/myapp\"]", &cwd)));
    assert!(warned(&config("[\"./bin/myapp\"]", "")));

    // Run as the pool's post_fork user when forkyard is root.
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root, to check the program as the pool's post_fork user");
    }
    let mine = dir.path().join("mine");
    write(&mine, "#!/bin/sh\nexit 0\n", 0o700);
    write(
        &path,
        &config(&format!("[\"{}\"]", mine.display()), ""),
        0o644,
    );
    let run = check(&path, false);
    assert!(
        run.stderr
            .contains("is not a file executable by user nobody (the pool's post_fork user)"),
        "root may run it, the worker's user may not: {run:?}"
    );
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = check(&path, true);
    assert_eq!(run.code, Some(0), "{run:?}");
}
