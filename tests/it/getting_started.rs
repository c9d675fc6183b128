//! The getting-started examples run as their guides say: each `examples/<lang>/`
//! config, started from its own directory, serves its app through the proxy. Only
//! the listen addresses and the port range are swapped for free ones.

use std::path::Path;

use crate::harness::*;

/// The example's config with test addresses and a free port range.
fn example_config(dir: &Path, workers: u16) -> String {
    let text = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    let port = free_ports(workers + 2);
    let swapped = text
        .replace("\"0.0.0.0:8080\"", "\"{proxy}\"")
        .replace("\"127.0.0.1:9090\"", "\"{admin}\"")
        .replace(
            "\"9001-9099\"",
            &format!("\"{port}-{}\"", port + workers + 1),
        );
    assert!(
        swapped.contains("{proxy}") && swapped.contains("{admin}"),
        "{swapped}"
    );
    swapped
}

fn serves_through_forkyard(lang: &str, workers: u16, env: &[(&str, &str)], hello: &str) {
    let dir = repo().join("examples").join(lang);
    let mut fy = Forkyard::builder(&example_config(&dir, workers)).cwd(&dir);
    for (k, v) in env {
        fy = fy.env(k, v);
    }
    let fy = fy.start();
    fy.wait_ready();
    wait_for_or_log(&fy, BOOT, "every worker ready", || {
        (fy.status()["pools"][0]["workers_ready"] == u64::from(workers)).then_some(())
    });
    let mut slots = std::collections::BTreeSet::new();
    for _ in 0..(4 * workers) {
        let r = fy.get("/").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        assert_eq!(j["hello"], hello);
        slots.insert(j["worker"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        slots.len(),
        usize::from(workers),
        "every worker answered: {slots:?}"
    );
}

#[test]
fn python_example_runs_under_waitress() {
    let Some(waitress) = tool("waitress-serve", "PyPI waitress, in target/pytools") else {
        return;
    };
    let path = format!(
        "{}:{}",
        waitress.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    serves_through_forkyard("python", 4, &[("PATH", &path)], "from a Python worker");
}

#[test]
fn node_example_runs_under_node() {
    if tool("node", "Debian package nodejs").is_none() {
        return;
    }
    serves_through_forkyard("node", 2, &[], "from a Node worker");
}
