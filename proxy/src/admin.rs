//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`, the cache purge and
//! lookup APIs, and the config API (`POST /config/reload`, `GET /config`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::active::{Active, Readiness};
use crate::cache::{lookup, purge, EdgeCache};
use crate::config::redact;
use crate::host::normalize_host;
use crate::metrics::Metrics;
use crate::reload::{ReloadOutcome, Reloader, Trigger};
use crate::status::{Format, Status};

/// The admin HTTP application.
pub(crate) struct Admin {
    /// The configuration in force.
    pub active: Arc<ArcSwap<Active>>,
    /// The metrics to expose.
    pub metrics: Arc<Metrics>,
    /// The cache the purge API acts on.
    pub cache: EdgeCache,
    /// Reloads the config file; `None` in quick mode, which has none.
    pub reloader: Option<Arc<Reloader>>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let is_read = method == http::Method::GET || method == http::Method::HEAD;
        let path = req.uri.path().to_string();
        match (is_read, path.as_str()) {
            (true, "/metrics") => {
                self.metrics.cache_objects.set(clamp(self.cache.store.object_count()));
                self.metrics.cache_size_bytes.set(clamp(self.cache.store.size_bytes()));
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            (true, "/healthz") => text(StatusCode::OK, "ok\n"),
            (true, "/readyz") => match self.active.load().readiness() {
                Readiness::Ready => text(StatusCode::OK, "ready\n"),
                Readiness::Degraded(why) => text(StatusCode::OK, &format!("ready, degraded:\n{why}\n")),
                Readiness::NotReady(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready:\n{why}\n")),
            },
            (true, "/status") => self.status(session),
            (true, "/cache/lookup") => match self.authorize(session, "cache lookup") {
                Err(refused) => *refused,
                Ok(()) => self.lookup(session),
            },
            (false, "/cache/purge") if method == http::Method::POST => self.purge(session),
            (false, "/config/reload") if method == http::Method::POST => {
                match self.authorize(session, "config reload") {
                    Err(refused) => *refused,
                    Ok(()) => self.reload().await,
                }
            }
            (true, "/config") => match self.authorize(session, "config read") {
                Err(refused) => *refused,
                Ok(()) => self.show_config(),
            },
            (_, "/metrics" | "/healthz" | "/readyz" | "/status" | "/cache/lookup" | "/config") => {
                with_allow(text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"), "GET, HEAD")
            }
            (_, "/cache/purge" | "/config/reload") => with_allow(text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"), "POST"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /metrics, /healthz, /readyz, /status, POST /cache/purge, GET /cache/lookup, POST /config/reload and GET /config\n",
            ),
        }
    }
}

impl Admin {
    /// `POST /cache/purge?url=URL`, `?prefix=/PATH` (every host) or `HOST/PATH`, `?all=true`,
    /// each with `&dry_run=true` to see what would go; parsed and applied by `cache::purge`.
    fn purge(&self, session: &ServerSession) -> Response<Vec<u8>> {
        // The active config's token: a reload may have changed it.
        let token = self.active.load().config.cache.purge_token.clone();
        let Some(token) = token else {
            return text(
                StatusCode::FORBIDDEN,
                &format!(
                    "purge is disabled: {} to enable it\n",
                    self.how_to_set("cache.purge_token", "--purge-token")
                ),
            );
        };
        let field = self.setting("cache.purge_token", "--purge-token");
        if let Err(refused) = check_bearer(session, &token, "purge", field) {
            return *refused;
        }
        let params = query_params(session.req_header().uri.query().unwrap_or(""));
        let request = match purge::parse(&params) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        };
        let outcome = request.apply(self.cache.store);
        let (kind, target) = (outcome.kind, &outcome.target);
        if let Some(purged) = outcome.purged {
            self.metrics.cache_purges.with_label_values(&[kind]).inc();
            tracing::info!(kind, target = %target, purged, "cache purge");
        } else {
            let would_purge = outcome.would_purge.unwrap_or(0);
            tracing::info!(kind, target = %target, would_purge, "cache purge dry run");
        }
        let mut body = serde_json::to_vec(&outcome).unwrap_or_default();
        body.push(b'\n');
        reply(StatusCode::OK, "application/json", body)
    }

    /// The name an operator knows `field` by: the config field, or in quick mode (no file) the
    /// `dime-edge proxy` flag that sets it.
    fn setting(&self, field: &'static str, flag: &'static str) -> &'static str {
        if self.reloader.is_none() {
            flag
        } else {
            field
        }
    }

    /// How to set `field`, for a refusal that says how to enable what was refused.
    fn how_to_set(&self, field: &'static str, flag: &'static str) -> String {
        if self.reloader.is_none() {
            format!("start quick mode with {flag} TOKEN (or {flag}-file FILE)")
        } else {
            format!("set {field} in the config")
        }
    }
}

impl Admin {
    /// Lets the request through when it carries the active config's `admin.token`.
    fn authorize(&self, session: &ServerSession, what: &str) -> Result<(), Refused> {
        let token = self.active.load().config.admin.token.clone();
        let Some(token) = token else {
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                &format!(
                    "{what} is disabled: {} to enable it\n",
                    self.how_to_set("admin.token", "--admin-token")
                ),
            )));
        };
        let field = self.setting("admin.token", "--admin-token");
        check_bearer(session, &token, what, field)
    }

    /// `POST /config/reload`: 200 with the outcome when applied or unchanged, 422 with every
    /// error when the file is invalid (the old config keeps serving), 409 in quick mode.
    async fn reload(&self) -> Response<Vec<u8>> {
        let Some(reloader) = &self.reloader else {
            return text(
                StatusCode::CONFLICT,
                "quick mode (dime-edge proxy) has no config file to reload\n",
            );
        };
        let outcome = reloader.reload(Trigger::Admin).await;
        let status = match outcome {
            ReloadOutcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        };
        let mut body = serde_json::to_vec_pretty(&outcome).unwrap_or_default();
        body.push(b'\n');
        reply(status, "application/json", body)
    }

    /// `GET /config`: the active config as TOML, secrets redacted, with its hash and the
    /// settings that wait on a restart in a comment header.
    fn show_config(&self) -> Response<Vec<u8>> {
        let active = self.active.load();
        let config = &active.config;
        let hash = crate::status::config_hash(&active, self.reloader.as_deref());
        let mut out = format!("# source: {}\n# hash: {hash}\n", config.source);
        if let Some(r) = &self.reloader {
            for line in r.restart_required() {
                out.push_str(&format!("# restart required: {line}\n"));
            }
        }
        match redact::redacted_toml(&config.text) {
            Ok(toml) => out.push_str(&toml),
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot render the active config: {e}\n"),
                )
            }
        }
        let mut r = reply(
            StatusCode::OK,
            "application/toml; charset=utf-8",
            out.into_bytes(),
        );
        if let Ok(v) = http::HeaderValue::from_str(&hash) {
            r.headers_mut().insert("x-dime-config-hash", v);
        }
        r
    }
}

impl Admin {
    /// `GET /status`: HTML by default, JSON or plain text by `Accept`. No token: it shows
    /// what `/metrics` shows, read from the same series.
    fn status(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let active = self.active.load();
        let status = Status::gather(
            &active,
            &self.metrics,
            self.cache.store,
            self.reloader.as_deref(),
        );
        match Format::negotiate(accept(session), Format::Html) {
            Format::Html => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                status.html().into_bytes(),
            ),
            Format::Json => json(&status),
            Format::Text => text(StatusCode::OK, &status.text()),
        }
    }

    /// `GET /cache/lookup?url=HOST/PATH`: what the cache holds for one URL, as JSON (or
    /// plain text by `Accept`).
    fn lookup(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let params = query_params(session.req_header().uri.query().unwrap_or(""));
        if let Some((name, _)) = params.iter().find(|(n, _)| n != "url") {
            return text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "cache lookup: unknown parameter {name:?}; {}\n",
                    lookup::ACCEPTED_FORM
                ),
            );
        }
        let url = params
            .into_iter()
            .find(|(n, _)| n == "url")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let target = match lookup::parse_target(&url) {
            Ok(t) => t,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("cache lookup: {e}; {}\n", lookup::ACCEPTED_FORM),
                )
            }
        };
        let active = self.active.load();
        let route = active
            .table
            .lookup(&normalize_host(&target.host), &target.path)
            .map(|i| &active.routes[i].spec);
        let route = route.map(|r| (r.name.as_str(), &r.cache));
        let report = lookup::lookup(self.cache.store, &url, &target, route);
        match Format::negotiate(accept(session), Format::Json) {
            Format::Text => text(StatusCode::OK, &report.text()),
            _ => json(&report),
        }
    }
}

fn accept(session: &ServerSession) -> Option<&str> {
    session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
}

fn json(value: &impl serde::Serialize) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    reply(StatusCode::OK, "application/json", body)
}

/// 401 with `WWW-Authenticate: Bearer` unless the request carries `Authorization: Bearer
/// <token>`.
fn check_bearer(
    session: &ServerSession,
    token: &str,
    what: &str,
    field: &str,
) -> Result<(), Refused> {
    let presented = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        return Ok(());
    }
    let client = session
        .client_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::warn!(client = %client, "{what} refused: missing or wrong bearer token");
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        &format!("{what} needs Authorization: Bearer <{field}>\n"),
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    Err(Box::new(r))
}

/// The answer to a request that may not proceed.
type Refused = Box<Response<Vec<u8>>>;

fn query_params(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn with_allow(mut r: Response<Vec<u8>>, allow: &'static str) -> Response<Vec<u8>> {
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    // Every admin answer is the edge's own: a browser must not sniff it into HTML.
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    if let Ok(len) = http::HeaderValue::from_str(&r.body().len().to_string()) {
        r.headers_mut().insert(http::header::CONTENT_LENGTH, len);
    }
    r
}
