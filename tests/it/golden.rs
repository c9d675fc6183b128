//! The golden corpus of broken configs: every `tests/config_corpus/NN-name.yaml` is
//! one distinct mistake, and `NN-name.expected` holds the exact stderr of
//! `forkyard check -c config.yaml` on it. Each file is copied to a fresh directory as
//! `config.yaml` (so messages read `config.yaml:L:C: …` wherever the repository
//! lives) and checked with an empty environment (so `${VAR}` cases do not depend on
//! the caller's). `forkyard run` on the same file must fail the same way, exit 78
//! and start nothing.
//!
//! `UPDATE_GOLDEN=1 cargo test --test it golden` rewrites the `.expected` files;
//! review the diff before committing it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The corpus must keep covering at least this many distinct mistakes.
const MIN_CASES: usize = 30;

fn corpus() -> Vec<PathBuf> {
    let dir = repo().join("tests/config_corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Run forkyard `sub -c config.yaml` in `dir` with an empty environment; kill it if
/// it is still running at the deadline (a config that was unexpectedly accepted).
fn forkyard_in(dir: &Path, sub: &str) -> Output {
    let mut child = Command::new(forkyard_bin())
        .args([sub, "-c", "config.yaml"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start forkyard");
    let deadline = Instant::now() + SHORT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "forkyard {sub} did not exit within {SHORT:?}; it accepted the config?\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn golden_corpus_of_broken_configs() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let files = corpus();
    assert!(
        files.len() >= MIN_CASES,
        "only {} cases in tests/config_corpus",
        files.len()
    );
    let mut failures = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(file, dir.path().join("config.yaml")).unwrap();

        let check = forkyard_in(dir.path(), "check");
        let stderr = String::from_utf8_lossy(&check.stderr).into_owned();
        assert_eq!(check.status.code(), Some(78), "{name}: check\n{stderr}");
        assert!(check.stdout.is_empty(), "{name}: check printed a plan");
        if let Some(other) = seen.insert(stderr.clone(), name.clone()) {
            failures.push(format!(
                "{name}: same errors as {other}; not a distinct case"
            ));
        }
        for line in stderr.lines() {
            assert!(
                line.starts_with("config.yaml:") || line.starts_with("forkyard: "),
                "{name}: a line without the file name: {line:?}"
            );
        }

        let expected_path = file.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &stderr).unwrap();
        } else {
            match std::fs::read_to_string(&expected_path) {
                Ok(expected) if expected == stderr => {}
                Ok(expected) => failures.push(format!(
                    "{name}: stderr differs from {}\n--- expected\n{expected}--- got\n{stderr}",
                    expected_path.display()
                )),
                Err(e) => failures.push(format!(
                    "{name}: {} ({e}); run with UPDATE_GOLDEN=1",
                    expected_path.display()
                )),
            }
        }

        // `run` reports the same problems, starts nothing and exits 78.
        let run = forkyard_in(dir.path(), "run");
        let run_err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(78), "{name}: run\n{run_err}");
        assert!(run.stdout.is_empty(), "{name}: run logged something");
        let problems = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with("forkyard: "))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            problems(&run_err),
            problems(&stderr),
            "{name}: run vs check"
        );
        assert!(
            run_err.ends_with("in config.yaml; nothing was started\n"),
            "{name}: {run_err}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every golden file belongs to a case.
    for entry in std::fs::read_dir(repo().join("tests/config_corpus")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "expected") {
            assert!(
                path.with_extension("yaml").is_file(),
                "{} has no .yaml",
                path.display()
            );
        }
    }
}
