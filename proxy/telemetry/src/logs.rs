//! Log set-up: the `--log-format` choice, the `RUST_LOG` filter and the global subscriber.

use clap::ValueEnum;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::SetGlobalDefaultError;
use tracing::Dispatch;
use tracing_log::AsLog;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Output format of every log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `RUST_LOG`'s directives, or `info` when it is unset or invalid.
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// A subscriber writing the lines `filter` lets through to `writer`, in `format`; colours
/// only when `ansi` (a person at a terminal, never a file or a log collector).
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, ansi: bool, writer: W) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => Dispatch::new(builder.finish()),
        // Flattened: an event's fields sit next to `message`, not under a `fields` object.
        LogFormat::Json => Dispatch::new(builder.json().flatten_event(true).finish()),
    }
}

/// Installs the process's subscriber ([`subscriber`] with [`env_filter`]), then `log_records`
/// as the `log` crate's logger (see [`log_bridge`]). Fails when a subscriber was installed
/// before (a test, or a library user with its own), which keeps its place; so does a `log`
/// logger installed before.
pub fn init<W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
    log_records: Box<dyn log::Log>,
) -> Result<(), SetGlobalDefaultError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing::dispatcher::set_global_default(subscriber(format, env_filter(), ansi, writer))?;
    // The `log` crate's level follows the subscriber's (read once it is installed), so a
    // filtered-out `log` call costs one comparison, as tracing-subscriber's own `init` does.
    if log::set_boxed_logger(log_records).is_ok() {
        log::set_max_level(LevelFilter::current().as_log());
    }
    Ok(())
}

/// A `log` logger that turns every record into a `tracing` event, for [`init`]: the lines of
/// dependencies that log through the `log` crate.
pub fn log_bridge() -> Box<dyn log::Log> {
    Box::new(tracing_log::LogTracer::new())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines one INFO event (and one DEBUG event, below the filter) come out as.
    fn lines(format: LogFormat, filter: &str) -> Vec<String> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let dispatch = subscriber(format, EnvFilter::new(filter), false, move || {
            writer.clone()
        });
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(target: "access", route = "live", status = 200, "served");
            tracing::debug!(target: "access", "not at info");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(String::from).collect()
    }

    #[test]
    fn json_is_one_flat_object_per_line() {
        let lines = lines(LogFormat::Json, "info");
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "access");
        assert_eq!(line["message"], "served");
        assert_eq!(line["route"], "live");
        assert_eq!(line["status"], 200);
        assert!(line.get("fields").is_none(), "{line}");
    }

    #[test]
    fn text_is_key_value_without_colours() {
        let lines = lines(LogFormat::Text, "info");
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "{line}"
        );
        assert!(
            line.contains(" INFO access: served route=\"live\" status=200"),
            "{line}"
        );
        assert!(!line.contains('\x1b'), "{line}");
    }

    #[test]
    fn the_filter_decides_which_levels_come_out() {
        assert_eq!(lines(LogFormat::Text, "debug").len(), 2);
        assert!(lines(LogFormat::Text, "access=off").is_empty());
    }

    #[test]
    fn the_flag_takes_text_and_json() {
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert!(LogFormat::from_str("yaml", false).is_err());
    }
}
