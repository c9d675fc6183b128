//! The dependency graph runs one way: this test reads every source file and checks
//! that each top-level module uses (`crate::…`) only modules of lower layers. The
//! layers are the drawing in the crate docs (`lib.rs`).

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom first. A module may use the modules of earlier layers only; modules of
/// one layer do not use each other (`supervisor` and `proxy` above all).
const LAYERS: &[&[&str]] = &[
    &[
        "account",
        "events",
        "signals",
        "probe",
        "client",
        "watch",
        "sd_notify",
    ],
    &["sockets"],
    &["config"],
    &[
        "fault", "logging", "security", "plan", "program", "slot", "process",
    ],
    &["hooks"],
    &["child", "status"],
    &["metrics"],
    &["record", "pool", "auth", "history"],
    &["supervisor", "proxy", "worker_metrics"],
    &["control"],
    &["admin"],
    &["server"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if ["lib", "main", "layers"].contains(&module.as_str()) {
            continue;
        }
        let Some(own) = layer(&module) else {
            problems.insert(format!("{module} is in no layer of src/layers.rs"));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let used: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used == module || used.is_empty() {
                    continue;
                }
                match layer(&used) {
                    Some(l) if l < own => {}
                    _ => {
                        problems.insert(format!("{} uses crate::{used}", rel.display()));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "uses against the layers:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}
