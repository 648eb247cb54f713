//! The state one request carries across pingora's phases.

use std::sync::Arc;
use std::time::Instant;

use pingora_cache::CacheKey;
use pingora_error::Error;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use prometheus::IntGauge;

use crate::active::{Active, Route};
use crate::cache::background::FillPermit;
use crate::cache::invalidation::{self, Answered};
use crate::cache::store::{MemoryStore, StoredBy};
use crate::cache::{key, CacheStatus};
use crate::forwarding::ClientInfo;
use crate::logging::{self, AccessRecord, RequestId};
use crate::metrics::RouteMetrics;
use crate::pool::Attempts;

/// Per-request state shared across phases.
pub(crate) struct RequestCtx {
    pub(super) started: Instant,
    /// The configuration in force when the request arrived; it serves the whole request.
    pub(super) active: Arc<Active>,
    pub(super) route: Option<Arc<Route>>,
    pub(super) raw_host: String,
    /// The canonical request path ([`crate::request_path`]): what routing, the cache key, backend
    /// selection and the upstream request all use.
    pub(super) path: String,
    /// The attempts at the route's pool.
    pub(super) attempts: Attempts,
    pub(super) upstream_status: Option<u16>,
    /// When the request last went upstream (RFC 9111 §4.2.3's request_time).
    pub(super) upstream_sent: Option<Instant>,
    pub(super) cache_status: CacheStatus,
    /// A 304 from revalidation: pingora merges only a few of its fields, RFC 9111 §4.3.4
    /// asks for all of them.
    pub(super) not_modified: Option<ResponseHeader>,
    /// The stored response this request found is stale, and its origin forbade serving it
    /// stale (must-revalidate, proxy-revalidate, no-cache, s-maxage).
    pub(super) stale_forbidden: bool,
    /// Names the request in the access log and on the edge's own error answers.
    pub(super) request_id: RequestId,
    /// Set in a background fill's subrequest: the lock its viewers wait on.
    pub(super) fill: Option<FillPermit>,
    /// This viewer's miss started a background fill, which it then reads like a waiter.
    pub(super) started_fill: bool,
    /// The cache key, once computed.
    pub(super) key: Option<CacheKey>,
    /// Who stores this response, once `response_cache_filter` decided to store it; shared
    /// with its `CacheMeta`'s extensions (the cache lookup shows it).
    pub(super) stored_by: Option<Arc<StoredBy>>,
    /// The origin's fields its `private="…"` / `no-cache="…"` keep out of the stored copy:
    /// this viewer's own (its `Set-Cookie`, say), put back on the response it gets.
    pub(super) withheld: Vec<(http::HeaderName, http::HeaderValue)>,
    _in_flight: InFlight,
}

/// Counts a request in `dime_requests_in_flight` for as long as it lives.
struct InFlight(IntGauge);

impl InFlight {
    fn new(g: &IntGauge) -> Self {
        g.inc();
        InFlight(g.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RequestCtx {
    /// A request arriving now, served by `active`, counted in `in_flight` while it lives.
    pub(super) fn new(active: Arc<Active>, in_flight: &IntGauge) -> Self {
        RequestCtx {
            started: Instant::now(),
            active,
            route: None,
            raw_host: String::new(),
            path: String::new(),
            attempts: Attempts::default(),
            upstream_status: None,
            upstream_sent: None,
            cache_status: CacheStatus::Bypass,
            not_modified: None,
            stale_forbidden: false,
            request_id: RequestId::next(),
            fill: None,
            started_fill: false,
            key: None,
            stored_by: None,
            withheld: Vec::new(),
            _in_flight: InFlight::new(in_flight),
        }
    }

    /// The cache key of the request: normalised host, canonical path and the query parameters
    /// its route keeps.
    pub(super) fn cache_key(&self, session: &Session) -> CacheKey {
        let keep = self
            .route
            .as_ref()
            .and_then(|r| r.spec.cache.keep_query.as_deref());
        let query = session.req_header().uri.query();
        key::cache_key(&self.raw_host, &self.path, query, keep)
    }

    /// Records the finished request in its route's metrics (`unrouted` without one) and the
    /// access log.
    pub(super) fn log(&self, session: &Session, e: Option<&Error>, unrouted: &RouteMetrics) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = self.route_name();
        let bytes = session.body_bytes_sent();
        let duration = self.started.elapsed();
        let route_metrics = self.route.as_ref().map_or(unrouted, |r| &r.metrics);
        let cache = self.cache_status;
        let coalesced = session.cache.lock_duration().is_some();
        let (secs, from_cache) = (duration.as_secs_f64(), cache.served_from_cache());
        route_metrics.record(
            status,
            secs,
            bytes as u64,
            cache.as_str(),
            from_cache,
            coalesced,
        );
        let req = session.req_header();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        logging::access(&AccessRecord {
            client: session.client_addr().and_then(|a| a.as_inet()),
            method: req.method.as_str(),
            host: &self.raw_host,
            path,
            status,
            bytes,
            duration,
            route,
            backend: self.attempts.backend(),
            cache: self.cache_status.as_str(),
            error: e.map(|e| e as &dyn std::fmt::Display),
            request_id: &self.request_id,
        });
    }

    /// RFC 9111 §4.4: an unsafe request the origin answered with 2xx or 3xx invalidates its
    /// target URI and the same-host URIs in Location and Content-Location, each by key lookup.
    pub(super) fn invalidate_after_unsafe_method(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        store: &MemoryStore,
    ) {
        let Some(route) = &self.route else { return };
        let req = session.req_header();
        let answered = Answered {
            method: &req.method,
            upstream_status: self.upstream_status,
            raw_host: &self.raw_host,
            path: &self.path,
            query: req.uri.query(),
            keep: route.spec.cache.keep_query.as_deref(),
        };
        let active = &self.active;
        let n = invalidation::after_response(store, &answered, &resp.headers, |h, p| {
            let i = active.table.lookup(h, p)?;
            Some(active.routes[i].spec.cache.keep_query.as_deref())
        });
        if n > 0 {
            tracing::debug!(route = %route.spec.name, objects = n, "invalidated by {}", req.method);
        }
    }

    /// Who asked, as the forwarding headers tell the origin.
    pub(super) fn client_info(&self, session: &Session) -> ClientInfo<'_> {
        ClientInfo {
            ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string()),
            proto: if is_tls(session) { "https" } else { "http" },
            host: &self.raw_host,
            version: session.req_header().version,
        }
    }

    /// The route's name, `none` before one matched.
    pub(super) fn route_name(&self) -> &str {
        self.route.as_ref().map_or("none", |r| r.spec.name.as_str())
    }
}

/// Whether the viewer's connection is TLS.
pub(super) fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}
