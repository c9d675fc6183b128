//! Reload when config.yaml is edited (`forkyard run --watch` or `reload: { watch:
//! true }`): the file's directory is watched (editors often save by renaming a new
//! file over the old one), events for the file are debounced, and each save takes
//! the same transactional path as SIGHUP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last change before a reload starts.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches one file; dropping it stops watching.
pub(crate) struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    changes: mpsc::UnboundedReceiver<()>,
}

impl ConfigWatch {
    pub(crate) fn start(file: &Path) -> notify::Result<ConfigWatch> {
        let file: PathBuf = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (tx, changes) = mpsc::unbounded_channel();
        let target = file.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    let ours = event
                        .paths
                        .iter()
                        .any(|p| p == &target || p.file_name() == target.file_name());
                    if ours && !event.kind.is_access() {
                        let _ = tx.send(());
                    }
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(ConfigWatch {
            _watcher: watcher,
            changes,
        })
    }

    /// Resolves after a change followed by `DEBOUNCE` of quiet.
    pub(crate) async fn changed(&mut self) {
        if self.changes.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
        loop {
            match tokio::time::timeout(DEBOUNCE, self.changes.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// `changed()` of an optional watch: never resolves without one.
pub(crate) async fn changed(watch: &mut Option<ConfigWatch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
