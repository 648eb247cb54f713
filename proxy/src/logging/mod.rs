//! Logs: process logs through `tracing`, and the one-line-per-request access log (`access`),
//! text or JSON, to stdout or to files that SIGUSR1 reopens.

pub(crate) mod access;
pub(crate) mod files;
pub(crate) mod pingora;
pub(crate) mod signals;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub use dime_telemetry::LogFormat;
use pingora_proxy::ProxyWarnLogContext;

use files::{LogSettings, LogTarget, Outputs};

pub(crate) use access::ACCESS_TARGET;
pub use access::{access, AccessRecord};

/// The process's log destinations, once [`init`] opened them.
static OUTPUTS: OnceLock<Arc<Outputs>> = OnceLock::new();

/// The log destinations [`init`] installed; `None` before it ran (or when another subscriber
/// was installed first).
pub fn outputs() -> Option<Arc<Outputs>> {
    OUTPUTS.get().cloned()
}

/// Opens the log destinations and installs the global subscriber, and pingora's `log` lines
/// through [`pingora::PingoraLog`]; `RUST_LOG` overrides the default `info` level. Fails when
/// a log file cannot be opened.
pub fn init(format: LogFormat, settings: &LogSettings) -> Result<(), String> {
    let outputs = Arc::new(Outputs::open(settings)?);
    // Colours only for a person at a terminal, never into a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && settings.access == LogTarget::Stdout
        && settings.error == LogTarget::Stdout;
    let installed = dime_telemetry::logs::init(
        format,
        ansi,
        files::Writers(outputs.clone()),
        Box::new(pingora::PingoraLog::new()),
    );
    // A second init (tests, or a library user with its own subscriber) keeps the first one.
    if installed.is_ok() {
        access::start(format, outputs.clone())
            .map_err(|e| format!("cannot start the access log's writer: {e}"))?;
        let _ = OUTPUTS.set(outputs);
    }
    Ok(())
}

/// Dime's line for a warning pingora would log in the middle of a request (its own lines,
/// with the whole request summary, are turned off in `Edge`).
pub fn proxy_warning(
    request_id: &str,
    route: &str,
    failure: Option<&str>,
    error: &pingora_error::Error,
    context: ProxyWarnLogContext,
) {
    const TARGET: &str = "dime_edge::edge";
    match context {
        // `failure` is the edge's own wording of it (backend and pool named), when it has one.
        ProxyWarnLogContext::UpstreamRetry => match failure {
            Some(why) => {
                tracing::warn!(target: TARGET, request_id = %request_id, route, "retrying: {why}")
            }
            None => {
                tracing::warn!(target: TARGET, request_id = %request_id, route, "retrying: {error}")
            }
        },
        // The viewer left; the fill goes on for the cache's sake.
        ProxyWarnLogContext::DownstreamCache => {
            tracing::debug!(target: TARGET, request_id = %request_id, route, "viewer gone, fill continues: {error}")
        }
        _ => tracing::warn!(target: TARGET, request_id = %request_id, route, "{error}"),
    }
}

/// A request's id: 16 or more hex digits, a random per-process prefix then a counter, so ids
/// are unique within a process and, with high probability, across restarts and edges. Kept as
/// its text, made without allocating: every request gets one, and most never show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    text: [u8; 24],
    len: u8,
}

impl RequestId {
    /// The next id: one atomic increment.
    pub fn next() -> Self {
        static PREFIX: OnceLock<u32> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // std's RandomState is seeded from the OS's randomness; no extra dependency for 32 bits.
        let prefix = *PREFIX.get_or_init(|| {
            std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self::of(prefix, n)
    }

    /// The id of `prefix` and counter `n`: `format!("{prefix:08x}{n:08x}")`.
    fn of(prefix: u32, n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let counter_digits = (16 - n.leading_zeros() as usize / 4).max(8);
        let mut text = [0u8; 24];
        let digits = (0..8)
            .map(|i| (u64::from(prefix) >> (28 - 4 * i)) & 0xf)
            .chain((0..counter_digits).map(|i| (n >> (4 * (counter_digits - 1 - i))) & 0xf));
        for (slot, d) in text.iter_mut().zip(digits) {
            *slot = HEX[d as usize];
        }
        RequestId {
            text,
            len: (8 + counter_digits) as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn a_request_id_is_the_prefix_then_the_counter_in_hex() {
        for (prefix, n) in [
            (0x5f3a_9c0e, 0),
            (0, 1),
            (0xffff_ffff, 0xffff_ffff),
            (0x0000_00ab, 0x1_0000_0000),
            (7, u64::MAX),
        ] {
            assert_eq!(
                RequestId::of(prefix, n).as_str(),
                format!("{prefix:08x}{n:08x}")
            );
        }
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(RequestId::next(), RequestId::next());
    }
}
