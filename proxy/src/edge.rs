//! The request path: pingora's phase hooks, from route match to upstream and back.
//!
//! request_filter (route) → upstream_peer (pool, backend) → upstream_request_filter (rewrite,
//! forwarding headers) → upstream_response_filter → response_filter → logging. Caching slots
//! in between routing and the upstream, in its own phases.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, CachePhase, ForcedFreshness, HitHandler, RespCacheable};
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::active::Active;
use crate::cache::age::{self, Arrival};
use crate::cache::background;
use crate::cache::policy::{self, RequestDemand};
use crate::cache::store::{StoredBy, BACKGROUND_FILL_TAG};
use crate::cache::{self, vary, CacheMode, CacheStatus, EdgeCache};
use crate::config::{PoolSpec, RouteSpec};
use crate::connections;
use crate::forwarding;
use crate::host::{normalize_host, request_host};
use crate::logging;
use crate::metrics::{status_class, Metrics, RouteMetrics};
use crate::pool::attempts::{is_timeout, RETRY_ON_STATUS};
use crate::pool::Attempts;
use crate::request_path;

mod answer;
mod ctx;
pub(crate) mod hit_header;

use ctx::is_tls;
pub(crate) use ctx::RequestCtx;

/// The field that tells a viewer how the cache answered (`HIT`, `MISS`, ...).
const X_CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("x-cache-status");

/// The edge proxy: routes each request to a pool and forwards it.
pub(crate) struct Edge {
    active: Arc<ArcSwap<Active>>,
    metrics: Arc<Metrics>,
    cache: EdgeCache,
    /// Series for requests no route matched (`route="none"`).
    unrouted: RouteMetrics,
    /// Set while the process hands its listeners over or shuts down: responses then close
    /// their connection, so keep-alive viewers reconnect to the process that stays.
    draining: Arc<AtomicBool>,
}

/// How long a request waits on another request's fill of its object. Waiters follow the fill
/// as soon as its header arrives, so this only bounds a fill whose origin sends no header: the
/// fill's own connect and read timeouts, for each attempt its retries allow (a fill that times
/// out on a frozen backend and then gets its answer from another must not leave its waiters
/// with a 504).
fn fill_wait(pool: &PoolSpec) -> Duration {
    let attempts = u32::try_from(pool.retries + 1).unwrap_or(u32::MAX);
    (pool.read_timeout + pool.connect_timeout).saturating_mul(attempts)
}

impl Edge {
    /// An edge serving whatever configuration `active` holds at each request's arrival.
    pub(crate) fn new(
        active: Arc<ArcSwap<Active>>,
        metrics: Arc<Metrics>,
        cache: EdgeCache,
    ) -> Self {
        Edge {
            unrouted: RouteMetrics::new(&metrics, "none", &CacheStatus::LABELS),
            active,
            metrics,
            cache,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Shares the flag that says the process is draining.
    pub(crate) fn with_draining(mut self, draining: Arc<AtomicBool>) -> Self {
        self.draining = draining;
        self
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        // A request header has been read: the connection's header timeout is over.
        connections::request_started();
        RequestCtx::new(self.active.load_full(), &self.metrics.in_flight)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let server = &ctx.active.config.server;
        connections::keep_alive(session, server.keepalive_timeout, server.keepalive_requests);
        let size = connections::header_size(session.req_header());
        if size > server.max_request_header_size {
            // Whatever else the viewer sends on this connection is as suspect: close it.
            session.set_keepalive(None);
            let limit = server.max_request_header_size;
            let body = format!(
                "dime: request header fields too large: {size} bytes, past the {limit}-byte limit\n"
            );
            answer::text(session, 431, &body, &[]).await?;
            return Ok(true);
        }
        let req = session.req_header();
        ctx.raw_host = request_host(&req.uri, &req.headers);
        let host = normalize_host(&ctx.raw_host);
        ctx.path = match request_path::canonicalize(req.uri.path()) {
            Ok(path) => path,
            Err(e) => {
                // RFC 9110 §15.5.15: a target longer than the edge will handle is a 414.
                let status = match e {
                    request_path::PathError::TooLong { .. } => 414,
                    _ => 400,
                };
                answer::text(session, status, &format!("dime: bad request: {e}\n"), &[]).await?;
                return Ok(true);
            }
        };
        let Some(i) = ctx.active.table.lookup(&host, &ctx.path) else {
            let shown = if host.is_empty() { "(no host)" } else { &host };
            let body = format!("dime: no route for {shown}{}\n", ctx.path);
            answer::text(session, 404, &body, &[]).await?;
            return Ok(true);
        };
        let route = ctx.active.routes[i].clone();
        ctx.attempts = Attempts::new(route.pool.spec.retries, route.pool.spec.total_timeout);
        ctx.route = Some(route.clone());
        let https_port = ctx
            .active
            .config
            .restart
            .https_listeners
            .first()
            .map(|a| a.port());
        // A background fill is the edge's own request: its viewer was already let in.
        let secure = is_tls(session) || session.subrequest_ctx.is_some();
        let uri = &session.req_header().uri;
        if let Some(redirect) = route.https_redirect(&ctx.raw_host, uri, https_port, secure) {
            answer::redirect(session, redirect).await?;
            return Ok(true);
        }
        self.prepare_fill(session, ctx)?;
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        let policy = &route.spec.cache;
        if !policy.applies_to(&session.req_header().method) {
            return Ok(());
        }
        let wait = fill_wait(&route.pool.spec);
        // A background fill writes without the lock: its viewers wait on the one it holds.
        let locked = ctx.fill.is_none();
        self.cache.enable(&mut session.cache, policy, wait, locked);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let mut key = ctx.key.take().unwrap_or_else(|| ctx.cache_key(session));
        if ctx.fill.is_some() {
            key.user_tag = BACKGROUND_FILL_TAG.to_string();
        }
        Ok(key)
    }

    fn allow_spawning_subrequest(&self, _session: &Session, _ctx: &RequestCtx) -> bool {
        true
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // A miss of a viewer who reset its HTTP/2 stream already asks no origin.
        connections::still_wanted(session)?;
        Ok(true)
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        ctx.stale_forbidden = !is_fresh
            && ctx
                .route
                .as_ref()
                .is_some_and(|route| route.spec.cache.stale_forbidden(meta));
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
        let now = Arrival::now(ctx.upstream_sent);
        let mut decision = match &ctx.not_modified {
            Some(fresh) => {
                let merged = policy::merge_not_modified(resp, fresh);
                policy::decide(policy, session.req_header(), &ctx.path, &merged, now)
            }
            None => policy::decide(policy, session.req_header(), &ctx.path, resp, now),
        };
        // One more variant of a URL that has its share: it streams through uncached.
        if matches!(decision, RespCacheable::Cacheable(_))
            && resp.headers.contains_key(http::header::VARY)
        {
            let url = session
                .cache
                .maybe_cache_key()
                .and_then(|k| k.primary_key_str());
            if url.is_some_and(|u| self.cache.store.variants_of(u) >= policy.max_variants) {
                self.metrics.cache_variants_refused.inc();
                return Ok(RespCacheable::Uncacheable(
                    pingora_cache::NoCacheReason::Custom(cache::TOO_MANY_VARIANTS),
                ));
            }
        }
        if let RespCacheable::Cacheable(meta) = &mut decision {
            // Who stores it, kept by the store with the object for the cache lookup; the
            // Vary values come in `cache_vary_filter`. Only a response to be stored needs it.
            let stored_by = Arc::new(StoredBy::new(&route.spec.name, policy.mode));
            meta.extensions_mut().insert(stored_by.clone());
            ctx.stored_by = Some(stored_by);
        }
        Ok(decision)
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        vary::variance(meta, req, ctx.stored_by.as_deref())
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        policy::serve_stale(error)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Error::e_explain(
                ErrorType::InternalError,
                "no route chosen before upstream_peer",
            );
        };
        let wait = fill_wait(&route.pool.spec);
        if let Some(reason) = cache::waited_in_vain(session.cache.phase(), wait) {
            // Unless a fill has the object by now (many waiters churning through one): then
            // this request goes to the origin uncached, as pingora sends it.
            if !self.cache.store.holds(&ctx.cache_key(session)) {
                return Error::e_explain(ErrorType::HTTPStatus(504), reason);
            }
        }
        let pool = &route.pool;
        // The key is the canonical path the viewer asked for, so consistent hashing keeps one
        // object on one origin whatever the spelling, query string or strip_prefix.
        let key = ctx.path.as_bytes().to_vec();
        let Some(pick) = pool.select(&key, ctx.attempts.tried()) else {
            let reason = ctx.attempts.none_left(pool.name());
            return Error::e_explain(ErrorType::HTTPStatus(502), reason);
        };
        if pick.panic {
            let panics = &self.metrics.pool_panic_picks;
            panics.with_label_values(&[pool.name()]).inc();
        }
        ctx.attempts.start(pick.addr);
        ctx.upstream_status = None;
        Ok(Box::new(pool.peer(pick.addr)))
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
        let pool = ctx.route.as_ref().map_or("", |r| r.pool.name());
        if ctx.attempts.connect_failed(peer.address(), pool, &e) {
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
        if e.etype() == &RETRY_ON_STATUS {
            // upstream_response_filter decided, and counted the answer.
            let mut e = e.more_context(format!("Peer: {peer}"));
            e.set_retry(true);
            return e;
        }
        if e.esource() == &ErrorSource::Downstream {
            // The viewer left or broke its side (an HTTP/2 stream reset, a closed
            // connection): nothing the backend did, and no one to retry for.
            self.count_upstream(ctx, "viewer_left");
            let mut e = e.more_context(format!("Peer: {peer}"));
            e.set_retry(false);
            return e;
        }
        let outcome = if is_timeout(&e) { "timeout" } else { "error" };
        self.count_upstream(ctx, outcome);
        let pool = ctx.route.as_ref().map_or("", |r| r.pool.name());
        let answered = ctx.upstream_status.is_some();
        let retry = ctx.attempts.proxy_failed(
            peer.address(),
            pool,
            &e,
            client_reused,
            replayable(session),
            answered,
        ) && another_backend(ctx);
        let mut e = e.more_context(format!("Peer: {peer}"));
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
        let query = session.req_header().uri.query();
        let target = route
            .upstream_uri(&ctx.path, query)
            .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e))?;
        upstream.set_uri(target);
        // RFC 9111 §4.2.3's request_time: the response delay is counted from here.
        ctx.upstream_sent = Some(Instant::now());
        if upstream.headers.get(http::header::HOST).is_none() && !ctx.raw_host.is_empty() {
            upstream.insert_header(http::header::HOST, ctx.raw_host.as_str())?;
        }
        forwarding::upstream_request(upstream, &ctx.client_info(session));
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
        // RFC 9110 §7.6.1, RFC 9111 §3.1: what the origin's Connection names is neither
        // stored nor sent on.
        forwarding::strip_connection_options(resp);
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        if let Some(route) = ctx.route.clone() {
            let pool = &route.pool;
            if pool.spec.retry_on_status.contains(&status) {
                let another = another_backend(ctx);
                let peer = ctx
                    .attempts
                    .backend()
                    .map_or(String::new(), |b| b.to_string());
                let replayable = replayable(session);
                if ctx
                    .attempts
                    .answered_error(peer, pool.name(), status, replayable, another)
                {
                    self.count_upstream(ctx, status_class(status));
                    return Error::e_explain(RETRY_ON_STATUS, format!("answered {status}"));
                }
            }
        }
        // As the origin's answer arrives, before the viewer sees it: a viewer who got the
        // answer to its POST never gets the old object afterwards.
        ctx.invalidate_after_unsafe_method(session, resp, self.cache.store);
        if let Some(route) = &ctx.route {
            ctx.withheld = policy::withheld_fields(&route.spec.cache, resp);
        }
        if status == 304 && session.cache.maybe_cache_meta().is_some() {
            policy::strip_not_modified(resp);
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
            fill.check_abandoned(self.cache.store, route.spec.cache.abandoned_fill)?;
        }
        ctx.attempts.check_total_timeout(Instant::now())?;
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if is_interim(resp) {
            // A 1xx (103 Early Hints) is no answer: it goes on as the origin sent it, less
            // what is hop-by-hop, and the fill, the cache status and the route's fields wait
            // for the final response.
            forwarding::strip_connection_options(resp);
            forwarding::downstream_response(resp, session.req_header().version);
            return Ok(());
        }
        if let Some(fill) = ctx.fill.as_mut() {
            fill.release_for(self.cache.store);
        }
        if let (Some(nm), CachePhase::RevalidatedNoCache(_)) =
            (&ctx.not_modified, session.cache.phase())
        {
            // pingora serves a revalidated response it does not store again with only the
            // 304's freshness fields: the viewer gets all of them (RFC 9111 §4.3.4).
            policy::apply_not_modified(resp, nm);
        }
        age::stamp_stored_miss(resp, &session.cache);
        if self.draining.load(Ordering::Acquire) {
            // HTTP/1.1 answers carry `Connection: close`; HTTP/2 ignores it.
            session.set_keepalive(None);
        }
        ctx.cache_status = CacheStatus::of_request(&session.cache, ctx.started_fill);
        let withheld = std::mem::take(&mut ctx.withheld);
        let route = ctx.route.as_deref().map(|r| &r.spec);
        let version = session.req_header().version;
        viewer_headers(resp, version, ctx.cache_status, withheld, route)
    }

    // None: the edge compresses nothing (pingora's default adds a compression module set to
    // do nothing), and a hit with no module may be sent its kept header (`hit_header`).
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn cache_hit_wire_header(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Option<pingora_proxy::WireHeader> {
        // What `response_filter` does on a fresh hit, for a hit that skips it.
        let wire = hit_header::for_hit(session, ctx)?;
        if self.draining.load(Ordering::Acquire) {
            session.set_keepalive(None);
        }
        Some(wire)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = answer::failure_status(e, ctx);
        // pingora does not reuse a viewer's connection after a failed request: the answer says
        // so, or a client sends its next request on it and meets a reset (and a POST is lost).
        session.set_keepalive(None);
        // Once the response has started, the only honest signal left is to cut the connection.
        match session.response_written() {
            _ if code == 0 => {}
            // A background fill answers no viewer; its viewers' own requests fail with it.
            _ if ctx.fill.is_some() => answer::fill_failed(e, ctx),
            None => answer::error(session, code, e, ctx).await,
            Some(sent) => answer::cut(sent.status.as_u16(), e, ctx),
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
            ctx.attempts.failure(),
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
        ctx.log(session, e, &self.unrouted);
    }
}

impl Edge {
    /// Sets the viewer's send timeout and, for a miss a background task should fill, starts
    /// that task; in the task itself, picks up the lock its viewers wait on. An error when the
    /// miss's viewer has reset its HTTP/2 stream already.
    fn prepare_fill(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if session.subrequest_ctx.is_some() {
            ctx.fill = background::take_permit(session);
            return Ok(());
        }
        session.set_write_timeout(Some(ctx.active.config.server.send_timeout));
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        let policy = &route.spec.cache;
        if policy.mode != CacheMode::Off && background::wanted(session, policy.background_fill) {
            let key = ctx.cache_key(session);
            ctx.started_fill = background::start(&self.cache, session, &key)?;
            ctx.key = Some(key);
        }
        Ok(())
    }

    fn count_upstream(&self, ctx: &RequestCtx, outcome: &str) {
        let pool = ctx.route.as_ref().map_or("none", |r| r.pool.name());
        let backend = ctx.attempts.backend();
        self.metrics.count_upstream(pool, backend, outcome);
    }
}

/// Whether a request may be sent again to another backend: its method is idempotent and its
/// body, if any, is still whole in pingora's retry buffer.
fn replayable(session: &Session) -> bool {
    session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated()
}

/// Whether the request's pool has a backend it has not tried yet (one marked down too, in
/// panic mode): a retry with none would only turn the failure into "no backend left".
fn another_backend(ctx: &RequestCtx) -> bool {
    ctx.route.as_ref().is_some_and(|route| {
        let key = ctx.path.as_bytes();
        route.pool.select(key, ctx.attempts.tried()).is_some()
    })
}

/// The fields `response_filter` sets on every response to a viewer, in this order: hop-by-hop
/// fields out and `Via` in, `X-Cache-Status`, the fields the origin withheld from the stored
/// copy back (`withheld`, only for the viewer whose request brought the response), then the
/// route's targeted cache-control fields out and its `response_headers` in.
/// A 1xx response other than 101 (which is final): RFC 9110 §15.2.
fn is_interim(resp: &ResponseHeader) -> bool {
    resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS
}

pub(crate) fn viewer_headers(
    resp: &mut ResponseHeader,
    version: http::Version,
    status: CacheStatus,
    withheld: Vec<(http::HeaderName, http::HeaderValue)>,
    route: Option<&RouteSpec>,
) -> Result<()> {
    forwarding::downstream_response(resp, version);
    resp.insert_header(X_CACHE_STATUS, HeaderValue::from_static(status.as_str()))?;
    restore_withheld(resp, withheld);
    if let Some(route) = route {
        route.cache.strip_targeted_fields(resp);
        for (name, value) in &route.response_headers {
            resp.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(())
}

/// RFC 9111 §5.2.2.7, §5.2.2.4: the stored copy lacks the fields the origin withheld from
/// caches, and the viewer whose request brought the response reads that copy as it fills;
/// it gets them back here, and no other viewer ever does.
fn restore_withheld(
    resp: &mut ResponseHeader,
    withheld: Vec<(http::HeaderName, http::HeaderValue)>,
) {
    for (name, value) in withheld {
        if resp.headers.get_all(&name).iter().all(|v| *v != value) {
            let _ = resp.append_header(name, value);
        }
    }
}
