//! The file watcher: notices changes to the config and the files it references, however they
//! are written, and asks for one reload per burst of changes.
//!
//! Editors write in place (truncate + write), or write a temporary file and rename it over;
//! Kubernetes swaps a `..data` symlink in the ConfigMap's directory, so the watched file's own
//! name never shows up in an event. Hence: watch each file's directory (not the file, whose
//! inode a rename replaces), keep events that name the file, its symlink target, or a `..`
//! entry, wait for a quiet moment (several writes make one reload), and let the reloader compare
//! content so that a change that changes nothing reloads nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::mpsc;

use super::{Reloader, Trigger};

/// Longest wait from the first event of a burst, beyond the quiet time, so a file written
/// continuously still reloads.
const MAX_EXTRA_DELAY: Duration = Duration::from_millis(500);

/// Watches the active config's files and reloads when they change.
pub(crate) struct ConfigWatcher {
    /// Does the reloading, and says which files the active config uses.
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    let _ = tx.send(event);
                }
                Err(e) => tracing::warn!("config watcher: {e}"),
            });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    "cannot watch the config file ({e}): live reload on file change is off; SIGHUP and POST /config/reload still work"
                );
                return;
            }
        };
        let mut set = WatchSet::default();
        set.sync(&mut watcher, &self.reloader.watched_files());
        let mut applied = self.reloader.subscribe();
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    // `[reload] watch = false` is read live, so turning watching back on needs
                    // SIGHUP or the admin API.
                    if !set.relevant(&event) || !self.reloader.watching() {
                        continue;
                    }
                    settle(&mut rx, &set, self.reloader.debounce()).await;
                    self.reloader.reload(Trigger::Watcher).await;
                    set.sync(&mut watcher, &self.reloader.watched_files());
                }
                // A reload by SIGHUP or the admin API may reference other files.
                _ = applied.changed() => set.sync(&mut watcher, &self.reloader.watched_files()),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Waits until no relevant event has arrived for `quiet`, or `quiet` plus
/// [`MAX_EXTRA_DELAY`] has passed since the first.
async fn settle(rx: &mut mpsc::UnboundedReceiver<notify::Event>, set: &WatchSet, quiet: Duration) {
    let first = Instant::now();
    let mut last = first;
    loop {
        let deadline = (last + quiet).min(first + quiet + MAX_EXTRA_DELAY);
        let next = tokio::time::timeout_at(deadline.into(), rx.recv()).await;
        match next {
            Ok(Some(event)) if set.relevant(&event) => last = Instant::now(),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// The directories being watched and, in each, the names that matter.
#[derive(Default)]
struct WatchSet {
    dirs: BTreeMap<PathBuf, BTreeSet<OsString>>,
}

impl WatchSet {
    /// Watches what `files` need and stops watching what they no longer need.
    fn sync(&mut self, watcher: &mut RecommendedWatcher, files: &[PathBuf]) {
        let wanted = wanted_dirs(files);
        for dir in self.dirs.keys() {
            if !wanted.contains_key(dir) {
                // The directory may be gone already (an old ConfigMap generation).
                let _ = watcher.unwatch(dir);
            }
        }
        for dir in wanted.keys() {
            if !self.dirs.contains_key(dir) {
                if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(
                        dir = %dir.display(),
                        "cannot watch directory ({e}): changes there will not reload the config; use SIGHUP or POST /config/reload"
                    );
                }
            }
        }
        self.dirs = wanted;
    }

    /// Whether `event` may have changed a watched file's content.
    fn relevant(&self, event: &notify::Event) -> bool {
        let kind_matters = match event.kind {
            // Reads (our own included) and attribute changes (touch, chmod) change no content.
            EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
            EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Any
            | EventKind::Other => true,
        };
        kind_matters
            && event.paths.iter().any(|p| {
                let Some(name) = p.file_name() else {
                    return false;
                };
                // Kubernetes' atomic writer: `..data`, `..data_tmp`, `..2026_01_01_...`.
                if name.as_encoded_bytes().starts_with(b"..") {
                    return true;
                }
                let dir = parent_of(p);
                self.dirs
                    .iter()
                    .any(|(d, names)| names.contains(name) && same_dir(d, &dir))
            })
    }
}

/// For each file: its directory and name, and, when it is a symlink, its target's too.
fn wanted_dirs(files: &[PathBuf]) -> BTreeMap<PathBuf, BTreeSet<OsString>> {
    let mut dirs: BTreeMap<PathBuf, BTreeSet<OsString>> = BTreeMap::new();
    let mut add = |path: &Path| {
        if let Some(name) = path.file_name() {
            dirs.entry(parent_of(path))
                .or_default()
                .insert(name.to_os_string());
        }
    };
    for f in files {
        add(f);
        let is_link = std::fs::symlink_metadata(f).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            if let Ok(target) = std::fs::canonicalize(f) {
                add(&target);
            }
        }
    }
    dirs
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Events name paths as the watch was set up, but compare canonical forms too in case the
/// platform reports them resolved.
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}
