//! The control socket: a unix socket that serves the admin endpoints, POSTs
//! included, to local users. Its file mode (0600, owned by the user forkyard runs
//! as) decides who may use it, as supervisord's and Docker's sockets do, so it
//! needs no token.
//!
//! # Where it is
//!
//! `admin.socket` names it, or turns it off. By default it is
//! `forkyard-<admin port>.sock` in the first of these directories that is usable,
//! meaning it exists as a directory owned by forkyard's user or can be created:
//!
//! 1. `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`; made 0711 if missing, as
//!    for worker sockets),
//! 2. `$XDG_RUNTIME_DIR/forkyard` (a login session), mode 0700,
//! 3. `/run/forkyard` (root, or a directory prepared for the user), mode 0700,
//! 4. `/tmp/forkyard-<uid>`, mode 0700.
//!
//! The admin port is in the name because it tells forkyards on one machine apart.
//! Two of them cannot listen on one port, and the commands already read it from
//! the config. `forkyard reload`, `scale`, `restart` and `status` search the same
//! directories, using their own environment, and take the first that holds the
//! socket. So a shell in the same container finds it, and so does a root shell on
//! a host whose systemd unit has `RuntimeDirectory=forkyard`. A command that cannot
//! load the config takes the only forkyard socket it finds.
//!
//! # How it is made safe
//!
//! The socket is bound inside a private directory next to its path, set to 0600,
//! and hard-linked into place (a link never replaces anything). It therefore never
//! exists at its path with a wider mode, whatever the umask. A socket left at the
//! path is removed only when nothing answers on it, which means its forkyard is
//! gone. If something does answer, another forkyard uses the path and binding is
//! an error. Anything that is not a socket is never removed. At exit the socket is
//! removed if it is still the one forkyard bound.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::{annotate, private_dir};

/// The mode of the socket file.
pub(crate) const MODE: u32 = 0o600;

/// `forkyard-<port>.sock`: the default socket's name for admin port `port`.
pub(crate) fn file_name(port: u16) -> String {
    format!("forkyard-{port}.sock")
}

/// A candidate directory of the default socket.
struct Candidate {
    dir: PathBuf,
    /// `$RUNTIME_DIRECTORY`: systemd's, whose mode is the unit's choice.
    systemd: bool,
}

/// The default socket's directories, in order of preference, for this process's
/// environment and user.
fn candidates() -> Vec<Candidate> {
    let from_env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let mut out = Vec::new();
    // systemd may list several, separated by ':'; the first is ours.
    if let Some(dir) = from_env("RUNTIME_DIRECTORY") {
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if first.starts_with('/') {
            out.push(Candidate {
                dir: PathBuf::from(first),
                systemd: true,
            });
        }
    }
    if let Some(dir) = from_env("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if dir.is_absolute() {
            out.push(Candidate {
                dir: dir.join("forkyard"),
                systemd: false,
            });
        }
    }
    let uid = nix::unistd::geteuid().as_raw();
    for dir in [
        PathBuf::from("/run/forkyard"),
        PathBuf::from(format!("/tmp/forkyard-{uid}")),
    ] {
        out.push(Candidate {
            dir,
            systemd: false,
        });
    }
    out
}

/// Make `c.dir` (or check the existing one) for the socket.
fn prepare(c: &Candidate) -> io::Result<()> {
    if c.systemd {
        private_dir(&c.dir, 0o711, false)
    } else {
        private_dir(&c.dir, 0o700, true)
    }
}

/// The bound control socket, listening and non-blocking.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) listener: UnixListener,
    pub(crate) path: PathBuf,
    /// Removes the socket file when dropped.
    pub(crate) remover: Remover,
}

/// Removes the socket file when dropped, if it is still the one forkyard bound.
#[derive(Debug)]
pub(crate) struct Remover {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for Remover {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Why the default socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DefaultError {
    /// No candidate directory could be used (each with its reason).
    #[error("no usable directory for the control socket: {}", list(.0))]
    NoDirectory(Vec<(PathBuf, io::Error)>),
    /// The directory was usable, but the socket could not be bound there.
    #[error(transparent)]
    Bind(io::Error),
}

fn list(tried: &[(PathBuf, io::Error)]) -> String {
    tried
        .iter()
        .map(|(dir, e)| format!("{} ({e})", dir.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bind the default socket of admin port `port` in the first usable directory.
/// A directory that cannot be used is skipped; a failure to bind in a usable one
/// (another forkyard's live socket there, say) ends the search, so that this
/// forkyard and the commands that look for it never disagree on the place.
pub(crate) fn bind_default(port: u16) -> Result<Bound, DefaultError> {
    let mut tried = Vec::new();
    for c in candidates() {
        match prepare(&c) {
            Ok(()) => {
                return bind(&c.dir.join(file_name(port))).map_err(DefaultError::Bind);
            }
            Err(e) => tried.push((c.dir, e)),
        }
    }
    Err(DefaultError::NoDirectory(tried))
}

/// Bind the socket at `path` (its directory must exist), mode 0600, removing a
/// stale socket left there. See the module docs.
pub(crate) fn bind(path: &Path) -> io::Result<Bound> {
    clear_stale(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A private directory next to the path: bind there, narrow the mode, link.
    let private = parent.join(format!(".forkyard-{}.bind", std::process::id()));
    let staged = private.join("s");
    let made = DirBuilder::new().mode(0o700).create(&private);
    if matches!(&made, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) {
        // Left by an earlier forkyard with this pid that was killed mid-bind.
        let _ = fs::remove_file(&staged);
        let _ = fs::remove_dir(&private);
        DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|e| annotate(e, &private))?;
    } else {
        made.map_err(|e| annotate(e, &private))?;
    }
    let linked = (|| -> io::Result<UnixListener> {
        let listener = UnixListener::bind(&staged).map_err(|e| annotate(e, path))?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(MODE))
            .map_err(|e| annotate(e, path))?;
        fs::hard_link(&staged, path).map_err(|e| annotate(e, path))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| annotate(e, path))?;
        Ok(listener)
    })();
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&private);
    let listener = linked?;
    let meta = fs::symlink_metadata(path).map_err(|e| annotate(e, path))?;
    Ok(Bound {
        listener,
        path: path.to_owned(),
        remover: Remover {
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
        },
    })
}

/// Remove a socket at `path` that nothing answers on. A socket that answers is
/// in use, and anything else is not ours to remove: both are errors.
fn clear_stale(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(annotate(e, path)),
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: another forkyard answers on it (stop it, or set admin.socket to another path)",
                    path.display()
                ),
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(annotate(e, path)),
                    _ => {
                        tracing::debug!(path = %path.display(), "removed a stale control socket");
                        Ok(())
                    }
                }
            }
            Err(e) => Err(annotate(e, path)),
        },
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            ),
        )),
    }
}

/// Where `forkyard run` would put the default socket of admin port `port`, run
/// here by this user: the first directory that exists as this user's or could be
/// made. Nothing is created (for `forkyard check`).
pub(crate) fn default_path(port: u16) -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    let all = candidates();
    let usable = all.iter().find(|c| match fs::symlink_metadata(&c.dir) {
        Ok(meta) => meta.is_dir() && meta.uid() == uid,
        Err(_) => c.dir.parent().is_some_and(|parent| {
            nix::unistd::access(
                parent,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .is_ok()
        }),
    });
    let dir = usable
        .or(all.last())
        .map(|c| c.dir.clone())
        .unwrap_or_default();
    dir.join(file_name(port))
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn dirs_text() -> String {
    candidates()
        .iter()
        .map(|c| c.dir.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The default socket of the forkyard whose admin port is `port`: the first
/// candidate directory that holds it.
pub fn find(port: u16) -> Result<PathBuf, String> {
    let name = file_name(port);
    candidates()
        .into_iter()
        .map(|c| c.dir.join(&name))
        .find(|p| is_socket(p))
        .ok_or_else(|| format!("no control socket {name} in {}", dirs_text()))
}

/// The only default socket in the candidate directories, whatever its port (for a
/// command that could not read the config).
pub fn find_any() -> Result<PathBuf, String> {
    let mut found = Vec::new();
    for c in candidates() {
        let Ok(entries) = fs::read_dir(&c.dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let port = name
                .strip_prefix("forkyard-")
                .and_then(|n| n.strip_suffix(".sock"));
            if port.is_some_and(|p| p.parse::<u16>().is_ok()) && is_socket(&entry.path()) {
                found.push(entry.path());
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("no forkyard control socket in {}", dirs_text())),
        _ => Err(format!(
            "several forkyard control sockets ({}); name one with --socket, or its config with -c",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_socket_is_0600_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forkyard.sock");
        let bound = bind(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(UnixStream::connect(&path).is_ok());
        // Nothing but the socket is left next to it.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["forkyard.sock"]);
        drop(bound);
        assert!(!path.exists());
    }

    #[test]
    fn a_live_socket_is_in_use_and_a_dead_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forkyard.sock");
        let first = bind(&path).unwrap();
        let err = bind(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains("another forkyard"), "{err}");

        // Killed: the listener is gone but its file stays.
        let Bound {
            listener, remover, ..
        } = first;
        std::mem::forget(remover);
        drop(listener);
        assert!(is_socket(&path));
        let second = bind(&path).unwrap();
        assert!(UnixStream::connect(&second.path).is_ok());
    }

    #[test]
    fn anything_but_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forkyard.sock");
        fs::write(&path, "data").unwrap();
        let err = bind(&path).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "data");

        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(dir.path().join("elsewhere.sock"), &link).unwrap();
        assert!(bind(&link).is_err());
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn the_remover_leaves_a_newer_socket_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forkyard.sock");
        let old = bind(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let new = bind(&path).unwrap();
        drop(old);
        assert!(is_socket(&path), "the newer forkyard's socket stays");
        drop(new);
        assert!(!path.exists());
    }
}
