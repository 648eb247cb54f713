//! Viewer connections: admitted, counted and timed around pingora's per-connection handler.
//!
//! accept → [`Admission`] (past `server.max_connections`, closed before TLS or any read) →
//! TLS handshake (pingora) → [`Counted`]: counted by listener and protocol, the first request
//! header awaited within `server.header_timeout` → pingora's HTTP/1.1 or HTTP/2 handler, whose
//! keep-alive timeouts are counted here through the hook our pingora-core patch adds.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::FutureExt;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::ConnectionFilter;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_proxy::Session;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use tokio::time::Instant;

/// What an HTTP/2 client sends first (RFC 9113 §3.4); pingora peeks for it on cleartext
/// listeners (h2c with prior knowledge).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// File descriptors the edge needs beside its viewers' connections: connections to origins,
/// listeners, log files, the admin listener's clients.
pub(crate) const FD_MARGIN: u64 = 1024;

/// At most one "refusing connections" log line per listener in this many seconds.
const REFUSAL_LOG_EVERY: u64 = 10;

/// The connection settings that apply live, read for each accepted connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `server.max_connections`.
    pub(crate) max_connections: usize,
    /// `server.header_timeout`.
    pub(crate) header_timeout: Duration,
    /// `server.keepalive_requests`: for an HTTP/2 connection, the streams it takes.
    pub(crate) keepalive_requests: u32,
}

/// Where the live [`Limits`] come from: the active config (`server.rs` reads it).
pub(crate) type LiveLimits = Arc<dyn Fn() -> Limits + Send + Sync>;

/// One listener's series, resolved once.
pub(crate) struct Listener {
    addr: SocketAddr,
    label: String,
    http1: IntGauge,
    h2: IntGauge,
    refused: IntCounter,
    header_timeouts: IntCounter,
    keepalive_timeouts: IntCounter,
    /// Unix second of the last "refusing connections" warning.
    last_refusal_log: AtomicU64,
}

impl Listener {
    /// The series of the listener configured at `addr`, labelled with the address as written.
    pub(crate) fn new(
        addr: SocketAddr,
        open: &IntGaugeVec,
        refused: &IntCounterVec,
        timeouts: &IntCounterVec,
    ) -> Arc<Self> {
        let label = addr.to_string();
        Arc::new(Listener {
            addr,
            http1: open.with_label_values(&[&label, "http/1.1"]),
            h2: open.with_label_values(&[&label, "h2"]),
            refused: refused.with_label_values(&[&label]),
            header_timeouts: timeouts.with_label_values(&[&label, "header"]),
            keepalive_timeouts: timeouts.with_label_values(&[&label, "keepalive"]),
            label,
            last_refusal_log: AtomicU64::new(0),
        })
    }
}

/// The listener a connection arrived on, by its local address: the listener bound to exactly
/// that address, else the one bound to the unspecified address (`0.0.0.0`, `[::]`) on its port.
fn listener_of(listeners: &[Arc<Listener>], local: SocketAddr) -> Option<&Arc<Listener>> {
    listeners.iter().find(|l| l.addr == local).or_else(|| {
        listeners
            .iter()
            .find(|l| l.addr.ip().is_unspecified() && l.addr.port() == local.port())
    })
}

/// A listener's connection filter: pingora calls it after accept, before the TLS handshake
/// and before reading a byte. Past `max_connections` open, the connection is closed at once
/// (the viewer sees the connection end with no response) and counted.
///
/// Open connections are those [`Counted`] holds: a TLS connection counts from the end of its
/// handshake (pingora bounds a handshake at 60 s), so connections still in their handshake are
/// not in the count.
pub(crate) struct Admission {
    listener: Arc<Listener>,
    open: IntGauge,
    limits: LiveLimits,
}

impl Admission {
    /// The filter of `listener`, comparing `open` with the live `max_connections`.
    pub(crate) fn new(listener: Arc<Listener>, open: IntGauge, limits: LiveLimits) -> Self {
        Admission {
            listener,
            open,
            limits,
        }
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("listener", &self.listener.label)
            .finish()
    }
}

#[async_trait]
impl ConnectionFilter for Admission {
    async fn should_accept(&self, _peer: Option<&SocketAddr>) -> bool {
        let max = (self.limits)().max_connections;
        let open = usize::try_from(self.open.get()).unwrap_or(0);
        if open < max {
            return true;
        }
        self.listener.refused.inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.listener.last_refusal_log.load(Ordering::Relaxed);
        if now >= last + REFUSAL_LOG_EVERY
            && self
                .listener
                .last_refusal_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                listener = %self.listener.label,
                open,
                max_connections = max,
                "server.max_connections reached: refusing new connections (counted in dime_connections_refused_total)"
            );
        }
        false
    }
}

/// Wraps the proxy's application: counts each connection while it is open (by listener and
/// protocol, and in the total that `max_connections` is compared with) and closes one whose
/// first request header does not arrive within `header_timeout`.
///
/// pingora runs one connection's whole life through `process_new`: HTTP/2 stays inside it, and
/// an HTTP/1.1 keep-alive connection waits there for its next request, so a connection is
/// counted while it idles too (nginx's stub_status counts its waiting connections the same way).
pub(crate) struct Counted<A> {
    app: Arc<A>,
    open: IntGauge,
    listeners: Vec<Arc<Listener>>,
    limits: LiveLimits,
}

impl<A> Counted<A> {
    /// Counts `app`'s connections in `open` and in the series of `listeners`, with the live
    /// `limits`.
    pub(crate) fn new(
        app: A,
        open: IntGauge,
        listeners: Vec<Arc<Listener>>,
        limits: LiveLimits,
    ) -> Self {
        // pingora calls the hook on the task of the connection that timed out.
        let _ = pingora_core::protocols::http::ON_KEEPALIVE_TIMEOUT.set(keepalive_timed_out);
        // ... and asks for an HTTP/2 connection's request limit on its task too.
        let _ = pingora_core::protocols::http::H2_MAX_REQUESTS.set(h2_max_requests);
        Counted {
            app: Arc::new(app),
            open,
            listeners,
            limits,
        }
    }
}

tokio::task_local! {
    /// The connection whose task runs: pingora handles an HTTP/1.1 connection's requests, and
    /// an HTTP/2 connection's accept loop, on the task `Counted::process_new` runs on.
    static CONNECTION: Connection;
}

struct Connection {
    listener: Option<Arc<Listener>>,
    /// Whether a request header has been read, so the header timeout is over.
    started: Cell<bool>,
    /// `server.keepalive_requests` when the connection was accepted.
    keepalive_requests: u32,
}

/// Marks the first request header of the calling task's connection as read: from then on the
/// header timeout no longer applies. A no-op on other tasks (HTTP/2 streams, background fills).
pub(crate) fn request_started() {
    let _ = CONNECTION.try_with(|c| c.started.set(true));
}

/// pingora's keep-alive timeout hook: counts the timeout on the calling task's connection.
fn keepalive_timed_out() {
    let _ = CONNECTION.try_with(|c| {
        if let Some(l) = &c.listener {
            l.keepalive_timeouts.inc();
        }
    });
}

/// pingora's HTTP/2 request-limit hook: the calling task's connection takes
/// `server.keepalive_requests` streams, then is sent GOAWAY, as nginx does.
fn h2_max_requests() -> Option<u32> {
    CONNECTION.try_with(|c| c.keepalive_requests).ok()
}

/// Applies the live keep-alive settings to a request's HTTP/1.1 connection (pingora ignores
/// them for HTTP/2): the next request must arrive within `timeout` (whole seconds), and a new
/// connection serves `requests` requests, the last answered with `Connection: close`. A
/// connection that will not be kept (the viewer sent `Connection: close`, HTTP/1.0, shutdown)
/// stays so.
pub(crate) fn keep_alive(session: &mut Session, timeout: Duration, requests: u32) {
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(timeout.as_secs().max(1)));
    }
    // Unset only on a connection's first request: pingora then counts the reuses down.
    if session.get_keepalive_reuses_remaining().is_none() {
        session.set_keepalive_reuses_remaining(Some(requests.saturating_sub(1)));
    }
}

/// An error when the viewer has already reset this request's HTTP/2 stream: h2 hands out a
/// stream whose RST_STREAM arrived before pingora accepted it, and nothing else looks until a
/// response is written. Polled once, never waits; `Ok` on HTTP/1.x and background fills.
pub(crate) fn still_wanted(session: &mut Session) -> pingora_error::Result<()> {
    let ServerSession::H2(stream) = session.as_mut() else {
        return Ok(());
    };
    match stream.idle().now_or_never() {
        None => Ok(()),
        Some(reset) => {
            let why = match reset {
                Ok(reason) => format!("the viewer reset its HTTP/2 stream ({reason})"),
                Err(e) => format!("the viewer's HTTP/2 stream failed: {e}"),
            };
            Err(Error::create(
                ErrorType::H2Error,
                ErrorSource::Downstream,
                Some(why.into()),
                None,
            ))
        }
    }
}

/// The bytes `req`'s line and header fields take as HTTP/1.1 writes them (`METHOD TARGET
/// HTTP/1.1`, each field as `name: value`, each line ended by CRLF), over HTTP/2 too, so one
/// `server.max_request_header_size` means the same on both.
pub(crate) fn header_size(req: &pingora_http::RequestHeader) -> u64 {
    let target = req.uri.authority().map_or(0, |a| a.as_str().len())
        + req.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method.as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (line + fields) as u64
}

/// Holds one connection's counts; dropped when the handler returns or its task is cancelled.
struct Open {
    total: IntGauge,
    protocol: Option<IntGauge>,
}

impl Open {
    fn new(total: IntGauge, protocol: Option<IntGauge>) -> Self {
        total.inc();
        if let Some(p) = &protocol {
            p.inc();
        }
        Open { total, protocol }
    }

    /// Counts the connection under another protocol.
    fn switch(&mut self, to: Option<IntGauge>) {
        if let Some(p) = &self.protocol {
            p.dec();
        }
        if let Some(p) = &to {
            p.inc();
        }
        self.protocol = to;
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.total.dec();
        if let Some(p) = &self.protocol {
            p.dec();
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = (self.limits)();
        let deadline = Instant::now() + limits.header_timeout;
        let listener = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
            .and_then(|local| listener_of(&self.listeners, local))
            .cloned();
        let tls = stream.get_ssl_digest().is_some();
        let alpn_h2 = tls && matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let gauge = |h2: bool| {
            listener
                .as_ref()
                .map(|l| if h2 { l.h2.clone() } else { l.http1.clone() })
        };
        // A cleartext connection counts as HTTP/1.1 until its first bytes say otherwise.
        let mut open = Open::new(self.open.clone(), gauge(alpn_h2));
        let h2 = if tls {
            alpn_h2
        } else {
            // pingora peeks for the h2c preface with no timeout of its own: this peek bounds
            // it (pingora's own then returns at once), so a connection that sends nothing,
            // or too little, is closed at the header timeout instead of being held forever.
            let mut first = [0u8; H2_PREFACE.len()];
            match tokio::time::timeout_at(deadline, stream.try_peek(&mut first)).await {
                Err(_) => {
                    if let Some(l) = &listener {
                        l.header_timeouts.inc();
                    }
                    return None;
                }
                // Closed, or reset, before sending a request: nothing to serve.
                Ok(Err(_)) => return None,
                Ok(Ok(peeked)) => peeked && first == *H2_PREFACE,
            }
        };
        if h2 && !tls {
            open.switch(gauge(true));
        }
        let connection = Connection {
            listener: listener.clone(),
            // HTTP/2 has no header timeout of its own: its idle timeout bounds the wait.
            started: Cell::new(h2),
            keepalive_requests: limits.keepalive_requests,
        };
        CONNECTION
            .scope(connection, async move {
                let served = self.app.process_new(stream, shutdown);
                tokio::pin!(served);
                tokio::select! {
                    biased;
                    out = &mut served => out,
                    () = tokio::time::sleep_until(deadline), if !h2 => {
                        if CONNECTION.with(|c| c.started.get()) {
                            served.await
                        } else {
                            if let Some(l) = &listener {
                                l.header_timeouts.inc();
                            }
                            None
                        }
                    }
                }
            })
            .await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Raises the process's soft limit on open files to its hard limit, as far as the kernel
/// allows, and returns the soft limit in force.
pub(crate) fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    // rlim_t is u64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Ok(lim.rlim_cur as u64)
}

/// What to warn about when `max_connections` viewers, plus [`FD_MARGIN`] for everything
/// else, need more file descriptors than the process may open (`limit`).
pub(crate) fn fd_warning(max_connections: usize, limit: u64) -> Option<String> {
    let needed = max_connections as u64 + FD_MARGIN;
    (needed > limit).then(|| {
        format!(
            "server.max_connections {max_connections} plus {FD_MARGIN} for origins and files needs {needed} file descriptors, but the process may open {limit} (RLIMIT_NOFILE): past it, accepts fail instead of being refused cleanly; raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) or lower max_connections"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(addrs: &[&str]) -> Vec<Arc<Listener>> {
        let open =
            IntGaugeVec::new(prometheus::Opts::new("o", "o"), &["listener", "protocol"]).unwrap();
        let refused = IntCounterVec::new(prometheus::Opts::new("r", "r"), &["listener"]).unwrap();
        let timeouts =
            IntCounterVec::new(prometheus::Opts::new("t", "t"), &["listener", "kind"]).unwrap();
        addrs
            .iter()
            .map(|a| Listener::new(a.parse().unwrap(), &open, &refused, &timeouts))
            .collect()
    }

    #[test]
    fn a_connection_belongs_to_the_exact_listener_then_to_the_wildcard_on_its_port() {
        let ls = listeners(&["0.0.0.0:8080", "127.0.0.1:8443", "[::]:9000"]);
        let of = |local: &str| listener_of(&ls, local.parse().unwrap()).map(|l| l.label.as_str());
        assert_eq!(of("10.1.2.3:8080"), Some("0.0.0.0:8080"));
        assert_eq!(of("127.0.0.1:8443"), Some("127.0.0.1:8443"));
        // A dual-stack wildcard listener sees IPv4 viewers as mapped addresses.
        assert_eq!(of("[::ffff:10.1.2.3]:9000"), Some("[::]:9000"));
        assert_eq!(of("[::1]:9000"), Some("[::]:9000"));
        assert_eq!(of("10.1.2.3:8443"), None);
    }

    #[test]
    fn the_fd_warning_names_both_numbers_only_when_they_do_not_fit() {
        assert_eq!(fd_warning(10_000, 20_000), None);
        assert_eq!(fd_warning(18_976, 20_000), None);
        let w = fd_warning(19_000, 20_000).unwrap();
        assert!(w.contains("max_connections 19000"), "{w}");
        assert!(w.contains("needs 20024"), "{w}");
        assert!(w.contains("may open 20000"), "{w}");
    }
}
