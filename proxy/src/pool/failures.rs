//! Why each backend's health check last failed, in a few words, for the health log lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora_error::{Error, ErrorType, Result};
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;

/// The last failure of each backend whose latest check failed.
#[derive(Default)]
pub(crate) struct Failures(Mutex<HashMap<SocketAddr, String>>);

impl Failures {
    /// Why `addr`'s latest check failed; `None` when it passed (or never ran).
    pub(crate) fn reason(&self, addr: &SocketAddr) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned()
    }

    fn record(&self, addr: SocketAddr, outcome: Option<String>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Some(reason) => map.insert(addr, reason),
            None => map.remove(&addr),
        };
    }
}

/// A health check that remembers why each backend failed it.
pub(crate) struct Recorded {
    inner: Box<dyn HealthCheck + Send + Sync>,
    failures: Arc<Failures>,
}

impl Recorded {
    /// `inner`, recording into `failures`.
    pub(crate) fn new(inner: Box<dyn HealthCheck + Send + Sync>, failures: Arc<Failures>) -> Self {
        Recorded { inner, failures }
    }
}

#[async_trait]
impl HealthCheck for Recorded {
    async fn check(&self, target: &Backend) -> Result<()> {
        let result = self.inner.check(target).await;
        if let Some(addr) = target.as_inet() {
            self.failures
                .record(*addr, result.as_ref().err().map(|e| reason(e)));
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        self.inner.health_status_change(target, healthy).await
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// A check's error as an operator reads it: `connection refused`, `expected 200, got 503`,
/// not pingora's error chain.
pub(crate) fn reason(e: &Error) -> String {
    let context = e.context.as_ref().map(|c| c.as_str().to_string());
    match e.etype() {
        ErrorType::ConnectRefused => "connection refused".into(),
        ErrorType::ConnectTimedout => "connect timed out".into(),
        ErrorType::ConnectNoRoute => "no route to host".into(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timed out".into(),
        ErrorType::ConnectionClosed => "connection closed by the backend".into(),
        ErrorType::TLSHandshakeFailure => match context {
            Some(c) => format!("TLS handshake failed: {c}"),
            None => "TLS handshake failed".into(),
        },
        ErrorType::TLSHandshakeTimedout => "TLS handshake timed out".into(),
        // The validator's own words: `expected 200, got 503`.
        ErrorType::CustomCode(_, got) => match context {
            Some(c) if c.starts_with("expected") => c,
            _ => format!("status {got}"),
        },
        other => match context {
            Some(c) => format!("{}: {c}", other.as_str()),
            None => other.as_str().into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_errors_read_as_a_few_words() {
        let cases: Vec<(Box<Error>, &str)> = vec![
            (
                Error::explain(ErrorType::ConnectRefused, "Peer: 127.0.0.1:9"),
                "connection refused",
            ),
            (
                Error::explain(
                    ErrorType::CustomCode("unexpected health check status", 503),
                    "expected 200, got 503",
                ),
                "expected 200, got 503",
            ),
            (
                Error::explain(
                    ErrorType::CustomCode("non 200 code", 404),
                    "during http healthcheck",
                ),
                "status 404",
            ),
            (Error::new(ErrorType::ConnectTimedout), "connect timed out"),
        ];
        for (e, want) in cases {
            assert_eq!(reason(&e), want);
        }
    }
}
