//! pingora's own `log` lines, bridged into `tracing`: the ones that repeat what Dime logs
//! better, or report normal events as errors, are dropped or lowered to DEBUG.

use log::{Level, Log, Metadata, Record};
use tracing_log::LogTracer;

/// What becomes of one of pingora's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Logged as pingora wrote it.
    Keep,
    /// Logged at this level instead (DEBUG: seen only with `RUST_LOG=debug`).
    Level(Level),
    /// Not logged: Dime logs the same event itself.
    Drop,
}

/// One rule: pingora lines from a module under `target` whose message starts with `prefix`.
struct Rule {
    target: &'static str,
    prefix: &'static str,
    verdict: Verdict,
}

/// pingora 0.9.1's lines that Dime replaces. The final `Fail to proxy` error of a request and
/// its retry warnings are not here: `Edge` turns them off through pingora's own hooks
/// (`suppress_error_log`, `suppress_proxy_warn_log`), before pingora formats them.
const RULES: &[Rule] = &[
    // `Backend { addr: Inet(…), weight: 1, ext: {} } becomes unhealthy, <error chain>`: the
    // health loop logs each transition with the pool and a short reason (`health.rs`).
    Rule {
        target: "pingora_load_balancing",
        prefix: "Backend {",
        verdict: Verdict::Drop,
    },
    // A viewer that left while a hit was being sent: the access log records the request and
    // its error; nothing is wrong with the edge.
    Rule {
        target: "pingora_proxy",
        prefix: "Fail to serve cache: Downstream",
        verdict: Verdict::Level(Level::Debug),
    },
    // A viewer's connection that broke before its request was read: no request, no answer.
    Rule {
        target: "pingora_proxy",
        prefix: "Fail to proxy: Downstream",
        verdict: Verdict::Level(Level::Debug),
    },
    // During `run --upgrade`, the new process polls for the listeners every second until
    // the old one gets SIGQUIT; the wait is logged once by `server.rs`, at INFO.
    Rule {
        target: "pingora_core::server::transfer_fd",
        prefix: "No incoming socket transfer",
        verdict: Verdict::Level(Level::Debug),
    },
    // Startup chatter: one line per service, and `service 'BG systemd notify' exited.`, which
    // reads like a failure but is a one-shot task ending; `server.rs` logs the start itself.
    Rule {
        target: "pingora_core::server",
        prefix: "Starting service",
        verdict: Verdict::Level(Level::Debug),
    },
    Rule {
        target: "pingora_core::server",
        prefix: "service '",
        verdict: Verdict::Level(Level::Debug),
    },
    Rule {
        target: "pingora_core::server::bootstrap_services",
        prefix: "Bootstrap starting",
        verdict: Verdict::Level(Level::Debug),
    },
    Rule {
        target: "pingora_core::server::bootstrap_services",
        prefix: "Bootstrap done",
        verdict: Verdict::Level(Level::Debug),
    },
    // Cache metadata headers stored uncompressed: a choice, not a problem.
    Rule {
        target: "pingora_cache",
        prefix: "no header compression dictionary loaded",
        verdict: Verdict::Drop,
    },
];

/// The verdict on one line: `target` is the logging module's path.
pub(crate) fn classify(target: &str, message: &str) -> Verdict {
    RULES
        .iter()
        .find(|r| target.starts_with(r.target) && message.starts_with(r.prefix))
        .map_or(Verdict::Keep, |r| r.verdict)
}

/// The `log` crate's logger: `tracing_log`'s bridge with [`RULES`] in front for pingora.
pub(crate) struct PingoraLog {
    inner: LogTracer,
}

impl PingoraLog {
    /// The bridge.
    pub(crate) fn new() -> Self {
        PingoraLog {
            inner: LogTracer::new(),
        }
    }
}

impl Default for PingoraLog {
    fn default() -> Self {
        Self::new()
    }
}

impl Log for PingoraLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        // Disabled lines (pingora's many debug! calls) are never formatted.
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        if !record.target().starts_with("pingora") {
            return self.inner.log(record);
        }
        let message = match record.args().as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(record.args().to_string()),
        };
        match classify(record.target(), &message) {
            Verdict::Keep => self.inner.log(record),
            Verdict::Drop => {}
            Verdict::Level(level) => self.inner.log(
                &Record::builder()
                    .args(*record.args())
                    .level(level)
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            ),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingoras_noisy_lines_are_dropped_or_lowered_and_the_rest_kept() {
        let debug = Verdict::Level(Level::Debug);
        // Lines as pingora 0.9.1 formats them.
        let table: &[(&str, &str, Verdict)] = &[
            (
                "pingora_load_balancing",
                "Backend { addr: Inet(127.0.0.1:9001), weight: 1, ext: {} } becomes unhealthy, Upstream ConnectRefused context: ...",
                Verdict::Drop,
            ),
            (
                "pingora_load_balancing",
                "Backend { addr: Inet(127.0.0.1:9001), weight: 1, ext: {} } becomes healthy",
                Verdict::Drop,
            ),
            (
                "pingora_proxy::proxy_cache",
                "Fail to serve cache: Downstream WriteError context: ..., GET /a.ts, Host: e",
                debug,
            ),
            (
                "pingora_proxy",
                "Fail to proxy: Downstream ReadError context: ..., downstream session type: HTTP/1.1",
                debug,
            ),
            (
                "pingora_core::server::transfer_fd",
                "No incoming socket transfer, sleep 1s and try again",
                debug,
            ),
            (
                "pingora_cache::meta",
                "no header compression dictionary loaded - use set_compression_dict_content()",
                Verdict::Drop,
            ),
            (
                "pingora_core::server",
                "Starting services in dependency order: [\"BG SIGHUP\"]",
                debug,
            ),
            (
                "pingora_core::server",
                "service 'BG systemd notify' exited.",
                debug,
            ),
            (
                "pingora_core::server::bootstrap_services",
                "Bootstrap done",
                debug,
            ),
            (
                "pingora_core::server::bootstrap_services",
                "Bootstrap failed on error: Io, exiting.",
                Verdict::Keep,
            ),
            // Signals and shutdown are the operator's: kept.
            (
                "pingora_core::server",
                "SIGQUIT received, sending socks and gracefully exiting",
                Verdict::Keep,
            ),
            // A store failing a hit is the edge's problem: kept.
            (
                "pingora_proxy::proxy_cache",
                "Fail to serve cache: Internal ReadError context: fill aborted",
                Verdict::Keep,
            ),
            (
                "pingora_core::server::transfer_fd",
                "Error accepting socket transfer: EBADF",
                Verdict::Keep,
            ),
            // Another crate's line with the same words is not pingora's.
            (
                "rustls::conn",
                "No incoming socket transfer",
                Verdict::Keep,
            ),
        ];
        for (target, message, want) in table {
            assert_eq!(classify(target, message), *want, "{target}: {message}");
        }
    }
}
