//! Settings that are allowed but risky, found at start-up and logged as warnings
//! (event `security_warning`) and printed by `forkyard check`: workers that would
//! run as root, and a config or token file that others can write.
//! `docs/security.md` explains each one and what to do about it.
//!
//! An admin listener that other machines reach without a token is no longer one of
//! them: its POST endpoints answer 403 there (see `admin`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::config::{Builtin, Config, HookAction, Phase};

/// One warning: a short stable name (the log's `check` field) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub check: &'static str,
    pub message: String,
}

/// Every warning about `config`, for a forkyard whose effective user is root when
/// `as_root`.
pub fn warnings(config: &Config, as_root: bool) -> Vec<Warning> {
    let mut out = Vec::new();
    if as_root {
        let as_root: Vec<&str> = config
            .pools
            .iter()
            .filter(|p| !drops_privileges(p.hooks.phase(Phase::PostFork)))
            .map(|p| p.name.as_str())
            .collect();
        if !as_root.is_empty() {
            out.push(Warning {
                check: "workers_as_root",
                message: format!(
                    "forkyard runs as root and pool(s) {} set no post_fork user, so their workers run as root; add `- {{ user: www-data }}` (or another account) to pools.<name>.hooks.post_fork",
                    as_root.join(", ")
                ),
            });
        }
    }
    let files = std::iter::once(("config file", config.source.as_path())).chain(
        config
            .admin
            .token_file
            .as_deref()
            .map(|f| ("admin.token_file", f)),
    );
    for (what, path) in files {
        if let Some(mode) = writable_by_others(path) {
            out.push(Warning {
                check: "file_permissions",
                message: format!(
                    "{what} {} is writable by group or others (mode {mode:03o}); whoever can write it decides what forkyard runs: chmod go-w {}",
                    path.display(),
                    path.display()
                ),
            });
        }
    }
    out
}

fn drops_privileges(post_fork: &[crate::config::Hook]) -> bool {
    post_fork
        .iter()
        .any(|h| matches!(h.action, HookAction::Builtin(Builtin::User(_))))
}

/// The permission bits of `path` when group or others may write it.
fn writable_by_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o022 != 0).then_some(mode)
}

/// Log each warning (after logging is set up).
pub(crate) fn log_warnings(config: &Config) {
    for w in warnings(config, nix::unistd::geteuid().is_root()) {
        tracing::warn!(
            event = crate::events::SECURITY_WARNING,
            check = w.check,
            "{}",
            w.message
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_from_str;

    fn config(yaml: &str, source: &Path) -> Config {
        load_from_str(yaml, source, &|_| None).unwrap()
    }

    const POOLS: &str = "pools:\n  web:\n    command: [app]\n    ports: 9001-9010\n  api:\n    command: [app]\n    ports: 9100\n    hooks:\n      post_fork: [ { user: \"0\" } ]\nroutes: [ { pool: web } ]\n";

    fn checks(w: &[Warning]) -> Vec<&str> {
        w.iter().map(|w| w.check).collect()
    }

    #[test]
    fn loopback_admin_as_a_user_is_quiet() {
        let c = config(POOLS, Path::new("/nonexistent/config.yaml"));
        assert_eq!(warnings(&c, false), []);
    }

    #[test]
    fn admin_on_all_interfaces_is_no_warning_now_that_its_posts_are_closed() {
        let yaml = format!("admin: {{ listen: \"0.0.0.0:9090\" }}\n{POOLS}");
        let c = config(&yaml, Path::new("/nonexistent/config.yaml"));
        assert_eq!(warnings(&c, false), []);
        let yaml =
            format!("admin: {{ listen: \"0.0.0.0:9090\", token: 0123456789abcdef }}\n{POOLS}");
        let c = config(&yaml, Path::new("/nonexistent/config.yaml"));
        assert_eq!(warnings(&c, false), []);
    }

    #[test]
    fn root_warns_naming_pools_without_user() {
        let c = config(POOLS, Path::new("/nonexistent/config.yaml"));
        let w = warnings(&c, true);
        assert_eq!(checks(&w), ["workers_as_root"]);
        assert!(
            w[0].message.contains("pool(s) web set no"),
            "{}",
            w[0].message
        );
    }

    #[test]
    fn group_writable_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, POOLS).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(warnings(&config(POOLS, &file), false), []);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let w = warnings(&config(POOLS, &file), false);
        assert_eq!(checks(&w), ["file_permissions"]);
        assert!(w[0].message.contains("(mode 664)"), "{}", w[0].message);
    }
}
