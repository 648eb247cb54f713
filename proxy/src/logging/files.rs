//! Where log lines go: stdout, stderr or files, which SIGUSR1 reopens and a reload can move.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// Where the access log and the error log go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// The access log (target `access`).
    pub access: LogTarget,
    /// Every other line.
    pub error: LogTarget,
}

/// One log's destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output, the default: journald and Kubernetes collect it.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, appended to, created if missing, reopened on SIGUSR1.
    File(PathBuf),
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::Stdout => f.write_str("stdout"),
            LogTarget::Stderr => f.write_str("stderr"),
            LogTarget::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The access log's and the error log's open destinations.
pub struct Outputs {
    access: ArcSwap<Sink>,
    error: ArcSwap<Sink>,
    /// Serialises reopening and moving, so a reopen cannot undo a reload's move.
    change: Mutex<()>,
}

/// One open destination.
struct Sink {
    target: LogTarget,
    /// Open when `target` is a file.
    file: Option<File>,
}

impl Sink {
    fn open(target: &LogTarget) -> io::Result<Sink> {
        let file = match target {
            // Appending: every line is one write(2) at the end, even with another process
            // (an upgrade's new edge) writing to the same file.
            LogTarget::File(path) => Some(OpenOptions::new().create(true).append(true).open(path)?),
            LogTarget::Stdout | LogTarget::Stderr => None,
        };
        Ok(Sink {
            target: target.clone(),
            file,
        })
    }
}

/// Which of the two logs.
#[derive(Debug, Clone, Copy)]
enum Log {
    Access,
    Error,
}

impl Log {
    fn field(self) -> &'static str {
        match self {
            Log::Access => "log.access_log",
            Log::Error => "log.error_log",
        }
    }
}

impl Outputs {
    /// Opens the destinations `settings` name; the error names the field and the file.
    pub fn open(settings: &LogSettings) -> Result<Self, String> {
        let open = |log: Log, target: &LogTarget| {
            Sink::open(target).map_err(|e| format!("{} {target}: cannot open: {e}", log.field()))
        };
        Ok(Outputs {
            access: ArcSwap::from_pointee(open(Log::Access, &settings.access)?),
            error: ArcSwap::from_pointee(open(Log::Error, &settings.error)?),
            change: Mutex::new(()),
        })
    }

    fn slot(&self, log: Log) -> &ArcSwap<Sink> {
        match log {
            Log::Access => &self.access,
            Log::Error => &self.error,
        }
    }

    /// Opens every log file again by its path, as nginx does on SIGUSR1: after logrotate
    /// renamed a file, lines go to a new file at the configured path. A file that cannot be
    /// opened keeps the old handle; the result says which, one line each.
    pub fn reopen(&self) -> Result<usize, Vec<String>> {
        let _serial = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let mut reopened = 0;
        let mut failed = Vec::new();
        // The error log first, so lines about the access log land in the new error log.
        for log in [Log::Error, Log::Access] {
            let slot = self.slot(log);
            let current = slot.load_full();
            if current.file.is_none() {
                continue;
            }
            match Sink::open(&current.target) {
                Ok(sink) => {
                    slot.store(Arc::new(sink));
                    reopened += 1;
                }
                Err(e) => failed.push(format!(
                    "{} {}: cannot reopen: {e}; still writing to the file open before",
                    log.field(),
                    current.target
                )),
            }
        }
        if failed.is_empty() {
            Ok(reopened)
        } else {
            Err(failed)
        }
    }

    /// Writes `lines`, whole lines, to the access log's destination of the moment.
    pub(crate) fn write_access(&self, lines: &[u8]) -> io::Result<()> {
        LineWriter(self.access.load()).write_all(lines)
    }

    /// Whether any log goes to a file (SIGUSR1 has something to do).
    pub fn has_files(&self) -> bool {
        self.access.load().file.is_some() || self.error.load().file.is_some()
    }
}

/// The subscriber's writer: access lines (target `access`) to the access log, the rest to the
/// error log.
pub(crate) struct Writers(pub Arc<Outputs>);

/// One line's destination, held while the line is written.
pub(crate) struct LineWriter(arc_swap::Guard<Arc<Sink>>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match (self.0.file.as_ref(), &self.0.target) {
            (Some(mut f), _) => f.write(buf),
            (None, LogTarget::Stderr) => io::stderr().write(buf),
            (None, _) => io::stdout().write(buf),
        }
    }

    // The formatter writes each line with one write_all: keep it one locked write on
    // stdout, so lines from several threads never interleave.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match (self.0.file.as_ref(), &self.0.target) {
            (Some(mut f), _) => f.write_all(buf),
            (None, LogTarget::Stderr) => io::stderr().write_all(buf),
            (None, _) => io::stdout().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match (&self.0.file, &self.0.target) {
            (Some(_), _) => Ok(()),
            (None, LogTarget::Stderr) => io::stderr().flush(),
            (None, _) => io::stdout().flush(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writers {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(self.0.error.load())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        if meta.target() == super::ACCESS_TARGET {
            LineWriter(self.0.access.load())
        } else {
            LineWriter(self.0.error.load())
        }
    }
}

/// Log files opened for a reload's new `[log]` settings, not yet in use: committing moves
/// each log to its new destination.
pub struct LogMove {
    outputs: Arc<Outputs>,
    opened: Vec<(Log, Sink)>,
}

/// A destination a reload's `[log]` names that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("{target}: cannot open: {source}")]
pub struct OpenError {
    /// The config key: `log.access_log` or `log.error_log`.
    pub field: &'static str,
    /// The destination.
    pub target: LogTarget,
    /// Why it cannot be opened.
    pub source: io::Error,
}

impl Outputs {
    /// Opens what `settings` names where it differs from what is in use, as nginx does on
    /// reload: a changed path is opened before the reload commits (one that cannot be opened
    /// rejects the reload) and takes the next line once [`LogMove::commit`] runs.
    pub fn prepare_move(
        self: &Arc<Self>,
        settings: &LogSettings,
    ) -> Result<LogMove, Vec<OpenError>> {
        let mut opened = Vec::new();
        let mut errors = Vec::new();
        for (log, wanted) in [
            (Log::Access, &settings.access),
            (Log::Error, &settings.error),
        ] {
            if self.slot(log).load().target == *wanted {
                continue;
            }
            match Sink::open(wanted) {
                Ok(sink) => opened.push((log, sink)),
                Err(source) => errors.push(OpenError {
                    field: log.field(),
                    target: wanted.clone(),
                    source,
                }),
            }
        }
        if errors.is_empty() {
            Ok(LogMove {
                outputs: self.clone(),
                opened,
            })
        } else {
            Err(errors)
        }
    }
}

impl LogMove {
    /// Moves each changed log to its new destination; one line per log moved.
    pub fn commit(self) -> Vec<String> {
        let outputs = self.outputs;
        let _serial = outputs.change.lock().unwrap_or_else(|p| p.into_inner());
        self.opened
            .into_iter()
            .map(|(log, sink)| {
                let before = outputs.slot(log).swap(Arc::new(sink));
                let now = outputs.slot(log).load();
                format!("{}: {} -> {}", log.field(), before.target, now.target)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(w: &Writers, log: Log, text: &str) {
        let mut out = LineWriter(w.0.slot(log).load());
        out.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn reopen_follows_the_path_after_a_rename_and_keeps_the_old_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access.log");
        let error = dir.path().join("error.log");
        let w = Writers(Arc::new(
            Outputs::open(&LogSettings {
                access: LogTarget::File(access.clone()),
                error: LogTarget::File(error.clone()),
            })
            .unwrap(),
        ));
        line(&w, Log::Access, "one\n");
        line(&w, Log::Error, "boot\n");
        std::fs::rename(&access, dir.path().join("access.log.1")).unwrap();
        line(&w, Log::Access, "two\n");
        assert_eq!(w.0.reopen(), Ok(2));
        line(&w, Log::Access, "three\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("access.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&access).unwrap(), "three\n");
        assert_eq!(std::fs::read_to_string(&error).unwrap(), "boot\n");
    }

    #[test]
    fn a_file_that_cannot_be_reopened_keeps_the_old_handle_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("gone");
        std::fs::create_dir(&sub).unwrap();
        let access = sub.join("access.log");
        let w = Writers(Arc::new(
            Outputs::open(&LogSettings {
                access: LogTarget::File(access.clone()),
                error: LogTarget::Stdout,
            })
            .unwrap(),
        ));
        std::fs::remove_file(&access).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        let failed = w.0.reopen().unwrap_err();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].starts_with("log.access_log ") && failed[0].contains("cannot reopen"),
            "{failed:?}"
        );
        // Still writable: the old handle stays.
        line(&w, Log::Access, "kept\n");
    }
}
