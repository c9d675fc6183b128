//! `forkyard check`'s look at each pool's program. `command[0]` is resolved the way
//! the worker will resolve it, so that a missing or non-executable program turns
//! up in `check` rather than as a crash loop of `run` with exit code 127 or 126.
//!
//! The worker execs `command[0]` (`execvp`) in the pool's `cwd`, with forkyard's
//! environment plus the pool's `env`:
//!
//! - a name with a `/` in it is a path from `cwd`;
//! - a bare name is looked up in the worker's `PATH`. That is forkyard's `PATH`
//!   unless the pool's `env` sets one; with neither, glibc's `/bin:/usr/bin` is
//!   used. An empty entry is `cwd`, and the first executable match wins;
//! - the file must be a regular file that the worker's user may execute. That user
//!   is the pool's `post_fork` `user:` (with its groups, or `group:`) when forkyard
//!   runs as root, and forkyard's own user otherwise. Every directory on the way
//!   must be searchable by that user too.
//!
//! What it finds is a warning, not an error, because an `on_start` hook may create
//! the program before the first worker starts.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, PoolConfig};

/// glibc's `execvp` searches this when the environment has no `PATH`.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// One pool whose program would not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The key path of the program, e.g. `pools.web.command[0]`.
    pub key: String,
    pub message: String,
}

/// Who the worker runs as, for the permission checks.
enum Account {
    /// forkyard's own user: the kernel answers (`access`).
    Own,
    /// Another user, checked against the file modes.
    Other {
        name: String,
        uid: u32,
        gids: Vec<u32>,
    },
}

impl Account {
    fn of(pool: &PoolConfig, as_root: bool) -> Result<Account, String> {
        let (user, group) = pool.post_fork_account();
        let Some(name) = user.filter(|_| as_root) else {
            return Ok(Account::Own);
        };
        let user = crate::account::user(name)?;
        let primary = match group {
            Some(g) => crate::account::gid(g)?,
            None => user.gid,
        };
        let mut gids: Vec<u32> = CString::new(user.name.clone())
            .ok()
            .and_then(|n| nix::unistd::getgrouplist(&n, primary).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        if group.is_some() {
            // `group:` replaces the user's groups with that one.
            gids = vec![primary.as_raw()];
        }
        gids.push(primary.as_raw());
        Ok(Account::Other {
            name: user.name,
            uid: user.uid.as_raw(),
            gids,
        })
    }

    /// Whether this account may execute the regular file `file`, including search
    /// permission on the directories above it.
    fn may_execute(&self, file: &Path) -> bool {
        match self {
            Account::Own => nix::unistd::access(file, nix::unistd::AccessFlags::X_OK).is_ok(),
            Account::Other { uid, gids, .. } => {
                let allowed = |path: &Path| {
                    std::fs::metadata(path).is_ok_and(|m| {
                        let bits = if m.uid() == *uid {
                            m.mode() >> 6
                        } else if gids.contains(&m.gid()) {
                            m.mode() >> 3
                        } else {
                            m.mode()
                        };
                        bits & 1 != 0 || (*uid == 0 && (m.is_dir() || m.mode() & 0o111 != 0))
                    })
                };
                file.ancestors().all(allowed)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Account::Own => "by this user".to_string(),
            Account::Other { name, .. } => format!("by user {name} (the pool's post_fork user)"),
        }
    }
}

/// Where resolving a program ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Found,
    /// Exists, but is not a regular file the account may execute.
    NotExecutable(PathBuf),
    NotFound,
}

/// Resolve `program` as `execvp` in `cwd` with `path_var` would, for `account`.
fn resolve(program: &str, cwd: &Path, path_var: &str, account: &Account) -> Outcome {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![cwd.join(program)]
    } else {
        path_var
            .split(':')
            .map(|dir| cwd.join(dir).join(program))
            .collect()
    };
    let mut refused = None;
    for file in candidates {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.is_file() && account.may_execute(&file) {
            return Outcome::Found;
        }
        refused.get_or_insert(file);
    }
    refused.map_or(Outcome::NotFound, Outcome::NotExecutable)
}

/// The `PATH` a worker of `pool` gets: the pool's `env` when it sets one, else
/// forkyard's own (`own_path`), else glibc's default.
fn worker_path(pool: &PoolConfig, own_path: Option<&str>) -> String {
    let port = pool.slot_port(0);
    pool.env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| pool.fill(v, 0, port))
        .or_else(|| own_path.map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_PATH.to_owned())
}

/// `path` without its `.` components, for messages.
fn tidy(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect()
}

/// Every pool whose program would not start, for a forkyard that is root when
/// `as_root`, run in this process's directory and environment.
pub fn findings(config: &Config, as_root: bool) -> Vec<Finding> {
    let own_path = std::env::var("PATH").ok();
    let here = std::env::current_dir().unwrap_or_default();
    let mut out = Vec::new();
    for pool in &config.pools {
        let Some(template) = pool.command.first() else {
            continue;
        };
        let program = pool.fill(template, 0, pool.slot_port(0));
        let key = format!("pools.{}.command[0]", pool.name);
        let account = match Account::of(pool, as_root) {
            Ok(a) => a,
            Err(e) => {
                out.push(Finding {
                    key,
                    message: format!("cannot check program {program:?}: {e}"),
                });
                continue;
            }
        };
        let cwd = tidy(&here.join(&pool.cwd));
        let path_var = worker_path(pool, own_path.as_deref());
        let hint = "(an on_start hook may create it; otherwise every worker exits 127)";
        let message = match resolve(&program, &cwd, &path_var, &account) {
            Outcome::Found => continue,
            Outcome::NotFound if program.starts_with('/') => {
                format!("program {program:?} not found {hint}")
            }
            Outcome::NotFound if program.contains('/') => {
                format!(
                    "program {program:?} not found in the pool's cwd {} {hint}",
                    cwd.display()
                )
            }
            Outcome::NotFound => {
                format!("program {program:?} not found on the workers' PATH {path_var} {hint}")
            }
            Outcome::NotExecutable(file) => format!(
                "program {program:?} ({}) is not a file executable {}; every worker would exit 126",
                tidy(&file).display(),
                account.describe()
            ),
        };
        out.push(Finding { key, message });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn executable(path: &Path, mode: u32) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn paths_and_path_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        executable(&bin.join("app"), 0o755);
        executable(&bin.join("data"), 0o644);
        let own = Account::Own;
        let cwd = dir.path();
        assert_eq!(resolve("bin/app", cwd, "", &own), Outcome::Found);
        assert_eq!(resolve("./bin/app", cwd, "", &own), Outcome::Found);
        assert_eq!(
            resolve("app", cwd, "/nonexistent:bin", &own),
            Outcome::Found
        );
        assert_eq!(resolve("app", &bin, "/nonexistent::", &own), Outcome::Found);
        assert_eq!(resolve("app", cwd, "/nonexistent", &own), Outcome::NotFound);
        assert_eq!(
            resolve("/nonexistent/app", cwd, "", &own),
            Outcome::NotFound
        );
        assert_eq!(
            resolve("bin", cwd, "/nonexistent", &own),
            Outcome::NotFound,
            "a bare name is not looked up in cwd unless PATH says so"
        );
        // A directory is not a program.
        assert_eq!(
            resolve("./bin", cwd, "", &own),
            Outcome::NotExecutable(cwd.join("./bin"))
        );
        // A later PATH entry with an executable file wins over an earlier data file.
        executable(&dir.path().join("app"), 0o644);
        assert_eq!(resolve("app", cwd, ".:bin", &own), Outcome::Found);
        // Root too needs an execute bit on a file.
        assert_eq!(
            resolve("bin/data", cwd, "", &own),
            Outcome::NotExecutable(cwd.join("bin/data"))
        );
    }

    #[test]
    fn another_users_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app");
        executable(&file, 0o750);
        let meta = std::fs::metadata(&file).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let stranger = |gids: Vec<u32>| Account::Other {
            name: "stranger".into(),
            uid: meta.uid() + 4242,
            gids,
        };
        let owner = Account::Other {
            name: "owner".into(),
            uid: meta.uid(),
            gids: vec![],
        };
        // Whether a stranger with these groups may search every directory above the
        // temporary one (not so where `/` itself is 0700, as in a fresh chroot
        // made with `mktemp -d`): otherwise it may execute nothing below them.
        let above = |gids: &[u32]| {
            dir.path().ancestors().skip(1).all(|a| {
                std::fs::metadata(a).is_ok_and(|m| {
                    m.mode() & 0o001 != 0 || (gids.contains(&m.gid()) && m.mode() & 0o010 != 0)
                })
            })
        };
        assert!(owner.may_execute(&file));
        assert_eq!(
            stranger(vec![meta.gid()]).may_execute(&file),
            above(&[meta.gid()]),
            "group x"
        );
        assert!(!stranger(vec![meta.gid() + 4242]).may_execute(&file));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o751)).unwrap();
        assert_eq!(stranger(vec![]).may_execute(&file), above(&[]), "other x");
        // A directory on the way that the user cannot search.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!stranger(vec![]).may_execute(&file));
        assert!(owner.may_execute(&file));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_pool_env_path_replaces_forkyards() {
        let text = "pools:\n  web:\n    command: [app]\n    ports: 9001\n    env: { PATH: \"/opt/{pool}/bin\" }\n  api:\n    command: [app]\n    ports: 9002\nroutes: [ { pool: web } ]\n";
        let c = crate::config::load_from_str(text, Path::new("c.yaml"), &|_| None).unwrap();
        assert_eq!(worker_path(&c.pools[0], Some("/usr/bin")), "/opt/web/bin");
        assert_eq!(worker_path(&c.pools[1], Some("/usr/bin")), "/usr/bin");
        assert_eq!(worker_path(&c.pools[1], None), DEFAULT_PATH);
    }
}
