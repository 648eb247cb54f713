//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and the cache purge API.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::active::Active;
use crate::cache::{key, EdgeCache};
use crate::metrics::Metrics;

/// The admin HTTP application.
pub struct Admin {
    /// The configuration in force.
    pub active: Arc<ArcSwap<Active>>,
    /// The metrics to expose.
    pub metrics: Arc<Metrics>,
    /// The cache the purge API acts on.
    pub cache: EdgeCache,
    /// Bearer token for purges; `None` disables them.
    pub purge_token: Option<String>,
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
            (true, "/readyz") => match self.active.load().not_ready() {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready:\n{why}\n")),
            },
            (false, "/cache/purge") if method == http::Method::POST => self.purge(session),
            (_, "/metrics" | "/healthz" | "/readyz") => {
                with_allow(text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"), "GET, HEAD")
            }
            (_, "/cache/purge") => with_allow(text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"), "POST"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /metrics, /healthz, /readyz and POST /cache/purge\n",
            ),
        }
    }
}

impl Admin {
    /// `POST /cache/purge?url=HOST/PATH`, `?prefix=HOST/PATH` (or `/PATH` for any host), `?all=true`.
    fn purge(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let Some(token) = &self.purge_token else {
            return text(
                StatusCode::FORBIDDEN,
                "purge is disabled: set cache.purge_token in the config to enable it\n",
            );
        };
        let req = session.req_header();
        let presented = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            let client = session
                .client_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::warn!(client = %client, "purge refused: missing or wrong bearer token");
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "purge needs Authorization: Bearer <cache.purge_token>\n",
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        let params = query_params(req.uri.query().unwrap_or(""));
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let store = self.cache.store;
        let (kind, target, purged) = if let Some(url) = get("url") {
            let target = normalize_target(&url);
            let t = target.clone();
            let n = store.purge_where(move |k| key::without_query(k) == t);
            ("url", target, n)
        } else if let Some(prefix) = get("prefix") {
            if prefix.starts_with('/') {
                let p = prefix.clone();
                let n = store.purge_where(move |k| {
                    k.find('/').is_some_and(|i| k[i..].starts_with(p.as_str()))
                });
                ("prefix", format!("(any host){prefix}"), n)
            } else {
                let target = normalize_target(&prefix);
                let t = target.clone();
                let n = store.purge_where(move |k| k.starts_with(t.as_str()));
                ("prefix", target, n)
            }
        } else if get("all").is_some_and(|v| v == "true" || v == "1") {
            ("all", "*".to_string(), store.purge_all())
        } else {
            return text(
                StatusCode::BAD_REQUEST,
                "name what to purge: ?url=HOST/PATH, ?prefix=HOST/PATH (or /PATH for every host), or ?all=true\n",
            );
        };
        self.metrics.cache_purges.with_label_values(&[kind]).inc();
        tracing::info!(kind, target = %target, purged, "cache purge");
        reply(
            StatusCode::OK,
            "application/json",
            format!("{{\"kind\":\"{kind}\",\"target\":{target:?},\"purged\":{purged}}}\n")
                .into_bytes(),
        )
    }
}

/// `http://Host:80/a` or `Host/a` → `host/a`, the form cache keys use.
fn normalize_target(s: &str) -> String {
    let s = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s);
    let (host, path) = s.split_at(s.find('/').unwrap_or(s.len()));
    let path = if path.is_empty() { "/" } else { path };
    let path = path.split('?').next().unwrap_or(path);
    key::key_text(host, path, None, None)
}

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
    if let Ok(len) = http::HeaderValue::from_str(&r.body().len().to_string()) {
        r.headers_mut().insert(http::header::CONTENT_LENGTH, len);
    }
    r
}
