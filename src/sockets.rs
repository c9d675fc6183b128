//! The private runtime directory that holds `bind: unix` workers' sockets.
//!
//! Where: `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`, private to the unit),
//! else `$XDG_RUNTIME_DIR/forkyard.<pid>`, else `/tmp/forkyard.<pid>`. Each pool has
//! its own subdirectory, mode 0700 and owned by the pool's `post_fork` `user:`/`group:`
//! when forkyard is root; the top directory is 0711, so a dropped user reaches its own
//! pool's directory without being able to list the others.
//!
//! Stale socket files (a worker killed with SIGKILL leaves its socket behind) are
//! removed before a slot's worker starts — only if they are sockets: anything else
//! at that path is an error, never deleted.
//!
//! `control`: forkyard's own control socket, which the `forkyard` commands find.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::account;

pub(crate) mod control;

/// This process's runtime directory for worker sockets (not created yet), and
/// whether it is systemd's (`$RUNTIME_DIRECTORY`) rather than forkyard's own.
fn runtime() -> &'static (PathBuf, bool) {
    static DIR: OnceLock<(PathBuf, bool)> = OnceLock::new();
    DIR.get_or_init(|| {
        let from_env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        // systemd may list several, separated by ':'; the first is ours.
        let systemd = from_env("RUNTIME_DIRECTORY").and_then(|dir| {
            let first = dir.to_string_lossy().split(':').next()?.to_owned();
            (!first.is_empty()).then(|| PathBuf::from(first))
        });
        match systemd {
            Some(dir) => (dir, true),
            None => {
                let base = from_env("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/tmp"));
                (base.join(format!("forkyard.{}", std::process::id())), false)
            }
        }
    })
}

/// This process's runtime directory for worker sockets (not created yet).
pub(crate) fn runtime_dir() -> &'static Path {
    &runtime().0
}

/// The directory of `pool`'s worker sockets.
pub(crate) fn pool_dir(pool: &str) -> PathBuf {
    runtime_dir().join(pool)
}

/// Create (or check) the runtime directory and a pool's socket directory `dir` in
/// it, owned by `user`/`group` (the pool's `post_fork` user and group) when
/// forkyard is root. Idempotent; called before each spawn of a `bind: unix` worker.
pub(crate) fn prepare(dir: &Path, user: Option<&str>, group: Option<&str>) -> io::Result<()> {
    // An existing `$RUNTIME_DIRECTORY` is systemd's: its mode is the unit's choice.
    if let Some(top) = dir.parent() {
        private_dir(top, 0o711, !runtime().1)?;
    }
    private_dir(dir, 0o700, true)?;
    if nix::unistd::geteuid().is_root() {
        let (uid, gid) = owner(user, group)?;
        if uid.is_some() || gid.is_some() {
            nix::unistd::chown(dir, uid, gid).map_err(io::Error::from)?;
        }
    }
    Ok(())
}

/// Make `dir` (mode `mode`), or check that an existing one is a real directory
/// owned by this user, and (if `tighten`) set its mode.
fn private_dir(dir: &Path, mode: u32, tighten: bool) -> io::Result<()> {
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(annotate(e, dir)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| annotate(e, dir))?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != euid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} exists but is not a directory owned by uid {euid}; refusing to put sockets there",
                dir.display()
            ),
        ));
    }
    if tighten && meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(|e| annotate(e, dir))?;
    }
    Ok(())
}

/// The uid/gid of `user` and `group` (a user's own group unless `group` is set).
fn owner(
    user: Option<&str>,
    group: Option<&str>,
) -> io::Result<(Option<nix::unistd::Uid>, Option<nix::unistd::Gid>)> {
    let (mut uid, mut gid) = (None, None);
    if let Some(name) = user {
        let user = account::user(name).map_err(io::Error::other)?;
        uid = Some(user.uid);
        gid = Some(user.gid);
    }
    if let Some(name) = group {
        gid = Some(account::gid(name).map_err(io::Error::other)?);
    }
    Ok((uid, gid))
}

/// Remove a socket left at `path` by a previous worker. Anything that is not a
/// socket is left alone and reported.
pub(crate) fn clear_stale(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(annotate(e, path)),
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(annotate(e, path)),
            })?;
            tracing::debug!(path = %path.display(), "removed a stale worker socket");
            Ok(())
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            ),
        )),
    }
}

/// At exit: remove the sockets forkyard's workers left and the directories, if they
/// were forkyard's own (`$RUNTIME_DIRECTORY` itself belongs to systemd).
pub(crate) fn remove_all<'a>(dirs: impl IntoIterator<Item = &'a Path>) {
    for dir in dirs {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let _ = clear_stale(&entry.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
    if !runtime().1 {
        let _ = fs::remove_dir(runtime_dir());
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sockets_go_and_other_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("0.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(listener);
        assert!(sock.exists(), "a closed listener leaves its file");
        clear_stale(&sock).unwrap();
        assert!(!sock.exists());
        clear_stale(&sock).unwrap();

        let file = dir.path().join("1.sock");
        fs::write(&file, "data").unwrap();
        let err = clear_stale(&file).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(file.exists());
    }

    #[test]
    fn a_directory_owned_by_someone_else_or_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = private_dir(&link, 0o700, true).unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");

        let fresh = dir.path().join("fresh");
        private_dir(&fresh, 0o700, true).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&fresh, 0o700, true).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "an existing directory's mode is tightened");
    }
}
