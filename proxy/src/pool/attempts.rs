//! One request's attempts at its pool: the backends tried, the retry budget, why the last
//! attempt failed, and the total timeout of an attempt.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pingora_error::{Error, ErrorType, Result};

/// One request's attempts at a pool's backends.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Retries allowed after the first attempt.
    retries: usize,
    /// The most one attempt may take, headers and body.
    total_timeout: Option<Duration>,
    tried: Vec<SocketAddr>,
    backend: Option<SocketAddr>,
    started: Option<Instant>,
    failure: Option<String>,
}

impl Attempts {
    /// No attempt yet, with `retries` allowed after the first and at most `total_timeout`
    /// for each.
    pub(crate) fn new(retries: usize, total_timeout: Option<Duration>) -> Self {
        Attempts {
            retries,
            total_timeout,
            ..Attempts::default()
        }
    }

    /// The backends tried so far, which the next pick avoids.
    pub(crate) fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }

    /// The backend of the latest attempt.
    pub(crate) fn backend(&self) -> Option<SocketAddr> {
        self.backend
    }

    /// Why the latest attempt failed, for the log and the edge's error answer.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Starts an attempt at `addr`.
    pub(crate) fn start(&mut self, addr: SocketAddr) {
        self.tried.push(addr);
        self.backend = Some(addr);
        self.started = Some(Instant::now());
    }

    /// No backend left to pick in `pool`: records and returns why.
    pub(crate) fn none_left(&mut self, pool: &str) -> String {
        let reason = match (&self.failure, self.tried.is_empty()) {
            (_, true) => format!("no healthy backend in pool \"{pool}\""),
            (Some(last), false) => last.clone(),
            (None, false) => format!("no other healthy backend in pool \"{pool}\""),
        };
        self.failure = Some(reason.clone());
        reason
    }

    /// The connection to `peer` of `pool` failed with `e`. Returns whether the request may go
    /// to another backend: nothing reached the origin, so any request may, while the budget
    /// lasts, rather than failing until the health check notices.
    pub(crate) fn connect_failed(&mut self, peer: impl Display, pool: &str, e: &Error) -> bool {
        self.failure = Some(format!(
            "cannot connect to backend {peer} of pool \"{pool}\": {}",
            e.etype().as_str()
        ));
        self.budget_left()
    }

    /// `peer` of `pool` failed with `e` on a connection that was set up (`reused` when it came
    /// from the connection pool). Returns whether the request may be replayed on another
    /// backend: it must be `replayable` (idempotent, its body still buffered) and the budget
    /// must last; and either the connection was a reused one the origin had already closed,
    /// or no response header had arrived (`answered`). A timeout waiting for the header is
    /// replayed too (nginx's `proxy_next_upstream timeout`): a frozen backend still accepts
    /// connections, and its viewers would fail until the health check noticed.
    pub(crate) fn proxy_failed(
        &mut self,
        peer: impl Display,
        pool: &str,
        e: &Error,
        reused: bool,
        replayable: bool,
        answered: bool,
    ) -> bool {
        self.failure = Some(format!(
            "backend {peer} of pool \"{pool}\" failed: {}",
            explain(e)
        ));
        if reused {
            // A pooled connection the origin had already closed says nothing about the
            // backend: let it be picked again, on a fresh connection.
            self.tried.pop();
        }
        replayable && (reused || !answered) && self.budget_left()
    }

    /// `peer` of `pool` answered `status`, one of the pool's `retry_on_status`. Returns whether
    /// the request goes to another backend rather than pass the answer on: it must be
    /// `replayable`, the budget must last, and the pool must have a backend to try
    /// (`another`); otherwise the viewer gets the last backend's answer, as nginx does.
    pub(crate) fn answered_error(
        &mut self,
        peer: impl Display,
        pool: &str,
        status: u16,
        replayable: bool,
        another: bool,
    ) -> bool {
        let retry = replayable && another && self.budget_left();
        if retry {
            self.failure = Some(format!(
                "backend {peer} of pool \"{pool}\" answered {status}"
            ));
        }
        retry
    }

    /// Whether another attempt is within the retry budget.
    pub(crate) fn budget_left(&self) -> bool {
        self.tried.len() <= self.retries
    }

    /// An error once the current attempt has run longer than the total timeout at `now`.
    pub(crate) fn check_total_timeout(&self, now: Instant) -> Result<()> {
        if let (Some(total), Some(start)) = (self.total_timeout, self.started) {
            if now.saturating_duration_since(start) > total {
                return Error::e_explain(
                    ErrorType::ReadTimedout,
                    format!("total_timeout of {total:?} exceeded"),
                );
            }
        }
        Ok(())
    }
}

/// The type of the error that ends an attempt whose answer was a `retry_on_status` status.
pub(crate) const RETRY_ON_STATUS: ErrorType = ErrorType::Custom("RetryOnStatus");

/// The most of a context [`explain`] quotes: pingora puts a whole header buffer in the context
/// of a header it cannot parse.
const CONTEXT_MAX: usize = 100;

/// `e`'s type, then what its innermost pingora error says: the error under it and its
/// context, e.g. `ReadTimedout (reading body, timeout: 1s)`, `ReadError: Connection reset by
/// peer (os error 104) (when reading body)` or `InvalidHTTPHeader: invalid response status
/// (buf: HTTP/1.1 2x0 OK…)`.
pub(crate) fn explain(e: &Error) -> String {
    let mut inner = e;
    while let Some(next) = inner
        .cause
        .as_deref()
        .and_then(|c| c.downcast_ref::<Box<Error>>())
    {
        inner = next;
    }
    let mut text = e.etype().as_str().to_string();
    if let Some(cause) = &inner.cause {
        text.push_str(&format!(": {cause}"));
    }
    if let Some(context) = inner.context.as_ref().map(|c| c.as_str().trim()) {
        if !context.is_empty() {
            let mut end = context.len().min(CONTEXT_MAX);
            while !context.is_char_boundary(end) {
                end -= 1;
            }
            let more = if end < context.len() { "…" } else { "" };
            text.push_str(&format!(" ({}{more})", &context[..end]));
        }
    }
    text
}

/// Whether `e` is a timeout: connecting, reading, writing or the TLS handshake.
pub(crate) fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::TLSHandshakeTimedout
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn err(etype: ErrorType) -> Box<Error> {
        Error::new(etype)
    }

    #[test]
    fn the_retry_budget_allows_retries_after_the_first_attempt() {
        let mut a = Attempts::new(1, None);
        assert!(a.budget_left());
        a.start(addr(1));
        assert!(a.connect_failed(addr(1), "p", &err(ErrorType::ConnectRefused)));
        a.start(addr(2));
        assert!(!a.connect_failed(addr(2), "p", &err(ErrorType::ConnectRefused)));
        assert_eq!(a.tried(), [addr(1), addr(2)]);
        assert_eq!(a.backend(), Some(addr(2)));
        assert_eq!(
            a.failure(),
            Some("cannot connect to backend 127.0.0.1:2 of pool \"p\": ConnectRefused")
        );
        // Without a route (no pool), no retry.
        let mut none = Attempts::default();
        none.start(addr(1));
        assert!(!none.connect_failed(addr(1), "p", &err(ErrorType::ConnectRefused)));
    }

    #[test]
    fn the_reason_when_no_backend_is_left_says_what_happened() {
        let mut a = Attempts::new(2, None);
        assert_eq!(a.none_left("p"), "no healthy backend in pool \"p\"");
        let mut a = Attempts::new(2, None);
        a.start(addr(1));
        assert_eq!(a.none_left("p"), "no other healthy backend in pool \"p\"");
        let mut a = Attempts::new(2, None);
        a.start(addr(1));
        a.connect_failed(addr(1), "p", &err(ErrorType::ConnectTimedout));
        assert_eq!(
            a.none_left("p"),
            "cannot connect to backend 127.0.0.1:1 of pool \"p\": ConnectTimedout"
        );
        let reason = a.none_left("p");
        assert_eq!(a.failure(), Some(reason.as_str()));
    }

    #[test]
    fn only_a_replayable_request_is_retried_after_a_proxy_error() {
        // (reused, replayable, answered, error, retried)
        let table = [
            (false, true, false, ErrorType::ConnectionClosed, true),
            (false, false, false, ErrorType::ConnectionClosed, false),
            (false, true, true, ErrorType::ConnectionClosed, false),
            // Waiting for the header: a frozen backend, replayed elsewhere.
            (false, true, false, ErrorType::ReadTimedout, true),
            (false, false, false, ErrorType::ReadTimedout, false),
            // The body stalled after the viewer got the header: too late.
            (false, true, true, ErrorType::ReadTimedout, false),
            (true, true, true, ErrorType::ReadTimedout, true),
            (true, false, false, ErrorType::ConnectionClosed, false),
        ];
        for (reused, replayable, answered, etype, want) in table {
            let mut a = Attempts::new(1, None);
            a.start(addr(1));
            let e = err(etype.clone());
            let got = a.proxy_failed(addr(1), "p", &e, reused, replayable, answered);
            assert_eq!(got, want, "{reused} {replayable} {answered} {etype:?}");
            // A reused connection's failure does not count against the backend.
            assert_eq!(a.tried().len(), usize::from(!reused));
        }
        let mut spent = Attempts::new(0, None);
        spent.start(addr(1));
        let e = err(ErrorType::ConnectionClosed);
        assert!(!spent.proxy_failed(addr(1), "p", &e, false, true, false));
        assert_eq!(
            spent.failure(),
            Some("backend 127.0.0.1:1 of pool \"p\" failed: ConnectionClosed")
        );
    }

    #[test]
    fn an_error_status_goes_to_another_backend_only_when_one_is_left_to_try() {
        // (replayable, another backend, retries, retried)
        let table = [
            (true, true, 1, true),
            (false, true, 1, false),
            (true, false, 1, false),
            (true, true, 0, false),
        ];
        for (replayable, another, retries, want) in table {
            let mut a = Attempts::new(retries, None);
            a.start(addr(1));
            let got = a.answered_error(addr(1), "p", 503, replayable, another);
            assert_eq!(got, want, "{replayable} {another} {retries}");
            // The answer passed on is no failure of the edge's.
            let failure = want.then_some("backend 127.0.0.1:1 of pool \"p\" answered 503");
            assert_eq!(a.failure(), failure);
        }
    }

    #[test]
    fn a_failure_is_explained_by_its_innermost_error_and_context() {
        let timeout = Error::explain(ErrorType::ReadTimedout, "reading body, timeout: 1s");
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let reset = Error::because(ErrorType::ReadError, "when reading body", io);
        let header = Error::because(
            ErrorType::InvalidHTTPHeader,
            format!("buf: HTTP/1.1 2x0 OK\\r\\n{}", "x".repeat(500)),
            std::io::Error::other("invalid response status"),
        );
        for (e, want) in [
            (timeout, "ReadTimedout (reading body, timeout: 1s)"),
            (reset, "ReadError: connection reset (when reading body)"),
        ] {
            // Contexts added on the way out (the peer) do not hide the innermost one.
            assert_eq!(explain(&e.more_context("Peer: 127.0.0.1:1")), want);
        }
        let text = explain(&header);
        assert!(
            text.starts_with("InvalidHTTPHeader: invalid response status (buf: HTTP/1.1 2x0"),
            "{text}"
        );
        assert!(text.ends_with("xx…)") && text.len() < 160, "{text}");
        let mut a = Attempts::new(0, None);
        a.start(addr(1));
        let e = Error::explain(ErrorType::ReadTimedout, "reading body, timeout: 1s");
        a.proxy_failed(addr(1), "p", &e, false, true, true);
        assert_eq!(
            a.failure(),
            Some("backend 127.0.0.1:1 of pool \"p\" failed: ReadTimedout (reading body, timeout: 1s)")
        );
    }

    #[test]
    fn the_total_timeout_bounds_each_attempt() {
        let hour = Duration::from_secs(3600);
        let mut a = Attempts::new(0, Some(hour));
        let later = Instant::now() + 2 * hour;
        assert!(a.check_total_timeout(later).is_ok(), "no attempt started");
        a.start(addr(1));
        assert!(a.check_total_timeout(Instant::now()).is_ok());
        let e = a.check_total_timeout(later).unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ReadTimedout);
        let mut unbounded = Attempts::new(0, None);
        unbounded.start(addr(1));
        assert!(unbounded.check_total_timeout(later).is_ok());
    }
}
