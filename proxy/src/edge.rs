//! The request path: pingora's phase hooks, from route match to upstream and back.
//!
//! request_filter (route) → upstream_peer (pool, backend) → upstream_request_filter (rewrite,
//! forwarding headers) → upstream_response_filter → response_filter → logging. Caching slots
//! in between routing and the upstream, in its own phases.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::HashBinary;
use pingora_cache::lock::LockStatus;
use pingora_cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, ForcedFreshness, HitHandler, RespCacheable,
    VarianceBuilder,
};
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use prometheus::IntGauge;

use crate::active::{Active, Route};
use crate::cache::background::{self, FillPermit};
use crate::cache::policy::{self, RequestDemand};
use crate::cache::store::{StoredBy, BACKGROUND_FILL_TAG};
use crate::cache::{invalidation, key, status_of, AbandonedFill, CacheMode, EdgeCache};
use crate::forwarding::{self, ClientInfo};
use crate::logging::{self, AccessRecord};
use crate::metrics::{status_class, Metrics, RouteMetrics};
use crate::request_path;
use crate::route::normalize_host;

/// The edge proxy: routes each request to a pool and forwards it.
pub struct Edge {
    active: Arc<ArcSwap<Active>>,
    metrics: Arc<Metrics>,
    cache: EdgeCache,
    /// Series for requests no route matched (`route="none"`).
    unrouted: RouteMetrics,
    /// Set while the process hands its listeners over or shuts down: responses then close
    /// their connection, so keep-alive viewers reconnect to the process that stays.
    draining: Arc<AtomicBool>,
}

impl Edge {
    /// An edge serving whatever configuration `active` holds at each request's arrival.
    pub fn new(active: Arc<ArcSwap<Active>>, metrics: Arc<Metrics>, cache: EdgeCache) -> Self {
        Edge {
            unrouted: RouteMetrics::new(&metrics, "none"),
            active,
            metrics,
            cache,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Shares the flag that says the process is draining.
    pub fn with_draining(mut self, draining: Arc<AtomicBool>) -> Self {
        self.draining = draining;
        self
    }
}

/// Whether the viewer's connection is TLS.
fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// `https://host[:port]/path?query` for a plain-HTTP request; the port is the first HTTPS
/// listener's, left out when it is 443. `None` when the host is not a plain host name or IP
/// literal: the viewer's Host header must not be able to point the redirect elsewhere.
fn https_location(raw_host: &str, uri: &http::Uri, https_port: u16) -> Option<String> {
    // normalize_host keeps an IPv6 literal in its brackets and drops the port.
    let host = normalize_host(raw_host);
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    if !plain {
        return None;
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    // HTTP/2 requests carry an absolute URI: only its path and query are kept.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Some(format!("https://{host}{port}{path}"))
}

/// Per-request state shared across phases.
pub struct RequestCtx {
    started: Instant,
    /// The configuration in force when the request arrived; it serves the whole request.
    active: Arc<Active>,
    route: Option<Arc<Route>>,
    raw_host: String,
    /// The canonical request path ([`request_path`]): what routing, the cache key, backend
    /// selection and the upstream request all use.
    path: String,
    tried: Vec<SocketAddr>,
    backend: Option<SocketAddr>,
    attempt_started: Option<Instant>,
    upstream_status: Option<u16>,
    failure: Option<String>,
    cache_status: &'static str,
    /// A 304 from revalidation: pingora merges only a few of its fields, RFC 9111 §4.3.4
    /// asks for all of them.
    not_modified: Option<ResponseHeader>,
    /// Names the request in the access log and on the edge's own error answers.
    request_id: String,
    /// Set in a background fill's subrequest: the lock its viewers wait on.
    fill: Option<FillPermit>,
    /// This viewer's miss started a background fill, which it then reads like a waiter.
    started_fill: bool,
    /// The cache key, once computed.
    key: Option<CacheKey>,
    /// Who would store this response, shared with the key's extensions (the cache lookup
    /// shows it).
    stored_by: Option<Arc<StoredBy>>,
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
    fn route_name(&self) -> &str {
        self.route.as_ref().map_or("none", |r| r.spec.name.as_str())
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            active: self.active.load_full(),
            route: None,
            raw_host: String::new(),
            path: String::new(),
            tried: Vec::new(),
            backend: None,
            attempt_started: None,
            upstream_status: None,
            failure: None,
            cache_status: "BYPASS",
            not_modified: None,
            request_id: logging::next_request_id(),
            fill: None,
            started_fill: false,
            key: None,
            stored_by: None,
            _in_flight: InFlight::new(&self.metrics.in_flight),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        // HTTP/2 carries the host in the URI authority and may send no Host header.
        ctx.raw_host = req
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let host = normalize_host(&ctx.raw_host);
        ctx.path = match request_path::canonicalize(req.uri.path()) {
            Ok(path) => path,
            Err(e) => {
                respond_text(session, 400, &format!("dime: bad request: {e}\n"), &[]).await?;
                return Ok(true);
            }
        };
        let path = ctx.path.as_str();
        match ctx.active.table.lookup(&host, path) {
            Some(i) => {
                let route = ctx.active.routes[i].clone();
                let https_port = ctx
                    .active
                    .config
                    .restart
                    .https_listeners
                    .first()
                    .map(|a| a.port());
                // A background fill is the edge's own request: its viewer was already let in.
                let secure = is_tls(session) || session.subrequest_ctx.is_some();
                if let (true, Some(port), false) = (route.spec.redirect_https, https_port, secure) {
                    ctx.route = Some(route);
                    let Some(location) =
                        https_location(&ctx.raw_host, &session.req_header().uri, port)
                    else {
                        respond_text(
                            session,
                            400,
                            "dime: a redirect to HTTPS needs a Host header with a plain host name\n",
                            &[],
                        )
                        .await?;
                        return Ok(true);
                    };
                    let value = http::HeaderValue::from_str(&location).map_err(|_| {
                        Error::explain(
                            ErrorType::InvalidHTTPHeader,
                            "unrepresentable redirect target",
                        )
                    })?;
                    // 308, not 301: the method and body are kept (RFC 9110 §15.4.9).
                    respond_text(
                        session,
                        308,
                        &format!("dime: moved to {location}\n"),
                        &[(http::header::LOCATION, value)],
                    )
                    .await?;
                    return Ok(true);
                }
                ctx.route = Some(route);
                self.prepare_fill(session, ctx);
                Ok(false)
            }
            None => {
                let shown = if host.is_empty() {
                    "(no host)"
                } else {
                    host.as_str()
                };
                respond_text(
                    session,
                    404,
                    &format!("dime: no route for {shown}{path}\n"),
                    &[],
                )
                .await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        let policy = &route.spec.cache;
        let method = &session.req_header().method;
        if policy.mode == CacheMode::Off
            || !(method == http::Method::GET || method == http::Method::HEAD)
        {
            return Ok(());
        }
        let mut overrides = CacheOptionOverrides::default();
        // Waiters follow the fill as soon as its headers arrive (streaming partial writes),
        // so this only bounds a fill whose origin sends no headers at all.
        overrides.wait_timeout =
            Some(route.pool.spec.read_timeout + route.pool.spec.connect_timeout);
        // A background fill writes without the lock: its viewers wait on the one it holds.
        let lock = ctx.fill.is_none().then_some(self.cache.lock);
        session.cache.enable(
            self.cache.store,
            None,
            Some(self.cache.predictor),
            lock,
            Some(overrides),
        );
        session
            .cache
            .set_max_file_size_bytes(policy.max_object_size);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let mut key = ctx.key.take().unwrap_or_else(|| cache_key(session, ctx));
        if ctx.fill.is_some() {
            key.user_tag = BACKGROUND_FILL_TAG.to_string();
        }
        if let Some(route) = &ctx.route {
            let stored_by = Arc::new(StoredBy {
                route: route.spec.name.clone(),
                policy: route.spec.cache.mode,
                vary: std::sync::Mutex::new(Vec::new()),
            });
            key.extensions.insert(stored_by.clone());
            ctx.stored_by = Some(stored_by);
        }
        Ok(key)
    }

    fn allow_spawning_subrequest(&self, _session: &Session, _ctx: &RequestCtx) -> bool {
        true
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit: &mut HitHandler,
        is_fresh: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        // RFC 9111 §5.2.1: a viewer's no-cache or max-age=0 makes a fresh hit revalidate.
        if is_fresh
            && policy::request_demand(session.req_header(), meta) == RequestDemand::Revalidate
        {
            return Ok(Some(ForcedFreshness::ForceExpired));
        }
        Ok(None)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let Some(route) = &ctx.route else {
            return Ok(RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::NeverEnabled,
            ));
        };
        let policy = &route.spec.cache;
        let now = std::time::SystemTime::now();
        Ok(match ctx.not_modified.take() {
            Some(fresh) => {
                let merged = policy::merge_not_modified(resp, &fresh);
                policy::decide(policy, session.req_header(), &ctx.path, &merged, now)
            }
            None => policy::decide(policy, session.req_header(), &ctx.path, resp, now),
        })
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        // RFC 9111 §4.1: a stored response answers only requests with the same values for the
        // headers its Vary names.
        let mut names: Vec<String> = meta
            .headers()
            .get_all(http::header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return None;
        }
        names.sort();
        names.dedup();
        let mut variance = VarianceBuilder::new();
        let mut shown = Vec::new();
        for name in &names {
            let value: Vec<u8> = req
                .headers
                .get_all(name.as_str())
                .iter()
                .flat_map(|v| v.as_bytes().iter().copied().chain([b',']))
                .collect();
            shown.push((
                name.clone(),
                String::from_utf8_lossy(value.strip_suffix(b",").unwrap_or(&value)).into_owned(),
            ));
            variance.add_owned_name_value(name.clone(), value);
        }
        if let Some(stored_by) = &ctx.stored_by {
            // The last call is the one for the response being stored: a lookup may have
            // called this first for another variant's Vary.
            *stored_by.vary.lock().unwrap_or_else(|p| p.into_inner()) = shown;
        }
        variance.finalize()
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            // stale-while-revalidate: pingora has already checked the stored window, which
            // the policy closes for must-revalidate and no-cache responses.
            None => true,
            // stale-if-error: the origin is unreachable, timed out or answered 5xx.
            Some(e) => match e.etype() {
                ErrorType::HTTPStatus(code) => *code >= 500,
                _ => e.esource() == &ErrorSource::Upstream,
            },
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "no route chosen before upstream_peer",
            );
        };
        let pool = &route.pool;
        // The key is the canonical path the viewer asked for, so consistent hashing keeps one
        // object on one origin whatever the spelling, query string or strip_prefix.
        let key = ctx.path.as_bytes().to_vec();
        match pool.select(&key, &ctx.tried) {
            Some(pick) => {
                let addr = pick.addr;
                if pick.panic {
                    self.metrics
                        .pool_panic_picks
                        .with_label_values(&[pool.name()])
                        .inc();
                }
                ctx.tried.push(addr);
                ctx.backend = Some(addr);
                ctx.attempt_started = Some(Instant::now());
                ctx.upstream_status = None;
                Ok(Box::new(pool.peer(addr)))
            }
            None => {
                let reason = match (&ctx.failure, ctx.tried.is_empty()) {
                    (_, true) => format!("no healthy backend in pool \"{}\"", pool.name()),
                    (Some(last), false) => last.clone(),
                    (None, false) => {
                        format!("no other healthy backend in pool \"{}\"", pool.name())
                    }
                };
                ctx.failure = Some(reason.clone());
                Error::e_explain(ErrorType::HTTPStatus(502), reason)
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let outcome = if is_timeout(&e) {
            "connect_timeout"
        } else {
            "connect_error"
        };
        self.count_upstream(ctx, outcome);
        ctx.failure = Some(format!(
            "cannot connect to backend {} of pool \"{}\": {}",
            peer.address(),
            ctx.route.as_ref().map_or("", |r| r.pool.name()),
            e.etype().as_str()
        ));
        // Nothing reached the origin, so any request may go to another backend at once,
        // rather than failing until the health check notices.
        if self.retry_budget_left(ctx) {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let outcome = if is_timeout(&e) { "timeout" } else { "error" };
        self.count_upstream(ctx, outcome);
        ctx.failure = Some(format!(
            "backend {} of pool \"{}\" failed: {}",
            peer.address(),
            ctx.route.as_ref().map_or("", |r| r.pool.name()),
            e.etype().as_str()
        ));
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if client_reused {
            // A pooled connection the origin had already closed says nothing about the
            // backend: let it be picked again, on a fresh connection.
            ctx.tried.pop();
        }
        // Before any response header arrived, an idempotent request can be replayed on
        // another backend without the viewer seeing anything.
        let retry = replayable
            && (client_reused || (ctx.upstream_status.is_none() && !is_timeout(&e)))
            && self.retry_budget_left(ctx);
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        let path = ctx.path.as_str();
        let path = if route.spec.strip_prefix {
            let rest = path
                .strip_prefix(route.spec.prefix.as_str())
                .unwrap_or(path);
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        } else {
            path.to_string()
        };
        // Always origin-form: HTTP/2 viewers send absolute URIs, HTTP/1.1 origins want a path.
        let target = match session.req_header().uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let target: http::Uri = target.parse().map_err(|e| {
            Error::explain(
                ErrorType::InvalidHTTPHeader,
                format!("bad upstream path: {e}"),
            )
        })?;
        upstream.set_uri(target);
        if upstream.headers.get(http::header::HOST).is_none() && !ctx.raw_host.is_empty() {
            upstream.insert_header(http::header::HOST, ctx.raw_host.as_str())?;
        }
        let client = ClientInfo {
            ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string()),
            proto: if is_tls(session) { "https" } else { "http" },
            host: &ctx.raw_host,
            version: session.req_header().version,
        };
        forwarding::upstream_request(upstream, &client);
        for (name, value) in &route.spec.upstream_headers {
            upstream.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        // As the origin's answer arrives, before the viewer sees it: a viewer who got the
        // answer to its POST never gets the old object afterwards.
        self.invalidate_after_unsafe_method(session, ctx, resp);
        if status == 304 && session.cache.enabled() {
            ctx.not_modified = Some(resp.clone());
        }
        self.count_upstream(ctx, status_class(status));
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let (Some(fill), Some(route)) = (&ctx.fill, &ctx.route) {
            if route.spec.cache.abandoned_fill == AbandonedFill::Abort
                && self.cache.store.fill_abandoned(fill.key())
            {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "background fill aborted: every viewer left (abandoned_fill = \"abort\")",
                );
            }
        }
        let total = ctx.route.as_ref().and_then(|r| r.pool.spec.total_timeout);
        if let (Some(total), Some(start)) = (total, ctx.attempt_started) {
            if start.elapsed() > total {
                return Error::e_explain(
                    ErrorType::ReadTimedout,
                    format!("total_timeout of {total:?} exceeded"),
                );
            }
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(fill) = ctx.fill.as_mut() {
            // The fill is registered (or will not be): the waiting viewers may look again.
            let status = if self.cache.store.holds(fill.key()) {
                LockStatus::Done
            } else {
                LockStatus::GiveUp
            };
            fill.release(status);
        }
        forwarding::downstream_response(resp, session.req_header().version);
        if self.draining.load(Ordering::Acquire) {
            // HTTP/1.1 answers carry `Connection: close`; HTTP/2 ignores it.
            session.set_keepalive(None);
        }
        ctx.cache_status = if ctx.started_fill {
            // Its miss went to the origin, though it reads the fill like a waiter.
            "MISS"
        } else if session.cache.enabled() || session.cache.bypassing() {
            status_of(&session.cache.phase())
        } else {
            "BYPASS"
        };
        resp.insert_header("x-cache-status", ctx.cache_status)?;
        if let Some(route) = &ctx.route {
            for (name, value) in &route.spec.response_headers {
                resp.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ if is_timeout(e) && e.esource() != &ErrorSource::Downstream => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        // Once the response has started, the only honest signal left is to cut the connection.
        if code > 0 && session.response_written().is_none() {
            // Backends and pools are the operator's business: the log gets the whole reason
            // under the request id, the viewer a short reason and the id to quote.
            let reason = ctx.failure.clone().unwrap_or_else(|| e.to_string());
            let id = ctx.request_id.as_str();
            let route = ctx.route_name();
            if code >= 500 {
                tracing::warn!(request_id = %id, route, status = code, "answered {code}: {reason}");
            } else {
                // A viewer's malformed request is not the operator's problem.
                tracing::info!(request_id = %id, route, status = code, "answered {code}: {reason}");
            }
            let what = match code {
                502 => "bad gateway: the origin could not be reached or failed",
                504 => "gateway timeout: the origin did not answer in time",
                400 => "bad request",
                _ => "internal error",
            };
            // The route's response headers (CORS, for one) belong on its error pages too, or a
            // player cannot even read why its request failed.
            let mut extra = ctx
                .route
                .as_ref()
                .map_or_else(Vec::new, |r| r.spec.response_headers.clone());
            if let Ok(id) = http::HeaderValue::from_str(&ctx.request_id) {
                extra.push((http::HeaderName::from_static("x-request-id"), id));
            }
            let body = format!("dime: {what} (request id {})\n", ctx.request_id);
            let _ = respond_text(session, code, &body, &extra).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    // Every final error is in the access log's `error` field (and an answered one in the
    // `answered` line above): pingora's `Fail to proxy` ERROR would say it a third time.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _e: &Error) -> bool {
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        e: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        logging::proxy_warning(
            &ctx.request_id,
            ctx.route_name(),
            ctx.failure.as_deref(),
            e,
            context,
        );
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.fill.is_some() {
            // Not a viewer's request: its origin attempt is counted, the viewers are logged.
            tracing::debug!(
                route = ctx.route_name(),
                error = ?e.map(|e| e.to_string()),
                "background fill finished"
            );
            return;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route_name().to_string();
        let bytes = session.body_bytes_sent();
        let duration = ctx.started.elapsed();
        let route_metrics = ctx.route.as_ref().map_or(&self.unrouted, |r| &r.metrics);
        route_metrics.record(
            status,
            duration.as_secs_f64(),
            bytes as u64,
            ctx.cache_status,
            session.cache.lock_duration().is_some(),
        );
        let req = session.req_header();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        logging::access(&AccessRecord {
            client: session.client_addr().and_then(|a| a.as_inet()),
            method: req.method.as_str(),
            host: &ctx.raw_host,
            path,
            status,
            bytes,
            duration,
            route: &route,
            backend: ctx.backend,
            cache: ctx.cache_status,
            error: e.map(|e| e.to_string()),
            request_id: &ctx.request_id,
        });
    }
}

impl Edge {
    /// Sets the viewer's send timeout and, for a miss a background task should fill, starts
    /// that task; in the task itself, picks up the lock its viewers wait on.
    fn prepare_fill(&self, session: &mut Session, ctx: &mut RequestCtx) {
        if session.subrequest_ctx.is_some() {
            ctx.fill = background::take_permit(session);
            return;
        }
        session.set_write_timeout(Some(ctx.active.config.server.send_timeout));
        let Some(route) = &ctx.route else { return };
        let policy = &route.spec.cache;
        if policy.mode != CacheMode::Off && background::wanted(session, policy.background_fill) {
            let key = cache_key(session, ctx);
            ctx.started_fill = background::start(&self.cache, session, &key);
            ctx.key = Some(key);
        }
    }

    /// RFC 9111 §4.4: an unsafe request the origin answered with 2xx or 3xx invalidates its
    /// target URI and the same-host URIs in Location and Content-Location, each by key lookup.
    fn invalidate_after_unsafe_method(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        resp: &ResponseHeader,
    ) {
        let req = session.req_header();
        if !invalidation::invalidates(&req.method, ctx.upstream_status) {
            return;
        }
        let Some(route) = &ctx.route else { return };
        let headers = &resp.headers;
        let active = &ctx.active;
        let keys = invalidation::invalidated_keys(
            &ctx.raw_host,
            &ctx.path,
            req.uri.query(),
            route.spec.cache.keep_query.as_deref(),
            headers,
            |host, path| {
                let i = active.table.lookup(host, path)?;
                Some(active.routes[i].spec.cache.keep_query.as_deref())
            },
        );
        let n: usize = keys
            .iter()
            .map(|k| self.cache.store.invalidate_url(k))
            .sum();
        if n > 0 {
            tracing::debug!(route = %route.spec.name, objects = n, "invalidated by {}", req.method);
        }
    }

    fn retry_budget_left(&self, ctx: &RequestCtx) -> bool {
        let retries = ctx.route.as_ref().map_or(0, |r| r.pool.spec.retries);
        ctx.tried.len() <= retries
    }

    fn count_upstream(&self, ctx: &RequestCtx, outcome: &str) {
        let pool = ctx.route.as_ref().map_or("none", |r| r.pool.name());
        let backend = ctx.backend.map(|b| b.to_string()).unwrap_or_default();
        self.metrics
            .upstream_requests
            .with_label_values(&[pool, &backend, outcome])
            .inc();
    }
}

/// The cache key of a request: normalised host, canonical path and the query parameters its
/// route keeps.
fn cache_key(session: &Session, ctx: &RequestCtx) -> CacheKey {
    let keep = ctx
        .route
        .as_ref()
        .and_then(|r| r.spec.cache.keep_query.as_deref());
    let query = session.req_header().uri.query();
    let text = key::key_text(&ctx.raw_host, &ctx.path, query, keep);
    CacheKey::new(text, "")
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::TLSHandshakeTimedout
    )
}

/// Answers with a short plain-text body that never gets cached.
async fn respond_text(
    session: &mut Session,
    status: u16,
    body: &str,
    extra: &[(http::HeaderName, http::HeaderValue)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    // The edge's own answers are text: a browser must not sniff them into HTML.
    resp.insert_header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
    for (name, value) in extra {
        resp.insert_header(name.clone(), value.clone())?;
    }
    forwarding::downstream_response(&mut resp, session.req_header().version);
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session
            .write_response_body(Some(Bytes::copy_from_slice(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::https_location;

    #[test]
    fn the_https_location_keeps_path_and_query_and_swaps_the_port() {
        let uri: http::Uri = "/a/b?x=1".parse().unwrap();
        assert_eq!(
            https_location("Example.com:8080", &uri, 8443).as_deref(),
            Some("https://example.com:8443/a/b?x=1")
        );
        assert_eq!(
            https_location("example.com", &uri, 443).as_deref(),
            Some("https://example.com/a/b?x=1")
        );
        assert_eq!(
            https_location("[::1]:8080", &uri, 8443).as_deref(),
            Some("https://[::1]:8443/a/b?x=1")
        );
        let absolute: http::Uri = "http://example.com/v.m3u8".parse().unwrap();
        assert_eq!(
            https_location("example.com", &absolute, 443).as_deref(),
            Some("https://example.com/v.m3u8")
        );
        assert_eq!(https_location("evil.example/x", &uri, 443), None);
        assert_eq!(https_location("user@evil.example", &uri, 443), None);
    }
}
