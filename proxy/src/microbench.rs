//! Doors into the hit path for `proxy/benches/hit_path.rs`: each function calls the edge's own
//! code once and adds none of its own, so the bench times the code a cache hit runs, not a copy.
//!
//! Not an API: nothing else may use it, and it changes whenever the hit path does.

use std::sync::Arc;
use std::time::SystemTime;

use pingora_cache::CacheKey;
use pingora_http::ResponseHeader;

use crate::active::{self, Active};
use crate::cache::kept_header::KeptHeader;
use crate::cache::{key, CacheStatus};
use crate::logging::{AccessRecord, LogFormat};
use crate::metrics::Metrics;
use crate::{config, edge, host, request_path};

/// A config's routes as the edge builds them at startup: the table, each route's spec and its
/// metric series, resolved once.
pub struct Routes(Active);

impl Routes {
    /// Compiles `toml`, a whole `dime-edge` config file, and builds its routes and pools as the
    /// edge does; panics if it does not compile.
    pub fn from_config(toml: &str) -> Self {
        let config = config::compile("bench.toml", toml).unwrap_or_else(|e| panic!("{e}"));
        let active = Active::build(config, &Metrics::new()).unwrap_or_else(|e| panic!("{e}"));
        Routes(active)
    }
}

/// The route a request matched, shared as the request's context holds it.
pub struct Route(Arc<active::Route>);

impl Route {
    /// Its name, as metrics and the access log show it.
    pub fn name(&self) -> &str {
        &self.0.spec.name
    }

    /// The query parameters its cache key keeps (`None`: the whole query).
    pub fn keep_query(&self) -> Option<&[String]> {
        self.0.spec.cache.keep_query.as_deref()
    }
}

/// `request_filter`'s host: the request target's authority, else `Host`.
pub fn request_host(uri: &http::Uri, headers: &http::HeaderMap) -> String {
    host::request_host(uri, headers)
}

/// `request_filter`'s canonical path; `None` where the edge answers 400.
pub fn canonicalize(raw: &str) -> Option<String> {
    request_path::canonicalize(raw).ok()
}

/// The host as routing matches it.
pub fn normalize_host(raw: &str) -> String {
    host::normalize_host(raw).into_owned()
}

/// `request_filter`'s route lookup for a normalised host and a canonical path, and the route it
/// hands the request's context.
pub fn lookup(routes: &Routes, host: &str, path: &str) -> Option<Route> {
    let i = routes.0.table.lookup(host, path)?;
    Some(Route(routes.0.routes[i].clone()))
}

/// `cache_key_callback`'s key: normalised host, canonical path and the query parameters kept.
pub fn cache_key(host: &str, path: &str, query: Option<&str>, keep: Option<&[String]>) -> CacheKey {
    key::cache_key(host, path, query, keep)
}

/// The key's text alone (what a purge matches).
pub fn key_text(host: &str, path: &str, query: Option<&str>, keep: Option<&[String]>) -> String {
    key::key_text(host, path, query, keep)
}

/// `response_filter`'s fields on a response served from the cache, for a viewer whose request
/// did not bring it (so no withheld fields come back).
pub fn response_headers(
    resp: &mut ResponseHeader,
    version: http::Version,
    status: CacheStatus,
    route: &Route,
) -> pingora_error::Result<()> {
    edge::viewer_headers(resp, version, status, Vec::new(), Some(&route.0.spec))
}

/// A stored object's response header kept in wire form for a route, as the first plain
/// GET hit on it leaves it (`edge/hit_header.rs`).
pub struct KeptHit(KeptHeader);

/// What the first plain GET hit on a stored object (`stored`, with a body of `body_len` bytes)
/// does: builds the header it sends and keeps it for `route`. `None` when the header cannot
/// be kept (no `Date`, or no `Content-Length` of `body_len`).
pub fn keep_hit_header(stored: &ResponseHeader, body_len: usize, route: &Route) -> Option<KeptHit> {
    let wire = edge::hit_header::build(stored, body_len, Some(&route.0))?;
    let kept = KeptHeader::default();
    kept.keep(Some(&route.0), Some(wire));
    Some(KeptHit(kept))
}

/// What each later plain GET hit does in its place of `response_filter`: the header kept for
/// its route.
pub fn kept_hit_header(kept: &KeptHit, route: &Route) -> Option<bytes::Bytes> {
    kept.0.get(Some(&route.0)).flatten().map(|wire| wire.head)
}

/// `logging`'s metrics: one finished request in its route's series.
pub fn record(
    route: &Route,
    status: u16,
    seconds: f64,
    bytes: u64,
    cache_status: &str,
    served_from_cache: bool,
    coalesced: bool,
) {
    route.0.metrics.record(
        status,
        seconds,
        bytes,
        cache_status,
        served_from_cache,
        coalesced,
    );
}

/// `logging`'s access log line, formatted onto `out` as the log's writer does it, without the
/// writer's lock or its thread.
pub fn access_line(
    out: &mut Vec<u8>,
    format: LogFormat,
    r: &AccessRecord<'_>,
    at: SystemTime,
) -> std::io::Result<()> {
    crate::logging::access::line(out, format, r, at)
}

/// `count` segment bodies of `len` bytes (at least 256 KiB) as the store keeps them, each in a
/// file of its own (`cache/body_file.rs`); at most `count` files may be open.
pub fn body_files(count: usize, len: usize) -> Vec<bytes::Bytes> {
    use crate::cache::body_file;
    body_file::install(
        count as u64,
        crate::cache::BodyFileCounters {
            files: prometheus::IntGauge::new("files", "files").expect("valid metric"),
            sent_bytes: prometheus::IntCounter::new("sent", "sent").expect("valid metric"),
            in_memory: prometheus::IntCounter::new("in_memory", "in_memory").expect("valid metric"),
        },
    );
    let chunks = std::collections::VecDeque::from([bytes::Bytes::from(vec![0x47u8; len])]);
    (0..count).map(|_| body_file::body_of(&chunks)).collect()
}

/// What pingora-core asks before writing any body slice: whether it is in a body file.
pub fn in_body_file(buf: &[u8]) -> bool {
    crate::cache::body_file::find(buf).is_some()
}
