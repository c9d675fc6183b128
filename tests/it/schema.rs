//! Editor support: `forkyard schema` is generated from the config types, the
//! committed `docs/config.schema.json` is exactly that output, every config in the
//! repository validates against it with `check-jsonschema`, and it rejects an
//! unknown key just as forkyard does.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

const MODELINE: &str = "# yaml-language-server: $schema=";
/// For the configs that read the admin token from `$FORKYARD_ADMIN_TOKEN`.
const ADMIN_TOKEN: &str = "schema-test-token-0123456789";

fn generated_schema() -> String {
    let (ok, out) = run_tool(Command::new(forkyard_bin()).arg("schema"));
    assert!(ok, "{out}");
    out
}

/// Every forkyard config in the repository (not the deploy files of other tools).
fn config_files() -> Vec<PathBuf> {
    let mut files = vec![
        repo().join("config.yaml"),
        repo().join("deploy/docker/config.yaml"),
    ];
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let c = entry.unwrap().path().join("config.yaml");
        if c.is_file() {
            files.push(c);
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    files
}

/// Every complete config shown in README.md and docs/ (a ```yaml block with `pools:`).
fn doc_configs() -> Vec<String> {
    fn markdown(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                markdown(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut pages = vec![repo().join("README.md")];
    markdown(&repo().join("docs"), &mut pages);
    let mut blocks = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        for block in text.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            // Complete configs only: fragments (e.g. hooks without a command) are not.
            if (block.contains("\npools:") || block.starts_with("pools:"))
                && block.contains("command:")
            {
                blocks.push(block.to_owned());
            }
        }
    }
    assert!(
        blocks.len() >= 8,
        "found only {} configs in the docs",
        blocks.len()
    );
    blocks
}

#[test]
fn configs_in_the_docs_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    for (i, block) in doc_configs().into_iter().enumerate() {
        let f = dir.path().join(format!("doc-{i}.yaml"));
        std::fs::write(&f, &block).unwrap();
        // The docs' `${DATABASE_URL}` and `${FORKYARD_ADMIN_TOKEN}` examples need
        // the variables set.
        let (ok, out) = run_tool(
            Command::new(forkyard_bin())
                .args(["check", "-c"])
                .arg(&f)
                .env("DATABASE_URL", "postgres://db/app")
                .env("FORKYARD_ADMIN_TOKEN", ADMIN_TOKEN),
        );
        assert!(
            ok,
            "forkyard check rejects a config shown in the docs:\n{block}\n{out}"
        );
    }
}

#[test]
fn committed_schema_is_the_generated_one() {
    let committed = std::fs::read_to_string(repo().join("docs/config.schema.json")).unwrap();
    assert!(
        committed == generated_schema(),
        "docs/config.schema.json is stale: run `cargo run -- schema > docs/config.schema.json`"
    );
}

#[test]
fn configs_name_the_schema_for_editors() {
    for f in config_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let rel = first
            .strip_prefix(MODELINE)
            .unwrap_or_else(|| panic!("{} does not start with {MODELINE}", f.display()));
        let schema = f.parent().unwrap().join(rel);
        assert!(
            schema.canonicalize().ok()
                == repo().join("docs/config.schema.json").canonicalize().ok(),
            "{}: {rel} is not docs/config.schema.json",
            f.display()
        );
    }
}

#[test]
fn every_config_validates_and_unknown_keys_are_rejected() {
    // The same files are valid for forkyard itself.
    for f in config_files() {
        let (ok, out) = run_tool(
            Command::new(forkyard_bin())
                .args(["check", "-c"])
                .arg(&f)
                .env("WEB_WORKERS", "2")
                .env("FORKYARD_ADMIN_TOKEN", ADMIN_TOKEN),
        );
        assert!(ok, "forkyard check {}:\n{out}", f.display());
    }
    let Some(check) = tool(
        "check-jsonschema",
        "PyPI check-jsonschema, in target/pytools",
    ) else {
        return;
    };
    let schema = repo().join("docs/config.schema.json");
    let dir = tempfile::tempdir().unwrap();
    // The Kubernetes ConfigMap carries a config too, and so do the docs.
    let cm: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/kubernetes/configmap.yaml")).unwrap(),
    )
    .unwrap();
    let embedded = dir.path().join("configmap-config.yaml");
    std::fs::write(&embedded, cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let mut files = config_files();
    files.push(embedded);
    for (i, block) in doc_configs().into_iter().enumerate() {
        let f = dir.path().join(format!("doc-{i}.yaml"));
        std::fs::write(&f, block).unwrap();
        files.push(f);
    }
    let (ok, out) = run_tool(
        Command::new(&check)
            .arg("--schemafile")
            .arg(&schema)
            .args(&files),
    );
    assert!(ok, "check-jsonschema:\n{out}");

    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "pools:\n  web:\n    command: [\"python3\", \"app.py\"]\n    ports: \"9001-9010\"\n    wrokers: 2\n",
    )
    .unwrap();
    let (ok, out) = run_tool(
        Command::new(&check)
            .arg("--schemafile")
            .arg(&schema)
            .arg(&typo),
    );
    assert!(
        !ok && out.contains("wrokers"),
        "the schema must reject an unknown key:\n{out}"
    );
    let (ok, out) = run_tool(
        Command::new(forkyard_bin())
            .args(["check", "-c"])
            .arg(&typo),
    );
    assert!(!ok && out.contains("did you mean \"workers\""), "{out}");

    // A wrong value type and a bare-number duration are caught while typing, too.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "shutdown: { timeout: 30 }\npools:\n  web:\n    command: [\"x\"]\n    ports: \"9001-9010\"\n    workers: many\n",
    )
    .unwrap();
    let (ok, out) = run_tool(
        Command::new(&check)
            .arg("--schemafile")
            .arg(&schema)
            .arg(&bad),
    );
    assert!(!ok && out.contains("30") && out.contains("many"), "{out}");
}
